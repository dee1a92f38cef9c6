"""``divergent distill --task lm`` through typer's CliRunner on tiny models: the printed table,
report.json, --resume with the cached teacher, and one-line errors (exit 2) for bad input."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

pytest.importorskip("transformers")

from divergent.cli import app
from divergent.cli._app import console
from divergent.integrations import lm_job

TINY = [
    "--task",
    "lm",
    "--quick",
    "--steps",
    "2",
    "--teacher-steps",
    "2",
    "--vocab-size",
    "300",
    "--block-size",
    "16",
    "--batch-size",
    "4",
]


@pytest.fixture(autouse=True)
def tiny_shapes(monkeypatch):
    """--quick with 1-layer models (the CLI has no flag for the shapes)."""
    monkeypatch.setattr(lm_job, "QUICK_TEACHER_SHAPE", lm_job.TINY_SETTINGS["teacher_shape"])
    monkeypatch.setattr(lm_job, "QUICK_STUDENT_SHAPE", lm_job.TINY_SETTINGS["student_shape"])


def _run(*args: str):
    return CliRunner().invoke(app, ["distill", *args])


def _assert_one_line_error(result, *fragments: str) -> None:
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.mark.slow
def test_table_report_and_resume(tmp_path):
    out = tmp_path / "lm"
    result = _run(*TINY, "--objectives", "kd:js", "--out", str(out))
    assert result.exit_code == 0, result.output
    for text in (
        "perplexity",
        "± sd",
        "token KL",
        "agreement",
        "tokens/s",
        "RSS MB",
        "teacher",
        "kd:js",
        "sample ce",
        "report.md",
    ):
        assert text in result.stdout, text
    report = json.loads((out / "report.json").read_text())
    assert report["task"] == "lm" and isinstance(report["teacher"]["perplexity"], float)
    assert [(r["objective"], r["seed"]) for r in report["runs"]] == [("ce", 0), ("kd:js", 0)]
    assert report["settings"]["quick"] and report["settings"]["steps"] == 2

    again = _run(*TINY, "--objectives", "kd:js", "--out", str(out), "--resume")
    assert again.exit_code == 0, again.output
    assert "teacher (cached)" in again.stdout
    assert json.loads((out / "report.json").read_text())["runs"] == report["runs"]
    assert report["earlier_runs_not_in_report"] == []

    # another objective into the same folder, no --resume: the kd:js run stays on disk and
    # the report (and the terminal) say where, instead of dropping it from view
    other = _run(*TINY, "--objectives", "kd:tv", "--out", str(out))
    assert other.exit_code == 0, other.output
    later = json.loads((out / "report.json").read_text())
    assert [(r["objective"], r["seed"]) for r in later["runs"]] == [("ce", 0), ("kd:tv", 0)]
    assert later["earlier_runs_not_in_report"] == ["runs/kd-js/seed-0"]
    assert "note: 1 finished run(s) of an earlier invocation" in other.stdout
    assert (out / "runs" / "kd-js" / "seed-0" / "result.json").is_file()


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["--task", "speech"], ["--task must be classifier or lm, got 'speech'"]),
        (["--task", "lm", "--epochs", "3"], ["--epochs is an option of --task classifier"]),
        (["--task", "lm", "--data", "x.csv"], ["--data is an option of --task classifier"]),
        (["--steps", "3"], ["--steps is an option of --task lm, not --task classifier"]),
        (["--student", "s"], ["--student is an option of --task lm"]),
        (["--task", "lm", "--objectives", "dkd"], ["'dkd' is for --task classifier"]),
        (["--task", "lm", "--objectives", "kd:helinger"], ["did you mean 'kd:hellinger'"]),
        (["--task", "lm", "--objectives", "gkd:2"], ["must be a number in [0, 1], got '2'"]),
        (["--task", "lm", "--seeds", "0"], ["--seeds must be an integer >= 1, got 0"]),
    ],
)
def test_bad_flags_are_one_line_errors(tmp_path, args, fragments):
    out = tmp_path / "o"
    _assert_one_line_error(_run(*args, "--out", str(out)), *fragments)
    assert not out.exists()  # nothing started


def test_bad_model_folders(tmp_path):
    out = tmp_path / "o"
    _assert_one_line_error(
        _run(*TINY, "--teacher", str(tmp_path / "none"), "--out", str(out)),
        "--teacher",
        "no such folder",
    )
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "notes.txt").write_text("mine")
    _assert_one_line_error(
        _run(*TINY, "--student", str(tmp_path / "plain"), "--out", str(out)),
        "--student",
        "no config.json",
    )
    assert (tmp_path / "plain" / "notes.txt").read_text() == "mine"
    assert not out.exists()


def test_an_existing_classifier_report_is_kept(tmp_path):
    (tmp_path / "report.json").write_text('{"task": "digits", "runs": []}')
    _assert_one_line_error(
        _run(*TINY, "--out", str(tmp_path)), "holds the report of another job (task 'digits')"
    )
    assert json.loads((tmp_path / "report.json").read_text())["task"] == "digits"


def test_the_classifier_job_keeps_an_existing_lm_report(tmp_path):
    """The other direction: ``--task classifier`` into an lm job's folder is refused too."""
    (tmp_path / "report.json").write_text('{"task": "lm", "runs": []}')
    _assert_one_line_error(
        _run("--quick", "--out", str(tmp_path)),
        "holds the report of another job (task 'lm')",
    )
    assert json.loads((tmp_path / "report.json").read_text())["task"] == "lm"


@pytest.mark.slow
def test_teacher_training_shows_a_bar_on_a_terminal_only(tmp_path, monkeypatch):
    """The teacher's training is a "teacher" bar on a terminal; a pipe gets no bars (a
    regression guard: a trial reported --task lm --quick silent while the teacher trains)."""
    piped = _run(*TINY, "--objectives", "ce", "--out", str(tmp_path / "piped"))
    assert piped.exit_code == 0, piped.output
    before_table = piped.output.split(" divergent distill --task lm")[0]
    assert "\x1b[" not in piped.output and "teacher" not in before_table
    monkeypatch.setattr(console, "_force_terminal", True)
    monkeypatch.setattr(console, "is_interactive", True)
    shown = _run(*TINY, "--objectives", "ce", "--out", str(tmp_path / "terminal"))
    assert shown.exit_code == 0, shown.output
    assert "\x1b[2Kteacher " in shown.output.split(" divergent distill --task lm")[0]

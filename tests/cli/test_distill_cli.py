"""``divergent distill`` through typer's CliRunner: the table, report.json's shape, the cached
teacher, --resume (also after a SIGKILL), and bad input (one line on stderr, exit code 2,
nothing written lost)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from typer.testing import CliRunner

from divergent.cli import app
from divergent.train.distill_job import DistillError, parse_objectives

SMALL = ["--seeds", "2", "--epochs", "2", "--teacher-epochs", "2"]
FINISHED = ["--objectives", "kd:js,dkd", *SMALL]  # the job of the `finished` fixture


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


def _runs(out):
    """report.json's runs, without the wall-clock seconds."""
    runs = json.loads((out / "report.json").read_text())["runs"]
    return [{k: v for k, v in run.items() if k != "seconds"} for run in runs]


@pytest.fixture(scope="module")
def finished_job(tmp_path_factory):
    """One uninterrupted job: its folder, the CliRunner result and its runs as first written
    (tests below rewrite report.json in that folder)."""
    out = tmp_path_factory.mktemp("distill")
    result = _run(*FINISHED, "--out", str(out))
    assert result.exit_code == 0, result.output
    return out, result, _runs(out)


@pytest.fixture
def finished(finished_job):
    out, result, _ = finished_job
    return out, result


@pytest.mark.slow
def test_sigkill_then_resume_gives_the_same_runs(tmp_path, finished_job):
    """``divergent distill --resume`` after a SIGKILL reproduces exactly the runs of the
    uninterrupted job (every number but the wall-clock seconds)."""
    killed = tmp_path / "killed"
    proc = subprocess.Popen(
        [sys.executable, "-m", "divergent", "distill", *FINISHED, "--out", str(killed)],
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    marker = killed / "runs" / "ce" / "seed-1" / "result.json"
    deadline = time.monotonic() + 120
    while proc.poll() is None and not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.3)  # somewhere inside the next runs
    still_running = proc.poll() is None
    proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate(timeout=60)
    assert still_running, f"the job ended before it was killed: {err.decode()[-1500:]}"
    assert not (killed / "report.json").exists()

    resumed = _run(*FINISHED, "--out", str(killed), "--resume")
    assert resumed.exit_code == 0, resumed.output
    assert _runs(killed) == finished_job[2]


def test_table_and_report_shape(finished):
    out, result = finished
    for text in (
        "objective",
        "accuracy (mean ± sd)",
        "ECE",
        "NLL",
        "fidelity",
        "seconds",
        "teacher",
        "ce",
        "kd:js",
        "dkd",
    ):
        assert text in result.stdout
    report = json.loads((out / "report.json").read_text())
    assert report["task"] == "digits"
    assert set(report["teacher"]) >= {"accuracy", "ece", "nll"}
    assert [(r["objective"], r["seed"]) for r in report["runs"]] == [
        ("ce", 0),
        ("ce", 1),
        ("kd:js", 0),
        ("kd:js", 1),
        ("dkd", 0),
        ("dkd", 1),
    ]
    for run in report["runs"]:
        assert set(run) >= {"objective", "seed", "accuracy", "ece", "nll", "fidelity", "seconds"}
        assert all(isinstance(run[k], float) for k in ("accuracy", "ece", "nll", "fidelity"))
        assert 0 <= run["accuracy"] <= 1 and 0 <= run["fidelity"] <= 1 and run["nll"] > 0
    assert report["student"]["parameters"] * 50 < report["teacher"]["parameters"]
    assert "| kd:js |" in (out / "report.md").read_text()
    for name in ("reliability.png", "accuracy_ece.png", "learning_curves.png"):
        assert (out / "plots" / name).read_bytes()[:4] == b"\x89PNG"


def test_summary_matches_the_runs(finished):
    out, _ = finished
    report = json.loads((out / "report.json").read_text())
    for row in report["summary"]:
        acc = [r["accuracy"] for r in report["runs"] if r["objective"] == row["objective"]]
        assert row["accuracy_mean"] == pytest.approx(np.mean(acc))
        assert row["accuracy_sd"] == pytest.approx(np.std(acc, ddof=1))


def test_rerun_reuses_the_teacher_and_resume_keeps_the_runs(finished):
    out, _ = finished
    teacher_bytes = (out / "teacher.ckpt").read_bytes()
    before = json.loads((out / "report.json").read_text())
    result = _run(*FINISHED, "--out", str(out), "--resume")
    assert result.exit_code == 0, result.output
    after = json.loads((out / "report.json").read_text())
    assert (out / "teacher.ckpt").read_bytes() == teacher_bytes
    assert after["teacher"]["cached"] and not before["teacher"]["cached"]
    assert after["runs"] == before["runs"]  # finished runs kept as they were (seconds too)


def test_resume_says_how_many_runs_it_skips_and_trains(tmp_path, finished):
    out = tmp_path / "copy"
    shutil.copytree(finished[0], out)
    result = _run("--objectives", "kd:js,dkd,kd", *SMALL, "--out", str(out), "--resume")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == f"--resume: skipping 6 finished run(s) in {out}; 2 run(s) to train"
    assert sum(line.startswith("  kd ") for line in lines) == 2  # the two new runs, printed
    # a finished run written with other settings stops the job before anything trains: with
    # ce seed 0 unfinished, the check of ce seed 1 fails before seed 0 is trained again
    unfinished = out / "runs" / "ce" / "seed-0" / "result.json"
    unfinished.unlink()
    changed = _run(
        "--objectives",
        "kd:js,dkd,kd",
        "--seeds",
        "2",
        "--epochs",
        "3",
        "--teacher-epochs",
        "2",
        "--out",
        str(out),
        "--resume",
    )
    _assert_one_line_error(changed, "seed-1/result.json was written with other settings (epochs)")
    assert changed.stdout == ""
    assert not unfinished.exists()


def test_bad_argument_prints_only_the_error_line(tmp_path):
    # no progress bar on a pipe: nothing on stdout (rich left a blank line there)
    result = _run("--seeds", "0", "--out", str(tmp_path / "out"))
    _assert_one_line_error(result, "--seeds must be an integer >= 1, got 0")
    assert result.stdout == ""


def test_lm_bad_argument_prints_only_the_error_line(tmp_path):
    pytest.importorskip("transformers")
    result = _run("--task", "lm", "--steps", "0", "--out", str(tmp_path / "out"))
    _assert_one_line_error(result, "--steps must be an integer >= 1, got 0")
    assert result.stdout == ""
    assert not (tmp_path / "out").exists()


def test_without_resume_students_are_retrained_to_the_same_numbers(tmp_path, finished):
    out, _ = finished
    before = json.loads((out / "report.json").read_text())
    result = _run(
        "--objectives",
        "kd:js",
        "--seeds",
        "1",
        "--epochs",
        "2",
        "--teacher-epochs",
        "2",
        "--out",
        str(out),
    )
    assert result.exit_code == 0, result.output
    again = json.loads((out / "report.json").read_text())["runs"]

    def strip(run):
        return {k: v for k, v in run.items() if k != "seconds"}

    assert [strip(r) for r in again] == [
        strip(r) for r in before["runs"] if r["seed"] == 0 and r["objective"] in ("ce", "kd:js")
    ]


def test_unknown_objective_suggests_a_known_one(tmp_path):
    result = _run("--objectives", "kd:helinger", "--out", str(tmp_path / "o"))
    _assert_one_line_error(result, "unknown objective 'kd:helinger'", "did you mean 'kd:hellinger'")
    assert not (tmp_path / "o").exists()  # nothing started
    _assert_one_line_error(_run("--objectives", "dkdd", "--out", str(tmp_path)), "'dkd'")


def test_an_lm_objective_or_an_empty_one_is_refused_before_anything_runs(tmp_path):
    out = tmp_path / "o"
    result = _run("--objectives", "gkd:0.5", "--out", str(out))
    _assert_one_line_error(result, "objective 'gkd:0.5' is for --task lm; --task classifier takes")
    assert "dkd" in result.stderr and "unknown" not in result.stderr
    for given in ("", "kd,,kd:js", "kd,"):
        _assert_one_line_error(_run("-o", given, "--out", str(out)), "empty objective id in")
    assert not out.exists()


def test_parse_objectives_puts_the_baseline_first_once():
    assert parse_objectives(["kd,ce", "kd", " dkd "]) == ("ce", "kd", "dkd")
    with pytest.raises(DistillError, match="unknown objective"):
        parse_objectives(["nope"])


def _csv(path, rows, header="f1,f2,label"):
    path.write_text("\n".join([header, *(",".join(map(str, r)) for r in rows)]) + "\n")
    return path


@pytest.mark.parametrize(
    "rows, fragments",
    [
        ([], ("empty",)),
        ([(0.1, 0.2, 1)] * 12, ("only one class",)),
        ([(0.1, 0.2, 0), (0.3, 0.1, -1)] * 6, ("labels out of range", "-1")),
        ([(0.1, 0.2, 0), (0.3, 0.1, 1.5)] * 6, ("labels must be integers",)),
        ([(0.1, 0.2, 1), (0.3, 0.1, 2)] * 6, ("every class present", "no rows labelled 0")),
        ([(0.1, 0.2, 0), (0.3, 0.1, 3)] * 6, ("found 2 classes up to 3", "labelled 1, 2 ")),
        ([(0.1, "nan", 0), (0.3, 0.1, 1)] * 6, ("NaN", "row 0, column 1")),
    ],
)
def test_bad_data_files(tmp_path, rows, fragments):
    data = _csv(tmp_path / "data.csv", rows)
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("earlier work")
    result = _run("--data", str(data), *SMALL, "--out", str(out))
    _assert_one_line_error(result, str(data), *fragments)
    assert (out / "keep.txt").read_text() == "earlier work"
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]


def test_nan_features_in_npz_and_a_missing_file(tmp_path):
    x = np.random.default_rng(0).normal(size=(20, 3))
    x[4, 2] = np.nan
    np.savez(tmp_path / "d.npz", X=x, y=np.arange(20) % 2)
    _assert_one_line_error(
        _run("--data", str(tmp_path / "d.npz"), "--out", str(tmp_path)),
        "features contain NaN",
        "row 4, column 2",
    )
    _assert_one_line_error(_run("--data", str(tmp_path / "none.npz")), "no such data file")


def test_user_csv_trains_and_teacher_class_mismatch_is_refused(tmp_path, finished):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 64))
    y = (x[:, 0] > 0).astype(int) + (x[:, 1] > 0).astype(int)  # 3 classes
    header = ",".join([f"f{i}" for i in range(64)] + ["label"])
    data = _csv(tmp_path / "three.csv", [(*row, int(c)) for row, c in zip(x, y)], header)
    out = tmp_path / "csv-run"
    ok = _run(
        "--data",
        str(data),
        "--objectives",
        "kd",
        "--seeds",
        "1",
        "--epochs",
        "1",
        "--teacher-epochs",
        "1",
        "--out",
        str(out),
    )
    assert ok.exit_code == 0, ok.output
    assert json.loads((out / "report.json").read_text())["data"]["classes"] == 3

    digits_teacher = finished[0] / "teacher.ckpt"  # 10 classes, 64 features
    result = _run(
        "--data",
        str(data),
        "--teacher",
        str(digits_teacher),
        *SMALL,
        "--out",
        str(tmp_path / "mismatch"),
    )
    _assert_one_line_error(result, "class-count mismatch", "10 classes", "have 3")
    other = _run(*SMALL, "--data", str(data), "--out", str(finished[0]))
    _assert_one_line_error(other, "holds a teacher trained on other data")


def test_unwritable_out(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    result = _run(*SMALL, "--out", str(blocker / "out"))
    _assert_one_line_error(result, "--out", "not a writable folder")
    assert blocker.read_text() == "not a folder"


def test_corrupt_checkpoint_on_resume_is_refused_and_kept(tmp_path, finished):
    out = tmp_path / "out"
    shutil.copytree(finished[0], out)  # a finished job of FINISHED, each run's last.ckpt kept
    run_dir = out / "runs" / "kd-js" / "seed-0"
    (run_dir / "result.json").unlink()  # as if killed before the run's result was written
    ckpt = run_dir / "last.ckpt"
    damaged = ckpt.read_bytes()[:-7]
    ckpt.write_bytes(damaged)
    result = _run(*FINISHED, "--out", str(out), "--resume")
    _assert_one_line_error(result, "last.ckpt", "truncated")
    assert ckpt.read_bytes() == damaged
    teacher = out / "teacher.ckpt"
    teacher.write_bytes(b"garbage")
    _assert_one_line_error(_run("--out", str(out), *SMALL), "teacher.ckpt", "bad header")
    assert teacher.read_bytes() == b"garbage"


def test_bad_numbers(tmp_path):
    _assert_one_line_error(_run("--seeds", "0", "--out", str(tmp_path)), "--seeds")
    _assert_one_line_error(_run("--epochs", "0", "--out", str(tmp_path)), "--epochs")
    _assert_one_line_error(_run("--device", "tpu", "--out", str(tmp_path)), "--device")

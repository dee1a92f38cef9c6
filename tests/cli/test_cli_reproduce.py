"""``divergent reproduce`` on the command line: no silent data loss, one-line errors."""

from __future__ import annotations

import errno
import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from divergent.cli import app
from divergent.cli import reproduce as reproduce_cli
from divergent.repro import Outcome, ReproContext, Verdict, framework, reproduction

runner = CliRunner()


@pytest.fixture
def ids() -> Iterator[dict[str, str]]:
    """Throw-away reproductions: two that hold, one that crashes, one that is interrupted."""
    tag = uuid.uuid4().hex[:8]
    names = {k: f"zz_{k}_{tag}" for k in ("a", "b", "boom", "ctrl_c")}

    def make(name: str) -> None:
        @reproduction(
            name,
            title=name,
            paper="none",
            claim="holds.",
            verdict=lambda m: Verdict.from_bool(m["ok"]),
        )
        def run(ctx: ReproContext) -> Outcome:
            return Outcome(metrics={"ok": True, "seed": ctx.seed}, summary=f"{name} ran")

    make(names["a"])
    make(names["b"])

    @reproduction(
        names["boom"], title="boom", paper="none", claim="raises.", verdict=lambda m: Verdict.HELD
    )
    def boom(ctx: ReproContext) -> Outcome:
        raise RuntimeError("deliberate failure")

    @reproduction(
        names["ctrl_c"],
        title="ctrl-c",
        paper="none",
        claim="interrupted.",
        verdict=lambda m: Verdict.HELD,
    )
    def ctrl_c(ctx: ReproContext) -> Outcome:
        raise KeyboardInterrupt

    yield names
    for rid in names.values():
        framework._REGISTRY.pop(rid, None)


def _invoke(*args: str):  # type: ignore[no-untyped-def]
    return runner.invoke(app, ["reproduce", *args])


def _rows(path: Path) -> dict[str, dict]:
    return {row["id"]: row for row in json.loads(path.read_text())["results"]}


def _one_line_error(result, code: int = 2) -> str:  # type: ignore[no-untyped-def]
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    assert result.stdout == ""  # errors go to stderr, stdout stays clean for a pipe
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.output
    assert lines[0].startswith("error: ")
    return lines[0]


def test_exit_codes(tmp_path: Path, ids: dict[str, str]) -> None:
    ok = _invoke(ids["a"], "--quick", "--out", str(tmp_path / "a"))
    assert ok.exit_code == 0, ok.output
    assert "held (indicative)" in ok.output
    assert _invoke(ids["boom"], "--out", str(tmp_path / "b")).exit_code == 1
    _one_line_error(_invoke("no_such_id", "--out", str(tmp_path / "c")))
    _one_line_error(_invoke("--out", str(tmp_path / "c")))  # no ids


def test_running_b_into_a_folder_holding_a_keeps_a(tmp_path: Path, ids: dict[str, str]) -> None:
    assert _invoke(ids["a"], "--quick", "--out", str(tmp_path)).exit_code == 0
    out = _invoke(ids["b"], "--out", str(tmp_path), "--seed", "5")
    assert out.exit_code == 0, out.output
    assert f"kept unchanged in results.json: {ids['a']}" in out.output
    rows = _rows(tmp_path / "results.json")
    assert set(rows) == {ids["a"], ids["b"]}
    assert rows[ids["a"]]["quick"] is True and rows[ids["b"]]["seed"] == 5
    report = (tmp_path / "report.md").read_text()
    assert f"| {ids['a']} |" in report and f"| {ids['b']} |" in report


def test_resume_with_another_seed_or_mode_says_what_reruns(
    tmp_path: Path, ids: dict[str, str]
) -> None:
    assert _invoke(ids["a"], ids["b"], "--quick", "--out", str(tmp_path)).exit_code == 0
    before = _rows(tmp_path / "results.json")
    same = _invoke(ids["a"], "--quick", "--resume", "--out", str(tmp_path))
    assert f"kept {ids['a']}: stored row (quick, seed 0, held) reused" in same.output
    assert _rows(tmp_path / "results.json")[ids["a"]]["seconds"] == before[ids["a"]]["seconds"]
    seeded = _invoke(ids["a"], "--quick", "--resume", "--seed", "3", "--out", str(tmp_path))
    assert (
        f"re-running {ids['a']}: the stored row is quick, seed 0; this run is quick, seed 3"
        in seeded.output
    )
    full = _invoke(ids["b"], "--resume", "--out", str(tmp_path))
    assert (
        f"re-running {ids['b']}: the stored row is quick, seed 0; this run is full, seed 0"
        in full.output
    )
    rows = _rows(tmp_path / "results.json")
    assert rows[ids["a"]]["seed"] == 3 and rows[ids["b"]]["quick"] is False
    plain = _invoke(ids["a"], "--quick", "--seed", "3", "--out", str(tmp_path))
    assert f"re-running {ids['a']}: replaces the stored row (quick, seed 3)" in plain.output


@pytest.mark.parametrize(
    "content",
    ["", "{ not json", '{"results": [{"id": "x", "st', '["a", "list"]', '{"other": 1}'],
    ids=["empty", "corrupt", "truncated", "foreign-list", "foreign-object"],
)
def test_an_unreadable_results_file_is_refused_and_kept(
    tmp_path: Path, ids: dict[str, str], content: str
) -> None:
    path = tmp_path / "results.json"
    path.write_text(content)
    for extra in ([], ["--resume"]):
        line = _one_line_error(_invoke(ids["a"], "--quick", "--out", str(tmp_path), *extra))
        assert str(path) in line and "left unchanged" in line
    assert path.read_text() == content
    assert not (tmp_path / "plots").exists()


def test_out_that_is_a_file(tmp_path: Path, ids: dict[str, str]) -> None:
    target = tmp_path / "notes.txt"
    target.write_text("mine")
    line = _one_line_error(_invoke(ids["a"], "--out", str(target)))
    assert "is a file" in line
    assert target.read_text() == "mine"


def test_unwritable_out_and_full_disk(
    tmp_path: Path, ids: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def denied(*_a: object, **_k: object) -> None:
        raise PermissionError(errno.EACCES, "Permission denied")

    with monkeypatch.context() as m:
        m.setattr(reproduce_cli.tempfile, "mkstemp", denied)
        line = _one_line_error(_invoke(ids["a"], "--out", str(tmp_path / "ro")))
        assert "not writable (Permission denied)" in line

    def full(*_a: object, **_k: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(framework, "atomic_write_text", full)
    out = _invoke(ids["a"], "--out", str(tmp_path / "full"))
    assert out.exit_code == 2 and "Traceback" not in out.output
    last = out.output.strip().splitlines()[-1]  # after the finished row's line
    assert last.startswith("error: cannot write to") and "No space left on device" in last


@pytest.mark.parametrize("seed", ["-1", str(2**64), str(2**32)])
def test_seed_out_of_range(tmp_path: Path, ids: dict[str, str], seed: str) -> None:
    line = _one_line_error(_invoke(ids["a"], "--seed", seed, "--out", str(tmp_path)))
    assert "--seed" in line and seed in line
    assert not (tmp_path / "results.json").exists()


def test_ctrl_c_says_how_many_rows_were_saved(tmp_path: Path, ids: dict[str, str]) -> None:
    out = _invoke(ids["a"], ids["ctrl_c"], ids["b"], "--quick", "--out", str(tmp_path))
    assert out.exit_code == 130
    assert "interrupted: 1 of 3 saved; rerun with --resume" in out.output
    assert "Traceback" not in out.output
    assert set(_rows(tmp_path / "results.json")) == {ids["a"]}


def test_results_json_gets_the_users_umask(tmp_path: Path, ids: dict[str, str]) -> None:
    old = os.umask(0o022)
    try:
        assert _invoke(ids["a"], "--quick", "--out", str(tmp_path)).exit_code == 0
    finally:
        os.umask(old)
    assert (tmp_path / "results.json").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "report.md").stat().st_mode & 0o777 == 0o644


def test_a_misspelt_id_gets_a_did_you_mean(tmp_path: Path, ids: dict[str, str]) -> None:
    line = _one_line_error(_invoke("mode_dem", "--out", str(tmp_path)))
    assert "unknown reproduction id(s) ['mode_dem'] (did you mean 'mode_demo'?); available:" in line
    assert "did you mean" not in _one_line_error(_invoke("qqqqqqqq", "--out", str(tmp_path)))
    with pytest.raises(ValueError, match="unknown reproduction `mode_dem` \\(did you mean"):
        framework.get_reproduction("mode_dem")

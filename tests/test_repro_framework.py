"""The reproduction framework: registry, run_reproduction, run_many (results.json, resume)."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

import divergent.papers  # noqa: F401  (registers the reproductions)
from divergent.repro import (
    Outcome,
    ReproContext,
    atomic_write_json,
    framework,
    reproduction,
    run_many,
    run_reproduction,
)


@pytest.fixture
def dummies() -> Iterator[dict]:
    """Three throw-away reproductions (ok / failing / wrong return type) with call counters."""
    tag = uuid.uuid4().hex[:8]
    calls = {"ok": 0, "boom": 0, "bad": 0}
    ids = {"ok": f"zz_ok_{tag}", "boom": f"zz_boom_{tag}", "bad": f"zz_bad_{tag}"}

    @reproduction(ids["ok"], title="ok", paper="none", claim="1 + 1 = 2")
    def ok(ctx: ReproContext) -> Outcome:
        calls["ok"] += 1
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots()
        ax.plot([0, 1], [0, 1])
        ctx.savefig(fig, "line")
        value = 1 + 1
        return Outcome(held=value == 2, metrics={"value": value, "inf": float("inf")},
                       summary=f"1 + 1 = {value}")

    @reproduction(ids["boom"], title="boom", paper="none", claim="raises")
    def boom(ctx: ReproContext) -> Outcome:
        calls["boom"] += 1
        raise RuntimeError("deliberate failure")

    @reproduction(ids["bad"], title="bad", paper="none", claim="returns a dict")
    def bad(ctx: ReproContext) -> Outcome:
        calls["bad"] += 1
        return {"held": True}  # type: ignore[return-value]

    yield {"ids": ids, "calls": calls}
    for rid in ids.values():
        framework._REGISTRY.pop(rid, None)


def _rows(path: Path) -> dict[str, dict]:
    return {row["id"]: row for row in json.loads(path.read_text())["results"]}


def test_atomic_write_json_replaces_and_leaves_no_temp_files(tmp_path: Path) -> None:
    target = tmp_path / "results.json"
    atomic_write_json(target, {"a": 1, "nan": float("nan")})
    assert json.loads(target.read_text()) == {"a": 1, "nan": "nan"}
    with pytest.raises(TypeError):
        atomic_write_json(target, {"a": object()})  # not serialisable: fails mid-write
    assert json.loads(target.read_text()) == {"a": 1, "nan": "nan"}  # old content intact
    assert sorted(os.listdir(tmp_path)) == ["results.json"]


def test_atomic_write_uses_rename(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen = []
    real_replace = os.replace

    def spy(src: str, dst: Path) -> None:
        seen.append((Path(src).parent, Path(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(framework.os, "replace", spy)
    atomic_write_json(tmp_path / "r.json", {"x": 1})
    assert seen == [(tmp_path, tmp_path / "r.json")]  # temp file in the same folder, renamed


def test_exception_becomes_error_status(tmp_path: Path, dummies: dict) -> None:
    ids = dummies["ids"]
    result = run_reproduction(ids["boom"], quick=True, out_dir=tmp_path)
    assert result.status == "error" and result.held is False
    assert "RuntimeError: deliberate failure" in result.summary
    assert result.error is not None and "deliberate failure" in result.error
    assert "Traceback" in result.error
    wrong = run_reproduction(ids["bad"], quick=True, out_dir=tmp_path)
    assert wrong.status == "error" and "not Outcome" in wrong.summary


def test_run_many_writes_after_each_row_and_resume_skips_finished(
    tmp_path: Path, dummies: dict
) -> None:
    ids, calls = dummies["ids"], dummies["calls"]
    path = tmp_path / "results.json"
    snapshots: list[set[str]] = []

    def on_done(_result: object) -> None:
        # on_done runs before the file is rewritten: record what the file held so far
        snapshots.append(set(_rows(path)) if path.exists() else set())

    first = run_many([ids["ok"], ids["boom"]], quick=True, out_dir=tmp_path, on_done=on_done)
    assert [r.status for r in first] == ["held", "error"]
    assert snapshots == [set(), {ids["ok"]}]
    rows = _rows(path)
    assert set(rows) == {ids["ok"], ids["boom"]}
    assert rows[ids["ok"]]["metrics"] == {"value": 2, "inf": "inf"}
    assert rows[ids["ok"]]["plots"] == [f"plots/{ids['ok']}_line.png"]
    assert (tmp_path / rows[ids["ok"]]["plots"][0]).stat().st_size > 0
    assert calls == {"ok": 1, "boom": 1, "bad": 0}

    # resume: the finished row is kept, the errored one is run again
    again = run_many([ids["ok"], ids["boom"]], quick=True, out_dir=tmp_path, resume=True)
    assert calls == {"ok": 1, "boom": 2, "bad": 0}
    assert [r.status for r in again] == ["held", "error"]
    assert again[0].seconds == first[0].seconds  # the stored row, not a new run

    # a different mode (or no --resume) reruns
    run_many([ids["ok"]], quick=False, out_dir=tmp_path, resume=True)
    assert calls["ok"] == 2
    run_many([ids["ok"]], quick=True, out_dir=tmp_path, resume=False)
    assert calls["ok"] == 3
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]


def test_resume_survives_a_corrupt_results_file(tmp_path: Path, dummies: dict) -> None:
    ids, calls = dummies["ids"], dummies["calls"]
    (tmp_path / "results.json").write_text("{ not json")
    run_many([ids["ok"]], quick=True, out_dir=tmp_path, resume=True)
    assert calls["ok"] == 1
    assert set(_rows(tmp_path / "results.json")) == {ids["ok"]}


def test_unknown_id_fails_before_running_anything(tmp_path: Path, dummies: dict) -> None:
    ids, calls = dummies["ids"], dummies["calls"]
    with pytest.raises(ValueError, match="unknown reproduction"):
        run_many([ids["ok"], "no_such_reproduction"], quick=True, out_dir=tmp_path)
    assert calls["ok"] == 0
    assert not (tmp_path / "results.json").exists()


def test_duplicate_registration_is_refused(dummies: dict) -> None:
    with pytest.raises(ValueError, match="registered twice"):

        @reproduction(dummies["ids"]["ok"], title="again", paper="none", claim="dup")
        def again(ctx: ReproContext) -> Outcome:
            return Outcome(held=True, metrics={})


def test_cli_reproduce_exit_codes(tmp_path: Path, dummies: dict) -> None:
    from divergent.cli import app

    ids = dummies["ids"]
    runner = CliRunner()
    ok = runner.invoke(app, ["reproduce", ids["ok"], "--quick", "--out", str(tmp_path / "a")])
    assert ok.exit_code == 0, ok.output
    assert set(_rows(tmp_path / "a" / "results.json")) == {ids["ok"]}
    failed = runner.invoke(app, ["reproduce", ids["boom"], "--out", str(tmp_path / "b")])
    assert failed.exit_code == 1
    unknown = runner.invoke(app, ["reproduce", "no_such_id", "--out", str(tmp_path / "c")])
    assert unknown.exit_code == 2

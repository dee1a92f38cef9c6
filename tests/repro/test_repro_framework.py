"""The reproduction framework: registry, run_reproduction, run_many (results.json, resume)."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

import divergent.papers  # noqa: F401  (registers the reproductions)
from divergent.repro import (
    Outcome,
    ReproContext,
    ResultsFileError,
    Verdict,
    atomic_write_json,
    framework,
    load_results,
    plan_run,
    reproduction,
    run_many,
    run_reproduction,
)


def _value_verdict(metrics: dict) -> Verdict:
    if metrics["value"] is None:
        return Verdict.INCONCLUSIVE
    return Verdict.from_bool(metrics["value"] == 2)


@pytest.fixture
def dummies() -> Iterator[dict]:
    """Throw-away reproductions (ok / inconclusive / failing / wrong return / legacy) with
    call counters and the torch thread count seen inside."""
    tag = uuid.uuid4().hex[:8]
    calls = {"ok": 0, "maybe": 0, "boom": 0, "bad": 0, "legacy": 0}
    threads: list[int] = []
    ids = {k: f"zz_{k}_{tag}" for k in calls}

    @reproduction(ids["ok"], title="ok", paper="none", claim="1 + 1 = 2.", verdict=_value_verdict)
    def ok(ctx: ReproContext) -> Outcome:
        calls["ok"] += 1
        threads.append(torch.get_num_threads())
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots()
        ax.plot([0, 1], [0, 1])
        ctx.savefig(fig, "line")
        return Outcome(metrics={"value": 1 + 1, "inf": float("inf")}, summary="1 + 1 = 2")

    @reproduction(
        ids["maybe"],
        title="maybe",
        paper="none",
        claim="x.",
        verdict=_value_verdict,
        quick_matches_full=True,
    )
    def maybe(ctx: ReproContext) -> Outcome:
        calls["maybe"] += 1
        return Outcome(metrics={"value": None}, summary="no power")

    @reproduction(ids["boom"], title="boom", paper="none", claim="raises.", verdict=_value_verdict)
    def boom(ctx: ReproContext) -> Outcome:
        calls["boom"] += 1
        raise RuntimeError("deliberate failure")

    @reproduction(
        ids["bad"], title="bad", paper="none", claim="returns a dict.", verdict=_value_verdict
    )
    def bad(ctx: ReproContext) -> Outcome:
        calls["bad"] += 1
        return {"held": True}  # type: ignore[return-value]

    @reproduction(ids["legacy"], title="legacy", paper="none", claim="states its verdict.")
    def legacy(ctx: ReproContext) -> Outcome:
        calls["legacy"] += 1
        return Outcome(held=False, metrics={"x": 1}, summary="old style")

    yield {"ids": ids, "calls": calls, "threads": threads}
    for rid in ids.values():
        framework._REGISTRY.pop(rid, None)


def _rows(path: Path) -> dict[str, dict]:
    return {row["id"]: row for row in json.loads(path.read_text())["results"]}


def test_atomic_write_json_replaces_and_leaves_no_temp_files(tmp_path: Path) -> None:
    target = tmp_path / "results.json"
    atomic_write_json(target, {"a": 1, "nan": float("nan"), "v": Verdict.HELD})
    assert json.loads(target.read_text()) == {"a": 1, "nan": "nan", "v": "held"}
    with pytest.raises(TypeError):
        atomic_write_json(target, {"a": object()})  # not serialisable
    assert json.loads(target.read_text())["a"] == 1  # old content intact
    assert sorted(os.listdir(tmp_path)) == ["results.json"]


def test_atomic_write_uses_rename_and_the_umask(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = []
    real_replace = os.replace

    def spy(src: str, dst: Path) -> None:
        seen.append((Path(src).parent, Path(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(framework.os, "replace", spy)
    old = os.umask(0o027)
    try:
        atomic_write_json(tmp_path / "r.json", {"x": 1})
    finally:
        os.umask(old)
    assert seen == [(tmp_path, tmp_path / "r.json")]  # temp file in the same folder, renamed
    assert (tmp_path / "r.json").stat().st_mode & 0o777 == 0o640  # 0666 minus the umask


def test_the_verdict_comes_from_the_verdict_function(tmp_path: Path, dummies: dict) -> None:
    ids = dummies["ids"]
    ok = run_reproduction(ids["ok"], quick=True, out_dir=tmp_path)
    assert (ok.status, ok.verdict, ok.held, ok.indicative) == ("held", "held", True, True)
    assert ok.summary == "1 + 1 = 2 — verdict: held (quick mode: indicative, the full run decides)"
    full = run_reproduction(ids["ok"], quick=False, out_dir=tmp_path)
    assert not full.indicative and full.summary == "1 + 1 = 2 — verdict: held"
    maybe = run_reproduction(ids["maybe"], quick=True, out_dir=tmp_path)
    assert (maybe.status, maybe.held, maybe.indicative) == ("inconclusive", False, False)
    legacy = run_reproduction(ids["legacy"], quick=True, out_dir=tmp_path)
    assert (legacy.status, legacy.verdict, legacy.held) == ("not held", "not held", False)


def test_experiments_run_on_one_thread(tmp_path: Path, dummies: dict) -> None:
    before = torch.get_num_threads()
    run_reproduction(dummies["ids"]["ok"], quick=True, out_dir=tmp_path)
    assert dummies["threads"] == [1]
    assert torch.get_num_threads() == before


def test_exception_becomes_error_status(tmp_path: Path, dummies: dict) -> None:
    ids = dummies["ids"]
    result = run_reproduction(ids["boom"], quick=True, out_dir=tmp_path)
    assert result.status == "error" and result.held is False and result.verdict is None
    assert "RuntimeError: deliberate failure" in result.summary
    assert result.error is not None and "Traceback" in result.error
    wrong = run_reproduction(ids["bad"], quick=True, out_dir=tmp_path)
    assert wrong.status == "error" and "not Outcome" in wrong.summary


def test_outcome_disagreeing_with_the_verdict_function_is_an_error(
    tmp_path: Path, dummies: dict
) -> None:
    rid = f"zz_disagree_{uuid.uuid4().hex[:8]}"

    @reproduction(rid, title="t", paper="p", claim="c.", verdict=_value_verdict)
    def run(ctx: ReproContext) -> Outcome:
        return Outcome(metrics={"value": 2}, verdict="not held")

    try:
        result = run_reproduction(rid, quick=True, out_dir=tmp_path)
        assert result.status == "error" and "verdict(metrics) gives 'held'" in result.summary
    finally:
        framework._REGISTRY.pop(rid, None)
    with pytest.raises(ValueError, match="verdict must be"):
        Outcome(metrics={}, verdict="maybe").stated_verdict()


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
    assert rows[ids["ok"]]["metrics"] == {"value": 2, "inf": "inf"}
    assert rows[ids["ok"]]["verdict"] == "held" and rows[ids["ok"]]["held"] is True
    assert rows[ids["boom"]]["verdict"] is None
    assert rows[ids["ok"]]["plots"] == [f"plots/{ids['ok']}_line.png"]
    assert calls["ok"] == 1 and calls["boom"] == 1

    # resume: the finished row is kept, the errored one is run again
    again = run_many([ids["ok"], ids["boom"]], quick=True, out_dir=tmp_path, resume=True)
    assert calls["ok"] == 1 and calls["boom"] == 2
    assert again[0].seconds == first[0].seconds  # the stored row, not a new run

    # a different mode (or no --resume) reruns
    run_many([ids["ok"]], quick=False, out_dir=tmp_path, resume=True)
    assert calls["ok"] == 2
    run_many([ids["ok"]], quick=True, out_dir=tmp_path, resume=False)
    assert calls["ok"] == 3
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]


def test_running_another_id_keeps_the_stored_rows(tmp_path: Path, dummies: dict) -> None:
    ids = dummies["ids"]
    run_many([ids["ok"]], quick=True, out_dir=tmp_path)
    run_many([ids["maybe"]], quick=False, out_dir=tmp_path, seed=3)
    rows = _rows(tmp_path / "results.json")
    assert list(rows) == [ids["ok"], ids["maybe"]]
    assert rows[ids["ok"]]["quick"] is True and rows[ids["maybe"]]["seed"] == 3


def test_plan_says_what_is_kept_and_what_reruns(tmp_path: Path, dummies: dict) -> None:
    ids = dummies["ids"]
    run_many([ids["ok"], ids["maybe"], ids["legacy"]], quick=True, out_dir=tmp_path)
    stored = load_results(tmp_path / "results.json")
    plan = plan_run([ids["ok"], ids["maybe"]], stored, quick=False, seed=0, resume=True)
    assert plan.run == [ids["ok"], ids["maybe"]] and not plan.reuse
    assert "the stored row is quick, seed 0; this run is full, seed 0" in plan.replaced[ids["ok"]]
    assert [r.id for r in plan.kept_other] == [ids["legacy"]]
    same = plan_run([ids["ok"]], stored, quick=True, seed=0, resume=True)
    assert same.run == [] and list(same.reuse) == [ids["ok"]]
    lines = same.messages()
    assert lines[0].startswith(f"kept {ids['ok']}: stored row (quick, seed 0, held) reused")
    seeded = plan_run([ids["ok"]], stored, quick=True, seed=7, resume=True)
    assert "seed 0; this run is quick, seed 7" in seeded.replaced[ids["ok"]]
    fresh = plan_run([ids["ok"]], stored, quick=True, seed=0, resume=False)
    assert "replaces the stored row" in fresh.replaced[ids["ok"]]


@pytest.mark.parametrize(
    "content,message",
    [
        ("", "is empty"),
        ("   \n", "is empty"),
        ("{ not json", "not valid JSON"),
        ('{"results": [{"id": "x"', "not valid JSON"),  # truncated
        ("[1, 2]", "not a divergent results file"),
        ('{"rows": []}', "not a divergent results file"),
        ('{"results": [{"id": "x"}]}', "row 0 is not a result"),
        ('{"results": [7]}', "row 0 is not a result"),
    ],
)
def test_an_unreadable_results_file_is_refused_and_kept(
    tmp_path: Path, dummies: dict, content: str, message: str
) -> None:
    path = tmp_path / "results.json"
    path.write_text(content)
    with pytest.raises(ResultsFileError, match=message):
        run_many([dummies["ids"]["ok"]], quick=True, out_dir=tmp_path, resume=True)
    assert path.read_text() == content
    assert dummies["calls"]["ok"] == 0


def test_rows_of_an_older_file_without_verdict_are_read(tmp_path: Path, dummies: dict) -> None:
    ids = dummies["ids"]
    run_many([ids["ok"]], quick=True, out_dir=tmp_path)
    payload = json.loads((tmp_path / "results.json").read_text())
    for row in payload["results"]:
        del row["verdict"], row["indicative"]
    (tmp_path / "results.json").write_text(json.dumps(payload))
    [row] = load_results(tmp_path / "results.json")
    assert row.verdict == "held" and row.indicative is False


def test_unknown_id_and_bad_seed_fail_before_running_anything(
    tmp_path: Path, dummies: dict
) -> None:
    ids, calls = dummies["ids"], dummies["calls"]
    with pytest.raises(ValueError, match="unknown reproduction"):
        run_many([ids["ok"], "no_such_reproduction"], quick=True, out_dir=tmp_path)
    for seed in (-1, 2**32, 2**64):
        with pytest.raises(ValueError, match="seed must be an integer"):
            run_many([ids["ok"]], quick=True, out_dir=tmp_path, seed=seed)
    assert calls["ok"] == 0
    assert not (tmp_path / "results.json").exists()


def test_duplicate_registration_is_refused(dummies: dict) -> None:
    with pytest.raises(ValueError, match="registered twice"):

        @reproduction(dummies["ids"]["ok"], title="again", paper="none", claim="dup.")
        def again(ctx: ReproContext) -> Outcome:
            return Outcome(metrics={})


def test_every_paper_declares_a_verdict_function() -> None:
    from divergent.repro import all_reproductions

    own = {"asymptotics", "csib", "infobounds", "kde", "mode_demo", "pn", "scaling"}
    for rep in all_reproductions():
        if rep.id in own:
            assert rep.verdict is not None and rep.verdict.__module__ == rep.experiment.__module__


def test_the_experiment_reads_the_sizes_of_its_mode(tmp_path: Path) -> None:
    rid = f"zz_sizes_{uuid.uuid4().hex[:8]}"
    seen: list[dict] = []

    @reproduction(
        rid,
        title="sizes",
        paper="none",
        claim="reads its sizes.",
        verdict=_value_verdict,
        sizes={"quick": {"n_seeds": 3, "grid": [1, 2]}, "full": {"n_seeds": 12, "grid": [1, 2, 4]}},
    )
    def sized(ctx: ReproContext) -> Outcome:
        seen.append({"n_seeds": ctx.size.n_seeds, "grid": ctx.size.grid, "all": dict(ctx.size)})
        return Outcome(metrics={"value": 2})

    try:
        run_reproduction(rid, quick=True, out_dir=tmp_path)
        run_reproduction(rid, quick=False, out_dir=tmp_path)
    finally:
        framework._REGISTRY.pop(rid, None)
    assert seen == [
        {"n_seeds": 3, "grid": [1, 2], "all": {"n_seeds": 3, "grid": [1, 2]}},
        {"n_seeds": 12, "grid": [1, 2, 4], "all": {"n_seeds": 12, "grid": [1, 2, 4]}},
    ]


def test_an_undeclared_size_names_the_declared_ones() -> None:
    size = framework.RunSize({"steps": 5, "n_seeds": 2})
    assert size.steps == 5 and len(size) == 2
    with pytest.raises(AttributeError, match=r"no run size `epochs` \(declared: n_seeds, steps\)"):
        _ = size.epochs
    with pytest.raises(AttributeError, match=r"declared: none"):
        _ = framework.RunSize().n_seeds


@pytest.mark.parametrize(
    ("sizes", "match"),
    [
        ({"quick": {"n": 1}}, "must map exactly"),
        ({"quick": {"n": 1}, "full": {"n": 2}, "medium": {"n": 1}}, "must map exactly"),
        ({"quick": {"n": 1}, "full": {"m": 2}}, "same values"),
        ({"quick": 3, "full": {"n": 2}}, "must be mappings"),
    ],
)
def test_bad_sizes_are_refused_at_registration(sizes: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        reproduction("zz_bad_sizes", title="t", paper="p", claim="c.", sizes=sizes)
    assert "zz_bad_sizes" not in framework._REGISTRY


def test_subplots_draw_off_screen_and_savefig_writes_a_png(tmp_path: Path) -> None:
    import matplotlib

    ctx = ReproContext(id="zz_plot", quick=True, out_dir=tmp_path)
    fig, axes = ctx.subplots(1, 2, figsize=(3, 2))
    axes[1].plot([0, 1], [1, 0])
    rel = ctx.savefig(fig, "lines")
    assert matplotlib.get_backend().lower() == "agg"
    assert rel == "plots/zz_plot_lines.png" and ctx.plots == [rel]
    assert (tmp_path / rel).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

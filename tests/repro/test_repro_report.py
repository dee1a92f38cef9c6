"""The Markdown report written next to results.json."""

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from divergent.repro import Outcome, ReproContext, Verdict, framework, reproduction, run_many
from divergent.repro.report import markdown_report, report_from_results_json

IDS = ("_report_demo_held", "_report_demo_fails", "_report_demo_open")


@pytest.fixture
def demos() -> Iterator[None]:
    @reproduction(
        IDS[0],
        title="demo",
        paper="nobody 2026",
        claim="a | claim with a pipe",
        verdict=lambda m: Verdict.HELD,
    )
    def _held(ctx: ReproContext) -> Outcome:
        return Outcome(metrics={"x": 1.0}, summary="x = 1")

    @reproduction(
        IDS[1], title="demo", paper="nobody 2026", claim="fails", verdict=lambda m: Verdict.HELD
    )
    def _fails(ctx: ReproContext) -> Outcome:
        raise RuntimeError("boom")

    @reproduction(
        IDS[2],
        title="demo",
        paper="nobody 2026",
        claim="open",
        verdict=lambda m: Verdict.INCONCLUSIVE,
        quick_matches_full=True,
    )
    def _open(ctx: ReproContext) -> Outcome:
        return Outcome(metrics={}, summary="no power")

    yield
    for rid in IDS:
        framework._REGISTRY.pop(rid, None)


def test_report_lists_every_row_with_its_verdict(demos: None, tmp_path: Path) -> None:
    results = run_many(list(IDS), quick=True, out_dir=tmp_path)
    text = markdown_report(results)
    assert "Held: 1; not held: 0; inconclusive: 1; errors: 1." in text
    assert "| _report_demo_held |" in text and "**held** (indicative)" in text
    assert "| _report_demo_fails |" in text and "**error** |" in text
    assert "**inconclusive** |" in text  # its quick run is decisive: no label
    assert "a \\| claim with a pipe" in text  # pipes escaped so the table stays intact
    assert "RuntimeError: boom" in text
    assert "Mode: quick; seed 0." in text

    payload = json.loads((tmp_path / "results.json").read_text())
    expected = markdown_report(results, environment=payload["environment"])
    assert report_from_results_json(tmp_path / "results.json") == expected


def test_mixed_modes_are_said(demos: None, tmp_path: Path) -> None:
    run_many([IDS[0]], quick=True, out_dir=tmp_path)
    run_many([IDS[2]], quick=False, out_dir=tmp_path)
    text = report_from_results_json(tmp_path / "results.json")
    assert "Mixed modes / seeds" in text
    assert "| quick, seed 0 |" in text and "| full, seed 0 |" in text

"""The Markdown report written next to results.json."""

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from divergent.repro import Outcome, ReproContext, framework, reproduction, run_many
from divergent.repro.report import markdown_report, report_from_results_json

IDS = ("_report_demo_held", "_report_demo_fails")


@pytest.fixture
def demos() -> Iterator[None]:
    @reproduction(IDS[0], title="demo", paper="nobody 2026", claim="a | claim with a pipe")
    def _held(ctx: ReproContext) -> Outcome:
        return Outcome(held=True, metrics={"x": 1.0}, summary="x = 1")

    @reproduction(IDS[1], title="demo", paper="nobody 2026", claim="fails")
    def _fails(ctx: ReproContext) -> Outcome:
        raise RuntimeError("boom")

    yield
    for rid in IDS:
        framework._REGISTRY.pop(rid, None)


def test_report_lists_every_row_with_its_status(demos: None, tmp_path: Path) -> None:
    results = run_many(list(IDS), quick=True, out_dir=tmp_path)
    text = markdown_report(results)
    assert "Held: 1; not held: 0; errors: 1." in text
    assert "| _report_demo_held |" in text and "**held**" in text
    assert "| _report_demo_fails |" in text and "**error**" in text
    assert "a \\| claim with a pipe" in text  # pipes escaped so the table stays intact
    assert "RuntimeError: boom" in text

    payload = json.loads((tmp_path / "results.json").read_text())
    expected = markdown_report(results, environment=payload["environment"])
    assert report_from_results_json(tmp_path / "results.json") == expected

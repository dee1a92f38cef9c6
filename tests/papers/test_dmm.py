"""dmm reproduction: the verdict on literal metrics on both sides of each threshold, and a quick
run."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from _repro_checks import run_quick

from divergent.papers import dmm
from divergent.repro import Verdict


def _set(none, ga, ft, om, dmm_, reference=1.0):
    values = {"none": none, "GA": ga, "FT": ft, "OM": om, "DMM": dmm_, "reference": reference}
    return {"median_klom": {m: {"forget": v} for m, v in values.items()}}


def _metrics(*sets):
    return {"forget_sets": list(sets)}


@pytest.mark.parametrize(
    ("sets", "expected"),
    [
        # signal: no-unlearning / reference vs 2.0
        ([_set(2.1, 2.0, 2.0, 1.0, 1.0)], "held"),
        ([_set(1.9, 2.0, 2.0, 1.0, 1.0)], "inconclusive"),
        # DMM / reference vs 1.5
        ([_set(5.0, 3.0, 3.0, 1.0, 1.45)], "held"),
        ([_set(5.0, 3.0, 3.0, 1.0, 1.55)], "not held"),
        # DMM / min(GA, FT) vs 0.75 (the better baseline counts)
        ([_set(5.0, 1.4, 5.0, 1.0, 1.0)], "held"),  # 0.714
        ([_set(5.0, 1.3, 5.0, 1.0, 1.0)], "not held"),  # 0.769
        ([_set(5.0, 5.0, 1.3, 1.0, 1.0)], "not held"),
        ([_set(5.0, 5.0, 1.4, 1.0, 1.0)], "held"),
        # OM is reported, not part of the verdict
        ([_set(5.0, 3.0, 3.0, 9.0, 1.0)], "held"),
        # every forget set must pass; any without signal makes it inconclusive
        ([_set(5.0, 3.0, 3.0, 1.0, 1.0), _set(5.0, 3.0, 3.0, 1.0, 1.6)], "not held"),
        ([_set(5.0, 3.0, 3.0, 1.0, 1.0), _set(1.5, 3.0, 3.0, 1.0, 1.0)], "inconclusive"),
        ([_set(5.0, 3.0, 3.0, 1.0, 1.0), _set(6.0, 4.0, 4.0, 1.2, 1.2, 0.9)], "held"),
        # reference ratios scale: a larger reference allows a larger DMM value
        ([_set(10.0, 6.0, 6.0, 2.0, 2.9, 2.0)], "held"),
        ([_set(10.0, 6.0, 6.0, 2.0, 3.1, 2.0)], "not held"),
        # NaN anywhere in the verdict's ratios: no verdict
        ([_set(5.0, 3.0, 3.0, 1.0, math.nan)], "inconclusive"),
    ],
)
def test_verdict(sets, expected) -> None:
    assert dmm.verdict(_metrics(*sets)) == Verdict(expected)


def test_checks_report_the_ratios() -> None:
    c = dmm.checks(_metrics(_set(4.0, 2.0, 3.0, 1.2, 1.1), _set(6.0, 2.5, 2.2, 1.0, 1.0, 0.8)))
    assert c["noop_over_reference"] == pytest.approx(4.0)
    assert c["dmm_over_reference"] == pytest.approx(1.25)
    assert c["om_over_reference"] == pytest.approx(1.25)
    assert c["dmm_over_best_baseline"] == pytest.approx(0.55)
    assert c["signal"] and c["dmm_close_to_reference"] and c["dmm_beats_ga_and_ft"]


def test_quick_run_is_consistent(tmp_path: Path) -> None:
    result = run_quick("dmm", tmp_path)  # the shared well-formedness checks
    m = result.metrics
    assert m["n_models"] == 24 and len(m["forget_sets"]) == m["n_forget_sets"] == 1
    for key, value in dmm.checks(m).items():
        assert m[key] == value
    fs = m["forget_sets"][0]
    assert sum(fs["forget_labels"]) == dmm.FORGET_SIZE
    for method in dmm.METHODS:
        assert set(fs["median_klom"][method]) == set(dmm.SETS)
        assert all(0.0 <= v < 12.0 for v in fs["median_klom"][method].values())
        # the kept configuration is the grid's best on the forget set
        grid = fs["grid"][method]
        assert fs["median_klom"][method]["forget"] == pytest.approx(min(grid.values()))
        assert grid[fs["config"][method]] == min(grid.values())
    assert len(fs["grid"]["GA"]) == len(dmm.GA_GRID) and len(fs["grid"]["FT"]) == 3
    assert fs["test_accuracy"]["none"] > 0.9 and fs["test_accuracy"]["reference"] > 0.9
    assert "DMM" in result.summary and "reference" in result.summary

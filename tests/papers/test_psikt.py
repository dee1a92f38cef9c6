"""psikt reproduction: the verdict on metrics on both sides of each threshold, and a quick run."""

from __future__ import annotations

from pathlib import Path

import pytest
from _repro_checks import run_quick

from divergent.papers import psikt
from divergent.papers._stats import mean_ci
from divergent.repro import Verdict

HELD = {
    "trait_correlation": {
        "log_speed": {"low": 0.35, "high": 0.6},
        "mean": {"low": 0.75, "high": 0.95},
        "log_volatility": {"low": 0.31, "high": 0.5},
    },
    "auc_psikt_minus_gru": {"low": -0.005, "high": 0.02},
}


def _with(**changes):
    m = {
        "trait_correlation": dict(HELD["trait_correlation"]),
        "auc_psikt_minus_gru": HELD["auc_psikt_minus_gru"],
    }
    for key, value in changes.items():
        if key == "auc":
            m["auc_psikt_minus_gru"] = value
        else:
            m["trait_correlation"][key] = value
    return m


def test_verdict_held():
    assert psikt.verdict(HELD) == Verdict.HELD


@pytest.mark.parametrize(
    ("trait", "low", "high", "expected"),
    [
        ("log_speed", 0.29, 0.6, "inconclusive"),
        ("log_speed", 0.1, 0.29, "not held"),
        ("log_speed", 0.31, 0.6, "held"),
        ("mean", 0.69, 0.9, "inconclusive"),
        ("mean", 0.71, 0.9, "held"),
        ("mean", 0.5, 0.69, "not held"),
        ("log_volatility", 0.29, 0.5, "inconclusive"),
        ("log_volatility", 0.31, 0.5, "held"),
        ("log_volatility", -0.2, 0.29, "not held"),
        ("log_volatility", float("nan"), 0.5, "inconclusive"),
    ],
)
def test_verdict_trait_thresholds(trait, low, high, expected):
    m = _with(**{trait: {"low": low, "high": high}})
    assert psikt.verdict(m) == Verdict(expected)


@pytest.mark.parametrize(
    ("low", "high", "expected"),
    [
        (-0.009, 0.02, "held"),
        (-0.011, 0.02, "inconclusive"),
        (-0.05, -0.011, "not held"),
        (-0.05, -0.009, "inconclusive"),
    ],
)
def test_verdict_auc_margin(low, high, expected):
    assert psikt.verdict(_with(auc={"low": low, "high": high})) == Verdict(expected)


def test_not_held_part_decides_over_inconclusive():
    m = _with(log_speed={"low": 0.0, "high": 0.2}, auc={"low": -0.02, "high": 0.01})
    assert psikt.verdict(m) == Verdict.NOT_HELD
    assert psikt.checks(m)["auc_no_worse_than_gru"] == Verdict.INCONCLUSIVE


def test_quick_run_is_consistent(tmp_path: Path) -> None:
    result = run_quick("psikt", tmp_path)  # the shared well-formedness checks
    m = result.metrics
    for name, values in m["correlation"].items():
        assert m["trait_correlation"][name]["mean"] == pytest.approx(mean_ci(values)["mean"])
        assert all(-1.0 <= v <= 1.0 for v in values)
    diff = mean_ci([a - b for a, b in zip(m["auc"]["psikt"], m["auc"]["gru"], strict=True)])
    assert m["auc_psikt_minus_gru"]["low"] == pytest.approx(diff["low"])
    assert all(0.5 < a <= 1.0 for a in m["auc"]["oracle"])  # the truth predicts
    assert m["elbo_per_learner_last"] > m["elbo_per_learner_first"]  # the fit improves the bound
    assert set(m["checks"]) == {
        "recovers_log_speed",
        "recovers_mean",
        "recovers_log_volatility",
        "auc_no_worse_than_gru",
    }
    assert len(result.plots) == 2

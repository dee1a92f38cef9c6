"""psikt reproduction: the verdict on metrics on both sides of each threshold, and a quick run."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from _repro_checks import run_quick
from scipy import stats

from divergent.papers import psikt
from divergent.papers._stats import mean_ci, paired_ci
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


def test_fisher_z_interval_stays_below_one():
    # two seeds of a quick run: the t interval on raw r reached 1.18, Fisher's z stays inside
    values = [0.8774959424610679, 0.8250155453133665]
    assert mean_ci(values)["high"] > 1.0
    r = psikt.fisher_z_ci(values)
    assert -1.0 < r["low"] < r["mean"] < r["high"] < 1.0
    assert r["mean_r"] == pytest.approx(0.85125574)
    # the t interval of atanh r, mapped back by tanh (scipy's t quantile)
    z = [math.atanh(v) for v in values]
    half = stats.t.ppf(0.975, 1) * np.std(z, ddof=1) / math.sqrt(2)
    assert r["low"] == pytest.approx(math.tanh(np.mean(z) - half))
    assert r["high"] == pytest.approx(math.tanh(np.mean(z) + half))
    # symmetric in the sign of r
    neg = psikt.fisher_z_ci([-v for v in values])
    assert (neg["low"], neg["high"]) == pytest.approx((-r["high"], -r["low"]))


@pytest.mark.parametrize("position", [0, 1, 2])
def test_fisher_z_interval_of_a_nan_is_nan(position):
    values = [0.5, 0.6, 0.55]
    values[position] = math.nan
    r = psikt.fisher_z_ci(values)
    assert math.isnan(r["low"]) and math.isnan(r["high"]) and r["n"] == 3


def _with_per_seed(psikt_auc, gru_auc, correlation=None):
    m = _with()
    m["auc"] = {"psikt": psikt_auc, "gru": gru_auc, "oracle": [0.8] * len(psikt_auc)}
    m["auc_psikt_minus_gru"] = paired_ci(psikt_auc, gru_auc)
    m["correlation"] = correlation or {name: [0.9, 0.91, 0.92] for name in psikt.TRAIT_NAMES}
    return m


def test_verdict_from_per_seed_values():
    assert psikt.verdict(_with_per_seed([0.70, 0.71, 0.72], [0.69, 0.70, 0.71])) == Verdict.HELD


@pytest.mark.parametrize("method", ["psikt", "gru"])
@pytest.mark.parametrize("position", [1, 2])
def test_a_nan_auc_is_inconclusive(method, position):
    aucs = {"psikt": [0.70, 0.71, 0.72], "gru": [0.69, 0.70, 0.71]}
    aucs[method][position] = math.nan
    m = _with_per_seed(aucs["psikt"], aucs["gru"])
    assert psikt.verdict(m) == Verdict.INCONCLUSIVE
    m["trait_correlation"]["mean"] = {"low": 0.1, "high": 0.2}  # a failing part: still no verdict
    assert psikt.verdict(m) == Verdict.INCONCLUSIVE
    assert psikt.verdict(json.loads(json.dumps(m))) == Verdict.INCONCLUSIVE


def test_a_nan_correlation_is_inconclusive():
    corr = {name: [0.9, 0.91, 0.92] for name in psikt.TRAIT_NAMES}
    corr["log_volatility"] = [0.9, 0.91, math.nan]
    m = _with_per_seed([0.70, 0.71, 0.72], [0.69, 0.70, 0.71], corr)
    assert psikt.verdict(m) == Verdict.INCONCLUSIVE


@pytest.mark.parametrize(
    ("low", "high", "threshold", "expected"),
    [
        (0.31, 0.6, 0.3, "held"),
        (0.3, 0.6, 0.3, "inconclusive"),  # the low end must be strictly above
        (0.1, 0.29, 0.3, "not held"),
        (0.1, 0.3, 0.3, "inconclusive"),
        (-math.inf, 0.2, 0.3, "not held"),
        (math.nan, 0.5, 0.3, "inconclusive"),
        (0.2, math.nan, 0.3, "inconclusive"),
    ],
)
def test_above_through_better_than(low, high, threshold, expected):
    assert psikt._above(low, high, threshold) == Verdict(expected)


def test_quick_run_is_consistent(tmp_path: Path) -> None:
    result = run_quick("psikt", tmp_path)  # the shared well-formedness checks
    m = result.metrics
    for name, values in m["correlation"].items():
        assert m["trait_correlation"][name] == pytest.approx(psikt.fisher_z_ci(values))
        assert m["trait_correlation"][name]["mean_r"] == pytest.approx(mean_ci(values)["mean"])
        assert all(-1.0 <= v <= 1.0 for v in values)
        assert -1.0 < m["trait_correlation"][name]["low"] <= m["trait_correlation"][name]["high"]
        assert m["trait_correlation"][name]["high"] < 1.0
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

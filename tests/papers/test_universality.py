"""universality: the verdict on literal metrics (both sides of each threshold), the quick run."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from _repro_checks import run_quick

from divergent.papers import universality
from divergent.repro import ReproductionResult, Verdict

LENGTHS = [100, 1000, 10000]


def _source(p: int, slope_ratio: float = 1.0, se_ratio: float = 0.05, excess_z: float = -1.0):
    """A source with p parameters: slope = ratio · p/2, its SE = se_ratio · p/2; the regret
    at the last length = bound + excess_z combined SEs (SE 0.003 and 0.004: combined 0.005)."""
    regret = [0.5, 0.2, 0.1 + excess_z * 0.005]
    return {
        "num_parameters": p,
        "slope": slope_ratio * p / 2,
        "slope_se": se_ratio * p / 2,
        "lengths": LENGTHS,
        "regret": regret,
        "regret_se": [0.003] * 3,
        "bound": [0.6, 0.3, 0.1],
        "bound_se": [0.004] * 3,
    }


def _metrics(**overrides: dict) -> dict:
    sources = {"order 0": _source(1), "order 1": _source(2), "order 3": _source(8)}
    for name, kw in overrides.items():
        key = name.replace("_", " ")
        sources[key] = _source(sources[key]["num_parameters"], **kw)
    return {"sources": sources}


def test_verdict_holds_on_the_claim() -> None:
    assert universality.verdict(_metrics()) is Verdict.HELD
    assert universality.verdict(json.loads(json.dumps(_metrics()))) is Verdict.HELD


@pytest.mark.parametrize(
    "overrides,expected",
    [
        # the slope of n·R_n within ±25 % of p_true/2
        ({"order_3": dict(slope_ratio=1.24)}, Verdict.HELD),
        ({"order_3": dict(slope_ratio=1.26)}, Verdict.NOT_HELD),
        ({"order_0": dict(slope_ratio=0.76)}, Verdict.HELD),
        ({"order_0": dict(slope_ratio=0.74)}, Verdict.NOT_HELD),
        ({"order_1": dict(slope_ratio=2.0)}, Verdict.NOT_HELD),  # the next order's p/2
        # its standard error at most 10 % of p_true/2, else inconclusive
        ({"order_1": dict(se_ratio=0.09)}, Verdict.HELD),
        ({"order_1": dict(se_ratio=0.11)}, Verdict.INCONCLUSIVE),
        ({"order_1": dict(se_ratio=0.11, slope_ratio=2.0)}, Verdict.INCONCLUSIVE),
        # regret ≤ bound + 3 combined standard errors in every cell
        ({"order_3": dict(excess_z=2.9)}, Verdict.HELD),
        ({"order_3": dict(excess_z=3.1)}, Verdict.NOT_HELD),
    ],
)
def test_verdict_on_each_side_of_each_threshold(overrides: dict, expected: Verdict) -> None:
    assert universality.verdict(_metrics(**overrides)) is expected


@pytest.mark.parametrize(
    ("key", "index"),
    [
        ("regret", 2),
        ("regret", 1),
        ("regret_se", 2),
        ("bound", 1),
        ("bound_se", 2),
        ("slope", None),
        ("slope_se", None),
    ],
)
@pytest.mark.parametrize("source", ["order 1", "order 3"])
def test_a_nan_anywhere_is_inconclusive(key: str, index: int | None, source: str) -> None:
    metrics = _metrics()
    if index is None:
        metrics["sources"][source][key] = math.nan
    else:
        metrics["sources"][source][key][index] = math.nan
    assert universality.verdict(metrics) is Verdict.INCONCLUSIVE
    assert universality.checks(metrics)["nan_in"] == [source]
    # also when another part fails: no verdict can be drawn from a NaN
    metrics["sources"]["order 0"]["slope"] = 5.0
    assert universality.verdict(metrics) is Verdict.INCONCLUSIVE
    # and as read back from JSON
    assert universality.verdict(json.loads(json.dumps(metrics))) is Verdict.INCONCLUSIVE


def test_a_failure_beats_an_imprecise_slope() -> None:
    metrics = _metrics(order_0=dict(se_ratio=0.5), order_3=dict(slope_ratio=1.5))
    assert universality.verdict(metrics) is Verdict.NOT_HELD
    metrics = _metrics(order_0=dict(se_ratio=0.5), order_1=dict(excess_z=5.0))
    assert universality.verdict(metrics) is Verdict.NOT_HELD
    c = universality.checks(metrics)
    assert [v["source"] for v in c["violations"]] == ["order 1"]


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> ReproductionResult:
    return run_quick("universality", tmp_path_factory.mktemp("universality"))


def test_quick_run(quick: ReproductionResult) -> None:
    m = quick.metrics
    assert m["checks"] == json.loads(json.dumps(universality.checks(m)))
    assert set(m["sources"]) == set(universality.SOURCES)
    for s in m["sources"].values():
        n = np.array(s["lengths"], dtype=float)
        assert (np.diff(n) > 0).all() and n[0] == universality.MIN_LENGTH
        regret, bound = np.array(s["regret"]), np.array(s["bound"])
        assert (regret > 0).all() and (bound > 0).all()
        # the bound is a theorem here (stationary past): it must hold within MC error
        assert (regret <= bound + 3 * np.hypot(s["regret_se"], s["bound_se"])).all()
        assert set(s["eps_star"]) <= set(m["eps_grid"])
        np.testing.assert_allclose(s["reference"], s["num_parameters"] / 2 * np.log(n) / n)
        assert s["num_parameters"] == 2 ** s["order"]
        assert s["offsets"][s["order"] :] == [0.0] * (universality.MAX_ORDER + 1 - s["order"])
        assert all(o > 0 for o in s["offsets"][: s["order"]])  # lower orders are misspecified
        assert math.isfinite(s["slope"]) and s["slope_se"] > 0
    # the 256-parameter model alone learns the order-3 source far worse than the mixture
    assert m["sources"]["order 3"]["largest_alone_over_mixture_at_n_max"] > 2
    assert quick.indicative

"""kltracing reproduction: the verdict on literal metrics on both sides of each threshold, and
a quick run."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from _repro_checks import run_quick

from divergent.papers import kltracing
from divergent.papers._stats import mean_ci
from divergent.repro import Verdict


def _metrics(
    kl: float = 1.2,
    rgb: float = 1.4,
    zero: float = 2.0,
    oracle: float = 1.0,
    low: float = 0.01,
    high: float = 0.2,
) -> dict:
    return {
        "epe_mean": {"kl": kl, "rgb": rgb, "rgb_categorical": 1.5, "zero": zero, "oracle": oracle},
        "relative_reduction": {"mean": (low + high) / 2, "low": low, "high": high},
    }


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        # the paired interval of the relative EPE reduction (margin 0.05)
        (dict(low=0.001, high=0.2), "held"),
        (dict(low=-0.001, high=0.2), "inconclusive"),
        (dict(low=-0.02, high=0.051), "inconclusive"),
        (dict(low=-0.02, high=0.049), "not held"),
        (dict(kl=1.8, rgb=1.2, low=-0.6, high=-0.4), "not held"),
        # the better tracer must close ≥ half the zero → oracle gap (here 2.0 → 1.0)
        (dict(kl=1.49, rgb=1.6), "held"),
        (dict(kl=1.51, rgb=1.6), "inconclusive"),
        (dict(kl=1.7, rgb=1.49, low=-0.3, high=-0.1), "not held"),
        (dict(kl=1.7, rgb=1.51, low=-0.3, high=-0.1), "inconclusive"),
        # no gap at all: nothing to carry
        (dict(kl=0.5, rgb=0.9, zero=1.0, oracle=1.0), "inconclusive"),
    ],
)
def test_verdict(kwargs: dict, expected: str) -> None:
    m = _metrics(**kwargs)
    assert kltracing.verdict(m) == Verdict(expected)
    assert kltracing.verdict(json.loads(json.dumps(m))) == Verdict(expected)


def test_relative_reduction_without_an_rgb_error_is_nan() -> None:
    assert kltracing.relative_reduction(0.5, 2.0) == pytest.approx(0.75)
    assert math.isnan(kltracing.relative_reduction(0.0, 0.0))  # was ZeroDivisionError
    assert math.isnan(kltracing.relative_reduction(0.3, 0.0))


@pytest.mark.parametrize("position", [0, 2])
def test_a_seed_with_zero_rgb_error_is_inconclusive(position: int) -> None:
    kl, rgb = [1.0, 1.1, 1.2], [1.4, 1.5, 1.6]
    rgb[position] = 0.0
    relative = [kltracing.relative_reduction(a, b) for a, b in zip(kl, rgb)]
    m = _metrics()
    m["relative_reduction"] = mean_ci(relative)
    assert kltracing.verdict(m) == Verdict.INCONCLUSIVE
    assert kltracing.verdict(json.loads(json.dumps(m))) == Verdict.INCONCLUSIVE
    rgb[position] = 1.4  # the same seeds with an RGB error: held
    m["relative_reduction"] = mean_ci([kltracing.relative_reduction(a, b) for a, b in zip(kl, rgb)])
    assert kltracing.verdict(m) == Verdict.HELD


def test_checks_name_each_part() -> None:
    c = kltracing.checks(_metrics(low=-0.02, high=0.04))
    assert c == {"tracer_carried": True, "kl_better": False, "kl_not_better_by_margin": True}


def test_quick_run_is_consistent(tmp_path: Path) -> None:
    result = run_quick("kltracing", tmp_path)
    m = result.metrics
    epe = m["epe"]
    n = m["n_seeds"]
    assert all(len(v) == n for v in epe.values())
    rel = mean_ci([1 - a / b for a, b in zip(epe["kl"], epe["rgb"])])
    assert m["relative_reduction"]["low"] == pytest.approx(rel["low"])
    # zero flow: every query is on a moving disc, so its EPE is the flow's length (2 px here)
    assert epe["zero"] == pytest.approx([2.0] * n)
    assert all(0 <= v <= 2 * 2**0.5 * 2 for vals in epe.values() for v in vals)
    assert all(0.0 < o < 2.0 for o in epe["oracle"])
    assert m["checks"] == kltracing.checks(m)
    assert any(p.endswith("kltracing_example_maps.png") for p in result.plots)

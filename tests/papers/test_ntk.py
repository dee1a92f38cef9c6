"""ntk: the verdict on literal metrics (both sides of every threshold) and the quick run."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from _repro_checks import run_quick
from scipy.stats import linregress

from divergent.papers import ntk
from divergent.repro import ReproductionResult, Verdict

WIDTHS = [100, 400, 1600]
_L = math.log(4.0)
# two seeds per width at exp(±d) around the line: SE of the slope = d·sqrt(6/4/(4L²))
_SE_PER_D = math.sqrt(6 / 4 / (4 * _L**2))


def _series(slope: float, se: float = 0.0, at_largest: float = 0.05) -> list[list[float]]:
    d = se / _SE_PER_D
    out = []
    for w in WIDTHS:
        base = at_largest * (w / WIDTHS[-1]) ** slope
        out.append([base * math.exp(d), base * math.exp(-d)])
    return out


def _metrics(
    dev: tuple[float, float] = (-0.5, 0.0),
    mov: tuple[float, float] = (-0.5, 0.0),
    lin: tuple[float, float] = (-0.5, 0.0),
    lin_largest: float = 0.05,
) -> dict:
    series = {
        "deviation": _series(*dev, at_largest=0.1),
        "movement": _series(*mov, at_largest=0.03),
        "linearization_error": _series(*lin, at_largest=lin_largest),
    }
    per = {str(w): {name: vals[i] for name, vals in series.items()} for i, w in enumerate(WIDTHS)}
    return {"widths": WIDTHS, "per_width": per}


def test_loglog_slope_matches_scipy() -> None:
    rng = np.random.default_rng(0)
    vals = [list(np.exp(rng.normal(size=3)) * w**-0.4) for w in WIDTHS]
    fit = ntk.loglog_slope(WIDTHS, vals)
    ref = linregress(np.log(np.repeat(WIDTHS, 3)), np.log(np.concatenate(vals)))
    assert fit["slope"] == pytest.approx(ref.slope, rel=1e-12)
    assert fit["se"] == pytest.approx(ref.stderr, rel=1e-12)
    fit = ntk.loglog_slope(WIDTHS, _series(-0.5, 0.2))
    assert fit["slope"] == pytest.approx(-0.5) and fit["se"] == pytest.approx(0.2)
    assert math.isnan(ntk.loglog_slope(WIDTHS, [[1.0], [0.0], [1.0]])["slope"])


def test_verdict_holds_on_the_claim() -> None:
    assert ntk.verdict(_metrics()) is Verdict.HELD
    assert ntk.verdict(json.loads(json.dumps(_metrics()))) is Verdict.HELD


@pytest.mark.parametrize(
    "kwargs,expected",
    [
        # concentration: the deviation's slope in [−0.7, −0.3]
        (dict(dev=(-0.31, 0.0)), Verdict.HELD),
        (dict(dev=(-0.29, 0.0)), Verdict.NOT_HELD),
        (dict(dev=(-0.69, 0.0)), Verdict.HELD),
        (dict(dev=(-0.71, 0.0)), Verdict.NOT_HELD),
        # ... its SE at most 0.15 for held
        (dict(dev=(-0.5, 0.14)), Verdict.HELD),
        (dict(dev=(-0.5, 0.16)), Verdict.INCONCLUSIVE),
        # ... not held only when the ±2 SE interval misses the band
        (dict(dev=(-0.2, 0.06)), Verdict.INCONCLUSIVE),
        (dict(dev=(-0.2, 0.04)), Verdict.NOT_HELD),
        (dict(dev=(0.3, 0.2)), Verdict.NOT_HELD),
        # lazy training: the movement's slope in [−1.2, −0.3]
        (dict(mov=(-1.19, 0.0)), Verdict.HELD),
        (dict(mov=(-1.21, 0.0)), Verdict.NOT_HELD),
        (dict(mov=(-0.31, 0.0)), Verdict.HELD),
        (dict(mov=(-0.29, 0.0)), Verdict.NOT_HELD),
        (dict(mov=(-0.25, 0.05)), Verdict.INCONCLUSIVE),
        # linearisation: slope ≤ −0.3 and mean error ≤ 0.1 at the largest width
        (dict(lin=(-2.0, 0.0)), Verdict.HELD),
        (dict(lin=(-0.31, 0.0)), Verdict.HELD),
        (dict(lin=(-0.29, 0.0)), Verdict.NOT_HELD),
        (dict(lin=(-0.2, 0.1)), Verdict.INCONCLUSIVE),
        (dict(lin_largest=0.099), Verdict.HELD),
        (dict(lin_largest=0.101), Verdict.NOT_HELD),
    ],
)
def test_verdict_on_each_side_of_each_threshold(kwargs: dict, expected: Verdict) -> None:
    assert ntk.verdict(_metrics(**kwargs)) is expected


def test_a_failure_beats_an_inconclusive_part() -> None:
    assert ntk.verdict(_metrics(dev=(-0.5, 0.3), lin_largest=0.2)) is Verdict.NOT_HELD
    m = _metrics()
    m["per_width"]["400"]["movement"] = [0.0, 0.01]  # log 0: no fit, inconclusive
    assert ntk.verdict(m) is Verdict.INCONCLUSIVE


@pytest.mark.parametrize("name", ["deviation", "movement", "linearization_error"])
@pytest.mark.parametrize(("width", "seed"), [("1600", 1), ("400", 1), ("1600", 0)])
def test_a_nan_anywhere_is_inconclusive(name: str, width: str, seed: int) -> None:
    m = _metrics()
    m["per_width"][width][name][seed] = math.nan
    assert ntk.verdict(m) is Verdict.INCONCLUSIVE
    assert ntk.checks(m)["nan_in"] == [name]
    m = _metrics(lin_largest=0.2)  # another part fails: still no verdict from a NaN
    m["per_width"][width][name][seed] = math.nan
    assert ntk.verdict(m) is Verdict.INCONCLUSIVE
    assert ntk.verdict(json.loads(json.dumps(m))) is Verdict.INCONCLUSIVE


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> ReproductionResult:
    return run_quick("ntk", tmp_path_factory.mktemp("ntk"))


def test_quick_run(quick: ReproductionResult) -> None:
    m = quick.metrics
    assert m["widths"] == sorted(m["widths"]) and len(m["widths"]) >= 3
    for w in m["widths"]:
        row = m["per_width"][str(w)]
        for name in ("deviation", "movement", "linearization_error", "limit_error"):
            assert len(row[name]) == m["n_seeds"]
            assert all(0 < v < 3 for v in row[name])
            assert row[f"{name}_mean"] == pytest.approx(float(np.mean(row[name])))
        # 50 steps of η = 3 fit the 4 points (the loss started at O(0.1))
        assert max(row["final_loss"]) < 1e-3
    first, last = (m["per_width"][str(w)] for w in (m["widths"][0], m["widths"][-1]))
    assert last["deviation_mean"] < first["deviation_mean"]
    assert last["movement_mean"] < first["movement_mean"]
    c = m["checks"]
    assert c["linearization_error_at_largest_width"] == pytest.approx(
        last["linearization_error_mean"]
    )
    assert c["fits"]["deviation"]["n"] == len(m["widths"]) * m["n_seeds"]
    assert quick.indicative

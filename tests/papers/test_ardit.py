"""ardit: the verdict on literal metrics (both sides of every threshold) and the quick run."""

from __future__ import annotations

import json
import math

import pytest
from _repro_checks import run_quick

from divergent.papers import ardit
from divergent.repro import ReproductionResult, Verdict


def _metrics(
    rank: int = 1,
    kl_start: float = math.inf,
    ikl_from_0: float = 2.0,
    ikl_from_0_fine: float = 2.0000001,
    cosine: float = 0.99,
    kl_final: float = 0.001,
    w2_final: float = 0.05,
    ar_kl: float = 0.001,
    curve: tuple[float, ...] = (1.0, 0.5, 0.1, 0.005),
) -> dict:
    run = {
        "start": {
            "rank": rank,
            "kl": kl_start,
            "ikl_from_0": ikl_from_0,
            "ikl_from_0_fine": ikl_from_0_fine,
        },
        "final": {"kl": kl_final, "w2": w2_final},
        "ikl": list(curve),
    }
    other = {
        "start": {"rank": 1, "kl": math.inf, "ikl_from_0": 1.0, "ikl_from_0_fine": 1.0},
        **{k: v for k, v in run.items() if k != "start"},
    }
    other["final"] = {"kl": 0.001, "w2": 0.01}
    return {
        "runs": [run, other],
        "ar": [{"kl_final": ar_kl}, {"kl_final": 0.0}],
        "gradient_check": {"cosine": cosine},
    }


def _json(m: dict) -> dict:
    """As the runner stores it: inf as the string 'inf'."""
    text = json.dumps(m).replace("Infinity", '"inf"')
    return json.loads(text)


def test_verdict_holds_on_the_claim() -> None:
    assert ardit.verdict(_metrics()) is Verdict.HELD
    assert ardit.verdict(_json(_metrics())) is Verdict.HELD


@pytest.mark.parametrize(
    "kwargs,expected",
    [
        # a start that is not singular does not test the claim (a set-up fact, not a part)
        (dict(rank=2), Verdict.INCONCLUSIVE),
        (dict(kl_start=3.0), Verdict.INCONCLUSIVE),
        # the IKL on [0, 1]: 48 and 192 quadrature nodes agree to 1e-4 relative (restated)
        (dict(ikl_from_0=2.0, ikl_from_0_fine=2.0 / (1 + 0.99e-4)), Verdict.HELD),
        (dict(ikl_from_0=2.0, ikl_from_0_fine=2.0 / (1 + 1.01e-4)), Verdict.NOT_HELD),
        (dict(ikl_from_0=2.0, ikl_from_0_fine=2.0 * (1 + 0.99e-4)), Verdict.HELD),
        (dict(ikl_from_0=2.0, ikl_from_0_fine=2.0 * (1 + 1.01e-4)), Verdict.NOT_HELD),
        (dict(ikl_from_0=math.inf), Verdict.NOT_HELD),
        (dict(ikl_from_0_fine=math.inf), Verdict.NOT_HELD),
        # the Monte-Carlo gradient agrees with the closed form: cosine ≥ 0.95
        (dict(cosine=0.951), Verdict.HELD),
        (dict(cosine=0.949), Verdict.NOT_HELD),
        # final KL ≤ 0.02 held; (0.02, 0.2] inconclusive; > 0.2 not held
        (dict(kl_final=0.0199), Verdict.HELD),
        (dict(kl_final=0.0201), Verdict.INCONCLUSIVE),
        (dict(kl_final=0.199), Verdict.INCONCLUSIVE),
        (dict(kl_final=0.201), Verdict.NOT_HELD),
        # the AR generator's joint KL counts the same way
        (dict(ar_kl=0.0199), Verdict.HELD),
        (dict(ar_kl=0.0201), Verdict.INCONCLUSIVE),
        (dict(ar_kl=0.201), Verdict.NOT_HELD),
        # W2 ≤ 0.15 held; (0.15, 0.5] inconclusive; > 0.5 not held
        (dict(w2_final=0.149), Verdict.HELD),
        (dict(w2_final=0.151), Verdict.INCONCLUSIVE),
        (dict(w2_final=0.501), Verdict.NOT_HELD),
        # the seed-mean IKL rises by at most 1 % of its start between checkpoints ...
        (dict(curve=(1.0, 0.5, 0.509, 0.005)), Verdict.HELD),
        (dict(curve=(1.0, 0.5, 0.511, 0.005)), Verdict.NOT_HELD),
        # ... and ends at most at 1 % of it
        (dict(curve=(1.0, 0.5, 0.1, 0.0099)), Verdict.HELD),
        (dict(curve=(1.0, 0.5, 0.1, 0.0101)), Verdict.NOT_HELD),
    ],
)
def test_verdict_on_each_side_of_each_threshold(kwargs: dict, expected: Verdict) -> None:
    assert ardit.verdict(_metrics(**kwargs)) is expected
    assert ardit.verdict(_json(_metrics(**kwargs))) is expected


def test_a_failure_beats_an_unfinished_convergence() -> None:
    assert ardit.verdict(_metrics(kl_final=0.05, cosine=0.5)) is Verdict.NOT_HELD


def _with_nan_later(m: dict, where: str) -> dict:
    """NaN in the second seed / second AR run / a middle checkpoint (not the first element)."""
    nan = math.nan
    if where == "kl_and_w2":
        m["runs"][1]["final"] = {"kl": nan, "w2": nan}
    elif where == "kl":
        m["runs"][1]["final"]["kl"] = nan
    elif where == "w2":
        m["runs"][1]["final"]["w2"] = nan
    elif where == "ar_kl":
        m["ar"][1]["kl_final"] = nan
    elif where == "curve":
        m["runs"][1]["ikl"] = [1.0, nan, 0.1, 0.005]
    elif where == "ikl_from_0":
        m["runs"][1]["start"]["ikl_from_0"] = nan
    elif where == "ikl_from_0_fine":
        m["runs"][1]["start"]["ikl_from_0_fine"] = nan
    elif where == "cosine":
        m["gradient_check"]["cosine"] = nan
    return m


@pytest.mark.parametrize(
    "where",
    ["kl_and_w2", "kl", "w2", "ar_kl", "curve", "ikl_from_0", "ikl_from_0_fine", "cosine"],
)
def test_nan_anywhere_is_inconclusive(where: str) -> None:
    m = _with_nan_later(_metrics(), where)
    assert ardit.verdict(m) is Verdict.INCONCLUSIVE
    assert ardit.verdict(json.loads(json.dumps(m).replace("Infinity", '"inf"'))) is (
        Verdict.INCONCLUSIVE
    )


def test_a_measured_failure_beats_a_nan() -> None:
    # seed 2's KL is NaN but the first seed's W2 is above the failure level: not held
    assert ardit.verdict(_with_nan_later(_metrics(w2_final=0.6), "kl")) is Verdict.NOT_HELD
    # a NaN cosine with a failing IKL curve: not held
    m = _with_nan_later(_metrics(curve=(1.0, 0.5, 0.1, 0.02)), "cosine")
    assert ardit.verdict(m) is Verdict.NOT_HELD


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> ReproductionResult:
    return run_quick("ardit", tmp_path_factory.mktemp("ardit"))


def test_quick_run(quick: ReproductionResult) -> None:
    m = quick.metrics
    for run in m["runs"]:
        start, final = run["start"], run["final"]
        assert start["rank"] == 1 and float(start["kl"]) == math.inf
        # IKL over [0, 1] ≥ IKL over [1e-3, 1] (a non-negative integrand), both finite
        assert math.isfinite(start["ikl_from_0"]) and start["ikl_from_0"] >= start["ikl"] > 0
        assert run["ikl"][0] == start["ikl"] and run["checkpoints"][0] == 0
        assert run["checkpoints"][-1] == m["n_steps"] and 2 <= len(run["checkpoints"]) <= 22
        # the trained generator is full rank, so its KL is finite; W2, KL, IKL agree it is close
        assert math.isfinite(final["kl"]) and final["ikl"] == run["ikl"][-1]
        assert final["ikl"] < run["ikl"][0] and final["w2"] >= 0
    for r in m["ar"]:
        assert float(r["kl_start"]) == math.inf and r["kl_final"] >= 0
        # the restated part: the start's IKL on [0, 1] converged in the quadrature
        rel = abs(start["ikl_from_0"] - start["ikl_from_0_fine"]) / start["ikl_from_0_fine"]
        assert rel <= ardit.QUAD_REL_MAX
    # the gradient check (the same 8 × 4096 draws in quick and full runs) passes, and its two
    # numbers agree: |mc − exact| / |exact| ≥ sin(angle) for any Monte-Carlo vector mc
    grad = m["gradient_check"]
    assert grad["cosine"] >= ardit.GRAD_COS_MIN
    assert grad["relative_error"] >= math.sqrt(1.0 - grad["cosine"] ** 2) - 1e-12
    assert grad["relative_error"] < 0.2
    assert m["checks"]["singular_start"] and m["checks"]["ikl_quadrature_converged"]
    assert quick.indicative

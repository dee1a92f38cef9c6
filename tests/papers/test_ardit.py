"""ardit: the verdict on literal metrics (both sides of every threshold) and the quick run."""

from __future__ import annotations

import json
import math

import pytest
import torch
from _repro_checks import run_quick

from divergent.papers import ardit
from divergent.repro import ReproductionResult, Verdict


def _metrics(
    rank: int = 1,
    kl_start: float = math.inf,
    ikl_from_0: float = 2.0,
    cosine: float = 0.99,
    kl_final: float = 0.001,
    w2_final: float = 0.05,
    ar_kl: float = 0.001,
    curve: tuple[float, ...] = (1.0, 0.5, 0.1, 0.005),
) -> dict:
    run = {
        "start": {"rank": rank, "kl": kl_start, "ikl_from_0": ikl_from_0},
        "final": {"kl": kl_final, "w2": w2_final},
        "ikl": list(curve),
    }
    other = {
        "start": {"rank": 1, "kl": math.inf, "ikl_from_0": 1.0},
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
        # the start must be singular with KL = ∞ and a finite IKL
        (dict(rank=2), Verdict.NOT_HELD),
        (dict(kl_start=3.0), Verdict.NOT_HELD),
        (dict(ikl_from_0=math.inf), Verdict.NOT_HELD),
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


def test_gaussian_w2_closed_form() -> None:
    f = torch.float64
    # commuting covariances: W2² = |Δμ|² + Σ (√λ₁ − √λ₂)²
    w2 = ardit.gaussian_w2(
        torch.tensor([1.0, 0.0], dtype=f),
        torch.diag(torch.tensor([4.0, 0.0], dtype=f)),
        torch.tensor([0.0, 0.0], dtype=f),
        torch.diag(torch.tensor([1.0, 9.0], dtype=f)),
    )
    assert w2 == pytest.approx(math.sqrt(1.0 + 1.0 + 9.0), rel=1e-10)


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
    assert -1.0 <= m["gradient_check"]["cosine"] <= 1.0
    assert quick.indicative

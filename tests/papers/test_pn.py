"""pn: the verdict on literal metrics (both sides of every threshold) and the quick run."""

from __future__ import annotations

import json

import pytest
from _repro_checks import run_quick

from divergent.papers import pn
from divergent.repro import ReproductionResult, Verdict

SE = 1e-6
NS = [100, 200, 400, 800, 3200]  # |b|/n² > 2 SE for n ≤ 800 (b = 2), not at 3200


def _metrics(
    a: float = 0.3,
    b: float = 2.0,
    large_shift_se: float = 0.0,
    helps: tuple[bool, ...] = (True, True, True, True),
    bayes_error: float = 0.49,
) -> dict:
    """One misspecified dimension p = 1 (a ≠ p/2 = 0.5), the simulation equal to a/n + b/n²."""
    cells = []
    for i, n in enumerate(NS):
        one, two = a / n, a / n + b / n**2
        risk = two if n == 3200 else (two if helps[i] else one)
        if n == 3200:
            risk += large_shift_se * SE
        cells.append(
            {
                "p": 1,
                "n": n,
                "risk": risk,
                "risk_se": SE,
                "one_term": one,
                "two_term": two,
                "well_specified": 1 / (2 * n),
                "bayes_error": bayes_error,
                "bayes_error_se": 0.001,
                "accept": n >= 800,
            }
        )
    return {"cells": cells, "expansions": {"1": {"a": a, "b": b}}}


def test_verdict_holds_on_the_claim() -> None:
    assert pn.verdict(_metrics()) is Verdict.HELD
    assert pn.verdict(json.loads(json.dumps(_metrics()))) is Verdict.HELD


@pytest.mark.parametrize(
    "kwargs,expected",
    [
        # the two-term expansion within 3 SE of the simulation at the largest n
        (dict(large_shift_se=2.9), Verdict.HELD),
        (dict(large_shift_se=3.1), Verdict.NOT_HELD),
        (dict(large_shift_se=-3.1), Verdict.NOT_HELD),
        # misspecification: a differs from p/2 by ≥ 20 % (here 0.5 ± 0.1)
        (dict(a=0.39), Verdict.HELD),
        (dict(a=0.41), Verdict.NOT_HELD),  # no misspecified dimension to tell apart
        # the n⁻² term closer in ≥ 75 % of the resolvable cells (3 of 4 / 2 of 4)
        (dict(helps=(True, True, True, False)), Verdict.HELD),
        (dict(helps=(True, True, False, False)), Verdict.NOT_HELD),
        # no resolvable cell: that part is untested, so the whole is inconclusive
        (dict(b=0.0), Verdict.INCONCLUSIVE),
        # soundness: accepted cells keep a Bayes error ≥ 0.48 − 2 SE (SE 0.001)
        (dict(bayes_error=0.4785), Verdict.HELD),
        (dict(bayes_error=0.4775), Verdict.NOT_HELD),
    ],
)
def test_verdict_on_each_side_of_each_threshold(kwargs: dict, expected: Verdict) -> None:
    assert pn.verdict(_metrics(**kwargs)) is expected


def test_a_failure_beats_an_untested_part() -> None:
    assert pn.verdict(_metrics(b=0.0, bayes_error=0.4)) is Verdict.NOT_HELD


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> ReproductionResult:
    return run_quick("pn", tmp_path_factory.mktemp("pn"))


def test_quick_run(quick: ReproductionResult) -> None:
    m = quick.metrics
    for c in m["cells"]:
        e = m["expansions"][str(c["p"])]  # JSON keys are strings
        assert c["two_term"] == pytest.approx(e["a"] / c["n"] + e["b"] / c["n"] ** 2)
        limit = 2 * (1 - 2 * pn.BAYES_ERROR) ** 2
        assert c["accept"] == (c["two_term"] <= limit)
        assert 0 <= c["bayes_error"] <= 0.5 and c["risk"] > 0
        assert c["mle_failures"] == 0
    # the leading coefficient is a theorem-level quantity: it must match at the largest n
    n_max = max(m["ns"])
    for c in (c for c in m["cells"] if c["n"] == n_max):
        assert abs(c["risk"] - c["one_term"]) < 0.2 * c["one_term"]
    assert quick.indicative

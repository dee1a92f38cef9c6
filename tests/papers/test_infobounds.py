"""infobounds: the verdict on literal metrics (both sides of every threshold) and the quick
run."""

from __future__ import annotations

import itertools
import json
import math

import pytest
from _repro_checks import run_quick

from divergent.papers import infobounds
from divergent.repro import ReproductionResult, Verdict

V = 0.5
NULL = [-V, -V / 3, V / 3, V]  # mean 0, variance (20/27) V²
MDC = 2 * math.sqrt(20 / 27 * V**2 * (1 + 1 / 4))  # one seed, J = 4: 0.96225
PAIR = math.hypot(MDC, MDC)  # 1.36083: a significant increase between two layers


def _metrics(kls: list[float], seeds: int = 1) -> dict:
    layers = [{"kl": k, "kl_null": NULL} for k in kls]
    return {"per_seed": [{"layers": layers} for _ in range(seeds)]}


def test_smallest_detectable_change() -> None:
    c = infobounds.kl_checks(_metrics([1.5, 1.0, 0.5]))
    assert c["mdc"] == pytest.approx([MDC] * 3)
    assert c["kl_minus_null"] == pytest.approx([1.5, 1.0, 0.5])
    assert c["detectable_layers"] == 2 and c["significant_increases"] == []  # 1.5, 1.0 > MDC
    # more seeds: the MDC of the seed mean shrinks as 1/√S
    c4 = infobounds.kl_checks(_metrics([1.5, 1.0, 0.5], seeds=4))
    assert c4["mdc"][0] == pytest.approx(MDC / 2)


@pytest.mark.parametrize(
    "kls,detectable,increases,expected",
    [
        # shrinking with depth, above the noise: the KL part holds, the funnel is untestable
        ([1.5, 1.0, 0.5], 2, [], Verdict.INCONCLUSIVE),
        # nothing above the smallest detectable change: no power
        ([0.9, 0.5, 0.2], 0, [], Verdict.INCONCLUSIVE),
        # an increase with depth larger than √(MDC_i² + MDC_j²) = 1.3608: not held
        ([0.5, 1.0, 0.5 + PAIR + 0.01], 2, [(0, 2)], Verdict.NOT_HELD),
        ([0.5, 1.0, 0.5 + PAIR - 0.01], 2, [], Verdict.INCONCLUSIVE),
    ],
)
def test_verdict_on_each_side_of_each_threshold(
    kls: list[float], detectable: int, increases: list, expected: Verdict
) -> None:
    m = _metrics(kls)
    c = infobounds.kl_checks(m)
    assert c["detectable_layers"] == detectable
    assert [tuple(p) for p in c["significant_increases"]] == increases
    assert infobounds.verdict(m) is expected
    assert infobounds.verdict(json.loads(json.dumps(m))) is expected


def test_the_funnel_part_never_passes() -> None:
    """L_k·W1_k with a norm-product Lipschitz bound is non-increasing by construction."""
    assert infobounds.verdict(_metrics([3.0, 2.0, 1.5, 1.2])) is not Verdict.HELD


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> ReproductionResult:
    return run_quick("infobounds", tmp_path_factory.mktemp("infobounds"))


def test_quick_run(quick: ReproductionResult) -> None:
    m = quick.metrics
    n_layers = len(infobounds.WIDTHS)
    for s in m["per_seed"]:
        rows = s["layers"]
        assert len(rows) == n_layers and s["train_acc"] > 0.95 and s["test_acc"] > 0.85
        for r in rows:
            assert len(r["kl_null"]) == m["null_resplits"]
            assert r["w1"] > 0 and r["w1_term"] == pytest.approx(r["lipschitz"] * r["w1"])
        assert rows[-1]["lipschitz"] == pytest.approx(math.sqrt(2))
    # the construction: the weighted W1 term cannot grow with depth
    terms = m["w1_term_mean"]
    assert all(b <= a * (1 + 1e-9) for a, b in itertools.pairwise(terms))
    assert m["w1_term_argmin_layer"] == n_layers - 1

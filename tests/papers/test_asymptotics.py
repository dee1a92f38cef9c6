"""asymptotics: the verdict on literal metrics (both sides of every threshold), the quick run,
and quick = full (slow)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from _repro_checks import run_quick, run_resized

from divergent.papers import asymptotics
from divergent.repro import ReproductionResult, Verdict, get_reproduction
from divergent.rl.best_of_n import best_of_n_kl_bound

NS = [2, 64]
BOUNDS = [best_of_n_kl_bound(n) for n in NS]  # 0.193147..., 3.174745...


def _kl_at_gap(gaps: list[float]) -> list[float]:
    """KL values whose relative gaps (bound − KL) / bound are ``gaps``."""
    return [b * (1 - g) for b, g in zip(BOUNDS, gaps)]


HELD_METRICS = {
    "A_bound": {
        "n": NS,
        "bound": BOUNDS,
        "kl_by_k": {"4": _kl_at_gap([0.40, 0.40]), "4096": _kl_at_gap([0.04, 0.04])},
        "kl_ties_random_tiebreak": _kl_at_gap([0.30, 0.30]),
        "kl_ties_first_index_tiebreak": _kl_at_gap([0.30, 0.30]),
    },
    "B_curves": {"tilted_reward_at_same_kl": [1.0, 2.0], "bon_reward": [0.9, 1.5]},
    "C_asymptotics": {
        "rel_kl_to_tilted": [0.5, 0.3, 0.2, 0.09],
        "rel_reward_gap": [0.4, 0.2, 0.1, 0.05],
    },
}


def _with(path: tuple, value: object) -> dict:
    m = copy.deepcopy(HELD_METRICS)
    node = m
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return m


def test_verdict_holds_on_the_claim() -> None:
    assert asymptotics.verdict(HELD_METRICS) is Verdict.HELD
    assert asymptotics.verdict(json.loads(json.dumps(HELD_METRICS))) is Verdict.HELD


@pytest.mark.parametrize(
    "path,value,expected",
    [
        # the bound: violated by at most 1e-9
        (("A_bound", "kl_by_k", "4096"), [BOUNDS[0] + 0.9e-9, BOUNDS[1] * 0.96], Verdict.HELD),
        (("A_bound", "kl_by_k", "4096"), [BOUNDS[0] + 1.1e-9, BOUNDS[1] * 0.96], Verdict.NOT_HELD),
        (("A_bound", "kl_ties_first_index_tiebreak"), [BOUNDS[0] + 2e-9, 1.0], Verdict.NOT_HELD),
        # approached at the largest K: gap ≤ 5 % and ≤ a quarter of the smallest K's gap
        (("A_bound", "kl_by_k", "4096"), _kl_at_gap([0.049, 0.049]), Verdict.HELD),
        (("A_bound", "kl_by_k", "4096"), _kl_at_gap([0.051, 0.04]), Verdict.NOT_HELD),
        # ... the largest K's gap 0.04 against a quarter of 0.17 (0.0425) and of 0.15 (0.0375)
        (("A_bound", "kl_by_k", "4"), _kl_at_gap([0.17, 0.40]), Verdict.HELD),
        (("A_bound", "kl_by_k", "4"), _kl_at_gap([0.15, 0.40]), Verdict.NOT_HELD),
        # clearly loose at N = 64: ≥ 25 % for the few-outcome and the tie case
        (("A_bound", "kl_ties_random_tiebreak"), _kl_at_gap([0.3, 0.251]), Verdict.HELD),
        (("A_bound", "kl_ties_random_tiebreak"), _kl_at_gap([0.3, 0.249]), Verdict.NOT_HELD),
        (("A_bound", "kl_by_k", "4"), _kl_at_gap([0.40, 0.249]), Verdict.NOT_HELD),
        # tilted ≥ BoN at equal KL, up to 1e-9
        (("B_curves", "bon_reward"), [1.0 + 0.9e-9, 1.5], Verdict.HELD),
        (("B_curves", "bon_reward"), [1.0 + 1.1e-9, 1.5], Verdict.NOT_HELD),
        # asymptotics: ≤ 0.1 at the largest m and strictly decreasing over the last three
        (("C_asymptotics", "rel_kl_to_tilted"), [0.5, 0.3, 0.2, 0.1], Verdict.HELD),
        (("C_asymptotics", "rel_kl_to_tilted"), [0.5, 0.3, 0.2, 0.11], Verdict.NOT_HELD),
        (("C_asymptotics", "rel_kl_to_tilted"), [0.5, 0.3, 0.05, 0.09], Verdict.NOT_HELD),
        (("C_asymptotics", "rel_reward_gap"), [0.4, 0.1, 0.1, 0.05], Verdict.NOT_HELD),
        (("C_asymptotics", "rel_reward_gap"), [0.05, 0.05], Verdict.NOT_HELD),  # too few m
    ],
)
def test_verdict_on_each_side_of_each_threshold(
    path: tuple, value: object, expected: Verdict
) -> None:
    assert asymptotics.verdict(_with(path, value)) is expected


def test_a_verdict_always_true_would_be_caught() -> None:
    """The issue-8 example: a bound that is violated must not pass."""
    m = _with(("A_bound", "kl_by_k", "4"), [BOUNDS[0] * 1.01, BOUNDS[1] * 0.6])
    assert asymptotics.checks(m)["bound_holds"] is False
    assert asymptotics.verdict(m) is Verdict.NOT_HELD


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> ReproductionResult:
    return run_quick("asymptotics", tmp_path_factory.mktemp("asymptotics"))


def test_quick_run(quick: ReproductionResult) -> None:
    parts = asymptotics.checks(quick.metrics)
    # numbers that are theorems must come out right whatever the claim's verdict
    assert parts["bound_holds"] and parts["tilted_dominates"]
    c = quick.metrics["C_asymptotics"]
    assert len(c["m"]) == len(c["rel_kl_to_tilted"]) >= 3


@pytest.mark.slow
def test_full_run_gives_the_quick_verdict(
    quick: ReproductionResult, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The full sizes (K up to 16384, 60 β) but the sequence lengths m only up to 128, not 192:
    m = 192 alone is two thirds of the full run's time. The checks read the largest K and the
    last three m (64, 96, 128: past the quick run's 32, 64, 96)."""
    ms = get_reproduction("asymptotics").size(quick=False).ms
    assert ms[-2:] == [128, 192]
    full = run_resized("asymptotics", tmp_path, monkeypatch, quick=False, ms=ms[:-1])
    assert full.metrics["C_asymptotics"]["m"][-3:] == [64, 96, 128]
    assert full.status == quick.status, (quick.summary, full.summary)

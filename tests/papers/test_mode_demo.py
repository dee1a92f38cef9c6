"""mode_demo: the verdict on literal metrics (both sides of every threshold), the quick run,
the directions of the three objectives, and quick = full (slow)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from _repro_checks import run_quick
from scipy.special import rel_entr

from divergent.papers import mode_demo
from divergent.repro import ReproductionResult, Verdict, run_reproduction
from divergent.train.grid_gaussian import grid_gaussian_logits

HELD_METRICS = {
    "loss_change_last_10pct": {"reverse_kl": 1e-6, "forward_kl": 1e-6, "js": 1e-6},
    "best": {
        "reverse_kl": {"modes_covered": 1, "forward_kl": 14.3, "reverse_kl": 0.80},
        "forward_kl": {"modes_covered": 3, "forward_kl": 0.65, "reverse_kl": 1.66},
        "js": {"modes_covered": 3, "forward_kl": 0.66, "reverse_kl": 1.58},
    },
}


def _with(path: tuple[str, ...], value: object) -> dict:
    m = copy.deepcopy(HELD_METRICS)
    node = m
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return m


def test_verdict_holds_on_the_claim() -> None:
    assert mode_demo.verdict(HELD_METRICS) is Verdict.HELD
    assert mode_demo.verdict(json.loads(json.dumps(HELD_METRICS))) is Verdict.HELD


@pytest.mark.parametrize(
    "path,value,expected",
    [
        # reverse KL's best fit: exactly one mode
        (("best", "reverse_kl", "modes_covered"), 2, Verdict.NOT_HELD),
        (("best", "reverse_kl", "modes_covered"), 0, Verdict.NOT_HELD),
        # forward KL's best fit: all three
        (("best", "forward_kl", "modes_covered"), 2, Verdict.NOT_HELD),
        # JS between in forward KL: [0.65, 14.3], ends included
        (("best", "js", "forward_kl"), 0.64, Verdict.NOT_HELD),
        (("best", "js", "forward_kl"), 0.65, Verdict.HELD),
        (("best", "js", "forward_kl"), 14.3, Verdict.HELD),
        (("best", "js", "forward_kl"), 14.4, Verdict.NOT_HELD),
        # JS between in reverse KL: [0.80, 1.66]
        (("best", "js", "reverse_kl"), 0.79, Verdict.NOT_HELD),
        (("best", "js", "reverse_kl"), 0.80, Verdict.HELD),
        (("best", "js", "reverse_kl"), 1.67, Verdict.NOT_HELD),
        # convergence: 1e-3 of the loss over the last 10 % of the steps
        (("loss_change_last_10pct", "js"), 1e-3, Verdict.HELD),
        (("loss_change_last_10pct", "js"), 1.1e-3, Verdict.INCONCLUSIVE),
        (("loss_change_last_10pct", "reverse_kl"), 0.5, Verdict.INCONCLUSIVE),
    ],
)
def test_verdict_on_each_side_of_each_threshold(
    path: tuple[str, ...], value: object, expected: Verdict
) -> None:
    assert mode_demo.verdict(_with(path, value)) is expected


def test_unconverged_fits_are_inconclusive_even_when_the_numbers_fail() -> None:
    m = _with(("best", "reverse_kl", "modes_covered"), 3)
    m["loss_change_last_10pct"]["forward_kl"] = 0.01
    assert mode_demo.verdict(m) is Verdict.INCONCLUSIVE


def _check_run(result: ReproductionResult) -> None:
    m = result.metrics
    n = m["n_init"]
    for name, fit in m["fits"].items():
        covered = [sum(x >= mode_demo.COVER_MASS for x in row) for row in fit["mode_mass"]]
        assert covered == fit["modes_covered"], name
        assert m["best"][name]["start"] == min(range(n), key=fit[name].__getitem__)
    broad = [i for i, c in enumerate(m["fits"]["reverse_kl"]["modes_covered"]) if c > 1]
    assert m["share_reverse_kl_starts_in_broad_minimum"] == pytest.approx(len(broad) / n)
    # each objective's best fit minimises its own objective best among the three families
    for own in ("forward_kl", "reverse_kl"):
        for other in mode_demo.OBJECTIVES:
            assert m["best"][own][own] <= min(m["fits"][other][own]) + 1e-6


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> ReproductionResult:
    return run_quick("mode_demo", tmp_path_factory.mktemp("mode_demo"))


def test_quick_run(quick: ReproductionResult) -> None:
    _check_run(quick)
    assert "restated" in quick.summary


@pytest.mark.slow
def test_full_run_gives_the_quick_verdict(quick: ReproductionResult, tmp_path: Path) -> None:
    full = run_reproduction("mode_demo", quick=False, out_dir=tmp_path)
    assert full.status == quick.status, (quick.summary, full.summary)
    assert not full.indicative and not quick.indicative
    _check_run(full)


def test_directions_follow_the_convention() -> None:
    grid = torch.linspace(-12.0, 12.0, 241, dtype=torch.float64)
    target = mode_demo._target_logits(grid).unsqueeze(0)
    model = grid_gaussian_logits(
        grid, torch.tensor([2.0], dtype=torch.float64), torch.tensor([0.3], dtype=torch.float64)
    )
    p = torch.softmax(target, -1).numpy()[0]
    q = torch.softmax(model, -1).numpy()[0]
    rev = float(mode_demo._loss_rows("reverse_kl", target, model))
    fwd = float(mode_demo._loss_rows("forward_kl", target, model))
    js_val = float(mode_demo._loss_rows("js", target, model))
    mid = 0.5 * (p + q)
    assert rev == pytest.approx(rel_entr(q, p).sum(), rel=1e-9)  # KL(model ‖ target)
    assert fwd == pytest.approx(rel_entr(p, q).sum(), rel=1e-9)  # KL(target ‖ model)
    assert js_val == pytest.approx(
        0.5 * rel_entr(p, mid).sum() + 0.5 * rel_entr(q, mid).sum(), rel=1e-9
    )

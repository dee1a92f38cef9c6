"""`divergent.testing.check_divergence` on every registered entry, and on planted defects.

The battery is the registry-driven contract (float64 references, axioms, symmetry, bound,
gradcheck, engine = reference path, options, bf16, extreme logits, property sweep); the
mutants below show that each kind of check can fail.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from divergent.categorical import Divergence, get_divergence, list_divergences, make_f_divergence
from divergent.categorical.kernels import KernelPlan, TVKernel
from divergent.testing import CHECKS, check_divergence, parameter_cases

NAMES = [d.name for d in list_divergences()]


@pytest.mark.parametrize("name", NAMES)
def test_every_registered_entry_passes_the_battery(name: str) -> None:
    report = check_divergence(name)
    assert report.name == name
    assert report.checks == CHECKS
    assert list(report.cases) == [get_divergence(name).bind(c) for c in parameter_cases(name)]
    assert report.comparisons > 100


def test_parameter_cases_cover_defaults_range_ends_and_kernel_switches() -> None:
    assert parameter_cases("kl") == [{}]
    alpha = [c["alpha"] for c in parameter_cases("alpha")]
    assert alpha[0] == 0.5 and {0.0, 1.0} <= set(alpha)  # the KL / reverse-KL kernels
    assert min(alpha) < 0 and max(alpha) > 1
    order = [c["order"] for c in parameter_cases("renyi")]
    assert {0.0, 1.0, math.inf} <= set(order) and order[0] == 0.5
    skew = [c["alpha"] for c in parameter_cases("skew_kl")]
    assert 0.0 in skew and all(0.0 <= a < 1.0 for a in skew)
    beta = [c["beta"] for c in parameter_cases("js")]
    assert all(0.0 < b < 1.0 for b in beta) and len(beta) >= 3
    for d in list_divergences():  # every case is valid for its entry, no duplicates
        cases = parameter_cases(d)
        assert all(d.bind(c) == c for c in cases)
        assert len({tuple(sorted(c.items())) for c in cases}) == len(cases)


def test_unknown_check_and_name_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown entries"):
        check_divergence("kl", checks=("reference", "speed"))
    with pytest.raises(ValueError, match="Did you mean `kl`"):
        check_divergence("kll")


# --------------------------------------------------------------------------------------------
# planted defects: each must be caught, by the check that names it
# --------------------------------------------------------------------------------------------
def _mutant(name: str, **changes: object) -> Divergence:
    return dataclasses.replace(get_divergence(name), name=f"{name}_mutant", **changes)


def _wrong_tv_rows(lp: torch.Tensor, lq: torch.Tensor) -> torch.Tensor:
    return 0.5 * (lp.exp() - lq.exp()).abs().sum(-1) * 1.001


def _tv_detached_q(lp: torch.Tensor, lq: torch.Tensor) -> torch.Tensor:
    return 0.5 * (lp.exp() - lq.detach().exp()).abs().sum(-1)


def _kl_nan_on_extremes(lp: torch.Tensor, lq: torch.Tensor) -> torch.Tensor:
    rows = get_divergence("kl").row_fn(lp, lq)
    return torch.where(lp.min(-1).values < -5e3, math.nan, rows)


def _kl_bf16_out(lp: torch.Tensor, lq: torch.Tensor) -> torch.Tensor:
    return get_divergence("kl").row_fn(lp, lq).bfloat16()


def _kl_not_row_local(lp: torch.Tensor, lq: torch.Tensor) -> torch.Tensor:
    """Each row also depends on the other rows: masking changes the kept values."""
    rows = get_divergence("kl").row_fn(lp, lq)
    return rows + 0.01 * rows.mean()


class _WrongGradTV(TVKernel):
    def elem(self, lp, lq, c, need_a, need_b):  # type: ignore[override]
        term, inf_e, a, b = super().elem(lp, lq, c, need_a, need_b)
        return term, inf_e, (None if a is None else 1.01 * a), b


MUTANTS = {
    "reference": _mutant("tv", row_fn=_wrong_tv_rows),
    "axioms": _mutant("kl", row_fn=lambda lp, lq: get_divergence("kl").row_fn(lp, lq) - 1e-3),
    "symmetry": _mutant("kl", symmetric=lambda: True),
    "bound": _mutant("hellinger", upper_bound=lambda: 0.5),
    "options": _mutant("kl", row_fn=_kl_not_row_local, kernel=None),
    "gradcheck": _mutant("tv", row_fn=_tv_detached_q, kernel=None, generator=None),
    "engine": _mutant("tv", kernel=lambda: KernelPlan(_WrongGradTV(), (), "tv_wrong")),
    "bf16": _mutant("kl", row_fn=_kl_bf16_out, kernel=None, generator=None),
    "extreme": _mutant("kl", row_fn=_kl_nan_on_extremes, kernel=None, generator=None),
    "properties": _mutant("jeffreys", upper_bound=lambda: 50.0),
}


@pytest.mark.parametrize("check", sorted(MUTANTS))
def test_a_planted_defect_is_caught_by_its_check(check: str) -> None:
    entry = MUTANTS[check]
    with pytest.raises(AssertionError, match=rf"{entry.name}.*{check}"):
        check_divergence(entry, checks=(check,))
    with pytest.raises(AssertionError, match=entry.name):
        check_divergence(entry)  # the full battery fails too (possibly at an earlier check)


def test_an_unregistered_user_generator_passes() -> None:
    """A Divergence built from a user's generator f, never registered, runs the same battery
    (triangular discrimination, f(t) = (t − 1)²/(t + 1), declared symmetric)."""
    entry = make_f_divergence(
        lambda t: (t - 1.0).square() / (t + 1.0), name="user_triangular", symmetric=True
    )
    report = check_divergence(entry)
    assert report.name == "user_triangular" and report.cases == ({},)
    assert "user_triangular" not in {d.name for d in list_divergences()}

"""Discretised Gaussians fitted on a grid (divergent.train.grid_gaussian)."""

from __future__ import annotations

import math

import pytest
import torch

from divergent.functional import kl, reverse_kl
from divergent.train.grid_gaussian import fit_grid_gaussians, grid_gaussian_logits

GRID = torch.linspace(-10.0, 10.0, 201, dtype=torch.float64)
# measured: both fits are within 4e-5 of the target's mean and scale after 300 steps (the
# tolerance is 1e-3) and at a loss below 1e-9 (the bound is 1e-6); 800 steps only took that
# to 1e-5
STEPS = 300


@pytest.mark.parametrize("objective", [kl, reverse_kl])
def test_a_gaussian_target_is_recovered_by_either_kl(objective) -> None:  # type: ignore[no-untyped-def]
    target = grid_gaussian_logits(GRID, torch.tensor([1.5]), torch.tensor([math.log(1.2)]))[0]
    fit = fit_grid_gaussians(
        GRID,
        target,
        lambda t, m: objective(t, m, reduction="none"),
        torch.tensor([-3.0, 4.0], dtype=torch.float64),
        torch.tensor([0.0, 0.5], dtype=torch.float64),
        steps=STEPS,
    )
    torch.testing.assert_close(
        fit.mean, torch.full((2,), 1.5, dtype=torch.float64), atol=1e-3, rtol=0
    )
    torch.testing.assert_close(
        fit.scale, torch.full((2,), 1.2, dtype=torch.float64), atol=1e-3, rtol=0
    )
    assert float(fit.loss.max()) < 1e-6
    assert len(fit.history) == STEPS  # (the relative change is not meaningful at a loss of 0)


def test_bad_arguments() -> None:
    t = torch.zeros(201, dtype=torch.float64)
    m0 = torch.zeros(2, dtype=torch.float64)

    def obj(a, b):  # type: ignore[no-untyped-def]
        return kl(a, b, reduction="none")

    with pytest.raises(ValueError, match="steps"):
        fit_grid_gaussians(GRID, t, obj, m0, m0, steps=5)
    with pytest.raises(ValueError, match="init_mean"):
        fit_grid_gaussians(GRID, t, obj, m0, m0[:1], steps=20)

"""Gradient × input attributions, importance distributions and the factor-consistency KL."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.special import rel_entr
from torch import nn

from divergent.objectives.attribution import (
    factor_consistency_loss,
    gradient_x_input,
    importance_distribution,
)


def test_gradient_x_input_is_exact_and_complete_for_linear_models() -> None:
    g = torch.Generator().manual_seed(0)
    lin = nn.Linear(5, 3, bias=True)
    x = torch.randn(7, 5, generator=g)
    y = torch.randint(0, 3, (7,), generator=g)
    phi = gradient_x_input(lin, x, labels=y)
    assert torch.allclose(phi, x * lin.weight[y])
    # completeness: f(x) − f(0) = Σ_j φ_j for a linear model
    f = lin(x).gather(1, y[:, None]).squeeze(1)
    f0 = lin(torch.zeros_like(x)).gather(1, y[:, None]).squeeze(1)
    assert torch.allclose(phi.sum(1), f - f0, atol=1e-6)


def test_importance_and_kl_match_numpy() -> None:
    rng = np.random.default_rng(0)
    phi = rng.normal(size=(11, 4))
    ref = rng.dirichlet(np.ones(4))
    imp = np.abs(phi).mean(0) / np.abs(phi).mean(0).sum()
    got = importance_distribution(torch.tensor(phi))
    np.testing.assert_allclose(got.numpy(), imp, rtol=1e-12)
    fwd = factor_consistency_loss(torch.tensor(phi), torch.tensor(ref))
    rev = factor_consistency_loss(torch.tensor(phi), torch.tensor(ref), direction="reverse")
    assert float(fwd) == pytest.approx(float(rel_entr(ref, imp).sum()), rel=1e-10)
    assert float(rev) == pytest.approx(float(rel_entr(imp, ref).sum()), rel=1e-10)
    mask = torch.tensor([True] * 5 + [False] * 6)
    np.testing.assert_allclose(
        importance_distribution(torch.tensor(phi), mask=mask).numpy(),
        np.abs(phi[:5]).mean(0) / np.abs(phi[:5]).mean(0).sum(),
        rtol=1e-12,
    )


def test_penalty_trains_the_model_towards_the_reference_importance() -> None:
    # double backward: minimising the KL alone moves a linear model's importance to the target
    torch.manual_seed(0)
    x = torch.rand(64, 3) + 0.5
    model = nn.Linear(3, 1)
    ref = torch.tensor([0.6, 0.3, 0.1])
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    start = factor_consistency_loss(gradient_x_input(lambda v: model(v)[:, 0], x), ref).item()
    for _ in range(300):
        opt.zero_grad()
        phi = gradient_x_input(lambda v: model(v)[:, 0], x)
        loss = factor_consistency_loss(phi, ref)
        loss.backward()
        opt.step()
    assert start > 0.01 and loss.item() < 1e-4
    final = importance_distribution(gradient_x_input(lambda v: model(v)[:, 0], x).detach())
    assert torch.allclose(final, ref, atol=5e-3)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: importance_distribution(torch.zeros(3, 2)), "every attribution is 0"),
        (lambda: importance_distribution(torch.tensor([[float("nan"), 1.0]])), "NaN"),
        (lambda: factor_consistency_loss(torch.ones(3, 2), torch.tensor([0.5, 0.6])), "sum to 1"),
        (lambda: factor_consistency_loss(torch.ones(3, 2), torch.tensor([1.0])), "one importance"),
        (
            lambda: factor_consistency_loss(
                torch.ones(3, 2), torch.tensor([0.5, 0.5]), direction="x"
            ),
            "direction",
        ),
        (lambda: gradient_x_input(nn.Linear(2, 3), torch.ones(4, 2)), "labels"),
    ],
)
def test_bad_input(call, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call()

"""FGSM / PGD: budget, bounds, and the exact worst case of a linear model."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from divergent.train.adversarial import fgsm, pgd


def _linear(w: torch.Tensor) -> nn.Linear:
    net = nn.Linear(w.shape[1], w.shape[0], bias=False)
    with torch.no_grad():
        net.weight.copy_(w)
    return net


def test_fgsm_is_the_exact_worst_case_of_a_binary_linear_model() -> None:
    # CE of a 2-class linear model increases monotonically in (w_other − w_true)·x, whose
    # L∞-ball maximiser is x + ε·sign(w_other − w_true): FGSM's step, exactly
    g = torch.Generator().manual_seed(0)
    w = torch.randn(2, 5, generator=g)
    x = torch.rand(4, 5, generator=g) * 0.5 + 0.25
    y = torch.tensor([0, 1, 0, 1])
    adv = fgsm(_linear(w), x, y, 0.1, bounds=None)
    direction = torch.where(y.unsqueeze(1) == 0, w[1] - w[0], w[0] - w[1])
    assert torch.allclose(adv, x + 0.1 * direction.sign())


def test_pgd_stays_in_the_ball_and_bounds_and_beats_the_clean_loss() -> None:
    g = torch.Generator().manual_seed(1)
    net = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 3))
    x = torch.rand(32, 6, generator=g)
    y = torch.randint(0, 3, (32,), generator=g)
    adv = pgd(net, x, y, 0.05, steps=7, generator=g)
    assert all(p.grad is None for p in net.parameters())  # the attack leaves no gradients
    assert float((adv - x).abs().max()) <= 0.05 + 1e-6
    assert float(adv.min()) >= 0.0 and float(adv.max()) <= 1.0
    ce = nn.functional.cross_entropy
    net.requires_grad_(False)
    assert float(ce(net(adv), y)) > float(ce(net(x), y))
    assert float(ce(net(adv), y)) >= float(ce(net(fgsm(net, x, y, 0.05)), y)) - 0.05


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"epsilon": 0.0}, "epsilon"), ({"steps": 0}, "steps"), ({"bounds": (1.0, 0.0)}, "bounds")],
)
def test_bad_input(kwargs: dict, match: str) -> None:
    args = {"epsilon": 0.1} | kwargs
    with pytest.raises(ValueError, match=match):
        pgd(nn.Linear(2, 2), torch.rand(3, 2), torch.tensor([0, 1, 0]), **args)

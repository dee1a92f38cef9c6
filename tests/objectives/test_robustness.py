"""KL-DRO instance weights (DONE): closed form, optimality, gradients, limits."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.special import softmax

from divergent.objectives.robustness import (
    KLDROLoss,
    dro_cross_entropy,
    kl_dro_loss,
    kl_dro_objective,
    kl_dro_weights,
)


def _regularised(w: np.ndarray, losses: np.ndarray, r: float) -> float:
    n = losses.size
    kl = float(np.sum(np.where(w > 0, w * np.log(np.where(w > 0, n * w, 1.0)), 0.0)))
    return float(w @ losses) - r * kl


@pytest.mark.parametrize("r", [0.1, 1.0, 7.0])
def test_weights_and_value_solve_the_regularised_problem(r: float) -> None:
    rng = np.random.default_rng(0)
    losses = rng.exponential(size=12)
    w = kl_dro_weights(torch.tensor(losses), r).numpy()
    np.testing.assert_allclose(w, softmax(losses / r), rtol=1e-12)
    value = float(kl_dro_objective(torch.tensor(losses), r))
    assert value == pytest.approx(_regularised(w, losses, r), rel=1e-10)
    # no other point of the simplex does better
    for other in rng.dirichlet(np.ones(12), size=200):
        assert _regularised(other, losses, r) <= value + 1e-12


def test_gradients_are_the_weights() -> None:
    losses = torch.tensor([0.3, 2.0, 1.1, 0.0], dtype=torch.float64, requires_grad=True)
    (g_obj,) = torch.autograd.grad(kl_dro_objective(losses, 0.5), losses)
    (g_loss,) = torch.autograd.grad(kl_dro_loss(losses, 0.5), losses)
    w = kl_dro_weights(losses, 0.5)
    assert torch.allclose(g_obj, w) and torch.allclose(g_loss, w)
    assert not w.requires_grad


def test_limits_mean_and_max() -> None:
    losses = torch.tensor([0.2, 1.0, 3.0], dtype=torch.float64)
    assert float(kl_dro_objective(losses, 1e6)) == pytest.approx(float(losses.mean()), rel=1e-5)
    assert float(kl_dro_objective(losses, 1e-3)) == pytest.approx(3.0, abs=1e-2)
    assert float(
        kl_dro_objective(torch.tensor([1e4, 0.0], dtype=torch.float64), 1e-2)
    ) == pytest.approx(1e4 - 1e-2 * np.log(2), rel=1e-9)  # no overflow


def test_mask() -> None:
    losses = torch.tensor([1.0, 5.0, 2.0])
    mask = torch.tensor([True, False, True])
    w = kl_dro_weights(losses, 1.0, mask=mask)
    assert w[1] == 0 and torch.allclose(w[[0, 2]], torch.softmax(losses[[0, 2]], 0))
    assert torch.allclose(kl_dro_loss(losses, 1.0, mask=mask), (w * losses).sum())
    with pytest.raises(ValueError, match="no loss is kept"):
        kl_dro_weights(losses, 1.0, mask=torch.zeros(3, dtype=torch.bool))


def test_dro_cross_entropy_matches_reference_and_module() -> None:
    g = torch.Generator().manual_seed(0)
    z = torch.randn(9, 4, generator=g)
    y = torch.randint(0, 4, (9,), generator=g)
    ce = -torch.log_softmax(z, -1)[torch.arange(9), y]
    expected = (torch.softmax(ce / 0.7, 0) * ce).sum()
    assert torch.allclose(dro_cross_entropy(z, y, 0.7), expected)
    assert torch.allclose(KLDROLoss(0.7)(z, y), expected)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: kl_dro_weights(torch.ones(3), 0.0), "temperature"),
        (lambda: kl_dro_weights(torch.ones(3, 2), 1.0), "losses"),
        (lambda: kl_dro_weights(torch.tensor([1.0, float("inf")]), 1.0), "inf"),
        (lambda: dro_cross_entropy(torch.zeros(2, 3), torch.tensor([0, 3]), 1.0), "labels"),
        (lambda: dro_cross_entropy(torch.zeros(2, 3), torch.tensor([0.0, 1.0]), 1.0), "int64"),
    ],
)
def test_bad_input(call, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call()


def test_nan_loss_gives_nan() -> None:
    assert torch.isnan(kl_dro_objective(torch.tensor([1.0, float("nan")]), 1.0))

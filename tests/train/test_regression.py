"""Bottleneck regressors, VIB KL and FGSM curves (divergent.train.regression)."""

from __future__ import annotations

import pytest
import torch

from divergent.train.regression import (
    BottleneckRegressor,
    fgsm_rmse_curve,
    rmse,
    train_regressor,
    vib_kl,
)


def test_vib_kl_matches_torch_distributions() -> None:
    g = torch.Generator().manual_seed(0)
    mu, log_var = torch.randn(5, 3, generator=g), torch.randn(5, 3, generator=g)
    q = torch.distributions.Normal(mu, (0.5 * log_var).exp())
    p = torch.distributions.Normal(torch.zeros(3), torch.ones(3))
    ref = torch.distributions.kl_divergence(q, p).sum(-1)
    torch.testing.assert_close(vib_kl(mu, log_var), ref)


def test_training_fits_a_linear_target_and_keeps_the_best_epoch() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 3, generator=g)
    y = x @ torch.tensor([1.0, -2.0, 0.5])
    idx = torch.arange(200)
    torch.manual_seed(0)
    net = BottleneckRegressor(3, t_dim=4)
    before = rmse(net, x, y)

    def mse(n, xb, yb):  # type: ignore[no-untyped-def]
        return ((n(xb)[0] - yb) ** 2).mean()

    train_regressor(net, x, y, idx[:150], idx[150:], mse, epochs=60, seed=0, lr=1e-2, batch=32)
    assert rmse(net, x[150:], y[150:]) < 0.3 * before


def test_stochastic_encoder_samples_in_training_only() -> None:
    torch.manual_seed(0)
    net = BottleneckRegressor(2, t_dim=3, stochastic=True)
    x = torch.randn(4, 2)
    net.train()
    a, b = net(x)[1], net(x)[1]
    assert not torch.equal(a, b)
    net.eval()
    t, (mu, _) = net(x)[1], net(x)[2]
    torch.testing.assert_close(t, mu)


def test_fgsm_moves_inputs_by_epsilon_along_the_error_gradient() -> None:
    net = BottleneckRegressor(2, t_dim=2)
    x, y = torch.randn(8, 2), torch.randn(8)
    curve = fgsm_rmse_curve(net, x, y, [0.0, 0.1, 0.5])
    assert curve[0] == pytest.approx(rmse(net, x, y))
    assert curve[2] >= curve[0] - 1e-6
    with pytest.raises(ValueError, match="epsilons"):
        fgsm_rmse_curve(net, x, y, [-0.1])

"""NoisyMLP: the layers against a manual forward pass, the injected noise's std, the loss as a
function of a layer, training, bad input."""

from __future__ import annotations

import pytest
import torch

from divergent.train.noisy_mlp import NoisyMLP, fit_noisy_mlp


def test_noiseless_layers_match_a_manual_forward_pass() -> None:
    net = NoisyMLP((3, 5, 4, 1), noise_std=0.0, seed=0)
    x = torch.randn(7, 3, dtype=torch.float64)
    reps = net.layers(x, None)
    (a1, b1), (a2, b2), (a3, b3) = [(m.weight, m.bias) for m in net.linears]
    h1 = torch.tanh(x @ a1.T + b1)
    h2 = torch.tanh(h1 @ a2.T + b2)
    torch.testing.assert_close(reps[1], h1)
    torch.testing.assert_close(reps[2], h2)
    torch.testing.assert_close(reps[3], h2 @ a3.T + b3)
    y = torch.tensor([0, 1, 1, 0, 1, 0, 1])
    loss = net.loss_from_layer(0, x, y, None, draws=3)
    sign = 2.0 * y.double() - 1.0
    torch.testing.assert_close(loss, torch.nn.functional.softplus(-sign * reps[3][:, 0]))


def test_injected_noise_has_the_stated_std() -> None:
    net = NoisyMLP((2, 3, 1), noise_std=0.4, seed=1)
    x = torch.zeros(20000, 2, dtype=torch.float64)
    with torch.no_grad():
        h = net.layers(x, torch.Generator().manual_seed(0))[1]
        clean = torch.tanh(net.linears[0](x))
    residual = h - clean
    assert float(residual.std()) == pytest.approx(0.4, rel=0.02)
    # the logit gets no noise of its own
    with torch.no_grad():
        t1 = h[:5]
        torch.testing.assert_close(net.step(2, t1, None), net.linears[1](t1))


def test_training_fits_separable_data() -> None:
    g = torch.Generator().manual_seed(0)
    y = torch.repeat_interleave(torch.tensor([0, 1]), 50)
    x = torch.randn(100, 2, generator=g, dtype=torch.float64) + 3.0 * (2 * y[:, None] - 1)
    net = fit_noisy_mlp(x, y, (2, 4, 1), noise_std=0.1, seed=0, steps=150)
    with torch.no_grad():
        logit = net.layers(x, g)[-1][:, 0]
    assert float(((logit > 0).long() == y).double().mean()) == 1.0


@pytest.mark.parametrize("widths", [(3,), (3, 4, 2), (3, 0, 1)])
def test_bad_widths(widths: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="widths"):
        NoisyMLP(widths, 0.1, 0)


def test_bad_noise() -> None:
    with pytest.raises(ValueError, match="noise_std"):
        NoisyMLP((2, 1), float("nan"), 0)

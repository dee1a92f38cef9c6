r"""A small tanh MLP with Gaussian noise injection after each hidden layer (binary labels).

Layers (He & Goldfeld 2024, arXiv 2404.03176, the noise-injection setting):

.. math::

    T_0 = X,\qquad T_k = \tanh(A_k T_{k-1} + b_k) + s\,\xi_k\ (k < L),\qquad
    T_L = a_L^\top T_{L-1} + b_L \ (\text{the logit}),

:math:`\xi_k \sim \mathcal N(0, I)` fresh at every call, and the logistic loss
:math:`\ell(t_L, y) = \log(1 + e^{-(2y-1)t_L})` for labels y ∈ {0, 1}. The noise is part of the
model, in training and in evaluation; :meth:`NoisyMLP.loss_from_layer` is the loss as a function
of layer k's representation, averaged over the downstream noise.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["NoisyMLP", "fit_noisy_mlp"]


class NoisyMLP(nn.Module):
    """``widths = (d, h_1, ..., h_{L-1}, 1)``; noise std ``noise_std`` after each hidden layer.

    >>> net = NoisyMLP((3, 4, 1), noise_std=0.1, seed=0)
    >>> x = torch.zeros(5, 3, dtype=torch.float64)
    >>> [tuple(t.shape) for t in net.layers(x, torch.Generator().manual_seed(0))]
    [(5, 3), (5, 4), (5, 1)]
    """

    def __init__(self, widths: Sequence[int], noise_std: float, seed: int) -> None:
        super().__init__()
        if len(widths) < 2 or widths[-1] != 1 or any(int(w) < 1 for w in widths):
            raise ValueError(f"widths must be (d, ..., 1) with positive entries, got {widths}")
        if not noise_std >= 0.0:
            raise ValueError(f"noise_std must be >= 0, got {noise_std}")
        g = torch.Generator().manual_seed(seed)
        self.noise_std = float(noise_std)
        self.linears = nn.ModuleList()
        for a, b in itertools.pairwise(widths):
            lin = nn.Linear(a, b, dtype=torch.float64)
            with torch.no_grad():
                lin.weight.normal_(0.0, 1.0 / a**0.5, generator=g)
                lin.bias.zero_()
            self.linears.append(lin)

    @property
    def depth(self) -> int:
        """L, the number of linear maps (the logit is layer L)."""
        return len(self.linears)

    def step(self, k: int, t: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """Layer k (1-based) applied to :math:`T_{k-1}`, with fresh noise for hidden layers."""
        z = self.linears[k - 1](t)
        if k == self.depth:
            return z
        h = torch.tanh(z)
        if self.noise_std > 0:
            h = h + self.noise_std * torch.randn(h.shape, generator=generator, dtype=h.dtype)
        return h

    def layers(self, x: torch.Tensor, generator: torch.Generator | None) -> list[torch.Tensor]:
        """:math:`[T_0, T_1, \\dots, T_L]` for inputs x (one noise draw)."""
        out = [x]
        for k in range(1, self.depth + 1):
            out.append(self.step(k, out[-1], generator))
        return out

    def loss_from_layer(
        self,
        k: int,
        t: torch.Tensor,
        y: torch.Tensor,
        generator: torch.Generator | None,
        draws: int = 8,
    ) -> torch.Tensor:
        """Per-point logistic loss as a function of :math:`t_k`, averaged over ``draws`` draws
        of the noise after layer k (differentiable in t)."""
        rep = t.repeat(draws, 1)
        for j in range(k + 1, self.depth + 1):
            rep = self.step(j, rep, generator)
        sign = 2.0 * y.to(rep.dtype) - 1.0
        losses = nn.functional.softplus(-sign.repeat(draws) * rep[:, 0])
        return losses.view(draws, -1).mean(0)


def fit_noisy_mlp(
    x: torch.Tensor,
    y: torch.Tensor,
    widths: Sequence[int],
    noise_std: float,
    seed: int,
    steps: int = 400,
    lr: float = 0.02,
) -> NoisyMLP:
    """Full-batch Adam on the logistic loss with fresh injected noise at every step.

    Args:
        x: inputs (n, d) float64; y: labels (n,) in {0, 1}.
        widths, noise_std, seed: the network (:class:`NoisyMLP`); ``seed`` also seeds the noise.
        steps, lr: the optimiser.
    """
    net = NoisyMLP(widths, noise_std, seed)
    g = torch.Generator().manual_seed(seed + 1)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sign = 2.0 * y.double() - 1.0
    for _ in range(steps):
        opt.zero_grad()
        logit = net.layers(x, g)[-1][:, 0]
        nn.functional.softplus(-sign * logit).mean().backward()
        opt.step()
    return net

r"""Small bottleneck regressors, their training loop and an FGSM robustness curve.

The information-bottleneck reproduction (:mod:`divergent.papers.csib`) trains the same network
with several objectives on one split and compares them. This module holds what they share:

* :class:`BottleneckRegressor` — encoder x ↦ t ∈ ℝᴷ (two ReLU layers), decoder t ↦ ŷ; with
  ``stochastic=True`` the encoder outputs a mean and a log-variance and t is sampled in
  training (the variational IB of Alemi et al. 2017), the mean at evaluation;
* :func:`train_regressor` — mini-batch Adam on ``loss_fn(net, x_batch, y_batch)``, keeping
  the epoch with the lowest validation RMSE (the same selection for every objective);
* :func:`vib_kl` — :math:`\mathrm{KL}(\mathcal N(\mu, \mathrm{diag}\,\sigma^2)\,\|\,\mathcal
  N(0, I))` per example, the VIB compression term;
* :func:`fgsm_rmse_curve` — RMSE under the fast-gradient-sign attack
  :math:`x' = x + \epsilon\,\mathrm{sign}\,\nabla_x (\hat y(x) - y)^2` (per example), as in
  the CS-IB paper's robustness curves.

References:
    Alemi, Fischer, Dillon, Murphy (2017), Deep Variational Information Bottleneck, ICLR.
    Goodfellow, Shlens, Szegedy (2015), Explaining and Harnessing Adversarial Examples, ICLR.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from divergent._validation import check_positive_scalar

__all__ = [
    "BottleneckRegressor",
    "fgsm_rmse_curve",
    "rmse",
    "train_regressor",
    "vib_kl",
]

RegressionLoss = Callable[["BottleneckRegressor", Tensor, Tensor], Tensor]


class BottleneckRegressor(nn.Module):
    """Encoder ``d_in → hidden → hidden → t_dim`` (ReLU), decoder ``t_dim → 32 → 1``.

    Args:
        d_in: input features.
        t_dim: bottleneck width K.
        hidden: encoder width.
        stochastic: VIB encoder (mean and log-variance heads; t sampled in training mode).

    ``forward(x)`` returns ``(ŷ, t, (μ, log σ²) or None)``; ŷ has shape (n,).
    """

    def __init__(self, d_in: int, t_dim: int = 16, hidden: int = 64, stochastic: bool = False):
        super().__init__()
        self.stochastic = stochastic
        self.body = nn.Sequential(
            nn.Linear(d_in, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU()
        )
        self.mean = nn.Linear(hidden, t_dim)
        self.log_var = nn.Linear(hidden, t_dim) if stochastic else None
        self.decoder = nn.Sequential(nn.Linear(t_dim, 32), nn.ReLU(), nn.Linear(32, 1))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, tuple[Tensor, Tensor] | None]:
        h = self.body(x)
        mu = self.mean(h)
        if self.log_var is None:
            return self.decoder(mu)[:, 0], mu, None
        log_var = self.log_var(h)
        t = mu + torch.randn_like(mu) * (0.5 * log_var).exp() if self.training else mu
        return self.decoder(t)[:, 0], t, (mu, log_var)


def vib_kl(mu: Tensor, log_var: Tensor) -> Tensor:
    r"""Per-example :math:`\tfrac12\sum_k(\mu_k^2 + \sigma_k^2 - \log\sigma_k^2 - 1)`.

    >>> vib_kl(torch.zeros(1, 3), torch.zeros(1, 3))
    tensor([0.])
    """
    return 0.5 * (mu.pow(2) + log_var.exp() - log_var - 1.0).sum(-1)


def rmse(net: BottleneckRegressor, x: Tensor, y: Tensor) -> float:
    """Root mean squared error of ``net`` (evaluation mode) on (x, y)."""
    was = net.training
    net.eval()
    with torch.no_grad():
        value = float(((net(x)[0] - y) ** 2).mean().sqrt())
    net.train(was)
    return value


def train_regressor(
    net: BottleneckRegressor,
    x: Tensor,
    y: Tensor,
    train_idx: Tensor,
    val_idx: Tensor,
    loss_fn: RegressionLoss,
    *,
    epochs: int,
    seed: int,
    lr: float = 1e-3,
    batch: int = 128,
) -> BottleneckRegressor:
    """Adam on ``loss_fn(net, x_b, y_b)``; returns ``net`` at the best validation RMSE.

    Args:
        net: the model (trained in place and returned).
        x, y: all features (n, d) and targets (n,).
        train_idx, val_idx: int64 indices of the training and validation rows.
        loss_fn: the objective of one mini-batch.
        epochs: passes over the training rows (≥ 1).
        seed: seed of the mini-batch order (and of the VIB noise).
        lr, batch: Adam learning rate and mini-batch size.
    """
    if int(epochs) != epochs or epochs < 1:
        raise ValueError(f"`epochs` must be an integer >= 1, got {epochs!r}")
    check_positive_scalar(lr, "lr")
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    best, best_state = math.inf, copy.deepcopy(net.state_dict())
    for _ in range(epochs):
        net.train()
        perm = train_idx[torch.randperm(len(train_idx), generator=g)]
        for s in range(0, len(perm), batch):
            b = perm[s : s + batch]
            if len(b) < 2:
                continue
            loss = loss_fn(net, x[b], y[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
        val = rmse(net, x[val_idx], y[val_idx])
        if val < best:
            best, best_state = val, copy.deepcopy(net.state_dict())
    net.load_state_dict(best_state)
    net.eval()
    return net


def fgsm_rmse_curve(
    net: BottleneckRegressor, x: Tensor, y: Tensor, epsilons: Sequence[float]
) -> list[float]:
    r"""RMSE on :math:`x + \epsilon\,\mathrm{sign}\,\nabla_x(\hat y(x) - y)^2` for each ε ≥ 0.

    Each example is attacked on its own squared error (the gradient of the *sum* over
    examples has per-example rows). The model is evaluated in evaluation mode.

    >>> net = BottleneckRegressor(2, t_dim=2)
    >>> x, y = torch.zeros(4, 2), torch.zeros(4)
    >>> curve = fgsm_rmse_curve(net, x, y, [0.0, 0.5])
    >>> curve[1] >= curve[0]
    True
    """
    if any(not math.isfinite(e) or e < 0 for e in epsilons):
        raise ValueError(f"`epsilons` must be finite and ≥ 0, got {list(epsilons)!r}")
    was = net.training
    net.eval()
    xa = x.detach().clone().requires_grad_(True)
    loss = ((net(xa)[0] - y) ** 2).sum()
    (grad,) = torch.autograd.grad(loss, xa)
    direction = grad.sign()
    out = [rmse(net, x + eps * direction, y) for eps in epsilons]
    net.train(was)
    return out

r"""Fit discretised Gaussians to a target on a 1-D grid by minimising a divergence.

The model :math:`Q_{\mu,\sigma}(x_k) \propto \exp(-(x_k-\mu)^2 / 2\sigma^2)` on grid points
:math:`x_k`; ``objective(target_logits, model_logits)`` returns one value per fit (for
instance ``divergent.reverse_kl(target, model, reduction="none")`` = KL(Q‖P)). Several starts
are fitted at once (one row each); their losses are summed, so each row is trained on its own
objective. Adam with a short second-moment memory (the first gradients of a narrow model far
from the target are huge) and a linear learning-rate decay to 0, so every run settles.

Used by the mode-seeking / mode-covering reproduction (:mod:`divergent.papers.mode_demo`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from divergent._validation import check_positive_scalar

__all__ = ["GridGaussianFit", "fit_grid_gaussians", "grid_gaussian_logits"]

Objective = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def grid_gaussian_logits(
    grid: torch.Tensor, mean: torch.Tensor, log_scale: torch.Tensor
) -> torch.Tensor:
    r"""Unnormalised log-probabilities :math:`-(x-\mu)^2/2\sigma^2`, one row per (μ, log σ).

    >>> g = torch.tensor([-1.0, 0.0, 1.0])
    >>> grid_gaussian_logits(g, torch.tensor([0.0]), torch.tensor([0.0]))
    tensor([[-0.5000, -0.0000, -0.5000]])
    """
    return -0.5 * ((grid - mean.unsqueeze(-1)) / log_scale.exp().unsqueeze(-1)) ** 2


@dataclass
class GridGaussianFit:
    """Result of :func:`fit_grid_gaussians` (one entry per start).

    Attributes:
        mean, scale: fitted μ and σ, shape (starts,).
        logits: the fitted model's log-probabilities (unnormalised), shape (starts, grid).
        loss: each start's final objective value, shape (starts,).
        history: the summed loss after every step.
        relative_change_last_10pct: |loss_end − loss_at_90 %| / |loss_end| of the summed loss
            (a convergence indicator).
    """

    mean: torch.Tensor
    scale: torch.Tensor
    logits: torch.Tensor
    loss: torch.Tensor
    history: list[float]
    relative_change_last_10pct: float


def fit_grid_gaussians(
    grid: torch.Tensor,
    target_logits: torch.Tensor,
    objective: Objective,
    init_mean: torch.Tensor,
    init_log_scale: torch.Tensor,
    *,
    steps: int,
    lr: float = 0.1,
) -> GridGaussianFit:
    """Fit one discretised Gaussian per start by Adam on ``objective(target, model)``.

    Args:
        grid: grid points, shape (G,).
        target_logits: target log-probabilities on the grid, shape (G,) (broadcast to every
            start) or (starts, G).
        objective: ``objective(target, model) -> (starts,)`` divergence values.
        init_mean, init_log_scale: starting μ and log σ, shape (starts,).
        steps: Adam steps (≥ 10).
        lr: initial learning rate (decays linearly to 0).

    Returns:
        :class:`GridGaussianFit`.

    Raises:
        ValueError: ``steps`` < 10, a non-positive ``lr`` or mismatched start shapes.
    """
    if int(steps) != steps or steps < 10:
        raise ValueError(f"`steps` must be an integer >= 10, got {steps!r}")
    check_positive_scalar(lr, "lr")
    if init_mean.shape != init_log_scale.shape or init_mean.dim() != 1:
        raise ValueError(
            "`init_mean` and `init_log_scale` must be 1-D of the same length, got "
            f"{tuple(init_mean.shape)} and {tuple(init_log_scale.shape)}"
        )
    target = target_logits.expand(init_mean.shape[0], -1)
    mean = init_mean.detach().clone().requires_grad_(True)
    log_scale = init_log_scale.detach().clone().requires_grad_(True)
    opt = torch.optim.Adam([mean, log_scale], lr=lr, betas=(0.9, 0.9))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 1.0 - t / steps)
    history: list[float] = []
    for _ in range(steps):
        opt.zero_grad()
        loss = objective(target, grid_gaussian_logits(grid, mean, log_scale)).sum()
        loss.backward()
        opt.step()
        sched.step()
        history.append(float(loss.detach()))
    with torch.no_grad():
        logits = grid_gaussian_logits(grid, mean, log_scale)
        final = objective(target, logits)
    change = abs(history[-1] - history[-steps // 10]) / max(abs(history[-1]), 1e-12)
    return GridGaussianFit(
        mean=mean.detach(),
        scale=log_scale.detach().exp(),
        logits=logits,
        loss=final,
        history=history,
        relative_change_last_10pct=change,
    )

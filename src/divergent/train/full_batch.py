"""A ReLU multilayer perceptron and full-batch Adam on cross-entropy (float64, CPU).

Used by the layer-wise generalisation reproduction (:mod:`divergent.papers.infobounds`),
which needs a network that fits its training set and whose every layer can be read out
(:func:`divergent.analysis.representation_gap.layer_representations`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from divergent._validation import check_positive_scalar

__all__ = ["fit_full_batch", "relu_mlp"]


def relu_mlp(widths: Sequence[int], seed: int) -> nn.Sequential:
    """``Linear → ReLU → … → Linear`` through ``widths`` (float64), initialised from ``seed``.

    >>> relu_mlp([4, 3, 2], seed=0)
    Sequential(
      (0): Linear(in_features=4, out_features=3, bias=True)
      (1): ReLU()
      (2): Linear(in_features=3, out_features=2, bias=True)
    )
    """
    if len(widths) < 2 or any(int(w) != w or w < 1 for w in widths):
        raise ValueError(f"`widths` must be ≥ 2 positive integers, got {list(widths)!r}")
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for i in range(len(widths) - 1):
        layers.append(nn.Linear(int(widths[i]), int(widths[i + 1])))
        if i < len(widths) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers).double()


def fit_full_batch(
    net: nn.Module, x: Tensor, y: Tensor, *, steps: int, lr: float = 3e-3
) -> list[float]:
    """Full-batch Adam on the cross-entropy of ``net(x)`` against int64 labels ``y``.

    Returns the loss before each step.
    """
    if int(steps) != steps or steps < 1:
        raise ValueError(f"`steps` must be an integer >= 1, got {steps!r}")
    check_positive_scalar(lr, "lr")
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    history = []
    for _ in range(steps):
        loss = nn.functional.cross_entropy(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(float(loss.detach()))
    return history

r"""Full-batch gradient descent on the mean squared error, as in the NTK paper's regressions.

The neural-tangent-kernel reproduction (:mod:`divergent.papers.ntk`) trains
:class:`divergent.analysis.ntk.NTKMLP` networks with plain gradient descent on

.. math::

    C(\theta) = \frac{1}{2N}\sum_{i=1}^N \|f_\theta(x_i) - y_i\|^2,\qquad
    \theta_{s+1} = \theta_s - \eta\,\nabla_\theta C(\theta_s),

the Euler discretisation (step η) of the gradient flow :math:`\dot\theta = -\eta\nabla C`
whose linearisation :func:`divergent.analysis.ntk.linearized_prediction` predicts (with
``discrete=True`` it is exact for the linearised model at the same steps).

References:
    A. Jacot, F. Gabriel, C. Hongler (2018), Neural Tangent Kernel, NeurIPS, §5,
    arXiv 1806.07572.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from divergent._validation import check_float_tensor, check_int, check_positive_scalar

__all__ = ["half_mse", "train_mse_gradient_descent"]


def half_mse(pred: Tensor, target: Tensor) -> Tensor:
    r""":math:`\frac{1}{2N}\sum_i\|f(x_i) - y_i\|^2` (N = the first axis).

    >>> half_mse(torch.tensor([1.0, 3.0]), torch.tensor([0.0, 1.0]))
    tensor(1.2500)
    """
    if pred.shape != target.shape:
        raise ValueError(
            f"`pred` and `target` must have the same shape, got {tuple(pred.shape)} and "
            f"{tuple(target.shape)}"
        )
    return 0.5 * (pred - target).pow(2).sum() / pred.shape[0]


def train_mse_gradient_descent(
    model: nn.Module, x: Tensor, y: Tensor, *, lr: float, steps: int
) -> list[float]:
    r"""``steps`` full-batch gradient-descent steps :math:`\theta \leftarrow \theta -
    \eta\nabla C` on :func:`half_mse` of ``model(x)`` against ``y`` (in place).

    Args:
        model: maps ``x`` to outputs of ``y``'s shape.
        x: ``(N, ...)`` training inputs.
        y: targets, the shape of ``model(x)``.
        lr: η > 0.
        steps: number of steps ≥ 0.

    Returns:
        The loss before each step and after the last (``steps + 1`` values).

    Raises:
        FloatingPointError: the loss became non-finite (η too large for the kernel's top
            eigenvalue, η λ_max / N ≥ 2).

    Example:
        >>> lin = nn.Linear(1, 1, bias=False).double()
        >>> _ = lin.weight.data.fill_(0.0)
        >>> x = torch.tensor([[1.0], [2.0]], dtype=torch.float64)
        >>> losses = train_mse_gradient_descent(lin, x, 2 * x, lr=0.5, steps=20)
        >>> round(losses[0], 3), round(lin.weight.item(), 4)
        (5.0, 2.0)
    """
    x = check_float_tensor(x, "x", min_dim=1)
    y = check_float_tensor(y, "y", min_dim=1)
    eta = float(check_positive_scalar(lr, "lr"))
    steps = check_int(steps, "steps", 0, "number of gradient steps")
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("`model` has no parameter with requires_grad=True")
    history: list[float] = []
    for step in range(steps + 1):
        loss = half_mse(model(x), y)
        value = float(loss.detach())
        history.append(value)
        if not math.isfinite(value):
            raise FloatingPointError(f"loss became {value} at step {step} (lr = {eta})")
        if step == steps:
            break
        grads = torch.autograd.grad(loss, params)
        with torch.no_grad():
            for p, g in zip(params, grads):
                p.sub_(eta * g)
    return history

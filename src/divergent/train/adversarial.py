r"""L∞ adversarial examples for adversarial training and robust evaluation: FGSM and PGD.

* FGSM (Goodfellow, Shlens & Szegedy 2015): :math:`x' = \Pi(x + \epsilon\,\mathrm{sign}\,
  \nabla_x \ell(f(x), y))`.
* PGD (Madry et al. 2018): from a uniform random start in the ε-ball, ``steps`` iterations of
  :math:`x \leftarrow \Pi_{B_\infty(x_0, \epsilon) \cap [lo, hi]}(x + \alpha\,\mathrm{sign}\,
  \nabla_x \ell)`.

Both leave the model's parameters' gradients untouched and return detached inputs; the model
is evaluated in whatever mode (train / eval) it is in.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from divergent._validation import check_float_tensor, check_int, check_positive_scalar

__all__ = ["fgsm", "pgd"]


def _input_gradient(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    x = x.detach().requires_grad_(True)
    loss = nn.functional.cross_entropy(model(x), y, reduction="sum")
    (grad,) = torch.autograd.grad(loss, x)
    return grad


def _check(x: Tensor, epsilon: float, bounds: tuple[float, float] | None) -> float:
    check_float_tensor(x, "x", min_dim=1)
    eps = check_positive_scalar(epsilon, "epsilon", what="L∞ radius of the attack")
    if bounds is not None and not bounds[0] < bounds[1]:
        raise ValueError(f"`bounds` must be (low, high) with low < high, got {bounds!r}")
    return eps  # type: ignore[return-value]


def fgsm(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    epsilon: float,
    *,
    bounds: tuple[float, float] | None = (0.0, 1.0),
) -> Tensor:
    """One signed-gradient step of size ``epsilon`` that increases the cross-entropy.

    Args:
        model: maps ``x`` to logits.
        x: clean inputs; y: their int64 labels.
        epsilon: L∞ radius (> 0).
        bounds: the valid input range (clamped to), or None.

    Returns:
        Adversarial inputs, detached, within ``epsilon`` of ``x`` in L∞.

    Example:
        >>> net = nn.Linear(2, 2)
        >>> _ = net.weight.data.copy_(torch.eye(2)); _ = net.bias.data.zero_()
        >>> fgsm(net, torch.tensor([[0.5, 0.5]]), torch.tensor([0]), 0.1)
        tensor([[0.4000, 0.6000]])
    """
    eps = _check(x, epsilon, bounds)
    out = x.detach() + eps * _input_gradient(model, x, y).sign()
    return out if bounds is None else out.clamp(*bounds)


def pgd(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    epsilon: float,
    *,
    steps: int = 10,
    step_size: float | None = None,
    random_start: bool = True,
    bounds: tuple[float, float] | None = (0.0, 1.0),
    generator: torch.Generator | None = None,
) -> Tensor:
    """Projected gradient ascent on the cross-entropy inside the L∞ ball of radius ``epsilon``.

    Args:
        model, x, y, epsilon, bounds: as in :func:`fgsm`.
        steps: number of ascent steps (≥ 1).
        step_size: α (default 2.5·ε/steps, Madry et al.'s rule of thumb).
        random_start: start from a uniform point in the ball (else from ``x``).
        generator: RNG of the random start.

    Returns:
        Adversarial inputs, detached, within ``epsilon`` of ``x`` in L∞ and inside ``bounds``.
    """
    eps = _check(x, epsilon, bounds)
    check_int(steps, "steps", 1)
    alpha = (
        2.5 * eps / steps if step_size is None else check_positive_scalar(step_size, "step_size")
    )
    x0 = x.detach()
    adv = x0.clone()
    if random_start:
        noise = torch.rand(x0.shape, generator=generator, dtype=x0.dtype, device=x0.device)
        adv = adv + (2.0 * noise - 1.0) * eps
    for _ in range(steps):
        if bounds is not None:
            adv = adv.clamp(*bounds)
        adv = adv + alpha * _input_gradient(model, adv, y).sign()
        adv = torch.minimum(torch.maximum(adv, x0 - eps), x0 + eps)
    return adv if bounds is None else adv.clamp(*bounds)

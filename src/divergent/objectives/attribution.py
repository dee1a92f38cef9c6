r"""Factor-consistency KL between attribution-importance distributions (happiness computing).

Wu, Li, Tao, Xing & Yuan (arXiv 2402.12398; IEEE TCSS 2025) show that models with *additive*
factor attributions, :math:`f(x) = \phi_0 + \sum_j \phi_j(x)`, share the primary/secondary
ordering of factor importance, encode that domain knowledge as an importance distribution
:math:`P_\mathrm{DK}` over the factors, and penalise a model whose importance distribution
departs from it with a KL term:

.. math::

    I_j = \mathbb{E}_x\,|\phi_j(x)|,\qquad
    P_\mathrm{model}(j) = \frac{I_j}{\sum_k I_k},\qquad
    \mathcal{L} = \mathcal{L}_\mathrm{pred}
        + \lambda\,\mathrm{KL}(P_\mathrm{DK}\,\|\,P_\mathrm{model}).

The formula is reconstructed from the abstract (direction, normalisation and λ unverified):
here the knowledge is the target P (first argument, this library's convention) and the model
Q second, i.e. forward KL; ``direction="reverse"`` gives KL(P_model ‖ P_DK). The attributions
used here are gradient × input, :math:`\phi_j(x) = x_j\,\partial f/\partial x_j`, which are
additive and exact for linear models (:math:`f(x) - f(0) = \sum_j \phi_j`) and differentiable,
so the penalty trains the model (a double backward).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from divergent._validation import check_choice, check_float_tensor, check_mask
from divergent.functional import kl, reverse_kl

__all__ = [
    "factor_consistency_loss",
    "gradient_x_input",
    "importance_distribution",
]

DIRECTIONS: tuple[str, ...] = ("forward", "reverse")


def gradient_x_input(
    fn: Callable[[Tensor], Tensor],
    x: Tensor,
    *,
    labels: Tensor | None = None,
    create_graph: bool = True,
) -> Tensor:
    r"""Gradient × input attributions :math:`\phi_{ij} = x_{ij}\,\partial f(x_i)/\partial x_{ij}`.

    Args:
        fn: the model, ``(n, d) → (n,)`` scores or ``(n, C)`` logits.
        x: ``(n, d)`` inputs.
        labels: with ``(n, C)`` logits, the class whose logit is explained for each row
            (int64 ``(n,)``); required then.
        create_graph: keep the graph so that a loss on the attributions trains ``fn``.

    Returns:
        ``(n, d)`` attributions.

    Example:
        >>> w = torch.tensor([2.0, -1.0])
        >>> gradient_x_input(lambda x: x @ w, torch.tensor([[1.0, 3.0]]))
        tensor([[ 2., -3.]], grad_fn=<MulBackward0>)
    """
    x = check_float_tensor(x, "x", dims=2)
    inputs = x.detach().requires_grad_(True) if not x.requires_grad else x
    out = fn(inputs)
    if out.dim() == 2:
        if labels is None:
            raise ValueError(
                f"`fn` returned logits of shape {tuple(out.shape)}; pass `labels` (the class "
                "explained for each row)"
            )
        if labels.shape != out.shape[:1] or labels.dtype != torch.int64:
            raise ValueError(f"`labels` must be int64 of shape ({out.shape[0]},), got {labels!r}")
        out = out.gather(1, labels.unsqueeze(1)).squeeze(1)
    elif out.shape != x.shape[:1]:
        raise ValueError(f"`fn` must return (n,) scores or (n, C) logits, got {tuple(out.shape)}")
    (grad,) = torch.autograd.grad(out.sum(), inputs, create_graph=create_graph)
    return inputs * grad


def importance_distribution(attributions: Tensor, *, mask: Tensor | None = None) -> Tensor:
    r"""Factor importance normalised to a distribution, :math:`I_j / \sum_k I_k` with
    :math:`I_j = \mathrm{mean}_i |\phi_{ij}|`.

    Args:
        attributions: ``(n, d)`` per-example, per-factor attributions.
        mask: optional bool ``(n,)``: which examples count.

    Returns:
        ``(d,)`` non-negative, summing to 1.

    Raises:
        ValueError: all attributions are 0 (no importance to normalise) or an input is NaN.

    Example:
        >>> importance_distribution(torch.tensor([[1.0, -3.0], [1.0, 1.0]]))
        tensor([0.3333, 0.6667])
    """
    phi = check_float_tensor(attributions, "attributions", dims=2)
    keep = check_mask(mask, phi.shape[:1], phi.device)
    if keep is not None:
        phi = phi[keep]
    if phi.shape[0] == 0:
        raise ValueError("no example is kept (`attributions` is empty or `mask` is all False)")
    importance = phi.abs().mean(0)
    total = importance.sum()
    if bool(torch.isnan(total)):
        raise ValueError("`attributions` contains NaN")
    if float(total.detach()) == 0.0:
        raise ValueError("every attribution is 0: the importance distribution is undefined")
    return importance / total


def factor_consistency_loss(
    attributions: Tensor,
    reference: Tensor,
    *,
    direction: str = "forward",
    mask: Tensor | None = None,
) -> Tensor:
    r"""KL between a reference factor-importance distribution and the model's.

    Args:
        attributions: ``(n, d)`` model attributions (differentiable, e.g. from
            :func:`gradient_x_input` with ``create_graph=True``).
        reference: ``(d,)`` domain-knowledge importance :math:`P_\mathrm{DK}` (non-negative,
            summing to 1), or another model's importance distribution.
        direction: ``"forward"`` = KL(P_DK ‖ P_model) (default), ``"reverse"`` =
            KL(P_model ‖ P_DK).
        mask: optional bool ``(n,)``: which examples count.

    Returns:
        A 0-d tensor (nats).

    Example:
        >>> phi = torch.tensor([[1.0, -3.0], [1.0, 1.0]])
        >>> factor_consistency_loss(phi, torch.tensor([0.5, 0.5]))
        tensor(0.0589)
    """
    check_choice(direction, "direction", DIRECTIONS)
    model = importance_distribution(attributions, mask=mask)
    ref = _check_reference(reference, model)
    divergence = kl if direction == "forward" else reverse_kl
    # P = reference (target) first, Q = model second
    return divergence(ref.unsqueeze(0), model.unsqueeze(0), inputs="probs", engine="reference")


def _check_reference(reference: Any, model: Tensor) -> Tensor:
    ref = check_float_tensor(reference, "reference", dims=1)
    if ref.shape != model.shape:
        raise ValueError(
            f"`reference` must hold one importance per factor ({model.shape[0]}), got shape "
            f"{tuple(ref.shape)}"
        )
    if bool(torch.isnan(ref).any()) or bool((ref < 0).any()):
        raise ValueError(f"`reference` must be non-negative, got {ref.tolist()}")
    if abs(float(ref.double().sum()) - 1.0) > 1e-5:
        raise ValueError(
            f"`reference` must sum to 1 (an importance distribution), got sum "
            f"{float(ref.double().sum()):.6g}"
        )
    return ref.to(device=model.device, dtype=model.dtype)

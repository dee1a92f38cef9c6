r"""Cauchy–Schwarz information bottleneck (CS-IB) for regression: a pure loss and a thin module.

CS-IB (Yu, Yu, Løkse, Jenssen & Príncipe, ICLR 2024) trains an encoder x ↦ t and a decoder
t ↦ ŷ by

.. math::

    \min_\theta\; D_\mathrm{CS}\big(p(y|x)\,\|\,q_\theta(\hat y|x)\big)
        + \beta\, I_\mathrm{CS}(x; t),

the prediction term a conditional Cauchy–Schwarz divergence between the data's conditional
and the model's, the compression term the Cauchy–Schwarz quadratic mutual information between
input and representation. Both are Gaussian-kernel (Parzen) estimators from the core
(:func:`divergent.conditional_cauchy_schwarz`, :func:`divergent.cauchy_schwarz_mutual_information`),
so the loss works in any training loop and is differentiable in ``y_hat`` and ``t``.

Conventions here (and where they depart from the official code, ``SJYuCNEL/
Cauchy-Schwarz-Information-Bottleneck``, ``loss_cs.py``): nats (the code's prediction term
uses log₂, while its normalised compression term is a ratio with no unit, so the code's loss
is this one divided by ln 2 with β_code = β / ln 2: **β here = β_code × ln 2**, the code's
default 0.01 is β = 0.00693 here); kernel widths σ = 1 for every kernel by
default (as the code trains, on standardised x and y); the compression term normalised,
:math:`I(x;t)/\sqrt{I(x;x)\,I(t;t)}` (as the code's ``CS_QMI_normalized``); the conditional CS
denominator :math:`(\sum_i K_{ji})^2` by default, which is what the KDE derivation gives
(``denominator="sum_of_squares"`` is the code's :math:`\sum_i K_{ji}^2`).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, NamedTuple, TypedDict

import torch
from torch import Tensor, nn

from divergent._validation import check_bool, check_choice, spell_keywords, split_keywords
from divergent.samples.kernel import (
    DENOMINATORS,
    cauchy_schwarz_mutual_information,
    conditional_cauchy_schwarz,
)

if TYPE_CHECKING:  # pragma: no cover
    from typing_extensions import Unpack

__all__ = ["CSIBLoss", "CSIBTerms", "cs_ib_loss", "cs_ib_terms"]


class CSIBTerms(NamedTuple):
    """The CS-IB loss and its parts (0-d tensors, nats): ``total = prediction + β·compression``."""

    total: Tensor
    prediction: Tensor
    compression: Tensor


def _check_beta(beta: Any) -> float:
    if isinstance(beta, Tensor) and beta.numel() == 1:
        beta = beta.item()
    if (
        isinstance(beta, bool)
        or not isinstance(beta, (int, float))
        or not (math.isfinite(beta) and beta >= 0)
    ):
        raise ValueError(f"`beta` must be a finite number ≥ 0, got {beta!r}")
    return float(beta)


def _check_options(beta: Any, denominator: Any, normalized: Any) -> float:
    """The checked β; ``denominator`` and ``normalized`` are checked too."""
    checked_beta = _check_beta(beta)
    check_choice(denominator, "denominator", DENOMINATORS)
    check_bool(normalized, "normalized")
    return checked_beta


class CSIBOptions(TypedDict, total=False):
    """The kernel options of :func:`cs_ib_terms` (defaults and meaning there), typed for
    ``**options: Unpack[CSIBOptions]``."""

    sigma_x: float
    sigma_y: float
    sigma_t: float
    denominator: str
    normalized: bool


def _as_2d(v: Any, name: str) -> Tensor:
    if not isinstance(v, Tensor):
        raise ValueError(
            f"`{name}` must be a torch tensor (rows are samples), got {type(v).__name__}"
        )
    if v.dim() == 1:
        return v[:, None]
    if v.dim() != 2:
        raise ValueError(f"`{name}` must have shape (N,) or (N, dim), got {tuple(v.shape)}")
    return v


def cs_ib_terms(
    x: Tensor,
    y: Tensor,
    y_hat: Tensor,
    t: Tensor,
    beta: float = 0.01,
    *,
    sigma_x: float = 1.0,
    sigma_y: float = 1.0,
    sigma_t: float = 1.0,
    denominator: str = "squared_sum",
    normalized: bool = True,
) -> CSIBTerms:
    r"""CS-IB loss for one (mini-)batch, with its prediction and compression terms.

    .. math::

        \mathcal L = \hat D_\mathrm{CS}\big(p(y|x)\|q(\hat y|x)\big)
            + \beta\,\frac{\hat I_\mathrm{CS}(x;t)}{\sqrt{\hat I_\mathrm{CS}(x;x)\,
              \hat I_\mathrm{CS}(t;t)}},

    with, for Gram matrices :math:`K_{ji}=k_{\sigma_x}(x_j,x_i)`,
    :math:`L^1_{ji}=k_{\sigma_y}(y_j,y_i)`, :math:`L^2_{ji}=k_{\sigma_y}(\hat y_j,\hat y_i)`,
    :math:`L^{21}_{ji}=k_{\sigma_y}(\hat y_j,y_i)` and :math:`Q_{ji}=k_{\sigma_t}(t_j,t_i)`,

    .. math::

        \hat D_\mathrm{CS} = \log\sum_j\frac{\sum_i K_{ji}L^1_{ji}}{(\sum_i K_{ji})^2}
            + \log\sum_j\frac{\sum_i K_{ji}L^2_{ji}}{(\sum_i K_{ji})^2}
            - 2\log\sum_j\frac{\sum_i K_{ji}L^{21}_{ji}}{(\sum_i K_{ji})^2},

    .. math::

        \hat I_\mathrm{CS}(x;t) = \log\frac{\operatorname{tr}(KQ)}{N^2}
            + \log\frac{\mathbf 1^\top K\mathbf 1\,\mathbf 1^\top Q\mathbf 1}{N^4}
            - 2\log\frac{\mathbf 1^\top KQ\mathbf 1}{N^3}.

    The prediction term is 0 when ŷ = y and does not depend on the scale of the network's
    representation; the compression term is invariant to nothing but permutations, so with a
    fixed σ_t the encoder can lower it partly by rescaling t (the official code trains this way;
    evaluate compression with a scale-free width, e.g. the median heuristic, when comparing
    models).

    Args:
        x: inputs ``(N, d_x)``; y: targets ``(N,)`` or ``(N, d_y)``; y_hat: predictions, same
            shape as y; t: representations ``(N, d_t)`` (paired rows, torch tensors).
        beta: weight β ≥ 0 of the compression term (β = β_code × ln 2: the code's default
            0.01 is 0.01 × ln 2 here; β = 0 skips it).
        sigma_x, sigma_y, sigma_t: Gaussian kernel widths (> 0; the code uses 1).
        denominator: ``"squared_sum"`` (:math:`(\sum_i K_{ji})^2`, the derivation; default) or
            ``"sum_of_squares"`` (:math:`\sum_i K_{ji}^2`, the official code).
        normalized: normalise the compression term by :math:`\sqrt{I(x;x)I(t;t)}` (the code's
            choice) or use the raw :math:`\hat I_\mathrm{CS}(x;t)`.

    Returns:
        :class:`CSIBTerms` ``(total, prediction, compression)``, 0-d tensors in nats,
        differentiable with respect to ``y_hat`` and ``t``.

    Example:
        >>> import torch
        >>> from divergent.objectives.information_bottleneck import cs_ib_terms
        >>> x = torch.linspace(-1, 1, 8)[:, None]; y = x[:, 0] ** 2
        >>> terms = cs_ib_terms(x, y, y.clone(), x.clone(), beta=0.1)
        >>> round(float(terms.prediction), 6)   # perfect predictions: D_CS = 0
        0.0
        >>> round(float(terms.compression), 4)  # t is a copy of x: normalised I_CS = 1
        1.0

    References:
        S. Yu, X. Yu, S. Løkse, R. Jenssen, J. C. Príncipe, "Cauchy–Schwarz Divergence
        Information Bottleneck for Regression", ICLR 2024 (arXiv 2404.17951), Eq. 18 and
        Prop. 2.
    """
    b = _check_options(beta, denominator, normalized)
    x2, y2, h2, t2 = (_as_2d(v, n) for v, n in ((x, "x"), (y, "y"), (y_hat, "y_hat"), (t, "t")))
    n = x2.shape[0]
    if not (y2.shape[0] == h2.shape[0] == t2.shape[0] == n):
        raise ValueError(
            "`x`, `y`, `y_hat` and `t` must have the same number of rows (one per sample), got "
            f"{n}, {y2.shape[0]}, {h2.shape[0]} and {t2.shape[0]}"
        )
    if n < 2:
        raise ValueError(f"CS-IB needs a batch of at least 2 samples, got {n}")
    prediction = conditional_cauchy_schwarz(
        x2, y2, h2, sigma_x=sigma_x, sigma_y=sigma_y, denominator=denominator
    )
    if b == 0.0:
        compression = torch.zeros((), dtype=prediction.dtype, device=prediction.device)
    else:
        compression = cauchy_schwarz_mutual_information(
            x2, t2, sigma_x=sigma_x, sigma_t=sigma_t, normalized=normalized
        )
    return CSIBTerms(prediction + b * compression, prediction, compression)


#: the kernel options of :func:`cs_ib_terms` (its keyword-only parameters, with their defaults)
_KERNEL_PARAMETERS: dict[str, inspect.Parameter] = {
    name: p
    for name, p in inspect.signature(cs_ib_terms).parameters.items()
    if p.kind is p.KEYWORD_ONLY
}

#: show a function's ``**options`` (a :class:`CSIBOptions`) as the kernel options spelled out,
#: with the defaults of :func:`cs_ib_terms`
_kernel_signature = spell_keywords(_KERNEL_PARAMETERS)


def _kernel_options(options: Mapping[str, Any], function: str) -> dict[str, Any]:
    """``options`` with :func:`cs_ib_terms`' defaults filled in (an unknown name: TypeError)."""
    given, _ = split_keywords(options, tuple(_KERNEL_PARAMETERS), function=function)
    return {name: given.get(name, p.default) for name, p in _KERNEL_PARAMETERS.items()}


@_kernel_signature
def cs_ib_loss(
    x: Tensor,
    y: Tensor,
    y_hat: Tensor,
    t: Tensor,
    beta: float = 0.01,
    **options: Unpack[CSIBOptions],
) -> Tensor:
    r"""The CS-IB loss :math:`\hat D_\mathrm{CS}(p(y|x)\|q(\hat y|x)) + \beta\,\hat I(x;t)`.

    The ``total`` of :func:`cs_ib_terms` with the same arguments (see there for the
    estimators, the kernel options ``sigma_x, sigma_y, sigma_t, denominator, normalized`` and
    the choice of conditional-CS denominator); a 0-d tensor in nats, differentiable.

    References:
        Yu et al., "Cauchy–Schwarz Divergence Information Bottleneck for Regression", ICLR 2024.
    """
    return cs_ib_terms(x, y, y_hat, t, beta, **_kernel_options(options, "cs_ib_loss")).total


class CSIBLoss(nn.Module):
    r"""``nn.Module`` wrapper of :func:`cs_ib_loss`: ``CSIBLoss(beta)(x, y, y_hat, t)``.

    The last call's terms are kept in :attr:`last_terms` (detached) for logging.

    Args:
        beta, sigma_x, sigma_y, sigma_t, denominator, normalized: as in :func:`cs_ib_terms`.

    References:
        Yu et al., "Cauchy–Schwarz Divergence Information Bottleneck for Regression", ICLR 2024.
    """

    @_kernel_signature
    def __init__(self, beta: float = 0.01, **options: Unpack[CSIBOptions]) -> None:
        super().__init__()
        kernel = _kernel_options(options, "CSIBLoss.__init__")
        self.beta = _check_options(beta, kernel["denominator"], kernel["normalized"])
        for name in ("sigma_x", "sigma_y", "sigma_t"):
            s = kernel[name]
            if (
                isinstance(s, bool)
                or not isinstance(s, (int, float))
                or not (math.isfinite(s) and s > 0)
            ):
                raise ValueError(f"`{name}` must be a finite number > 0, got {s!r}")
        self.sigma_x, self.sigma_y, self.sigma_t = (
            float(kernel["sigma_x"]),
            float(kernel["sigma_y"]),
            float(kernel["sigma_t"]),
        )
        self.denominator = kernel["denominator"]
        self.normalized = kernel["normalized"]
        self.last_terms: CSIBTerms | None = None

    def forward(self, x: Tensor, y: Tensor, y_hat: Tensor, t: Tensor) -> Tensor:
        kernel = {name: getattr(self, name) for name in _KERNEL_PARAMETERS}
        terms = cs_ib_terms(x, y, y_hat, t, self.beta, **kernel)
        self.last_terms = CSIBTerms(*(v.detach() for v in terms))
        return terms.total

    def extra_repr(self) -> str:
        return (
            f"beta={self.beta}, sigma=({self.sigma_x}, {self.sigma_y}, {self.sigma_t}), "
            f"denominator={self.denominator!r}, normalized={self.normalized}"
        )

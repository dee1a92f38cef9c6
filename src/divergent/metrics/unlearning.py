r"""Unlearning metrics: the margin of a labelled point and KLoM, the KL divergence of margins.

Georgiev, Rinberg, Park, Garg, Ilyas, Madry & Neel (ICLR 2025) evaluate an unlearning algorithm
by comparing, point by point, the *distribution over training randomness* of a model output
after unlearning with the same distribution for models retrained from scratch without the forget
set (the oracles). The output is the margin of a labelled point :math:`(x, y)`,

.. math::

    \varphi(x) = z_y(x) - \log \sum_{k \ne y} e^{z_k(x)},

and the metric ("KL of margins") for the point is

.. math::

    \mathrm{KLoM}(x) = \mathrm{KL}\big(P_{\text{unlearned}}[\varphi(x)]\,\big\|\,
        P_{\text{oracle}}[\varphi(x)]\big),

each distribution being the empirical distribution of :math:`\varphi(x)` over models trained
with independent seeds (unlearned first, oracle second, as in DESIGN.md's ``D(P‖Q)``).

The estimator is the one of the authors' benchmark (``compute_binned_KL_div`` of
``data-unlearning-bench``): clip both samples to ``[-100, 100]``; 20 equal-width bins spanning
the joint range ``[min, max]`` of the two clipped samples (a range of width 0 becomes
``[min, min + 1]``); ``p``, ``q`` = the bin frequencies (unlearned, oracle); where ``p > 0``
set ``q ← max(q, 10⁻⁵)``; then ``Σ p log(p / q̃)`` with :math:`\tilde q = q / \sum q` — the
renormalisation is what ``scipy.stats.entropy(p, q)`` does to the floored ``q``, and it is made
explicit here (it is part of the estimator, not a silent fix). The KL is evaluated by
:func:`divergent.functional.kl` with ``inputs="probs"``.

One difference from the benchmark, on purpose: the bins are ``[e_m, e_{m+1})`` with the last
one closed, as in ``numpy.histogram``; the benchmark's ``np.digitize`` puts a sample equal to
the joint maximum in no bin, so the largest sample(s) of the two sets are dropped from its
histograms. Here every sample is counted.

The estimator is biased upwards for small ensembles (empty oracle bins get the floor, so a
single unlearned sample there costs about ``(1/N) log(10⁵/N)``): compare KLoM values only at
equal ensemble sizes, and against an oracle-vs-oracle reference computed the same way.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from divergent._validation import (
    check_float_tensor,
    check_int,
    check_positive_scalar,
    check_tensor,
    compute_dtype,
)
from divergent.functional import kl

__all__ = ["KLOM_BINS", "KLOM_CLIP", "KLOM_FLOOR", "binned_kl", "klom", "margin"]

KLOM_BINS = 20  # the benchmark's bin count
KLOM_CLIP = (-100.0, 100.0)  # the benchmark's clip range of the margins
KLOM_FLOOR = 1e-5  # the benchmark's floor on q where p > 0


def margin(logits: Tensor, labels: Tensor) -> Tensor:
    r"""The margin :math:`\varphi = z_y - \log\sum_{k\ne y} e^{z_k}` of labelled points.

    Computed as ``z_y - logsumexp(z with z_y replaced by -inf)``: stable for any finite
    logits (no exponential of a large number) and differentiable.

    Args:
        logits: shape ``(..., C)`` with ``C >= 2`` (any leading shape, e.g. ``(n_models,
            n_points, C)``); bf16 / fp16 are computed in fp32.
        labels: integer class indices in ``[0, C)`` whose shape broadcasts to the leading
            shape of ``logits`` (e.g. ``(n_points,)`` for ``(n_models, n_points, C)`` logits).

    Returns:
        The margins, shape ``logits.shape[:-1]``. A row holding NaN gives NaN; ``-inf`` logits
        are allowed (``+inf`` margin when every other class is ``-inf``).

    Raises:
        ValueError: ``logits`` not floating point, fewer than 2 classes, a ``+inf`` logit or a
            row whose logits are all ``-inf``; ``labels`` not integer, out of range or of a
            shape that does not broadcast to the leading shape.

    Example:
        >>> import torch
        >>> z = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 3.0]])
        >>> margin(z, torch.tensor([0, 1])).round(decimals=4)
        tensor([ 1.3069, -2.0486])

    References:
        Georgiev, Rinberg, Park, Garg, Ilyas, Madry & Neel, "Attribute-to-Delete: Machine
        Unlearning via Datamodel Matching", ICLR 2025 (arXiv 2410.23232).
    """
    logits = check_tensor(logits, "logits")
    n_classes = logits.shape[-1]
    if n_classes < 2:
        raise ValueError(
            f"`logits` must have at least 2 classes (the margin compares the label's logit with "
            f"the others), got shape {tuple(logits.shape)}"
        )
    if not isinstance(labels, Tensor) or labels.dtype.is_floating_point or labels.is_complex():
        got = labels.dtype if isinstance(labels, Tensor) else type(labels).__name__
        raise ValueError(f"`labels` must be an integer torch.Tensor of class indices, got {got}")
    if labels.dtype == torch.bool:
        raise ValueError("`labels` must be an integer torch.Tensor of class indices, got bool")
    leading = logits.shape[:-1]
    try:
        shape = torch.broadcast_shapes(labels.shape, leading)
    except RuntimeError:
        shape = None
    if shape != leading:
        raise ValueError(
            f"`labels` of shape {tuple(labels.shape)} does not broadcast to the leading shape "
            f"{tuple(leading)} of `logits`"
        )
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= n_classes):
        raise ValueError(
            f"`labels` must lie in [0, {n_classes}) (the class axis of `logits`), got values in "
            f"[{int(labels.min())}, {int(labels.max())}]"
        )
    if bool(torch.isposinf(logits).any()):
        raise ValueError("`logits` contains +inf; the margin needs finite logits (or -inf)")
    z = logits.to(compute_dtype(logits))
    if bool(torch.isneginf(z).all(-1).any()):
        raise ValueError("`logits` has a row whose entries are all -inf (no class has mass)")
    labels = labels.to(device=z.device, dtype=torch.long).expand(leading)
    is_label = torch.nn.functional.one_hot(labels, n_classes).bool()
    z_label = z.gather(-1, labels.unsqueeze(-1)).squeeze(-1)
    others = z.masked_fill(is_label, -math.inf).logsumexp(-1)
    return z_label - others


def _check_samples(x: Any, name: str) -> Tensor:
    x = check_float_tensor(x, name, min_dim=1)
    if x.shape[0] < 1:
        raise ValueError(f"`{name}` needs at least one sample on its first axis, got shape (0, …)")
    return x


def _check_sample_pair(
    p: Any, q: Any, p_name: str, q_name: str, first_axis: str = ""
) -> tuple[Tensor, Tensor]:
    """Both sample sets checked (:func:`_check_samples`), with the same point shape (all axes
    but the first; ``first_axis`` says what that axis indexes in the message, if anything)."""
    p, q = _check_samples(p, p_name), _check_samples(q, q_name)
    if p.shape[1:] != q.shape[1:]:
        raise ValueError(
            f"`{p_name}` and `{q_name}` must have the same point shape (all axes but the "
            f"first{first_axis}), got {tuple(p.shape)} and {tuple(q.shape)}"
        )
    return p, q


def _check_clip(clip: Any) -> tuple[float, float]:
    ok = isinstance(clip, tuple | list) and len(clip) == 2
    if ok:
        try:
            lo, hi = float(clip[0]), float(clip[1])
        except (TypeError, ValueError):
            ok = False
        else:
            ok = math.isfinite(lo) and math.isfinite(hi) and lo < hi
    if not ok:
        raise ValueError(
            f"`clip` must be a pair (low, high) of finite numbers with low < high, got {clip!r}"
        )
    return lo, hi


def binned_kl(
    p_samples: Tensor,
    q_samples: Tensor,
    *,
    n_bins: int = KLOM_BINS,
    clip: tuple[float, float] = KLOM_CLIP,
    floor: float = KLOM_FLOOR,
) -> Tensor:
    r"""Binned plug-in estimate of KL(P‖Q) from samples, one estimate per point (column).

    For each point, both samples are clipped to ``clip``, binned into ``n_bins`` equal-width
    bins spanning their joint range, and

    .. math::

        \widehat{\mathrm{KL}} = \sum_m p_m \log\frac{p_m}{\tilde q_m},\qquad
        \tilde q = \frac{q'}{\sum_m q'_m},\quad
        q'_m = \begin{cases}\max(q_m, \epsilon) & p_m > 0\\ q_m & p_m = 0\end{cases}

    with :math:`p, q` the bin frequencies and :math:`\epsilon` = ``floor`` (the data-unlearning
    benchmark's estimator; ``scipy.stats.entropy`` renormalises the floored ``q`` the same
    way). Bins are ``[e_m, e_{m+1})``, the last one closed (``numpy.histogram``).

    Args:
        p_samples: samples of P, shape ``(n_p, *points)``: the first axis indexes the samples
            (e.g. the models of an ensemble), the rest the points.
        q_samples: samples of Q, shape ``(n_q, *points)`` (``n_q`` may differ from ``n_p``).
        n_bins: number of equal-width bins (>= 1; default 20 as in the benchmark).
        clip: ``(low, high)`` the samples are clipped to before binning (default
            ``(-100, 100)``; ±inf samples land at the ends).
        floor: the floor ε on ``q`` where ``p > 0``, in (0, 1) (default 1e-5).

    Returns:
        float64 estimates (nats) of shape ``points`` (a 0-d tensor for 1-D inputs); NaN where
        a point's samples hold NaN. Always finite otherwise, at most ``log(1 / ε')`` with
        ε' the floor after renormalising.

    Raises:
        ValueError: non-float inputs, no sample, point shapes that differ, or a bad
            ``n_bins`` / ``clip`` / ``floor`` (the message names it).

    Example:
        >>> import torch
        >>> p = torch.tensor([0.0, 0.1, 0.2, 0.9])
        >>> q = torch.tensor([0.0, 0.8, 0.9, 1.0])
        >>> round(float(binned_kl(p, q, n_bins=2)), 4)  # (3/4, 1/4) vs (1/4, 3/4): ½ log 3
        0.5493
    """
    p_samples, q_samples = _check_sample_pair(p_samples, q_samples, "p_samples", "q_samples")
    if p_samples.device != q_samples.device:
        raise ValueError(
            f"`p_samples` is on {p_samples.device} but `q_samples` is on {q_samples.device}"
        )
    n_bins = check_int(n_bins, "n_bins", 1, "number of bins")
    lo, hi = _check_clip(clip)
    floor = check_positive_scalar(floor, "floor", what="the floor on q where p > 0")
    if floor >= 1.0:  # type: ignore[operator]
        raise ValueError(f"`floor` must be in (0, 1) (the floor on q where p > 0), got {floor!r}")

    points = p_samples.shape[1:]
    p = p_samples.detach().to(torch.float64).reshape(p_samples.shape[0], -1).T  # (n_points, n_p)
    q = q_samples.detach().to(torch.float64).reshape(q_samples.shape[0], -1).T
    nan_points = torch.isnan(p).any(-1) | torch.isnan(q).any(-1)
    # binned in float64 with NaN replaced (their result is set to NaN at the end)
    p = p.nan_to_num(0.0).clamp(lo, hi)
    q = q.nan_to_num(0.0).clamp(lo, hi)
    start = torch.minimum(p.min(-1).values, q.min(-1).values)
    end = torch.maximum(p.max(-1).values, q.max(-1).values)
    end = torch.where(end > start, end, start + 1.0)  # one value only: a range of width 1
    # edges as numpy.linspace computes them: start + k·step, the last edge set to `end`
    step = (end - start) / n_bins
    ks = torch.arange(n_bins + 1, dtype=torch.float64, device=p.device)
    edges = start[:, None] + ks * step[:, None]
    edges[:, -1] = end
    p_freq = _frequencies(p, edges, n_bins)
    q_freq = _frequencies(q, edges, n_bins)
    q_floored = torch.where(p_freq > 0, q_freq.clamp_min(floor), q_freq)
    q_floored = q_floored / q_floored.sum(-1, keepdim=True)  # what scipy.stats.entropy does
    values = kl(p_freq, q_floored, inputs="probs", reduction="none")
    values = values.masked_fill(nan_points, math.nan)
    return values.reshape(points)


def _frequencies(x: Tensor, edges: Tensor, n_bins: int) -> Tensor:
    """Bin frequencies of each row of ``x`` over its row of ``edges`` (last bin closed)."""
    index = torch.searchsorted(edges.contiguous(), x.contiguous(), right=True) - 1
    index = index.clamp(0, n_bins - 1)  # x == last edge → the last bin
    counts = torch.zeros(x.shape[0], n_bins, dtype=torch.float64, device=x.device)
    counts.scatter_add_(1, index, torch.ones_like(x))
    return counts / x.shape[1]


def klom(
    unlearned_margins: Tensor,
    oracle_margins: Tensor,
    *,
    n_bins: int = KLOM_BINS,
    clip: tuple[float, float] = KLOM_CLIP,
    floor: float = KLOM_FLOOR,
) -> Tensor:
    r"""KLoM: KL(unlearned‖oracle) of the margin distributions over models, per point.

    .. math::

        \mathrm{KLoM}(x) = \mathrm{KL}\big(P_{\text{unlearned}}[\varphi(x)]\,\big\|\,
            P_{\text{oracle}}[\varphi(x)]\big)

    estimated by :func:`binned_kl` with the data-unlearning benchmark's settings (20 bins over
    the joint range of the margins clipped to [-100, 100], q floored at 1e-5 where p > 0).
    Margins come from :func:`margin`.

    Args:
        unlearned_margins: ``(n_models, *points)``: the margins of the unlearned models (one
            row per model, each trained and unlearned with its own seed).
        oracle_margins: ``(n_oracles, *points)``: the margins of models retrained without the
            forget set.
        n_bins, clip, floor: the estimator's settings (see :func:`binned_kl`).

    Returns:
        float64 KLoM values of shape ``points`` (nats; 0 = indistinguishable histograms).

    Raises:
        ValueError: as :func:`binned_kl`.

    Example:
        >>> import torch
        >>> g = torch.Generator().manual_seed(0)
        >>> oracle = torch.randn(100, 3, generator=g)
        >>> same = torch.randn(100, 3, generator=g)
        >>> shifted = same + torch.tensor([0.0, 1.0, 3.0])
        >>> klom(shifted, oracle).round(decimals=2)
        tensor([0.6200, 1.7900, 6.4000], dtype=torch.float64)
        >>> float(klom(oracle, oracle.clone()).abs().max())
        0.0

    References:
        Georgiev, Rinberg, Park, Garg, Ilyas, Madry & Neel, "Attribute-to-Delete: Machine
        Unlearning via Datamodel Matching", ICLR 2025 (arXiv 2410.23232); the estimator of
        ``unlearning_bench/eval.py`` in github.com/RoyRin/data-unlearning-bench.
    """
    unlearned_margins, oracle_margins = _check_sample_pair(
        unlearned_margins, oracle_margins, "unlearned_margins", "oracle_margins", ", the models"
    )
    return binned_kl(unlearned_margins, oracle_margins, n_bins=n_bins, clip=clip, floor=floor)

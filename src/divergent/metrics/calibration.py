r"""Calibration of a classifier's probabilities: ECE / RMS / MCE, equal-mass and class-wise
variants, the reliability diagram, and the NLL / accuracy used next to them.

Top-label calibration error (Guo, Pleiss, Sun & Weinberger, ICML 2017): with the confidence
:math:`c_i = \max_k p_{ik}`, the correctness :math:`a_i = 1[\arg\max_k p_{ik} = y_i]` and a
partition of the samples into bins :math:`B_1..B_M`,

.. math::

    \mathrm{ECE} = \sum_m \frac{|B_m|}{n}\,\big|\bar a(B_m) - \bar c(B_m)\big|,\quad
    \mathrm{RMS} = \Big(\sum_m \frac{|B_m|}{n}\,\big(\bar a(B_m) - \bar c(B_m)\big)^2\Big)^{1/2},
    \quad \mathrm{MCE} = \max_m \big|\bar a(B_m) - \bar c(B_m)\big|

(``norm="l1"``, ``"l2"``, ``"max"``; empty bins contribute nothing).

Binning conventions for equal-width bins (``convention=``):

* ``"torchmetrics"`` (default): exactly ``torchmetrics.functional.multiclass_calibration_error``
  (1.x): edges ``torch.linspace(0, 1, M + 1)`` in the confidences' dtype, bins
  :math:`[e_m, e_{m+1})` found with ``torch.bucketize(c, edges, right=True) - 1``, so a
  confidence exactly on an edge goes to the bin above it and a confidence of exactly 1.0 to an
  extra (M+1)-th bin of its own (torchmetrics issue #3510). Values agree with torchmetrics to
  float rounding (it accumulates in float32, this module in float64). torchmetrics casts
  the confidences to float32 before binning; here float64 probabilities are binned in float64
  (identical for float32 / float16 / bfloat16 inputs).
* ``"guo"``: the bins of Guo et al., :math:`(e_m, e_{m+1}]` with 0 in the first bin, so an
  edge goes to the bin below and 1.0 to the last bin (M bins in all).

Values are returned as Python floats in [0, 1] (multiply by 100 for the percentages papers
print); report the bin count and the binning with them, they are not comparable across either.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from divergent._validation import check_choice, check_float_tensor

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "CONVENTIONS",
    "NORMS",
    "CalibrationBins",
    "accuracy",
    "calibration_bins",
    "classwise_calibration_error",
    "equal_mass_calibration_error",
    "expected_calibration_error",
    "negative_log_likelihood",
    "reliability_diagram",
]

NORMS: tuple[str, ...] = ("l1", "l2", "max")
CONVENTIONS: tuple[str, ...] = ("torchmetrics", "guo")
_SUM_TOLERANCE = 1e-3


@dataclass(frozen=True)
class CalibrationBins:
    """Per-bin statistics of top-label confidences (float64 tensors of one length).

    Attributes:
        edges: bin edges; equal-width: ``linspace(0, 1, n_bins + 1)``; equal-mass: the lowest
            confidence of each bin followed by the highest overall confidence.
        count: samples per bin. With the ``"torchmetrics"`` convention there is one more
            entry than bins: the samples whose confidence is exactly 1.0.
        accuracy: mean correctness per bin (0 for an empty bin).
        confidence: mean confidence per bin (0 for an empty bin).
        n: number of samples.
    """

    edges: Tensor
    count: Tensor
    accuracy: Tensor
    confidence: Tensor
    n: int

    @property
    def proportion(self) -> Tensor:
        return self.count / max(self.n, 1)

    def error(self, norm: str = "l1") -> float:
        """The calibration error of these bins under ``norm`` (``l1`` | ``l2`` | ``max``)."""
        _check_norm(norm)
        return float(_binned_error((self.accuracy - self.confidence).abs(), self.proportion, norm))


def _binned_error(gap: Tensor, proportion: Tensor, norm: str) -> Tensor:
    r"""The calibration error over the last (bin) axis from each bin's
    :math:`|\mathrm{acc} - \mathrm{conf}|` and share of the samples: :math:`\sum_m p_m g_m`
    (``l1``), :math:`\sqrt{\sum_m p_m g_m^2}` (``l2``), or the largest gap of a non-empty bin
    (``max``; 0 when every bin is empty)."""
    if norm == "l1":
        return (gap * proportion).sum(-1)
    if norm == "l2":
        return (gap.square() * proportion).sum(-1).sqrt()
    return torch.where(proportion > 0, gap, 0.0).amax(-1)


def _check_norm(norm: Any) -> str:
    return check_choice(norm, "norm", NORMS, " (ECE, RMS calibration error, MCE)")


def _check_n_bins(n_bins: Any) -> int:
    if isinstance(n_bins, bool) or not isinstance(n_bins, int) or n_bins < 1:
        raise ValueError(f"`n_bins` must be a positive integer, got {n_bins!r}")
    return n_bins


def _check_convention(convention: Any) -> str:
    return check_choice(convention, "convention", CONVENTIONS)


def _check_probs_labels(probs: Any, labels: Any) -> tuple[Tensor, Tensor]:
    probs = check_float_tensor(probs, "probs", dims=2)
    n, n_classes = probs.shape
    if n == 0 or n_classes < 2:
        raise ValueError(
            f"`probs` must have shape (n_samples, n_classes) with n_samples >= 1 and "
            f"n_classes >= 2, got {tuple(probs.shape)}"
        )
    if probs.dtype in (torch.float16, torch.bfloat16):
        probs = probs.float()
    if not bool(torch.isfinite(probs).all()):
        raise ValueError("`probs` contains NaN or infinite values")
    low, high = float(probs.min()), float(probs.max())
    if low < 0 or high > 1:
        raise ValueError(
            f"`probs` must be probabilities in [0, 1] (got values in [{low:g}, {high:g}]); pass "
            "softmax(logits), not logits"
        )
    sums = probs.sum(dim=-1, dtype=torch.float64)
    worst = float((sums - 1).abs().max())
    if worst > _SUM_TOLERANCE:
        raise ValueError(
            f"each row of `probs` must sum to 1 (a row sums to 1 ± {worst:.3g}); pass "
            "softmax(logits)"
        )
    if (
        not isinstance(labels, Tensor)
        or labels.dtype == torch.bool
        or (torch.is_floating_point(labels) or torch.is_complex(labels))
    ):
        got = labels.dtype if isinstance(labels, Tensor) else type(labels).__name__
        raise ValueError(f"`labels` must be an integer tensor of class indices, got {got}")
    if labels.shape != (n,):
        raise ValueError(
            f"`labels` must have shape ({n},) to match `probs` {tuple(probs.shape)}, got "
            f"{tuple(labels.shape)}"
        )
    return probs, _labels_in_range(labels, n_classes, probs.device)


def _labels_in_range(labels: Tensor, n_classes: int, device: torch.device) -> Tensor:
    """``labels`` as int64 on ``device``, checked to be class indices ``0..n_classes-1``."""
    labels = labels.to(device, torch.long)
    out = (labels < 0) | (labels >= n_classes)
    if bool(out.any()):
        raise ValueError(
            f"`labels` has a value out of range: {int(labels[out][0])} (allowed 0..{n_classes - 1})"
        )
    return labels


def _check_binned(probs: Any, labels: Any, n_bins: Any, convention: Any) -> tuple[Tensor, Tensor]:
    """The checked ``probs, labels`` of a binned estimator (``n_bins`` and ``convention``
    checked too)."""
    _check_n_bins(n_bins)
    _check_convention(convention)
    return _check_probs_labels(probs, labels)


def _bin_index(conf: Tensor, n_bins: int, convention: str) -> tuple[Tensor, Tensor, int]:
    """(bin index per sample, edges, number of slots) for equal-width bins."""
    edges = torch.linspace(0, 1, n_bins + 1, dtype=conf.dtype, device=conf.device)
    if convention == "torchmetrics":
        return torch.bucketize(conf, edges, right=True) - 1, edges, n_bins + 1
    # (e_m, e_m+1]: bucketize(right=False) gives i with e_{i-1} < c <= e_i; 0 joins bin 0
    return (torch.bucketize(conf, edges, right=False) - 1).clamp_min(0), edges, n_bins


def _pool(index: Tensor, conf: Tensor, correct: Tensor, slots: int) -> tuple[Tensor, ...]:
    conf64, correct64 = conf.to(torch.float64), correct.to(torch.float64)
    count = torch.zeros(slots, dtype=torch.float64, device=conf.device)
    count.scatter_add_(0, index, torch.ones_like(conf64))
    conf_sum = torch.zeros_like(count).scatter_add_(0, index, conf64)
    acc_sum = torch.zeros_like(count).scatter_add_(0, index, correct64)
    safe = count.clamp_min(1)
    return count, acc_sum / safe, conf_sum / safe


def _top_label(probs: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    conf, pred = probs.max(dim=-1)
    return conf, pred.eq(labels)


@torch.no_grad()
def calibration_bins(
    probs: Tensor,
    labels: Tensor,
    *,
    n_bins: int = 15,
    binning: str = "equal_width",
    convention: str = "torchmetrics",
) -> CalibrationBins:
    """Bin the top-label confidences and return per-bin counts, accuracy and confidence.

    Args:
        probs: predicted probabilities, shape ``(n, C)``, rows summing to 1.
        labels: true classes, int, shape ``(n,)``.
        n_bins: number of bins M.
        binning: ``"equal_width"`` (M equal-width bins on [0, 1]) or ``"equal_mass"``
            (M bins of ⌊n/M⌋ or ⌈n/M⌉ samples each by ascending confidence).
        convention: the equal-width edge rule (module docstring); ignored for equal mass.

    Example:
        >>> import torch
        >>> probs = torch.tensor([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.2, 0.8]])
        >>> bins = calibration_bins(probs, torch.tensor([0, 1, 1, 1]), n_bins=2)
        >>> bins.count.tolist(), bins.accuracy.tolist()
        ([0.0, 4.0, 0.0], [0.0, 0.75, 0.0])
    """
    probs, labels = _check_binned(probs, labels, n_bins, convention)
    conf, correct = _top_label(probs, labels)
    n = conf.shape[0]
    if binning == "equal_width":
        index, edges, slots = _bin_index(conf, n_bins, convention)
    elif binning == "equal_mass":
        order = torch.sort(conf, stable=True).indices
        rank = torch.empty_like(order)
        rank[order] = torch.arange(n, device=conf.device)
        index = torch.div(rank * n_bins, n, rounding_mode="floor")
        slots = n_bins
        sorted_conf = conf[order].to(torch.float64)
        starts = torch.div(
            torch.arange(n_bins, device=conf.device) * n + n_bins - 1, n_bins, rounding_mode="floor"
        ).clamp_max(n - 1)
        edges = torch.cat([sorted_conf[starts], sorted_conf[-1:]])
    else:
        raise ValueError(f"`binning` must be 'equal_width' or 'equal_mass', got {binning!r}")
    count, acc, mean_conf = _pool(index, conf, correct, slots)
    return CalibrationBins(
        edges=edges.to(torch.float64), count=count, accuracy=acc, confidence=mean_conf, n=n
    )


def expected_calibration_error(
    probs: Tensor,
    labels: Tensor,
    *,
    n_bins: int = 15,
    norm: str = "l1",
    convention: str = "torchmetrics",
) -> float:
    r"""Top-label calibration error with M equal-width bins: ECE (``l1``), RMS (``l2``), MCE
    (``max``).

    .. math::

        \mathrm{ECE} = \sum_m \frac{|B_m|}{n}\,\big|\mathrm{acc}(B_m) - \mathrm{conf}(B_m)\big|

    Args:
        probs: predicted probabilities, shape ``(n, C)`` (rows sum to 1 within 1e-3; pass
            ``softmax(logits)``).
        labels: true classes, integer tensor of shape ``(n,)``.
        n_bins: M (15 as Guo et al. and torchmetrics).
        norm: ``"l1"`` | ``"l2"`` | ``"max"``.
        convention: ``"torchmetrics"`` (default, identical binning to
            ``torchmetrics.functional.classification.multiclass_calibration_error``) or
            ``"guo"`` (right-closed bins, 1.0 in the last bin); see the module docstring.

    Returns:
        The calibration error, a float in [0, 1].

    Raises:
        ValueError: non-probabilities (negative, > 1, NaN, rows not summing to 1), labels of
            the wrong shape or out of range, an empty input, or a bad option.

    Example:
        >>> import torch
        >>> probs = torch.tensor([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.2, 0.8]])
        >>> labels = torch.tensor([0, 1, 1, 1])
        >>> round(expected_calibration_error(probs, labels, n_bins=2), 4)
        0.0
        >>> round(expected_calibration_error(probs, labels, n_bins=10), 4)
        0.3

    References:
        Guo, Pleiss, Sun & Weinberger, "On calibration of modern neural networks", ICML 2017;
        Naeini, Cooper & Hauskrecht, AAAI 2015 (ECE / MCE).
    """
    _check_norm(norm)
    return calibration_bins(probs, labels, n_bins=n_bins, convention=convention).error(norm)


def equal_mass_calibration_error(
    probs: Tensor, labels: Tensor, *, n_bins: int = 15, norm: str = "l1"
) -> float:
    r"""Top-label calibration error with equal-mass (adaptive) bins.

    The samples sorted by confidence (stable sort) are cut into M bins of ⌊n/M⌋ or ⌈n/M⌉
    samples (sample of rank i in bin ⌊iM/n⌋), then ``norm`` is applied as in
    :func:`expected_calibration_error`. With n < M some bins are empty.

    Example:
        >>> import torch
        >>> probs = torch.tensor([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.2, 0.8]])
        >>> round(equal_mass_calibration_error(probs, torch.tensor([0, 1, 1, 1]), n_bins=2), 4)
        0.15

    References:
        Nguyen & O'Connor 2015 (adaptive binning); Nixon et al., "Measuring calibration in
        deep learning", CVPR-W 2019 (adaptive calibration error).
    """
    _check_norm(norm)
    return calibration_bins(probs, labels, n_bins=n_bins, binning="equal_mass").error(norm)


@torch.no_grad()
def classwise_calibration_error(
    probs: Tensor,
    labels: Tensor,
    *,
    n_bins: int = 15,
    norm: str = "l1",
    convention: str = "torchmetrics",
) -> float:
    r"""Class-wise calibration error: the mean over classes k of the calibration error of
    :math:`p_{ik}` against :math:`1[y_i = k]`.

    .. math::

        \mathrm{cwECE} = \frac1K\sum_{k=1}^K \sum_m \frac{|B_{k,m}|}{n}
            \big|\bar{1}[y = k](B_{k,m}) - \bar p_{k}(B_{k,m})\big|,

    with :math:`B_{k,m}` the equal-width bin of :math:`p_{ik}` (``convention`` as in
    :func:`expected_calibration_error`); ``l2`` takes the root per class before averaging,
    ``max`` the worst bin per class.

    Example:
        >>> import torch
        >>> probs = torch.tensor([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.2, 0.8]])
        >>> round(classwise_calibration_error(probs, torch.tensor([0, 1, 1, 1]), n_bins=2), 4)
        0.25

    References:
        Kull et al., "Beyond temperature scaling: obtaining well-calibrated multiclass
        probabilities with Dirichlet calibration", NeurIPS 2019.
    """
    _check_norm(norm)
    probs, labels = _check_binned(probs, labels, n_bins, convention)
    n, n_classes = probs.shape
    index, _, slots = _bin_index(probs, n_bins, convention)
    flat = (index + slots * torch.arange(n_classes, device=probs.device)).reshape(-1)
    hit = torch.nn.functional.one_hot(labels, n_classes).reshape(-1)
    count, acc, conf = _pool(flat, probs.reshape(-1), hit, slots * n_classes)
    gap = (acc - conf).abs().reshape(n_classes, slots)
    per_class = _binned_error(gap, (count / n).reshape(n_classes, slots), norm)
    return float(per_class.mean())


def _check_logits_labels(logits: Any, labels: Any) -> tuple[Tensor, Tensor]:
    logits = check_float_tensor(logits, "logits", dims=2)
    if logits.shape[0] == 0 or logits.shape[1] < 2:
        raise ValueError(
            f"`logits` must have shape (n_samples, n_classes) with n_samples >= 1 and "
            f"n_classes >= 2, got {tuple(logits.shape)}"
        )
    if (
        not isinstance(labels, Tensor)
        or labels.shape != logits.shape[:1]
        or (labels.dtype == torch.bool or torch.is_floating_point(labels))
    ):
        got = (
            f"{labels.dtype} {tuple(labels.shape)}"
            if isinstance(labels, Tensor)
            else type(labels).__name__
        )
        raise ValueError(
            f"`labels` must be an integer tensor of shape ({logits.shape[0]},), got {got}"
        )
    return logits, _labels_in_range(labels, logits.shape[1], logits.device)


@torch.no_grad()
def negative_log_likelihood(logits: Tensor, labels: Tensor) -> float:
    r"""Mean negative log-likelihood :math:`-\frac1n\sum_i \log\mathrm{softmax}(z_i)_{y_i}`
    (nats), computed in float64.

    Example:
        >>> import torch
        >>> round(negative_log_likelihood(torch.zeros(3, 4), torch.tensor([0, 1, 2])), 4)
        1.3863
    """
    logits, labels = _check_logits_labels(logits, labels)
    return float(torch.nn.functional.cross_entropy(logits.to(torch.float64), labels))


@torch.no_grad()
def accuracy(logits: Tensor, labels: Tensor) -> float:
    """Top-1 accuracy of logits (or probabilities) against integer labels.

    Example:
        >>> import torch
        >>> accuracy(torch.tensor([[2.0, 1.0], [0.0, 3.0]]), torch.tensor([0, 0]))
        0.5
    """
    logits, labels = _check_logits_labels(logits, labels)
    return float(logits.argmax(-1).eq(labels).to(torch.float64).mean())


def reliability_diagram(
    probs: Tensor,
    labels: Tensor,
    *,
    n_bins: int = 15,
    convention: str = "torchmetrics",
    title: str | None = None,
    ax: Axes | None = None,
) -> Figure:
    """Reliability diagram: accuracy per confidence bin against the diagonal, with the ECE.

    Bars show each equal-width bin's accuracy, hatched bars the gap to its mean confidence,
    and a lower panel the share of samples per bin. With the ``"torchmetrics"`` convention the
    samples at confidence exactly 1.0 are drawn in the last bar (their own bin in the ECE).
    matplotlib is imported here, and no global backend or pyplot state is touched.

    Args:
        probs, labels, n_bins, convention: as in :func:`expected_calibration_error`.
        title: figure title (default: none).
        ax: draw into this axes (no count panel) instead of a new figure.

    Returns:
        The matplotlib ``Figure`` (save it with ``fig.savefig(path)``).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    bins = calibration_bins(probs, labels, n_bins=n_bins, convention=convention)
    count, acc, conf = bins.count, bins.accuracy, bins.confidence
    if count.shape[0] > n_bins:  # fold the confidence-1.0 slot into the last bar for display
        c_last, c_one = count[-2], count[-1]
        total = (c_last + c_one).clamp_min(1)
        acc = torch.cat([acc[:-2], ((acc[-2] * c_last + acc[-1] * c_one) / total)[None]])
        conf = torch.cat([conf[:-2], ((conf[-2] * c_last + conf[-1] * c_one) / total)[None]])
        count = torch.cat([count[:-2], (c_last + c_one)[None]])
    ece = bins.error("l1")
    width = 1.0 / n_bins
    centres = (torch.arange(n_bins, dtype=torch.float64) + 0.5) * width
    filled = count > 0
    if ax is None:
        fig = Figure(figsize=(4.2, 5.0), layout="constrained")
        FigureCanvasAgg(fig)
        ax, ax_count = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    else:
        fig, ax_count = ax.figure, None
    x = centres[filled].tolist()
    ax.bar(
        x,
        acc[filled].tolist(),
        width=width,
        edgecolor="black",
        linewidth=0.5,
        color="tab:blue",
        label="accuracy",
    )
    gap_low = torch.minimum(acc, conf)[filled]
    ax.bar(
        x,
        (acc - conf).abs()[filled].tolist(),
        bottom=gap_low.tolist(),
        width=width,
        color="tab:red",
        alpha=0.3,
        hatch="//",
        edgecolor="tab:red",
        linewidth=0.5,
        label="gap to confidence",
    )
    ax.plot([0, 1], [0, 1], linestyle="--", color="gray", linewidth=1)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    ax.legend(loc="upper left", fontsize="small")
    ax.text(
        0.03,
        0.8,
        f"ECE {100 * ece:.2f}%\n{n_bins} bins, n={bins.n}",
        ha="left",
        va="top",
        transform=ax.transAxes,
        fontsize="small",
    )
    if title:
        ax.set_title(title)
    if ax_count is not None:
        ax_count.bar(
            centres.tolist(),
            (count / max(bins.n, 1)).tolist(),
            width=width,
            color="gray",
            edgecolor="black",
            linewidth=0.5,
        )
        ax_count.set_xlabel("confidence")
        ax_count.set_ylabel("share")
    else:
        ax.set_xlabel("confidence")
    return fig

r"""Hinton knowledge distillation with any registered divergence, cross-entropy, and LS-KD.

Hinton et al. (2015) train the student on a mix of the hard-label cross-entropy and a
divergence between the teacher's and the student's softened predictions:

.. math::

    \mathcal L = w_\mathrm{ce}\,\mathrm{CE}(s, y)
        + w_\mathrm{kd}\,T^2\,D\big(\mathrm{softmax}(t/T)\,\big\|\,\mathrm{softmax}(s/T)\big),

with :math:`D` the KL divergence in the paper and any registered divergence here (the
teacher is P, the first argument; ``divergence="reverse_kl"`` gives KL(student‖teacher)).
The :math:`T^2` factor keeps the soft-target gradients on the scale of the hard-label ones as
T changes; it is an explicit flag (``scale_by_temperature_squared``).

Logit standardisation (Sun et al., CVPR 2024) z-scores both sides' logits before KD
(:func:`standardize_logits`, :func:`lskd_loss`).

Every loss here takes ``(student_logits, teacher_logits, labels=None)`` with the class axis
last and any leading shape, and the shared ``mask`` / ``reduction`` / ``normalizer`` options;
rows whose label is ``ignore_index`` are dropped like masked rows. The divergence is
evaluated by :func:`divergent.functional.divergence` (the chunked engine).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

from torch import Tensor

from divergent._validation import (
    check_bool,
    check_ignore_index,
    check_positive_scalar,
    split_keywords,
)
from divergent.categorical import DivergenceLike, resolve_divergence
from divergent.functional import divergence as _divergence
from divergent.objectives._common import (
    LossInputs,
    Objective,
    RowArgs,
    Rows,
    check_weights,
    cross_entropy_rows,
    kd_scale,
    loss_keywords,
    prepare_student,
)

if TYPE_CHECKING:  # pragma: no cover
    from typing_extensions import Unpack

    from divergent.objectives._common import LossKeywords

__all__ = [
    "CrossEntropyLoss",
    "KDLoss",
    "LSKDLoss",
    "cross_entropy_loss",
    "kd_loss",
    "lskd_loss",
    "standardize_logits",
]

DivergenceArg = DivergenceLike | Callable[[Tensor], Tensor]


class _KDOptions(NamedTuple):
    """Checked KD options; ``kd_scale = kd_weight·T²`` (``kd_weight`` without the T² flag)."""

    divergence: DivergenceArg
    temperature: float
    kd_scale: float
    ce_weight: float
    kd_weight: float


@loss_keywords
def cross_entropy_loss(
    student_logits: Tensor,
    teacher_logits: Tensor | None = None,
    labels: Tensor | None = None,
    **row_options: Unpack[LossKeywords],
) -> Tensor:
    r"""Hard-label cross-entropy :math:`-\log\mathrm{softmax}(s)_y` (the no-teacher baseline).

    ``teacher_logits`` is accepted and ignored, so CE shares the objectives' call shape.

    Args:
        student_logits: shape ``(..., C)``.
        teacher_logits: ignored (may be None).
        labels: int64 class indices of the leading shape; ``ignore_index`` rows are dropped.
        ignore_index, mask, reduction, normalizer: the shared row options.

    Returns:
        A scalar (``"mean"``, ``"sum"``) or one value per row (``"none"``), float32 (float64
        for float64 inputs).

    Example:
        >>> import torch
        >>> s = torch.tensor([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
        >>> cross_entropy_loss(s, None, torch.tensor([0, 1]))
        tensor(0.3606)
    """
    row_args = RowArgs.of(row_options)._asdict()
    r = prepare_student(
        student_logits, labels, **row_args, need_labels=True, objective="cross-entropy"
    )
    assert r.labels is not None
    return r.finish(cross_entropy_rows(r.student, r.labels, r.dtype))


def _kd_rows(
    r: Rows,
    div_teacher: Tensor,
    div_student: Tensor,
    options: _KDOptions,
    divergence_params: dict[str, Any],
) -> Tensor:
    """Per-row ``kd_weight·(T²)·D(div_teacher‖div_student)`` (the CE term is added by
    :meth:`~divergent.objectives._common.Rows.finish`)."""
    if options.kd_weight == 0:
        return r.student.new_zeros(r.student.shape[0], dtype=r.dtype)
    return options.kd_scale * _divergence(
        options.divergence,
        div_teacher,
        div_student,
        temperature=options.temperature,
        reduction="none",
        **divergence_params,
    )


def _check_kd_options(
    divergence: Any,
    temperature: Any,
    ce_weight: Any,
    kd_weight: Any,
    scale_by_temperature_squared: Any,
) -> _KDOptions:
    """The checked options; the caller checks the divergence and its parameters
    (:func:`_split_kd_keywords`)."""
    temperature = check_positive_scalar(temperature, "temperature")
    check_bool(scale_by_temperature_squared, "scale_by_temperature_squared")
    ce_weight, kd_weight = check_weights(ce_weight=ce_weight, kd_weight=kd_weight)
    scale = kd_scale(kd_weight, temperature, scale_by_temperature_squared)
    return _KDOptions(divergence, temperature, scale, ce_weight, kd_weight)


def _check_kd_module(
    *,
    divergence: Any,
    temperature: Any,
    scale_by_temperature_squared: Any,
    ce_weight: Any,
    kd_weight: Any,
    teacher_temperature: Any = None,
    eps: Any = 0.0,
    ignore_index: Any = None,
    **divergence_params: Any,
) -> None:
    """The option check of :class:`KDLoss` and :class:`LSKDLoss` at construction."""
    check_positive_scalar(teacher_temperature, "teacher_temperature", allow_none=True)
    check_ignore_index(ignore_index)
    resolve_divergence(divergence).bind(divergence_params)
    _check_kd_options(divergence, temperature, ce_weight, kd_weight, scale_by_temperature_squared)
    check_positive_scalar(eps, "eps", allow_zero=True)


def _split_kd_keywords(
    divergence: Any, keywords: dict[str, Any], function: Callable[..., Tensor]
) -> tuple[RowArgs, dict[str, Any]]:
    """The row options and the divergence parameters among the ``**keywords`` of a KD loss
    (``function``); unknown or bad divergence parameters fail here, naming the loss and
    suggesting the closest of its keywords for a misspelt one."""
    row_args, divergence_params = split_keywords(keywords, RowArgs._fields)
    shown = _keywords_of(function)
    resolve_divergence(divergence).bind(divergence_params, caller=function.__name__, keywords=shown)
    return RowArgs(**row_args), divergence_params


@functools.cache
def _keywords_of(function: Callable[..., Tensor]) -> tuple[str, ...]:
    """The keywords ``function``'s (spelt-out) signature shows, read once per function rather
    than on every call (they only serve a misspelt keyword's message)."""
    return tuple(inspect.signature(function).parameters)


def _kd(
    inputs: LossInputs,
    row_args: RowArgs,
    options: _KDOptions,
    divergence_params: dict[str, Any],
    sides: Callable[[Rows], tuple[Tensor, Tensor]],
    objective: str,
    min_classes: int = 1,
) -> Tensor:
    """The KD head of :func:`kd_loss` and :func:`lskd_loss`: select the rows, then
    ``kd_weight·(T²)·D(teacher‖student)`` of the logits ``sides(rows)`` gives (each loss's
    transform), plus the CE term on the raw student logits, reduced."""
    ce_weight = options.ce_weight
    r = Rows.select(*inputs, row_args, objective, ce_weight=ce_weight, min_classes=min_classes)
    return r.finish(_kd_rows(r, *sides(r), options, divergence_params))


@loss_keywords
def kd_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    labels: Tensor | None = None,
    *,
    divergence: DivergenceArg = "kl",
    temperature: float = 4.0,
    scale_by_temperature_squared: bool = True,
    ce_weight: float = 0.1,
    kd_weight: float = 0.9,
    teacher_temperature: float | None = None,
    **divergence_params: Any,
) -> Tensor:
    r"""Hinton KD with any divergence: :math:`w_\mathrm{ce}\mathrm{CE}(s,y) +
    w_\mathrm{kd}\,T^2\,D(\mathrm{softmax}(t/T)\|\mathrm{softmax}(s/T))`.

    The divergence has the teacher as P (first argument) and the student as Q, per row (sum
    over classes), then reduced over rows (``"mean"`` is PyTorch's ``"batchmean"``).

    Args:
        student_logits: student logits Q, shape ``(..., C)``; differentiable.
        teacher_logits: teacher logits P, same shape (detach them yourself for a frozen
            teacher; gradients flow to both sides otherwise, as online KD needs).
        labels: int64 class indices of the leading shape; needed when ``ce_weight > 0``.
        divergence: a registered name (``"kl"``, ``"reverse_kl"``, ``"js"``, ``"tv"``,
            ``"alpha"`` ..., see ``divergent list``), a
            :class:`~divergent.categorical.Divergence`, or a generator callable f(t).
        temperature: T > 0 dividing both sides' logits in the divergence (not in the CE term).
        scale_by_temperature_squared: multiply the divergence by T² (Hinton's gradient-scale
            correction; True in every official KD code base).
        ce_weight: weight of the hard-label cross-entropy (≥ 0; 0 drops the term and the need
            for labels).
        kd_weight: weight of the divergence term (≥ 0).
        teacher_temperature: *logit smoothing* of the teacher alone: the target becomes
            softmax(t/τ_t) while the student stays at ``temperature`` (None: τ_t = T, plain
            KD). τ_t > T smooths the teacher's distribution, τ_t < T sharpens it; the T²
            factor still uses ``temperature``.
        ignore_index: label value whose rows are dropped (None: no such value).
        mask, reduction, normalizer: the shared row options (see
            :func:`divergent.functional.divergence`).
        **divergence_params: the divergence's parameters (``beta`` for ``js``, ``alpha`` for
            ``alpha`` ...), checked against its registry entry.

    Returns:
        The loss: a scalar (``"mean"``, ``"sum"``) or one value per row (``"none"``, dropped
        rows 0), float32 (float64 for float64 inputs).

    Raises:
        ValueError: a class-count mismatch between teacher and student, labels out of range
            or missing when ``ce_weight > 0``, or an invalid option.

    Example:
        >>> import torch
        >>> s = torch.tensor([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
        >>> t = torch.tensor([[3.0, 1.0, -2.0], [0.0, 2.0, 1.0]])
        >>> kd_loss(s, t, torch.tensor([0, 1]))                # T=4, 0.1·CE + 0.9·T²·KL
        tensor(0.2099)
        >>> kd_loss(s, t, divergence="js", temperature=1.0, ce_weight=0.0, kd_weight=1.0,
        ...         beta=0.5)
        tensor(0.0113)

    References:
        Hinton, Vinyals & Dean 2015, "Distilling the knowledge in a neural network"
        (arXiv:1503.02531). Defaults T=4, w_ce=0.1, w_kd=0.9 from the CIFAR-100 recipes of
        RepDistiller and mdistiller (``mdistiller/distillers/KD.py``; ImageNet uses T=1,
        0.5/0.5). Logit smoothing as a separate knob: Ramesh, Sengupta & Chakraborty, "On the
        generalization vs fidelity paradox in knowledge distillation", Findings of ACL 2025.
    """
    row_args, divergence_params = _split_kd_keywords(divergence, divergence_params, kd_loss)
    options = _check_kd_options(
        divergence, temperature, ce_weight, kd_weight, scale_by_temperature_squared
    )

    def sides(r: Rows) -> tuple[Tensor, Tensor]:
        assert r.teacher is not None
        if teacher_temperature is None:
            return r.teacher, r.student
        # softmax((t·T/τ_t)/T) = softmax(t/τ_t)
        tau = check_positive_scalar(teacher_temperature, "teacher_temperature")
        return r.teacher.to(r.dtype) * (options.temperature / tau), r.student

    inputs = LossInputs(student_logits, teacher_logits, labels)
    return _kd(inputs, row_args, options, divergence_params, sides, "kd")


def standardize_logits(logits: Tensor, eps: float = 1e-7) -> Tensor:
    r"""Z-score each row of logits: :math:`\mathcal Z(z) = (z - \bar z)/(\sigma(z) + \epsilon)`.

    :math:`\sigma` is the unbiased standard deviation over the class axis (PyTorch's default,
    as the official code). Needs at least 2 classes.

    Example:
        >>> import torch
        >>> standardize_logits(torch.tensor([[1.0, 2.0, 3.0]]))
        tensor([[-1.0000,  0.0000,  1.0000]])
    """
    eps = check_positive_scalar(eps, "eps", allow_zero=True)
    if logits.numel() == 0:  # no rows (a fully masked batch): nothing to standardise
        return logits
    mean = logits.mean(dim=-1, keepdim=True)
    return (logits - mean) / (logits.std(dim=-1, keepdim=True) + eps)


@loss_keywords
def lskd_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    labels: Tensor | None = None,
    *,
    divergence: DivergenceArg = "kl",
    temperature: float = 2.0,
    scale_by_temperature_squared: bool = True,
    ce_weight: float = 0.1,
    kd_weight: float = 9.0,
    eps: float = 1e-7,
    **divergence_params: Any,
) -> Tensor:
    r"""KD on standardised logits (LS-KD): :func:`kd_loss` with
    :math:`D(\mathrm{softmax}(\mathcal Z(t)/T)\|\mathrm{softmax}(\mathcal Z(s)/T))`.

    .. math::

        \mathcal L = w_\mathrm{ce}\mathrm{CE}(s, y) + w_\mathrm{kd}\,T^2\,
            \mathrm{KL}\big(\mathrm{softmax}(\mathcal Z(t)/T)\,\|\,
            \mathrm{softmax}(\mathcal Z(s)/T)\big),\qquad
        \mathcal Z(z) = \frac{z - \bar z}{\sigma(z) + \epsilon}.

    The CE term uses the raw student logits. Standardisation removes each side's logit shift
    and scale, so the student matches the teacher's logit *relations* rather than its
    magnitude (equivalently, a per-sample temperature equal to the logits' std).

    Args:
        student_logits, teacher_logits, labels: as in :func:`kd_loss` (C ≥ 2).
        divergence, temperature, scale_by_temperature_squared, ce_weight, kd_weight: as in
            :func:`kd_loss`; defaults T=2, w_ce=0.1, w_kd=9 from the official code
            (``mdistiller/engine/cfg.py`` of the logit-standardization-KD repository).
        eps: added to the std (1e-7 as the official code).
        ignore_index, mask, reduction, normalizer, **divergence_params: as in :func:`kd_loss`.

    Example:
        >>> import torch
        >>> s = torch.tensor([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
        >>> t = torch.tensor([[3.0, 1.0, -2.0], [0.0, 2.0, 1.0]])
        >>> lskd_loss(s, t, torch.tensor([0, 1]))
        tensor(0.4844)

    References:
        Sun, Ren, Li, Wang & Cao, "Logit standardization in knowledge distillation", CVPR 2024
        (code: github.com/sunshangquan/logit-standardization-KD).
    """
    row_args, divergence_params = _split_kd_keywords(divergence, divergence_params, lskd_loss)
    options = _check_kd_options(
        divergence, temperature, ce_weight, kd_weight, scale_by_temperature_squared
    )

    def sides(r: Rows) -> tuple[Tensor, Tensor]:
        student, teacher = r.logits()
        return standardize_logits(teacher, eps), standardize_logits(student, eps)

    inputs = LossInputs(student_logits, teacher_logits, labels)
    return _kd(inputs, row_args, options, divergence_params, sides, "lskd", min_classes=2)


class CrossEntropyLoss(Objective):
    """Module form of :func:`cross_entropy_loss` (registry id ``ce``)."""

    function = staticmethod(cross_entropy_loss)
    needs_teacher = False

    @property
    def needs_labels(self) -> bool:
        return True


class KDLoss(Objective):
    """Module form of :func:`kd_loss` (registry ids ``kd`` and ``kd:<divergence>``).

    Example:
        >>> import torch
        >>> loss = KDLoss(divergence="reverse_kl", temperature=2.0, ce_weight=0.0)
        >>> s, t = torch.zeros(4, 5, requires_grad=True), torch.randn(4, 5)
        >>> loss(s, t).backward(); s.grad.shape
        torch.Size([4, 5])
    """

    function = staticmethod(kd_loss)
    check_options = staticmethod(_check_kd_module)


class LSKDLoss(Objective):
    """Module form of :func:`lskd_loss` (registry id ``lskd``)."""

    function = staticmethod(lskd_loss)
    check_options = staticmethod(_check_kd_module)

r"""Online distillation: mutual KD (two students teaching each other) and BD-KD.

**Mutual KD** (deep mutual learning, Zhang, Xiang, Hospedales & Lu, CVPR 2018): two
networks train together, each on its labels and on a divergence to the other's (detached)
prediction,

.. math::

    \mathcal L_a = w_\mathrm{ce}\mathrm{CE}(a, y) + w_\mathrm{kd}T^2 D(p^b\|p^a),\qquad
    \mathcal L_b = w_\mathrm{ce}\mathrm{CE}(b, y) + w_\mathrm{kd}T^2 D(p^a\|p^b).

**BD-KD** (Amara, Sepahvand, Meyer, Gross & Clark, arXiv:2212.12965) is online KD between a
large "teacher" and a small student in which the *student's* distillation term mixes forward
and reverse KL per sample, guided by the entropy gap of the two predictions, and the
teacher's term is a reverse-KL regulariser. The rule implemented here (the paper's exact
weighting and defaults could not be verified; see :func:`bdkd_loss`):

.. math::

    w_i = \mathbb 1\big[H(p^s_i) > H(p^t_i)\big]\ \ (\text{or } \sigma((H(p^s_i) -
        H(p^t_i))/\kappa) \text{ with ``sharpness`` } \kappa),

.. math::

    \mathcal L_s = w_\mathrm{ce}\mathrm{CE}(s, y) + w_\mathrm{kd}T^2\sum_i\big[(1 - w_i)
        \mathrm{KL}(p^t_i\|p^s_i) + w_i\,\mathrm{KL}(p^s_i\|p^t_i)\big],

.. math::

    \mathcal L_t = w_\mathrm{ce}\mathrm{CE}(t, y) + w_\mathrm{kd}T^2\,\mathrm{KL}(p^t\|\,
        \mathrm{sg}(p^s)),

i.e. a student less confident than the teacher on a sample (higher entropy) is pulled by the
mode-seeking reverse KL, which sharpens it, and an over-confident one by the mass-covering
forward KL, which softens it; the weights carry no gradient. All KL terms are evaluated by
:func:`divergent.functional.divergence`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

import torch
from torch import Tensor

from divergent._validation import check_positive_scalar
from divergent.functional import divergence as _divergence
from divergent.objectives._common import (
    LossInputs,
    Objective,
    RowArgs,
    Rows,
    check_weight,
    check_weights,
    kd_scale,
    loss_keywords,
)
from divergent.objectives.kd import DivergenceArg, kd_loss

if TYPE_CHECKING:  # pragma: no cover
    from typing_extensions import Unpack

    from divergent.objectives._common import LossKeywords

__all__ = [
    "BDKDLoss",
    "OnlineLosses",
    "bdkd_loss",
    "bdkd_online_losses",
    "bdkd_reverse_weights",
    "mutual_kd_losses",
]


class OnlineLosses(NamedTuple):
    """The two losses of an online-distillation step (each with its own gradients)."""

    student: Tensor
    teacher: Tensor


@loss_keywords
def mutual_kd_losses(
    logits_a: Tensor,
    logits_b: Tensor,
    labels: Tensor | None = None,
    *,
    divergence: DivergenceArg = "kl",
    temperature: float = 1.0,
    scale_by_temperature_squared: bool = True,
    ce_weight: float = 1.0,
    kd_weight: float = 1.0,
    **divergence_params: Any,
) -> OnlineLosses:
    r"""Deep mutual learning: each network's KD loss towards the other's detached prediction.

    Returns ``OnlineLosses(student=L_a, teacher=L_b)`` (module docstring); ``L_a`` has
    gradients only in ``logits_a`` and ``L_b`` only in ``logits_b``, so
    ``(L_a + L_b).backward()`` trains both. Options as in :func:`divergent.objectives.kd_loss`
    (defaults of DML: T = 1, CE and KL weights 1).

    Example:
        >>> import torch
        >>> a = torch.zeros(2, 3, requires_grad=True)
        >>> b = torch.tensor([[2.0, 0.0, 0.0], [0.0, 2.0, 0.0]], requires_grad=True)
        >>> la, lb = mutual_kd_losses(a, b, torch.tensor([0, 1]))
        >>> torch.autograd.grad(la, b, allow_unused=True)[0] is None
        True

    References:
        Zhang, Xiang, Hospedales & Lu, "Deep mutual learning", CVPR 2018.
    """
    options: dict[str, Any] = dict(
        divergence=divergence,
        temperature=temperature,
        scale_by_temperature_squared=scale_by_temperature_squared,
        ce_weight=ce_weight,
        kd_weight=kd_weight,
        **divergence_params,  # and the row keywords
    )
    loss_a = kd_loss(logits_a, logits_b.detach(), labels, **options)
    loss_b = kd_loss(logits_b, logits_a.detach(), labels, **options)
    return OnlineLosses(student=loss_a, teacher=loss_b)


def _entropy(logits: Tensor) -> Tensor:
    log_p = torch.log_softmax(logits, dim=-1)
    # 0·log 0 = 0 for −∞ logits
    return -(log_p.exp() * log_p.masked_fill(log_p == -torch.inf, 0.0)).sum(-1)


@torch.no_grad()
def bdkd_reverse_weights(
    student_logits: Tensor,
    teacher_logits: Tensor,
    *,
    temperature: float = 1.0,
    sharpness: float | None = None,
) -> Tensor:
    r"""Per-row weight :math:`w_i` of the reverse KL in BD-KD's student loss (no gradient).

    :math:`w_i = 1[H(p^s_i) > H(p^t_i)]`, or :math:`\sigma((H(p^s_i) - H(p^t_i))/\kappa)`
    with ``sharpness`` κ > 0, entropies at temperature T (in nats).

    Example:
        >>> import torch
        >>> s = torch.tensor([[0.0, 0.0], [5.0, 0.0]]); t = torch.tensor([[3.0, 0.0]] * 2)
        >>> bdkd_reverse_weights(s, t)  # flat student -> reverse KL; peaked -> forward
        tensor([1., 0.])
    """
    gap = _entropy(student_logits / temperature) - _entropy(teacher_logits / temperature)
    if sharpness is None:
        return (gap > 0).to(gap.dtype)
    return torch.sigmoid(gap / sharpness)


class _BDKDOptions(NamedTuple):
    temperature: float
    ce_weight: float
    kd_weight: float
    sharpness: float | None
    scale_by_temperature_squared: bool


def _check_bdkd(
    temperature: Any,
    ce_weight: Any,
    kd_weight: Any,
    sharpness: Any,
    scale_by_temperature_squared: Any,
    **_other: Any,
) -> _BDKDOptions:
    """The checked BD-KD options (``ignore_index`` is a row option, checked with the rows)."""
    return _BDKDOptions(
        check_positive_scalar(temperature, "temperature"),  # type: ignore[arg-type]
        *check_weights(ce_weight=ce_weight, kd_weight=kd_weight),
        check_positive_scalar(sharpness, "sharpness", allow_none=True),
        scale_by_temperature_squared,
    )


def _bdkd(
    student_logits: Tensor,
    teacher_logits: Tensor,
    labels: Tensor | None,
    row_args: RowArgs,
    opts: _BDKDOptions,
) -> tuple[Tensor, Tensor | None]:
    """:func:`bdkd_loss` and the reverse-KL weights of the kept rows (None without KD term)."""
    r = Rows.select(
        student_logits, teacher_logits, labels, row_args, "bdkd", ce_weight=opts.ce_weight
    )
    s, t = r.logits()
    rows = s.new_zeros(s.shape[0])
    w = None
    if opts.kd_weight > 0:
        temperature = opts.temperature
        w = bdkd_reverse_weights(s, t, temperature=temperature, sharpness=opts.sharpness)
        forward = _divergence("kl", t, s, temperature=temperature, reduction="none")
        reverse = _divergence("reverse_kl", t, s, temperature=temperature, reduction="none")
        scale = kd_scale(opts.kd_weight, temperature, opts.scale_by_temperature_squared)
        rows = scale * ((1 - w) * forward + w * reverse)
    return r.finish(rows), w


@loss_keywords
def bdkd_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    labels: Tensor | None = None,
    *,
    temperature: float = 4.0,
    ce_weight: float = 1.0,
    kd_weight: float = 1.0,
    sharpness: float | None = None,
    scale_by_temperature_squared: bool = True,
    **row_options: Unpack[LossKeywords],
) -> Tensor:
    r"""BD-KD student loss: CE plus a per-sample mix of forward and reverse KL
    (module docstring).

    Args:
        student_logits: shape ``(..., C)``.
        teacher_logits: same shape. Detach them for a frozen teacher; in online training
            gradients reach the teacher through both KL terms unless detached (use
            :func:`bdkd_online_losses` for the two losses of an online step).
        labels: int64 of the leading shape; needed when ``ce_weight > 0``.
        temperature: T of both softmaxes and of the entropies. **[unverified]** default 4.
        ce_weight, kd_weight: weights of CE and of the balanced KL term (1 and 1,
            **[unverified]**).
        sharpness: None for the hard switch :math:`1[H_s > H_t]`, or κ > 0 for the soft
            weight :math:`\sigma((H_s - H_t)/κ)`.
        scale_by_temperature_squared: multiply the KL terms by T².
        ignore_index, mask, reduction, normalizer: the shared row options.

    Example:
        >>> import torch
        >>> s = torch.tensor([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
        >>> t = torch.tensor([[3.0, 1.0, -2.0], [0.0, 2.0, 1.0]])
        >>> bdkd_loss(s, t, torch.tensor([0, 1]))
        tensor(0.5714)

    References:
        Amara, Sepahvand, Meyer, Gross & Clark, "BD-KD: balancing the divergences for online
        knowledge distillation", arXiv:2212.12965 (v2, 2024). The weighting rule and defaults
        here are reconstructed from the abstract and a secondary summary ("sample-wise
        weighting of forward and reverse KL guided by the entropy gap"; reverse KL as the
        teacher's regulariser); no official code was found.
    """
    opts = _check_bdkd(temperature, ce_weight, kd_weight, sharpness, scale_by_temperature_squared)
    return _bdkd(student_logits, teacher_logits, labels, RowArgs.of(row_options), opts)[0]


def _bdkd_online(
    student_logits: Tensor,
    teacher_logits: Tensor,
    labels: Tensor | None,
    row_args: RowArgs,
    opts: _BDKDOptions,
    teacher_kd_weight: float | None,
) -> tuple[OnlineLosses, Tensor | None]:
    """:func:`bdkd_online_losses` and the student's reverse-KL weights of the kept rows."""
    teacher_kd_weight = opts.kd_weight if teacher_kd_weight is None else teacher_kd_weight
    student, weights = _bdkd(student_logits, teacher_logits.detach(), labels, row_args, opts)
    # the teacher is the model here: reverse KL for it is KL(p^t ‖ sg(p^s)), i.e. the
    # registry's reverse_kl with the student as the (detached) target
    teacher = kd_loss(
        teacher_logits,
        student_logits.detach(),
        labels,
        divergence="reverse_kl",
        temperature=opts.temperature,
        scale_by_temperature_squared=opts.scale_by_temperature_squared,
        ce_weight=opts.ce_weight,
        kd_weight=check_weight(teacher_kd_weight, "teacher_kd_weight"),
        **row_args._asdict(),
    )
    return OnlineLosses(student=student, teacher=teacher), weights


@loss_keywords
def bdkd_online_losses(
    student_logits: Tensor,
    teacher_logits: Tensor,
    labels: Tensor | None = None,
    *,
    temperature: float = 4.0,
    ce_weight: float = 1.0,
    kd_weight: float = 1.0,
    teacher_kd_weight: float | None = None,
    sharpness: float | None = None,
    scale_by_temperature_squared: bool = True,
    **row_options: Unpack[LossKeywords],
) -> OnlineLosses:
    r"""Both losses of an online BD-KD step: the student's balanced loss (towards the
    detached teacher) and the teacher's CE + reverse-KL regulariser
    :math:`\mathrm{KL}(p^t\|\mathrm{sg}(p^s))` (module docstring).

    ``teacher_kd_weight`` defaults to ``kd_weight``. ``(student + teacher).backward()`` trains
    both networks; neither loss sends gradient into the other network.

    Example:
        >>> import torch
        >>> s = torch.zeros(2, 3, requires_grad=True)
        >>> t = torch.tensor([[2.0, 0.0, 0.0], [0.0, 2.0, 0.0]], requires_grad=True)
        >>> losses = bdkd_online_losses(s, t, torch.tensor([0, 1]))
        >>> torch.autograd.grad(losses.teacher, s, allow_unused=True)[0] is None
        True
    """
    opts = _check_bdkd(temperature, ce_weight, kd_weight, sharpness, scale_by_temperature_squared)
    inputs = LossInputs(student_logits, teacher_logits, labels)
    return _bdkd_online(*inputs, RowArgs.of(row_options), opts, teacher_kd_weight)[0]


class BDKDLoss(Objective):
    r"""Module form of :func:`bdkd_loss` (registry id ``bdkd``).

    Called as ``loss(student_logits, teacher_logits, labels)`` it returns the student's loss
    (for a frozen teacher, the teacher's logits are used as given); :meth:`online` returns
    both losses of an online step. The attribute ``last_reverse_share`` holds the share of
    kept rows that used the reverse KL in the last call (a diagnostic of the balance).
    """

    function = staticmethod(bdkd_loss)
    check_options = staticmethod(_check_bdkd)
    _last_weights: Tensor | None = None

    @property
    def last_reverse_share(self) -> float | None:
        """Share of the kept rows that used the reverse KL in the last call (None before the
        first call or without a KD term); read on demand, so training does not sync for it."""
        w = self._last_weights
        return None if w is None or w.numel() == 0 else float(w.mean())

    def _loss(self, inputs: LossInputs, row_args: RowArgs) -> Tensor:
        opts = _check_bdkd(**self.options)
        loss, self._last_weights = _bdkd(*inputs, row_args, opts)  # type: ignore[arg-type]
        return loss

    def online(
        self,
        student_logits: Tensor,
        teacher_logits: Tensor,
        labels: Tensor | None = None,
        *,
        teacher_kd_weight: float | None = None,
        mask: Tensor | None = None,
        reduction: str | None = None,
        normalizer: float | Tensor | None = None,
    ) -> OnlineLosses:
        """Both losses of an online step (see :func:`bdkd_online_losses`)."""
        row_args = self._row_args(mask, reduction, normalizer)
        losses, self._last_weights = _bdkd_online(
            student_logits,
            teacher_logits,
            labels,
            row_args,
            _check_bdkd(**self.options),
            teacher_kd_weight,
        )
        return losses

"""Shared validation and reduction for the distillation objectives (private).

Every objective takes ``(student_logits, teacher_logits, labels=None, ...)`` with the class
axis last and any leading shape, plus the shared row options ``mask`` (bool, leading shape,
True = keep), ``reduction`` (``"none" | "sum" | "mean"``) and ``normalizer``. Rows whose label
equals ``ignore_index`` are dropped like masked rows. The helpers here validate those once
and reduce per-row values in one place (:meth:`Rows.finish`, on
:func:`divergent._validation.finish_rows`).
"""

from __future__ import annotations

import functools
import inspect
import numbers
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple, TypedDict, TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from divergent._validation import (
    check_ignore_index,
    check_mask,
    check_normalizer,
    check_pair,
    check_reduction,
    check_tensor,
    compute_dtype,
    finish_rows,
    spell_keywords,
    unexpected_keyword,
)

__all__ = [
    "LOSS_PARAMETERS",
    "LossInputs",
    "LossKeywords",
    "Objective",
    "RowArgs",
    "Rows",
    "add_cross_entropy",
    "check_ids",
    "check_weight",
    "check_weights",
    "cross_entropy_rows",
    "kd_scale",
    "loss_keywords",
    "prepare",
    "prepare_student",
]


_Loss = TypeVar("_Loss", bound=Callable[..., Tensor])


class LossInputs(NamedTuple):
    """The tensors of one objective call."""

    student_logits: Tensor
    teacher_logits: Tensor | None
    labels: Tensor | None


class RowArgs(NamedTuple):
    """The shared row options of an objective call, as given (validated by :func:`prepare`);
    the defaults are every objective's defaults."""

    mask: Any = None
    reduction: Any = "mean"
    normalizer: Any = None
    ignore_index: Any = -100

    @classmethod
    def of(cls, options: RowArgs | Mapping[str, Any]) -> RowArgs:
        """``options`` as :class:`RowArgs`: a mapping of :class:`LossKeywords` (the caller's
        ``**row_options``, defaults filled in; :func:`loss_keywords` has refused any other
        name, naming the loss) or RowArgs."""
        if isinstance(options, RowArgs):
            return options
        return cls(**options)


class LossKeywords(TypedDict, total=False):
    """The row options every objective takes as keywords, typed for ``**row_options:
    Unpack[LossKeywords]`` (defaults: :class:`RowArgs`; :data:`loss_keywords` shows them in the
    function's signature).

    Attributes:
        ignore_index: label value whose rows are dropped like masked rows (None: none).
        mask: bool of the leading shape, True = keep the row.
        reduction: ``"none"`` | ``"sum"`` | ``"mean"``.
        normalizer: the mean's denominator when given (a float or a 0-d tensor).
    """

    ignore_index: int | None
    mask: Tensor | None
    reduction: str
    normalizer: float | Tensor | None


#: the row keywords as the objectives' signatures show them (keyword-only, after each loss's
#: own options; defaults: :class:`RowArgs`)
LOSS_PARAMETERS: dict[str, inspect.Parameter] = {
    name: inspect.Parameter(
        name,
        inspect.Parameter.KEYWORD_ONLY,
        default=RowArgs._field_defaults[name],
        annotation=annotation,
    )
    for name, annotation in {
        "ignore_index": "int | None",
        "mask": "Tensor | None",
        "reduction": "str",
        "normalizer": "float | Tensor | None",
    }.items()
}

_spell_loss_keywords = spell_keywords(LOSS_PARAMETERS)


def loss_keywords(function: _Loss) -> _Loss:
    """Spell the shared row keywords (:class:`LossKeywords`) out in a loss's signature, after
    its own keyword-only options (:func:`divergent._validation.spell_keywords` with
    :data:`LOSS_PARAMETERS`).

    The loss takes them as ``**row_options: Unpack[LossKeywords]`` (dropped from the shown
    signature), or mixed into another ``**kwargs`` such as ``**divergence_params`` (kept after
    them; :func:`divergent._validation.split_keywords` takes them out). ``inspect.signature``,
    ``help`` and the :class:`Objective` constructors then show ``ignore_index, mask,
    reduction, normalizer`` with their defaults. (The divergence entry points' row keywords,
    with ``temperature``, ``inputs`` and ``engine``, are
    :class:`divergent._validation.RowKeywords`.)

    A loss with the typed bundle refuses another keyword as Python does for a spelt-out one,
    naming the loss, with a did-you-mean among all its keywords
    (:func:`divergent._validation.unexpected_keyword`).
    """
    spelled = _spell_loss_keywords(function)
    parameters = inspect.signature(spelled).parameters
    if any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
        return spelled  # ``**kwargs`` kept: the loss sorts its keywords itself
    names = tuple(parameters)

    @functools.wraps(spelled)
    def checked(*args: Any, **kwargs: Any) -> Any:
        for name in kwargs:
            if name not in parameters:
                raise unexpected_keyword(spelled.__name__, name, names)
        return spelled(*args, **kwargs)

    return checked  # type: ignore[return-value]


@dataclass(frozen=True)
class Rows:
    """Validated inputs flattened to ``(rows, classes)``, plus the row options.

    Attributes:
        student: student logits of the kept rows, ``(kept, C)`` (original dtype).
        teacher: teacher logits of the kept rows, or None when the objective has no teacher.
        labels: labels of the kept rows (int64), or None.
        keep: flattened bool mask over all rows (None = every row kept); it combines ``mask``
            and ``labels != ignore_index``.
        leading: leading shape of the inputs.
        reduction, normalizer: the validated reduction options.
        dtype: the compute dtype (float32, or float64 if an input is float64).
        ce_weight: weight of the hard-label cross-entropy that :meth:`finish` adds (0: none).
    """

    student: Tensor
    teacher: Tensor | None
    labels: Tensor | None
    keep: Tensor | None
    leading: torch.Size
    reduction: str
    normalizer: float | Tensor | None
    dtype: torch.dtype
    ce_weight: float = 0.0

    @property
    def n_classes(self) -> int:
        return self.student.shape[-1]

    @classmethod
    def select(
        cls,
        student_logits: Any,
        teacher_logits: Any,
        labels: Any,
        row_args: RowArgs | Mapping[str, Any],
        objective: str,
        need_labels: bool = False,
        *,
        ce_weight: float = 0.0,
        min_classes: int = 1,
    ) -> Rows:
        """The kept rows of an objective with a teacher: :func:`prepare` with the row options
        bundled in ``row_args`` (a :class:`RowArgs`, or the caller's ``**row_options``: see
        :meth:`RowArgs.of`); labels are needed when ``need_labels`` or ``ce_weight > 0``."""
        return prepare(
            student_logits,
            teacher_logits,
            labels,
            **RowArgs.of(row_args)._asdict(),
            need_labels=need_labels,
            ce_weight=ce_weight,
            min_classes=min_classes,
            objective=objective,
        )

    def finish(self, rows: Tensor) -> Tensor:
        """Add ``ce_weight·CE(student, y)`` to the per-row values of the kept rows (when
        :attr:`ce_weight` is > 0) and reduce them as :attr:`reduction` says."""
        rows = add_cross_entropy(rows, self, self.ce_weight)
        return finish_rows(
            rows,
            keep=self.keep,
            leading=self.leading,
            reduction=self.reduction,
            normalizer=self.normalizer,
        )

    def logits(self) -> tuple[Tensor, Tensor]:
        """The student's and the teacher's logits of the kept rows in the compute dtype."""
        assert self.teacher is not None, "the objective has no teacher"
        return self.student.to(self.dtype), self.teacher.to(self.dtype)


def check_weight(value: Any, name: str) -> float:
    """A loss weight: a finite real number ≥ 0."""
    if isinstance(value, Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"`{name}` must be a finite number >= 0, got {value!r}")
    value = float(value)
    if not (value >= 0 and value != float("inf")):
        raise ValueError(f"`{name}` must be a finite number >= 0, got {value!r}")
    return value


def check_weights(**weights: Any) -> tuple[float, ...]:
    """:func:`check_weight` for each keyword, the checked values in the order given.

    Example:
        >>> check_weights(ce_weight=1, kd_weight=0.5)
        (1.0, 0.5)
    """
    return tuple(check_weight(value, name) for name, value in weights.items())


def check_ids(value: Any, name: str, shape: torch.Size) -> Tensor:
    """``value`` if it is an integer tensor (ids: tokens, spans) of ``shape``; a ValueError
    naming ``name`` otherwise."""
    if (
        not isinstance(value, Tensor)
        or torch.is_floating_point(value)
        or value.dtype == torch.bool
        or value.shape != shape
    ):
        got = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
        raise ValueError(f"`{name}` must be an integer tensor of shape {tuple(shape)}, got {got}")
    return value


def _check_labels(
    labels: Any, leading: torch.Size, n_classes: int, ignore_index: int | None, device: torch.device
) -> tuple[Tensor, bool]:
    """Validated int64 labels and whether any of them is ``ignore_index``."""
    if not isinstance(labels, Tensor):
        raise ValueError(f"`labels` must be an integer torch.Tensor, got {type(labels).__name__}")
    if labels.dtype == torch.bool or torch.is_floating_point(labels) or torch.is_complex(labels):
        raise ValueError(
            f"`labels` must hold integer class indices (int64), got dtype {labels.dtype}"
        )
    if labels.shape != leading:
        raise ValueError(
            f"`labels` must have the leading shape {tuple(leading)} of the logits (all but the "
            f"class axis), got {tuple(labels.shape)}"
        )
    labels = labels.to(device=device, dtype=torch.long)
    if labels.numel() == 0:
        return labels, False
    # fast path: one reduction and one sync when every label is a class index
    low, high = torch.stack(torch.aminmax(labels)).tolist()
    ignore_in_range = ignore_index is not None and 0 <= ignore_index < n_classes
    if low >= 0 and high < n_classes:
        has_ignored = ignore_in_range and bool((labels == ignore_index).any())
        return labels, has_ignored
    out = (labels < 0) | (labels >= n_classes)
    if ignore_index is not None:
        out = out & (labels != ignore_index)
    if bool(out.any()):
        bad = int(labels[out][0])
        allowed = f"0..{n_classes - 1}"
        if ignore_index is not None:
            allowed += f" or ignore_index={ignore_index}"
        raise ValueError(
            f"`labels` has a value out of range: {bad} (allowed: {allowed}, for {n_classes} "
            "classes)"
        )
    return labels, True  # every label outside 0..C-1 is ignore_index


def prepare(
    student_logits: Any,
    teacher_logits: Any,
    labels: Any = None,
    *,
    mask: Any = None,
    reduction: Any = "mean",
    normalizer: Any = None,
    ignore_index: int | None = -100,
    need_labels: bool = False,
    ce_weight: float = 0.0,
    min_classes: int = 1,
    need_teacher: bool = True,
    objective: str = "this objective",
) -> Rows:
    """Validate an objective's inputs once and select the kept rows.

    Raises a ``ValueError`` naming the argument for: non-float logits, a class-count (or
    shape) mismatch between teacher and student, labels of the wrong dtype / shape / range,
    a bad ``mask``, ``reduction``, ``normalizer`` or ``ignore_index`` (an integer or None),
    and missing labels when ``need_labels`` or when ``ce_weight`` (the weight of the CE term the
    rows carry) is > 0.
    """
    check_reduction(reduction)
    normalizer = check_normalizer(normalizer, reduction)
    ignore_index = check_ignore_index(ignore_index)
    student = check_tensor(student_logits, "student_logits")
    teacher: Tensor | None = None
    if need_teacher:
        if teacher_logits is None:
            raise ValueError(f"{objective} needs `teacher_logits`, got None")
        student, teacher = check_pair(student, teacher_logits, "student_logits", "teacher_logits")
    n_classes = student.shape[-1]
    if n_classes < min_classes:
        raise ValueError(
            f"{objective} needs at least {min_classes} classes, got `student_logits` of shape "
            f"{tuple(student.shape)}"
        )
    leading = student.shape[:-1]
    keep = check_mask(mask, leading, student.device)
    keep = None if keep is None else keep.reshape(-1)
    flat_labels: Tensor | None = None
    if labels is None:
        if need_labels or ce_weight > 0:
            if not need_labels:
                objective = f"{objective} with ce_weight > 0"
            raise ValueError(
                f"{objective} needs `labels` (integer class indices of the leading shape "
                f"{tuple(leading)}); pass them, or set the cross-entropy weight `ce_weight=0`"
            )
    else:
        checked, has_ignored = _check_labels(
            labels, leading, n_classes, ignore_index, student.device
        )
        flat_labels = checked.reshape(-1)
        if has_ignored:
            valid = flat_labels != ignore_index
            keep = valid if keep is None else keep & valid
    dtype = compute_dtype(student) if teacher is None else compute_dtype(student, teacher)
    s = student.reshape(-1, n_classes)
    t = None if teacher is None else teacher.reshape(-1, n_classes)
    if keep is not None:
        s = s[keep]
        t = None if t is None else t[keep]
        flat_labels = None if flat_labels is None else flat_labels[keep]
    return Rows(
        student=s,
        teacher=t,
        labels=flat_labels,
        keep=keep,
        leading=leading,
        reduction=reduction,
        normalizer=normalizer,
        dtype=dtype,
        ce_weight=ce_weight,
    )


def prepare_student(student_logits: Any, labels: Any, **kwargs: Any) -> Rows:
    """:func:`prepare` for an objective without a teacher (cross-entropy)."""
    return prepare(student_logits, None, labels, need_teacher=False, **kwargs)


def kd_scale(kd_weight: float, temperature: float, scale_by_temperature_squared: bool) -> float:
    """The divergence term's factor: ``kd_weight·T²`` (Hinton's gradient-scale correction), or
    ``kd_weight`` without the T² flag."""
    return kd_weight * (temperature**2 if scale_by_temperature_squared else 1.0)


def cross_entropy_rows(student_rows: Tensor, labels: Tensor, dtype: torch.dtype) -> Tensor:
    """−log softmax(s)_y per row, in ``dtype``."""
    return F.cross_entropy(student_rows.to(dtype), labels, reduction="none")


def add_cross_entropy(rows: Tensor, r: Rows, ce_weight: float) -> Tensor:
    """``rows + ce_weight·CE(student, y)`` per kept row (``rows`` itself when the weight is 0)."""
    if ce_weight > 0:
        assert r.labels is not None
        rows = rows + ce_weight * cross_entropy_rows(r.student, r.labels, r.dtype)
    return rows


class Objective(nn.Module):
    """Base of the distillation objectives: a thin module around a pure loss function.

    ``objective(student_logits, teacher_logits, labels)`` returns the loss; ``mask``,
    ``reduction`` and ``normalizer`` may be given per call (``reduction`` defaults to the one
    the objective was built with). Subclasses set :attr:`function` (the pure loss) and keep
    their hyper-parameters in :attr:`options`.

    Attributes:
        id: the registry id (``"kd"``, ``"kd:js"``, ``"dkd"`` ...), set by
            :func:`divergent.objectives.make_objective`.
        needs_teacher: False only for cross-entropy.
        needs_labels: True when the loss uses labels (a CE term or a label-dependent method).
    """

    function: Callable[..., Tensor]
    needs_teacher: bool = True
    #: the loss function's own option check (``check_options(**options)``), run at
    #: construction so a bad option fails there; None: no eager check
    check_options: Callable[..., Any] | None = None
    #: the options :attr:`function` takes (its keyword-only parameters less ``mask`` and
    #: ``normalizer``), set for each subclass that names a function
    option_signature: inspect.Signature | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "function" not in cls.__dict__:
            return
        cls.option_signature = _option_signature(cls.function)
        own_init = cls.__dict__.get("__init__")
        if own_init is None:
            cls.__init__ = _options_init(cls)  # type: ignore[method-assign]
        else:  # own keyword-only parameters, then ``**options``: show both in the signature
            own_init.__signature__ = _merged_signature(own_init, cls.option_signature)

    def __init__(self, *, reduction: str = "mean", **options: Any) -> None:
        super().__init__()
        check_reduction(reduction)
        self.reduction = reduction
        self.options = options
        self.id = type(self).__name__

    def _store_options(self, **options: Any) -> None:
        """Bind ``options`` to :attr:`option_signature` (defaults filled in, unknown names a
        TypeError), run :attr:`check_options` and store them (``reduction`` apart)."""
        signature = type(self).option_signature
        assert signature is not None, "an Objective subclass must set `function`"
        bound = signature.bind(**options)
        bound.apply_defaults()
        values = dict(bound.arguments)
        for p in signature.parameters.values():
            if p.kind is p.VAR_KEYWORD:
                values.update(values.pop(p.name, {}))
        reduction = values.pop("reduction")
        if type(self).check_options is not None:
            type(self).check_options(**values)
        Objective.__init__(self, reduction=reduction, **values)

    @property
    def needs_labels(self) -> bool:
        return float(self.options.get("ce_weight", 0.0)) > 0

    def set_epoch(self, epoch: int) -> None:
        """Tell the objective the current (0-based) epoch; a no-op unless it has a schedule.

        Trainers call it at the start of every epoch (DKD's warm-up uses it).
        """

    def forward(
        self,
        student_logits: Tensor,
        teacher_logits: Tensor | None = None,
        labels: Tensor | None = None,
        *,
        mask: Tensor | None = None,
        reduction: str | None = None,
        normalizer: float | Tensor | None = None,
    ) -> Tensor:
        inputs = LossInputs(student_logits, teacher_logits, labels)
        return self._loss(inputs, self._row_args(mask, reduction, normalizer))

    def _row_args(
        self, mask: Tensor | None, reduction: str | None, normalizer: float | Tensor | None
    ) -> RowArgs:
        """The row options of one call (``reduction`` None: the objective's own)."""
        reduction = self.reduction if reduction is None else reduction
        return RowArgs(mask, reduction, normalizer, self.options.get("ignore_index", -100))

    def _loss(self, inputs: LossInputs, row_args: RowArgs) -> Tensor:
        """The loss of one call with the stored options (an objective with state, such as a
        schedule or a diagnostic, overrides this rather than ``forward``)."""
        options = {**self._call_options(), **row_args._asdict()}
        return type(self).function(*inputs, **options)

    def _call_options(self) -> dict[str, Any]:
        """The loss options of the next call: the stored ones (a schedule overrides this)."""
        return self.options

    def extra_repr(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.options.items())
        return f"id={self.id!r}, {opts}, reduction={self.reduction!r}"


_CALL_OPTIONS = ("mask", "normalizer")  # given per call, never stored


def _option_signature(function: Callable[..., Tensor]) -> inspect.Signature:
    """``function``'s keyword-only parameters (and ``**kwargs``) less ``mask``/``normalizer``."""
    signature = inspect.signature(function)
    kept = [
        p
        for p in signature.parameters.values()
        if p.kind in (p.KEYWORD_ONLY, p.VAR_KEYWORD) and p.name not in _CALL_OPTIONS
    ]
    return signature.replace(parameters=kept, return_annotation="None")


def _with_self(parameters: list[inspect.Parameter]) -> inspect.Signature:
    self_param = inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return inspect.Signature([self_param, *parameters], return_annotation="None")


def _options_init(cls: type[Objective]) -> Callable[..., None]:
    """``__init__(self, *, <options of cls.function>, reduction=...)``: the same options and
    defaults as the loss function, checked and stored by :meth:`Objective._store_options`."""

    def __init__(self: Objective, **options: Any) -> None:
        self._store_options(**options)

    assert cls.option_signature is not None
    __init__.__signature__ = _with_self(list(cls.option_signature.parameters.values()))  # type: ignore[attr-defined]
    __init__.__qualname__ = f"{cls.__qualname__}.__init__"
    __init__.__doc__ = f"Store the options of :func:`{cls.function.__name__}` (same defaults)."
    return __init__


def _merged_signature(
    own_init: Callable[..., None], options: inspect.Signature
) -> inspect.Signature:
    """The signature of an ``__init__(self, *, <own options>, **options)``: the loss's options
    with the module's own keyword-only ones inserted before ``ignore_index``."""
    own = [p for p in inspect.signature(own_init).parameters.values() if p.kind is p.KEYWORD_ONLY]
    loss_options = list(options.parameters.values())
    names = [p.name for p in loss_options]
    at = names.index("ignore_index") if "ignore_index" in names else len(loss_options)
    return _with_self([*loss_options[:at], *own, *loss_options[at:]])

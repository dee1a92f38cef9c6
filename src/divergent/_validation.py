"""Validation and normalisation of the inputs shared by every divergence entry point.

Validation happens once, at the edge, with messages that name the argument, the value and
what is allowed (scikit-learn style). The one path for the row options: the entry points take
them as one typed bundle (:class:`RowKeywords`, spelled out in their signatures by
:func:`row_keywords`, split off by :func:`split_keywords`), :func:`row_options`
validates ``temperature, mask, reduction, normalizer, inputs, engine`` into a
:class:`RowOptions` and :func:`finish_rows` reduces (or scatters back) the kept rows' values;
every row-wise entry point (functional, the three engines, sparse teachers, ULD, policy KL)
uses both. :func:`input_rows` wraps a row computation in the input contract
below. One check per concept: :func:`check_positive_scalar`, :func:`check_float_tensor`,
:func:`check_choice`, :func:`check_bool`, :func:`check_int`, :func:`check_ignore_index`.

The input contract (DESIGN.md, "Errors"): :func:`check_distribution_rows` (probs / log-probs
normalised), :func:`warn_if_probabilities` (probabilities passed as logits),
:func:`check_no_nan` (``check_nan=True``), :func:`nan_rows_of` and :func:`explain_nan_rows`
(NaN rows stay NaN; a +inf entry, a row without mass or an overflow is a ``ValueError``
naming the side and the row, see :func:`row_label`).
"""

from __future__ import annotations

import difflib
import inspect
import math
import numbers
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypedDict, TypeVar

import torch
from torch import Tensor

Inputs = Literal["logits", "log_probs", "probs"]
Reduction = Literal["none", "sum", "mean"]

INPUT_KINDS: tuple[str, ...] = ("logits", "log_probs", "probs")
REDUCTIONS: tuple[str, ...] = ("none", "sum", "mean")


def compute_dtype(*tensors: Tensor | None) -> torch.dtype:
    """float64 if any input is float64, otherwise float32 (bf16/fp16 are upcast); None (an
    optional input not given) is skipped."""
    for t in tensors:
        if t is not None and t.dtype == torch.float64:
            return torch.float64
    return torch.float32


def check_positive_scalar(
    value: Any,
    name: str,
    *,
    allow_zero: bool = False,
    allow_none: bool = False,
    allow_inf: bool = False,
    what: str = "",
) -> float | None:
    """``value`` as a float that is finite and > 0 (or ≥ 0 with ``allow_zero``).

    The one check for every "finite positive number" argument of the package (temperature,
    eps, bandwidth, sigma, beta ...). A one-element tensor is read with ``.item()``; bools,
    strings, NaN and ±inf (unless ``allow_inf``) are rejected with a ``ValueError`` naming the
    argument. ``what`` adds a short explanation to the message.
    """
    if value is None and allow_none:
        return None
    if isinstance(value, Tensor) and value.numel() == 1:
        value = value.item()
    ok = not isinstance(value, bool) and isinstance(value, numbers.Real)
    if ok:
        value = float(value)
        ok = not math.isnan(value) and (allow_inf or math.isfinite(value))
        ok = ok and (value >= 0 if allow_zero else value > 0)
    if not ok:
        bound = ">= 0" if allow_zero else "> 0"
        kind = "a number" if allow_inf else "a finite number"
        extra = f" ({what})" if what else ""
        none = " or None" if allow_none else ""
        raise ValueError(f"`{name}` must be {kind} {bound}{none}{extra}, got {value!r}")
    return value


def check_float_tensor(x: Any, name: str, *, min_dim: int = 0, dims: int | None = None) -> Tensor:
    """``x`` as a floating-point tensor with at least ``min_dim`` (or exactly ``dims``) axes.

    The one check for tensor arguments that must hold real numbers (float16, bfloat16,
    float32 or float64); a ``ValueError`` names the argument, what it got and what is allowed.
    """
    if not isinstance(x, Tensor):
        raise ValueError(f"`{name}` must be a torch.Tensor, got {type(x).__name__}")
    if not torch.is_floating_point(x):
        raise ValueError(
            f"`{name}` must be a floating-point tensor (float16, bfloat16, float32 or float64), "
            f"got dtype {x.dtype}"
        )
    if dims is not None and x.dim() != dims:
        raise ValueError(f"`{name}` must have {dims} dimension(s), got shape {tuple(x.shape)}")
    if x.dim() < min_dim:
        raise ValueError(
            f"`{name}` must have at least {min_dim} dimension(s), got shape {tuple(x.shape)}"
        )
    return x


def check_tensor(x: Any, name: str) -> Tensor:
    """A floating-point tensor with a non-empty class axis (last dimension)."""
    check_float_tensor(x, name)
    if x.dim() == 0:
        raise ValueError(f"`{name}` must have a class axis (last dimension); got a 0-d tensor")
    if x.shape[-1] == 0:
        raise ValueError(f"`{name}` has an empty class axis (shape {tuple(x.shape)})")
    return x


def check_same_device(x: Tensor, name: str, other: Tensor, other_name: str) -> None:
    """A ``ValueError`` naming both arguments and their devices when they differ."""
    if x.device != other.device:
        raise ValueError(f"`{name}` is on {x.device} but `{other_name}` is on {other.device}")


def check_pair(p: Any, q: Any, p_name: str = "p", q_name: str = "q") -> tuple[Tensor, Tensor]:
    p, q = check_tensor(p, p_name), check_tensor(q, q_name)
    if p.shape != q.shape:
        if p.shape[-1] != q.shape[-1]:
            raise ValueError(
                f"class axes differ: `{p_name}` has {p.shape[-1]} classes (shape "
                f"{tuple(p.shape)}) and `{q_name}` has {q.shape[-1]} (shape {tuple(q.shape)}); "
                "both must share the last dimension"
            )
        raise ValueError(
            f"`{p_name}` and `{q_name}` must have the same shape, got {tuple(p.shape)} and "
            f"{tuple(q.shape)} (class axis last, same leading shape)"
        )
    check_same_device(p, p_name, q, q_name)
    return p, q


def check_choice(value: Any, name: str, allowed: Sequence[Any], meaning: str = "") -> Any:
    """``value`` if it is one of ``allowed``, else a ``ValueError`` naming ``name`` and them.

    The one check for every "one of these options" argument of the package; ``meaning`` (e.g.
    ``" ('l1': ECE, 'max': MCE)"``) follows the allowed values in the message.

    Example:
        >>> check_choice("sum", "reduction", REDUCTIONS)
        'sum'
        >>> check_choice("avg", "reduction", REDUCTIONS)
        Traceback (most recent call last):
        ...
        ValueError: `reduction` must be one of ('none', 'sum', 'mean'), got 'avg'
    """
    if value not in allowed:
        raise ValueError(f"`{name}` must be one of {allowed}{meaning}, got {value!r}")
    return value


def as_integer(value: Any) -> int | None:
    """``value`` as a Python ``int`` when it is an integer (an ``int``, a numpy integer, any
    ``numbers.Integral``; a bool is not), else None: the one test behind every integer check.

    Example:
        >>> import numpy as np
        >>> as_integer(np.int64(4)), as_integer(True), as_integer(2.0)
        (4, None, None)
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        return None
    return int(value)


def check_int(
    value: Any,
    name: str,
    minimum: int,
    what: str = "",
    *,
    maximum: int | None = None,
    why: str = "",
) -> int:
    """``value`` as a Python ``int`` if it is an integer (numpy integers too; bools and floats
    rejected, see :func:`as_integer`) >= ``minimum`` (and <= ``maximum`` when given), else a
    ``ValueError`` naming ``name`` and, when given, ``what`` it counts (e.g. ``"number of
    samples"``) and ``why`` the bounds are what they are (after them, in parentheses).

    Example:
        >>> check_int(3, "k", 1, maximum=5)
        3
        >>> check_int(0, "n", 1, "number of samples")
        Traceback (most recent call last):
        ...
        ValueError: `n` (number of samples) must be an integer >= 1, got 0
    """
    number = as_integer(value)
    if number is None or number < minimum or (maximum is not None and number > maximum):
        what = f" ({what})" if what else ""
        bound = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
        why = f" ({why})" if why else ""
        raise ValueError(f"`{name}`{what} must be an integer {bound}{why}, got {value!r}")
    return number


def check_ignore_index(value: Any, *, allow_none: bool = True) -> int | None:
    """``ignore_index`` (the label value of the rows / positions to skip) as a Python ``int``, or
    None (no such value) when ``allow_none``; a bool, a float or a string is a ``ValueError``.

    Example:
        >>> check_ignore_index(-100), check_ignore_index(None)
        (-100, None)
        >>> check_ignore_index(True)
        Traceback (most recent call last):
        ...
        ValueError: `ignore_index` must be an integer or None, got True
    """
    if value is None and allow_none:
        return None
    number = as_integer(value)
    if number is None:
        allowed = "an integer or None" if allow_none else "an integer"
        raise ValueError(f"`ignore_index` must be {allowed}, got {value!r}")
    return number


def check_bool(value: Any, name: str) -> bool:
    """``value`` if it is True or False (not 0 / 1 or another truthy value), else a ``ValueError``
    naming ``name``: the one check for the package's on/off arguments."""
    if not isinstance(value, bool):
        raise ValueError(f"`{name}` must be True or False, got {value!r}")
    return value


def check_inputs_kind(inputs: Any) -> str:
    return check_choice(inputs, "inputs", INPUT_KINDS)


def check_reduction(reduction: Any) -> str:
    return check_choice(reduction, "reduction", REDUCTIONS)


def check_temperature(temperature: Any) -> float:
    """T as a finite float > 0; a tensor that requires grad is refused (T is not differentiated)."""
    if isinstance(temperature, Tensor) and temperature.requires_grad:
        raise ValueError(
            "`temperature` is a tensor that requires grad, but divergent treats the temperature "
            "as a constant and would return no gradient for it; pass a float or "
            "`temperature.detach()` (to learn T, divide the logits by it yourself and use "
            "temperature=1)"
        )
    return check_positive_scalar(temperature, "temperature")  # type: ignore[return-value]


def check_mask(
    mask: Any,
    leading_shape: torch.Size,
    device: torch.device,
    *,
    shape_name: str = "leading shape",
    meaning: str = "True = keep the row",
    of: str = "the inputs (all but the class axis)",
    say_none: bool = False,
) -> Tensor | None:
    """``mask``: None (every row kept) or a bool tensor of ``leading_shape``, moved to ``device``.

    The messages name the ``shape_name`` (e.g. ``"token shape"``), what True means
    (``meaning``), what the shape is ``of``, and with ``say_none`` that None is allowed too.
    """
    if mask is None:
        return None
    if not isinstance(mask, Tensor) or mask.dtype != torch.bool:
        got = mask.dtype if isinstance(mask, Tensor) else type(mask).__name__
        none = "None or " if say_none else ""
        raise ValueError(
            f"`mask` must be {none}a bool tensor of the {shape_name} {tuple(leading_shape)} "
            f"({meaning}), got {got}"
        )
    if mask.shape != leading_shape:
        raise ValueError(
            f"`mask` must have the {shape_name} {tuple(leading_shape)} of {of}, got "
            f"{tuple(mask.shape)}"
        )
    return mask.to(device)


def check_normalizer(normalizer: Any, reduction: str) -> float | Tensor | None:
    if normalizer is None:
        return None
    if reduction != "mean":
        raise ValueError(
            f"`normalizer` overrides the denominator of reduction='mean'; got reduction="
            f"{reduction!r}. Use reduction='mean' or drop `normalizer`"
        )
    if isinstance(normalizer, Tensor):
        if normalizer.numel() != 1 or normalizer.dtype == torch.bool:
            raise ValueError(
                f"`normalizer` must be a scalar number (a count of items), got a "
                f"{normalizer.dtype} tensor of shape {tuple(normalizer.shape)}"
            )
        # the value is checked only on the CPU (reading a CUDA tensor would sync the device)
        if normalizer.device.type == "cpu":
            value = float(normalizer)
            if not math.isfinite(value) or value <= 0:
                raise ValueError(f"`normalizer` must be a finite number > 0, got {value!r}")
        return normalizer.reshape(())
    if isinstance(normalizer, bool) or not isinstance(normalizer, numbers.Real):
        raise ValueError(f"`normalizer` must be a positive number, got {normalizer!r}")
    if not math.isfinite(normalizer) or normalizer <= 0:
        raise ValueError(f"`normalizer` must be a finite number > 0, got {normalizer!r}")
    return float(normalizer)


def check_chunk_size(chunk_size: Any) -> int | None:
    """``None`` (automatic) or a positive number of rows per chunk."""
    if chunk_size is None:
        return None
    rows = as_integer(chunk_size)
    if rows is None or rows < 1:
        raise ValueError(f"`chunk_size` must be a positive integer (rows), got {chunk_size!r}")
    return rows


ENGINES: tuple[str, ...] = ("auto", "chunked", "reference")


def check_engine(engine: Any) -> str | None:
    """``None`` (the process default, :func:`divergent.set_engine`) or one of :data:`ENGINES`."""
    return None if engine is None else check_choice(engine, "engine", ENGINES, " or None")


@dataclass(frozen=True)
class RowOptions:
    """The validated row options every row-wise entry point shares.

    Attributes:
        temperature: T > 0 dividing both sides' logits.
        keep: flattened bool mask over the rows (True = keep), or None for all rows.
        reduction: ``"none"`` | ``"sum"`` | ``"mean"``.
        normalizer: the mean's denominator when given (a float or a 0-d tensor).
        inputs: ``"logits"`` | ``"log_probs"`` | ``"probs"``.
        engine: ``None`` | ``"auto"`` | ``"chunked"`` | ``"reference"``.
        leading: the leading shape (all but the class axis) of the inputs.
    """

    temperature: float
    keep: Tensor | None
    reduction: str
    normalizer: float | Tensor | None
    inputs: str
    engine: str | None
    leading: torch.Size

    @property
    def n_rows(self) -> int:
        return math.prod(self.leading)

    def finish(
        self,
        rows: Tensor,
        *,
        leading: Sequence[int] | None = None,
        count: int | Tensor | None = None,
    ) -> Tensor:
        """:func:`finish_rows` with these options (``leading`` defaults to :attr:`leading`)."""
        return finish_rows(
            rows,
            keep=self.keep,
            leading=self.leading if leading is None else torch.Size(leading),
            reduction=self.reduction,
            normalizer=self.normalizer,
            count=count,
        )


class RowKeywords(TypedDict, total=False):
    """The row options as keywords, typed for ``**row_options: Unpack[RowKeywords]``.

    Defaults and shown annotations: :data:`ROW_KEYWORD_DEFAULTS`; :func:`row_keywords` spells
    them out in an entry point's signature, :func:`split_keywords` takes them out of its
    ``**kwargs`` and :func:`row_options` validates them.
    """

    temperature: float
    mask: Tensor | None
    reduction: str
    normalizer: float | Tensor | None
    inputs: str
    engine: str | None


#: each row keyword's default and its annotation as the entry points' signatures show it
ROW_KEYWORD_DEFAULTS: dict[str, tuple[Any, str]] = {
    "temperature": (1.0, "float"),
    "mask": (None, "Tensor | None"),
    "reduction": ("mean", "str"),
    "normalizer": (None, "float | Tensor | None"),
    "inputs": ("logits", "str"),
    "engine": (None, "str | None"),
}

#: the row keywords of every row-wise entry point
ROW_KEYWORDS: tuple[str, ...] = ("temperature", "mask", "reduction", "normalizer")
#: ... and of those reading ``inputs="logits"|"log_probs"|"probs"``
ROW_INPUT_KEYWORDS: tuple[str, ...] = (*ROW_KEYWORDS, "inputs")

_F = TypeVar("_F", bound=Callable[..., Any])


#: the row keywords as the entry points' signatures show them (keyword-only, with defaults)
ROW_PARAMETERS: dict[str, inspect.Parameter] = {
    name: inspect.Parameter(
        name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation
    )
    for name, (default, annotation) in ROW_KEYWORD_DEFAULTS.items()
}


def spell_keywords(shown: Mapping[str, inspect.Parameter], *order: str) -> Callable[[_F], _F]:
    """Spell the keywords a function takes through ``**kwargs`` out in its signature.

    ``order`` names every keyword-only parameter of the shown signature, in order: keywords
    of ``shown`` (e.g. :data:`ROW_PARAMETERS`, or another function's parameters), shown with
    their defaults and annotations, and the function's own keyword-only parameters; without
    ``order``, the function's own keyword-only parameters come first, then every keyword of
    ``shown`` (e.g. the objectives' row options after each loss's own options). The
    variadic keyword parameter, its last one, is dropped when it is a typed bundle
    (``**options: Unpack[...]``, those keywords only) and kept after them otherwise (e.g. a
    divergence's ``**params``, from which the function splits the row keywords with
    :func:`split_keywords`). ``inspect.signature`` and ``help`` then show the function as
    if the keywords were written out.
    """

    def spell(function: _F) -> _F:
        signature = inspect.signature(function)
        *params, variadic = signature.parameters.values()
        assert variadic.kind is variadic.VAR_KEYWORD, "the keywords come through **kwargs"
        own = {prm.name: prm for prm in params if prm.kind is prm.KEYWORD_ONLY}
        names = order or (*own, *shown)
        assert set(own) <= set(names), f"{sorted(set(own) - set(names))} missing from the order"
        keywords = [own[name] if name in own else shown[name] for name in names]
        head = [prm for prm in params if prm.kind is not prm.KEYWORD_ONLY]
        kept = [] if "Unpack[" in str(variadic.annotation) else [variadic]
        function.__signature__ = signature.replace(parameters=[*head, *keywords, *kept])  # type: ignore[attr-defined]
        return function

    return spell


def row_keywords(*order: str) -> Callable[[_F], _F]:
    """:func:`spell_keywords` with the row keywords (:data:`ROW_PARAMETERS`)."""
    return spell_keywords(ROW_PARAMETERS, *order)


def split_keywords(
    kwargs: Mapping[str, Any], names: Sequence[str], *, function: str | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The keywords ``names`` (e.g. the row keywords) among a function's ``kwargs``, and the rest.

    With ``function`` (the function's name) nothing else may remain: another keyword is a
    ``TypeError`` as for a function that spells its keywords out.
    """
    taken = {k: v for k, v in kwargs.items() if k in names}
    rest = {k: v for k, v in kwargs.items() if k not in names}
    if function is not None and rest:
        raise unexpected_keyword(function, next(iter(rest)), names)
    return taken, rest


def close_keyword(name: str, keywords: Sequence[str]) -> str:
    """`` (did you mean 'temperature'?)`` for the keyword of ``keywords`` closest to a
    misspelt ``name`` (difflib), or "" when none is close."""
    close = difflib.get_close_matches(name, list(keywords), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def unexpected_keyword(function: str, name: str, keywords: Sequence[str]) -> TypeError:
    """The ``TypeError`` Python raises for a keyword ``function`` does not take, with a
    did-you-mean among its ``keywords`` (or, when none is close, the list of them).

    Example:
        >>> print(unexpected_keyword("dkd_loss", "alhpa", ["alpha", "beta"]))
        dkd_loss() got an unexpected keyword argument 'alhpa' (did you mean 'alpha'?)
        >>> print(unexpected_keyword("dkd_loss", "gamma", ["alpha", "beta"]))
        dkd_loss() got an unexpected keyword argument 'gamma' (its keywords: alpha, beta)
    """
    hint = close_keyword(name, keywords) or f" (its keywords: {', '.join(keywords)})"
    return TypeError(f"{function}() got an unexpected keyword argument {name!r}{hint}")


def row_options(
    *,
    leading_shape: torch.Size,
    device: torch.device,
    temperature: Any = 1.0,
    mask: Any = None,
    reduction: Any = "mean",
    normalizer: Any = None,
    inputs: Any = "logits",
    engine: Any = None,
) -> RowOptions:
    """Validate ``temperature, mask, reduction, normalizer, inputs, engine`` in one place.

    Raises a ``ValueError`` naming the argument, the value and what is allowed.
    """
    check_reduction(reduction)
    check_inputs_kind(inputs)
    check_engine(engine)
    temperature = check_temperature(temperature)
    norm = check_normalizer(normalizer, reduction)
    keep = check_mask(mask, leading_shape, device)
    return RowOptions(
        temperature=temperature,
        keep=None if keep is None else keep.reshape(-1),
        reduction=reduction,
        normalizer=norm,
        inputs=inputs,
        engine=engine,
        leading=torch.Size(leading_shape),
    )


def finish_rows(
    rows: Tensor,
    *,
    keep: Tensor | None,
    leading: torch.Size,
    reduction: str,
    normalizer: float | Tensor | None,
    count: int | Tensor | None = None,
) -> Tensor:
    """Turn per-row values into the caller's result: the one place rows are reduced.

    ``rows`` holds the values of the kept rows only (all rows when ``keep`` is None), in row
    order. ``"none"`` scatters them back to the leading shape (skipped rows 0); ``"sum"`` and
    ``"mean"`` reduce them, the mean dividing by ``normalizer`` if given, else by ``count``
    (default: the number of kept rows). A fully masked batch gives 0 with zero gradient.
    """
    if reduction == "none":
        if keep is None:
            return rows.reshape(leading)
        full = torch.zeros(keep.shape, dtype=rows.dtype, device=rows.device)
        return full.index_put((keep,), rows).reshape(leading)
    return reduce_rows(
        rows, reduction, count=rows.shape[0] if count is None else count, normalizer=normalizer
    )


def row_label(flat_index: int, leading: Sequence[int]) -> str:
    """A row's index in the caller's leading shape: ``3``, ``(1, 4)``, or ``0`` for one row."""
    if len(leading) <= 1:
        return str(int(flat_index))
    idx = []
    rem = int(flat_index)
    for size in reversed(leading):
        idx.append(rem % size)
        rem //= size
    return str(tuple(reversed(idx)))


def is_traced(*tensors: Tensor) -> bool:
    """Inside ``torch.compile`` or a ``torch.func`` transform: data-dependent checks must wait."""
    if torch.compiler.is_compiling():
        return True
    for x in tensors:
        try:
            if torch._C._functorch.is_functorch_wrapped_tensor(x):
                return True
        except Exception:  # private API moved: assume a plain tensor
            return False
    return False


def kept_rows(keep: Tensor | None) -> Tensor | None:
    """Flat indices of the kept rows (None: all rows)."""
    return None if keep is None else keep.nonzero().squeeze(1)


def check_input_rows(
    sides: Sequence[tuple[str, Tensor]],
    opts: RowOptions,
    *,
    check_nan: bool,
    stacklevel: int,
) -> Tensor | None:
    """The value checks of the input contract on the kept rows of each ``(name, (N, C))`` side.

    ``check_nan=True``: a ``ValueError`` naming the side and the first kept row with NaN;
    ``inputs="probs"|"log_probs"``: every kept row a distribution
    (:func:`check_distribution_rows`); ``inputs="logits"``: one warning when they look like
    probabilities (:func:`warn_if_probabilities`, ``stacklevel`` counted from the caller).
    Returns the kept rows' flat indices (None: all rows), as :func:`explain_nan_rows` takes them.
    """
    kept = kept_rows(opts.keep)
    if check_nan:
        for name, x in sides:
            check_no_nan(x, name, rows=kept, leading=opts.leading)
    if opts.inputs == "logits":
        warn_if_probabilities(sides, stacklevel=stacklevel + 1)
    else:
        for name, x in sides:
            check_distribution_rows(x, name, opts.inputs, rows=kept, leading=opts.leading)
    return kept


@dataclass(frozen=True)
class InputRows:
    """The sides of a row-wise entry point as ``(N, C)`` rows, the input contract applied.

    Made by :func:`input_rows`, which ran :func:`check_input_rows` (when ``eager``); its
    :meth:`finish` runs :func:`explain_nan_rows` on the values and reduces them.

    Attributes:
        sides: ``(name, (N, C) rows)`` of each side (all rows, kept or not).
        opts: the validated row options.
        kept: flat indices of the kept rows (None: all rows, or not ``eager``).
        eager: the values may be inspected (not compiled, not under a ``torch.func``
            transform): the checks ran and :meth:`finish` explains NaN / +inf rows.
    """

    sides: tuple[tuple[str, Tensor], ...]
    opts: RowOptions
    kept: Tensor | None
    eager: bool

    def kept_sides(self) -> tuple[Tensor, ...]:
        """The kept rows of each side, ``(kept, C)``."""
        keep = self.opts.keep
        return tuple(x if keep is None else x[keep] for _, x in self.sides)

    def finish(self, values: Tensor) -> Tensor:
        """Explain the kept rows' NaN / +inf ``values`` (see :func:`explain_nan_rows`), reduce."""
        if self.eager:
            explain_nan_rows(
                values,
                self.sides,
                rows=self.kept,
                leading=self.opts.leading,
                inputs=self.opts.inputs,
                temperature=self.opts.temperature,
            )
        return self.opts.finish(values)


def input_rows(
    sides: Sequence[tuple[str, Tensor]],
    opts: RowOptions,
    *,
    check_nan: bool,
    stacklevel: int,
) -> InputRows:
    """Flatten each ``(name, (..., C))`` side to rows and apply :func:`check_input_rows`.

    The one sequence of the input contract around a row-wise computation: these checks
    first, then (:meth:`InputRows.finish`) :func:`explain_nan_rows` on the values and the
    reduction. Inside ``torch.compile`` or a ``torch.func`` transform the data-dependent
    checks are skipped (``eager`` False). ``stacklevel`` as for :func:`check_input_rows`,
    counted from the caller.
    """
    eager = not is_traced(*(x for _, x in sides))
    rows = tuple((name, x.reshape(-1, x.shape[-1])) for name, x in sides)
    kept = None
    if eager:
        kept = check_input_rows(rows, opts, check_nan=check_nan, stacklevel=stacklevel + 1)
    return InputRows(sides=rows, opts=opts, kept=kept, eager=eager)


def check_no_nan(
    x: Tensor,
    name: str,
    *,
    rows: Tensor | None = None,
    leading: Sequence[int] | None = None,
) -> None:
    """``check_nan=True``: a ``ValueError`` naming ``name`` and the first kept row holding NaN.

    ``x`` is ``(N, C)`` (or any shape, read as rows of its last axis); ``rows`` are the flat
    indices of the kept rows (None: all); ``leading`` the caller's leading shape for the label.
    """
    x2 = x.reshape(-1, x.shape[-1]) if x.dim() > 0 else x.reshape(1, 1)
    sub = x2 if rows is None else x2.index_select(0, rows)
    bad = torch.isnan(sub).any(-1)
    if bool(bad.any()):
        first = int(bad.nonzero()[0, 0])
        flat = first if rows is None else int(rows[first])
        shape = leading if leading is not None else x.shape[:-1]
        raise ValueError(
            f"`{name}` contains NaN in row {row_label(flat, shape)} (check_nan=True); "
            "without check_nan the row's value is NaN"
        )


# How far a row of probabilities (or exp of the logsumexp of log-probabilities) may sum from 1,
# by the dtype the caller gave: rounding each entry to that dtype moves the sum by about eps.
MASS_TOLERANCE: dict[torch.dtype, float] = {
    torch.float64: 1e-6,
    torch.float32: 1e-4,
    torch.float16: 5e-3,
    torch.bfloat16: 2e-2,
}

_CHECK_ELEMENTS = 1 << 20  # elements per chunk of the row checks (4 MiB of float32)


def mass_tolerance(dtype: torch.dtype) -> float:
    """Slack on ``Σ p = 1`` (``probs``), ``log Σ exp = 0`` and ``log p ≤ 0`` (``log_probs``)."""
    return MASS_TOLERANCE.get(dtype, 1e-4)


def check_distribution_rows(
    x: Tensor,
    name: str,
    inputs: str,
    *,
    rows: Tensor | None = None,
    leading: Sequence[int] | None = None,
) -> None:
    r"""``inputs="probs"`` / ``"log_probs"``: every kept row must be a distribution.

    Checks, on the kept rows of ``x`` (``(N, C)``) in chunks, with ε = :func:`mass_tolerance`
    of ``x``'s dtype: no +inf entry; probs ≥ 0, log-probs ≤ ε; some mass (not all 0 / −inf);
    :math:`|\sum_x p_x - 1| \le ε` (probs) or :math:`|\log\sum_x e^{\ell_x}| \le ε`
    (log-probs). Rows holding NaN are skipped (their value is NaN). Raises a ``ValueError``
    naming ``name``, the row (the worst row for the sum) and what to do; nothing is
    renormalised silently.
    """
    if inputs not in ("probs", "log_probs") or x.numel() == 0:
        return
    n_classes = x.shape[-1]
    x2 = x.detach().reshape(-1, n_classes)
    count = x2.shape[0] if rows is None else rows.numel()
    if count == 0:
        return
    tol = mass_tolerance(x.dtype)
    dtype = compute_dtype(x)
    step = max(1, _CHECK_ELEMENTS // n_classes)
    flags, masses = [], []
    for start in range(0, count, step):
        stop = min(start + step, count)
        c = x2[start:stop] if rows is None else x2.index_select(0, rows[start:stop])
        c = c.to(dtype)
        nan = torch.isnan(c).any(-1)
        pos_inf = torch.isposinf(c).any(-1)
        if inputs == "probs":
            wrong_sign = (c < 0).any(-1)
            mass = c.sum(-1)
        else:
            wrong_sign = (c > tol).any(-1)
            mass = torch.logsumexp(c, dim=-1).exp()
        empty = mass == 0
        off = torch.where(nan | pos_inf | empty, 0.0, (mass - 1.0).abs())
        flags.append(torch.stack([pos_inf, wrong_sign, empty, off > tol]) & ~nan)
        masses.append(torch.stack([mass, off]))
    flag = torch.cat(flags, dim=1)
    summary = flag.any(-1).tolist()  # one device sync for the checks
    if not any(summary):
        return
    shape = leading if leading is not None else x.shape[:-1]

    def label(pos: int) -> str:
        return row_label(pos if rows is None else int(rows[pos]), shape)

    first = [int(f.nonzero()[0, 0]) if hit else -1 for f, hit in zip(flag, summary)]
    if summary[0]:
        raise ValueError(
            f"`{name}` has a +inf entry in row {label(first[0])}; inputs={inputs!r} expects "
            + ("probabilities in [0, 1]" if inputs == "probs" else "log-probabilities <= 0")
        )
    if summary[1]:
        pos = first[1]
        row = x2[pos if rows is None else int(rows[pos])].to(dtype)
        if inputs == "probs":
            raise ValueError(
                f"`{name}` has a negative entry ({float(row.min()):g}) in row {label(pos)} but "
                "inputs='probs' expects probabilities >= 0; pass logits with inputs='logits'"
            )
        raise ValueError(
            f"`{name}` has a positive entry ({float(row.max()):g}) in row {label(pos)} but "
            f"inputs='log_probs' expects log-probabilities <= 0 (tolerance {tol:g} for "
            f"{x.dtype}); pass logits with inputs='logits'"
        )
    if summary[2]:
        zero = "0" if inputs == "probs" else "-inf"
        raise ValueError(
            f"`{name}` row {label(first[2])} has no probability mass (every entry is {zero}); "
            "a distribution needs some mass: drop the row with `mask` (False = skip the row)"
        )
    mass_all, off_all = torch.cat(masses, dim=1)
    worst = int(off_all.argmax())
    raise ValueError(
        f"`{name}` row {label(worst)} sums to {float(mass_all[worst]):.6g}"
        + (" (in probability)" if inputs == "log_probs" else "")
        + f" but inputs={inputs!r} expects each row to sum to 1 (tolerance {tol:g} for "
        f"{x.dtype}); nothing is renormalised silently: normalise it ("
        + (
            f"{name} / {name}.sum(-1, keepdim=True)"
            if inputs == "probs"
            else f"{name}.log_softmax(-1)"
        )
        + ") or pass logits with inputs='logits'"
    )


_SAMPLE_ROWS = 64  # rows looked at by the probabilities-as-logits check


def _looks_like_probabilities(x: Tensor, rows: int) -> Tensor:
    """0-d bool: the first ``rows`` rows of ``x`` are in [0, 1] and each sums to 1."""
    s = x.detach().reshape(-1, x.shape[-1])[:rows].to(compute_dtype(x))
    tol = max(mass_tolerance(x.dtype), 1e-3)
    lo, hi = torch.aminmax(s)
    return (lo >= 0) & (hi <= 1) & ((s.sum(-1) - 1).abs() <= tol).all()


def warn_if_probabilities(sides: Sequence[tuple[str, Tensor]], stacklevel: int = 3) -> None:
    """One ``UserWarning`` when logits look like probabilities (a cheap look at a few rows).

    Every entry of the first row in [0, 1] and the row summing to 1, confirmed on the first
    :data:`_SAMPLE_ROWS` rows: softmax of such "logits" is nearly uniform, so the divergence
    comes out far too small. The caller most likely meant ``inputs="probs"``. Costs one pass
    over one row per side and one device sync.
    """
    sides = [(n, x) for n, x in sides if x.dim() > 0 and x.shape[-1] >= 2 and x.numel() > 0]
    if not sides:
        return
    # cheap first look (two reductions per side, one sync): is every entry of the first row
    # in [0, 1]? Logits almost never are, so the full check below rarely runs.
    first_rows = [x.detach().reshape(-1, x.shape[-1])[0] for _, x in sides]
    if all(r.shape == first_rows[0].shape and r.dtype == first_rows[0].dtype for r in first_rows):
        # the common case (p and q alike): one stack, one reduction, one sync
        lo, hi = torch.aminmax(torch.stack(first_rows), dim=-1)
        bounds = torch.stack((lo, hi), dim=-1).float().tolist()
    else:
        bounds = torch.stack([torch.stack(torch.aminmax(r)).float() for r in first_rows]).tolist()
    first = [lo >= 0 and hi <= 1 for lo, hi in bounds]
    if not any(first):
        return
    names = [
        n
        for (n, x), hit in zip(sides, first)
        if hit and bool(_looks_like_probabilities(x, _SAMPLE_ROWS))
    ]
    if names:
        which = " and ".join(f"`{n}`" for n in names)
        warnings.warn(
            f"{which} look{'s' if len(names) == 1 else ''} like probabilities (entries in "
            "[0, 1], rows summing to 1) but are read as logits (inputs='logits'), which makes "
            "the divergence far too small; pass inputs='probs' if they are probabilities",
            UserWarning,
            stacklevel=stacklevel,
        )


def nan_rows_of(*log_probs: Tensor) -> Tensor:
    """Rows in which any of the given ``(..., C)`` log-prob tensors holds NaN."""
    bad = torch.isnan(log_probs[0]).any(-1)
    for lp in log_probs[1:]:
        bad = bad | torch.isnan(lp).any(-1)
    return bad


def explain_nan_rows(
    values: Tensor,
    sides: Sequence[tuple[str, Tensor]],
    *,
    rows: Tensor | None,
    leading: Sequence[int],
    inputs: str,
    temperature: float,
) -> None:
    """The contract on rows whose value came out NaN or +inf (one device sync when none did).

    A row holding NaN on either side stays NaN (NaN propagates). Any other NaN row is not a
    valid input and a ``ValueError`` names the side and the row: a +inf entry, a row that is
    all −inf (no mass: mask it), or finite logits whose ``x / temperature`` overflows the
    compute dtype. A +inf row is a true infinite divergence unless the finite entries of a
    side span more than the compute dtype's range at this temperature (``x/T − max`` rounds
    to −inf, so a positive probability became 0): that is refused too. ``sides`` are
    ``(name, (N, C) tensor)``; ``values`` are the kept rows' values in the order of ``rows``
    (flat indices of the kept rows; None = all).
    """
    values = values.detach()
    if bool(torch.isfinite(values).all()):
        return

    def flat_rows(bad: Tensor) -> Tensor:  # flat indices of the rows whose value is bad
        pos = bad.nonzero().squeeze(1)
        return pos if rows is None else rows.index_select(0, pos)

    flat = flat_rows(torch.isnan(values))
    if flat.numel() > 0:
        _explain_nan(flat, sides, leading, inputs, temperature)
    flat = flat_rows(torch.isposinf(values))
    if flat.numel() > 0:
        _explain_infinite(flat, sides, leading, temperature)


def _explain_nan(
    flat: Tensor,
    sides: Sequence[tuple[str, Tensor]],
    leading: Sequence[int],
    inputs: str,
    temperature: float,
) -> None:
    """NaN values at the rows ``flat``: fine where an input row holds NaN, else a ValueError."""
    picked = [(name, x.detach().index_select(0, flat)) for name, x in sides]
    caused = torch.zeros(flat.shape[0], dtype=torch.bool, device=flat.device)
    for _, xs in picked:
        caused |= torch.isnan(xs).any(-1)
    if bool(caused.all()):
        return
    i = int((~caused).nonzero()[0, 0])
    label = row_label(int(flat[i]), leading)
    for name, xs in picked:
        row = xs[i]
        if bool(torch.isposinf(row).any()):
            raise ValueError(
                f"`{name}` has a +inf entry in row {label}; {inputs} must be finite or -inf "
                "(-inf = zero probability)"
            )
        if bool(torch.isneginf(row).all()):
            raise ValueError(
                f"`{name}` row {label} is all -inf: it has no probability mass; drop it with "
                "`mask` (False = skip the row)"
            )
    for name, xs in picked:
        row = xs[i].to(compute_dtype(xs))
        if bool(torch.isinf(row / temperature).any()):
            raise ValueError(
                f"`{name}` row {label}: {inputs} / temperature overflow {row.dtype} (largest "
                f"|entry| {float(row.abs().max()):g}, temperature {temperature:g}); use a larger "
                "temperature, float64 inputs, or rescale the logits"
            )


def _explain_infinite(
    flat: Tensor,
    sides: Sequence[tuple[str, Tensor]],
    leading: Sequence[int],
    temperature: float,
) -> None:
    """+inf values at the rows ``flat``: a ValueError where a side's span overflows the dtype."""
    for name, x in sides:
        limit = torch.finfo(compute_dtype(x)).max
        if x.dtype == torch.float64:
            continue  # float64 inputs are computed in float64: no wider range to compare with
        step = max(1, _CHECK_ELEMENTS // max(1, x.shape[-1]))
        for start in range(0, flat.numel(), step):
            sub = x.detach().index_select(0, flat[start : start + step]).to(torch.float64)
            finite = torch.isfinite(sub)
            top = torch.where(finite, sub, -math.inf).amax(-1)
            low = torch.where(finite, sub, math.inf).amin(-1)
            span = torch.where(finite.any(-1), (top - low) / temperature, 0.0)
            over = span > limit
            if bool(over.any()):
                j = int(over.nonzero()[0, 0])
                label = row_label(int(flat[start + j]), leading)
                raise ValueError(
                    f"`{name}` row {label}: its finite entries span {float(span[j]):.3g} after "
                    f"dividing by the temperature ({temperature:g}), beyond the "
                    f"{compute_dtype(x)} range, so positive probabilities would round to 0 "
                    "and the value to +inf; use float64 inputs or rescale the logits"
                )


def to_log_probs(
    x: Tensor, inputs: str, temperature: float, dtype: torch.dtype, name: str
) -> Tensor:
    """Normalised log-probabilities in ``dtype`` from logits / log-probs / probs.

    ``temperature`` divides the logits (for ``log_probs``/``probs`` it divides the log-probs,
    i.e. p^(1/T) renormalised). Log-probs at T = 1 are used as given (not renormalised).
    """
    x = x.to(dtype)
    if inputs == "probs":
        if not is_traced(x) and bool((x < 0).any()):
            raise ValueError(
                f"`{name}` has negative entries (min {float(x.min()):g}) but inputs='probs' "
                "expects probabilities >= 0; pass logits with inputs='logits'"
            )
        # log(0) = -inf with a zero (not NaN) gradient at the zero entries; NaN stays NaN
        pos, nan = x > 0, torch.isnan(x)
        x = torch.where(pos, torch.log(torch.where(pos, x, 1.0)), -math.inf)
        x = torch.where(nan, math.nan, x)
        if temperature == 1.0:
            # renormalise in case of rounding (probabilities summing to 1 ± eps)
            return torch.log_softmax(x, dim=-1)
    elif inputs == "log_probs" and temperature == 1.0:
        return x
    if temperature != 1.0:
        x = x / temperature
    return torch.log_softmax(x, dim=-1)


def reduce_rows(
    rows: Tensor,
    reduction: str,
    *,
    count: int | Tensor,
    normalizer: float | Tensor | None,
) -> Tensor:
    """Sum / mean over rows; mean divides by ``normalizer`` if given, else ``count``.

    A fully masked batch (count 0) gives 0 with zero gradient, never NaN.
    """
    if reduction == "none":
        return rows
    total = rows.sum()
    if reduction == "sum":
        return total
    if normalizer is not None:
        if isinstance(normalizer, Tensor):  # keep the result's dtype (fp32 / fp64) and shape ()
            normalizer = normalizer.to(device=total.device, dtype=total.dtype)
        return total / normalizer
    if isinstance(count, Tensor):
        return total / count.clamp_min(1).to(total.dtype)
    return total / max(count, 1)

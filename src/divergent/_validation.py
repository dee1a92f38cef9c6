"""Validation and normalisation of the inputs shared by every divergence entry point.

Validation happens once, at the edge, with messages that name the argument, the value and
what is allowed (scikit-learn style).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor

Inputs = Literal["logits", "log_probs", "probs"]
Reduction = Literal["none", "sum", "mean"]

INPUT_KINDS: tuple[str, ...] = ("logits", "log_probs", "probs")
REDUCTIONS: tuple[str, ...] = ("none", "sum", "mean")


def compute_dtype(*tensors: Tensor) -> torch.dtype:
    """float64 if any input is float64, otherwise float32 (bf16/fp16 are upcast)."""
    for t in tensors:
        if t.dtype == torch.float64:
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
    if p.device != q.device:
        raise ValueError(f"`{p_name}` is on {p.device} but `{q_name}` is on {q.device}")
    return p, q


def check_inputs_kind(inputs: Any) -> str:
    if inputs not in INPUT_KINDS:
        raise ValueError(f"`inputs` must be one of {INPUT_KINDS}, got {inputs!r}")
    return inputs


def check_reduction(reduction: Any) -> str:
    if reduction not in REDUCTIONS:
        raise ValueError(f"`reduction` must be one of {REDUCTIONS}, got {reduction!r}")
    return reduction


def check_temperature(temperature: Any) -> float:
    return check_positive_scalar(temperature, "temperature")  # type: ignore[return-value]


def check_mask(mask: Any, leading_shape: torch.Size, device: torch.device) -> Tensor | None:
    if mask is None:
        return None
    if not isinstance(mask, Tensor) or mask.dtype != torch.bool:
        got = mask.dtype if isinstance(mask, Tensor) else type(mask).__name__
        raise ValueError(
            f"`mask` must be a bool tensor of the leading shape {tuple(leading_shape)} "
            f"(True = keep the row), got {got}"
        )
    if mask.shape != leading_shape:
        raise ValueError(
            f"`mask` must have the leading shape {tuple(leading_shape)} of the inputs (all but "
            f"the class axis), got {tuple(mask.shape)}"
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
    if chunk_size is not None and (
        isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1
    ):
        raise ValueError(f"`chunk_size` must be a positive integer (rows), got {chunk_size!r}")
    return chunk_size


def check_row_options(
    *,
    reduction: Any,
    temperature: Any,
    normalizer: Any,
    mask: Any,
    leading_shape: torch.Size,
    device: torch.device,
) -> tuple[float, float | Tensor | None, Tensor | None]:
    """Validate the options every row-wise entry point shares.

    Returns ``(temperature, normalizer, keep_mask)``; raises the same ``ValueError``s as the
    individual checks.
    """
    check_reduction(reduction)
    temperature = check_temperature(temperature)
    norm = check_normalizer(normalizer, reduction)
    keep = check_mask(mask, leading_shape, device)
    return temperature, norm, keep


ENGINES: tuple[str, ...] = ("auto", "chunked", "reference")


def check_engine(engine: Any) -> str | None:
    """``None`` (the process default, :func:`divergent.set_engine`) or one of :data:`ENGINES`."""
    if engine is not None and engine not in ENGINES:
        raise ValueError(f"`engine` must be one of {ENGINES} or None, got {engine!r}")
    return engine


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


def check_no_nan(x: Tensor, name: str) -> None:
    if bool(torch.isnan(x).any()):
        raise ValueError(f"`{name}` contains NaN values")


def to_log_probs(
    x: Tensor, inputs: str, temperature: float, dtype: torch.dtype, name: str
) -> Tensor:
    """Normalised log-probabilities in ``dtype`` from logits / log-probs / probs.

    ``temperature`` divides the logits (for ``log_probs``/``probs`` it divides the log-probs,
    i.e. p^(1/T) renormalised). Log-probs at T = 1 are used as given (not renormalised).
    """
    x = x.to(dtype)
    if inputs == "probs":
        if bool((x < 0).any()):
            raise ValueError(
                f"`{name}` has negative entries (min {float(x.min()):g}) but inputs='probs' "
                "expects probabilities >= 0; pass logits with inputs='logits'"
            )
        # log(0) = -inf with a zero (not NaN) gradient at the zero entries
        pos = x > 0
        if not bool(pos.any(-1).all()):
            raise ValueError(
                f"`{name}` has a row with no positive entry but inputs='probs' expects each row "
                "to be a distribution (some probability > 0)"
            )
        x = torch.where(pos, torch.log(torch.where(pos, x, 1.0)), -math.inf)
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

"""Validation and helpers shared by the sample-based estimators (kNN, KDE, kernels).

Samples are numpy arrays or torch tensors whose rows are points: shape ``(n, d)``; a 1-D
array of length n is n points in one dimension. The same rules hold for every estimator:

* **dtypes.** Floating inputs keep their dtype where an estimator computes in it (half types
  are upcast to float32); **integer inputs (numpy or torch) become float64** (exact up to
  2⁵³), numpy floats become float64; bools, strings and objects are a ``ValueError``.
* **results.** Every estimator returns a **0-d torch tensor** on the inputs' device, in
  :func:`result_dtype` of its inputs (float64 for numpy or integer input, else the floating
  dtype), whether or not it is differentiable; ``float(...)`` gives the Python number.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

from divergent._validation import check_int, check_positive_scalar, check_same_device

__all__ = [
    "IntervalEstimate",
    "as_points",
    "as_result",
    "check_same_dim",
    "result_dtype",
    "subsampling_ci",
]


class IntervalEstimate(NamedTuple):
    """A point estimate with a confidence interval ``[low, high]`` at ``level``."""

    value: float
    low: float
    high: float
    level: float


def as_points(
    x: Any, name: str, *, dtype: torch.dtype | None = torch.float64, min_rows: int = 1
) -> Tensor:
    """``x`` as a 2-D floating tensor ``(n, d)`` (rows are points), validated.

    numpy input becomes a CPU tensor; torch input keeps its device (and graph). ``dtype=None``
    keeps a floating torch dtype (half types are upcast to float32; numpy → float64).
    """
    if isinstance(x, Tensor):
        t = x
        if not (torch.is_floating_point(t) or t.dtype in _INT_DTYPES):
            raise ValueError(f"`{name}` must hold real numbers, got dtype {t.dtype}")
    else:
        try:
            arr = np.asarray(x)
        except Exception as e:  # pragma: no cover - exotic inputs
            raise ValueError(f"`{name}` must be a numpy array or torch tensor: {e}") from e
        if arr.dtype == object or not (
            np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)
        ):
            raise ValueError(
                f"`{name}` must be a numeric numpy array or torch tensor (rows are points), "
                f"got {type(x).__name__} of dtype {arr.dtype}"
            )
        t = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float64))
    if t.dim() == 1:
        t = t[:, None]
    if t.dim() != 2:
        raise ValueError(
            f"`{name}` must be 2-D (n points × d dimensions) or 1-D (n scalars), got shape "
            f"{tuple(t.shape)}"
        )
    if t.shape[0] < min_rows:
        raise ValueError(f"`{name}` needs at least {min_rows} points (rows), got {t.shape[0]}")
    if t.shape[1] == 0:
        raise ValueError(f"`{name}` has zero dimensions (shape {tuple(t.shape)})")
    if dtype is not None:
        t = t.to(dtype)
    elif not torch.is_floating_point(t):
        t = t.to(torch.float64)  # integers: exact in float64, as numpy integer input
    elif t.dtype in (torch.float16, torch.bfloat16):
        t = t.to(torch.float32)
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"`{name}` contains NaN or infinite values; every point must be finite")
    return t


_INT_DTYPES = (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8)


def result_dtype(*inputs: Any) -> torch.dtype:
    """The dtype of an estimator's result: float64 if any input is numpy, integer or float64,
    float32 for float32 / half inputs."""
    for x in inputs:
        if not isinstance(x, Tensor) or not torch.is_floating_point(x) or x.dtype == torch.float64:
            return torch.float64
    return torch.float32


def as_result(value: float, *inputs: Any) -> Tensor:
    """A Python number as the 0-d tensor every sample estimator returns (see the module doc)."""
    device = next((x.device for x in inputs if isinstance(x, Tensor)), torch.device("cpu"))
    return torch.tensor(value, dtype=result_dtype(*inputs), device=device)


def check_same_dim(x: Tensor, y: Tensor, x_name: str = "x", y_name: str = "y") -> None:
    if x.shape[1] != y.shape[1]:
        raise ValueError(
            f"`{x_name}` and `{y_name}` must have the same dimension (columns), got "
            f"{x.shape[1]} and {y.shape[1]}"
        )
    check_same_device(x, x_name, y, y_name)


def check_level(level: Any) -> float:
    what = "a confidence level in (0, 1), e.g. 0.95"
    value = check_positive_scalar(level, "ci_level", what=what)
    if not value < 1:
        raise ValueError(f"`ci_level` must be a number in (0, 1), e.g. 0.95, got {level!r}")
    return value


def subsampling_ci(
    estimator: Callable[..., float],
    x: Any,
    y: Any = None,
    *,
    level: float = 0.95,
    n_subsamples: int = 200,
    fraction: float | None = None,
    seed: int = 0,
    **kwargs: Any,
) -> IntervalEstimate:
    r"""Subsampling confidence interval for a sample-based estimator (Politis–Romano).

    Draws ``n_subsamples`` subsets without replacement of size :math:`s = \lceil n^{2/3}\rceil`
    of ``x`` (and, independently, of ``y``; or ``fraction``·n if given), recomputes the estimate
    :math:`\hat\theta_s` on each, and inverts the subsampling distribution of
    :math:`\sqrt{s}(\hat\theta_s - \hat\theta_n)` assuming a :math:`\sqrt n` rate:

    .. math::

        \Big[\hat\theta_n - \sqrt{s/n}\; q_{1-\alpha/2},\;
             \hat\theta_n - \sqrt{s/n}\; q_{\alpha/2}\Big],

    where q are quantiles of :math:`\hat\theta_s - \hat\theta_n`. Subsampling (not the
    bootstrap) is used because resampling *with* replacement creates duplicate points, which
    biases nearest-neighbour and leave-one-out estimators. The interval is only as good as the
    √n assumption (kNN estimators converge more slowly when d is large) and it also carries the
    estimator's small-sample bias difference between s and n.

    Args:
        estimator: ``estimator(x, **kwargs)`` or ``estimator(x, y, **kwargs)`` → float.
        x, y: samples (rows are points); ``y=None`` for one-sample estimators (entropy).
        level: confidence level in (0, 1).
        n_subsamples: number of subsets (≥ 10).
        fraction: subset size as a fraction of n in (0, 1); default n^{2/3}.
        seed: seed of the subset draws (deterministic).

    Returns:
        :class:`IntervalEstimate` ``(value, low, high, level)``.

    References:
        D. N. Politis, J. P. Romano, "Large sample confidence regions based on subsamples under
        minimal assumptions", Ann. Statist. 22(4), 1994; the kldest R package
        (``kld_ci_subsampling``) for the use with KL estimators.
    """
    level = check_level(level)
    n_subsamples = check_int(n_subsamples, "n_subsamples", 10)
    fraction = check_positive_scalar(fraction, "fraction", allow_none=True, what="a share < 1")
    if fraction is not None and not fraction < 1:
        raise ValueError(f"`fraction` must be None or a number in (0, 1), got {fraction!r}")
    samples = [as_points(x, "x", dtype=None)]
    if y is not None:
        samples.append(as_points(y, "y", dtype=None))
    full = float(estimator(*samples, **kwargs))
    rng = np.random.default_rng(seed)
    sizes = []
    for s in samples:
        n = s.shape[0]
        size = math.ceil(fraction * n) if fraction is not None else math.ceil(n ** (2.0 / 3.0))
        sizes.append(min(max(size, 2), n))
    reps = np.empty(n_subsamples)
    for b in range(n_subsamples):
        sub = [
            s[torch.from_numpy(rng.choice(s.shape[0], size, replace=False)).to(s.device)]
            for s, size in zip(samples, sizes)
        ]
        reps[b] = float(estimator(*sub, **kwargs))
    # rate √s/√n with s the subset size of x (the sample the estimator averages over)
    scale = math.sqrt(sizes[0] / samples[0].shape[0])
    alpha = 1.0 - level
    q_lo, q_hi = np.quantile(reps - full, [alpha / 2, 1 - alpha / 2])
    return IntervalEstimate(full, float(full - scale * q_hi), float(full - scale * q_lo), level)

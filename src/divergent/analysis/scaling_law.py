r"""Saturating power laws :math:`L(x) = L_\infty + (x_0/x)^\alpha` and their least-squares fit.

Henighan et al. (2020) fit the loss of generative models against model size, data size or
compute with this form and read it information-theoretically: the cross-entropy loss is
:math:`S(\text{true}) + \mathrm{KL}(\text{true}\|\text{model})`, so the fitted
:math:`L_\infty` estimates the entropy of the data and :math:`(x_0/x)^\alpha` the KL
(the *reducible* loss).

References:
    Henighan, Kaplan, Katz, et al. (2020), "Scaling laws for autoregressive generative
    modeling", arXiv 2010.14701, Eq. (1.1).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["ScalingLawFit", "fit_scaling_law", "scaling_law"]


@dataclass(frozen=True)
class ScalingLawFit:
    r"""Result of :func:`fit_scaling_law`.

    Attributes:
        l_inf: the irreducible loss :math:`L_\infty`.
        x0: the scale :math:`x_0` (same unit as x).
        alpha: the exponent :math:`\alpha > 0`.
        rmse: root-mean-square residual of the fit, in loss units.
    """

    l_inf: float
    x0: float
    alpha: float
    rmse: float

    def __call__(self, x: float | Sequence[float] | np.ndarray) -> np.ndarray:
        """The fitted :math:`L(x)`."""
        return scaling_law(x, self.l_inf, self.x0, self.alpha)

    def reducible(self, x: float | Sequence[float] | np.ndarray) -> np.ndarray:
        r"""The fitted reducible loss :math:`(x_0/x)^\alpha`."""
        return scaling_law(x, 0.0, self.x0, self.alpha)


def _as_positive_array(x: float | Sequence[float] | np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64)
    if not np.all(np.isfinite(arr)) or np.any(arr <= 0):
        raise ValueError(f"`{name}` must be finite and > 0, got {x!r}")
    return arr


def scaling_law(
    x: float | Sequence[float] | np.ndarray, l_inf: float, x0: float, alpha: float
) -> np.ndarray:
    r"""Evaluate :math:`L(x) = L_\infty + (x_0/x)^\alpha` (Henighan et al. 2020, Eq. 1.1).

    Args:
        x: sizes (parameters, tokens, compute), > 0.
        l_inf: irreducible loss :math:`L_\infty`.
        x0: scale :math:`x_0 > 0`.
        alpha: exponent :math:`\alpha > 0`.

    Returns:
        ``L(x)`` as a float64 array of x's shape.

    Example:
        >>> float(scaling_law(100.0, 1.5, 10.0, 0.5))
        1.816227766016838
    """
    xs = _as_positive_array(x, "x")
    if not (math.isfinite(x0) and x0 > 0):
        raise ValueError(f"`x0` must be finite and > 0, got {x0!r}")
    if not (math.isfinite(alpha) and alpha > 0):
        raise ValueError(f"`alpha` must be finite and > 0, got {alpha!r}")
    if not math.isfinite(l_inf):
        raise ValueError(f"`l_inf` must be finite, got {l_inf!r}")
    return l_inf + np.exp(alpha * (math.log(x0) - np.log(xs)))


def fit_scaling_law(
    x: Sequence[float] | np.ndarray,
    loss: Sequence[float] | np.ndarray,
    *,
    alpha_starts: Sequence[float] = (0.25, 0.5, 1.0, 2.0),
) -> ScalingLawFit:
    r"""Least-squares fit of :math:`L(x) = L_\infty + (x_0/x)^\alpha` to measured losses.

    .. math:: \min_{L_\infty,\,x_0,\,\alpha}\ \sum_i \big(L_i - L_\infty - (x_0/x_i)^\alpha\big)^2,
              \quad 0 \le L_\infty \le \min_i L_i,\ \alpha > 0

    solved by ``scipy.optimize.least_squares`` in :math:`(L_\infty, \log x_0, \alpha)` from
    several starting exponents (the best residual wins), residuals in loss units as in
    Henighan et al. (2020).

    Args:
        x: sizes, > 0 (at least 4 distinct values: the model has 3 parameters).
        loss: measured losses, finite, same length.
        alpha_starts: starting exponents of the multi-start.

    Returns:
        A :class:`ScalingLawFit`.

    References:
        Henighan et al. (2020), arXiv 2010.14701.

    Example:
        >>> xs = [10.0, 30.0, 100.0, 300.0, 1000.0, 3000.0]
        >>> fit = fit_scaling_law(xs, scaling_law(xs, 1.2, 20.0, 0.7))
        >>> round(fit.l_inf, 6), round(fit.x0, 4), round(fit.alpha, 6)
        (1.2, 20.0, 0.7)
    """
    from scipy.optimize import least_squares

    xs = _as_positive_array(x, "x")
    ls = np.asarray(loss, dtype=np.float64)
    if xs.ndim != 1 or ls.shape != xs.shape:
        raise ValueError(
            f"`x` and `loss` must be 1-d of the same length, got shapes {xs.shape} and {ls.shape}"
        )
    if not np.all(np.isfinite(ls)):
        raise ValueError(f"`loss` must be finite, got {loss!r}")
    if np.unique(xs).size < 4:
        raise ValueError(
            f"need at least 4 distinct sizes to fit 3 parameters, got {np.unique(xs).size}"
        )
    if not alpha_starts or any(a <= 0 for a in alpha_starts):
        raise ValueError(f"`alpha_starts` must be non-empty and > 0, got {alpha_starts!r}")
    log_x = np.log(xs)
    l_min = float(ls.min())
    span = float(ls.max() - l_min)

    def residual(theta: np.ndarray) -> np.ndarray:
        l_inf, log_x0, alpha = theta
        return l_inf + np.exp(alpha * (log_x0 - log_x)) - ls

    lower = [0.0 if l_min >= 0 else -np.inf, -200.0, 1e-4]
    upper = [l_min, 200.0, 20.0]
    best = None
    for a0 in alpha_starts:
        l0 = max(l_min - 0.1 * max(span, 1e-12), lower[0])
        first = max(float(ls[np.argmin(xs)]) - l0, 1e-12)
        log_x0 = float(log_x.min()) + math.log(first) / a0
        theta0 = np.clip([l0, log_x0, a0], [lo + 1e-12 for lo in lower[:1]] + lower[1:], upper)
        sol = least_squares(
            residual,
            theta0,
            bounds=(lower, upper),
            method="trf",
            x_scale="jac",
            xtol=1e-15,
            ftol=1e-15,
            gtol=1e-15,
            max_nfev=20000,
        )
        if best is None or sol.cost < best.cost:
            best = sol
    assert best is not None
    l_inf, log_x0, alpha = (float(v) for v in best.x)
    rmse = float(np.sqrt(np.mean(best.fun**2)))
    return ScalingLawFit(l_inf=l_inf, x0=math.exp(log_x0), alpha=alpha, rmse=rmse)

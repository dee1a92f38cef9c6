r"""Diagnostics of kernel density estimates in large dimensions (Biroli & Mézard 2024).

For the Gaussian KDE :math:`\hat\rho_h(x) = \frac1n\sum_i \mathcal N(x; y_i, h^2 I_d)` the
estimate at a point x is a sum of n random terms. With :math:`n = e^{\alpha d}` and
:math:`d\to\infty` that sum behaves like the partition function of a random energy model: for
large h it obeys the central limit theorem, below :math:`h_\mathrm{CLT}(\alpha)` its fluctuations
are heavy-tailed (α-stable), and below :math:`h_G(\alpha)` a few data points carry the sum
(extreme-value statistics, "condensation").

* :func:`kde_participation_ratio` measures which regime a KDE is in at given points: the
  participation ratio of the kernel weights (≈ 0 when many points contribute, O(1) when a few
  do), computed with the core's :func:`divergent.kde_log_density`.
* :func:`gaussian_kde_regimes` and :func:`gaussian_kde_kl_per_dim` give the large-d predictions
  for :math:`\rho = \mathcal N(0, I_d)` data. **They are derived here** (large-deviation /
  random-energy-model analysis, Derrida 1981; Bovier, Kurkova & Löwe 2002), not copied from
  Biroli & Mézard: the formula notes this module was written from do not state the paper's
  explicit thresholds. The derivation is in the docstrings so it can be checked.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np
import torch
from scipy.optimize import brentq
from torch import Tensor

from divergent.samples._points import as_points
from divergent.samples.kde import kde_log_density

__all__ = [
    "GaussianKDERegimes",
    "argmin_log_parabola",
    "gaussian_kde_kl_per_dim",
    "gaussian_kde_regimes",
    "kde_participation_ratio",
]


def kde_participation_ratio(x: Any, data: Any, bandwidth: Any) -> Tensor:
    r"""Participation ratio :math:`Y_2(x)` of the Gaussian-KDE weights at the points x.

    .. math::

        w_i(x) = \frac{e^{-\|x-y_i\|^2/2h^2}}{\sum_j e^{-\|x-y_j\|^2/2h^2}},\qquad
        Y_2(x) = \sum_i w_i(x)^2 \in [1/n, 1],

    :math:`1/Y_2` being the effective number of data points that make up
    :math:`\hat\rho_h(x)`. Computed without forming the weights, from two KDE log-densities
    (:func:`divergent.kde_log_density`): :math:`\sum_i e^{-D_i/h^2}` is the kernel sum at
    bandwidth :math:`h/\sqrt2`, so

    .. math::

        \log Y_2 = \log\hat\rho_{h/\sqrt2}(x) - 2\log\hat\rho_h(x) - \log n - d\log h
            - \tfrac d2\log(4\pi).

    Args:
        x: query points ``(n_x, d)``; data: the sample ``(n, d)``; numpy or torch.
        bandwidth: h > 0, or a 1-D array of bandwidths.

    Returns:
        ``(n_x,)`` (or ``(H, n_x)`` for H bandwidths), float64 for numpy input.

    Example:
        >>> import numpy as np
        >>> from divergent.analysis.kde_regimes import kde_participation_ratio
        >>> data = np.array([[0.0], [10.0]])
        >>> kde_participation_ratio(np.array([[0.0], [5.0]]), data, 1.0)  # one point / both
        tensor([1.0000, 0.5000], dtype=torch.float64)

    References:
        G. Biroli, M. Mézard, "Kernel Density Estimators in Large Dimensions", arXiv 2408.05807
        (2024); B. Derrida, "Random-energy model", Phys. Rev. B 24 (1981) (participation ratio).
    """
    dt = as_points(data, "data", dtype=None)
    xt = as_points(x, "x", dtype=None)
    if isinstance(bandwidth, str):
        raise ValueError(
            f"`bandwidth` must be a number > 0 or a 1-D array of them, got "
            f"{bandwidth!r} (resolve a rule with divergent.kde_bandwidth first)"
        )
    many = isinstance(bandwidth, (list, tuple, np.ndarray)) or (
        isinstance(bandwidth, Tensor) and bandwidth.dim() == 1
    )
    h = torch.as_tensor(
        np.atleast_1d(
            np.asarray(
                bandwidth.detach().cpu() if isinstance(bandwidth, Tensor) else bandwidth,
                dtype=np.float64,
            )
        )
    )
    if h.dim() != 1 or h.numel() == 0 or not bool((torch.isfinite(h) & (h > 0)).all()):
        raise ValueError(f"`bandwidth` must be finite numbers > 0, got {bandwidth!r}")
    n, d = dt.shape
    both = torch.cat([h, h / math.sqrt(2.0)]).numpy()
    lp = kde_log_density(xt, dt, both)  # (2H, n_x), distances computed once
    k = h.numel()
    hh = h.to(lp.dtype)[:, None]
    log_y2 = (
        lp[k:] - 2.0 * lp[:k] - math.log(n) - d * torch.log(hh) - 0.5 * d * math.log(4 * math.pi)
    )
    y2 = torch.exp(log_y2).clamp(max=1.0)
    return y2 if many else y2[0]


# --------------------------------------------------------------------------------------------
# large-d predictions for ρ = N(0, I_d) data and a Gaussian kernel of width h
# --------------------------------------------------------------------------------------------
def _log_mgf(lam: float) -> float:
    """Λ(λ) = E_x log E_y exp(−λ (x − y)²), x, y ~ N(0, 1) (per coordinate)."""
    return -0.5 * math.log1p(2 * lam) - lam / (1 + 2 * lam)


def _tilted_energy(lam: float) -> float:
    """e*(λ) = −Λ'(λ): the per-coordinate energy that dominates Σ_i exp(−λ d e_i)."""
    u = 1.0 / (1.0 + 2.0 * lam)
    return u + u * u


def _rate_at_tilt(lam: float) -> float:
    """Cramér rate I(e*(λ)) = −λ e*(λ) − Λ(λ) of the per-coordinate energy."""
    return -lam * _tilted_energy(lam) - _log_mgf(lam)


class GaussianKDERegimes(NamedTuple):
    r"""Large-d bandwidths for N(0, I_d) data at :math:`\alpha = \log n / d` (see
    :func:`gaussian_kde_regimes`); the participation ratio is the predicted mean
    :math:`Y_2` at :math:`h_\mathrm{KL}`."""

    alpha: float
    h_kl: float
    h_g: float
    h_clt: float
    e_min: float
    participation_at_h_kl: float
    kl_per_dim_at_h_kl: float


def _check_alpha(alpha: Any) -> float:
    if (
        isinstance(alpha, bool)
        or not isinstance(alpha, (int, float, np.floating))
        or not (math.isfinite(alpha) and 0 < alpha <= 20)
    ):
        raise ValueError(f"`alpha` = log(n)/d must be a number in (0, 20], got {alpha!r}")
    return float(alpha)


def gaussian_kde_regimes(alpha: float) -> GaussianKDERegimes:
    r"""Predicted regime thresholds and KL-optimal bandwidth, N(0, I_d) data, d → ∞.

    Set-up: data :math:`y_i \sim \mathcal N(0, I_d)`, :math:`n = e^{\alpha d}`, Gaussian
    kernel of width h, a typical test point x ~ ρ (:math:`\|x\|^2/d \to 1`). With
    :math:`e_i = \|x-y_i\|^2/d` and :math:`c = 1/(2h^2)`,
    :math:`\hat\rho_h(x) \propto \frac1n\sum_i e^{-c\,d\,e_i}`, a random-energy-model sum. The
    per-coordinate log-moment generating function and the Cramér rate of :math:`e_i` are

    .. math::

        \Lambda(\lambda) = -\tfrac12\log(1+2\lambda) - \frac{\lambda}{1+2\lambda},\qquad
        e^*(\lambda) = -\Lambda'(\lambda) = u + u^2,\ u = \frac1{1+2\lambda},\qquad
        I(e^*(\lambda)) = -\lambda e^*(\lambda) - \Lambda(\lambda).

    * Condensation (extreme-value regime) sets in when the energy that dominates the sum is
      rarer than 1/n: :math:`I(e^*(c_G)) = \alpha`, :math:`h_G = (2c_G)^{-1/2}`; the lowest
      energy present is :math:`e_\min = e^*(c_G)` (:math:`I(e_\min) = \alpha`).
    * The CLT holds while the *second* moment is dominated by terms that exist, i.e. tilt 2c
      is not condensed (the REM's :math:`\beta < \beta_c/2`): :math:`c_\mathrm{CLT} = c_G/2`,
      :math:`h_\mathrm{CLT} = \sqrt2\,h_G`. Between the two, α-stable fluctuations.
    * :math:`\frac1d\mathbb E\log\hat\rho_h = \frac1d\log Z - \alpha - \log h - \frac12\log
      2\pi` with :math:`\frac1d\log Z = \alpha + \Lambda(c)` for h ≥ h_G and
      :math:`-c\,e_\min` below. The annealed branch always improves as h decreases (its
      slope has the sign of :math:`e^* - h^2 < 0`), the condensed one is maximal at
      :math:`h_\mathrm{KL}^2 = e_\min`, which is therefore below h_G (in the extreme-value
      regime), with :math:`\frac1d\mathrm{KL}(\rho\|\hat\rho_{h_\mathrm{KL}}) = \alpha +
      \tfrac12\log e_\min`.
    * In the condensed phase the weights are Poisson–Dirichlet with parameter
      :math:`m = c_G/c`, so :math:`\mathbb E\,Y_2 = 1 - m` (Derrida 1981).

    Derived here (not taken from Biroli & Mézard, whose explicit formulas the project's notes
    do not give); leading order in d only.

    Args:
        alpha: :math:`\log n / d` in (0, 20].

    Returns:
        :class:`GaussianKDERegimes` ``(alpha, h_kl, h_g, h_clt, e_min,
        participation_at_h_kl, kl_per_dim_at_h_kl)``.

    Example:
        >>> from divergent.analysis.kde_regimes import gaussian_kde_regimes
        >>> r = gaussian_kde_regimes(0.2)
        >>> round(r.h_kl, 3), round(r.h_g, 3), round(r.h_clt, 3)
        (0.892, 1.046, 1.479)

    References:
        G. Biroli, M. Mézard, arXiv 2408.05807 (2024) (the three regimes); B. Derrida,
        Phys. Rev. B 24, 2613 (1981); A. Bovier, I. Kurkova, M. Löwe, "Fluctuations of the free
        energy in the REM and the p-spin SK models", Ann. Probab. 30 (2002).
    """
    a = _check_alpha(alpha)
    # I(e*(λ)) increases from 0 (λ = 0) to ∞ (λ → ∞): solve I(e*(c_G)) = α in log λ
    c_g = math.exp(brentq(lambda s: _rate_at_tilt(math.exp(s)) - a, -40.0, 60.0, xtol=1e-14))
    e_min = _tilted_energy(c_g)
    h_g = math.sqrt(1.0 / (2.0 * c_g))
    h_kl = math.sqrt(e_min)
    c_kl = 1.0 / (2.0 * e_min)
    return GaussianKDERegimes(
        alpha=a,
        h_kl=h_kl,
        h_g=h_g,
        h_clt=math.sqrt(2.0) * h_g,
        e_min=e_min,
        participation_at_h_kl=1.0 - c_g / c_kl,
        kl_per_dim_at_h_kl=a + 0.5 * math.log(e_min),
    )


def gaussian_kde_kl_per_dim(h: Any, alpha: float) -> np.ndarray:
    r"""Predicted :math:`\frac1d\mathrm{KL}(\rho\|\hat\rho_h)` for N(0, I_d) data, d → ∞.

    .. math::

        \frac1d\mathrm{KL} = \begin{cases}
            \tfrac12\big[\log(1+h^2) + \frac1{1+h^2} - 1\big] & h \ge h_G(\alpha)
              \quad(=\mathrm{KL}(\mathcal N(0,1)\|\mathcal N(0,1+h^2)))\\
            \alpha + \log h + \frac{e_\min(\alpha)}{2h^2} - \tfrac12 & h < h_G(\alpha)
        \end{cases}

    (see :func:`gaussian_kde_regimes` for :math:`h_G`, :math:`e_\min` and the derivation;
    derived here, leading order in d).

    Args:
        h: bandwidth(s) > 0 (scalar or array).
        alpha: :math:`\log n / d` in (0, 20].

    Returns:
        A numpy array of the shape of ``h``.

    References:
        Biroli & Mézard, arXiv 2408.05807 (2024); Derrida, Phys. Rev. B 24 (1981).
    """
    r = gaussian_kde_regimes(alpha)
    hs = np.asarray(h, dtype=np.float64)
    if hs.size == 0 or not np.all(np.isfinite(hs) & (hs > 0)):
        raise ValueError(f"`h` must be finite numbers > 0, got {h!r}")
    annealed = 0.5 * (np.log1p(hs**2) + 1.0 / (1.0 + hs**2) - 1.0)
    condensed = r.alpha + np.log(hs) + r.e_min / (2.0 * hs**2) - 0.5
    return np.where(hs >= r.h_g, annealed, condensed)


def argmin_log_parabola(grid: Any, values: Any) -> float:
    """Minimiser of a curve sampled on an increasing positive grid, refined in log space.

    The vertex of the parabola through the three points around the grid minimum (in log h),
    clipped to those points; the grid point itself at an edge of the grid or when the three
    points are not convex.

    >>> h = np.exp(np.linspace(-1.0, 1.0, 21))
    >>> round(argmin_log_parabola(h, (np.log(h) - 0.33) ** 2), 6)
    1.390968
    """
    hs = np.asarray(grid, dtype=np.float64)
    vals = np.asarray(values, dtype=np.float64)
    if hs.ndim != 1 or hs.shape != vals.shape or len(hs) < 3 or not (hs > 0).all():
        raise ValueError(
            "`grid` must be 1-D, positive, with ≥ 3 points and the shape of `values`, got "
            f"shapes {hs.shape} and {vals.shape}"
        )
    if not np.isfinite(vals).all():
        raise ValueError("`values` must be finite")
    i = int(np.argmin(vals))
    if i == 0 or i == len(hs) - 1:
        return float(hs[i])
    t = np.log(hs[i - 1 : i + 2])
    v = vals[i - 1 : i + 2]
    a, b, _ = np.polyfit(t, v, 2)
    if a <= 0:
        return float(hs[i])
    return float(np.exp(np.clip(-b / (2 * a), t[0], t[2])))

r"""Closed forms between Gaussians, and between a Normal and a Laplace.

**Gaussians** (``Normal``, ``MultivariateNormal``, ``LowRankMultivariateNormal``,
``Independent(Normal)``; mixed kinds are compared as full-covariance Gaussians): ``kl``,
``reverse_kl``, ``jeffreys``, ``renyi``, ``alpha``, ``hellinger``, ``bhattacharyya``,
``pearson_chi2``, ``neyman_chi2``, all from the log-affinity

.. math:: \log\int p^a q^{1-a} = -\tfrac12 a(1-a)\,\Delta^\top M^{-1}\Delta
          - \tfrac12\log\frac{|M|}{|\Sigma_P|^{1-a}|\Sigma_Q|^a},
          \qquad M = (1-a)\Sigma_P + a\Sigma_Q,

(+∞ where M is not positive definite: the integral diverges), and the KL in its usual form.
A univariate ``Normal`` counts as a one-dimensional Gaussian. Both sides must have the same
dimension; their batch shapes broadcast.

**2-Wasserstein** between Gaussians given by mean and covariance (singular allowed):
:func:`gaussian_w2`.

**Normal ↔ Laplace**: ``kl``, ``reverse_kl``, ``jeffreys`` in closed form (derived in
:func:`_kl_normal_laplace` and :func:`_kl_laplace_normal`; the pair torch leaves as a TODO).

References:
    Pardo 2006, "Statistical inference based on divergence measures" (Gaussian affinities);
    Gil, Alajaji & Linder 2013, "Rényi divergence measures for commonly used univariate
    continuous distributions".
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping

import torch
from torch import Tensor
from torch.distributions import (
    Distribution,
    Independent,
    Laplace,
    LowRankMultivariateNormal,
    MultivariateNormal,
    Normal,
)

from divergent._validation import check_float_tensor, compute_dtype
from divergent.distributions.registry import (
    KL_NAMES,
    ClosedFormRequest,
    check_broadcastable,
    register_closed_form,
)

__all__ = [
    "GAUSSIAN_NAMES",
    "GAUSSIAN_TYPES",
    "full_params",
    "gauss_kl_full",
    "gaussian_dim",
    "gaussian_w2",
    "is_diag_gaussian",
    "is_gaussian",
    "sum_rightmost",
]

GAUSSIAN_TYPES: tuple[type[Distribution], ...] = (
    Normal,
    MultivariateNormal,
    LowRankMultivariateNormal,
    Independent,
)
FAMILY = "Gaussians (Normal, MultivariateNormal, LowRankMultivariateNormal, Independent(Normal))"


def is_diag_gaussian(d: Distribution) -> bool:
    return isinstance(d, Normal) or (isinstance(d, Independent) and isinstance(d.base_dist, Normal))


def is_gaussian(d: Distribution) -> bool:
    return is_diag_gaussian(d) or isinstance(d, (MultivariateNormal, LowRankMultivariateNormal))


def _diag_params(d: Distribution) -> tuple[Tensor, Tensor, int]:
    """(mean, variance, number of event dims to sum) of Normal / Independent(Normal)."""
    if isinstance(d, Normal):
        return d.loc, d.scale.square(), 0
    assert isinstance(d, Independent) and isinstance(d.base_dist, Normal)
    return d.base_dist.loc, d.base_dist.scale.square(), d.reinterpreted_batch_ndims


def full_params(d: Distribution) -> tuple[Tensor, Tensor]:
    """(mean (…, d), covariance (…, d, d)) of any Gaussian kind."""
    if isinstance(d, (MultivariateNormal, LowRankMultivariateNormal)):
        return d.loc, d.covariance_matrix
    loc, var, k = _diag_params(d)
    if k == 0:
        return loc[..., None], var[..., None, None]
    if k != 1:
        raise ValueError(
            "an Independent(Normal) with reinterpreted_batch_ndims > 1 can only be compared "
            "with another Independent(Normal) of the same event shape"
        )
    return loc, torch.diag_embed(var)


def sum_rightmost(x: Tensor, k: int) -> Tensor:
    return x.sum(tuple(range(-k, 0))) if k > 0 else x


def _diag_log_affinity(a: float, p: Distribution, q: Distribution) -> Tensor:
    r"""log ∫ p^a q^{1−a} for diagonal Gaussians (sum over coordinates); +∞ where it diverges.

    Per coordinate with m = (1−a)s₁² + a s₂² > 0:
    −½ a(1−a) Δ²/m − ½ [log m − (1−a) log s₁² − a log s₂²].
    """
    mu1, v1, k1 = _diag_params(p)
    mu2, v2, k2 = _diag_params(q)
    if k1 != k2:
        raise ValueError("diagonal Gaussians with different event ranks cannot be compared")
    m = (1.0 - a) * v1 + a * v2
    ok = m > 0
    m_safe = torch.where(ok, m, torch.ones_like(m))
    delta = mu1 - mu2
    val = -0.5 * a * (1.0 - a) * delta.square() / m_safe - 0.5 * (
        torch.log(m_safe) - (1.0 - a) * torch.log(v1) - a * torch.log(v2)
    )
    val = torch.where(ok, val, torch.full_like(val, math.inf))
    return sum_rightmost(val, k1)


def _full_log_affinity(a: float, p: Distribution, q: Distribution) -> Tensor:
    r"""log ∫ p^a q^{1−a} for full-covariance Gaussians; +∞ where M = (1−a)Σ₁ + aΣ₂ ⋡ 0.

    .. math:: -\tfrac12 a(1-a)\,\Delta^\top M^{-1}\Delta - \tfrac12\big(\log|M|
              - (1-a)\log|\Sigma_1| - a\log|\Sigma_2|\big)
    """
    mu1, s1 = full_params(p)
    mu2, s2 = full_params(q)
    mu1, mu2 = torch.broadcast_tensors(mu1, mu2)
    s1, s2 = torch.broadcast_tensors(s1, s2)
    m = (1.0 - a) * s1 + a * s2
    chol, info = torch.linalg.cholesky_ex(m)
    ok = info == 0
    eye = torch.eye(m.shape[-1], dtype=m.dtype, device=m.device)
    chol = torch.where(ok[..., None, None], chol, eye)
    delta = (mu1 - mu2)[..., None]
    sol = torch.linalg.solve_triangular(chol, delta, upper=False)
    maha = sol.square().sum((-2, -1))
    logdet_m = 2.0 * torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)
    logdet1 = torch.linalg.slogdet(s1).logabsdet
    logdet2 = torch.linalg.slogdet(s2).logabsdet
    val = -0.5 * a * (1.0 - a) * maha - 0.5 * (logdet_m - (1.0 - a) * logdet1 - a * logdet2)
    return torch.where(ok, val, torch.full_like(val, math.inf))


def gauss_kl_full(mu1: Tensor, s1: Tensor, mu2: Tensor, s2: Tensor) -> Tensor:
    r"""KL(N(μ₁,Σ₁)‖N(μ₂,Σ₂)) = ½[tr(Σ₂⁻¹Σ₁) + Δᵀ Σ₂⁻¹ Δ − d + log|Σ₂| − log|Σ₁|] (broadcasting)."""
    mu1, mu2 = torch.broadcast_tensors(mu1, mu2)
    s1, s2 = torch.broadcast_tensors(s1, s2)
    l2 = torch.linalg.cholesky(s2)
    l1 = torch.linalg.cholesky(s1)
    d = mu1.shape[-1]
    a_mat = torch.linalg.solve_triangular(l2, l1, upper=False)  # L₂⁻¹L₁
    trace = a_mat.square().sum((-2, -1))
    sol = torch.linalg.solve_triangular(l2, (mu2 - mu1)[..., None], upper=False)
    maha = sol.square().sum((-2, -1))
    logdet = 2.0 * (
        torch.log(torch.diagonal(l2, dim1=-2, dim2=-1)).sum(-1)
        - torch.log(torch.diagonal(l1, dim1=-2, dim2=-1)).sum(-1)
    )
    return 0.5 * (trace + maha - d + logdet)


def normal_kl(loc_p: Tensor, var_p: Tensor, loc_q: Tensor, var_q: Tensor) -> Tensor:
    r"""Elementwise :math:`\mathrm{KL}(N(m_p, v_p)\|N(m_q, v_q)) = \tfrac12\big(r + (m_p -
    m_q)^2/v_q - 1 - \log r\big)`, :math:`r = v_p / v_q` (variances, not scales).

    No checks, so NaN in gives NaN out per element (callers that need NaN to pass through
    parameters that ``torch.distributions`` would refuse use it directly).

    Example:
        >>> round(float(normal_kl(torch.tensor(1.0), torch.tensor(1.0), torch.tensor(0.0),
        ...                       torch.tensor(1.0))), 4)
        0.5

    References:
        Kullback (1959), Information Theory and Statistics; the univariate case of the Gaussian
        KL (Pardo 2006, Statistical Inference Based on Divergence Measures).
    """
    ratio = var_p / var_q
    return 0.5 * (ratio + (loc_p - loc_q).square() / var_q - 1.0 - torch.log(ratio))


def _gaussian_kl(p: Distribution, q: Distribution) -> Tensor:
    if is_diag_gaussian(p) and is_diag_gaussian(q):
        mu1, v1, k1 = _diag_params(p)
        mu2, v2, k2 = _diag_params(q)
        if k1 != k2:
            raise ValueError("diagonal Gaussians with different event ranks cannot be compared")
        return sum_rightmost(normal_kl(mu1, v1, mu2, v2), k1)
    mu1, s1 = full_params(p)
    mu2, s2 = full_params(q)
    return gauss_kl_full(mu1, s1, mu2, s2)


LogAffinity = Callable[[float], Tensor]


def _renyi(p: Distribution, q: Distribution, log_aff: LogAffinity, order: float) -> Tensor:
    if order == 1.0:
        return _gaussian_kl(p, q)
    if math.isinf(order):
        raise ValueError(
            "renyi order=inf has no closed form implemented between Gaussians; use a finite "
            "order ≥ 0"
        )
    if order == 0.0:  # −log Q(supp P) = 0: Gaussians have full support
        return torch.zeros_like(log_aff(0.5))
    return log_aff(order) / (order - 1.0)


def _alpha(p: Distribution, q: Distribution, log_aff: LogAffinity, alpha: float) -> Tensor:
    if alpha == 1.0:
        return _gaussian_kl(p, q)
    if alpha == 0.0:
        return _gaussian_kl(q, p)
    return torch.expm1(log_aff(alpha)) / (alpha * (alpha - 1.0))


# name -> D(P‖Q) from (P, Q, the log-affinity a ↦ log ∫ p^a q^{1−a}, the parameters)
_FORMULAS: dict[str, Callable[[Distribution, Distribution, LogAffinity, Mapping], Tensor]] = {
    "kl": lambda p, q, la, prm: _gaussian_kl(p, q),
    "reverse_kl": lambda p, q, la, prm: _gaussian_kl(q, p),
    "jeffreys": lambda p, q, la, prm: _gaussian_kl(p, q) + _gaussian_kl(q, p),
    "renyi": lambda p, q, la, prm: _renyi(p, q, la, prm["order"]),
    "alpha": lambda p, q, la, prm: _alpha(p, q, la, prm["alpha"]),
    "hellinger": lambda p, q, la, prm: -torch.expm1(la(0.5)),  # 1 − ∫ √(pq)
    "bhattacharyya": lambda p, q, la, prm: -la(0.5),  # −log ∫ √(pq)
    "pearson_chi2": lambda p, q, la, prm: torch.expm1(la(2.0)),  # ∫ p²/q − 1
    "neyman_chi2": lambda p, q, la, prm: torch.expm1(la(-1.0)),  # ∫ q²/p − 1
}
GAUSSIAN_NAMES: tuple[str, ...] = tuple(_FORMULAS)


def _gaussian_value(
    name: str, p: Distribution, q: Distribution, params: Mapping[str, float]
) -> Tensor:
    diag = is_diag_gaussian(p) and is_diag_gaussian(q)

    def log_aff(a: float) -> Tensor:
        return _diag_log_affinity(a, p, q) if diag else _full_log_affinity(a, p, q)

    return _FORMULAS[name](p, q, log_aff, params)


def gaussian_dim(d: Distribution) -> int | None:
    """The dimension of a Gaussian as a point in R^d (a Normal is 1-D); None for an
    ``Independent(Normal)`` over more than one event axis (comparable only elementwise)."""
    if isinstance(d, Normal):
        return 1
    if isinstance(d, Independent) and d.reinterpreted_batch_ndims != 1:
        return None
    return d.event_shape[-1]


def _check_gaussian_shapes(p: Distribution, q: Distribution) -> None:
    """Same dimension on both sides (a ``ValueError`` naming both shapes otherwise)."""
    check_broadcastable(p, q)
    if is_diag_gaussian(p) and is_diag_gaussian(q):
        if p.event_shape != q.event_shape:
            raise ValueError(
                f"`P` and `Q` must have the same event shape, got {tuple(p.event_shape)} "
                f"({type(p).__name__}) and {tuple(q.event_shape)} ({type(q).__name__})"
            )
        return
    dim_p, dim_q = gaussian_dim(p), gaussian_dim(q)
    if dim_p is None or dim_q is None:
        raise ValueError(
            "an Independent(Normal) with reinterpreted_batch_ndims > 1 can only be compared "
            "with another Independent(Normal) of the same event shape"
        )
    if dim_p != dim_q:
        raise ValueError(
            f"`P` is a {dim_p}-dimensional Gaussian ({type(p).__name__}, event shape "
            f"{tuple(p.event_shape)}) and `Q` a {dim_q}-dimensional one ({type(q).__name__}, "
            f"event shape {tuple(q.event_shape)}); the dimensions must match"
        )


def _gaussian(p: Distribution, q: Distribution, request: ClosedFormRequest) -> Tensor:
    """The registered handler: declines an ``Independent`` whose base is not a ``Normal``."""
    if not (is_gaussian(p) and is_gaussian(q)):
        return NotImplemented
    _check_gaussian_shapes(p, q)
    return _gaussian_value(request.name, p, q, request.params)


# --------------------------------------------------------------------------------------------
# Normal ↔ Laplace
# --------------------------------------------------------------------------------------------
def _kl_normal_laplace(p: Normal, q: Laplace) -> Tensor:
    r"""KL(N(μ, σ²) ‖ Laplace(m, b)).

    .. math::
        \log\frac{2b}{\sigma} - \tfrac12\log(2\pi e)
        + \frac{1}{b}\Big(\sigma\sqrt{2/\pi}\,e^{-d^2/(2\sigma^2)}
        + d\,\mathrm{erf}\big(d/(\sigma\sqrt2)\big)\Big),\quad d = \mu - m,

    since −H(N) = −½ log(2πeσ²), −E log q = log 2b + E|X − m|/b, and E|d + σZ| is the mean of
    a folded normal.
    """
    sigma, b = p.scale, q.scale
    d = p.loc - q.loc
    # E|d + σZ|: the mean of a folded normal
    folded = sigma * math.sqrt(2.0 / math.pi) * torch.exp(-0.5 * (d / sigma).square())
    folded = folded + d * torch.erf(d / (sigma * math.sqrt(2.0)))
    return torch.log(2.0 * b / sigma) - 0.5 * math.log(2.0 * math.pi * math.e) + folded / b


def _kl_laplace_normal(p: Laplace, q: Normal) -> Tensor:
    r"""KL(Laplace(m, b) ‖ N(μ, σ²)).

    .. math::
        \tfrac12\log(2\pi\sigma^2) - \log(2b) - 1 + \frac{2b^2 + (m-\mu)^2}{2\sigma^2},

    since −H(Laplace) = −log(2be) and E(X − μ)² = 2b² + (m − μ)².
    """
    b, sigma = p.scale, q.scale
    var = sigma.square()
    return (
        0.5 * torch.log(2.0 * math.pi * var)
        - torch.log(2.0 * b)
        - 1.0
        + (2.0 * b.square() + (p.loc - q.loc).square()) / (2.0 * var)
    )


def _normal_laplace(p: Distribution, q: Distribution, request: ClosedFormRequest) -> Tensor:
    """KL / reverse KL / Jeffreys between a Normal and a Laplace (either order)."""
    check_broadcastable(p, q)
    name = request.name

    def kl(x: Distribution, y: Distribution) -> Tensor:
        if isinstance(x, Normal):
            return _kl_normal_laplace(x, y)  # type: ignore[arg-type]
        return _kl_laplace_normal(x, y)  # type: ignore[arg-type]

    if name == "kl":
        return kl(p, q)
    if name == "reverse_kl":
        return kl(q, p)
    return kl(p, q) + kl(q, p)


for _type_p, _type_q in itertools.product(GAUSSIAN_TYPES, repeat=2):
    register_closed_form(_type_p, _type_q, names=GAUSSIAN_NAMES, family=FAMILY, label="gaussian")(
        _gaussian
    )
for _type_p, _type_q in ((Normal, Laplace), (Laplace, Normal)):
    register_closed_form(
        _type_p, _type_q, names=KL_NAMES, family="Normal <-> Laplace", label="normal_laplace"
    )(_normal_laplace)


def check_gaussian_params(
    mean: Tensor, cov: Tensor, mean_name: str, cov_name: str, *, strict: bool = False
) -> Tensor:
    """Validates one Gaussian's (mean, covariance): float tensors, Σ of shape (..., d, d) for
    a mean (..., d), finite entries, Σ symmetric and positive semi-definite (singular
    allowed); each failure a ``ValueError`` naming the argument. ``strict`` (the diffusion
    functions' checks; :func:`gaussian_w2` does not use it) also refuses d = 0 and batch
    shapes of mean and Σ that do not broadcast. Returns the smallest eigenvalue of each
    covariance (float64, batch shape of ``cov``)."""
    check_float_tensor(mean, mean_name, min_dim=1)
    check_float_tensor(cov, cov_name, min_dim=2)
    d = mean.shape[-1]
    if strict and d == 0:
        raise ValueError(
            f"`{mean_name}` must have a non-empty last (dimension) axis, got shape "
            f"{tuple(mean.shape)} (d = 0)"
        )
    if cov.shape[-2:] != (d, d):
        raise ValueError(
            f"`{cov_name}` must be a ({d}, {d}) covariance (the dimension of `{mean_name}`, "
            f"shape {tuple(mean.shape)}), got shape {tuple(cov.shape)}"
        )
    for x, name in ((mean, mean_name), (cov, cov_name)):
        if not bool(torch.isfinite(x).all()):
            kind = "NaN" if bool(torch.isnan(x).any()) else "an infinite value"
            raise ValueError(f"`{name}` contains {kind}; means and covariances must be finite")
    c = cov.detach().to(torch.float64)
    scale = c.abs().amax(dim=(-2, -1)).clamp_min(1.0)
    asym = (c - c.transpose(-1, -2)).abs().amax(dim=(-2, -1))
    if bool((asym > 1e-6 * scale).any()):
        raise ValueError(
            f"`{cov_name}` must be symmetric, got max |Σ − Σᵀ| = {float(asym.max()):.3g}"
        )
    low = torch.linalg.eigvalsh(0.5 * (c + c.transpose(-1, -2)))[..., 0]
    if bool((low < -1e-8 * scale).any()):
        raise ValueError(
            f"`{cov_name}` must be positive semi-definite (singular allowed), got smallest "
            f"eigenvalue {float(low.min()):.3g}"
        )
    if strict:
        try:
            torch.broadcast_shapes(mean.shape[:-1], cov.shape[:-2])
        except RuntimeError:
            raise ValueError(
                f"the batch shapes of `{mean_name}` {tuple(mean.shape[:-1])} and `{cov_name}` "
                f"{tuple(cov.shape[:-2])} do not broadcast"
            ) from None
    return low


def check_gaussian_pair(
    mean_p: Tensor, cov_p: Tensor, mean_q: Tensor, cov_q: Tensor, *, strict: bool = False
) -> tuple[Tensor, Tensor]:
    """Validates two Gaussians P and Q (:func:`check_gaussian_params` each, named
    ``mean_p`` / ``cov_p`` / ``mean_q`` / ``cov_q``) and that they have the same dimension;
    with ``strict`` also that the four batch shapes broadcast together (a ``ValueError``
    listing them). Returns the smallest covariance eigenvalues ``(low_p, low_q)``."""
    low_p = check_gaussian_params(mean_p, cov_p, "mean_p", "cov_p", strict=strict)
    low_q = check_gaussian_params(mean_q, cov_q, "mean_q", "cov_q", strict=strict)
    if mean_p.shape[-1] != mean_q.shape[-1]:
        raise ValueError(
            f"`mean_p` and `mean_q` must have the same dimension, got {mean_p.shape[-1]} and "
            f"{mean_q.shape[-1]}"
        )
    if strict:
        shapes = {
            "mean_p": mean_p.shape[:-1],
            "cov_p": cov_p.shape[:-2],
            "mean_q": mean_q.shape[:-1],
            "cov_q": cov_q.shape[:-2],
        }
        try:
            torch.broadcast_shapes(*shapes.values())
        except RuntimeError:
            listed = ", ".join(f"`{k}` {tuple(v)}" for k, v in shapes.items())
            raise ValueError(f"the batch shapes do not broadcast: {listed}") from None
    return low_p, low_q


def _psd_sqrt(m: Tensor) -> Tensor:
    """Symmetric PSD square root by eigendecomposition (negative rounding clamped to 0)."""
    vals, vecs = torch.linalg.eigh(0.5 * (m + m.transpose(-1, -2)))
    return (vecs * vals.clamp_min(0).sqrt()[..., None, :]) @ vecs.transpose(-1, -2)


def gaussian_w2(mean_p: Tensor, cov_p: Tensor, mean_q: Tensor, cov_q: Tensor) -> Tensor:
    r"""The 2-Wasserstein distance between two Gaussians, in closed form.

    .. math:: W_2^2\big(\mathcal N(\mu_P,\Sigma_P),\,\mathcal N(\mu_Q,\Sigma_Q)\big)
              = \|\mu_P-\mu_Q\|^2 + \operatorname{tr}\Big(\Sigma_P + \Sigma_Q
              - 2\big(\Sigma_Q^{1/2}\Sigma_P\Sigma_Q^{1/2}\big)^{1/2}\Big)

    (the Fréchet distance), square-rooted. The PSD square roots are taken by
    eigendecomposition, so singular covariances are allowed (W2 stays finite between
    distributions with different supports, where the KL is infinite). Symmetric in P and Q;
    computed in float64. Not differentiable where a square root's argument is singular.

    Args:
        mean_p, cov_p: P, shapes (..., d) and (..., d, d); the covariance symmetric PSD.
        mean_q, cov_q: Q, same dimension d; batch shapes broadcast.

    Returns:
        :math:`W_2(P, Q) \ge 0`, of the broadcast batch shape, float64 if any input is
        float64, float32 otherwise.

    Raises:
        ValueError: a non-float tensor, NaN / infinite entries, a covariance whose shape does
            not match its mean, a non-symmetric or non-PSD covariance, or different dimensions
            (the message names the argument).

    Example:
        >>> # |Δμ|² = 2, tr(I + 4I − 2·2I) = 2: W2 = 2
        >>> gaussian_w2(torch.zeros(2), torch.eye(2), torch.ones(2), 4 * torch.eye(2))
        tensor(2.)

    References:
        Dowson & Landau 1982, "The Fréchet distance between multivariate normal
        distributions", J. Multivariate Anal. 12(3); Givens & Shortt 1984, "A class of
        Wasserstein metrics for probability distributions", Michigan Math. J. 31(2).
    """
    check_gaussian_pair(mean_p, cov_p, mean_q, cov_q)
    out_dtype = compute_dtype(mean_p, cov_p, mean_q, cov_q)
    m1, s1, m2, s2 = (x.to(torch.float64) for x in (mean_p, cov_p, mean_q, cov_q))
    root_q = _psd_sqrt(s2)
    cross = _psd_sqrt(root_q @ s1 @ root_q)
    trace = torch.diagonal(s1 + s2 - 2 * cross, dim1=-2, dim2=-1).sum(-1)
    w2sq = (m1 - m2).square().sum(-1) + trace
    return w2sq.clamp_min(0).sqrt().to(out_dtype)

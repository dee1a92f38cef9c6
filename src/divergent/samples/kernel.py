r"""Kernel discrepancies between samples: Cauchy–Schwarz (plain, conditional, mutual information),
MMD and the energy distance.

Samples are numpy arrays or torch tensors with rows as points (a 1-D array is n scalars).
Every function returns a **0-d torch tensor** (float64 for numpy or integer input, else the
input's floating dtype; half types are computed in float32) and is differentiable with respect to
torch inputs, so it can be trained through (CS-IB does). Kernel sums run over row blocks of
at most ~2²² kernel values; when gradients are needed and there is more than one block, each
block is recomputed in the backward pass (activation checkpointing), so memory stays
O(block), never O(n·m).

Kernels: Gaussian :math:`k(a,b) = \exp(-\|a-b\|_2^2/2\sigma^2)`, Laplacian
:math:`k(a,b) = \exp(-\|a-b\|_1/\sigma)` (L1 norm, as scikit-learn's ``laplacian_kernel``
with γ = 1/σ), or a callable. ``sigma=None`` selects the **median heuristic**: σ = the median
of the pairwise distances (Euclidean; L1 for the Laplacian kernel) of the pooled sample,
over at most 1000 points (a fixed-seed subsample beyond that), without gradient
(:func:`median_heuristic`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from divergent._validation import check_bool, check_choice, check_positive_scalar
from divergent.samples._points import as_points, check_same_dim

__all__ = [
    "cauchy_schwarz",
    "cauchy_schwarz_mutual_information",
    "conditional_cauchy_schwarz",
    "energy_distance",
    "median_heuristic",
    "mmd",
]

KERNELS: tuple[str, ...] = ("gaussian", "laplacian")
DENOMINATORS: tuple[str, ...] = ("squared_sum", "sum_of_squares")
_BLOCK_ELEMENTS = 1 << 22
_MEDIAN_POINTS = 1000

KernelLike = str | Callable[[Tensor, Tensor], Tensor]


# --------------------------------------------------------------------------- helpers
def _points(x: Any, name: str) -> Tensor:
    return as_points(x, name, dtype=None)


def _common(*ts: Tensor) -> list[Tensor]:
    dtype = ts[0].dtype
    for t in ts[1:]:
        dtype = torch.promote_types(dtype, t.dtype)
    return [t.to(dtype) for t in ts]


def _sq_dists(a: Tensor, b: Tensor) -> Tensor:
    """‖a_i − b_j‖² via the Gram trick (inputs already centred), clamped at 0."""
    d2 = (a * a).sum(1, keepdim=True) + (b * b).sum(1)[None, :] - 2.0 * (a @ b.T)
    return d2.clamp_min(0.0)


def _row_blocks(
    fn: Callable[[Tensor, Tensor, int], Tensor], a: Tensor, b: Tensor, width: int | None = None
) -> Tensor:
    """``cat([fn(a[s:s+B], b, s) for blocks])``: per-row results, memory O(B × len(b))."""
    n = a.shape[0]
    block = max(1, _BLOCK_ELEMENTS // max(width or b.shape[0], 1))
    need_grad = torch.is_grad_enabled() and (a.requires_grad or b.requires_grad)
    outs = []
    for s in range(0, n, block):
        ab = a[s : s + block]
        if need_grad and n > block:
            outs.append(checkpoint(fn, ab, b, s, use_reentrant=False))
        else:
            outs.append(fn(ab, b, s))
    return torch.cat(outs)


def _check_sigma(sigma: Any, name: str) -> float | None:
    return check_positive_scalar(
        sigma, name, allow_none=True, what="the kernel width; None selects the median heuristic"
    )


def median_heuristic(x: Any, y: Any = None, *, metric: str = "euclidean") -> float:
    r"""Median heuristic kernel width: the median pairwise distance of the pooled sample.

    .. math::

        \sigma = \operatorname{median}\{\|z_i - z_j\| : i < j\},\qquad z = x \cup y,

    over at most 1000 points of z (a fixed-seed random subsample when there are more, so the
    result is deterministic). Falls back to the mean distance when more than half of the pairs
    are at distance 0 (duplicates).

    Args:
        x: points (rows); y: optional second sample, pooled with x.
        metric: ``"euclidean"`` (for the Gaussian kernel) or ``"l1"`` (Laplacian kernel).

    Returns:
        σ as a Python float (no gradient flows through it).

    References:
        A. Gretton et al., "A Kernel Two-Sample Test", JMLR 13 (2012), §8.
    """
    check_choice(metric, "metric", ("euclidean", "l1"))
    z = _points(x, "x").detach()
    if y is not None:
        yt = _points(y, "y").detach()
        check_same_dim(z, yt)
        z, yt = _common(z, yt)
        z = torch.cat([z, yt])
    if z.shape[0] < 2:
        raise ValueError("the median heuristic needs at least 2 points")
    if z.shape[0] > _MEDIAN_POINTS:
        g = torch.Generator().manual_seed(0)
        z = z[torch.randperm(z.shape[0], generator=g)[:_MEDIAN_POINTS].to(z.device)]
    z = z.double()
    p = 1.0 if metric == "l1" else 2.0
    dist = torch.cdist(z, z, p=p, compute_mode="donot_use_mm_for_euclid_dist")
    iu = torch.triu_indices(z.shape[0], z.shape[0], offset=1, device=z.device)
    pairs = dist[iu[0], iu[1]]
    med = float(pairs.median())
    if med <= 0:
        med = float(pairs.mean())
    if med <= 0:
        raise ValueError("all points are identical: no kernel width can be chosen; pass sigma")
    return med


def _log_gauss(sigma: float) -> Callable[[Tensor, Tensor], Tensor]:
    c = 1.0 / (2.0 * sigma * sigma)
    return lambda a, b: -c * _sq_dists(a, b)


def _lse_all(log_k: Callable[[Tensor, Tensor], Tensor], a: Tensor, b: Tensor) -> Tensor:
    """log Σ_ij k(a_i, b_j) from a log-kernel, blocked."""
    rows = _row_blocks(lambda ab, bb, _s: torch.logsumexp(log_k(ab, bb), dim=1), a, b)
    return torch.logsumexp(rows, dim=0)


def _centre(*ts: Tensor) -> list[Tensor]:
    """Subtract one common (detached) mean: distances unchanged, Gram-trick error smaller."""
    c = torch.cat([t.detach() for t in ts]).mean(0)
    return [t - c for t in ts]


# --------------------------------------------------------------------------- Cauchy–Schwarz
def cauchy_schwarz(x: Any, y: Any, sigma: float | None = None) -> Tensor:
    r"""Cauchy–Schwarz divergence between samples, Gaussian-kernel (Parzen) estimator.

    .. math::

        D_\mathrm{CS}(p\|q) = -\log\frac{\big(\int pq\big)^2}{\int p^2\int q^2},\qquad
        \hat D_\mathrm{CS} = -2\log\frac{1}{nm}\sum_{i,j}k(x_i,y_j)
            + \log\frac{1}{n^2}\sum_{i,j}k(x_i,x_j) + \log\frac{1}{m^2}\sum_{i,j}k(y_i,y_j)

    with :math:`k(a,b) = \exp(-\|a-b\|^2/2\sigma^2)` (kernel constants cancel). V-statistics
    (diagonals included), so :math:`\hat D_\mathrm{CS} \ge 0` exactly (Cauchy–Schwarz in the
    RKHS) and 0 iff the two kernel mean embeddings are parallel. Symmetric. Computed by
    log-sum-exp: no underflow for small σ. With Parzen windows of width σ/√2 on both samples
    this is the CS divergence between the two KDEs; it equals :math:`-2\log\cos(\mu_P,\mu_Q)`
    of the kernel mean embeddings.

    Args:
        x: samples of P, ``(n, d)``; y: samples of Q, ``(m, d)``; numpy or torch.
        sigma: kernel width > 0; ``None``: :func:`median_heuristic` of the pooled sample.

    Returns:
        A 0-d tensor (nats), differentiable.

    Example:
        >>> import torch, divergent
        >>> x = torch.tensor([[0.0], [1.0]]); y = torch.tensor([[0.5], [3.0]])
        >>> divergent.cauchy_schwarz(x, y, sigma=1.0)
        tensor(0.6077)

    References:
        J. C. Príncipe, D. Xu, J. W. Fisher III, "Information theoretic learning", in
        Unsupervised Adaptive Filtering (2000); S. Yu et al., "Cauchy–Schwarz Divergence
        Information Bottleneck for Regression", ICLR 2024.
    """
    xt, yt = _points(x, "x"), _points(y, "y")
    check_same_dim(xt, yt)
    xt, yt = _common(xt, yt)
    s = _check_sigma(sigma, "sigma")
    if s is None:
        s = median_heuristic(xt, yt)
    xc, yc = _centre(xt, yt)
    lk = _log_gauss(s)
    n, m = xt.shape[0], yt.shape[0]
    lxy = _lse_all(lk, xc, yc) - math.log(n * m)
    lxx = _lse_all(lk, xc, xc) - 2 * math.log(n)
    lyy = _lse_all(lk, yc, yc) - 2 * math.log(m)
    return -2.0 * lxy + lxx + lyy


def conditional_cauchy_schwarz(
    x: Any,
    y: Any,
    y_hat: Any,
    sigma_x: float | None = None,
    sigma_y: float | None = None,
    *,
    denominator: str = "squared_sum",
) -> Tensor:
    r"""Conditional CS divergence :math:`D_\mathrm{CS}(p(y|x)\|q(\hat y|x))` from paired samples.

    The prediction term of CS-IB: ``(x_j, y_j)`` are samples of p(x, y) and ``(x_j, ŷ_j)`` of
    q(x, ŷ) (the same inputs, the model's predictions). With :math:`K_{ji} = k_{\sigma_x}(x_j,
    x_i)`, :math:`L^1_{ji} = k_{\sigma_y}(y_j, y_i)`, :math:`L^2_{ji} = k_{\sigma_y}(\hat y_j,
    \hat y_i)`, :math:`L^{21}_{ji} = k_{\sigma_y}(\hat y_j, y_i)` (Gaussian kernels):

    .. math::

        \hat D = \log\sum_j\frac{\sum_i K_{ji}L^1_{ji}}{(\sum_i K_{ji})^2}
               + \log\sum_j\frac{\sum_i K_{ji}L^2_{ji}}{(\sum_i K_{ji})^2}
               - 2\log\sum_j\frac{\sum_i K_{ji}L^{21}_{ji}}{(\sum_i K_{ji})^2}.

    This is the KDE plug-in of :math:`\int\!\!\int p(y|x)^2 dx\,dy = \mathbb E_{p(x,y)}[p(x,y)
    /p(x)^2]` and likewise for the other two terms (Yu et al. 2023, Prop. 1 with a shared x
    sample), kernel constants cancelling. ``denominator="sum_of_squares"`` uses
    :math:`\sum_i K_{ji}^2` instead of :math:`(\sum_i K_{ji})^2`, which is what the official
    CS-IB code computes (``(K**2).sum(-1)`` in ``loss_cs.py``); note also that code reports
    bits (log₂) where this returns nats. ŷ = y gives exactly 0; with σ_x → ∞ (x irrelevant)
    it reduces to :func:`cauchy_schwarz` between y and ŷ. Unlike the unconditional
    V-statistic, the estimate is not a Cauchy–Schwarz ratio of one inner product, so it can be
    slightly negative at finite N.

    Args:
        x: inputs, ``(N, d_x)``; y: targets, ``(N, d_y)``; y_hat: predictions, same shape as y.
        sigma_x: width of the x kernel (``None``: median heuristic of x).
        sigma_y: width of the y kernels (``None``: median heuristic of y ∪ ŷ; for training
            prefer a fixed value, CS-IB uses 1 on standardised targets).
        denominator: ``"squared_sum"`` (the derivation; default) or ``"sum_of_squares"``
            (the official code).

    Returns:
        A 0-d tensor (nats), differentiable (with respect to ``y_hat`` in training).

    References:
        S. Yu, H. Li, S. Løkse, R. Jenssen, J. C. Príncipe, "The Conditional Cauchy–Schwarz
        Divergence with Applications to Time-Series Data and Sequential Decision Making",
        arXiv 2301.08970; S. Yu, X. Yu, S. Løkse, R. Jenssen, J. C. Príncipe, "Cauchy–Schwarz
        Divergence Information Bottleneck for Regression", ICLR 2024, Eq. 18.
    """
    xt, yt, yh = _points(x, "x"), _points(y, "y"), _points(y_hat, "y_hat")
    if not (xt.shape[0] == yt.shape[0] == yh.shape[0]):
        raise ValueError(
            "`x`, `y` and `y_hat` must have the same number of rows (paired samples), got "
            f"{xt.shape[0]}, {yt.shape[0]} and {yh.shape[0]}"
        )
    if yt.shape != yh.shape:
        raise ValueError(
            f"`y` and `y_hat` must have the same shape, got {tuple(yt.shape)} and {tuple(yh.shape)}"
        )
    check_choice(denominator, "denominator", DENOMINATORS)
    xt, yt, yh = _common(xt, yt, yh)
    sx, sy = _check_sigma(sigma_x, "sigma_x"), _check_sigma(sigma_y, "sigma_y")
    if sx is None:
        sx = median_heuristic(xt)
    if sy is None:
        sy = median_heuristic(yt, yh)
    (xc,) = _centre(xt)
    yc, hc = _centre(yt, yh)
    lkx, lky = _log_gauss(sx), _log_gauss(sy)
    both = torch.cat([yc, hc], dim=1)
    dy = yt.shape[1]
    squared = denominator == "squared_sum"

    def rows(xb: Tensor, xa: Tensor, s: int) -> Tensor:
        # for the block of rows j: log Σ_i K L¹, log Σ_i K L², log Σ_i K L²¹, log denominator
        b = xb.shape[0]
        lk = lkx(xb, xa)
        yb, hb = both[s : s + b, :dy], both[s : s + b, dy:]
        l1 = torch.logsumexp(lk + lky(yb, yc), dim=1)
        l2 = torch.logsumexp(lk + lky(hb, hc), dim=1)
        l21 = torch.logsumexp(lk + lky(hb, yc), dim=1)
        den = 2.0 * torch.logsumexp(lk, dim=1) if squared else torch.logsumexp(2.0 * lk, dim=1)
        return torch.stack([l1 - den, l2 - den, l21 - den], dim=1)

    per_row = _row_blocks(rows, xc, xc, width=4 * xc.shape[0])  # (N, 3)
    s1, s2, s21 = torch.logsumexp(per_row, dim=0)
    return s1 + s2 - 2.0 * s21


def cauchy_schwarz_mutual_information(
    x: Any,
    t: Any,
    sigma_x: float | None = None,
    sigma_t: float | None = None,
    *,
    normalized: bool = False,
) -> Tensor:
    r"""Cauchy–Schwarz quadratic mutual information :math:`I_\mathrm{CS}(x; t)` from paired samples.

    The CS divergence between the joint p(x, t) and the product p(x)p(t), with Gram matrices
    :math:`K_{ij} = k_{\sigma_x}(x_i, x_j)`, :math:`Q_{ij} = k_{\sigma_t}(t_i, t_j)`:

    .. math::

        \hat I_\mathrm{CS} = \log\frac{\operatorname{tr}(KQ)}{N^2}
            + \log\frac{\mathbf 1^\top K\mathbf 1\;\mathbf 1^\top Q\mathbf 1}{N^4}
            - 2\log\frac{\mathbf 1^\top KQ\mathbf 1}{N^3}\;\ge 0.

    ``normalized=True`` returns :math:`I(x;t)/\sqrt{I(x;x)\,I(t;t)}` (the compression term
    CS-IB trains with). Computed in the log domain, blocked. Nats (the CS-IB code uses log₂).

    Args:
        x: ``(N, d_x)``; t: ``(N, d_t)`` (paired rows).
        sigma_x, sigma_t: kernel widths (``None``: median heuristic of each).
        normalized: divide by the geometric mean of the self-informations.

    Returns:
        A 0-d tensor, differentiable.

    References:
        Yu et al., "Cauchy–Schwarz Divergence Information Bottleneck for Regression", ICLR 2024,
        Prop. 2; J. C. Príncipe, "Information Theoretic Learning" (Springer, 2010), ch. 2.
    """
    xt, tt = _points(x, "x"), _points(t, "t")
    if xt.shape[0] != tt.shape[0]:
        raise ValueError(
            f"`x` and `t` must have the same number of rows (paired samples), got "
            f"{xt.shape[0]} and {tt.shape[0]}"
        )
    check_bool(normalized, "normalized")
    xt, tt = _common(xt, tt)
    sx, st = _check_sigma(sigma_x, "sigma_x"), _check_sigma(sigma_t, "sigma_t")
    if sx is None:
        sx = median_heuristic(xt)
    if st is None:
        st = median_heuristic(tt)
    (xc,) = _centre(xt)
    (tc,) = _centre(tt)
    value = _cs_qmi(xc, tc, _log_gauss(sx), _log_gauss(st))
    if not normalized:
        return value
    ixx = _cs_qmi(xc, xc, _log_gauss(sx), _log_gauss(sx))
    itt = _cs_qmi(tc, tc, _log_gauss(st), _log_gauss(st))
    return value / torch.sqrt(ixx * itt)


def _cs_qmi(a: Tensor, b: Tensor, lka: Callable, lkb: Callable) -> Tensor:
    def rows(ab: Tensor, aa: Tensor, s: int) -> Tensor:
        la = lka(ab, aa)
        lb = lkb(b[s : s + ab.shape[0]], b)
        return torch.stack(
            [
                torch.logsumexp(la + lb, dim=1),  # row of tr(KQ) = Σ_ij K_ij Q_ij
                torch.logsumexp(la, dim=1),  # (K1)_i
                torch.logsumexp(lb, dim=1),  # (Q1)_i
            ],
            dim=1,
        )

    r = _row_blocks(rows, a, a, width=2 * a.shape[0])
    log_tr = torch.logsumexp(r[:, 0], dim=0)
    log_k = torch.logsumexp(r[:, 1], dim=0)
    log_q = torch.logsumexp(r[:, 2], dim=0)
    log_kq = torch.logsumexp(r[:, 1] + r[:, 2], dim=0)  # 1ᵀKQ1 = Σ_i (K1)_i (Q1)_i
    # the powers of N cancel: −2 − 4 + 6
    return log_tr + log_k + log_q - 2.0 * log_kq


# --------------------------------------------------------------------------- MMD
def _kernel_fn(kernel: KernelLike, sigma: float | None, xt: Tensor, yt: Tensor):
    if callable(kernel):
        if sigma is not None:
            raise ValueError(
                "`sigma` is only used by the named kernels; a callable kernel "
                "carries its own parameters (pass sigma=None)"
            )
        return kernel
    check_choice(kernel, "kernel", KERNELS, " or a callable k(a, b) → Gram block")
    if kernel == "gaussian":
        s = sigma if sigma is not None else median_heuristic(xt, yt)
        c = 1.0 / (2.0 * s * s)
        return lambda a, b: torch.exp(-c * _sq_dists(a, b))
    s = sigma if sigma is not None else median_heuristic(xt, yt, metric="l1")
    return lambda a, b: torch.exp(-torch.cdist(a, b, p=1.0) / s)


def mmd(
    x: Any,
    y: Any,
    kernel: KernelLike = "gaussian",
    sigma: float | None = None,
    unbiased: bool = True,
    *,
    squared: bool = True,
) -> Tensor:
    r"""Maximum mean discrepancy between samples: :math:`\mathrm{MMD}^2_k(P, Q)` by default.

    **Squared by default** (``squared=True``, the quantity of Gretton et al.'s test statistic
    and of most MMD losses); ``squared=False`` returns the MMD itself,
    :math:`\sqrt{\max(\widehat{\mathrm{MMD}^2}, 0)}` (the unbiased estimate can be negative
    when P = Q or n is small; its root is then reported as 0, with gradient 0).

    .. math::

        \mathrm{MMD}^2 = \mathbb E k(X,X') + \mathbb E k(Y,Y') - 2\,\mathbb E k(X,Y),

    estimated by the unbiased U-statistic (``unbiased=True``; diagonals excluded,
    :math:`\frac{1}{n(n-1)}\sum_{i\ne j}k(x_i,x_j) + \frac{1}{m(m-1)}\sum_{i\ne j}k(y_i,y_j)
    - \frac{2}{nm}\sum_{i,j}k(x_i,y_j)`; can be negative, it is not clamped) or the biased
    V-statistic (all pairs; ≥ 0, the squared RKHS distance between empirical embeddings).

    Args:
        x: ``(n, d)``; y: ``(m, d)``.
        kernel: ``"gaussian"`` (exp(−‖a−b‖²/2σ²)), ``"laplacian"`` (exp(−‖a−b‖₁/σ)) or a
            callable ``k(a, b)`` returning the ``(len(a), len(b))`` Gram block (differentiable
            torch ops; called on row blocks).
        sigma: width of the named kernels (``None``: median heuristic, L1 for Laplacian).
        unbiased: U-statistic (needs n, m ≥ 2) or V-statistic.
        squared: return :math:`\mathrm{MMD}^2` (default) or its square root.

    Returns:
        A 0-d tensor, differentiable: :math:`\mathrm{MMD}^2` (``squared=True``) or the MMD.

    Example:
        >>> import torch, divergent
        >>> x = torch.tensor([[0.0], [1.0]]); y = torch.tensor([[0.5], [3.0]])
        >>> divergent.mmd(x, y, sigma=1.0, unbiased=False)  # squared by default
        tensor(0.3695)
        >>> divergent.mmd(x, y, sigma=1.0, unbiased=False, squared=False)
        tensor(0.6079)

    References:
        A. Gretton, K. Borgwardt, M. Rasch, B. Schölkopf, A. Smola, "A Kernel Two-Sample
        Test", JMLR 13:723–773 (2012), Eqs. 3 and 5.
    """
    xt, yt = _points(x, "x"), _points(y, "y")
    check_same_dim(xt, yt)
    xt, yt = _common(xt, yt)
    check_bool(unbiased, "unbiased")
    check_bool(squared, "squared")
    n, m = xt.shape[0], yt.shape[0]
    if unbiased and min(n, m) < 2:
        raise ValueError(
            f"the unbiased MMD needs at least 2 points per sample, got n={n}, "
            f"m={m}; use unbiased=False"
        )
    k = _kernel_fn(kernel, _check_sigma(sigma, "sigma"), xt, yt)
    xc, yc = _centre(xt, yt)

    def gram_rows(exclude_diag: bool):
        def fn(ab: Tensor, bb: Tensor, s: int) -> Tensor:
            g = k(ab, bb)
            if g.shape != (ab.shape[0], bb.shape[0]):
                raise ValueError(
                    f"`kernel` returned shape {tuple(g.shape)} for blocks of "
                    f"{ab.shape[0]} and {bb.shape[0]} points"
                )
            total = g.sum(1)
            if exclude_diag:
                r = torch.arange(ab.shape[0], device=g.device)
                total = total - g[r, r + s]
            return total

        return fn

    sxx = _row_blocks(gram_rows(unbiased), xc, xc).sum()
    syy = _row_blocks(gram_rows(unbiased), yc, yc).sum()
    sxy = _row_blocks(gram_rows(False), xc, yc).sum()
    if unbiased:
        mmd2 = sxx / (n * (n - 1)) + syy / (m * (m - 1)) - 2.0 * sxy / (n * m)
    else:
        mmd2 = sxx / (n * n) + syy / (m * m) - 2.0 * sxy / (n * m)
    return mmd2 if squared else _root(mmd2)


def _root(value: Tensor) -> Tensor:
    """√max(value, 0) with gradient 0 (not NaN or ∞) at and below 0; NaN stays NaN."""
    positive = value > 0
    root = torch.sqrt(torch.where(positive, value, torch.ones_like(value)))
    return torch.where(
        positive | value.isnan(), torch.where(value.isnan(), value, root), torch.zeros_like(value)
    )


# --------------------------------------------------------------------------- energy distance
def energy_distance(x: Any, y: Any, *, squared: bool = False) -> Tensor:
    r"""Energy distance between samples (Székely–Rizzo), scipy's convention.

    .. math::

        \mathcal E^2 = 2\,\mathbb E\|X-Y\| - \mathbb E\|X-X'\| - \mathbb E\|Y-Y'\|,

    estimated with V-statistics (means over all pairs, as ``scipy.stats.energy_distance``);
    returns :math:`\mathcal E = \sqrt{\mathcal E^2}` (equal to scipy's value in 1-D, where it is
    :math:`\sqrt2` times the L2 distance between the empirical CDFs), or :math:`\mathcal E^2`
    with ``squared=True``. Euclidean norms in d dimensions (exact differences, no Gram trick);
    the gradient at identical samples is 0, not NaN.

    Args:
        x: ``(n, d)``; y: ``(m, d)``.
        squared: return :math:`\mathcal E^2` instead of its square root.

    Returns:
        A 0-d tensor, differentiable.

    Example:
        >>> import torch, divergent
        >>> divergent.energy_distance(torch.tensor([0.0, 1.0]), torch.tensor([0.5, 3.0]))
        tensor(1.1180)

    References:
        G. J. Székely, M. L. Rizzo, "Energy statistics: A class of statistics based on
        distances", J. Stat. Plan. Inference 143(8), 2013.
    """
    xt, yt = _points(x, "x"), _points(y, "y")
    check_same_dim(xt, yt)
    xt, yt = _common(xt, yt)
    check_bool(squared, "squared")

    def dist_rows(ab: Tensor, bb: Tensor, _s: int) -> Tensor:
        return torch.cdist(ab, bb, compute_mode="donot_use_mm_for_euclid_dist").sum(1)

    n, m = xt.shape[0], yt.shape[0]
    exy = _row_blocks(dist_rows, xt, yt).sum() / (n * m)
    exx = _row_blocks(dist_rows, xt, xt).sum() / (n * n)
    eyy = _row_blocks(dist_rows, yt, yt).sum() / (m * m)
    e2 = 2.0 * exy - exx - eyy
    return e2 if squared else _root(e2)

r"""k-nearest-neighbour estimators of KL, Rényi divergence and entropy from samples.

``x`` holds n points from P and ``y`` m points from Q (rows are points, dimension d); numpy
arrays or torch tensors. With :math:`\rho_k(i)` the distance (Euclidean) from :math:`x_i` to its
k-th nearest neighbour in :math:`X\setminus\{x_i\}` and :math:`\nu_k(i)` to its k-th nearest
neighbour in Y:

* :func:`knn_kl`: Wang, Kulkarni & Verdú (2009), fixed-k (their Eq. 5) or with the adaptive
  radius and digamma correction (their bias-reduced estimator), KL(P‖Q);
* :func:`knn_renyi`: Póczos & Schneider (2011), :math:`D_\alpha(P\|Q)`;
* :func:`knn_entropy`: Kozachenko & Leonenko (1987), differential entropy H(P).

All return a **0-d torch tensor** (nats; float64 for numpy or integer input, else the input's
floating dtype; on the inputs' device; not differentiable), like every estimator of
:mod:`divergent.samples`; with ``return_ci=True`` an
:class:`~divergent.samples._points.IntervalEstimate` of Python floats (subsampling interval).

**Neighbour search.** ``method="tree"``: :class:`scipy.spatial.cKDTree`, all query points in one
vectorised call (queries visited in the tree's leaf order for locality). ``method="brute"``:
exact blocked distances in torch (row blocks of at most ~2²² distances each: memory bounded,
runs on the inputs' device, e.g. CUDA). ``"auto"`` uses the tree on CPU for d ≤ 20 and brute
force otherwise (on CPU the two cost about the same at d = 20 and n = 4000; see
``benchmarks/bench_knn.py``). Both give the same estimate (distances are exact differences,
not ‖a‖² + ‖b‖² − 2a·b, so identical points are exactly 0 apart). All computations are in
float64 (float32 inputs are upcast).

**Duplicates (zero distances).** The estimators assume continuous data, where distinct sample
points are a.s. at positive distance. An exact copy of a point of x elsewhere in x (or, for the
two-sample estimators, in y) puts a nearest-neighbour distance at 0, where log ρ = −∞; any
convention for it biases the estimate (typically far below the truth, even negative for KL of
discrete or rounded data). So by default (``duplicates="raise"``) such input is a
``ValueError`` that gives the number of points of x with a copy in x and in y, and what to do:
remove the copies, break the ties with a small jitter (e.g. ``x + 1e-9·scale·noise``, which
changes the estimate by about as much as the rounding that created them), or pass
``duplicates="skip"`` to accept the convention knowingly: *zero distances are skipped*,
:math:`\rho_k(i)` and :math:`\nu_k(i)` are the k-th smallest **positive** distances (copies of
:math:`x_i` are ignored, like :math:`x_i` itself), counts inside a radius count points at
positive distance only, and a point with fewer than k points at positive distance on a side is a
``ValueError``. Copies within y alone never give a zero distance and are accepted. Ties at
exactly the radius ε (including rounding within 10⁻¹² relative) count as inside the ball.
"""

from __future__ import annotations

import inspect
import itertools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING, Any, TypedDict

import numpy as np
import torch
from scipy.special import digamma, gammaln
from torch import Tensor

from divergent._validation import (
    check_bool,
    check_choice,
    check_int,
    check_positive_scalar,
    spell_keywords,
    split_keywords,
)
from divergent.samples._points import (
    IntervalEstimate,
    as_points,
    as_result,
    check_level,
    check_same_dim,
    subsampling_ci,
)

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["knn_entropy", "knn_kl", "knn_renyi"]

METHODS: tuple[str, ...] = ("auto", "tree", "brute")
DUPLICATES: tuple[str, ...] = ("raise", "skip")
TREE_MAX_DIM = 20
_BALL_RTOL = 1e-12  # a point at distance ≤ ε(1 + 1e-12) is inside the ball of radius ε
_BLOCK_ELEMENTS = 1 << 22  # distances per block in the brute-force path
_MAX_REQUERY = 128  # widest kNN re-query before falling back to a ball query
_BALL_EXTRA = 3  # neighbours fetched beyond the k-th in the first pass of the ball statistics


# --------------------------------------------------------------------------- validation
def _check_workers(workers: Any) -> int:
    ok = isinstance(workers, (int, np.integer)) and not isinstance(workers, bool)
    if not ok or (workers < 1 and workers != -1):
        raise ValueError(f"`workers` must be -1 (all cores) or an integer >= 1, got {workers!r}")
    return int(workers)


def _copies(x: Tensor, y: Tensor | None) -> tuple[int, int]:
    """(points of x with an exact copy elsewhere in x, points of x equal to a point of y)."""
    n = x.shape[0]
    both = x if y is None else torch.cat([x, y])
    _, inverse, counts = torch.unique(both, dim=0, return_inverse=True, return_counts=True)
    inv_x = inverse[:n]
    in_x = torch.bincount(inv_x, minlength=counts.shape[0])
    within = int((in_x[inv_x] > 1).sum())
    across = 0 if y is None else int((counts[inv_x] > in_x[inv_x]).sum())
    return within, across


def _refuse_duplicates(x: Tensor, y: Tensor | None, duplicates: str) -> None:
    """``duplicates="raise"``: a ValueError when a kNN distance from a point of x would be 0."""
    if duplicates != "raise":
        return
    within, across = _copies(x.detach(), None if y is None else y.detach())
    if within or across:
        parts = [f"{within} of the {x.shape[0]} points of `x` have an exact copy in `x`"]
        if y is not None:
            parts.append(f"{across} have an exact copy in `y`")
        raise ValueError(
            "kNN estimators need distinct points (a copy is at distance 0, where log ρ = −∞, "
            "and any convention biases the estimate, typically far below the truth): "
            + "; ".join(parts)
            + ". Remove the copies, break ties with a small jitter, or pass "
            "duplicates='skip' to skip zero distances (the k-th *positive* distance is used)"
        )


def _resolve_method(method: str, x: Tensor) -> str:
    if method != "auto":
        return method
    return "tree" if x.device.type == "cpu" and x.shape[1] <= TREE_MAX_DIM else "brute"


# --------------------------------------------------------------------------- neighbour stats
class _Stats:
    """Per query row, for one reference set: k-th positive distance, and ball statistics."""

    def __init__(self, n: int, need_ball: bool) -> None:
        self.kth = np.full(n, np.nan)
        self.count = np.zeros(n, dtype=np.int64) if need_ball else None
        self.within = np.full(n, np.nan) if need_ball else None


def _not_enough(side: str, k: int, row: int) -> ValueError:
    return ValueError(
        f"query point {row} has fewer than k={k} points at positive distance in `{side}` "
        "(zero distances, i.e. exact duplicates, are skipped); lower `k`, or remove duplicates"
    )


def _brute_rows(
    q: Tensor,
    refs: list[Tensor],
    names: list[str],
    k: int,
    need_ball: bool,
    rows: np.ndarray,
    out: list[_Stats],
) -> None:
    """Exact blocked brute force for the query rows ``q`` (original indices ``rows``)."""
    total = sum(r.shape[0] for r in refs)
    block = max(1, _BLOCK_ELEMENTS // max(total, 1))
    for start in range(0, q.shape[0], block):
        qb = q[start : start + block]
        idx = rows[start : start + block]
        dists, kths = [], []
        for ref, name in zip(refs, names):
            # exact differences (not ‖a‖² + ‖b‖² − 2ab): identical points are exactly 0 apart
            dmat = torch.cdist(qb, ref, compute_mode="donot_use_mm_for_euclid_dist")
            pos = torch.where(dmat > 0, dmat, torch.full_like(dmat, math.inf))
            if ref.shape[0] < k:
                raise _not_enough(name, k, int(idx[0]))
            kth = torch.topk(pos, k, dim=1, largest=False, sorted=True).values[:, -1]
            finite = torch.isfinite(kth)
            if not bool(finite.all()):
                raise _not_enough(name, k, int(idx[int(torch.nonzero(~finite)[0, 0])]))
            dists.append(pos)
            kths.append(kth)
        for s, kth in zip(out, kths):
            s.kth[idx] = kth.cpu().numpy()
        if need_ball:
            eps = torch.maximum(kths[0], kths[1]) * (1 + _BALL_RTOL)
            for s, pos in zip(out, dists):
                inside = pos <= eps[:, None]
                s.count[idx] = inside.sum(1).cpu().numpy()
                far = torch.where(inside, pos, torch.zeros_like(pos)).amax(1)
                s.within[idx] = far.cpu().numpy()


def _ball_rows(
    tree: Any,
    data: np.ndarray,
    q: np.ndarray,
    radius: np.ndarray,
    s: _Stats,
    rows: np.ndarray,
    workers: int,
) -> None:
    """Count and farthest positive distance inside ``radius`` (per row), for the given rows."""
    lengths = tree.query_ball_point(q[rows], radius, return_length=True, workers=workers)
    # chunks of rows whose ragged neighbour lists hold at most ~4M entries together
    chunk_id = (np.cumsum(lengths) - lengths) // (1 << 22)
    bounds = [0, *(np.flatnonzero(np.diff(chunk_id)) + 1).tolist(), len(rows)]
    for a, b in itertools.pairwise(bounds):
        chunk = rows[a:b]
        lists = tree.query_ball_point(q[chunk], radius[a:b], workers=workers)
        sizes = np.fromiter((len(li) for li in lists), dtype=np.int64, count=len(lists))
        cols = np.concatenate([np.asarray(li, dtype=np.int64) for li in lists])
        owner = np.repeat(np.arange(len(chunk)), sizes)
        diff = data[cols] - q[chunk][owner]
        dist = np.sqrt(np.einsum("ij,ij->i", diff, diff))
        keep = (dist > 0) & (dist <= radius[a:b][owner])
        s.count[chunk] = np.bincount(owner, weights=keep, minlength=len(chunk)).astype(np.int64)
        far = np.zeros(len(chunk))
        np.maximum.at(far, owner, np.where(keep, dist, 0.0))
        s.within[chunk] = far


def _neighbour_stats(
    x: Tensor,
    refs: list[Tensor],
    names: list[str],
    k: int,
    need_ball: bool,
    method: str,
    workers: int,
) -> list[_Stats]:
    """k-th positive distances from each row of x to each reference set (and ball stats).

    ``need_ball`` (two reference sets): ε_i = max over sets of the k-th distance; for each set
    the number of points with 0 < dist ≤ ε_i(1 + rtol) and the farthest such distance.
    """
    n = x.shape[0]
    out = [_Stats(n, need_ball) for _ in refs]
    if method == "brute":
        _brute_rows(x, refs, names, k, need_ball, np.arange(n), out)
        return out

    from scipy.spatial import cKDTree

    xq = x.detach().cpu().numpy()
    datas = [xq if r is x else r.detach().cpu().numpy() for r in refs]
    trees = [cKDTree(data) for data in datas]
    # visit the queries in the X tree's leaf order (spatially coherent: fewer cache misses)
    order = trees[0].indices
    qo = xq[order]
    # With the ball, a few more neighbours than k are fetched: when the farthest fetched one
    # lies outside ε, the list holds every point of the ball (no second query for that row).
    extra = _BALL_EXTRA if need_ball else 0
    bad = np.zeros(n, dtype=bool)
    lists = []
    for ref, tree, s in zip(refs, trees, out):
        # zeros expected in a row: 1 (the point itself) when the reference set is x, else 0;
        # a row with more (duplicates) goes to the exact brute-force fallback
        zeros_expected = 1 if ref is x else 0
        width = k + zeros_expected + extra
        dist_o, _ = tree.query(qo, k=width, workers=workers)
        dist = np.empty((n, width))
        dist[order] = dist_o.reshape(n, width)
        kth = dist[:, zeros_expected + k - 1]
        ok = (kth > 0) & np.isfinite(kth)
        if zeros_expected:
            ok &= dist[:, 0] == 0  # the point itself (always, unless rounding: then fallback)
        bad |= ~ok
        s.kth[:] = kth
        lists.append(dist)
    if need_ball:
        eps = np.maximum(out[0].kth, out[1].kth)
        radius = eps * (1 + _BALL_RTOL)
        rank = np.empty(n, dtype=np.int64)
        rank[order] = np.arange(n)
        for tree, data, s, dist in zip(trees, datas, out, lists):
            todo = np.nonzero(~bad)[0]
            dist = dist[todo]
            width = dist.shape[1]
            while len(todo):
                rad = radius[todo]
                done = dist[:, -1] > rad
                inside = (dist > 0) & (dist <= rad[:, None])
                rows = todo[done]
                s.count[rows] = inside[done].sum(1)
                s.within[rows] = np.where(inside[done], dist[done], 0.0).max(1)
                todo = todo[~done]
                todo = todo[np.argsort(rank[todo], kind="stable")]  # leaf order again
                # widen the list (doubling) for the rows whose ball is not complete yet; kNN
                # queries are much cheaper than cKDTree ball queries for such small balls
                width *= 2
                if not len(todo) or width > _MAX_REQUERY:
                    break
                dist, _ = tree.query(xq[todo], k=width, workers=workers)
            if len(todo):
                _ball_rows(tree, data, xq, radius[todo], s, todo, workers)
    if bad.any():
        rows = np.nonzero(bad)[0]
        _brute_rows(x[torch.from_numpy(rows)], refs, names, k, need_ball, rows, out)
    return out


# --------------------------------------------------------------------------- estimators
class KnnKeywords(TypedDict, total=False):
    """The keywords every kNN estimator takes (defaults: :class:`_Options`), typed for
    ``**options: Unpack[KnnKeywords]``; documented in :func:`knn_kl`."""

    method: str
    workers: int
    duplicates: str
    return_ci: bool
    ci_level: float
    n_subsamples: int
    seed: int


@dataclass(frozen=True)
class _Options:
    """The kNN estimators' shared keywords with their defaults (as :class:`KnnKeywords`)."""

    method: str = "auto"
    workers: int = 1
    duplicates: str = "raise"
    return_ci: bool = False
    ci_level: float = 0.95
    n_subsamples: int = 200
    seed: int = 0

    @classmethod
    def of(cls, function: str, options: Mapping[str, Any]) -> _Options:
        """The caller's ``**options`` (not validated yet); another keyword is a ``TypeError``."""
        taken, _ = split_keywords(options, _OPTION_NAMES, function=function)
        return cls(**taken)

    def checked(self) -> _Options:
        """``method``, ``workers`` and ``duplicates`` validated."""
        return replace(
            self,
            method=check_choice(self.method, "method", METHODS),
            workers=_check_workers(self.workers),
            duplicates=check_choice(self.duplicates, "duplicates", DUPLICATES),
        )


_OPTION_NAMES: tuple[str, ...] = tuple(f.name for f in fields(_Options))

#: spells the shared keywords out in an estimator's signature (keyword-only, with defaults)
_knn_keywords = spell_keywords(
    {
        f.name: inspect.Parameter(
            f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default, annotation=f.type
        )
        for f in fields(_Options)
    },
    *_OPTION_NAMES,
)


def _prepare_pair(x: Any, y: Any, k: Any, opts: _Options) -> tuple[Any, ...]:
    xt = as_points(x, "x", min_rows=2)
    yt = as_points(y, "y", min_rows=1)
    check_same_dim(xt, yt)
    n, m = xt.shape[0], yt.shape[0]
    why = f"`x` has n = {n} points, `y` has m = {m}: at most n − 1 and m neighbours exist"
    k = check_int(k, "k", 1, "number of neighbours", maximum=min(n - 1, m), why=why)
    return xt, yt, n, m, k, opts.checked()


def _result(
    estimator: Callable[..., Any],
    value: float,
    points: tuple[Tensor, ...],
    raw: tuple[Any, ...],
    opts: _Options,
    **own: Any,
) -> Tensor | IntervalEstimate:
    """The estimate as a 0-d tensor, or (``return_ci``) with a subsampling interval: the
    ``estimator`` recomputed on subsets of ``points`` with its ``own`` keywords and the
    neighbour options of ``opts``."""
    if not opts.return_ci:
        return as_result(value, *raw)
    level = check_level(opts.ci_level)
    res = subsampling_ci(
        estimator,
        *points,
        level=level,
        n_subsamples=opts.n_subsamples,
        seed=opts.seed,
        method=opts.method,
        workers=opts.workers,
        duplicates=opts.duplicates,
        **own,
    )
    return IntervalEstimate(value, res.low, res.high, level)


@_knn_keywords
def knn_kl(
    x: Any,
    y: Any,
    k: int = 1,
    bias_correction: bool = True,
    **options: Unpack[KnnKeywords],
) -> Tensor | IntervalEstimate:
    r"""kNN estimate of :math:`\mathrm{KL}(P\|Q)` from x ~ P (n points) and y ~ Q (m points).

    Fixed k (``bias_correction=False``; Wang–Kulkarni–Verdú 2009, Eq. 5):

    .. math::

        \hat D = \frac{d}{n}\sum_{i=1}^n \log\frac{\nu_k(i)}{\rho_k(i)} + \log\frac{m}{n-1}.

    Bias-corrected (default; WKV 2009 adaptive-radius estimator, as in ``universal-divergence``
    with ``k=None`` when k = 1): with :math:`\varepsilon_i = \max(\rho_k(i), \nu_k(i))`,
    :math:`l_i` / :math:`k_i` the numbers of X / Y points (other than :math:`x_i`) within
    :math:`\varepsilon_i`,

    .. math::

        \hat D = \frac{d}{n}\sum_i \log\frac{\nu_{k_i}(i)}{\rho_{l_i}(i)}
               + \frac1n\sum_i\big[\psi(l_i) - \psi(k_i)\big] + \log\frac{m}{n-1},

    so both densities are estimated on balls of (nearly) the same radius, which cancels the
    first-order bias from density variation inside the balls. Consistent (a.s.) for fixed k;
    the error decays slowly when d is large (MSE rate :math:`N^{-2\gamma/(\gamma+d)}`).
    Known weak spots: the estimate is biased low when P has mass where Q has few samples (e.g.
    P = N(0, I₃), Q = N(0, ¼I₃): true 2.42, estimate ≈ 1.45 at n = m = 8000) and in higher
    dimension (d = 10 mean shift, true 1.25: ≈ −0.3 at n = 4000, where the adaptive radius
    does slightly worse than fixed k; at d = 2 and 5 it has the smaller error).

    Args:
        x: samples of P, shape ``(n, d)`` (or ``(n,)`` for d = 1); numpy or torch.
        y: samples of Q, shape ``(m, d)``.
        k: neighbour order, 1 ≤ k ≤ min(n − 1, m).
        bias_correction: adaptive radius with digamma correction (True) or fixed k (False).
        method: ``"auto"`` | ``"tree"`` (cKDTree) | ``"brute"`` (blocked torch, any device).
        workers: threads for the tree queries (−1: all cores).
        duplicates: ``"raise"`` (default: exact copies are a ``ValueError`` giving their
            number) or ``"skip"`` (zero distances skipped; see the module docstring).
        return_ci: also return a subsampling confidence interval (see
            :func:`~divergent.samples._points.subsampling_ci`).
        ci_level, n_subsamples, seed: interval settings.

    Returns:
        The estimate as a 0-d tensor (nats; float64 for numpy or integer input, else the
        input's floating dtype; can be negative at small n), or an :class:`IntervalEstimate`
        of floats when ``return_ci``.

    Raises:
        ValueError: on duplicate points (a point of x with an exact copy in x or y) unless
            ``duplicates="skip"``; see the module docstring.

    Example:
        >>> import numpy as np, divergent
        >>> rng = np.random.default_rng(0)
        >>> x = rng.normal(0, 1, (4000, 2)); y = rng.normal(0.5, 1, (4000, 2))
        >>> divergent.knn_kl(x, y)  # true KL 0.25; SD of the estimate here ≈ 0.025
        tensor(0.2928, dtype=torch.float64)

    References:
        Q. Wang, S. R. Kulkarni, S. Verdú, "Divergence estimation for multidimensional densities
        via k-nearest-neighbor distances", IEEE Trans. Inf. Theory 55(5):2392–2405, 2009.
    """
    check_bool(bias_correction, "bias_correction")
    xt, yt, n, m, k, opts = _prepare_pair(x, y, k, _Options.of("knn_kl", options))
    _refuse_duplicates(xt, yt, opts.duplicates)
    d = xt.shape[1]
    method = _resolve_method(opts.method, xt)
    sx, sy = _neighbour_stats(xt, [xt, yt], ["x", "y"], k, bias_correction, method, opts.workers)
    if bias_correction:
        value = (
            d * float(np.mean(np.log(sy.within) - np.log(sx.within)))
            + float(np.mean(digamma(sx.count) - digamma(sy.count)))
            + math.log(m / (n - 1))
        )
    else:
        value = d * float(np.mean(np.log(sy.kth) - np.log(sx.kth))) + math.log(m / (n - 1))
    return _result(knn_kl, value, (xt, yt), (x, y), opts, k=k, bias_correction=bias_correction)


@_knn_keywords
def knn_renyi(
    x: Any,
    y: Any,
    order: float,
    k: int = 1,
    **options: Unpack[KnnKeywords],
) -> Tensor | IntervalEstimate:
    r"""kNN estimate of the Rényi divergence :math:`D_\alpha(P\|Q)` (Póczos–Schneider 2011).

    .. math::

        D_\alpha(P\|Q) = \frac{1}{\alpha-1}\log\int p^\alpha q^{1-\alpha}, \qquad
        \widehat{\int p^\alpha q^{1-\alpha}} = \frac{B_{k,\alpha}}{n}\sum_{i=1}^n
            \Big(\frac{(n-1)\,\rho_k(i)^d}{m\,\nu_k(i)^d}\Big)^{1-\alpha},\quad
        B_{k,\alpha} = \frac{\Gamma(k)^2}{\Gamma(k-\alpha+1)\,\Gamma(k+\alpha-1)},

    i.e. the plug-in of kNN density estimates with the exact correction
    :math:`B_{k,\alpha}` that makes the inner estimate asymptotically unbiased. Computed in the
    log domain (log-sum-exp). Needs :math:`0 < \alpha < k + 1`, α ≠ 1 (use :func:`knn_kl`
    for α = 1).

    Args:
        x, y: samples of P and Q (rows are points).
        order: α > 0, α ≠ 1, α < k + 1.
        k: neighbour order, 1 ≤ k ≤ min(n − 1, m).
        method, workers, duplicates, return_ci, ci_level, n_subsamples, seed: as in
            :func:`knn_kl`.

    Returns:
        The estimate as a 0-d tensor (nats), or an :class:`IntervalEstimate` of floats.

    References:
        B. Póczos, J. Schneider, "On the Estimation of α-Divergences", AISTATS 2011.
    """
    xt, yt, n, m, k, opts = _prepare_pair(x, y, k, _Options.of("knn_renyi", options))
    what = f"the Rényi order α ∈ (0, k + 1) = (0, {k + 1}), α ≠ 1"
    a = check_positive_scalar(order, "order", what=what)
    if not a < k + 1 or a == 1:
        raise ValueError(
            f"`order` must be a number in (0, k + 1) = (0, {k + 1}) other than 1 (for α = 1 use "
            f"knn_kl; larger α needs a larger k), got {order!r}"
        )
    _refuse_duplicates(xt, yt, opts.duplicates)
    d = xt.shape[1]
    method = _resolve_method(opts.method, xt)
    sx, sy = _neighbour_stats(xt, [xt, yt], ["x", "y"], k, False, method, opts.workers)
    log_b = 2 * gammaln(k) - gammaln(k - a + 1) - gammaln(k + a - 1)
    log_ratio = math.log(n - 1) - math.log(m) + d * (np.log(sx.kth) - np.log(sy.kth))
    t = (1 - a) * log_ratio
    tmax = float(np.max(t))
    log_mean = tmax + math.log(float(np.mean(np.exp(t - tmax))))
    value = (log_b + log_mean) / (a - 1)
    return _result(knn_renyi, value, (xt, yt), (x, y), opts, order=a, k=k)


@_knn_keywords
def knn_entropy(
    x: Any,
    k: int = 1,
    **options: Unpack[KnnKeywords],
) -> Tensor | IntervalEstimate:
    r"""Kozachenko–Leonenko kNN estimate of the differential entropy H(P) (nats).

    .. math::

        \hat H = \psi(n) - \psi(k) + \log V_d + \frac{d}{n}\sum_{i=1}^n \log\rho_k(i),
        \qquad V_d = \frac{\pi^{d/2}}{\Gamma(d/2+1)}

    (:math:`V_d` the volume of the Euclidean unit ball). Consistent and asymptotically
    unbiased for fixed k.

    Args:
        x: samples of P, shape ``(n, d)`` or ``(n,)``.
        k: neighbour order, 1 ≤ k ≤ n − 1.
        method, workers, duplicates, return_ci, ci_level, n_subsamples, seed: as in
            :func:`knn_kl` (only copies within x matter here).

    Returns:
        The estimate as a 0-d tensor (nats), or an :class:`IntervalEstimate` of floats.

    References:
        L. F. Kozachenko, N. N. Leonenko, "Sample estimate of the entropy of a random vector",
        Problems Inform. Transmission 23(2):95–101, 1987; A. Kraskov, H. Stögbauer,
        P. Grassberger, "Estimating mutual information", Phys. Rev. E 69, 066138 (2004), Eq. 20.
    """
    xt = as_points(x, "x", min_rows=2)
    n, d = xt.shape
    why = f"`x` has n = {n} points: at most n − 1 neighbours exist"
    k = check_int(k, "k", 1, "number of neighbours", maximum=n - 1, why=why)
    opts = _Options.of("knn_entropy", options).checked()
    _refuse_duplicates(xt, None, opts.duplicates)
    method = _resolve_method(opts.method, xt)
    (sx,) = _neighbour_stats(xt, [xt], ["x"], k, False, method, opts.workers)
    log_vd = 0.5 * d * math.log(math.pi) - float(gammaln(0.5 * d + 1))
    value = float(digamma(n) - digamma(k)) + log_vd + d * float(np.mean(np.log(sx.kth)))
    return _result(knn_entropy, value, (xt,), (x,), opts, k=k)

r"""The named divergences of the registry and their numerically stable row functions.

Every row function takes normalised log-probabilities ``log_p`` (the target P) and ``log_q``
(the model Q), class axis last, and returns one value per row. They work in the log domain:

* zero-probability atoms are ``-inf`` entries and are decided *in the log domain* (an atom
  with ``log p = -2e4`` is in the support even though ``exp`` underflows to 0);
* every ``torch.where`` that hides an invalid branch also makes that branch's inputs safe, so
  gradients stay finite (the "double where" rule);
* a row is ``+inf`` exactly when the divergence is infinite (for most: P has mass where Q has
  none); this is listed per divergence in ``infinite_when``;
* on unnormalised sub-vectors (e.g. a top-k slice) an f-divergence row is
  :math:`\sum_x q f(p/q)` with the entry's registered generator f, term by term;
* accuracy (issue 8 §2): ``kl``, ``skew_kl``, ``alpha`` and ``renyi`` (and their reverses)
  sum non-negative Bregman terms :math:`q\,\varphi(p/q)` with series near P = Q, the same
  formulation as their chunk kernels (:func:`~divergent.categorical.kernels.kl_terms`,
  :func:`~divergent.categorical.kernels.skew_kl_terms`), and drop the part of the generator
  that is linear in p and q on rows where both sides are normalised to within
  :func:`normalisation_tolerance` (16·eps·(1 + log V)), where it is a pure rounding error;
  float32 values are then within 1e-4 relative or 1e-7 absolute of float64 in the regimes of
  ``benchmarks/accuracy_fp32.py``, Rényi of order ∞ (a maximum of float32 log-ratios) being
  the one exception, accurate to the rounding of its inputs (eps·max|log p|).

Conventions for the parametrised families (see each entry's docstring):

* ``js``: generalised JSD of GKD (Agarwal et al. 2024, Eq. 1),
  :math:`\beta\,\mathrm{KL}(P\|M) + (1-\beta)\,\mathrm{KL}(Q\|M)`, :math:`M = \beta P + (1-\beta)Q`.
* ``alpha``: the α-divergence of Cichocki & Amari (2010) / Zhu & Rohwer (1995),
  :math:`\frac{1}{\alpha(\alpha-1)}\big(\sum_x p^\alpha q^{1-\alpha} - 1\big)`, continuous in
  α: α = 1 is ``kl``, α = 0 is ``reverse_kl`` (as limits), α = ½ is 4·``hellinger``, α = 2 is
  ½·``pearson_chi2``, α = −1 is ½·``neyman_chi2``.
* ``hellinger``: the *squared* Hellinger distance with the ½ factor, in [0, 1].
"""

from __future__ import annotations

import math
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

import torch
from torch import Tensor

from divergent.categorical import kernels
from divergent.categorical.registry import Divergence, FGenerator, Parameter, register_divergence

NEG_INF = -math.inf
INF = math.inf

_SERIES_THRESHOLD_F32 = 1e-2  # |s| below which φ_a(s) is a series (float32 and lower)
_SERIES_THRESHOLD_F64 = 1e-3  # the same in float64
_LOG_SWITCH = 20.0  # a·s above which w·φ_a(s) is formed in the log domain
_CHI2_SWITCH = 20.0  # log-ratio above which χ² uses the overflow-safe exponent form


def _pos(log_x: Tensor) -> Tensor:
    """Support mask decided in the log domain (exp may underflow; the atom still counts)."""
    return log_x > NEG_INF


def _safe(log_x: Tensor, keep: Tensor) -> Tensor:
    """``log_x`` where ``keep``, 0 elsewhere (so both branches of a where are finite)."""
    return torch.where(keep, log_x, 0.0)


def _with_infinite(rows: Tensor, infinite_rows: Tensor) -> Tensor:
    return torch.where(infinite_rows, INF, rows)


# Set (only) while :func:`normalised_row_values` evaluates a built-in row function on rows
# that come out of ``log_softmax``: they are normalised by construction, so the linear parts
# below are exactly 0 and their normalisation checks (two logsumexp passes) are skipped.
# _EAGER (values may be inspected: not compiled, not under a torch.func transform) also lets
# a row function look at its inputs once to skip branches that cannot contribute.
_NORMALISED, _EAGER = 1, 2
_ROWS_NORMALISED: ContextVar[int] = ContextVar("divergent_rows_normalised", default=0)


def normalisation_tolerance(dtype: torch.dtype, n_classes: int) -> float:
    """|log Σ exp(log p)| below which a row counts as normalised: 16·eps·(1 + log V).

    Rounding a ``log_softmax`` leaves rows off by a few eps·log V (the normaliser's rounding
    plus each entry's); a top-k slice or a user's sub-vector is off by its missing mass.
    """
    return 16.0 * torch.finfo(dtype).eps * (1.0 + math.log(max(n_classes, 1)))


def _normalised(log_x: Tensor) -> Tensor:
    """Rows whose mass is 1 up to rounding (decided without gradient)."""
    with torch.no_grad():
        tol = normalisation_tolerance(log_x.dtype, log_x.shape[-1])
        return torch.logsumexp(log_x, dim=-1).abs() <= tol


def _linear_part(log_p: Tensor, log_q: Tensor, value: Tensor) -> Tensor:
    r"""``value`` (a linear function of the masses, e.g. Σp − Σq) on rows where P or Q is not
    normalised, 0 where both are.

    The accurate forms below sum non-negative Bregman terms (q φ(p/q), no cancellation) and
    drop the part of the generator that is linear in p and q, which sums to exactly 0 on
    normalised rows. Keeping it there would only add back the rounding error of the
    normalisers (≈ eps·log V, larger than the whole value near P = Q). On unnormalised rows
    (top-k slices, ``sparse_divergence(tail="ignore")``) it is kept, so a row stays
    :math:`\sum_x q f(p/q)` term by term.
    """
    both = _normalised(log_p) & _normalised(log_q)
    return torch.where(both, 0.0, value)


# --------------------------------------------------------------------------------------------
# row functions
# --------------------------------------------------------------------------------------------
def kl_rows(log_p: Tensor, log_q: Tensor) -> Tensor:
    r"""KL(P‖Q) = Σ p (log p − log q); +∞ when P has mass where Q has none.

    Summed as the non-negative terms q φ₁(log p − log q) = p log(p/q) − p + q of
    :func:`divergent.categorical.kernels.kl_terms` (the engine kernel's formulation), plus
    Σp − Σq on rows that are not normalised (see :func:`_linear_part`): accurate to a few ulp
    relative near P = Q, where Σ p log(p/q) would carry the normalisers' rounding error.
    """
    terms, p_only, p, q, _ = kernels.kl_terms(log_p, log_q, kernels._phi_tau(log_p.dtype, 1.0))
    rows = terms.sum(-1)
    if not _ROWS_NORMALISED.get():
        rows = rows + _linear_part(log_p, log_q, p.sum(-1) - q.sum(-1))
    return _with_infinite(rows, p_only.any(-1))


def reverse_kl_rows(log_p: Tensor, log_q: Tensor) -> Tensor:
    r"""KL(Q‖P)."""
    return kl_rows(log_q, log_p)


def soft_cross_entropy_rows(log_p: Tensor, log_q: Tensor) -> Tensor:
    r"""H(P, Q) = −Σ p log q = KL(P‖Q) + H(P)."""
    p_pos, q_pos = _pos(log_p), _pos(log_q)
    both = p_pos & q_pos
    lp, lq = _safe(log_p, both), _safe(log_q, both)
    term = torch.where(both, -lp.exp() * lq, 0.0)
    return _with_infinite(term.sum(-1), (p_pos & ~q_pos).any(-1))


def _js_both(lp: Tensor, lq: Tensor, beta: float) -> Tensor:
    """β·m φ₁(log p − log m) + (1−β)·m φ₁(log q − log m) per atom (finite log p, log q)."""
    log_m = torch.logaddexp(lp + math.log(beta), lq + math.log1p(-beta))
    # log p − log m ≤ log(1/β) and log q − log m ≤ log(1/(1−β)): φ₁ cannot overflow
    phi = beta * _phi1(lp - log_m) + (1.0 - beta) * _phi1(lq - log_m)
    return log_m.exp() * phi


def js_rows(log_p: Tensor, log_q: Tensor, beta: float) -> Tensor:
    r"""β KL(P‖M) + (1−β) KL(Q‖M), M = βP + (1−β)Q. Always finite, ≤ h(β).

    Per atom, β p log(p/m) + (1−β) q log(q/m) = β·m φ₁(log p − log m) + (1−β)·m φ₁(log q − log m)
    with φ₁(s) = s e^s − e^s + 1 ≥ 0 (the linear parts cancel exactly since βp + (1−β)q = m),
    so the sum has no cancellation and stays accurate to a few ulp relative near P = Q.
    """
    p_pos, q_pos = _pos(log_p), _pos(log_q)
    both = p_pos & q_pos
    if _ROWS_NORMALISED.get() & _EAGER and bool(both.all()):
        # full support on both sides (the common case): no one-sided atoms, nothing to mask;
        # the same terms as below, without the masks and zero sums
        return _js_both(log_p, log_q, beta).sum(-1)
    lp, lq = _safe(log_p, both), _safe(log_q, both)
    term_both = _js_both(lp, lq, beta)
    # atoms on one side only: m = βp (resp. (1−β)q), the term is β p log(1/β) (resp. ...)
    p_only, q_only = p_pos & ~q_pos, q_pos & ~p_pos
    lp_only, lq_only = _safe(log_p, p_only), _safe(log_q, q_only)
    t_p = torch.where(p_only, lp_only.exp() * (-beta * math.log(beta)), 0.0)
    t_q = torch.where(q_only, lq_only.exp() * (-(1.0 - beta) * math.log1p(-beta)), 0.0)
    return torch.where(both, term_both, 0.0).sum(-1) + t_p.sum(-1) + t_q.sum(-1)


def skew_kl_rows(log_p: Tensor, log_q: Tensor, alpha: float) -> Tensor:
    r"""KL(P‖αP + (1−α)Q); α = 0 is KL(P‖Q). Finite (≤ log 1/α) for α > 0.

    Summed as the non-negative terms m f(p/m), f(t) = t log t − t + 1, of
    :func:`divergent.categorical.kernels.skew_kl_terms` (the engine kernel's formulation),
    plus (1 − α)(Σp − Σq) = Σ(p − m) on rows that are not normalised.
    """
    if alpha == 0.0:
        return kl_rows(log_p, log_q)
    tau = kernels.SKEW_TAU64 if log_p.dtype == torch.float64 else kernels.SKEW_TAU
    terms, _, _, _ = kernels.skew_kl_terms(log_p, log_q, alpha, 1.0 - alpha, tau)
    if _ROWS_NORMALISED.get():
        return terms.sum(-1)
    lin = _linear_part(log_p, log_q, (1.0 - alpha) * (log_p.exp().sum(-1) - log_q.exp().sum(-1)))
    return terms.sum(-1) + lin


def skew_reverse_kl_rows(log_p: Tensor, log_q: Tensor, alpha: float) -> Tensor:
    r"""KL(Q‖αQ + (1−α)P); α = 0 is KL(Q‖P)."""
    return skew_kl_rows(log_q, log_p, alpha)


def jeffreys_rows(log_p: Tensor, log_q: Tensor) -> Tensor:
    r"""KL(P‖Q) + KL(Q‖P) = Σ (p − q)(log p − log q), each term ≥ 0."""
    p_pos, q_pos = _pos(log_p), _pos(log_q)
    both = p_pos & q_pos
    lp, lq = _safe(log_p, both), _safe(log_q, both)
    term = torch.where(both, (lp.exp() - lq.exp()) * (lp - lq), 0.0)
    return _with_infinite(term.sum(-1), (p_pos ^ q_pos).any(-1))


def tv_rows(log_p: Tensor, log_q: Tensor) -> Tensor:
    r"""½ Σ |p − q|."""
    return 0.5 * (log_p.exp() - log_q.exp()).abs().sum(-1)


def hellinger_rows(log_p: Tensor, log_q: Tensor) -> Tensor:
    r"""Squared Hellinger distance ½ Σ (√p − √q)² (in [0, 1])."""
    return 0.5 * (torch.exp(0.5 * log_p) - torch.exp(0.5 * log_q)).square().sum(-1)


def pearson_chi2_rows(log_p: Tensor, log_q: Tensor) -> Tensor:
    r"""χ²(P‖Q) = Σ (p − q)² / q; +∞ when P has mass where Q has none.

    Written as q·expm1(s)² with s = log p − log q (exact near P = Q), and for large s as
    exp(log q + 2(s + log1p(−e^{−s}))) so that it overflows only when the value itself does.
    """
    p_pos, q_pos = _pos(log_p), _pos(log_q)
    lq = _safe(log_q, q_pos)
    # s = -inf where p = 0 < q (term = q), finite where both > 0
    s = torch.where(q_pos, log_p - lq, 0.0)
    small = s <= _CHI2_SWITCH
    s_small = torch.where(small, s, 0.0)
    s_large = torch.where(small, _CHI2_SWITCH + 1.0, s)
    term_small = lq.exp() * torch.expm1(s_small).square()
    term_large = torch.exp(lq + 2.0 * (s_large + torch.log1p(-torch.exp(-s_large))))
    term = torch.where(q_pos, torch.where(small, term_small, term_large), 0.0)
    return _with_infinite(term.sum(-1), (p_pos & ~q_pos).any(-1))


def neyman_chi2_rows(log_p: Tensor, log_q: Tensor) -> Tensor:
    r"""χ²(Q‖P) = Σ (p − q)² / p."""
    return pearson_chi2_rows(log_q, log_p)


def _series_threshold(dtype: torch.dtype, a: float) -> float:
    """|s| below which φ_a(s) is summed as a series (the closed form cancels there).

    The closed form loses ~2·eps/|s| relative precision (≤ 1e-5 in float32, 5e-13 in
    float64 at the switch, below the error that rounding the log-probabilities already
    causes); the 4-term series truncates at ~0.003·(|a|·|s|)^4.
    """
    base = _SERIES_THRESHOLD_F64 if dtype == torch.float64 else _SERIES_THRESHOLD_F32
    return base / max(1.0, abs(a))


def _series(s: Tensor, a: float) -> Tensor:
    """Σ_{k=2}^{5} c_k s^k with c_k = (1 + a + … + a^{k−2})/k!: φ_a(s) near s = 0."""
    c2, c3 = 0.5, (1.0 + a) / 6.0
    c4, c5 = (1.0 + a + a * a) / 24.0, (1.0 + a + a * a + a**3) / 120.0
    return s * s * (c2 + s * (c3 + s * (c4 + s * c5)))


def _expm1_div(c: float, x: Tensor) -> Tensor:
    """expm1(c·x)/c, and its limit x at c = 0."""
    return x if c == 0.0 else torch.expm1(c * x) / c


def _phi(s: Tensor, a: float) -> Tensor:
    r"""φ_a(s) = (e^{as} − 1 − a(e^s − 1)) / (a(a−1)) for s ≤ 0, to a few ulp relative.

    This is f_α(e^s) for the α-generator, ≥ 0 with a double zero at s = 0; α = 1 and α = 0 are
    the limits s e^s − expm1(s) (KL) and expm1(s) − s (reverse KL). Three evaluations:

    * |s| < τ: the series :func:`_series`;
    * a < ½: (expm1(as)/a − expm1(s))/(a − 1)  (no division by a; exact limit a → 0);
    * a ≥ ½: (e^s·expm1((a−1)s)/(a−1) − expm1(s))/a  (exact limit a → 1), with
      e^s·expm1(bs) = −e^{as}·expm1(−bs) for b = a − 1 < 0 so that nothing overflows.

    Callers keep a·s ≤ ``_LOG_SWITCH`` (larger a·s, only possible for a < 0, goes through the
    log-domain form in :func:`_weighted_phi`).
    """
    tau = _series_threshold(s.dtype, a)
    near = s > -tau
    s_far = torch.where(near, -tau, s)
    if a < 0.5:
        far = (_expm1_div(a, s_far) - torch.expm1(s_far)) / (a - 1.0)
    else:
        b = a - 1.0
        if b > 0.0:
            x_over_b = torch.exp(s_far) * torch.expm1(b * s_far) / b
        elif b == 0.0:
            x_over_b = torch.exp(s_far) * s_far
        else:
            x_over_b = -torch.exp(a * s_far) * torch.expm1(-b * s_far) / b
        far = (x_over_b - torch.expm1(s_far)) / a
    return torch.where(near, _series(torch.where(near, s, 0.0), a), far)


def _phi1(s: Tensor) -> Tensor:
    r"""φ₁(s) = s e^s − e^s + 1 (the KL generator's Bregman part) for any s with e^s finite."""
    tau = _series_threshold(s.dtype, 1.0)
    near = s.abs() < tau
    s_far = torch.where(near, 1.0, s)
    em1 = torch.expm1(s_far)
    far = s_far * (em1 + 1.0) - em1
    return torch.where(near, _series(torch.where(near, s, 0.0), 1.0), far)


def _weighted_phi(log_w: Tensor, s: Tensor, a: float) -> Tensor:
    r"""w·φ_a(s) for s ≤ 0 with w = exp(log_w), without overflow or 0·∞.

    For a ≥ 0, φ_a(s) ≤ max(1/a, |s|) is bounded. For a < 0 it grows like e^{as}/(a(a−1)); where
    a·s > ``_LOG_SWITCH`` the product is formed as exp(log w + log φ_a(s)) with
    log φ_a(s) = a s + log1p(−(1 + a·expm1(s))·e^{−as}) − log(a(a−1)), so that a tiny w times a
    huge φ gives the right finite value (and +∞ only when the value itself overflows).
    """
    if a >= 0.0:
        return log_w.exp() * _phi(s, a)
    big = a * s > _LOG_SWITCH
    s_small = torch.where(big, 0.0, s)
    s_big = torch.where(big, s, (_LOG_SWITCH + 1.0) / a)
    direct = log_w.exp() * _phi(s_small, a)
    log_phi = (
        a * s_big
        + torch.log1p(-(1.0 + a * torch.expm1(s_big)) * torch.exp(-a * s_big))
        - math.log(a * (a - 1.0))
    )
    return torch.where(big, torch.exp(log_w + log_phi), direct)


def _alpha_terms(lp: Tensor, lq: Tensor, a: float) -> Tensor:
    r"""Elementwise q·f_a(p/q) = [p^a q^{1−a} − a p − (1−a) q]/(a(a−1)) for finite lp, lq.

    With s = log p − log q: q·φ_a(s) where s ≤ 0 and p·φ_{1−a}(−s) where s > 0 (the symmetry
    q f_a(p/q) = p f_{1−a}(q/p)), so φ is only ever evaluated at non-positive arguments.
    """
    s = lp - lq
    neg = s <= 0
    t_neg = _weighted_phi(lq, torch.where(neg, s, 0.0), a)
    t_pos = _weighted_phi(lp, torch.where(neg, 0.0, -s), 1.0 - a)
    return torch.where(neg, t_neg, t_pos)


def alpha_rows(log_p: Tensor, log_q: Tensor, alpha: float) -> Tensor:
    r"""α-divergence (Cichocki–Amari): Σ [p^α q^{1−α} − α p − (1−α) q] / (α(α−1)).

    Each term is q·f_α(p/q) ≥ 0 (see :func:`_alpha_terms`), so nothing cancels across atoms and
    nothing overflows unless the value does. α = 1 and α = 0 are the limits of the same terms,
    Σ p log(p/q) − p + q and Σ q log(q/p) − q + p: on normalised inputs exactly ``kl`` and
    ``reverse_kl`` (and more accurate than them near P = Q), continuous in α.
    """
    p_pos, q_pos = _pos(log_p), _pos(log_q)
    both = p_pos & q_pos
    lp, lq = _safe(log_p, both), _safe(log_q, both)
    term_both = _alpha_terms(lp, lq, alpha)
    # atoms where exactly one side is zero: q·f(0) and p·lim f(t)/t
    f0 = 1.0 / alpha if alpha > 0 else INF
    slope = 1.0 / (1.0 - alpha) if alpha < 1 else INF
    lq_only = _safe(log_q, q_pos & ~p_pos)
    lp_only = _safe(log_p, p_pos & ~q_pos)
    term_q_only = torch.where(
        q_pos & ~p_pos, lq_only.exp() * (f0 if math.isfinite(f0) else 0.0), 0.0
    )
    term_p_only = torch.where(
        p_pos & ~q_pos, lp_only.exp() * (slope if math.isfinite(slope) else 0.0), 0.0
    )
    rows = torch.where(both, term_both, 0.0).sum(-1) + term_q_only.sum(-1) + term_p_only.sum(-1)
    infinite = torch.zeros_like(rows, dtype=torch.bool)
    if not math.isfinite(f0):
        infinite = infinite | (q_pos & ~p_pos).any(-1)
    if not math.isfinite(slope):
        infinite = infinite | (p_pos & ~q_pos).any(-1)
    return _with_infinite(rows, infinite)


def renyi_rows(log_p: Tensor, log_q: Tensor, order: float) -> Tensor:
    r"""Rényi divergence of order a: log Σ p^a q^{1−a} / (a − 1).

    a = 1 is KL(P‖Q); a = 0 is −log Q(supp P); a = ∞ is log max_x p(x)/q(x).
    """
    if order == 1.0:
        return kl_rows(log_p, log_q)
    p_pos, q_pos = _pos(log_p), _pos(log_q)
    both = p_pos & q_pos
    neg_inf = torch.full_like(log_p, NEG_INF)
    if order == 0.0:
        lq_on_p = torch.where(both, log_q, neg_inf)
        # the value depends on P only through its support; keep P in the graph (zero gradient)
        # so that both arguments stay differentiable (autograd.grad w.r.t. p does not fail)
        anchor = 0.0 * _safe(log_p, p_pos).sum(-1)
        lse = torch.logsumexp(lq_on_p, dim=-1)
        # normalised Q: −log1p(−Q(outside supp P)), exactly 0 for a full support (lse would
        # be the rounding error of Q's normaliser)
        outside = torch.where(p_pos, 0.0, log_q.exp()).sum(-1)
        small = (outside < 0.5) & _normalised(log_q)
        log_in = torch.where(small, torch.log1p(-torch.where(small, outside, 0.0)), lse)
        return anchor - log_in
    lp, lq = _safe(log_p, both), _safe(log_q, both)
    p_only = (p_pos & ~q_pos).any(-1)
    if math.isinf(order):
        ratio = torch.where(both, lp - lq, neg_inf)
        return _with_infinite(ratio.amax(-1), p_only)
    x = torch.where(both, order * lp + (1.0 - order) * lq, neg_inf)
    lse = torch.logsumexp(x, dim=-1)
    # Σ w − 1 = a(a−1)·Σ q f_a(p/q) + [a Σp + (1−a) Σq − 1]: the α-divergence's non-negative
    # terms (accurate near P = Q, where lse is a rounding error away from 0) plus the linear
    # part, which is 0 on normalised rows. Used on rows with |log Σ w| < 0.4 (decided from lse,
    # without gradient); the other rows get harmless inputs (P = Q), so that overflowing
    # terms there cannot put NaN into the gradient.
    with torch.no_grad():
        small = (lse.abs() < 0.4).unsqueeze(-1)
    lp_s, lq_s = torch.where(small, lp, 0.0), torch.where(small, lq, 0.0)
    alpha_sum = torch.where(both, _alpha_terms(lp_s, lq_s, order), 0.0).sum(-1)
    p_only_mass = torch.where(p_pos & ~q_pos, _safe(log_p, p_pos & ~q_pos).exp(), 0.0).sum(-1)
    q_only_mass = torch.where(q_pos & ~p_pos, _safe(log_q, q_pos & ~p_pos).exp(), 0.0).sum(-1)
    # one-sided atoms have w = 0 (a row with p > 0 = q and a > 1 is +∞, flagged below), so
    # their masses leave the linear part: Σ_both w = a(a−1)S + a Σ_both p + (1−a) Σ_both q
    one_sided = -order * p_only_mass - (1.0 - order) * q_only_mass
    t = order * (order - 1.0) * alpha_sum + one_sided
    if not _ROWS_NORMALISED.get():
        t = t + _linear_part(
            log_p, log_q, order * log_p.exp().sum(-1) + (1.0 - order) * log_q.exp().sum(-1) - 1.0
        )
    small = small.squeeze(-1) & (t.abs() < 0.5)
    log_sum = torch.where(small, torch.log1p(torch.where(small, t, 0.0)), lse)
    rows = log_sum / (order - 1.0)
    if order > 1.0:
        rows = _with_infinite(rows, p_only)
    return rows


# --------------------------------------------------------------------------------------------
# generators (f, f', r² f'')
# --------------------------------------------------------------------------------------------
def _xlogx(t: Tensor) -> Tensor:
    return torch.special.xlogy(t, t)


def _kl_gen() -> FGenerator:
    return FGenerator(
        f=_xlogx,
        f_prime=lambda t: torch.log(t) + 1.0,
        weighting=lambda r: r,
        f_at_zero=0.0,
        slope_at_infinity=INF,
    )


def _reverse_kl_gen() -> FGenerator:
    return FGenerator(
        f=lambda t: -torch.log(t),
        f_prime=lambda t: -1.0 / t,
        weighting=lambda r: torch.ones_like(r),
        f_at_zero=INF,
        slope_at_infinity=0.0,
    )


def _js_gen(beta: float) -> FGenerator:
    def f(t: Tensor) -> Tensor:
        m = beta * t + (1.0 - beta)
        return beta * _xlogx(t) - m * torch.log(m)

    return FGenerator(
        f=f,
        f_prime=lambda t: beta * torch.log(t / (beta * t + 1.0 - beta)),
        weighting=lambda r: beta * (1.0 - beta) * r / (beta * r + 1.0 - beta),
        f_at_zero=-(1.0 - beta) * math.log1p(-beta),
        slope_at_infinity=-beta * math.log(beta),
    )


def _skew_kl_gen(alpha: float) -> FGenerator:
    if alpha == 0.0:
        return _kl_gen()

    def f(t: Tensor) -> Tensor:
        return torch.special.xlogy(t, t) - torch.special.xlogy(t, alpha * t + 1.0 - alpha)

    return FGenerator(
        f=f,
        f_prime=lambda t: (
            torch.log(t / (alpha * t + 1.0 - alpha)) + (1.0 - alpha) / (alpha * t + 1.0 - alpha)
        ),
        weighting=lambda r: (1.0 - alpha) ** 2 * r / (alpha * r + 1.0 - alpha) ** 2,
        f_at_zero=0.0,
        slope_at_infinity=-math.log(alpha),
    )


def _skew_reverse_kl_gen(alpha: float) -> FGenerator:
    if alpha == 0.0:
        return _reverse_kl_gen()
    return FGenerator(
        f=lambda t: -torch.log(alpha + (1.0 - alpha) * t),
        f_prime=lambda t: -(1.0 - alpha) / (alpha + (1.0 - alpha) * t),
        weighting=lambda r: (1.0 - alpha) ** 2 * r * r / (alpha + (1.0 - alpha) * r) ** 2,
        f_at_zero=-math.log(alpha),
        slope_at_infinity=0.0,
    )


def _jeffreys_gen() -> FGenerator:
    return FGenerator(
        f=lambda t: (t - 1.0) * torch.log(t),
        f_prime=lambda t: torch.log(t) + 1.0 - 1.0 / t,
        weighting=lambda r: r + 1.0,
        f_at_zero=INF,
        slope_at_infinity=INF,
    )


def _tv_gen() -> FGenerator:
    return FGenerator(
        f=lambda t: 0.5 * (t - 1.0).abs(),
        f_prime=lambda t: 0.5 * torch.sign(t - 1.0),
        weighting=lambda r: torch.zeros_like(r),
        f_at_zero=0.5,
        slope_at_infinity=0.5,
    )


def _hellinger_gen() -> FGenerator:
    return FGenerator(
        f=lambda t: 0.5 * (torch.sqrt(t) - 1.0) ** 2,
        f_prime=lambda t: 0.5 * (1.0 - 1.0 / torch.sqrt(t)),
        weighting=lambda r: 0.25 * torch.sqrt(r),
        f_at_zero=0.5,
        slope_at_infinity=0.5,
    )


def _pearson_gen() -> FGenerator:
    return FGenerator(
        f=lambda t: (t - 1.0) ** 2,
        f_prime=lambda t: 2.0 * (t - 1.0),
        weighting=lambda r: 2.0 * r * r,
        f_at_zero=1.0,
        slope_at_infinity=INF,
    )


def _neyman_gen() -> FGenerator:
    return FGenerator(
        f=lambda t: (t - 1.0) ** 2 / t,
        f_prime=lambda t: 1.0 - 1.0 / (t * t),
        weighting=lambda r: 2.0 / r,
        f_at_zero=INF,
        slope_at_infinity=1.0,
    )


def _alpha_gen(alpha: float) -> FGenerator:
    """f_α(t) = (t^α − α t − (1 − α))/(α(α−1)); at α = 1 and 0 its limits (what alpha_rows uses):
    t log t − t + 1 and t − 1 − log t (the KL and reverse-KL generators plus a multiple of t − 1,
    the same divergence on normalised inputs)."""
    if alpha == 1.0:
        return FGenerator(
            f=lambda t: torch.special.xlogy(t, t) - t + 1.0,
            f_prime=torch.log,
            weighting=lambda r: r,
            f_at_zero=1.0,
            slope_at_infinity=INF,
        )
    if alpha == 0.0:
        return FGenerator(
            f=lambda t: t - 1.0 - torch.log(t),
            f_prime=lambda t: 1.0 - 1.0 / t,
            weighting=lambda r: torch.ones_like(r),
            f_at_zero=INF,
            slope_at_infinity=1.0,
        )
    denom = alpha * (alpha - 1.0)
    return FGenerator(
        f=lambda t: (t.pow(alpha) - alpha * t - (1.0 - alpha)) / denom,
        f_prime=lambda t: (t.pow(alpha - 1.0) - 1.0) / (alpha - 1.0),
        weighting=lambda r: r.pow(alpha),
        f_at_zero=1.0 / alpha if alpha > 0 else INF,
        slope_at_infinity=1.0 / (1.0 - alpha) if alpha < 1 else INF,
    )


# --------------------------------------------------------------------------------------------
# registry entries
# --------------------------------------------------------------------------------------------
def _binary_entropy(beta: float) -> float:
    return -beta * math.log(beta) - (1.0 - beta) * math.log1p(-beta)


_OUTSIDE_PQ = "P(x) > 0 = Q(x) for some x (P not absolutely continuous w.r.t. Q)"
_OUTSIDE_QP = "Q(x) > 0 = P(x) for some x"

KL = register_divergence(
    Divergence(
        name="kl",
        aliases=("fkl", "forward_kl"),
        title="Kullback–Leibler divergence (forward KL)",
        formula=r"\mathrm{KL}(P\|Q) = \sum_x P(x)\log\frac{P(x)}{Q(x)}",
        formula_text="Σ p·log(p/q)",
        row_fn=kl_rows,
        generator=_kl_gen,
        infinite_when=_OUTSIDE_PQ,
        references=("Kullback & Leibler 1951",),
        description="Mode-covering when minimised over Q (the student).",
        kernel=kernels.plan_kl,
    )
)

REVERSE_KL = register_divergence(
    Divergence(
        name="reverse_kl",
        aliases=("rkl",),
        title="Reverse Kullback–Leibler divergence",
        formula=r"\mathrm{KL}(Q\|P) = \sum_x Q(x)\log\frac{Q(x)}{P(x)}",
        formula_text="Σ q·log(q/p)",
        row_fn=reverse_kl_rows,
        generator=_reverse_kl_gen,
        infinite_when=_OUTSIDE_QP,
        references=("Kullback & Leibler 1951",),
        description="Mode-seeking when minimised over Q.",
        kernel=kernels.plan_reverse_kl,
    )
)

JS = register_divergence(
    Divergence(
        name="js",
        aliases=("jsd",),
        title="Generalised Jensen–Shannon divergence (GKD convention)",
        formula=(
            r"\mathrm{JSD}_\beta(P\|Q) = \beta\,\mathrm{KL}(P\|M) + (1-\beta)\,\mathrm{KL}(Q\|M),"
            r"\quad M = \beta P + (1-\beta) Q"
        ),
        formula_text="β·KL(P‖M) + (1−β)·KL(Q‖M), M = βP + (1−β)Q",
        row_fn=js_rows,
        parameters=(
            Parameter(
                "beta",
                0.5,
                0.0,
                1.0,
                description="mixture weight of P in M",
                hint="JSD_β → 0 at both ends; for β → 0 or 1 use `kl` or `reverse_kl`",
            ),
        ),
        symmetric=lambda beta=0.5: beta == 0.5,
        upper_bound=lambda beta=0.5: _binary_entropy(beta),
        bound_text="h(β) = −β log β − (1−β) log(1−β); log 2 at β=½",
        metric="√ is a metric at β = ½",
        generator=_js_gen,
        infinite_when="never",
        references=("Lin 1991", "Agarwal et al. 2024, GKD, Eq. 1"),
        kernel=kernels.plan_js,
    )
)


def _skew_entry(mirrored: bool) -> Divergence:
    """``skew_kl``, KL(P ‖ αP + (1−α)Q), or its mirror ``skew_reverse_kl`` (P and Q swapped)."""
    first, second = ("Q", "P") if mirrored else ("P", "Q")
    limit = "reverse_kl" if mirrored else "kl"
    return Divergence(
        name=f"skew_{limit}",
        title="Skew reverse KL divergence" if mirrored else "Skew KL divergence",
        formula=rf"\mathrm{{KL}}\big({first}\,\|\,\alpha {first} + (1-\alpha) {second}\big)",
        formula_text=f"KL({first} ‖ α{first} + (1−α){second})",
        row_fn=skew_reverse_kl_rows if mirrored else skew_kl_rows,
        parameters=(
            Parameter(
                "alpha",
                0.1,
                0.0,
                1.0,
                low_inclusive=True,
                description=f"weight of {first} in the mixture (α = 0 is `{limit}`)",
                hint="α = 1 makes the divergence identically 0",
            ),
        ),
        upper_bound=lambda alpha=0.1: -math.log(alpha) if alpha > 0 else math.inf,
        bound_text="log(1/α)",
        generator=_skew_reverse_kl_gen if mirrored else _skew_kl_gen,
        infinite_when=f"only at α = 0, as for `{limit}`",
        references=("Lee 1999", "Ko et al. 2024, DistiLLM"),
        kernel=kernels.plan_skew_reverse_kl if mirrored else kernels.plan_skew_kl,
    )


SKEW_KL = register_divergence(_skew_entry(mirrored=False))
SKEW_REVERSE_KL = register_divergence(_skew_entry(mirrored=True))

JEFFREYS = register_divergence(
    Divergence(
        name="jeffreys",
        title="Jeffreys divergence (symmetrised KL)",
        formula=r"\mathrm{KL}(P\|Q) + \mathrm{KL}(Q\|P) = \sum_x (P(x)-Q(x))\log\frac{P(x)}{Q(x)}",
        formula_text="Σ (p − q)·log(p/q)",
        row_fn=jeffreys_rows,
        symmetric=lambda: True,
        generator=_jeffreys_gen,
        infinite_when="the supports of P and Q differ",
        references=("Jeffreys 1946",),
        kernel=kernels.plan_jeffreys,
    )
)

TV = register_divergence(
    Divergence(
        name="tv",
        title="Total variation distance",
        formula=r"\mathrm{TV}(P,Q) = \tfrac12 \sum_x |P(x) - Q(x)|",
        formula_text="½ Σ |p − q|",
        row_fn=tv_rows,
        symmetric=lambda: True,
        upper_bound=lambda: 1.0,
        bound_text="1",
        metric="yes",
        generator=_tv_gen,
        infinite_when="never",
        references=("Pinsker: TV ≤ √(KL/2)",),
        kernel=kernels.plan_tv,
    )
)

HELLINGER = register_divergence(
    Divergence(
        name="hellinger",
        title="Squared Hellinger distance",
        formula=(
            r"H^2(P,Q) = \tfrac12 \sum_x \big(\sqrt{P(x)} - \sqrt{Q(x)}\big)^2"
            r" = 1 - \sum_x\sqrt{P(x)Q(x)}"
        ),
        formula_text="½ Σ (√p − √q)²  (squared, in [0, 1])",
        row_fn=hellinger_rows,
        symmetric=lambda: True,
        upper_bound=lambda: 1.0,
        bound_text="1",
        metric="√ (the Hellinger distance) is a metric",
        generator=_hellinger_gen,
        infinite_when="never",
        references=("Hellinger 1909",),
        kernel=kernels.plan_hellinger,
    )
)

PEARSON_CHI2 = register_divergence(
    Divergence(
        name="pearson_chi2",
        title="Pearson χ² divergence",
        formula=r"\chi^2(P\|Q) = \sum_x \frac{(P(x)-Q(x))^2}{Q(x)}",
        formula_text="Σ (p − q)²/q",
        row_fn=pearson_chi2_rows,
        generator=_pearson_gen,
        infinite_when=_OUTSIDE_PQ + "; also overflows to +∞ when p²/q exceeds the float range",
        references=("Pearson 1900",),
        kernel=kernels.plan_pearson_chi2,
    )
)

NEYMAN_CHI2 = register_divergence(
    Divergence(
        name="neyman_chi2",
        title="Neyman χ² divergence",
        formula=r"\chi^2(Q\|P) = \sum_x \frac{(P(x)-Q(x))^2}{P(x)}",
        formula_text="Σ (p − q)²/p",
        row_fn=neyman_chi2_rows,
        generator=_neyman_gen,
        infinite_when=_OUTSIDE_QP + "; also overflows to +∞ when q²/p exceeds the float range",
        references=("Neyman 1949",),
        kernel=kernels.plan_neyman_chi2,
    )
)

ALPHA = register_divergence(
    Divergence(
        name="alpha",
        title="α-divergence (Cichocki–Amari convention)",
        formula=(
            r"D_\alpha(P\|Q) = \frac{1}{\alpha(\alpha-1)}\Big(\sum_x P(x)^\alpha Q(x)^{1-\alpha}"
            r" - 1\Big),\ \alpha\to1: \mathrm{KL}(P\|Q),\ \alpha\to0: \mathrm{KL}(Q\|P)"
        ),
        formula_text="(Σ p^α q^(1−α) − 1)/(α(α−1));  α=1: kl, α=0: reverse_kl",
        row_fn=alpha_rows,
        parameters=(
            Parameter(
                "alpha",
                0.5,
                description=(
                    "order α ∈ ℝ; 1 → kl, 0 → reverse_kl, ½ → 4·hellinger, 2 → ½·pearson_chi2"
                ),
            ),
        ),
        symmetric=lambda alpha=0.5: alpha == 0.5,
        upper_bound=lambda alpha=0.5: 1.0 / (alpha * (1.0 - alpha)) if 0 < alpha < 1 else math.inf,
        bound_text="1/(α(1−α)) for α ∈ (0, 1), else ∞",
        generator=_alpha_gen,
        infinite_when=(
            "α ≥ 1 and P has mass where Q has none; α ≤ 0 and Q has mass where P has none; "
            "for α > 1 or α < 0 also overflows to +∞ when the value exceeds the float range"
        ),
        references=("Zhu & Rohwer 1995", "Cichocki & Amari 2010, Entropy 12(6)"),
        kernel=kernels.plan_alpha,
    )
)

RENYI = register_divergence(
    Divergence(
        name="renyi",
        title="Rényi divergence",
        formula=r"D_a(P\|Q) = \frac{1}{a-1}\log\sum_x P(x)^a Q(x)^{1-a}",
        formula_text="log(Σ p^a q^(1−a))/(a − 1);  a=1: kl",
        row_fn=renyi_rows,
        parameters=(
            Parameter(
                "order",
                0.5,
                0.0,
                math.inf,
                low_inclusive=True,
                high_inclusive=True,
                allow_infinite=True,
                description="order a ∈ [0, ∞]; 1 → kl, 0 → −log Q(supp P), ∞ → log max p/q",
            ),
        ),
        symmetric=lambda order=0.5: order == 0.5,
        infinite_when="order ≥ 1: P has mass where Q has none; order < 1: disjoint supports",
        references=("Rényi 1961", "van Erven & Harremoës 2014"),
        description="Not an f-divergence but a monotone transform of the α-divergence.",
        kernel=kernels.plan_renyi,
    )
)

SOFT_CROSS_ENTROPY = register_divergence(
    Divergence(
        name="soft_cross_entropy",
        title="Soft cross-entropy (not a divergence)",
        formula=r"H(P,Q) = -\sum_x P(x)\log Q(x) = \mathrm{KL}(P\|Q) + H(P)",
        formula_text="−Σ p·log q = KL(P‖Q) + H(P)",
        row_fn=soft_cross_entropy_rows,
        is_divergence=False,
        infinite_when=_OUTSIDE_PQ,
        references=("Hinton et al. 2015",),
        description="Same gradient in Q as `kl`; its value includes the teacher entropy H(P).",
        kernel=kernels.plan_soft_cross_entropy,
    )
)


_BUILTIN_ROW_FNS = frozenset(
    {
        kl_rows,
        reverse_kl_rows,
        js_rows,
        skew_kl_rows,
        skew_reverse_kl_rows,
        jeffreys_rows,
        tv_rows,
        hellinger_rows,
        pearson_chi2_rows,
        neyman_chi2_rows,
        alpha_rows,
        renyi_rows,
        soft_cross_entropy_rows,
    }
)


def normalised_row_values(
    row_fn: Callable[..., Tensor],
    log_p: Tensor,
    log_q: Tensor,
    params: dict[str, Any],
    *,
    eager: bool = False,
) -> Tensor:
    """``row_fn(log_p, log_q, **params)`` for rows normalised by construction.

    For the output of ``log_softmax`` (every row sums to 1 up to its rounding, or is NaN):
    a built-in row function then skips the normalisation checks of its linear part (exactly 0
    on such rows) instead of recomputing them. ``eager`` (not compiled, not under a
    ``torch.func`` transform) also lets it look at the values once (one sync) to skip the
    branches of one-sided atoms when there are none. Any other row function is called as is.
    The public row functions keep checking their inputs (top-k slices are not normalised).
    """
    if row_fn not in _BUILTIN_ROW_FNS:
        return row_fn(log_p, log_q, **params)
    token = _ROWS_NORMALISED.set(_NORMALISED | (_EAGER if eager else 0))
    try:
        return row_fn(log_p, log_q, **params)
    finally:
        _ROWS_NORMALISED.reset(token)

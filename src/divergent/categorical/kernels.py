r"""Per-chunk kernels: the value of a divergence *and* its log-probability gradients in one pass.

Every registered divergence between two categorical rows,
:math:`D(P\|Q) = \sum_x g(\log p_x, \log q_x)` (or, for Rényi, a transform of such a sum),
is differentiated in closed form. With :math:`A_x = \partial D/\partial \log p_x` and
:math:`B_x = \partial D/\partial \log q_x`, the gradients with respect to the logits
:math:`a, b` of :math:`p = \mathrm{softmax}(a/T)`, :math:`q = \mathrm{softmax}(b/T)` are

.. math::
    \frac{\partial D}{\partial a_j} = \frac1T\Big(A_j - p_j \sum_x A_x\Big),\qquad
    \frac{\partial D}{\partial b_j} = \frac1T\Big(B_j - q_j \sum_x B_x\Big).

For an f-divergence :math:`\sum_x q f(p/q)` with :math:`r = p/q` this is
:math:`A = p\,f'(r)` and :math:`B = q\,(f(r) - r f'(r))`. Each kernel computes, on a
``(rows, V)`` chunk of normalised log-probabilities, per-row statistics (sums, maxima,
log-sum-exps) and the elementwise :math:`A, B`; the engine
(:mod:`divergent.engine.chunked`) turns them into logit gradients. The statistics are exactly
what vocabulary-parallel sharding has to all-reduce (:mod:`divergent.engine.vocab_parallel`),
so both paths share these kernels: every statistic is tagged with how shards combine
(``"sum"``, ``"max"`` or ``"lse"``), and a row's value is a function of its combined
statistics only.

Numerics follow :mod:`divergent.categorical.divergences`: zero-probability atoms are ``-inf``
entries and
are decided in the log domain, every ``torch.where`` selects a finite branch, and a row is
flagged infinite exactly when the reference row function returns ``+inf``. Kernels contain no
data-dependent Python control flow, so they trace under ``torch.compile``.

A kernel's numeric parameters (``beta``, ``alpha``, ``order`` and constants derived from them)
are passed as 0-d tensors of the compute dtype (``consts``), so that a compiled kernel is not
recompiled when a parameter changes; structural cases (``alpha = 1`` is ``kl``) select a
different kernel.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from divergent.categorical.registry import Divergence, FGenerator

__all__ = [
    "LSE",
    "MAX",
    "SUM",
    "ChunkKernel",
    "ElementwiseKernel",
    "KernelPlan",
    "kernel_for",
]

SUM, MAX, LSE = "sum", "max", "lse"
"""How a per-row statistic combines across vocabulary shards."""

_INF = math.inf
_NINF = -math.inf
_CHI2_SWITCH = 20.0  # as in named.pearson_chi2_rows

Stat = tuple[Tensor, str]
Finish = tuple[Tensor, Tensor, Tensor | None, Tensor, Tensor | None, Tensor]


def _phi_tau(dtype: torch.dtype, scale: float) -> float:
    """|t| below which φ is summed as a series: 0.1 in float32/bf16, 0.01 in float64.

    The closed forms lose about 2·eps/|t| relative precision, the 7-term series truncates at
    about |o·t|^7/9!, so these balance both (as the reference ``named._series_threshold``).
    """
    return (0.01 if dtype == torch.float64 else 0.1) * scale


def _phi1_series(t: Tensor) -> Tensor:
    r""":math:`\varphi_1(t) = t e^t - e^t + 1 = \sum_{k=2}^{8} \frac{k-1}{k!} t^k`."""
    acc: Tensor | float = 7.0 / 40320.0
    for k in range(7, 1, -1):
        acc = (k - 1) / math.factorial(k) + t * acc
    return t * t * acc


def _horner(x: Tensor, coeffs: Sequence[Tensor | float]) -> Tensor | float:
    """c_0 + x (c_1 + x (c_2 + …)) for coefficients given lowest order first."""
    acc: Tensor | float = coeffs[-1]
    for c in reversed(coeffs[:-1]):
        acc = c + x * acc
    return acc


def _binom(a: float, k: int) -> float:
    """Generalised binomial coefficient C(a, k) for real a."""
    out = 1.0
    for j in range(k):
        out *= (a - j) / (j + 1)
    return out


def _pos(log_x: Tensor) -> Tensor:
    return log_x > _NINF


class ChunkKernel:
    """Value and log-probability gradients of one divergence on a chunk of rows.

    Subclasses implement :meth:`stats` (``rounds`` rounds of per-row statistics; round ``k``
    may use the combined statistics of rounds ``< k``) and :meth:`finish` (row values from the
    combined statistics, and the elementwise gradients ``A``, ``B`` with their row sums).

    Attributes:
        rounds: number of statistic rounds (vocab-parallel all-reduces once per round).
        compilable: whether the kernel may be passed to ``torch.compile``.
        dtype: a compute dtype the kernel requires (``float64`` for user generators), or None.
    """

    rounds: int = 1
    compilable: bool = True
    dtype: torch.dtype | None = None

    def stats(
        self,
        rnd: int,
        lp: Tensor,
        lq: Tensor,
        prev: Sequence[Tensor],
        c: Sequence[Tensor],
        cache: dict[str, Any],
        need_a: bool,
        need_b: bool,
    ) -> list[Stat]:
        raise NotImplementedError

    def finish(
        self,
        lp: Tensor,
        lq: Tensor,
        stats: Sequence[Tensor],
        c: Sequence[Tensor],
        cache: dict[str, Any],
        need_a: bool,
        need_b: bool,
    ) -> Finish:
        """``(value, infinite, A, sum_A, B, sum_B)``; ``A``/``B`` are None when not needed."""
        raise NotImplementedError


class ElementwiseKernel(ChunkKernel):
    r"""A divergence :math:`\sum_x g(\log p_x, \log q_x)`: one round of four row sums.

    Subclasses implement :meth:`elem` returning the elementwise term, a mask of atoms that
    make the row infinite (or None), and :math:`A = \partial g/\partial \log p`,
    :math:`B = \partial g/\partial \log q`.

    ``sum_a`` / ``sum_b``: the row sums of A / B when they are constants on normalised rows
    (KL: :math:`\sum_x (q - p) = 0`), else None. Then that side's gradient needs no row
    statistic and the engine writes it in the same pass as the value.
    """

    sum_a: float | None = None
    sum_b: float | None = None

    def elem(
        self, lp: Tensor, lq: Tensor, c: Sequence[Tensor], need_a: bool, need_b: bool
    ) -> tuple[Tensor, Tensor | None, Tensor | None, Tensor | None]:
        raise NotImplementedError

    def stats(self, rnd, lp, lq, prev, c, cache, need_a, need_b):  # type: ignore[override]
        term, inf_e, a, b = self.elem(lp, lq, c, need_a, need_b)
        cache["A"], cache["B"] = a, b
        zero = torch.zeros_like(lp[..., 0])
        n_inf = zero if inf_e is None else inf_e.sum(-1, dtype=lp.dtype)
        sum_a = zero if a is None else a.sum(-1)
        sum_b = zero if b is None else b.sum(-1)
        return [(term.sum(-1), SUM), (n_inf, SUM), (sum_a, SUM), (sum_b, SUM)]

    def finish(self, lp, lq, stats, c, cache, need_a, need_b):  # type: ignore[override]
        total, n_inf, sum_a, sum_b = stats
        if (need_a and cache.get("A") is None) or (need_b and cache.get("B") is None):
            _, _, cache["A"], cache["B"] = self.elem(lp, lq, c, need_a, need_b)
        infinite = n_inf > 0
        value = torch.where(infinite, _INF, total)
        return value, infinite, cache.get("A"), sum_a, cache.get("B"), sum_b


class Swapped(ElementwiseKernel):
    """``D(P‖Q) = E(Q‖P)`` for an elementwise kernel E (reverse KL, Neyman χ², ...)."""

    def __init__(self, inner: ElementwiseKernel) -> None:
        self.inner = inner
        self.compilable = inner.compilable
        self.dtype = inner.dtype
        self.sum_a, self.sum_b = inner.sum_b, inner.sum_a

    def elem(self, lp, lq, c, need_a, need_b):  # type: ignore[override]
        term, inf_e, a, b = self.inner.elem(lq, lp, c, need_b, need_a)
        return term, inf_e, b, a

    def __repr__(self) -> str:
        return f"Swapped({self.inner!r})"


# --------------------------------------------------------------------------------------------
# elementwise kernels of the named divergences
# --------------------------------------------------------------------------------------------
def kl_terms(
    lp: Tensor, lq: Tensor, tau: float | Tensor
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    r"""Non-negative KL terms :math:`q\,\varphi_1(d) = p d - p + q`, :math:`d = \log(p/q)`.

    The one formulation of KL used by the chunk kernel *and* the reference row function
    (:func:`divergent.categorical.divergences.kl_rows`): the series
    :func:`_phi1_series` for :math:`|d| < \tau` (the closed form cancels there), the closed
    form elsewhere; an atom with P = 0 < Q gives q (the linear part, which sums to 0 against
    the other atoms' on normalised rows). Returns the terms, the mask of atoms with
    Q = 0 < P (the row is +∞), and p, q, d (for the gradients, without recomputing them).
    """
    p_pos, q_pos = _pos(lp), _pos(lq)
    both = p_pos & q_pos
    d = torch.where(both, lp - lq, 0.0)
    p, q = lp.exp(), lq.exp()
    near = both & (d.abs() < tau)
    term = torch.where(near, q * _phi1_series(torch.where(near, d, 0.0)), p * d - p + q)
    return term, p_pos & ~q_pos, p, q, d


class KLKernel(ElementwiseKernel):
    r"""KL(P‖Q) as non-negative terms :math:`q\,\varphi_1(d) = p d - p + q`, :math:`d = \log(p/q)`.

    On normalised rows :math:`\sum_x (q - p) = 0`, so the value is :math:`\sum p d`; written as
    :math:`q\varphi_1(d) \ge 0` (series for |d| < τ, :func:`kl_terms`) nothing cancels across
    atoms, and an error δ in either log-normaliser cancels to first order, so the float32 value
    stays accurate near P = Q (where :math:`\sum p d` loses about eps·|log Z|/KL relative).
    :math:`A = p d`, :math:`B = q - p` (so :math:`\sum B = 0`).
    """

    sum_b = 0.0

    def elem(self, lp, lq, c, need_a, need_b):  # type: ignore[override]
        term, p_only, p, q, d = kl_terms(lp, lq, _phi_tau(lp.dtype, 1.0))
        a = p * d if need_a else None
        b = q - p if need_b else None
        return term, p_only, a, b


class SoftCrossEntropyKernel(ElementwiseKernel):
    r"""Soft CE :math:`g=-p\log q`: :math:`A = g`, :math:`B = -p`, :math:`\sum B = -1`."""

    sum_b = -1.0

    def elem(self, lp, lq, c, need_a, need_b):  # type: ignore[override]
        p_pos, q_pos = _pos(lp), _pos(lq)
        p = lp.exp()
        term = -p * torch.where(p_pos & q_pos, lq, 0.0)
        return term, p_pos & ~q_pos, (term if need_a else None), (-p if need_b else None)


_JS_TERMS = 12  # series terms k = 2 … 13


class JSKernel(ElementwiseKernel):
    r"""Generalised JSD, :math:`m = \beta p + (1-\beta) q`, in terms of :math:`\delta = p/m - 1`.

    Per atom the value is :math:`m\,J(\delta)` with
    :math:`J = \beta f(1+\delta) + (1-\beta) f(1-\gamma\delta) \ge 0`,
    :math:`f(x) = x\log x - x + 1`, :math:`\gamma = \beta/(1-\beta)` (the linear parts cancel
    since :math:`\beta p + (1-\beta) q = m`). Near P = Q it is summed as the series
    :math:`J = \sum_{k\ge2} c_k\delta^k`,
    :math:`c_k = [\beta(-1)^k + (1-\beta)\gamma^k]/(k(k-1))` (coefficients computed once per
    β), elsewhere as :math:`\beta p s_p + (1-\beta) q s_q`, :math:`s = \log(\cdot/m)` (no
    cancellation there): non-negative terms, accurate near P = Q, with one logarithm per
    atom. The gradients are :math:`A = \beta p s_p` and :math:`B = (1-\beta) q s_q` (the
    mixture's own derivative cancels). Atoms where m underflows to 0 contribute 0 (their
    exact contribution is below 1e-38). Consts: ``(β, 1−β, τ, c_2, …, c_13)``.
    """

    def elem(self, lp, lq, c, need_a, need_b):  # type: ignore[override]
        beta, one_m, tau = c[0], c[1], c[2]
        p, q = lp.exp(), lq.exp()
        m = beta * p + one_m * q
        ok = m > 0
        lm = torch.log(torch.where(ok, m, 1.0))
        tp = torch.where(ok & _pos(lp), beta * p * (lp - lm), 0.0)
        tq = torch.where(ok & _pos(lq), one_m * q * (lq - lm), 0.0)
        delta = torch.where(ok, one_m * (p - q) / torch.where(ok, m, 1.0), 0.0)
        series = m * delta * delta * _horner(delta, c[3:])
        term = torch.where(delta.abs() < tau, series, tp + tq)
        return term, None, (tp if need_a else None), (tq if need_b else None)


SKEW_TAU, SKEW_TAU64 = 0.3, 0.01  # |δ| below which the skew-KL terms are a series
_F_SERIES = [(-1.0) ** k / (k * (k - 1)) for k in range(2, 18)]  # f(1+δ) = Σ δ^k (−1)^k/(k(k−1))


def skew_kl_terms(
    lp: Tensor, lq: Tensor, al: float | Tensor, one_m: float | Tensor, tau: float | Tensor
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    r"""Non-negative terms of KL(P‖M), :math:`M = \alpha P + (1-\alpha) Q`, α ∈ (0, 1).

    :math:`m f(1+\delta)` with :math:`f(x) = x\log x - x + 1`,
    :math:`\delta = p/m - 1 = (1-\alpha)(p - q)/m`: the series
    :math:`f(1+\delta) = \sum_{k\ge2}(-1)^k\delta^k/(k(k-1))` for :math:`|\delta| < \tau`, the
    closed form :math:`p\log(p/m) - p + m` elsewhere (an atom with P = 0 gives m). The one
    formulation of the kernel and of the reference row function. Returns ``(term, p, m_safe,
    s)`` with :math:`s = \log(p/m)` (0 where P = 0) for the gradients.
    """
    p_pos = _pos(lp)
    p, q = lp.exp(), lq.exp()
    m = al * p + one_m * q
    ok = m > 0
    m_safe = torch.where(ok, m, 1.0)
    s = torch.where(ok & p_pos, lp - torch.log(m_safe), 0.0)
    delta = torch.where(ok, one_m * (p - q) / m_safe, 0.0)
    near = delta.abs() < tau
    d_near = torch.where(near, delta, 0.0)
    series = m * d_near * d_near * _horner(d_near, _F_SERIES)
    term = torch.where(near, series, p * s - p + m)  # = m where p = 0
    return term, p, m_safe, s


class SkewKLKernel(ElementwiseKernel):
    r"""KL(P‖M), :math:`M = \alpha P + (1-\alpha)Q`, α ∈ (0, 1), as :math:`\sum_x m f(1+\delta)`.

    :math:`f(x) = x\log x - x + 1 \ge 0`, :math:`\delta = p/m - 1 = (1-\alpha)(p-q)/m`
    (on normalised rows :math:`\sum (m - p) = 0`): see :func:`skew_kl_terms`. With
    :math:`u = (1-\alpha)q/m`: :math:`A = p(\log(p/m) + u)`, :math:`B = -p u`.
    Consts: ``(α, 1−α, τ)``.
    """

    def elem(self, lp, lq, c, need_a, need_b):  # type: ignore[override]
        al, one_m, tau = c[0], c[1], c[2]
        term, p, m_safe, s = skew_kl_terms(lp, lq, al, one_m, tau)
        if not (need_a or need_b):
            return term, None, None, None
        p_pos = _pos(lp)
        u = one_m * lq.exp() / m_safe
        a = torch.where(p_pos, p * (s + u), 0.0) if need_a else None
        b = torch.where(p_pos, -p * u, 0.0) if need_b else None
        return term, None, a, b


class JeffreysKernel(ElementwiseKernel):
    r"""Jeffreys: :math:`g = (p-q)\,d`, :math:`A = p d + p - q`, :math:`B = -q d - p + q`."""

    def elem(self, lp, lq, c, need_a, need_b):  # type: ignore[override]
        p_pos, q_pos = _pos(lp), _pos(lq)
        d = torch.where(p_pos & q_pos, lp - lq, 0.0)
        p, q = lp.exp(), lq.exp()
        term = (p - q) * d
        a = p * d + (p - q) if need_a else None
        b = (q - p) - q * d if need_b else None
        return term, p_pos ^ q_pos, a, b


class TVKernel(ElementwiseKernel):
    r"""Total variation: :math:`g = \tfrac12|p-q|`, :math:`A = \tfrac12\,\mathrm{sign}(p-q)\,p`."""

    def elem(self, lp, lq, c, need_a, need_b):  # type: ignore[override]
        p, q = lp.exp(), lq.exp()
        diff = p - q
        half_sign = 0.5 * torch.sign(diff)
        a = half_sign * p if need_a else None
        b = -half_sign * q if need_b else None
        return 0.5 * diff.abs(), None, a, b


class HellingerKernel(ElementwiseKernel):
    r"""Squared Hellinger: :math:`g = \tfrac12(\sqrt p - \sqrt q)^2`.

    :math:`A = \tfrac12(\sqrt p-\sqrt q)\sqrt p`, :math:`B = -\tfrac12(\sqrt p-\sqrt q)\sqrt q`.
    """

    def elem(self, lp, lq, c, need_a, need_b):  # type: ignore[override]
        sp, sq = torch.exp(0.5 * lp), torch.exp(0.5 * lq)
        diff = sp - sq
        a = 0.5 * diff * sp if need_a else None
        b = -0.5 * diff * sq if need_b else None
        return 0.5 * diff.square(), None, a, b


class PearsonChi2Kernel(ElementwiseKernel):
    r"""Pearson χ²: :math:`g = q\,E^2`, :math:`E = \mathrm{expm1}(s)`, :math:`s = \log p - \log q`.

    :math:`A = 2pE`, :math:`B = -q\,\mathrm{expm1}(2s) = -qE(E+2)`. Above s = 20 all three are
    :math:`X = e^{2\log p - \log q} = p^2/q` times 1, 2, −1 (the relative difference,
    :math:`e^{-s}`, is below float precision), so nothing overflows unless the value does.
    """

    def elem(self, lp, lq, c, need_a, need_b):  # type: ignore[override]
        p_pos, q_pos = _pos(lp), _pos(lq)
        lq_s = torch.where(q_pos, lq, 0.0)
        s = torch.where(q_pos, lp - lq_s, 0.0)  # -inf where p = 0 < q
        big = s > _CHI2_SWITCH
        e = torch.expm1(torch.where(big, 0.0, s))
        x = torch.exp(torch.where(big, 2.0 * lp - lq_s, _NINF))
        q = lq.exp()
        term = torch.where(q_pos, torch.where(big, x, q * e * e), 0.0)
        a = b = None
        if need_a:
            a = torch.where(q_pos, torch.where(big, 2.0 * x, 2.0 * lp.exp() * e), 0.0)
        if need_b:
            b = torch.where(q_pos, torch.where(big, -x, -q * e * (e + 2.0)), 0.0)
        return term, p_pos & ~q_pos, a, b


_ALPHA_TERMS = 16  # series terms k = 2 … 17


class AlphaKernel(ElementwiseKernel):
    r"""α-divergence (Cichocki–Amari), α ∉ {0, 1}: per atom :math:`q f_\alpha(1+x)`, x = p/q − 1.

    Near P = Q (:math:`|x| < \tau`, with :math:`x = \mathrm{expm1}(\log p - \log q)`) the
    binomial series :math:`q f_\alpha(1+x) = q\sum_{k\ge2} \binom{\alpha}{k} x^k/(\alpha(\alpha-1))`
    (non-negative terms, no cancellation; coefficients computed once per α); elsewhere the
    closed form :math:`(w - \alpha p - (1-\alpha)q)/(\alpha(\alpha-1))`,
    :math:`w = e^{\alpha\log p + (1-\alpha)\log q}`, whose terms do not cancel there and which
    overflows only when the value does. Atoms with one side zero come out as the limits
    q/α, p/(1−α) or +∞ (flagged). Gradients: :math:`A = (w - p)/(\alpha-1)`,
    :math:`B = (q - w)/\alpha`, near P = Q as the series
    :math:`A = q x (1 + \sum_{k\ge2}\binom{\alpha}{k}x^{k-1}/(\alpha-1))`,
    :math:`B = -q x (1 + \sum_{k\ge2}\binom{\alpha}{k}x^{k-1}/\alpha)`.
    Consts: ``(α, 1−α, 1/(α(α−1)), 1/(α−1), 1/α, [α ≤ 0], [α ≥ 1], τ, c_2…c_17, a_2…a_17,
    b_2…b_17)``.
    """

    forms: tuple[str, ...] = ("closed", "near_one", "near_zero")

    def __init__(self, form: str = "closed") -> None:
        if form not in self.forms:
            raise ValueError(f"AlphaKernel form must be one of {self.forms}, got {form!r}")
        self.form = form

    def __repr__(self) -> str:
        return f"AlphaKernel({self.form!r})"

    def elem(self, lp, lq, c, need_a, need_b):  # type: ignore[override]
        al, one_m, inv_den, inv_am1, inv_a, f0_inf, slope_inf, tau = c[:8]
        n = _ALPHA_TERMS
        ct, ca, cb = c[8 : 8 + n], c[8 + n : 8 + 2 * n], c[8 + 2 * n : 8 + 3 * n]
        p_pos, q_pos = _pos(lp), _pos(lq)
        both = p_pos & q_pos
        p, q = lp.exp(), lq.exp()
        # log w; where one side is zero it is ±inf by the sign of the exponent's coefficient
        lw = torch.where(
            both, al * torch.where(both, lp, 0.0) + one_m * torch.where(both, lq, 0.0), _NINF
        )
        lw = torch.where(p_pos & ~q_pos & (slope_inf > 0), _INF, lw)
        lw = torch.where(q_pos & ~p_pos & (f0_inf > 0), _INF, lw)
        w = lw.exp()
        d = torch.where(both, lp - lq, 0.0)
        x = torch.expm1(d)
        near = both & (x.abs() < tau)
        x_n = torch.where(near, x, 0.0)
        qx = q * x_n
        term_near = qx * x_n * _horner(x_n, ct)
        a_far = b_far = None
        if self.form == "closed":
            # |α − ½| > 1: the closed form does not cancel away from P = Q
            far = (w - al * p - one_m * q) * inv_den
            if need_a:
                a_far = (w - p) * inv_am1
            if need_b:
                b_far = (q - w) * inv_a
        else:
            # α near 1 (or 0): (w − αp − (1−α)q)/(α(α−1)) cancels like 1/|α − 1| (1/|α|);
            # written with E = expm1(c·d)/c, which is exact in the limit c → 0, instead:
            # α ≥ ½: w = p(1 + (α−1)E₁), E₁ = expm1((α−1)d)/(α−1),
            #        q f = (p E₁ − (p − q))/α, A = p E₁, B = (q − p − (α−1)A)/α;
            # α < ½: w = q(1 + α E₀), E₀ = expm1(α d)/α,
            #        q f = (q E₀ − (p − q))/(α − 1), B = −q E₀, A = (q − α B − p)/(α − 1).
            # One-sided atoms keep the closed form (their limits q/α, p/(1−α) or +∞).
            diff = p - q  # |p/q − 1| ≥ τ here: no cancellation to speak of
            # p E₁ = (w − p)/(α − 1) and q E₀ = (w − q)/α need expm1 only where the exponent
            # c·d is below 1 in size; beyond, w/p (w/q) is ≥ e or ≤ 1/e and the difference
            # does not cancel (this also keeps an underflowed p = 0 from meeting e^{c·d} = ∞)
            if self.form == "near_one":
                # α − 1 as −(1 − α): the constant 1 − α is rounded once from float64, whereas
                # al − 1 in float32 would lose all but a few digits of α − 1 = −1e−5
                cd = -one_m * d
                mild = cd.abs() < 1.0
                a_e = torch.where(
                    mild, p * (torch.expm1(torch.where(mild, cd, 0.0)) * inv_am1), (w - p) * inv_am1
                )
                far_e = (a_e - diff) * inv_a
                b_e = (-diff + one_m * a_e) * inv_a
            else:
                cd = al * d
                mild = cd.abs() < 1.0
                b_e = torch.where(
                    mild, -q * (torch.expm1(torch.where(mild, cd, 0.0)) * inv_a), (q - w) * inv_a
                )
                far_e = (-b_e - diff) * inv_am1
                a_e = (-diff - al * b_e) * inv_am1
            far = torch.where(both, far_e, (w - al * p - one_m * q) * inv_den)
            if need_a:
                a_far = torch.where(both, a_e, (w - p) * inv_am1)
            if need_b:
                b_far = torch.where(both, b_e, (q - w) * inv_a)
        term = torch.where(near, term_near, far)
        inf_e = (q_pos & ~p_pos & (f0_inf > 0)) | (p_pos & ~q_pos & (slope_inf > 0))
        a = b = None
        if need_a:
            a = torch.where(near, qx * (1.0 + x_n * _horner(x_n, ca)), a_far)
        if need_b:
            b = torch.where(near, -qx * (1.0 + x_n * _horner(x_n, cb)), b_far)
        return term, inf_e, a, b


# --------------------------------------------------------------------------------------------
# Rényi: a log-sum-exp statistic instead of a sum
# --------------------------------------------------------------------------------------------
class RenyiKernel(ChunkKernel):
    r"""Rényi, order a ∉ {0,1,∞}: :math:`D=\log\sum_x w_x/(a-1)`, :math:`w = p^a q^{1-a}`.

    Two statistics of the same sum: :math:`\mathrm{lse}(x)`, :math:`x=a\log p+(1-a)\log q`
    (never overflows), and the α-divergence sum :math:`S = \sum_x q f_a(p/q) \ge 0` of the
    :class:`AlphaKernel` terms, with :math:`\sum_x w = 1 + a(a-1) S` on normalised rows.
    Where :math:`|a(a-1)S| < \tfrac12` (in particular near P = Q, where lse(x) is a rounding
    error away from 0 and cancels) the value is :math:`\mathrm{log1p}(a(a-1)S)/(a-1)`, accurate
    to a few ulp relative; elsewhere lse(x)/(a − 1), which has no cancellation there.
    With :math:`\tilde w = \mathrm{softmax}(x)`: :math:`A = \frac{a}{a-1}\tilde w`,
    :math:`B = -\tilde w` (so :math:`\sum A = a/(a-1)`, :math:`\sum B = -1`).
    Consts: ``(a, 1−a, 1/(a−1), a/(a−1), [a > 1])`` followed by the α kernel's constants.
    """

    def __init__(self, alpha_kernel: AlphaKernel | None = None) -> None:
        self.alpha_kernel = alpha_kernel or AlphaKernel()

    def __repr__(self) -> str:
        return f"RenyiKernel({self.alpha_kernel!r})"

    def _x(self, lp: Tensor, lq: Tensor, c: Sequence[Tensor]) -> Tensor:
        order, one_m = c[0], c[1]
        both = _pos(lp) & _pos(lq)
        return torch.where(both, order * lp + one_m * lq, _NINF)

    def stats(self, rnd, lp, lq, prev, c, cache, need_a, need_b):  # type: ignore[override]
        x = cache["x"] = self._x(lp, lq, c)
        p_only = _pos(lp) & ~_pos(lq) & (c[4] > 0)
        terms, _, _, _ = self.alpha_kernel.elem(lp, lq, c[5:], False, False)
        return [
            (torch.logsumexp(x, -1), LSE),
            (p_only.sum(-1, dtype=lp.dtype), SUM),
            (terms.sum(-1), SUM),
        ]

    def finish(self, lp, lq, stats, c, cache, need_a, need_b):  # type: ignore[override]
        lse_x, n_inf, alpha_sum = stats
        infinite = (n_inf > 0) | (lse_x == _NINF)
        t = -(c[0] * c[1]) * alpha_sum  # a(a − 1)·S = Σ w − 1
        small = t.abs() < 0.5  # False for t = ±inf or NaN
        log_sum = torch.where(small, torch.log1p(torch.where(small, t, 0.0)), lse_x)
        value = torch.where(infinite, _INF, log_sum * c[2])
        a = b = None
        zero = torch.zeros_like(lse_x)
        if need_a or need_b:
            x = cache.get("x")
            if x is None:
                x = self._x(lp, lq, c)
            w = torch.exp(x - lse_x.unsqueeze(-1))
            a = w * c[3] if need_a else None
            b = -w if need_b else None
        return value, infinite, a, zero + c[3], b, zero - 1.0


class RenyiZeroKernel(ChunkKernel):
    r"""Rényi of order 0: :math:`D = -\log Q(\mathrm{supp}\,P)`.

    As :math:`-\mathrm{log1p}(-Q(\overline{\mathrm{supp}\,P}))` when the mass outside the support
    is below ½ (exactly 0 when P has full support; no rounding of log Σ q ≈ 0), else as
    :math:`-\mathrm{lse}_{x\in\mathrm{supp}P}\log q_x`.
    :math:`A = 0`, :math:`B = -q\,1[p>0]/Q(\mathrm{supp}\,P)`.
    """

    def _x(self, lp: Tensor, lq: Tensor) -> Tensor:
        return torch.where(_pos(lp) & _pos(lq), lq, _NINF)

    def stats(self, rnd, lp, lq, prev, c, cache, need_a, need_b):  # type: ignore[override]
        x = cache["x"] = self._x(lp, lq)
        outside = torch.where(_pos(lp), 0.0, lq.exp()).sum(-1)
        return [(torch.logsumexp(x, -1), LSE), (outside, SUM)]

    def finish(self, lp, lq, stats, c, cache, need_a, need_b):  # type: ignore[override]
        lse_x, outside = stats
        infinite = lse_x == _NINF
        small = outside < 0.5
        log_in = torch.where(small, torch.log1p(-torch.where(small, outside, 0.0)), lse_x)
        value = torch.where(infinite, _INF, -log_in)
        zero = torch.zeros_like(lse_x)
        a = torch.zeros_like(lp) if need_a else None
        b = None
        if need_b:
            x = cache.get("x")
            if x is None:
                x = self._x(lp, lq)
            b = -torch.exp(x - lse_x.unsqueeze(-1))
        return value, infinite, a, zero, b, zero - 1.0


class RenyiInfKernel(ChunkKernel):
    r"""Rényi of order ∞: :math:`D = \max_x (\log p - \log q)`.

    The (sub)gradient splits evenly among tied maximisers, as autograd's ``amax`` does:
    :math:`A = 1[\text{argmax}]/k`, :math:`B = -A`. Two rounds (the maximum, then the ties).
    """

    rounds = 2

    def _ratio(self, lp: Tensor, lq: Tensor) -> Tensor:
        return torch.where(_pos(lp) & _pos(lq), lp - lq, _NINF)

    def stats(self, rnd, lp, lq, prev, c, cache, need_a, need_b):  # type: ignore[override]
        ratio = cache.get("ratio")
        if ratio is None:
            ratio = cache["ratio"] = self._ratio(lp, lq)
        if rnd == 0:
            p_only = _pos(lp) & ~_pos(lq)
            return [(ratio.amax(-1), MAX), (p_only.sum(-1, dtype=lp.dtype), SUM)]
        ties = (ratio == prev[0].unsqueeze(-1)) & (ratio > _NINF)
        cache["ties"] = ties
        return [(ties.sum(-1, dtype=lp.dtype), SUM)]

    def finish(self, lp, lq, stats, c, cache, need_a, need_b):  # type: ignore[override]
        top, n_inf, n_ties = stats
        infinite = (n_inf > 0) | (top == _INF)
        value = torch.where(infinite, _INF, top)
        zero = torch.zeros_like(top)
        a = b = None
        if need_a or need_b:
            ties = cache.get("ties")
            if ties is None:
                ties = (self._ratio(lp, lq) == top.unsqueeze(-1)) & (top.unsqueeze(-1) > _NINF)
            share = ties.to(lp.dtype) / n_ties.clamp_min(1.0).unsqueeze(-1)
            a = share if need_a else None
            b = -share if need_b else None
        return value, infinite, a, zero + 1.0, b, zero - 1.0


# --------------------------------------------------------------------------------------------
# user generators: a float64 kernel from f and f'
# --------------------------------------------------------------------------------------------
_F_EDGE = 200.0  # |log p − log q| beyond which a generator's tail is extrapolated (at most)
_F_EDGE_MIN = 12.5  # the edge is halved from _F_EDGE while f or f' overflows there, down to this


def _tail(value: float, slope: float, growing: float) -> tuple[bool, float, float]:
    """(log-linear?, a, b) for extending a tail from its value and slope at the edge.

    A tail whose logarithmic rate exceeds 0.05 (a power of t) is extended log-linearly,
    otherwise (constant or logarithmic tails) linearly in s = log t.
    """
    if math.isfinite(value) and value > 0 and math.isfinite(slope):
        rate = slope / value
        if rate * growing > 0.05:
            return True, math.log(value), rate
    return False, value, slope


def generator_tail(generator: FGenerator, side: float) -> tuple[float, tuple[bool, float, float]]:
    r"""The edge :math:`s_0` and tail model of a generator on one side (+1: t → ∞, −1: t → 0).

    The edge is the largest of 200, 100, 50, 25, 12.5 at which f and f' are finite, so a
    power tail such as :math:`t^\alpha` with α ≥ 4 (whose value overflows float64 at
    :math:`t = e^{200}`) is extended log-linearly from an edge where it is still representable.
    Beyond the edge the term is :math:`p\,g(s)` with :math:`g(s) = f(e^s)/e^s` (side +1) or
    :math:`q\,u(s)` with :math:`u(s) = f(e^s)` (side −1), extended by :func:`_tail`.
    """
    edge = _F_EDGE
    while True:
        t0 = torch.tensor([math.exp(side * edge)], dtype=torch.float64)
        with torch.no_grad():
            f0 = float(generator.f(t0)[0])
            d0 = float(generator.derivative(t0)[0])
        if (math.isfinite(f0) and math.isfinite(d0)) or edge / 2 < _F_EDGE_MIN:
            break
        edge /= 2
    t = float(t0[0])
    if side > 0:
        g0 = f0 / t  # g(s₀) = f(t₀)/t₀ and g'(s₀) = f'(t₀) − f(t₀)/t₀
        return edge, _tail(g0, d0 - g0, +1.0)
    return edge, _tail(f0, t * d0, -1.0)  # u(s₀), u'(s₀)


class GeneratorKernel(ElementwiseKernel):
    r"""Any f-divergence from its generator f (and f'), in float64.

    For :math:`|s| \le s_0`, :math:`s = \log p - \log q`, :math:`t = e^s`: :math:`g = q f(t)`,
    :math:`A = p f'(t)`, :math:`B = q(f(t) - t f'(t))`. Beyond, f is extended from the edge
    (:math:`s_0 = \pm 200`, or nearer where f overflows there: :func:`generator_tail`)
    linearly or log-linearly in s, and A, B are the derivatives of that extension. Atoms with
    P = 0 < Q give :math:`q f(0^+)`, atoms with Q = 0 < P give :math:`p f'(\infty)` (either
    may be +∞). f' is the generator's
    analytic derivative, or autograd when it has none, so this kernel runs eagerly.
    """

    compilable = False
    dtype = torch.float64

    def __init__(self, generator: FGenerator) -> None:
        self.generator = generator
        slope, f0 = generator.slope_at_infinity, generator.f_at_zero
        self.slope = slope if math.isfinite(slope) else 0.0
        self.f0 = f0 if math.isfinite(f0) else 0.0
        self.slope_inf = not math.isfinite(slope)
        self.f0_inf = not math.isfinite(f0)
        self.hi_edge, self.hi = generator_tail(generator, +1.0)
        self.lo_edge, self.lo = generator_tail(generator, -1.0)

    def elem(self, lp, lq, c, need_a, need_b):  # type: ignore[override]
        gen = self.generator
        lp, lq = lp.double(), lq.double()
        p_pos, q_pos = _pos(lp), _pos(lq)
        both = p_pos & q_pos
        q_only, p_only = q_pos & ~p_pos, p_pos & ~q_pos
        lpb, lqb = torch.where(both, lp, 0.0), torch.where(both, lq, 0.0)
        s = lpb - lqb
        high, low = s > self.hi_edge, s < -self.lo_edge
        mid = ~(high | low)
        t = torch.exp(torch.where(mid, s, 0.0))
        p, q = lpb.exp(), lqb.exp()
        f_t = gen.f(t)
        fp = gen.derivative(t) if (need_a or need_b) else None
        # tails: value and (∂/∂log p, ∂/∂log q)
        hi_log, hi_a, hi_b = self.hi
        lo_log, lo_a, lo_b = self.lo
        s_hi = torch.where(high, s, 0.0) - self.hi_edge
        s_lo = torch.where(low, s, 0.0) + self.lo_edge
        if hi_log:
            t_hi = torch.exp(lpb + hi_a + hi_b * s_hi)
            a_hi, b_hi = t_hi * (1.0 + hi_b), -t_hi * hi_b
        else:
            t_hi = p * (hi_a + hi_b * s_hi)
            a_hi, b_hi = t_hi + p * hi_b, -p * hi_b
        if lo_log:
            t_lo = torch.exp(lqb + lo_a + lo_b * s_lo)
            a_lo, b_lo = t_lo * lo_b, t_lo * (1.0 - lo_b)
        else:
            t_lo = q * (lo_a + lo_b * s_lo)
            a_lo, b_lo = q * lo_b, t_lo - q * lo_b
        ep_only = torch.where(p_only, torch.where(p_only, lp, 0.0).exp() * self.slope, 0.0)
        eq_only = torch.where(q_only, torch.where(q_only, lq, 0.0).exp() * self.f0, 0.0)

        def pick(v_mid: Tensor, v_hi: Tensor, v_lo: Tensor) -> Tensor:
            return torch.where(both, torch.where(high, v_hi, torch.where(low, v_lo, v_mid)), 0.0)

        term = pick(q * f_t, t_hi, t_lo) + eq_only + ep_only
        inf_e = torch.zeros_like(both)
        if self.f0_inf:
            inf_e = inf_e | q_only
        if self.slope_inf:
            inf_e = inf_e | p_only
        a = b = None
        if need_a and fp is not None:
            a = pick(p * fp, a_hi, a_lo) + ep_only
        if need_b and fp is not None:
            b = pick(q * (f_t - t * fp), b_hi, b_lo) + eq_only
        return term, inf_e, a, b


# --------------------------------------------------------------------------------------------
# lookup: (divergence, parameters) -> kernel + constants
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class KernelPlan:
    """A kernel with its numeric constants (floats, turned into 0-d tensors by the engine)."""

    kernel: ChunkKernel
    consts: tuple[float, ...] = ()
    key: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def tensors(self, dtype: torch.dtype, device: torch.device) -> tuple[Tensor, ...]:
        """The constants as 0-d tensors; a series radius ``tau`` is narrower in float64
        (where the closed forms lose less, and the series must be accurate to 1e-16)."""
        values = list(self.consts)
        if dtype == torch.float64 and "tau64" in self.extra:
            values[self.extra["tau_at"]] = self.extra["tau64"]
        return tuple(torch.tensor(v, dtype=dtype, device=device) for v in values)


_KL, _SCE, _JS = KLKernel(), SoftCrossEntropyKernel(), JSKernel()
_SKEW, _JEFF, _TV, _HEL = SkewKLKernel(), JeffreysKernel(), TVKernel(), HellingerKernel()
_CHI2 = PearsonChi2Kernel()
_ALPHA = {form: AlphaKernel(form) for form in AlphaKernel.forms}
_RENYI = {form: RenyiKernel(kern) for form, kern in _ALPHA.items()}
_RENYI0, _RENYI_INF = RenyiZeroKernel(), RenyiInfKernel()
_RKL, _SKEW_R, _NEYMAN = Swapped(_KL), Swapped(_SKEW), Swapped(_CHI2)


def plan_kl(**_: float) -> KernelPlan:
    return KernelPlan(_KL, (), "kl")


def plan_reverse_kl(**_: float) -> KernelPlan:
    return KernelPlan(_RKL, (), "reverse_kl")


def plan_js(beta: float) -> KernelPlan:
    gamma = beta / (1.0 - beta)
    coeffs = [
        (beta * (-1.0) ** k + (1.0 - beta) * gamma**k) / (k * (k - 1))
        for k in range(2, 2 + _JS_TERMS)
    ]
    # series radius: successive terms shrink by ≤ 0.2 (fp32) / 0.01 (fp64) in δ and in γδ
    tau = 0.2 * min(1.0, 1.0 / gamma)
    tau64 = 0.01 * min(1.0, 1.0 / gamma)
    return KernelPlan(_JS, (beta, 1.0 - beta, tau, *coeffs), "js", {"tau64": tau64, "tau_at": 2})


def plan_skew(alpha: float, reverse: bool) -> KernelPlan:
    if alpha == 0.0:
        return plan_reverse_kl() if reverse else plan_kl()
    kern = _SKEW_R if reverse else _SKEW
    return KernelPlan(
        kern, (alpha, 1.0 - alpha, SKEW_TAU), repr(kern), {"tau64": SKEW_TAU64, "tau_at": 2}
    )


def plan_alpha(alpha: float) -> KernelPlan:
    if alpha == 1.0:
        return plan_kl()
    if alpha == 0.0:
        return plan_reverse_kl()
    den = alpha * (alpha - 1.0)
    binoms = [_binom(alpha, k) for k in range(2, 2 + _ALPHA_TERMS)]
    tau = 0.3 / max(1.0, abs(alpha - 0.5)) ** 0.5
    consts = (
        alpha,
        1.0 - alpha,
        1.0 / den,
        1.0 / (alpha - 1.0),
        1.0 / alpha,
        float(alpha <= 0.0),
        float(alpha >= 1.0),
        tau,
        *[bk / den for bk in binoms],
        *[bk / (alpha - 1.0) for bk in binoms],
        *[bk / alpha for bk in binoms],
    )
    tau64 = 0.01 / max(1.0, abs(alpha - 0.5))
    return KernelPlan(
        _ALPHA[_alpha_form(alpha)],
        consts,
        f"alpha_{_alpha_form(alpha)}",
        {"tau64": tau64, "tau_at": 7},
    )


def _alpha_form(alpha: float) -> str:
    """Which far-from-P=Q evaluation of the α terms is accurate at this α (see AlphaKernel)."""
    if 0.5 <= alpha <= 1.5:
        return "near_one"
    if -0.5 <= alpha < 0.5:
        return "near_zero"
    return "closed"


def plan_renyi(order: float) -> KernelPlan:
    if order == 1.0:
        return plan_kl()
    if order == 0.0:
        return KernelPlan(_RENYI0, (), "renyi0")
    if math.isinf(order):
        return KernelPlan(_RENYI_INF, (), "renyi_inf")
    consts = (order, 1.0 - order, 1.0 / (order - 1.0), order / (order - 1.0), float(order > 1.0))
    inner = plan_alpha(order)
    extra = {"tau64": inner.extra["tau64"], "tau_at": len(consts) + inner.extra["tau_at"]}
    form = _alpha_form(order)
    return KernelPlan(_RENYI[form], consts + inner.consts, f"renyi_{form}", extra)


def plan_soft_cross_entropy() -> KernelPlan:
    return KernelPlan(_SCE, (), "soft_cross_entropy")


def plan_skew_kl(alpha: float) -> KernelPlan:
    return plan_skew(alpha, reverse=False)


def plan_skew_reverse_kl(alpha: float) -> KernelPlan:
    return plan_skew(alpha, reverse=True)


def plan_jeffreys() -> KernelPlan:
    return KernelPlan(_JEFF, (), "jeffreys")


def plan_tv() -> KernelPlan:
    return KernelPlan(_TV, (), "tv")


def plan_hellinger() -> KernelPlan:
    return KernelPlan(_HEL, (), "hellinger")


def plan_pearson_chi2() -> KernelPlan:
    return KernelPlan(_CHI2, (), "pearson_chi2")


def plan_neyman_chi2() -> KernelPlan:
    return KernelPlan(_NEYMAN, (), "neyman_chi2")


def kernel_for(spec: Divergence, params: dict[str, float]) -> KernelPlan | None:
    """The chunk kernel of ``spec`` at validated ``params``, or None (autograd fallback).

    The entry declares its kernel itself (``Divergence.kernel``, set next to its row function
    in :mod:`divergent.categorical.divergences` or by a user registering their own). Without
    one the engine differentiates the row function chunk by chunk with autograd, which is
    exact by construction. Vocabulary-parallel sharding, which cannot see whole rows, uses
    :func:`generator_kernel` for f-divergences without a kernel.
    """
    return spec.kernel_plan(params)


def generator_kernel(generator: FGenerator) -> KernelPlan:
    """The float64 kernel of an arbitrary generator (for ``chunk_kernel`` factories)."""
    return KernelPlan(GeneratorKernel(generator), (), "generator")

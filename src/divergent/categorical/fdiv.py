r"""User-defined f-divergences from a generator f.

:math:`D_f(P\|Q) = \sum_{x: Q(x)>0} Q(x)\, f\!\big(P(x)/Q(x)\big) + f'(\infty)\, P(Q = 0)`,
with :math:`f'(\infty) = \lim_{t\to\infty} f(t)/t` (Csiszár 1967; Ali & Silvey 1966).

A generator given as a plain callable works everywhere a named divergence does:
``divergent.f_divergence(f, p_logits, q_logits)``, ``divergent.divergence(f, ...)`` and every
objective's ``divergence=`` argument.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import torch
from torch import Tensor

from divergent.categorical.registry import (
    Divergence,
    DivergenceLike,
    FGenerator,
    generator_from_callable,
    get_divergence,
)

__all__ = ["generic_f_rows", "make_f_divergence", "resolve_divergence"]


_EDGE = 200.0  # |log p − log q| beyond which f(t) is extrapolated instead of evaluated


def _tail_model(value: float, slope: float, growing: float) -> tuple[str, float, float]:
    """Choose how to extend a tail from its value and derivative (in s = log t) at the edge.

    ``growing`` is +1 when the tail grows with s, −1 when it grows as s decreases. A tail whose
    logarithmic rate |d log(value)/ds| exceeds 0.05 is a power of t (t^k, 1/t ...): extended
    log-linearly (exact for pure powers); otherwise (constant or logarithmic tails: f(0⁺)
    finite, t log t, −log t, the JS generator ...) linearly in s (exact for t log t and −log t).
    """
    if math.isfinite(value) and value > 0 and math.isfinite(slope):
        rate = slope / value
        if rate * growing > 0.05:
            return "log", math.log(value), rate
    return "linear", value, slope


def generic_f_rows(log_p: Tensor, log_q: Tensor, *, generator: FGenerator) -> Tensor:
    r"""Σ_x q f(p/q) per row for an arbitrary generator, evaluated in float64.

    The ratio t = exp(s), s = log p − log q, is formed in float64 for |s| ≤ 200. Beyond, f is
    not evaluated (t would leave the float range); the term is extended from the edge
    s₀ = ±200 using f(t₀) and f'(t₀): for s > 200 as p·g(s) with g(s) = f(e^s)/e^s, for
    s < −200 as q·u(s) with u(s) = f(e^s), each linear in s (exact for logarithmic tails:
    t log t, −log t, constant limits) or log-linear in s (exact for power tails such as
    (t − 1)² and 1/t), whichever the local rate at the edge indicates. So the KL, reverse-KL,
    JS, χ² ... generators give the named divergences' values at logits ±1e4, finite where those
    are. Atoms with P = 0 < Q contribute Q·f(0⁺), atoms with Q = 0 < P contribute
    P·lim f(t)/t (either may be +∞). Named divergences use exact log-domain formulas instead.
    """
    out_dtype = torch.promote_types(log_p.dtype, log_q.dtype)
    lp64, lq64 = log_p.double(), log_q.double()
    p_pos, q_pos = lp64 > -math.inf, lq64 > -math.inf
    both = p_pos & q_pos
    zero = torch.zeros((), dtype=torch.float64, device=lp64.device)
    lp, lq = torch.where(both, lp64, zero), torch.where(both, lq64, zero)
    s = lp - lq
    high, low = s > _EDGE, s < -_EDGE
    mid = ~(high | low)
    t = torch.exp(torch.where(mid, s, zero))
    term_mid = lq.exp() * generator.f(t)
    # tails, from f and f' at the edges t₀ = e^{±200} (python floats, once per call)
    edge = torch.tensor([math.exp(_EDGE), math.exp(-_EDGE)], dtype=torch.float64)
    with torch.no_grad():
        f_edge = [float(v) for v in generator.f(edge)]
        d_edge = [float(v) for v in generator.derivative(edge)]
    t_hi, t_lo = float(edge[0]), float(edge[1])
    g0 = f_edge[0] / t_hi  # g(s₀) = f(t₀)/t₀ and g'(s₀) = f'(t₀) − f(t₀)/t₀
    hi_kind, hi_a, hi_b = _tail_model(g0, d_edge[0] - g0, +1.0)
    lo_kind, lo_a, lo_b = _tail_model(f_edge[1], t_lo * d_edge[1], -1.0)  # u(s₀), u'(s₀)
    s_hi = torch.where(high, s, zero) - _EDGE
    s_lo = torch.where(low, s, zero) + _EDGE
    if hi_kind == "log":
        term_hi = torch.exp(lp + hi_a + hi_b * s_hi)
    else:
        term_hi = lp.exp() * (hi_a + hi_b * s_hi)
    if lo_kind == "log":
        term_lo = torch.exp(lq + lo_a + lo_b * s_lo)
    else:
        term_lo = lq.exp() * (lo_a + lo_b * s_lo)
    term_both = torch.where(high, term_hi, torch.where(low, term_lo, term_mid))
    slope, f0 = generator.slope_at_infinity, generator.f_at_zero
    finite_slope = slope if math.isfinite(slope) else 0.0
    finite_f0 = f0 if math.isfinite(f0) else 0.0
    q_only, p_only = q_pos & ~p_pos, p_pos & ~q_pos
    lq_only = torch.where(q_only, lq64, zero)
    lp_only = torch.where(p_only, lp64, zero)
    rows = (
        torch.where(both, term_both, zero).sum(-1)
        + torch.where(q_only, lq_only.exp() * finite_f0, zero).sum(-1)
        + torch.where(p_only, lp_only.exp() * finite_slope, zero).sum(-1)
    )
    infinite = torch.zeros_like(rows, dtype=torch.bool)
    if not math.isfinite(f0):
        infinite |= q_only.any(-1)
    if not math.isfinite(slope):
        infinite |= p_only.any(-1)
    rows = torch.where(infinite, torch.full_like(rows, math.inf), rows)
    return rows.to(out_dtype)


@functools.lru_cache(maxsize=256)
def _cached_generator(f: Callable[[Tensor], Tensor]) -> FGenerator:
    return generator_from_callable(f)


def make_f_divergence(
    f: Callable[[Tensor], Tensor] | FGenerator,
    *,
    name: str | None = None,
    f_prime: Callable[[Tensor], Tensor] | None = None,
    f_at_zero: float | None = None,
    slope_at_infinity: float | None = None,
    symmetric: bool = False,
) -> Divergence:
    r"""Build a :class:`Divergence` from a generator f (convex, f(1) = 0).

    Args:
        f: torch-differentiable elementwise callable, or an :class:`FGenerator`.
        name: name shown in tables (default ``f_divergence[<f's name>]``).
        f_prime: analytic derivative (used by objectives that need f', e.g. f-DPO).
        f_at_zero, slope_at_infinity: f(0⁺) and lim f(t)/t; estimated numerically when omitted
            (see :func:`divergent.categorical.registry.generator_from_callable`).
        symmetric: declare D_f(P‖Q) = D_f(Q‖P) (true iff f(t) − t f(1/t) is linear).

    Returns:
        A Divergence usable wherever a registered name is. Its upper bound is
        f(0) + lim f(t)/t, attained by distributions with disjoint supports (Vajda 1972).
    """
    if isinstance(f, FGenerator):
        gen = f
    elif f_prime is None and f_at_zero is None and slope_at_infinity is None:
        try:
            gen = _cached_generator(f)
        except TypeError:  # unhashable callable
            gen = generator_from_callable(f)
    else:
        gen = generator_from_callable(
            f, f_prime=f_prime, f_at_zero=f_at_zero, slope_at_infinity=slope_at_infinity
        )
    label = name or f"f_divergence[{getattr(gen.f, '__name__', 'f')}]"
    bound = gen.f_at_zero + gen.slope_at_infinity

    def row_fn(log_p: Tensor, log_q: Tensor) -> Tensor:
        return generic_f_rows(log_p, log_q, generator=gen)

    return Divergence(
        name=label,
        title="user-defined f-divergence",
        formula=r"D_f(P\|Q) = \sum_x Q(x) f\!\left(\frac{P(x)}{Q(x)}\right)",
        formula_text="Σ q·f(p/q)",
        row_fn=row_fn,
        symmetric=lambda: symmetric,
        upper_bound=lambda: bound,
        bound_text=f"f(0) + f'(∞) = {bound:g}",
        generator=lambda: gen,
        infinite_when="f(0) = ∞ and Q has mass where P has none, or f'(∞) = ∞ and P has mass "
        "where Q has none",
        references=("Csiszár 1967", "Ali & Silvey 1966"),
    )


def resolve_divergence(divergence: DivergenceLike | Callable[[Tensor], Tensor]) -> Divergence:
    """A registered name, a :class:`Divergence` or a generator callable f → a Divergence.

    Example:
        >>> import torch
        >>> resolve_divergence("kl").name
        'kl'
        >>> resolve_divergence(lambda t: (t - 1) ** 2).is_f_divergence
        True
    """
    if isinstance(divergence, Divergence):
        return divergence
    if isinstance(divergence, str):
        return get_divergence(divergence)
    if isinstance(divergence, FGenerator) or callable(divergence):
        return make_f_divergence(divergence)
    raise ValueError(
        "`divergence` must be a registered name (see `divergent list`), a Divergence, or a "
        f"generator callable f(t); got {type(divergence).__name__}"
    )

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

from divergent.categorical.kernels import GeneratorKernel
from divergent.categorical.registry import (
    Divergence,
    DivergenceLike,
    FGenerator,
    generator_from_callable,
    get_divergence,
)

__all__ = ["generic_f_rows", "make_f_divergence", "resolve_divergence"]


def generic_f_rows(log_p: Tensor, log_q: Tensor, *, generator: FGenerator) -> Tensor:
    r"""Σ_x q f(p/q) per row for an arbitrary generator, evaluated in float64.

    The ratio t = exp(s), s = log p − log q, is formed in float64 for |s| ≤ s₀ (s₀ = 200, or
    the nearest of 100, 50, 25, 12.5 where f or f' overflows at e^{±200}). Beyond, f is not
    evaluated; the term is extended from the edge using f(t₀) and f'(t₀): for s > s₀ as
    p·g(s) with g(s) = f(e^s)/e^s, for s < −s₀ as q·u(s) with u(s) = f(e^s), each linear in s
    (exact for logarithmic tails: t log t, −log t, constant limits) or log-linear in s (exact
    for power tails such as (t − 1)², t^α and 1/t), whichever the local rate at the edge
    indicates. So the KL, reverse-KL, JS, χ², α ... generators give the named divergences'
    values at logits ±1e4, finite where those are. Atoms with P = 0 < Q contribute Q·f(0⁺),
    atoms with Q = 0 < P contribute P·lim f(t)/t (either may be +∞). This is the value of
    :class:`~divergent.categorical.kernels.GeneratorKernel` (one implementation of the tail
    rule), differentiable by autograd. Named divergences use exact log-domain formulas instead.
    """
    out_dtype = torch.promote_types(log_p.dtype, log_q.dtype)
    term, infinite, _, _ = GeneratorKernel(generator).elem(log_p, log_q, (), False, False)
    rows = term.sum(-1)
    rows = torch.where(infinite.any(-1), torch.full_like(rows, math.inf), rows)
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

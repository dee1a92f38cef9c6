"""Axioms of the registered divergences as hypothesis properties, over random logits that
include extreme ones: entries ±1e4, −inf entries present in both P and Q (equal supports),
near-one-hot rows. Each example checks every (name, params) case of ``_refs.CASES``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from _refs import CASES
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import divergent
from divergent.categorical import get_divergence

DIVERGENCES = [c for c in CASES if get_divergence(c[0]).is_divergence]
# D_0(P‖Q) = −log Q(supp P) is 0 whenever supp Q ⊆ supp P, also for P ≠ Q: not "0 iff equal"
STRICT = [c for c in DIVERGENCES if c != ("renyi", {"order": 0.0})]
SYMMETRIC = [c for c in DIVERGENCES if get_divergence(c[0]).symmetric(**c[1])]
# values that can exceed the float range for finite logits (χ², α outside [0, 1])
MAY_OVERFLOW = {"pearson_chi2", "neyman_chi2"}


def _may_overflow(name: str, params: dict[str, float]) -> bool:
    if name in MAY_OVERFLOW:
        return True
    return name == "alpha" and not 0.0 <= params["alpha"] <= 1.0


# The axioms below (non-negative, zero on equal inputs, positive when different, invariant to
# a constant) are also checked for every case on fixed and swept logits by the contract
# battery (divergent.testing._check_axioms, test_contract_battery.py); here they run on half
# of the profile's examples (30 by default), each still over every case.
AXIOM_EXAMPLES = max(1, settings.default.max_examples // 2)

_ELEMENT = st.one_of(
    st.floats(-30.0, 30.0, allow_nan=False),
    st.sampled_from([1e4, -1e4, 0.0, 50.0, -50.0]),
)


@st.composite
def logit_pairs(draw: st.DrawFn) -> tuple[torch.Tensor, torch.Tensor]:
    """Two (rows, classes) float64 logit tensors with −inf at the same places (never a whole
    row), sometimes a near-one-hot row."""
    rows = draw(st.integers(1, 3))
    classes = draw(st.integers(2, 6))
    p = draw(arrays(np.float64, (rows, classes), elements=_ELEMENT))
    q = draw(arrays(np.float64, (rows, classes), elements=_ELEMENT))
    zero = draw(arrays(np.bool_, (rows, classes), elements=st.booleans()))
    zero[:, 0] &= ~zero.all(axis=1)  # keep at least one atom per row
    zero[np.arange(rows), np.argmin(zero, axis=1)] = False
    p[zero] = -np.inf
    q[zero] = -np.inf
    if draw(st.booleans()):  # near-one-hot target in the first row
        j = int(np.argmin(zero[0]))
        p[0, j] = 60.0 if np.isfinite(p[0, j]) else p[0, j]
    return torch.from_numpy(p), torch.from_numpy(q)


def _rows(name: str, p: torch.Tensor, q: torch.Tensor, params: dict[str, float]) -> torch.Tensor:
    return divergent.divergence(name, p, q, reduction="none", **params)


def _log_sum(p: torch.Tensor, q: torch.Tensor, a: float) -> torch.Tensor:
    """log Σ p^a q^{1−a} over the common support (float64, log domain)."""
    lp, lq = torch.log_softmax(p, -1), torch.log_softmax(q, -1)
    both = torch.isfinite(lp) & torch.isfinite(lq)
    x = torch.where(
        both, a * torch.where(both, lp, 0) + (1 - a) * torch.where(both, lq, 0), -math.inf
    )
    return torch.logsumexp(x, -1)


@settings(max_examples=AXIOM_EXAMPLES)
@given(logit_pairs())
def test_non_negative(pair: tuple[torch.Tensor, torch.Tensor]) -> None:
    p, q = pair
    for name, params in DIVERGENCES:
        values = _rows(name, p, q, params)
        assert not torch.isnan(values).any(), (name, params, values)
        assert bool((values >= -1e-10).all()), (name, params, values)


@settings(max_examples=AXIOM_EXAMPLES)
@given(logit_pairs())
def test_zero_on_equal_inputs(pair: tuple[torch.Tensor, torch.Tensor]) -> None:
    p, _ = pair
    for name, params in DIVERGENCES:
        values = _rows(name, p, p.clone(), params)
        assert bool((values.abs() <= 1e-12).all()), (name, params, values)
    for dtype in (torch.float32, torch.bfloat16):
        for name, params in DIVERGENCES:
            values = _rows(name, p.to(dtype), p.to(dtype), params)
            assert bool((values.abs() <= 1e-6).all()), (name, params, dtype, values)


@settings(max_examples=AXIOM_EXAMPLES)
@given(logit_pairs())
def test_positive_when_different(pair: tuple[torch.Tensor, torch.Tensor]) -> None:
    p, q = pair
    different = _rows("tv", p, q, {}) >= 1e-3
    for name, params in STRICT:
        values = _rows(name, p, q, params)
        assert bool((values[different] > 0).all()), (name, params, values)


@given(logit_pairs())
def test_symmetric_where_declared(pair: tuple[torch.Tensor, torch.Tensor]) -> None:
    p, q = pair
    names = {c[0] for c in SYMMETRIC}
    assert names == {"js", "jeffreys", "tv", "hellinger", "alpha", "renyi"}
    for name, params in SYMMETRIC:
        a, b = _rows(name, p, q, params), _rows(name, q, p, params)
        assert torch.equal(torch.isinf(a), torch.isinf(b))
        fin = torch.isfinite(a)
        torch.testing.assert_close(a[fin], b[fin], rtol=1e-9, atol=1e-12)


@settings(max_examples=AXIOM_EXAMPLES)
@given(logit_pairs(), st.floats(-1e3, 1e3), st.floats(-1e3, 1e3))
def test_invariant_to_adding_a_constant_to_logits(
    pair: tuple[torch.Tensor, torch.Tensor], c_p: float, c_q: float
) -> None:
    p, q = pair
    for name, params in CASES:
        a, b = _rows(name, p, q, params), _rows(name, p + c_p, q + c_q, params)
        assert torch.equal(torch.isinf(a), torch.isinf(b)), (name, params)
        fin = torch.isfinite(a)
        torch.testing.assert_close(a[fin], b[fin], rtol=1e-9, atol=1e-9)


@given(logit_pairs())
def test_finite_on_equal_supports(pair: tuple[torch.Tensor, torch.Tensor]) -> None:
    """Equal supports: every value is finite, except χ² / α outside [0, 1], which are +∞
    exactly when the true value exceeds the float range (checked in the log domain)."""
    p, q = pair
    for name, params in CASES:
        values = _rows(name, p, q, params)
        if not _may_overflow(name, params):
            assert bool(torch.isfinite(values).all()), (name, params, values)
            continue
        if name == "pearson_chi2":
            a, scale = 2.0, 1.0  # χ² = Σ p²/q − 1 = 2·D_2
        elif name == "neyman_chi2":
            a, scale = -1.0, 1.0
        else:
            a = params["alpha"]
            scale = 1.0 / (a * (a - 1.0))
        log_s = _log_sum(p, q, a)  # log Σ p^a q^{1−a}
        log_value = log_s + math.log(scale)
        small, huge = log_value < 700.0, log_value > 712.0
        assert bool(torch.isfinite(values[small]).all()), (name, params, values, log_value)
        assert bool(torch.isinf(values[huge]).all()), (name, params, values, log_value)
        want = torch.expm1(log_s[small]) * scale
        torch.testing.assert_close(values[small], want, rtol=1e-8, atol=1e-12)


@given(logit_pairs())
def test_float32_agrees_with_float64(pair: tuple[torch.Tensor, torch.Tensor]) -> None:
    """The float32 computation is the float64 one up to float32 rounding of the log-probs
    (≈ eps·max|logit| absolute), including the overflow pattern of χ² / α."""
    p, q = pair
    finite = torch.cat([p[torch.isfinite(p)], q[torch.isfinite(q)]])
    tol = 16 * 6e-8 * (1.0 + float(finite.abs().max()))
    for name, params in CASES:
        ref = _rows(name, p, q, params)
        got = _rows(name, p.float(), q.float(), params)
        assert got.dtype == torch.float32
        scale = max(1.0, abs(params.get("alpha", 1.0)), min(params.get("order", 1.0), 8.0))
        representable = ref.abs() < 1e36
        assert bool(torch.isfinite(got[representable]).all()), (name, params, got, ref)
        assert bool(torch.isinf(got[ref.abs() > 1e40]).all()), (name, params, got, ref)
        torch.testing.assert_close(
            got[representable].double(), ref[representable], rtol=scale * tol, atol=scale * tol
        )

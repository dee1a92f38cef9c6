"""The functional API contract (issue 2, section 3): reductions, masks, normalizer,
temperature, input kinds, dtypes, differentiability of both arguments, leading shapes, and
+∞ exactly where the true value is infinite (agreeing with each entry's ``infinite_when``).
"""

from __future__ import annotations

import inspect
import math

import numpy as np
import pytest
import torch
from _refs import CASE_IDS, CASES, probs64, reference_rows

import divergent
from divergent import functional
from divergent.categorical import get_divergence, list_divergences


def _pair(shape: tuple[int, ...] = (5, 7), seed: int = 0, dtype: torch.dtype = torch.float64):
    g = torch.Generator().manual_seed(seed)
    return (
        2.0 * torch.randn(*shape, generator=g, dtype=dtype),
        2.0 * torch.randn(*shape, generator=g, dtype=dtype),
    )


# ------------------------------------------------------------------------------------------
# reductions, mask, normalizer
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("name", "params"), CASES, ids=CASE_IDS)
def test_reductions_mask_and_normalizer(name: str, params: dict[str, float]) -> None:
    p, q = _pair((4, 3, 6))
    rows = divergent.divergence(name, p, q, reduction="none", **params)
    assert rows.shape == (4, 3)
    torch.testing.assert_close(
        divergent.divergence(name, p, q, reduction="sum", **params), rows.sum()
    )
    torch.testing.assert_close(divergent.divergence(name, p, q, **params), rows.mean())
    mask = torch.rand(4, 3, generator=torch.Generator().manual_seed(1)) > 0.4
    masked = divergent.divergence(name, p, q, mask=mask, reduction="none", **params)
    assert torch.equal(masked[~mask], torch.zeros(int((~mask).sum()), dtype=torch.float64))
    torch.testing.assert_close(masked[mask], rows[mask])
    mean = divergent.divergence(name, p, q, mask=mask, **params)
    torch.testing.assert_close(mean, rows[mask].sum() / mask.sum())  # unmasked rows only
    total = divergent.divergence(name, p, q, mask=mask, reduction="sum", **params)
    torch.testing.assert_close(total, rows[mask].sum())
    for norm in (3.0, 17, torch.tensor(11.0), torch.tensor([5])):
        got = divergent.divergence(name, p, q, mask=mask, normalizer=norm, **params)
        assert got.shape == () and got.dtype == torch.float64
        torch.testing.assert_close(got, rows[mask].sum() / float(norm))


def test_normalizer_tensor_keeps_result_dtype() -> None:
    p, q = _pair(dtype=torch.float32)
    got = divergent.kl(p, q, normalizer=torch.tensor(4.0, dtype=torch.float64))
    assert got.dtype == torch.float32 and got.shape == ()
    got = divergent.kl(p, q, normalizer=torch.tensor(4, dtype=torch.int64))
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, divergent.kl(p, q, reduction="sum") / 4)


@pytest.mark.parametrize("reduction", ["none", "sum"])
def test_normalizer_rejected_without_mean(reduction: str) -> None:
    p, q = _pair()
    with pytest.raises(ValueError, match=r"normalizer.*reduction='mean'"):
        divergent.kl(p, q, normalizer=4.0, reduction=reduction)


# ------------------------------------------------------------------------------------------
# temperature and input kinds
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("name", "params"), CASES, ids=CASE_IDS)
def test_temperature_divides_both_sides_and_inputs_kinds_agree(
    name: str, params: dict[str, float]
) -> None:
    p, q = _pair(seed=2)
    for t in (0.5, 1.0, 3.0):
        want = divergent.divergence(name, p / t, q / t, reduction="none", **params)
        got = divergent.divergence(name, p, q, temperature=t, reduction="none", **params)
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-13)
        lp, lq = torch.log_softmax(p, -1), torch.log_softmax(q, -1)
        for kind, a, b in (("log_probs", lp, lq), ("probs", lp.exp(), lq.exp())):
            other = divergent.divergence(
                name, a, b, inputs=kind, temperature=t, reduction="none", **params
            )
            torch.testing.assert_close(other, want, rtol=1e-10, atol=1e-12)


def test_log_probs_must_be_normalised_at_every_temperature() -> None:
    """Log-probs at T = 1 are used as given, so unnormalised ones are refused (issue 8 §1):
    the same ValueError at T = 1 and T = 1.0001, never two different silent values."""
    p, q = _pair(seed=3)
    lp, lq = torch.log_softmax(p, -1), torch.log_softmax(q, -1)
    base = divergent.kl(lp, lq, inputs="log_probs", reduction="none")
    torch.testing.assert_close(base, divergent.kl(p, q, reduction="none"))
    for temperature in (1.0, 1.0001, 3.0):
        with pytest.raises(ValueError, match=r"`p` row .* sums to 1.10517 \(in probability\)"):
            divergent.kl(lp + 0.1, lq, inputs="log_probs", temperature=temperature)


def test_probs_with_exact_zeros_match_logits_with_neg_inf() -> None:
    p = torch.tensor([[0.5, 0.5, 0.0], [1.0, 0.0, 0.0]], dtype=torch.float64)
    q = torch.tensor([[0.2, 0.3, 0.5], [0.6, 0.4, 0.0]], dtype=torch.float64)
    for name, params in CASES:
        got = divergent.divergence(name, p, q, inputs="probs", reduction="none", **params)
        want = divergent.divergence(name, p.log(), q.log(), reduction="none", **params)
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-14)


# ------------------------------------------------------------------------------------------
# dtypes
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("low", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize(("name", "params"), CASES, ids=CASE_IDS)
def test_half_inputs_are_computed_in_float32(
    name: str, params: dict[str, float], low: torch.dtype
) -> None:
    p, q = _pair(seed=4, dtype=torch.float32)
    p, q = p.to(low).requires_grad_(True), q.to(low).requires_grad_(True)
    got = divergent.divergence(name, p, q, reduction="none", **params)
    assert got.dtype == torch.float32
    a = p.detach().float().requires_grad_(True)
    b = q.detach().float().requires_grad_(True)
    want = divergent.divergence(name, a, b, reduction="none", **params)
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-7)
    gp, gq = torch.autograd.grad(got.sum(), (p, q))
    ga, gb = torch.autograd.grad(want.sum(), (a, b))
    # the fp32 gradient, rounded to the input dtype (fp16 overflows where |grad| > 65504)
    assert gp.dtype == low and gq.dtype == low
    torch.testing.assert_close(gp, ga.to(low))
    torch.testing.assert_close(gq, gb.to(low))


@pytest.mark.parametrize(("name", "params"), CASES, ids=CASE_IDS)
def test_float64_stays_float64_end_to_end(name: str, params: dict[str, float]) -> None:
    p, q = _pair(seed=5)
    p.requires_grad_(True)
    q.requires_grad_(True)
    got = divergent.divergence(name, p, q, reduction="none", **params)
    assert got.dtype == torch.float64
    # precision only float64 can give: matches the float64 reference to 1e-11
    want = reference_rows(name, probs64(p), probs64(q), **params)
    np.testing.assert_allclose(got.detach().numpy(), want, rtol=1e-11, atol=1e-14)
    gp, gq = torch.autograd.grad(got.sum(), (p, q))
    assert gp.dtype == torch.float64 and gq.dtype == torch.float64
    # mixed: one float64 input makes the whole computation float64
    mixed = divergent.divergence(name, p.detach(), q.detach().float(), reduction="none", **params)
    assert mixed.dtype == torch.float64
    assert (
        divergent.divergence(name, p.detach().bfloat16(), q.detach().float(), **params).dtype
        == torch.float32
    )


# ------------------------------------------------------------------------------------------
# differentiability and shapes
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("name", "params"), CASES, ids=CASE_IDS)
def test_both_arguments_are_differentiable(name: str, params: dict[str, float]) -> None:
    p, q = _pair(seed=6)
    renyi_zero = (name, params) == ("renyi", {"order": 0.0})
    if renyi_zero:
        # −log Q(supp P) is identically 0 (zero gradient) when P has full support
        p = p.clone()
        p[..., 0] = -math.inf
    p.requires_grad_(True)
    q.requires_grad_(True)
    value = divergent.divergence(name, p, q, **params)
    gp, gq = torch.autograd.grad(value, (p, q))  # raises if either is not in the graph
    assert torch.isfinite(gp).all() and torch.isfinite(gq).all()
    if not renyi_zero:  # order 0 depends on P only through its support
        assert gp.abs().sum() > 0
    assert gq.abs().sum() > 1e-6


@pytest.mark.parametrize(("name", "params"), CASES, ids=CASE_IDS)
def test_leading_shapes(name: str, params: dict[str, float]) -> None:
    p, q = _pair((2, 3, 4, 5), seed=7)
    rows = divergent.divergence(name, p, q, reduction="none", **params)
    assert rows.shape == (2, 3, 4)
    flat = divergent.divergence(
        name, p.reshape(-1, 5), q.reshape(-1, 5), reduction="none", **params
    )
    torch.testing.assert_close(rows.reshape(-1), flat)
    # 0-d leading shape: a single distribution
    one = divergent.divergence(name, p[0, 0, 0], q[0, 0, 0], reduction="none", **params)
    assert one.shape == ()
    torch.testing.assert_close(one, rows[0, 0, 0])
    for keep in (True, False):
        got = divergent.divergence(
            name, p[0, 0, 0], q[0, 0, 0], reduction="none", mask=torch.tensor(keep), **params
        )
        assert got.shape == ()
        torch.testing.assert_close(
            got, rows[0, 0, 0] if keep else torch.zeros((), dtype=torch.float64)
        )
    # empty leading shape
    empty = divergent.divergence(name, p[:0], q[:0], reduction="none", **params)
    assert empty.shape == (0, 3, 4)
    assert float(divergent.divergence(name, p[:0], q[:0], **params)) == 0.0


def test_shortcuts_are_the_generic_call_with_the_same_signature() -> None:
    p, q = _pair(seed=8)
    for spec in list_divergences():
        shortcut = getattr(divergent, spec.name)
        sig = inspect.signature(shortcut)
        for p_ in spec.parameters:
            assert sig.parameters[p_.name].default == p_.default
        for kw in ("temperature", "mask", "reduction", "normalizer", "inputs", "check_nan"):
            assert kw in sig.parameters
        torch.testing.assert_close(
            shortcut(p, q, reduction="none"),
            divergent.divergence(spec.name, p, q, reduction="none"),
        )
        assert shortcut.__doc__ and spec.name in functional.__all__
        # the entry itself is accepted wherever a name is
        torch.testing.assert_close(
            divergent.divergence(spec, p, q), divergent.divergence(spec.name, p, q)
        )


# ------------------------------------------------------------------------------------------
# +∞ exactly where the true value is infinite, and agreement with `infinite_when`
# ------------------------------------------------------------------------------------------
def _support_cases() -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    inf = math.inf
    t = lambda rows: torch.tensor(rows, dtype=torch.float64)  # noqa: E731
    return {
        "same": (t([[0.0, 1.0, -inf]]), t([[2.0, -1.0, -inf]])),
        "p_outside_q": (t([[0.0, 1.0, 2.0]]), t([[2.0, -1.0, -inf]])),
        "q_outside_p": (t([[0.0, 1.0, -inf]]), t([[2.0, -1.0, 0.5]])),
        "disjoint": (t([[0.0, -inf, -inf]]), t([[-inf, 1.0, 0.0]])),
    }


# expected (p_outside_q, q_outside_p, disjoint) infinities, from the definitions
_INFINITE = {
    "kl": (True, False, True),
    "reverse_kl": (False, True, True),
    "js": (False, False, False),
    "skew_kl": (False, False, False),
    "skew_reverse_kl": (False, False, False),
    "jeffreys": (True, True, True),
    "tv": (False, False, False),
    "hellinger": (False, False, False),
    "pearson_chi2": (True, False, True),
    "neyman_chi2": (False, True, True),
    "soft_cross_entropy": (True, False, True),
}


def _expected_infinite(name: str, params: dict[str, float]) -> tuple[bool, bool, bool]:
    if name == "alpha":
        a = params["alpha"]
        return (a >= 1, a <= 0, a >= 1 or a <= 0)
    if name == "renyi":
        a = params["order"]
        return (a >= 1, False, True)
    if name in ("skew_kl", "skew_reverse_kl") and params["alpha"] == 0.0:
        return _INFINITE["kl" if name == "skew_kl" else "reverse_kl"]
    return _INFINITE[name]


@pytest.mark.parametrize(("name", "params"), CASES, ids=CASE_IDS)
def test_infinite_exactly_where_the_true_value_is(name: str, params: dict[str, float]) -> None:
    cases = _support_cases()
    expected = dict(
        zip(("p_outside_q", "q_outside_p", "disjoint"), _expected_infinite(name, params))
    )
    expected["same"] = False
    for label, (p, q) in cases.items():
        value = float(divergent.divergence(name, p, q, reduction="sum", **params))
        ref = float(reference_rows(name, probs64(p), probs64(q), **params)[0])
        assert math.isinf(value) == expected[label] == math.isinf(ref), (label, value, ref)
        assert not math.isnan(value)
        if not expected[label]:
            assert value == pytest.approx(ref, rel=1e-10, abs=1e-14)


def test_infinite_when_is_documented_consistently() -> None:
    """Each entry's `infinite_when` says "never" exactly for those never infinite, and names
    the support condition for the others."""
    never = {"js", "tv", "hellinger"}
    for spec in list_divergences():
        text = spec.infinite_when
        assert text, spec.name
        if spec.name in never:
            assert text == "never", (spec.name, text)
            continue
        assert text != "never", spec.name
    assert "P(x) > 0 = Q(x)" in get_divergence("kl").infinite_when
    assert "Q(x) > 0 = P(x)" in get_divergence("reverse_kl").infinite_when
    assert "P(x) > 0 = Q(x)" in get_divergence("pearson_chi2").infinite_when
    assert "overflow" in get_divergence("pearson_chi2").infinite_when
    assert "overflow" in get_divergence("neyman_chi2").infinite_when
    assert "overflow" in get_divergence("alpha").infinite_when
    assert "differ" in get_divergence("jeffreys").infinite_when
    assert "α = 0" in get_divergence("skew_kl").infinite_when
    assert "disjoint" in get_divergence("renyi").infinite_when
    assert "P(x) > 0 = Q(x)" in get_divergence("soft_cross_entropy").infinite_when


def test_infinite_rows_leave_other_rows_and_the_mean_consistent() -> None:
    p = torch.tensor([[0.0, 1.0, 2.0], [0.0, 1.0, 2.0]], dtype=torch.float64)
    q = torch.tensor([[0.0, 1.0, -math.inf], [1.0, 0.0, 2.0]], dtype=torch.float64)
    rows = divergent.kl(p, q, reduction="none")
    assert math.isinf(rows[0]) and math.isfinite(rows[1])
    assert math.isinf(divergent.kl(p, q))
    masked = divergent.kl(p, q, mask=torch.tensor([False, True]))
    torch.testing.assert_close(masked, rows[1])


def test_check_nan_passes_clean_inputs() -> None:
    p, q = _pair(seed=9)
    torch.testing.assert_close(divergent.kl(p, q, check_nan=True), divergent.kl(p, q))

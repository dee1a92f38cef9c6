"""Gradients: ``torch.autograd.gradcheck`` in float64 w.r.t. both arguments for every case
(and user generators), with masks, temperature and each reduction; finite gradients at
extreme valid inputs; zero value and zero gradient for a fully masked batch.
"""

from __future__ import annotations

import math

import pytest
import torch
from _refs import CASE_IDS, CASES, user_generator

import divergent

# cases whose value can overflow to +inf at extreme logits (then the gradient is undefined)
OVERFLOWING = {"pearson_chi2", "neyman_chi2"}


def _overflows(name: str, params: dict[str, float]) -> bool:
    return name in OVERFLOWING or (name == "alpha" and not 0.0 <= params["alpha"] <= 1.0)


def _inputs(shape: tuple[int, ...] = (3, 4), seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    p = torch.randn(*shape, generator=g, dtype=torch.float64).requires_grad_(True)
    q = torch.randn(*shape, generator=g, dtype=torch.float64).requires_grad_(True)
    return p, q


@pytest.mark.parametrize(("name", "params"), CASES, ids=CASE_IDS)
@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
def test_gradcheck_both_arguments(name: str, params: dict[str, float], reduction: str) -> None:
    p, q = _inputs()

    def fn(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return divergent.divergence(name, a, b, reduction=reduction, **params)

    assert torch.autograd.gradcheck(fn, (p, q), eps=1e-6, atol=1e-7, rtol=1e-5)


@pytest.mark.parametrize(("name", "params"), CASES, ids=CASE_IDS)
def test_gradcheck_with_mask_temperature_and_shared_zeros(
    name: str, params: dict[str, float]
) -> None:
    """Mask, temperature ≠ 1, normalizer, and −inf entries present in both P and Q.

    Two kept rows hold a shared −inf, one row is masked (gradient 0); (2, 2, 4) logits, 32
    inputs: gradcheck's cost grows with the input count (two evaluations per input).
    """
    p, q = _inputs((2, 2, 4), seed=1)
    with torch.no_grad():
        for t in (p, q):
            t[0, 1, 2] = -math.inf
            t[1, 0, 0] = -math.inf
    mask = torch.tensor([[True, True], [True, False]])

    def fn(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return divergent.divergence(
            name, a, b, temperature=2.5, mask=mask, normalizer=7.0, **params
        )

    def fn_rows(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return divergent.divergence(
            name, a, b, temperature=0.7, mask=mask, reduction="none", **params
        )

    assert torch.autograd.gradcheck(fn, (p, q), eps=1e-6, atol=1e-7, rtol=1e-5)
    assert torch.autograd.gradcheck(fn_rows, (p, q), eps=1e-6, atol=1e-7, rtol=1e-5)


@pytest.mark.parametrize("inputs", ["log_probs", "probs"])
@pytest.mark.parametrize(
    ("name", "params"),
    [c for c in CASES if c[0] in ("kl", "js", "alpha", "renyi", "tv")],
    ids=[i for c, i in zip(CASES, CASE_IDS) if c[0] in ("kl", "js", "alpha", "renyi", "tv")],
)
def test_gradcheck_other_input_kinds(name: str, params: dict[str, float], inputs: str) -> None:
    g = torch.Generator().manual_seed(2)
    a = torch.randn(3, 4, generator=g, dtype=torch.float64)
    b = torch.randn(3, 4, generator=g, dtype=torch.float64)
    if inputs == "probs":
        p, q = torch.softmax(a, -1), torch.softmax(b, -1)
    else:
        p, q = torch.log_softmax(a, -1), torch.log_softmax(b, -1)
    p.requires_grad_(True)
    q.requires_grad_(True)

    def fn(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return divergent.divergence(
            name, x, y, inputs=inputs, temperature=1.3, reduction="none", **params
        )

    assert torch.autograd.gradcheck(fn, (p, q), eps=1e-7, atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("name", ["kl", "js", "hellinger", "pearson_chi2"])
def test_gradcheck_user_generator(name: str) -> None:
    params = {"beta": 0.3} if name == "js" else {}
    f = user_generator(name, **params)
    p, q = _inputs(seed=3)

    def fn(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return divergent.f_divergence(f, a, b, temperature=1.5, reduction="none")

    assert torch.autograd.gradcheck(fn, (p, q), eps=1e-6, atol=1e-7, rtol=1e-5)
    # and the same gradient as the named entry
    a, b = _inputs(seed=4)
    ga = torch.autograd.grad(divergent.f_divergence(f, a, b, reduction="sum"), (a, b))
    gb = torch.autograd.grad(divergent.divergence(name, a, b, reduction="sum", **params), (a, b))
    for x, y in zip(ga, gb):
        torch.testing.assert_close(x, y, rtol=1e-9, atol=1e-12)


def _extreme_cases(dtype: torch.dtype) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    inf = math.inf
    return {
        "pm1e4": (torch.tensor([[1e4, 0.0, -1e4, 3.0]]), torch.tensor([[-1e4, 1e4, 0.0, 2.0]])),
        "shared_neg_inf": (
            torch.tensor([[-inf, 1e4, 0.0, -inf]]),
            torch.tensor([[-inf, 2.0, -1e4, -inf]]),
        ),
        "one_hot_target": (
            torch.tensor([[0.0, -inf, -inf, -inf]]),
            torch.tensor([[1.0, 2.0, -3.0, 0.5]]),
        ),
        "near_one_hot": (
            torch.tensor([[80.0, 0.0, 0.0, 0.0]]),
            torch.tensor([[0.0, 0.0, 0.0, 90.0]]),
        ),
        "underflowing_atoms": (
            torch.tensor([[0.0, -110.0, 0.0, -3.0]]),
            torch.tensor([[0.0, -200.0, 0.0, -1.0]]),
        ),
    } | {}


def _finite_grads(
    name: str, params: dict[str, float], p: torch.Tensor, q: torch.Tensor, **kw: object
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    p = p.clone().requires_grad_(True)
    q = q.clone().requires_grad_(True)
    value = divergent.divergence(name, p, q, reduction="sum", **kw, **params)
    gp, gq = torch.autograd.grad(value, (p, q))
    return value.detach(), gp, gq


@pytest.mark.parametrize(("name", "params"), CASES, ids=CASE_IDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_finite_values_and_gradients_at_extreme_inputs(
    name: str, params: dict[str, float], dtype: torch.dtype
) -> None:
    for label, (p, q) in _extreme_cases(dtype).items():
        p, q = p.to(dtype), q.to(dtype)
        value, gp, gq = _finite_grads(name, params, p, q)
        infinite_ok = label == "one_hot_target" and name in (
            "reverse_kl",
            "jeffreys",
            "neyman_chi2",
        )
        infinite_ok |= label == "one_hot_target" and name == "alpha" and params["alpha"] <= 0
        infinite_ok |= (
            label == "one_hot_target" and name == "skew_reverse_kl" and params["alpha"] == 0
        )
        infinite_ok |= _overflows(name, params) and label in (
            "pm1e4",
            "shared_neg_inf",
            "near_one_hot",
            "underflowing_atoms",
        )
        assert not torch.isnan(value), (label, value)
        if torch.isinf(value):
            assert infinite_ok, (label, value)
            continue
        assert torch.isfinite(gp).all() and torch.isfinite(gq).all(), (label, gp, gq)


@pytest.mark.parametrize(("name", "params"), CASES, ids=CASE_IDS)
def test_one_hot_probs_targets_have_finite_gradients(name: str, params: dict[str, float]) -> None:
    """inputs='probs' with exact zeros (one-hot targets): zero entries get a 0 gradient, not NaN."""
    p = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.5, 0.5]], dtype=torch.float64)
    q = torch.tensor([[0.7, 0.2, 0.1], [0.2, 0.3, 0.5]], dtype=torch.float64)
    value, gp, gq = _finite_grads(name, params, p, q, inputs="probs")
    if not torch.isfinite(value):  # Q has mass where P has none: infinite for some
        return
    assert torch.isfinite(gp).all() and torch.isfinite(gq).all(), (gp, gq)


@pytest.mark.parametrize(("name", "params"), CASES, ids=CASE_IDS)
def test_large_vocabulary_row(name: str, params: dict[str, float]) -> None:
    """One row of 10⁵ classes in float32: finite value and finite gradients."""
    g = torch.Generator().manual_seed(5)
    p = 4.0 * torch.randn(1, 100_000, generator=g)
    q = 4.0 * torch.randn(1, 100_000, generator=g)
    value, gp, gq = _finite_grads(name, params, p, q)
    if _overflows(name, params) and torch.isinf(value):
        return  # Σ p^a q^{1−a} can exceed float32 for |a| large; documented overflow
    assert torch.isfinite(value) and torch.isfinite(gp).all() and torch.isfinite(gq).all()
    # against float64
    ref = divergent.divergence(name, p.double(), q.double(), reduction="sum", **params)
    assert float(value) == pytest.approx(float(ref), rel=1e-3, abs=1e-4)


@pytest.mark.parametrize(("name", "params"), CASES, ids=CASE_IDS)
@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
def test_fully_masked_batch_is_zero_with_zero_gradient(
    name: str, params: dict[str, float], reduction: str
) -> None:
    p, q = _inputs((2, 3, 4), seed=6)
    with torch.no_grad():  # garbage in masked rows must not leak
        p[0, 0] = math.nan
        q[1, 2] = -math.inf
    mask = torch.zeros(2, 3, dtype=torch.bool)
    value = divergent.divergence(name, p, q, mask=mask, reduction=reduction, **params)
    assert torch.equal(value, torch.zeros_like(value))
    gp, gq = torch.autograd.grad(value.sum(), (p, q))
    assert torch.equal(gp, torch.zeros_like(gp)) and torch.equal(gq, torch.zeros_like(gq))


@pytest.mark.parametrize(("name", "params"), CASES, ids=CASE_IDS)
def test_masked_rows_do_not_affect_gradients(name: str, params: dict[str, float]) -> None:
    p, q = _inputs((4, 5), seed=7)
    with torch.no_grad():
        p[2] = math.nan  # a masked row full of NaN
        q[2] = -math.inf
    mask = torch.tensor([True, True, False, True])
    value = divergent.divergence(name, p, q, mask=mask, **params)
    gp, gq = torch.autograd.grad(value, (p, q))
    assert torch.isfinite(value)
    assert torch.isfinite(gp).all() and torch.isfinite(gq).all()
    assert torch.equal(gp[2], torch.zeros(5, dtype=torch.float64))
    keep = torch.tensor([0, 1, 3])
    a, b = p.detach()[keep].requires_grad_(True), q.detach()[keep].requires_grad_(True)
    ref = divergent.divergence(name, a, b, **params)
    ga, gb = torch.autograd.grad(ref, (a, b))
    torch.testing.assert_close(value, ref)
    torch.testing.assert_close(gp[keep], ga)
    torch.testing.assert_close(gq[keep], gb)


def test_gradient_of_kl_in_logits_is_q_minus_p() -> None:
    """Closed form: ∂KL(P‖Q)/∂ q_logits = Q − P and ∂KL/∂ p_logits = P ⊙ (s − KL)."""
    p, q = _inputs((3, 6), seed=8)
    value = divergent.kl(p, q, reduction="sum")
    gp, gq = torch.autograd.grad(value, (p, q))
    sp, sq = torch.softmax(p, -1), torch.softmax(q, -1)
    torch.testing.assert_close(gq, sq - sp, rtol=1e-12, atol=1e-14)
    s = torch.log_softmax(p, -1) - torch.log_softmax(q, -1)
    kl_rows = (sp * s).sum(-1, keepdim=True)
    torch.testing.assert_close(gp, sp * (s - kl_rows), rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("kl", {}),
        ("js", {"beta": 0.3}),
        ("alpha", {"alpha": 2.0}),
        ("alpha", {"alpha": 1.0}),
        ("renyi", {"order": 0.5}),
        ("pearson_chi2", {}),
    ],
)
def test_gradgradcheck_reference_path(name: str, params: dict[str, float]) -> None:
    """The reference path is twice differentiable (Hessian-vector products)."""
    p, q = _inputs((2, 4), seed=9)

    def fn(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return divergent.divergence(name, a, b, reduction="none", engine="reference", **params)

    assert torch.autograd.gradgradcheck(fn, (p, q), eps=1e-6, atol=1e-6, rtol=1e-4)

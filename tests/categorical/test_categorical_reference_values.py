"""Every registered divergence against an independent float64 reference (numpy / scipy).

Also: user generators through ``divergent.f_divergence`` against the named entries, each
registry entry's :class:`FGenerator` (f, f', r²f'', f(0⁺), lim f(t)/t) against autograd and
limits, the term-by-term generator contract of the row functions on unnormalised inputs, and
``upper_bound`` (holds everywhere, attained on disjoint supports where finite).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from _refs import (
    CASE_IDS,
    CASES,
    is_f_case,
    probs64,
    reference,
    reference_rows,
    user_generator,
)
from scipy.spatial.distance import jensenshannon
from scipy.special import rel_entr
from scipy.stats import entropy

import divergent
from divergent.categorical import FGenerator, get_divergence, list_divergences
from divergent.categorical.fdiv import generic_f_rows

F_CASES = [c for c in CASES if is_f_case(c[0])]
F_IDS = [i for c, i in zip(CASES, CASE_IDS) if is_f_case(c[0])]


def _logits(rows: int = 8, classes: int = 7, scale: float = 3.0, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return scale * torch.randn(rows, classes, generator=g, dtype=torch.float64)


def _pair_with_shared_zeros(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random logits; rows 1 and 3 have −inf entries at the same places in P and Q."""
    p, q = _logits(seed=seed), _logits(seed=seed + 100)
    for row, cols in ((1, [0, 4]), (3, [2])):
        p[row, cols] = -math.inf
        q[row, cols] = -math.inf
    return p, q


def _check_close(got: torch.Tensor, want: np.ndarray, rtol: float = 1e-9, atol: float = 1e-12):
    got_np = got.detach().numpy()
    assert got.dtype == torch.float64
    assert np.array_equal(np.isinf(got_np), np.isinf(want)), (got_np, want)
    fin = np.isfinite(want)
    np.testing.assert_allclose(got_np[fin], want[fin], rtol=rtol, atol=atol)


# ------------------------------------------------------------------------------------------
# values
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("name", "params"), CASES, ids=CASE_IDS)
def test_matches_textbook_reference(name: str, params: dict[str, float]) -> None:
    p, q = _pair_with_shared_zeros()
    got = divergent.divergence(name, p, q, reduction="none", **params)
    want = reference_rows(name, probs64(p), probs64(q), **params)
    assert np.all(np.isfinite(want))
    _check_close(got, want)


@pytest.mark.parametrize(("name", "params"), CASES, ids=CASE_IDS)
def test_matches_reference_with_one_sided_zeros(name: str, params: dict[str, float]) -> None:
    """P = 0 < Q, Q = 0 < P and disjoint supports: value or +∞ exactly as the definition."""
    p, q = _logits(rows=4, classes=5), _logits(rows=4, classes=5, seed=7)
    p[0, 1] = -math.inf  # Q has mass where P has none
    q[1, 2] = -math.inf  # P has mass where Q has none
    p[2, :2] = -math.inf  # disjoint supports
    q[2, 2:] = -math.inf
    p[3, 0] = -math.inf  # both kinds in one row
    q[3, 4] = -math.inf
    got = divergent.divergence(name, p, q, reduction="none", **params)
    want = reference_rows(name, probs64(p), probs64(q), **params)
    _check_close(got, want)


def test_kl_and_reverse_kl_are_scipy_rel_entr() -> None:
    p, q = _pair_with_shared_zeros(seed=3)
    pp, qq = probs64(p), probs64(q)
    got_kl = divergent.kl(p, q, reduction="none").numpy()
    got_rkl = divergent.reverse_kl(p, q, reduction="none").numpy()
    np.testing.assert_allclose(got_kl, rel_entr(pp, qq).sum(-1), rtol=1e-10)
    np.testing.assert_allclose(got_rkl, rel_entr(qq, pp).sum(-1), rtol=1e-10)
    np.testing.assert_allclose(got_kl, entropy(pp, qq, axis=-1), rtol=1e-10)


def test_js_half_is_scipy_jensenshannon_squared() -> None:
    p, q = _pair_with_shared_zeros(seed=4)
    pp, qq = probs64(p), probs64(q)
    want = np.array([jensenshannon(a, b) ** 2 for a, b in zip(pp, qq)])  # natural log
    got = divergent.js(p, q, reduction="none").numpy()
    np.testing.assert_allclose(got, want, rtol=1e-8, atol=1e-14)


@pytest.mark.parametrize("beta", [0.01, 0.1, 0.25, 0.5, 0.8, 0.99])
def test_js_beta_direct_formula(beta: float) -> None:
    """GKD Eq. 1: β KL(P‖M) + (1−β) KL(Q‖M), M = βP + (1−β)Q, written out directly."""
    p, q = _logits(seed=5), _logits(seed=6)
    pp, qq = probs64(p), probs64(q)
    m = beta * pp + (1 - beta) * qq
    want = beta * np.sum(pp * np.log(pp / m), -1) + (1 - beta) * np.sum(qq * np.log(qq / m), -1)
    got = divergent.js(p, q, beta=beta, reduction="none").numpy()
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-15)


@pytest.mark.parametrize("alpha", [0.0, 0.05, 0.5, 0.95])
def test_skew_kl_is_rel_entr_to_the_mixture(alpha: float) -> None:
    p, q = _pair_with_shared_zeros(seed=8)
    pp, qq = probs64(p), probs64(q)
    want = rel_entr(pp, alpha * pp + (1 - alpha) * qq).sum(-1)
    want_r = rel_entr(qq, alpha * qq + (1 - alpha) * pp).sum(-1)
    np.testing.assert_allclose(
        divergent.skew_kl(p, q, alpha=alpha, reduction="none"), want, rtol=1e-10
    )
    np.testing.assert_allclose(
        divergent.skew_reverse_kl(p, q, alpha=alpha, reduction="none"), want_r, rtol=1e-10
    )


def test_tv_hellinger_chi2_closed_forms() -> None:
    p, q = _pair_with_shared_zeros(seed=9)
    pp, qq = probs64(p), probs64(q)
    with np.errstate(invalid="ignore", divide="ignore"):
        pear = np.nansum(np.where(qq > 0, (pp - qq) ** 2 / qq, 0.0), -1)
        ney = np.nansum(np.where(pp > 0, (pp - qq) ** 2 / pp, 0.0), -1)
    np.testing.assert_allclose(
        divergent.tv(p, q, reduction="none"), 0.5 * np.abs(pp - qq).sum(-1), rtol=1e-12
    )
    # ½ convention: H² = ½ Σ (√p − √q)² = 1 − Σ √(pq)
    np.testing.assert_allclose(
        divergent.hellinger(p, q, reduction="none"), 1 - np.sqrt(pp * qq).sum(-1), rtol=1e-9
    )
    np.testing.assert_allclose(divergent.pearson_chi2(p, q, reduction="none"), pear, rtol=1e-10)
    np.testing.assert_allclose(divergent.neyman_chi2(p, q, reduction="none"), ney, rtol=1e-10)
    # χ²(P‖Q) = Σ p²/q − 1
    np.testing.assert_allclose(
        divergent.pearson_chi2(p, q, reduction="none"),
        np.nansum(np.where(qq > 0, pp**2 / np.where(qq > 0, qq, 1), 0), -1) - 1,
        rtol=1e-9,
    )


@pytest.mark.parametrize("alpha", [-3.0, -1.0, -0.25, 0.2, 0.5, 0.75, 1.5, 2.0, 4.0])
def test_alpha_cichocki_amari_convention(alpha: float) -> None:
    p, q = _logits(seed=10, scale=1.5), _logits(seed=11, scale=1.5)
    pp, qq = probs64(p), probs64(q)
    want = (np.sum(pp**alpha * qq ** (1 - alpha), -1) - 1) / (alpha * (alpha - 1))
    got = divergent.alpha(p, q, alpha=alpha, reduction="none").numpy()
    np.testing.assert_allclose(got, want, rtol=1e-9)


@pytest.mark.parametrize("order", [0.0, 0.1, 0.5, 0.999, 1.0, 1.5, 2.0, 10.0, math.inf])
def test_renyi_orders(order: float) -> None:
    p, q = _pair_with_shared_zeros(seed=12)
    pp, qq = probs64(p), probs64(q)
    if order == 0.0:
        want = -np.log(np.where(pp > 0, qq, 0).sum(-1))
    elif math.isinf(order):
        with np.errstate(divide="ignore", invalid="ignore"):
            want = np.log(np.nanmax(np.where(pp > 0, pp / qq, np.nan), -1))
    elif order == 1.0:
        want = rel_entr(pp, qq).sum(-1)
    else:
        with np.errstate(divide="ignore", invalid="ignore"):
            terms = np.where((pp > 0) & (qq > 0), pp**order * qq ** (1 - order), 0.0)
        want = np.log(terms.sum(-1)) / (order - 1)
    got = divergent.renyi(p, q, order=order, reduction="none").numpy()
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-14)


def test_renyi_order_zero_with_partial_support() -> None:
    """Order 0 is −log Q(supp P): only the support of P matters."""
    p = torch.tensor([[0.0, 3.0, -math.inf, -math.inf]], dtype=torch.float64)
    q = torch.tensor([[0.1, 0.2, 0.3, 0.4]], dtype=torch.float64).log()
    got = divergent.renyi(p, q, order=0.0, inputs="logits", reduction="sum")
    assert float(got) == pytest.approx(-math.log(0.1 + 0.2), rel=1e-12)


def test_soft_cross_entropy_is_kl_plus_entropy() -> None:
    p, q = _pair_with_shared_zeros(seed=13)
    pp = probs64(p)
    got = divergent.soft_cross_entropy(p, q, reduction="none").numpy()
    want = divergent.kl(p, q, reduction="none").numpy() + entropy(pp, axis=-1)
    np.testing.assert_allclose(got, want, rtol=1e-10)
    qq = probs64(q)
    direct = -np.sum(np.where(pp > 0, pp * np.log(np.where(pp > 0, qq, 1.0)), 0.0), -1)
    np.testing.assert_allclose(got, direct, rtol=1e-10)


def test_reference_itself_on_a_hand_computed_pair() -> None:
    """Guards the test reference: KL([½,½]‖[¼,¾]) by hand."""
    p, q = np.array([0.5, 0.5]), np.array([0.25, 0.75])
    want = 0.5 * math.log(2) + 0.5 * math.log(0.5 / 0.75)
    assert reference("kl", p, q) == pytest.approx(want, rel=1e-15)
    assert reference("tv", p, q) == pytest.approx(0.25, rel=1e-15)


# ------------------------------------------------------------------------------------------
# user generators through divergent.f_divergence
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("name", "params"), F_CASES, ids=F_IDS)
def test_user_generator_equals_named(name: str, params: dict[str, float]) -> None:
    f = user_generator(name, **params)
    p, q = _pair_with_shared_zeros(seed=14)
    p[5, 0] = -math.inf  # a row with P = 0 < Q
    q[6, 1] = -math.inf  # a row with Q = 0 < P
    got = divergent.f_divergence(f, p, q, reduction="none")
    want = divergent.divergence(name, p, q, reduction="none", **params)
    assert torch.equal(torch.isinf(got), torch.isinf(want))
    fin = torch.isfinite(want)
    torch.testing.assert_close(got[fin], want[fin], rtol=1e-9, atol=1e-12)


EXTREME_CASES = [pytest.param(*c, id=i) for c, i in zip(F_CASES, F_IDS)]


@pytest.mark.parametrize(("name", "params"), EXTREME_CASES)
def test_user_generator_equals_named_at_extreme_logits(name: str, params: dict[str, float]) -> None:
    """|log p − log q| up to 2e4: the generic path extends f past the float range correctly.

    Its tail model of f is good to about 5e-9 relative there (skew_kl at α = 0.9: 4.6e-9,
    where the named row function gives log(1/α) to the last digit), hence rtol 1e-8."""
    p = torch.tensor([[1e4, 0.0, -1e4], [0.0, -300.0, 5.0], [2.0, 1.0, 0.0]], dtype=torch.float64)
    q = torch.tensor([[-1e4, 0.0, 1e4], [0.0, 5.0, -300.0], [2.0, 1.0, 0.0]], dtype=torch.float64)
    f = user_generator(name, **params)
    got = divergent.f_divergence(f, p, q, reduction="none")
    want = divergent.divergence(name, p, q, reduction="none", **params)
    assert torch.equal(torch.isinf(got), torch.isinf(want)), (got, want)
    fin = torch.isfinite(want)
    torch.testing.assert_close(got[fin], want[fin], rtol=1e-8, atol=1e-12)


def test_user_generator_extreme_logits_have_finite_gradients() -> None:
    p = torch.tensor([[1e4, 0.0, -1e4]], dtype=torch.float32, requires_grad=True)
    q = torch.tensor([[-1e4, 0.0, 1e4]], dtype=torch.float32, requires_grad=True)
    value = divergent.f_divergence(lambda t: t * torch.log(t), p, q)
    value.backward()
    assert value.item() == pytest.approx(2e4, rel=1e-6)
    assert torch.isfinite(p.grad).all() and torch.isfinite(q.grad).all()


# ------------------------------------------------------------------------------------------
# registry generators
# ------------------------------------------------------------------------------------------
def _grid() -> torch.Tensor:
    t = torch.logspace(-3, 3, 41, dtype=torch.float64)
    return t[(t - 1).abs() > 1e-3]  # away from tv's kink at 1


@pytest.mark.parametrize(("name", "params"), F_CASES, ids=F_IDS)
def test_generator_f_fprime_weighting(name: str, params: dict[str, float]) -> None:
    gen = get_divergence(name).f_generator(**params)
    one = torch.ones((), dtype=torch.float64)
    assert abs(float(gen.f(one))) < 1e-15
    t = _grid()
    auto = FGenerator(f=gen.f)  # autograd derivatives of the same f
    assert gen.f_prime is not None and gen.weighting is not None
    torch.testing.assert_close(gen.f_prime(t), auto.derivative(t), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(
        gen.weighting(t), auto.second_derivative_weight(t), rtol=1e-9, atol=1e-12
    )
    # finite differences of f' as a second, non-autograd check of r²f''
    h = 1e-5 * t
    fd = (gen.f_prime(t + h) - gen.f_prime(t - h)) / (2 * h) * t * t
    torch.testing.assert_close(gen.weighting(t), fd, rtol=1e-5, atol=1e-8)
    # convexity: r² f'' ≥ 0
    assert bool((gen.weighting(t) >= 0).all())


@pytest.mark.parametrize(("name", "params"), F_CASES, ids=F_IDS)
def test_generator_limits(name: str, params: dict[str, float]) -> None:
    gen = get_divergence(name).f_generator(**params)
    f = gen.f
    small = torch.tensor([1e-60, 1e-120], dtype=torch.float64)
    big = torch.tensor([1e60, 1e120], dtype=torch.float64)
    f_small = f(small)
    slope_big = f(big) / big
    if math.isfinite(gen.f_at_zero):
        assert float(f_small[1]) == pytest.approx(gen.f_at_zero, rel=1e-8, abs=1e-12)
    else:
        assert gen.f_at_zero == math.inf
        assert float(f_small[0]) > 100 and float(f_small[1]) > 1.5 * float(f_small[0])
    if math.isfinite(gen.slope_at_infinity):
        assert float(slope_big[1]) == pytest.approx(gen.slope_at_infinity, rel=1e-8, abs=1e-12)
    else:
        assert gen.slope_at_infinity == math.inf
        # f(t)/t grows without bound (for α = 7, t^6/42 already overflows at t = 1e60)
        growing = math.isinf(slope_big[1]) or float(slope_big[1]) > 1.5 * float(slope_big[0])
        assert float(slope_big[0]) > 100 and growing


@pytest.mark.parametrize(("name", "params"), F_CASES, ids=F_IDS)
def test_upper_bound_is_f0_plus_slope_and_attained_on_disjoint_supports(
    name: str, params: dict[str, float]
) -> None:
    spec = get_divergence(name)
    gen = spec.f_generator(**params)
    bound = spec.upper_bound(**params)
    assert bound == pytest.approx(gen.f_at_zero + gen.slope_at_infinity, rel=1e-12)
    # disjoint supports (Vajda 1972): D_f = f(0) + f'(∞)
    p = torch.tensor([[0.0, 1.0, -math.inf, -math.inf]], dtype=torch.float64)
    q = torch.tensor([[-math.inf, -math.inf, 2.0, 0.5]], dtype=torch.float64)
    disjoint = float(divergent.divergence(name, p, q, reduction="sum", **params))
    assert disjoint == pytest.approx(bound, rel=1e-12)
    # and nothing exceeds it
    x, y = _logits(rows=32, scale=4.0, seed=21), _logits(rows=32, scale=4.0, seed=22)
    values = divergent.divergence(name, x, y, reduction="none", **params)
    assert bool((values <= bound * (1 + 1e-12)).all())


def test_non_f_divergences_have_no_generator() -> None:
    for name in ("renyi", "soft_cross_entropy"):
        spec = get_divergence(name)
        assert not spec.is_f_divergence
        with pytest.raises(ValueError, match="not an f-divergence"):
            spec.f_generator()


@pytest.mark.parametrize(("name", "params"), F_CASES, ids=F_IDS)
def test_row_function_is_sum_of_generator_terms_on_unnormalised_inputs(
    name: str, params: dict[str, float]
) -> None:
    """The contract sparse / top-k estimators rely on: row = Σ_x q f(p/q), term by term."""
    spec = get_divergence(name)
    gen = spec.f_generator(**params)
    g = torch.Generator().manual_seed(31)
    p = torch.rand(6, 5, generator=g, dtype=torch.float64) * 0.3  # sums ≠ 1
    q = torch.rand(6, 5, generator=g, dtype=torch.float64) * 0.3
    p[1, 2] = q[1, 2] = 0.0  # shared zero
    got = spec.row_fn(p.log(), q.log(), **spec.bind(params))
    want = generic_f_rows(p.log(), q.log(), generator=gen)
    direct = (q * gen.f(p / q)).nan_to_num(0.0).sum(-1)  # the shared zero contributes 0
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-13)
    torch.testing.assert_close(got, direct, rtol=1e-10, atol=1e-13)


def test_every_name_of_the_issue_is_registered() -> None:
    names = [d.name for d in list_divergences()]
    expected = [
        "kl",
        "reverse_kl",
        "js",
        "skew_kl",
        "skew_reverse_kl",
        "jeffreys",
        "tv",
        "hellinger",
        "pearson_chi2",
        "neyman_chi2",
        "alpha",
        "renyi",
        "soft_cross_entropy",
    ]
    assert set(expected) <= set(names)
    assert {c[0] for c in CASES} == set(expected)
    assert not get_divergence("soft_cross_entropy").is_divergence
    assert all(get_divergence(n).is_divergence for n in expected if n != "soft_cross_entropy")

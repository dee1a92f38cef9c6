"""Identities, limits and inequalities between the registered divergences (float64)."""

from __future__ import annotations

import math

import pytest
import torch

import divergent

TOL = 1e-10


def _batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random rows plus extreme ones: ±1e4 logits, near-one-hot, shared −inf entries."""
    g = torch.Generator().manual_seed(seed)
    p = 3.0 * torch.randn(24, 6, generator=g, dtype=torch.float64)
    q = 3.0 * torch.randn(24, 6, generator=g, dtype=torch.float64)
    p[0], q[0] = torch.tensor([1e4, 0, -1e4, 5, 1, 2.0]), torch.tensor([0, 1e4, 3, -1e4, 0, 1.0])
    p[1, 0] += 40.0  # near-one-hot target
    q[2, 3] += 25.0  # near-one-hot model
    p[3, :2] = q[3, :2] = -math.inf  # zeros at the same places
    p[4], q[4] = torch.tensor([1e4, 1e4 - 1, 0, 0, 0, 0]), torch.tensor([1e4 - 2, 1e4, 0, 0, 0, 0])
    return p, q


def _moderate(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows with |log p − log q| ≲ 10, where limits in a parameter are uniform and the
    transformed identities below can be evaluated in float64 without cancellation; includes
    shared −inf entries."""
    g = torch.Generator().manual_seed(seed)
    p = 1.5 * torch.randn(16, 6, generator=g, dtype=torch.float64)
    q = 1.5 * torch.randn(16, 6, generator=g, dtype=torch.float64)
    p[3, :2] = q[3, :2] = -math.inf
    return p, q


def _d(name: str, p: torch.Tensor, q: torch.Tensor, **params: float) -> torch.Tensor:
    return divergent.divergence(name, p, q, reduction="none", **params)


def _h(beta: float) -> float:
    return -beta * math.log(beta) - (1 - beta) * math.log(1 - beta)


@pytest.mark.parametrize("beta", [0.05, 0.3, 0.5, 0.9])
def test_js_bounded_by_binary_entropy(beta: float) -> None:
    p, q = _batch()
    values = _d("js", p, q, beta=beta)
    assert bool((values <= _h(beta) + TOL).all()) and bool((values >= -TOL).all())
    # attained on disjoint supports; log 2 at β = ½
    a = torch.tensor([[0.0, -math.inf]], dtype=torch.float64)
    b = torch.tensor([[-math.inf, 0.0]], dtype=torch.float64)
    assert float(_d("js", a, b, beta=beta)) == pytest.approx(_h(beta), rel=1e-14)
    if beta == 0.5:
        assert float(_d("js", a, b)) == pytest.approx(math.log(2), rel=1e-14)


def test_tv_and_hellinger_at_most_one() -> None:
    p, q = _batch(1)
    for name in ("tv", "hellinger"):
        values = _d(name, p, q)
        assert bool((values <= 1 + TOL).all()) and bool((values >= 0).all())


def test_pinsker_and_hellinger_tv_sandwich() -> None:
    p, q = _batch(2)
    tv, kl, h2 = _d("tv", p, q), _d("kl", p, q), _d("hellinger", p, q)
    assert bool((tv <= torch.sqrt(kl / 2) + TOL).all())
    # ½-convention: H² ≤ TV ≤ √(H²(2 − H²))
    assert bool((h2 <= tv + TOL).all())
    assert bool((tv <= torch.sqrt(h2 * (2 - h2)) + TOL).all())


def test_js_at_most_a_quarter_of_jeffreys_and_skew_at_most_scaled_kl() -> None:
    p, q = _batch(3)
    assert bool((_d("js", p, q) <= 0.25 * _d("jeffreys", p, q) + TOL).all())
    for a in (0.1, 0.5, 0.9):  # convexity of KL in its second argument
        assert bool((_d("skew_kl", p, q, alpha=a) <= (1 - a) * _d("kl", p, q) + TOL).all())


@pytest.mark.parametrize("eps", [1e-7, -1e-7])
def test_renyi_order_to_one_is_kl(eps: float) -> None:
    p, q = _moderate(4)
    kl = _d("kl", p, q)
    torch.testing.assert_close(_d("renyi", p, q, order=1 + eps), kl, rtol=1e-5, atol=1e-9)
    torch.testing.assert_close(_d("renyi", p, q, order=1.0), kl, rtol=1e-12, atol=1e-14)


def test_renyi_non_decreasing_in_order() -> None:
    p, q = _batch(5)
    orders = [0.0, 0.1, 0.25, 0.5, 0.9, 0.999, 1.0, 1.001, 1.5, 2.0, 5.0, 20.0, math.inf]
    values = torch.stack([_d("renyi", p, q, order=a) for a in orders], dim=-1)
    diffs = values[:, 1:] - values[:, :-1]
    assert bool((diffs >= -1e-9 * (1 + values[:, 1:].abs())).all()), values


def test_renyi_special_orders() -> None:
    p, q = _moderate(6)
    # order 2 = log(1 + χ²); order ½ = −2 log(1 − H²) (Bhattacharyya); order ∞ = log max p/q
    finite = torch.isfinite(_d("pearson_chi2", p, q))
    torch.testing.assert_close(
        _d("renyi", p, q, order=2.0)[finite],
        torch.log1p(_d("pearson_chi2", p, q))[finite],
        rtol=1e-10,
        atol=1e-12,
    )
    torch.testing.assert_close(
        _d("renyi", p, q, order=0.5),
        -2 * torch.log1p(-_d("hellinger", p, q)),
        rtol=1e-9,
        atol=1e-12,
    )
    lp, lq = torch.log_softmax(p, -1), torch.log_softmax(q, -1)
    ratio = torch.where(torch.isfinite(lp), lp - lq, -math.inf).amax(-1)
    torch.testing.assert_close(_d("renyi", p, q, order=math.inf), ratio)


@pytest.mark.parametrize("order", [0.3, 0.5, 0.8, 1.7, 3.0])
def test_renyi_is_a_transform_of_alpha(order: float) -> None:
    """D_a^Rényi = log(1 + a(a−1) D_a^α)/(a − 1) (van Erven & Harremoës 2014)."""
    p, q = _moderate(7)
    alpha = _d("alpha", p, q, alpha=order)
    finite = torch.isfinite(alpha)
    want = torch.log1p(order * (order - 1) * alpha) / (order - 1)
    torch.testing.assert_close(
        _d("renyi", p, q, order=order)[finite], want[finite], rtol=1e-8, atol=1e-10
    )


def test_alpha_limits_recover_kl_and_reverse_kl() -> None:
    p, q = _moderate(8)
    kl, rkl = _d("kl", p, q), _d("reverse_kl", p, q)
    eps = 1e-4
    up, down = _d("alpha", p, q, alpha=1 + eps), _d("alpha", p, q, alpha=1 - eps)
    torch.testing.assert_close(up, kl, rtol=2e-3, atol=1e-9)
    torch.testing.assert_close(down, kl, rtol=2e-3, atol=1e-9)
    torch.testing.assert_close((up + down) / 2, kl, rtol=1e-6, atol=1e-9)  # O(ε²)
    up0, down0 = _d("alpha", p, q, alpha=eps), _d("alpha", p, q, alpha=-eps)
    torch.testing.assert_close((up0 + down0) / 2, rkl, rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(up0, rkl, rtol=2e-3, atol=1e-9)
    # at exactly 1 and 0 the limits are evaluated
    torch.testing.assert_close(_d("alpha", p, q, alpha=1.0), kl, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(_d("alpha", p, q, alpha=0.0), rkl, rtol=1e-10, atol=1e-12)


def test_alpha_special_values() -> None:
    p, q = _batch(9)
    torch.testing.assert_close(
        _d("alpha", p, q, alpha=0.5), 4 * _d("hellinger", p, q), rtol=1e-10, atol=1e-12
    )
    fin = torch.isfinite(_d("pearson_chi2", p, q))
    torch.testing.assert_close(
        _d("alpha", p, q, alpha=2.0)[fin],
        0.5 * _d("pearson_chi2", p, q)[fin],
        rtol=1e-10,
        atol=1e-12,
    )
    fin = torch.isfinite(_d("neyman_chi2", p, q))
    torch.testing.assert_close(
        _d("alpha", p, q, alpha=-1.0)[fin],
        0.5 * _d("neyman_chi2", p, q)[fin],
        rtol=1e-10,
        atol=1e-12,
    )
    # duality D_α(P‖Q) = D_{1−α}(Q‖P)
    for a in (-1.5, 0.2, 2.5):
        torch.testing.assert_close(
            _d("alpha", p, q, alpha=a), _d("alpha", q, p, alpha=1 - a), rtol=1e-10, atol=1e-12
        )


def test_skew_limits_and_bounds() -> None:
    p, q = _batch(10)
    kl, rkl = _d("kl", p, q), _d("reverse_kl", p, q)
    assert torch.equal(_d("skew_kl", p, q, alpha=0.0), kl)
    assert torch.equal(_d("skew_reverse_kl", p, q, alpha=0.0), rkl)
    # α → 0 (uniform only where the log-ratios are moderate: skew ≤ log(1/α) < kl otherwise)
    mp, mq = _moderate(10)
    mkl, mrkl = _d("kl", mp, mq), _d("reverse_kl", mp, mq)
    torch.testing.assert_close(_d("skew_kl", mp, mq, alpha=1e-12), mkl, rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(
        _d("skew_reverse_kl", mp, mq, alpha=1e-12), mrkl, rtol=1e-6, atol=1e-9
    )
    a = torch.tensor([[0.0, -math.inf]], dtype=torch.float64)
    b = torch.tensor([[-math.inf, 0.0]], dtype=torch.float64)
    for alpha in (0.01, 0.1, 0.5, 0.99):
        bound = math.log(1 / alpha)
        for name in ("skew_kl", "skew_reverse_kl"):
            assert bool((_d(name, p, q, alpha=alpha) <= bound + TOL).all())
            assert float(_d(name, a, b, alpha=alpha)) == pytest.approx(bound, rel=1e-14)


def test_jeffreys_is_kl_plus_reverse_kl() -> None:
    p, q = _batch(11)
    torch.testing.assert_close(
        _d("jeffreys", p, q), _d("kl", p, q) + _d("reverse_kl", p, q), rtol=1e-12, atol=1e-12
    )
    assert torch.equal(_d("reverse_kl", p, q), _d("kl", q, p))
    assert torch.equal(_d("neyman_chi2", p, q), _d("pearson_chi2", q, p))


def test_soft_cross_entropy_minus_kl_is_the_target_entropy() -> None:
    p, q = _batch(12)
    lp = torch.log_softmax(p, -1)
    entropy = -torch.where(torch.isfinite(lp), lp.exp() * lp, 0.0).sum(-1)
    torch.testing.assert_close(
        _d("soft_cross_entropy", p, q) - _d("kl", p, q), entropy, rtol=1e-9, atol=1e-9
    )
    torch.testing.assert_close(_d("soft_cross_entropy", p, p), entropy, rtol=1e-12, atol=1e-12)

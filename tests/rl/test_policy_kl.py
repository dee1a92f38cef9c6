"""Policy-KL estimators (k1/k2/k3), their gradients as losses, and Schulman's table.

References used: exact expectations over a small softmax policy by enumeration (float64, autograd
of the closed-form KLs), a sampled check with a CLT tolerance, closed-form moments of the
estimators for equal-variance Gaussians, Schulman's published table, and decimal arithmetic.
"""

from __future__ import annotations

import math
from decimal import Decimal, getcontext

import numpy as np
import pytest
import torch

from divergent.rl.policy_kl import kl_penalty_reward, policy_kl, reference_sample_kl

A = 7  # actions of the small softmax policy


def _policies(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    theta = torch.randn(A, generator=g, dtype=torch.float64).requires_grad_(True)
    ref_logp = torch.log_softmax(torch.randn(A, generator=g, dtype=torch.float64), -1)
    mu_logp = torch.log_softmax(torch.randn(A, generator=g, dtype=torch.float64), -1)
    return theta, ref_logp, mu_logp


def _grad(fn, theta):
    (g,) = torch.autograd.grad(fn(theta), theta)
    return g


def _reverse_kl(theta, ref_logp):  # KL(π‖π_ref), closed form
    lp = torch.log_softmax(theta, -1)
    return (lp.exp() * (lp - ref_logp)).sum()


def _forward_kl(theta, ref_logp):  # KL(π_ref‖π), closed form
    lp = torch.log_softmax(theta, -1)
    return (ref_logp.exp() * (ref_logp - lp)).sum()


def _expected_loss(theta, ref_logp, kind, weights_of=None, **kw):
    """Σ_a P(a) loss(a): the exact expectation of the per-sample loss over the sampler P.

    The sampler's probabilities are constants (samples are fixed when differentiating).
    """
    lp = torch.log_softmax(theta, -1)
    sampler = lp.detach().exp() if weights_of is None else weights_of.exp()
    if weights_of is not None and "importance_weight" in kw and callable(kw["importance_weight"]):
        kw = {**kw, "importance_weight": kw["importance_weight"](lp)}
    return (sampler * policy_kl(lp, ref_logp, kind, **kw)).sum()


# ------------------------------------------------------------------ values
def test_values_match_formulas_float64():
    lp = torch.log(torch.tensor([0.5, 0.2, 0.01, 0.3], dtype=torch.float64))
    ref = torch.log(torch.tensor([0.25, 0.4, 0.3, 0.3], dtype=torch.float64))
    r = (ref - lp).exp()
    torch.testing.assert_close(policy_kl(lp, ref, "k1"), -torch.log(r), rtol=1e-14, atol=0)
    torch.testing.assert_close(
        policy_kl(lp, ref, "k2"), 0.5 * torch.log(r) ** 2, rtol=1e-14, atol=0
    )
    torch.testing.assert_close(policy_kl(lp, ref, "k3"), r - 1 - torch.log(r), rtol=1e-13, atol=0)


@pytest.mark.parametrize("dtype,rtol", [(torch.float32, 2e-6), (torch.float64, 1e-14)])
def test_k3_accurate_over_wide_range(dtype, rtol):
    # r − 1 − log r ≈ (log r)²/2 for small log r: the naive r − 1 − log r loses all digits there.
    getcontext().prec = 60
    mags = np.concatenate([np.logspace(-9, 1.6, 60)])
    xs = np.concatenate([mags, -mags])  # log r values
    ref = [float(Decimal(float(x)).exp() - 1 - Decimal(float(x))) for x in xs]
    # log r = ref_logp − logp with both log-probs <= 0 (the input contract): one side is 0
    logp = torch.tensor(np.where(xs > 0, -xs, 0.0), dtype=dtype)
    ref_logp = torch.tensor(np.where(xs > 0, 0.0, xs), dtype=dtype)
    got = policy_kl(logp, ref_logp, "k3").double().numpy()
    # inputs rounded to dtype: compare with the exact value at the rounded input
    xr = (ref_logp - logp).double().numpy()
    ref = np.array([float(Decimal(float(x)).exp() - 1 - Decimal(float(x))) for x in xr])
    np.testing.assert_allclose(got, ref, rtol=rtol, atol=0)
    assert (got >= 0).all()


def test_k3_gradient_is_one_minus_r():
    lp = torch.log(torch.tensor([0.5, 0.2, 0.3 - 1e-9, 1e-6], dtype=torch.float64))
    lp.requires_grad_(True)
    ref = torch.log(torch.tensor([0.25, 0.4, 0.3, 0.5], dtype=torch.float64))
    policy_kl(lp, ref, "k3").sum().backward()
    r = (ref - lp.detach()).exp()
    torch.testing.assert_close(lp.grad, 1 - r, rtol=1e-12, atol=1e-15)


# ------------------------------------------------------------------ exact expectations
def test_unbiased_values_by_enumeration():
    theta, ref_logp, _ = _policies(1)
    with torch.no_grad():
        lp = torch.log_softmax(theta, -1)
        p = lp.exp()
        kl_true = _reverse_kl(theta, ref_logp)
        for kind in ("k1", "k3"):
            torch.testing.assert_close(
                (p * policy_kl(lp, ref_logp, kind)).sum(), kl_true, rtol=1e-12, atol=0
            )
        # k2's mean is the f-divergence with f(t) = ½ log² t: not the KL (biased)
        k2_mean = (p * policy_kl(lp, ref_logp, "k2")).sum()
        assert abs(k2_mean - kl_true) > 1e-3


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_loss_gradients_by_enumeration(seed):
    theta, ref_logp, _ = _policies(seed)
    g_rev = _grad(lambda t: _reverse_kl(t, ref_logp), theta)
    g_fwd = _grad(lambda t: _forward_kl(t, ref_logp), theta)
    g1 = _grad(lambda t: _expected_loss(t, ref_logp, "k1"), theta)
    g2 = _grad(lambda t: _expected_loss(t, ref_logp, "k2"), theta)
    g3 = _grad(lambda t: _expected_loss(t, ref_logp, "k3"), theta)
    torch.testing.assert_close(g1, torch.zeros_like(g1), rtol=0, atol=1e-14)
    torch.testing.assert_close(g2, g_rev, rtol=1e-10, atol=1e-13)
    torch.testing.assert_close(g3, g_fwd, rtol=1e-10, atol=1e-13)
    assert (g_rev - g_fwd).abs().max() > 1e-2  # the two directions really differ here


def test_straight_through_keeps_value_takes_k2_gradient():
    theta, ref_logp, _ = _policies(3)
    lp = torch.log_softmax(theta, -1)
    v = policy_kl(lp, ref_logp, "k3", gradient="k2")
    torch.testing.assert_close(v, policy_kl(lp, ref_logp, "k3"), rtol=0, atol=0)
    g = _grad(lambda t: _expected_loss(t, ref_logp, "k3", gradient="k2"), theta)
    torch.testing.assert_close(
        g, _grad(lambda t: _reverse_kl(t, ref_logp), theta), rtol=1e-10, atol=1e-13
    )
    # k1 value with k3 gradient → forward-KL gradient
    g13 = _grad(lambda t: _expected_loss(t, ref_logp, "k1", gradient="k3"), theta)
    torch.testing.assert_close(
        g13, _grad(lambda t: _forward_kl(t, ref_logp), theta), rtol=1e-10, atol=1e-13
    )


@pytest.mark.parametrize("kind", ["k1", "k2", "k3"])
def test_importance_weight_detached_keeps_on_policy_semantics(kind):
    theta, ref_logp, mu_logp = _policies(4)
    w = lambda lp: (lp - mu_logp).exp().detach()  # noqa: E731
    off = _grad(
        lambda t: _expected_loss(t, ref_logp, kind, weights_of=mu_logp, importance_weight=w), theta
    )
    on = _grad(lambda t: _expected_loss(t, ref_logp, kind), theta)
    torch.testing.assert_close(off, on, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("kind", ["k1", "k3"])
def test_importance_weight_with_gradient_gives_reverse_kl_gradient(kind):
    theta, ref_logp, mu_logp = _policies(5)
    w = lambda lp: (lp - mu_logp).exp()  # noqa: E731  (not detached)
    val = _expected_loss(theta, ref_logp, kind, weights_of=mu_logp, importance_weight=w)
    torch.testing.assert_close(val, _reverse_kl(theta, ref_logp), rtol=1e-12, atol=0)
    g = _grad(
        lambda t: _expected_loss(t, ref_logp, kind, weights_of=mu_logp, importance_weight=w), theta
    )
    torch.testing.assert_close(
        g, _grad(lambda t: _reverse_kl(t, ref_logp), theta), rtol=1e-10, atol=1e-13
    )


def test_sampled_k3_gradient_matches_forward_kl_within_clt():
    theta, ref_logp, _ = _policies(6)
    n = 200_000
    g = torch.Generator().manual_seed(123)
    lp_all = torch.log_softmax(theta, -1)
    a = torch.multinomial(lp_all.detach().exp(), n, replacement=True, generator=g)
    lp = lp_all[a]
    loss = policy_kl(lp, ref_logp[a], "k3")
    (mean_grad,) = torch.autograd.grad(loss.mean(), theta, retain_graph=True)
    # per-sample gradients: dk/dlogp · (e_a − π) (softmax score); their std sets the tolerance
    (c,) = torch.autograd.grad(loss.sum(), lp)
    per = c[:, None] * (torch.nn.functional.one_hot(a, A) - lp_all.detach().exp())
    se = per.std(0) / math.sqrt(n)
    target = _grad(lambda t: _forward_kl(t, ref_logp), theta)
    torch.testing.assert_close(per.mean(0), mean_grad, rtol=1e-9, atol=1e-12)
    assert ((mean_grad - target).abs() <= 5 * se).all(), (mean_grad, target, se)


# ------------------------------------------------------------------ Schulman's table
# His table (joschu.net/blog/kl-approx.html, 10⁷ samples): bias/true and stdev/true.
SCHULMAN = {
    0.1: {"k1": ("0", "20"), "k2": ("0.002", "1.42"), "k3": ("0", "1.42")},
    1.0: {"k1": ("0", "2"), "k2": ("0.25", "1.73"), "k3": ("0", "1.7")},
}
SCHULMAN_N = 10_000_000


def _half_unit(s: str) -> float:
    """Half a unit of the last printed digit ("0" is treated as exact)."""
    if s == "0":
        return 0.0
    decimals = len(s.split(".")[1]) if "." in s else 0
    return 0.5 * 10.0 ** (-decimals)


def _analytic(mu: float) -> dict[str, tuple[float, float]]:
    """Closed-form relative bias and std: q = N(0,1), p = N(mu,1), x ~ q, log r ~ N(-mu²/2, mu²)."""
    m, s2 = -(mu**2) / 2, mu**2
    kl = mu**2 / 2
    return {
        "k1": (0.0, math.sqrt(s2) / kl),
        # ½Z², Z ~ N(m, s²): mean ½(m² + s²), var ¼(4m²s² + 2s⁴)
        "k2": ((0.5 * (m * m + s2) - kl) / kl, 0.5 * math.sqrt(4 * m * m * s2 + 2 * s2 * s2) / kl),
        # e^Z − 1 − Z with E e^Z = 1: var = (e^{s²} − 1) − 2 s² + s²  (Cov(e^Z, Z) = s²)
        "k3": (0.0, math.sqrt(math.expm1(s2) - s2) / kl),
    }


@pytest.mark.parametrize("mu", [0.1, 1.0])
def test_reproduces_schulman_table(mu):
    n = 1_000_000
    g = torch.Generator().manual_seed(2020)
    x = torch.randn(n, generator=g, dtype=torch.float64)
    logq = -0.5 * x**2 - 0.5 * math.log(2 * math.pi)  # the sampler (policy π = q)
    logp = -0.5 * (x - mu) ** 2 - 0.5 * math.log(2 * math.pi)  # the reference
    kl = mu**2 / 2
    analytic = _analytic(mu)
    for kind in ("k1", "k2", "k3"):
        k = policy_kl(logq, logp, kind)
        mean, std = k.mean().item(), k.std().item()
        kurt = (((k - mean) / std) ** 4).mean().item()
        bias, rel_std = (mean - kl) / kl, std / kl
        se_bias = rel_std / math.sqrt(n)  # SE of a mean
        se_std = rel_std * math.sqrt((kurt - 1) / (4 * n))  # SE of a std (delta method)
        a_bias, a_std = analytic[kind]
        # ours vs closed form: within 5 standard errors of our Monte Carlo
        assert abs(bias - a_bias) <= 5 * se_bias, (kind, bias, a_bias)
        assert abs(rel_std - a_std) <= 5 * se_std, (kind, rel_std, a_std)
        # ours vs the published table: its rounding plus both Monte Carlo errors
        t_bias, t_std = SCHULMAN[mu][kind]
        his = math.sqrt(n / SCHULMAN_N)
        tol_b = _half_unit(t_bias) + 5 * se_bias * math.sqrt(1 + his**2)
        tol_s = _half_unit(t_std) + 5 * se_std * math.sqrt(1 + his**2)
        assert abs(bias - float(t_bias)) <= tol_b, (kind, bias, t_bias, tol_b)
        assert abs(rel_std - float(t_std)) <= tol_s, (kind, rel_std, t_std, tol_s)


# ------------------------------------------------------------------ KL in reward / DPH-RL
def test_kl_penalty_reward_detached_and_masked():
    theta, ref_logp, _ = _policies(7)
    lp = torch.log_softmax(theta, -1)
    rewards = torch.zeros(A, dtype=torch.float64)
    rewards[-1] = 1.0
    mask = torch.ones(A, dtype=torch.bool)
    mask[0] = False
    out = kl_penalty_reward(rewards, lp, ref_logp, beta=0.1, mask=mask)
    expected = rewards - 0.1 * (lp.detach() - ref_logp)
    expected[0] = rewards[0]
    torch.testing.assert_close(out, expected, rtol=1e-14, atol=0)
    assert not out.requires_grad
    out3 = kl_penalty_reward(rewards, lp, ref_logp, beta=0.5, kind="k3")
    torch.testing.assert_close(out3, rewards - 0.5 * policy_kl(lp, ref_logp, "k3").detach())


def test_reference_sample_kl_value_and_gradient_by_enumeration():
    theta, ref_logp, _ = _policies(8)

    def expected(t):
        lp = torch.log_softmax(t, -1)
        return (ref_logp.exp() * reference_sample_kl(lp, ref_logp)).sum()

    torch.testing.assert_close(expected(theta), _forward_kl(theta, ref_logp), rtol=1e-12, atol=0)
    torch.testing.assert_close(
        _grad(expected, theta),
        _grad(lambda t: _forward_kl(t, ref_logp), theta),
        rtol=1e-10,
        atol=1e-13,
    )
    lp = torch.log_softmax(theta, -1)
    # u − log u − 1 is k3 with the roles of the two policies swapped
    torch.testing.assert_close(reference_sample_kl(lp, ref_logp), policy_kl(ref_logp, lp, "k3"))


# ------------------------------------------------------------------ reductions, dtypes, errors
def test_reductions_mask_and_fully_masked():
    lp = torch.log(torch.tensor([[0.5, 0.2], [0.1, 0.4]])).requires_grad_(True)
    ref = torch.log(torch.tensor([[0.25, 0.4], [0.3, 0.3]]))
    mask = torch.tensor([[True, False], [True, True]])
    per = policy_kl(lp, ref, "k3", mask=mask)
    assert per[0, 1] == 0
    torch.testing.assert_close(policy_kl(lp, ref, "k3", mask=mask, reduction="mean"), per.sum() / 3)
    torch.testing.assert_close(policy_kl(lp, ref, "k3", mask=mask, reduction="sum"), per.sum())
    torch.testing.assert_close(
        policy_kl(lp, ref, mask=mask, reduction="mean", normalizer=10), per.sum() / 10
    )
    none = torch.zeros_like(mask)
    v = policy_kl(lp, ref, "k3", mask=none, reduction="mean")
    v.backward()
    assert v.item() == 0 and torch.equal(lp.grad, torch.zeros_like(lp))


def test_dtypes_and_clamp():
    lp = torch.tensor([-1.0, -200.0], dtype=torch.bfloat16)
    ref = torch.tensor([-2.0, 0.0], dtype=torch.bfloat16)
    out = policy_kl(lp, ref, "k3")
    assert out.dtype == torch.float32 and torch.isinf(out[1])  # r = e^200 overflows fp32
    clamped = policy_kl(lp, ref, "k3", clamp_log_ratio=20.0)
    assert torch.isfinite(clamped).all()
    assert clamped[1].item() == pytest.approx(math.expm1(20.0) - 20.0, rel=1e-6)
    assert policy_kl(lp.double(), ref.double()).dtype == torch.float64


def test_errors_name_the_argument():
    lp, ref = torch.zeros(3), torch.zeros(3)
    with pytest.raises(ValueError, match="`kind`"):
        policy_kl(lp, ref, kind="k4")
    with pytest.raises(ValueError, match="`gradient`"):
        policy_kl(lp, ref, gradient="k5")
    with pytest.raises(ValueError, match="same shape"):
        policy_kl(lp, torch.zeros(4))
    with pytest.raises(ValueError, match="`logp`"):
        policy_kl(np.zeros(3), ref)
    with pytest.raises(ValueError, match="`importance_weight`"):
        policy_kl(lp, ref, importance_weight=-torch.ones(3))
    with pytest.raises(ValueError, match="`importance_weight`"):
        policy_kl(lp, ref, importance_weight=torch.ones(2))
    with pytest.raises(ValueError, match="`reduction`"):
        policy_kl(lp, ref, reduction="avg")
    with pytest.raises(ValueError, match="`clamp_log_ratio`"):
        policy_kl(lp, ref, clamp_log_ratio=0)
    with pytest.raises(ValueError, match="`beta`"):
        kl_penalty_reward(torch.zeros(3), lp, ref, beta=-1.0)
    with pytest.raises(ValueError, match="`rewards`"):
        kl_penalty_reward(torch.zeros(3, 1), lp, ref, beta=1.0)
    with pytest.raises(ValueError, match="`mask`"):
        reference_sample_kl(lp, ref, mask=torch.ones(3))

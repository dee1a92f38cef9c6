"""f_dpg_loss: exact gradients by enumeration, unbiasedness of the baselines, disco's f' table."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from divergent.functional import divergence
from divergent.objectives.fdpg import f_dpg_loss, f_dpg_pseudo_reward
from divergent.toy import SequenceSpace, TabularPolicy, exact_divergence

K = 7
D64 = torch.float64


def _setup(seed=0, sparse=False):
    g = torch.Generator().manual_seed(seed)
    theta = torch.randn(K, generator=g, dtype=D64).requires_grad_(True)
    scores = torch.randn(K, generator=g, dtype=D64)  # log P, unnormalised
    if sparse:
        scores[[1, 4]] = -math.inf
    return theta, scores


def _reference_divergence(name, log_p, log_q, **params):
    """D(p‖q) in float64 from the textbook formulas (P-first)."""
    p, q = log_p.exp(), log_q.exp()
    if name == "kl":
        return torch.where(p > 0, p * (log_p - log_q), torch.zeros_like(p)).sum()
    if name == "reverse_kl":
        return (q * (log_q - log_p)).sum()
    if name == "js":
        b = params.get("beta", 0.5)
        m = b * p + (1 - b) * q
        kl_pm = torch.where(p > 0, p * (log_p - m.log()), torch.zeros_like(p)).sum()
        kl_qm = (q * (log_q - m.log())).sum()
        return b * kl_pm + (1 - b) * kl_qm
    raise AssertionError(name)


def _exact_loss_grad(theta, scores, divergence, log_z, **params):
    logps = torch.log_softmax(theta, -1)
    uniform = torch.full((K,), -math.log(K), dtype=D64)
    loss = f_dpg_loss(
        logps,
        scores,
        uniform,
        divergence=divergence,
        log_partition=log_z,
        baseline=None,
        **params,
    )
    (g,) = torch.autograd.grad(loss, theta)
    return g


@pytest.mark.parametrize(
    ("name", "params", "sparse"),
    [
        ("kl", {}, True),
        ("reverse_kl", {}, False),
        ("js", {}, True),
        ("js", {"beta": 0.3}, True),
    ],
)
def test_exact_gradient_named(name, params, sparse):
    theta, scores = _setup(1, sparse)
    log_z = float(torch.logsumexp(scores, 0))
    got = _exact_loss_grad(theta, scores, name, log_z, **params)
    value = _reference_divergence(name, scores - log_z, torch.log_softmax(theta, -1), **params)
    (want,) = torch.autograd.grad(value, theta)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("hellinger", {}),
        ("pearson_chi2", {}),
        ("neyman_chi2", {}),
        ("alpha", {"alpha": 0.3}),
        ("tv", {}),
        ("jeffreys", {}),
    ],
)
def test_exact_gradient_any_registered_f(name, params):
    theta, scores = _setup(2)
    log_z = float(torch.logsumexp(scores, 0))
    got = _exact_loss_grad(theta, scores, name, log_z, **params)
    value = divergence(
        name,
        (scores - log_z)[None],
        torch.log_softmax(theta, -1)[None],
        inputs="log_probs",
        **params,
    ).sum()
    (want,) = torch.autograd.grad(value, theta)
    torch.testing.assert_close(got, want, rtol=1e-7, atol=1e-9)


def test_exact_gradient_user_generator():
    theta, scores = _setup(3)
    log_z = float(torch.logsumexp(scores, 0))
    gen = lambda t: (t - 1) ** 2 / (t + 1)  # noqa: E731  (triangular discrimination)
    got = _exact_loss_grad(theta, scores, gen, log_z)
    p, q = (scores - log_z).exp(), torch.softmax(theta, -1)
    (want,) = torch.autograd.grad(((p - q) ** 2 / (p + q)).sum(), theta)
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12)


def test_exact_gradient_through_an_autoregressive_toy_policy():
    """Sequence log-probs of a toy model over the whole support: ∇L = ∇ JS(p‖π_θ) exactly."""
    space = SequenceSpace(vocab_size=3, length=3)
    g = torch.Generator().manual_seed(4)
    policy = TabularPolicy.random(space, generator=g)
    target = TabularPolicy.random(space, scale=2.0, generator=g).log_probs().detach()
    target = target + 1.7  # unnormalised scores, Z = e^{1.7}
    uniform = torch.full((space.size,), -math.log(space.size), dtype=D64)
    loss = f_dpg_loss(
        policy.log_probs(), target, uniform, divergence="js", log_partition=1.7, baseline=None
    )
    got = torch.autograd.grad(loss, list(policy.parameters()))
    value = exact_divergence("js", target - 1.7, policy)
    want = torch.autograd.grad(value, list(policy.parameters()))
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def _pair_expectation(baseline):
    """E over all ordered pairs (y1, y2) ~ π×π of ∇L (N = 2 samples, exact log Z), on K = 4."""
    k = 4
    theta = torch.tensor([0.3, -0.2, 0.9, 0.0], dtype=D64, requires_grad=True)
    scores = torch.tensor([0.1, 1.0, -0.5, 0.4], dtype=D64)
    log_z = float(torch.logsumexp(scores, 0))
    logp_all = torch.log_softmax(theta, -1)
    total = torch.zeros((), dtype=D64)
    for i, j in itertools.product(range(k), repeat=2):
        idx = torch.tensor([i, j])
        loss = f_dpg_loss(
            logp_all[idx], scores[idx], divergence="kl", log_partition=log_z, baseline=baseline
        )
        total = total + logp_all[i].exp().detach() * logp_all[j].exp().detach() * loss
    (g,) = torch.autograd.grad(total, theta)
    value = _reference_divergence("kl", scores - log_z, torch.log_softmax(theta, -1))
    (exact,) = torch.autograd.grad(value, theta)
    return g, exact


def test_leave_one_out_and_no_baseline_are_unbiased_mean_is_not():
    for baseline in ("leave_one_out", None, 0.7):
        g, exact = _pair_expectation(baseline)
        torch.testing.assert_close(g, exact, rtol=1e-10, atol=1e-12)
    g, exact = _pair_expectation("mean")
    torch.testing.assert_close(g, 0.5 * exact, rtol=1e-10, atol=1e-12)  # (1 − 1/N) ∇D


def test_monte_carlo_on_policy_with_estimated_partition_converges():
    theta, scores = _setup(5, sparse=True)
    log_z = float(torch.logsumexp(scores, 0))
    exact = _exact_loss_grad(theta, scores, "js", log_z)
    gen = torch.Generator().manual_seed(0)
    probs = torch.softmax(theta.detach(), -1)
    idx = torch.multinomial(probs.expand(50, K), 400, replacement=True, generator=gen)
    logps = torch.log_softmax(theta, -1)[idx]  # 50 contexts × 400 samples (same target)
    loss = f_dpg_loss(logps, scores[idx], divergence="js")
    (g,) = torch.autograd.grad(loss, theta)  # mean over contexts of per-context estimates
    err = (g - exact).norm() / exact.norm()
    assert err < 0.05, float(err)


def test_importance_weighted_off_policy_equals_on_policy_in_expectation():
    """Exact expectation over y ~ q of the one-sample off-policy loss = ∇D."""
    theta, scores = _setup(6)
    log_z = float(torch.logsumexp(scores, 0))
    log_q = torch.log_softmax(torch.linspace(-1, 1, K, dtype=D64), -1)
    logps = torch.log_softmax(theta, -1)
    per_sample = f_dpg_loss(
        logps,
        scores,
        log_q,
        divergence="reverse_kl",
        log_partition=log_z,
        baseline=None,
        reduction="none",
    )
    (g,) = torch.autograd.grad((log_q.exp() * per_sample).sum(), theta)
    value = _reference_divergence("reverse_kl", scores - log_z, torch.log_softmax(theta, -1))
    (want,) = torch.autograd.grad(value, theta)
    torch.testing.assert_close(g, want, rtol=1e-10, atol=1e-12)


def _js_generator(u):
    return 0.5 * u * u.log() - (u + 1) / 2 * ((u + 1) / 2).log()


def test_pseudo_reward_matches_disco_table():
    """disco's f'(t), t = π/p: KL −1/t, RKL log t + 1, JS log(2t/(1+t)) (2·JSD: ours is half)."""
    log_t = torch.linspace(-6, 6, 25, dtype=D64)
    t = log_t.exp()
    torch.testing.assert_close(f_dpg_pseudo_reward(-log_t, "kl"), -1 / t)
    torch.testing.assert_close(f_dpg_pseudo_reward(-log_t, "reverse_kl"), log_t + 1)
    torch.testing.assert_close(f_dpg_pseudo_reward(-log_t, "js"), 0.5 * torch.log(2 * t / (1 + t)))
    # the generic path agrees with the closed forms
    torch.testing.assert_close(
        f_dpg_pseudo_reward(
            -log_t, lambda u: 0.5 * u * u.log() - (u + 1) / 2 * ((u + 1) / 2).log()
        ),
        f_dpg_pseudo_reward(-log_t, "js"),
        rtol=1e-9,
        atol=1e-12,
    )
    # no overflow far out
    assert torch.isfinite(f_dpg_pseudo_reward(torch.tensor([-800.0, 800.0], dtype=D64), "js")).all()


def test_nan_propagates_and_reductions():
    theta, scores = _setup(7)
    logps = torch.log_softmax(theta, -1).detach()
    s = scores.clone()
    s[2] = math.nan
    out = f_dpg_loss(logps, s, divergence="js", log_partition=0.0, baseline=None, reduction="none")
    assert torch.isnan(out[2]) and torch.isfinite(out[[0, 1, 3]]).all()
    a = f_dpg_loss(logps, scores, divergence="js", reduction="none")
    assert float(f_dpg_loss(logps, scores, divergence="js", reduction="sum")) == pytest.approx(
        float(a.sum())
    )


def test_bad_input():
    theta, scores = _setup(8)
    logps = torch.log_softmax(theta, -1).detach()
    with pytest.raises(ValueError, match="f-divergence"):
        f_dpg_loss(logps, scores, divergence="renyi")
    with pytest.raises(ValueError, match="target_log_scores"):
        f_dpg_loss(logps, scores[:3])
    bad = logps.clone()
    bad[0] = 0.3
    with pytest.raises(ValueError, match="`logps` must hold log-probabilities"):
        f_dpg_loss(bad, scores)
    with pytest.raises(ValueError, match="baseline"):
        f_dpg_loss(logps, scores, baseline="median")
    with pytest.raises(ValueError, match="log_partition"):
        f_dpg_loss(logps, scores, log_partition=torch.zeros(3))
    with pytest.raises(ValueError, match="reduction"):
        f_dpg_loss(logps, scores, reduction="avg")

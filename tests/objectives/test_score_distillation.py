"""f-distill (score_distillation.py): h_f(r) = r² f''(r) against the derivative of D_f by
quadrature, the surrogate's gradient, the ratio pipeline and the discriminator loss.

The main check is the paper's gradient formula on 1-D Gaussians p = N(0, 1), q = N(μ, s²)
(x = μ + s z): E_q[h(r)(∇log q − ∇log p) ∂x/∂θ] (quadrature, h from the library) must equal
∂/∂(μ, s) of D_f(p‖q) = ∫ q f(p/q) computed by scipy quadrature with the generator f written
out here (independent of the library) and central finite differences.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate
from scipy.stats import norm

from divergent.objectives.score_distillation import (
    SOFTENED_REVERSE_KL,
    TimeBinnedRatioNormalizer,
    discriminator_density_ratio,
    f_distill_loss,
    f_distill_weights,
    f_divergence_weight,
    gan_generator_loss,
    normalize_batch_weights,
    ratio_discriminator_loss,
    score_distillation_loss,
)


def _js(beta):
    def f(t):
        m = beta * t + 1 - beta
        return beta * t * np.log(t) - m * np.log(m)

    return f


# (divergence argument, params, generator f written independently of the library)
CASES = {
    "kl": ("kl", {}, lambda t: t * np.log(t)),
    "reverse_kl": ("reverse_kl", {}, lambda t: -np.log(t)),
    "js": ("js", {}, _js(0.5)),
    "js_beta0.3": ("js", {"beta": 0.3}, _js(0.3)),
    "hellinger": ("hellinger", {}, lambda t: 0.5 * (np.sqrt(t) - 1) ** 2),
    "jeffreys": ("jeffreys", {}, lambda t: (t - 1) * np.log(t)),
    "neyman_chi2": ("neyman_chi2", {}, lambda t: (1 - t) ** 2 / t),
    "pearson_chi2": ("pearson_chi2", {}, lambda t: (t - 1) ** 2),
    "alpha0.5": ("alpha", {"alpha": 0.5}, lambda t: (t**0.5 - 0.5 * t - 0.5) / (0.5 * -0.5)),
    "softened_reverse_kl": (
        SOFTENED_REVERSE_KL,
        {},
        lambda t: (t + 1) * np.log((t + 1) / (2 * t)),
    ),
    "user_callable_sq_hellinger": (
        lambda t: (torch.sqrt(t) - 1) ** 2,
        {},
        lambda t: (np.sqrt(t) - 1) ** 2,
    ),
}

MU, S = 0.4, 1.2
LO, HI = -14.0, 14.0


GRID = np.linspace(LO, HI, 40001)


def _trapezoid(values):
    # trapezoid rule on a fine grid: spectrally accurate for smooth, rapidly decaying integrands
    return float(integrate.trapezoid(values, GRID))


def _d_f(f, mu, s):
    """D_f(p‖q) = ∫ q f(p/q), p = N(0,1), q = N(mu, s²), float64 quadrature."""
    lq = norm.logpdf(GRID, mu, s)
    return _trapezoid(np.exp(lq) * f(np.exp(norm.logpdf(GRID) - lq)))


def test_grid_quadrature_is_accurate():
    f = CASES["js"][2]
    exact = integrate.quad(
        lambda x: norm.pdf(x, MU, S) * f(norm.pdf(x) / norm.pdf(x, MU, S)), LO, HI, epsabs=1e-13
    )[0]
    assert abs(_d_f(f, MU, S) - exact) < 1e-11


@pytest.mark.parametrize("case", list(CASES))
def test_gradient_formula_matches_finite_differences_of_d_f(case):
    div, params, f = CASES[case]
    # E_q[h(r)(∇log q − ∇log p) ∂x/∂θ], with x = μ + s z: ∂x/∂μ = 1, ∂x/∂s = z = (x − μ)/s
    lq, lp = norm.logpdf(GRID, MU, S), norm.logpdf(GRID)
    h = f_divergence_weight(torch.tensor(np.exp(lp - lq)), div, **params).numpy()
    diff = -(GRID - MU) / S**2 + GRID  # ∇log q − ∇log p
    base = np.exp(lq) * h * diff
    grads = [_trapezoid(base), _trapezoid(base * (GRID - MU) / S)]
    step = 1e-5
    fd_mu = (_d_f(f, MU + step, S) - _d_f(f, MU - step, S)) / (2 * step)
    fd_s = (_d_f(f, MU, S + step) - _d_f(f, MU, S - step)) / (2 * step)
    np.testing.assert_allclose(grads, [fd_mu, fd_s], rtol=1e-5, atol=1e-7)
    assert abs(fd_mu) > 1e-3 and abs(fd_s) > 1e-3  # a real gradient, not 0 = 0


@pytest.mark.parametrize("case", ["kl", "reverse_kl", "js", "jeffreys", "softened_reverse_kl"])
def test_surrogate_autograd_gradient_is_the_f_divergence_gradient(case):
    """The surrogate loss's autograd gradient, on Gauss–Hermite nodes z_i (weights w_i folded
    into the per-sample weight), equals the finite-difference gradient of D_f."""
    div, params, f = CASES[case]
    z, wz = np.polynomial.hermite_e.hermegauss(120)
    z = torch.tensor(z)
    wz = torch.tensor(wz / math.sqrt(2 * math.pi))
    theta = torch.tensor([MU, S], dtype=torch.float64, requires_grad=True)
    x = theta[0] + theta[1] * z
    xd = x.detach()
    log_q = torch.distributions.Normal(theta[0].detach(), theta[1].detach()).log_prob(xd)
    log_p = torch.distributions.Normal(0.0, 1.0).log_prob(xd)
    r = torch.exp(log_p - log_q)
    h = f_divergence_weight(r, div, **params)
    score_q, score_p = -(xd - MU) / S**2, -xd
    loss = score_distillation_loss(
        x[:, None], score_q[:, None], score_p[:, None], h * wz, reduction="sum"
    )
    (grad,) = torch.autograd.grad(loss, theta)
    step = 1e-5
    fd = [
        (_d_f(f, MU + step, S) - _d_f(f, MU - step, S)) / (2 * step),
        (_d_f(f, MU, S + step) - _d_f(f, MU, S - step)) / (2 * step),
    ]
    np.testing.assert_allclose(grad.numpy(), fd, rtol=1e-4, atol=1e-6)


def test_reverse_kl_weight_is_identically_one():
    r = torch.logspace(-6, 6, 25, dtype=torch.float64)
    assert torch.equal(f_divergence_weight(r, "reverse_kl"), torch.ones_like(r))
    assert torch.equal(f_divergence_weight(r, "rkl"), torch.ones_like(r))
    w = f_distill_weights(torch.randn(50) * 5, "reverse_kl")
    torch.testing.assert_close(w, torch.full((50,), 1 / (1 + 1e-6)))


def test_table_weights_closed_forms():
    r = torch.tensor([0.25, 1.0, 3.0], dtype=torch.float64)
    table = {
        "kl": r,
        "js": 0.25 * r / (0.5 * r + 0.5),
        "hellinger": 0.25 * r.sqrt(),
        "jeffreys": r + 1,
        "neyman_chi2": 2 / r,
        "pearson_chi2": 2 * r**2,
    }
    for name, expected in table.items():
        torch.testing.assert_close(f_divergence_weight(r, name), expected)
    torch.testing.assert_close(f_divergence_weight(r, SOFTENED_REVERSE_KL), 1 / (1 + r))
    # a user generator goes through double autograd: (t − 1)² has h = 2 r²
    torch.testing.assert_close(f_divergence_weight(r, lambda t: (t - 1) ** 2), 2 * r**2)


@settings(max_examples=40, deadline=None)
@given(st.floats(1e-3, 1e3))
def test_conjugate_generator_weight_is_r_times_h_at_inverse(r):
    """f*(r) = r f(1/r) has h*(r) = r h(1/r): kl ↔ reverse_kl, pearson ↔ neyman, jeffreys self."""
    t = torch.tensor([r], dtype=torch.float64)
    for a, b in (("kl", "reverse_kl"), ("pearson_chi2", "neyman_chi2"), ("jeffreys", "jeffreys")):
        torch.testing.assert_close(
            f_divergence_weight(t, a), t * f_divergence_weight(1 / t, b), rtol=1e-12, atol=0
        )


def test_surrogate_gradient_is_weighted_score_difference_and_reductions():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 3, 2, generator=g, requires_grad=True)
    sf, st_ = torch.randn(4, 3, 2, generator=g), torch.randn(4, 3, 2, generator=g)
    w = torch.rand(4, generator=g)
    loss = score_distillation_loss(x, sf, st_, w)
    (grad,) = torch.autograd.grad(loss, x)
    torch.testing.assert_close(grad, (sf - st_) * w[:, None, None] / 4)
    none = score_distillation_loss(x, sf, st_, w, reduction="none")
    assert none.shape == (4,)
    torch.testing.assert_close(none, 0.5 * (((sf - st_) * w[:, None, None]) ** 2).sum((1, 2)))
    torch.testing.assert_close(score_distillation_loss(x, sf, st_, w, reduction="sum"), none.sum())
    # elementwise weights and leading-shape weights
    w2 = torch.rand(4, 3, generator=g)
    (grad2,) = torch.autograd.grad(score_distillation_loss(x, sf, st_, w2, reduction="sum"), x)
    torch.testing.assert_close(grad2, (sf - st_) * w2[..., None])
    # no weight = 1 (VSD / DMD)
    (grad3,) = torch.autograd.grad(score_distillation_loss(x, sf, st_, reduction="sum"), x)
    torch.testing.assert_close(grad3, sf - st_)


def test_surrogate_value_and_gradient_in_float64_and_inputs_detached():
    x = torch.randn(3, 2, dtype=torch.float64, requires_grad=True)
    sf = torch.randn(3, 2, dtype=torch.float64, requires_grad=True)
    st_ = torch.randn(3, 2, dtype=torch.float64)
    w = torch.rand(3, dtype=torch.float64, requires_grad=True)
    loss = score_distillation_loss(x, sf, st_, w)
    assert loss.dtype == torch.float64
    loss.backward()
    torch.testing.assert_close(x.grad, ((sf - st_) * w[:, None]).detach() / 3, rtol=1e-14, atol=0)
    assert sf.grad is None and w.grad is None


def test_density_ratio_clamps_and_nan():
    logits = torch.tensor([-50.0, -1.0, 0.0, 2.0, 50.0, math.nan])
    r = discriminator_density_ratio(logits, ratio_min=0.1, ratio_max=5.0)
    expected = torch.tensor([0.1, math.exp(-1), 1.0, 5.0, 5.0, math.nan])
    torch.testing.assert_close(r, expected, equal_nan=True)
    r = discriminator_density_ratio(torch.tensor([-1e4, 1e4]), logit_clamp=math.inf)
    assert r[0] == 0 and math.isinf(float(r[-1]))
    torch.testing.assert_close(
        discriminator_density_ratio(torch.tensor([20.0]))[0], torch.tensor(math.exp(10))
    )


def test_f_distill_weights_batch_normalised():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(64, generator=g)
    for div in ("kl", "js", "hellinger", "neyman_chi2"):
        w = f_distill_weights(logits, div)
        assert abs(float(w.mean()) - 1) < 1e-5
        raw = f_distill_weights(logits, div, normalize=False)
        torch.testing.assert_close(w, raw / (raw.mean() + 1e-6))
    torch.testing.assert_close(
        f_distill_weights(logits, "kl", normalize=False, ratio_min=None, ratio_max=None),
        logits.exp(),
    )
    # f_distill_loss = the surrogate with those weights
    x = torch.randn(64, 2, generator=g, requires_grad=True)
    sf, st_ = torch.randn(64, 2, generator=g), torch.randn(64, 2, generator=g)
    torch.testing.assert_close(
        f_distill_loss(x, sf, st_, logits, "js"),
        score_distillation_loss(x, sf, st_, f_distill_weights(logits, "js")),
    )


def test_time_binned_ratio_normaliser():
    norm_ = TimeBinnedRatioNormalizer(n_bins=4, t_min=0.0, t_max=2.0)
    t = torch.tensor([0.1, 0.2, 0.6, 1.9, 5.0])
    assert norm_.bin_index(t).tolist() == [0, 0, 1, 3, 3]
    r = torch.tensor([1.0, 3.0, 4.0, 2.0, 6.0])
    out = norm_(r, t)
    torch.testing.assert_close(out, torch.tensor([0.5, 1.5, 1.0, 0.5, 1.5]), rtol=1e-5, atol=0)
    assert norm_.bin_means.tolist() == [2.0, 4.0, 1.0, 4.0]  # bin 2 unseen: stays 1
    # EMA update, and eval mode only reads
    ema = TimeBinnedRatioNormalizer(n_bins=1, ema=0.75)
    ema(torch.tensor([5.0]), torch.tensor([0.5]))
    assert ema.bin_means.tolist() == [0.75 * 1 + 0.25 * 5]
    ema.eval()
    out = ema(torch.tensor([4.0]), torch.tensor([0.5]))
    assert ema.bin_means.tolist() == [2.0]
    torch.testing.assert_close(out, torch.tensor([2.0]), rtol=1e-5, atol=0)
    # inside f_distill_weights
    w = f_distill_weights(
        torch.zeros(3),
        "kl",
        t=torch.tensor([0.1, 0.2, 0.9]),
        ratio_normalizer=TimeBinnedRatioNormalizer(2),
        normalize=False,
    )
    torch.testing.assert_close(w, torch.ones(3), rtol=1e-5, atol=0)


def test_discriminator_loss_optimum_is_log_ratio():
    p, q = torch.tensor([0.7, 0.2, 0.1]), torch.tensor([0.1, 0.3, 0.6])
    d = torch.log(p / q).requires_grad_(True)
    # the population loss Σ p softplus(−D) + q softplus(D) is stationary at D = log p/q
    loss = (p * torch.nn.functional.softplus(-d) + q * torch.nn.functional.softplus(d)).sum()
    (grad,) = torch.autograd.grad(loss, d)
    torch.testing.assert_close(grad, torch.zeros(3))
    real, fake = torch.randn(5), torch.randn(7)
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    torch.testing.assert_close(
        ratio_discriminator_loss(real, fake),
        bce(real, torch.ones(5)) + bce(fake, torch.zeros(7)),
    )
    torch.testing.assert_close(gan_generator_loss(fake), bce(fake, torch.ones(7)))
    assert math.isfinite(float(ratio_discriminator_loss(torch.tensor([-1e4]), torch.tensor([1e4]))))


def test_nan_in_nan_out():
    assert math.isnan(float(f_divergence_weight(torch.tensor([math.nan]), "kl")[0]))
    x = torch.zeros(2, 1, requires_grad=True)
    sf = torch.tensor([[math.nan], [0.0]])
    out = score_distillation_loss(x, sf, torch.zeros(2, 1), reduction="none").detach()
    assert math.isnan(float(out[0])) and float(out[1]) == 0.0
    assert math.isnan(float(normalize_batch_weights(torch.tensor([1.0, math.nan]))[0]))
    # NaN in a later position still propagates (no error: only negatives are rejected)
    out = normalize_batch_weights(torch.tensor([1.0, 2.0, math.nan]))
    assert bool(torch.isnan(out).all())


def test_normalize_batch_weights_rejects_negative_weights():
    # [1, -0.999] has mean 5e-4: dividing by it gave [1996, -1994]
    with pytest.raises(ValueError, match="`weights` must be >= 0"):
        normalize_batch_weights(torch.tensor([1.0, -0.999]))
    with pytest.raises(ValueError, match="`weights`"):
        normalize_batch_weights(torch.tensor([[1.0, 2.0], [0.5, -1e-6]]))
    # zero is allowed (the boundary)
    torch.testing.assert_close(
        normalize_batch_weights(torch.tensor([0.0, 2.0]), eps=0.0), torch.tensor([0.0, 2.0])
    )


def test_reductions_follow_the_shared_reduce_rows():
    fake = torch.zeros(2, 3)
    assert gan_generator_loss(fake, reduction="none").shape == (2, 3)
    torch.testing.assert_close(
        gan_generator_loss(fake, reduction="sum"), torch.tensor(6 * math.log(2))
    )
    torch.testing.assert_close(gan_generator_loss(fake), torch.tensor(math.log(2)))
    # an empty batch gives 0 with a zero gradient (the library's convention), never NaN
    x = torch.zeros(0, 2, requires_grad=True)
    loss = score_distillation_loss(x, torch.zeros(0, 2), torch.ones(0, 2))
    assert float(loss.detach()) == 0.0
    loss.backward()
    assert x.grad is not None and x.grad.shape == (0, 2)
    assert float(gan_generator_loss(torch.zeros(0))) == 0.0


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: f_divergence_weight(torch.tensor([-1.0]), "kl"), "`ratio` must be >= 0"),
        (lambda: f_divergence_weight(torch.tensor([1.0]), "renyi"), "not an f-divergence|f-div"),
        (lambda: f_divergence_weight(torch.tensor([1.0]), "js", bta=0.3), "bta"),
        (lambda: f_divergence_weight(torch.tensor([1.0]), "no_such_div"), "no_such_div"),
        (lambda: f_divergence_weight([1.0], "kl"), "`ratio`"),
        (lambda: f_divergence_weight(torch.tensor([1.0]), SOFTENED_REVERSE_KL, beta=1), "param"),
        (
            lambda: discriminator_density_ratio(torch.zeros(2), ratio_min=2.0, ratio_max=1.0),
            "ratio_min",
        ),
        (lambda: discriminator_density_ratio(torch.zeros(2), logit_clamp=0.0), "logit_clamp"),
        (lambda: normalize_batch_weights(torch.zeros(0)), "`weights`"),
        (
            lambda: score_distillation_loss(
                torch.zeros(2, 3), torch.zeros(2, 2), torch.zeros(2, 3)
            ),
            "score_fake",
        ),
        (
            lambda: score_distillation_loss(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(3)),
            "score_teacher",
        ),
        (
            lambda: score_distillation_loss(
                torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(2, 3), torch.ones(3)
            ),
            "`weight`",
        ),
        (
            lambda: score_distillation_loss(
                torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(2, 3), reduction="avg"
            ),
            "reduction",
        ),
        (lambda: score_distillation_loss(torch.zeros(()), torch.zeros(()), torch.zeros(())), "`x`"),
        (
            lambda: f_distill_weights(torch.zeros(2), ratio_normalizer=TimeBinnedRatioNormalizer()),
            "`t`",
        ),
        (lambda: f_distill_weights(torch.zeros(2), normalize=1), "normalize"),
        (lambda: TimeBinnedRatioNormalizer(0), "n_bins"),
        (lambda: TimeBinnedRatioNormalizer(ema=1.0), "ema"),
        (lambda: TimeBinnedRatioNormalizer(t_min=1.0, t_max=0.0), "t_min"),
        (lambda: TimeBinnedRatioNormalizer(2)(torch.ones(3), torch.ones(2)), "`t`"),
        (
            lambda: ratio_discriminator_loss(torch.zeros(2), torch.zeros(2), reduction="none"),
            "reduction",
        ),
    ],
)
def test_bad_input_names_the_argument(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_discriminator_trained_with_the_logistic_loss_recovers_the_log_ratio():
    """Minimising ratio_discriminator_loss over quadratic logits D(x) = a + b x + c x² (the
    family that holds log N(0,1)/N(μ,s²)) on quantile points of p and q (deterministic
    stand-ins for samples) gives D ≈ log p/q, so discriminator_density_ratio(D) ≈ p/q."""
    u = (np.arange(20000) + 0.5) / 20000
    xp = torch.tensor(norm.ppf(u))
    xq = torch.tensor(norm.ppf(u, MU, S))

    def feats(x):
        return torch.stack([torch.ones_like(x), x, x**2], -1)

    def loss(theta):
        return ratio_discriminator_loss(feats(xp) @ theta, feats(xq) @ theta)

    theta = torch.zeros(3, dtype=torch.float64)
    for _ in range(25):  # Newton on a convex function of three numbers
        g = torch.autograd.functional.jacobian(loss, theta)
        h = torch.autograd.functional.hessian(loss, theta)
        theta = theta - torch.linalg.solve(h, g)
    exact = torch.tensor(
        [MU**2 / (2 * S**2) + math.log(S), -MU / S**2, 1 / (2 * S**2) - 0.5], dtype=torch.float64
    )
    torch.testing.assert_close(theta, exact, atol=5e-4, rtol=0)
    x = torch.linspace(-2.5, 2.5, 11, dtype=torch.float64)
    r = discriminator_density_ratio(feats(x) @ theta)
    true = torch.exp(torch.tensor(norm.logpdf(x.numpy()) - norm.logpdf(x.numpy(), MU, S)))
    torch.testing.assert_close(r, true, rtol=2e-3, atol=0)


# ---- new-user trial 44: numerics, NaN, overflow, empty batches, half precision, checks ----


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_surrogate_gradient_is_exactly_g_in_half_precision(dtype):
    # x − (x − g) lost all of g = 0.01 next to x = 100 in bf16; the loss was bf16 too
    x = torch.full((2, 3), 100.0, dtype=dtype, requires_grad=True)
    g = torch.full((2, 3), 0.01, dtype=dtype)
    loss = score_distillation_loss(x, g, torch.zeros_like(g), reduction="sum")
    assert loss.dtype == torch.float32
    loss.backward()
    assert x.grad.dtype == dtype
    assert torch.equal(x.grad, g)
    # the value is ½‖g‖² per row, computed in fp32 from the half-precision g
    torch.testing.assert_close(loss.detach(), 0.5 * g.float().square().sum())
    # realistic sizes: the gradient equals g (in x's dtype) up to the final rounding only
    gen = torch.Generator().manual_seed(3)
    x = (10 * torch.randn(64, 8, generator=gen)).to(dtype).requires_grad_(True)
    sf, st_ = torch.randn(64, 8, generator=gen).to(dtype), torch.randn(64, 8, generator=gen)
    w = torch.rand(64, generator=gen)
    score_distillation_loss(x, sf, st_, w, reduction="sum").backward()
    assert torch.equal(x.grad, ((sf.float() - st_) * w[:, None]).to(dtype))


def test_surrogate_gradient_keeps_a_tiny_g_in_float32():
    x = torch.ones(1, 1, requires_grad=True)
    loss = score_distillation_loss(x, torch.tensor([[1e-9]]), torch.zeros(1, 1), reduction="sum")
    loss.backward()
    assert float(x.grad) == pytest.approx(1e-9, rel=1e-6)  # was 0 (1 − 1e-9 rounds to 1)
    assert float(loss.detach()) == pytest.approx(0.5e-18, rel=1e-6)
    # a later position too
    x = torch.ones(3, 2, requires_grad=True)
    sf = torch.zeros(3, 2)
    sf[2, 1] = 1e-9
    score_distillation_loss(x, sf, torch.zeros(3, 2), reduction="sum").backward()
    assert (
        float(x.grad[2, 1]) == pytest.approx(1e-9, rel=1e-6) and float(x.grad[:2].abs().sum()) == 0
    )


def test_nan_ratio_stays_nan_even_for_a_constant_weight():
    out = f_divergence_weight(torch.tensor([1.0, 2.0, math.nan]), "reverse_kl")
    assert out[:2].tolist() == [1.0, 1.0] and math.isnan(float(out[2]))
    out = f_divergence_weight(torch.tensor([math.nan, 2.0]), "reverse_kl")
    assert math.isnan(float(out[0])) and float(out[1]) == 1.0
    # through f_distill_loss: the NaN logit's row is NaN (normalised: every row, never finite)
    x = torch.zeros(4, 1, requires_grad=True)
    logits = torch.tensor([0.0, 0.0, 0.0, math.nan])
    args = (x, torch.ones(4, 1), torch.zeros(4, 1), logits, "reverse_kl")
    raw = f_distill_loss(*args, normalize=False, reduction="none").detach()
    assert torch.isnan(raw).tolist() == [False, False, False, True]
    assert bool(torch.isnan(f_distill_loss(*args, reduction="none")).all())


def test_time_binned_normaliser_is_not_poisoned_by_nan_and_rejects_nan_times():
    norm_ = TimeBinnedRatioNormalizer(n_bins=1, ema=0.9)
    out = norm_(torch.tensor([1.0, math.nan]), torch.tensor([0.5, 0.5]))
    assert math.isnan(float(out[1])) and float(out[0]) == pytest.approx(1.0, rel=1e-5)
    assert norm_.bin_means.tolist() == [1.0]  # 0.9·1 + 0.1·1: the NaN left out
    out = norm_(torch.tensor([2.0]), torch.tensor([0.5]))
    assert float(out) == pytest.approx(2.0 / 1.1, rel=1e-5)  # was NaN forever
    norm_.eval()
    assert math.isfinite(float(norm_(torch.tensor([2.0]), torch.tensor([0.5]))))
    # an infinite ratio is left out too (its output stays inf)
    out = norm_.train()(torch.tensor([math.inf, 1.0]), torch.tensor([0.5, 0.5]))
    assert math.isinf(float(out[0])) and math.isfinite(float(norm_.bin_means[0]))
    with pytest.raises(ValueError, match="`t`"):
        TimeBinnedRatioNormalizer(2)(torch.ones(3), torch.tensor([0.1, 0.2, math.nan]))
    with pytest.raises(ValueError, match="`t`"):
        TimeBinnedRatioNormalizer(2)(torch.ones(2), torch.tensor([math.nan, 0.2]))
    # ±inf times go to the end bins (not an error)
    assert TimeBinnedRatioNormalizer(2).bin_index(torch.tensor([-math.inf, math.inf])).tolist() == [
        0,
        1,
    ]


def test_weight_at_infinite_ratio_is_its_limit():
    inf = torch.tensor([math.inf, 1.0])
    torch.testing.assert_close(f_divergence_weight(inf, "js"), torch.tensor([0.5, 0.25]))
    torch.testing.assert_close(
        f_divergence_weight(inf[:1], "js", beta=0.3), torch.tensor([0.7])
    )  # β(1−β) r/(βr + 1 − β) → 1 − β
    limits = {
        "reverse_kl": 1.0,
        "neyman_chi2": 0.0,
        "kl": math.inf,
        "hellinger": math.inf,
        "pearson_chi2": math.inf,
    }
    for name, limit in limits.items():
        assert float(f_divergence_weight(inf[:1], name)) == limit, name
    assert float(f_divergence_weight(inf[:1], SOFTENED_REVERSE_KL)) == 0.0
    assert float(f_divergence_weight(inf[:1].double(), "alpha", alpha=-0.5)) == 0.0
    # a user generator by double autograd: -log t has h ≡ 1
    assert float(f_divergence_weight(inf[:1], lambda t: -torch.log(t))) == pytest.approx(1.0)


def test_overflowing_ratio_gives_the_limit_or_a_clear_error_never_nan():
    logits = torch.tensor([100.0, 0.0, 0.0, 0.0])  # e^100 overflows float32
    w = f_distill_weights(logits, "js", logit_clamp=math.inf, ratio_max=None)
    # h(e^100) = ½ to 1e-43: [0.5, .25, .25, .25] / 0.3125
    torch.testing.assert_close(w, torch.tensor([1.6, 0.8, 0.8, 0.8]), rtol=1e-5, atol=0)
    for div in ("hellinger", "kl"):
        with pytest.raises(ValueError, match="logit_clamp"):
            f_distill_weights(logits, div, logit_clamp=math.inf, ratio_max=None)
    # a later position; without normalisation the overflow is a plain inf
    logits = torch.tensor([0.0, 0.0, 0.0, 100.0])
    with pytest.raises(ValueError, match="logit_clamp"):
        f_distill_weights(logits, "hellinger", logit_clamp=math.inf, ratio_max=None)
    raw = f_distill_weights(
        logits, "hellinger", logit_clamp=math.inf, ratio_max=None, normalize=False
    )
    assert raw[:3].tolist() == [0.25] * 3 and math.isinf(float(raw[3]))
    # below the overflow it is computed as before
    w = f_distill_weights(
        torch.tensor([80.0, 0.0]), "hellinger", logit_clamp=math.inf, ratio_max=None
    )
    assert bool(torch.isfinite(w).all()) and float(w[0]) == pytest.approx(2.0, rel=1e-6)
    with pytest.raises(ValueError, match="infinite"):
        normalize_batch_weights(torch.tensor([1.0, math.inf]))


@pytest.mark.parametrize(
    "divergence",
    ["tv", lambda t: (t - 1).abs() / 2, lambda t: torch.relu(t - 1) + torch.relu(1 - t) * 2],
)
def test_divergence_without_curvature_is_refused(divergence):
    with pytest.raises(ValueError, match=r"`divergence`.*identically zero"):
        f_divergence_weight(torch.tensor([0.5, 2.0]), divergence)
    x = torch.zeros(4, 1, requires_grad=True)
    with pytest.raises(ValueError, match="`divergence`"):
        f_distill_loss(x, torch.ones(4, 1), torch.zeros(4, 1), torch.zeros(4), divergence)


def test_curvature_on_part_of_the_axis_is_accepted():
    # f = relu(t − 1)² is flat below 1 but curved above: h is 0 for r < 1, 2r² above
    h = f_divergence_weight(torch.tensor([0.5, 2.0]).double(), lambda t: torch.relu(t - 1) ** 2)
    assert h.tolist() == [0.0, 8.0]


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_empty_batch_gives_zero_with_zero_gradient(reduction):
    x = torch.zeros(0, 2, requires_grad=True)
    loss = f_distill_loss(
        x, torch.zeros(0, 2), torch.zeros(0, 2), torch.zeros(0), reduction=reduction
    )
    assert float(loss.detach()) == 0.0 and not math.isnan(float(loss.detach()))
    loss.backward()
    assert x.grad is not None and x.grad.shape == (0, 2)
    assert f_distill_weights(torch.zeros(0), "js").shape == (0,)
    one = torch.zeros(3)
    assert float(gan_generator_loss(torch.zeros(0), reduction=reduction)) == 0.0
    real = ratio_discriminator_loss(torch.zeros(0), one, reduction=reduction)
    fake = ratio_discriminator_loss(one, torch.zeros(0), reduction=reduction)
    k = 1 if reduction == "mean" else 3
    assert float(real) == pytest.approx(k * math.log(2)) and float(fake) == pytest.approx(
        k * math.log(2)
    )
    assert float(ratio_discriminator_loss(torch.zeros(0), torch.zeros(0, 4))) == 0.0
    d = torch.zeros(0, requires_grad=True)
    ratio_discriminator_loss(d, torch.ones(2)).backward()
    assert d.grad is not None and d.grad.shape == (0,)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_in_fp32_out(dtype):
    r = torch.tensor([0.5, 1000.0], dtype=dtype)
    h = f_divergence_weight(r, "pearson_chi2")  # 2·1000² = 2e6 overflowed fp16
    assert h.dtype == torch.float32
    torch.testing.assert_close(h, 2 * r.float() ** 2)
    logits = torch.tensor([0.3, -2.0, 5.0], dtype=dtype)
    assert gan_generator_loss(logits).dtype == torch.float32
    torch.testing.assert_close(
        gan_generator_loss(logits), torch.nn.functional.softplus(-logits.float()).mean()
    )
    out = ratio_discriminator_loss(logits, logits)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, ratio_discriminator_loss(logits.float(), logits.float()))
    assert f_distill_weights(logits, "kl").dtype == torch.float32
    # e^11.5 ≈ 98715 overflowed fp16 (max 65504)
    r = discriminator_density_ratio(torch.tensor([11.5]).to(dtype), logit_clamp=12.0)
    assert r.dtype == torch.float32 and math.isfinite(float(r))
    # float64 stays float64
    assert f_divergence_weight(r.double(), "kl").dtype == torch.float64
    assert gan_generator_loss(logits.double()).dtype == torch.float64


def test_normaliser_and_t_checks():
    with pytest.raises(ValueError, match="t_min"):
        TimeBinnedRatioNormalizer(t_min=True)
    with pytest.raises(ValueError, match="t_min"):
        TimeBinnedRatioNormalizer(t_max=True)
    TimeBinnedRatioNormalizer(t_min=0, t_max=2)  # plain ints are fine
    x = torch.zeros(16, 1, requires_grad=True)
    args = (x, torch.ones(16, 1), torch.zeros(16, 1), torch.zeros(16))
    with pytest.raises(ValueError, match="`t` must have the shape"):
        f_distill_loss(*args, t=torch.rand(17))
    with pytest.raises(ValueError, match="`t`"):
        f_distill_loss(*args, t=torch.arange(16))  # integer times
    f_distill_loss(*args, t=torch.rand(16))  # the right shape, no normaliser: fine

"""Sparse-autoencoder losses and metrics against hand formulas, torch.distributions and Monte
Carlo; gradcheck; TopK selection; metrics on planted cases; bad input refused."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.distributions import Normal, kl_divergence

from divergent.objectives.sparse_autoencoder import (
    dead_latent_fraction,
    gaussian_prior_kl,
    max_cosine_similarity,
    mean_pairwise_cosine,
    reparameterize,
    sae_reconstruction_loss,
    topk_activation,
    variational_sae_loss,
    variational_sae_terms,
)


def _hand_kl(mu: np.ndarray, log_var: np.ndarray) -> np.ndarray:
    """½ Σ (μ² + σ² − log σ² − 1), written out in numpy float64."""
    var = np.exp(log_var)
    return 0.5 * (mu**2 + var - log_var - 1.0).sum(-1)


def _posterior(seed: int, shape=(5, 7)):
    g = torch.Generator().manual_seed(seed)
    mu = torch.randn(shape, generator=g, dtype=torch.float64)
    log_var = torch.randn(shape, generator=g, dtype=torch.float64)
    return mu, log_var


# ------------------------------------------------------------------------------------------
# KL to the prior
# ------------------------------------------------------------------------------------------
def test_kl_equals_the_closed_form_by_hand() -> None:
    mu, lv = _posterior(0)
    rows = gaussian_prior_kl(mu, lv, reduction="none")
    ref = _hand_kl(mu.numpy(), lv.numpy())
    np.testing.assert_allclose(rows.numpy(), ref, rtol=1e-12)
    assert float(gaussian_prior_kl(mu, lv, reduction="sum")) == pytest.approx(ref.sum(), 1e-12)
    assert float(gaussian_prior_kl(mu, lv)) == pytest.approx(ref.mean(), 1e-12)


def test_kl_fixed_sigma_is_half_squared_norm_at_sigma_one() -> None:
    mu, _ = _posterior(1)
    rows = gaussian_prior_kl(mu, 0.0, reduction="none")
    np.testing.assert_allclose(rows.numpy(), 0.5 * (mu.numpy() ** 2).sum(-1), rtol=1e-12)
    fixed = gaussian_prior_kl(mu, math.log(0.25), reduction="none")
    ref = _hand_kl(mu.numpy(), np.full(mu.shape, math.log(0.25)))
    np.testing.assert_allclose(fixed.numpy(), ref, rtol=1e-12)


def test_kl_matches_torch_kl_divergence() -> None:
    mu, lv = _posterior(2, (3, 4, 6))  # any leading shape
    ours = gaussian_prior_kl(mu, lv, reduction="none")
    ref = kl_divergence(Normal(mu, torch.exp(0.5 * lv)), Normal(0.0, 1.0)).sum(-1)
    assert ours.shape == (3, 4)
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)


def test_kl_matches_monte_carlo() -> None:
    mu = torch.tensor([0.7, -1.2, 0.0], dtype=torch.float64)
    lv = torch.tensor([-0.5, 0.3, 1.1], dtype=torch.float64)
    g = torch.Generator().manual_seed(3)
    z = mu + torch.exp(0.5 * lv) * torch.randn(200_000, 3, generator=g, dtype=torch.float64)
    log_ratio = Normal(mu, torch.exp(0.5 * lv)).log_prob(z).sum(-1) - Normal(0.0, 1.0).log_prob(
        z
    ).sum(-1)
    est, se = float(log_ratio.mean()), float(log_ratio.std() / math.sqrt(z.shape[0]))
    exact = float(gaussian_prior_kl(mu, lv))
    assert abs(est - exact) < 4 * se


def test_kl_equals_the_library_closed_form_where_finite() -> None:
    from torch.distributions import Independent

    from divergent.distributions.closed_form import closed_form

    mu, lv = _posterior(6, (4, 5))
    lv = lv * 6.0  # σ² from e^−18 to e^18
    post = Independent(Normal(mu, torch.exp(0.5 * lv)), 1)
    prior = Independent(Normal(torch.zeros(5, dtype=mu.dtype), torch.ones(5, dtype=mu.dtype)), 1)
    ref = closed_form("kl", post, prior, method="exact").value
    torch.testing.assert_close(gaussian_prior_kl(mu, lv, reduction="none"), ref)


@pytest.mark.parametrize("lv", [-150.0, -208.0, -210.0, -1000.0])
def test_kl_is_finite_and_exact_for_very_negative_log_var(lv: float) -> None:
    # σ = e^{lv/2} underflows in fp32; the KL ½(σ² − lv − 1) ≈ ½(−lv − 1) is still finite
    mu = torch.zeros(2, 3)
    log_var = torch.full((2, 3), lv, requires_grad=True)
    rows = gaussian_prior_kl(mu, log_var, reduction="none")
    torch.testing.assert_close(rows, torch.full((2,), 1.5 * (-lv - 1.0)))
    rows.sum().backward()
    torch.testing.assert_close(log_var.grad, torch.full((2, 3), -0.5))


def test_kl_overflows_to_inf_not_nan_for_huge_log_var() -> None:
    mu = torch.zeros(2, 3)
    lv = torch.tensor([[0.0, 0.0, 0.0], [0.0, 89.0, 0.0]])  # e^89 > fp32 max
    rows = gaussian_prior_kl(mu, lv, reduction="none")
    assert float(rows[0]) == 0.0 and math.isinf(float(rows[1])) and float(rows[1]) > 0
    big = gaussian_prior_kl(mu.double(), lv.double(), reduction="none")
    assert float(big[1]) == pytest.approx(0.5 * (math.exp(89.0) - 89.0 - 1.0), rel=1e-12)
    x = torch.zeros(2, 4)
    loss = variational_sae_loss(x, x, mu, torch.full((2, 3), -300.0), reduction="none")
    torch.testing.assert_close(loss, torch.full((2,), 1.5 * 299.0))


def test_kl_gradients_are_the_analytic_ones() -> None:
    mu, lv = _posterior(4)
    mu.requires_grad_(True)
    lv.requires_grad_(True)
    gaussian_prior_kl(mu, lv, reduction="sum").backward()
    torch.testing.assert_close(mu.grad, mu.detach())  # ∂/∂μ = μ
    torch.testing.assert_close(lv.grad, 0.5 * (lv.detach().exp() - 1.0))  # ½(σ² − 1)


def test_kl_nan_row_gives_nan_for_that_row_only() -> None:
    mu, lv = _posterior(5, (3, 4))
    mu[1, 2] = math.nan
    lv[2, 0] = math.nan
    rows = gaussian_prior_kl(mu, lv, reduction="none")
    assert torch.isnan(rows[1:]).all() and torch.isfinite(rows[0])
    assert math.isnan(float(gaussian_prior_kl(mu, lv)))


def test_half_precision_is_computed_in_float32() -> None:
    mu = torch.randn(4, 8).to(torch.bfloat16)
    out = gaussian_prior_kl(mu, reduction="none")
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, 0.5 * mu.float().square().sum(-1))
    x = torch.randn(4, 3).half()
    assert sae_reconstruction_loss(x, torch.zeros_like(x)).dtype == torch.float32


# ------------------------------------------------------------------------------------------
# losses
# ------------------------------------------------------------------------------------------
def test_reconstruction_loss_by_hand() -> None:
    x = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    x_hat = torch.tensor([[1.0, 0.0, 2.0], [1.0, 1.0, 1.0]], dtype=torch.float64)
    rows = sae_reconstruction_loss(x, x_hat, reduction="none")
    torch.testing.assert_close(rows, torch.tensor([5.0, 2.0], dtype=torch.float64))
    assert float(sae_reconstruction_loss(x, x_hat)) == 3.5
    assert float(sae_reconstruction_loss(x, x_hat, reduction="sum")) == 7.0


def test_variational_loss_is_reconstruction_plus_weighted_kl() -> None:
    g = torch.Generator().manual_seed(6)
    x, x_hat = torch.randn(5, 3, generator=g), torch.randn(5, 3, generator=g)
    mu, lv = torch.randn(5, 8, generator=g), torch.randn(5, 8, generator=g)
    t = variational_sae_terms(x, x_hat, mu, lv, kl_weight=0.3, reduction="none")
    torch.testing.assert_close(t.reconstruction, ((x - x_hat) ** 2).sum(-1))
    ref_kl = torch.from_numpy(_hand_kl(mu.double().numpy(), lv.double().numpy())).float()
    torch.testing.assert_close(t.kl, ref_kl)
    torch.testing.assert_close(t.loss, t.reconstruction + 0.3 * t.kl)
    zero = variational_sae_loss(x, x_hat, mu, lv, kl_weight=0.0)
    torch.testing.assert_close(zero, sae_reconstruction_loss(x, x_hat))


def test_gradcheck_variational_loss() -> None:
    g = torch.Generator().manual_seed(7)
    x = torch.randn(4, 3, generator=g, dtype=torch.float64)
    x_hat = torch.randn(4, 3, generator=g, dtype=torch.float64, requires_grad=True)
    mu = torch.randn(4, 6, generator=g, dtype=torch.float64, requires_grad=True)
    lv = torch.randn(4, 6, generator=g, dtype=torch.float64, requires_grad=True)
    for reduction in ("mean", "none"):
        assert torch.autograd.gradcheck(
            lambda a, b, c, r=reduction: variational_sae_loss(
                x, a, b, c, kl_weight=0.7, reduction=r
            ),
            (x_hat, mu, lv),
        )


def test_reparameterize_moments_and_gradients() -> None:
    mu = torch.tensor([1.0, -2.0], dtype=torch.float64).expand(100_000, 2).clone()
    lv = torch.tensor([math.log(4.0), math.log(0.25)], dtype=torch.float64).expand(100_000, 2)
    z = reparameterize(mu, lv.clone(), generator=torch.Generator().manual_seed(8))
    torch.testing.assert_close(z.mean(0), mu[0], atol=0.02, rtol=0)
    torch.testing.assert_close(z.var(0), lv[0].exp(), atol=0.05, rtol=0.02)
    m = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    v = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    g = torch.Generator().manual_seed(9)
    out = reparameterize(m, v, generator=g)
    eps = torch.randn(3, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    out.sum().backward()
    torch.testing.assert_close(m.grad, torch.ones(3, dtype=torch.float64))
    torch.testing.assert_close(v.grad, 0.5 * eps)  # ∂z/∂logσ² = ½σε at σ = 1


# ------------------------------------------------------------------------------------------
# TopK
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("k", [1, 3, 7])
def test_topk_keeps_exactly_k_largest(k: int) -> None:
    g = torch.Generator().manual_seed(10)
    pre = torch.rand(6, 7, generator=g) + 0.1  # positive: the ReLU changes nothing
    codes = topk_activation(pre, k)
    assert ((codes != 0).sum(-1) == k).all()
    kth = pre.sort(-1, descending=True).values[:, k - 1 : k]
    torch.testing.assert_close(codes, torch.where(pre >= kth, pre, torch.zeros_like(pre)))


def test_topk_applies_relu_after_selection_and_routes_gradient() -> None:
    pre = torch.tensor([[-1.0, -3.0, 2.0, -0.5]], requires_grad=True)
    codes = topk_activation(pre, 3)  # selects 2.0, −0.5, −1.0; ReLU keeps only 2.0
    torch.testing.assert_close(codes.detach(), torch.tensor([[0.0, 0.0, 2.0, 0.0]]))
    codes.sum().backward()
    torch.testing.assert_close(pre.grad, torch.tensor([[0.0, 0.0, 1.0, 0.0]]))


# ------------------------------------------------------------------------------------------
# metrics
# ------------------------------------------------------------------------------------------
def test_dead_latent_fraction_planted() -> None:
    g = torch.Generator().manual_seed(11)
    codes = torch.rand(50, 8, generator=g) + 0.01
    codes[:, 3] = 0.0
    codes[:, 5] = 0.0
    assert dead_latent_fraction(codes) == 2 / 8
    codes[17, 5] = 0.2  # one activation revives it
    assert dead_latent_fraction(codes) == 1 / 8
    assert dead_latent_fraction(codes, threshold=0.5) > 1 / 8
    assert dead_latent_fraction(codes.reshape(5, 10, 8)) == 1 / 8  # leading axes are rows


def test_max_cosine_is_one_when_the_decoder_is_the_ground_truth() -> None:
    g = torch.Generator().manual_seed(12)
    truth = torch.randn(10, 6, generator=g, dtype=torch.float64)
    assert max_cosine_similarity(truth, truth) == pytest.approx(1.0, abs=1e-12)
    shuffled = truth[torch.randperm(10, generator=g)] * 3.0  # order and scale do not matter
    extra = torch.cat([shuffled, torch.randn(5, 6, generator=g, dtype=torch.float64)])
    assert max_cosine_similarity(extra, truth) == pytest.approx(1.0, abs=1e-12)
    assert max_cosine_similarity(-truth, truth) < 1.0  # signed


def test_max_cosine_hand_case() -> None:
    truth = torch.eye(3)
    w = torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 2.0]])
    # feature 0: √½, feature 1: √½, feature 2: 1
    assert max_cosine_similarity(w, truth) == pytest.approx((2 * math.sqrt(0.5) + 1) / 3)


def test_mean_pairwise_cosine_hand_cases() -> None:
    assert mean_pairwise_cosine(torch.eye(4)) == 0.0
    same = torch.tensor([[1.0, 2.0], [2.0, 4.0], [-1.0, -2.0]])
    assert mean_pairwise_cosine(same) == pytest.approx(1.0)
    assert mean_pairwise_cosine(same, absolute=False) == pytest.approx(-1 / 3)
    w = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    assert mean_pairwise_cosine(w) == pytest.approx(2 * math.sqrt(0.5) / 3)
    keep = torch.tensor([True, True, False])
    assert mean_pairwise_cosine(w, latents=keep) == 0.0


# ------------------------------------------------------------------------------------------
# bad input
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: topk_activation(torch.randn(2, 5), 0), "`k`"),
        (lambda: topk_activation(torch.randn(2, 5), 6), "`k`"),
        (lambda: topk_activation(torch.randn(2, 5), 2.0), "`k`"),
        (lambda: topk_activation(torch.arange(5), 2), "`pre`"),
        (lambda: gaussian_prior_kl(torch.randn(2, 3), torch.randn(2, 4)), "`log_var`"),
        (lambda: gaussian_prior_kl(torch.randn(2, 3), math.inf), "`log_var`"),
        (lambda: gaussian_prior_kl(torch.randn(2, 3), "0"), "`log_var`"),
        (
            lambda: gaussian_prior_kl(torch.randn(2, 3), torch.tensor([[0.0, math.inf, 0.0]] * 2)),
            "`log_var`",
        ),
        (lambda: gaussian_prior_kl(torch.tensor([[math.inf, 0.0]])), "`mu`"),
        (lambda: gaussian_prior_kl(torch.randn(2, 3), reduction="avg"), "`reduction`"),
        (lambda: sae_reconstruction_loss(torch.randn(2, 3), torch.randn(2, 4)), "`x_hat`"),
        (lambda: sae_reconstruction_loss([1.0], torch.randn(1)), "`x`"),
        (
            lambda: variational_sae_loss(
                torch.randn(2, 3), torch.randn(2, 3), torch.randn(2, 4), kl_weight=-1.0
            ),
            "`kl_weight`",
        ),
        (
            lambda: variational_sae_loss(torch.randn(2, 3), torch.randn(2, 3), torch.randn(3, 4)),
            "`mu`",
        ),
        (lambda: dead_latent_fraction(torch.tensor([[math.nan, 1.0]])), "`codes`"),
        (lambda: dead_latent_fraction(torch.ones(2, 3), threshold=-1.0), "`threshold`"),
        (lambda: max_cosine_similarity(torch.zeros(2, 3), torch.eye(3)), "`directions`"),
        (lambda: max_cosine_similarity(torch.eye(3), torch.eye(4)), "dimension"),
        (lambda: max_cosine_similarity(torch.eye(3), torch.ones(3)), "`ground_truth`"),
        (lambda: mean_pairwise_cosine(torch.eye(3)[:1]), "at least 2"),
        (lambda: mean_pairwise_cosine(torch.eye(3), latents=torch.ones(3)), "`latents`"),
    ],
)
def test_bad_input_is_refused(call, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call()

"""divergent.train.integral_kl: the IKL distillation loops against closed forms (torch's
Gaussian KL, the affine map's covariance, autograd of the closed-form IKL)."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import MultivariateNormal, kl_divergence

from divergent.distributions.diffusion import integral_kl
from divergent.train.integral_kl import (
    affine_ikl_surrogate,
    ar_joint_gaussian,
    gaussian_kl_or_inf,
    train_affine_generator_ikl,
    train_ar_generators_ikl,
)

F64 = torch.float64
MEAN = torch.tensor([1.0, -0.5], dtype=F64)
COV = torch.tensor([[1.0, 0.6], [0.6, 0.8]], dtype=F64)


def test_kl_or_inf_matches_torch_and_is_inf_when_singular() -> None:
    cov_p = torch.tensor([[2.0, 0.3], [0.3, 0.5]], dtype=F64)
    mean_p = torch.tensor([0.2, 0.1], dtype=F64)
    ref = kl_divergence(MultivariateNormal(mean_p, cov_p), MultivariateNormal(MEAN, COV))
    assert gaussian_kl_or_inf(mean_p, cov_p, MEAN, COV) == pytest.approx(float(ref), rel=1e-12)
    line = torch.tensor([[1.0, 2.0], [2.0, 4.0]], dtype=F64)
    assert gaussian_kl_or_inf(mean_p, line, MEAN, COV) == math.inf


def test_ar_joint_is_the_affine_maps_covariance() -> None:
    p = {
        k: torch.tensor(v, dtype=F64)
        for k, v in dict(b1=0.3, a1=1.7, c=-0.4, b2=2.0, a2=0.6).items()
    }
    # (x1, x2) = m + L z with L = [[a1, 0], [c a1, a2]]
    lin = torch.tensor([[1.7, 0.0], [-0.4 * 1.7, 0.6]], dtype=F64)
    mean, cov = ar_joint_gaussian(p)
    assert torch.allclose(mean, torch.tensor([0.3, -0.4 * 0.3 + 2.0], dtype=F64), atol=1e-14)
    assert torch.allclose(cov, lin @ lin.T, atol=1e-14)


def test_surrogate_gradient_estimates_the_closed_form_ikl_gradient() -> None:
    g = torch.Generator().manual_seed(0)
    a0 = torch.tensor([[0.8, 0.1], [0.4, 0.2]], dtype=F64)
    b0 = torch.tensor([-0.3, 0.5], dtype=F64)
    a, b = a0.clone().requires_grad_(True), b0.clone().requires_grad_(True)
    integral_kl(b, a @ a.T, MEAN, COV, t_min=1e-3).backward()
    exact = torch.cat([a.grad.reshape(-1), b.grad])
    grads = []
    for _ in range(4):
        a, b = a0.clone().requires_grad_(True), b0.clone().requires_grad_(True)
        affine_ikl_surrogate(a, b, MEAN, COV, 4096, g, t_min=1e-3).backward()
        grads.append(torch.cat([a.grad.reshape(-1), b.grad]))
    mc = torch.stack(grads).mean(0)
    assert float((mc - exact).norm() / exact.norm()) < 0.15


def test_affine_training_from_a_line_reaches_the_target() -> None:
    a0 = torch.tensor([[1.0, 0.5], [0.4, 0.2]], dtype=F64)  # rank 1
    b0 = torch.tensor([-1.0, 1.0], dtype=F64)
    a0_copy = a0.clone()
    fit = train_affine_generator_ikl(
        a0, b0, MEAN, COV, n_steps=100, batch=32, lr=0.08,
        generator=torch.Generator().manual_seed(1), n_checkpoints=8,
    )  # fmt: skip
    assert torch.equal(a0, a0_copy)  # the start is copied, not trained in place
    again = [
        train_affine_generator_ikl(
            a0, b0, MEAN, COV, n_steps=10, batch=8, lr=0.05,
            generator=torch.Generator().manual_seed(1),
        )
        for _ in range(2)
    ]  # fmt: skip
    assert torch.equal(again[0].a, again[1].a) and again[0].ikl == again[1].ikl  # same seed
    assert fit.checkpoints == [0, 12, 24, 36, 48, 60, 72, 84, 96, 100]
    assert fit.kl[0] == math.inf and fit.ikl[0] == pytest.approx(
        float(integral_kl(b0, a0 @ a0.T, MEAN, COV, t_min=1e-3)), rel=1e-12
    )
    cov = fit.a @ fit.a.T
    assert fit.kl[-1] == pytest.approx(gaussian_kl_or_inf(fit.b, cov, MEAN, COV), rel=1e-12)
    assert fit.kl[-1] < 0.05 and fit.ikl[-1] < 0.01 * fit.ikl[0]


def test_ar_generators_reach_the_target_conditionals() -> None:
    fit = train_ar_generators_ikl(
        dict(b1=1.0, a1=0.0, c=-0.5, b2=0.0, a2=0.0), slope=0.8, shift=0.3, scale=0.5,
        n_steps=150, batch=64, lr=0.08, generator=torch.Generator().manual_seed(2),
    )  # fmt: skip
    p = fit.params
    assert p["b1"] == pytest.approx(0.0, abs=0.1) and abs(p["a1"]) == pytest.approx(1.0, abs=0.1)
    assert p["c"] == pytest.approx(0.8, abs=0.1) and p["b2"] == pytest.approx(0.3, abs=0.1)
    assert abs(p["a2"]) == pytest.approx(0.5, abs=0.1)
    target = ar_joint_gaussian(
        {k: torch.tensor(v, dtype=F64) for k, v in dict(b1=0, a1=1, c=0.8, b2=0.3, a2=0.5).items()}
    )
    assert gaussian_kl_or_inf(fit.mean, fit.cov, *target) < 0.05


def test_bad_arguments_are_named() -> None:
    g = torch.Generator().manual_seed(0)
    eye = torch.eye(2, dtype=F64)
    ar = dict(slope=0.8, shift=0.3, n_steps=1, batch=4, lr=0.1, generator=g)
    start = dict(b1=0.0, a1=0.0, c=0.0, b2=0.0, a2=0.0)
    with pytest.raises(ValueError, match="n_steps"):
        train_affine_generator_ikl(eye, MEAN, MEAN, COV, n_steps=0, batch=4, lr=0.1, generator=g)
    with pytest.raises(ValueError, match="lr"):
        train_affine_generator_ikl(eye, MEAN, MEAN, COV, n_steps=1, batch=4, lr=-0.1, generator=g)
    with pytest.raises(ValueError, match=r"`init`.*missing a2"):
        train_ar_generators_ikl({k: v for k, v in start.items() if k != "a2"}, scale=0.5, **ar)
    with pytest.raises(ValueError, match="scale"):
        train_ar_generators_ikl(start, scale=0.0, **ar)

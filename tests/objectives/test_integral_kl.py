"""integral_kl_loss: its gradient against autograd of the closed-form Gaussian IKL
(divergent.distributions.diffusion.integral_kl) for an affine generator with exact scores,
within Monte-Carlo error; exact per-sample gradients at fixed (t, ε); bad input."""

from __future__ import annotations

import math

import pytest
import torch

from divergent.distributions.diffusion import (
    VEPath,
    VPPath,
    diffused_gaussian_score,
    integral_kl,
)
from divergent.objectives.integral_kl import integral_kl_loss
from divergent.objectives.score_distillation import score_distillation_loss

F64 = torch.float64
MU_P = torch.tensor([1.0, -0.5], dtype=F64)
COV_P = torch.tensor([[1.0, 0.6], [0.6, 0.8]], dtype=F64)


def _mc_gradient(a0, b0, path, weight, t_min, n_batches, batch, seed):
    """Mean and standard error over independent batches of the surrogate's gradient."""
    grads = []
    g = torch.Generator().manual_seed(seed)
    for _ in range(n_batches):
        a = a0.clone().requires_grad_(True)
        b = b0.clone().requires_grad_(True)
        z = torch.randn(batch, a0.shape[1], generator=g, dtype=F64)
        x0 = z @ a.T + b
        mean_q, cov_q = b.detach(), (a @ a.T).detach()
        loss = integral_kl_loss(
            x0,
            lambda x, t, m=mean_q, c=cov_q: diffused_gaussian_score(x, t, m, c, path),
            lambda x, t: diffused_gaussian_score(x, t, MU_P, COV_P, path),
            path=path,
            weight=weight,
            t_min=t_min,
            generator=g,
        )
        loss.backward()
        grads.append(torch.cat([a.grad.reshape(-1), b.grad]))
    stack = torch.stack(grads)
    return stack.mean(0), stack.std(0) / math.sqrt(n_batches)


def _exact_gradient(a0, b0, path, weight, t_min):
    a = a0.clone().requires_grad_(True)
    b = b0.clone().requires_grad_(True)
    integral_kl(
        b, a @ a.T, MU_P, COV_P, path=path, weight=weight, t_min=t_min, n_nodes=64
    ).backward()
    return torch.cat([a.grad.reshape(-1), b.grad])


@pytest.mark.parametrize(
    "a0,path,weight,t_min",
    [
        # full rank, the whole time range
        (torch.tensor([[0.6, 0.1], [-0.2, 0.4]], dtype=F64), VPPath(), None, 0.0),
        # rank 1 (a line, KL(q_0‖p_0) = ∞): finite variance needs t_min > 0 or w = σ²
        (torch.tensor([[1.0, 0.5], [2.0, 1.0]], dtype=F64), VPPath(), None, 0.01),
        (torch.tensor([[1.0, 0.5], [2.0, 1.0]], dtype=F64), VPPath(), "sigma2", 0.0),
        (torch.tensor([[0.5, 0.0], [0.3, 0.7]], dtype=F64), VEPath(0.02, 5.0), "sigma2", 0.0),
    ],
)
def test_surrogate_gradient_equals_closed_form_ikl_gradient(a0, path, weight, t_min) -> None:
    b0 = torch.tensor([-0.3, 0.2], dtype=F64)
    exact = _exact_gradient(a0, b0, path, weight, t_min)
    mean, se = _mc_gradient(a0, b0, path, weight, t_min, n_batches=8, batch=8192, seed=11)
    assert torch.all((mean - exact).abs() <= 4.5 * se + 1e-3 * exact.abs().max()), (mean, exact, se)
    # and the estimate is informative (not all noise)
    assert float(torch.nn.functional.cosine_similarity(mean, exact, dim=0)) > 0.97


def test_gradient_in_x0_is_the_weighted_score_difference_times_alpha() -> None:
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(5, 2, generator=g, dtype=F64, requires_grad=True)
    t = torch.tensor([0.05, 0.2, 0.4, 0.7, 0.9], dtype=F64)
    eps = torch.randn(5, 2, generator=g, dtype=F64)
    path = VPPath()
    s_q = lambda x, tt: -x  # noqa: E731
    s_p = lambda x, tt: -(x - 1.0) / 2.0  # noqa: E731
    w = lambda tt: 1.0 + tt  # noqa: E731
    loss = integral_kl_loss(
        x0, s_q, s_p, weight=w, t=t, noise=eps, t_min=0.0, t_max=1.0, reduction="sum"
    )
    loss.backward()
    a = path.alpha(t)[:, None]
    xt = a * x0.detach() + path.sigma(t)[:, None] * eps
    expected = (1.0 + t)[:, None] * (s_q(xt, t) - s_p(xt, t)) * a
    assert torch.allclose(x0.grad, expected, rtol=1e-12)
    # the value is score_distillation_loss at x_t with weight (t_max − t_min) w(t)
    ref = score_distillation_loss(xt, s_q(xt, t), s_p(xt, t), (1.0 + t), reduction="sum")
    assert float(loss.detach()) == pytest.approx(float(ref), rel=1e-12)


def test_time_range_scales_the_weight() -> None:
    x0 = torch.zeros(3, 1, dtype=F64, requires_grad=True)
    t = torch.full((3,), 0.3, dtype=F64)
    loss = integral_kl_loss(
        x0,
        lambda x, tt: torch.ones_like(x),
        lambda x, tt: torch.zeros_like(x),
        t=t,
        noise=torch.zeros(3, 1, dtype=F64),
        t_min=0.2,
        t_max=0.6,
        reduction="none",
    )
    loss.sum().backward()
    assert loss.shape == (3,)
    assert torch.allclose(x0.grad, 0.4 * VPPath().alpha(t)[:, None])


def test_nan_samples_give_nan_not_a_number() -> None:
    x0 = torch.tensor([[0.0], [math.nan]], dtype=F64)
    loss = integral_kl_loss(x0, lambda x, t: -x, lambda x, t: -x / 2, reduction="none", t_min=0.1)
    assert math.isfinite(float(loss[0])) and math.isnan(float(loss[1]))


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(t=torch.tensor([0.5, 0.5], dtype=F64)), r"`t` must have shape \(3,\)"),
        (dict(t=torch.tensor([0.5, 0.5, 0.05], dtype=F64), t_min=0.1), r"`t` must hold times"),
        (dict(t=torch.tensor([0.5, math.nan, 0.5], dtype=F64)), r"`t` must hold times"),
        (dict(noise=torch.zeros(3, 3, dtype=F64)), "noise"),
        (dict(t_min=0.5, t_max=0.5), "t_min"),
        (dict(reduction="avg"), "reduction"),
        (dict(path="sde"), "path"),
        (dict(weight=lambda t: -t), "weight"),
        (dict(score_generator=lambda x, t: x[:, :1]), "score_generator"),
        (dict(score_target=lambda x, t: 1.0), "score_target"),
        (dict(x0=torch.zeros(3, 2, dtype=torch.int64)), "x0"),
        (dict(x0=torch.tensor(1.0)), "x0"),
        (dict(score_generator=3), "`score_generator` must be a callable"),
        (dict(score_target="teacher"), "`score_target` must be a callable"),
        (dict(generator=3), "`generator` must be a torch.Generator"),
        (
            dict(score_generator=lambda x, t: torch.zeros(x.shape, dtype=torch.int64)),
            "`score_generator` must return a floating-point",
        ),
        (
            dict(score_target=lambda x, t: torch.zeros(x.shape, dtype=torch.int64)),
            "`score_target` must return a floating-point",
        ),
    ],
)
def test_bad_input_is_refused(kwargs: dict, match: str) -> None:
    args = dict(
        x0=torch.zeros(3, 2, dtype=F64),
        score_generator=lambda x, t: -x,
        score_target=lambda x, t: -x,
    )
    for k in list(args):
        if k in kwargs:
            args[k] = kwargs.pop(k)
    with pytest.raises(ValueError, match=match):
        integral_kl_loss(args["x0"], args["score_generator"], args["score_target"], **kwargs)


@pytest.mark.parametrize("x0_dtype", [torch.bfloat16, torch.float16, torch.float32, torch.float64])
def test_score_models_get_t_in_fp32_or_fp64(x0_dtype) -> None:
    """t reaches the models unrounded (bf16 would turn 0.997 into 0.996)."""
    seen = []

    def score(x, t):
        seen.append(t)
        return -x

    t = torch.tensor([0.997, 0.5], dtype=F64)
    integral_kl_loss(torch.zeros(2, 3, dtype=x0_dtype), score, score, t=t)
    want = F64 if x0_dtype == F64 else torch.float32
    assert all(s.dtype == want for s in seen) and len(seen) == 2
    assert torch.equal(seen[0], t.to(want))


@pytest.mark.parametrize("shape", [(0, 2), (0,), (0, 2, 3)])
def test_empty_batch_gives_zero_with_zero_gradient(shape) -> None:
    def never(x, t):
        raise AssertionError("the score models are not called on an empty batch")

    for dtype, want in ((torch.bfloat16, torch.float32), (F64, F64)):
        x0 = torch.zeros(shape, dtype=dtype, requires_grad=True)
        for reduction in ("mean", "sum"):
            loss = integral_kl_loss(x0, never, never, reduction=reduction)
            assert loss.shape == () and float(loss.detach()) == 0.0 and loss.dtype == want
            (grad,) = torch.autograd.grad(loss, x0)
            assert grad.shape == x0.shape
        none = integral_kl_loss(x0, never, never, reduction="none")
        assert none.shape == (0,) and none.dtype == want
    # the other arguments are still checked
    with pytest.raises(ValueError, match="noise"):
        integral_kl_loss(torch.zeros(0, 2), never, never, noise=torch.zeros(1, 2))

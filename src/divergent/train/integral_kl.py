r"""Integral-KL (Diff-Instruct) distillation of small one-step Gaussian generators, exact scores.

A test bed for :func:`divergent.objectives.integral_kl.integral_kl_loss` where every quantity
has a closed form, so the training can be judged by exact divergences instead of samples:

* :func:`train_affine_generator_ikl` trains an affine generator :math:`x_0 = A z + b`,
  :math:`z\sim\mathcal N(0, I)`, towards a Gaussian target :math:`p_0 = \mathcal N(\mu, \Sigma)`.
  The generator's distribution :math:`q_0 = \mathcal N(b, AA^\top)` may start singular (a rank-
  deficient A: :math:`\mathrm{KL}(q_0\|p_0) = \infty`); both diffused scores are exact
  (:func:`~divergent.distributions.diffusion.diffused_gaussian_score`), where Diff-Instruct
  uses a teacher network and a fake score trained by denoising score matching. The
  closed-form IKL (:func:`~divergent.distributions.diffusion.integral_kl`) and KL are
  recorded at checkpoints.
* :func:`train_ar_generators_ikl` distils ARDiT-style per-step one-step generators of a
  2-token Gaussian autoregressive sequence: :math:`x_1 = b_1 + a_1 z_1`,
  :math:`x_2 = c\,x_1 + b_2 + a_2 z_2`, target :math:`x_1\sim\mathcal N(0, 1)`,
  :math:`x_2\mid x_1\sim\mathcal N(\kappa x_1 + \beta, s^2)`; step 1 with the IKL of
  :math:`x_1`'s marginal, step 2 with the IKL of :math:`x_2`'s conditional given the
  generator's own (detached) :math:`x_1`.

Both loops use ``torch.optim.Adam`` (β = (0.9, 0.999), ε = 1e-8) with a cosine learning-rate
decay (``CosineAnnealingLR``) from ``lr`` to 0 over ``n_steps``, all in float64, and draw every
random number from the one ``generator`` passed in (so a run is reproducible from its seed).

References:
    Luo, Hu, Zhang, Sun, Li & Zhang 2023, "Diff-Instruct: A Universal Approach for
    Transferring Knowledge From Pre-trained Diffusion Models", arXiv 2305.18455 (the IKL and
    its generator gradient);
    Liu, Wang, Inoue, Bai & Li 2024, "Autoregressive Diffusion Transformer for Text-to-Speech
    Synthesis", arXiv 2406.05551 (IKL distillation per autoregressive step).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import Tensor

from divergent._validation import check_int, check_positive_scalar
from divergent.distributions.diffusion import diffused_gaussian_score, integral_kl
from divergent.distributions.gaussian import gauss_kl_full
from divergent.objectives.integral_kl import integral_kl_loss

__all__ = [
    "ARIKLFit",
    "AffineIKLFit",
    "affine_ikl_surrogate",
    "ar_joint_gaussian",
    "gaussian_kl_or_inf",
    "train_affine_generator_ikl",
    "train_ar_generators_ikl",
]

F64 = torch.float64
AR_PARAMS = ("b1", "a1", "c", "b2", "a2")


class _CosineAdam:
    """``torch.optim.Adam`` with ``CosineAnnealingLR`` over ``n_steps``; ``step`` also clears
    the gradients."""

    def __init__(self, params: list[Tensor], lr: float, n_steps: int) -> None:
        self.optimizer = torch.optim.Adam(params, lr=lr)
        self.schedule = torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, n_steps)

    def step(self) -> None:
        self.optimizer.step()
        self.schedule.step()
        self.optimizer.zero_grad(set_to_none=True)


def gaussian_kl_or_inf(mean_p: Tensor, cov_p: Tensor, mean_q: Tensor, cov_q: Tensor) -> float:
    r""":math:`\mathrm{KL}(\mathcal N(\mu_P,\Sigma_P)\|\mathcal N(\mu_Q,\Sigma_Q))`, and
    :math:`+\infty` when :math:`\Sigma_P` is rank-deficient (P has no density w.r.t. Lebesgue
    measure, so it is not absolutely continuous w.r.t. a full-rank Q).

    Args:
        mean_p, cov_p: P, shapes (d,) and (d, d).
        mean_q, cov_q: Q, full rank.

    Returns:
        The KL as a Python float (``math.inf`` for a singular P).

    Example:
        >>> line = torch.tensor([[1.0, 1.0], [1.0, 1.0]], dtype=torch.float64)
        >>> gaussian_kl_or_inf(torch.zeros(2), line, torch.zeros(2), torch.eye(2))
        inf

    References:
        Cover & Thomas 2006, Elements of Information Theory, 2nd ed. (KL between Gaussians).
    """
    if int(torch.linalg.matrix_rank(cov_p)) < cov_p.shape[-1]:
        return math.inf
    return float(gauss_kl_full(mean_p, cov_p, mean_q, cov_q))


def affine_ikl_surrogate(
    a: Tensor,
    b: Tensor,
    mean_target: Tensor,
    cov_target: Tensor,
    batch: int,
    generator: torch.Generator,
    *,
    t_min: float = 1e-3,
) -> Tensor:
    r"""The Integral-KL surrogate (:func:`~divergent.objectives.integral_kl.integral_kl_loss`,
    VP path, :math:`w\equiv 1`, :math:`t\sim\mathcal U[t_{\min}, 1]`) for the affine generator
    :math:`x_0 = A z + b`; its gradient in (A, b) estimates that of
    :math:`\int_{t_{\min}}^1 \mathrm{KL}(q_t\|p_t)\,dt`, with the exact diffused scores of
    :math:`q_0 = \mathcal N(b, AA^\top)` (detached: the fake score) and of the target.

    Args:
        a, b: the generator's (d, d) matrix and (d,) shift, float64, usually requiring grad.
        mean_target, cov_target: the target Gaussian :math:`p_0`.
        batch: Monte-Carlo batch size (z, t and the diffusion noise are drawn from
            ``generator``, in this order: z first).
        generator: the ``torch.Generator`` for every draw.
        t_min: the lower end of the time range.

    Returns:
        The scalar surrogate loss (its value is not the IKL; only its gradient is meaningful).

    References:
        Luo et al. 2023, Diff-Instruct, arXiv 2305.18455.
    """
    z = torch.randn(batch, a.shape[-1], generator=generator, dtype=F64)
    mean_q, cov_q = b.detach(), (a @ a.T).detach()
    return integral_kl_loss(
        z @ a.T + b,
        lambda x, t: diffused_gaussian_score(x, t, mean_q, cov_q),
        lambda x, t: diffused_gaussian_score(x, t, mean_target, cov_target),
        t_min=t_min,
        generator=generator,
    )


@dataclass
class AffineIKLFit:
    """What :func:`train_affine_generator_ikl` returns: the trained (A, b) (detached) and the
    closed-form IKL on [t_min, 1] and KL(q_0‖p_0) at each checkpoint step."""

    a: Tensor
    b: Tensor
    checkpoints: list[int] = field(default_factory=list)
    ikl: list[float] = field(default_factory=list)
    kl: list[float] = field(default_factory=list)


def train_affine_generator_ikl(
    a0: Tensor,
    b0: Tensor,
    mean_target: Tensor,
    cov_target: Tensor,
    *,
    n_steps: int,
    batch: int,
    lr: float,
    generator: torch.Generator,
    t_min: float = 1e-3,
    n_checkpoints: int = 20,
) -> AffineIKLFit:
    r"""Train :math:`x_0 = A z + b` towards :math:`\mathcal N(\mu, \Sigma)` by Integral-KL
    distillation with exact scores.

    Each step minimises :func:`affine_ikl_surrogate` (a Monte-Carlo estimate of the gradient of
    :math:`D_{\mathrm{IKL}}(q_0\|p_0) = \int_{t_{\min}}^1 \mathrm{KL}(q_t\|p_t)\,dt`, VP path)
    with Adam and a cosine learning-rate decay. A rank-deficient ``a0`` is allowed (the point:
    the IKL stays finite where KL(q_0‖p_0) = ∞). Exact gradient descent from a rank-1 A never
    leaves rank 1 (the gradient of a function of AAᵀ is G·A); the escape comes from the
    Monte-Carlo gradient's noise and Adam's per-coordinate scaling.

    Args:
        a0, b0: the starting (d, d) matrix and (d,) shift, float64 (copied, not modified).
        mean_target, cov_target: the target Gaussian, float64, full rank.
        n_steps: optimiser steps (≥ 1).
        batch: Monte-Carlo batch per step (≥ 1).
        lr: Adam's initial learning rate (> 0).
        generator: ``torch.Generator`` for every draw.
        t_min: the lower end of the time range (> 0 keeps the surrogate's variance bounded).
        n_checkpoints: the IKL and KL are recorded every ``max(1, n_steps // n_checkpoints)``
            steps and at the last step.

    Returns:
        An :class:`AffineIKLFit`.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> f64 = torch.float64
        >>> fit = train_affine_generator_ikl(
        ...     torch.tensor([[1.0, 0.0], [0.0, 0.0]], dtype=f64), torch.zeros(2, dtype=f64),
        ...     torch.ones(2, dtype=f64), torch.eye(2, dtype=f64),
        ...     n_steps=100, batch=32, lr=0.08, generator=g)
        >>> fit.kl[0], fit.kl[-1] < 0.05, fit.ikl[-1] < fit.ikl[0]
        (inf, True, True)

    References:
        Luo et al. 2023, Diff-Instruct, arXiv 2305.18455;
        Liu et al. 2024, ARDiT, arXiv 2406.05551.
    """
    n_steps = check_int(n_steps, "n_steps", minimum=1)
    batch = check_int(batch, "batch", minimum=1)
    lr = check_positive_scalar(lr, "lr")
    n_checkpoints = check_int(n_checkpoints, "n_checkpoints", minimum=1)
    a, b = a0.clone().requires_grad_(True), b0.clone().requires_grad_(True)
    opt = _CosineAdam([a, b], lr, n_steps)
    every = max(1, n_steps // n_checkpoints)
    fit = AffineIKLFit(a=a0, b=b0)
    for step in range(n_steps + 1):
        if step % every == 0 or step == n_steps:
            with torch.no_grad():
                cov = a @ a.T
                fit.checkpoints.append(step)
                fit.ikl.append(float(integral_kl(b, cov, mean_target, cov_target, t_min=t_min)))
                fit.kl.append(gaussian_kl_or_inf(b, cov, mean_target, cov_target))
        if step == n_steps:
            break
        loss = affine_ikl_surrogate(a, b, mean_target, cov_target, batch, generator, t_min=t_min)
        loss.backward()
        opt.step()
    fit.a, fit.b = a.detach(), b.detach()
    return fit


def ar_joint_gaussian(params: Mapping[str, Tensor]) -> tuple[Tensor, Tensor]:
    r"""Mean and covariance of :math:`(x_1, x_2)` under :math:`x_1 = b_1 + a_1 z_1`,
    :math:`x_2 = c\,x_1 + b_2 + a_2 z_2` (independent standard normal z).

    .. math:: \mu = (b_1,\ c b_1 + b_2),\qquad
              \Sigma = \begin{pmatrix} a_1^2 & c a_1^2\\ c a_1^2 & c^2 a_1^2 + a_2^2\end{pmatrix}

    Args:
        params: scalar tensors under the keys ``"b1", "a1", "c", "b2", "a2"``.

    Returns:
        ``(mean, cov)``, shapes (2,) and (2, 2).

    Example:
        >>> one, zero = torch.tensor(1.0), torch.tensor(0.0)
        >>> ar_joint_gaussian(dict(b1=zero, a1=one, c=one, b2=zero, a2=one))[1]
        tensor([[1., 1.],
                [1., 2.]])
    """
    b1, a1, c, b2, a2 = (params[k] for k in AR_PARAMS)
    v1 = a1 * a1
    mean = torch.stack([b1, c * b1 + b2])
    cov = torch.stack([torch.stack([v1, c * v1]), torch.stack([c * v1, c * c * v1 + a2 * a2])])
    return mean, cov


@dataclass
class ARIKLFit:
    """What :func:`train_ar_generators_ikl` returns: the trained parameters (floats) and the
    joint mean / covariance of the generated 2-token sequence (detached)."""

    params: dict[str, float]
    mean: Tensor
    cov: Tensor


def train_ar_generators_ikl(
    init: Mapping[str, float | Tensor],
    *,
    slope: float,
    shift: float,
    scale: float,
    n_steps: int,
    batch: int,
    lr: float,
    generator: torch.Generator,
    t_min: float = 1e-3,
) -> ARIKLFit:
    r"""Distil per-step one-step generators of a 2-token Gaussian AR sequence by the IKL of
    each step (ARDiT's use of Diff-Instruct), exact teacher and generator scores.

    Target: :math:`x_1\sim\mathcal N(0, 1)`, :math:`x_2\mid x_1\sim\mathcal N(\text{slope}\,
    x_1 + \text{shift}, \text{scale}^2)`. Generator: :math:`x_1 = b_1 + a_1 z_1`,
    :math:`x_2 = c\,x_1 + b_2 + a_2 z_2`. Each step the loss is
    :math:`\ell_1 + \ell_2`, where :math:`\ell_1` is the IKL surrogate of :math:`x_1`'s
    marginal and :math:`\ell_2` that of :math:`x_2`'s conditional, given the generator's own
    first token (detached: each step is distilled on its own, as at inference). ``a1 = a2 = 0``
    (point masses: joint KL ∞) is a valid start.

    Args:
        init: starting values under ``"b1", "a1", "c", "b2", "a2"`` (floats or scalar tensors).
        slope, shift, scale: the target's conditional of x₂ given x₁ (scale > 0).
        n_steps, batch, lr, generator, t_min: as in :func:`train_affine_generator_ikl`.

    Returns:
        An :class:`ARIKLFit`.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> fit = train_ar_generators_ikl(
        ...     dict(b1=0.5, a1=0.0, c=0.0, b2=0.0, a2=0.0), slope=0.8, shift=0.3, scale=0.5,
        ...     n_steps=150, batch=64, lr=0.08, generator=g)
        >>> round(fit.params["c"], 1), round(abs(fit.params["a2"]), 1)
        (0.8, 0.5)

    References:
        Liu et al. 2024, ARDiT, arXiv 2406.05551; Luo et al. 2023, Diff-Instruct,
        arXiv 2305.18455.
    """
    n_steps = check_int(n_steps, "n_steps", minimum=1)
    batch = check_int(batch, "batch", minimum=1)
    lr = check_positive_scalar(lr, "lr")
    scale = check_positive_scalar(scale, "scale")
    missing = [k for k in AR_PARAMS if k not in init]
    if missing:
        raise ValueError(f"`init` must give {', '.join(AR_PARAMS)}; missing {', '.join(missing)}")
    params = {
        k: torch.as_tensor(init[k], dtype=F64).clone().requires_grad_(True) for k in AR_PARAMS
    }
    opt = _CosineAdam(list(params.values()), lr, n_steps)
    one = torch.ones(1, 1, dtype=F64)
    zero = torch.zeros(1, dtype=F64)
    p = params
    for _ in range(n_steps):
        z = torch.randn(batch, 2, generator=generator, dtype=F64)
        x1 = p["b1"] + p["a1"] * z[:, :1]
        m1, v1 = p["b1"].detach().reshape(1), (p["a1"].detach() ** 2) * one
        loss1 = integral_kl_loss(
            x1,
            lambda x, t, m=m1, v=v1: diffused_gaussian_score(x, t, m, v),
            lambda x, t: diffused_gaussian_score(x, t, zero, one),
            t_min=t_min,
            generator=generator,
        )
        x1c = x1.detach()  # step 2 conditions on the generator's own first token
        x2 = p["c"] * x1c + p["b2"] + p["a2"] * z[:, 1:]
        gen_mean = p["c"].detach() * x1c + p["b2"].detach()
        teacher_mean = slope * x1c + shift
        v2 = (p["a2"].detach() ** 2) * one
        loss2 = integral_kl_loss(
            x2,
            lambda x, t, m=gen_mean, v=v2: diffused_gaussian_score(x, t, m, v),
            lambda x, t, m=teacher_mean: diffused_gaussian_score(x, t, m, scale**2 * one),
            t_min=t_min,
            generator=generator,
        )
        (loss1 + loss2).backward()
        opt.step()
    mean, cov = ar_joint_gaussian({k: v.detach() for k, v in params.items()})
    return ARIKLFit(params={k: float(v.detach()) for k, v in params.items()}, mean=mean, cov=cov)

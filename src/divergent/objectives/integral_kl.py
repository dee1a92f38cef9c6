r"""Integral-KL (Diff-Instruct / ARDiT) distillation of a one-step generator.

A one-step generator :math:`x_0 = g_\theta(z)` has the distribution :math:`q_0`; a diffusion
teacher supplies the scores of :math:`p_t`, the data distribution diffused by
:math:`x_t = \alpha_t x_0 + \sigma_t\varepsilon`. Diff-Instruct (Luo et al. 2023) trains
:math:`g_\theta` on the Integral KL
:math:`D_{\mathrm{IKL}} = \int w(t)\,\mathrm{KL}(q_t\|p_t)\,dt`
(:func:`divergent.distributions.diffusion.integral_kl` for Gaussians), finite even where
:math:`q_0` and :math:`p_0` have different supports, and ARDiT (Liu et al. 2024) applies it
at every autoregressive step to turn the per-step iterative sampler into one step. Its
gradient (the :math:`\mathbb E_q[\partial_\theta \log q]` term vanishes) is

.. math:: \nabla_\theta D_{\mathrm{IKL}} = \int w(t)\,\mathbb E_{z,\varepsilon}\Big[
          \big(\nabla_x\log q_t(x_t) - \nabla_x\log p_t(x_t)\big)^{\!\top}
          \alpha_t\,\frac{\partial g_\theta(z)}{\partial\theta}\Big]\,dt ,

the reverse-KL (h ≡ 1) case of f-distill's gradient integrated over t. :func:`integral_kl_loss`
samples :math:`t\sim\mathcal U[t_{\min}, t_{\max}]` and ε, and returns the surrogate of
:func:`divergent.objectives.score_distillation.score_distillation_loss` at :math:`x_t` with
per-sample weight :math:`(t_{\max}-t_{\min})\,w(t)`, whose gradient is the unbiased
Monte-Carlo estimate of the formula above (:math:`\partial x_t/\partial\theta =
\alpha_t\,\partial x_0/\partial\theta`). In practice :math:`\nabla\log q_t` is an auxiliary
"fake" diffusion model trained by denoising score matching on generator samples; with
Gaussians both scores are exact
(:func:`~divergent.distributions.diffusion.diffused_gaussian_score`).

Variance: near t = 0 a *singular* generator's score grows like 1/σ_t in the directions off
its support, so with w ≡ 1 and t_min = 0 the estimator's variance is (logarithmically)
infinite at exactly singular generators; use ``t_min > 0`` (diffusion codes use 1e-3 to
1e-5) or ``weight="sigma2"``.

References:
    Luo, Hu, Zhang, Sun, Li & Zhang 2023, "Diff-Instruct", NeurIPS, arXiv 2305.18455;
    Liu, Wang, Inoue, Bai & Li 2024, "Autoregressive Diffusion Transformer for Text-to-Speech
    Synthesis", arXiv 2406.05551.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from divergent._validation import (
    check_float_tensor,
    check_reduction,
    compute_dtype,
)
from divergent.distributions.diffusion import (
    PathLike,
    Weight,
    diffusion_path,
    diffusion_weight,
    gauss_legendre_times,
)
from divergent.objectives.score_distillation import score_distillation_loss

__all__ = ["ScoreFn", "integral_kl_loss"]

ScoreFn = Callable[[Tensor, Tensor], Tensor]
"""A score model ``(x_t, t) -> ∇_x log density_t(x_t)``: x_t of shape (B, ...), t of shape
(B,), the score of x_t's shape."""


def integral_kl_loss(
    x0: Tensor,
    score_generator: ScoreFn,
    score_target: ScoreFn,
    *,
    path: PathLike = "vp",
    weight: Weight = None,
    t_min: float = 0.0,
    t_max: float = 1.0,
    t: Tensor | None = None,
    noise: Tensor | None = None,
    generator: torch.Generator | None = None,
    reduction: str = "mean",
) -> Tensor:
    r"""The Integral-KL generator surrogate: its gradient estimates
    :math:`\nabla_\theta\int_{t_{\min}}^{t_{\max}} w(t)\,\mathrm{KL}(q_t\|p_t)\,dt`.

    .. math:: \ell_i = \tfrac12\big\|x_{t_i} - \mathrm{sg}(x_{t_i} - g_i)\big\|^2,\quad
              g_i = (t_{\max}-t_{\min})\,w(t_i)\,\big(s_q(x_{t_i}, t_i) - s_p(x_{t_i}, t_i)\big),

    :math:`x_{t_i} = \alpha_{t_i} x_{0,i} + \sigma_{t_i}\varepsilon_i`,
    :math:`t_i \sim \mathcal U[t_{\min}, t_{\max}]`, so
    :math:`\nabla_\theta \tfrac1B\sum_i\ell_i = \tfrac1B\sum_i g_i^\top\alpha_{t_i}
    \partial x_{0,i}/\partial\theta` (the value is not the IKL; only its gradient is).

    Args:
        x0: generator samples :math:`g_\theta(z)`, batch axis first, differentiable in θ.
        score_generator: :math:`s_q(x_t, t) = \nabla_x\log q_t(x_t)` (the fake / generator
            score); called on detached inputs under ``torch.no_grad()``, with x_t in x0's
            dtype and t in float32 (float64 when x0 is float64), never in half precision.
        score_target: :math:`s_p(x_t, t)` (the teacher's score), same convention.
        path: ``"vp"``, ``"ve"`` or a :class:`~divergent.distributions.diffusion.DiffusionPath`.
        weight: w(t): None / ``"uniform"``, ``"sigma2"`` or a callable ``t -> w(t)``.
        t_min, t_max: the time range, 0 ≤ t_min < t_max ≤ 1.
        t: optional times, shape (B,), taken as draws from U[t_min, t_max] (sampled otherwise).
        noise: optional ε, shape of ``x0`` (sampled otherwise).
        generator: a ``torch.Generator`` for the sampled t and ε.
        reduction: ``"mean"`` (default), ``"sum"`` or ``"none"`` over the batch.

    Returns:
        The surrogate loss (``reduction="none"``: one value per sample). An empty batch gives
        0 with a zero gradient for ``"mean"`` and ``"sum"`` (an empty tensor for ``"none"``),
        without calling the score models.

    Raises:
        ValueError: a non-float or 0-d ``x0``; ``t`` outside [t_min, t_max] or of the wrong
            shape; ``noise`` of the wrong shape; bad range, path, weight or reduction; score
            models that are not callable or return a non-float tensor or one of the wrong
            shape; a ``generator`` that is not a ``torch.Generator`` (named by the argument).

    Example:
        >>> from divergent.distributions.diffusion import diffused_gaussian_score
        >>> b = torch.tensor([1.0, 0.0], requires_grad=True)      # x0 = b + 0.5 z
        >>> x0 = b + 0.5 * torch.randn(4096, 2, generator=torch.Generator().manual_seed(0))
        >>> cov_q, eye = 0.25 * torch.eye(2), torch.eye(2)
        >>> loss = integral_kl_loss(
        ...     x0,
        ...     lambda x, t: diffused_gaussian_score(x, t, b.detach(), cov_q),
        ...     lambda x, t: diffused_gaussian_score(x, t, torch.zeros(2), eye),
        ...     t_min=0.01, generator=torch.Generator().manual_seed(1))
        >>> loss.backward()
        >>> [round(v, 1) for v in b.grad.tolist()]  # ∂IKL/∂b (closed form: 0.27, 0)
        [0.3, 0.0]

    References:
        Luo et al. 2023, Diff-Instruct, arXiv 2305.18455; Liu et al. 2024, ARDiT, arXiv
        2406.05551; Xu, Nie & Vahdat 2025, f-distill, arXiv 2502.15681 (h ≡ 1).
    """
    x0 = check_float_tensor(x0, "x0", min_dim=1)
    reduction = check_reduction(reduction)
    path = diffusion_path(path)
    gauss_legendre_times(t_min, t_max, 2)  # validates the range
    for name, fn in (("score_generator", score_generator), ("score_target", score_target)):
        if not callable(fn):
            raise ValueError(
                f"`{name}` must be a callable (x_t, t) -> score, got {type(fn).__name__}"
            )
    if generator is not None and not isinstance(generator, torch.Generator):
        raise ValueError(
            f"`generator` must be a torch.Generator or None, got {type(generator).__name__}"
        )
    batch = x0.shape[0]
    if t is None:
        u = torch.rand(batch, generator=generator, dtype=torch.float64)
        t = (t_min + (t_max - t_min) * u).to(x0.device)
    else:
        t = check_float_tensor(t, "t", dims=1)
        if t.shape[0] != batch:
            raise ValueError(
                f"`t` must have shape ({batch},) (one time per sample), got {tuple(t.shape)}"
            )
        if bool(torch.isnan(t).any()) or bool(((t < t_min) | (t > t_max)).any()):
            raise ValueError(f"`t` must hold times in [t_min, t_max] = [{t_min}, {t_max}]")
        t = t.detach().to(torch.float64)
    if noise is None:
        noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype).to(x0.device)
    else:
        noise = check_float_tensor(noise, "noise")
        if noise.shape != x0.shape:
            raise ValueError(
                f"`noise` must have the shape of `x0` {tuple(x0.shape)}, got {tuple(noise.shape)}"
            )
    if batch == 0:  # nothing to score: 0 with a zero gradient (mean / sum), or no values
        rows = x0.reshape(0, math.prod(x0.shape[1:])).sum(-1).to(compute_dtype(x0)) * 0.0
        return rows if reduction == "none" else rows.sum()
    extra = (1,) * (x0.dim() - 1)
    alpha = path.alpha(t).to(x0.dtype).reshape(batch, *extra)
    sigma = path.sigma(t).to(x0.dtype).reshape(batch, *extra)
    x_t = alpha * x0 + sigma * noise.detach()
    # the models get t at least in fp32 (a bf16 t would round 0.997 to 0.996 while α_t and σ_t
    # above use the float64 t); float64 when x0 is float64
    t_model = t.to(compute_dtype(x0))
    with torch.no_grad():
        s_q = score_generator(x_t.detach(), t_model)
        s_p = score_target(x_t.detach(), t_model)
    for name, s in (("score_generator", s_q), ("score_target", s_p)):
        if not isinstance(s, Tensor) or s.shape != x_t.shape:
            got = tuple(s.shape) if isinstance(s, Tensor) else type(s).__name__
            raise ValueError(
                f"`{name}` must return a tensor of the shape of `x0` {tuple(x0.shape)}, got {got}"
            )
        if not torch.is_floating_point(s):
            raise ValueError(
                f"`{name}` must return a floating-point tensor (float16, bfloat16, float32 or "
                f"float64), got dtype {s.dtype}"
            )
    w = (t_max - t_min) * diffusion_weight(weight, t, path)
    return score_distillation_loss(x_t, s_q, s_p, w.to(x0.dtype), reduction=reduction)

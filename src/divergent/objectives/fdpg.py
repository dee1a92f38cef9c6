r"""f-DPG: distributional policy gradient towards a target distribution, for any f-divergence.

Go et al. (2023) align a policy :math:`\pi_\theta` with a target distribution
:math:`p(y) = P(y)/Z` given by an unnormalised score :math:`P` (an energy-based model: a
filtered base model :math:`a(y)\,1[y \in S]`, the RLHF optimum :math:`a(y)e^{r(y)/\beta}`, a GDC
moment-matching target ...) by minimising an f-divergence between them. In this library's
P-first convention the objective is :math:`D(p\|\pi_\theta) = \sum_y \pi_\theta(y)\,
g(p(y)/\pi_\theta(y))` for the generator g of the named divergence, and

.. math::

    \nabla_\theta D(p\|\pi_\theta) = \mathbb E_{y\sim\pi_\theta}\big[\varphi(s(y))\,
    \nabla_\theta\log\pi_\theta(y)\big],\qquad \varphi(s) = g(s) - s\,g'(s),\quad
    s = \frac{p(y)}{\pi_\theta(y)} .

(:math:`\varphi` is the paper's :math:`f'(t)` at :math:`t = 1/s = \pi_\theta/p`, with the paper's
generator :math:`f(t) = t\,g(1/t)`.) The named cases, with disco's loss classes:

==================  ==========================  ==============================================
``divergence``      objective                   :math:`\varphi`
==================  ==========================  ==============================================
``"kl"``            KL(p‖π) (forward, KLLoss)   :math:`-s` (= −1/t)
``"reverse_kl"``    KL(π‖p) (ReverseKLLoss)     :math:`1 - \log s` (= log t + 1)
``"js"`` (β)        JSD_β(p‖π) (JSLoss, β=½)    :math:`-(1-\beta)\log(\beta s + 1 - \beta)`
==================  ==========================  ==============================================

(the library's ``js`` at β = ½ is the JS divergence, half of disco's / f-DPO's unnormalised
2·JSD, so its φ is half of disco's :math:`\log(2t/(1+t))`). RKL-DPG is KL-regularised RL: with
:math:`P = a\,e^{r/\beta}` its gradient is that of :math:`\mathbb E_\pi[r]/\beta - \mathrm{KL}
(\pi\|a)`.

Reference:
    D. Go, T. Korbak, G. Kruszewski, J. Rozen, N. Ryu, M. Dymetman, "Aligning Language Models
    with Preferences through f-divergence Minimization", ICML 2023, arXiv 2302.08215
    (code: naver/disco, ``disco/tuners/losses/f_divergence.py``).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from divergent._validation import check_reduction, is_traced, mass_tolerance, row_label
from divergent.categorical.fdiv import resolve_divergence

__all__ = ["BASELINES", "f_dpg_loss", "f_dpg_pseudo_reward"]

BASELINES: tuple[str, ...] = ("leave_one_out", "mean")
_LOG_RATIO_CLAMP = 50.0  # |log s| beyond which the generic φ is evaluated at the clamp


def _check_log_tensor(x: Any, name: str, shape: torch.Size | None, *, check_positive: bool):
    if not isinstance(x, Tensor) or not torch.is_floating_point(x):
        got = x.dtype if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"`{name}` must be a floating-point tensor, got {got}")
    if shape is None:
        if x.dim() < 1 or x.shape[-1] < 1:
            raise ValueError(
                f"`{name}` must have shape (..., n_samples) with n_samples >= 1, got "
                f"{tuple(x.shape)}"
            )
    elif x.shape != shape:
        raise ValueError(
            f"`{name}` must have the shape of `logps` {tuple(shape)}, got {tuple(x.shape)}"
        )
    if x.dtype not in (torch.float32, torch.float64):
        x = x.float()
    if check_positive and not is_traced(x):
        bad = x.detach() > mass_tolerance(x.dtype)
        if bool(bad.any()):
            i = int(bad.reshape(-1).nonzero()[0, 0])
            raise ValueError(
                f"`{name}` must hold log-probabilities (<= 0), got "
                f"{float(x.detach().reshape(-1)[i]):g} at entry {row_label(i, x.shape)}"
            )
    if not is_traced(x) and bool(torch.isposinf(x.detach()).any()):
        raise ValueError(f"`{name}` holds +inf")
    return x


def f_dpg_pseudo_reward(log_ratio: Tensor, divergence: Any = "js", **params: Any) -> Tensor:
    r"""φ(s) = g(s) − s g'(s) as a function of log s = log p(y) − log π(y) (detached, float64).

    The per-sample weight of :math:`\nabla\log\pi_\theta` in the f-DPG gradient (disco's
    pseudo-reward is :math:`-\varphi`). Closed, overflow-free forms for ``kl``, ``reverse_kl`` and
    ``js``; any other f-divergence (a registered name or a generator callable f) through its
    generator in float64 with log s clamped to [−50, 50].

    Args:
        log_ratio: log s, any shape.
        divergence: names D(p‖π) in the P-first convention (see the module table).
        **params: the divergence's parameters (``beta`` of ``js``, ``alpha`` of ``alpha`` ...).

    Returns:
        φ, float64, the shape of ``log_ratio``.
    """
    spec = resolve_divergence(divergence)
    if not spec.is_f_divergence:
        raise ValueError(
            f"`divergence` must be an f-divergence (it has a generator f), got {spec.name!r}; "
            "f-DPG needs f'"
        )
    bound = spec.bind(params)
    x = log_ratio.detach().to(torch.float64)
    if spec.name == "kl":
        return -torch.exp(x)
    if spec.name == "reverse_kl":
        return 1.0 - x
    if spec.name == "js":
        beta = bound["beta"]
        # log(β s + 1 − β) without overflow
        return -(1.0 - beta) * torch.logaddexp(
            x + math.log(beta), torch.full_like(x, math.log1p(-beta))
        )
    gen = spec.f_generator(**bound)
    s = torch.exp(x.clamp(-_LOG_RATIO_CLAMP, _LOG_RATIO_CLAMP))
    phi = gen.f(s) - s * gen.derivative(s)
    return torch.where(torch.isnan(x), x, phi)


def f_dpg_loss(
    logps: Tensor,
    target_log_scores: Tensor,
    proposal_logps: Tensor | None = None,
    *,
    divergence: Any = "js",
    log_partition: float | Tensor | None = None,
    baseline: str | float | Tensor | None = "leave_one_out",
    reduction: str = "mean",
    **params: Any,
) -> Tensor:
    r"""Surrogate loss whose gradient estimates :math:`\nabla_\theta D(p\|\pi_\theta)` (f-DPG).

    For samples :math:`y_1..y_N \sim q` (the proposal; :math:`q = \pi_\theta` on-policy) of each
    context (the last axis):

    .. math::

        \mathcal L = \frac1N\sum_i \mathrm{sg}\big[w_i(\varphi(s_i) - b_i)\big]\,
        \log\pi_\theta(y_i),\quad w_i = \frac{\pi_\theta(y_i)}{q(y_i)},\quad
        s_i = \frac{P(y_i)}{Z\,\pi_\theta(y_i)},

    with φ of :func:`f_dpg_pseudo_reward`. Then :math:`\mathbb E_q[\nabla\mathcal L] =
    \mathbb E_{\pi_\theta}[\varphi\,\nabla\log\pi_\theta] = \nabla D(p\|\pi_\theta)` for any
    baseline b that does not depend on :math:`y_i`:

    * ``"leave_one_out"`` (default): :math:`b_i = \frac{1}{N-1}\sum_{j\ne i} w_j\varphi_j`
      (unbiased; 0 when N = 1);
    * ``"mean"``: :math:`b = \frac1N\sum_j w_j\varphi_j` (a biased-by-1/N control variate, disco's
      moving average in one batch); None: b = 0; a number or a tensor broadcastable to the
      samples: that baseline.

    The partition function Z is ``exp(log_partition)`` when given (exact on an enumerable
    support), otherwise estimated per context from the same samples by importance sampling,
    :math:`\hat Z = \frac1N\sum_i P(y_i)/q(y_i)` (disco's estimator, self-normalised; a
    consistent but biased estimate of the gradient for finite N).

    **Exact gradient on an enumerable support:** pass every support point once as a "sample"
    with a uniform proposal (``proposal_logps = -log|Y|``), the exact ``log_partition`` and
    ``baseline=None``: then :math:`\nabla\mathcal L = \sum_y \pi_\theta(y)\varphi(s(y))
    \nabla\log\pi_\theta(y) = \nabla D(p\|\pi_\theta)` exactly.

    The *value* of the loss is a surrogate (not the divergence); only its gradient is meaningful.

    Args:
        logps: ``(..., N)`` sequence log-probabilities log π_θ(y_i) (differentiable).
        target_log_scores: ``(..., N)`` log P(y_i), the unnormalised target (log-probabilities
            of p when ``log_partition=0``). May be −inf (y outside the target's support).
        proposal_logps: ``(..., N)`` log q(y_i) of the sampling proposal, or None (on-policy,
            q = π_θ: every w = 1).
        divergence: D(p‖π) in the P-first convention: ``"kl"`` (forward), ``"reverse_kl"``,
            ``"js"`` (default, as disco), any registered f-divergence or a generator callable.
        log_partition: log Z (a number or a tensor of the leading shape ``...``), or None to
            estimate it from the batch.
        baseline: ``"leave_one_out"`` | ``"mean"`` | None | a number / tensor.
        reduction: ``"mean"`` (over all samples and contexts) | ``"sum"`` | ``"none"``.
        **params: the divergence's parameters (e.g. ``beta=0.5`` for ``js``).

    Returns:
        A scalar (``"mean"``, ``"sum"``) or the per-sample surrogate terms ``(..., N)``.

    Raises:
        ValueError: mismatched shapes, a positive log-probability in ``logps`` or
            ``proposal_logps``, a divergence that is not an f-divergence (e.g. ``renyi``), an
            unknown baseline or reduction.

    Example:
        >>> logits = torch.zeros(3, requires_grad=True)
        >>> logps = torch.log_softmax(logits, -1)
        >>> target = torch.log(torch.tensor([0.5, 0.5, 0.0]))
        >>> loss = f_dpg_loss(logps, target, torch.full((3,), -math.log(3)),
        ...                   divergence="kl", log_partition=0.0, baseline=None)
        >>> loss.backward(); logits.grad  # = ∇ KL(p‖softmax(θ)) = π − p
        tensor([-0.1667, -0.1667,  0.3333])

    References:
        D. Go et al., "Aligning Language Models with Preferences through f-divergence
        Minimization", ICML 2023, arXiv 2302.08215, Eq. 6 and Algorithm 1.
    """
    logps = _check_log_tensor(logps, "logps", None, check_positive=True)
    shape = logps.shape
    target = _check_log_tensor(target_log_scores, "target_log_scores", shape, check_positive=False)
    proposal = (
        None
        if proposal_logps is None
        else _check_log_tensor(proposal_logps, "proposal_logps", shape, check_positive=True)
    )
    check_reduction(reduction)
    if isinstance(baseline, str):
        valid = baseline in BASELINES
    else:
        number = isinstance(baseline, (int, float)) and not isinstance(baseline, bool)
        valid = baseline is None or isinstance(baseline, Tensor) or number
    if not valid:
        raise ValueError(
            f"`baseline` must be one of {BASELINES}, None, a number or a tensor, got {baseline!r}"
        )
    n = shape[-1]
    with torch.no_grad():
        lp = logps.detach().double()
        lq = lp if proposal is None else proposal.double()
        lP = target.double()
        if log_partition is None:
            log_z = torch.logsumexp(lP - lq, dim=-1, keepdim=True) - math.log(n)
        else:
            log_z = torch.as_tensor(log_partition, dtype=torch.float64, device=lp.device)
            if log_z.dim() > 0:
                if log_z.shape != shape[:-1]:
                    raise ValueError(
                        f"`log_partition` must be a number or have the leading shape "
                        f"{tuple(shape[:-1])}, got {tuple(log_z.shape)}"
                    )
                log_z = log_z.unsqueeze(-1)
            if bool(torch.isnan(log_z).any()) or bool(torch.isinf(log_z).any()):
                raise ValueError(f"`log_partition` must be finite, got {log_partition!r}")
        phi = f_dpg_pseudo_reward(lP - log_z - lp, divergence, **params)
        w = torch.exp(lp - lq)
        weighted = w * phi
        if baseline is None:
            b = torch.zeros_like(weighted)
        elif isinstance(baseline, str):
            total = weighted.sum(-1, keepdim=True)
            if baseline == "mean":
                b = (total / n).expand_as(weighted)
            elif n == 1:
                b = torch.zeros_like(weighted)
            else:
                b = (total - weighted) / (n - 1)
        else:
            b = torch.as_tensor(baseline, dtype=torch.float64, device=lp.device)
            b = b.expand_as(weighted) if b.dim() <= weighted.dim() else b
        coef = (weighted - w * b).to(logps.dtype)
    terms = coef * logps
    if reduction == "none":
        return terms
    if reduction == "sum":
        return terms.sum()
    return terms.mean()

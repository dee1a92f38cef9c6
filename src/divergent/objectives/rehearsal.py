r"""DPH-RL rehearsal: an f-divergence to the initial policy, estimated on the reference's samples.

Li et al. (2025) keep the diversity (pass@k) of the initial policy :math:`\pi_{ref}` during RL
with verifiable rewards by adding, on "near-perfect" prompts, a *mass-covering* divergence to
:math:`\pi_{ref}` computed on a buffer of responses pre-sampled from :math:`\pi_{ref}` (no
online reference model):

.. math::

    \mathcal L = \mathcal L_{exp} + \eta\,\mathcal L_{pef},\qquad
    \mathcal L_{pef} = \mathbb E_{a\sim\pi_{ref}}\big[\hat D(u(a))\big],\quad
    u = \frac{\pi_\theta(a)}{\pi_{ref}(a)},

where :math:`\mathcal L_{exp}` is the PPO / DAPO loss on the other prompts without a KL term
(:func:`divergent.objectives.policy_gradient.policy_gradient_loss`), η = 0.01 in their scripts.

For the divergence :math:`D(\pi_{ref}\|\pi_\theta) = \sum_a \pi_\theta\, g(\pi_{ref}/\pi_\theta)`
(this library's P-first convention, generator g) the per-sample estimate on reference samples is

.. math::

    \hat D(u) = u\,g(1/u) + g'(1)\,(u - 1),\qquad
    \mathbb E_{\pi_{ref}}[\hat D] = D(\pi_{ref}\|\pi_\theta),\qquad
    \mathbb E_{\pi_{ref}}[\nabla_\theta\hat D] = \nabla_\theta D(\pi_{ref}\|\pi_\theta)

(the control variate :math:`u - 1` has mean 0 under :math:`\pi_{ref}` for every θ and makes
each sample ≥ 0 by convexity). The named cases:

* ``"kl"`` (DPH-F, forward KL(π_ref‖π)): :math:`u - \log u - 1` (verl's ``low_var_kl`` with
  the arguments swapped; :func:`divergent.rl.policy_kl.reference_sample_kl`);
* ``"js"`` (DPH-JS; β = ½): :math:`\tfrac12[u\log u - (u+1)\log\tfrac{u+1}{2}]`, half of the
  paper's generator (their JS is the unnormalised 2·JSD: use ``2η`` to match their η);
* ``"alpha"`` (DPH-RL's α-divergence, same α, their default 0.2): the library's ``alpha``
  entry, :math:`(\sum p^\alpha q^{1-\alpha} - 1)/(\alpha(\alpha-1))` with p = π_ref;
* ``"reverse_kl"``: :math:`u\log u - u + 1` (KL(π‖π_ref), mode-seeking: the baseline the paper
  argues against); any other registered f-divergence through its generator.

Per token (``logps`` of shape ``(B, T)``) the estimate is the sum over positions of the
per-token divergences of the next-token distributions along reference prefixes; for ``kl`` that
sum is the sequence-level KL (chain rule), for other f it is the token-level objective that
DPH-RL optimises.

Reference:
    X. Li et al., "The Choice of Divergence: A Neglected Key to Mitigating Diversity Collapse in
    Reinforcement Learning with Verifiable Reward" (DPH-RL), ICLR 2026, arXiv 2509.07430
    (code: seamoke/DPH-RL, ``verl/trainer/ppo/core_algos.py``).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from divergent._validation import as_integer, check_normalizer, check_positive_scalar, reduce_rows
from divergent.categorical.fdiv import resolve_divergence
from divergent.objectives._sequence_rows import zero_padding
from divergent.rl.policy_kl import reference_sample_kl

__all__ = ["near_perfect_mask", "rehearsal_estimate", "rehearsal_loss"]

_LOG_U_CLAMP = 50.0


def rehearsal_estimate(log_u: Tensor, divergence: Any = "kl", **params: Any) -> Tensor:
    r"""Per-sample :math:`\hat D(u) = u\,g(1/u) + g'(1)(u-1)` from log u = log π_θ − log π_ref.

    Differentiable in ``log_u``. ``kl``, ``reverse_kl`` and ``js`` use exact log-domain forms;
    other f-divergences evaluate their generator in float64 with log u clamped to [−50, 50].
    """
    spec = resolve_divergence(divergence)
    if not spec.is_f_divergence:
        raise ValueError(
            f"`divergence` must be an f-divergence (it has a generator f), got {spec.name!r}"
        )
    bound = spec.bind(params)
    if spec.name == "kl":
        return torch.expm1(log_u) - log_u
    if spec.name == "reverse_kl":
        u = log_u.exp()
        return u * log_u - torch.expm1(log_u)
    if spec.name == "js":
        beta = bound["beta"]
        # u g(1/u) with g(t) = β t log t − m log m, m = β t + 1 − β, g'(1) = 0:
        # = −β log u − (β + (1−β)u) log((β + (1−β)u)/u)
        log_m_u = torch.logaddexp(  # log(β + (1−β) u)
            torch.full_like(log_u, math.log(beta)), log_u + math.log1p(-beta)
        )
        return -beta * log_u - log_m_u.exp() * (log_m_u - log_u)
    gen = spec.f_generator(**bound)
    x = log_u.to(torch.float64).clamp(-_LOG_U_CLAMP, _LOG_U_CLAMP)
    one = torch.ones((), dtype=torch.float64)
    slope = float(gen.derivative(one))
    u = x.exp()
    value = u * gen.f(torch.exp(-x)) + slope * (u - 1.0)
    return value.to(log_u.dtype)


def rehearsal_loss(
    logps: Tensor,
    ref_logps: Tensor,
    mask: Tensor | None = None,
    *,
    divergence: Any = "kl",
    reduction: str = "mean",
    normalizer: float | Tensor | None = None,
    clamp_log_ratio: float | None = None,
    **params: Any,
) -> Tensor:
    r"""DPH-RL's :math:`\mathcal L_{pef}`: :math:`D(\pi_{ref}\|\pi_\theta)` on reference samples.

    .. math::

        \mathcal L_{pef} = \operatorname{reduce}_{a}\ \hat D\big(\pi_\theta(a)/\pi_{ref}(a)\big),
        \qquad a \sim \pi_{ref}\ \text{(a pre-sampled rehearsal buffer)},

    with :math:`\hat D` of :func:`rehearsal_estimate`. Unbiased in value and gradient for
    :math:`D(\pi_{ref}\|\pi_\theta)` (per token, see the module doc).

    Args:
        logps: log π_θ(a) of the buffer's tokens / responses, any shape (e.g. ``(B, T)``);
            differentiable.
        ref_logps: log π_ref(a), stored with the buffer, same shape.
        mask: bool of that shape (True = kept); masked entries give 0 and are not counted.
        divergence: D(π_ref‖π) in the P-first convention: ``"kl"`` (DPH-F, default), ``"js"``
            (DPH-JS), ``"alpha"``, ``"reverse_kl"``, any registered f-divergence or generator.
        reduction: ``"mean"`` (over kept entries) | ``"sum"`` | ``"none"``.
        normalizer: the mean's denominator instead of the kept count.
        clamp_log_ratio: clamp log u to [−c, c] first (verl: 20 for ``low_var_kl``).
        **params: the divergence's parameters (``alpha=…`` for ``alpha``).

    Returns:
        A scalar or the per-entry estimates (``"none"``); float32 (float64 for float64 input).

    Raises:
        ValueError: mismatched shapes, a positive or +inf log-probability, ``ref_logps = -inf``
            on a kept entry (a reference sample has positive reference probability), a
            divergence that is not an f-divergence.

    Example:
        >>> ref = torch.log(torch.tensor([0.5, 0.25, 0.25]))
        >>> pi = torch.log(torch.tensor([0.25, 0.5, 0.25]))
        >>> rehearsal_loss(pi, ref, reduction="none")  # u − log u − 1 per sample
        tensor([0.1931, 0.3069, 0.0000])

    References:
        X. Li et al., arXiv 2509.07430 (DPH-RL), Sec. 4 and ``core_algos.py``.
    """
    spec = resolve_divergence(divergence)
    if not spec.is_f_divergence:
        raise ValueError(
            f"`divergence` must be an f-divergence (it has a generator f), got {spec.name!r}; "
            "the rehearsal estimate needs a generator"
        )
    if spec.name == "kl" and not params:
        return reference_sample_kl(
            logps,
            ref_logps,
            mask=mask,
            reduction=reduction,
            normalizer=normalizer,
            clamp_log_ratio=clamp_log_ratio,
        )
    # the input contract (shapes, log-probabilities, mask, reduction, normalizer) is checked by
    # reference_sample_kl on detached inputs; its value is then replaced by this divergence's
    check = reference_sample_kl(
        logps.detach(),
        ref_logps.detach(),
        mask=mask,
        reduction="none",
        clamp_log_ratio=clamp_log_ratio,
    )
    normalizer = check_normalizer(normalizer, reduction)
    dtype = check.dtype
    log_u = logps.to(dtype) - ref_logps.to(dtype)
    if clamp_log_ratio is not None:
        log_u = log_u.clamp(-clamp_log_ratio, clamp_log_ratio)
    keep = None if mask is None else mask.to(torch.bool)
    (log_u,) = zero_padding(keep, log_u)  # padding may hold anything: evaluate at u = 1 there
    (values,) = zero_padding(keep, rehearsal_estimate(log_u, spec, **params).to(dtype))
    count = values.numel() if keep is None else keep.sum()
    return reduce_rows(values, reduction, count=count, normalizer=normalizer)


def near_perfect_mask(
    n_correct: Tensor,
    n_samples: int,
    *,
    threshold: float = 0.75,
    extra_correct: Tensor | None = None,
) -> Tensor:
    r"""DPH-RL's data split: True for "near-perfect" prompts (rehearsal set :math:`D_{pef}`).

    A prompt is near-perfect when at least ``threshold · n_samples`` of its ``n_samples``
    reference samples are correct (6/8 for Llama, 7/8 quoted for Qwen) and, when
    ``extra_correct`` is given, one extra resample is also correct. The others form
    :math:`D_{exp}` (trained with the policy-gradient loss, no KL).

    Args:
        n_correct: ``(n_prompts,)`` counts of correct reference samples.
        n_samples: samples drawn per prompt (≥ 1).
        threshold: fraction in (0, 1].
        extra_correct: optional ``(n_prompts,)`` bool.

    Returns:
        ``(n_prompts,)`` bool.
    """
    given, n_samples = n_samples, as_integer(n_samples)
    if n_samples is None or n_samples < 1:
        raise ValueError(f"`n_samples` must be an int >= 1, got {given!r}")
    threshold = check_positive_scalar(threshold, "threshold", what="fraction of correct samples")
    if threshold > 1:
        raise ValueError(f"`threshold` must be in (0, 1], got {threshold!r}")
    if not isinstance(n_correct, Tensor):
        raise ValueError(f"`n_correct` must be a tensor of counts, got {type(n_correct).__name__}")
    if bool(((n_correct < 0) | (n_correct > n_samples)).any()):
        raise ValueError(f"`n_correct` must be counts in [0, n_samples={n_samples}]")
    out = n_correct >= math.ceil(threshold * n_samples - 1e-9)
    if extra_correct is not None:
        if extra_correct.shape != n_correct.shape:
            raise ValueError(
                f"`extra_correct` must have the shape of `n_correct` {tuple(n_correct.shape)}, "
                f"got {tuple(extra_correct.shape)}"
            )
        out = out & extra_correct.to(torch.bool)
    return out

r"""Monte Carlo estimators of the KL between a policy and a reference, for RL on sampled actions.

Setting: actions (tokens) are sampled, and only the log-probabilities of the sampled actions
are known, ``logp = log π(a)`` under the trained policy π and ``ref_logp = log π_ref(a)`` under
the reference. Schulman's estimators ("Approximating KL Divergence", 2020) of
KL(π‖π_ref) from samples ``a ~ π``, with :math:`r = \pi_\mathrm{ref}(a)/\pi(a)`:

.. math::

    k_1 = -\log r, \qquad k_2 = \tfrac12(\log r)^2, \qquad k_3 = (r - 1) - \log r .

Values: :math:`\mathbb E_\pi[k_1] = \mathbb E_\pi[k_3] = \mathrm{KL}(\pi\|\pi_\mathrm{ref})`
(unbiased); :math:`\mathbb E_\pi[k_2] = D_f(\pi_\mathrm{ref}\|\pi)` with
:math:`f(t) = \tfrac12 \log^2 t`, which agrees with the KL to second order (biased, smaller
variance). :math:`k_2, k_3 \ge 0`; :math:`k_1` is negative on about half the samples.

**As a loss** (samples held fixed, differentiated through ``logp`` only; the estimate of the
gradient of the *expected* loss with respect to the policy parameters θ):

.. math::

    \mathbb E_\pi[\nabla_\theta k_1] = 0, \qquad
    \mathbb E_\pi[\nabla_\theta k_2] = \nabla_\theta \mathrm{KL}(\pi\|\pi_\mathrm{ref}), \qquad
    \mathbb E_\pi[\nabla_\theta k_3] = \nabla_\theta \mathrm{KL}(\pi_\mathrm{ref}\|\pi).

(∇k₁ = ∇log π has zero mean; ∇k₂ = (log π − log π_ref)∇log π is the score-function
gradient of the reverse KL; ∇k₃ = (1 − r)∇log π has mean Σ(π − π_ref)∇log π = −Σ π_ref ∇log π,
the forward-KL gradient.) So "k3 in the loss" (as in GRPO) optimises the *forward* KL although
its value estimates the *reverse* KL; ``gradient="k2"`` keeps k3's value with the reverse-KL
gradient. These identities are tested exactly on a softmax policy by enumeration.

Two placements of the penalty:

* **KL in the loss**: ``loss = pg_loss + β · policy_kl(logp, ref_logp, kind, reduction="mean")``
  (gradient as above);
* **KL in the reward**: :func:`kl_penalty_reward` subtracts a *detached* per-token penalty
  β·k from the rewards (InstructGPT / PPO-RLHF); the policy gradient then carries the KL.

:func:`reference_sample_kl` is the estimator on *reference* samples used by DPH-RL.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from divergent._validation import (
    RowKeywords,
    RowOptions,
    check_choice,
    check_positive_scalar,
    check_same_device,
    compute_dtype,
    is_traced,
    mass_tolerance,
    row_label,
    row_options,
)

if TYPE_CHECKING:  # pragma: no cover
    from typing_extensions import Unpack

__all__ = ["kl_penalty_reward", "policy_kl", "reference_sample_kl"]

KINDS: tuple[str, ...] = ("k1", "k2", "k3")

# Taylor coefficients of e^x − 1 − x = Σ_{j≥2} x^j / j!  (j = 2..10), used for |x| ≤ 0.1 where
# expm1(x) − x would lose digits to cancellation; the first omitted term is < 6e-17 relative.
_SERIES = tuple(1.0 / math.factorial(j) for j in range(2, 11))
_SERIES_CUTOFF = 0.1


def _exp_minus_one_minus(x: Tensor) -> Tensor:
    r""":math:`e^x - 1 - x \ge 0`, accurate to a few ulps for every x (and its derivative)."""
    small = x.abs() <= _SERIES_CUTOFF
    xs = torch.where(small, x, torch.zeros_like(x))
    # Horner: x² (c2 + x (c3 + x (c4 + ...)))
    acc = torch.full_like(xs, _SERIES[-1])
    for c in reversed(_SERIES[:-1]):
        acc = acc * xs + c
    series = acc * xs * xs
    xl = torch.where(small, torch.ones_like(x), x)
    direct = torch.expm1(xl) - xl
    return torch.where(small, series, direct)


def _check_logps(logp: Any, ref_logp: Any, names: tuple[str, str]) -> tuple[Tensor, Tensor]:
    for t, name in ((logp, names[0]), (ref_logp, names[1])):
        if not isinstance(t, Tensor):
            raise ValueError(
                f"`{name}` must be a torch.Tensor of log-probabilities of the sampled actions, "
                f"got {type(t).__name__}"
            )
        if not torch.is_floating_point(t):
            raise ValueError(f"`{name}` must be a floating-point tensor, got dtype {t.dtype}")
    if logp.shape != ref_logp.shape:
        raise ValueError(
            f"`{names[0]}` and `{names[1]}` must have the same shape (one log-probability per "
            f"sampled action), got {tuple(logp.shape)} and {tuple(ref_logp.shape)}"
        )
    check_same_device(logp, names[0], ref_logp, names[1])
    dtype = compute_dtype(logp, ref_logp)
    return logp.to(dtype), ref_logp.to(dtype)


def _check_kind(kind: Any, name: str, allow_none: bool = False) -> str | None:
    return check_choice(kind, name, (*KINDS, None) if allow_none else KINDS)


def _check_clamp(clamp_log_ratio: Any) -> float | None:
    if clamp_log_ratio is None:
        return None
    if (
        isinstance(clamp_log_ratio, bool)
        or not isinstance(clamp_log_ratio, (int, float))
        or not clamp_log_ratio > 0
    ):
        raise ValueError(
            f"`clamp_log_ratio` must be None or a number > 0 (e.g. 20), got {clamp_log_ratio!r}"
        )
    return float(clamp_log_ratio)


def _estimator(kind: str, log_r: Tensor) -> Tensor:
    if kind == "k1":
        return -log_r
    if kind == "k2":
        return 0.5 * log_r * log_r
    return _exp_minus_one_minus(log_r)  # r − 1 − log r with r = e^{log r}


def sample_options(logp: Tensor, **row: Unpack[RowKeywords]) -> RowOptions:
    """The row options of per-sample values of ``logp``'s shape (every entry is a row).

    Shared with the preference losses (:mod:`divergent.objectives.preference`), whose rows are
    the preference pairs.
    """
    return row_options(leading_shape=logp.shape, device=logp.device, **row)


def _check_values(
    logp: Tensor,
    ref_logp: Tensor,
    keep: Tensor | None,
    sampled_from: str,
    weight: Tensor | None = None,
) -> None:
    r"""The input contract on the kept entries (one device sync when all is well).

    NaN propagates (that entry's estimate is NaN). A +inf log-probability, a positive one
    (beyond the dtype's rounding slack), a −inf log-probability of the policy the actions
    were sampled from (``sampled_from``: a sampled action has positive probability), and a
    ±inf or negative importance weight are ``ValueError``\ s naming the argument and the
    entry. A −inf on the other side is a true infinite KL (+inf).
    """
    sides = [("logp", logp), ("ref_logp", ref_logp)]
    checks = []
    for name, x in sides:
        tol = mass_tolerance(x.dtype)
        checks.append((f"`{name}` is +inf", torch.isposinf(x)))
        checks.append(
            (
                f"`{name}` is positive (beyond the rounding slack {tol:g} of {x.dtype})",
                x > tol,
            )
        )
        if name == sampled_from:
            checks.append(
                (
                    f"`{name}` is -inf (the actions were sampled from this policy, so each has "
                    "positive probability; mask the entry if it is padding)",
                    torch.isneginf(x),
                )
            )
    if weight is not None:
        checks.append(("`importance_weight` is infinite", torch.isinf(weight)))
        checks.append(("`importance_weight` is negative (a ratio π(a)/μ(a) is >= 0)", weight < 0))
    flags = torch.stack(
        [(bad if keep is None else bad.reshape(-1)[keep]).any() for _, bad in checks]
    ).tolist()  # one device sync
    for (what, bad), hit in zip(checks, flags):
        if hit:
            flat = bad.reshape(-1) if keep is None else bad.reshape(-1) & keep
            pos = row_label(int(flat.nonzero()[0, 0]), logp.shape)
            hint = "" if "weight" in what else "; log-probabilities must be <= 0, not +inf"
            raise ValueError(f"{what} at entry {pos}{hint}")


def reduce_samples(values: Tensor, opts: RowOptions) -> Tensor:
    """Per-sample values (of the full shape) to the caller's result through the row options."""
    rows = values.reshape(-1)
    if opts.keep is not None:
        rows = rows[opts.keep]
    return opts.finish(rows)


def policy_kl(
    logp: Tensor,
    ref_logp: Tensor,
    kind: str = "k3",
    gradient: str | None = None,
    importance_weight: Tensor | None = None,
    *,
    mask: Tensor | None = None,
    reduction: str = "none",
    normalizer: float | Tensor | None = None,
    clamp_log_ratio: float | None = None,
) -> Tensor:
    r"""Per-sample Monte Carlo estimates of :math:`\mathrm{KL}(\pi\|\pi_\mathrm{ref})` (Schulman).

    With :math:`\log r = \log\pi_\mathrm{ref}(a) - \log\pi(a)` on sampled actions ``a``:

    .. math::

        k_1 = -\log r,\quad k_2 = \tfrac12 (\log r)^2,\quad k_3 = (r-1) - \log r
        \;(=\mathrm{expm1}(\log r) - \log r).

    On-policy (``a ~ π``):
    :math:`\mathbb E[k_1] = \mathbb E[k_3] = \mathrm{KL}(\pi\|\pi_\mathrm{ref})`;
    as losses :math:`\mathbb E[\nabla k_1] = 0`,
    :math:`\mathbb E[\nabla k_2] = \nabla\mathrm{KL}(\pi\|\pi_\mathrm{ref})` (reverse-KL gradient),
    :math:`\mathbb E[\nabla k_3] = \nabla\mathrm{KL}(\pi_\mathrm{ref}\|\pi)` (forward-KL gradient).

    **Straight-through gradient** (``gradient="k2"``, or any kind): the value of ``kind`` with
    the gradient of ``gradient``: ``k.detach() + (g - g.detach())``. ``kind="k3",
    gradient="k2"`` is the unbiased, non-negative k3 value with the reverse-KL gradient.

    **Off-policy** (``importance_weight`` = :math:`w = \pi(a)/\mu(a)` for ``a ~ μ``, a
    behaviour policy): each estimate is multiplied by w, so that
    :math:`\mathbb E_\mu[w\,k] = \mathbb E_\pi[k]` (ordinary, not self-normalised, importance
    sampling). **The weight is used as given, not detached**; that choice is the caller's:

    * ``w = exp(logp - behaviour_logp).detach()``: :math:`\mathbb E_\mu[w\nabla k] = \mathbb
      E_\pi[\nabla k]`, i.e. each kind keeps its on-policy loss semantics above;
    * ``w = exp(logp - behaviour_logp)`` with gradient: :math:`\mathbb E_\mu[\nabla(w k)] =
      \nabla \mathbb E_\pi[k]`, the gradient of the estimated value; for k1 and k3 that is
      :math:`\nabla\mathrm{KL}(\pi\|\pi_\mathrm{ref})` (the DeepSeek-V3.2 "unbiased KL" form
      for k3: w·k3 has gradient :math:`w(\log\pi - \log\pi_\mathrm{ref})\nabla\log\pi`).

    Args:
        logp: log π(a) of the sampled actions, any shape (e.g. ``(batch, tokens)``);
            differentiable.
        ref_logp: log π_ref(a), same shape (used as given; usually requires no grad).
        kind: ``"k1"`` | ``"k2"`` | ``"k3"``: the value returned.
        gradient: ``None`` (the kind's own gradient) or ``"k1"`` | ``"k2"`` | ``"k3"``.
        importance_weight: ``None`` (on-policy) or π(a)/μ(a) ≥ 0, same shape as ``logp``.
        mask: bool tensor of ``logp``'s shape; False entries give 0 and are not counted.
        reduction: ``"none"`` (per sample, default) | ``"sum"`` | ``"mean"`` (over unmasked).
        normalizer: denominator of ``"mean"`` instead of the number of unmasked entries.
        clamp_log_ratio: if set to c, log r is clamped to [−c, c] first (verl uses 20 for k3);
            biases the value where |log r| > c and stops the gradient there. Without it,
            k3 overflows to ``inf`` when log r exceeds ~88 in float32 (r > 3·10³⁸).

    Returns:
        A tensor of ``logp``'s shape (``"none"``) or a scalar, float32 (float64 if an input is
        float64; bf16/fp16 are computed in float32). NaN in a kept entry (either log-prob or
        the weight) gives NaN there; ``ref_logp = -inf`` gives +inf (the KL is infinite).

    Raises:
        ValueError: naming the argument and the entry, for a +inf or positive log-probability
            (beyond the dtype's rounding slack), ``logp = -inf`` (a sampled action has
            positive probability under the policy that sampled it; mask padding), or an
            infinite or negative ``importance_weight``.

    Example:
        >>> import torch, divergent
        >>> logp = torch.log(torch.tensor([0.5, 0.2])); ref = torch.log(torch.tensor([0.25, 0.4]))
        >>> divergent.policy_kl(logp, ref, kind="k3")
        tensor([0.1931, 0.3069])

    References:
        J. Schulman, "Approximating KL Divergence", http://joschu.net/blog/kl-approx.html (2020).
        DeepSeek-AI, "DeepSeek-V3.2" (2025), the importance-weighted k3.
    """
    logp, ref_logp = _check_logps(logp, ref_logp, ("logp", "ref_logp"))
    kind = _check_kind(kind, "kind")
    gradient = _check_kind(gradient, "gradient", allow_none=True)
    opts = sample_options(logp, mask=mask, reduction=reduction, normalizer=normalizer)
    clamp = _check_clamp(clamp_log_ratio)
    if importance_weight is not None:
        if not isinstance(importance_weight, Tensor) or not torch.is_floating_point(
            importance_weight
        ):
            got = type(importance_weight).__name__
            raise ValueError(
                f"`importance_weight` must be None or a floating-point tensor of π/μ ratios, "
                f"got {got}"
            )
        if importance_weight.shape != logp.shape:
            raise ValueError(
                f"`importance_weight` must have the shape of `logp` {tuple(logp.shape)}, got "
                f"{tuple(importance_weight.shape)}"
            )
    if not is_traced(logp, ref_logp):
        _check_values(logp, ref_logp, opts.keep, "logp", importance_weight)
    log_r = ref_logp - logp
    if clamp is not None:
        log_r = log_r.clamp(-clamp, clamp)
    value = _estimator(kind, log_r)
    if gradient is not None and gradient != kind:
        g = _estimator(gradient, log_r)
        # straight-through; an infinite estimate (ref_logp = -inf) keeps its value, not NaN
        value = value.detach() + torch.where(torch.isinf(g), torch.zeros_like(g), g - g.detach())
    if importance_weight is not None:
        w = importance_weight.to(value.dtype)
        # a zero weight (the sample is impossible under π) contributes 0, also next to +inf
        value = torch.where(w == 0, torch.zeros_like(value), w * value)
    return reduce_samples(value, opts)


def kl_penalty_reward(
    rewards: Tensor,
    logp: Tensor,
    ref_logp: Tensor,
    beta: float,
    kind: str = "k1",
    *,
    mask: Tensor | None = None,
    clamp_log_ratio: float | None = None,
) -> Tensor:
    r"""KL-in-reward placement: per-token rewards minus a detached KL penalty.

    .. math::

        \tilde r_t = r_t - \beta\, \mathrm{sg}[k(\log\pi(a_t), \log\pi_\mathrm{ref}(a_t))]

    with ``k`` one of Schulman's estimators (``"k1"``, the InstructGPT / TRL default
    :math:`\log\pi - \log\pi_\mathrm{ref}`, or ``"k2"``, ``"k3"``) and sg the stop-gradient.
    The penalty is a reward, so the policy-gradient estimator (REINFORCE, PPO) is what turns
    it into a KL gradient: with k1 and returns summed over the sequence, the expected gradient
    of :math:`\mathbb E[\sum_t \tilde r_t]` is that of the KL-regularised objective
    :math:`\mathbb E[R] - \beta\,\mathrm{KL}(\pi\|\pi_\mathrm{ref})`. Contrast with the
    KL-in-loss placement, ``β · policy_kl(logp, ref_logp, kind, reduction="mean")`` added to the
    loss, whose gradient is given by :func:`policy_kl`.

    Args:
        rewards: per-token rewards, same shape as ``logp`` (put a sequence-level reward on the
            last token of each sequence).
        logp: log π(a_t) of the sampled tokens.
        ref_logp: log π_ref(a_t), same shape.
        beta: penalty coefficient β ≥ 0.
        kind: ``"k1"`` | ``"k2"`` | ``"k3"``.
        mask: bool tensor of ``logp``'s shape; masked positions get no penalty.
        clamp_log_ratio: as in :func:`policy_kl`.

    Returns:
        The penalised rewards, shape and dtype of ``rewards``, with no gradient through the
        penalty (``rewards``' own graph, if any, is kept).

    References:
        Ouyang et al., "Training language models to follow instructions with human feedback"
        (InstructGPT), 2022, Eq. 2; Ziegler et al., "Fine-Tuning Language Models from Human
        Preferences", 2019.
    """
    if not isinstance(rewards, Tensor) or not torch.is_floating_point(rewards):
        got = rewards.dtype if isinstance(rewards, Tensor) else type(rewards).__name__
        raise ValueError(f"`rewards` must be a floating-point tensor, got {got}")
    if rewards.shape != logp.shape:
        raise ValueError(
            f"`rewards` must have the per-token shape of `logp` {tuple(logp.shape)}, got "
            f"{tuple(rewards.shape)}; put a sequence-level reward on the last token"
        )
    beta = check_positive_scalar(beta, "beta", allow_zero=True, what="the KL penalty coefficient")
    with torch.no_grad():
        penalty = policy_kl(
            logp, ref_logp, kind, mask=mask, reduction="none", clamp_log_ratio=clamp_log_ratio
        )
    return rewards - (beta * penalty).to(rewards.dtype)


def reference_sample_kl(
    logp: Tensor,
    ref_logp: Tensor,
    *,
    mask: Tensor | None = None,
    reduction: str = "none",
    normalizer: float | Tensor | None = None,
    clamp_log_ratio: float | None = None,
) -> Tensor:
    r"""Forward KL :math:`\mathrm{KL}(\pi_\mathrm{ref}\|\pi)` estimated on *reference* samples.

    For actions ``a ~ π_ref`` (e.g. a pre-sampled buffer of reference responses), with
    :math:`u = \pi(a)/\pi_\mathrm{ref}(a)`:

    .. math::

        \hat D(a) = u - \log u - 1, \qquad
        \mathbb E_{\pi_\mathrm{ref}}[\hat D] = \mathrm{KL}(\pi_\mathrm{ref}\|\pi), \qquad
        \mathbb E_{\pi_\mathrm{ref}}[\nabla_\theta \hat D]
        = \mathbb E_{\pi_\mathrm{ref}}[(u-1)\nabla\log\pi]
        = \nabla_\theta\mathrm{KL}(\pi_\mathrm{ref}\|\pi),

    i.e. the generator f(u) = −log u of the forward KL with the control variate u − 1. Both the
    value and its gradient are unbiased, and each sample is ≥ 0. This is the DPH-F
    ("forward-KL") term of DPH-RL, computed without an online reference model.

    Args:
        logp: log π(a) of the reference samples under the trained policy (differentiable).
        ref_logp: log π_ref(a), same shape.
        mask, reduction, normalizer, clamp_log_ratio: as in :func:`policy_kl` (the clamp is on
            log u).

    Returns:
        Per-sample values (``"none"``) or a scalar; float32 (float64 if an input is float64).

    References:
        Li et al., "The Choice of Divergence: A Neglected Key to Mitigating Diversity Collapse
        in Reinforcement Learning with Verifiable Reward" (DPH-RL), arXiv 2509.07430.
    """
    logp, ref_logp = _check_logps(logp, ref_logp, ("logp", "ref_logp"))
    opts = sample_options(logp, mask=mask, reduction=reduction, normalizer=normalizer)
    clamp = _check_clamp(clamp_log_ratio)
    if not is_traced(logp, ref_logp):
        _check_values(logp, ref_logp, opts.keep, "ref_logp")
    log_u = logp - ref_logp
    if clamp is not None:
        log_u = log_u.clamp(-clamp, clamp)
    return reduce_samples(_exp_minus_one_minus(log_u), opts)

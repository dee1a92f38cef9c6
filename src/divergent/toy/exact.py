r"""Exact quantities over the enumerated support: KL / any divergence, entropy, expected
reward, the KL-regularised optimum :math:`\pi^* \propto \pi_{\mathrm{ref}}e^{r/\beta}` and
its objective, and batch helpers that turn sampled sequences into the per-token inputs of the
objectives.

Every function accepts a :class:`~divergent.toy.policy.SequencePolicy` or an ``(N,)`` tensor
of normalised sequence log-probabilities wherever it takes a distribution ("policy-like").
Divergences go through :func:`divergent.functional.divergence` on the ``(N,)`` support (one
"row"), so they are the library's own entries, differentiable, in the P-first convention
``D(P‖Q)``.

References:
    Korbak, Perez, Buckley (2022), "RL with KL penalties is better viewed as Bayesian
    inference", arXiv 2205.11275 (the tilted target and the identity
    :math:`J_\beta(\pi) = \beta\log Z - \beta\,\mathrm{KL}(\pi\|\pi^*)`).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from divergent.functional import divergence as _divergence
from divergent.rl.best_of_n import tilted_log_probs
from divergent.toy.policy import SequencePolicy, TabularPolicy
from divergent.toy.space import SequenceSpace

__all__ = [
    "batch_token_log_probs",
    "exact_divergence",
    "exact_entropy",
    "exact_expected_reward",
    "exact_kl",
    "kl_regularized_value",
    "log_partition",
    "optimal_log_probs",
    "optimal_policy",
    "support_log_probs",
]

PolicyLike = SequencePolicy | Tensor


def support_log_probs(policy: PolicyLike, name: str = "policy") -> Tensor:
    """``(N,)`` log-probabilities of a policy-like (a policy, or the tensor itself)."""
    if isinstance(policy, SequencePolicy):
        return policy.log_probs()
    if isinstance(policy, Tensor) and policy.ndim == 1 and policy.dtype.is_floating_point:
        return policy
    raise ValueError(
        f"`{name}` must be a SequencePolicy or a 1-D float tensor of sequence "
        f"log-probabilities, got {type(policy).__name__}"
        + (f" of shape {tuple(policy.shape)}" if isinstance(policy, Tensor) else "")
    )


def _pair(p: PolicyLike, q: PolicyLike) -> tuple[Tensor, Tensor]:
    lp, lq = support_log_probs(p, "p"), support_log_probs(q, "q")
    if lp.shape != lq.shape:
        raise ValueError(
            f"`p` and `q` must live on the same support, got {tuple(lp.shape)} and "
            f"{tuple(lq.shape)}"
        )
    dtype = torch.promote_types(lp.dtype, lq.dtype)
    return lp.to(dtype), lq.to(dtype)


def exact_divergence(name: Any, p: PolicyLike, q: PolicyLike, **params: Any) -> Tensor:
    r"""Exact :math:`D(P\|Q)` between two sequence distributions over the whole support.

    Any registered divergence (``"kl"``, ``"reverse_kl"``, ``"js"``, ``"alpha"`` ...) or a
    generator callable, via :func:`divergent.functional.divergence` with
    ``inputs="log_probs"`` on the support as one row.

    Args:
        name: the divergence name (or generator f).
        p: target / reference P (policy or ``(N,)`` log-probs).
        q: model Q (same support).
        **params: the divergence's parameters (``beta`` for ``js`` ...).

    Returns:
        A scalar tensor (differentiable).
    """
    lp, lq = _pair(p, q)
    value = _divergence(
        name, lp.unsqueeze(0), lq.unsqueeze(0), inputs="log_probs", reduction="sum", **params
    )
    return value


def exact_kl(p: PolicyLike, q: PolicyLike) -> Tensor:
    r"""Exact :math:`\mathrm{KL}(P\|Q) = \sum_s P(s)\log\frac{P(s)}{Q(s)}` (swap for the reverse).

    A direct masked sum (0 log 0 = 0; ``inf`` where Q = 0 < P), about 20× cheaper than the
    validated :func:`exact_divergence` ``("kl", p, q)``, which it equals (tested); use it in
    training loops.

    Args:
        p: P (policy or ``(N,)`` log-probs).
        q: Q.

    Returns:
        Scalar tensor, nats (differentiable in both).

    Example:
        >>> from divergent.toy import SequenceSpace, TabularPolicy
        >>> space = SequenceSpace(2, 2)
        >>> g = torch.Generator().manual_seed(0)
        >>> a, b = TabularPolicy.random(space, generator=g), TabularPolicy(space)
        >>> bool(exact_kl(a, b) >= 0) and bool(exact_kl(b, a) >= 0)
        True
    """
    lp, lq = _pair(p, q)
    has_mass = lp > -math.inf
    safe_lp = torch.where(has_mass, lp, torch.zeros_like(lp))
    diff = torch.where(has_mass, safe_lp - lq, torch.zeros_like(lp))
    return (safe_lp.exp() * diff).sum()


def exact_entropy(policy: PolicyLike) -> Tensor:
    r"""Exact entropy :math:`H(\pi) = -\sum_s \pi(s)\log\pi(s)` (0 log 0 = 0), nats."""
    log_p = support_log_probs(policy)
    finite = log_p > -math.inf
    safe = torch.where(finite, log_p, torch.zeros_like(log_p))
    return -(safe.exp() * safe).sum()


def _rewards(rewards: Any, n: int) -> Tensor:
    if not isinstance(rewards, Tensor) or tuple(rewards.shape) != (n,):
        got = tuple(rewards.shape) if isinstance(rewards, Tensor) else type(rewards).__name__
        raise ValueError(f"`rewards` must be a tensor of shape ({n},), got {got}")
    if not bool(torch.isfinite(rewards).all()):
        raise ValueError("`rewards` must be finite (no NaN or ±inf entries)")
    return rewards


def exact_expected_reward(policy: PolicyLike, rewards: Tensor) -> Tensor:
    r"""Exact :math:`\mathbb{E}_{s\sim\pi}[r(s)] = \sum_s \pi(s) r(s)` (differentiable).

    Args:
        policy: policy or ``(N,)`` log-probs.
        rewards: ``(N,)`` finite reward of every sequence.
    """
    log_p = support_log_probs(policy)
    r = _rewards(rewards, log_p.shape[0]).to(log_p.dtype)
    return (log_p.exp() * r).sum()


def optimal_log_probs(reference: PolicyLike, rewards: Tensor, beta: float) -> Tensor:
    r"""Log-probabilities of the KL-regularised optimum (the tilted posterior).

    .. math:: \pi^*(s) = \frac{\pi_{\mathrm{ref}}(s)\,e^{r(s)/\beta}}{Z_\beta},\qquad
              \pi^* = \arg\max_\pi\ \mathbb{E}_\pi[r] - \beta\,\mathrm{KL}(\pi\|\pi_{\mathrm{ref}})

    Computed by :func:`divergent.rl.best_of_n.tilted_log_probs` (β = 0: the argmax limit).

    Args:
        reference: π_ref (policy or ``(N,)`` log-probs).
        rewards: ``(N,)``.
        beta: β >= 0.

    Returns:
        ``(N,)`` log π* (no gradient to the reference).

    References:
        Korbak et al. (2022), arXiv 2205.11275; Rafailov et al. (2023), arXiv 2305.18290.
    """
    log_ref = support_log_probs(reference, "reference").detach()
    r = _rewards(rewards, log_ref.shape[0])
    return tilted_log_probs(log_ref, r.to(log_ref.dtype), beta, inputs="log_probs")


def optimal_policy(
    reference: PolicyLike, rewards: Tensor, beta: float, *, space: SequenceSpace | None = None
) -> TabularPolicy:
    r""":math:`\pi^* \propto \pi_{\mathrm{ref}} e^{r/\beta}` as an autoregressive
    :class:`~divergent.toy.policy.TabularPolicy` (its exact per-token conditionals).

    Args:
        reference: π_ref; a policy, or ``(N,)`` log-probs together with ``space``.
        rewards: ``(N,)``.
        beta: β >= 0.
        space: needed when ``reference`` is a tensor.
    """
    if space is None:
        if not isinstance(reference, SequencePolicy):
            raise ValueError("`space` is required when `reference` is a tensor of log-probs")
        space = reference.space
    return TabularPolicy.from_log_probs(space, optimal_log_probs(reference, rewards, beta))


def log_partition(reference: PolicyLike, rewards: Tensor, beta: float) -> Tensor:
    r""":math:`\log Z_\beta = \log\sum_s \pi_{\mathrm{ref}}(s)e^{r(s)/\beta}` (β > 0).

    :math:`\beta\log Z_\beta` is the maximum of :func:`kl_regularized_value`.
    """
    if not isinstance(beta, (int, float)) or not (0 < beta < math.inf):
        raise ValueError(f"`beta` must be a finite number > 0, got {beta!r}")
    log_ref = support_log_probs(reference, "reference")
    r = _rewards(rewards, log_ref.shape[0]).to(log_ref.dtype)
    return torch.logsumexp(log_ref + r / beta, 0)


def kl_regularized_value(
    policy: PolicyLike, reference: PolicyLike, rewards: Tensor, beta: float
) -> Tensor:
    r"""Exact :math:`J_\beta(\pi) = \mathbb{E}_\pi[r] - \beta\,\mathrm{KL}(\pi\|\pi_0)`, π₀ = π_ref.

    Equals :math:`\beta\log Z_\beta - \beta\,\mathrm{KL}(\pi\|\pi^*)` (Korbak et al. 2022), so
    it is maximised by :func:`optimal_log_probs` (Gibbs variational principle).

    Args:
        policy: π.
        reference: π_ref.
        rewards: ``(N,)``.
        beta: β >= 0.

    Returns:
        Scalar (differentiable in π).
    """
    if not isinstance(beta, (int, float)) or not (0 <= beta < math.inf):
        raise ValueError(f"`beta` must be a finite number >= 0, got {beta!r}")
    reward = exact_expected_reward(policy, rewards)
    if beta == 0:
        return reward
    return reward - beta * exact_kl(policy, reference).to(reward.dtype)


def batch_token_log_probs(policy: SequencePolicy, index: Tensor) -> tuple[Tensor, Tensor]:
    r"""Per-token log-probabilities and mask of a sampled batch, the inputs of token-level
    objectives (policy gradient, GRPO, per-token KL estimators).

    Args:
        policy: the policy to score with (gradients flow to its parameters).
        index: ``(n,)`` long sequence indices, e.g. from ``policy.sample(n, generator)``.

    Returns:
        ``(token_log_probs, mask)``, both ``(n, L)``: :math:`\log\pi(s_t\mid s_{<t})` and an
        all-True bool mask (toy sequences have a fixed length; the mask is given so the batch
        plugs into masked objectives unchanged).
    """
    if not isinstance(policy, SequencePolicy):
        raise ValueError(f"`policy` must be a SequencePolicy, got {type(policy).__name__}")
    index = policy.space.check_index(index)
    token_lp = policy.token_log_probs(index)
    return token_lp, torch.ones(token_lp.shape, dtype=torch.bool)

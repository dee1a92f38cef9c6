r"""Best-of-N and the KL-regularised (tilted) policy over a discrete base, computed exactly.

Two ways to move a base policy :math:`\pi_0` towards a reward :math:`r`:

* **best-of-N** (BoN): draw :math:`N` i.i.d. samples from :math:`\pi_0`, return one with the
  highest reward. Its exact distribution :math:`\pi_N` is an order statistic
  (:func:`best_of_n_log_probs`); its KL to the base is :func:`best_of_n_kl`; the widely used
  expression :math:`\log N - (N-1)/N` (:func:`best_of_n_kl_bound`) is only an *upper bound*
  (Beirami et al. 2024), tight when the base has no atoms.
* **the tilted policy** :math:`\pi_\beta \propto \pi_0 e^{r/\beta}`
  (:func:`tilted_log_probs`), the exact maximiser of
  :math:`\mathbb{E}_\pi[r] - \beta\,\mathrm{KL}(\pi\|\pi_0)` (:func:`kl_regularized_objective`)
  and, with β chosen by :func:`tilted_for_kl`, of :math:`\mathbb{E}_\pi[r]` subject to
  :math:`\mathrm{KL}(\pi\|\pi_0) \le \Delta` (Yang et al. 2024).

Conventions: the class (outcome) axis is last, any leading batch shape; the base is given as
logits by default (``inputs="logits"``, or ``"log_probs"`` / ``"probs"``); ``rewards`` has the
base's shape. Computation is in float64 internally; the result has the input's float dtype
(float32 for bf16/fp16/float32 inputs). Every KL is computed with :func:`divergent.kl`.

References:
    Beirami, Agarwal, Berant, D'Amour, Eisenstein, Nagpal, Suresh (2024), "Theoretical
    guarantees on the best-of-n alignment policy", arXiv 2401.01879.
    Yang, Salamatian, Sun, Suresh, Beirami (2024), "Asymptotics of language model alignment",
    arXiv 2404.01730.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from divergent._validation import (
    check_choice,
    check_inputs_kind,
    check_int,
    check_pair,
    check_positive_scalar,
    check_reduction,
    compute_dtype,
    to_log_probs,
)
from divergent.functional import kl

__all__ = [
    "TIE_BREAKS",
    "best_of_n_kl",
    "best_of_n_kl_bound",
    "best_of_n_log_probs",
    "expected_reward",
    "kl_regularized_objective",
    "tilted_for_kl",
    "tilted_kl",
    "tilted_log_probs",
    "tilted_max_kl",
]

TIE_BREAKS: tuple[str, ...] = ("random", "first")


# --------------------------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------------------------
def _base_and_rewards(base: Any, rewards: Any, inputs: str) -> tuple[Tensor, Tensor]:
    """Validated float64 (log π₀, r) of the same shape; rewards must be finite."""
    base, rewards = check_pair(base, rewards, "base", "rewards")
    check_inputs_kind(inputs)
    if bool(torch.isnan(base).any()):
        raise ValueError("`base` contains NaN values")
    if not bool(torch.isfinite(rewards).all()):
        raise ValueError("`rewards` must be finite (no NaN or ±inf entries)")
    log_base = to_log_probs(base, inputs, 1.0, torch.float64, "base")
    if inputs == "log_probs":
        # log-probs are used as given by the core; renormalise so the order statistics add up
        log_base = torch.log_softmax(log_base, dim=-1)
    if not bool((log_base > -math.inf).any(-1).all()):
        raise ValueError("`base` has a row with no mass (every entry is zero / -inf)")
    return log_base, rewards.to(torch.float64)


def _kl_to_base(log_policy: Tensor, base: Any, rewards: Any, inputs: str, reduction: str) -> Tensor:
    """KL(π‖π₀) in float64 of a policy derived from ``base``, in the base's result dtype."""
    log_base, _ = _base_and_rewards(base, rewards, inputs)
    value = kl(log_policy.double(), log_base, inputs="log_probs", reduction=reduction)
    return value.to(compute_dtype(base))


def _check_n(n: Any) -> int:
    return check_int(n, "n", 1, "number of samples")


def _check_tie_break(tie_break: Any) -> str:
    return check_choice(
        tie_break,
        "tie_break",
        TIE_BREAKS,
        " ('random': a uniformly random sample among those sharing the top reward; 'first': the "
        "lowest outcome index)",
    )


_BETA = "the KL coefficient; 0 = the argmax limit, inf = the base"


# --------------------------------------------------------------------------------------------
# best-of-N
# --------------------------------------------------------------------------------------------
def best_of_n_kl_bound(n: int) -> float:
    r"""The common best-of-N KL expression :math:`\log N - \frac{N-1}{N}`, an upper bound.

    .. math:: \mathrm{KL}(\pi_N\|\pi_0) \le \log N - \frac{N-1}{N}

    Equality holds for a base without atoms (continuous reward distribution): the BoN density
    of the reward quantile is :math:`N u^{N-1}` and :math:`\mathbb{E}[\log U] = -1/N` for
    :math:`U\sim\mathrm{Beta}(N,1)`. For discrete bases it is an upper bound (Beirami et al.
    2024, arXiv 2401.01879), loose when atoms are large or rewards tie.

    Args:
        n: number of samples N >= 1.

    Returns:
        The bound in nats (0 at N = 1).

    Example:
        >>> round(best_of_n_kl_bound(4), 6)
        0.636294
    """
    n = _check_n(n)
    return math.log(n) - (n - 1) / n


def best_of_n_log_probs(
    base: Tensor,
    rewards: Tensor,
    n: int,
    *,
    inputs: str = "logits",
    tie_break: str = "random",
) -> Tensor:
    r"""Exact log-probabilities of the best-of-N policy :math:`\pi_N` over a discrete base.

    Draw :math:`Y_1..Y_N \sim \pi_0` i.i.d. and return one with the highest reward. With
    :math:`F(v) = \pi_0(r \le v)`, :math:`G(v) = \pi_0(r < v)` and ``tie_break="random"``
    (among the samples sharing the top reward one is picked uniformly at random, which is
    the same as returning the *first drawn* of them, as ``argmax`` over the list of draws
    does):

    .. math:: \pi_N(y) = \pi_0(y)\,\frac{F(r(y))^N - G(r(y))^N}{F(r(y)) - G(r(y))}

    (the top reward level is reached with probability :math:`F^N - G^N`, and within a level the
    returned sample is distributed as :math:`\pi_0` restricted to it). With
    ``tie_break="first"`` ties are resolved by outcome index (the lowest index wins), i.e. the
    strict order (r, −index): :math:`\pi_N(y) = F_\prec(y)^N - G_\prec(y)^N` with the
    cumulative masses taken in that order. Without ties both agree.

    Numerics: :math:`\log(F^N - G^N) = N\log F + \log(-\mathrm{expm1}(N\log1p(-m/F)))` with the
    level mass :math:`m = F - G` summed directly and :math:`\log F` taken from whichever of the
    lower / upper tails is more accurate, so :math:`N` up to :math:`10^{12}` and atoms of
    :math:`10^{-12}` are fine in float64.

    Ties are decided by exact equality of ``rewards``: rewards that are equal in exact
    arithmetic but computed in different orders may differ by rounding and then count as
    distinct (round them first if that matters).

    Args:
        base: the base policy π₀, shape ``(..., K)`` (logits by default).
        rewards: reward of each outcome, same shape, finite.
        n: number of samples N >= 1 (N = 1 returns the base).
        inputs: how ``base`` is given: ``"logits"`` | ``"log_probs"`` | ``"probs"``.
        tie_break: ``"random"`` (default) or ``"first"`` (see above).

    Returns:
        ``log π_N``, shape ``(..., K)``; ``-inf`` where the base has no mass.

    References:
        Beirami et al. (2024), arXiv 2401.01879, §2 (the best-of-n policy).

    Example:
        >>> import torch
        >>> p = torch.tensor([0.5, 0.25, 0.25]); r = torch.tensor([0.0, 1.0, 2.0])
        >>> best_of_n_log_probs(p, r, 2, inputs="probs").exp()
        tensor([0.2500, 0.3125, 0.4375])
    """
    n = _check_n(n)
    tie_break = _check_tie_break(tie_break)
    out_dtype = compute_dtype(base) if isinstance(base, Tensor) else torch.float32
    log_base, r = _base_and_rewards(base, rewards, inputs)
    k = r.shape[-1]
    if tie_break == "random":
        order = torch.sort(r, dim=-1, stable=True).indices
    else:
        # stable sort of the reversed axis: among ties the lowest original index ends up last,
        # i.e. ranks highest
        order = (k - 1) - torch.sort(r.flip(-1), dim=-1, stable=True).indices
    lp = log_base.gather(-1, order)
    rs = r.gather(-1, order)
    if tie_break == "random":
        new_level = torch.ones_like(rs, dtype=torch.bool)
        new_level[..., 1:] = rs[..., 1:] != rs[..., :-1]
        gid = new_level.long().cumsum(-1) - 1
    else:
        gid = torch.arange(k, device=r.device).expand_as(rs).contiguous()
    p = lp.exp()
    mass = torch.zeros_like(p).scatter_add(-1, gid, p)  # level masses (zero padding at the end)
    below_incl = mass.cumsum(-1)  # F = π0(r <= v)
    upper_incl = mass.flip(-1).cumsum(-1).flip(-1)
    above = torch.cat([upper_incl[..., 1:], torch.zeros_like(upper_incl[..., :1])], -1)
    # log F from the smaller-error side: the lower tail when F is small, 1 - upper tail otherwise
    log_f = torch.where(
        below_incl < 0.5,
        torch.log(below_incl),
        torch.log1p(-above.clamp(max=1.0)),
    )
    ratio = (mass / below_incl.clamp_min(torch.finfo(torch.float64).tiny)).clamp(0.0, 1.0)
    # log(F^N - G^N) = N log F + log(1 - (G/F)^N),  (G/F) = 1 - m/F
    nf = float(n)  # N may exceed int64 (N = e^{mδ} in asymptotic sweeps)
    log_top = nf * log_f + torch.log(-torch.expm1(nf * torch.log1p(-ratio)))
    level_term = (log_top - torch.log(mass)).gather(-1, gid)
    neg_inf = torch.full_like(lp, -math.inf)
    out_sorted = torch.where(lp > -math.inf, lp + level_term, neg_inf)
    out = torch.empty_like(out_sorted).scatter(-1, order, out_sorted)
    return out.to(out_dtype)


def best_of_n_kl(
    base: Tensor,
    rewards: Tensor,
    n: int,
    *,
    inputs: str = "logits",
    tie_break: str = "random",
    reduction: str = "none",
) -> Tensor:
    r"""Exact :math:`\mathrm{KL}(\pi_N\|\pi_0)` of the best-of-N policy to its base.

    .. math:: \mathrm{KL}(\pi_N\|\pi_0) = \sum_y \pi_N(y)\log\frac{\pi_N(y)}{\pi_0(y)}
              \;\le\; \log N - \frac{N-1}{N}

    with :math:`\pi_N` from :func:`best_of_n_log_probs` and the KL from :func:`divergent.kl`.
    With ``tie_break="random"`` this equals the KL between the distributions of the top reward
    level (the within-level ratio is 1), so ties *lower* it.

    Args:
        base, rewards, n, inputs, tie_break: as in :func:`best_of_n_log_probs`.
        reduction: ``"none"`` (one value per row, the default) | ``"sum"`` | ``"mean"``.

    Returns:
        The KL in nats, float64 computation, in the input's float dtype.

    References:
        Beirami et al. (2024), arXiv 2401.01879 (Theorem: the expression is an upper bound).

    Example:
        >>> import torch
        >>> round(best_of_n_kl_bound(4), 4)
        0.6363
        >>> p = torch.full((1000,), 1e-3); r = torch.arange(1000.0)  # small atoms: near the bound
        >>> round(float(best_of_n_kl(p, r, 4, inputs="probs")), 4)
        0.6363
        >>> p = torch.full((4,), 0.25); r = torch.arange(4.0)  # few outcomes: clearly below
        >>> round(float(best_of_n_kl(p, r, 4, inputs="probs")), 4)
        0.5903
    """
    check_reduction(reduction)
    log_bon = best_of_n_log_probs(base, rewards, n, inputs=inputs, tie_break=tie_break)
    return _kl_to_base(log_bon, base, rewards, inputs, reduction)


# --------------------------------------------------------------------------------------------
# the tilted (KL-regularised optimal) policy
# --------------------------------------------------------------------------------------------
def _tilted_from_log_base(log_base: Tensor, r: Tensor, inv_beta: Tensor) -> Tensor:
    """log_softmax(log π0 + r/β) with inv_beta = 1/β of the leading shape (inf = argmax limit)."""
    inv = inv_beta.unsqueeze(-1)
    in_support = log_base > -math.inf
    finite = torch.isfinite(inv)
    safe_inv = torch.where(finite, inv, torch.zeros_like(inv))
    tilted = torch.log_softmax(log_base + r * safe_inv, dim=-1)
    # β = 0: the base restricted to the top reward among its support
    r_support = torch.where(in_support, r, torch.full_like(r, -math.inf))
    top = r_support == r_support.amax(-1, keepdim=True)
    limit = torch.log_softmax(
        torch.where(top, log_base, torch.full_like(log_base, -math.inf)), dim=-1
    )
    return torch.where(finite, tilted, limit)


def tilted_log_probs(
    base: Tensor, rewards: Tensor, beta: float, *, inputs: str = "logits"
) -> Tensor:
    r"""The KL-regularised optimal policy :math:`\pi_\beta(y) = \pi_0(y)e^{r(y)/\beta}/Z_\beta`.

    .. math:: \pi_\beta = \arg\max_\pi\ \mathbb{E}_\pi[r] - \beta\,\mathrm{KL}(\pi\|\pi_0),
              \qquad Z_\beta = \sum_y \pi_0(y)e^{r(y)/\beta}

    (Gibbs variational principle; the optimum of KL-regularised RL and DPO's implicit policy).
    ``beta = inf`` returns the base; ``beta = 0`` the limit, π₀ restricted to its top-reward
    outcomes.

    Args:
        base: base policy π₀, shape ``(..., K)``.
        rewards: reward per outcome, same shape, finite.
        beta: KL coefficient β >= 0 (0 and ``math.inf`` allowed as the limits).
        inputs: ``"logits"`` | ``"log_probs"`` | ``"probs"``.

    Returns:
        ``log π_β``, shape ``(..., K)``.

    References:
        Yang et al. (2024), arXiv 2404.01730, Eq. (2) (exponential tilting);
        Rafailov et al. (2023), DPO, arXiv 2305.18290, Eq. (4).

    Example:
        >>> import torch
        >>> p = torch.tensor([0.5, 0.5]); r = torch.tensor([0.0, math.log(3.0)])
        >>> tilted_log_probs(p, r, 1.0, inputs="probs").exp()
        tensor([0.2500, 0.7500])
    """
    beta = check_positive_scalar(beta, "beta", allow_zero=True, allow_inf=True, what=_BETA)
    log_base, r = _base_and_rewards(base, rewards, inputs)
    inv = math.inf if beta == 0.0 else 1.0 / beta
    inv_beta = torch.full(r.shape[:-1], inv, dtype=torch.float64)
    return _tilted_from_log_base(log_base, r, inv_beta).to(compute_dtype(base))


def tilted_kl(
    base: Tensor,
    rewards: Tensor,
    beta: float,
    *,
    inputs: str = "logits",
    reduction: str = "none",
) -> Tensor:
    r""":math:`\mathrm{KL}(\pi_\beta\|\pi_0) = \mathbb{E}_{\pi_\beta}[r]/\beta - \log Z_\beta`.

    Computed as :func:`divergent.kl` of :func:`tilted_log_probs` against the base; it is
    non-decreasing in :math:`\lambda = 1/\beta` (its derivative in λ is
    :math:`\lambda\,\mathrm{Var}_{\pi_\beta}(r)`).

    Args:
        base, rewards, beta, inputs: as in :func:`tilted_log_probs`.
        reduction: ``"none"`` (default) | ``"sum"`` | ``"mean"``.

    Returns:
        The KL in nats.

    References:
        Yang et al. (2024), arXiv 2404.01730.
    """
    check_reduction(reduction)
    log_t = tilted_log_probs(base, rewards, beta, inputs=inputs)
    return _kl_to_base(log_t, base, rewards, inputs, reduction)


def tilted_max_kl(base: Tensor, rewards: Tensor, *, inputs: str = "logits") -> Tensor:
    r"""The largest KL the tilted family reaches (β → 0): :math:`-\log\pi_0(r = r_{\max})`.

    Args:
        base, rewards, inputs: as in :func:`tilted_log_probs`.

    Returns:
        One value per row (leading shape).
    """
    log_base, r = _base_and_rewards(base, rewards, inputs)
    r_support = torch.where(log_base > -math.inf, r, torch.full_like(r, -math.inf))
    top = r_support == r_support.amax(-1, keepdim=True)
    masked = torch.where(top, log_base, torch.full_like(log_base, -math.inf))
    return (-torch.logsumexp(masked, -1)).to(compute_dtype(base))


def _same_bits(a: Tensor, b: Tensor) -> bool:
    """Whether two float64 tensors of one shape hold the same bits (-0.0 ≠ 0.0, NaN = NaN)."""
    return torch.equal(a.reshape(-1).view(torch.int64), b.reshape(-1).view(torch.int64))


def tilted_for_kl(
    base: Tensor,
    rewards: Tensor,
    kl_target: float | Tensor,
    *,
    inputs: str = "logits",
    iterations: int = 200,
) -> tuple[Tensor, Tensor]:
    r"""The tilted policy whose KL to the base equals a target: the KL-constrained optimum.

    .. math:: \pi^\star_\Delta = \arg\max_{\pi:\ \mathrm{KL}(\pi\|\pi_0)\le\Delta}
              \mathbb{E}_\pi[r] = \pi_{\beta(\Delta)},\quad
              \mathrm{KL}(\pi_{\beta(\Delta)}\|\pi_0) = \Delta

    β is found by bisection on :math:`\log(1/\beta)` (the KL is monotone in 1/β). A target of
    0 gives β = inf (the base); a target at the maximum :func:`tilted_max_kl` (to 1e-12) gives
    β = 0.

    Args:
        base, rewards, inputs: as in :func:`tilted_log_probs`.
        kl_target: Δ >= 0, a number or a tensor of the leading shape.
        iterations: bisection steps at most (200 reach float64 resolution); the loop stops
            earlier once a step leaves every bracket unchanged (float64 can halve it no more).

    Returns:
        ``(log π_β, β)``: log-probabilities ``(..., K)`` and β of the leading shape.

    Raises:
        ValueError: if Δ < 0 or Δ exceeds the maximum reachable KL.

    References:
        Yang et al. (2024), "Asymptotics of language model alignment", arXiv 2404.01730, §2.
    """
    log_base, r = _base_and_rewards(base, rewards, inputs)
    check_int(iterations, "iterations", 1)
    lead = r.shape[:-1]
    target = torch.as_tensor(kl_target, dtype=torch.float64).expand(lead).clone()
    if bool(torch.isnan(target).any()) or bool((target < 0).any()):
        raise ValueError(f"`kl_target` must be >= 0, got {kl_target!r}")
    max_kl = tilted_max_kl(log_base, r, inputs="log_probs").double()
    tol = 1e-12
    if bool((target > max_kl + tol).any()):
        raise ValueError(
            f"`kl_target` {kl_target!r} exceeds the largest KL the tilted family reaches, "
            f"-log π0(top reward) = {max_kl.tolist()!r} (the β → 0 limit)"
        )

    def kl_at(inv_beta: Tensor) -> Tensor:
        lt = _tilted_from_log_base(log_base, r, inv_beta)
        return kl(lt, log_base, inputs="log_probs", reduction="none")

    lo = torch.full(lead, -60.0, dtype=torch.float64)  # log(1/β)
    hi = torch.full(lead, 60.0, dtype=torch.float64)
    for _ in range(iterations):
        mid = 0.5 * (lo + hi)
        too_small = kl_at(mid.exp()) < target
        new_lo = torch.where(too_small, mid, lo)
        new_hi = torch.where(too_small, hi, mid)
        if _same_bits(new_lo, lo) and _same_bits(new_hi, hi):
            # a step is a deterministic function of the whole (lo, hi) batch: one that leaves
            # every bracket unchanged (the midpoint rounds onto an endpoint), bit for bit,
            # leaves it unchanged for every later step too, so stopping changes no result
            break
        lo, hi = new_lo, new_hi
    inv_beta = (0.5 * (lo + hi)).exp()
    inv_beta = torch.where(target <= 0, torch.zeros_like(inv_beta), inv_beta)
    inv_beta = torch.where(target >= max_kl - tol, torch.full_like(inv_beta, math.inf), inv_beta)
    log_t = _tilted_from_log_base(log_base, r, inv_beta)
    beta = torch.where(inv_beta > 0, 1.0 / inv_beta, torch.full_like(inv_beta, math.inf))
    dtype = compute_dtype(base)
    return log_t.to(dtype), beta.to(dtype)


# --------------------------------------------------------------------------------------------
# measurements
# --------------------------------------------------------------------------------------------
def expected_reward(log_probs: Tensor, rewards: Tensor) -> Tensor:
    r"""Expected reward :math:`\mathbb{E}_\pi[r] = \sum_y \pi(y)\,r(y)` of a policy.

    Args:
        log_probs: normalised ``log π``, shape ``(..., K)`` (``-inf`` = no mass).
        rewards: same shape, finite.

    Returns:
        One value per row (leading shape).
    """
    log_probs, rewards = check_pair(log_probs, rewards, "log_probs", "rewards")
    if not bool(torch.isfinite(rewards).all()):
        raise ValueError("`rewards` must be finite (no NaN or ±inf entries)")
    dtype = compute_dtype(log_probs, rewards)
    return (log_probs.to(dtype).exp() * rewards.to(dtype)).sum(-1)


def kl_regularized_objective(
    policy_log_probs: Tensor, base_log_probs: Tensor, rewards: Tensor, beta: float
) -> Tensor:
    r"""The KL-regularised RL objective :math:`J_\beta(\pi)`.

    .. math:: J_\beta(\pi) = \mathbb{E}_\pi[r] - \beta\,\mathrm{KL}(\pi\|\pi_0)

    Maximised exactly by :func:`tilted_log_probs`, where it equals :math:`\beta\log Z_\beta`.

    Args:
        policy_log_probs: ``log π``, shape ``(..., K)``.
        base_log_probs: ``log π₀``, same shape.
        rewards: same shape, finite.
        beta: β >= 0.

    Returns:
        One value per row (leading shape); ``-inf`` where π has mass outside π₀'s support
        (β > 0).

    References:
        Ziegler et al. (2019), arXiv 1909.08593; Rafailov et al. (2023), arXiv 2305.18290, Eq. 3.
    """
    beta = check_positive_scalar(beta, "beta", allow_zero=True, allow_inf=True, what=_BETA)
    check_pair(policy_log_probs, base_log_probs, "policy_log_probs", "base_log_probs")
    reward = expected_reward(policy_log_probs, rewards)
    if beta == 0.0:
        return reward
    div = kl(policy_log_probs, base_log_probs, inputs="log_probs", reduction="none")
    return reward - beta * div.to(reward.dtype)

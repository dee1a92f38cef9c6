r"""Exact, enumerable toy language models for alignment claims (KL-RL, DPO, f-DPO, ...).

Every sequence of ``length`` tokens over ``vocab_size`` tokens is enumerated (up to 1e5), so
every KL, entropy, expected reward and gradient is an exact finite sum, vectorised over the
support (no Python loop over sequences). Float64 by default.

Support
    ``space = SequenceSpace(vocab_size, length)`` — ``space.size`` = N = V^L;
    ``space.sequences`` ``(N, L)`` long (sequence ``i`` in lexicographic order);
    ``space.index_of(tokens (..., L)) -> (...)``; ``space.prefix_ids`` ``(N, L)``;
    ``space.num_prefixes`` = P. More than ``max_size`` (1e5) sequences: ``ValueError``.

Policies (``nn.Module``; autoregressive, one next-token logit vector per prefix)
    ``TabularPolicy(space, logits=None)`` (``(P, V)`` parameter; ``None`` = uniform),
    ``TabularPolicy.random(space, scale=1.0, generator=g)`` (a random reference),
    ``TabularPolicy.from_log_probs(space, log_probs (N,))`` (exact factorisation of any
    joint), ``MLPPolicy(space, hidden=32, generator=g, init_scale=1.0)``.
    Methods on every policy:
    ``token_log_probs(index=None) -> (n, L)``, ``log_probs(index=None) -> (n,)``
    (``index`` = ``(n,)`` long sequence indices; ``None`` = the whole support, n = N),
    ``probs() -> (N,)``, ``sample(n, generator) -> (n,)`` long indices (exact draws from the
    joint; tokens = ``space.sequences[index]``), ``entropy() -> scalar`` (exact).

Exact quantities (a "policy-like" is a policy or an ``(N,)`` tensor of log-probabilities)
    ``exact_kl(p, q)`` = KL(P‖Q) (swap arguments for the other direction),
    ``exact_divergence(name, p, q, **params)`` (any registered divergence, P-first, through
    ``divergent.functional.divergence``), ``exact_entropy(p)``,
    ``exact_expected_reward(p, rewards)``,
    ``optimal_log_probs(ref, rewards, beta)`` -> ``(N,)`` log π*, π* ∝ π_ref·exp(r/β)
    (via ``divergent.rl.best_of_n.tilted_log_probs``), ``optimal_policy(ref, rewards, beta)``
    -> TabularPolicy, ``log_partition(ref, rewards, beta)`` = log Z,
    ``kl_regularized_value(pi, ref, rewards, beta)`` = E_π[r] − β KL(π‖π_ref)
    (= β log Z − β KL(π‖π*)). All differentiable in the policy.

Batch helpers (for the objectives)
    ``batch_token_log_probs(policy, index) -> (token_log_probs (n, L), mask (n, L) bool)``;
    for preference pairs use ``policy.log_probs(pairs.chosen)`` /
    ``policy.log_probs(pairs.rejected)`` (sequence log-probs, ``(n,)``).

Rewards (``(N,)`` float64, one value per sequence)
    ``token_reward(space, token_values (V,) or (L, V))`` = mean over positions of a per-token
    value; ``token_count(space, token)``; ``target_reward(space, target (L,))``;
    ``random_reward(space, scale=1.0, generator=g)``;
    ``hackable_rewards(space, hack_token=0, hack_bonus=1.0, hack_penalty=1.0, scale=1.0,
    generator=g) -> RewardPair(true, proxy, hack)``: proxy = task + bonus·h, true =
    task − penalty·h, h = fraction of ``hack_token``.

Preferences (Bradley–Terry oracle, seeded)
    ``bradley_terry_pairs(rewards, n_pairs, sampling_log_probs=None, temperature=1.0,
    distinct=True, generator=g) -> PreferencePairs(chosen (n,), rejected (n,))``;
    ``bradley_terry_probability(rewards, first, second, temperature=1.0)``.

Example:
    >>> import torch
    >>> from divergent.toy import SequenceSpace, TabularPolicy, exact_kl, optimal_log_probs
    >>> space = SequenceSpace(vocab_size=3, length=4)
    >>> g = torch.Generator().manual_seed(0)
    >>> ref = TabularPolicy.random(space, generator=g)
    >>> r = torch.randn(space.size, generator=g, dtype=torch.float64)
    >>> star = optimal_log_probs(ref, r, beta=0.5)
    >>> float(torch.logsumexp(star, 0).abs()) < 1e-12
    True
    >>> bool(exact_kl(star, ref) > 0)
    True

References:
    Korbak, Perez, Buckley (2022), arXiv 2205.11275; Rafailov et al. (2023), DPO,
    arXiv 2305.18290; Bradley & Terry (1952).
"""

from divergent.toy.exact import (
    batch_token_log_probs,
    exact_divergence,
    exact_entropy,
    exact_expected_reward,
    exact_kl,
    kl_regularized_value,
    log_partition,
    optimal_log_probs,
    optimal_policy,
    support_log_probs,
)
from divergent.toy.policy import MLPPolicy, SequencePolicy, TabularPolicy
from divergent.toy.preferences import (
    PreferencePairs,
    bradley_terry_pairs,
    bradley_terry_probability,
)
from divergent.toy.rewards import (
    RewardPair,
    hackable_rewards,
    random_reward,
    target_reward,
    token_count,
    token_reward,
)
from divergent.toy.space import MAX_SEQUENCES, SequenceSpace

__all__ = [
    "MAX_SEQUENCES",
    "MLPPolicy",
    "PreferencePairs",
    "RewardPair",
    "SequencePolicy",
    "SequenceSpace",
    "TabularPolicy",
    "batch_token_log_probs",
    "bradley_terry_pairs",
    "bradley_terry_probability",
    "exact_divergence",
    "exact_entropy",
    "exact_expected_reward",
    "exact_kl",
    "hackable_rewards",
    "kl_regularized_value",
    "log_partition",
    "optimal_log_probs",
    "optimal_policy",
    "random_reward",
    "support_log_probs",
    "target_reward",
    "token_count",
    "token_reward",
]

"""KL in reinforcement learning: per-token policy-KL estimators, best-of-N and tilted policies."""

from divergent.rl.best_of_n import (
    best_of_n_kl,
    best_of_n_kl_bound,
    best_of_n_log_probs,
    expected_reward,
    kl_regularized_objective,
    tilted_for_kl,
    tilted_kl,
    tilted_log_probs,
    tilted_max_kl,
)
from divergent.rl.policy_kl import kl_penalty_reward, policy_kl, reference_sample_kl

__all__ = [
    "best_of_n_kl",
    "best_of_n_kl_bound",
    "best_of_n_log_probs",
    "expected_reward",
    "kl_penalty_reward",
    "kl_regularized_objective",
    "policy_kl",
    "reference_sample_kl",
    "tilted_for_kl",
    "tilted_kl",
    "tilted_log_probs",
    "tilted_max_kl",
]

r"""Preference data from a Bradley–Terry oracle over an enumerated support.

Pairs :math:`(a, b)` are drawn i.i.d. from a sampling distribution (default: uniform over
the support, or a reference policy's log-probabilities); the oracle prefers ``a`` with

.. math:: P(a \succ b) = \sigma\!\left(\frac{r(a) - r(b)}{\tau}\right)

(Bradley & Terry 1952; the DPO data model, Rafailov et al. 2023, arXiv 2305.18290).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from divergent._validation import check_int

__all__ = ["PreferencePairs", "bradley_terry_pairs", "bradley_terry_probability"]


@dataclass(frozen=True)
class PreferencePairs:
    """Preference pairs as sequence indices.

    Attributes:
        chosen: ``(n,)`` long indices of the preferred sequences.
        rejected: ``(n,)`` long indices of the dispreferred ones.
    """

    chosen: Tensor
    rejected: Tensor

    def __len__(self) -> int:
        return int(self.chosen.shape[0])


def _check_rewards(rewards: Any) -> Tensor:
    if not isinstance(rewards, Tensor) or rewards.ndim != 1 or not rewards.dtype.is_floating_point:
        raise ValueError("`rewards` must be a 1-D float tensor (one reward per sequence)")
    if not bool(torch.isfinite(rewards).all()):
        raise ValueError("`rewards` must be finite (no NaN or ±inf entries)")
    return rewards


def _check_temperature(temperature: Any) -> float:
    if (
        isinstance(temperature, bool)
        or not isinstance(temperature, (int, float))
        or not (0 < temperature < math.inf)
    ):
        raise ValueError(
            f"`temperature` (Bradley–Terry scale τ) must be a finite number > 0, "
            f"got {temperature!r}"
        )
    return float(temperature)


def bradley_terry_probability(
    rewards: Tensor, first: Tensor, second: Tensor, *, temperature: float = 1.0
) -> Tensor:
    r""":math:`P(\text{first} \succ \text{second}) = \sigma((r_{\text{first}} -
    r_{\text{second}})/\tau)` for index tensors of one shape."""
    rewards = _check_rewards(rewards)
    tau = _check_temperature(temperature)
    return torch.sigmoid((rewards[first] - rewards[second]) / tau)


def bradley_terry_pairs(
    rewards: Tensor,
    n_pairs: int,
    *,
    sampling_log_probs: Tensor | None = None,
    temperature: float = 1.0,
    distinct: bool = True,
    generator: torch.Generator | None = None,
) -> PreferencePairs:
    r"""Draw ``n_pairs`` labelled pairs from a Bradley–Terry oracle (seeded, vectorised).

    Both responses of a pair are drawn i.i.d. from ``sampling_log_probs`` (uniform if
    ``None``); with ``distinct=True`` a pair of identical sequences is redrawn in the second
    slot (rejection, so each pair compares two different sequences); then ``a`` is labelled
    chosen with probability :math:`\sigma((r(a) - r(b))/\tau)`.

    Args:
        rewards: ``(N,)`` latent reward of every sequence.
        n_pairs: number of pairs >= 1.
        sampling_log_probs: ``(N,)`` log-probabilities of the response distribution.
        temperature: τ > 0 (smaller = a more deterministic oracle).
        distinct: redraw identical pairs (needs at least two sequences with mass).
        generator: seeded generator.

    Returns:
        :class:`PreferencePairs` of ``(n_pairs,)`` index tensors.
    """
    rewards = _check_rewards(rewards)
    tau = _check_temperature(temperature)
    check_int(n_pairs, "n_pairs", 1)
    n = rewards.shape[0]
    if sampling_log_probs is None:
        weights = torch.ones(n, dtype=torch.float64)
    else:
        if not isinstance(sampling_log_probs, Tensor) or sampling_log_probs.shape != (n,):
            raise ValueError(f"`sampling_log_probs` must have shape ({n},) like `rewards`")
        weights = sampling_log_probs.detach().to(torch.float64).exp()
        if not bool(torch.isfinite(weights).all()) or float(weights.sum()) <= 0:
            raise ValueError("`sampling_log_probs` must be finite log-probabilities with mass")
    if distinct and int((weights > 0).sum()) < 2:
        raise ValueError("`distinct=True` needs at least two sequences with sampling mass")
    first = torch.multinomial(weights, n_pairs, replacement=True, generator=generator)
    second = torch.multinomial(weights, n_pairs, replacement=True, generator=generator)
    if distinct:
        same = first == second
        while bool(same.any()):  # rejection on the few ties, vectorised per round
            count = int(same.sum())
            redraw = torch.multinomial(weights, count, replacement=True, generator=generator)
            second = second.masked_scatter(same, redraw)
            same = first == second
    p_first = torch.sigmoid((rewards[first] - rewards[second]).to(torch.float64) / tau)
    first_wins = torch.rand(n_pairs, generator=generator, dtype=torch.float64) < p_first
    chosen = torch.where(first_wins, first, second)
    rejected = torch.where(first_wins, second, first)
    return PreferencePairs(chosen=chosen, rejected=rejected)

r"""Reward functions over an enumerated support, each an ``(N,)`` tensor (one value per
sequence, enumeration order), plus a hackable proxy reward beside a true reward.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from divergent.toy.space import SequenceSpace

__all__ = [
    "RewardPair",
    "hackable_rewards",
    "random_reward",
    "target_reward",
    "token_count",
    "token_reward",
]


def _check_finite(value: Any, name: str, *, minimum: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"`{name}` must be a finite number, got {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"`{name}` must be >= {minimum}, got {value!r}")
    return float(value)


def _check_token(space: SequenceSpace, token: Any, name: str) -> int:
    if isinstance(token, bool) or not isinstance(token, int) or not 0 <= token < space.vocab_size:
        raise ValueError(f"`{name}` must be a token in [0, {space.vocab_size}), got {token!r}")
    return token


def token_reward(space: SequenceSpace, token_values: Tensor) -> Tensor:
    r"""Additive per-token reward :math:`r(s) = \frac1L\sum_t w_t(s_t)`.

    Args:
        space: the support.
        token_values: ``(V,)`` (same value at every position) or ``(L, V)``.

    Returns:
        ``(N,)`` float64.
    """
    v, length = space.vocab_size, space.length
    if not isinstance(token_values, Tensor) or tuple(token_values.shape) not in (
        (v,),
        (length, v),
    ):
        got = tuple(token_values.shape) if isinstance(token_values, Tensor) else token_values
        raise ValueError(f"`token_values` must have shape ({v},) or ({length}, {v}), got {got}")
    if not bool(torch.isfinite(token_values).all()):
        raise ValueError("`token_values` must be finite")
    w = token_values.to(torch.float64).expand(length, v)
    return w[torch.arange(length), space.sequences].mean(-1)


def token_count(space: SequenceSpace, token: int) -> Tensor:
    """Fraction of the positions of each sequence holding ``token``, ``(N,)`` float64."""
    token = _check_token(space, token, "token")
    return (space.sequences == token).to(torch.float64).mean(-1)


def target_reward(space: SequenceSpace, target: Tensor) -> Tensor:
    r"""Fraction of positions that match a target sequence, :math:`\frac1L\sum_t[s_t = y_t]`.

    Args:
        space: the support.
        target: ``(L,)`` tokens.

    Returns:
        ``(N,)`` float64 in [0, 1]; 1 exactly on the target.
    """
    index = space.index_of(target)  # validates shape and token range
    if index.ndim != 0:
        raise ValueError(f"`target` must have shape ({space.length},), got {tuple(target.shape)}")
    return (space.sequences == target.long()).to(torch.float64).mean(-1)


def random_reward(
    space: SequenceSpace, *, scale: float = 1.0, generator: torch.Generator | None = None
) -> Tensor:
    r"""I.i.d. :math:`r(s) \sim \mathcal N(0, \text{scale}^2)` per sequence, ``(N,)`` float64."""
    scale = _check_finite(scale, "scale", minimum=0.0)
    return scale * torch.randn(space.size, generator=generator, dtype=torch.float64)


@dataclass(frozen=True)
class RewardPair:
    """A true reward and a proxy that can be hacked, both ``(N,)`` float64.

    Attributes:
        true: the reward we care about.
        proxy: the reward the optimiser sees; agrees with ``true`` up to the hack feature.
        hack: the hack feature in [0, 1] (``proxy - true = (bonus + penalty) * hack``).
    """

    true: Tensor
    proxy: Tensor
    hack: Tensor


def hackable_rewards(
    space: SequenceSpace,
    *,
    hack_token: int = 0,
    hack_bonus: float = 1.0,
    hack_penalty: float = 1.0,
    scale: float = 1.0,
    generator: torch.Generator | None = None,
) -> RewardPair:
    r"""A true reward and a hackable proxy: the proxy pays for a token the true reward punishes.

    With a task reward :math:`g(s) = \frac1L\sum_t w_t(s_t)` (random per-position token
    values :math:`w_t(v)\sim\mathcal N(0,\text{scale}^2)`, :math:`w_t(\text{hack}) = 0`) and
    the hack feature :math:`h(s)` = fraction of positions holding ``hack_token``:

    .. math:: r_{\text{true}} = g - \text{penalty}\cdot h,\qquad
              r_{\text{proxy}} = g + \text{bonus}\cdot h

    Optimising the proxy hard fills sequences with the hack token and lowers the true reward
    (reward hacking, Goodhart); a KL prior to a reference that rarely emits it limits the
    damage.

    Args:
        space: the support.
        hack_token: the exploited token.
        hack_bonus: proxy's pay per unit of the hack feature (>= 0).
        hack_penalty: true reward's loss per unit of the hack feature (>= 0).
        scale: standard deviation of the task token values.
        generator: seeded generator for the task values.

    Returns:
        A :class:`RewardPair`.
    """
    hack_token = _check_token(space, hack_token, "hack_token")
    bonus = _check_finite(hack_bonus, "hack_bonus", minimum=0.0)
    penalty = _check_finite(hack_penalty, "hack_penalty", minimum=0.0)
    scale = _check_finite(scale, "scale", minimum=0.0)
    values = scale * torch.randn(
        space.length, space.vocab_size, generator=generator, dtype=torch.float64
    )
    values[:, hack_token] = 0.0
    task = token_reward(space, values)
    hack = token_count(space, hack_token)
    return RewardPair(true=task - penalty * hack, proxy=task + bonus * hack, hack=hack)

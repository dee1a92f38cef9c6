r"""Sequence-level distributions of a memoryless (i.i.d.) language model, by token counts.

A memoryless LM draws m tokens i.i.d. from :math:`p` over an alphabet of size A; with an
additive reward :math:`R(x_{1:m}) = \sum_t r(x_t)` every sequence with the same token counts
:math:`(n_1,\dots,n_A)` (a composition of m) has the same probability and reward. Any policy
that treats equal-reward sequences alike (best-of-N with random tie-breaking, the tilted policy
:math:`\pi_0 e^{R/\beta}/Z`) is uniform within a composition relative to the base, so KLs and
expected rewards over the :math:`A^m` sequences equal those over the
:math:`\binom{m+A-1}{A-1}` compositions, each weighted by its multinomial probability.

Used by the best-of-N asymptotics reproduction (Yang et al. 2024, arXiv 2404.01730).
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.special import gammaln

__all__ = ["composition_level_base", "compositions"]


def compositions(m: int, a: int) -> np.ndarray:
    """All count vectors (n_1..n_a) with Σ n_i = m, shape (C(m+a-1, a-1), a).

    >>> compositions(2, 2).tolist()
    [[0, 2], [1, 1], [2, 0]]
    """
    if int(m) != m or m < 0 or int(a) != a or a < 1:
        raise ValueError(f"`m` must be an integer ≥ 0 and `a` ≥ 1, got m={m!r}, a={a!r}")
    if a == 1:
        return np.array([[m]], dtype=np.int64)
    rows = []
    for first in range(m + 1):
        rest = compositions(m - first, a - 1)
        rows.append(np.concatenate([np.full((rest.shape[0], 1), first), rest], axis=1))
    return np.concatenate(rows, axis=0)


def composition_level_base(
    token_probs: np.ndarray, token_rewards: np.ndarray, m: int
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Log-probability and reward of each composition of a length-m i.i.d. sequence.

    .. math:: \log P(n) = \log\frac{m!}{\prod_i n_i!} + \sum_i n_i \log p_i, \qquad
              R(n) = \sum_i n_i r_i

    Args:
        token_probs: p, shape (A,), positive, summing to 1.
        token_rewards: r, shape (A,).
        m: sequence length ≥ 0.

    Returns:
        (log-probabilities, rewards), float64 tensors over :func:`compositions` ``(m, A)``.

    >>> lp, r = composition_level_base(np.array([0.5, 0.5]), np.array([0.0, 1.0]), 2)
    >>> lp.exp().tolist(), r.tolist()
    ([0.25, 0.5, 0.25], [2.0, 1.0, 0.0])
    """
    p = np.asarray(token_probs, dtype=np.float64)
    r = np.asarray(token_rewards, dtype=np.float64)
    if p.ndim != 1 or r.shape != p.shape or not (p > 0).all() or abs(p.sum() - 1.0) > 1e-9:
        raise ValueError(
            "`token_probs` must be 1-D, positive and sum to 1, and `token_rewards` of its shape;"
            f" got shapes {p.shape}, {r.shape} and sum {p.sum()!r}"
        )
    counts = compositions(m, p.shape[0])
    log_coef = gammaln(m + 1.0) - gammaln(counts + 1.0).sum(axis=1)
    log_p = log_coef + counts @ np.log(p)
    reward = counts @ r
    return torch.from_numpy(log_p), torch.from_numpy(reward.astype(np.float64))

r"""Autoregressive policies over an enumerated :class:`~divergent.toy.space.SequenceSpace`.

A policy holds one logit vector per prefix (the context of the next token):

.. math:: \pi(s) = \prod_{t=0}^{L-1} \pi(s_t \mid s_{<t}),
          \qquad \pi(\cdot\mid s_{<t}) = \mathrm{softmax}(z_{\mathrm{id}(s_{<t})})

:class:`TabularPolicy` stores the ``(P, V)`` logit table directly (any distribution over the
support is exactly representable: :meth:`TabularPolicy.from_log_probs`); :class:`MLPPolicy`
computes it with a tiny MLP from a one-hot encoding of the prefix. Every quantity below is
exact and vectorised over the support (a gather and a sum; no Python loop over sequences).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from divergent._validation import check_int
from divergent.toy.space import SequenceSpace

__all__ = ["MLPPolicy", "SequencePolicy", "TabularPolicy"]


def _check_space(space: Any) -> SequenceSpace:
    if not isinstance(space, SequenceSpace):
        raise ValueError(f"`space` must be a SequenceSpace, got {type(space).__name__}")
    return space


def _check_dtype(dtype: Any) -> torch.dtype:
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"`dtype` must be torch.float32 or torch.float64, got {dtype!r}")
    return dtype


class SequencePolicy(nn.Module):
    r"""Base class: an autoregressive policy given by :meth:`prefix_logits` ``(P, V)``.

    Subclasses implement :meth:`prefix_logits`; everything else (exact log-probabilities,
    sampling, entropy) follows.

    Args:
        space: the enumerated support.
    """

    def __init__(self, space: SequenceSpace) -> None:
        super().__init__()
        self.space = _check_space(space)

    def prefix_logits(self) -> Tensor:  # pragma: no cover - abstract
        """Logits of the next token after every prefix, shape ``(P, V)``."""
        raise NotImplementedError

    def prefix_log_probs(self) -> Tensor:
        r"""Conditional log-probabilities :math:`\log\pi(v\mid\text{prefix})`, ``(P, V)``."""
        return torch.log_softmax(self.prefix_logits(), dim=-1)

    def token_log_probs(self, index: Tensor | None = None) -> Tensor:
        r"""Per-token log-probabilities :math:`\log\pi(s_t\mid s_{<t})` of sequences.

        Args:
            index: ``(n,)`` long sequence indices (e.g. from :meth:`sample`); ``None`` = the
                whole support in order (n = N).

        Returns:
            ``(n, L)``; differentiable with respect to the policy's parameters.
        """
        table = self.prefix_log_probs()
        space = self.space
        if index is None:
            return table[space.prefix_ids, space.sequences]
        index = space.check_index(index)
        return table[space.prefix_ids[index], space.sequences[index]]

    def log_probs(self, index: Tensor | None = None) -> Tensor:
        r"""Sequence log-probabilities :math:`\log\pi(s) = \sum_t \log\pi(s_t\mid s_{<t})`.

        Args:
            index: ``(n,)`` long sequence indices; ``None`` = the whole support (n = N).

        Returns:
            ``(n,)``; over the whole support it is normalised (logsumexp 0).
        """
        return self.token_log_probs(index).sum(-1)

    def probs(self) -> Tensor:
        """Probabilities of every sequence of the support, ``(N,)``."""
        return self.log_probs().exp()

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        r"""Draw ``n`` i.i.d. sequences :math:`s \sim \pi` exactly (from the joint).

        Args:
            n: number of samples >= 1.
            generator: a seeded :class:`torch.Generator` for reproducible draws.

        Returns:
            ``(n,)`` long sequence indices; tokens are ``space.sequences[index]``.
        """
        check_int(n, "n", 1, "number of samples")
        probs = self.probs().to(torch.float64)
        return torch.multinomial(probs, n, replacement=True, generator=generator)

    def entropy(self) -> Tensor:
        r"""Exact entropy :math:`H(\pi) = -\sum_s \pi(s)\log\pi(s)` in nats (differentiable)."""
        log_p = self.log_probs()
        finite = log_p > -math.inf
        safe = torch.where(finite, log_p, torch.zeros_like(log_p))
        return -(safe.exp() * safe).sum()


class TabularPolicy(SequencePolicy):
    r"""One free logit vector per prefix: a ``(P, V)`` parameter table.

    Args:
        space: the enumerated support.
        logits: initial ``(P, V)`` table (copied); ``None`` = zeros (the uniform policy).
        dtype: ``torch.float64`` (default; exact checks) or ``torch.float32``.

    Example:
        >>> space = SequenceSpace(2, 3)
        >>> pi = TabularPolicy(space)
        >>> pi.probs()
        tensor([0.1250, 0.1250, 0.1250, 0.1250, 0.1250, 0.1250, 0.1250, 0.1250],
               dtype=torch.float64, grad_fn=<ExpBackward0>)
    """

    def __init__(
        self,
        space: SequenceSpace,
        logits: Tensor | None = None,
        *,
        dtype: torch.dtype = torch.float64,
    ) -> None:
        super().__init__(space)
        dtype = _check_dtype(dtype)
        shape = (space.num_prefixes, space.vocab_size)
        if logits is None:
            table = torch.zeros(shape, dtype=dtype)
        else:
            if not isinstance(logits, Tensor) or tuple(logits.shape) != shape:
                got = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits)
                raise ValueError(f"`logits` must be a tensor of shape {shape}, got {got}")
            if bool(torch.isnan(logits).any()) or bool((logits == math.inf).any()):
                raise ValueError("`logits` must not contain NaN or +inf")
            table = logits.detach().to(dtype).clone()
        self.logits = nn.Parameter(table)

    def prefix_logits(self) -> Tensor:
        return self.logits

    @classmethod
    def random(
        cls,
        space: SequenceSpace,
        *,
        scale: float = 1.0,
        generator: torch.Generator | None = None,
        dtype: torch.dtype = torch.float64,
    ) -> TabularPolicy:
        r"""A policy with i.i.d. :math:`\mathcal N(0, \text{scale}^2)` logits (a random reference).

        Args:
            space: the support.
            scale: standard deviation of the logits (>= 0); larger = peakier.
            generator: seeded generator.
            dtype: parameter dtype.
        """
        if not isinstance(scale, (int, float)) or not math.isfinite(scale) or scale < 0:
            raise ValueError(f"`scale` must be a finite number >= 0, got {scale!r}")
        shape = (space.num_prefixes, space.vocab_size)
        logits = scale * torch.randn(shape, generator=generator, dtype=torch.float64)
        return cls(space, logits, dtype=dtype)

    @classmethod
    def from_log_probs(
        cls, space: SequenceSpace, log_probs: Tensor, *, dtype: torch.dtype = torch.float64
    ) -> TabularPolicy:
        r"""The autoregressive factorisation of any distribution over the support.

        With prefix marginals :math:`m(s_{<t}) = \log\sum_{s' : s'_{<t} = s_{<t}} p(s')`, the
        logits are :math:`z(s_{<t})_v = m(s_{<t}v) - m(s_{<t})`; a prefix of zero mass gets
        uniform logits (it is never reached). Exact: ``from_log_probs(p).log_probs() == p``
        up to rounding wherever :math:`p > 0`.

        Args:
            space: the support.
            log_probs: ``(N,)`` log-probabilities of the sequences in enumeration order,
                normalised (logsumexp 0; ``-inf`` = no mass).
            dtype: parameter dtype.

        Returns:
            A :class:`TabularPolicy` whose joint is ``exp(log_probs)``.
        """
        if not isinstance(log_probs, Tensor) or tuple(log_probs.shape) != (space.size,):
            got = tuple(log_probs.shape) if isinstance(log_probs, Tensor) else type(log_probs)
            raise ValueError(f"`log_probs` must have shape ({space.size},), got {got}")
        lp = log_probs.detach().to(torch.float64)
        if bool(torch.isnan(lp).any()) or bool((lp > 1e-9).any()):
            raise ValueError("`log_probs` must be <= 0 and not NaN")
        total = float(torch.logsumexp(lp, 0))
        if abs(total) > 1e-6:
            raise ValueError(
                f"`log_probs` must be normalised (logsumexp 0), got logsumexp {total:.3g}"
            )
        v, length = space.vocab_size, space.length
        rows = []
        for t in range(length):  # L prefix lengths, each a vectorised reshape
            child = torch.logsumexp(lp.reshape(v ** (t + 1), -1), dim=-1).reshape(v**t, v)
            parent = torch.logsumexp(child, dim=-1, keepdim=True)
            cond = child - parent
            cond = torch.where(torch.isfinite(parent), cond, torch.zeros_like(cond))
            rows.append(cond)
        return cls(space, torch.cat(rows, 0), dtype=dtype)


class MLPPolicy(SequencePolicy):
    r"""A tiny MLP maps a one-hot prefix encoding to the next-token logits.

    Features of a prefix :math:`s_{<t}`: one-hot tokens at positions ``0..L-2`` (zeros where
    the prefix is shorter) and a one-hot of the position ``t``; ``Linear → tanh → Linear``.
    The parameterisation shares statistics across prefixes (unlike the table), so a gradient
    step on one sequence moves others.

    Args:
        space: the support.
        hidden: hidden width (>= 1).
        generator: seeded generator for the initialisation.
        init_scale: multiplies the output layer's initial weights (0 = the uniform policy).
        dtype: parameter dtype.
    """

    def __init__(
        self,
        space: SequenceSpace,
        *,
        hidden: int = 32,
        generator: torch.Generator | None = None,
        init_scale: float = 1.0,
        dtype: torch.dtype = torch.float64,
    ) -> None:
        super().__init__(space)
        dtype = _check_dtype(dtype)
        check_int(hidden, "hidden", 1, "hidden width")
        v, length = space.vocab_size, space.length
        tokens = space.prefix_tokens  # (P, L-1), -1 = padding
        onehot = torch.zeros(space.num_prefixes, max(length - 1, 0), v + 1, dtype=dtype)
        onehot.scatter_(-1, (tokens + 1).unsqueeze(-1), 1.0)
        token_features = onehot[..., 1:].flatten(1)  # drop the padding channel
        position = torch.nn.functional.one_hot(space.prefix_lengths, length).to(dtype)
        self.register_buffer("features", torch.cat([token_features, position], 1))
        n_in = self.features.shape[1]
        bound_in, bound_out = 1.0 / math.sqrt(n_in), 1.0 / math.sqrt(hidden)

        def uniform(shape: tuple[int, ...], bound: float) -> Tensor:
            u = torch.rand(shape, generator=generator, dtype=torch.float64)
            return ((2 * u - 1) * bound).to(dtype)

        self.w_in = nn.Parameter(uniform((n_in, hidden), bound_in))
        self.b_in = nn.Parameter(uniform((hidden,), bound_in))
        self.w_out = nn.Parameter(init_scale * uniform((hidden, v), bound_out))
        self.b_out = nn.Parameter(torch.zeros(v, dtype=dtype))

    def prefix_logits(self) -> Tensor:
        return torch.tanh(self.features @ self.w_in + self.b_in) @ self.w_out + self.b_out

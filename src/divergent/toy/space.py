r"""The enumerable support of a toy sequence model: all :math:`V^L` token sequences.

A :class:`SequenceSpace` lists every sequence of ``length`` tokens over ``vocab_size`` tokens in
lexicographic order (sequence index :math:`i = \sum_t s_t V^{L-1-t}`), and every *prefix*
(the context an autoregressive model conditions on) with a flat prefix id, so that a policy
holds one logit vector per prefix and every exact quantity is a vectorised gather or a sum
over the support.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from divergent._validation import check_int

__all__ = ["MAX_SEQUENCES", "SequenceSpace"]

MAX_SEQUENCES = 100_000
"""Largest support :math:`V^L` a :class:`SequenceSpace` enumerates by default."""


class SequenceSpace:
    r"""Every sequence of ``length`` tokens over a vocabulary of ``vocab_size``, enumerated.

    Attributes:
        vocab_size: V.
        length: L.
        size: number of sequences :math:`N = V^L`.
        sequences: ``(N, L)`` long tensor, row ``i`` is sequence ``i`` (lexicographic order).
        num_prefixes: number of distinct contexts :math:`P = \sum_{t<L} V^t`
            (the empty prefix, the V one-token prefixes, ...).
        prefix_ids: ``(N, L)`` long tensor, entry ``[i, t]`` is the id of the prefix
            :math:`s_{<t}` of sequence ``i`` (the context of token ``t``).
        prefix_lengths: ``(P,)`` the length of each prefix.
        prefix_tokens: ``(P, L - 1)`` the tokens of each prefix, padded with ``-1``.

    Args:
        vocab_size: V >= 2.
        length: L >= 1.
        max_size: refuse supports larger than this (default :data:`MAX_SEQUENCES` = 1e5).

    Raises:
        ValueError: naming ``vocab_size`` / ``length`` when :math:`V^L` exceeds ``max_size``.

    Example:
        >>> space = SequenceSpace(3, 2)
        >>> space.size, space.num_prefixes
        (9, 4)
        >>> space.sequences[5].tolist(), space.prefix_ids[5].tolist()
        ([1, 2], [0, 2])
    """

    def __init__(self, vocab_size: int, length: int, *, max_size: int = MAX_SEQUENCES) -> None:
        vocab_size = check_int(vocab_size, "vocab_size", 2, "number of tokens")
        length = check_int(length, "length", 1, "tokens per sequence")
        max_size = check_int(max_size, "max_size", 1, "largest enumerable support")
        size = vocab_size**length
        if size > max_size:
            raise ValueError(
                f"`vocab_size` ** `length` = {vocab_size}**{length} = {size} sequences is too "
                f"many to enumerate (allowed: at most max_size={max_size}); lower `vocab_size` "
                "or `length`"
            )
        self.vocab_size = vocab_size
        self.length = length
        self.size = size
        # powers[t] = V^(L-1-t): digit weights of the lexicographic index
        powers = vocab_size ** torch.arange(length - 1, -1, -1, dtype=torch.long)
        index = torch.arange(size, dtype=torch.long)
        self.sequences = (index.unsqueeze(1) // powers) % vocab_size  # (N, L)
        # prefix of length t: id = offset[t] + (index of s_<t among V^t prefixes)
        counts = vocab_size ** torch.arange(length, dtype=torch.long)  # V^t, t < L
        self.prefix_offsets = torch.cumsum(counts, 0) - counts  # (L,)
        self.num_prefixes = int(counts.sum())
        prefix_rank = index.unsqueeze(1) // (vocab_size * powers)  # (N, L): s_<t as a number
        self.prefix_ids = self.prefix_offsets + prefix_rank
        lengths = torch.repeat_interleave(torch.arange(length), counts)
        self.prefix_lengths = lengths
        # tokens of each prefix (its rank written in base V with t digits), padded with -1
        rank = torch.arange(self.num_prefixes) - self.prefix_offsets[lengths]
        positions = torch.arange(max(length - 1, 0))
        exponent = (lengths.unsqueeze(1) - 1 - positions).clamp(min=0)
        digits = (rank.unsqueeze(1) // vocab_size**exponent) % vocab_size
        self.prefix_tokens = torch.where(
            positions < lengths.unsqueeze(1), digits, torch.full_like(digits, -1)
        )

    def __repr__(self) -> str:
        return f"SequenceSpace(vocab_size={self.vocab_size}, length={self.length})"

    def index_of(self, sequences: Tensor) -> Tensor:
        r"""Index of each sequence in the enumeration, :math:`i = \sum_t s_t V^{L-1-t}`.

        Args:
            sequences: ``(..., L)`` integer tokens in ``[0, V)``.

        Returns:
            ``(...)`` long tensor of indices in ``[0, N)``.
        """
        if not isinstance(sequences, Tensor) or sequences.dtype.is_floating_point:
            raise ValueError(
                f"`sequences` must be an integer tensor of shape (..., {self.length}), "
                f"got {type(sequences).__name__}"
            )
        if sequences.ndim < 1 or sequences.shape[-1] != self.length:
            raise ValueError(
                f"`sequences` must have last dimension length={self.length}, "
                f"got shape {tuple(sequences.shape)}"
            )
        if sequences.numel() and (sequences.min() < 0 or sequences.max() >= self.vocab_size):
            raise ValueError(f"`sequences` tokens must lie in [0, {self.vocab_size})")
        powers = self.vocab_size ** torch.arange(self.length - 1, -1, -1, dtype=torch.long)
        return (sequences.long() * powers).sum(-1)

    def check_index(self, index: Any, name: str = "index") -> Tensor:
        """Validate a long tensor of sequence indices in ``[0, N)``; returns it."""
        if not isinstance(index, Tensor) or index.dtype not in (torch.long, torch.int32):
            raise ValueError(
                f"`{name}` must be an integer tensor of sequence indices in [0, {self.size}), "
                f"got {type(index).__name__}"
                + (f" of dtype {index.dtype}" if isinstance(index, Tensor) else "")
            )
        if index.numel() and (index.min() < 0 or index.max() >= self.size):
            raise ValueError(
                f"`{name}` must hold sequence indices in [0, {self.size}), got values in "
                f"[{int(index.min())}, {int(index.max())}]"
            )
        return index.long()

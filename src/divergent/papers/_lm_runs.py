"""Shared set-up of the LM reproductions (dackl, mathpuma, llavamod); not a reproduction.

The embedded corpus (Python's ``pydoc_data.topics``, split by document) encoded character by
character (a 96-symbol vocabulary keeps one training step at a few milliseconds on one core),
a dense teacher transformer trained with cross-entropy, and the sizes every LM reproduction
uses. See :mod:`divergent.train.tiny_lm`.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from divergent.repro import ReproContext
from divergent.train.tiny_lm import CharCorpus, TinyCausalLM, char_corpus, train_lm

__all__ = [
    "BATCH",
    "LENGTH",
    "LMSizes",
    "ce_step",
    "corpus",
    "sizes",
    "train_teacher",
    "word_spans",
]

LENGTH = 32  # characters per training window (the models' context)
BATCH = 32  # windows per step


@dataclass(frozen=True)
class LMSizes:
    """Steps of one run (quick or full)."""

    teacher_steps: int
    student_steps: int
    n_seeds: int
    eval_windows: int


def sizes(quick: bool, *, n_seeds_full: int = 6) -> LMSizes:
    """Quick: indicative (seconds); full: minutes on one core."""
    if quick:
        return LMSizes(teacher_steps=50, student_steps=30, n_seeds=3, eval_windows=60)
    return LMSizes(teacher_steps=1500, student_steps=500, n_seeds=n_seeds_full, eval_windows=1800)


@functools.lru_cache(maxsize=1)
def corpus() -> CharCorpus:
    """The character-encoded embedded corpus (cached for the process)."""
    return char_corpus(vocab_size=96)


def ce_step(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    """Mean next-token cross-entropy (the supervised loss)."""
    return F.cross_entropy(model(x).flatten(0, 1), y.flatten())


def train_teacher(ctx: ReproContext, steps: int, *, seed_offset: int = 0) -> TinyCausalLM:
    """A dense teacher (d = 64, 2 layers, 4 heads) trained with CE on the training documents."""
    c = corpus()
    teacher = TinyCausalLM(
        c.vocab.size, d_model=64, n_layers=2, n_heads=4, context=LENGTH, seed=ctx.seed + 7
    )
    train_lm(
        teacher,
        ce_step,
        c.train,
        steps=steps,
        batch_size=BATCH,
        length=LENGTH,
        generator=ctx.generator(1000 + seed_offset),
        lr=3e-3,
        warmup=min(100, steps // 10),
    )
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


def word_spans(targets: Tensor) -> Tensor:
    """Span ids of character targets ``(B, L)``: each run of letters, digits and underscores
    (a word) gets one id ≥ 0, every other character −1 (the chunker of the span loss)."""
    chars = corpus().vocab.chars
    is_word = torch.tensor([ch.isalnum() or ch == "_" for ch in chars] + [False])
    word = is_word[targets]
    starts = word & ~torch.cat([torch.zeros_like(word[:, :1]), word[:, :-1]], dim=1)
    ids = starts.long().cumsum(1)
    return torch.where(word, ids, torch.full_like(ids, -1))

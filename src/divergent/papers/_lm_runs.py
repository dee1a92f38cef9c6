"""Shared set-up of the LM reproductions (dackl, mathpuma, llavamod); not a reproduction.

The embedded corpus (Python's ``pydoc_data.topics``, split by document) encoded character by
character (a 96-symbol vocabulary keeps one training step at a few milliseconds on one core),
a dense teacher transformer trained with cross-entropy. The run sizes are in
``catalog.toml``. See :mod:`divergent.train.tiny_lm`.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from divergent.repro import ReproContext
from divergent.train.tiny_lm import (
    CharCorpus,
    LMLossFn,
    TinyCausalLM,
    char_corpus,
    evaluate_lm,
    train_lm,
)

__all__ = [
    "BATCH",
    "LENGTH",
    "ce_step",
    "corpus",
    "fit_lm",
    "heldout_scores",
    "small_student",
    "train_teacher",
    "trained_teacher",
    "word_spans",
]

LENGTH = 32  # characters per training window (the models' context)
BATCH = 32  # windows per step


@functools.lru_cache(maxsize=1)
def corpus() -> CharCorpus:
    """The character-encoded embedded corpus (cached for the process)."""
    return char_corpus(vocab_size=96)


def ce_step(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    """Mean next-token cross-entropy (the supervised loss)."""
    return F.cross_entropy(model(x).flatten(0, 1), y.flatten())


def fit_lm(
    model: nn.Module,
    loss: LMLossFn,
    *,
    steps: int,
    windows: torch.Generator,
    lr: float = 3e-3,
    warmup: int = 0,
) -> list[float]:
    """:func:`~divergent.train.tiny_lm.train_lm` on the training documents, ``BATCH`` windows
    of ``LENGTH`` characters a step drawn from ``windows``; returns the losses."""
    return train_lm(
        model,
        loss,
        corpus().train,
        steps=steps,
        batch_size=BATCH,
        length=LENGTH,
        generator=windows,
        lr=lr,
        warmup=warmup,
    )


def small_student(seed: int, **shape: Any) -> TinyCausalLM:
    """A small transformer on the corpus vocabulary: d = 32, one layer, two heads unless
    ``shape`` (keywords of :class:`~divergent.train.tiny_lm.TinyCausalLM`) says otherwise."""
    dims = {"d_model": 32, "n_layers": 1, "n_heads": 2, **shape}
    return TinyCausalLM(corpus().vocab.size, context=LENGTH, seed=seed, **dims)


def train_teacher(ctx: ReproContext, steps: int, *, seed_offset: int = 0) -> TinyCausalLM:
    """A dense teacher (d = 64, 2 layers, 4 heads) trained with CE on the training documents."""
    teacher = small_student(ctx.seed + 7, d_model=64, n_layers=2, n_heads=4)
    fit_lm(
        teacher,
        ce_step,
        steps=steps,
        windows=ctx.generator(1000 + seed_offset),
        warmup=min(100, steps // 10),
    )
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


def trained_teacher(ctx: ReproContext) -> tuple[TinyCausalLM, dict[str, float]]:
    """:func:`train_teacher` for ``ctx.size.teacher_steps`` and its held-out ``nll`` (nats per
    character) and ``accuracy`` on ``ctx.size.eval_windows`` windows."""
    ctx.progress("teacher", 0.0)
    teacher = train_teacher(ctx, ctx.size.teacher_steps)
    e = evaluate_lm(teacher, corpus().heldout, length=LENGTH, max_windows=ctx.size.eval_windows)
    return teacher, {"nll": float(np.log(e.perplexity)), "accuracy": e.accuracy}


def heldout_scores(student: nn.Module, teacher: nn.Module, ctx: ReproContext) -> dict[str, float]:
    """A student's held-out ``nll`` (nats per character), ``token_kl`` (teacher ‖ student) and
    ``accuracy`` on ``ctx.size.eval_windows`` windows."""
    e = evaluate_lm(
        student, corpus().heldout, length=LENGTH, teacher=teacher, max_windows=ctx.size.eval_windows
    )
    return {"nll": float(np.log(e.perplexity)), "token_kl": e.token_kl, "accuracy": e.accuracy}


def word_spans(targets: Tensor) -> Tensor:
    """Span ids of character targets ``(B, L)``: each run of letters, digits and underscores
    (a word) gets one id ≥ 0, every other character −1 (the chunker of the span loss)."""
    chars = corpus().vocab.chars
    is_word = torch.tensor([ch.isalnum() or ch == "_" for ch in chars] + [False])
    word = is_word[targets]
    starts = word & ~torch.cat([torch.zeros_like(word[:, :1]), word[:, :-1]], dim=1)
    ids = starts.long().cumsum(1)
    return torch.where(word, ids, torch.full_like(ids, -1))

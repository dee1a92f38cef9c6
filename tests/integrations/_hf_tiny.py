"""Tiny randomly initialised GPT-2 models shared by the Hugging Face integration tests and the
DDP worker (no dropout, token ids 0 = bos/pad, 1 = eos)."""

from __future__ import annotations

import torch
from transformers import GPT2Config, GPT2LMHeadModel


def tiny_gpt2(
    *,
    seed: int,
    vocab: int,
    n_layer: int = 1,
    n_embd: int = 32,
    n_positions: int = 64,
    init: float = 0.02,
) -> GPT2LMHeadModel:
    """A GPT-2 with 2 heads, seeded with ``torch.manual_seed(seed)`` before initialisation."""
    torch.manual_seed(seed)
    config = GPT2Config(
        n_layer=n_layer,
        n_embd=n_embd,
        n_head=2,
        vocab_size=vocab,
        n_positions=n_positions,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=0,
        initializer_range=init,
    )
    return GPT2LMHeadModel(config)

"""Shared helpers for Hugging Face causal language models (private to ``integrations`` and the
CLI commands that drive it).

What the distillation trainer and the teacher-cache writer both need: check that a model is a
causal LM, find its backbone (the model without its output head) and its head, read how many
positions it takes, run the backbone to the final hidden states, and project hidden states to
logits the way the model's own ``forward`` does (``logit_scale``, ``final_logit_softcapping``).
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import Tensor, nn

from divergent.objectives.token import logit_transform_from_config

__all__ = [
    "backbone_of",
    "check_causal_lm",
    "check_same_vocab",
    "eos_token_ids",
    "final_hidden_states",
    "head_logits",
    "max_positions",
    "output_head",
    "pad_token_id",
    "position_ids_from_mask",
    "vocab_size_of",
]


def check_causal_lm(model: Any, name: str) -> nn.Module:
    """Return ``model`` if it is a decoder-only causal LM with an output head, else raise.

    Raises:
        ValueError: one line naming the argument, the class, and how to load a causal LM.
    """
    if not isinstance(model, nn.Module):
        raise ValueError(
            f"`{name}` must be a causal language model (a transformers PreTrainedModel loaded "
            f"with AutoModelForCausalLM), got {type(model).__name__}"
        )
    config = getattr(model, "config", None)
    get_head = getattr(model, "get_output_embeddings", None)
    head = get_head() if callable(get_head) else None
    if config is None or head is None or getattr(config, "is_encoder_decoder", False):
        reason = (
            "it has no config"
            if config is None
            else "it is an encoder-decoder model"
            if getattr(config, "is_encoder_decoder", False)
            else "it has no output head (get_output_embeddings() is None)"
        )
        raise ValueError(
            f"`{name}` ({type(model).__name__}) is not a causal language model: {reason}; load "
            "a decoder-only model with transformers.AutoModelForCausalLM.from_pretrained"
        )
    output_head(model, name)
    return model


def output_head(model: nn.Module, name: str = "model") -> nn.Linear:
    """The model's output embedding (``lm_head``) as an ``nn.Linear``-like module."""
    head = model.get_output_embeddings()  # type: ignore[operator]
    weight = getattr(head, "weight", None)
    if not isinstance(weight, Tensor) or weight.dim() != 2:
        raise ValueError(
            f"`{name}` ({type(model).__name__}): its output head {type(head).__name__} has no 2-D "
            "`weight` (V, H); the fused path needs a linear head (pass fused=False otherwise)"
        )
    return head


def vocab_size_of(model: nn.Module) -> int:
    """Number of rows of the model's output head (the logits' last dimension)."""
    return int(output_head(model).weight.shape[0])


def check_same_vocab(student: nn.Module, teacher: nn.Module, vocab: str) -> None:
    """Refuse a teacher whose head has another vocabulary size than the student's.

    ``vocab="truncate"`` allows it (both heads cut to the first ``min(V_s, V_t)`` rows, for
    heads padded with extra rows over the same tokenizer).
    """
    v_s, v_t = vocab_size_of(student), vocab_size_of(teacher)
    if v_s != v_t and vocab != "truncate":
        raise ValueError(
            f"teacher and student vocabularies differ: teacher head has {v_t} rows, student head "
            f"{v_s}; if both use one tokenizer and a head is padded, pass vocab='truncate'; for "
            "different tokenizers use the cross-tokenizer ULD loss (divergent.transport.uld)"
        )


def backbone_of(model: nn.Module) -> nn.Module:
    """The model without its head: ``getattr(model, model.base_model_prefix)``, else
    ``model.get_decoder()``; raises if neither is a separate module."""
    prefix = getattr(model, "base_model_prefix", "")
    base = getattr(model, prefix, None) if prefix else None
    if not isinstance(base, nn.Module) or base is model:
        get_decoder = getattr(model, "get_decoder", None)
        base = get_decoder() if callable(get_decoder) else None
    if not isinstance(base, nn.Module) or base is model:
        raise ValueError(
            f"cannot find the backbone of {type(model).__name__} (no `{prefix}` attribute and no "
            "get_decoder()); pass fused=False to use the model's full forward instead"
        )
    return base


def position_ids_from_mask(attention_mask: Tensor) -> Tensor:
    """Positions counted over attended tokens only (correct for left and right padding)."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def _accepts(module: nn.Module, argument: str) -> bool:
    try:
        params = inspect.signature(module.forward).parameters
    except (TypeError, ValueError):  # pragma: no cover - builtin forward
        return False
    return argument in params


def final_hidden_states(
    model: nn.Module, input_ids: Tensor, attention_mask: Tensor | None = None
) -> Tensor:
    """``(B, T, H)`` final hidden states of the model's backbone (before the output head).

    Position ids are passed explicitly from the attention mask, so left-padded batches (on-policy
    generations) are positioned as ``generate`` positioned them.
    """
    base = backbone_of(model)
    kwargs: dict[str, Any] = {"input_ids": input_ids, "attention_mask": attention_mask}
    if attention_mask is not None and _accepts(base, "position_ids"):
        kwargs["position_ids"] = position_ids_from_mask(attention_mask)
    if _accepts(base, "use_cache"):
        kwargs["use_cache"] = False
    out = base(**kwargs)
    hidden = getattr(out, "last_hidden_state", None)
    if hidden is None:
        hidden = out[0]
    return hidden


def head_logits(hidden: Tensor, head: nn.Module, config: Any = None) -> Tensor:
    r"""Logits as the model's forward computes them from final hidden states.

    .. math:: z = \mathrm{cap}\big(\lambda\,(h W^\top + b)\big),\quad
              \mathrm{cap}(x) = c\tanh(x/c)

    with λ and c read from the config by
    :func:`divergent.objectives.token.logit_transform_from_config` (``logit_scale``,
    ``final_logit_softcapping`` ...), the reading the fused loss uses.
    """
    logits = head(hidden)
    scale, cap = logit_transform_from_config(config)
    if scale is not None:
        logits = logits * scale
    if cap is not None:
        logits = torch.tanh(logits / cap) * cap
    return logits


_POSITION_KEYS = ("n_positions", "max_position_embeddings", "n_ctx")


def max_positions(model: Any) -> tuple[int, str] | None:
    """The most positions the model's config allows and the config key saying so, or ``None``.

    Reads the first of ``n_positions`` (GPT-2), ``max_position_embeddings`` (most others) and
    ``n_ctx`` that the config has as a positive integer. A model with learned absolute
    positions fails past it with an ``IndexError`` from its embedding.
    """
    config = getattr(model, "config", None)
    for key in _POSITION_KEYS:
        value = getattr(config, key, None)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value, key
    return None


def pad_token_id(model: nn.Module, tokenizer: Any = None) -> int:
    """A token id usable as padding: the tokenizer's or config's pad id, else eos, else 0.

    Only ids inside the vocabulary qualify (tiny random configs keep GPT-2's eos 50256).
    """
    vocab = vocab_size_of(model)
    config = getattr(model, "config", None)
    candidates = [
        getattr(tokenizer, "pad_token_id", None),
        getattr(config, "pad_token_id", None),
        getattr(tokenizer, "eos_token_id", None),
        getattr(config, "eos_token_id", None),
    ]
    for c in candidates:
        if isinstance(c, list | tuple):
            c = c[0] if c else None
        if isinstance(c, int) and not isinstance(c, bool) and 0 <= c < vocab:
            return c
    return 0


def eos_token_ids(model: nn.Module) -> list[int]:
    """The end-of-sequence ids of the model's generation config / config inside the vocabulary."""
    vocab = vocab_size_of(model)
    found: list[int] = []
    for source in (getattr(model, "generation_config", None), getattr(model, "config", None)):
        eos = getattr(source, "eos_token_id", None)
        ids = eos if isinstance(eos, list | tuple) else [eos]
        found += [e for e in ids if isinstance(e, int) and 0 <= e < vocab and e not in found]
    return found

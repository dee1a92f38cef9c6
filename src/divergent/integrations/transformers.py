r"""A ``transformers.Trainer`` that distils a teacher causal LM into a student with any divergence.

:class:`DistillationTrainer` subclasses :class:`transformers.Trainer`, so mixed precision,
gradient accumulation, Accelerate, DDP, FSDP and DeepSpeed come from the ecosystem. Per batch it
minimises

.. math::
    \mathcal L = (1-w)\,\frac{1}{N}\sum_{(b,t):\,y_{b,t+1}\ne -100}
        D\big(P_T(\cdot\mid x_{b,\le t})\,\big\|\,Q_S(\cdot\mid x_{b,\le t})\big)
      \;+\; w\,\frac{1}{N}\sum_{(b,t)} -\log Q_S(y_{b,t+1}\mid x_{b,\le t})

with :math:`w` = ``ce_weight``, D the chosen divergence at temperature τ (both sides' logits
divided by τ; no τ² factor), N the number of supervised tokens (``num_items_in_batch`` across
the accumulated micro-batches when the Trainer passes it, else the micro-batch's count), and
position t predicting token t + 1 (labels are shifted inside; prompt tokens carry label −100).

Three teacher sources:

* **live, fused** (default, ``fused=True``): the student's and teacher's *backbones* give final
  hidden states, and :func:`~divergent.objectives.token.fused_token_distillation_loss` projects
  only the supervised positions through both heads in row chunks: neither B×T×V logit tensor is
  ever built (the student's CE term, when ``ce_weight > 0``, is computed in checkpointed row
  chunks too);
* **live, materialised** (``fused=False``): both models' full forward and
  :func:`~divergent.objectives.token.token_distillation_loss` (for models whose logits are not
  a linear head of the backbone's output);
* **a top-k teacher cache** (``teacher_cache=``): a directory written by
  :func:`divergent.integrations.teacher_cache_hf.write_teacher_cache`; the loss is
  :func:`divergent.teacher.sparse.sparse_divergence` with its documented tail handling
  (``cache_tail="bucket"`` by default), on the student's logits of supervised positions only,
  built in checkpointed row chunks; no teacher forward runs.

On-policy data (GKD, Agarwal et al. 2024): with probability ``lmbda`` a training batch's
completions are replaced by the student's own samples from the batch's prompts; with
``seq_kd=True`` they are first replaced by the teacher's samples (sequence-level KD, Kim & Rush
2016). A row's prompt is its tokens before the first supervised label (at least one token).

References:
    Hinton, Vinyals & Dean 2015, "Distilling the Knowledge in a Neural Network",
    arXiv:1503.02531. Kim & Rush 2016, "Sequence-Level Knowledge Distillation",
    arXiv:1606.07947. Agarwal et al. 2024, "On-Policy Distillation of Language Models: Learning
    from Self-Generated Mistakes" (GKD), ICLR 2024, arXiv:2306.13649.
"""

from __future__ import annotations

import math
import os
import random
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
import transformers
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from divergent.categorical.fdiv import resolve_divergence
from divergent.integrations._hf_models import (
    check_causal_lm,
    check_same_vocab,
    eos_token_ids,
    final_hidden_states,
    head_logits,
    max_positions,
    output_head,
    pad_token_id,
    position_ids_from_mask,
    vocab_size_of,
)
from divergent.objectives.token import fused_token_distillation_loss, token_distillation_loss
from divergent.teacher.cache import TeacherCacheReader
from divergent.teacher.sparse import TAILS, sparse_divergence

__all__ = [
    "CACHE_INDEX_KEY",
    "CACHE_LAYOUT",
    "CausalLMCollator",
    "DistillationTrainer",
    "fused_cross_entropy",
]

IGNORE_INDEX = -100
CACHE_INDEX_KEY = "teacher_cache_index"
"""Batch key holding each example's index in a teacher cache (an int per example)."""
CACHE_LAYOUT = "divergent.hf-causal-lm/fixed-rows-per-example/v1"
"""``metadata["layout"]`` of a cache written by ``write_teacher_cache``: example ``i`` owns rows
``[i·R, (i+1)·R)`` with ``R = metadata["rows_per_example"]``; row ``i·R + t`` is the teacher's
distribution at position t (predicting token t + 1); rows past the example's end are padding."""

_CE_CHUNK_ELEMENTS = 2**22


# --------------------------------------------------------------------------------------------
# small public helpers
# --------------------------------------------------------------------------------------------
def fused_cross_entropy(
    hidden: Tensor,
    head: nn.Module,
    targets: Tensor,
    *,
    config: Any = None,
    chunk_size: int | None = None,
) -> Tensor:
    r"""Summed cross-entropy :math:`-\sum_n \log\operatorname{softmax}(z_n)_{y_n}` of a linear head.

    :math:`z_n` = ``head_logits(hidden[n])`` (the head, then the config's ``logit_scale`` /
    ``final_logit_softcapping``), computed in row chunks under activation checkpointing, so
    memory is O(chunk × V) instead of N × V (each chunk's logits are recomputed in backward).

    Args:
        hidden: ``(N, H)`` hidden states of the positions to score.
        head: the model's output head (``model.get_output_embeddings()``).
        targets: ``(N,)`` int64 target ids.
        config: the model config (for its logit transform), or None.
        chunk_size: rows per chunk (default: about 4M logits).

    Returns:
        A float32 scalar: the sum over the N rows (0 with zero gradient when N = 0).

    References:
        Hsu et al. 2024, "Liger Kernel: Efficient Triton Kernels for LLM Training",
        arXiv:2410.10989 (fused linear cross-entropy); Chen et al. 2016, "Training Deep Nets
        with Sublinear Memory Cost", arXiv:1604.06174 (recomputation).
    """
    n_rows = hidden.shape[0]
    if n_rows == 0:
        return hidden.sum(dtype=torch.float32) * 0.0
    vocab = int(head.weight.shape[0])  # type: ignore[union-attr]
    chunk = chunk_size or max(1, _CE_CHUNK_ELEMENTS // max(vocab, 1))

    def chunk_loss(h: Tensor, y: Tensor) -> Tensor:
        z = head_logits(h, head, config).float()
        return F.cross_entropy(z, y, reduction="sum")

    total = hidden.new_zeros((), dtype=torch.float32)
    for r0 in range(0, n_rows, chunk):
        h, y = hidden[r0 : r0 + chunk], targets[r0 : r0 + chunk]
        if torch.is_grad_enabled() and (
            h.requires_grad or any(p.requires_grad for p in head.parameters())
        ):
            total = total + checkpoint(chunk_loss, h, y, use_reentrant=False)
        else:
            total = total + chunk_loss(h, y)
    return total


class CausalLMCollator:
    """Right-pad a list of examples into a causal-LM batch.

    Each example is a mapping with ``input_ids`` (a list or 1-D tensor), and optionally
    ``labels`` (same length; default: a copy of ``input_ids``), ``attention_mask`` and
    ``prompt_length`` (an int: the first ``prompt_length`` labels are set to −100), and
    ``teacher_cache_index`` (passed through as an int64 ``(B,)`` tensor).

    Returns ``input_ids`` / ``attention_mask`` / ``labels`` of shape ``(B, T_max)``: padding
    positions get ``pad_token_id``, attention 0 and label −100.
    """

    def __init__(self, pad_token_id: int = 0, *, max_length: int | None = None) -> None:
        self.pad_token_id = int(pad_token_id)
        self.max_length = max_length

    def __call__(self, examples: Sequence[Mapping[str, Any]]) -> dict[str, Tensor]:
        if not examples:
            raise ValueError("`examples` is empty; a batch needs at least one example")
        rows = []
        for i, ex in enumerate(examples):
            if "input_ids" not in ex:
                raise ValueError(f"example {i} has no `input_ids` (keys: {sorted(ex)})")
            ids = torch.as_tensor(ex["input_ids"], dtype=torch.long).reshape(-1)
            labels = (
                torch.as_tensor(ex["labels"], dtype=torch.long).reshape(-1)
                if ex.get("labels") is not None
                else ids.clone()
            )
            if labels.shape != ids.shape:
                raise ValueError(
                    f"example {i}: `labels` has {labels.numel()} tokens but `input_ids` has "
                    f"{ids.numel()}; they must align token for token (the shift is done inside)"
                )
            mask = (
                torch.as_tensor(ex["attention_mask"], dtype=torch.long).reshape(-1)
                if ex.get("attention_mask") is not None
                else torch.ones_like(ids)
            )
            prompt = int(ex.get("prompt_length", 0) or 0)
            if prompt:
                labels = labels.clone()
                labels[:prompt] = IGNORE_INDEX
            labels = torch.where(mask.bool(), labels, IGNORE_INDEX)
            if self.max_length is not None:
                ids, labels, mask = (t[: self.max_length] for t in (ids, labels, mask))
            rows.append((ids, labels, mask))
        width = max(r[0].numel() for r in rows)
        batch_ids = torch.full((len(rows), width), self.pad_token_id, dtype=torch.long)
        batch_labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
        batch_mask = torch.zeros((len(rows), width), dtype=torch.long)
        for b, (ids, labels, mask) in enumerate(rows):
            batch_ids[b, : ids.numel()] = ids
            batch_labels[b, : ids.numel()] = labels
            batch_mask[b, : ids.numel()] = mask
        out = {"input_ids": batch_ids, "attention_mask": batch_mask, "labels": batch_labels}
        if any(CACHE_INDEX_KEY in ex for ex in examples):
            if not all(CACHE_INDEX_KEY in ex for ex in examples):
                raise ValueError(f"some examples lack `{CACHE_INDEX_KEY}`; give it to all or none")
            out[CACHE_INDEX_KEY] = torch.tensor(
                [int(ex[CACHE_INDEX_KEY]) for ex in examples], dtype=torch.long
            )
        return out


# --------------------------------------------------------------------------------------------
# DDP / FSDP: run a function "as the wrapped module's forward"
# --------------------------------------------------------------------------------------------
def _through_wrapper(wrapper: nn.Module, module: nn.Module, fn: Any, *args: Any) -> Any:
    """Call ``fn(*args)`` inside ``wrapper.forward`` (DDP / FSDP / DeepSpeed), so the wrapper's
    pre-forward work (DDP's ``prepare_for_backward``, FSDP's parameter gathering) covers
    computations that use the backbone and head directly instead of ``module.forward``."""
    if wrapper is module:
        return fn(*args)
    original = module.forward

    def redirected(*_a: Any, **_k: Any) -> Any:
        module.forward = original  # type: ignore[method-assign]
        return fn(*args)

    module.forward = redirected  # type: ignore[method-assign]
    try:
        return wrapper()
    finally:
        module.forward = original  # type: ignore[method-assign]


# --------------------------------------------------------------------------------------------
# the top-k cache, read per batch
# --------------------------------------------------------------------------------------------
class _CacheRows:
    """Per-example rows of a teacher cache with the fixed-rows-per-example layout."""

    def __init__(self, cache: str | os.PathLike[str] | TeacherCacheReader, max_shards: int = 8):
        self.reader = cache if isinstance(cache, TeacherCacheReader) else TeacherCacheReader(cache)
        meta = self.reader.metadata
        rows = meta.get("rows_per_example")
        if meta.get("layout") != CACHE_LAYOUT or not isinstance(rows, int) or rows < 1:
            raise ValueError(
                f"`teacher_cache` {self.reader.directory} was not written by write_teacher_cache "
                f"(metadata layout {meta.get('layout')!r}, rows_per_example {rows!r}; expected "
                f"layout {CACHE_LAYOUT!r}); write it with `divergent teacher-cache`"
            )
        self.rows_per_example = rows
        self.num_examples = self.reader.num_rows // rows
        self._shards: OrderedDict[int, tuple[Tensor, Tensor]] = OrderedDict()
        self._max_shards = max_shards
        self._starts = [s["first_row"] for s in self.reader.manifest["shards"]]

    def _shard(self, index: int) -> tuple[Tensor, Tensor]:
        if index in self._shards:
            self._shards.move_to_end(index)
            return self._shards[index]
        got = self.reader.shard(index)
        self._shards[index] = got
        if len(self._shards) > self._max_shards:
            self._shards.popitem(last=False)
        return got

    def _rows(self, start: int, stop: int) -> tuple[Tensor, Tensor]:
        import bisect

        parts_ids, parts_lp = [], []
        row = start
        while row < stop:
            s = bisect.bisect_right(self._starts, row) - 1
            ids, lp = self._shard(s)
            first = self._starts[s]
            a, b = row - first, min(stop - first, ids.shape[0])
            parts_ids.append(ids[a:b])
            parts_lp.append(lp[a:b])
            row = first + b
        return torch.cat(parts_ids), torch.cat(parts_lp)

    def batch(self, indices: Tensor, positions: int) -> tuple[Tensor, Tensor]:
        """``(B, positions, k)`` ids and log-probs of the examples ``indices``."""
        if positions > self.rows_per_example:
            raise ValueError(
                f"the batch has {positions + 1} tokens per row but the teacher cache holds "
                f"{self.rows_per_example} positions per example (max length "
                f"{self.rows_per_example + 1}); use the same max length as the cache"
            )
        ids_out, lp_out = [], []
        for i in indices.tolist():
            if not 0 <= i < self.num_examples:
                raise ValueError(
                    f"`{CACHE_INDEX_KEY}` {i} is outside the teacher cache's "
                    f"{self.num_examples} examples"
                )
            start = i * self.rows_per_example
            ids, lp = self._rows(start, start + positions)
            ids_out.append(ids)
            lp_out.append(lp)
        return torch.stack(ids_out), torch.stack(lp_out)


# --------------------------------------------------------------------------------------------
# the trainer
# --------------------------------------------------------------------------------------------
def _check_unit(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
        raise ValueError(f"`{name}` must be a number in [0, 1], got {value!r}")
    return float(value)


class DistillationTrainer(transformers.Trainer):
    r"""Distil ``teacher_model`` into ``model`` (the student) with any registered divergence.

    The loss per batch (see the module docstring for the formula) is
    ``(1 - ce_weight) · KD + ce_weight · CE``: the divergence D(teacher ‖ student) averaged
    over supervised tokens, and the student's cross-entropy on the labels, averaged the same
    way. Labels are aligned with ``input_ids`` (HF convention) and shifted inside: position t
    is trained towards token t + 1; label −100 (prompt, padding) skips a position. Gradient
    accumulation is exact: when the Trainer passes ``num_items_in_batch`` (the supervised
    tokens of all accumulated micro-batches, and of all processes with
    ``average_tokens_across_devices``), it is the denominator, so 2 micro-batches of b
    examples give the same loss and gradient as one batch of 2b. A batch whose completions
    were regenerated (``lmbda``, ``seq_kd``) is averaged over its own supervised tokens and
    divided by the accumulation steps instead (its token count is not known in advance).

    The teacher runs in eval mode under ``torch.no_grad`` on the trainer's device; it is not
    wrapped in DDP (every process holds a copy) and receives no gradient.

    Args:
        model: the student, a causal LM (``AutoModelForCausalLM``).
        args: ``transformers.TrainingArguments``.
        teacher_model: the teacher causal LM with the same vocabulary (head rows); not needed
            with ``teacher_cache``.
        divergence: a registered divergence name (``"kl"``, ``"reverse_kl"``, ``"js"``,
            ``"alpha"`` ...), a ``Divergence`` or a generator callable.
        divergence_params: the divergence's parameters, e.g. ``{"beta": 0.5}`` for ``js``.
        temperature: τ > 0 dividing both sides' logits (the cache must be written at τ).
        ce_weight: w ∈ [0, 1], the weight of the student's own cross-entropy.
        lmbda: λ ∈ [0, 1], the probability that a training batch uses student generations.
        seq_kd: replace each training batch's completions by teacher generations.
        max_new_tokens: tokens generated per prompt on on-policy / sequence-KD batches.
        generation_temperature: sampling temperature of those generations.
        generation_top_k: top-k of sampling (0: the whole vocabulary).
        teacher_cache: a cache directory or ``TeacherCacheReader`` from
            :func:`~divergent.integrations.teacher_cache_hf.write_teacher_cache`; batches must
            carry ``teacher_cache_index`` (the example's index in the cache).
        cache_tail: the tail estimator of ``sparse_divergence``: ``"bucket"`` (default, a
            lower bound, exact for KL's chain rule), ``"renormalize"`` or ``"ignore"``.
        fused: compute the loss from hidden states and heads (default), never both logits.
        vocab: ``"strict"`` or ``"truncate"`` (heads padded with extra rows, one tokenizer).
        chunk_size: rows per chunk of the fused head projections (default: about 8M logits
            on CPU, 64M on CUDA; smaller saves memory, larger may be faster).
        **kwargs: passed to ``transformers.Trainer`` (``train_dataset``, ``data_collator``,
            ``processing_class`` ...). Without a ``data_collator``, :class:`CausalLMCollator`
            pads with the tokenizer's / model's pad id.

    Raises:
        ValueError: a student or teacher that is not a causal LM; different vocabulary sizes
            (naming both and the fixes); invalid options; a cache of another vocabulary,
            temperature or layout; ``lmbda`` / ``seq_kd`` with a cache; ``lmbda`` / ``seq_kd``
            with ``max_new_tokens`` at or beyond the positions of the student or teacher
            (their configs' ``n_positions`` / ``max_position_embeddings`` / ``n_ctx``), and,
            when it generates, a prompt that leaves too few positions for ``max_new_tokens``;
            a batch without ``labels``, or with labels not aligned with ``input_ids``.

    References:
        Hinton et al. 2015 (arXiv:1503.02531); Kim & Rush 2016 (arXiv:1606.07947);
        Agarwal et al. 2024, GKD (arXiv:2306.13649).
    """

    def __init__(
        self,
        model: nn.Module | None = None,
        args: transformers.TrainingArguments | None = None,
        *,
        teacher_model: nn.Module | None = None,
        divergence: Any = "kl",
        divergence_params: Mapping[str, Any] | None = None,
        temperature: float = 1.0,
        ce_weight: float = 0.0,
        lmbda: float = 0.0,
        seq_kd: bool = False,
        max_new_tokens: int = 32,
        generation_temperature: float = 1.0,
        generation_top_k: int = 0,
        teacher_cache: str | os.PathLike[str] | TeacherCacheReader | None = None,
        cache_tail: str = "bucket",
        fused: bool = True,
        vocab: str = "strict",
        chunk_size: int | None = None,
        **kwargs: Any,
    ) -> None:
        check_causal_lm(model, "model")
        params = dict(divergence_params or {})
        resolve_divergence(divergence).bind(params)  # a bad name / parameter fails here
        if (
            isinstance(temperature, bool)
            or not isinstance(temperature, int | float)
            or not (math.isfinite(temperature) and temperature > 0)
        ):
            raise ValueError(f"`temperature` must be a finite number > 0, got {temperature!r}")
        ce_weight = _check_unit(ce_weight, "ce_weight")
        lmbda = _check_unit(lmbda, "lmbda")
        for name, value, low in (
            ("max_new_tokens", max_new_tokens, 1),
            ("generation_top_k", generation_top_k, 0),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"`{name}` must be an integer >= {low}, got {value!r}")
        if not (isinstance(generation_temperature, int | float) and generation_temperature > 0):
            raise ValueError(
                f"`generation_temperature` must be a number > 0, got {generation_temperature!r}"
            )
        if vocab not in ("strict", "truncate"):
            raise ValueError(f"`vocab` must be 'strict' or 'truncate', got {vocab!r}")
        if chunk_size is not None and (
            isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1
        ):
            raise ValueError(f"`chunk_size` must be a positive integer or None, got {chunk_size!r}")
        if cache_tail not in TAILS:
            raise ValueError(f"`cache_tail` must be one of {TAILS}, got {cache_tail!r}")
        self._cache: _CacheRows | None = None
        if teacher_cache is not None:
            if lmbda > 0 or seq_kd:
                raise ValueError(
                    "`teacher_cache` holds the teacher on the dataset's own tokens; it cannot "
                    f"score generated completions (lmbda={lmbda}, seq_kd={seq_kd}); use a live "
                    "`teacher_model` for on-policy or sequence-level KD"
                )
            self._cache = _CacheRows(teacher_cache)
            reader = self._cache.reader
            if reader.vocab_size != vocab_size_of(model):
                raise ValueError(
                    f"teacher and student vocabularies differ: the teacher cache has "
                    f"{reader.vocab_size} ids, the student head {vocab_size_of(model)} rows; "
                    "write the cache with a teacher of the student's tokenizer, or for different "
                    "tokenizers use the cross-tokenizer ULD loss (divergent.transport.uld)"
                )
            if not math.isclose(reader.temperature, float(temperature), rel_tol=1e-9):
                raise ValueError(
                    f"`temperature` is {temperature} but the teacher cache was written at "
                    f"{reader.temperature}; a top-k teacher cannot be re-tempered exactly: use "
                    "the cache's temperature or write a cache at this one"
                )
        elif teacher_model is None:
            raise ValueError(
                "`teacher_model` is required (a causal LM with the student's vocabulary), unless "
                "you pass `teacher_cache`"
            )
        if teacher_model is not None:
            if isinstance(teacher_model, str | os.PathLike):
                teacher_model = transformers.AutoModelForCausalLM.from_pretrained(teacher_model)
            check_causal_lm(teacher_model, "teacher_model")
            check_same_vocab(model, teacher_model, vocab)  # type: ignore[arg-type]
        if kwargs.get("data_collator") is None:
            kwargs["data_collator"] = CausalLMCollator(
                pad_token_id(model, kwargs.get("processing_class"))  # type: ignore[arg-type]
            )
        super().__init__(model=model, args=args, **kwargs)
        self.teacher_model = teacher_model
        if teacher_model is not None:
            self.teacher_model = teacher_model.to(self.args.device)
            self.teacher_model.eval()
        self.divergence = divergence
        self.divergence_params = params
        self.temperature = float(temperature)
        self.ce_weight = ce_weight
        self.lmbda = lmbda
        self.seq_kd = bool(seq_kd)
        self.max_new_tokens = max_new_tokens
        self.generation_temperature = float(generation_temperature)
        self.generation_top_k = generation_top_k
        self.cache_tail = cache_tail
        self.fused = bool(fused)
        self.vocab = vocab
        self.chunk_size = chunk_size
        if lmbda > 0 or seq_kd:
            self._check_positions(1)  # the shortest prompt is one token
        self._policy_rng = random.Random(self.args.seed)
        self._loss_parts: dict[str, list[float]] = {"kd_loss": [], "ce_loss": []}
        # the Trainer counts `num_items_in_batch` (supervised tokens over the accumulated
        # micro-batches, labels[..., 1:] for a shifted loss) only for models it believes take
        # loss kwargs; this trainer always uses the count and always shifts
        self.model_accepts_loss_kwargs = True
        self._loss_shifts_labels = True

    # -- data ---------------------------------------------------------------------------------
    def _set_signature_columns_if_needed(self) -> None:
        """Keep the columns :class:`CausalLMCollator` reads (the Trainer drops the others)."""
        super()._set_signature_columns_if_needed()
        if self._signature_columns is not None:
            for key in ("labels", "prompt_length", CACHE_INDEX_KEY):
                if key not in self._signature_columns:
                    self._signature_columns.append(key)

    @staticmethod
    def _check_batch(inputs: Mapping[str, Any]) -> tuple[Tensor, Tensor, Tensor]:
        if "input_ids" not in inputs:
            raise ValueError(f"the batch has no `input_ids` (keys: {sorted(inputs)})")
        ids = inputs["input_ids"]
        labels = inputs.get("labels")
        if labels is None:
            raise ValueError(
                "the batch has no `labels`: distillation trains on labelled positions (label "
                "-100 skips one); use CausalLMCollator or DataCollatorForLanguageModeling("
                "tokenizer, mlm=False), or set labels = input_ids with -100 on prompt tokens"
            )
        if labels.shape != ids.shape:
            raise ValueError(
                f"`labels` has shape {tuple(labels.shape)} but `input_ids` has "
                f"{tuple(ids.shape)}; they must align token for token (the shift is done inside)"
            )
        mask = inputs.get("attention_mask")
        if mask is None:
            mask = torch.ones_like(ids)
        return ids, mask, labels

    # -- generation ----------------------------------------------------------------------------
    def _check_positions(self, prompt_width: int) -> None:
        """Refuse generating ``max_new_tokens`` after ``prompt_width`` prompt tokens where the
        result would not fit the student's or teacher's positions (a model with learned
        positions would fail in the middle of training with an ``IndexError``)."""
        need = prompt_width + self.max_new_tokens
        for who, model in (("student", self.model), ("teacher", self.teacher_model)):
            limit = max_positions(model) if model is not None else None
            if limit is not None and need > limit[0]:
                raise ValueError(
                    f"generating max_new_tokens={self.max_new_tokens} after a prompt of "
                    f"{prompt_width} tokens needs {need} positions, more than the {who}'s maximum "
                    f"of {limit[0]} (config {limit[1]}); lower max_new_tokens or shorten the "
                    "prompts"
                )

    def generate_completions(
        self, generator: nn.Module, inputs: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Replace each row's completion by a sample of ``generator`` from the row's prompt.

        The prompt of a row is its attended tokens before the first label that is not −100
        (at least its first token). Returns a left-padded batch: ``input_ids`` = prompt +
        up to ``max_new_tokens`` sampled tokens (cut after the first end-of-sequence token),
        ``attention_mask``, and ``labels`` (−100 on the prompt and padding, the sampled ids
        on the completion).
        """
        ids, mask, labels = self._check_batch(inputs)
        unwrapped = self.accelerator.unwrap_model(generator)
        pad = pad_token_id(unwrapped, self.processing_class)
        supervised = (labels != IGNORE_INDEX) & mask.bool()
        first = torch.where(
            supervised.any(1), supervised.long().argmax(1), mask.long().sum(1)
        ).clamp(min=1)
        prompts = [
            ids[b, : int(first[b])][mask[b, : int(first[b])].bool()] for b in range(len(ids))
        ]
        width = max(max(p.numel() for p in prompts), 1)
        self._check_positions(width)
        prompt_ids = torch.full((len(prompts), width), pad, dtype=ids.dtype, device=ids.device)
        prompt_mask = torch.zeros_like(prompt_ids)
        for b, p in enumerate(prompts):
            if p.numel():
                prompt_ids[b, width - p.numel() :] = p
                prompt_mask[b, width - p.numel() :] = 1
        was_training = unwrapped.training
        unwrapped.eval()
        try:
            with torch.no_grad():
                out = unwrapped.generate(
                    input_ids=prompt_ids,
                    attention_mask=prompt_mask,
                    max_new_tokens=self.max_new_tokens,
                    do_sample=True,
                    temperature=self.generation_temperature,
                    top_k=self.generation_top_k or None,
                    pad_token_id=pad,
                )
        finally:
            unwrapped.train(was_training)
        completion = out[:, width:]
        keep = torch.ones_like(completion, dtype=torch.bool)
        eos = eos_token_ids(unwrapped)
        if eos and completion.numel():
            is_eos = torch.isin(completion, torch.tensor(eos, device=completion.device))
            after_eos = (is_eos.long().cumsum(1) - is_eos.long()) > 0  # strictly after the first
            keep = ~after_eos
        completion = torch.where(keep, completion, pad)
        new = dict(inputs)
        new["input_ids"] = torch.cat([prompt_ids, completion], 1)
        new["attention_mask"] = torch.cat([prompt_mask, keep.to(prompt_mask.dtype)], 1)
        new["labels"] = torch.cat(
            [
                torch.full_like(prompt_ids, IGNORE_INDEX),
                torch.where(keep, completion, IGNORE_INDEX),
            ],
            1,
        )
        return new

    def _maybe_regenerate(
        self, model: nn.Module, inputs: dict[str, Any]
    ) -> tuple[dict[str, Any], bool]:
        regenerated = False
        if self.seq_kd:
            assert self.teacher_model is not None
            inputs = self.generate_completions(self.teacher_model, inputs)
            regenerated = True
        if self.lmbda > 0 and self._policy_rng.random() < self.lmbda:
            inputs = self.generate_completions(model, inputs)
            regenerated = True
        return inputs, regenerated

    # -- the loss ------------------------------------------------------------------------------
    def compute_loss(
        self,
        model: nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: Tensor | int | None = None,
    ) -> Tensor | tuple[Tensor, Any]:
        """The distillation loss of one (micro-)batch; see the class docstring."""
        self._check_batch(inputs)
        if model.training and (self.seq_kd or self.lmbda > 0):
            inputs, regenerated = self._maybe_regenerate(model, inputs)
            if regenerated:
                num_items_in_batch = None
        unwrapped = self.accelerator.unwrap_model(model)
        loss, kd, ce = _through_wrapper(
            model, unwrapped, self._distillation_loss, unwrapped, inputs, num_items_in_batch
        )
        scaled = num_items_in_batch is not None
        factor = 1.0
        if (
            scaled
            and self.args.average_tokens_across_devices
            and self.accelerator.num_processes > 1
        ):
            # the count is summed over processes and DDP averages gradients over them
            factor = float(self.accelerator.num_processes)
            loss = loss * factor
        # the Trainer divides a per-micro-batch mean by the accumulation steps itself
        self.loss_is_scaled_for_ga = scaled
        if model.training:
            # each micro-batch's share of its optimiser step's value (as the logged loss)
            share = factor if scaled else 1.0 / self._accumulation_steps()
            self._loss_parts["kd_loss"].append(float(kd) * share)
            if self.ce_weight > 0:
                self._loss_parts["ce_loss"].append(float(ce) * share)
        return (loss, {"loss": loss}) if return_outputs else loss

    def _accumulation_steps(self) -> int:
        return int(getattr(self, "current_gradient_accumulation_steps", 1) or 1)

    def _distillation_loss(
        self, student: nn.Module, inputs: Mapping[str, Any], num_items: Tensor | int | None
    ) -> tuple[Tensor, Tensor, Tensor]:
        ids, mask, labels = self._check_batch(inputs)
        shifted = labels[:, 1:]
        valid = shifted != IGNORE_INDEX
        denominator = num_items if num_items is not None else valid.sum().clamp(min=1)
        reduction_kw: dict[str, Any] = {"reduction": "mean", "num_items_in_batch": num_items}
        params = self.divergence_params
        student_logits = None
        if self._cache is not None or self.fused:
            hidden = final_hidden_states(student, ids, mask)[:, :-1]
            head = output_head(student)
            if self._cache is not None:
                kd = self._cache_loss(student, inputs, hidden, head, valid, denominator)
            else:
                assert self.teacher_model is not None
                with torch.no_grad():
                    teacher_hidden = final_hidden_states(self.teacher_model, ids, mask)[:, :-1]
                # detached: the teacher's head gets no gradient (nor the work to compute one)
                teacher_head = output_head(self.teacher_model)
                teacher_bias = getattr(teacher_head, "bias", None)
                kd = fused_token_distillation_loss(
                    hidden,
                    head,
                    teacher_hidden.to(hidden.device),
                    teacher_head.weight.detach(),
                    shifted,
                    teacher_bias=None if teacher_bias is None else teacher_bias.detach(),
                    divergence=self.divergence,
                    ignore_index=IGNORE_INDEX,
                    temperature=self.temperature,
                    student_config=student.config,
                    teacher_config=self.teacher_model.config,
                    vocab=self.vocab,
                    chunk_size=self.chunk_size,
                    **reduction_kw,
                    **params,
                )
        else:
            assert self.teacher_model is not None
            position_ids = position_ids_from_mask(mask)
            student_logits = student(
                input_ids=ids, attention_mask=mask, position_ids=position_ids, use_cache=False
            ).logits[:, :-1]
            with torch.no_grad():
                teacher_logits = self.teacher_model(
                    input_ids=ids, attention_mask=mask, position_ids=position_ids, use_cache=False
                ).logits[:, :-1]
            kd = token_distillation_loss(
                student_logits,
                teacher_logits.to(student_logits.device),
                shifted,
                divergence=self.divergence,
                ignore_index=IGNORE_INDEX,
                temperature=self.temperature,
                vocab=self.vocab,
                **reduction_kw,
                **params,
            )
        if self.ce_weight == 0:
            return kd, kd.detach(), kd.new_zeros(())
        targets = shifted[valid]
        if student_logits is not None:
            ce_sum = F.cross_entropy(student_logits[valid].float(), targets, reduction="sum")
        else:
            ce_sum = fused_cross_entropy(
                hidden[valid], head, targets, config=student.config, chunk_size=self.chunk_size
            )
        ce = ce_sum / denominator
        loss = (1.0 - self.ce_weight) * kd + self.ce_weight * ce
        return loss, kd.detach(), ce.detach()

    def _cache_loss(
        self,
        student: nn.Module,
        inputs: Mapping[str, Any],
        hidden: Tensor,
        head: nn.Module,
        valid: Tensor,
        denominator: Tensor | int,
    ) -> Tensor:
        assert self._cache is not None
        index = inputs.get(CACHE_INDEX_KEY)
        if index is None:
            raise ValueError(
                f"training from a teacher cache needs `{CACHE_INDEX_KEY}` in every batch (the "
                "example's index in the cache); keep that column in the dataset "
                "(CausalLMCollator passes it through)"
            )
        index = torch.as_tensor(index).reshape(-1)
        top_ids, top_lp = self._cache.batch(index.cpu(), hidden.shape[1])
        top_ids, top_lp = top_ids[valid.cpu()], top_lp[valid.cpu()]
        if top_ids.numel() and bool((top_ids < 0).all(-1).any()):
            raise ValueError(
                "a supervised position has no entry in the teacher cache (its row is padding): "
                "the batch does not match the cached examples (same tokenization, same order, "
                f"`{CACHE_INDEX_KEY}` = the example's index when the cache was written)"
            )
        rows = hidden[valid]
        top_ids, top_lp = top_ids.to(rows.device), top_lp.to(rows.device)
        vocab = int(head.weight.shape[0])  # type: ignore[union-attr]
        chunk = self.chunk_size or max(1, _CE_CHUNK_ELEMENTS // vocab)

        def chunk_sum(h: Tensor, ids: Tensor, lp: Tensor) -> Tensor:
            # only this chunk's student logits exist (recomputed in backward)
            return sparse_divergence(
                self.divergence,
                ids,
                lp,
                head_logits(h, head, student.config),
                tail=self.cache_tail,
                temperature=self.temperature,
                reduction="sum",
                **self.divergence_params,
            )

        total = rows.sum(dtype=torch.float32) * 0.0
        for r0 in range(0, rows.shape[0], chunk):
            part = (rows[r0 : r0 + chunk], top_ids[r0 : r0 + chunk], top_lp[r0 : r0 + chunk])
            if torch.is_grad_enabled() and rows.requires_grad:
                total = total + checkpoint(chunk_sum, *part, use_reentrant=False)
            else:
                total = total + chunk_sum(*part)
        return total / denominator

    # -- evaluation and logging -----------------------------------------------------------------
    def prediction_step(
        self,
        model: nn.Module,
        inputs: dict[str, Any],
        prediction_loss_only: bool,
        ignore_keys: list[str] | None = None,
    ) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
        """Evaluation: the distillation loss of the batch (off-policy; no logits returned)."""
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad(), self.compute_loss_context_manager():
            loss = self.compute_loss(model, inputs)
        return loss.detach(), None, None

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Add the KD and CE parts (mean per optimiser step since the last log) to the logs."""
        for key, values in self._loss_parts.items():
            if values and not any(k.startswith("eval_") for k in logs):
                logs[key] = sum(values) * self._accumulation_steps() / len(values)
                values.clear()
        super().log(logs, start_time)

r"""Write a top-k teacher cache from a Hugging Face causal LM, for training without the teacher.

:func:`write_teacher_cache` runs the teacher once over a dataset and stores, for every position
t of every example (predicting token t + 1), the teacher's k most likely ids and their
log-probabilities under the *full* distribution at temperature τ,

.. math:: S_t = \operatorname{top-}k_i\, z_{t,i},\qquad
          \log P_\tau(i \mid x_{\le t}) = z_{t,i}/\tau - \log\sum_{j=1}^{V} e^{z_{t,j}/\tau},
          \ i \in S_t,

in the sharded, checksummed, locked and resumable format of
:class:`divergent.teacher.cache.TeacherCacheWriter`. The layout is fixed-rows-per-example
(:data:`divergent.integrations.transformers.CACHE_LAYOUT`): example i owns rows
``[i·R, (i+1)·R)`` with R = ``max_length − 1``; rows past an example's end are padding (id −1).
:class:`~divergent.integrations.transformers.DistillationTrainer` with ``teacher_cache=`` reads
the rows of each batch's examples (their ``teacher_cache_index``) and trains with
:func:`divergent.teacher.sparse.sparse_divergence` (tail handling: ``cache_tail``).

Interruptions lose nothing already written: finished shards stay valid; on Ctrl-C or an error
the rows buffered so far are written as one more (short) shard when the writer itself did not
fail, and one line says how many examples are kept. After an interruption (Ctrl-C,
``SystemExit``, an ``OSError`` such as a full disk) it says how to resume: call again with the
same arguments, which continues after the last cached row. Any other error (a bug, a model that
cannot run the data) is reported as a failure naming it, without that promise: the same call
stops the same way until its cause is fixed.

References:
    Anshumann et al. 2025, "Sparse Logit Sampling: Accelerating Knowledge Distillation in LLMs",
    ACL 2025, arXiv:2503.16870 (top-k teacher caches and their bias).
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, SequentialSampler

from divergent.integrations._hf_models import (
    check_causal_lm,
    final_hidden_states,
    head_logits,
    max_positions,
    output_head,
    pad_token_id,
    vocab_size_of,
)
from divergent.integrations.transformers import CACHE_INDEX_KEY, CACHE_LAYOUT
from divergent.teacher.cache import MANIFEST_NAME, TeacherCacheError, TeacherCacheWriter
from divergent.teacher.sparse import topk_logprobs

__all__ = [
    "TeacherCacheSummary",
    "TeacherCacheWriteInterrupted",
    "add_cache_index",
    "write_teacher_cache",
]

_CHUNK_ELEMENTS = 2**22


class TeacherCacheWriteInterrupted(TeacherCacheError):
    """A cache write stopped by an error; finished shards are kept and the write can resume.

    Attributes:
        rows_written: rows in finished shards.
        examples_done: whole examples among them (resuming restarts after the last row).
        interrupted: True for an interruption (an ``OSError`` such as a full disk), after which
            calling again resumes; False for a failure (a bug, a model error) that calling
            again repeats until its cause is fixed.
    """

    def __init__(
        self, message: str, rows_written: int, examples_done: int, interrupted: bool = True
    ) -> None:
        super().__init__(message)
        self.rows_written = rows_written
        self.examples_done = examples_done
        self.interrupted = interrupted


@dataclass(frozen=True)
class TeacherCacheSummary:
    """What :func:`write_teacher_cache` wrote."""

    directory: Path
    examples: int
    rows: int
    shards: int
    k: int
    vocab_size: int
    rows_per_example: int
    resumed_from_example: int
    seconds: float


def add_cache_index(examples: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Copies of ``examples`` with ``teacher_cache_index`` = their position (the cache's order)."""
    return [{**dict(ex), CACHE_INDEX_KEY: i} for i, ex in enumerate(examples)]


# --------------------------------------------------------------------------------------------
# input normalisation: examples or batches → right-padded (ids, mask) batches in order
# --------------------------------------------------------------------------------------------
def _example_ids(example: Any, index: int) -> Tensor:
    if isinstance(example, Mapping):
        if "input_ids" not in example:
            raise ValueError(f"`data` example {index} has no `input_ids` (keys: {sorted(example)})")
        ids = torch.as_tensor(example["input_ids"], dtype=torch.long).reshape(-1)
        if example.get("attention_mask") is not None:
            mask = torch.as_tensor(example["attention_mask"]).reshape(-1).bool()
            ids = ids[mask]
        return ids
    return torch.as_tensor(example, dtype=torch.long).reshape(-1)


def _batches_from_examples(
    examples: Sequence[Any], batch_size: int, start: int, pad: int
) -> Iterator[tuple[Tensor, Tensor]]:
    for b0 in range(start, len(examples), batch_size):
        rows = [
            _example_ids(examples[i], i) for i in range(b0, min(b0 + batch_size, len(examples)))
        ]
        width = max(r.numel() for r in rows)
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for j, r in enumerate(rows):
            ids[j, : r.numel()] = r
            mask[j, : r.numel()] = 1
        yield ids, mask


def _batches_from_loader(loader: Iterable[Any], start: int) -> Iterator[tuple[Tensor, Tensor]]:
    seen = 0
    for batch in loader:
        if isinstance(batch, Mapping):
            ids = batch["input_ids"]
            mask = batch.get("attention_mask")
        else:
            ids, mask = batch, None
        ids = torch.as_tensor(ids, dtype=torch.long)
        mask = torch.ones_like(ids) if mask is None else torch.as_tensor(mask, dtype=torch.long)
        n = ids.shape[0]
        if seen + n <= start:
            seen += n
            continue
        skip = max(0, start - seen)
        seen += n
        yield ids[skip:], mask[skip:]


def _check_right_padded(mask: Tensor) -> None:
    # 1…1 0…0 per row: a 0 followed later by a 1 is left padding / holes
    bad = (mask[:, 1:] > mask[:, :-1]).any(1)
    if bool(bad.any()):
        raise ValueError(
            "`data` has a batch whose attention mask is not right-padded (1…1 then 0…0); the "
            "cache stores position t of each example at row t, so pad on the right"
        )


# --------------------------------------------------------------------------------------------
# the writer
# --------------------------------------------------------------------------------------------
def write_teacher_cache(
    teacher_model: nn.Module,
    data: Sequence[Any] | Tensor | DataLoader | Iterable[Any],
    out_dir: str | os.PathLike[str],
    *,
    k: int = 32,
    batch_size: int = 8,
    max_length: int | None = None,
    temperature: float = 1.0,
    rows_per_shard: int | None = None,
    logprobs_dtype: torch.dtype = torch.float32,
    teacher_id: str | None = None,
    metadata: Mapping[str, Any] | None = None,
    resume: bool = True,
    device: str | torch.device | None = None,
    progress: Callable[[int], None] | None = None,
) -> TeacherCacheSummary:
    r"""Run ``teacher_model`` over ``data`` and write its top-k log-probs to ``out_dir``.

    Row ``i·R + t`` (R = ``max_length − 1``) holds :math:`(S_t, \log P_\tau(S_t))` of example
    i at position t (the distribution over token t + 1; formula in the module docstring);
    positions past the example's end are padding rows (id −1). The teacher runs in eval mode
    under ``torch.no_grad``, its backbone's hidden states projected through its head in row
    chunks (with the config's ``logit_scale`` / ``final_logit_softcapping``), so the full
    B×T×V logits of a batch are never held at once.

    Args:
        teacher_model: a causal LM (``AutoModelForCausalLM``).
        data: the examples in cache order: a 2-D int tensor ``(N, L)``; a sequence of examples
            (lists / 1-D tensors of ids, or mappings with ``input_ids`` and optionally
            ``attention_mask``, e.g. a ``datasets.Dataset``); or a ``DataLoader`` (sequential
            sampler) / iterable of batches (mappings with ``input_ids`` ``(B, T)`` and
            ``attention_mask``, right-padded), which needs ``max_length``.
        out_dir: the cache directory (created; an unfinished cache there is resumed).
        k: ids kept per position, ``1 <= k <= V``.
        batch_size: examples per teacher forward (sequence / tensor data).
        max_length: the longest example in tokens (R = max_length − 1 rows per example);
            default: the longest example of a sequence / tensor.
        temperature: τ of the stored log-probs (train at the same τ).
        rows_per_shard: rows per shard (default: whole examples, about 65k rows).
        logprobs_dtype: storage dtype of the log-probs (float32, float16, bfloat16, float64).
        teacher_id: recorded teacher identifier (default: the model's ``name_or_path``).
        metadata: extra JSON metadata (dataset name, tokenizer ...).
        resume: continue an unfinished cache in ``out_dir`` (default); False refuses one.
        device: where the teacher runs (default: where its parameters are).
        progress: called with the number of examples done after each batch.

    Returns:
        A :class:`TeacherCacheSummary`.

    Raises:
        ValueError: not a causal LM; bad ``k`` / ``batch_size`` / ``max_length``; a
            ``max_length`` beyond the teacher's positions (its config's ``n_positions`` /
            ``max_position_embeddings`` / ``n_ctx``); an example
            longer than ``max_length``; a left-padded batch; an existing cache that is complete
            or was written with other settings.
        TeacherCacheWriteInterrupted: the write stopped on an error (one line: what is kept;
            after an interruption how to resume, after a failure what failed). On
            ``KeyboardInterrupt`` the same line is printed to stderr and the interrupt is
            re-raised.
        TeacherCacheError: another writer holds ``out_dir``.

    References:
        Anshumann et al. 2025, "Sparse Logit Sampling: Accelerating Knowledge Distillation in
        LLMs", arXiv:2503.16870 (top-k teacher caches).
    """
    check_causal_lm(teacher_model, "teacher_model")
    vocab = vocab_size_of(teacher_model)
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= vocab:
        raise ValueError(f"`k` must be an integer in [1, {vocab}] (the vocabulary), got {k!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"`batch_size` must be a positive integer, got {batch_size!r}")
    pad = pad_token_id(teacher_model)
    examples: Sequence[Any] | None = None
    if isinstance(data, Tensor):
        if data.dim() != 2 or data.is_floating_point():
            raise ValueError(
                f"`data` as a tensor must be 2-D integer ids (N, L), got {tuple(data.shape)} "
                f"{data.dtype}"
            )
        examples = data
        longest = int(data.shape[1])
    elif isinstance(data, DataLoader):
        if not isinstance(data.sampler, SequentialSampler):
            raise ValueError(
                "`data` is a DataLoader with a shuffling sampler; the cache is indexed by example "
                "order, so use shuffle=False"
            )
        longest = None
    elif isinstance(data, Sequence) or (hasattr(data, "__len__") and hasattr(data, "__getitem__")):
        examples = data  # type: ignore[assignment]
        longest = max(
            (_example_ids(examples[i], i).numel() for i in range(len(examples))), default=0
        )
    else:
        longest = None
    if examples is not None and len(examples) == 0:
        raise ValueError("`data` has no examples")
    if max_length is None:
        if longest is None:
            raise ValueError("`max_length` is required when `data` is a DataLoader or iterable")
        max_length = longest
    if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 2:
        raise ValueError(f"`max_length` must be an integer >= 2, got {max_length!r}")
    limit = max_positions(teacher_model)
    if limit is not None and max_length > limit[0]:
        raise ValueError(
            f"`max_length` {max_length} exceeds the teacher's maximum of {limit[0]} positions "
            f"(config {limit[1]}); use max_length={limit[0]} or less"
        )
    if longest is not None and longest > max_length:
        raise ValueError(f"`data` has an example of {longest} tokens > max_length={max_length}")
    rows_per_example = max_length - 1
    if rows_per_shard is None:
        rows_per_shard = rows_per_example * max(1, 65536 // rows_per_example)
    out = Path(out_dir)
    manifest = out / MANIFEST_NAME
    if manifest.exists() and resume:
        try:
            done = json.loads(manifest.read_text()).get("complete") is True
        except (OSError, ValueError):
            done = False
        if done:
            raise ValueError(
                f"the teacher cache in {out} is already complete; nothing to write (train from "
                "it, or choose another directory)"
            )
    name = teacher_id
    if name is None:
        name = str(getattr(teacher_model, "name_or_path", "") or type(teacher_model).__name__)
    meta = {**dict(metadata or {}), "layout": CACHE_LAYOUT, "rows_per_example": rows_per_example}
    writer = TeacherCacheWriter(
        out,
        k=k,
        vocab_size=vocab,
        teacher=name,
        temperature=temperature,
        metadata=meta,
        rows_per_shard=rows_per_shard,
        logprobs_dtype=logprobs_dtype,
        resume=resume,
    )
    started = time.perf_counter()
    start_row = writer.rows_written
    start_example, partial = divmod(start_row, rows_per_example)
    if device is None:
        device = next(iter(teacher_model.parameters())).device
    teacher_model.to(device)
    was_training = teacher_model.training
    teacher_model.eval()
    head = output_head(teacher_model)
    if examples is not None:
        batches = _batches_from_examples(examples, batch_size, start_example, pad)
    else:
        batches = _batches_from_loader(data, start_example)  # type: ignore[arg-type]
    done = start_example
    inside_writer = False
    try:
        with torch.no_grad():
            for ids, mask in batches:
                _check_right_padded(mask)
                n, width = ids.shape
                if width > max_length:
                    raise ValueError(
                        f"`data` has a batch {width} tokens wide > max_length={max_length}"
                    )
                top_ids = torch.full((n, rows_per_example, k), -1, dtype=torch.long)
                top_lp = torch.zeros((n, rows_per_example, k), dtype=torch.float32)
                if width >= 2:
                    hidden = final_hidden_states(teacher_model, ids.to(device), mask.to(device))
                    valid = (mask[:, 1:] * mask[:, :-1]).bool()
                    h = hidden[:, :-1][valid.to(device)]
                    ids_v, lp_v = _topk_in_chunks(h, head, teacher_model.config, k, temperature)
                    top_ids[:, : width - 1][valid] = ids_v.cpu()
                    top_lp[:, : width - 1][valid] = lp_v.cpu().float()
                flat_ids = top_ids.reshape(-1, k)
                flat_lp = top_lp.reshape(-1, k)
                if partial:  # the first example was partly written before an interruption
                    flat_ids, flat_lp, partial = flat_ids[partial:], flat_lp[partial:], 0
                inside_writer = True
                writer.add(flat_ids, flat_lp)
                inside_writer = False
                done += n
                if progress is not None:
                    progress(done)
    except BaseException as err:
        if not inside_writer:  # keep what was computed: the buffer becomes one short shard
            try:
                writer.flush()
            except Exception:
                pass
        writer.abandon()
        teacher_model.train(was_training)
        rows = writer.rows_written
        kept = rows // rows_per_example
        interrupted = isinstance(err, KeyboardInterrupt | SystemExit | OSError)
        line = (
            f"teacher-cache write {'interrupted' if interrupted else 'failed'} "
            f"({type(err).__name__}: {' '.join(str(err).split()) or 'no message'}); kept {rows} "
            f"rows = {kept} whole examples in {writer.num_shards} finished shards in {out}; "
            + (
                f"run the same command again to resume after example {kept}"
                if interrupted
                else "the same command stops the same way until that error's cause is fixed "
                f"(then it resumes after example {kept})"
            )
        )
        if isinstance(err, KeyboardInterrupt | SystemExit):
            print(line, file=sys.stderr)
            raise
        raise TeacherCacheWriteInterrupted(line, rows, kept, interrupted) from err
    writer.close()
    teacher_model.train(was_training)
    return TeacherCacheSummary(
        directory=out,
        examples=writer.rows_written // rows_per_example,
        rows=writer.rows_written,
        shards=writer.num_shards,
        k=k,
        vocab_size=vocab,
        rows_per_example=rows_per_example,
        resumed_from_example=start_example,
        seconds=time.perf_counter() - started,
    )


def _topk_in_chunks(
    hidden: Tensor, head: nn.Module, config: Any, k: int, temperature: float
) -> tuple[Tensor, Tensor]:
    """Top-k ids and full-distribution log-probs of ``head_logits(hidden)``, in row chunks."""
    vocab = int(head.weight.shape[0])  # type: ignore[union-attr]
    chunk = max(1, _CHUNK_ELEMENTS // vocab)
    parts_ids, parts_lp = [], []
    for r0 in range(0, hidden.shape[0], chunk):
        logits = head_logits(hidden[r0 : r0 + chunk], head, config)
        ids, lp = topk_logprobs(logits, k, temperature=temperature)
        parts_ids.append(ids)
        parts_lp.append(lp)
    if not parts_ids:
        return torch.empty((0, k), dtype=torch.long), torch.empty((0, k))
    return torch.cat(parts_ids), torch.cat(parts_lp)

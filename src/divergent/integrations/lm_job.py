r"""The job behind ``divergent distill --task lm``: a small GPT-2 teacher, a smaller student per
objective × seed, on text that ships with Python (no network).

1. **Corpus and tokenizer.** The standard library's ``pydoc_data.topics`` help text
   (:func:`divergent.train.text_corpus.load_pydoc_corpus`, ~460 KB, split into train /
   held-out by whole document) and a byte-level BPE tokenizer trained on the training part
   (:func:`~divergent.train.text_corpus.train_bpe_tokenizer`, 4096 symbols; 1024 with
   ``quick``), cut into blocks of ``block_size`` tokens.
2. **Teacher.** A GPT-2 (Radford et al. 2019) trained once with ``transformers.Trainer`` on
   the training blocks and cached as a Hugging Face folder, ``OUT/teacher/`` (model, tokenizer
   and ``divergent-teacher.json`` with the fingerprint of the corpus, the tokenizer and every
   training setting). A rerun reuses it only if the fingerprint matches, and refuses
   otherwise. ``teacher=DIR`` loads a user's folder instead (``AutoModelForCausalLM`` and
   ``AutoTokenizer.from_pretrained(DIR)``: the code path of downloaded models).
3. **Students.** A clearly smaller GPT-2 (or ``student=DIR``) trained with each objective:

   - ``ce``: fine-tuning on the next tokens only (``transformers.Trainer``);
   - ``kd`` / ``kd:<divergence>``: token-level distillation with any registered divergence
     :math:`\frac1N\sum_t D(p_T(\cdot\mid x_{<t}) \,\|\, p_S(\cdot\mid x_{<t}))` at
     temperature 1, no label term (Hinton et al. 2015, arXiv:1503.02531), with
     :class:`divergent.integrations.transformers.DistillationTrainer`;
   - ``gkd:<λ>[:<β>]``: on-policy distillation (Agarwal et al. 2024, GKD,
     arXiv:2306.13649): a fraction λ of the batches are the student's own continuations,
     scored by the generalized JSD with mixture weight β (default 0.5; β = 0 is KL, β = 1
     reverse KL, as TRL's ``GKDTrainer``).

4. **Measures** on the held-out blocks: perplexity of student and teacher
   :math:`\exp(\frac1N\sum_t -\log p(x_t\mid x_{<t}))`, ``token_kl`` = mean over next-token
   positions of :math:`\mathrm{KL}(p_T\|p_S)`, ``agreement`` = fraction of positions where the
   two arg-max next tokens agree; ``tokens_per_s`` (training tokens / training wall time, all
   processes), ``peak_rss_mb`` (the process's peak resident memory during the run; Linux
   resets it per run through ``/proc/self/clear_refs``) and a greedy ``sample`` continuing
   :data:`SAMPLE_PROMPT`. Written to ``OUT/report.json``, ``OUT/report.md``,
   ``OUT/plots/*.png``; each finished run to ``OUT/runs/<objective>/seed-<k>/result.json``
   (and its model folder) atomically, so ``resume=True`` skips finished runs and a killed job
   loses at most the run in progress.

The job runs PyTorch on one thread per process (:func:`divergent._threads.single_thread`): the
models are small, and on a shared 2-core machine two threads measured 8× the CPU time of one
for the same steps. Launched by ``torchrun --nproc_per_node N`` the same job trains every model
with DDP (the Trainer's, gloo on CPU); the batch size is per process, and only rank 0 writes
files.

Bad input raises :class:`divergent.train.distill_job.DistillError` with one line: an unknown
objective id, a folder that is not a causal LM or has no tokenizer, teacher and student
vocabularies that differ, a cached teacher from other settings, a report of another task in
``OUT``; nothing already written is removed.

Example:
    >>> import tempfile
    >>> config = LMDistillConfig(objectives=("kd:js",), seeds=1, steps=2, teacher_steps=2,
    ...     out=tempfile.mkdtemp(), **TINY_SETTINGS)
    >>> report = run_lm_distill(config)
    >>> [(run["objective"], run["seed"]) for run in report["runs"]]
    [('ce', 0), ('kd:js', 0)]
    >>> report["task"], report["teacher"]["perplexity"] > 1.0, report["teacher"]["cached"]
    ('lm', True, False)
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import json
import math
import os
import re
import shutil
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import transformers
from rich.progress import Progress
from torch import Tensor, nn
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    GPT2Config,
    GPT2LMHeadModel,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)

from divergent._files import atomic_write_bytes, fsync_dir
from divergent._threads import single_thread
from divergent.categorical import get_divergence, list_divergences
from divergent.functional import divergence
from divergent.integrations._hf_models import max_positions
from divergent.integrations.lm_defaults import DEFAULT_LM_OBJECTIVES, QUICK_LM_OBJECTIVES
from divergent.integrations.transformers import DistillationTrainer
from divergent.objectives import make_objective
from divergent.train.distill_job import (
    DistillError,
    objective_ids,
    prepare_out,
    resolve_device,
    run_folder,
    run_grid,
    save_png,
    summarize_runs,
    write_json,
)
from divergent.train.text_corpus import (
    load_pydoc_corpus,
    token_blocks,
    tokenizer_fingerprint,
    train_bpe_tokenizer,
)

__all__ = [
    "DEFAULT_LM_OBJECTIVES",
    "QUICK_LM_OBJECTIVES",
    "SAMPLE_PROMPT",
    "TINY_SETTINGS",
    "LMDistillConfig",
    "LMObjective",
    "ModelShape",
    "evaluate_causal_lm",
    "load_causal_lm_folder",
    "markdown_lm_report",
    "parse_lm_objectives",
    "run_lm_distill",
    "summarize_lm",
]

BASELINE = "ce"
SAMPLE_PROMPT = "The with statement is used to"
"""The fixed prompt each student continues greedily for its ``sample``."""
TEACHER_FOLDER = "teacher"
TEACHER_RECORD = "divergent-teacher.json"
_TEACHER_FORMAT = "divergent-lm-teacher"
_TEACHER_SEED = 12345
_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.json",
    "tokenizer.model",
    "spiece.model",
    "vocab.txt",
)


@dataclass(frozen=True)
class ModelShape:
    """A GPT-2 shape: layers, width (divisible by the heads), attention heads."""

    n_layer: int
    n_embd: int
    n_head: int

    def config(self, vocab_size: int, block_size: int, eos_token_id: int) -> GPT2Config:
        """The ``GPT2Config`` of this shape (no dropout: runs are reproducible)."""
        return GPT2Config(
            vocab_size=vocab_size,
            n_positions=block_size,
            n_embd=self.n_embd,
            n_layer=self.n_layer,
            n_head=self.n_head,
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
            bos_token_id=eos_token_id,
            eos_token_id=eos_token_id,
            pad_token_id=eos_token_id,
            tie_word_embeddings=True,
        )


TEACHER_SHAPE = ModelShape(n_layer=4, n_embd=128, n_head=4)
STUDENT_SHAPE = ModelShape(n_layer=2, n_embd=48, n_head=2)
QUICK_TEACHER_SHAPE = ModelShape(n_layer=2, n_embd=96, n_head=4)
QUICK_STUDENT_SHAPE = ModelShape(n_layer=1, n_embd=32, n_head=2)

TINY_SETTINGS: dict[str, Any] = {
    "max_documents": 6,
    "vocab_size": 300,
    "block_size": 16,
    "batch_size": 4,
    "eval_blocks": 8,
    "sample_tokens": 4,
    "teacher_shape": ModelShape(n_layer=1, n_embd=32, n_head=2),
    "student_shape": ModelShape(n_layer=1, n_embd=16, n_head=2),
}
"""Settings for tests and doctests: a few documents, vocabulary 300, 1-layer models."""


@dataclass(repr=False, eq=False)
class LMObjective:
    """A parsed ``--task lm`` objective id.

    Attributes:
        id: the id as given (``"ce"``, ``"kd:js"``, ``"gkd:0.5"`` ...).
        kind: ``"ce"``, ``"kd"`` or ``"gkd"``.
        divergence: the divergence name (``None`` for ``ce``).
        params: the divergence's parameters (``{"beta": β}`` for ``gkd`` with JS).
        lmbda: the on-policy fraction (0 except ``gkd``).
    """

    id: str
    kind: str
    divergence: str | None = None
    params: dict[str, float] | None = None
    lmbda: float = 0.0

    def __post_init__(self) -> None:
        self.params = dict(self.params or {})

    def describe(self) -> dict[str, Any]:
        """The objective as JSON (part of each run's settings): every attribute but ``id``."""
        return {k: v for k, v in asdict(self).items() if k != "id"}

    def __repr__(self) -> str:
        return f"LMObjective({self.id!r}, {self.describe()})"


def _fraction(text: str, what: str, objective_id: str, *, open_ends: bool = False) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    inside = 0.0 < value < 1.0 if open_ends else 0.0 <= value <= 1.0
    if not inside:
        allowed = "(0, 1)" if open_ends else "[0, 1]"
        raise DistillError(
            f"objective {objective_id!r}: {what} must be a number in {allowed}, got {text!r}"
        )
    return value


def _parse_one(objective_id: str) -> LMObjective:
    if objective_id == "ce":
        return LMObjective("ce", "ce")
    if objective_id == "kd" or objective_id.startswith("kd:"):
        name = objective_id.split(":", 1)[1] if ":" in objective_id else "kl"
        try:
            get_divergence(name)
        except ValueError as err:
            close = difflib.get_close_matches(name, [d.name for d in list_divergences()], n=1)
            hint = f"did you mean 'kd:{close[0]}'? " if close else ""
            raise DistillError(
                f"unknown objective {objective_id!r} for --task lm ({str(err).split('.')[0]}); "
                f"{hint}use ce, kd:<divergence> (any name of `divergent list`) or "
                "gkd:<lmbda>[:<beta>] (e.g. gkd:0.5)"
            ) from None
        return LMObjective(objective_id, "kd", name)
    if objective_id.startswith("gkd:"):
        parts = objective_id.split(":")
        if len(parts) not in (2, 3):
            raise DistillError(
                f"objective {objective_id!r}: use gkd:<lmbda> or gkd:<lmbda>:<beta>, e.g. gkd:0.5"
            )
        lmbda = _fraction(parts[1], "lmbda (the on-policy fraction)", objective_id)
        beta = _fraction(parts[2], "beta", objective_id) if len(parts) == 3 else 0.5
        if beta == 0.0:
            return LMObjective(objective_id, "gkd", "kl", lmbda=lmbda)
        if beta == 1.0:
            return LMObjective(objective_id, "gkd", "reverse_kl", lmbda=lmbda)
        return LMObjective(objective_id, "gkd", "js", {"beta": beta}, lmbda=lmbda)
    try:
        make_objective(objective_id)
    except ValueError:
        raise DistillError(
            f"unknown objective {objective_id!r} for --task lm; use ce, kd:<divergence> (e.g. "
            "kd:js, any name of `divergent list`) or gkd:<lmbda>[:<beta>] (e.g. gkd:0.5)"
        ) from None
    raise DistillError(
        f"objective {objective_id!r} is for --task classifier; --task lm takes ce, "
        "kd:<divergence> and gkd:<lmbda>[:<beta>]"
    )


def parse_lm_objectives(ids: Sequence[str]) -> tuple[LMObjective, ...]:
    """Parse objective ids (comma-separated items allowed), baseline ``ce`` first, no repeats.

    Args:
        ids: ``ce``, ``kd`` (= ``kd:kl``), ``kd:<divergence>`` (any registered divergence),
            ``gkd:<lmbda>`` or ``gkd:<lmbda>:<beta>`` (λ, β in [0, 1]).

    Returns:
        The parsed objectives, ``ce`` first.

    Raises:
        DistillError: an unknown id (with a did-you-mean suggestion where one is close), a
            classifier-only id, or λ / β outside [0, 1].
    """
    return tuple(_parse_one(objective_id) for objective_id in objective_ids(ids))


@dataclass(frozen=True)
class LMDistillConfig:
    """Settings of :func:`run_lm_distill` (the flags of ``divergent distill --task lm``).

    Attributes:
        objectives: objective ids (``ce`` is always added first as the baseline); default
            :data:`DEFAULT_LM_OBJECTIVES` (:data:`QUICK_LM_OBJECTIVES` with ``quick``).
        seeds: students per objective (seeds ``0 … seeds−1``); default 2 (1 with ``quick``).
        steps: optimiser steps per student (default 300; 80 with ``quick``).
        teacher_steps: optimiser steps of the teacher (default 400; 300 with ``quick``).
            Measured (1 seed, full sizes): at 1000 steps the teacher overfits the ~100k
            training tokens (train perplexity 3.5, held-out 62) and every KD student ends
            worse than ``ce`` (210; reverse KL 1310); at 400 (held-out 166) the kd:kl / kd:js
            students match ``ce`` (214 / 211) with half its token KL to the teacher.
        quick: the small version (≤ 2 min on 2 cores).
        out: the output folder.
        resume: keep finished runs of ``out``.
        teacher, student: Hugging Face causal-LM folders (model + tokenizer) to use instead of
            the built-in GPT-2 shapes.
        device: ``"cpu"`` or ``"auto"`` (CUDA when available).
        vocab_size, block_size, batch_size, lr, teacher_lr: data and optimiser settings (AdamW,
            cosine schedule after a 5 % warm-up; lr 1e-2 for students, 3e-3 for the teacher;
            ``batch_size`` per process). ``None`` = the default of the mode.
        max_documents: use only the first documents of the corpus (tests).
        eval_blocks: held-out blocks measured (``None``: all).
        sample_tokens: tokens generated for each run's sample.
        teacher_shape, student_shape: the built-in models' shapes (``None``: the mode's).
    """

    objectives: tuple[str, ...] | None = None
    seeds: int | None = None
    steps: int | None = None
    teacher_steps: int | None = None
    quick: bool = False
    out: str | os.PathLike[str] = "runs/distill-lm"
    resume: bool = False
    teacher: str | os.PathLike[str] | None = None
    student: str | os.PathLike[str] | None = None
    device: str = "cpu"
    vocab_size: int | None = None
    block_size: int | None = None
    batch_size: int = 16
    lr: float = 1e-2
    teacher_lr: float = 3e-3
    max_documents: int | None = None
    eval_blocks: int | None = None
    sample_tokens: int = 24
    teacher_shape: ModelShape | None = None
    student_shape: ModelShape | None = None

    def resolved(self) -> dict[str, Any]:
        """Every setting with the mode's defaults filled in."""
        quick = self.quick
        return {
            "objectives": [o.id for o in self.selected],
            "seeds": self.seeds if self.seeds is not None else (1 if quick else 2),
            "steps": self.steps if self.steps is not None else (80 if quick else 300),
            "teacher_steps": self.teacher_steps
            if self.teacher_steps is not None
            else (300 if quick else 400),
            "vocab_size": self.vocab_size
            if self.vocab_size is not None
            else (1024 if quick else 4096),
            "block_size": self.block_size
            if self.block_size is not None
            else (64 if quick else 128),
            "batch_size": self.batch_size,
            "lr": self.lr,
            "teacher_lr": self.teacher_lr,
            "eval_blocks": self.eval_blocks
            if self.eval_blocks is not None
            else (48 if quick else None),
            "teacher_shape": asdict(
                self.teacher_shape or (QUICK_TEACHER_SHAPE if quick else TEACHER_SHAPE)
            ),
            "student_shape": asdict(
                self.student_shape or (QUICK_STUDENT_SHAPE if quick else STUDENT_SHAPE)
            ),
            "quick": quick,
        }

    @property
    def selected(self) -> tuple[LMObjective, ...]:
        chosen = self.objectives
        if chosen is None:
            chosen = QUICK_LM_OBJECTIVES if self.quick else DEFAULT_LM_OBJECTIVES
        return parse_lm_objectives(chosen)


# ----------------------------------------------------------------------------- processes


def _rank() -> int:
    return int(os.environ.get("RANK", "0"))


def _world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def _barrier() -> None:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Silence transformers' info/warning chatter and its save progress bars in the job."""
    logging = transformers.utils.logging
    previous = logging.get_verbosity()
    bars = logging.is_progress_bar_enabled()
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        logging.set_verbosity(previous)
        if bars:
            logging.enable_progress_bar()


def _reset_peak_rss() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _peak_rss_mb() -> float:
    """Peak resident memory (MiB): ``VmHWM`` on Linux, else ``ru_maxrss``."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    import resource  # not on Windows; /proc is tried first

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024.0 if os.uname().sysname != "Darwin" else peak / 2**20


# ----------------------------------------------------------------------------- files


def _save_folder(destination: Path, write: Callable[[Path], None]) -> None:
    """Write a folder with ``write(tmp)`` then move it into place in one rename.

    An older folder at ``destination`` is replaced only after the new one is complete.
    """
    tmp = destination.with_name(f".{destination.name}.{uuid.uuid4().hex}.tmp")
    tmp.mkdir(parents=True)
    try:
        write(tmp)
        old = None
        if destination.exists():
            old = destination.with_name(f".{destination.name}.{uuid.uuid4().hex}.old")
            os.replace(destination, old)
        os.replace(tmp, destination)
        fsync_dir(destination.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _weights_digest(model: nn.Module) -> str:
    digest = hashlib.sha256()
    for key, value in sorted(model.state_dict().items()):
        digest.update(key.encode())
        digest.update(value.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy())
    return digest.hexdigest()[:16]


# ----------------------------------------------------------------------------- models


def load_causal_lm_folder(path: str | os.PathLike[str], role: str = "model") -> tuple[Any, Any]:
    """Load a local Hugging Face causal-LM folder and its tokenizer (no network).

    Args:
        path: a folder written by ``save_pretrained`` (``config.json``, weights, tokenizer).
        role: the flag named in errors (``"teacher"``, ``"student"``).

    Returns:
        ``(model, tokenizer)``: ``AutoModelForCausalLM.from_pretrained(path)`` in eval mode and
        ``AutoTokenizer.from_pretrained(path)``.

    Raises:
        DistillError: one line: no such folder, no ``config.json``, a model that is not a
            causal LM, missing weights, or no tokenizer files.
    """
    folder = Path(path)
    flag = f"--{role} {folder}"
    if folder.is_file():
        raise DistillError(
            f"{flag}: a file, not a folder; --task lm takes a Hugging Face causal-LM folder "
            "(model.save_pretrained + tokenizer.save_pretrained)"
        )
    if not folder.is_dir():
        raise DistillError(f"{flag}: no such folder")
    if not (folder / "config.json").is_file():
        raise DistillError(
            f"{flag}: not a Hugging Face model folder (no config.json); write one with "
            "model.save_pretrained(folder)"
        )
    try:
        model = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True)
    except ValueError as err:
        first = str(err).splitlines()[0]
        if "Unrecognized configuration class" in first:
            kind = re.search(r"<class '[\w.]*\.(\w+)'>", first)
            name = kind.group(1) if kind else "its config"
            raise DistillError(
                f"{flag}: not a causal language model ({name} has no AutoModelForCausalLM "
                "class); give a decoder-only model folder such as GPT-2 or Llama"
            ) from None
        raise DistillError(f"{flag}: not a causal language model folder ({first})") from None
    except OSError as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise DistillError(f"{flag}: cannot load the model ({first})") from None
    if not any((folder / name).is_file() for name in _TOKENIZER_FILES):
        raise DistillError(
            f"{flag}: missing tokenizer (none of {', '.join(_TOKENIZER_FILES[:3])} ...); save "
            "it into the folder with tokenizer.save_pretrained(folder)"
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError, TypeError) as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise DistillError(f"{flag}: missing or unreadable tokenizer ({first})") from None
    if tokenizer.eos_token_id is None:
        raise DistillError(f"{flag}: the tokenizer has no eos token (needed between documents)")
    if len(tokenizer) > model.config.vocab_size:
        raise DistillError(
            f"{flag}: the tokenizer has {len(tokenizer)} tokens but the model's vocabulary only "
            f"{model.config.vocab_size}"
        )
    return model.eval(), tokenizer


def _vocab_size(model: nn.Module) -> int:
    return int(model.get_output_embeddings().weight.shape[0])


def _check_pair(teacher: nn.Module, student: nn.Module) -> None:
    """Teacher and student heads with the same vocabulary, or a one-line error saying the fixes."""
    teacher_vocab, student_vocab = _vocab_size(teacher), _vocab_size(student)
    if teacher_vocab != student_vocab:
        raise DistillError(
            f"teacher and student vocabularies differ ({teacher_vocab} vs {student_vocab} "
            'tokens); distil over the shared ids with vocab="truncate" or across tokenizers '
            "with the ULD loss (divergent.transport.uld)"
        )


# ----------------------------------------------------------------------------- data


class _Blocks(torch.utils.data.Dataset):
    """Token blocks as causal-LM examples (labels = inputs; the model shifts them).

    With ``prompt_length`` > 0 the first tokens are a prompt (label −100): the rest is the
    completion that on-policy distillation replaces by the student's own continuation.
    """

    def __init__(self, blocks: Tensor, prompt_length: int = 0) -> None:
        self.blocks = blocks
        self.prompt_length = prompt_length

    def __len__(self) -> int:
        return int(self.blocks.shape[0])

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        row = self.blocks[index]
        labels = row.clone()
        labels[: self.prompt_length] = -100
        return {"input_ids": row, "attention_mask": torch.ones_like(row), "labels": labels}


class _Monitor(TrainerCallback):
    """Records the loss at every logged step and drives a rich progress bar."""

    def __init__(self, progress: Progress | None, description: str) -> None:
        self.progress = progress
        self.description = description
        self.history: list[dict[str, float]] = []
        self._task: Any = None

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.progress is not None:
            self._task = self.progress.add_task(self.description, total=state.max_steps)

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self._task is not None:
            self.progress.update(self._task, completed=state.global_step)

    def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kw: Any) -> None:
        if logs and "loss" in logs:
            self.history.append({"step": int(state.global_step), "loss": float(logs["loss"])})

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self._task is not None:
            self.progress.remove_task(self._task)
            self._task = None


def _training_arguments(
    folder: Path, *, steps: int, batch_size: int, lr: float, seed: int, device: str
) -> TrainingArguments:
    return TrainingArguments(
        output_dir=str(folder),
        max_steps=steps,
        per_device_train_batch_size=batch_size,
        learning_rate=lr,
        lr_scheduler_type="cosine",
        warmup_steps=max(1, steps // 20),
        weight_decay=0.0,
        logging_strategy="steps",
        logging_steps=1,
        save_strategy="no",
        eval_strategy="no",
        report_to="none",
        use_cpu=device == "cpu",
        ddp_backend="gloo" if device == "cpu" and _world_size() > 1 else None,
        seed=seed,
        data_seed=seed,
        dataloader_drop_last=True,
        dataloader_num_workers=0,
        disable_tqdm=True,
        remove_unused_columns=False,
    )


def _fit(
    setup: _Setup,
    make_trainer: Callable[[TrainingArguments, _Monitor], Trainer],
    folder: Path,
    *,
    steps: int,
    lr: float,
    seed: int,
    progress: Progress | None,
    description: str,
) -> dict[str, Any]:
    """Train for ``steps`` steps with the job's batch size (the Trainer from ``make_trainer``,
    writing to ``folder``); return its measures: seconds, tokens, tokens per second, peak RSS
    and the loss history."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    settings = setup.settings
    monitor = _Monitor(progress, description)
    args = _training_arguments(
        folder,
        steps=steps,
        batch_size=settings["batch_size"],
        lr=lr,
        seed=seed,
        device=setup.device,
    )
    trainer = make_trainer(args, monitor)
    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    measured = _reset_peak_rss()
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    tokens = steps * settings["batch_size"] * settings["block_size"] * _world_size()
    return {
        "seconds": seconds,
        "tokens": tokens,
        "tokens_per_s": tokens / seconds,
        "peak_rss_mb": _peak_rss_mb(),
        "peak_rss_is_per_run": measured,
        "history": monitor.history,
    }


# ----------------------------------------------------------------------------- measures


@torch.no_grad()
def evaluate_causal_lm(
    model: nn.Module, blocks: Tensor, reference: nn.Module | None = None, batch_size: int = 16
) -> dict[str, float]:
    r"""Next-token measures of a causal LM on token blocks, optionally against a reference.

    .. math::
        \mathrm{ppl} = \exp\Big(\tfrac1N \sum_{b,t} -\log q(x_{b,t+1}\mid x_{b,\le t})\Big),\quad
        \mathrm{token\_kl} = \tfrac1N \sum_{b,t} \mathrm{KL}(p_{b,t}\,\|\,q_{b,t}),\quad
        \mathrm{agreement} = \tfrac1N \sum_{b,t} [\arg\max p_{b,t} = \arg\max q_{b,t}]

    with :math:`q` the model's and :math:`p` the reference's (teacher's) next-token
    distributions and :math:`N = B(T-1)` positions; computed in float64.

    Args:
        model: the causal LM measured (``model(input_ids=...).logits``).
        blocks: ``(B, T)`` token ids, every position real.
        reference: the teacher; ``None`` returns the perplexity only.
        batch_size: blocks per forward pass.

    Returns:
        ``{"perplexity", "nll"}`` plus ``{"token_kl", "agreement"}`` with a reference.
    """
    device = next(model.parameters()).device
    nll = kl = agree = 0.0
    count = 0
    for chunk in blocks.split(batch_size):
        chunk = chunk.to(device)
        logits = model(input_ids=chunk).logits[:, :-1].double()
        targets = chunk[:, 1:]
        log_q = logits.log_softmax(-1)
        nll -= float(log_q.gather(-1, targets.unsqueeze(-1)).sum())
        count += targets.numel()
        if reference is not None:
            ref_logits = reference(input_ids=chunk).logits[:, :-1].double()
            kl += float(divergence("kl", ref_logits, logits, reduction="sum"))
            agree += float((ref_logits.argmax(-1) == logits.argmax(-1)).sum())
    result = {"nll": nll / count, "perplexity": math.exp(nll / count)}
    if reference is not None:
        result |= {"token_kl": kl / count, "agreement": agree / count}
    return result


@torch.no_grad()
def _sample(model: nn.Module, tokenizer: Any, max_new_tokens: int) -> str:
    device = next(model.parameters()).device
    ids = tokenizer(SAMPLE_PROMPT, return_tensors="pt", add_special_tokens=False)["input_ids"]
    found = max_positions(model)
    if found is not None:  # the prompt's last tokens, so that prompt + sample fit the model
        limit = found[0]
        max_new_tokens = min(max_new_tokens, limit - 1)
        ids = ids[:, -(limit - max_new_tokens) :]
    output = model.generate(
        input_ids=ids.to(device),
        attention_mask=torch.ones_like(ids).to(device),
        max_new_tokens=max_new_tokens,
        do_sample=False,
        pad_token_id=tokenizer.pad_token_id
        if tokenizer.pad_token_id is not None
        else tokenizer.eos_token_id,
    )
    return tokenizer.decode(output[0], skip_special_tokens=True)


# ----------------------------------------------------------------------------- the job


@dataclass
class _Setup:
    settings: dict[str, Any]
    tokenizer: Any
    train_blocks: Tensor
    eval_blocks: Tensor
    corpus: Any
    device: str
    out: Path
    vocab: int
    given_teacher: nn.Module | None = None
    student_source: tuple[str, str] | None = None  # (student folder, digest of its weights)
    teacher_info: dict[str, Any] = field(default_factory=dict)


def _check_numbers(config: LMDistillConfig, settings: dict[str, Any]) -> None:
    checks = [
        ("--seeds", settings["seeds"], 1),
        ("--steps", settings["steps"], 1),
        ("--teacher-steps", settings["teacher_steps"], 1),
        ("--block-size", settings["block_size"], 4),
        ("--batch-size", settings["batch_size"], 1),
        ("--vocab-size", settings["vocab_size"], 258),
        ("sample_tokens", config.sample_tokens, 1),
    ]
    for flag, value, low in checks:
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise DistillError(f"{flag} must be an integer >= {low}, got {value!r}")
    for flag, value in (("--lr", config.lr), ("teacher_lr", config.teacher_lr)):
        if not (isinstance(value, float | int) and math.isfinite(value) and value > 0):
            raise DistillError(f"{flag} must be a positive number, got {value!r}")


def _teacher(
    config: LMDistillConfig, setup: _Setup, progress: Progress | None
) -> tuple[nn.Module, dict[str, Any]]:
    """Load the given or cached teacher, or train it once and cache it in OUT/teacher/."""
    settings, tokenizer = setup.settings, setup.tokenizer
    if setup.given_teacher is not None:
        teacher = setup.given_teacher
        return teacher.to(setup.device).eval(), {
            "source": str(config.teacher),
            "cached": False,
            "digest": _weights_digest(teacher),
        }
    vocab = setup.vocab
    shape = ModelShape(**settings["teacher_shape"])
    teacher_settings = {
        "format": _TEACHER_FORMAT,
        "corpus": setup.corpus.fingerprint,
        "tokenizer": tokenizer_fingerprint(tokenizer),
        "model": {**asdict(shape), "vocab_size": vocab, "n_positions": settings["block_size"]},
        "steps": settings["teacher_steps"],
        "global_batch_size": settings["batch_size"] * _world_size(),
        "block_size": settings["block_size"],
        "lr": config.teacher_lr,
        "seed": _TEACHER_SEED,
        "transformers": transformers.__version__,
    }
    fingerprint = hashlib.sha256(json.dumps(teacher_settings, sort_keys=True).encode()).hexdigest()
    folder = setup.out / TEACHER_FOLDER
    record_path = folder / TEACHER_RECORD
    if folder.exists():
        try:
            record = json.loads(record_path.read_text())
        except (OSError, ValueError):
            raise DistillError(
                f"{folder}: not a teacher written by divergent distill --task lm (no readable "
                f"{TEACHER_RECORD}); use another --out"
            ) from None
        if record.get("fingerprint") != fingerprint:
            saved = record.get("settings", {})
            changed = sorted(k for k in teacher_settings if saved.get(k) != teacher_settings[k])
            raise DistillError(
                f"--out {setup.out} holds a teacher trained with other settings "
                f"({', '.join(changed) or 'fingerprint'}); use another --out (or delete {folder} "
                "to train a new one)"
            )
        teacher, _ = load_causal_lm_folder(folder, "teacher")
        return teacher.to(setup.device).eval(), {
            **record["summary"],
            "cached": True,
            "digest": _weights_digest(teacher),
        }

    torch.manual_seed(_TEACHER_SEED)
    teacher = GPT2LMHeadModel(
        shape.config(vocab, settings["block_size"], tokenizer.eos_token_id)
    ).to(setup.device)
    scratch = setup.out / "runs" / ".hf-teacher"
    measured = _fit(
        setup,
        lambda args, monitor: Trainer(
            model=teacher, args=args, train_dataset=_Blocks(setup.train_blocks), callbacks=[monitor]
        ),
        scratch,
        steps=settings["teacher_steps"],
        lr=config.teacher_lr,
        seed=_TEACHER_SEED,
        progress=progress,
        description="teacher",
    )
    teacher.eval()
    if _rank() == 0:
        shutil.rmtree(scratch, ignore_errors=True)
    summary = {
        "parameters": sum(p.numel() for p in teacher.parameters()),
        "shape": asdict(shape),
        "steps": settings["teacher_steps"],
        "seconds": measured["seconds"],
        "tokens_per_s": measured["tokens_per_s"],
        "history": measured["history"],
    }
    if _rank() == 0:

        def write(tmp: Path) -> None:
            teacher.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            write_json(
                tmp / TEACHER_RECORD,
                {"fingerprint": fingerprint, "settings": teacher_settings, "summary": summary},
            )

        _save_folder(folder, write)
    _barrier()
    return teacher, {**summary, "cached": False, "digest": _weights_digest(teacher)}


def _student(setup: _Setup, seed: int) -> nn.Module:
    if setup.student_source is not None:
        model, _ = load_causal_lm_folder(setup.student_source[0], "student")
        return model.to(setup.device)
    shape = ModelShape(**setup.settings["student_shape"])
    torch.manual_seed(1000 + seed)
    config = shape.config(setup.vocab, setup.settings["block_size"], setup.tokenizer.eos_token_id)
    return GPT2LMHeadModel(config).to(setup.device)


def _make_trainer(
    objective: LMObjective,
    student: nn.Module,
    teacher: nn.Module,
    args: TrainingArguments,
    blocks: Tensor,
    monitor: _Monitor,
) -> Trainer:
    if objective.kind == "ce":
        return Trainer(model=student, args=args, train_dataset=_Blocks(blocks), callbacks=[monitor])
    prompt_length = blocks.shape[1] // 2 if objective.kind == "gkd" else 0
    return DistillationTrainer(
        model=student,
        args=args,
        train_dataset=_Blocks(blocks, prompt_length),
        callbacks=[monitor],
        max_new_tokens=max(1, blocks.shape[1] - prompt_length),
        teacher_model=teacher,
        divergence=objective.divergence,
        divergence_params=objective.params,
        temperature=1.0,
        ce_weight=0.0,
        lmbda=objective.lmbda,
    )


def _run_settings(
    config: LMDistillConfig, setup: _Setup, objective: LMObjective, seed: int
) -> dict[str, Any]:
    """The settings of one run, stored in its record (``--resume`` compares them)."""
    settings = setup.settings
    return {
        "objective": objective.id,
        "definition": objective.describe(),
        "seed": seed,
        "steps": settings["steps"],
        "global_batch_size": settings["batch_size"] * _world_size(),
        "block_size": settings["block_size"],
        "lr": config.lr,
        "student_shape": settings["student_shape"] if setup.student_source is None else None,
        "student_source": setup.student_source[0] if setup.student_source else None,
        "student_digest": setup.student_source[1] if setup.student_source else None,
        "teacher": setup.teacher_info["digest"],
        "corpus": setup.corpus.fingerprint,
        "tokenizer": tokenizer_fingerprint(setup.tokenizer),
        "eval_blocks": int(setup.eval_blocks.shape[0]),
        "sample_tokens": config.sample_tokens,
    }


def _train_run(
    config: LMDistillConfig,
    setup: _Setup,
    teacher: nn.Module,
    objective: LMObjective,
    seed: int,
    run_settings: dict[str, Any],
    progress: Progress | None,
) -> dict[str, Any]:
    """Train one student, measure it, write its model and ``result.json`` (rank 0)."""
    run_dir = run_folder(setup.out, objective.id, seed)
    student = _student(setup, seed)
    measured = _fit(
        setup,
        lambda args, monitor: _make_trainer(
            objective, student, teacher, args, setup.train_blocks, monitor
        ),
        run_dir / ".hf",
        steps=setup.settings["steps"],
        lr=config.lr,
        seed=seed,
        progress=progress,
        description=f"{objective.id} seed {seed}",
    )
    student.eval()
    metrics = evaluate_causal_lm(student, setup.eval_blocks, reference=teacher)
    record = {
        "objective": objective.id,
        "seed": seed,
        "perplexity": metrics["perplexity"],
        "token_kl": metrics["token_kl"],
        "agreement": metrics["agreement"],
        "tokens_per_s": measured["tokens_per_s"],
        "peak_rss_mb": measured["peak_rss_mb"],
        "sample": _sample(student, setup.tokenizer, config.sample_tokens),
        "nll": metrics["nll"],
        "seconds": measured["seconds"],
        "final_loss": measured["history"][-1]["loss"] if measured["history"] else math.nan,
        "history": measured["history"],
        "settings": run_settings,
    }
    if _rank() == 0:
        run_dir.mkdir(parents=True, exist_ok=True)

        def write(tmp: Path) -> None:
            student.save_pretrained(tmp)
            setup.tokenizer.save_pretrained(tmp)

        _save_folder(run_dir / "model", write)
        shutil.rmtree(run_dir / ".hf", ignore_errors=True)
        write_json(run_dir / "result.json", record)  # last: its presence means the run finished
    _barrier()
    return record


def summarize_lm(runs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per objective (first-seen order): mean and sample sd of perplexity, means of the rest."""
    return summarize_runs(
        runs, "perplexity", ("token_kl", "agreement", "tokens_per_s", "peak_rss_mb", "seconds")
    )


def _setup(config: LMDistillConfig, settings: dict[str, Any], out: Path, device: str) -> _Setup:
    try:
        corpus = load_pydoc_corpus(max_documents=config.max_documents)
    except ValueError as err:
        raise DistillError(str(err)) from None
    block = settings["block_size"]
    student = student_tokenizer = teacher = None
    if config.student is not None:
        student, student_tokenizer = load_causal_lm_folder(config.student, "student")
    if config.teacher is not None:
        teacher, tokenizer = load_causal_lm_folder(config.teacher, "teacher")
        if student is not None:
            _check_pair(teacher, student)
            if tokenizer_fingerprint(student_tokenizer) != tokenizer_fingerprint(tokenizer):
                raise DistillError(
                    f"--teacher {config.teacher} and --student {config.student} have different "
                    'tokenizers; distil over the shared ids with vocab="truncate" or across '
                    "tokenizers with the ULD loss (divergent.transport.uld)"
                )
        vocab = _vocab_size(teacher)
    elif student is not None:
        tokenizer, vocab = student_tokenizer, _vocab_size(student)
    else:
        tokenizer = train_bpe_tokenizer(corpus.train, settings["vocab_size"])
        vocab = len(tokenizer)
    for role, model in (("teacher", teacher), ("student", student)):
        found = max_positions(model) if model is not None else None
        if found is not None and found[0] < block:
            raise DistillError(
                f"--block-size {block} is longer than the {role}'s {found[0]} positions"
            )
    try:
        train_blocks = token_blocks(tokenizer, corpus.train, block)
        eval_blocks = token_blocks(tokenizer, corpus.heldout, block)
    except ValueError as err:
        raise DistillError(f"--block-size: {err}") from None
    if settings["eval_blocks"] is not None:
        eval_blocks = eval_blocks[: settings["eval_blocks"]]
    if train_blocks.shape[0] < settings["batch_size"] * _world_size():
        raise DistillError(
            f"--batch-size {settings['batch_size']}: more than the {train_blocks.shape[0]} "
            "training blocks"
        )
    return _Setup(
        settings=settings,
        tokenizer=tokenizer,
        train_blocks=train_blocks,
        eval_blocks=eval_blocks,
        corpus=corpus,
        device=device,
        out=out,
        vocab=vocab,
        given_teacher=teacher,
        student_source=(str(config.student), _weights_digest(student)) if student else None,
    )


def run_lm_distill(
    config: LMDistillConfig,
    *,
    progress: Progress | None = None,
    on_run: Callable[[dict[str, Any]], None] | None = None,
    on_resume: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Run the language-model job; return the report (also written to ``OUT/report.json``).

    Args:
        config: the settings.
        progress: a running rich ``Progress`` to show bars in (none by default).
        on_run: called with each finished run's record (e.g. to print a line).
        on_resume: with ``config.resume``, called before training with the number of finished
            runs kept and the number of runs to train.

    Returns:
        ``{"task": "lm", "teacher": {"perplexity", ...}, "student": {...}, "runs": [{
        "objective", "seed", "perplexity", "token_kl", "agreement", "tokens_per_s",
        "peak_rss_mb", "sample", ...}], "summary": [...], "settings": {...}, "seconds"}``.

    Raises:
        DistillError: bad input (see the module docstring); nothing written is lost.
    """
    settings = config.resolved()
    _check_numbers(config, settings)
    device = resolve_device(config.device)
    out = Path(config.out)
    main = _rank() == 0
    started = time.perf_counter()
    with _quiet_transformers(), single_thread():
        setup = _setup(config, settings, out, device)  # reads only: bad input fails here first
        if main:
            prepare_out(out, job="lm")
        teacher, teacher_info = _teacher(config, setup, progress)
        setup.teacher_info = teacher_info
        teacher_metrics = evaluate_causal_lm(teacher, setup.eval_blocks)
        selected = {objective.id: objective for objective in config.selected}
        runs = run_grid(
            list(selected),
            settings["seeds"],
            out,
            settings=lambda objective_id, seed: _run_settings(
                config, setup, selected[objective_id], seed
            ),
            train=lambda objective_id, seed, run_settings: _train_run(
                config,
                setup,
                teacher,
                selected[objective_id],
                seed,
                run_settings,
                progress if main else None,
            ),
            resume=config.resume,
            progress=progress if main else None,
            on_run=on_run if main else None,
            on_resume=on_resume if main else None,
        )
        student_parameters = sum(p.numel() for p in _student(setup, 0).parameters())
    report = {
        "task": "lm",
        "teacher": {
            "perplexity": teacher_metrics["perplexity"],
            "nll": teacher_metrics["nll"],
            "parameters": sum(p.numel() for p in teacher.parameters()),
            "cached": teacher_info["cached"],
            "source": teacher_info.get("source", str(out / TEACHER_FOLDER)),
            "steps": teacher_info.get("steps"),
            "sample": _sample(teacher, setup.tokenizer, config.sample_tokens),
        },
        "student": {
            "parameters": student_parameters,
            "source": config.student and str(config.student),
        },
        "corpus": {
            "name": setup.corpus.name,
            "fingerprint": setup.corpus.fingerprint,
            "train_documents": len(setup.corpus.train),
            "heldout_documents": len(setup.corpus.heldout),
            "train_blocks": int(setup.train_blocks.shape[0]),
            "eval_blocks": int(setup.eval_blocks.shape[0]),
            "tokenizer_vocab": len(setup.tokenizer),
        },
        "settings": {**settings, "world_size": _world_size(), "device": device},
        "runs": [{k: v for k, v in r.items() if k not in ("history", "settings")} for r in runs],
        "summary": summarize_lm(runs),
        "earlier_runs_not_in_report": _earlier_runs(out, runs),
        "seconds": time.perf_counter() - started,
    }
    if main:
        _plots(out, runs, report)
        atomic_write_bytes(out / "report.md", markdown_lm_report(report).encode())
        write_json(out / "report.json", report)  # last: its presence means the job finished
    _barrier()
    return report


def _earlier_runs(out: Path, runs: Sequence[dict[str, Any]]) -> list[str]:
    """Finished runs in ``out/runs`` that this invocation did not (re)run: an earlier job's
    other objectives or seeds. They stay on disk; the report lists where, so nothing a user ran
    silently drops out of view (``--resume`` with those objectives includes them)."""
    current = {(r["objective"], r["seed"]) for r in runs}
    found = []
    for path in sorted((out / "runs").glob("*/seed-*/result.json")):
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if (record.get("objective"), record.get("seed")) not in current:
            found.append(str(path.relative_to(out).parent))
    return found


def markdown_lm_report(report: dict[str, Any]) -> str:
    """``report.md``: the table, the models, the corpus and what each column means."""
    teacher, settings, corpus = report["teacher"], report["settings"], report["corpus"]
    lines = [
        "# divergent distill --task lm",
        "",
        f"Teacher: {teacher['parameters']:,} parameters ({teacher['source']}); student: "
        f"{report['student']['parameters']:,} parameters. Corpus: {corpus['name']} "
        f"({corpus['train_documents']} training / {corpus['heldout_documents']} held-out "
        f"documents, {corpus['train_blocks']} training blocks of {settings['block_size']} "
        f"tokens, {corpus['eval_blocks']} held-out blocks measured), tokenizer of "
        f"{corpus['tokenizer_vocab']} tokens. {settings['seeds']} seed(s) × "
        f"{settings['steps']} steps of {settings['batch_size']} blocks per process "
        f"({settings['world_size']} process(es)) per objective.",
        "",
        "| objective | perplexity (mean ± sd) | token KL | agreement | tokens/s | peak RSS MB |",
        "|---|---|---|---|---|---|",
        f"| teacher | {teacher['perplexity']:.3f} | — | — | — | — |",
    ]
    for row in report["summary"]:
        lines.append(
            f"| {row['objective']} | {row['perplexity_mean']:.3f} ± {row['perplexity_sd']:.3f} "
            f"| {row['token_kl_mean']:.4f} | {row['agreement_mean']:.4f} | "
            f"{row['tokens_per_s_mean']:.0f} | {row['peak_rss_mb_mean']:.0f} |"
        )
    lines += [
        "",
        "Held-out next-token measures after the last step (no model selection), means over "
        "seeds (sd = sample standard deviation): perplexity = exp(mean NLL); token KL = mean "
        "over positions of KL(teacher ‖ student); agreement = fraction of positions where the "
        "arg-max next tokens agree. tokens/s = training tokens / training wall time; peak RSS = "
        "the process's peak resident memory during the run. `ce` trains on the next tokens only;"
        " `kd:<d>` minimises the divergence d(teacher ‖ student) per token at T = 1; "
        "`gkd:<λ>` uses the student's own continuations for a fraction λ of the batches.",
        "",
        f"Teacher sample: `{teacher['sample']!r}`",
        "",
        "Samples (seed 0, greedy, prompt fixed):",
        "",
    ]
    for run in report["runs"]:
        if run["seed"] == 0:
            lines.append(f"- `{run['objective']}`: `{run['sample']!r}`")
    lines += ["", "Plots: `plots/loss_curves.png`, `plots/perplexity.png`.", ""]
    return "\n".join(lines)


def _plots(out: Path, runs: Sequence[dict[str, Any]], report: dict[str, Any]) -> None:
    from matplotlib import colormaps
    from matplotlib.figure import Figure

    folder = out / "plots"
    folder.mkdir(exist_ok=True)

    palette = colormaps["tab10"]
    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.subplots()
    names = [row["objective"] for row in report["summary"]]
    for index, objective in enumerate(names):
        seed0 = [r for r in runs if r["objective"] == objective and r["seed"] == 0]
        history = seed0[0].get("history") if seed0 else None
        if history:
            ax.plot(
                [h["step"] for h in history],
                [h["loss"] for h in history],
                label=objective,
                color="black" if objective == BASELINE else palette(index % 10),
                lw=1.0,
            )
    ax.set_xlabel("step")
    ax.set_ylabel("training loss (seed 0; each objective's own loss)")
    ax.set_yscale("log")
    ax.legend(fontsize=7)
    ax.set_title("Loss curves")
    save_png(fig, folder / "loss_curves.png")

    summary = report["summary"]
    fig = Figure(figsize=(max(6.0, 0.7 * len(names) + 2), 6.0), layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True)
    xs = list(range(len(names)))
    top.bar(
        xs,
        [r["perplexity_mean"] for r in summary],
        yerr=[r["perplexity_sd"] for r in summary],
        color="tab:blue",
        capsize=3,
    )
    top.axhline(report["teacher"]["perplexity"], color="black", ls="--", lw=1, label="teacher")
    top.set_ylabel("held-out perplexity")
    top.legend(loc="lower right")
    bottom.bar(xs, [r["token_kl_mean"] for r in summary], color="tab:orange")
    bottom.set_ylabel("token KL(teacher ‖ student)")
    bottom.set_xticks(xs, names, rotation=45, ha="right")
    fig.suptitle("Students by objective (mean over seeds)")
    save_png(fig, folder / "perplexity.png")

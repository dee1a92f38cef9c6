"""divergent.train: trainers and shared training loops.

* :mod:`divergent.train.classifier` — :class:`ClassifierTrainer`, a resumable distillation
  trainer for classifiers (atomic checkpoints, exact resume, DDP through Accelerate);
* :mod:`divergent.train.checkpoint` — atomic, verified checkpoint files;
* :mod:`divergent.train.data` — embedded digits, user ``.npz``/``.csv`` tables, small MLPs;
* :mod:`divergent.train.distill_job` — the job behind ``divergent distill``;
* :mod:`divergent.train.text_corpus` — Python's ``pydoc_data`` text split by document, and a
  byte-level BPE tokenizer trained locally (``tokenizers``, imported when used);
* :mod:`divergent.train.tiny_lm` — small character-level causal LMs (dense or top-k MoE) and
  their training loops, for the language-model reproductions.
"""

from divergent.train.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from divergent.train.classifier import (
    ClassifierTrainer,
    FitResult,
    NonFiniteLossError,
    evaluate_logits,
    fit_classifier,
)
from divergent.train.data import (
    ClassificationTask,
    DataError,
    load_digits_task,
    load_table,
    make_task,
    student_mlp,
    teacher_mlp,
)
from divergent.train.distill_job import DistillConfig, DistillError, run_distill
from divergent.train.text_corpus import (
    TextCorpus,
    load_pydoc_corpus,
    token_blocks,
    tokenizer_fingerprint,
    train_bpe_tokenizer,
)
from divergent.train.tiny_lm import TinyCausalLM, evaluate_lm, train_lm

__all__ = [
    "CheckpointError",
    "ClassificationTask",
    "ClassifierTrainer",
    "DataError",
    "DistillConfig",
    "DistillError",
    "FitResult",
    "NonFiniteLossError",
    "TextCorpus",
    "TinyCausalLM",
    "evaluate_lm",
    "evaluate_logits",
    "fit_classifier",
    "load_checkpoint",
    "load_digits_task",
    "load_pydoc_corpus",
    "load_table",
    "make_task",
    "run_distill",
    "save_checkpoint",
    "student_mlp",
    "teacher_mlp",
    "token_blocks",
    "tokenizer_fingerprint",
    "train_bpe_tokenizer",
    "train_lm",
]

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
from divergent.train.knowledge_tracing import (
    GRUForecaster,
    KnowledgeTracingFit,
    LearnerData,
    fit_gru_forecaster,
    fit_knowledge_tracing,
    gru_predict,
    predict_answers,
    simulate_learners,
)
from divergent.train.score_distillation import (
    IsotropicMixture,
    MixtureGenerator,
    ScoreDistillationConfig,
    distill_mixture_generator,
    mixture_log_prob_and_score,
    ring_mixture,
)
from divergent.train.sparse_autoencoder import (
    SAEEvaluation,
    SAEOutput,
    SuperpositionData,
    TopKSAE,
    VariationalTopKSAE,
    evaluate_sparse_autoencoder,
    superposition_data,
    train_sparse_autoencoder,
)
from divergent.train.text_corpus import (
    TextCorpus,
    load_pydoc_corpus,
    token_blocks,
    tokenizer_fingerprint,
    train_bpe_tokenizer,
)
from divergent.train.tiny_lm import TinyCausalLM, evaluate_lm, train_lm
from divergent.train.unlearning import (
    LinearEnsemble,
    fine_tune,
    gradient_ascent,
    influence_retrained,
    match_outputs,
    predict_retrained_logits,
    train_linear_ensemble,
)

__all__ = [
    "CheckpointError",
    "ClassificationTask",
    "ClassifierTrainer",
    "DataError",
    "DistillConfig",
    "DistillError",
    "FitResult",
    "GRUForecaster",
    "IsotropicMixture",
    "KnowledgeTracingFit",
    "LearnerData",
    "LinearEnsemble",
    "MixtureGenerator",
    "NonFiniteLossError",
    "SAEEvaluation",
    "SAEOutput",
    "ScoreDistillationConfig",
    "SuperpositionData",
    "TextCorpus",
    "TinyCausalLM",
    "TopKSAE",
    "VariationalTopKSAE",
    "distill_mixture_generator",
    "evaluate_lm",
    "evaluate_logits",
    "evaluate_sparse_autoencoder",
    "fine_tune",
    "fit_classifier",
    "fit_gru_forecaster",
    "fit_knowledge_tracing",
    "gradient_ascent",
    "gru_predict",
    "influence_retrained",
    "load_checkpoint",
    "load_digits_task",
    "load_pydoc_corpus",
    "load_table",
    "make_task",
    "match_outputs",
    "mixture_log_prob_and_score",
    "predict_answers",
    "predict_retrained_logits",
    "ring_mixture",
    "run_distill",
    "save_checkpoint",
    "simulate_learners",
    "student_mlp",
    "superposition_data",
    "teacher_mlp",
    "token_blocks",
    "tokenizer_fingerprint",
    "train_bpe_tokenizer",
    "train_linear_ensemble",
    "train_lm",
    "train_sparse_autoencoder",
]

"""The DistillationTrainer job of test_hf_ddp.py, run under ``torchrun --standalone
--nproc_per_node 2`` (by _hf_ddp_jobs.py) and once in-process with one process: one step with a
global batch of 8 examples; each rank saves its student weights and what it saw to
``OUT/rank<r>.pt``."""

from __future__ import annotations

import os
import warnings

import torch
from _hf_tiny import tiny_gpt2
from transformers import GPT2LMHeadModel, TrainingArguments

from divergent.integrations.transformers import DistillationTrainer

GLOBAL_BATCH = 8


def gpt2(layers: int, seed: int, init: float) -> GPT2LMHeadModel:
    return tiny_gpt2(seed=seed, vocab=96, n_layer=layers, init=init)


def examples() -> list[dict]:
    g = torch.Generator().manual_seed(0)
    out = []
    for _ in range(GLOBAL_BATCH):  # different lengths: the token count across ranks matters
        length = int(torch.randint(6, 15, (1,), generator=g))
        ids = torch.randint(2, 96, (length,), generator=g).tolist()
        out.append({"input_ids": ids, "prompt_length": 2})
    return out


def run(out_dir: str) -> dict:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    student, teacher = gpt2(1, 1, 0.02), gpt2(1, 2, 0.3)
    args = TrainingArguments(
        output_dir=os.path.join(out_dir, "run"),
        per_device_train_batch_size=GLOBAL_BATCH // world,
        max_steps=1,
        optim="sgd",
        learning_rate=1.0,
        lr_scheduler_type="constant",
        max_grad_norm=0.0,
        report_to=[],
        use_cpu=True,
        save_strategy="no",
        disable_tqdm=True,
        seed=0,
        ddp_backend="gloo" if world > 1 else None,
    )
    trainer = DistillationTrainer(
        model=student,
        args=args,
        teacher_model=teacher,
        train_dataset=examples(),
        divergence="js",
        divergence_params={"beta": 0.5},
        ce_weight=0.3,
    )
    trainer.train()
    return {
        "rank": int(os.environ.get("RANK", "0")),
        "world_size": world,
        "wrapper": type(trainer.model_wrapped).__name__,
        "teacher": type(trainer.teacher_model).__name__,
        "weights": {k: v.detach().clone() for k, v in student.state_dict().items()},
    }


def main(out_dir: str) -> None:
    """The job of one torchrun process: run it, save what it found to OUT/rank<r>.pt."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = run(out_dir)
    torch.save(result, os.path.join(out_dir, f"rank{result['rank']}.pt"))

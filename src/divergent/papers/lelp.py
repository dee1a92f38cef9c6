r"""LELP: pseudo-subclasses from teacher embeddings for a binary task (digits 0–4 vs 5–9).

Loo, Iliopoulos, Hu & Vee (arXiv 2409.20449) argue that logit distillation carries little
for few-class tasks (one number per example for a binary task) and distil the teacher's
*embedding* instead: null-space projection, per-class PCA, a random rotation and a tempered
softmax split each class into S pseudo-subclasses that a C·S-output student learns
(:mod:`divergent.objectives.lelp`; reconstructed from the abstract, see there). They report
LELP above the best distillation baseline on binary and few-class NLP tasks.

Set-up: scikit-learn digits relabelled binary (0–4 vs 5–9: each class hides five digits, the
kind of latent structure pseudo-subclasses can expose). Per seed: a teacher MLP (64 → 128 → 32
→ 2) trained on the full training split; LELP fitted on its 32-d embeddings of that split (S =
5, T = 1, targets weighted by the teacher's class probabilities, no label term, as in the
paper); then three students (64 → 32 → outputs) trained on a random subset of 150 training
rows, 150 epochs (60 in quick mode), sharing the initialisation of their hidden layer's RNG:
(a) cross-entropy on labels, (b) Hinton KD (:func:`divergent.objectives.kd.kd_loss` with its
defaults: 0.1·CE + 0.9·T²·KL, T = 4), (c) LELP (2·5 outputs; class probability = sum over the
subclasses). Test accuracy on the binary test split, paired per seed.

Verdict (fixed in code): the paired 95 % interval of LELP − KD accuracy above 0 → held;
below the 1-point margin without being above 0 → not held; otherwise inconclusive. LELP − CE
is reported alongside (not part of the verdict: the paper's claim is against distillation
baselines).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from divergent.objectives.kd import kd_loss
from divergent.objectives.lelp import (
    LELPProjection,
    lelp_loss,
    lelp_targets,
    subclass_to_class_logits,
)
from divergent.papers._catalog import reproduction
from divergent.papers._stats import better_than, format_ci, interval, paired_ci, plot_methods
from divergent.repro import Outcome, ReproContext, Verdict
from divergent.train.small_distill import train_teacher
from divergent.train.small_models import cross_entropy_loss, evaluate, fit, load_split, mlp

BINARY = (0, 0, 0, 0, 0, 1, 1, 1, 1, 1)  # digits 0–4 → class 0, 5–9 → class 1
N_SUBCLASSES = 5
SUBCLASS_TEMPERATURE = 1.0
STUDENT_ROWS = 150
STUDENT_HIDDEN = 32
MARGIN = 0.01
METHODS = ("ce", "kd", "lelp")


def verdict(metrics: Mapping[str, Any]) -> Verdict:
    """LELP above Hinton KD in test accuracy (paired CI over seeds)."""
    d = metrics["lelp_minus_kd"]
    return better_than(*interval(d), MARGIN)


@reproduction("lelp", verdict=verdict)
def experiment(ctx: ReproContext) -> Outcome:
    split = load_split("digits", seed=ctx.seed, label_map=BINARY)
    acc: dict[str, list[float]] = {m: [] for m in METHODS}
    teacher_acc = []
    for k in range(ctx.size.n_seeds):
        ctx.progress(f"seed {k + 1}/{ctx.size.n_seeds}", k / ctx.size.n_seeds)
        g = ctx.generator(400 + k)
        teacher = train_teacher(split, hidden=(128, 32), epochs=20, generator=g)
        teacher_acc.append(evaluate(teacher, split.x_test, split.y_test).accuracy)
        body, head = teacher[:-1], teacher[-1]
        rows = torch.randperm(split.x_train.shape[0], generator=g)[:STUDENT_ROWS]
        x, y = split.x_train[rows], split.y_train[rows]
        with torch.no_grad():
            projection = LELPProjection.fit(
                body(split.x_train), split.y_train, head.weight, N_SUBCLASSES, generator=g
            )
            teacher_logits = teacher(x)
            targets = lelp_targets(
                projection.coordinates(body(x)),
                torch.softmax(teacher_logits, -1),
                temperature=SUBCLASS_TEMPERATURE,
            )
        losses = {
            "ce": cross_entropy_loss,
            "kd": lambda m, xb, yb, i, t=teacher_logits: kd_loss(m(xb), t[i], yb),
            "lelp": lambda m, xb, _yb, i, t=targets: lelp_loss(m(xb), t[i]),
        }
        for method in METHODS:
            gs = ctx.generator(800 + k)
            outputs = 2 * N_SUBCLASSES if method == "lelp" else 2
            student = mlp(64, [STUDENT_HIDDEN], outputs, generator=gs)
            fit(
                student,
                losses[method],
                x,
                y,
                epochs=ctx.size.epochs,
                batch_size=32,
                lr=3e-3,
                generator=gs,
            )
            logits = evaluate(student, split.x_test, split.y_test).logits
            if method == "lelp":
                logits = subclass_to_class_logits(logits, N_SUBCLASSES)
            acc[method].append(float((logits.argmax(-1) == split.y_test).double().mean()))

    metrics: dict[str, Any] = {
        "n_seeds": ctx.size.n_seeds,
        "n_subclasses": N_SUBCLASSES,
        "student_rows": STUDENT_ROWS,
        "margin": MARGIN,
        "teacher_accuracy_mean": float(np.mean(teacher_acc)),
        "accuracy": acc,
        "accuracy_mean": {m: float(np.mean(v)) for m, v in acc.items()},
        "lelp_minus_kd": paired_ci(acc["lelp"], acc["kd"]),
        "lelp_minus_ce": paired_ci(acc["lelp"], acc["ce"]),
        "kd_minus_ce": paired_ci(acc["kd"], acc["ce"]),
    }
    plot_methods(
        ctx,
        "accuracy",
        {m.upper(): v for m, v in acc.items()},
        ylabel="binary test accuracy",
        title=f"digits 0–4 vs 5–9, {STUDENT_ROWS} student rows, {ctx.size.n_seeds} seeds",
    )
    mean, d_kd, d_ce = metrics["accuracy_mean"], metrics["lelp_minus_kd"], metrics["lelp_minus_ce"]
    summary = (
        f"teacher {metrics['teacher_accuracy_mean']:.3f}; students CE {mean['ce']:.3f}, KD "
        f"{mean['kd']:.3f}, LELP {mean['lelp']:.3f}; LELP − KD {format_ci(d_kd)}, "
        f"LELP − CE {format_ci(d_ce)} (95 % CI, {ctx.size.n_seeds} seeds)"
    )
    return Outcome(metrics=metrics, summary=summary)

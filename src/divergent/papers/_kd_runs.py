"""Shared experiment of the offline distillation reproductions (pld, sinkd, ofakd).

Per seed: a teacher trained on the whole digits training split; students trained on a
random subset of its rows, one per objective, with the same initialisation and data order;
scores on the test split; paired differences between objectives with 95 % intervals. Not
discovered as a reproduction (leading underscore).

Training length: the full runs train students for 150 epochs of the 300-row subset (close to
convergence: a first full run at 40 epochs left cross-entropy students at 0.83 test accuracy
against 0.93 at 150, which measured speed of convergence rather than the objectives' end
points, and was rerun); quick runs keep 40 epochs and are indicative only.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from divergent.papers._stats import (
    better_than,
    compare_methods,
    format_ci,
    interval,
    plot_scores,
)
from divergent.repro import ReproContext, Verdict
from divergent.train.small_distill import distill, student_scores, train_teacher
from divergent.train.small_models import load_split, mlp

__all__ = ["PairedRuns", "accuracy_gain", "gain_summary", "paired_runs"]

SCORES = ("accuracy", "ece", "nll", "agreement", "teacher_kl")


@dataclass
class PairedRuns:
    metrics: dict[str, Any]


def paired_runs(
    ctx: ReproContext,
    objectives: Mapping[str, Callable[..., Tensor]],
    *,
    pairs: Sequence[tuple[str, str]],
    student_rows: int = 300,
    student_hidden: Sequence[int] = (16,),
    teacher_factory: Callable[[torch.Generator], nn.Module] | None = None,
    student_factory: Callable[[str, torch.Generator], nn.Module] | None = None,
    student_logits: Callable[[nn.Module, Tensor], Tensor] | None = None,
    title: str = "",
) -> PairedRuns:
    """Run every objective on every seed and pair them; see the module docstring.

    The run sizes are the reproduction's: ``ctx.size.n_seeds`` seeds, students trained for
    ``ctx.size.epochs`` epochs.
    ``student_factory(objective_name, generator)`` builds a student (default an MLP with
    ``student_hidden``); ``student_logits(student, x)`` reads its class logits (default
    ``student(x)``); an objective is called as ``objective(logits, teacher_logits, labels)``
    unless the student factory's module handles more (then the objective receives the
    student's raw output).
    """
    split = load_split("digits", seed=ctx.seed)
    per: dict[str, dict[str, list[float]]] = {o: {s: [] for s in SCORES} for o in objectives}
    teacher_acc = []
    n_seeds = ctx.size.n_seeds
    for k in range(n_seeds):
        ctx.progress(f"seed {k + 1}/{n_seeds}: teacher", k / n_seeds)
        g = ctx.generator(100 + k)
        teacher = (
            train_teacher(split, generator=g)
            if teacher_factory is None
            else train_teacher(split, model=teacher_factory(g), generator=g)
        )
        rows = torch.randperm(split.x_train.shape[0], generator=g)[:student_rows]
        x, y = split.x_train[rows], split.y_train[rows]
        with torch.no_grad():
            teacher.eval()
            t_train, t_test = teacher(x), teacher(split.x_test)
        teacher_acc.append(float((t_test.argmax(-1) == split.y_test).double().mean()))
        for name, objective in objectives.items():
            gs = ctx.generator(200 + k)
            student = (
                mlp(split.n_features, student_hidden, split.n_classes, generator=gs)
                if student_factory is None
                else student_factory(name, gs)
            )
            distill(student, objective, x, y, t_train, epochs=ctx.size.epochs, generator=gs)
            student.eval()
            with torch.no_grad():
                logits = (
                    student(split.x_test)
                    if student_logits is None
                    else student_logits(student, split.x_test)
                )
            scores = student_scores(logits, split.x_test, split.y_test, t_test).as_dict()
            for s in SCORES:
                per[name][s].append(scores[s])
    metrics: dict[str, Any] = {
        "n_seeds": n_seeds,
        "student_rows": student_rows,
        "teacher_accuracy_mean": float(np.mean(teacher_acc)),
        **compare_methods(per, pairs),
    }
    default_title = f"digits, {student_rows} student rows, {n_seeds} seeds"
    plot_scores(
        ctx, per, {"accuracy": ("accuracy", "student test accuracy", title or default_title)}
    )
    return PairedRuns(metrics=metrics)


def accuracy_gain(metrics: Mapping[str, Any], method: str, baseline: str, margin: float) -> Verdict:
    """:func:`~divergent.papers._stats.better_than` on the paired test-accuracy interval of
    ``method − baseline`` in the metrics of :func:`paired_runs` (JSON form included)."""
    d = metrics["paired"][f"{method}_minus_{baseline}"]["accuracy"]
    return better_than(*interval(d), margin)


def gain_summary(
    metrics: Mapping[str, Any],
    method: str,
    label: str,
    *,
    teacher: str = "teacher",
    students: str = "student accuracy",
) -> str:
    """One line: teacher and student accuracies (CE, KD, ``method``) and the paired
    ``method − KD`` and ``method − CE`` intervals over seeds."""
    mean, paired = metrics["mean"], metrics["paired"]
    return (
        f"{teacher} {metrics['teacher_accuracy_mean']:.3f}; {students} CE "
        f"{mean['ce']['accuracy']:.3f}, KD {mean['kd']['accuracy']:.3f}, {label} "
        f"{mean[method]['accuracy']:.3f}; {label} − KD "
        f"{format_ci(paired[f'{method}_minus_kd']['accuracy'])}, "
        f"{label} − CE {format_ci(paired[f'{method}_minus_ce']['accuracy'])} "
        f"(95 % CI, {metrics['n_seeds']} seeds)"
    )

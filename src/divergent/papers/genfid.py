r"""Generalisation vs fidelity in KD: small students gain most (digits, student widths 4–64).

Ramesh, Sengupta & Chakraborty (Findings of ACL 2025, arXiv 2505.15442) report that KD
improves small language models by up to 10 % but larger ones by only ~1.3 %, and that
accuracy gains and fidelity to the teacher (reasoning fidelity) do not move together.

Set-up (the notes' smallest experiment): scikit-learn digits; per seed a teacher MLP (64 → 256
→ 10, 20 epochs) on the full training split; students 64 → w → 10 for widths w ∈ {4, 8, 16,
64}, trained on a random subset of 300 training rows (150 epochs, 40 in quick mode; the same
initialisation and data order for both objectives of a width) with cross-entropy and with
Hinton KD (:func:`divergent.objectives.kd.kd_loss` defaults: 0.1·CE + 0.9·T²·KL, T = 4).
Measured per width: the accuracy gain of KD over CE, and the fidelity gain (top-1 agreement
with the teacher and KL(teacher‖student) on the test split,
:func:`divergent.metrics.fidelity`).

Verdict (fixed in code): the paired 95 % interval of gain(w = 4) − gain(w = 64) above 0 →
held; below the 1-point margin without being above 0 → not held; otherwise inconclusive. The
fidelity gains are reported, not judged (what "misaligned" would mean at this scale is not
fixed by the paper's abstract).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from divergent.objectives.kd import cross_entropy_loss, kd_loss
from divergent.papers._catalog import reproduction
from divergent.papers._stats import better_than, format_ci, interval, mean_ci, plot_methods
from divergent.repro import Outcome, ReproContext, Verdict
from divergent.train.small_distill import distill, student_scores, train_teacher
from divergent.train.small_models import load_split, mlp

WIDTHS = (4, 8, 16, 64)
STUDENT_ROWS = 300
MARGIN = 0.01
OBJECTIVES = {"ce": cross_entropy_loss, "kd": kd_loss}


def verdict(metrics: Mapping[str, Any]) -> Verdict:
    """KD's accuracy gain larger for the smallest student than for the largest (paired CI)."""
    d = metrics["gain_smallest_minus_largest"]
    return better_than(*interval(d), MARGIN)


@reproduction("genfid", verdict=verdict)
def experiment(ctx: ReproContext) -> Outcome:
    split = load_split("digits", seed=ctx.seed)
    keys = ("accuracy", "agreement", "teacher_kl")
    scores = {w: {o: {s: [] for s in keys} for o in OBJECTIVES} for w in WIDTHS}
    teacher_acc = []
    for k in range(ctx.size.n_seeds):
        ctx.progress(f"seed {k + 1}/{ctx.size.n_seeds}", k / ctx.size.n_seeds)
        g = ctx.generator(30 + k)
        teacher = train_teacher(split, hidden=(256,), generator=g)
        rows = torch.randperm(split.x_train.shape[0], generator=g)[:STUDENT_ROWS]
        x, y = split.x_train[rows], split.y_train[rows]
        with torch.no_grad():
            t_train, t_test = teacher(x), teacher(split.x_test)
        teacher_acc.append(float((t_test.argmax(-1) == split.y_test).double().mean()))
        for w in WIDTHS:
            for name, objective in OBJECTIVES.items():
                gs = ctx.generator(1000 * w + k)
                student = mlp(64, [w], split.n_classes, generator=gs)
                distill(student, objective, x, y, t_train, epochs=ctx.size.epochs, generator=gs)
                sc = student_scores(student, split.x_test, split.y_test, t_test).as_dict()
                for s in keys:
                    scores[w][name][s].append(sc[s])

    def gains(w: int, s: str) -> list[float]:
        return [a - b for a, b in zip(scores[w]["kd"][s], scores[w]["ce"][s])]

    small, large = WIDTHS[0], WIDTHS[-1]
    metrics: dict[str, Any] = {
        "n_seeds": ctx.size.n_seeds,
        "widths": WIDTHS,
        "teacher_accuracy_mean": float(np.mean(teacher_acc)),
        "scores": {str(w): scores[w] for w in WIDTHS},
        "accuracy_gain": {str(w): mean_ci(gains(w, "accuracy")) for w in WIDTHS},
        "agreement_gain": {str(w): mean_ci(gains(w, "agreement")) for w in WIDTHS},
        "teacher_kl_change": {str(w): mean_ci(gains(w, "teacher_kl")) for w in WIDTHS},
        "gain_smallest_minus_largest": mean_ci(
            [a - b for a, b in zip(gains(small, "accuracy"), gains(large, "accuracy"))]
        ),
    }
    plot_methods(
        ctx,
        "gain",
        {f"w={w}": gains(w, "accuracy") for w in WIDTHS},
        ylabel="KD − CE test accuracy",
        title=f"KD gain by student width ({ctx.size.n_seeds} seeds)",
    )
    acc_g, agr_g = metrics["accuracy_gain"], metrics["agreement_gain"]
    d = metrics["gain_smallest_minus_largest"]
    per_width = ", ".join(
        f"w={w}: {acc_g[str(w)]['mean']:+.3f} (agreement {agr_g[str(w)]['mean']:+.3f})"
        for w in WIDTHS
    )
    summary = (
        f"KD − CE accuracy by width {per_width}; gain(w={small}) − gain(w={large}) "
        f"{format_ci(d)} (95 % CI, {ctx.size.n_seeds} seeds)"
    )
    return Outcome(metrics=metrics, summary=summary)

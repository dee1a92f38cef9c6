r"""PLD: Plackett–Luce distillation vs Hinton KD (digits, MLP teacher → small MLP student).

Plackett–Luce Distillation (arXiv 2506.12542) recasts distillation as a confidence-weighted
list-wise ranking loss: the true class first, then the other classes by descending teacher
logit, each choice weighted by the teacher's probability
(:func:`divergent.objectives.ranking.pld_loss`; no separate CE term). The authors report PLD
above KD and DIST on CIFAR-100 and ImageNet (e.g.
ResNet-152 → ResNet-50: KD 76.80, PLD 77.30).

Set-up: scikit-learn digits; per seed a teacher MLP (64 → 128 → 10, 20 epochs) trained on the
full training split, and students (64 → 16 → 10) trained on a random subset of 300 training
rows (150 epochs, Adam, batch 64 — 40 in quick mode; the same initialisation and data order
for every objective)
with
(a) Hinton KD (:func:`divergent.objectives.kd.kd_loss` defaults: 0.1·CE + 0.9·T²·KL, T = 4),
(b) PLD (defaults: teacher temperature 1, weight 1) and, for context, (c) cross-entropy
alone. Test accuracy, paired per seed.

Verdict (fixed in code): the paired 95 % interval of PLD − KD accuracy above 0 → held; below
the 1-point margin without being above 0 → not held; otherwise inconclusive.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from divergent.objectives.kd import cross_entropy_loss, kd_loss
from divergent.objectives.ranking import pld_loss
from divergent.papers._catalog import reproduction
from divergent.papers._kd_runs import accuracy_gain, gain_summary, paired_runs
from divergent.repro import Outcome, ReproContext, Verdict

MARGIN = 0.01
OBJECTIVES = {"ce": cross_entropy_loss, "kd": kd_loss, "pld": pld_loss}


def verdict(metrics: Mapping[str, Any]) -> Verdict:
    """PLD above KD in test accuracy (paired CI over seeds)."""
    return accuracy_gain(metrics, "pld", "kd", MARGIN)


@reproduction("pld", verdict=verdict)
def experiment(ctx: ReproContext) -> Outcome:
    runs = paired_runs(
        ctx,
        OBJECTIVES,
        pairs=[("pld", "kd"), ("pld", "ce")],
    )
    return Outcome(metrics=runs.metrics, summary=gain_summary(runs.metrics, "pld", "PLD"))

r"""OFA-KD: heterogeneous distillation (CNN teacher → MLP student) in logit space (digits).

Hao et al. (One-for-All KD, NeurIPS 2023) distil between architectures whose features do not
align by (i) attaching projectors that map intermediate student features to the logit space,
each trained against the teacher's final logits, and (ii) the adaptive target-enhanced loss
:math:`-\sum_c[(p^t_c + 1[c=y])^\varepsilon - 1[c=y]]\log p^s_c`
(:func:`divergent.objectives.ofa.ofa_loss`); they report gains up to 8 points on CIFAR-100
over other heterogeneous baselines, KD among them.

Set-up: scikit-learn digits as 8×8 images; per seed a CNN teacher
(:class:`divergent.train.small_models.DigitsCNN`) trained on the full training split; MLP
students (64 → 64 → 32 → 10) trained on a random subset of 300 training rows, same
initialisation and data order per seed: (a) Hinton KD (library defaults: 0.1·CE + 0.9·T²·KL,
T = 4) and (b) OFA: a linear projector to the 10 logits on each hidden layer (the "stages"),
loss = ofa_loss(final logits) + Σ_stages ofa_loss(projector logits) with the official defaults
(ε = 1, T = 1, all weights 1; each ofa_loss includes its CE term); (c) CE alone for context.
Students train for 150 epochs (40 in quick mode), see :mod:`divergent.papers._kd_runs`.

Verdict (fixed in code): the paired 95 % interval of OFA − KD test accuracy above 0 → held;
below the 1-point margin without being above 0 → not held; otherwise inconclusive.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from divergent.objectives.kd import cross_entropy_loss, kd_loss
from divergent.objectives.ofa import ofa_loss
from divergent.papers._catalog import reproduction
from divergent.papers._kd_runs import accuracy_gain, gain_summary, paired_runs
from divergent.repro import Outcome, ReproContext, Verdict
from divergent.train.small_models import DigitsCNN, reset_parameters

MARGIN = 0.01
HIDDEN = (64, 32)


class MultiExitMLP(nn.Module):
    """An MLP whose hidden layers each feed a linear projector to the class logits (OFA)."""

    def __init__(self, n_classes: int, generator: torch.Generator, exits: bool) -> None:
        super().__init__()
        sizes = [64, *HIDDEN]
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.Linear(a, b), nn.ReLU()) for a, b in itertools.pairwise(sizes)
        )
        self.head = nn.Linear(sizes[-1], n_classes)
        self.exits = nn.ModuleList(nn.Linear(h, n_classes) for h in HIDDEN) if exits else None
        reset_parameters(self, generator)

    def forward(self, x: Tensor) -> Tensor:
        """Final logits, or ``(1 + stages, n, C)`` stacked logits while training with exits."""
        outs = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if self.exits is not None and self.training:
                outs.append(self.exits[i](x))
        final = self.head(x)
        return torch.stack([final, *outs]) if outs else final


def _ofa_total(stacked: Tensor, teacher_logits: Tensor, labels: Tensor) -> Tensor:
    return sum(ofa_loss(z, teacher_logits, labels) for z in stacked)  # type: ignore[return-value]


OBJECTIVES = {"ce": cross_entropy_loss, "kd": kd_loss, "ofa": _ofa_total}


def verdict(metrics: Mapping[str, Any]) -> Verdict:
    """OFA above KD in test accuracy (paired CI over seeds)."""
    return accuracy_gain(metrics, "ofa", "kd", MARGIN)


@reproduction("ofakd", verdict=verdict)
def experiment(ctx: ReproContext) -> Outcome:
    runs = paired_runs(
        ctx,
        OBJECTIVES,
        pairs=[("ofa", "kd"), ("ofa", "ce"), ("kd", "ce")],
        teacher_factory=lambda g: DigitsCNN(10, channels=8, embed_dim=64, generator=g),
        student_factory=lambda name, g: MultiExitMLP(10, g, exits=name == "ofa"),
        title="CNN teacher → MLP student",
    )
    summary = gain_summary(
        runs.metrics, "ofa", "OFA", teacher="CNN teacher", students="MLP student"
    )
    return Outcome(metrics=runs.metrics, summary=summary)

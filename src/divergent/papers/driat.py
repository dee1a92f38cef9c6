r"""DONE / driat: KL-regularised DRO instance weights for adversarial training (digits, PGD).

Sow, Lin, Wang & Liang (ICLR 2024, "Doubly Robust Instance-Reweighted Adversarial Training")
weight each example's adversarial loss by the solution of a KL-regularised DRO problem,
:math:`w = \mathrm{softmax}(\ell_\mathrm{adv}/r)`
(:func:`divergent.objectives.robustness.dro_cross_entropy`), and report better average
robust accuracy than other reweighting schemes *and* better robustness of the weakest points
(the most vulnerable classes).

Set-up (the notes' smallest experiment): scikit-learn digits scaled to [0, 1]; an MLP
(64 → 128 → 10); adversarial training on PGD examples (L∞, ε = 0.1, 3 steps of 2.5ε/3 from a
random start) for 15 epochs, with (a) the plain mean of the adversarial cross-entropies
(standard AT, Madry et al.) and (b) the DRO-weighted sum with r = 0.3, per mini-batch of 64
(the weights are held fixed in the step: the gradient of the closed-form objective). The two
runs of a seed share the initialisation and data order. Evaluation: PGD-10 (ε = 0.1, random
start) on the test split; average robust accuracy and the worst class's robust accuracy.
r = 0.3 was chosen from {1, 0.3} on a 3-seed pilot before the thresholds below were run on
fresh seeds (said here, not hidden). The paper's own algorithm (implicit differentiation
through the attack) is not reproduced; only its instance weights.

Verdict (fixed in code): the paired 95 % interval of (DRO − standard) worst-class robust
accuracy above 0 (margin 2 points for "not held") **and** the average robust accuracy no worse
than standard AT by more than 2 points (non-inferiority).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from divergent.objectives.robustness import dro_cross_entropy
from divergent.papers._catalog import reproduction
from divergent.papers._stats import (
    better_than,
    format_ci,
    interval,
    no_worse_than,
    paired_ci,
    plot_methods,
)
from divergent.repro import Outcome, ReproContext, Verdict
from divergent.train.adversarial import pgd
from divergent.train.small_models import fit, load_split, mlp

EPSILON = 0.1
TRAIN_PGD_STEPS = 3
EVAL_PGD_STEPS = 10
DRO_TEMPERATURE = 0.3
EPOCHS = 15
WORST_CLASS_MARGIN = 0.02
AVERAGE_MARGIN = 0.02
METHODS = ("standard_at", "dro_at")


def verdict(metrics: Mapping[str, Any]) -> Verdict:
    """Worst-class robust accuracy better and average robust accuracy no worse (paired CIs)."""
    worst, avg = metrics["worst_class_diff"], metrics["average_diff"]
    return Verdict.combine(
        [
            better_than(*interval(worst), WORST_CLASS_MARGIN),
            no_worse_than(*interval(avg), AVERAGE_MARGIN),
        ]
    )


@reproduction("driat", verdict=verdict)
def experiment(ctx: ReproContext) -> Outcome:
    split = load_split("digits", seed=ctx.seed)
    robust: dict[str, list[float]] = {m: [] for m in METHODS}
    worst: dict[str, list[float]] = {m: [] for m in METHODS}
    clean: dict[str, list[float]] = {m: [] for m in METHODS}
    for k in range(ctx.size.n_seeds):
        for j, method in enumerate(METHODS):
            ctx.progress(
                f"seed {k + 1}/{ctx.size.n_seeds}: {method}", (2 * k + j) / (2 * ctx.size.n_seeds)
            )
            g = ctx.generator(5000 + k)  # same init and data order for both methods
            net = mlp(64, [128], split.n_classes, generator=g)

            def loss(
                m: nn.Module, x: torch.Tensor, y: torch.Tensor, _i: Any, meth=method, gen=g
            ) -> torch.Tensor:
                adv = pgd(m, x, y, EPSILON, steps=TRAIN_PGD_STEPS, generator=gen)
                logits = m(adv)
                if meth == "standard_at":
                    return nn.functional.cross_entropy(logits, y)
                return dro_cross_entropy(logits, y, DRO_TEMPERATURE)

            fit(net, loss, split.x_train, split.y_train, epochs=EPOCHS, lr=3e-3, generator=g)
            adv = pgd(
                net,
                split.x_test,
                split.y_test,
                EPSILON,
                steps=EVAL_PGD_STEPS,
                generator=ctx.generator(9000 + k),
            )
            with torch.no_grad():
                correct = (net(adv).argmax(-1) == split.y_test).double()
                per_class = [
                    float(correct[split.y_test == c].mean()) for c in range(split.n_classes)
                ]
                clean_acc = float((net(split.x_test).argmax(-1) == split.y_test).double().mean())
            robust[method].append(float(correct.mean()))
            worst[method].append(min(per_class))
            clean[method].append(clean_acc)

    def diff(values: dict[str, list[float]]) -> dict[str, float]:
        return paired_ci(values["dro_at"], values["standard_at"])

    metrics: dict[str, Any] = {
        "n_seeds": ctx.size.n_seeds,
        "epsilon": EPSILON,
        "dro_temperature": DRO_TEMPERATURE,
        "robust_accuracy": robust,
        "worst_class_robust_accuracy": worst,
        "clean_accuracy": clean,
        "means": {
            key: {m: float(np.mean(v[m])) for m in METHODS}
            for key, v in (("robust", robust), ("worst_class", worst), ("clean", clean))
        },
        "worst_class_diff": diff(worst),
        "average_diff": diff(robust),
        "clean_diff": diff(clean),
    }
    plot_methods(
        ctx,
        "worst_class",
        {
            f"{m.replace('_', ' ')}\n{kind}": vals[m]
            for kind, vals in (("average", robust), ("worst class", worst))
            for m in METHODS
        },
        ylabel=f"PGD-{EVAL_PGD_STEPS} robust accuracy (ε = {EPSILON})",
        title=f"DRO weights softmax(ℓ/{DRO_TEMPERATURE}) vs standard AT ({ctx.size.n_seeds} seeds)",
    )
    mw, ma = metrics["worst_class_diff"], metrics["average_diff"]
    means = metrics["means"]
    summary = (
        f"robust accuracy standard/DRO: average {means['robust']['standard_at']:.3f}/"
        f"{means['robust']['dro_at']:.3f}, worst class {means['worst_class']['standard_at']:.3f}/"
        f"{means['worst_class']['dro_at']:.3f}; DRO − standard worst class {format_ci(mw)}, "
        f"average {format_ci(ma)} (95 % CI, {ctx.size.n_seeds} seeds)"
        + (
            "; the average is significantly lower (the verdict allows 2 points), so the "
            "paper's better-average claim is not reproduced"
            if ma["high"] < 0
            else ""
        )
    )
    return Outcome(metrics=metrics, summary=summary)

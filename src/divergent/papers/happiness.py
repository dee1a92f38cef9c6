r"""Happiness computing: a KL penalty toward domain-knowledge factor importance (wine, cancer).

Wu, Li, Tao, Xing & Yuan (arXiv 2402.12398) encode stable primary/secondary factor relations
as an importance distribution :math:`P_\mathrm{DK}` over the input factors and add
:math:`\lambda\,\mathrm{KL}(P_\mathrm{DK}\|P_\mathrm{model})` to the prediction loss, where
:math:`P_\mathrm{model}` normalises the model's mean absolute additive attributions
(:func:`divergent.objectives.attribution.factor_consistency_loss`); they report better
accuracy on two survey data sets. The formula is reconstructed from the abstract (direction,
normalisation and λ unverified).

Set-up (scikit-learn's wine, 3 classes × 13 factors, and breast cancer, 2 × 30; standardised
features): each seed splits the data into a small training set (20 wine / 30 cancer rows), a
*knowledge* set and an evaluation set. The domain knowledge is the importance distribution of
an L2 logistic regression fitted on the knowledge set (gradient × input of its class score,
i.e. :math:`x_j w_{y,j}`) — standing in for the stable factor relations earlier studies
provide; the knowledge set is not otherwise used. An MLP (d → 32 → C) is trained on the small
training set, full batch, 100 Adam steps, with (a) cross-entropy and (b) cross-entropy +
1·KL(P_DK‖P_model) with gradient × input attributions of the true-class logit (a double
backward); both share the initialisation. Accuracy on the evaluation set, paired per seed.

Verdict (fixed in code): on each data set the paired 95 % interval of the accuracy gain
(penalised − plain) above 0 → held; below the 1-point margin without being above 0 → not
held; otherwise inconclusive. The two data sets are combined (a not held decides).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from divergent.objectives.attribution import (
    factor_consistency_loss,
    gradient_x_input,
    importance_distribution,
)
from divergent.papers._catalog import reproduction
from divergent.papers._stats import better_than, format_ci, interval, paired_ci, plot_methods
from divergent.repro import Outcome, ReproContext, Verdict
from divergent.train.small_models import evaluate, fit, load_split, mlp

DATASETS = {"wine": 20, "breast_cancer": 30}  # data set → training rows
PENALTY_WEIGHT = 1.0
STEPS = 100
MARGIN = 0.01
METHODS = ("ce", "ce_plus_kl")


def verdict(metrics: Mapping[str, Any]) -> Verdict:
    """Accuracy gain of the KL-penalised model above 0 on every data set (paired CIs)."""
    return Verdict.combine(
        [
            better_than(*interval(d), MARGIN)
            for d in (metrics["accuracy_gain"][name] for name in DATASETS)
        ]
    )


def _knowledge(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    from sklearn.linear_model import LogisticRegression  # lazy: slow import

    model = LogisticRegression(C=1.0, max_iter=5000).fit(x.numpy(), y.numpy())
    coef = torch.as_tensor(model.coef_, dtype=torch.float32)
    # gradient × input of the class score: x_j · w_{y,j} (binary: one score, w·x)
    phi = x * (coef[0] if coef.shape[0] == 1 else coef[y])
    return importance_distribution(phi)


def _kendall_tau(a: torch.Tensor, b: torch.Tensor) -> float:
    from scipy.stats import kendalltau  # lazy: slow import

    return float(kendalltau(a.numpy(), b.numpy()).statistic)


@reproduction("happiness", verdict=verdict)
def experiment(ctx: ReproContext) -> Outcome:
    acc: dict[str, dict[str, list[float]]] = {d: {m: [] for m in METHODS} for d in DATASETS}
    tau: dict[str, dict[str, list[float]]] = {d: {m: [] for m in METHODS} for d in DATASETS}
    for i, (name, n_train) in enumerate(DATASETS.items()):
        for k in range(ctx.size.n_seeds):
            ctx.progress(
                f"{name}: seed {k + 1}/{ctx.size.n_seeds}",
                (i * ctx.size.n_seeds + k) / (2 * ctx.size.n_seeds),
            )
            split = load_split(name, seed=ctx.seed + k, scaling="standard", test_fraction=0.5)
            order = torch.randperm(split.x_test.shape[0], generator=ctx.generator(300 + k))
            half = order.numel() // 2
            know, held_out = order[:half], order[half:]
            p_dk = _knowledge(split.x_test[know], split.y_test[know])
            x_eval, y_eval = split.x_test[held_out], split.y_test[held_out]
            x, y = split.x_train[:n_train], split.y_train[:n_train]
            for method in METHODS:
                g = ctx.generator(700 + k)
                net = mlp(split.n_features, [32], split.n_classes, generator=g)

                def loss(m: nn.Module, xb: Any, yb: Any, _i: Any, meth=method, ref=p_dk):
                    value = nn.functional.cross_entropy(m(xb), yb)
                    if meth == "ce_plus_kl":
                        phi = gradient_x_input(m, xb, labels=yb)
                        value = value + PENALTY_WEIGHT * factor_consistency_loss(phi, ref)
                    return value

                fit(net, loss, x, y, epochs=STEPS, batch_size=n_train, lr=1e-2, generator=g)
                acc[name][method].append(evaluate(net, x_eval, y_eval).accuracy)
                phi_eval = gradient_x_input(net, x_eval, labels=y_eval, create_graph=False)
                tau[name][method].append(
                    _kendall_tau(importance_distribution(phi_eval.detach()), p_dk)
                )
    gain = {d: paired_ci(acc[d]["ce_plus_kl"], acc[d]["ce"]) for d in DATASETS}
    metrics: dict[str, Any] = {
        "n_seeds": ctx.size.n_seeds,
        "training_rows": DATASETS,
        "penalty_weight": PENALTY_WEIGHT,
        "margin": MARGIN,
        "accuracy": acc,
        "accuracy_mean": {d: {m: float(np.mean(v)) for m, v in acc[d].items()} for d in DATASETS},
        "accuracy_gain": gain,
        "importance_kendall_tau_mean": {
            d: {m: float(np.mean(v)) for m, v in tau[d].items()} for d in DATASETS
        },
    }
    plot_methods(
        ctx,
        "accuracy",
        {f"{d}\n{m.replace('_', ' ')}": acc[d][m] for d in DATASETS for m in METHODS},
        ylabel="evaluation accuracy",
        title=f"CE vs CE + KL(P_DK‖P_model), {ctx.size.n_seeds} seeds",
    )
    parts = [
        f"{d}: CE {metrics['accuracy_mean'][d]['ce']:.3f} → +KL "
        f"{metrics['accuracy_mean'][d]['ce_plus_kl']:.3f}, gain {format_ci(gain[d])}, "
        f"importance τ vs knowledge "
        f"{metrics['importance_kendall_tau_mean'][d]['ce']:.2f} → "
        f"{metrics['importance_kendall_tau_mean'][d]['ce_plus_kl']:.2f}"
        for d in DATASETS
    ]
    return Outcome(
        metrics=metrics, summary="; ".join(parts) + f" (95 % CI, {ctx.size.n_seeds} seeds)"
    )

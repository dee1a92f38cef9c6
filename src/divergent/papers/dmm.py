r"""DMM: unlearning by matching predicted retrained outputs, judged by KLoM (digits, convex).

Georgiev, Rinberg, Park, Garg, Ilyas, Madry & Neel (ICLR 2025, arXiv 2410.23232) argue that an
unlearned model should be statistically indistinguishable from models retrained without the
forget set, measure this per point with KLoM — KL(unlearned ‖ oracle) of the margin
distributions over training seeds (:func:`divergent.metrics.unlearning.klom`) — and propose
Datamodel Matching (DMM): predict the retrained model's outputs with data attribution, then
fine-tune the trained model to match them. Oracle Matching (OM) is the same with a real
oracle's outputs. They report OM and DMM close to the oracle on KLoM where gradient ascent and
fine-tuning are not.

Set-up (notes §13(b), scaled down): scikit-learn digits (1258 training rows, 539 test rows);
the model is multinomial logistic regression trained by SGD (10 epochs, batch 32, step 1,
λ = 1e-3; per-seed random initialisation and order), so that hundreds of models train at once
(:mod:`divergent.train.unlearning`). Per forget set: ``n_models`` full models, and three
independent ensembles of ``n_models`` oracles retrained without the forget set — the
*evaluation* oracles, a *reference* ensemble (its KLoM against the evaluation oracles is the
oracle-vs-oracle floor of the estimator at this ensemble size) and the *targets* of OM (model
``s`` matches target oracle ``s``; never the evaluation oracles). Forget sets are non-random:
the ``FORGET_SIZE`` training rows nearest (in pixel space) to a random training row, a coherent
sub-population like the benchmark's harder forget sets. KLoM is evaluated on the forget set, on
``RETAIN_EVAL`` retain rows not used for matching and on ``VALIDATION_EVAL`` test rows.

Methods, each applied to every full model, with a small grid per method and the configuration
of lowest median forget-set KLoM kept (the benchmark's practice; it favours the methods with
larger grids, i.e. the baselines): gradient ascent on the forget set (``GA_GRID``: steps,
step size), fine-tuning on the retain set (``FT_EPOCHS`` more SGD epochs of training), OM and
DMM (``MATCH_STEPS`` gradient steps of step 1/L on the squared error of the logits on the
forget rows and ``MATCH_RETAIN`` retain rows). DMM's datamodel is the closed-form influence
prediction of the convex model (:func:`divergent.train.unlearning.influence_retrained`): the
shift of the minimiser when the forget set is removed, by ``NEWTON_STEPS`` Newton steps at the
ensemble's mean parameters, added to each model.

What is scaled down or substituted: a convex model on digits instead of ResNets / BERT on
CIFAR-10, Living-17 and QNLI; an influence-function datamodel instead of datamodels / TRAK fit
on thousands of retrainings; 16 (quick) or 100 (full) models per ensemble; 1 or 4 forget sets.
The datamodel's settings (Newton steps, one shift shared by all models) were chosen in a
prototype on one forget set by how well they predicted the *mean oracle margin* on the forget
points (the one-step, per-model influence prediction was noisy: the SGD iterates' deviation
from the minimiser is amplified by H⁻¹; its prototype forget-set KLoM, with 50 models and
other settings, was 3–4× the reference), before any KLoM of DMM was computed with them; the
thresholds below were fixed at the same time and not changed after the runs (one part was
added after the full run, with the same threshold; see the verdict).

Verdict (fixed in code). Per forget set, the median over forget points of KLoM for each method;
``signal`` = min over forget sets of (no unlearning) / reference — below ``SIGNAL_MIN`` the
forget set does not move the margins visibly at this ensemble size → inconclusive; otherwise
held when DMM / reference ≤ ``CLOSE_MAX``, min(GA, FT) / reference > ``CLOSE_MAX`` (GA and FT
do *not* come close) and DMM / min(GA, FT) ≤ ``BEAT_MAX`` on every forget set (worst case over
sets), else not held. A NaN in any of these ratios, or a reference of 0, → inconclusive. OM's
ratio is reported as a check, not in the verdict.

Criterion restated after the first full run: the part "GA and FT are not close to the
reference" (min(GA, FT) / reference > ``CLOSE_MAX``, the same bound as DMM's) was added after
the full run had been seen, because the claim says so and the first verdict did not test it;
in that run min(GA, FT) / reference was at least 2.98 on every forget set, so the part holds and
the verdict is unchanged. NaN handling was made explicit at the same time.

Finding (full run, seed 0: 100 models per ensemble, 4 forget sets): not held. OM's median
forget-set KLoM is within 1.1× of the oracle-vs-oracle reference, GA's and FT's are at least
2.98× it, and DMM's is below the best of GA and FT on every forget set (at most 0.71× it), but
DMM is 1.3–2.6× the reference, outside the 1.5× bound on 3 of the 4 sets. OM and DMM share the
matching schedule and differ only in their targets, so the gap is the influence datamodel's
prediction error — in line with the paper's point that DMM is as good as the attribution method
it is given.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor

from divergent.metrics.unlearning import klom, margin
from divergent.papers._catalog import reproduction
from divergent.repro import Outcome, ReproContext, Verdict
from divergent.train.small_models import load_split
from divergent.train.unlearning import (
    LinearEnsemble,
    fine_tune,
    gradient_ascent,
    match_outputs,
    predict_retrained_logits,
    train_linear_ensemble,
)

# thresholds (fixed before the runs)
SIGNAL_MIN = 2.0  # no-unlearning forget KLoM must be ≥ 2 × the oracle-vs-oracle reference
CLOSE_MAX = 1.5  # DMM's median forget KLoM ≤ 1.5 × the reference
BEAT_MAX = 0.75  # DMM's median forget KLoM ≤ 0.75 × the better of GA and FT

# experiment
FORGET_SIZE = 50
RETAIN_EVAL = 100
VALIDATION_EVAL = 200
MATCH_RETAIN = 250
TRAIN = {"epochs": 10, "batch_size": 32, "lr": 1.0, "weight_decay": 1e-3}
GA_GRID = ((5, 0.03), (5, 0.1), (5, 0.3), (20, 0.03), (20, 0.1))  # (steps, step size)
FT_EPOCHS = (1, 3, 10)
MATCH_STEPS = (50, 200)
NEWTON_STEPS = 3
METHODS = ("none", "GA", "FT", "OM", "DMM", "reference")
SETS = ("forget", "retain", "validation")


def _ratio(a: float, b: float) -> float:
    """``a / b``; NaN when either is NaN or the denominator is not positive (no ratio)."""
    return a / b if b > 0 else math.nan


def _min(values: list[float]) -> float:
    """The minimum, NaN if any value is NaN (Python's min skips a NaN that is not first)."""
    return math.nan if any(math.isnan(v) for v in values) else min(values)


def _max(values: list[float]) -> float:
    """The maximum, NaN if any value is NaN."""
    return math.nan if any(math.isnan(v) for v in values) else max(values)


def checks(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """The parts of the claim, from the per-forget-set median forget KLoM (pure).

    Each ratio is the worst case over forget sets; a NaN anywhere (or a reference that is 0)
    makes that ratio NaN, and :func:`verdict` then says inconclusive.
    """
    per_set = metrics["forget_sets"]
    med = [{m: float(fs["median_klom"][m]["forget"]) for m in METHODS} for fs in per_set]
    signal = _min([_ratio(m["none"], m["reference"]) for m in med])
    dmm_ref = _max([_ratio(m["DMM"], m["reference"]) for m in med])
    om_ref = _max([_ratio(m["OM"], m["reference"]) for m in med])
    base_ref = _min([_ratio(_min([m["GA"], m["FT"]]), m["reference"]) for m in med])
    dmm_base = _max([_ratio(m["DMM"], _min([m["GA"], m["FT"]])) for m in med])
    return {
        "noop_over_reference": signal,
        "dmm_over_reference": dmm_ref,
        "om_over_reference": om_ref,
        "best_baseline_over_reference": base_ref,
        "dmm_over_best_baseline": dmm_base,
        "signal": signal >= SIGNAL_MIN,
        "dmm_close_to_reference": dmm_ref <= CLOSE_MAX,
        "om_close_to_reference": om_ref <= CLOSE_MAX,
        "ga_and_ft_not_close": base_ref > CLOSE_MAX,
        "dmm_beats_ga_and_ft": dmm_base <= BEAT_MAX,
    }


def verdict(metrics: Mapping[str, Any]) -> Verdict:
    """DMM's forget-set KLoM close to the oracle-vs-oracle reference, GA's and FT's not, and
    DMM's below theirs; a NaN in any of these ratios → inconclusive."""
    c = checks(metrics)
    values = (
        c["noop_over_reference"],
        c["dmm_over_reference"],
        c["best_baseline_over_reference"],
        c["dmm_over_best_baseline"],
    )
    if any(math.isnan(v) for v in values) or not c["signal"]:
        return Verdict.INCONCLUSIVE
    return Verdict.from_bool(
        c["dmm_close_to_reference"] and c["ga_and_ft_not_close"] and c["dmm_beats_ga_and_ft"]
    )


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def _margins(model: LinearEnsemble, sets: Mapping[str, tuple[Tensor, Tensor]]) -> dict[str, Tensor]:
    return {name: margin(model.logits(x), y) for name, (x, y) in sets.items()}


def _run_forget_set(
    ctx: ReproContext, split: Any, n_models: int, offset: int
) -> tuple[dict[str, Any], dict[str, dict[str, Tensor]]]:
    """One forget set: train the ensembles, unlearn, KLoM per method and set."""
    x, y = split.x_train, split.y_train
    n = x.shape[0]
    g = ctx.generator(1000 * offset + 7)
    anchor = int(torch.randint(n, (1,), generator=g))
    forget = torch.zeros(n, dtype=torch.bool)
    forget[(x - x[anchor]).norm(dim=1).argsort()[:FORGET_SIZE]] = True
    retain_rows = torch.nonzero(~forget).squeeze(1)
    shuffled = retain_rows[torch.randperm(retain_rows.numel(), generator=g)]
    match_rows = torch.cat([torch.nonzero(forget).squeeze(1), shuffled[:MATCH_RETAIN]])
    eval_rows = shuffled[MATCH_RETAIN : MATCH_RETAIN + RETAIN_EVAL]
    val_rows = torch.randperm(split.x_test.shape[0], generator=g)[:VALIDATION_EVAL]
    sets = {
        "forget": (x[forget], y[forget]),
        "retain": (x[eval_rows], y[eval_rows]),
        "validation": (split.x_test[val_rows], split.y_test[val_rows]),
    }
    xr, yr = x[~forget], y[~forget]
    kw: dict[str, Any] = {"n_classes": 10, **TRAIN}
    full = train_linear_ensemble(x, y, n_models, generator=g, **kw)
    oracle = train_linear_ensemble(xr, yr, n_models, generator=g, **kw)
    reference = train_linear_ensemble(xr, yr, n_models, generator=g, **kw)
    targets = train_linear_ensemble(xr, yr, n_models, generator=g, **kw)
    oracle_m = _margins(oracle, sets)
    x_match = x[match_rows]

    candidates: dict[str, dict[str, LinearEnsemble]] = {
        "none": {"-": full},
        "reference": {"-": reference},
        "GA": {
            f"{s} steps, lr {lr}": gradient_ascent(full, *sets["forget"], steps=s, lr=lr)
            for s, lr in GA_GRID
        },
        "FT": {},
        "OM": {},
        "DMM": {},
    }
    for e in FT_EPOCHS:
        candidates["FT"][f"{e} epochs"] = fine_tune(
            full,
            xr,
            yr,
            epochs=e,
            batch_size=TRAIN["batch_size"],
            lr=TRAIN["lr"],
            weight_decay=TRAIN["weight_decay"],
            generator=g,
        )
    om_targets = targets.logits(x_match)
    dmm_targets = predict_retrained_logits(
        full, x, y, forget, x_match, weight_decay=TRAIN["weight_decay"], newton_steps=NEWTON_STEPS
    )
    for steps in MATCH_STEPS:
        candidates["OM"][f"{steps} steps"] = match_outputs(full, x_match, om_targets, steps=steps)
        candidates["DMM"][f"{steps} steps"] = match_outputs(full, x_match, dmm_targets, steps=steps)

    result: dict[str, Any] = {
        "anchor": anchor,
        "forget_labels": torch.bincount(y[forget], minlength=10).tolist(),
        "config": {},
        "median_klom": {},
        "p95_klom": {},
        "test_accuracy": {},
        "grid": {},
    }
    values: dict[str, dict[str, Tensor]] = {}
    for method, configs in candidates.items():
        best: tuple[float, str, dict[str, Tensor], LinearEnsemble] | None = None
        result["grid"][method] = {}
        for name, model in configs.items():
            k = {s: klom(m, oracle_m[s]) for s, m in _margins(model, sets).items()}
            score = float(k["forget"].median())
            result["grid"][method][name] = score
            if best is None or score < best[0]:
                best = (score, name, k, model)
        assert best is not None
        _, name, k, model = best
        values[method] = k
        result["config"][method] = name
        result["median_klom"][method] = {s: float(v.median()) for s, v in k.items()}
        result["p95_klom"][method] = {s: float(v.quantile(0.95)) for s, v in k.items()}
        acc = (model.logits(split.x_test).argmax(-1) == split.y_test).double().mean()
        result["test_accuracy"][method] = float(acc)
    return result, values


def _plot(ctx: ReproContext, values: list[dict[str, dict[str, Tensor]]]) -> None:
    fig, axes = ctx.subplots(1, 3, figsize=(12, 3.6), sharey=True)
    for ax, s in zip(axes, SETS):
        data = [torch.cat([v[m][s] for v in values]).numpy() for m in METHODS]
        ax.boxplot(data, showfliers=False)
        ax.set_xticks(range(1, len(METHODS) + 1), list(METHODS), rotation=20, fontsize=8)
        ax.set_title(f"{s} points", fontsize=9)
        ax.axhline(float(np.median(data[-1])), color="0.5", ls="--", lw=0.8)
    axes[0].set_ylabel("KLoM (nats), per point")
    fig.suptitle("KL(unlearned ‖ oracle) of margins; dashed: oracle-vs-oracle median", fontsize=9)
    ctx.savefig(fig, "klom")


@reproduction("dmm", verdict=verdict)
def experiment(ctx: ReproContext) -> Outcome:
    split = load_split("digits", seed=ctx.seed)
    n_models, n_sets = ctx.size.n_models, ctx.size.n_forget_sets
    per_set, values = [], []
    for i in range(n_sets):
        ctx.progress(f"forget set {i + 1}/{n_sets}", i / n_sets)
        result, v = _run_forget_set(ctx, split, n_models, i)
        per_set.append(result)
        values.append(v)
    metrics: dict[str, Any] = {
        "n_models": n_models,
        "n_forget_sets": n_sets,
        "forget_size": FORGET_SIZE,
        "newton_steps": NEWTON_STEPS,
        "thresholds": {"signal_min": SIGNAL_MIN, "close_max": CLOSE_MAX, "beat_max": BEAT_MAX},
        "forget_sets": per_set,
        "median_klom": {
            m: {s: float(np.mean([r["median_klom"][m][s] for r in per_set])) for s in SETS}
            for m in METHODS
        },
        "test_accuracy": {
            m: float(np.mean([r["test_accuracy"][m] for r in per_set])) for m in METHODS
        },
    }
    metrics.update(checks(metrics))
    _plot(ctx, values)
    med = metrics["median_klom"]
    parts = ", ".join(
        f"{m} {med[m]['forget']:.2f}/{med[m]['retain']:.2f}/{med[m]['validation']:.2f}"
        for m in METHODS
    )
    summary = (
        f"median KLoM forget/retain/validation ({n_models} models, mean over {n_sets} forget "
        f"set(s)): {parts}; DMM/reference {metrics['dmm_over_reference']:.2f} (≤ {CLOSE_MAX}), "
        f"DMM/min(GA, FT) {metrics['dmm_over_best_baseline']:.2f} (≤ {BEAT_MAX}), "
        f"OM/reference {metrics['om_over_reference']:.2f}, no-unlearning/reference "
        f"{metrics['noop_over_reference']:.2f} (≥ {SIGNAL_MIN}); parts: OM close to the "
        f"reference {_yes(metrics['om_close_to_reference'])}, DMM close to the reference "
        f"{_yes(metrics['dmm_close_to_reference'])}, GA and FT not close (min(GA, FT)/reference "
        f"{metrics['best_baseline_over_reference']:.2f} > {CLOSE_MAX}) "
        f"{_yes(metrics['ga_and_ft_not_close'])}, DMM below GA and FT "
        f"{_yes(metrics['dmm_beats_ga_and_ft'])}. Datamodel settings chosen in a prototype by "
        "their prediction of the mean oracle margin, before any DMM KLoM was computed with them. "
        "Criterion restated after the first full run: the part 'GA and FT not close to the "
        "reference' was added (it held there, at ≥ 2.98× the reference on every forget set)"
    )
    return Outcome(metrics=metrics, summary=summary)

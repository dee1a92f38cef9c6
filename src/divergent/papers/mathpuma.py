r"""Math-PUMA: a KL between two views' next-token distributions narrows the gap between views.

Zhuang et al. (2025), "Math-PUMA: Progressive Upward Multimodal Alignment to Enhance
Mathematical Reasoning" (arXiv 2408.08640, AAAI 2025), give a problem in a text-rich and a
vision-rich rendering with the same answer tokens and add a KL between the two views'
next-token distributions (:func:`divergent.objectives.view_alignment.math_puma_loss`:
z-normalised logits, :math:`\alpha = 0.5` mix of the two directions, weight
:math:`\lambda = 0.1`, T = 1, reference view without gradient), reporting a narrower gap
between text- and vision-dominant inputs.

Set-up (a text analogue): the embedded corpus (``pydoc_data.topics``, by character). The
*reference view* is the original text; the *active view* is a degraded rendering of the
same positions — lower-cased, and each character replaced by a random one with probability
:data:`NOISE` — with the same next-character targets (those of the original text). One
model (d = 32, 2 layers) reads both views; per seed, with the same initialisation, windows
and noise:

* ``ce``: CE(reference view) + CE(active view);
* ``puma``: CE(reference view) + Math-PUMA's loss on the active view (λ = 0.1, the paper's
  scripts), the reference view's logits detached;
* full mode adds ``puma_l05`` (λ = 0.5, ``args.py``'s default) for context.

Measured on the held-out documents (the active view's noise drawn once, fixed): next-token
accuracy of each view and the gap ``accuracy(reference) − accuracy(active)``. Verdict (fixed
in code): the paired 95 % interval of gap(ce) − gap(puma) above 0 → held; its upper end
below :data:`MARGIN` without being above 0 → not held; otherwise inconclusive.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from divergent.objectives.view_alignment import math_puma_loss
from divergent.papers._catalog import reproduction
from divergent.papers._lm_runs import LENGTH, corpus, fit_lm, small_student
from divergent.papers._stats import (
    better_than,
    compare_methods,
    format_ci,
    interval,
    plot_scores,
)
from divergent.repro import Outcome, ReproContext, Verdict
from divergent.train.tiny_lm import evaluate_lm

MARGIN = 0.005  # accuracy: the smallest narrowing of the gap the claim needs (half a point)
NOISE = 0.15  # probability that a character of the active view is replaced by a random one
KL_WEIGHT = 0.1  # λ of the paper's training scripts
ALPHA = 0.5
SCORES = ("accuracy_reference", "accuracy_active", "gap", "nll_reference", "nll_active")


def verdict(metrics: Mapping[str, Any]) -> Verdict:
    """The accuracy gap between the views narrower with the view KL (paired CI over seeds)."""
    return better_than(*interval(metrics["paired"]["ce_minus_puma"]["gap"]), MARGIN)


def _lowercase_map() -> Tensor:
    vocab = corpus().vocab
    index = {ch: i for i, ch in enumerate(vocab.chars)}
    return torch.tensor(
        [index.get(ch.lower(), i) for i, ch in enumerate(vocab.chars)] + [vocab.unknown_id]
    )


def degrade(ids: Tensor, generator: torch.Generator, lower: Tensor) -> Tensor:
    """The active view of ``ids``: lower-cased, then each character replaced by a uniformly
    random known character with probability :data:`NOISE` (same shape, same positions)."""
    out = lower[ids]
    n_known = lower.shape[0] - 1
    flip = torch.rand(ids.shape, generator=generator) < NOISE
    noise = torch.randint(0, n_known, ids.shape, generator=generator)
    return torch.where(flip, noise, out)


def _loss(
    name: str, generator: torch.Generator, lower: Tensor
) -> Callable[[nn.Module, Tensor, Tensor], Tensor]:
    def loss(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        active = degrade(x, generator, lower)
        ref_logits = model(x)
        total = F.cross_entropy(ref_logits.flatten(0, 1), y.flatten())
        act_logits = model(active)
        if name == "ce":
            return total + F.cross_entropy(act_logits.flatten(0, 1), y.flatten())
        weight = KL_WEIGHT if name == "puma" else 0.5
        return total + math_puma_loss(
            act_logits, ref_logits.detach(), y, kl_weight=weight, alpha=ALPHA
        )

    return loss


@reproduction("mathpuma", verdict=verdict)
def experiment(ctx: ReproContext) -> Outcome:
    c = corpus()
    lower = _lowercase_map()
    heldout_active = degrade(c.heldout, ctx.generator(900), lower)
    per: dict[str, dict[str, list[float]]] = {m: {s: [] for s in SCORES} for m in ctx.size.methods}
    for k in range(ctx.size.n_seeds):
        for j, name in enumerate(ctx.size.methods):
            ctx.progress(f"seed {k + 1}/{ctx.size.n_seeds}: {name}", (k + j / 3) / ctx.size.n_seeds)
            model = small_student(ctx.seed + 200 + k, n_layers=2)
            fit_lm(
                model,
                _loss(name, ctx.generator(500 + k), lower),
                steps=ctx.size.steps,
                windows=ctx.generator(300 + k),
            )
            ref = evaluate_lm(model, c.heldout, length=LENGTH, max_windows=ctx.size.eval_windows)
            act = evaluate_lm(
                model,
                c.heldout,
                length=LENGTH,
                inputs=heldout_active,
                max_windows=ctx.size.eval_windows,
            )
            per[name]["accuracy_reference"].append(ref.accuracy)
            per[name]["accuracy_active"].append(act.accuracy)
            per[name]["gap"].append(ref.accuracy - act.accuracy)
            per[name]["nll_reference"].append(float(np.log(ref.perplexity)))
            per[name]["nll_active"].append(float(np.log(act.perplexity)))
    metrics: dict[str, Any] = {
        "n_seeds": ctx.size.n_seeds,
        "steps": ctx.size.steps,
        "noise": NOISE,
        "kl_weight": KL_WEIGHT,
        **compare_methods(per, [("ce", m) for m in ctx.size.methods if m != "ce"]),
    }
    mean, paired = metrics["mean"], metrics["paired"]
    plot_scores(
        ctx,
        per,
        {
            "gap": (
                "gap",
                "accuracy(reference) − accuracy(active)",
                f"view gap, held-out, {ctx.size.n_seeds} seeds",
            ),
            "accuracy_active": (
                "accuracy_active",
                "next-char accuracy, degraded view",
                "active (degraded) view",
            ),
        },
    )
    d = paired["ce_minus_puma"]
    summary = (
        f"gap (reference − active accuracy): CE {mean['ce']['gap']:.3f}, Math-PUMA "
        f"{mean['puma']['gap']:.3f}; narrowing {format_ci(d['gap'])}; active-view accuracy "
        f"CE {mean['ce']['accuracy_active']:.3f} vs PUMA {mean['puma']['accuracy_active']:.3f}, "
        f"reference-view CE {mean['ce']['accuracy_reference']:.3f} vs PUMA "
        f"{mean['puma']['accuracy_reference']:.3f} (95 % CI, {ctx.size.n_seeds} seeds)"
    )
    return Outcome(metrics=metrics, summary=summary)

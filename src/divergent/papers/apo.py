r"""APO: difficulty-adaptive KL weights (DADS) and STCR vs GRPO with a k3 KL (exact toy).

APO (Hong et al. 2025, arXiv 2506.21655) starts from GRPO with the k3 KL in the loss and
(i) DADS: on a prompt of difficulty :math:`d = 1 - \#\text{correct}/n`, the KL of its
successful rollouts is weighted by :math:`1 - e^{-e(1-d)}` (→ 0 on hard prompts), so the
policy may move further towards rare successes; (ii) STCR: wrong answers longer than the
correct ones get their negative advantage scaled up by :math:`1 + (1 - 1.00001^{-\Delta})`.
The paper reports better reasoning accuracy with general ability kept.

Set-up (:mod:`divergent.toy`). Six prompts, each with its own tabular policy over sequences of
4 tokens over 4 (256 sequences); token 0 ends a response (its length is the position of the
first 0, plus one, else 4). A response to prompt p is correct iff it is ``[a_p, 0]`` (answer
then stop). The reference of prompt p is a random policy re-weighted so that its exact
accuracy is 0.6, 0.5, 0.25 (easy / medium) or 0.08, 0.05, 0.03 (the three *hard* prompts).
Each step samples a group of 8 responses per prompt, advantages are group-normalised
(:func:`divergent.objectives.policy_gradient.group_normalized_advantages`), one Adam step
(lr 0.05) on :func:`divergent.objectives.apo.apo_loss` with β = 0.1 (the official 1e-3 is
too small to bind on a toy) for five variants: GRPO + k3 (``dads=False, stcr=False``), + DADS,
+ STCR (official base 1.00001), + DADS + STCR (APO), and + STCR with base e (the official
constant rescaled to toy lengths; reported only). Exact accuracy per prompt, KL(π‖π_ref) and
the expected length of wrong responses; several sampling seeds, paired by seed.

Verdict (fixed in code): the 95 % interval over seeds of the final exact mean accuracy on the
hard prompts, DADS − GRPO, above 0 → held; below ``MARGIN`` → not held; otherwise
inconclusive. STCR is measured and reported, not judged.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from divergent.objectives.apo import apo_loss
from divergent.objectives.policy_gradient import group_normalized_advantages
from divergent.papers._catalog import reproduction
from divergent.papers._stats import better_than, format_ci, interval, mean_ci
from divergent.repro import Outcome, ReproContext, Verdict
from divergent.toy import SequenceSpace, TabularPolicy, exact_kl

MARGIN = 0.02  # accuracy units

VOCAB, LENGTH, EOS = 4, 4, 0
REFERENCE_ACCURACY = (0.6, 0.5, 0.25, 0.08, 0.05, 0.03)
HARD = (3, 4, 5)
EASY = (0, 1)
GROUP_SIZE, KL_COEF, LEARNING_RATE = 8, 0.1, 0.05
VARIANTS: dict[str, dict[str, Any]] = {
    "grpo": {"dads": False, "stcr": False},
    "dads": {"dads": True, "stcr": False},
    "stcr": {"dads": False, "stcr": True},
    "apo": {"dads": True, "stcr": True},
    "stcr_base_e": {"dads": False, "stcr": True, "stcr_base": math.e},
}


def verdict(metrics: Mapping[str, Any]) -> Verdict:
    """DADS: a higher exact accuracy on the hard prompts than GRPO with the uniform KL."""
    return better_than(*interval(metrics["hard_accuracy_gap"]), MARGIN)


class _Task:
    """The prompts' references, correctness, lengths and token masks over the support."""

    def __init__(self, seed: int) -> None:
        self.space = space = SequenceSpace(VOCAB, LENGTH)
        seqs = space.sequences
        g = torch.Generator().manual_seed(4000 + seed)
        is_eos = seqs == EOS
        first_eos = torch.where(is_eos.any(-1), is_eos.int().argmax(-1), LENGTH - 1)
        self.lengths = (first_eos + 1).to(torch.float64)  # (N,)
        self.token_mask = torch.arange(LENGTH) <= first_eos.unsqueeze(-1)  # (N, L)
        answers = [1 + (p % (VOCAB - 1)) for p in range(len(REFERENCE_ACCURACY))]
        self.correct = torch.stack(
            [(seqs[:, 0] == a) & (seqs[:, 1] == EOS) for a in answers]
        )  # (P, N)
        refs = []
        for p, acc in enumerate(REFERENCE_ACCURACY):
            base = TabularPolicy.random(space, generator=g).log_probs().detach()
            c = self.correct[p]
            inside = torch.log_softmax(torch.where(c, base, -math.inf), 0)
            outside = torch.log_softmax(torch.where(c, -math.inf, base), 0)
            joint = torch.where(c, inside + math.log(acc), outside + math.log(1 - acc))
            refs.append(joint)
        self.ref_log_probs = torch.stack(refs)  # (P, N)


def _exact(task: _Task, policies: list[TabularPolicy]) -> dict[str, list[float]]:
    with torch.no_grad():
        lps = torch.stack([p.log_probs() for p in policies])  # (P, N)
        probs = lps.exp()
        acc = (probs * task.correct).sum(-1)
        wrong = probs * (~task.correct)
        wrong_len = (wrong * task.lengths).sum(-1) / wrong.sum(-1)
        kls = [float(exact_kl(lps[p], task.ref_log_probs[p])) for p in range(len(policies))]
        ent = -(probs * lps).sum(-1)
    return {
        "accuracy": acc.tolist(),
        "wrong_length": wrong_len.tolist(),
        "kl": kls,
        "entropy": ent.tolist(),
    }


def _run(variant: str, task: _Task, seed: int, steps: int) -> dict[str, Any]:
    space = task.space
    policies = [TabularPolicy.from_log_probs(space, lp) for lp in task.ref_log_probs]
    params = [p for pol in policies for p in pol.parameters()]
    opt = torch.optim.Adam(params, lr=LEARNING_RATE)
    g = torch.Generator().manual_seed(5000 + seed)
    n_prompts = len(policies)
    # reference token log-probs of every sequence, per prompt (P, N, L)
    ref_tokens = torch.stack(
        [TabularPolicy.from_log_probs(space, lp).token_log_probs().detach() for lp in
         task.ref_log_probs]
    )  # fmt: skip
    hard_curve = []
    for _ in range(steps):
        index = torch.stack([pol.sample(GROUP_SIZE, g) for pol in policies])  # (P, G)
        correct = torch.gather(task.correct, 1, index)
        adv = group_normalized_advantages(correct.to(torch.float64).reshape(-1), GROUP_SIZE)
        logps = torch.stack([pol.token_log_probs(index[p]) for p, pol in enumerate(policies)])
        refs = torch.stack([ref_tokens[p, index[p]] for p in range(n_prompts)])
        opt.zero_grad()
        loss = apo_loss(
            logps,
            logps.detach(),
            refs,
            adv.view(n_prompts, GROUP_SIZE),
            correct,
            task.token_mask[index],
            kl_coef=KL_COEF,
            **VARIANTS[variant],
        )
        loss.backward()
        opt.step()
        with torch.no_grad():
            acc = [float((pol.probs() * task.correct[p]).sum()) for p, pol in enumerate(policies)]
        hard_curve.append(float(np.mean([acc[p] for p in HARD])))
    return {"final": _exact(task, policies), "hard_curve": hard_curve}


def _summaries(final: Mapping[str, Any]) -> dict[str, float]:
    return {
        "hard_accuracy": float(np.mean([final["accuracy"][p] for p in HARD])),
        "easy_accuracy": float(np.mean([final["accuracy"][p] for p in EASY])),
        "easy_kl": float(np.mean([final["kl"][p] for p in EASY])),
        "hard_kl": float(np.mean([final["kl"][p] for p in HARD])),
        "wrong_length": float(np.mean(final["wrong_length"])),
        "entropy": float(np.mean(final["entropy"])),
    }


@reproduction("apo", verdict=verdict)
def experiment(ctx: ReproContext) -> Outcome:
    per: dict[str, dict[str, list[float]]] = {v: {} for v in VARIANTS}
    curves: dict[str, list[list[float]]] = {v: [] for v in VARIANTS}
    initial: dict[str, float] = {}
    for s in range(ctx.size.n_seeds):
        ctx.progress("seed", s / ctx.size.n_seeds)
        task = _Task(ctx.seed + s)
        if s == 0:
            start = [TabularPolicy.from_log_probs(task.space, lp) for lp in task.ref_log_probs]
            initial = _summaries(_exact(task, start))
        for v in VARIANTS:
            run = _run(v, task, ctx.seed + s, ctx.size.steps)
            for k, value in _summaries(run["final"]).items():
                per[v].setdefault(k, []).append(value)
            curves[v].append(run["hard_curve"])
    mean = {v: {k: float(np.mean(x)) for k, x in d.items()} for v, d in per.items()}

    def gap(a: str, b: str, key: str) -> dict[str, float]:
        return mean_ci([x - y for x, y in zip(per[a][key], per[b][key])])

    metrics: dict[str, Any] = {
        "n_seeds": ctx.size.n_seeds,
        "steps": ctx.size.steps,
        "hard_accuracy_gap": gap("dads", "grpo", "hard_accuracy"),
        "apo_hard_accuracy_gap": gap("apo", "grpo", "hard_accuracy"),
        "easy_kl_gap": gap("dads", "grpo", "easy_kl"),
        "stcr_wrong_length_gap": gap("stcr", "grpo", "wrong_length"),
        "stcr_base_e_wrong_length_gap": gap("stcr_base_e", "grpo", "wrong_length"),
        "mean": mean,
        "per_seed": per,
        "initial_seed0": initial,
    }
    _plot(ctx, curves)
    m = mean
    summary = (
        f"hard-prompt accuracy GRPO {m['grpo']['hard_accuracy']:.3f}, DADS "
        f"{m['dads']['hard_accuracy']:.3f}, APO {m['apo']['hard_accuracy']:.3f} (start "
        f"{initial['hard_accuracy']:.3f}); DADS − GRPO {format_ci(metrics['hard_accuracy_gap'])}; "
        f"easy-prompt KL GRPO {m['grpo']['easy_kl']:.3f} vs DADS {m['dads']['easy_kl']:.3f}; "
        f"wrong-answer length, STCR − GRPO {format_ci(metrics['stcr_wrong_length_gap'])} "
        f"(official base), {format_ci(metrics['stcr_base_e_wrong_length_gap'])} (base e) "
        f"({ctx.size.n_seeds} seeds, {ctx.size.steps} steps, β = {KL_COEF})"
    )
    return Outcome(metrics=metrics, summary=summary)


def _plot(ctx: ReproContext, curves: Mapping[str, list[list[float]]]) -> None:
    fig, ax = ctx.subplots(figsize=(6, 4))
    for v, runs in curves.items():
        ax.plot(np.mean(runs, axis=0), label=v)
    ax.set_xlabel("step")
    ax.set_ylabel("exact accuracy, hard prompts (mean over seeds)")
    ax.legend(fontsize=8)
    ctx.savefig(fig, "hard_accuracy")

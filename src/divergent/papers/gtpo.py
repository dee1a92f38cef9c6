r"""GTPO: conflict-token protection vs plain KL-free GRPO on an exact format-and-answer toy.

GTPO (Simoni et al. 2025, arXiv 2508.03772) trains GRPO without a KL term and adds (i)
conflict-token protection: tokens shared at the same position by positive and negative
completions (formatting tokens, shared prefixes) are not pushed down by the negative ones and
are amplified (×2) by the positive ones; (ii) an entropy filter (completions with mean token
entropy > 0.7 get advantage 0). The paper reports more stable training and better accuracy
and formatting than GRPO.

Set-up (:mod:`divergent.toy`). Sequences of 4 tokens over 5: positions 0 and 3 must hold the
format token 1 (``<a>``, ``</a>``), positions 1–2 the answer (2, 3); reward 1 iff format and
answer are right, else 0. The initial tabular policy factorises: format token with probability
0.85 at each format position, the right answer token with probability 0.5 at each answer
position (the rest uniform), so 18 % of completions are right and most groups are mostly
negative. Each step samples 4 groups of G = 8 completions, computes group-normalised
advantages (:func:`divergent.objectives.policy_gradient.group_normalized_advantages`) and takes
one Adam step (lr 0.05) on

* **GRPO**, no KL (:func:`divergent.objectives.policy_gradient.grpo_loss`, on-policy,
  per-sequence token means);
* **GTPO-conflict**: :func:`divergent.objectives.gtpo.gtpo_loss` without the entropy filter;
* **GTPO** (reported, not judged): with the official entropy filter (τ = 0.7, λ = 0.1) on the
  exact per-position entropies.

Everything judged is exact: the final expected reward, the probability of a correct format,
the entropy. Several seeds (sampling); paired by seed.

Verdict (fixed in code): the 95 % interval over seeds of the final exact reward GTPO-conflict
− GRPO above 0 → held; below ``MARGIN`` → not held; otherwise inconclusive.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from divergent.objectives.gtpo import gtpo_loss
from divergent.objectives.policy_gradient import group_normalized_advantages, grpo_loss
from divergent.papers._catalog import reproduction
from divergent.papers._stats import better_than, format_ci, interval, mean_ci
from divergent.repro import Outcome, ReproContext, Verdict
from divergent.toy import SequenceSpace, TabularPolicy, exact_expected_reward

MARGIN = 0.02  # expected-reward units (reward in {0, 1})

VOCAB, LENGTH = 5, 4
FORMAT_TOKEN, ANSWER = 1, (2, 3)
P_FORMAT, P_ANSWER = 0.85, 0.5
GROUPS, GROUP_SIZE, LEARNING_RATE = 4, 8, 0.05
METHODS = ("grpo", "gtpo_conflict", "gtpo")


def verdict(metrics: Mapping[str, Any]) -> Verdict:
    """Conflict-token protection: a higher final exact reward than plain GRPO."""
    return better_than(*interval(metrics["reward_gap"]), MARGIN)


def _initial_log_probs(space: SequenceSpace) -> torch.Tensor:
    seqs = space.sequences
    wanted = torch.tensor([FORMAT_TOKEN, *ANSWER, FORMAT_TOKEN])
    p_right = torch.tensor([P_FORMAT, P_ANSWER, P_ANSWER, P_FORMAT], dtype=torch.float64)
    p_other = (1 - p_right) / (VOCAB - 1)
    per_token = torch.where(seqs == wanted, p_right, p_other)
    return per_token.log().sum(-1)


def _task(space: SequenceSpace) -> tuple[torch.Tensor, torch.Tensor]:
    seqs = space.sequences
    fmt = (seqs[:, 0] == FORMAT_TOKEN) & (seqs[:, -1] == FORMAT_TOKEN)
    answer = (seqs[:, 1] == ANSWER[0]) & (seqs[:, 2] == ANSWER[1])
    return (fmt & answer).to(torch.float64), fmt.to(torch.float64)


def _run(method: str, seed: int, steps: int) -> dict[str, list[float]]:
    space = SequenceSpace(VOCAB, LENGTH)
    reward, fmt = _task(space)
    policy = TabularPolicy.from_log_probs(space, _initial_log_probs(space))
    opt = torch.optim.Adam(policy.parameters(), lr=LEARNING_RATE)
    g = torch.Generator().manual_seed(3000 + seed)
    curve: dict[str, list[float]] = {"reward": [], "format": [], "entropy": []}

    def record() -> None:
        with torch.no_grad():
            lp = policy.log_probs()
            curve["reward"].append(float(exact_expected_reward(lp, reward)))
            curve["format"].append(float(exact_expected_reward(lp, fmt)))
            curve["entropy"].append(float(policy.entropy()))

    record()
    for _ in range(steps):
        index = policy.sample(GROUPS * GROUP_SIZE, g)
        adv = group_normalized_advantages(reward[index], GROUP_SIZE)
        opt.zero_grad()
        token_lp = policy.token_log_probs(index)  # (B, L)
        if method == "grpo":
            loss = grpo_loss(token_lp, None, None, adv, clip_eps=None, kl_coef=0.0)
        else:
            entropies = None
            if method == "gtpo":
                with torch.no_grad():
                    table = policy.prefix_log_probs()
                    ent = -(table.exp() * table).sum(-1)  # exact entropy after each prefix
                    entropies = ent[space.prefix_ids[index]].view(GROUPS, GROUP_SIZE, LENGTH)
            loss = gtpo_loss(
                token_lp.view(GROUPS, GROUP_SIZE, LENGTH),
                space.sequences[index].view(GROUPS, GROUP_SIZE, LENGTH),
                adv.view(GROUPS, GROUP_SIZE),
                token_entropies=entropies,
            )
        loss.backward()
        opt.step()
        record()
    return curve


@reproduction("gtpo", verdict=verdict)
def experiment(ctx: ReproContext) -> Outcome:
    curves: dict[str, list[dict[str, list[float]]]] = {m: [] for m in METHODS}
    for s in range(ctx.size.n_seeds):
        ctx.progress("seed", s / ctx.size.n_seeds)
        for m in METHODS:
            curves[m].append(_run(m, ctx.seed + s, ctx.size.steps))
    final = {m: {k: [c[k][-1] for c in curves[m]] for k in curves[m][0]} for m in METHODS}
    min_format = {m: [min(c["format"]) for c in curves[m]] for m in METHODS}
    gap = [a - b for a, b in zip(final["gtpo_conflict"]["reward"], final["grpo"]["reward"])]
    metrics: dict[str, Any] = {
        "n_seeds": ctx.size.n_seeds,
        "steps": ctx.size.steps,
        "reward_gap": mean_ci(gap),
        "format_gap": mean_ci(
            [a - b for a, b in zip(final["gtpo_conflict"]["format"], final["grpo"]["format"])]
        ),
        "full_gtpo_reward_gap": mean_ci(
            [a - b for a, b in zip(final["gtpo"]["reward"], final["grpo"]["reward"])]
        ),
        "final_mean": {m: {k: float(np.mean(v)) for k, v in d.items()} for m, d in final.items()},
        "min_format_mean": {m: float(np.mean(v)) for m, v in min_format.items()},
        "per_seed_final": final,
        "initial": {k: curves["grpo"][0][k][0] for k in ("reward", "format", "entropy")},
    }
    _plot(ctx, curves)
    f = metrics["final_mean"]
    summary = (
        f"final exact reward GRPO {f['grpo']['reward']:.3f}, GTPO-conflict "
        f"{f['gtpo_conflict']['reward']:.3f}, GTPO (+ entropy filter) {f['gtpo']['reward']:.3f} "
        f"(start {metrics['initial']['reward']:.3f}); conflict − GRPO "
        f"{format_ci(metrics['reward_gap'])}; format probability GRPO {f['grpo']['format']:.3f} "
        f"vs conflict {f['gtpo_conflict']['format']:.3f}; entropy GRPO "
        f"{f['grpo']['entropy']:.2f} vs conflict {f['gtpo_conflict']['entropy']:.2f} nats "
        f"({ctx.size.n_seeds} seeds, {ctx.size.steps} steps)"
    )
    return Outcome(metrics=metrics, summary=summary)


def _plot(ctx: ReproContext, curves: Mapping[str, list[dict[str, list[float]]]]) -> None:
    fig, axes = ctx.subplots(1, 3, figsize=(13, 3.6))
    labels = {"grpo": "GRPO (no KL)", "gtpo_conflict": "GTPO conflict", "gtpo": "GTPO full"}
    for m, runs in curves.items():
        for ax, key in zip(axes, ("reward", "format", "entropy")):
            mean = np.mean([r[key] for r in runs], axis=0)
            ax.plot(mean, label=labels[m])
            ax.set_title(f"exact {key} (mean over seeds)")
            ax.set_xlabel("step")
    axes[0].legend(fontsize=8)
    ctx.savefig(fig, "curves")

r"""SALSA: KL-regularised RL against a weight soup of two SFT models vs one SFT model (exact toy).

SALSA (Chegini et al. 2024, arXiv 2411.01798) averages two independently fine-tuned SFT models
in weight space and uses that soup as the KL reference of RLHF; the paper reports that the
policy can then move further (a larger KL from the SFT model) and reaches a higher reward.

Set-up. The enumerable toy of :mod:`divergent.toy`: sequences of length 3 over 4 tokens (64
sequences). A pre-trained :class:`~divergent.toy.MLPPolicy` (hidden 32, random init) is
fine-tuned twice by maximum likelihood (Adam, lr 0.02, 150 full-batch steps) on two
independent samples of 48 demonstrations from a random "demonstration" policy: SFT₁, SFT₂.
The soup is :func:`divergent.objectives.salsa.model_soup` of the two (uniform weights). Then
KL-regularised RL with a random reward r (:func:`divergent.toy.random_reward`) and β = 0.1,
initialised at its reference, against (a) SFT₁ and (b) the soup: 200 Adam steps (lr 0.02) on
the *exact* expected :func:`divergent.objectives.salsa.salsa_loss` (k1 in the reward, no
baseline, every sequence weighted by its probability: the exact gradient of
:math:`\mathbb E_\pi[r] - \beta\,\mathrm{KL}(\pi\|\pi_\mathrm{ref})`). Exact final reward and
exact KL(π‖SFT₁); instances (seeds) differ in the demonstrations, reward and initialisation.

Verdict (fixed in code): two paired 95 % intervals over instances, soup − SFT₁ reference:
final reward (margin ``REWARD_MARGIN``) and KL(π‖SFT₁) (margin ``KL_MARGIN``), each judged
with ``better_than``; held if both hold, not held if either does not, else inconclusive.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from divergent.objectives.salsa import model_soup, salsa_loss
from divergent.papers._catalog import reproduction
from divergent.papers._stats import better_than, format_ci, interval, mean_ci
from divergent.repro import Outcome, ReproContext, Verdict
from divergent.toy import (
    MLPPolicy,
    SequencePolicy,
    SequenceSpace,
    TabularPolicy,
    exact_expected_reward,
    exact_kl,
    random_reward,
)

REWARD_MARGIN = 0.01  # reward units (the reward has unit scale)
KL_MARGIN = 0.01  # nats

VOCAB, LENGTH, HIDDEN = 4, 3, 32
N_DEMOS, SFT_LR = 48, 0.02  # steps: catalog.toml
BETA, RL_LR = 0.1, 0.02


def verdict(metrics: Mapping[str, Any]) -> Verdict:
    """Soup reference: higher reward and a larger KL from SFT₁ than the SFT₁ reference."""
    reward = better_than(*interval(metrics["reward_gap"]), REWARD_MARGIN)
    budget = better_than(*interval(metrics["kl_from_sft_gap"]), KL_MARGIN)
    if Verdict.NOT_HELD in (reward, budget):
        return Verdict.NOT_HELD
    if reward == budget == Verdict.HELD:
        return Verdict.HELD
    return Verdict.INCONCLUSIVE


def _sft(pretrained: MLPPolicy, demos: torch.Tensor, steps: int) -> MLPPolicy:
    model = copy.deepcopy(pretrained)
    opt = torch.optim.Adam(model.parameters(), lr=SFT_LR)
    for _ in range(steps):
        opt.zero_grad()
        (-model.log_probs(demos).mean()).backward()
        opt.step()
    return model


def _rl(reference: SequencePolicy, rewards: torch.Tensor, steps: int) -> SequencePolicy:
    policy = copy.deepcopy(reference)
    with torch.no_grad():
        ref_tokens = reference.token_log_probs()
    opt = torch.optim.Adam(policy.parameters(), lr=RL_LR)
    for _ in range(steps):
        opt.zero_grad()
        token_lp = policy.token_log_probs()  # every sequence of the support, (N, L)
        rows = salsa_loss(
            token_lp, ref_tokens, rewards, beta=BETA, kl_estimator="k1", kl_in="reward",
            baseline="none", reduction="none",
        )  # fmt: skip
        (token_lp.sum(-1).exp().detach() * rows).sum().backward()  # exact expectation
        opt.step()
    return policy


def _instance(seed: int, sft_steps: int, rl_steps: int) -> dict[str, float]:
    space = SequenceSpace(VOCAB, LENGTH)
    g = torch.Generator().manual_seed(2000 + seed)
    pretrained = MLPPolicy(space, hidden=HIDDEN, generator=g)
    demo_policy = TabularPolicy.random(space, scale=2.0, generator=g)
    rewards = random_reward(space, generator=g)
    sft1 = _sft(pretrained, demo_policy.sample(N_DEMOS, g), sft_steps)
    sft2 = _sft(pretrained, demo_policy.sample(N_DEMOS, g), sft_steps)
    soup = model_soup([sft1, sft2])
    out: dict[str, float] = {}
    with torch.no_grad():
        demo_lp = demo_policy.log_probs()
        for name, m in (("sft1", sft1), ("sft2", sft2), ("soup", soup)):
            out[f"demo_kl_{name}"] = float(exact_kl(demo_lp, m.log_probs()))
            out[f"entropy_{name}"] = float(m.entropy())
            out[f"reward_{name}"] = float(exact_expected_reward(m.log_probs(), rewards))
    for name, ref in (("sft1", sft1), ("soup", soup)):
        policy = _rl(ref, rewards, rl_steps)
        with torch.no_grad():
            lp = policy.log_probs()
            out[f"rl_reward_{name}_ref"] = float(exact_expected_reward(lp, rewards))
            out[f"rl_kl_from_sft1_{name}_ref"] = float(exact_kl(lp, sft1.log_probs()))
            out[f"rl_kl_from_ref_{name}_ref"] = float(exact_kl(lp, ref.log_probs()))
    out["max_reward"] = float(rewards.max())
    return out


@reproduction("salsa", verdict=verdict)
def experiment(ctx: ReproContext) -> Outcome:
    runs = []
    for s in range(ctx.size.n_seeds):
        ctx.progress("instance", s / ctx.size.n_seeds)
        runs.append(_instance(ctx.seed + s, ctx.size.sft_steps, ctx.size.rl_steps))
    per = {k: [r[k] for r in runs] for k in runs[0]}
    metrics: dict[str, Any] = {
        "n_seeds": ctx.size.n_seeds,
        "reward_gap": mean_ci(
            [a - b for a, b in zip(per["rl_reward_soup_ref"], per["rl_reward_sft1_ref"])]
        ),
        "kl_from_sft_gap": mean_ci(
            [
                a - b
                for a, b in zip(per["rl_kl_from_sft1_soup_ref"], per["rl_kl_from_sft1_sft1_ref"])
            ]
        ),
        "soup_demo_kl_minus_sft_mean": mean_ci(
            [
                s - (a + b) / 2
                for s, a, b in zip(per["demo_kl_soup"], per["demo_kl_sft1"], per["demo_kl_sft2"])
            ]
        ),
        "mean": {k: float(np.mean(v)) for k, v in per.items()},
        "per_seed": per,
        "settings": {
            "vocab": VOCAB,
            "length": LENGTH,
            "hidden": HIDDEN,
            "n_demos": N_DEMOS,
            "sft_steps": ctx.size.sft_steps,
            "rl_steps": ctx.size.rl_steps,
            "beta": BETA,
        },
    }
    _plot(ctx, per)
    mean = metrics["mean"]
    summary = (
        f"final reward soup-ref {mean['rl_reward_soup_ref']:.3f} vs SFT₁-ref "
        f"{mean['rl_reward_sft1_ref']:.3f}, gap {format_ci(metrics['reward_gap'])}; "
        f"KL(π‖SFT₁) {mean['rl_kl_from_sft1_soup_ref']:.3f} vs "
        f"{mean['rl_kl_from_sft1_sft1_ref']:.3f}, gap {format_ci(metrics['kl_from_sft_gap'])} "
        f"({ctx.size.n_seeds} instances, β = {BETA}); soup − SFT KL to the demonstrations "
        f"{format_ci(metrics['soup_demo_kl_minus_sft_mean'])}"
    )
    return Outcome(metrics=metrics, summary=summary)


def _plot(ctx: ReproContext, per: Mapping[str, list[float]]) -> None:
    fig, ax = ctx.subplots(figsize=(5.5, 4))
    for name, marker in (("sft1", "o"), ("soup", "s")):
        ax.scatter(
            per[f"rl_kl_from_sft1_{name}_ref"],
            per[f"rl_reward_{name}_ref"],
            marker=marker,
            label=f"reference = {'SFT₁' if name == 'sft1' else 'soup(SFT₁, SFT₂)'}",
        )
    ax.set_xlabel("KL(π ‖ SFT₁) after RL (exact)")
    ax.set_ylabel("expected reward after RL (exact)")
    ax.set_title(f"one point per instance, β = {BETA}")
    ax.legend(fontsize=8)
    ctx.savefig(fig, "reward_vs_kl")

r"""SuperHF vs a KL-regularised proxy maximiser under a hackable proxy reward (exact toy).

SuperHF (Mukobi et al. 2023, arXiv 2310.16763) replaces PPO by "sample n, keep the best by
the reward model, fine-tune on it with a KL prior" and reports less reward hacking than RLHF.

Set-up (every quantity exact; no sampling anywhere). The enumerable toy of
:mod:`divergent.toy`: sequences of length 3 over 5 tokens (125 sequences), a random tabular
reference :math:`\pi_0`, and :func:`divergent.toy.hackable_rewards`: a task reward g (random
per-position token values), a proxy :math:`g + h` that pays for a "hack" token and a true
reward :math:`g - h` that punishes it (h = fraction of hack tokens). Both methods start at
:math:`\pi_0`, see only the proxy and take Adam steps (lr 0.05) on a tabular policy:

* **SuperHF** (:func:`divergent.objectives.superhf.superhf_loss`, official β = 0.35, n = 16,
  top-1): the *expected* loss over the filtered completion, i.e. the cross-entropy to the exact
  best-of-16 distribution of the current policy under the proxy
  (:func:`divergent.rl.best_of_n.best_of_n_log_probs`) plus β times the per-position
  KL(π₀‖π_θ) along it;
* **RL proxy maximiser** (PPO-RLHF's objective, exact gradient):
  :math:`\max\ \mathbb E_\pi[\text{proxy}] - \beta_\text{RL}\,\mathrm{KL}(\pi\|\pi_0)` with
  :math:`\beta_\text{RL} = 0.05`.

Hacking is judged at *matched proxy reward*: along each training curve the true reward is
read (linear interpolation, first crossing) at 4 proxy levels (¼, ½, ¾, 1 of the proxy gain
both methods reach); the metric of an instance is the mean of SuperHF − RL over the levels.
Instances differ in the reward draw and the reference (seeds); 95 % t-interval over them.

Verdict (fixed in code): inconclusive if the common proxy gain is below ``MIN_PROXY_GAIN``;
held if the interval of the matched-proxy true-reward gap lies above 0; not held if it lies
below ``MARGIN``; inconclusive otherwise.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from divergent.objectives.superhf import superhf_loss
from divergent.papers._catalog import reproduction
from divergent.papers._stats import better_than, format_ci, interval, mean_ci, number
from divergent.repro import Outcome, ReproContext, Verdict
from divergent.rl.best_of_n import best_of_n_log_probs
from divergent.toy import (
    SequenceSpace,
    TabularPolicy,
    exact_expected_reward,
    exact_kl,
    hackable_rewards,
    kl_regularized_value,
)

MARGIN = 0.02  # smallest matched-proxy true-reward advantage that counts (reward units)
MIN_PROXY_GAIN = 0.05  # below this common proxy gain there is nothing to compare
LEVELS = (0.25, 0.5, 0.75, 1.0)

VOCAB, LENGTH, HACK_TOKEN = 5, 3, 0
SUPERHF_BETA, SUPERHF_N = 0.35, 16  # official default.yaml
RL_BETA = 0.05
LEARNING_RATE = 0.05


def verdict(metrics: Mapping[str, Any]) -> Verdict:
    """SuperHF's true reward above the RL proxy maximiser's at matched proxy reward."""
    if number(metrics["common_proxy_gain_min"]) < MIN_PROXY_GAIN:
        return Verdict.INCONCLUSIVE
    return better_than(*interval(metrics["matched_true_gap"]), MARGIN)


def _superhf_step_loss(policy: TabularPolicy, prior_logits: torch.Tensor, proxy) -> torch.Tensor:
    space = policy.space
    logits = policy.prefix_logits()[space.prefix_ids]  # (N, L, V): π_θ at each position
    with torch.no_grad():
        bon = best_of_n_log_probs(policy.log_probs(), proxy, SUPERHF_N, inputs="log_probs")
    rows = superhf_loss(
        logits, prior_logits, space.sequences, kl_coef=SUPERHF_BETA, reduction="none"
    )
    return (bon.exp() * rows).sum()  # the expectation over the filtered completion y*


def _train(method: str, ref: TabularPolicy, rewards, steps: int) -> dict[str, list[float]]:
    space = ref.space
    policy = TabularPolicy(space, logits=ref.prefix_logits().detach().clone())
    prior_logits = ref.prefix_logits().detach()[space.prefix_ids]
    opt = torch.optim.Adam(policy.parameters(), lr=LEARNING_RATE)
    curve: dict[str, list[float]] = {"proxy": [], "true": [], "hack": [], "kl": []}

    def record() -> None:
        with torch.no_grad():
            lp = policy.log_probs()
            curve["proxy"].append(float(exact_expected_reward(lp, rewards.proxy)))
            curve["true"].append(float(exact_expected_reward(lp, rewards.true)))
            curve["hack"].append(float(exact_expected_reward(lp, rewards.hack)))
            curve["kl"].append(float(exact_kl(lp, ref.log_probs())))

    record()
    for _ in range(steps):
        opt.zero_grad()
        if method == "superhf":
            loss = _superhf_step_loss(policy, prior_logits, rewards.proxy)
        else:
            loss = -kl_regularized_value(policy, ref.log_probs().detach(), rewards.proxy, RL_BETA)
        loss.backward()
        opt.step()
        record()
    return curve


def _true_at(curve: Mapping[str, list[float]], level: float) -> float:
    """True reward at the first time the proxy reaches ``level`` (linear interpolation)."""
    proxy = np.maximum.accumulate(np.asarray(curve["proxy"]))
    true = np.asarray(curve["true"])
    hit = int(np.searchsorted(proxy, level))
    if hit == 0:
        return float(true[0])
    if hit >= len(proxy):
        return float(true[-1])
    x0, x1 = proxy[hit - 1], proxy[hit]
    w = 0.0 if x1 == x0 else (level - x0) / (x1 - x0)
    return float(true[hit - 1] + w * (true[hit] - true[hit - 1]))


def _instance(seed: int, steps: int) -> dict[str, Any]:
    space = SequenceSpace(VOCAB, LENGTH)
    g = torch.Generator().manual_seed(1000 + seed)
    ref = TabularPolicy.random(space, generator=g)
    rewards = hackable_rewards(space, hack_token=HACK_TOKEN, generator=g)
    curves = {m: _train(m, ref, rewards, steps) for m in ("superhf", "rl")}
    start = curves["rl"]["proxy"][0]
    common = min(max(c["proxy"]) for c in curves.values()) - start
    levels = [start + f * common for f in LEVELS]
    gaps = [_true_at(curves["superhf"], x) - _true_at(curves["rl"], x) for x in levels]
    return {"curves": curves, "common_proxy_gain": common, "gap": float(np.mean(gaps))}


@reproduction("superhf", verdict=verdict)
def experiment(ctx: ReproContext) -> Outcome:
    runs = []
    for s in range(ctx.size.n_seeds):
        ctx.progress("instance", s / ctx.size.n_seeds)
        runs.append(_instance(ctx.seed + s, ctx.size.steps))
    gaps = [r["gap"] for r in runs]
    finals = {
        m: {k: [r["curves"][m][k][-1] for r in runs] for k in ("proxy", "true", "hack", "kl")}
        for m in ("superhf", "rl")
    }
    metrics = {
        "n_seeds": ctx.size.n_seeds,
        "steps": ctx.size.steps,
        "matched_true_gap": mean_ci(gaps),
        "per_seed_gap": gaps,
        "common_proxy_gain_min": min(r["common_proxy_gain"] for r in runs),
        "final": {m: {k: float(np.mean(v)) for k, v in d.items()} for m, d in finals.items()},
        "initial": {
            k: float(np.mean([r["curves"]["rl"][k][0] for r in runs]))
            for k in ("proxy", "true", "hack")
        },
        "settings": {
            "vocab": VOCAB,
            "length": LENGTH,
            "superhf_beta": SUPERHF_BETA,
            "superhf_n": SUPERHF_N,
            "rl_beta": RL_BETA,
            "lr": LEARNING_RATE,
        },
    }
    _plot(ctx, runs[0])
    f = metrics["final"]
    summary = (
        f"true reward SuperHF − RL at matched proxy {format_ci(metrics['matched_true_gap'])} "
        f"({ctx.size.n_seeds} instances); final proxy / true / hack fraction: SuperHF "
        f"{f['superhf']['proxy']:.3f} / {f['superhf']['true']:.3f} / {f['superhf']['hack']:.3f}, "
        f"RL {f['rl']['proxy']:.3f} / {f['rl']['true']:.3f} / {f['rl']['hack']:.3f} "
        f"(start hack {metrics['initial']['hack']:.3f})"
    )
    return Outcome(metrics=metrics, summary=summary)


def _plot(ctx: ReproContext, run: Mapping[str, Any]) -> None:
    fig, axes = ctx.subplots(1, 2, figsize=(10, 3.8))
    names = {"superhf": "SuperHF (BoN-16 + KL prior 0.35)", "rl": f"RL, β = {RL_BETA}"}
    for m, c in run["curves"].items():
        axes[0].plot(c["proxy"], c["true"], label=names[m])
        axes[1].plot(c["hack"], label=names[m])
    axes[0].set_xlabel("proxy reward (exact)")
    axes[0].set_ylabel("true reward (exact)")
    axes[0].set_title("true vs proxy along training")
    axes[1].set_xlabel("step")
    axes[1].set_ylabel("expected hack-token fraction")
    for ax in axes:
        ax.legend(fontsize=8)
    ctx.savefig(fig, "true_vs_proxy")

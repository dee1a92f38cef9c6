r"""RECAP: does convergence/instability reweighting keep a replayed capability from being forgotten?

Phan et al. (2025, arXiv 2510.21978) post-train a model with RL on a target task while
replaying general-capability SFT data, and reweight the objectives online from short-horizon
signals (:mod:`divergent.objectives.recap`: :math:`c_k = \mu_k/\tilde\mu_k`,
:math:`i_k = \sigma_k/(\mu_k + \tilde\mu_k)`, :math:`\lambda = K\,\mathrm{softmax}((c + i)/T)`,
T = 5). They report that RECAP preserves general capabilities better than uniform replay while
improving the target reward (e.g. ScienceQA 71.59 vs 64.85 uniform on Qwen2.5-VL-3B).

Set-up (exact evaluation on :mod:`divergent.toy`; V = 4, L = 5, 1024 sequences): per seed, a
"general data" distribution D (a random tabular policy) and a target sequence y*. A shared MLP
policy (hidden 32, so updates on one prefix move others) is first fitted to D by exact
cross-entropy (the general capability). Then it is post-trained for ``steps`` Adam steps
(lr 0.02) on two objectives, each estimated from 32 samples per step as a trainer would:
the **target** (REINFORCE on the reward "fraction of positions matching y*", batch-mean
baseline; RECAP reads the loss ``1 − mean reward``) and the **replay** (cross-entropy on 32
sequences drawn from D). Step loss :math:`\frac1K\sum_k\lambda_k L_k` with

* ``target_only``: λ = (1, 0) (no replay: the forgetting to prevent);
* ``uniform``: λ = (1, 1) (fixed weights, the paper's uniform baseline);
* ``recap``: RECAP weights, T = 5, W = 10 (:class:`~divergent.objectives.recap.RecapWeighter`);
* ``recap_t1``: RECAP with T = 1 (context only, not in the verdict);
* full mode only, context: ``fixed_0.25``, ``fixed_0.5``: fixed λ = (2 − w, w), less replay
  than uniform, to show where RECAP and uniform sit on the fixed-weight trade-off.

All methods of a seed start from the same fitted policy and use the same sampling streams.
Measured exactly at the end: forgetting = the rise of KL(D‖π) over the start, and the target
gain = the rise of E_π[reward].

Verdict (thresholds fixed before the first run): the set-up must first show forgetting worth
preventing: target-only must forget more than uniform (paired 95 % CI of the difference above
0), else ``inconclusive``. Then ``held`` needs both (:meth:`Verdict.combine`): RECAP forgets
less than uniform, the per-seed relative reduction :math:`(F_u - F_r)/F_u` tested with
:func:`~divergent.papers._stats.better_than` (margin ``FORGET_MARGIN = 0.05``); and RECAP's
target gain no worse than uniform's, the relative change :math:`(G_r - G_u)/G_u` tested with
:func:`~divergent.papers._stats.no_worse_than` (margin ``TARGET_MARGIN = 0.10``).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import torch

from divergent.objectives.recap import RecapWeighter
from divergent.papers._catalog import reproduction
from divergent.papers._stats import (
    better_than,
    format_ci,
    interval,
    mean_ci,
    no_worse_than,
    paired_ci,
)
from divergent.repro import Outcome, ReproContext, Verdict
from divergent.toy import (
    MLPPolicy,
    SequenceSpace,
    TabularPolicy,
    exact_expected_reward,
    exact_kl,
    target_reward,
)

FORGET_MARGIN = 0.05
TARGET_MARGIN = 0.10
METHODS = ("target_only", "uniform", "recap", "recap_t1")
# full mode only, context: fixed weights (2 − w, w) with less replay, to place RECAP and uniform
# on the fixed-weight trade-off between forgetting and target gain
FIXED_REPLAY_WEIGHTS = (0.25, 0.5)
BATCH = 32
LR = 0.02
WINDOW = 10
LOSS_FLOOR = 1e-6  # RECAP's ratio needs a positive loss; 1 − mean reward can be exactly 0


def checks(metrics: Mapping[str, Any]) -> dict[str, Verdict]:
    """The three parts of the verdict, each a tri-state (pure)."""
    p = metrics["paired"]
    precondition = better_than(*interval(p["target_only_minus_uniform_forgetting"]), 1e-12)
    return {
        "target_only_forgets_more": precondition,
        "recap_forgets_less": better_than(
            *interval(p["recap_relative_forgetting_reduction"]), FORGET_MARGIN
        ),
        "recap_target_no_worse": no_worse_than(
            *interval(p["recap_relative_target_gain_change"]), TARGET_MARGIN
        ),
    }


def verdict(metrics: Mapping[str, Any]) -> Verdict:
    """Inconclusive without forgetting to prevent; else both RECAP parts must hold."""
    parts = checks(metrics)
    if parts["target_only_forgets_more"] is not Verdict.HELD:
        return Verdict.INCONCLUSIVE
    return Verdict.combine([parts["recap_forgets_less"], parts["recap_target_no_worse"]])


def _general_capability(space: SequenceSpace, data: TabularPolicy, g: torch.Generator) -> Any:
    policy = MLPPolicy(space, hidden=32, generator=g)
    target = data.probs().detach()
    opt = torch.optim.Adam(policy.parameters(), lr=0.05)
    for _ in range(300):
        opt.zero_grad()
        loss = -(target * policy.log_probs()).sum()
        loss.backward()
        opt.step()
    return policy


def _post_train(
    method: str,
    start: MLPPolicy,
    data: TabularPolicy,
    rewards: torch.Tensor,
    steps: int,
    seed_generator: int,
    eval_every: int,
) -> dict[str, Any]:
    policy = copy.deepcopy(start)
    data_probs = data.probs().detach()
    opt = torch.optim.Adam(policy.parameters(), lr=LR)
    g = torch.Generator().manual_seed(seed_generator)  # the same draws for every method
    weighter = (
        RecapWeighter(2, window=WINDOW, temperature=1.0 if method == "recap_t1" else 5.0)
        if method.startswith("recap")
        else None
    )
    trace: dict[str, list[float]] = {"step": [], "kl_general": [], "reward": [], "weight": []}
    for step in range(steps + 1):
        if step % eval_every == 0 or step == steps:
            with torch.no_grad():
                trace["step"].append(step)
                trace["kl_general"].append(float(exact_kl(data, policy)))
                trace["reward"].append(float(exact_expected_reward(policy, rewards)))
        if step == steps:
            break
        # one pass over the support serves both batches: exact draws from π, then a gather
        log_p = policy.log_probs()
        draws = torch.multinomial(log_p.detach().exp(), BATCH, replacement=True, generator=g)
        r = rewards[draws]
        surrogate = -((r - r.mean()) * log_p[draws]).mean()
        replay_draws = torch.multinomial(data_probs, BATCH, replacement=True, generator=g)
        replay = -log_p[replay_draws].mean()
        if method == "target_only":
            weights = torch.tensor([1.0, 0.0], dtype=torch.float64)
        elif method.startswith("fixed_"):
            w = float(method.removeprefix("fixed_"))
            weights = torch.tensor([2.0 - w, w], dtype=torch.float64)
        elif weighter is None:
            weights = torch.ones(2, dtype=torch.float64)
        else:
            weights = weighter.weights
            weighter.record([max(1.0 - float(r.mean()), LOSS_FLOOR), float(replay.detach())])
        trace["weight"].append(float(weights[1]))
        opt.zero_grad()
        loss = (weights[0] * surrogate + weights[1] * replay) / 2
        loss.backward()
        opt.step()
    return trace


@reproduction("recap", verdict=verdict)
def experiment(ctx: ReproContext) -> Outcome:
    eval_every = 10
    space = SequenceSpace(4, 5)
    methods = METHODS if ctx.quick else (*METHODS, *(f"fixed_{w}" for w in FIXED_REPLAY_WEIGHTS))
    per_seed: dict[str, dict[str, list[float]]] = {
        m: {"forgetting": [], "target_gain": [], "mean_replay_weight": []} for m in methods
    }
    traces0: dict[str, Any] = {}
    for seed in range(ctx.size.n_seeds):
        g = ctx.generator(seed)
        data = TabularPolicy.random(space, scale=1.0, generator=g)
        target = torch.randint(space.vocab_size, (space.length,), generator=g)
        rewards = target_reward(space, target)
        ctx.progress(f"seed {seed}: fitting the general capability", seed / ctx.size.n_seeds)
        start = _general_capability(space, data, g)
        sample_seed = int(torch.randint(2**31 - 1, (1,), generator=g))
        for method in methods:
            ctx.progress(f"seed {seed}: {method}", (seed + 0.2) / ctx.size.n_seeds)
            trace = _post_train(
                method, start, data, rewards, ctx.size.steps, sample_seed, eval_every
            )
            per_seed[method]["forgetting"].append(trace["kl_general"][-1] - trace["kl_general"][0])
            per_seed[method]["target_gain"].append(trace["reward"][-1] - trace["reward"][0])
            per_seed[method]["mean_replay_weight"].append(
                sum(trace["weight"]) / len(trace["weight"])
            )
            if seed == 0:
                traces0[method] = trace

    f_u, f_r = per_seed["uniform"]["forgetting"], per_seed["recap"]["forgetting"]
    g_u, g_r = per_seed["uniform"]["target_gain"], per_seed["recap"]["target_gain"]
    paired = {
        "target_only_minus_uniform_forgetting": paired_ci(
            per_seed["target_only"]["forgetting"], f_u
        ),
        "recap_relative_forgetting_reduction": mean_ci([(u - r) / u for u, r in zip(f_u, f_r)]),
        "recap_relative_target_gain_change": mean_ci([(r - u) / u for u, r in zip(g_u, g_r)]),
        "recap_t1_relative_forgetting_reduction": mean_ci(
            [(u - r) / u for u, r in zip(f_u, per_seed["recap_t1"]["forgetting"])]
        ),
        "recap_t1_relative_target_gain_change": mean_ci(
            [(r - u) / u for u, r in zip(g_u, per_seed["recap_t1"]["target_gain"])]
        ),
    }
    mean = {m: {k: sum(v) / len(v) for k, v in per_seed[m].items()} for m in methods}

    ctx.progress("plots", 0.95)
    fig, axes = ctx.subplots(1, 3, figsize=(15, 4.2))
    for method, trace in traces0.items():
        axes[0].plot(trace["step"], trace["kl_general"], label=method)
        axes[1].plot(trace["step"], trace["reward"], label=method)
        axes[2].plot(range(len(trace["weight"])), trace["weight"], label=method)
    axes[0].set_ylabel("KL(D ‖ π)  (general capability lost)")
    axes[1].set_ylabel("E_π[target reward]")
    axes[2].set_ylabel("replay weight λ_replay")
    for ax in axes:
        ax.set_xlabel("post-training step")
        ax.legend(fontsize=8)
    axes[0].set_title("Forgetting (seed 0, exact)")
    axes[1].set_title("Target reward (seed 0, exact)")
    axes[2].set_title("Replay weight")
    ctx.savefig(fig, "recap_curves")

    metrics = {
        "n_seeds": ctx.size.n_seeds,
        "steps": ctx.size.steps,
        "window": WINDOW,
        "per_seed": per_seed,
        "mean": mean,
        "paired": paired,
        "thresholds": {"forget_margin": FORGET_MARGIN, "target_margin": TARGET_MARGIN},
    }
    parts = checks(metrics)
    summary = (
        f"forgetting (rise of KL(D‖π)): target-only {mean['target_only']['forgetting']:.3f}, "
        f"uniform {mean['uniform']['forgetting']:.3f}, RECAP {mean['recap']['forgetting']:.3f}"
        f" (relative reduction {format_ci(paired['recap_relative_forgetting_reduction'])}); "
        f"target gain uniform {mean['uniform']['target_gain']:.3f}, RECAP "
        f"{mean['recap']['target_gain']:.3f} (relative change "
        f"{format_ci(paired['recap_relative_target_gain_change'])}); mean replay weight RECAP "
        f"{mean['recap']['mean_replay_weight']:.3f}; T=1: reduction "
        f"{format_ci(paired['recap_t1_relative_forgetting_reduction'])}, gain change "
        f"{format_ci(paired['recap_t1_relative_target_gain_change'])} ({ctx.size.n_seeds} seeds, "
        f"{ctx.size.steps} steps)"
        + "".join(
            f"; fixed λ_replay={m.removeprefix('fixed_')}: forgetting "
            f"{mean[m]['forgetting']:.3f}, gain {mean[m]['target_gain']:.3f}"
            for m in methods
            if m.startswith("fixed_")
        )
        + "".join(f"; {k}: {v.value}" for k, v in parts.items())
    )
    return Outcome(metrics=metrics, summary=summary)

r"""KDRL: GRPO plus a reverse-KL (k2) distillation term beats GRPO alone and KD alone.

Xu et al. (arXiv 2506.02208) post-train a student with :math:`J_{GRPO} - \beta\,\mathrm{KL}
(\pi_\theta\|\pi_T)`, the KL estimated per token on the student's rollouts with the k2
estimator, whose expected gradient is the reverse-KL gradient (k3 as a loss gives the
forward-KL gradient instead); they report that the combination beats GRPO and KD baselines.

Set-up (the notes' smallest experiment, on an exact toy): responses are two-token sequences
over 7 tokens (:class:`divergent.toy.SequenceSpace`, 49 responses); reward 1 on a set C of 4
responses. The student (:class:`divergent.toy.TabularPolicy`, autoregressive) starts with
0.5 % of its mass on C (exploration-limited); the teacher puts 60 % on C (unevenly) and 30 % on
two wrong responses. Each step samples 4 groups of 8 responses from the student, computes
group-normalised advantages
(:func:`~divergent.objectives.policy_gradient.group_normalized_advantages`) and takes an
Adam step (lr 0.05) on :func:`divergent.objectives.kdrl.kdrl_loss` (token-level,
on-policy, token-mean normalisation) with β = 0.1 for:
GRPO (β = 0), KD (k2, advantages 0), KDRL-k2, KDRL-k3, and reward-guided KDRL-k2 (KD only on
failed responses; reported, not judged). 300 steps (quick: 120), 10 seeds (quick: 3), the
same seeds for every method; the expected reward :math:`\pi(C)` is computed exactly.

Also measured exactly: the expected gradient of the k2 and k3 losses on a one-token toy policy
against the exact reverse- and forward-KL gradients (max abs error).

Verdict (thresholds fixed in code before running): the gradient identities must hold to 1e-9
(else not held); then the paired 95 % intervals over seeds of the final expected reward of
KDRL-k2 minus GRPO and minus KD are judged with
:func:`divergent.papers._stats.better_than` (margin 0.02) and combined (any not held → not
held; any inconclusive → inconclusive).

Added after the first quick run (reported, *not* used by the verdict): the mean expected reward
over the whole run (area under the reward curve, a sample-efficiency measure), paired KDRL-k2
minus GRPO, because GRPO alone saturated the final reward in this set-up.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch

from divergent.objectives.kdrl import kdrl_loss, reward_guided_kd_mask
from divergent.objectives.policy_gradient import group_normalized_advantages
from divergent.papers._catalog import reproduction
from divergent.papers._stats import better_than, format_ci, interval, mean_ci
from divergent.repro import Outcome, ReproContext, Verdict
from divergent.toy import SequenceSpace, TabularPolicy, batch_token_log_probs

GRADIENT_TOLERANCE = 1e-9
MARGIN = 0.02
BETA = 0.1
GROUP_SIZE = 8
N_GROUPS = 4
LR = 0.05
METHODS = ("grpo", "kd", "kdrl_k2", "kdrl_k3", "kdrl_k2_guided")


def verdict(metrics: Mapping[str, Any]) -> Verdict:
    """Exact k2/k3 gradient identities, then KDRL-k2 above GRPO and above KD (paired CIs)."""
    err = float(metrics["gradient_identity_max_error"])
    if not err <= GRADIENT_TOLERANCE:
        return Verdict.NOT_HELD
    parts = [
        better_than(*interval(metrics["paired"]["kdrl_k2_minus_grpo"]), MARGIN),
        better_than(*interval(metrics["paired"]["kdrl_k2_minus_kd"]), MARGIN),
    ]
    return Verdict.combine(parts)


def _gradient_identity_error() -> float:
    """max |E_π[∇k2-loss] − ∇KL(π‖T)|, |E_π[∇k3-loss] − ∇KL(T‖π)| on a 1-token toy policy."""
    space = SequenceSpace(vocab_size=9, length=1)
    g = torch.Generator().manual_seed(123)
    student = TabularPolicy.random(space, generator=g)
    teacher = TabularPolicy.random(space, generator=g).log_probs().detach()
    index = torch.arange(space.size)
    errors = []
    for kind, direction in (("k2", "reverse"), ("k3", "forward")):
        params = list(student.parameters())
        lp, mask = batch_token_log_probs(student, index)
        per = kdrl_loss(
            lp,
            None,
            teacher[:, None],
            torch.zeros(space.size, dtype=lp.dtype),
            mask,
            kd_coef=1.0,
            kd_estimator=kind,
            reduction="none",
        )
        weights = student.probs().detach()
        got = torch.autograd.grad((weights * per[:, 0]).sum(), params)
        logp = student.log_probs()
        value = (
            (logp.exp() * (logp - teacher)).sum()
            if direction == "reverse"
            else (teacher.exp() * (teacher - logp)).sum()
        )
        want = torch.autograd.grad(value, params)
        errors += [float((a - b).abs().max()) for a, b in zip(got, want)]
    return max(errors)


def _problem(space: SequenceSpace, g: torch.Generator):
    n = space.size
    perm = torch.randperm(n, generator=g)
    correct, wrong = perm[:4], perm[4:6]
    rewards = torch.zeros(n, dtype=torch.float64)
    rewards[correct] = 1.0
    # teacher: 60 % on C (uneven), 30 % on two wrong responses, 10 % spread
    t = torch.full((n,), 0.10 / (n - 6), dtype=torch.float64)
    t[correct] = 0.60 * torch.tensor([0.4, 0.3, 0.2, 0.1], dtype=torch.float64)
    t[wrong] = torch.tensor([0.2, 0.1], dtype=torch.float64)
    # student: random, 0.5 % on C
    s = torch.softmax(torch.randn(n, generator=g, dtype=torch.float64), 0)
    s[correct] = 0.005 * s[correct] / s[correct].sum()
    rest = torch.ones(n, dtype=torch.bool)
    rest[correct] = False
    s[rest] = 0.995 * s[rest] / s[rest].sum()
    return rewards, t.log(), s.log()


def _train(method: str, space, rewards, teacher_lp, student_lp, steps, g) -> list[float]:
    student = TabularPolicy.from_log_probs(space, student_lp)
    opt = torch.optim.Adam(student.parameters(), lr=LR)
    teacher_tokens = TabularPolicy.from_log_probs(space, teacher_lp)
    curve = []
    for _ in range(steps):
        with torch.no_grad():
            index = student.sample(GROUP_SIZE * N_GROUPS, generator=g)
            t_lp = teacher_tokens.token_log_probs(index)
        lp, mask = batch_token_log_probs(student, index)
        r = rewards[index]
        adv = group_normalized_advantages(r, GROUP_SIZE)
        kw: dict[str, Any] = {"kd_coef": BETA, "kd_estimator": "k2"}
        if method == "grpo":
            kw["kd_coef"] = 0.0
        elif method == "kd":
            adv = torch.zeros_like(adv)
        elif method == "kdrl_k3":
            kw["kd_estimator"] = "k3"
        elif method == "kdrl_k2_guided":
            kw["kd_mask"] = reward_guided_kd_mask(r)
        loss = kdrl_loss(lp, None, t_lp, adv, mask, normalization="token", **kw)
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            curve.append(float((student.probs() * rewards).sum()))
    return curve


@reproduction("kdrl", verdict=verdict)
def experiment(ctx: ReproContext) -> Outcome:
    space = SequenceSpace(vocab_size=7, length=2)
    grad_err = _gradient_identity_error()
    finals: dict[str, list[float]] = {m: [] for m in METHODS}
    curves: dict[str, list[list[float]]] = {m: [] for m in METHODS}
    teacher_reward, student_reward = [], []
    for s in range(ctx.size.n_seeds):
        rewards, teacher_lp, student_lp = _problem(space, ctx.generator(100 * s))
        teacher_reward.append(float((teacher_lp.exp() * rewards).sum()))
        student_reward.append(float((student_lp.exp() * rewards).sum()))
        for j, method in enumerate(METHODS):
            ctx.progress(
                f"seed {s} {method}", (s * len(METHODS) + j) / (ctx.size.n_seeds * len(METHODS))
            )
            curve = _train(
                method,
                space,
                rewards,
                teacher_lp,
                student_lp,
                ctx.size.steps,
                ctx.generator(100 * s + 1),
            )  # same sampling seed for every method
            curves[method].append(curve)
            finals[method].append(curve[-1])
    paired = {
        f"kdrl_k2_minus_{b}": mean_ci([a - c for a, c in zip(finals["kdrl_k2"], finals[b])])
        for b in ("grpo", "kd", "kdrl_k3")
    }
    mean_final = {m: sum(v) / ctx.size.n_seeds for m, v in finals.items()}
    auc = {m: [sum(c) / ctx.size.steps for c in curves[m]] for m in METHODS}
    auc_paired = mean_ci([a - b for a, b in zip(auc["kdrl_k2"], auc["grpo"])])
    metrics = {
        "gradient_identity_max_error": grad_err,
        "final_reward": finals,
        "mean_final_reward": mean_final,
        "paired": paired,
        "mean_reward_over_run": {m: sum(v) / ctx.size.n_seeds for m, v in auc.items()},
        "post_hoc_auc_kdrl_k2_minus_grpo": auc_paired,
        "teacher_reward": sum(teacher_reward) / ctx.size.n_seeds,
        "initial_reward": sum(student_reward) / ctx.size.n_seeds,
        "n_seeds": ctx.size.n_seeds,
        "steps": ctx.size.steps,
    }

    fig, ax = ctx.subplots(figsize=(5.6, 3.8))
    for m in METHODS:
        mean_curve = [
            sum(c[i] for c in curves[m]) / ctx.size.n_seeds for i in range(ctx.size.steps)
        ]
        ax.plot(range(1, ctx.size.steps + 1), mean_curve, label=m)
    ax.axhline(metrics["teacher_reward"], color="k", ls=":", lw=0.8, label="teacher")
    ax.set_xlabel("step")
    ax.set_ylabel("exact expected reward π(C)")
    ax.set_title(f"KDRL on a 49-response toy (mean of {ctx.size.n_seeds} seeds)", fontsize=9)
    ax.legend(fontsize=7)
    ctx.savefig(fig, "reward_curves")

    summary = (
        f"gradient identities max error {grad_err:.1e}; final exact reward (mean of "
        f"{ctx.size.n_seeds} "
        f"seeds, start {metrics['initial_reward']:.3f}, teacher {metrics['teacher_reward']:.2f}"
        "): "
        + ", ".join(f"{m} {v:.3f}" for m, v in mean_final.items())
        + f"; KDRL-k2 − GRPO {format_ci(paired['kdrl_k2_minus_grpo'])}, KDRL-k2 − KD "
        f"{format_ci(paired['kdrl_k2_minus_kd'])}, KDRL-k2 − KDRL-k3 "
        f"{format_ci(paired['kdrl_k2_minus_kdrl_k3'])}; post hoc (not judged): mean reward "
        f"over the run KDRL-k2 − GRPO {format_ci(auc_paired)}"
    )
    if math.isnan(grad_err):
        summary += " (gradient check failed to run)"
    return Outcome(metrics=metrics, summary=summary)

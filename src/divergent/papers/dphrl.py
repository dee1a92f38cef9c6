r"""DPH-RL: mass-covering rehearsal keeps pass@k where a reverse-KL penalty lets it fall.

Li et al. (ICLR 2026, arXiv 2509.07430) argue that the divergence term of RL with verifiable
rewards decides whether the policy keeps the diversity of the initial model: reverse KL (and no
KL) raise pass@1 but lose pass@k, while a mass-covering f-divergence (forward KL, JS) to the
initial policy, computed on its own pre-sampled responses for "near-perfect" prompts
(:func:`divergent.objectives.rehearsal.rehearsal_loss`), keeps pass@k.

Set-up (the notes' smallest experiment; exact metrics): a contextual bandit of 50 problems ×
20 answers, 3 correct answers per problem. Logits :math:`z_{m} = z^{ref}_m + E_m W` with fixed
random problem features :math:`E \in \mathbb R^{50\times 8}` and a trained :math:`W` (zero at
the start, so :math:`\pi_0 = \pi_{ref}`): a shared low-rank parameterisation, so an update on
one problem moves the others. The reference's correct mass varies by problem (a random offset
in [−4, 4] on the correct logits: from hard to near-perfect problems; the first quick run used
[−4, 1], which left no near-perfect problem, so the rehearsal never ran and DPH-RL equalled
GRPO: a set-up error corrected before any verdict was kept). Training uses problems 0-29;
30-49 are held out. Methods
(the same data and sampling seed): **grpo** (clipped surrogate, group-normalised advantages over
8 samples per problem, no KL), **rkl** (GRPO + β·k2 in the loss: the exact reverse-KL gradient,
β = 0.1), **dph_f** and **dph_js** (DPH-RL: the near-perfect problems — ≥ 6 of 8 reference
samples correct and one more correct resample — are trained only by η·rehearsal on a fixed
buffer of 64 reference samples each, forward KL resp. JS, η = 0.1; the other training problems
by GRPO without KL). Adam, lr 0.05, 400 steps (quick 150), 8 seeds (quick 3).

Metrics (exact, from each problem's correct mass :math:`c_m`): pass@k
:math:`= 1-(1-c_m)^k` for k ∈ {1, 8, 64}, averaged over all 50 problems, over the training
and the held-out problems; the number of correct answers with probability ≥ 0.01.

Verdict (thresholds fixed in code before running), on pass@64 over all problems, paired by
seed against the base model: DPH-F and DPH-JS each no worse than the base
(:func:`divergent.papers._stats.no_worse_than`, margin 0.01) and the reverse-KL run below the
base (:func:`divergent.papers._stats.better_than` on base − rkl, margin 0.01); the three parts
combined (any not held → not held; any inconclusive → inconclusive).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from divergent.objectives.policy_gradient import group_normalized_advantages, grpo_loss
from divergent.objectives.rehearsal import near_perfect_mask, rehearsal_loss
from divergent.papers._catalog import reproduction
from divergent.papers._stats import better_than, format_ci, interval, mean_ci, no_worse_than
from divergent.repro import Outcome, ReproContext, Verdict
from divergent.toy import SequenceSpace

MARGIN = 0.01
N_PROBLEMS, N_ANSWERS, N_CORRECT, RANK = 50, 20, 3, 8
N_TRAIN = 30
GROUP_SIZE = 8
BUFFER = 64
COEF = 0.1  # β of the reverse-KL penalty = η of the rehearsal
LR = 0.05
NEAR_PERFECT = 6 / 8
KS = (1, 8, 64)
OFFSET_LOW, OFFSET_HIGH = -4.0, 4.0
COVER_MASS = 0.01
METHODS = ("grpo", "rkl", "dph_f", "dph_js")


def verdict(metrics: Mapping[str, Any]) -> Verdict:
    """DPH-F and DPH-JS keep pass@64 (no worse than base); reverse KL falls below base."""
    p = metrics["paired_pass64"]
    return Verdict.combine(
        [
            no_worse_than(*interval(p["dph_f_minus_base"]), MARGIN),
            no_worse_than(*interval(p["dph_js_minus_base"]), MARGIN),
            better_than(*interval(p["base_minus_rkl"]), MARGIN),
        ]
    )


def _bandit(g: torch.Generator):
    space = SequenceSpace(vocab_size=N_ANSWERS, length=1)  # the answers, enumerated
    answers = space.sequences[:, 0]
    ref_logits = torch.randn(N_PROBLEMS, N_ANSWERS, generator=g, dtype=torch.float64)
    correct = torch.zeros(N_PROBLEMS, N_ANSWERS, dtype=torch.bool)
    picks = torch.rand(N_PROBLEMS, N_ANSWERS, generator=g).argsort(-1)[:, :N_CORRECT]
    correct.scatter_(1, answers[picks], True)
    offset = OFFSET_LOW + (OFFSET_HIGH - OFFSET_LOW) * torch.rand(
        N_PROBLEMS, 1, generator=g, dtype=torch.float64
    )
    ref_logits = ref_logits + torch.where(correct, offset, torch.zeros_like(ref_logits))
    features = torch.randn(N_PROBLEMS, RANK, generator=g, dtype=torch.float64) / RANK**0.5
    return torch.log_softmax(ref_logits, -1), correct, features


def _exact_metrics(log_pi: torch.Tensor, correct: torch.Tensor) -> dict[str, Any]:
    mass = (log_pi.exp() * correct).sum(-1).clamp(0.0, 1.0)
    out: dict[str, Any] = {}
    for name, rows in (
        ("all", slice(None)),
        ("train", slice(0, N_TRAIN)),
        ("heldout", slice(N_TRAIN, None)),
    ):
        for k in KS:
            out[f"pass{k}_{name}"] = float((1 - (1 - mass[rows]) ** k).mean())
        covered = ((log_pi.exp() >= COVER_MASS) & correct)[rows].sum(-1).to(torch.float64)
        out[f"coverage_{name}"] = float(covered.mean())
    return out


def _train(method, ref_lp, correct, features, steps, g_split, g_train) -> dict[str, Any]:
    w = torch.zeros(RANK, N_ANSWERS, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([w], lr=LR)
    train = torch.arange(N_TRAIN)
    # DPH-RL's split and buffer from the reference (the same draws for every method)
    probs_ref = ref_lp.exp()
    ref_draws = torch.multinomial(probs_ref[train], 9 + BUFFER, replacement=True, generator=g_split)
    hits = correct[train[:, None], ref_draws]
    pef = near_perfect_mask(
        hits[:, :8].sum(-1), 8, threshold=NEAR_PERFECT, extra_correct=hits[:, 8]
    )
    buffer = ref_draws[:, 9:]
    dph = method in ("dph_f", "dph_js")
    rl_problems = train[~pef] if dph else train
    for _ in range(steps):
        log_pi = torch.log_softmax(ref_lp + features @ w, -1)
        with torch.no_grad():
            draws = torch.multinomial(
                log_pi[rl_problems].exp(), GROUP_SIZE, replacement=True, generator=g_train
            )
        loss = torch.zeros((), dtype=torch.float64)
        if rl_problems.numel():
            lp = log_pi[rl_problems[:, None], draws].reshape(-1, 1)
            rewards = correct[rl_problems[:, None], draws].reshape(-1).to(torch.float64)
            adv = group_normalized_advantages(rewards, GROUP_SIZE)
            ref_tok = ref_lp[rl_problems[:, None], draws].reshape(-1, 1)
            kl = COEF if method == "rkl" else 0.0
            loss = loss + grpo_loss(
                lp, None, ref_tok, adv, kl_coef=kl, kl_estimator="k2", normalization="token"
            )
        if dph and bool(pef.any()):
            rows = train[pef]
            lp_buf = log_pi[rows[:, None], buffer[pef]]
            ref_buf = ref_lp[rows[:, None], buffer[pef]]
            div = "kl" if method == "dph_f" else "js"
            loss = loss + COEF * rehearsal_loss(lp_buf, ref_buf, divergence=div)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        final = torch.log_softmax(ref_lp + features @ w, -1)
    out = _exact_metrics(final, correct)
    out["n_near_perfect"] = int(pef.sum())
    return out


@reproduction("dphrl", verdict=verdict)
def experiment(ctx: ReproContext) -> Outcome:
    per: dict[str, list[dict[str, Any]]] = {m: [] for m in ("base", *METHODS)}
    for s in range(ctx.size.n_seeds):
        ref_lp, correct, features = _bandit(ctx.generator(10 * s))
        per["base"].append(_exact_metrics(ref_lp, correct))
        for j, method in enumerate(METHODS):
            ctx.progress(
                f"seed {s} {method}", (s * len(METHODS) + j) / (ctx.size.n_seeds * len(METHODS))
            )
            per[method].append(
                _train(
                    method,
                    ref_lp,
                    correct,
                    features,
                    ctx.size.steps,
                    ctx.generator(10 * s + 1),
                    ctx.generator(10 * s + 2),
                )
            )

    def col(m: str, key: str) -> list[float]:
        return [r[key] for r in per[m]]

    paired = {
        "dph_f_minus_base": mean_ci(
            [a - b for a, b in zip(col("dph_f", "pass64_all"), col("base", "pass64_all"))]
        ),
        "dph_js_minus_base": mean_ci(
            [a - b for a, b in zip(col("dph_js", "pass64_all"), col("base", "pass64_all"))]
        ),
        "base_minus_rkl": mean_ci(
            [b - a for a, b in zip(col("rkl", "pass64_all"), col("base", "pass64_all"))]
        ),
        "base_minus_grpo": mean_ci(
            [b - a for a, b in zip(col("grpo", "pass64_all"), col("base", "pass64_all"))]
        ),
    }
    keys = [f"pass{k}_{part}" for part in ("all", "train", "heldout") for k in KS]
    keys += ["coverage_all", "coverage_train", "coverage_heldout"]
    mean = {m: {k: sum(col(m, k)) / ctx.size.n_seeds for k in keys} for m in per}
    metrics = {
        "per_seed": per,
        "mean": mean,
        "paired_pass64": paired,
        "n_seeds": ctx.size.n_seeds,
        "steps": ctx.size.steps,
    }

    fig, axes = ctx.subplots(1, 2, figsize=(8.0, 3.4))
    names = ("base", *METHODS)
    for ax, part in zip(axes, ("train", "heldout")):
        for k, marker in zip(KS, ("o", "s", "^")):
            ax.plot(
                range(len(names)),
                [mean[m][f"pass{k}_{part}"] for m in names],
                marker=marker,
                label=f"pass@{k}",
            )
        ax.set_xticks(range(len(names)), names, rotation=20, fontsize=8)
        ax.set_title(f"{part} problems (exact, mean of {ctx.size.n_seeds} seeds)", fontsize=9)
        ax.set_ylim(0, 1.02)
    axes[0].legend(fontsize=8)
    ctx.savefig(fig, "pass_at_k")

    summary = (
        "pass@1 / pass@64 / correct answers covered, all problems (mean of "
        f"{ctx.size.n_seeds} seeds): "
        + "; ".join(
            f"{m} {mean[m]['pass1_all']:.3f} / {mean[m]['pass64_all']:.3f} / "
            f"{mean[m]['coverage_all']:.2f}"
            for m in names
        )
        + f"; near-perfect (rehearsed) training problems per seed "
        f"{sum(r['n_near_perfect'] for r in per['dph_f']) / ctx.size.n_seeds:.1f} of {N_TRAIN}"
        + f"; pass@64 DPH-F − base {format_ci(paired['dph_f_minus_base'])}, DPH-JS − base "
        f"{format_ci(paired['dph_js_minus_base'])}, base − RKL "
        f"{format_ci(paired['base_minus_rkl'])}, base − GRPO "
        f"{format_ci(paired['base_minus_grpo'])}"
    )
    return Outcome(metrics=metrics, summary=summary)

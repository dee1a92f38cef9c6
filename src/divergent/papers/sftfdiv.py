r"""SFT as implicit-reward learning: its reference term is constant, so SFT drift is
unconstrained (Wang et al. 2025, "Implicit Reward as the Bridge", arXiv 2507.00018).

The paper (abstract; its method section was not available, notes section 15) shows SFT is a
special case of implicit-reward learning with the DPO reward
:math:`\hat r = \beta\log(\pi_\theta/\pi_{\mathrm{ref}})`, in whose derivation the
:math:`\mathrm{KL}(\pi\|\pi_{\mathrm{ref}})` term is constant in the policy — SFT does not
restrain the drift from the reference — and proposes (1) a lower SFT learning rate and (2)
SFT losses from other f-divergences, which keep a non-constant reference term.

We check this exactly with :func:`divergent.objectives.preference.sft_f_divergence_loss`
(:math:`\mathcal L = -\beta\,\mathbb{E}_{\pi_E}[\psi(\pi_\theta/\pi_{\mathrm{ref}})]`, ψ the
f-DPO score) on an enumerable toy LM (:mod:`divergent.toy`, V = 3, L = 3 → 27 sequences),
a random reference π_ref (the "pre-trained" model, logits N(0, 1)) and a random expert
π_E (logits N(0, 1.5²)); the expectation over demonstrations is the exact sum over π_E (no
sampling). Policies start at π_ref and follow full-batch gradient descent for a fixed budget
of ``STEPS`` steps (SFT as practised, not run to convergence: exact SFT converges to π_E at
any learning rate, so the learning-rate remedy is about a budget). Fit is reported as
KL(π_E‖π).

* **Bridge** (exact): ∇ of the reverse-KL form equals β ∇NLL at random policies
  (``bridge_gap``), and training it against two different references from the same start
  gives the *same* trajectory (``reference_sensitivity_rkl``: the reference has no effect),
  while the JS form's trajectory moves with the reference (``reference_sensitivity_js``,
  reported).
* **Remedy 1**: KL(π‖π_ref) after a fixed number of SFT steps at learning rates
  ``LEARNING_RATES``; ratio lowest-LR / highest-LR drift.
* **Remedy 2**: JS (½) and forward-KL SFT losses, each scaled by 1/ψ'(1) so their gradient
  at the start (π = π_ref) equals SFT's, at the highest learning rate; drift ratio to SFT.

Verdict (thresholds fixed in code): held when ``bridge_gap`` ≤ ``BRIDGE_TOL`` and
``reference_sensitivity_rkl`` ≤ ``BRIDGE_TOL``, the LR drift ratio ≤ ``LR_DRIFT_RATIO_MAX`` and
both f-SFT drift ratios ≤ ``FDIV_DRIFT_RATIO_MAX`` (worst instance); not held when a bridge
quantity exceeds ``BRIDGE_FAIL`` or a drift ratio is ≥ 1 (no reduction); else inconclusive.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from divergent.objectives.preference import f_dpo_score, sft_f_divergence_loss
from divergent.papers._catalog import reproduction
from divergent.papers._stats import number
from divergent.repro import Outcome, ReproContext, Verdict
from divergent.toy import SequenceSpace, TabularPolicy, exact_kl

__all__ = [
    "BRIDGE_FAIL",
    "BRIDGE_TOL",
    "FDIV_DRIFT_RATIO_MAX",
    "LEARNING_RATES",
    "LR_DRIFT_RATIO_MAX",
    "experiment",
    "verdict",
]

BRIDGE_TOL = 1e-10  # exact identities (float64)
BRIDGE_FAIL = 1e-6
LR_DRIFT_RATIO_MAX = 0.7  # KL drift at the lowest LR / at the highest, at most this
FDIV_DRIFT_RATIO_MAX = 0.8  # f-SFT drift / SFT drift at the same LR and steps, at most this

LEARNING_RATES = (1.0, 0.3, 0.1)
STEPS = 150  # a fixed SFT budget (quick and full alike); every LR converges to π_E eventually
F_SFT = (("js", {"beta": 0.5}), ("kl", {}))
VOCAB, LENGTH = 3, 3


def verdict(metrics: Mapping[str, Any]) -> Verdict:
    """SFT's reference term is inert; lower LR and f-divergence SFT both drift less."""
    bridge = max(number(metrics["bridge_gap"]), number(metrics["reference_sensitivity_rkl"]))
    lr_ratio = number(metrics["lr_drift_ratio_max"])
    fdiv_ratio = number(metrics["fdiv_drift_ratio_max"])
    if any(v != v for v in (bridge, lr_ratio, fdiv_ratio)):
        return Verdict.INCONCLUSIVE
    if bridge > BRIDGE_FAIL or lr_ratio >= 1.0 or fdiv_ratio >= 1.0:
        return Verdict.NOT_HELD
    if (
        bridge <= BRIDGE_TOL
        and lr_ratio <= LR_DRIFT_RATIO_MAX
        and fdiv_ratio <= FDIV_DRIFT_RATIO_MAX
    ):
        return Verdict.HELD
    return Verdict.INCONCLUSIVE


def _loss(
    policy: TabularPolicy,
    log_ref: torch.Tensor,
    expert: torch.Tensor,
    divergence: str,
    params: Mapping[str, Any],
    beta: float,
) -> torch.Tensor:
    """Exact E_{π_E}[f-SFT loss]: the per-sequence losses weighted by π_E."""
    rows = sft_f_divergence_loss(
        policy.log_probs(),
        log_ref,
        divergence=divergence,
        divergence_params=dict(params),
        beta=beta,
        reduction="none",
    )
    return (expert * rows).sum()


def _sft(
    start: TabularPolicy,
    log_ref: torch.Tensor,
    expert: torch.Tensor,
    divergence: str,
    params: Mapping[str, Any],
    beta: float,
    lr: float,
    steps: int,
) -> tuple[TabularPolicy, list[float]]:
    """Full-batch gradient descent from ``start``; KL(π‖π_ref of the start) logged."""
    policy = TabularPolicy(start.space, start.logits.detach())
    opt = torch.optim.SGD(policy.parameters(), lr=lr)
    start_lp = start.log_probs().detach()
    drift = []
    for _ in range(steps):
        opt.zero_grad()
        _loss(policy, log_ref, expert, divergence, params, beta).backward()
        opt.step()
        with torch.no_grad():
            drift.append(float(exact_kl(policy, start_lp)))
    return policy, drift


def _score_slope_at_one(divergence: str, params: Mapping[str, Any]) -> float:
    """ψ'(1) by autograd: the start-of-training gradient scale of an f-SFT loss."""
    x = torch.zeros((), dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(f_dpo_score(x, divergence=divergence, **params), x)
    return float(g)  # dψ/dlog u at u = 1 = ψ'(1)


def _instance(seed: int, steps: int) -> dict[str, Any]:
    g = torch.Generator().manual_seed(seed)
    space = SequenceSpace(VOCAB, LENGTH)
    ref = TabularPolicy.random(space, scale=1.0, generator=g)
    expert_policy = TabularPolicy.random(space, scale=1.5, generator=g)
    other_ref = TabularPolicy.random(space, scale=1.0, generator=g)
    log_ref = ref.log_probs().detach()
    log_other = other_ref.log_probs().detach()
    log_expert = expert_policy.log_probs().detach()
    expert = log_expert.exp()
    nll_fit = float(exact_kl(log_expert, log_ref))

    # bridge: ∇(reverse-KL f-SFT) = β ∇NLL at random policies
    bridge_gap = 0.0
    beta = 0.7
    for k in range(3):
        pi = TabularPolicy.random(space, scale=1.0 + k, generator=g)
        (g_f,) = torch.autograd.grad(_loss(pi, log_ref, expert, "reverse_kl", {}, beta), pi.logits)
        (g_nll,) = torch.autograd.grad(-(expert * pi.log_probs()).sum(), pi.logits)
        bridge_gap = max(bridge_gap, float((g_f - beta * g_nll).abs().max()))

    top_lr = LEARNING_RATES[0]
    sft = {}
    for lr in LEARNING_RATES:
        policy, drift = _sft(ref, log_ref, expert, "reverse_kl", {}, 1.0, lr, steps)
        sft[lr] = {"policy": policy, "drift": drift}
    # the reference has no effect on SFT's trajectory; it does on JS-SFT's
    rkl_other, _ = _sft(ref, log_other, expert, "reverse_kl", {}, 1.0, top_lr, steps)
    sensitivity_rkl = float((rkl_other.logits - sft[top_lr]["policy"].logits).detach().abs().max())
    f_runs = {}
    for name, params in F_SFT:
        scale = 1.0 / _score_slope_at_one(name, params)
        policy, drift = _sft(ref, log_ref, expert, name, params, scale, top_lr, steps)
        f_runs[name] = {"policy": policy, "drift": drift, "beta": scale}
    js_params = dict(F_SFT[0][1])
    js_other, _ = _sft(ref, log_other, expert, "js", js_params, f_runs["js"]["beta"], top_lr, steps)
    sensitivity_js = float((js_other.logits - f_runs["js"]["policy"].logits).detach().abs().max())
    sft_drift = sft[top_lr]["drift"][-1]
    return {
        "kl_expert_ref": nll_fit,
        "bridge_gap": bridge_gap,
        "reference_sensitivity_rkl": sensitivity_rkl,
        "reference_sensitivity_js": sensitivity_js,
        "sft_drift": {str(lr): sft[lr]["drift"][-1] for lr in LEARNING_RATES},
        "sft_fit": {
            str(lr): float(exact_kl(log_expert, sft[lr]["policy"].log_probs().detach()))
            for lr in LEARNING_RATES
        },
        "lr_drift_ratio": sft[LEARNING_RATES[-1]]["drift"][-1] / sft_drift,
        "fsft_drift": {n: f_runs[n]["drift"][-1] for n in f_runs},
        "fsft_fit": {
            n: float(exact_kl(log_expert, f_runs[n]["policy"].log_probs().detach())) for n in f_runs
        },
        "fsft_beta": {n: f_runs[n]["beta"] for n in f_runs},
        "fdiv_drift_ratio": {n: f_runs[n]["drift"][-1] / sft_drift for n in f_runs},
        "curves": {
            **{f"sft lr={lr}": sft[lr]["drift"] for lr in LEARNING_RATES},
            **{f"{n}-SFT lr={top_lr}": f_runs[n]["drift"] for n in f_runs},
        },
    }


@reproduction("sftfdiv", verdict=verdict)
def experiment(ctx: ReproContext) -> Outcome:
    steps = STEPS
    runs = []
    for i in range(ctx.size.n_instances):
        ctx.progress(f"instance {i + 1}/{ctx.size.n_instances}", i / ctx.size.n_instances)
        runs.append(_instance(ctx.seed + 100 * i, steps))
    metrics = {
        "n_instances": ctx.size.n_instances,
        "steps": steps,
        "learning_rates": list(LEARNING_RATES),
        "bridge_gap": max(run["bridge_gap"] for run in runs),
        "reference_sensitivity_rkl": max(run["reference_sensitivity_rkl"] for run in runs),
        "reference_sensitivity_js_min": min(run["reference_sensitivity_js"] for run in runs),
        "lr_drift_ratio_max": max(run["lr_drift_ratio"] for run in runs),
        "fdiv_drift_ratio_max": max(max(run["fdiv_drift_ratio"].values()) for run in runs),
        "fdiv_drift_ratio_by_divergence": {
            n: max(run["fdiv_drift_ratio"][n] for run in runs) for n, _ in F_SFT
        },
        "per_instance": [{k: v for k, v in run.items() if k != "curves"} for run in runs],
    }
    _plots(ctx, runs[0])
    v = verdict(metrics)
    first = runs[0]
    top = str(LEARNING_RATES[0])
    summary = (
        f"bridge: |∇(rkl f-SFT) − β∇NLL| ≤ {metrics['bridge_gap']:.1e}, reference changes the "
        f"SFT trajectory by ≤ {metrics['reference_sensitivity_rkl']:.1e} (JS-SFT by ≥ "
        f"{metrics['reference_sensitivity_js_min']:.2g}); drift KL(π‖π_ref) after {steps} steps "
        f"(KL(π_E‖π_ref) = {first['kl_expert_ref']:.3f} on instance 0): "
        f"lowest/highest LR ≤ {metrics['lr_drift_ratio_max']:.3f}, JS-SFT/SFT ≤ "
        f"{metrics['fdiv_drift_ratio_by_divergence']['js']:.3f}, FKL-SFT/SFT ≤ "
        f"{metrics['fdiv_drift_ratio_by_divergence']['kl']:.3f} (worst of {ctx.size.n_instances} "
        f"instances); instance 0: SFT drift {first['sft_drift'][top]:.3f} with fit "
        f"KL(π_E‖π) {first['sft_fit'][top]:.3f}, JS-SFT {first['fsft_drift']['js']:.3f} / "
        f"{first['fsft_fit']['js']:.3f}, FKL-SFT {first['fsft_drift']['kl']:.3f} / "
        f"{first['fsft_fit']['kl']:.3f} (verdict: {v.value})"
    )
    return Outcome(metrics=metrics, summary=summary)


def _plots(ctx: ReproContext, run: Mapping[str, Any]) -> None:
    fig, ax = ctx.subplots(figsize=(6.6, 4.3))
    for label, curve in run["curves"].items():
        ax.plot(range(1, len(curve) + 1), curve, label=label, ls="-" if "sft" in label else "--")
    ax.axhline(run["kl_expert_ref"], color="gray", ls=":", lw=1, label="KL(π_E ‖ π_ref)")
    ax.set_xlabel("gradient step")
    ax.set_ylabel("exact KL(π ‖ π_ref)  (drift)")
    ax.set_title("SFT drift by learning rate and by SFT divergence")
    ax.legend(fontsize=7)
    ctx.savefig(fig, "drift")

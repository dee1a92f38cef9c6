r"""ARDiT / Diff-Instruct: Integral-KL distillation trains a generator whose plain KL is infinite.

ARDiT (Liu, Wang, Inoue, Bai & Li 2024) distils its autoregressive diffusion transformer into
a one-step sampler per autoregressive step with the Integral KL of Diff-Instruct,
:math:`D_{\mathrm{IKL}}(q_0\|p_0) = \int w(t)\,\mathrm{KL}(q_t\|p_t)\,dt` over the marginals of
a forward diffusion (:func:`divergent.distributions.diffusion.integral_kl`,
:func:`divergent.objectives.integral_kl.integral_kl_loss`). The property it relies on
(Diff-Instruct's): the IKL is finite and gives a usable gradient even where the generator's
distribution and the target have different supports, where KL(q_0‖p_0) = ∞ and plain KL
cannot train.

Set-up (the notes' smallest experiment; the paper's speech data, transformer and
hyperparameters are not available here and are not imitated): target
:math:`p_0 = \mathcal N(\mu, \Sigma)` in R², μ = (1, −0.5), Σ = [[1, 0.6], [0.6, 0.8]];
affine generator :math:`x_0 = A z + b`, z ~ N(0, I₂), started per seed from a random
**rank-1** A (q_0 lives on a line: KL(q_0‖p_0) = ∞) and a random b. VP path (β ∈ [0.1, 20]),
w ≡ 1, times t ~ U[10⁻³, 1] (the usual truncation; the closed-form IKL over [0, 1] is
reported at the start too, and is finite). Both scores are exact (Gaussian marginals,
:func:`~divergent.distributions.diffusion.diffused_gaussian_score`) instead of a teacher
network and a DSM-trained fake score. Adam (lr 0.03, cosine decay), batch ``batch``,
``n_steps`` steps, ``n_seeds`` seeds. The closed-form IKL on [10⁻³, 1] and KL(q_0‖p_0) are
tracked at 21 checkpoints. (Exact gradient *descent* on A from a rank-1 A never leaves rank 1
— the gradient of any function of AAᵀ is G·A — so the escape from the line comes from the
Monte-Carlo gradient's noise and Adam's per-coordinate scaling, as it would in practice.)

AR flavour (ARDiT's per-step use): 2-token sequences, target x₁ ~ N(0, 1),
x₂ | x₁ ~ N(0.8 x₁ + 0.3, 0.5²); a one-step generator per step, x₁ = b₁ + a₁ z₁ and
x₂ = c x₁ + b₂ + a₂ z₂, started at a₁ = a₂ = 0 (point masses: the joint KL is ∞); step 1
distilled with the IKL of x₁'s marginal, step 2 with the IKL of x₂'s conditional given the
generator's own (detached) x₁, teacher conditional scores exact. Measured: the joint KL of the
2-token sequence to the target after training.

Verdict (:func:`verdict`, thresholds fixed before the first run except the first part's):

* set-up (asserted in the run, not a part that can fail: A = u vᵀ is rank 1 by construction
  and KL(q_0‖p_0) = ∞ by definition): the start is singular; if recorded metrics say otherwise
  the run does not test the claim and the verdict is ``inconclusive``;
* the IKL on [0, 1] from the singular start is finite: the Gauss–Legendre value at 48 nodes
  agrees with the one at ``FINE_NODES`` = 192 nodes to ``QUAD_REL_MAX`` = 1e-4 relative (the
  quadrature has converged; a divergent integral, e.g. a 1/t integrand, would not);
* the surrogate's Monte-Carlo gradient at the singular start agrees with autograd of the
  closed-form IKL: cosine ≥ ``GRAD_COS_MIN`` = 0.95;
* convergence: every seed's final KL(q_0‖p_0) ≤ ``KL_MAX`` = 0.02 and Gaussian W2 ≤
  ``W2_MAX`` = 0.15, and the AR generator's joint KL ≤ ``KL_MAX``; any seed above
  ``KL_FAIL`` = 0.2 (or W2 above 0.5) is ``not held``; in between (still converging) is
  ``inconclusive``;
* IKL decreasing in expectation: the seed-mean closed-form IKL never rises between checkpoints
  by more than ``RISE_MAX`` = 1 % of its start, and ends below ``DROP_MAX`` = 1 % of it.

A NaN in any number a part reads makes that part ``inconclusive`` (unless another number fails
it), never ``held``.

Criterion restated after the first full run (review): the first version's part "singular start,
finite IKL" could not fail (rank 1 and KL = ∞ by construction, and fixed quadrature nodes
inside (0, 1) always give a finite number); it is now the quadrature-convergence check above,
with the singular start a set-up assertion. In the first full run (10 seeds) the 48- vs
192-node relative differences were 2e-8 to 2e-7.

The training loops are :func:`divergent.train.integral_kl.train_affine_generator_ikl` and
:func:`~divergent.train.integral_kl.train_ar_generators_ikl`; W2 is
:func:`divergent.distributions.gaussian.gaussian_w2`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor

from divergent.distributions.diffusion import integral_kl
from divergent.distributions.gaussian import gaussian_w2
from divergent.papers._catalog import reproduction
from divergent.repro import Outcome, ReproContext, Verdict
from divergent.train.integral_kl import (
    affine_ikl_surrogate,
    ar_joint_gaussian,
    gaussian_kl_or_inf,
    train_affine_generator_ikl,
    train_ar_generators_ikl,
)

F64 = torch.float64
MU_P = (1.0, -0.5)
COV_P = ((1.0, 0.6), (0.6, 0.8))
T_MIN = 1e-3
LR = 0.03
N_CHECKPOINTS = 20
GRAD_BATCHES, GRAD_BATCH = 8, 4096
# the AR target: x1 ~ N(0, 1), x2 | x1 ~ N(AR_SLOPE x1 + AR_SHIFT, AR_SCALE²)
AR_SLOPE, AR_SHIFT, AR_SCALE = 0.8, 0.3, 0.5

# thresholds (fixed before the first run, except QUAD_REL_MAX: see the module docstring)
GRAD_COS_MIN = 0.95
KL_MAX = 0.02
KL_FAIL = 0.2
W2_MAX = 0.15
W2_FAIL = 0.5
RISE_MAX = 0.01
DROP_MAX = 0.01
# restated after the first full run: the IKL on [0, 1] at 48 Gauss-Legendre nodes agrees with
# FINE_NODES nodes to this relative difference (the integral converged, so it is finite)
QUAD_REL_MAX = 1e-4
FINE_NODES = 192


def _target() -> tuple[Tensor, Tensor]:
    return torch.tensor(MU_P, dtype=F64), torch.tensor(COV_P, dtype=F64)


def _ikl(
    mean: Tensor, cov: Tensor, mean_p: Tensor, cov_p: Tensor, t_min: float, n_nodes: int = 48
) -> float:
    return float(integral_kl(mean, cov, mean_p, cov_p, t_min=t_min, n_nodes=n_nodes))


def _gradient_check(a0: Tensor, b0: Tensor, g: torch.Generator) -> dict[str, float]:
    """Monte-Carlo surrogate gradient vs autograd of the closed-form IKL at the start."""
    mean_p, cov_p = _target()
    a, b = a0.clone().requires_grad_(True), b0.clone().requires_grad_(True)
    integral_kl(b, a @ a.T, mean_p, cov_p, t_min=T_MIN).backward()
    exact = torch.cat([a.grad.reshape(-1), b.grad])
    grads = []
    for _ in range(GRAD_BATCHES):
        a, b = a0.clone().requires_grad_(True), b0.clone().requires_grad_(True)
        affine_ikl_surrogate(a, b, mean_p, cov_p, GRAD_BATCH, g, t_min=T_MIN).backward()
        grads.append(torch.cat([a.grad.reshape(-1), b.grad]))
    mc = torch.stack(grads).mean(0)
    return {
        "cosine": float(torch.nn.functional.cosine_similarity(mc, exact, dim=0)),
        "relative_error": float((mc - exact).norm() / exact.norm()),
    }


def _train_gaussian(ctx: ReproContext, seed: int) -> dict[str, Any]:
    g = ctx.generator(1000 + seed)
    mean_p, cov_p = _target()
    u = torch.randn(2, 1, generator=g, dtype=F64)
    v = torch.randn(1, 2, generator=g, dtype=F64)
    a0 = u @ v / (u.norm() * v.norm()) * 1.5  # rank 1, unit-free scale: a line
    b0 = torch.randn(2, generator=g, dtype=F64)
    cov0 = a0 @ a0.T
    start = {
        "rank": int(torch.linalg.matrix_rank(cov0)),
        "kl": gaussian_kl_or_inf(b0, cov0, mean_p, cov_p),
        "ikl_from_0": _ikl(b0, cov0, mean_p, cov_p, 0.0),
        "ikl_from_0_fine": _ikl(b0, cov0, mean_p, cov_p, 0.0, n_nodes=FINE_NODES),
    }
    # set-up assertion (true by construction, not part of the verdict): the start is singular
    if start["rank"] != 1 or not math.isinf(start["kl"]):
        raise RuntimeError(f"ardit: seed {seed}'s start is not singular: {start}")
    grad = _gradient_check(a0, b0, g) if seed == 0 else None
    fit = train_affine_generator_ikl(
        a0,
        b0,
        mean_p,
        cov_p,
        n_steps=ctx.size.n_steps,
        batch=ctx.size.batch,
        lr=LR,
        generator=g,
        t_min=T_MIN,
        n_checkpoints=N_CHECKPOINTS,
    )
    cov = fit.a @ fit.a.T
    final = {
        "kl": gaussian_kl_or_inf(fit.b, cov, mean_p, cov_p),
        "w2": float(gaussian_w2(fit.b, cov, mean_p, cov_p)),
        "ikl": _ikl(fit.b, cov, mean_p, cov_p, T_MIN),
        "mean": fit.b.tolist(),
        "cov": cov.tolist(),
    }
    return {
        "seed": seed,
        "start": {**start, "ikl": fit.ikl[0], "a": a0.tolist(), "b": b0.tolist()},
        "final": final,
        "gradient_check": grad,
        "checkpoints": fit.checkpoints,
        "ikl": fit.ikl,
        "kl": fit.kl,
    }


def _ar_target() -> tuple[Tensor, Tensor]:
    one = torch.tensor(1.0, dtype=F64)
    zero = torch.tensor(0.0, dtype=F64)
    target = {
        "b1": zero,
        "a1": one,
        "c": torch.tensor(AR_SLOPE, dtype=F64),
        "b2": torch.tensor(AR_SHIFT, dtype=F64),
        "a2": torch.tensor(AR_SCALE, dtype=F64),
    }
    return ar_joint_gaussian(target)


def _train_ar(ctx: ReproContext, seed: int) -> dict[str, Any]:
    """Per-step one-step conditional generators distilled by the IKL of each step."""
    g = ctx.generator(5000 + seed)
    init = torch.randn(3, generator=g, dtype=F64)
    params = {"b1": init[0], "a1": 0.0, "c": init[1], "b2": init[2], "a2": 0.0}
    mean_t, cov_t = _ar_target()
    m0, c0 = ar_joint_gaussian({k: torch.as_tensor(x, dtype=F64) for k, x in params.items()})
    kl_start = gaussian_kl_or_inf(m0, c0, mean_t, cov_t)
    fit = train_ar_generators_ikl(
        params,
        slope=AR_SLOPE,
        shift=AR_SHIFT,
        scale=AR_SCALE,
        n_steps=ctx.size.n_steps,
        batch=ctx.size.batch,
        lr=LR,
        generator=g,
        t_min=T_MIN,
    )
    return {
        "seed": seed,
        "kl_start": kl_start,
        "kl_final": gaussian_kl_or_inf(fit.mean, fit.cov, mean_t, cov_t),
        "params": fit.params,
    }


def _nan(values: list[float]) -> bool:
    return any(math.isnan(v) for v in values)


def _rel_diff(coarse: float, fine: float) -> float:
    """|coarse − fine| / |fine|: NaN if either is NaN, ∞ if either is infinite (diverged)."""
    if math.isnan(coarse) or math.isnan(fine):
        return math.nan
    if math.isinf(coarse) or math.isinf(fine):
        return math.inf
    if fine == 0:
        return 0.0 if coarse == 0 else math.inf
    return abs(coarse - fine) / abs(fine)


def _part(failed: bool, nan: bool, passed: bool) -> bool | None:
    """False on a measured failure, else None if a value is NaN, else ``passed``."""
    if failed:
        return False
    if nan:
        return None
    return passed


def checks(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """Each part of the claim from the runs (pure; JSON metrics too). A part is True / False,
    or None (inconclusive) when one of its numbers is NaN and no other one fails it."""
    runs = metrics["runs"]
    starts = [r["start"] for r in runs]
    singular = all(int(s["rank"]) < 2 and math.isinf(float(s["kl"])) for s in starts)
    coarse = [float(s["ikl_from_0"]) for s in starts]
    fine = [float(s.get("ikl_from_0_fine", math.nan)) for s in starts]
    quad_err = [_rel_diff(c, f) for c, f in zip(coarse, fine)]
    quad_bad = any(e > QUAD_REL_MAX for e in quad_err if not math.isnan(e))
    cosine = float(metrics["gradient_check"]["cosine"])
    kls = [float(r["final"]["kl"]) for r in runs] + [float(r["kl_final"]) for r in metrics["ar"]]
    w2s = [float(r["final"]["w2"]) for r in runs]
    finite_kls = [k for k in kls if not math.isnan(k)]
    finite_w2s = [w for w in w2s if not math.isnan(w)]
    worst_kl = max(finite_kls) if finite_kls else math.nan
    worst_w2 = max(finite_w2s) if finite_w2s else math.nan
    converged: bool | None
    if any(k > KL_FAIL for k in finite_kls) or any(w > W2_FAIL for w in finite_w2s):
        converged = False
    elif _nan(kls + w2s):
        converged = None
    elif all(k <= KL_MAX for k in kls) and all(w <= W2_MAX for w in w2s):
        converged = True
    else:
        converged = None  # between the pass and fail levels: still converging
    curve = np.mean([[float(x) for x in r["ikl"]] for r in runs], axis=0)
    rises = np.diff(curve) / curve[0]
    max_rise = float(rises.max()) if rises.size else 0.0
    drop = float(curve[-1] / curve[0])
    curve_nan = bool(np.isnan(curve).any())
    return {
        "singular_start": singular,
        "ikl_quadrature_converged": _part(quad_bad, _nan(quad_err), True),
        "ikl_quadrature_worst_rel_diff": max(quad_err) if not _nan(quad_err) else math.nan,
        "gradient_agrees": None if math.isnan(cosine) else cosine >= GRAD_COS_MIN,
        "gradient_cosine": cosine,
        "converged": converged,
        "worst_final_kl": worst_kl,
        "worst_final_w2": worst_w2,
        "ikl_monotone": None if curve_nan else (max_rise <= RISE_MAX and drop <= DROP_MAX),
        "ikl_max_rise": max_rise,
        "ikl_final_over_start": drop,
    }


def _from_part(part: bool | None) -> Verdict:
    return Verdict.INCONCLUSIVE if part is None else Verdict.from_bool(part)


def verdict(metrics: Mapping[str, Any]) -> Verdict:
    """held / not held / inconclusive (convergence between the pass and fail levels, a NaN
    anywhere, or a start that is not singular: then the run does not test the claim)."""
    c = checks(metrics)
    parts = [
        Verdict.HELD if c["singular_start"] else Verdict.INCONCLUSIVE,
        _from_part(c["ikl_quadrature_converged"]),
        _from_part(c["gradient_agrees"]),
        _from_part(c["converged"]),
        _from_part(c["ikl_monotone"]),
    ]
    return Verdict.combine(parts)


def _plot(ctx: ReproContext, runs: list[dict[str, Any]]) -> None:
    fig, axes = ctx.subplots(1, 2, figsize=(11, 4.2))
    ax = axes[0]
    floor = 1e-16  # values at the optimum are 0 up to rounding: shown at the floor

    def shown(values: list[float]) -> np.ndarray:
        v = np.array([x if math.isfinite(x) else np.nan for x in values])
        return np.maximum(v, floor)

    for r in runs:
        ax.plot(r["checkpoints"], shown(r["ikl"]), color="tab:blue", alpha=0.25, lw=0.8)
        ax.plot(r["checkpoints"], shown(r["kl"]), color="tab:red", alpha=0.25, lw=0.8)
    steps = runs[0]["checkpoints"]
    mean_curve = shown(list(np.mean([r["ikl"] for r in runs], axis=0)))
    ax.plot(steps, mean_curve, color="tab:blue", lw=2, label="IKL (seed mean)")
    ax.plot([], [], color="tab:red", label="KL(q₀‖p₀) (∞ at step 0)")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_title(f"closed-form IKL on [{T_MIN:g}, 1] and KL, {len(runs)} seeds")
    ax.legend(fontsize=8)
    ax = axes[1]
    mean_p, cov_p = _target()
    g = torch.Generator().manual_seed(0)
    z = torch.randn(300, 2, generator=g, dtype=F64)
    r = runs[0]
    a0, b0 = torch.tensor(r["start"]["a"], dtype=F64), torch.tensor(r["start"]["b"], dtype=F64)
    start = b0 + z @ a0.T
    fin = (
        torch.tensor(r["final"]["mean"], dtype=F64)
        + z @ torch.linalg.cholesky(torch.tensor(r["final"]["cov"], dtype=F64)).T
    )
    ring = torch.stack(
        [
            torch.cos(torch.linspace(0, 2 * math.pi, 100, dtype=F64)),
            torch.sin(torch.linspace(0, 2 * math.pi, 100, dtype=F64)),
        ],
        1,
    )
    for k in (1.0, 2.0):
        e = mean_p + k * ring @ torch.linalg.cholesky(cov_p).T
        ax.plot(
            e[:, 0], e[:, 1], color="black", lw=1, label="target p₀ (1σ, 2σ)" if k == 1 else None
        )
    ax.scatter(start[:, 0], start[:, 1], s=3, color="tab:red", label="generator at start (a line)")
    ax.scatter(fin[:, 0], fin[:, 1], s=3, alpha=0.4, color="tab:blue", label="generator trained")
    ax.set_aspect("equal")
    ax.legend(fontsize=8, markerscale=3)
    ax.set_title("seed 0")
    ctx.savefig(fig, "ikl_training")


@reproduction("ardit", verdict=verdict)
def experiment(ctx: ReproContext) -> Outcome:
    runs, ar = [], []
    for seed in range(ctx.size.n_seeds):
        ctx.progress(f"seed {seed + 1}/{ctx.size.n_seeds}", seed / ctx.size.n_seeds)
        runs.append(_train_gaussian(ctx, seed))
        ar.append(_train_ar(ctx, seed))
    ctx.progress("plots", 0.97)
    _plot(ctx, runs)
    metrics: dict[str, Any] = {
        "n_seeds": ctx.size.n_seeds,
        "n_steps": ctx.size.n_steps,
        "batch": ctx.size.batch,
        "t_min": T_MIN,
        "gradient_check": runs[0]["gradient_check"],
        "runs": runs,
        "ar": ar,
        "thresholds": {
            "grad_cos_min": GRAD_COS_MIN,
            "kl_max": KL_MAX,
            "kl_fail": KL_FAIL,
            "w2_max": W2_MAX,
            "w2_fail": W2_FAIL,
            "rise_max": RISE_MAX,
            "drop_max": DROP_MAX,
            "quad_rel_max": QUAD_REL_MAX,
            "fine_nodes": FINE_NODES,
        },
    }
    c = checks(metrics)
    metrics["checks"] = c
    ikl0 = np.mean([r["start"]["ikl_from_0"] for r in runs])
    summary = (
        f"rank-1 start: KL(q₀‖p₀) = ∞, IKL on [0, 1] = {ikl0:.2f} (seed mean); MC gradient vs "
        f"closed form cosine {c['gradient_cosine']:.3f}; after {ctx.size.n_steps} steps worst "
        f"KL(q₀‖p₀) {c['worst_final_kl']:.4f} (incl. the AR 2-token joint), W2 "
        f"{c['worst_final_w2']:.3f}; seed-mean IKL falls to {c['ikl_final_over_start']:.1e} "
        f"of its start, max rise {c['ikl_max_rise']:.1e} ({ctx.size.n_seeds} seeds). "
        f"Criterion restated after the first full run: the IKL's finiteness is now measured "
        f"(48 vs {FINE_NODES} quadrature nodes, worst relative difference "
        f"{c['ikl_quadrature_worst_rel_diff']:.1e} ≤ {QUAD_REL_MAX:g}); the singular start is a "
        f"set-up assertion"
    )
    return Outcome(metrics=metrics, summary=summary)

r"""MLE convergence to the information projection and the p-n criterion (Sheena 2021).

Set-up (the notes' smallest experiment): a polynomial exponential family of degree p on a
bounded grid, :math:`p_\theta(x_k) \propto \exp(\sum_{j=1}^p \theta_j P_j(x_k))` on K = 201
points of [−1, 1] (Legendre polynomials :math:`P_j`, the same family as monomials, better
conditioned), so ψ is a finite log-sum-exp and every KL is exact. The truth g is a discretised
two-bump Gaussian mixture, outside the model for every p. The information projection θ* is found
by moment matching on the exact g; for each (p, n) many data sets of size n are drawn, the MLE
θ̂ (moment matching on the sample, batched damped Newton) is computed, and
:math:`\mathrm{KL}(p_{\theta^*}\|p_{\hat\theta})` is evaluated exactly with
:func:`divergent.kl` (log-probabilities). The simulated risk is compared with the expansion
:math:`a/n + b/n^2` (:func:`divergent.analysis.mle_risk.mle_kl_risk_expansion`,
:math:`a = \tfrac12\operatorname{tr}(G^{-1}\Sigma_g)`; the n⁻² coefficient b is derived in that
module, since the notes flag the paper's as unverified) and with the correctly-specified
:math:`p/(2n)`.

p-n criterion: the paper's data sets (wine quality, abalone) are not available offline, so the
criterion is applied to this setting. Requirement: the Bayes error of telling the MLE's
distribution from the projection (equal priors) is at least ε₀ = 0.48; sufficient condition via
Pinsker and Jensen (:func:`~divergent.analysis.mle_risk.pn_criterion`): :math:`a/n + b/n^2 \le
2(1-2\varepsilon_0)^2`. The notes do not give the paper's exact threshold; this inequality is
ours. Each verdict is checked against the simulated mean Bayes error
:math:`\tfrac12(1 - \mathrm{TV})` (:func:`divergent.tv`).

Claim checked (thresholds fixed from the claim before running):

* two-term expansion matches the simulation at the largest n: within 3 standard errors, every p;
* the misspecified leading term matters: at the largest n the simulation is more than 3 SE away
  from p/(2n) for every p where a differs from p/2 by ≥ 20 %;
* the n⁻² term helps: where it is resolvable (|b|/n² > 2 SE, n ≥ 100) the two-term expansion is
  closer to the simulation than a/n in ≥ 75 % of the cells (reported as untested, and not
  counted against the claim, when no cell is resolvable, as in the quick mode's small
  simulation);
* the criterion is sound: every accepted (p, n) has simulated mean Bayes error ≥ ε₀ − 2 SE.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from numpy.polynomial import legendre

from divergent.analysis.mle_risk import (
    discrete_feature_cumulants,
    mle_kl_risk_expansion,
    pn_criterion,
)
from divergent.functional import kl, tv
from divergent.repro import Outcome, ReproContext, reproduction
from divergent.repro.threads import single_thread

GRID_POINTS = 201
BAYES_ERROR = 0.48  # ε₀: required Bayes error (0.5 = indistinguishable)
BAYES_ERROR_ALT = 0.45  # reported too
SE_MATCH = 3.0
MISSPEC_REL = 0.2
RESOLVABLE_SE = 2.0
HELPS_FRACTION = 0.75
SOUND_SE = 2.0


def _grid_and_target() -> tuple[np.ndarray, np.ndarray]:
    x = np.linspace(-1.0, 1.0, GRID_POINTS)
    dens = 0.6 * np.exp(-0.5 * ((x + 0.45) / 0.15) ** 2) / 0.15 + 0.4 * np.exp(
        -0.5 * ((x - 0.5) / 0.1) ** 2) / 0.1
    return x, dens / dens.sum()


def _features(x: np.ndarray, p: int) -> torch.Tensor:
    cols = [legendre.legval(x, np.eye(p + 1)[j]) for j in range(1, p + 1)]
    return torch.from_numpy(np.stack(cols, axis=1))


def _moment_match(feats: torch.Tensor, target_mean: torch.Tensor, max_iter: int = 200
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Batched θ with E_θ[t] = target_mean (rows): damped Newton on ψ(θ) − θ·t̄.

    Returns θ (R, p) and a bool mask of the rows that converged (the MLE exists)."""
    r, p = target_mean.shape
    theta = torch.zeros(r, p, dtype=torch.float64)

    def objective(th: torch.Tensor) -> torch.Tensor:
        return torch.logsumexp(th @ feats.T, dim=1) - (th * target_mean).sum(1)

    f = objective(theta)
    done = torch.zeros(r, dtype=torch.bool)
    for _ in range(max_iter):
        lp = torch.log_softmax(theta @ feats.T, dim=1)
        pr = lp.exp()
        mean = pr @ feats
        grad = mean - target_mean
        done = grad.abs().amax(1) < 1e-10
        if bool(done.all()):
            break
        u = feats[None, :, :] - mean[:, None, :]
        hess = torch.einsum("rk,rka,rkb->rab", pr, u, u)
        hess = hess + 1e-12 * torch.eye(p, dtype=torch.float64)
        step = -torch.linalg.solve(hess, grad)
        t = torch.ones(r, dtype=torch.float64)
        for _ in range(30):  # backtracking: accept when the objective does not increase
            cand = theta + t[:, None] * step
            fc = objective(cand)
            ok = fc <= f + 1e-14 * f.abs()
            if bool(ok.all()):
                break
            t = torch.where(ok, t, 0.5 * t)
        theta = torch.where(done[:, None], theta, cand)
        f = torch.where(done, f, fc)
    exists = done & torch.isfinite(theta).all(1) & (theta.abs().amax(1) < 1e6)
    return theta, exists


@reproduction(
    "pn",
    title="MLE risk to the information projection vs its expansion; the p-n criterion",
    paper=(
        "Sheena 2021, MLE convergence speed to information projection of exponential family: "
        "criterion for model dimension and sample size, arXiv 2105.08947"
    ),
    claim=(
        "For a misspecified exponential family the expected KL between the information "
        "projection and the plug-in MLE is tr(G⁻¹Σ)/(2n) + O(n⁻²), not dim/(2n), and the "
        "p-n criterion built on the expansion accepts only (p, n) whose MLE meets the "
        "Bayes-error requirement."
    ),
    tags=("exponential-family", "asymptotics"),
)
def run(ctx: ReproContext) -> Outcome:
    with single_thread():
        return _run(ctx)


def _run(ctx: ReproContext) -> Outcome:
    if ctx.quick:
        dims, ns, reps = [1, 2, 4, 6], [50, 200, 800, 3200], 400
    else:
        dims, ns, reps = list(range(1, 9)), [25, 50, 100, 200, 400, 800, 1600, 3200], 2000
    x, g = _grid_and_target()
    g_t = torch.from_numpy(g)
    cells: list[dict] = []
    expansions: dict[int, dict] = {}
    for pi, p in enumerate(dims):
        ctx.progress(f"p = {p}", pi / len(dims))
        feats = _features(x, p)
        mean_g, cov_g, k3_g = discrete_feature_cumulants(g_t, feats)
        theta_star, ok = _moment_match(feats, mean_g[None, :])
        if not bool(ok.all()):
            raise RuntimeError(f"no information projection found for p = {p}")
        theta_star = theta_star[0]
        lp_star = torch.log_softmax(feats @ theta_star, dim=0)
        exp = mle_kl_risk_expansion(
            lambda th, feats=feats: torch.logsumexp(feats @ th, dim=0), theta_star, cov_g, k3_g
        )
        expansions[p] = {
            "a": exp.first, "b": exp.second, "p_over_2": p / 2,
            "kl_g_to_projection": float(kl(g_t.log(), lp_star, inputs="log_probs")),
        }
        rng = ctx.numpy_rng(17 * p)
        for n in ns:
            counts = torch.from_numpy(rng.multinomial(n, g, size=reps).astype(np.float64))
            tbar = counts @ feats / n
            theta_hat, exists = _moment_match(feats, tbar)
            lp_hat = torch.log_softmax(theta_hat[exists] @ feats.T, dim=1)
            lp_s = lp_star.expand_as(lp_hat)
            kls = kl(lp_s, lp_hat, inputs="log_probs", reduction="none").numpy()
            ber = (0.5 * (1.0 - tv(lp_s, lp_hat, inputs="log_probs", reduction="none"))).numpy()
            m_ok = int(exists.sum())
            risk = float(kls.mean())
            se = float(kls.std(ddof=1) / math.sqrt(m_ok))
            verdict = pn_criterion(exp, n, BAYES_ERROR)
            verdict_alt = pn_criterion(exp, n, BAYES_ERROR_ALT)
            cells.append({
                "p": p, "n": n, "reps": reps, "mle_failures": reps - m_ok,
                "risk": risk, "risk_se": se,
                "one_term": exp.risk(n, 1), "two_term": exp.risk(n, 2),
                "well_specified": p / (2 * n),
                "bayes_error": float(ber.mean()),
                "bayes_error_se": float(ber.std(ddof=1) / math.sqrt(m_ok)),
                "accept": verdict.accept,
                "accept_alt": verdict_alt.accept,
            })

    n_max = max(ns)
    last = [c for c in cells if c["n"] == n_max]
    match_large_n = all(abs(c["risk"] - c["two_term"]) <= SE_MATCH * c["risk_se"] for c in last)
    misspec_cells = [
        c for c in last
        if abs(expansions[c["p"]]["a"] - c["p"] / 2) >= MISSPEC_REL * c["p"] / 2
    ]
    misspec_detected = bool(misspec_cells) and all(
        abs(c["risk"] - c["well_specified"]) > SE_MATCH * c["risk_se"] for c in misspec_cells
    )
    resolvable = [
        c for c in cells
        if c["n"] >= 100
        and abs(expansions[c["p"]]["b"]) / c["n"] ** 2 > RESOLVABLE_SE * c["risk_se"]
    ]
    helps = [abs(c["risk"] - c["two_term"]) <= abs(c["risk"] - c["one_term"]) for c in resolvable]
    helps_fraction = float(np.mean(helps)) if helps else math.nan
    # with no resolvable cell (small simulations) the n⁻² check is untested, not failed
    second_order_tested = bool(helps)
    second_order_helps = (not second_order_tested) or helps_fraction >= HELPS_FRACTION
    unsound = [
        {"p": c["p"], "n": c["n"], "bayes_error": c["bayes_error"]}
        for c in cells
        if c["accept"] and c["bayes_error"] < BAYES_ERROR - SOUND_SE * c["bayes_error_se"]
    ]
    sound = not unsound
    held = bool(match_large_n and misspec_detected and second_order_helps and sound)

    verdicts = []
    for n in ns:
        row = [c for c in cells if c["n"] == n]
        acc = [c["p"] for c in row if c["accept"]]
        ok_sim = [c["p"] for c in row if c["bayes_error"] >= BAYES_ERROR]
        verdicts.append({
            "n": n,
            "largest_p_accepted": max(acc) if acc else 0,
            "largest_p_meeting_requirement_in_simulation": max(ok_sim) if ok_sim else 0,
            "accepted": acc,
            "meeting_requirement": ok_sim,
        })

    ctx.progress("plots", 0.97)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11.5, 4.4))
    ax = axes[0]
    colors = plt.cm.viridis(np.linspace(0, 0.9, len(dims)))
    for c, p in zip(colors, dims):
        rows = [r for r in cells if r["p"] == p]
        nn = np.array([r["n"] for r in rows], dtype=float)
        ax.errorbar(nn, [r["n"] * r["risk"] for r in rows],
                    yerr=[2 * r["n"] * r["risk_se"] for r in rows], fmt="o", color=c, ms=3,
                    label=f"p={p}")
        fine = np.geomspace(nn.min(), nn.max(), 100)
        e = expansions[p]
        ax.plot(fine, e["a"] + e["b"] / fine, "-", color=c, lw=1)
        ax.axhline(e["a"], color=c, ls=":", lw=0.8)
        ax.plot([nn.max() * 1.25], [p / 2], "x", color=c)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("n")
    ax.set_ylabel("n · E KL(p_θ* ‖ p_θ̂)")
    ax.set_title("simulated (●), a + b/n (—), a (⋯), p/2 (×)")
    ax.legend(fontsize=7, ncol=2)
    ax = axes[1]
    acc = np.zeros((len(dims), len(ns)))
    for c in cells:
        i, j = dims.index(c["p"]), ns.index(c["n"])
        acc[i, j] = c["bayes_error"]
    im = ax.imshow(acc, origin="lower", aspect="auto", cmap="magma", vmin=0.4, vmax=0.5)
    for c in cells:
        i, j = dims.index(c["p"]), ns.index(c["n"])
        ax.text(j, i, "✓" if c["accept"] else "·", ha="center", va="center",
                color="cyan" if c["accept"] else "white", fontsize=9)
    ax.set_xticks(range(len(ns)), [str(n) for n in ns])
    ax.set_yticks(range(len(dims)), [str(p) for p in dims])
    ax.set_xlabel("n")
    ax.set_ylabel("degree p")
    ax.set_title(f"simulated Bayes error; ✓ = p-n criterion accepts (ε₀ = {BAYES_ERROR})")
    fig.colorbar(im, ax=ax)
    ctx.savefig(fig, "risk_and_criterion")

    metrics = {
        "dims": dims, "ns": ns, "reps": reps,
        "expansions": expansions,
        "cells": cells,
        "verdicts": verdicts,
        "two_term_matches_at_largest_n": match_large_n,
        "misspecification_detected": misspec_detected,
        "misspecified_dims": [c["p"] for c in misspec_cells],
        "second_order_resolvable_cells": len(resolvable),
        "second_order_helps_fraction": helps_fraction,
        "second_order_tested": second_order_tested,
        "second_order_helps": second_order_helps,
        "criterion_sound": sound,
        "unsound_cells": unsound,
        "thresholds": {
            "bayes_error": BAYES_ERROR, "se_match": SE_MATCH, "misspec_rel": MISSPEC_REL,
            "resolvable_se": RESOLVABLE_SE, "helps_fraction": HELPS_FRACTION,
            "sound_se": SOUND_SE,
        },
    }
    worst = max(abs(c["risk"] - c["two_term"]) / c["risk_se"] for c in last)
    summary = (
        f"n={n_max}: |sim − (a/n + b/n²)| ≤ {worst:.1f} SE over p ∈ {dims}; p/(2n) rejected for "
        f"misspecified p {[c['p'] for c in misspec_cells]}: {misspec_detected}; n⁻² term "
        + (f"closer in {helps_fraction:.0%} of {len(resolvable)} resolvable cells"
           if second_order_tested else "untested (no resolvable cell)")
        + "; criterion "
        f"(ε₀={BAYES_ERROR}) accepted {sum(c['accept'] for c in cells)}/{len(cells)} cells, "
        f"unsound in {len(unsound)}"
        + ("" if held else
           f" — claim NOT held (match {match_large_n}, misspec {misspec_detected}, "
           f"n⁻² helps {second_order_helps}, sound {sound})")
    )
    return Outcome(held=held, metrics=metrics, summary=summary)

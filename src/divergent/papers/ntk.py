r"""Neural tangent kernel: concentration, lazy training and kernel regression (Jacot et al. 2018).

Claim checked: as the width grows, the empirical NTK of a network in the NTK parameterisation
concentrates on its deterministic infinite-width limit and moves less during training, and the
trained network follows the linearised (kernel-regression) prediction.

Set-up (the notes' §14(b), scaled down): inputs on the unit circle :math:`x(\gamma) = (\cos
\gamma, \sin\gamma)`; a ReLU :class:`~divergent.analysis.ntk.NTKMLP` with L = 4 layers
(``[2, n, n, n, 1]``, all parameters N(0, 1), β = 0.1 as in the paper's figures) at several
widths n, several seeds per width. Each network is trained by full-batch gradient descent
(:func:`~divergent.train.ntk_regression.train_mse_gradient_descent`, η = 3, 50 steps, the
loss :math:`\frac{1}{2N}\sum\|f - y\|^2`) on N = 4 fixed points of the circle with fixed
targets. On the training points plus a grid of the circle (E) we measure, per network:

* ``deviation`` — :math:`\|\Theta_0 - \Theta_\infty\|_F/\|\Theta_\infty\|_F` on E × E, the
  empirical kernel at initialisation (:meth:`NTKMLP.ntk`, exact, checked against
  :func:`~divergent.analysis.ntk.empirical_ntk` in the tests) against the limit
  (:func:`~divergent.analysis.ntk.relu_ntk`);
* ``movement`` — :math:`\|\Theta_T - \Theta_0\|_F/\|\Theta_0\|_F`, the kernel's change during
  training;
* ``linearization_error`` — :math:`\|f_T - f^{lin}_T\|/\|f^{lin}_T - f_0\|` on the grid, with
  :math:`f^{lin}_T` the linearised network's output after the same T gradient-descent steps
  (:func:`~divergent.analysis.ntk.linearized_prediction` with the network's own Θ₀ and f₀,
  ``discrete=True``, so the discretisation is not part of the error);
* ``limit_error`` (reported, not in the verdict) — the same against the prediction with the
  limiting kernel :math:`\Theta_\infty` instead of Θ₀ (still the network's own f₀).

Verdict (:func:`verdict`, pure; thresholds fixed before the first run). Each slope is the
least-squares slope of log(metric) against log(width) over every (width, seed) value, with its
standard error; a part is ``held`` when the slope lies in its band (and its SE ≤ 0.15),
``not held`` when the slope's ±2 SE interval lies outside the band, ``inconclusive`` otherwise.

* concentration: the deviation's slope in [−0.7, −0.3] (the CLT rate n^{−1/2});
* lazy training: the movement's slope in [−1.2, −0.3] (Lee et al. 2019 bound the change by
  O(n^{−1/2}); Dyer & Gur-Ari 2020 argue its rate is O(1/n); either is accepted, a decay slower
  than n^{−0.3} is not);
* linearisation: the linearisation error's slope ≤ −0.3 and its mean at the largest width ≤ 0.1
  (the trained function within 10 % of the size of what was learned).

A NaN in any per-seed value of the three series makes the verdict ``inconclusive`` (whatever the
other parts say).

Scaled down relative to the paper: widths up to 2048 (the paper's figures use 500 and 10 000),
a few seeds, 50 training steps instead of a long flow, one fixed 4-point regression; the
paper's figures are qualitative, so there are no headline numbers to compare against.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from divergent.analysis.ntk import NTKMLP, linearized_prediction, relu_ntk
from divergent.papers._catalog import reproduction
from divergent.repro import Outcome, ReproContext, Verdict
from divergent.train.ntk_regression import train_mse_gradient_descent

DEPTH = 4  # L: weight matrices (three hidden layers)
BIAS = 0.1  # β
LR = 3.0  # η; η λ_max(Θ∞(X, X)) / N ≈ 0.4, far from the stability edge 2
STEPS = 50
TRAIN_ANGLES = (-2.5, -1.0, 0.5, 2.0)
TRAIN_TARGETS = (0.4, -0.6, 0.2, 0.5)

DEVIATION_BAND = (-0.7, -0.3)
MOVEMENT_BAND = (-1.2, -0.3)
LINEARIZATION_BAND = (-math.inf, -0.3)
LINEARIZATION_TOL = 0.1
SLOPE_SE_MAX = 0.15
SE_MULTIPLIER = 2.0


def _circle(angles: Sequence[float] | np.ndarray) -> torch.Tensor:
    g = torch.as_tensor(np.asarray(angles, dtype=np.float64))
    return torch.stack([g.cos(), g.sin()], dim=1)


def loglog_slope(widths: Sequence[float], values: Sequence[Sequence[float]]) -> dict[str, float]:
    """Least-squares slope of log(value) on log(width) over every (width, seed) value, with
    its standard error (pure; ``values[i]`` are the seeds' values at ``widths[i]``).

    Example:
        >>> fit = loglog_slope([10, 100], [[1.0, 1.0], [0.1, 0.1]])
        >>> round(fit["slope"], 6), round(fit["se"], 6)
        (-1.0, 0.0)
    """
    xs, ys = [], []
    for w, vs in zip(widths, values):
        for v in vs:
            xs.append(math.log(float(w)))
            ys.append(math.log(float(v)) if float(v) > 0 else -math.inf)
    x, y = np.asarray(xs), np.asarray(ys)
    if len(set(xs)) < 2 or not np.isfinite(y).all():
        return {"slope": math.nan, "se": math.nan, "n": len(xs)}
    xc = x - x.mean()
    slope = float((xc * (y - y.mean())).sum() / (xc * xc).sum())
    resid = y - y.mean() - slope * xc
    dof = len(xs) - 2
    se = float(math.sqrt((resid**2).sum() / dof / (xc * xc).sum())) if dof > 0 else math.nan
    return {"slope": slope, "se": se, "n": len(xs)}


def _band_verdict(fit: Mapping[str, Any], band: tuple[float, float]) -> Verdict:
    slope, se = float(fit["slope"]), float(fit["se"])
    lo, hi = band
    if math.isnan(slope) or math.isnan(se):
        return Verdict.INCONCLUSIVE
    if lo <= slope <= hi and se <= SLOPE_SE_MAX:
        return Verdict.HELD
    low, high = slope - SE_MULTIPLIER * se, slope + SE_MULTIPLIER * se
    if high < lo or low > hi:
        return Verdict.NOT_HELD
    return Verdict.INCONCLUSIVE


def checks(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """The three parts of the claim from the per-seed values (pure).

    Reads ``widths`` and, per width, the seeds' ``deviation``, ``movement`` and
    ``linearization_error`` (lists under ``per_width``); returns each part's fit, its verdict
    value, the linearisation error's mean at the largest width and the series with a NaN
    anywhere (``nan_in``).
    """
    widths = [int(w) for w in metrics["widths"]]
    per = metrics["per_width"]
    series = {
        name: [[float(v) for v in per[str(w)][name]] for w in widths]
        for name in ("deviation", "movement", "linearization_error")
    }
    fits = {name: loglog_slope(widths, vals) for name, vals in series.items()}
    largest = series["linearization_error"][int(np.argmax(widths))]
    lin_mean = float(np.mean(largest))
    lin_slope = _band_verdict(fits["linearization_error"], LINEARIZATION_BAND)
    if math.isnan(lin_mean):
        lin_close = Verdict.INCONCLUSIVE
    else:
        lin_close = Verdict.from_bool(lin_mean <= LINEARIZATION_TOL)
    nan_in = [
        name for name, vals in series.items() if any(math.isnan(v) for row in vals for v in row)
    ]
    return {
        "nan_in": nan_in,
        "fits": fits,
        "concentration": _band_verdict(fits["deviation"], DEVIATION_BAND).value,
        "lazy_training": _band_verdict(fits["movement"], MOVEMENT_BAND).value,
        "linearization": Verdict.combine([lin_slope, lin_close]).value,
        "linearization_error_at_largest_width": lin_mean,
    }


def verdict(metrics: Mapping[str, Any]) -> Verdict:
    """held / not held / inconclusive: the conjunction of the three parts of :func:`checks`;
    a NaN in any per-seed value → inconclusive."""
    c = checks(metrics)
    if c["nan_in"]:
        return Verdict.INCONCLUSIVE
    return Verdict.combine(
        Verdict(c[part]) for part in ("concentration", "lazy_training", "linearization")
    )


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.linalg.norm(a - b) / torch.linalg.norm(b))


@reproduction("ntk", verdict=verdict)
def experiment(ctx: ReproContext) -> Outcome:
    widths = [int(w) for w in ctx.size.widths]
    n_seeds = int(ctx.size.n_seeds)
    x_train = _circle(TRAIN_ANGLES)
    y_train = torch.tensor(TRAIN_TARGETS, dtype=torch.float64)[:, None]
    n_train = x_train.shape[0]
    gammas = np.linspace(-math.pi, math.pi, int(ctx.size.n_grid))
    at_zero = int(np.argmin(np.abs(gammas)))
    x_all = torch.cat([x_train, _circle(gammas)])
    tr, gr = slice(0, n_train), slice(n_train, None)
    k_inf = relu_ntk(x_all, depth=DEPTH, bias=BIAS)

    per_width: dict[str, dict[str, Any]] = {}
    curves: dict[int, dict[str, list]] = {}
    for wi, width in enumerate(widths):
        rows: dict[str, list] = {
            "deviation": [],
            "movement": [],
            "linearization_error": [],
            "limit_error": [],
            "final_loss": [],
        }
        curves[width] = {"k0": [], "kT": [], "f0": [], "fT": [], "flin": [], "finf": []}
        for s in range(n_seeds):
            ctx.progress(f"width {width}, seed {s + 1}/{n_seeds}", wi / len(widths))
            net = NTKMLP(
                [2] + [width] * (DEPTH - 1) + [1], bias=BIAS, generator=ctx.generator(97 * wi + s)
            )
            k0 = net.ntk(x_all)
            with torch.no_grad():
                f0 = net(x_all)
            kw = dict(time=STEPS, lr=LR, discrete=True)
            f_lin = linearized_prediction(k0[gr, tr], k0[tr, tr], y_train, f0[tr], f0[gr], **kw)
            f_inf = linearized_prediction(
                k_inf[gr, tr], k_inf[tr, tr], y_train, f0[tr], f0[gr], **kw
            )
            losses = train_mse_gradient_descent(net, x_train, y_train, lr=LR, steps=STEPS)
            k_t = net.ntk(x_all)
            with torch.no_grad():
                f_t = net(x_all)
            rows["deviation"].append(_rel(k0, k_inf))
            rows["movement"].append(_rel(k_t, k0))
            rows["linearization_error"].append(_rel(f_t[gr] - f0[gr], f_lin - f0[gr]))
            rows["limit_error"].append(_rel(f_t[gr] - f0[gr], f_inf - f0[gr]))
            rows["final_loss"].append(losses[-1])
            c = curves[width]
            c["k0"].append(k0[n_train + at_zero, gr].tolist())
            c["kT"].append(k_t[n_train + at_zero, gr].tolist())
            for key, val in (("f0", f0[gr]), ("fT", f_t[gr]), ("flin", f_lin), ("finf", f_inf)):
                c[key].append(val[:, 0].tolist())
        per_width[str(width)] = {
            **rows,
            **{f"{k}_mean": float(np.mean(v)) for k, v in rows.items()},
        }

    metrics: dict[str, Any] = {
        "widths": widths,
        "n_seeds": n_seeds,
        "n_grid": int(ctx.size.n_grid),
        "depth": DEPTH,
        "bias": BIAS,
        "lr": LR,
        "steps": STEPS,
        "per_width": per_width,
        "thresholds": {
            "deviation_band": list(DEVIATION_BAND),
            "movement_band": list(MOVEMENT_BAND),
            "linearization_band": [str(LINEARIZATION_BAND[0]), LINEARIZATION_BAND[1]],
            "linearization_tol": LINEARIZATION_TOL,
            "slope_se_max": SLOPE_SE_MAX,
            "se_multiplier": SE_MULTIPLIER,
        },
    }
    parts = checks(metrics)
    metrics["checks"] = parts

    ctx.progress("plots", 0.97)
    _plot(ctx, gammas, widths, per_width, curves, k_inf[n_train + at_zero, gr], parts)

    fits = parts["fits"]
    w_max = max(widths)
    summary = (
        f"widths {widths[0]}–{w_max}, {n_seeds} seeds: ‖Θ₀−Θ∞‖/‖Θ∞‖ "
        f"{per_width[str(widths[0])]['deviation_mean']:.3f}→"
        f"{per_width[str(w_max)]['deviation_mean']:.3f} (slope "
        f"{fits['deviation']['slope']:+.2f}±{fits['deviation']['se']:.2f}); kernel movement "
        f"{per_width[str(widths[0])]['movement_mean']:.3f}→"
        f"{per_width[str(w_max)]['movement_mean']:.3f} (slope "
        f"{fits['movement']['slope']:+.2f}±{fits['movement']['se']:.2f}); ‖f_T − f_lin‖/‖f_lin − "
        f"f₀‖ {per_width[str(widths[0])]['linearization_error_mean']:.3f}→"
        f"{parts['linearization_error_at_largest_width']:.3f} (slope "
        f"{fits['linearization_error']['slope']:+.2f}); vs the Θ∞ prediction "
        f"{per_width[str(w_max)]['limit_error_mean']:.3f} at n={w_max}"
    )
    return Outcome(metrics=metrics, summary=summary)


def _plot(
    ctx: ReproContext,
    gammas: np.ndarray,
    widths: list[int],
    per_width: Mapping[str, Any],
    curves: Mapping[int, Mapping[str, list]],
    limit_row: torch.Tensor,
    parts: Mapping[str, Any],
) -> None:
    fig, axes = ctx.subplots(1, 3, figsize=(15, 4.2))
    ax = axes[0]
    for width, color in ((min(widths), "tab:orange"), (max(widths), "tab:blue")):
        for s, (k0, kt) in enumerate(zip(curves[width]["k0"], curves[width]["kT"])):
            ax.plot(
                gammas, k0, "-", color=color, lw=0.8, label=f"n={width}, init" if not s else None
            )
            ax.plot(
                gammas,
                kt,
                "--",
                color=color,
                lw=0.8,
                label=f"n={width}, trained" if not s else None,
            )
    ax.plot(gammas, limit_row.numpy(), "k-", lw=2, label="Θ∞")
    ax.set_xlabel("γ")
    ax.set_ylabel("Θ(x(0), x(γ))")
    ax.set_title("seeds at init (—) and trained (--)", fontsize=10)
    ax.legend(fontsize=7)

    ax = axes[1]
    w = np.asarray(widths, dtype=float)
    for name, color, label in (
        ("deviation", "tab:red", "‖Θ₀−Θ∞‖/‖Θ∞‖"),
        ("movement", "tab:green", "‖Θ_T−Θ₀‖/‖Θ₀‖"),
        ("linearization_error", "tab:purple", "‖f_T−f_lin‖/‖f_lin−f₀‖"),
    ):
        for i, width in enumerate(widths):
            vals = per_width[str(width)][name]
            ax.plot(
                [width] * len(vals),
                vals,
                ".",
                color=color,
                alpha=0.4,
                label=label if not i else None,
            )
        fit = parts["fits"][name]
        if math.isfinite(fit["slope"]):
            ys = [np.exp(np.mean(np.log(per_width[str(x)][name]))) for x in widths]
            ref = np.exp(np.mean(np.log(ys))) * (w / np.exp(np.mean(np.log(w)))) ** fit["slope"]
            ax.plot(w, ref, "-", color=color, lw=1, label=f"slope {fit['slope']:+.2f}")
    first = per_width[str(widths[0])]["deviation_mean"]
    ax.plot(w, first * (w / w[0]) ** -0.5, "k:", lw=1, label="n^(−1/2)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("width n")
    ax.set_xticks(widths, [str(x) for x in widths])
    ax.minorticks_off()
    ax.set_title("per seed (·) and log-log fits (—)", fontsize=10)
    ax.legend(fontsize=7, ncol=2)

    ax = axes[2]
    width = max(widths)
    c = curves[width]
    ax.plot(gammas, c["f0"][0], ":", color="gray", label="f₀ (seed 1)")
    ax.plot(gammas, c["fT"][0], "-", color="tab:blue", lw=2, label="trained f_T")
    ax.plot(gammas, c["flin"][0], "--", color="tab:orange", label="linearised (Θ₀)")
    ax.plot(gammas, c["finf"][0], "-.", color="k", lw=1, label="linearised (Θ∞)")
    ax.plot(TRAIN_ANGLES, TRAIN_TARGETS, "ko", label="training points")
    ax.set_xlabel("γ")
    ax.set_ylabel("f(x(γ))")
    ax.set_title(f"n={width}: trained vs linearised", fontsize=10)
    ax.legend(fontsize=7)
    ctx.savefig(fig, "kernel_and_function")

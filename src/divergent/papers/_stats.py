"""Shared statistics of the distillation reproductions: paired confidence intervals, verdicts.

Not discovered as a reproduction (leading underscore). A "better than" claim is judged on
the paired differences ``method − baseline`` over seeds (same split, same initialisation):

* ``held`` — the 95 % Student-t interval of the mean difference lies above 0;
* ``not held`` — it does not, and its upper end lies below ``margin`` (the smallest gain the
  claim needs): the gain is, with 95 % confidence, smaller than what the claim says;
* ``inconclusive`` — otherwise: the interval straddles 0 and reaches past the margin.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from divergent.repro import ReproContext, Verdict

__all__ = [
    "better_than",
    "compare_methods",
    "format_ci",
    "interval",
    "mean_ci",
    "no_worse_than",
    "number",
    "paired_ci",
    "plot_methods",
    "plot_scores",
]


def number(value: Any) -> float:
    """A metric read back from its JSON form as a float (``"nan"``/``"inf"`` strings included)."""
    return float(value)


def format_ci(ci: Mapping[str, Any]) -> str:
    """A :func:`mean_ci` result as ``"mean [low, high]"`` with signs, three decimals.

    Example:
        >>> format_ci({"mean": 0.0123, "low": -0.004, "high": 0.0286})
        '+0.012 [-0.004, +0.029]'
    """
    return f"{ci['mean']:+.3f} [{ci['low']:+.3f}, {ci['high']:+.3f}]"


def interval(ci: Mapping[str, Any]) -> tuple[float, float]:
    """``(low, high)`` of a :func:`mean_ci` result, read back as floats (JSON form included).

    Example:
        >>> interval({"mean": 0.5, "low": "-inf", "high": 1})
        (-inf, 1.0)
    """
    return number(ci["low"]), number(ci["high"])


def mean_ci(values: Sequence[float], level: float = 0.95) -> dict[str, float]:
    """Mean and Student-t confidence interval of ``values`` (at least two).

    Returns ``{"mean", "low", "high", "sd", "n"}``; with zero spread the interval is the point.

    Example:
        >>> r = mean_ci([1.0, 2.0, 3.0])
        >>> round(r["mean"], 3), round(r["low"], 3), round(r["high"], 3)
        (2.0, -0.484, 4.484)
    """
    from scipy import stats  # lazy: scipy.stats is a slow import

    n = len(values)
    if n < 2:
        raise ValueError(f"`values` needs at least 2 numbers for an interval, got {n}")
    mean = math.fsum(values) / n
    sd = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
    half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * sd / math.sqrt(n)
    return {"mean": mean, "low": mean - half, "high": mean + half, "sd": sd, "n": n}


def paired_ci(
    method: Sequence[float], baseline: Sequence[float], level: float = 0.95
) -> dict[str, float]:
    r""":func:`mean_ci` of the paired differences :math:`d_s = \text{method}_s -
    \text{baseline}_s` over seeds s (same split and initialisation for both).

    Example:
        >>> r = paired_ci([0.9, 0.8, 0.85], [0.8, 0.75, 0.8])
        >>> round(r["mean"], 3), r["n"]
        (0.067, 3)
    """
    if len(method) != len(baseline):
        raise ValueError(
            f"`method` and `baseline` must pair up seed by seed, got {len(method)} and "
            f"{len(baseline)} values"
        )
    return mean_ci([m - b for m, b in zip(method, baseline, strict=True)], level)


def compare_methods(
    per: Mapping[str, Mapping[str, Sequence[float]]], pairs: Sequence[tuple[str, str]]
) -> dict[str, Any]:
    """Per-seed scores of each method, their means and paired intervals between methods.

    Args:
        per: ``per[method][score]`` = the score on each seed (seeds in the same order).
        pairs: ``(a, b)`` pairs compared as ``a − b`` (:func:`paired_ci`) on every score.

    Returns:
        ``{"per_seed": per, "mean": {method: {score: mean}}, "paired": {"a_minus_b": {score:
        interval}}}`` (the metrics blocks of the distillation reproductions).

    Example:
        >>> per = {"kd": {"acc": [1.0, 0.5]}, "ce": {"acc": [0.5, 0.5]}}
        >>> out = compare_methods(per, [("kd", "ce")])
        >>> out["mean"]["kd"]["acc"], out["paired"]["kd_minus_ce"]["acc"]["mean"]
        (0.75, 0.25)
    """
    return {
        "per_seed": per,
        "mean": {m: {s: float(np.mean(v)) for s, v in scores.items()} for m, scores in per.items()},
        "paired": {
            f"{a}_minus_{b}": {s: paired_ci(per[a][s], per[b][s]) for s in per[a]} for a, b in pairs
        },
    }


def better_than(low: float, high: float, margin: float) -> Verdict:
    """Tri-state verdict of "the method beats the baseline" from the paired interval.

    Args:
        low, high: the confidence interval of the mean difference (method − baseline, larger
            is better).
        margin: the smallest gain the claim needs (> 0).

    Example:
        >>> [better_than(*ci, 0.5).value for ci in [(0.1, 2.0), (-0.3, 0.2), (-0.3, 1.0)]]
        ['held', 'not held', 'inconclusive']
    """
    if any(v != v for v in (low, high, margin)):
        return Verdict.INCONCLUSIVE  # NaN: nothing can be concluded
    if low > 0:
        return Verdict.HELD
    if high < margin:
        return Verdict.NOT_HELD
    return Verdict.INCONCLUSIVE


def no_worse_than(low: float, high: float, margin: float) -> Verdict:
    """Tri-state verdict of "the method is no worse than the baseline" (non-inferiority).

    ``held`` when the paired interval (method − baseline) lies above ``−margin``; ``not held``
    when it lies entirely below ``−margin``; ``inconclusive`` when it straddles ``−margin``.

    Example:
        >>> [no_worse_than(*ci, 0.02).value for ci in [(-0.01, 0.01), (-0.05, -0.03), (-0.03, 0.0)]]
        ['held', 'not held', 'inconclusive']
    """
    if any(v != v for v in (low, high, margin)):
        return Verdict.INCONCLUSIVE
    if low > -margin:
        return Verdict.HELD
    if high < -margin:
        return Verdict.NOT_HELD
    return Verdict.INCONCLUSIVE


def plot_methods(
    ctx: ReproContext,
    name: str,
    values: Mapping[str, Sequence[float]],
    *,
    ylabel: str,
    title: str,
) -> str:
    """Save a plot of per-seed values (dots) and their means (bars) for each method.

    Returns the plot's path relative to the output folder.
    """
    fig, ax = ctx.subplots(figsize=(1.3 + 1.1 * len(values), 3.4))
    for i, vals in enumerate(values.values()):
        ax.bar(i, sum(vals) / len(vals), color="0.85", edgecolor="0.4")
        ax.plot([i] * len(vals), vals, "o", ms=3.5, alpha=0.8)
    ax.set_xticks(range(len(values)), list(values), rotation=20, ha="right", fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    lows = [min(v) for v in values.values()]
    highs = [max(v) for v in values.values()]
    pad = 0.1 * (max(highs) - min(lows) + 1e-9)
    ax.set_ylim(min(lows) - pad, max(highs) + pad)
    return ctx.savefig(fig, name)


def plot_scores(
    ctx: ReproContext,
    per: Mapping[str, Mapping[str, Sequence[float]]],
    plots: Mapping[str, tuple[str, str, str]],
) -> list[str]:
    """One :func:`plot_methods` figure per entry ``name: (score, ylabel, title)`` of the
    per-seed values ``per[method][score]`` of every method (in the order of ``per``).

    Returns the plots' paths relative to the output folder.
    """
    return [
        plot_methods(ctx, name, {m: s[score] for m, s in per.items()}, ylabel=ylabel, title=title)
        for name, (score, ylabel, title) in plots.items()
    ]

"""float32 accuracy of every registered divergence on every path, against float64 (issue 8 §2).

For each registered name (``divergent.list_divergences()``) at a set of parameter values,
each path (``engine="reference"``, ``engine="chunked"``, and ``fused_linear_divergence`` for
a few names) and each input regime, the float32 row values are compared with a float64
reference computed from the *same* (float32-representable) logits. The reference is written
from the definitions in float64, independently of the library's row functions and kernels
(the α and Rényi families through expm1 forms so that float64 itself stays accurate at α → 1
and near P = Q). The goal (issue 8): for every row, ``|err| ≤ 1e-4·|ref|`` or ``|err| ≤ 1e-7``.

Regimes (logits; rows × classes):

* ``near_1e-2`` / ``near_1e-3``: P = softmax(x), x ~ 3·N(0, 1); Q's logits x + δ·N(0, 1);
* ``standard``: independent 2·N(0, 1) logits;
* ``sharp``: 8·N(0, 1) logits with Q's = P's + 2·N(0, 1) (peaked, shared support);
* ``temp_0.25`` / ``temp_4``: x ~ 2·N(0, 1), y = x + 0.5·N(0, 1), at temperature 0.25 / 4.

Run ``python benchmarks/accuracy_fp32.py`` (``--quick`` for the small sizes the test uses);
it prints one line per (name, parameters) with the worst error ratio per path, where
``ratio = max over rows of |err| / max(1e-4·|ref|, 1e-7)`` (≤ 1 meets the goal). The test
``tests/categorical/test_accuracy_fp32.py`` imports :func:`sweep` from here.
"""

from __future__ import annotations

import argparse
import math
import platform
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

import divergent

REL_GOAL = 1e-4
ABS_GOAL = 1e-7

# parameter values swept for each parametrised family (defaults are always included)
PARAM_VALUES: dict[str, list[dict[str, float]]] = {
    "js": [{"beta": 0.5}, {"beta": 0.1}, {"beta": 0.9}],
    "skew_kl": [{"alpha": 0.0}, {"alpha": 0.1}, {"alpha": 0.7}],
    "skew_reverse_kl": [{"alpha": 0.0}, {"alpha": 0.1}, {"alpha": 0.7}],
    "alpha": [
        {"alpha": a}
        for a in (-2.0, -0.5, 0.0, 1e-5, 0.3, 0.5, 1.0 - 1e-5, 1.0, 1.0 + 1e-5, 2.0, 3.5)
    ],
    "renyi": [{"order": o} for o in (0.0, 1e-5, 0.5, 0.999, 1.0, 1.001, 2.0, 7.0, math.inf)],
}

FUSED_NAMES = ("kl", "reverse_kl", "js", "alpha", "renyi")


@dataclass(frozen=True)
class Regime:
    name: str
    temperature: float
    make: Callable[[torch.Generator, int, int], tuple[Tensor, Tensor]]


def _near(delta: float) -> Callable[[torch.Generator, int, int], tuple[Tensor, Tensor]]:
    def make(g: torch.Generator, rows: int, classes: int) -> tuple[Tensor, Tensor]:
        x = 3.0 * torch.randn(rows, classes, generator=g, dtype=torch.float64)
        return x, x + delta * torch.randn(rows, classes, generator=g, dtype=torch.float64)

    return make


def _standard(g: torch.Generator, rows: int, classes: int) -> tuple[Tensor, Tensor]:
    x = 2.0 * torch.randn(rows, classes, generator=g, dtype=torch.float64)
    return x, 2.0 * torch.randn(rows, classes, generator=g, dtype=torch.float64)


def _sharp(g: torch.Generator, rows: int, classes: int) -> tuple[Tensor, Tensor]:
    x = 8.0 * torch.randn(rows, classes, generator=g, dtype=torch.float64)
    return x, x + 2.0 * torch.randn(rows, classes, generator=g, dtype=torch.float64)


def _related(g: torch.Generator, rows: int, classes: int) -> tuple[Tensor, Tensor]:
    x = 2.0 * torch.randn(rows, classes, generator=g, dtype=torch.float64)
    return x, x + 0.5 * torch.randn(rows, classes, generator=g, dtype=torch.float64)


REGIMES = (
    Regime("near_1e-2", 1.0, _near(1e-2)),
    Regime("near_1e-3", 1.0, _near(1e-3)),
    Regime("standard", 1.0, _standard),
    Regime("sharp", 1.0, _sharp),
    Regime("temp_0.25", 0.25, _related),
    Regime("temp_4", 4.0, _related),
)


# --------------------------------------------------------------------------------------------
# float64 reference, from the definitions
# --------------------------------------------------------------------------------------------
def reference_rows(name: str, params: dict[str, float], x: Tensor, y: Tensor, t: float) -> Tensor:
    """D(P‖Q) per row in float64, P = softmax(x/t), Q = softmax(y/t) (all atoms positive)."""
    lp = torch.log_softmax(x.double() / t, -1)
    lq = torch.log_softmax(y.double() / t, -1)
    p, q, d = lp.exp(), lq.exp(), lp - lq
    if name == "kl":
        return (p * d).sum(-1)
    if name == "reverse_kl":
        return (-q * d).sum(-1)
    if name == "soft_cross_entropy":
        return (-p * lq).sum(-1)
    if name == "js":
        b = params["beta"]
        lm = torch.logaddexp(lp + math.log(b), lq + math.log1p(-b))
        return (b * p * (lp - lm) + (1 - b) * q * (lq - lm)).sum(-1)
    if name in ("skew_kl", "skew_reverse_kl"):
        a = params["alpha"]
        if name == "skew_reverse_kl":
            lp, lq, p = lq, lp, q
        if a == 0.0:
            return (p * (lp - lq)).sum(-1)
        lm = torch.logaddexp(lp + math.log(a), lq + math.log1p(-a))
        return (p * (lp - lm)).sum(-1)
    if name == "jeffreys":
        return ((p - q) * d).sum(-1)
    if name == "tv":
        return 0.5 * (p - q).abs().sum(-1)
    if name == "hellinger":
        return 0.5 * (p.sqrt() - q.sqrt()).square().sum(-1)
    if name == "pearson_chi2":
        return (q * torch.expm1(d).square()).sum(-1)
    if name == "neyman_chi2":
        return (p * torch.expm1(-d).square()).sum(-1)
    if name == "alpha":
        a = params["alpha"]
        if a == 1.0:
            return (p * d).sum(-1)
        if a == 0.0:
            return (-q * d).sum(-1)
        # q·f_α(p/q) with f_α(t) = (t^α − 1 − α(t − 1))/(α(α − 1)), t − 1 = expm1(d)
        return (q * (torch.expm1(a * d) - a * torch.expm1(d))).sum(-1) / (a * (a - 1.0))
    if name == "renyi":
        o = params["order"]
        if o == 1.0:
            return (p * d).sum(-1)
        if o == 0.0:
            return torch.zeros_like(d[..., 0])  # full support: −log Q(supp P) = 0
        if math.isinf(o):
            return d.amax(-1)
        # log Σ p^o q^(1−o) = log1p(Σ q·expm1(o·d))
        return torch.log1p((q * torch.expm1(o * d)).sum(-1)) / (o - 1.0)
    raise KeyError(name)


# --------------------------------------------------------------------------------------------
# the sweep
# --------------------------------------------------------------------------------------------
def cases() -> Iterator[tuple[str, dict[str, float]]]:
    """Every registered name at its default parameters and at the swept values."""
    for spec in divergent.list_divergences():
        values = PARAM_VALUES.get(spec.name)
        if values is None:
            defaults = {p.name: p.default for p in spec.parameters}
            if defaults and spec.name not in _warned:
                _warned.add(spec.name)
                print(f"note: `{spec.name}` swept at its defaults only", file=sys.stderr)
            values = [defaults]
        yield from ((spec.name, v) for v in values)


_warned: set[str] = set()


def _fused_rows(
    name: str, params: dict[str, float], x: Tensor, y: Tensor, t: float
) -> tuple[Tensor, Tensor, Tensor]:
    """fused_linear_divergence on h·Wᵀ whose float64 product is (x, y) up to matmul rounding.

    Returns the float32 rows and the float32 logits actually implied (computed in float64
    from the float32 hidden states and weights) for the reference.
    """
    rows = x.shape[0]
    hidden = rows  # h = I: the logits are the weights' rows, exactly representable
    h = torch.eye(rows, hidden, dtype=torch.float32)
    wt = x.T.contiguous().to(torch.float32)  # (V, H): logits = h Wᵀ = x
    ws = y.T.contiguous().to(torch.float32)
    got = divergent.fused_linear_divergence(
        name,
        student_hidden=h,
        student_weight=ws,
        teacher_hidden=h,
        teacher_weight=wt,
        temperature=t,
        reduction="none",
        **params,
    )
    return got, (h.double() @ wt.double().T), (h.double() @ ws.double().T)


def errors_for(
    name: str,
    params: dict[str, float],
    regime: Regime,
    rows: int,
    classes: int,
    seed: int,
    paths: tuple[str, ...],
) -> dict[str, float]:
    """Worst ratio |err| / max(REL_GOAL·|ref|, ABS_GOAL) per path for one case and regime."""
    g = torch.Generator().manual_seed(seed)
    x64, y64 = regime.make(g, rows, classes)
    x, y = x64.float(), y64.float()
    t = regime.temperature
    out: dict[str, float] = {}
    for path in paths:
        if path == "fused":
            if name not in FUSED_NAMES:
                continue
            got, xr, yr = _fused_rows(name, params, x, y, t)
        else:
            got = divergent.divergence(
                name, x, y, temperature=t, reduction="none", engine=path, **params
            )
            xr, yr = x.double(), y.double()
        want = reference_rows(name, params, xr, yr, t)
        err = (got.double() - want).abs()
        tol = torch.clamp(REL_GOAL * want.abs(), min=ABS_GOAL)
        ratio = err / tol
        bad = ~torch.isfinite(got.double()) & torch.isfinite(want)
        ratio = torch.where(bad, torch.full_like(ratio, math.inf), ratio)
        out[path] = float(ratio.max())
    return out


def sweep(
    rows: int = 4,
    classes: int = 257,
    seed: int = 0,
    paths: tuple[str, ...] = ("reference", "chunked", "fused"),
) -> list[tuple[str, dict[str, float], str, dict[str, float]]]:
    """``(name, params, regime, {path: worst ratio})`` for every case and regime."""
    results = []
    for i, regime in enumerate(REGIMES):
        for name, params in cases():
            ratios = errors_for(name, params, regime, rows, classes, seed + 1000 * i, paths)
            results.append((name, params, regime.name, ratios))
    return results


def case_label(name: str, params: dict[str, float]) -> str:
    return name + "".join(f" {k}={v:g}" for k, v in params.items())


def table(results: list[tuple[str, dict[str, float], str, dict[str, float]]]) -> str:
    """Markdown table: worst ratio over regimes per case and path, with the worst regime."""
    paths = sorted({p for *_, r in results for p in r}, key=("reference", "chunked", "fused").index)
    worst: dict[str, dict[str, tuple[float, str]]] = {}
    for name, params, regime, ratios in results:
        row = worst.setdefault(case_label(name, params), {})
        for path, ratio in ratios.items():
            if path not in row or ratio > row[path][0]:
                row[path] = (ratio, regime)
    lines = [
        "| case | " + " | ".join(f"{p}: worst ratio (regime)" for p in paths) + " |",
        "|---|" + "---|" * len(paths),
    ]
    for label, row in worst.items():
        cells = [f"{row[p][0]:.2g} ({row[p][1]})" if p in row else "—" for p in paths]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    n_over = sum(1 for *_, r in results for v in r.values() if not v <= 1.0)
    lines.append("")
    lines.append(
        f"ratio = max_rows |err| / max({REL_GOAL:g}·|ref|, {ABS_GOAL:g}); goal ≤ 1. "
        f"(case, regime, path) triples over the goal: {n_over} of "
        f"{sum(len(r) for *_, r in results)}."
    )
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="the small sizes the test uses")
    ap.add_argument("--seeds", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(1)
    sizes = [(4, 257)] if args.quick else [(4, 257), (16, 4096), (2, 32000)]
    seeds = 1 if args.quick else args.seeds
    print(
        f"# fp32 accuracy sweep: torch {torch.__version__}, {platform.machine()}, "
        f"python {platform.python_version()}, sizes {sizes}, seeds {seeds}"
    )
    results = []
    for rows, classes in sizes:
        for seed in range(seeds):
            results += sweep(rows, classes, seed)
    print(table(results))
    over = [(n, p) for n, p, _, r in results for v in r.values() if not v <= 1.0]
    unexplained = [c for c in over if not _documented_exception(*c)]
    print(
        f"over the goal: {len(over)} cells, {len(over) - len(unexplained)} of them the "
        "documented exception (Rényi order ∞: a maximum of float32 log-ratios, accurate to "
        f"the rounding of its inputs); unexplained: {len(unexplained)}"
    )
    return 0 if not unexplained else 1


def _documented_exception(name: str, params: dict[str, float]) -> bool:
    return name == "renyi" and math.isinf(params.get("order", 0.0))


if __name__ == "__main__":
    raise SystemExit(main())

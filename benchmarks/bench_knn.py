"""Benchmark: divergent.knn_kl against the ``universal-divergence`` package (issue 4, section 6).

Problem: P = N(0, I_d), Q = N(0.5·1_d, I_d), true KL(P‖Q) = d/8 (0.25, 0.625, 1.25 for
d = 2, 5, 10); n = m ∈ {1000, 4000, 20000}; several seeds (fresh samples per seed).

Compared in the same process, one thread everywhere (``torch.set_num_threads(1)``, cKDTree
``workers=1``; universal-divergence with its default ``n_jobs=1``), methods interleaved within
each seed:

* ``divergent.knn_kl(x, y)``: the default, k = 1 with the Wang–Kulkarni–Verdú adaptive radius
  and digamma correction (the estimator universal-divergence computes with ``k=None``);
* ``divergent.knn_kl(x, y, bias_correction=False)``: fixed k = 1 (WKV Eq. 5, the estimator
  universal-divergence computes with ``k=1``);
* ``universal_divergence.estimate(x, y, k=1)``: the fast configuration of the package (one
  KD-tree query per point from Python);
* ``universal_divergence.estimate(x, y)`` (``k=None``, adaptive): only at n = 1000 and one seed
  (it scans every point in Python for each point: ~20 s at n = 1000, quadratic);
* ``divergent.knn_kl(..., method="brute")`` (blocked exact torch distances) for n ≤ 4000: why
  ``method="auto"`` picks the tree on CPU.

Reported per (n, d): median time over seeds, the median over seeds of the per-seed time ratio
(universal-divergence time / divergent time, > 1 = divergent faster), and the mean absolute and
mean signed error against the truth over seeds. The script also checks that the two pairs of
equivalent estimators agree (max relative difference).

Run: ``.venv/bin/python benchmarks/bench_knn.py [--seeds 5] [--seeds-20k 3] [--repeats 5]``
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch

import divergent

try:
    from universal_divergence import estimate as ud_estimate
except ImportError as err:  # pragma: no cover - benchmark dependency
    raise SystemExit(
        "this benchmark needs universal-divergence: pip install 'divergent[bench]'"
    ) from err


def timed(fn: Callable[[], float]) -> tuple[float, float]:
    t0 = time.perf_counter()
    value = float(fn())
    return time.perf_counter() - t0, value


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=5, help="seeds for n = 1000 and 4000")
    ap.add_argument("--seeds-20k", type=int, default=3, help="seeds for n = 20000")
    ap.add_argument(
        "--repeats",
        type=int,
        default=5,
        help="extra timing rounds at the target cell n = 20000, d = 5",
    )
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 4000, 20000])
    ap.add_argument("--dims", type=int, nargs="+", default=[2, 5, 10])
    ap.add_argument(
        "--no-adaptive-ud",
        action="store_true",
        help="skip universal-divergence k=None (slow) at n = 1000",
    )
    args = ap.parse_args()
    torch.set_num_threads(1)
    print(f"load average before: {os.getloadavg()}")

    rows = []
    adaptive_speedups = []
    agree_fixed, agree_adaptive = 0.0, 0.0
    for n in args.sizes:
        for d in args.dims:
            truth = d / 8
            seeds = args.seeds_20k if n >= 20000 else args.seeds
            res: dict[str, list[tuple[float, float]]] = {}
            for seed in range(seeds):
                rng = np.random.default_rng(1000 * n + 10 * d + seed)
                x = rng.standard_normal((n, d))
                y = rng.standard_normal((n, d)) + 0.5
                methods: dict[str, Callable[[], float]] = {
                    "divergent (default, bias-corrected)": lambda x=x, y=y: divergent.knn_kl(x, y),
                    "divergent (fixed k=1)": lambda x=x, y=y: divergent.knn_kl(
                        x, y, bias_correction=False
                    ),
                    "universal-divergence k=1": lambda x=x, y=y: ud_estimate(x, y, k=1),
                }
                if n <= 4000:
                    methods["divergent brute (default)"] = lambda x=x, y=y: divergent.knn_kl(
                        x, y, method="brute"
                    )
                if n == 1000 and seed == 0 and not args.no_adaptive_ud:
                    methods["universal-divergence k=None (adaptive)"] = lambda x=x, y=y: (
                        ud_estimate(x, y)
                    )
                for name, fn in methods.items():
                    res.setdefault(name, []).append(timed(fn))
                vals = {k: v[-1][1] for k, v in res.items()}
                fixed_ud = vals["universal-divergence k=1"]
                agree_fixed = max(
                    agree_fixed, abs(vals["divergent (fixed k=1)"] - fixed_ud) / abs(fixed_ud)
                )
                if "universal-divergence k=None (adaptive)" in methods:
                    ad = vals["universal-divergence k=None (adaptive)"]
                    agree_adaptive = max(
                        agree_adaptive,
                        abs(vals["divergent (default, bias-corrected)"] - ad) / abs(ad),
                    )
                    adaptive_speedups.append(
                        (
                            n,
                            d,
                            res["universal-divergence k=None (adaptive)"][-1][0]
                            / res["divergent (default, bias-corrected)"][-1][0],
                        )
                    )
            if n >= 20000 and d == 5 and args.repeats > 0:
                # the target cell: more interleaved timing rounds on the seed-0 sample
                rng = np.random.default_rng(1000 * n + 10 * d)
                x = rng.standard_normal((n, d))
                y = rng.standard_normal((n, d)) + 0.5
                for _ in range(args.repeats):
                    for name, fn in (
                        (
                            "divergent (default, bias-corrected)",
                            lambda x=x, y=y: divergent.knn_kl(x, y),
                        ),
                        (
                            "divergent (fixed k=1)",
                            lambda x=x, y=y: divergent.knn_kl(x, y, bias_correction=False),
                        ),
                        ("universal-divergence k=1", lambda x=x, y=y: ud_estimate(x, y, k=1)),
                    ):
                        t, _ = timed(fn)
                        res[name].append((t, float("nan")))
            ud_times = [t for t, _ in res["universal-divergence k=1"]]
            for name, pairs in res.items():
                times = [t for t, _ in pairs]
                values = [v for _, v in pairs if not np.isnan(v)]
                ratio = (
                    statistics.median(u / t for u, t in zip(ud_times, times))
                    if len(times) == len(ud_times)
                    else ud_times[0] / times[0]
                )
                rows.append(
                    (
                        n,
                        d,
                        truth,
                        name,
                        statistics.median(times),
                        ratio,
                        float(np.mean(np.abs(np.array(values) - truth))),
                        float(np.mean(np.array(values) - truth)),
                        len(values),
                    )
                )
            print(f"done n={n} d={d}", flush=True)

    print(f"load average after: {os.getloadavg()}")
    print(
        f"max relative difference, divergent fixed k=1 vs universal-divergence k=1: "
        f"{agree_fixed:.1e}"
    )
    print(
        f"max relative difference, divergent default vs universal-divergence k=None: "
        f"{agree_adaptive:.1e}"
    )
    for n, d, r in adaptive_speedups:
        print(
            f"same estimator, n={n} d={d}: universal-divergence k=None time / divergent "
            f"default time = {r:.0f}"
        )
    print()
    print(
        "| n | d | true KL | method | median time (s) | UD k=1 time / time ¹ | "
        "mean abs. error | mean error | seeds |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for n, d, truth, name, t, ratio, mae, bias, s in rows:
        print(
            f"| {n} | {d} | {truth:.3f} | {name} | {t:.3f} | {ratio:.2f} | {mae:.3f} | "
            f"{bias:+.3f} | {s} |"
        )


if __name__ == "__main__":
    main()

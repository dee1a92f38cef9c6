"""Benchmark: divergent's batched log-domain Sinkhorn against POT.

Problem (issue 4, section 6): a batch of B = 32 entropic OT problems of 256 × 256, ε = 0.05.
Each problem has its own 256 + 256 points drawn uniformly in the unit square, uniform weights,
and the cost is the squared Euclidean distance (values in [0, 2]; not rescaled), so ε = 0.05
is 1/40 of the cost range.

Compared, in the same process, on one CPU thread (``torch.set_num_threads(1)``):

* ``divergent.sinkhorn`` on the whole batch (stops each problem when the L1 column-marginal
  violation is ≤ tol);
* POT ``ot.sinkhorn2(a, b, M, eps, method="sinkhorn_log")`` (torch backend) solving the
  problems one by one (stops when the L2 column-marginal violation, checked every 10 updates,
  is < stopThr = tol — a weaker criterion than ours at the same tol);
* POT ``ot.batch.solve_batch(M, eps, a, b, method="log_sinkhorn")`` (torch backend; stops when
  the largest L2 row-marginal violation over the batch, checked every 10 updates, is < tol).

Accuracy: every method's values against a tight reference (POT one by one in float64 at
stopThr = 1e-13). Timing: median over ``--repeats`` rounds, methods interleaved within each
round; ratios are POT time / divergent time (> 1 means divergent is faster). Optional
``--grad`` row: value and gradient w.r.t. the cost (divergent: implicit differentiation at the
fixed point; POT: autograd through the unrolled iterations of ``sinkhorn2``).

Run: ``.venv/bin/python benchmarks/bench_sinkhorn.py [--repeats 5] [--grad]``
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

import divergent

try:
    import ot
    import ot.batch
except ImportError as err:  # pragma: no cover - benchmark dependency
    raise SystemExit("this benchmark needs POT: pip install 'divergent[bench]'") from err


def make_problems(batch: int, n: int, dtype: torch.dtype, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, n, 2, generator=g, dtype=torch.float64)
    y = torch.rand(batch, n, 2, generator=g, dtype=torch.float64)
    cost = ((x[:, :, None, :] - y[:, None, :, :]) ** 2).sum(-1)
    w = torch.full((batch, n), 1.0 / n, dtype=torch.float64)
    return w.to(dtype), w.to(dtype), cost.to(dtype)


def timed(fn: Callable[[], torch.Tensor]) -> tuple[float, torch.Tensor]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--n", type=int, default=256)
    parser.add_argument("--eps", type=float, default=0.05)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--grad", action="store_true", help="also time value + gradient")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    eps, batch, n = args.eps, args.batch, args.n
    print(f"torch {torch.__version__}, POT {ot.__version__}, threads {torch.get_num_threads()}")
    print(f"B={batch} problems of {n}x{n}, squared Euclidean cost on U[0,1]^2, eps={eps}\n")

    a64, b64, c64 = make_problems(batch, n, torch.float64)
    ref = torch.stack(
        [
            ot.sinkhorn2(
                a64[i],
                b64[i],
                c64[i],
                eps,
                method="sinkhorn_log",
                stopThr=1e-13,
                numItermax=100_000,
            )
            for i in range(batch)
        ]
    )

    rows = []
    for dtype, tol in ((torch.float64, 1e-9), (torch.float32, 1e-6)):
        a, b, cost = (t.to(dtype) for t in (a64, b64, c64))

        def ours(a=a, b=b, cost=cost, tol=tol) -> torch.Tensor:
            return divergent.sinkhorn(a, b, cost, eps, tol=tol, max_iter=10_000)

        def pot_loop(a=a, b=b, cost=cost, tol=tol) -> torch.Tensor:
            return torch.stack(
                [
                    ot.sinkhorn2(
                        a[i],
                        b[i],
                        cost[i],
                        eps,
                        method="sinkhorn_log",
                        stopThr=tol,
                        numItermax=10_000,
                    )
                    for i in range(batch)
                ]
            )

        def pot_batch(a=a, b=b, cost=cost, tol=tol) -> torch.Tensor:
            res = ot.batch.solve_batch(
                cost, eps, a, b, max_iter=10_000, tol=tol, method="log_sinkhorn", grad="detach"
            )
            return res.value_linear

        methods = {
            "divergent.sinkhorn (batched)": ours,
            "POT sinkhorn2 log, one by one": pot_loop,
            "POT solve_batch log_sinkhorn": pot_batch,
        }
        for fn in methods.values():  # warm-up
            fn()
        times: dict[str, list[float]] = {k: [] for k in methods}
        values: dict[str, torch.Tensor] = {}
        for _ in range(args.repeats):
            for name, fn in methods.items():
                dt, out = timed(fn)
                times[name].append(dt)
                values[name] = out
        t_ours = statistics.median(times["divergent.sinkhorn (batched)"])
        for name in methods:
            med = statistics.median(times[name])
            err = ((values[name].double() - ref).abs() / ref.abs()).max().item()
            rows.append((str(dtype).replace("torch.", ""), tol, name, med, med / t_ours, err))

    if args.grad:
        a, b, cost = a64, b64, c64
        reps = max(1, min(args.repeats, 3))

        def ours_grad() -> torch.Tensor:
            c = cost.clone().requires_grad_(True)
            (g,) = torch.autograd.grad(divergent.sinkhorn(a, b, c, eps, tol=1e-9).sum(), c)
            return g

        def pot_grad() -> torch.Tensor:
            c = cost.clone().requires_grad_(True)
            total = sum(
                ot.sinkhorn2(a[i], b[i], c[i], eps, method="sinkhorn_log", stopThr=1e-9)
                for i in range(batch)
            )
            (g,) = torch.autograd.grad(total, c)
            return g

        g_times: dict[str, list[float]] = {"ours": [], "pot": []}
        grads = {}
        ours_grad()
        for _ in range(reps):
            for key, fn in (("ours", ours_grad), ("pot", pot_grad)):
                dt, grads[key] = timed(fn)
                g_times[key].append(dt)
        t_o, t_p = statistics.median(g_times["ours"]), statistics.median(g_times["pot"])
        gdiff = ((grads["ours"] - grads["pot"]).abs().max() / grads["pot"].abs().max()).item()
        rows.append(("float64", 1e-9, "value+grad: divergent (implicit)", t_o, 1.0, float("nan")))
        rows.append(
            (
                "float64",
                1e-9,
                "value+grad: POT sinkhorn2 (unrolled autograd)",
                t_p,
                t_p / t_o,
                gdiff,
            )
        )

    print("| dtype | tol | method | median time (s) | time / divergent | max rel. error |")
    print("|---|---|---|---|---|---|")
    for dtype_name, tol, name, med, ratio, err in rows:
        err_txt = "—" if err != err else f"{err:.1e}"
        print(f"| {dtype_name} | {tol:g} | {name} | {med:.3f} | {ratio:.2f} | {err_txt} |")
    if args.grad:
        print("\n(value+grad rows: last column = max |grad_divergent − grad_POT| / max |grad_POT|)")


if __name__ == "__main__":
    main()

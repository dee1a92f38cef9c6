"""Benchmark: ``fused_token_distillation_loss`` against the materialised token loss (issue 10).

At B·T tokens (default 8 × 512 = 4096), vocabulary V (default 32 768) and hidden size H
(default 256), fp32, forward + backward with gradients to the student's hidden states and head
weight (the teacher under ``no_grad``, as in distillation), ``labels`` with a fraction of
positions at ``ignore_index`` (default 0: every position counts), compares:

* ``trl_gkd``: what a TRL user runs: both models' logits by matmul, then TRL's GKD
  ``generalized_jsd_loss`` (``beta=0``, the forward KL) with the labels;
* ``materialised``: both logits by matmul, then ``token_distillation_loss`` (the chunked engine
  over the (B·T, V) logits);
* ``fused``: ``fused_token_distillation_loss`` from hidden states and heads (only the valid
  positions projected, O(chunk × V) logits at a time).

Time: the median of ``--repeats`` runs, cases interleaved round by round. Memory: each case runs
once more in a fresh subprocess, after a warm-up on a small slice; its peak-RSS counter is reset
(``/proc/self/clear_refs`` ← 5) and ``extra = VmHWM − RSS before the call − bytes of the
gradients the caller receives`` is reported (the method of ``bench_engine.py``). Target:
fused extra memory ≤ 10 % of the materialised path's.

Usage::

    python benchmarks/bench_token_fused.py              # B·T = 4096, V = 32k, H = 256
    python benchmarks/bench_token_fused.py --quick      # small shapes, a smoke test
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import math
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import torch
from _memory import measure_peak_rss

from divergent.objectives.token import fused_token_distillation_loss, token_distillation_loss

CASES = ("trl_gkd", "materialised", "fused")


def setup(
    batch: int, seq: int, hidden: int, vocab: int, ignored: float, chunk_size: int | None = None
) -> dict:
    gen = torch.Generator().manual_seed(1)
    hs = torch.randn(batch, seq, hidden, generator=gen).requires_grad_(True)
    ws = (torch.randn(vocab, hidden, generator=gen) / math.sqrt(hidden)).requires_grad_(True)
    ht = torch.randn(batch, seq, hidden, generator=gen)
    wt = torch.randn(vocab, hidden, generator=gen) / math.sqrt(hidden)
    labels = torch.randint(0, vocab, (batch, seq), generator=gen)
    n_ignored = round(ignored * seq)
    if n_ignored:
        labels[:, :n_ignored] = -100  # the prompt of every sequence
    return {
        "hs": hs,
        "ws": ws,
        "ht": ht,
        "wt": wt,
        "labels": labels,
        "params": [hs, ws],
        "chunk_size": chunk_size,
    }


def runner(case: str, st: dict) -> Callable[[], Any]:
    hs, ws, ht, wt, labels = st["hs"], st["ws"], st["ht"], st["wt"], st["labels"]

    def zero() -> None:
        hs.grad = None
        ws.grad = None

    if case == "fused":

        def run() -> float:
            zero()
            loss = fused_token_distillation_loss(
                hs, ws, ht, wt, labels, divergence="kl", chunk_size=st["chunk_size"]
            )
            loss.backward()
            return float(loss.detach())

        return run
    if case == "materialised":

        def run() -> float:
            zero()
            with torch.no_grad():
                teacher_logits = ht @ wt.T
            loss = token_distillation_loss(hs @ ws.T, teacher_logits, labels, divergence="kl")
            loss.backward()
            return float(loss.detach())

        return run
    if case == "trl_gkd":
        os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
        from trl.experimental.gkd import GKDTrainer

        def run() -> float:
            zero()
            with torch.no_grad():
                teacher_logits = ht @ wt.T
            loss = GKDTrainer.generalized_jsd_loss(hs @ ws.T, teacher_logits, labels, beta=0.0)
            loss.backward()
            return float(loss.detach())

        return run
    raise ValueError(case)


def measure_memory_here(case: str, shape: dict) -> dict:
    """Run ``case`` once after a warm-up; peak RSS above the pre-call RSS, minus the gradients."""
    # warm-up on one full sequence: every chunk shape of the measured call is compiled already
    warm = setup(**{**shape, "batch": 1})
    runner(case, warm)()
    del warm
    state = setup(**shape)
    run = runner(case, state)
    base, peak, method = measure_peak_rss(run)
    grads = sum(t.grad.numel() * t.grad.element_size() for t in state["params"])
    return {"case": case, "extra": (peak - base) * 1024 - grads, "method": method}


def measure_memory(case: str, shape: dict, threads: int) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--mem-case", case]
    cmd += ["--shape", json.dumps(shape), "--threads", str(threads)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=3600)
    for line in out.stdout.splitlines()[::-1]:
        if line.startswith("{"):
            return json.loads(line)
    return {"case": case, "error": (out.stderr or out.stdout)[-500:]}


def time_cases(runners: dict[str, Callable[[], Any]], repeats: int) -> dict[str, dict]:
    """Median / min wall time per case (after one warm-up call), interleaved round by round."""
    times: dict[str, list[float]] = {k: [] for k in runners}
    losses = {k: fn() for k, fn in runners.items()}  # warm-up, and the loss values
    for _ in range(repeats):
        for k, fn in runners.items():
            gc.collect()
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    return {
        k: {"median": statistics.median(ts), "min": min(ts), "loss": losses[k]}
        for k, ts in times.items()
    }


def fmt_mib(x: float | None) -> str:
    return "—" if x is None else f"{x / 2**20:,.1f} MiB"


def load() -> str:
    with contextlib.suppress(OSError), open("/proc/loadavg") as fh:
        return " ".join(fh.read().split()[:3])
    return "?"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--vocab", type=int, default=32768)
    ap.add_argument("--ignored", type=float, default=0.0, help="fraction of prompt positions")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--cases", default=",".join(CASES), help="comma-separated subset")
    ap.add_argument("--chunk-size", type=int, default=None, help="fused rows per chunk")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-memory", action="store_true")
    ap.add_argument("--no-timing", action="store_true")
    ap.add_argument("--quick", action="store_true", help="small shapes (a smoke test)")
    ap.add_argument("--json", default=None, help="write the results here")
    ap.add_argument("--mem-case", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--shape", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cases = [c for c in args.cases.split(",") if c]
    unknown = sorted(set(cases) - set(CASES))
    if unknown:
        ap.error(f"unknown cases {unknown}; choose from {CASES}")
    if args.mem_case:
        print(json.dumps(measure_memory_here(args.mem_case, json.loads(args.shape))))
        return
    if args.quick:
        args.batch, args.seq, args.vocab, args.hidden, args.repeats = 2, 64, 4096, 64, 2
    shape = {
        "batch": args.batch,
        "seq": args.seq,
        "hidden": args.hidden,
        "vocab": args.vocab,
        "ignored": args.ignored,
        "chunk_size": args.chunk_size,
    }
    n_tokens = args.batch * args.seq
    print(
        f"token distillation, B·T = {args.batch}×{args.seq} = {n_tokens}, V = {args.vocab}, "
        f"H = {args.hidden}, fp32, kl, {args.ignored:.0%} ignored, torch {torch.__version__}, "
        f"{args.threads} threads, load {load()}",
        flush=True,
    )
    state = setup(**shape)
    nan = {"median": math.nan, "min": math.nan, "loss": math.nan}
    timing = (
        {k: nan for k in cases}
        if args.no_timing
        else time_cases({k: runner(k, state) for k in cases}, args.repeats)
    )
    del state
    gc.collect()
    memory: dict[str, dict] = {}
    if not args.no_memory:
        for case in cases:
            memory[case] = measure_memory(case, shape, args.threads)
    base_t = timing.get("materialised", {}).get("median", math.nan)
    base_m = memory.get("materialised", {}).get("extra")
    print("\n| path | fwd+bwd s (median) | vs materialised | extra memory | % of materialised |")
    print("|---|---|---|---|---|")
    for case in cases:
        extra = memory.get(case, {}).get("extra")
        pct = f"{100 * extra / base_m:.1f} %" if extra is not None and base_m else "—"
        t = timing[case]["median"]
        print(f"| {case} | {t:.2f} | {t / base_t:.2f}× | {fmt_mib(extra)} | {pct} |")
    losses = {k: v["loss"] for k, v in timing.items()}
    print(f"\nloss values: {losses}")
    fused_m = memory.get("fused", {}).get("extra")
    if fused_m is not None and base_m:
        verdict = "met" if fused_m <= 0.10 * base_m else "missed"
        print(f"target fused extra memory <= 10 % of materialised: {verdict}")
    errors = {k: v["error"] for k, v in memory.items() if "error" in v}
    if errors:
        print(f"memory errors: {errors}", file=sys.stderr)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"shape": shape, "timing": timing, "memory": memory}, fh, indent=1)


if __name__ == "__main__":
    main()

"""Benchmark of the row-chunked engine and the fused linear head (issue 3, section 5).

Compares, in one run and as ratios, forward + backward at N rows × V classes (fp32, gradient to
the student side as in distillation):

* ``floor``: a compiled single pass computing ``logsumexp`` of both inputs (forward only), the
  least any exact method must pay;
* ``(a)`` naive PyTorch ``F.kl_div(F.log_softmax(q), F.log_softmax(p), log_target=True)``;
* ``(b)`` TRL's GKD ``generalized_jsd_loss`` formulation (log-softmax both, ``logsumexp`` of the
  stacked mixture, two ``kl_div`` calls), re-implemented here;
* for every registered divergence, its straightforward PyTorch formulation (log-softmax both
  sides, the elementwise formula, a sum, autograd) against ``divergent.divergence(...,
  engine="chunked")`` with the compiled kernel, and the kernel alone (writing into a gradient
  buffer that is already paged in: the engine minus the first touch of the fresh N×V gradient);
* the N = 1k … 16k scaling of the engine (time per row, extra memory);
* bf16 inputs;
* small inputs, where ``engine="auto"`` hands over from the reference path to the engine;
* ``fused_linear_divergence`` at N × H × V against the materialised path (logits by matmul,
  then (a)).

Time: the median of ``--repeats`` runs, cases interleaved round by round so that load
changes hit all of them alike (this machine is shared). Memory: each case runs once more in a
fresh subprocess that builds its inputs, warms up (compiles) on a small slice, then resets the
kernel's peak-RSS counter (``/proc/self/clear_refs`` ← 5, which resets ``VmHWM``) and reports
``extra = VmHWM − RSS before the call − bytes of the gradients the caller receives``
(with ``ru_maxrss`` as a fallback where ``clear_refs`` is not writable).

Usage::

    python benchmarks/bench_engine.py                 # everything (~20-30 min on 2 busy cores)
    python benchmarks/bench_engine.py --quick         # small shapes, a smoke test
    python benchmarks/bench_engine.py --sections main,fused --repeats 5 --json out.json
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
import torch.nn.functional as F
from _memory import measure_peak_rss

import divergent
from divergent.categorical import kernels
from divergent.categorical.registry import get_divergence
from divergent.engine import chunked

NAMES = [
    "kl",
    "reverse_kl",
    "soft_cross_entropy",
    "js",
    "skew_kl",
    "skew_reverse_kl",
    "jeffreys",
    "tv",
    "hellinger",
    "pearson_chi2",
    "neyman_chi2",
    "alpha",
    "renyi",
]


# ------------------------------------------------------------------------------------------
# the formulations a user would write instead
# ------------------------------------------------------------------------------------------
def naive_rows(name: str, lp: torch.Tensor, lq: torch.Tensor) -> torch.Tensor:
    """The straightforward formula of each divergence at its default parameters."""
    p, q = lp.exp(), lq.exp()
    if name == "kl":
        return (p * (lp - lq)).sum(-1)
    if name == "reverse_kl":
        return (q * (lq - lp)).sum(-1)
    if name == "soft_cross_entropy":
        return -(p * lq).sum(-1)
    if name == "js":
        lm = (0.5 * (p + q)).log()
        return 0.5 * (p * (lp - lm)).sum(-1) + 0.5 * (q * (lq - lm)).sum(-1)
    if name == "skew_kl":
        return (p * (lp - (0.1 * p + 0.9 * q).log())).sum(-1)
    if name == "skew_reverse_kl":
        return (q * (lq - (0.1 * q + 0.9 * p).log())).sum(-1)
    if name == "jeffreys":
        return ((p - q) * (lp - lq)).sum(-1)
    if name == "tv":
        return 0.5 * (p - q).abs().sum(-1)
    if name == "hellinger":
        return 0.5 * (p.sqrt() - q.sqrt()).square().sum(-1)
    if name == "pearson_chi2":
        return ((p - q).square() / q).sum(-1)
    if name == "neyman_chi2":
        return ((p - q).square() / p).sum(-1)
    if name == "alpha":  # α = 0.5
        return ((0.5 * lp + 0.5 * lq).exp() - 0.5 * p - 0.5 * q).sum(-1) / -0.25
    if name == "renyi":  # order 0.5
        return torch.logsumexp(0.5 * lp + 0.5 * lq, -1) / -0.5
    raise ValueError(name)


def naive_loss(name: str, teacher: torch.Tensor, student: torch.Tensor) -> torch.Tensor:
    lp = F.log_softmax(teacher.float(), -1)
    lq = F.log_softmax(student.float(), -1)
    return naive_rows(name, lp, lq).mean()


def naive_kl_div(teacher: torch.Tensor, student: torch.Tensor) -> torch.Tensor:
    """(a): PyTorch's reversed-argument kl_div, KL(teacher ‖ student), batchmean."""
    return F.kl_div(
        F.log_softmax(student.float(), -1),
        F.log_softmax(teacher.float(), -1),
        log_target=True,
        reduction="batchmean",
    )


def trl_generalized_jsd(
    teacher: torch.Tensor, student: torch.Tensor, beta: float = 0.5, temperature: float = 1.0
) -> torch.Tensor:
    """(b): the TRL GKD loss formulation (re-implemented): stacked-mixture logsumexp, two kl_div."""
    s_lp = F.log_softmax(student.float() / temperature, -1)
    t_lp = F.log_softmax(teacher.float() / temperature, -1)
    b = torch.tensor(beta, dtype=s_lp.dtype)
    mixture = torch.logsumexp(torch.stack([s_lp + torch.log(1 - b), t_lp + torch.log(b)]), dim=0)
    kl_teacher = F.kl_div(mixture, t_lp, reduction="none", log_target=True)
    kl_student = F.kl_div(mixture, s_lp, reduction="none", log_target=True)
    jsd = beta * kl_teacher + (1 - beta) * kl_student
    return jsd.sum() / jsd.shape[0]


def _floor_fn(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.logsumexp(a, -1) + torch.logsumexp(b, -1)


_FLOOR = torch.compile(_floor_fn, dynamic=True)


# ------------------------------------------------------------------------------------------
# cases: name -> (setup(n, v, dtype) -> state, run(state) -> None)
# ------------------------------------------------------------------------------------------
def make_logits(n: int, v: int, dtype: torch.dtype, seed: int = 0) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(seed)
    teacher = (torch.randn(n, v, generator=gen) * 2).to(dtype)
    student = (torch.randn(n, v, generator=gen) * 2).to(dtype).requires_grad_(True)
    return teacher, student


def case_runner(case: str, teacher: torch.Tensor, student: torch.Tensor) -> Callable[[], Any]:
    """A callable doing forward + backward (or the floor's forward) for ``case``."""
    kind, _, name = case.partition(":")

    def backward(loss: torch.Tensor) -> None:
        student.grad = None
        loss.backward()

    if kind == "floor":
        return lambda: _FLOOR(teacher.float(), student.detach().float())
    if kind == "alloc":  # a fresh N×V gradient, first touch (what any fresh gradient costs)
        return lambda: torch.empty_like(student).fill_(0.0)
    if kind == "naive_kl_div":
        return lambda: backward(naive_kl_div(teacher, student))
    if kind == "trl":
        return lambda: backward(trl_generalized_jsd(teacher, student))
    if kind == "naive":
        return lambda: backward(naive_loss(name, teacher, student))
    if kind == "reference":
        return lambda: backward(divergent.divergence(name, teacher, student, engine="reference"))
    if kind == "engine":
        return lambda: backward(divergent.chunked_divergence(name, teacher, student, compile=True))
    if kind == "engine_both":
        teacher.requires_grad_(True)

        def both() -> None:
            teacher.grad = None
            backward(divergent.chunked_divergence(name, teacher, student, compile=True))

        return both
    if kind == "kernel":
        return kernel_only(name, teacher, student)
    raise ValueError(case)


def kernel_only(name: str, teacher: torch.Tensor, student: torch.Tensor) -> Callable[[], Any]:
    """The compiled chunk kernel over all rows into an already paged-in gradient buffer."""
    spec = get_divergence(name)
    plan = kernels.kernel_for(spec, spec.bind({}))
    assert plan is not None
    n, v = student.shape
    dtype = torch.float32
    run = chunked._ChunkRunner(plan.kernel, dtype, (False, True), compiled=True)
    consts = plan.tensors(dtype, student.device)
    temperature = torch.tensor(1.0)
    scale = torch.tensor(1.0 / n)
    grad = torch.zeros_like(student)
    rows = chunked.default_chunk_rows(v, student.device, "compiled")
    s = student.detach()

    def go() -> None:
        for i in range(0, n, rows):
            run(
                teacher[i : i + rows],
                s[i : i + rows],
                None,
                grad[i : i + rows],
                temperature,
                scale,
                consts,
            )

    return go


# ------------------------------------------------------------------------------------------
# memory: one case in a fresh process
# ------------------------------------------------------------------------------------------
def measure_memory_here(case: str, n: int, v: int, dtype: torch.dtype, h: int = 0) -> dict:
    """Run ``case`` once after a warm-up; peak RSS above the pre-call RSS, minus the gradients."""
    if case.startswith("fused") or case.startswith("materialised"):
        state = fused_setup(n, h, v, dtype)
        warm_state = fused_setup(64, h, v, dtype)
        fused_runner(case, warm_state)()
        del warm_state
        run = fused_runner(case, state)
        grads_of = state["params"]
    else:
        teacher, student = make_logits(n, v, dtype)
        case_runner(case, teacher[:64].clone(), student[:64].detach().clone().requires_grad_())()
        run = case_runner(case, teacher, student)
        grads_of = [teacher, student]
    base, peak, method = measure_peak_rss(run)
    grads = sum(
        t.grad.numel() * t.grad.element_size()
        for t in grads_of
        if isinstance(t, torch.Tensor) and t.grad is not None
    )
    return {
        "case": case,
        "peak_over_base": (peak - base) * 1024,
        "grad_bytes": grads,
        "extra": (peak - base) * 1024 - grads,
        "method": method,
    }


def measure_memory(case: str, n: int, v: int, dtype: str = "float32", h: int = 0) -> dict:
    cmd = [
        sys.executable,
        os.path.abspath(__file__),
        "--mem-case",
        case,
        "--n",
        str(n),
        "--v",
        str(v),
        "--dtype",
        dtype,
        "--h",
        str(h),
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=3600)
    for line in out.stdout.splitlines()[::-1]:
        if line.startswith("{"):
            return json.loads(line)
    return {"case": case, "error": (out.stderr or out.stdout)[-500:]}


# ------------------------------------------------------------------------------------------
# fused linear
# ------------------------------------------------------------------------------------------
def fused_setup(n: int, h: int, v: int, dtype: torch.dtype) -> dict:
    gen = torch.Generator().manual_seed(1)
    hs = (torch.randn(n, h, generator=gen)).to(dtype).requires_grad_(True)
    ws = (torch.randn(v, h, generator=gen) / math.sqrt(h)).to(dtype).requires_grad_(True)
    ht = (torch.randn(n, h, generator=gen)).to(dtype)
    wt = (torch.randn(v, h, generator=gen) / math.sqrt(h)).to(dtype)
    return {"hs": hs, "ws": ws, "ht": ht, "wt": wt, "params": [hs, ws]}


def fused_runner(case: str, st: dict) -> Callable[[], Any]:
    hs, ws, ht, wt = st["hs"], st["ws"], st["ht"], st["wt"]

    def zero() -> None:
        hs.grad = None
        ws.grad = None

    if case == "fused":

        def run() -> None:
            zero()
            loss = divergent.fused_linear_divergence(
                "kl",
                student_hidden=hs,
                student_weight=ws,
                teacher_hidden=ht,
                teacher_weight=wt,
                compile=True,
            )
            loss.backward()

        return run
    if case == "materialised":  # logits by matmul, then (a)

        def run() -> None:
            zero()
            with torch.no_grad():
                zt = ht @ wt.T
            loss = naive_kl_div(zt, hs @ ws.T)
            loss.backward()

        return run
    if case == "materialised_engine":  # logits by matmul, then the chunked engine

        def run() -> None:
            zero()
            with torch.no_grad():
                zt = ht @ wt.T
            loss = divergent.chunked_divergence("kl", zt, hs @ ws.T, compile=True)
            loss.backward()

        return run
    raise ValueError(case)


# ------------------------------------------------------------------------------------------
# timing
# ------------------------------------------------------------------------------------------
def time_cases(
    runners: dict[str, Callable[[], Any]], repeats: int, slow: set[str] | None = None
) -> dict[str, dict[str, float]]:
    """Median / min wall time per case; cases interleaved round by round."""
    slow = slow or set()
    times: dict[str, list[float]] = {k: [] for k in runners}
    for k, fn in runners.items():  # warm-up (compilation) outside the timing
        t0 = time.perf_counter()
        fn()
        times[k].append(-(time.perf_counter() - t0))  # negative: the warm-up, dropped below
    for r in range(repeats):
        for k, fn in runners.items():
            if k in slow and r >= max(2, repeats // 2):
                continue
            gc.collect()
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    out = {}
    for k, ts in times.items():
        kept = [t for t in ts if t >= 0]
        out[k] = {
            "median": statistics.median(kept),
            "min": min(kept),
            "n": len(kept),
            "first": -ts[0],
        }
    return out


def load() -> str:
    with contextlib.suppress(OSError):
        with open("/proc/loadavg") as fh:
            return " ".join(fh.read().split()[:3])
    return "?"


def fmt_b(x: float | None) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    return f"{x / 2**20:,.0f} MiB"


# ------------------------------------------------------------------------------------------
# sections
# ------------------------------------------------------------------------------------------
def section_main(n: int, v: int, repeats: int, names: list[str], memory: bool) -> dict:
    teacher, student = make_logits(n, v, torch.float32)
    runners: dict[str, Callable[[], Any]] = {
        "floor": case_runner("floor", teacher, student),
        "alloc": case_runner("alloc", teacher, student),
        "naive_kl_div": case_runner("naive_kl_div", teacher, student),
        "trl": case_runner("trl", teacher, student),
        "reference:kl": case_runner("reference:kl", teacher, student),
        "engine_both:kl": case_runner("engine_both:kl", teacher.clone(), student),
    }
    for name in names:
        runners[f"naive:{name}"] = case_runner(f"naive:{name}", teacher, student)
        runners[f"engine:{name}"] = case_runner(f"engine:{name}", teacher, student)
        runners[f"kernel:{name}"] = case_runner(f"kernel:{name}", teacher, student)
    slow = {"trl"} | {k for k in runners if k.startswith("naive") or k.startswith("reference")}
    t = time_cases(runners, repeats, slow)
    # sanity: the engine's value equals the straightforward one
    checks = {}
    with torch.no_grad():
        for name in names:
            e = float(divergent.chunked_divergence(name, teacher[:256], student[:256]))
            r = float(naive_loss(name, teacher[:256], student[:256]))
            checks[name] = abs(e - r) / max(abs(r), 1e-12)
    mem = {}
    if memory:
        for case in ["naive_kl_div", "trl", "engine_both:kl"] + [f"engine:{x}" for x in names]:
            mem[case] = measure_memory(case, n, v)
            print(f"  memory {case}: {fmt_b(mem[case].get('extra'))}", flush=True)
    return {"times": t, "checks": checks, "memory": mem}


def print_main(res: dict, n: int, v: int, names: list[str]) -> None:
    t, mem = res["times"], res["memory"]
    fl = t["floor"]["median"]
    a_mem = mem.get("naive_kl_div", {}).get("extra")
    print(f"\n### Forward + backward, N={n}, V={v}, fp32, gradient to the student\n")
    print(
        f"floor (c) compiled logsumexp of both: {fl:.3f} s;  fresh N×V fp32 gradient, "
        f"allocation + first touch: {t['alloc']['median']:.3f} s"
    )
    print(
        f"(a) naive F.kl_div: {t['naive_kl_div']['median']:.3f} s, extra "
        f"{fmt_b(a_mem)};  (b) TRL GKD formulation: {t['trl']['median']:.3f} s, extra "
        f"{fmt_b(mem.get('trl', {}).get('extra'))}"
    )
    print(
        f"reference path (autograd through the row function), kl: "
        f"{t['reference:kl']['median']:.3f} s;  engine kl, both sides: "
        f"{t['engine_both:kl']['median']:.3f} s, extra "
        f"{fmt_b(mem.get('engine_both:kl', {}).get('extra'))}\n"
    )
    print(
        "| divergence | naive s | engine s | speed-up | engine/floor | kernel s | kernel/floor "
        "| extra mem | % of (a) | value check |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name in names:
        nv = t[f"naive:{name}"]["median"]
        en = t[f"engine:{name}"]["median"]
        ke = t[f"kernel:{name}"]["median"]
        ex = mem.get(f"engine:{name}", {}).get("extra")
        pct = f"{100 * ex / a_mem:.1f} %" if ex is not None and a_mem else "—"
        print(
            f"| {name} | {nv:.3f} | {en:.3f} | {nv / en:.1f}× | {en / fl:.2f}× | {ke:.3f} | "
            f"{ke / fl:.2f}× | {fmt_b(ex)} | {pct} | {res['checks'][name]:.1e} |"
        )
    js = t["engine:js"]["median"] if "engine:js" in t else float("nan")
    print(
        f"\n(b) / engine js: {t['trl']['median'] / js:.1f}×;  (a) / engine kl: "
        f"{t['naive_kl_div']['median'] / t['engine:kl']['median']:.1f}×"
    )


def section_scaling(ns: list[int], v: int, repeats: int, memory: bool, naive_max: int) -> dict:
    out = {}
    for n in ns:
        teacher, student = make_logits(n, v, torch.float32)
        runners = {
            "floor": case_runner("floor", teacher, student),
            "engine:kl": case_runner("engine:kl", teacher, student),
        }
        if n <= naive_max:
            runners["naive_kl_div"] = case_runner("naive_kl_div", teacher, student)
        t = time_cases(runners, repeats, {"naive_kl_div"})
        row = {"times": t}
        del teacher, student, runners
        gc.collect()
        if memory:
            row["mem_engine"] = measure_memory("engine:kl", n, v)
            if n <= naive_max:
                row["mem_naive"] = measure_memory("naive_kl_div", n, v)
        out[n] = row
        print(f"  scaling N={n} done", flush=True)
    return out


def print_scaling(res: dict, v: int) -> None:
    print(f"\n### Scaling in N (V={v}, fp32, kl, forward + backward)\n")
    print(
        "| N | engine s | engine µs/row | floor s | engine extra mem | naive (a) s "
        "| (a) extra mem |"
    )
    print("|---|---|---|---|---|---|---|")
    for n, row in res.items():
        t = row["times"]
        en = t["engine:kl"]["median"]
        nv = t.get("naive_kl_div", {}).get("median")
        print(
            f"| {n} | {en:.3f} | {1e6 * en / n:.0f} | {t['floor']['median']:.3f} | "
            f"{fmt_b(row.get('mem_engine', {}).get('extra'))} | "
            f"{'—' if nv is None else f'{nv:.3f}'} | "
            f"{fmt_b(row.get('mem_naive', {}).get('extra'))} |"
        )


def section_bf16(n: int, v: int, repeats: int, memory: bool) -> dict:
    teacher, student = make_logits(n, v, torch.bfloat16)
    runners = {
        "floor": case_runner("floor", teacher, student),
        "naive_kl_div": case_runner("naive_kl_div", teacher, student),
        "engine:kl": case_runner("engine:kl", teacher, student),
        "naive:js": case_runner("naive:js", teacher, student),
        "engine:js": case_runner("engine:js", teacher, student),
    }
    t = time_cases(runners, repeats, {"naive_kl_div", "naive:js"})
    mem = {}
    if memory:
        for case in ("naive_kl_div", "engine:kl", "engine:js"):
            mem[case] = measure_memory(case, n, v, dtype="bfloat16")
    return {"times": t, "memory": mem}


def print_bf16(res: dict, n: int, v: int) -> None:
    t, mem = res["times"], res["memory"]
    print(f"\n### bf16 inputs (N={n}, V={v}; computed in fp32, bf16 gradient)\n")
    print("| case | time s | extra mem |")
    print("|---|---|---|")
    for k in ("floor", "naive_kl_div", "engine:kl", "naive:js", "engine:js"):
        print(f"| {k} | {t[k]['median']:.3f} | {fmt_b(mem.get(k, {}).get('extra'))} |")


def section_small(repeats: int) -> dict:
    """Where ``engine="auto"`` switches: reference path vs the eager engine on small inputs."""
    out = {}
    for n, v in ((16, 1024), (64, 1024), (256, 1024), (64, 32000), (256, 32000)):
        teacher, student = make_logits(n, v, torch.float32)

        def ref(t=teacher, s=student) -> None:
            s.grad = None
            divergent.divergence("js", t, s, engine="reference").backward()

        def eng(t=teacher, s=student) -> None:
            s.grad = None
            divergent.chunked_divergence("js", t, s, compile=False).backward()

        out[(n, v)] = time_cases({"reference": ref, "eager engine": eng}, repeats * 4)
    return out


def print_small(res: dict) -> None:
    print("\n### Small inputs: reference path vs eager engine (js, forward + backward)\n")
    print("| rows × classes | elements | reference ms | eager engine ms |")
    print("|---|---|---|---|")
    for (n, v), t in res.items():
        print(
            f"| {n} × {v} | {n * v:,} | {1e3 * t['reference']['median']:.2f} | "
            f"{1e3 * t['eager engine']['median']:.2f} |"
        )


def section_fused(n: int, h: int, v: int, repeats: int, memory: bool) -> dict:
    st = fused_setup(n, h, v, torch.float32)
    runners = {k: fused_runner(k, st) for k in ("fused", "materialised", "materialised_engine")}
    t = time_cases(runners, repeats)
    mem = {}
    if memory:
        del st, runners
        gc.collect()
        for case in ("fused", "materialised", "materialised_engine"):
            mem[case] = measure_memory(case, n, v, h=h)
            print(f"  memory {case}: {fmt_b(mem[case].get('extra'))}", flush=True)
    return {"times": t, "memory": mem}


def print_fused(res: dict, n: int, h: int, v: int) -> None:
    t, mem = res["times"], res["memory"]
    base_t = t["materialised"]["median"]
    base_m = mem.get("materialised", {}).get("extra")
    print(
        f"\n### Fused linear head, N={n}, H={h}, V={v}, fp32, kl, student hidden + weight grads\n"
    )
    print("| path | time s | vs materialised | extra mem | % of materialised |")
    print("|---|---|---|---|---|")
    for k in ("materialised", "materialised_engine", "fused"):
        ex = mem.get(k, {}).get("extra")
        pct = f"{100 * ex / base_m:.1f} %" if ex is not None and base_m else "—"
        print(
            f"| {k} | {t[k]['median']:.2f} | {t[k]['median'] / base_t:.2f}× | {fmt_b(ex)} | {pct} |"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small shapes (smoke test)")
    ap.add_argument("--sections", default="main,scaling,bf16,small,fused")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--no-memory", action="store_true")
    ap.add_argument("--json", default=None, help="also write the raw numbers here")
    ap.add_argument("--mem-case", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, default=4096, help=argparse.SUPPRESS)
    ap.add_argument("--v", type=int, default=32000, help=argparse.SUPPRESS)
    ap.add_argument("--h", type=int, default=1024, help=argparse.SUPPRESS)
    ap.add_argument("--dtype", default="float32", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.mem_case:
        print(
            json.dumps(
                measure_memory_here(
                    args.mem_case, args.n, args.v, getattr(torch, args.dtype), args.h
                )
            )
        )
        return
    q = args.quick
    n, v, h = (256, 4000, 128) if q else (4096, 32000, 1024)
    ns = [128, 256, 512] if q else [1024, 2048, 4096, 8192, 16384]
    sections = args.sections.split(",")
    memory = not args.no_memory
    print(
        f"# bench_engine  {time.strftime('%Y-%m-%d %H:%M')}  torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, load before: {load()}",
        flush=True,
    )
    results: dict[str, Any] = {"load_before": load(), "threads": torch.get_num_threads()}
    if "main" in sections:
        results["main"] = section_main(n, v, args.repeats, NAMES, memory)
        print_main(results["main"], n, v, NAMES)
    if "scaling" in sections:
        results["scaling"] = section_scaling(
            ns, v, max(3, args.repeats - 2), memory, naive_max=ns[-2]
        )
        print_scaling(results["scaling"], v)
    if "bf16" in sections:
        results["bf16"] = section_bf16(n, v, args.repeats, memory)
        print_bf16(results["bf16"], n, v)
    if "small" in sections:
        results["small"] = {f"{k[0]}x{k[1]}": t for k, t in (section_small(args.repeats)).items()}
        print_small({tuple(map(int, k.split("x"))): t for k, t in results["small"].items()})
    if "fused" in sections:
        results["fused"] = section_fused(n, h, v, max(3, args.repeats - 2), memory)
        print_fused(results["fused"], n, h, v)
    results["load_after"] = load()
    print(f"\nload after: {results['load_after']}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=1, default=str)


if __name__ == "__main__":
    main()

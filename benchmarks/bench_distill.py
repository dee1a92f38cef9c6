"""Benchmark of classifier distillation (issue 9, Performance): two ratios in one run.

1. **KD step / CE step** on the same student: one optimiser step (forward, loss, backward,
   AdamW) of the ``divergent distill`` student (MLP 64→16→10) on digits batches of 64, with
   the teacher's logits precomputed (as the trainer does), for ``kd:<divergence>`` with
   several divergences against the cross-entropy-only step (``ce``). Target ≤ 1.3×. The same
   ratios are measured for a larger configuration (MLP 64→512→512→10, batches of 512), where
   the arithmetic of the model rather than the per-call overhead of the loss dominates.
2. **Trainer overhead**: :class:`divergent.train.ClassifierTrainer` exactly as
   ``divergent distill`` runs it (checkpoints every quarter of the run and at every epoch
   end, a rich progress bar, the held-out evaluation each epoch, the cosine schedule) against
   a bare PyTorch loop doing the same steps (same model, objective, optimiser, schedule and
   batches; no checkpoint, progress or evaluation). Target ≤ 10 %.

Time: medians over ``--repeats`` rounds (``--repeats + 2`` for the overhead), cases
interleaved round by round so that load changes on this shared machine hit all of them alike;
one PyTorch thread (as the job). The overhead is also given in CPU time of the process (all
threads: the checkpoint writer and rich's refresh thread included), which a busy machine
disturbs less than wall time.

Usage::

    python benchmarks/bench_distill.py                  # ~2-4 min on 2 busy cores
    python benchmarks/bench_distill.py --repeats 3 --quick
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import tempfile
import time

import torch
from rich.console import Console
from rich.progress import Progress

from divergent.objectives import make_objective
from divergent.train import ClassifierTrainer, load_digits_task
from divergent.train.small_models import mlp

DIVERGENCES = ["kl", "reverse_kl", "js", "tv", "alpha", "hellinger"]


def _step_time(objective_id: str, hidden: list[int], batch: int, steps: int, task) -> float:
    """Seconds per optimiser step (median-free: one timed block of ``steps`` steps)."""
    x, y = task.x_train, task.y_train
    teacher = mlp(64, [256, 256], 10, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        teacher_logits = teacher(x)
    student = mlp(64, hidden, 10, generator=torch.Generator().manual_seed(1))
    objective = make_objective(objective_id)
    optimizer = torch.optim.AdamW(student.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(2)
    batches = [torch.randint(0, x.shape[0], (batch,), generator=gen) for _ in range(steps + 5)]
    for i, idx in enumerate(batches):
        if i == 5:
            start = time.perf_counter()
        loss = objective(student(x[idx]), teacher_logits[idx], y[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return (time.perf_counter() - start) / steps


def _bare_loop(task, objective_id: str, epochs: int, batch: int, lr: float):
    """(wall seconds, CPU seconds of this process) of a plain loop doing the trainer's steps."""
    x, y = task.x_train, task.y_train
    teacher = mlp(64, [256, 256], 10, generator=torch.Generator().manual_seed(12345))
    student = mlp(64, [16], 10, generator=torch.Generator().manual_seed(1000))
    objective = make_objective(objective_id)
    start, cpu = time.perf_counter(), time.process_time()
    with torch.no_grad():
        teacher_logits = teacher(x)
    optimizer = torch.optim.AdamW(student.parameters(), lr=lr)
    steps_per_epoch = -(-x.shape[0] // batch)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps_per_epoch * epochs)
    gen = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        for idx in torch.randperm(x.shape[0], generator=gen).split(batch):
            loss = objective(student(x[idx]), teacher_logits[idx], y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
    return time.perf_counter() - start, time.process_time() - cpu


def _trainer(task, objective_id: str, epochs: int, batch: int, lr: float):
    """(wall seconds, CPU seconds of this process, all threads) of ClassifierTrainer.fit."""
    teacher = mlp(64, [256, 256], 10, generator=torch.Generator().manual_seed(12345))
    student = mlp(64, [16], 10, generator=torch.Generator().manual_seed(1000))
    total = -(-task.x_train.shape[0] // batch) * epochs
    with tempfile.TemporaryDirectory() as folder:
        # as the CLI: a rich bar refreshed 4 times a second (rendered into a buffer here)
        progress = Progress(
            console=Console(file=io.StringIO(), force_terminal=True), refresh_per_second=4
        )
        with progress:
            start, cpu = time.perf_counter(), time.process_time()
            ClassifierTrainer(
                student,
                teacher,
                make_objective(objective_id),
                (task.x_train, task.y_train),
                epochs=epochs,
                batch_size=batch,
                lr=lr,
                scheduler=lambda opt, steps: torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps),
                eval_data=(task.x_test, task.y_test),
                checkpoint_dir=folder,
                checkpoint_every=max(1, total // 4),
                progress=progress,
            ).fit()
            return time.perf_counter() - start, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=200, help="timed steps per case (ratio 1)")
    parser.add_argument("--epochs", type=int, default=30, help="epochs of the overhead runs")
    parser.add_argument("--quick", action="store_true", help="fewer steps and epochs")
    parser.add_argument("--json", help="write the numbers to this file")
    parser.add_argument(
        "--sections", default="steps,overhead", help="comma-separated: steps, overhead"
    )
    args = parser.parse_args()
    if args.quick:
        args.steps, args.epochs = 50, 5
    torch.set_num_threads(1)
    task = load_digits_task()
    load_before = os.getloadavg()[0]

    configs = {
        "distill student 64-16-10, batch 64": ([16], 64),
        "larger student 64-512-512-10, batch 512": ([512, 512], 512),
    }
    ids = ["ce", *(f"kd:{d}" for d in DIVERGENCES)]
    times: dict[tuple[str, str], list[float]] = {}
    sections = set(args.sections.split(","))
    for _ in range(args.repeats if "steps" in sections else 0):
        for label, (hidden, batch) in configs.items():
            for objective_id in ids:
                t = _step_time(objective_id, hidden, batch, args.steps, task)
                times.setdefault((label, objective_id), []).append(t)
    overhead: dict[str, list[tuple[float, float]]] = {"bare": [], "trainer": []}
    for _ in range(args.repeats + 2 if "overhead" in sections else 0):
        overhead["bare"].append(_bare_loop(task, "kd", args.epochs, 64, 1e-2))
        overhead["trainer"].append(_trainer(task, "kd", args.epochs, 64, 1e-2))
    load_after = os.getloadavg()[0]

    results: dict[str, object] = {"load_before": load_before, "load_after": load_after}
    print(
        f"torch {torch.__version__}, 1 thread, {args.repeats} rounds; "
        f"load average {load_before:.2f} before, {load_after:.2f} after\n"
    )
    if "steps" in sections:
        _print_steps(configs, ids, times, results)
    if "overhead" in sections:
        _print_overhead(task, args.epochs, overhead, results)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=2)


def _print_steps(configs, ids, times, results) -> None:
    print("## KD step / CE step (same student, teacher logits precomputed)\n")
    print("| configuration | objective | median step (ms) | / ce |")
    print("|---|---|---|---|")
    ratios = {}
    for label in configs:
        ce = statistics.median(times[(label, "ce")])
        for objective_id in ids:
            med = statistics.median(times[(label, objective_id)])
            ratios[f"{label} | {objective_id}"] = med / ce
            print(f"| {label} | {objective_id} | {1e3 * med:.3f} | {med / ce:.2f} |")
    results["step_ratio"] = ratios


def _print_overhead(task, epochs, overhead, results) -> None:
    bare = statistics.median(w for w, _ in overhead["bare"])
    trainer = statistics.median(w for w, _ in overhead["trainer"])
    bare_cpu = statistics.median(c for _, c in overhead["bare"])
    trainer_cpu = statistics.median(c for _, c in overhead["trainer"])
    steps = -(-task.x_train.shape[0] // 64) * epochs
    print(f"\n## Trainer overhead (kd, {epochs} epochs = {steps} steps of 64)\n")
    print("| loop | median wall (s) | / bare | median CPU (s) | / bare |")
    print("|---|---|---|---|---|")
    print(f"| bare PyTorch | {bare:.3f} | 1.00 | {bare_cpu:.3f} | 1.00 |")
    print(
        f"| ClassifierTrainer (checkpoints, progress, eval) | {trainer:.3f} | "
        f"{trainer / bare:.3f} | {trainer_cpu:.3f} | {trainer_cpu / bare_cpu:.3f} |"
    )
    results["overhead"] = {
        "bare_s": bare,
        "trainer_s": trainer,
        "ratio": trainer / bare,
        "bare_cpu_s": bare_cpu,
        "trainer_cpu_s": trainer_cpu,
        "cpu_ratio": trainer_cpu / bare_cpu,
        "rounds": overhead,
    }


if __name__ == "__main__":
    main()

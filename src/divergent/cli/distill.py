"""``divergent distill``: train a teacher once, distil a smaller student per objective × seed.

``--task classifier`` (default): MLPs on scikit-learn's digits or a user's table
(:mod:`divergent.train.distill_job`). ``--task lm``: GPT-2 language models on Python's own
``pydoc_data.topics`` text, or a user's Hugging Face folders (:mod:`divergent.integrations.lm_job`).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from divergent.cli._app import console, fail
from divergent.integrations.lm_defaults import DEFAULT_LM_OBJECTIVES, QUICK_LM_OBJECTIVES
from divergent.train.checkpoint import CheckpointError
from divergent.train.classifier import NonFiniteLossError
from divergent.train.data import DataError
from divergent.train.distill_job import (
    DEFAULT_OBJECTIVES,
    QUICK_OBJECTIVES,
    DistillConfig,
    DistillError,
    run_distill,
)

app = typer.Typer(add_completion=False, rich_markup_mode=None)
"""This group's commands (the root app in :mod:`divergent.cli._app` loads them lazily)."""


_CLASSIFIER_ONLY = ("--epochs", "--teacher-epochs", "--data")
_LM_ONLY = (
    "--steps",
    "--teacher-steps",
    "--student",
    "--block-size",
    "--vocab-size",
    "--batch-size",
)


def _progress() -> Progress:
    """Transient progress bars on a terminal; none (disabled) when stdout is a file or a pipe,
    where rich would only leave a blank line behind (before an error message, say)."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        refresh_per_second=4,
        disable=not console.is_interactive,
    )


def _say(text: str) -> None:
    """One line on stdout as written (no rich highlighting, no wrapping)."""
    console.print(text, highlight=False, soft_wrap=True)


def _run_job(
    run: Callable[..., dict[str, Any]],
    config: Any,
    out: Path,
    on_run: Callable[[dict[str, Any]], None],
) -> dict[str, Any]:
    """Run a distillation job (``run_distill`` or ``run_lm_distill``) under progress bars and
    return its report; ``--resume`` says how many finished runs it keeps and how many it trains.

    Every failure is one line on stderr: bad input exits with 2, a diverged training with 1,
    Ctrl-C with 130 (saying how to resume).
    """

    def on_resume(kept: int, to_run: int) -> None:
        _say(f"--resume: skipping {kept} finished run(s) in {out}; {to_run} run(s) to train")

    try:
        with _progress() as progress:
            return run(config, progress=progress, on_run=on_run, on_resume=on_resume)
    except (DistillError, DataError, CheckpointError) as err:
        raise fail(str(err)) from None
    except NonFiniteLossError as err:
        raise fail(f"training diverged: {err}", code=1) from None
    except KeyboardInterrupt:
        raise fail(f"interrupted; rerun with --resume --out {out} to continue", 130) from None


def _say_files(out: Path, report: dict[str, Any]) -> None:
    """The last line: where the report, its JSON and the plots are, and the job's time."""
    _say(
        f"report: {out / 'report.md'}   json: {out / 'report.json'}   plots: {out / 'plots'}"
        f"   ({report['seconds']:.0f} s)"
    )


@app.command("distill")
def distill_command(
    objectives: Annotated[
        list[str] | None,
        typer.Option(
            "--objectives",
            "-o",
            help="Objective ids, repeated or comma-separated. --task classifier: ce, kd, "
            "kd:<divergence> (any registered name: kd:reverse_kl, kd:js, kd:tv, kd:alpha ...), "
            f"dkd, dist, lskd, ofa, pld, sinkd, bdkd; default: {', '.join(DEFAULT_OBJECTIVES)}; "
            f"with --quick: {', '.join(QUICK_OBJECTIVES)}. --task lm: ce, kd:<divergence>, "
            f"gkd:<lmbda>[:<beta>] (on-policy); default: {', '.join(DEFAULT_LM_OBJECTIVES)}; "
            f"with --quick: {', '.join(QUICK_LM_OBJECTIVES)}. ce is always run as the baseline.",
        ),
    ] = None,
    task: Annotated[
        str,
        typer.Option(
            "--task",
            help="classifier (MLPs on digits or --data) or lm (GPT-2 language models on "
            "Python's pydoc text, or --teacher/--student Hugging Face folders).",
        ),
    ] = "classifier",
    seeds: Annotated[
        int | None,
        typer.Option(help="Students per objective (seeds 0..N-1). Default 3; lm: 2, quick 1."),
    ] = None,
    epochs: Annotated[
        int | None, typer.Option(help="Student epochs (default 30; 12 with --quick).")
    ] = None,
    quick: Annotated[
        bool,
        typer.Option("--quick", help="Small version (classifier: under a minute; lm: ~2 min)."),
    ] = False,
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Output folder (default runs/distill; lm: runs/distill-lm)."),
    ] = None,
    resume: Annotated[
        bool,
        typer.Option("--resume", help="Keep finished runs in --out, continue interrupted ones."),
    ] = False,
    device: Annotated[str, typer.Option(help="cpu, cuda, cuda:N or auto.")] = "cpu",
    data: Annotated[
        Path | None,
        typer.Option(
            "--data",
            help=".npz (X, y) or .csv (label column 'label'/'target'/'y'/'class' or the last) "
            "of features and integer labels 0..C-1. Default: scikit-learn's digits.",
        ),
    ] = None,
    teacher: Annotated[
        Path | None,
        typer.Option(
            "--teacher",
            help="classifier: a teacher.ckpt from an earlier run; lm: a Hugging Face causal-LM "
            "folder (model + tokenizer) instead of the GPT-2 trained and cached in --out.",
        ),
    ] = None,
    teacher_epochs: Annotated[
        int | None,
        typer.Option(help="Epochs of the teacher (trained once, then cached). Default 20."),
    ] = None,
    student: Annotated[
        Path | None,
        typer.Option("--student", help="lm: a Hugging Face causal-LM folder to distil into."),
    ] = None,
    steps: Annotated[
        int | None, typer.Option(help="lm: optimiser steps per student (300; quick 80).")
    ] = None,
    teacher_steps: Annotated[
        int | None, typer.Option(help="lm: teacher steps (400; quick 300), then cached.")
    ] = None,
    block_size: Annotated[
        int | None, typer.Option(help="lm: tokens per training block (128; quick 64).")
    ] = None,
    vocab_size: Annotated[
        int | None, typer.Option(help="lm: size of the BPE vocabulary trained (4096; quick 1024).")
    ] = None,
    batch_size: Annotated[
        int | None, typer.Option(help="lm: blocks per step and process (16).")
    ] = None,
) -> None:
    """Distil a teacher into a smaller student with each objective; print the table.

    Trains the teacher once (cached in --out), then a student per objective × seed plus the
    CE-only baseline, and writes report.json, report.md and plots/ to --out. --task lm does
    the same for GPT-2 language models on Python's own pydoc text (no network).
    """
    given = {
        "--epochs": epochs,
        "--teacher-epochs": teacher_epochs,
        "--data": data,
        "--steps": steps,
        "--teacher-steps": teacher_steps,
        "--student": student,
        "--block-size": block_size,
        "--vocab-size": vocab_size,
        "--batch-size": batch_size,
    }
    if task not in ("classifier", "lm"):
        raise fail(f"--task must be classifier or lm, got {task!r}")
    other, wrong = ("lm", _LM_ONLY) if task == "classifier" else ("classifier", _CLASSIFIER_ONLY)
    for flag in wrong:
        if given[flag] is not None:
            raise fail(f"{flag} is an option of --task {other}, not --task {task}")
    if task == "lm":
        _distill_lm(
            objectives=tuple(objectives) if objectives else None,
            seeds=seeds,
            steps=steps,
            teacher_steps=teacher_steps,
            quick=quick,
            out=out if out is not None else Path("runs/distill-lm"),
            resume=resume,
            teacher=teacher,
            student=student,
            device=device,
            vocab_size=vocab_size,
            block_size=block_size,
            **({"batch_size": batch_size} if batch_size is not None else {}),
        )
        return
    out = out if out is not None else Path("runs/distill")
    config = DistillConfig(
        objectives=tuple(objectives) if objectives else None,
        seeds=seeds if seeds is not None else 3,
        epochs=epochs,
        quick=quick,
        out=out,
        resume=resume,
        device=device,
        data=data,
        teacher=teacher,
        teacher_epochs=teacher_epochs if teacher_epochs is not None else 20,
    )

    def on_run(record: dict[str, Any]) -> None:
        _say(
            f"  {record['objective']:<14} seed {record['seed']}  acc {record['accuracy']:.4f}  "
            f"ECE {record['ece']:.4f}  NLL {record['nll']:.4f}  "
            f"fidelity {record['fidelity']:.4f}  ({record['seconds']:.1f} s)"
        )
        caught = record.get("warnings", {})
        if caught.get("count"):
            console.print(
                f"    [yellow]{caught['count']} warning(s)[/yellow] during training, e.g. "
                f"{caught['distinct'][0][:160]}",
                highlight=False,
                soft_wrap=True,
            )

    report = _run_job(run_distill, config, out, on_run)
    teacher_row = report["teacher"]
    table = Table(
        title=f"divergent distill: {report['task']} (teacher {teacher_row['parameters']:,} "
        f"parameters → student {report['student']['parameters']:,}; "
        f"{report['settings']['seeds']} seed(s), {report['settings']['epochs']} epochs)"
    )
    for column in ("objective", "accuracy (mean ± sd)", "ECE", "NLL", "fidelity", "seconds"):
        table.add_column(column, justify="left" if column == "objective" else "right")
    table.add_row(
        "teacher",
        f"{teacher_row['accuracy']:.4f}",
        f"{teacher_row['ece']:.4f}",
        f"{teacher_row['nll']:.4f}",
        "—",
        "—",
    )
    for row in report["summary"]:
        table.add_row(
            row["objective"],
            f"{row['accuracy_mean']:.4f} ± {row['accuracy_sd']:.4f}",
            f"{row['ece_mean']:.4f}",
            f"{row['nll_mean']:.4f}",
            f"{row['fidelity_mean']:.4f}",
            f"{row['seconds_mean']:.1f}",
        )
    console.print(table)
    _say_files(out, report)


_HF_EXTRA = ("transformers", "tokenizers", "accelerate")
"""Top-level packages of the ``hf`` extra: an ImportError of one of them means 'install it'."""


def _distill_lm(**settings: object) -> None:
    """``--task lm``: hand the settings to :mod:`divergent.cli.distill_lm`, imported only now.

    The language-model job needs the optional ``hf`` extra (transformers, tokenizers); importing
    it here, when the task is chosen, keeps ``--task classifier`` and ``--help`` free of it (the
    same lazy loading as the root app's commands, :func:`divergent.cli._app.load_command`).
    """
    try:
        module = importlib.import_module("divergent.cli.distill_lm")
    except ImportError as err:
        missing = (getattr(err, "name", None) or "").partition(".")[0]
        if missing not in _HF_EXTRA:
            raise
        raise fail(
            f"--task lm needs the hf extra ({missing} is not installed): "
            'pip install "divergent[hf]"'
        ) from None
    module.distill_lm(**settings)

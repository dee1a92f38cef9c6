"""``divergent distill``: train a teacher once, distil a smaller student per objective × seed."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from divergent.cli._app import console
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


def _fail(message: str, code: int = 2) -> typer.Exit:
    """One line on stderr (no traceback, no wrapping), then exit with ``code``."""
    typer.echo(f"error: {' '.join(str(message).split())}", err=True)
    return typer.Exit(code)


@app.command("distill")
def distill_command(
    objectives: Annotated[
        list[str] | None,
        typer.Option(
            "--objectives",
            "-o",
            help="Objective ids, repeated or comma-separated: ce, kd, kd:<divergence> (any "
            "registered name: kd:reverse_kl, kd:js, kd:tv, kd:alpha ...), dkd, dist, lskd, ofa, "
            f"pld, sinkd, bdkd. Default: {', '.join(DEFAULT_OBJECTIVES)}; with --quick: "
            f"{', '.join(QUICK_OBJECTIVES)}. ce is always run as the baseline.",
        ),
    ] = None,
    seeds: Annotated[int, typer.Option(help="Students per objective (seeds 0..N-1).")] = 3,
    epochs: Annotated[
        int | None, typer.Option(help="Student epochs (default 30; 12 with --quick).")
    ] = None,
    quick: Annotated[bool, typer.Option("--quick", help="Small version (under a minute).")] = False,
    out: Annotated[Path, typer.Option("--out", help="Output folder.")] = Path("runs/distill"),
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
        typer.Option("--teacher", help="Use this teacher.ckpt (from an earlier run)."),
    ] = None,
    teacher_epochs: Annotated[
        int, typer.Option(help="Epochs of the teacher (trained once, then cached).")
    ] = 20,
) -> None:
    """Distil a teacher into a smaller student with each objective; print the table.

    Trains the teacher once (cached in --out/teacher.ckpt), then a student per objective ×
    seed plus the CE-only baseline, and writes report.json, report.md and plots/ to --out.
    """
    config = DistillConfig(
        objectives=tuple(objectives) if objectives else None,
        seeds=seeds,
        epochs=epochs,
        quick=quick,
        out=out,
        resume=resume,
        device=device,
        data=data,
        teacher=teacher,
        teacher_epochs=teacher_epochs,
    )

    def on_run(record: dict) -> None:
        console.print(
            f"  {record['objective']:<14} seed {record['seed']}  acc {record['accuracy']:.4f}  "
            f"ECE {record['ece']:.4f}  NLL {record['nll']:.4f}  "
            f"fidelity {record['fidelity']:.4f}  ({record['seconds']:.1f} s)",
            highlight=False,
            soft_wrap=True,
        )
        caught = record.get("warnings", {})
        if caught.get("count"):
            console.print(
                f"    [yellow]{caught['count']} warning(s)[/yellow] during training, e.g. "
                f"{caught['distinct'][0][:160]}",
                highlight=False,
                soft_wrap=True,
            )

    try:
        with Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=True,
            refresh_per_second=4,
        ) as progress:
            report = run_distill(config, progress=progress, on_run=on_run)
    except (DistillError, DataError, CheckpointError) as err:
        raise _fail(str(err)) from None
    except NonFiniteLossError as err:
        raise _fail(f"training diverged: {err}", code=1) from None
    except KeyboardInterrupt:
        raise _fail(f"interrupted; rerun with --resume --out {out} to continue", 130) from None

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
    console.print(
        f"report: {out / 'report.md'}   json: {out / 'report.json'}   plots: {out / 'plots'}"
        f"   ({report['seconds']:.0f} s)",
        highlight=False,
        soft_wrap=True,
    )

"""``divergent reproduce``: run the paper reproductions, print the table, write the report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

import divergent.papers  # noqa: F401  (registers every reproduction)
from divergent.cli._app import app, console
from divergent.repro import all_reproductions, run_many
from divergent.repro.report import report_from_results_json


def _shorten(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1].rstrip() + "…"


def _status_cell(status: str) -> str:
    return {"held": "[green]held[/green]", "not held": "[yellow]not held[/yellow]"}.get(
        status, "[red]error[/red]"
    )


@app.command("reproduce")
def reproduce_command(
    ids: Annotated[list[str] | None, typer.Argument(help="Reproduction ids (see --list).")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Run every reproduction.")] = False,
    quick: Annotated[bool, typer.Option("--quick", help="Small versions (< 1 min each).")] = False,
    out: Annotated[Path, typer.Option("--out", help="Folder for results.json and plots.")] = Path(
        "runs/reproduce"
    ),
    seed: Annotated[int, typer.Option(help="Base random seed.")] = 0,
    resume: Annotated[
        bool, typer.Option("--resume", help="Keep finished rows of an earlier run in --out.")
    ] = False,
    list_: Annotated[bool, typer.Option("--list", help="List reproductions and exit.")] = False,
) -> None:
    """Run paper reproductions; print a table; write results.json and PNG plots to --out.

    Each row states the paper's claim and reports `held` computed from measured numbers.
    Exit code 1 if any reproduction crashed (a claim that does not hold is not a crash).
    """
    reps = all_reproductions()
    if list_:
        table = Table(title="Reproductions")
        for col in ("id", "paper", "claim"):
            table.add_column(col, overflow="fold")
        for r in reps:
            table.add_row(r.id, r.paper, r.claim)
        console.print(table)
        return
    if all_:
        selected = [r.id for r in reps]
    elif ids:
        selected = list(ids)
    else:
        console.print("[red]give reproduction ids or --all (`divergent reproduce --list`)[/red]")
        raise typer.Exit(2)
    known = {r.id for r in reps}
    unknown = [i for i in selected if i not in known]
    if unknown:
        console.print(
            f"[red]unknown reproduction id(s) {unknown}; available: {sorted(known)}[/red]"
        )
        raise typer.Exit(2)

    results = []
    with Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.fields[rid]}[/bold]"),
        BarColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as progress:
        overall = progress.add_task("", total=len(selected), rid="all")
        current = {"task": None}

        def on_start(rep):  # type: ignore[no-untyped-def]
            current["task"] = progress.add_task("starting", total=1.0, rid=rep.id)

        def on_progress(description: str, fraction: float | None = None) -> None:
            task = current["task"]
            if task is not None:
                progress.update(task, description=description, completed=fraction or 0.0)

        def on_done(result):  # type: ignore[no-untyped-def]
            task = current["task"]
            if task is not None:
                progress.remove_task(task)
            progress.advance(overall)
            console.print(
                f"{_status_cell(result.status)}  {result.id}  ({result.seconds:.1f} s)  "
                f"{result.summary}"
            )
            results.append(result)

        run_many(
            selected,
            quick=quick,
            out_dir=out,
            seed=seed,
            resume=resume,
            on_start=on_start,
            on_done=on_done,
            progress=on_progress,
        )

    table = Table(title=f"Reproductions ({'quick' if quick else 'full'} mode, seed {seed})")
    table.add_column("id", no_wrap=True)
    table.add_column("result", no_wrap=True)
    table.add_column("s", justify="right", no_wrap=True)
    table.add_column("claim", overflow="fold")
    for r in results:
        table.add_row(r.id, _status_cell(r.status), f"{r.seconds:.1f}", _shorten(r.claim, 160))
    console.print(table)
    console.print("The evidence for each row is printed above and written to report.md.")
    (out / "report.md").write_text(report_from_results_json(out / "results.json"))
    console.print(
        f"results: {out / 'results.json'}   report: {out / 'report.md'}   plots: {out / 'plots'}"
    )
    errors = [r for r in results if r.status == "error"]
    for r in errors:
        console.print(f"[red]{r.id} crashed:[/red]\n{r.error}")
    if errors:
        raise typer.Exit(1)

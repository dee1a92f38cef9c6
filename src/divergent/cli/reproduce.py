"""``divergent reproduce``: run the paper reproductions, print the table, write the report.

No silent data loss: rows of other ids already in ``--out/results.json`` are kept; with
``--resume`` a stored row is reused only for the same mode and seed (every decision is
printed); a ``results.json`` that cannot be read is refused and left as it is; bad options
(``--out`` a file or unwritable, a seed out of range) are one-line errors with exit code 2;
Ctrl-C says how many rows were saved. A reproduction whose module failed to import
(registered by :func:`divergent.repro.discover_reproductions`) is listed, marked, with its
error in one line, and runs as an error row; the other reproductions still run.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

import divergent.papers  # noqa: F401  (registers every reproduction)
from divergent.cli._app import console, fail
from divergent.repro import (
    ResultsFileError,
    RunPlan,
    all_reproductions,
    atomic_write_text,
    check_seed,
    load_results,
    run_many,
)
from divergent.repro.framework import did_you_mean
from divergent.repro.report import markdown_report

app = typer.Typer(add_completion=False, rich_markup_mode=None)
"""This group's commands (the root app in :mod:`divergent.cli._app` loads them lazily)."""

EXIT_INTERRUPTED = 130


def _shorten(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1].rstrip() + "…"


def _status_cell(status: str, indicative: bool = False) -> str:
    cell = {
        "held": "[green]held[/green]",
        "not held": "[yellow]not held[/yellow]",
        "inconclusive": "[cyan]inconclusive[/cyan]",
    }.get(status, "[red]error[/red]")
    return cell + " (indicative)" if indicative and status != "error" else cell


def _check_out_folder(out: Path) -> None:
    """--out must be a folder we can create and write in; else a one-line error."""
    if out.exists() and not out.is_dir():
        raise fail(f"--out {out} is a file, not a folder; give a folder for results.json")
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=out, prefix=".divergent-write-check.")
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise fail(f"--out {out} is not writable ({err.strerror or err})") from None


def _write_report(out: Path) -> None:
    rows = load_results(out / "results.json")
    text = markdown_report(rows)
    atomic_write_text(out / "report.md", text)


@app.command("reproduce")
def reproduce_command(
    ids: Annotated[list[str] | None, typer.Argument(help="Reproduction ids (see --list).")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Run every reproduction.")] = False,
    quick: Annotated[
        bool, typer.Option("--quick", help="Small versions (seconds each; indicative).")
    ] = False,
    out: Annotated[Path, typer.Option("--out", help="Folder for results.json and plots.")] = Path(
        "runs/reproduce"
    ),
    seed: Annotated[int, typer.Option(help="Base random seed, 0 … 2**32 − 1.")] = 0,
    resume: Annotated[
        bool,
        typer.Option("--resume", help="Reuse stored rows of the same ids, mode and seed in --out."),
    ] = False,
    list_: Annotated[bool, typer.Option("--list", help="List reproductions and exit.")] = False,
) -> None:
    """Run paper reproductions; print a table; write results.json and PNG plots to --out.

    Each row states the paper's claim and its verdict (held / not held / inconclusive)
    computed from measured numbers. Rows of other ids already in --out are kept. Exit code 1
    if any reproduction crashed (a claim that does not hold is not a crash), 2 for bad
    options or an unreadable results.json, 130 when interrupted. A paper module that failed
    to import is marked in --list and runs as a crash; the others are not affected.
    """
    reps = all_reproductions()
    broken = {r.id: r.import_error for r in reps if r.import_error is not None}
    if list_:
        table = Table(title="Reproductions")
        for col in ("id", "paper", "claim"):
            table.add_column(col, overflow="fold")
        for r in reps:
            if r.import_error is None:
                table.add_row(r.id, r.paper, r.claim)
            else:
                table.add_row(r.id, Text("failed to import", style="red"), Text(r.import_error))
        console.print(table)
        if broken:
            console.print(
                f"{len(broken)} module(s) failed to import (running one gives an error row): "
                f"{', '.join(broken)}",
                soft_wrap=True,
                highlight=False,
            )
        return
    if all_:
        selected = [r.id for r in reps]
    elif ids:
        selected = list(dict.fromkeys(ids))
    else:
        raise fail("give reproduction ids or --all (`divergent reproduce --list`)")
    known = {r.id for r in reps}
    unknown = [i for i in selected if i not in known]
    if unknown:
        raise fail(
            f"unknown reproduction id(s) {unknown}{did_you_mean(unknown, known)}; available: "
            f"{sorted(known)}"
        )
    try:
        check_seed(seed)
    except ValueError as err:
        raise fail(f"--seed: {err}") from None
    _check_out_folder(out)
    for rid, error in broken.items():
        if rid not in selected:
            console.print(
                f"[yellow]warning:[/yellow] `{rid}` is unavailable, its module failed to import: "
                f"{escape(str(error))}",
                soft_wrap=True,
                highlight=False,
            )
    results_path = out / "results.json"
    try:
        load_results(results_path)  # refuse an unreadable file before running anything
    except ResultsFileError as err:
        raise fail(f"{err}; it was left unchanged") from None

    def on_plan(plan: RunPlan) -> None:
        for line in plan.messages():
            console.print(escape(line), soft_wrap=True, highlight=False)

    results = []
    try:
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
                    f"{escape(result.summary)}"
                )
                results.append(result)

            run_many(
                selected,
                quick=quick,
                out_dir=out,
                seed=seed,
                resume=resume,
                on_plan=on_plan,
                on_start=on_start,
                on_done=on_done,
                progress=on_progress,
            )
    except KeyboardInterrupt:
        saved = _saved_count(results_path, selected, quick, seed)
        raise fail(
            f"interrupted: {saved} of {len(selected)} saved; rerun with --resume",
            EXIT_INTERRUPTED,
        ) from None
    except ResultsFileError as err:
        raise fail(f"{err}; it was left unchanged") from None
    except OSError as err:
        raise fail(f"cannot write to {out}: {err.strerror or err}") from None

    table = Table(title=f"Reproductions ({'quick' if quick else 'full'} mode, seed {seed})")
    table.add_column("id", no_wrap=True)
    table.add_column("verdict", no_wrap=True)
    table.add_column("s", justify="right", no_wrap=True)
    table.add_column("claim", overflow="fold")
    for r in results:
        table.add_row(
            r.id, _status_cell(r.status, r.indicative), f"{r.seconds:.1f}", _shorten(r.claim, 160)
        )
    console.print(table)
    if any(r.indicative for r in results):
        console.print("(indicative): a quick run's verdict; the full run decides.")
    console.print("The evidence for each row is printed above and written to report.md.")
    try:
        _write_report(out)
    except (OSError, ResultsFileError) as err:
        raise fail(f"cannot write {out / 'report.md'}: {err}") from None
    console.print(
        f"results: {results_path}   report: {out / 'report.md'}   plots: {out / 'plots'}",
        soft_wrap=True,
    )
    errors = [r for r in results if r.status == "error"]
    for r in errors:
        console.print(f"[red]{r.id} crashed:[/red]\n{escape(r.error or '')}")
    if errors:
        raise typer.Exit(1)


def _saved_count(path: Path, ids: list[str], quick: bool, seed: int) -> int:
    """How many requested ids have a row of this mode and seed in ``path`` now."""
    try:
        rows = load_results(path)
    except ResultsFileError:
        return 0
    return sum(1 for r in rows if r.id in ids and r.quick == quick and r.seed == seed)

"""Markdown report of a reproduction run (written next to ``results.json``)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from divergent.repro.framework import ReproductionResult

__all__ = ["markdown_report", "report_from_results_json"]


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _result_cell(r: ReproductionResult) -> str:
    cell = f"**{r.status}**"
    return cell + " (indicative)" if r.indicative and r.status != "error" else cell


def markdown_report(
    results: Sequence[ReproductionResult], *, environment: dict[str, Any] | None = None
) -> str:
    """A Markdown table (id, paper, claim, verdict, evidence, seconds) plus links to plots.

    The verdict is ``held``, ``not held`` or ``inconclusive`` (``error`` for a crash); a quick
    run's verdict that the full run may change is marked "(indicative)".
    """
    lines = ["# Paper reproductions", ""]
    if results:
        modes = {("quick" if r.quick else "full", r.seed) for r in results}
        if len(modes) == 1:
            mode, seed = modes.pop()
            lines.append(f"Mode: {mode}; seed {seed}.")
        else:
            lines.append("Mixed modes / seeds (see the mode column).")
    if environment:
        env = ", ".join(f"{k} {v}" for k, v in environment.items())
        lines.append(f"Environment: {env}.")
    counts = {
        s: sum(r.status == s for r in results)
        for s in ("held", "not held", "inconclusive", "error")
    }
    lines += [
        f"Held: {counts['held']}; not held: {counts['not held']}; "
        f"inconclusive: {counts['inconclusive']}; errors: {counts['error']}.",
        "",
        "| id | paper | claim | verdict | evidence | mode | s |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        mode = f"{'quick' if r.quick else 'full'}, seed {r.seed}"
        lines.append(
            f"| {r.id} | {_cell(r.paper)} | {_cell(r.claim)} | {_result_cell(r)} | "
            f"{_cell(r.summary)} | {mode} | {r.seconds:.0f} |"
        )
    plots = [(r.id, p) for r in results for p in r.plots]
    if plots:
        lines += ["", "Plots (relative to the run folder):", ""]
        lines += [f"- {rid}: `{p}`" for rid, p in plots]
    return "\n".join(lines) + "\n"


def report_from_results_json(path: Path | str) -> str:
    """Rebuild the Markdown report from a ``results.json`` written by ``run_many``."""
    payload = json.loads(Path(path).read_text())
    results = [ReproductionResult.from_json(row) for row in payload.get("results", [])]
    return markdown_report(results, environment=payload.get("environment"))

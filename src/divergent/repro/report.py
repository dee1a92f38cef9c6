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


def markdown_report(
    results: Sequence[ReproductionResult], *, environment: dict[str, Any] | None = None
) -> str:
    """A Markdown table (id, paper, claim, result, evidence, seconds) plus links to plots."""
    lines = ["# Paper reproductions", ""]
    if results:
        mode = "quick" if results[0].quick else "full"
        lines.append(f"Mode: {mode}; seed {results[0].seed}.")
    if environment:
        env = ", ".join(f"{k} {v}" for k, v in environment.items())
        lines.append(f"Environment: {env}.")
    held = sum(r.status == "held" for r in results)
    not_held = sum(r.status == "not held" for r in results)
    errors = sum(r.status == "error" for r in results)
    lines += [
        f"Held: {held}; not held: {not_held}; errors: {errors}.",
        "",
        "| id | paper | claim | result | evidence | s |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r.id} | {_cell(r.paper)} | {_cell(r.claim)} | **{r.status}** | "
            f"{_cell(r.summary)} | {r.seconds:.0f} |"
        )
    plots = [(r.id, p) for r in results for p in r.plots]
    if plots:
        lines += ["", "Plots (relative to the run folder):", ""]
        lines += [f"- {rid}: `{p}`" for rid, p in plots]
    return "\n".join(lines) + "\n"


def report_from_results_json(path: Path | str) -> str:
    """Rebuild the Markdown report from a ``results.json`` written by ``run_many``."""
    payload = json.loads(Path(path).read_text())
    results = [ReproductionResult(**row) for row in payload.get("results", [])]
    return markdown_report(results, environment=payload.get("environment"))

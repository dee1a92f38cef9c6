"""``divergent list`` and ``divergent info``: the registry, as tables."""

from __future__ import annotations

import json
import math
from typing import Annotated

import typer
from rich.table import Table

from divergent.categorical import get_divergence, list_divergences
from divergent.cli._app import app, console


def _fmt_bound(value: float) -> str:
    return "∞" if math.isinf(value) else f"{value:.4g}"


@app.command("list")
def list_command(
    as_json: Annotated[
        bool, typer.Option("--json", help="Print JSON instead of a table.")
    ] = False,
) -> None:
    """List every registered divergence: name, formula, parameters, symmetric, bound."""
    rows = []
    for d in list_divergences():
        defaults = {p.name: p.default for p in d.parameters}
        rows.append(
            {
                "name": d.name,
                "title": d.title,
                "formula": d.formula_text,
                "parameters": [
                    {"name": p.name, "default": p.default, "range": p.range_text()}
                    for p in d.parameters
                ],
                "symmetric": bool(d.symmetric(**defaults)),
                "bound": d.bound_text,
                "metric": d.metric,
                "f_divergence": d.is_f_divergence,
                "is_divergence": d.is_divergence,
            }
        )
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    table = Table(title="Registered divergences  D(P‖Q): P = target/teacher, Q = model/student")
    table.add_column("name", no_wrap=True)
    for col in ("formula", "parameters", "symmetric", "bound", "metric", "f-div"):
        table.add_column(col, overflow="fold")
    for r in rows:
        params = ", ".join(f"{p['name']}={p['default']:g} ∈ {p['range']}" for p in r["parameters"])
        name = r["name"] if r["is_divergence"] else f"{r['name']} (not a divergence)"
        table.add_row(
            name,
            r["formula"],
            params or "—",
            "yes" if r["symmetric"] else "no",
            r["bound"],
            r["metric"],
            "yes" if r["f_divergence"] else "no",
        )
    console.print(table)
    console.print(
        "Any convex f with f(1)=0 also works: divergent.f_divergence(f, p_logits, q_logits)."
    )


@app.command("info")
def info_command(
    name: Annotated[str, typer.Argument(help="A registered divergence name.")],
) -> None:
    """Show one divergence: formula (LaTeX), parameters, properties, when it is infinite."""
    try:
        d = get_divergence(name)
    except ValueError as err:
        console.print(f"[red]{err}[/red]")
        raise typer.Exit(2) from None
    defaults = {p.name: p.default for p in d.parameters}
    console.print(f"[bold]{d.name}[/bold]: {d.title}")
    console.print(f"  formula   {d.formula_text}")
    console.print(f"  LaTeX     {d.formula}")
    for p in d.parameters:
        console.print(
            f"  param     {p.name} = {p.default:g} in {p.range_text()}: {p.description}"
        )
    console.print(f"  symmetric {d.symmetric(**defaults)} (at the defaults)")
    at_defaults = _fmt_bound(d.upper_bound(**defaults))
    console.print(f"  bound     {d.bound_text} (at the defaults: {at_defaults})")
    console.print(f"  metric    {d.metric}")
    console.print(f"  infinite  {d.infinite_when or 'never'}")
    if d.description:
        console.print(f"  note      {d.description}")
    if d.references:
        console.print(f"  refs      {'; '.join(d.references)}")

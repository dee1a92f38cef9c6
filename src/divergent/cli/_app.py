"""The typer application and the shared console (every command module registers on it)."""

from __future__ import annotations

import typer
from rich.console import Console

app = typer.Typer(
    name="divergent",
    help=(
        "Probability divergences as a first-class knob for distillation, RLHF and preference "
        "optimisation. D(P‖Q): P is the target / teacher, Q the model / student."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)
console = Console()

"""The root typer application: command groups are imported only when a command runs.

``divergent --help`` lists the commands from :data:`COMMANDS` (name → module and one-line
help) without importing any command module, so it needs neither torch nor the library; a
command's own module (and with it torch) is imported when that command is invoked or asked for
its ``--help``. Each command module defines its own ``app = typer.Typer()`` with its commands;
``tests/cli/test_cli_startup.py`` checks that this table matches the modules' own help.
"""

from __future__ import annotations

import importlib
from typing import Any

import typer
from rich.console import Console
from typer.core import TyperGroup

COMMANDS: dict[str, tuple[str, str]] = {
    "distill": (
        "divergent.cli.distill",
        "Distil a teacher into a smaller student with each objective; print the table.",
    ),
    "list": (
        "divergent.cli.catalogue",
        "List every registered divergence: name, formula, parameters, symmetric, bound.",
    ),
    "info": (
        "divergent.cli.catalogue",
        "Show one divergence: formula (LaTeX), parameters, properties, when it is infinite.",
    ),
    "reproduce": (
        "divergent.cli.reproduce",
        "Run paper reproductions; print a table; write results.json and PNG plots to --out.",
    ),
    "teacher-cache": (
        "divergent.cli.teacher_cache",
        "Write a top-k teacher cache from a local Hugging Face model folder and a text file.",
    ),
}
"""Command name → (module defining it, the one-line help shown by ``divergent --help``)."""


def load_command(name: str) -> Any:
    """Import the module of command ``name`` and return its click command.

    A module with one command gives that command; one with several gives a group, whose
    ``commands`` table holds it (the same for click's and typer's own click).
    """
    module = importlib.import_module(COMMANDS[name][0])
    command = typer.main.get_command(module.app)
    group = getattr(command, "commands", None)
    if group is None:
        return command
    if name not in group:  # pragma: no cover - the table and the module disagree
        raise LookupError(f"{COMMANDS[name][0]} defines no command {name!r}")
    return group[name]


class LazyCommands(TyperGroup):
    """A click group whose commands are imported on first use (see :data:`COMMANDS`)."""

    def list_commands(self, ctx: Any) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        return load_command(cmd_name) if cmd_name in COMMANDS else None

    def format_commands(self, ctx: Any, formatter: Any) -> None:
        with formatter.section("Commands"):
            formatter.write_dl([(name, text) for name, (_, text) in COMMANDS.items()])


app = typer.Typer(
    name="divergent",
    cls=LazyCommands,
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
    pretty_exceptions_show_locals=False,
)


@app.callback()
def _root() -> None:
    """Probability divergences as a first-class knob for distillation, RLHF and preference
    optimisation. D(P‖Q): P is the target / teacher, Q the model / student."""


console = Console()
"""The console of the commands' tables and progress (stdout)."""

EXIT_USAGE = 2
"""Exit code of a command refused for bad input (click's own usage errors use it too)."""


def fail(message: object, code: int = EXIT_USAGE) -> typer.Exit:
    """Write ``error: message`` as one line on stderr and return the exit to raise.

    White space (line breaks of a long message included) is folded so that a caller gets one
    line to grep whatever the terminal width; stdout stays free of errors, for a pipe.
    """
    typer.echo(f"error: {' '.join(str(message).split())}", err=True)
    return typer.Exit(code)

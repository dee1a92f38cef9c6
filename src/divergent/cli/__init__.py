"""The ``divergent`` command line (typer + rich).

    divergent list                         every registered divergence
    divergent info js                      one divergence: formula, parameters, properties
    divergent reproduce --all --quick      run the paper reproductions, print the table

One module per command group: :mod:`.catalogue` (list, info), :mod:`.reproduce`; each
registers its commands on :data:`app`.
"""

from __future__ import annotations

from divergent.cli import catalogue, distill, reproduce
from divergent.cli._app import app, console

__all__ = ["app", "console", "main"]

_COMMAND_MODULES = (catalogue, distill, reproduce)


def main() -> None:
    """Entry point of the ``divergent`` script and ``python -m divergent``."""
    app()

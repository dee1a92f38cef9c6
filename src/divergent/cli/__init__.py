"""The ``divergent`` command line (typer + rich).

    divergent distill --quick              the main job: distil a teacher, print the table
    divergent list                         every registered divergence
    divergent info js                      one divergence: formula, parameters, properties
    divergent reproduce --all --quick      run the paper reproductions, print the table

One module per command group (:mod:`.distill`, :mod:`.catalogue` for list and info,
:mod:`.reproduce`), each with its own ``app``; the root :data:`app` imports a group only when
one of its commands runs, so ``divergent --help`` starts without importing torch.
"""

from __future__ import annotations

from divergent.cli._app import app, console

__all__ = ["app", "console", "main"]


def main() -> None:
    """Entry point of the ``divergent`` script and ``python -m divergent``."""
    app()

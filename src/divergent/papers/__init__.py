"""One module per seed paper; each registers a reproduction with ``@reproduction``.

What each reproduces (title, paper, claim, tags) and its quick / full run sizes are rows of
``catalog.toml``; a module registers with ``_catalog.reproduction("<id>", verdict=verdict)``
and its experiment reads ``ctx.size.<name>``.

Importing this package imports every module in it (each registers itself in the
:mod:`divergent.repro` registry) with :func:`divergent.repro.discover_reproductions`: a
module that fails to import is registered under its name as a reproduction that cannot run
(listed and marked by ``divergent reproduce --list``; running it is an error row), and the
others still load. Nothing below this package imports it.
"""

from divergent.repro import discover_reproductions

IMPORT_ERRORS: dict[str, str] = discover_reproductions(__name__, __path__)
"""``{module name: one-line error}`` of the paper modules that failed to import."""

"""One module per seed paper; each registers a reproduction with ``@reproduction``.

What each reproduces (title, paper, claim, tags) and its quick / full run sizes are rows of
``catalog.toml``; a module registers with ``_catalog.reproduction("<id>", verdict=verdict)``
and its experiment reads ``ctx.size.<name>``.

Importing this package imports every module in it (each registers itself in the
:mod:`divergent.repro` registry); nothing below this package imports it.
"""

import importlib
import pkgutil

for _info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
    if not _info.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_info.name}")

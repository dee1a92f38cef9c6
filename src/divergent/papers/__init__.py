"""One module per seed paper; each registers a reproduction with ``@reproduction``.

Importing this package imports every module in it (each registers itself in the
:mod:`divergent.repro` registry); nothing below this package imports it.
"""

import importlib
import pkgutil

for _info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
    if not _info.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_info.name}")

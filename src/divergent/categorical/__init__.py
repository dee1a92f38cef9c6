"""Divergences between categorical distributions: the registry, the named entries, generators.

:mod:`.registry` is the leaf (``Divergence``, ``Parameter``, ``FGenerator`` and the table of
entries); :mod:`.kernels` holds the value-and-gradient chunk kernels; :mod:`.divergences`
declares every named divergence as one entry (row function, generator, kernel);
:mod:`.fdiv` turns a user's generator f into an entry.
"""

from divergent.categorical import divergences as _divergences  # noqa: F401  (registers)
from divergent.categorical.fdiv import generic_f_rows, make_f_divergence, resolve_divergence
from divergent.categorical.registry import (
    Divergence,
    DivergenceLike,
    FGenerator,
    Parameter,
    generator_from_callable,
    get_divergence,
    list_divergences,
    register_divergence,
)

__all__ = [
    "Divergence",
    "DivergenceLike",
    "FGenerator",
    "Parameter",
    "generator_from_callable",
    "generic_f_rows",
    "get_divergence",
    "list_divergences",
    "make_f_divergence",
    "register_divergence",
    "resolve_divergence",
]

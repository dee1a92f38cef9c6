"""The catalogue of reproductions: one row of ``catalog.toml`` per seed paper.

A row holds what is reproduced (``title``, ``paper``, the one-sentence ``claim``, ``tags``,
``quick_matches_full``) and the run sizes of each mode (``quick = {...}`` and ``full =
{...}``, the same names in both), so the experiment code holds only the experiment and the
reader finds every claim and every run size in one table. A paper module registers with::

    @reproduction("apo", verdict=verdict)
    def experiment(ctx: ReproContext) -> Outcome:
        for s in range(ctx.size.n_seeds):
            ...

Not discovered as a reproduction (leading underscore).
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from divergent.repro import framework

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

__all__ = ["CATALOG_PATH", "catalog", "reproduction"]

CATALOG_PATH = Path(__file__).with_name("catalog.toml")

_REQUIRED = {"title": str, "paper": str, "claim": str}
_OPTIONAL = {"tags": list, "quick_matches_full": bool, "quick": dict, "full": dict}


@functools.lru_cache(maxsize=1)
def catalog() -> dict[str, dict[str, Any]]:
    """The rows of ``catalog.toml`` by reproduction id, each checked for its fields.

    Raises:
        ValueError: a row lacks a field, has an unknown one or one of the wrong type.
    """
    with CATALOG_PATH.open("rb") as f:
        rows = tomllib.load(f)
    for rid, row in rows.items():
        unknown = sorted(set(row) - set(_REQUIRED) - set(_OPTIONAL))
        missing = sorted(set(_REQUIRED) - set(row))
        if unknown or missing:
            raise ValueError(
                f"{CATALOG_PATH.name} [{rid}]: unknown fields {unknown}, missing {missing}"
            )
        for key, kind in {**_REQUIRED, **_OPTIONAL}.items():
            if key in row and not isinstance(row[key], kind):
                raise ValueError(
                    f"{CATALOG_PATH.name} [{rid}]: `{key}` must be a {kind.__name__}, "
                    f"got {row[key]!r}"
                )
    return rows


def reproduction(
    id: str, *, verdict: framework.VerdictFn
) -> Callable[[framework.ExperimentFn], framework.ExperimentFn]:
    """:func:`divergent.repro.reproduction` with the catalogue's row ``id`` as metadata.

    Raises:
        ValueError: ``catalog.toml`` has no row ``id``.
    """
    rows = catalog()
    if id not in rows:
        raise ValueError(f"reproduction `{id}` has no row in {CATALOG_PATH.name}")
    row: Mapping[str, Any] = rows[id]
    sizes = {mode: row[mode] for mode in framework.MODES if mode in row}
    return framework.reproduction(
        id,
        title=row["title"],
        paper=row["paper"],
        claim=row["claim"],
        verdict=verdict,
        tags=row.get("tags", ()),
        quick_matches_full=row.get("quick_matches_full", False),
        sizes=sizes or None,
    )

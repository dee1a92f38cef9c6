"""Reproductions of the seed papers: registry, runner and result objects."""

from divergent.repro.framework import (
    Outcome,
    ReproContext,
    Reproduction,
    ReproductionResult,
    all_reproductions,
    atomic_write_json,
    get_reproduction,
    reproduction,
    run_many,
    run_reproduction,
)

__all__ = [
    "Outcome",
    "ReproContext",
    "Reproduction",
    "ReproductionResult",
    "all_reproductions",
    "atomic_write_json",
    "get_reproduction",
    "reproduction",
    "run_many",
    "run_reproduction",
]

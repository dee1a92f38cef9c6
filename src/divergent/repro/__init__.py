"""Reproductions of the seed papers: registry, runner, tri-state verdicts and result objects.

Knows no paper: the experiments live in :mod:`divergent.papers` and register themselves.
"""

from divergent.repro.framework import (
    MAX_SEED,
    Outcome,
    ReproContext,
    Reproduction,
    ReproductionResult,
    ResultsFileError,
    RunPlan,
    RunSize,
    all_reproductions,
    atomic_write_json,
    atomic_write_text,
    check_seed,
    discover_reproductions,
    get_reproduction,
    load_results,
    plan_run,
    reproduction,
    run_many,
    run_reproduction,
)
from divergent.repro.verdict import Verdict

__all__ = [
    "MAX_SEED",
    "Outcome",
    "ReproContext",
    "Reproduction",
    "ReproductionResult",
    "ResultsFileError",
    "RunPlan",
    "RunSize",
    "Verdict",
    "all_reproductions",
    "atomic_write_json",
    "atomic_write_text",
    "check_seed",
    "discover_reproductions",
    "get_reproduction",
    "load_results",
    "plan_run",
    "reproduction",
    "run_many",
    "run_reproduction",
]

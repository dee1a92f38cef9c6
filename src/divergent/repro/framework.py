"""The reproduction framework: one registered experiment per seed paper.

Each reproduction states the claim it checks in one sentence, runs a small CPU experiment
(a ``quick`` mode under a minute for tests), and returns measured numbers plus ``held``
computed from them. A claim that does not hold is reported as such (``held: false``).

Writing one::

    from divergent.repro import Outcome, ReproContext, reproduction

    @reproduction(
        "mode_demo",
        title="Mode seeking vs mode covering",
        paper="shared claim of f-distill, SinKD, DPH-RL, BD-KD",
        claim="Reverse KL fits one mode of a bimodal target, forward KL covers both.",
    )
    def run(ctx: ReproContext) -> Outcome:
        ...
        return Outcome(held=coverage_fkl > coverage_rkl, metrics={...}, summary="...")

Modules under ``divergent.papers`` are discovered automatically.
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from divergent._version import __version__

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

ProgressFn = Callable[[str, "float | None"], None]


def _no_progress(_description: str, _fraction: float | None = None) -> None:
    return None


@dataclass
class ReproContext:
    """What a reproduction receives: mode, output folder, seed and a progress callback.

    Attributes:
        id: the reproduction's id (used to name its plots).
        quick: run the small version (under a minute; used by the test suite).
        out_dir: folder for this run's plots and files.
        seed: base random seed; use :meth:`generator` / :meth:`numpy_rng` for randomness.
        progress: ``progress(description, fraction)`` with fraction in [0, 1] or None.
    """

    id: str
    quick: bool
    out_dir: Path
    seed: int = 0
    progress: ProgressFn = _no_progress
    plots: list[str] = field(default_factory=list)

    def generator(self, offset: int = 0) -> torch.Generator:
        g = torch.Generator()
        g.manual_seed(self.seed + offset)
        return g

    def numpy_rng(self, offset: int = 0) -> np.random.Generator:
        return np.random.default_rng(self.seed + offset)

    def plot_path(self, name: str) -> Path:
        folder = self.out_dir / "plots"
        folder.mkdir(parents=True, exist_ok=True)
        return folder / f"{self.id}_{name}.png"

    def savefig(self, fig: Any, name: str) -> str:
        """Save a matplotlib figure as PNG under ``out_dir/plots`` and close it."""
        import matplotlib.pyplot as plt

        path = self.plot_path(name)
        fig.savefig(path, dpi=110, bbox_inches="tight")
        plt.close(fig)
        rel = str(path.relative_to(self.out_dir))
        self.plots.append(rel)
        return rel


@dataclass
class Outcome:
    """What a reproduction returns: the verdict computed from ``metrics``.

    Attributes:
        held: whether the claim held *by the numbers in* ``metrics``.
        metrics: measured numbers (JSON-serialisable: floats, ints, lists, dicts, str).
        summary: one line with the evidence ("reverse KL covers 1/4 modes, forward 4/4").
    """

    held: bool
    metrics: dict[str, Any]
    summary: str = ""


@dataclass(frozen=True)
class Reproduction:
    id: str
    title: str
    paper: str
    claim: str
    run: Callable[[ReproContext], Outcome]
    tags: tuple[str, ...] = ()


@dataclass
class ReproductionResult:
    """One row of ``divergent reproduce``; ``status`` is held / not held / error."""

    id: str
    title: str
    paper: str
    claim: str
    status: str
    held: bool
    metrics: dict[str, Any]
    summary: str
    plots: list[str]
    quick: bool
    seed: int
    seconds: float
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return _jsonable(asdict(self))


_REGISTRY: dict[str, Reproduction] = {}


def reproduction(
    id: str, *, title: str, paper: str, claim: str, tags: Sequence[str] = ()
) -> Callable[[Callable[[ReproContext], Outcome]], Callable[[ReproContext], Outcome]]:
    """Register ``run(ctx) -> Outcome`` as the reproduction ``id``."""

    def wrap(fn: Callable[[ReproContext], Outcome]) -> Callable[[ReproContext], Outcome]:
        if id in _REGISTRY and _REGISTRY[id].run is not fn:
            raise ValueError(f"reproduction id `{id}` is registered twice")
        _REGISTRY[id] = Reproduction(id, title, paper, claim, fn, tuple(tags))
        return fn

    return wrap


def all_reproductions() -> list[Reproduction]:
    return [_REGISTRY[k] for k in sorted(_REGISTRY)]


def get_reproduction(id: str) -> Reproduction:
    if id not in _REGISTRY:
        raise ValueError(
            f"unknown reproduction `{id}`; available: {', '.join(sorted(_REGISTRY))}"
        )
    return _REGISTRY[id]


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, torch.Tensor):
        return _jsonable(value.detach().cpu().tolist())
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, (np.floating, np.integer, np.bool_)):
        return value.item()
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        return str(value)  # JSON has no NaN / inf
    if isinstance(value, Path):
        return str(value)
    return value


def atomic_write_json(path: Path, payload: Any) -> None:
    """Write JSON to a temporary file in the same folder, then rename it over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(_jsonable(payload), fh, indent=2)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def run_reproduction(
    id: str,
    *,
    quick: bool = False,
    out_dir: Path | str = "runs/reproduce",
    seed: int = 0,
    progress: ProgressFn = _no_progress,
) -> ReproductionResult:
    """Run one reproduction; an exception becomes ``status="error"`` with its traceback."""
    rep = get_reproduction(id)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ctx = ReproContext(id=id, quick=quick, out_dir=out, seed=seed, progress=progress)
    torch.manual_seed(seed)
    np.random.seed(seed)  # noqa: NPY002  (seed code that still uses the legacy global RNG)
    start = time.perf_counter()
    try:
        outcome = rep.run(ctx)
        if not isinstance(outcome, Outcome):
            raise TypeError(f"reproduction `{id}` returned {type(outcome).__name__}, not Outcome")
        held = bool(outcome.held)
        return ReproductionResult(
            id=id,
            title=rep.title,
            paper=rep.paper,
            claim=rep.claim,
            status="held" if held else "not held",
            held=held,
            metrics=_jsonable(outcome.metrics),
            summary=outcome.summary,
            plots=list(ctx.plots),
            quick=quick,
            seed=seed,
            seconds=time.perf_counter() - start,
        )
    except Exception as err:  # report, do not hide: status "error" and exit code 1
        return ReproductionResult(
            id=id,
            title=rep.title,
            paper=rep.paper,
            claim=rep.claim,
            status="error",
            held=False,
            metrics={},
            summary=f"{type(err).__name__}: {err}",
            plots=list(ctx.plots),
            quick=quick,
            seed=seed,
            seconds=time.perf_counter() - start,
            error=traceback.format_exc(),
        )


def _environment() -> dict[str, Any]:
    return {
        "divergent": __version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
    }


def run_many(
    ids: Iterable[str],
    *,
    quick: bool = False,
    out_dir: Path | str = "runs/reproduce",
    seed: int = 0,
    resume: bool = False,
    on_start: Callable[[Reproduction], None] | None = None,
    on_done: Callable[[ReproductionResult], None] | None = None,
    progress: ProgressFn = _no_progress,
) -> list[ReproductionResult]:
    """Run several reproductions, writing ``results.json`` atomically after each one.

    With ``resume``, rows already in ``out_dir/results.json`` for the same mode and seed (and
    not errors) are kept and not rerun, so an interrupted ``--all`` run loses no finished work.
    """
    out = Path(out_dir)
    results_path = out / "results.json"
    done: dict[str, ReproductionResult] = {}
    if resume and results_path.exists():
        try:
            previous = json.loads(results_path.read_text())
            for row in previous.get("results", []):
                same_run = row.get("quick") == quick and row.get("seed") == seed
                if same_run and row["status"] != "error":
                    done[row["id"]] = ReproductionResult(**row)
        except (json.JSONDecodeError, TypeError, KeyError):
            done = {}
    ordered = list(dict.fromkeys(ids))
    for rid in ordered:
        get_reproduction(rid)  # fail fast on unknown ids before running anything
    results: dict[str, ReproductionResult] = {}
    for rid in ordered:
        rep = get_reproduction(rid)
        if on_start:
            on_start(rep)
        result = done.get(rid) or run_reproduction(
            rid, quick=quick, out_dir=out, seed=seed, progress=progress
        )
        results[rid] = result
        if on_done:
            on_done(result)
        merged = {**done, **results}
        atomic_write_json(
            results_path,
            {
                "environment": _environment(),
                "quick": quick,
                "seed": seed,
                "results": [r.to_json() for r in merged.values()],
            },
        )
    return [results[rid] for rid in ordered]

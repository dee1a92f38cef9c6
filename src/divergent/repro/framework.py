"""The reproduction framework: one registered experiment per seed paper.

Each reproduction states the claim it checks in one sentence, runs a small CPU experiment
(a ``quick`` mode of seconds for tests) that returns measured numbers, and names a *pure*
``verdict(metrics) -> Verdict`` function with its thresholds fixed in code. The runner applies
the verdict to the numbers (in their JSON form, so a verdict can be recomputed from
``results.json``): ``held``, ``not held`` or ``inconclusive``. A claim that does not hold is
reported as such.

Writing one::

    from divergent.repro import Outcome, ReproContext, Verdict, reproduction

    def verdict(metrics: dict) -> Verdict:
        return Verdict.from_bool(metrics["coverage_forward"] > metrics["coverage_reverse"])

    @reproduction(
        "mode_demo",
        title="Mode seeking vs mode covering",
        paper="shared claim of f-distill, SinKD, DPH-RL, BD-KD",
        claim="Reverse KL fits one mode of a bimodal target, forward KL covers both.",
        verdict=verdict,
    )
    def experiment(ctx: ReproContext) -> Outcome:
        ...
        return Outcome(metrics={...}, summary="reverse KL covers 1/4 modes, forward 4/4")

A reproduction may declare its run sizes per mode (``sizes={"quick": {"n_seeds": 3},
"full": {"n_seeds": 12}}``); the experiment reads the sizes of its mode as ``ctx.size.n_seeds``.

The runner executes every experiment on one torch thread (:func:`~divergent._threads.
single_thread`: the experiments use tiny tensors). A quick run is labelled *indicative*
unless the reproduction declares ``quick_matches_full=True`` (its quick and full runs are
checked to give the same verdict). Modules under ``divergent.papers`` are discovered by
importing that package. :func:`discover_reproductions` imports the modules of such a package
so that one broken module does not hide the others: a module that fails to import is
registered under its name as a reproduction that cannot run (its ``import_error`` says why;
running it gives an error row).
"""

from __future__ import annotations

import difflib
import importlib
import json
import os
import pkgutil
import platform
import time
import traceback
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from divergent._files import atomic_write_bytes
from divergent._threads import single_thread
from divergent._version import __version__
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
    "all_reproductions",
    "atomic_write_json",
    "atomic_write_text",
    "check_seed",
    "did_you_mean",
    "discover_reproductions",
    "get_reproduction",
    "load_results",
    "plan_run",
    "reproduction",
    "run_many",
    "run_reproduction",
]

MAX_SEED = 2**32 - 1
"""Largest base seed (reproductions add offsets to it; numpy and torch take it)."""

RESULTS_FORMAT = "divergent-reproduce/2"

ProgressFn = Callable[[str, "float | None"], None]


def _no_progress(_description: str, _fraction: float | None = None) -> None:
    return None


MODES = ("quick", "full")


class RunSize(Mapping[str, Any]):
    """The run sizes of one mode (seeds, steps, grids), read as attributes.

    A read-only mapping of names to values; an unknown name is an ``AttributeError`` that
    lists the declared ones.

    Example:
        >>> size = RunSize({"n_seeds": 3, "steps": 25})
        >>> size.n_seeds, dict(size)
        (3, {'n_seeds': 3, 'steps': 25})
    """

    def __init__(self, values: Mapping[str, Any] | None = None) -> None:
        self._values = dict(values or {})

    def __getattr__(self, name: str) -> Any:
        try:
            return self.__dict__["_values"][name]
        except KeyError:
            known = ", ".join(sorted(self.__dict__.get("_values", {}))) or "none"
            raise AttributeError(f"no run size `{name}` (declared: {known})") from None

    def __getitem__(self, name: str) -> Any:
        return self._values[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"RunSize({self._values!r})"


def _check_sizes(id: str, sizes: Mapping[str, Mapping[str, Any]] | None) -> dict[str, RunSize]:
    """``sizes`` as ``{"quick": RunSize, "full": RunSize}`` with the same names in both."""
    if sizes is None:
        return {mode: RunSize() for mode in MODES}
    if not isinstance(sizes, Mapping) or set(sizes) != set(MODES):
        raise ValueError(
            f"reproduction `{id}`: sizes must map exactly {list(MODES)} to run sizes, got {sizes!r}"
        )
    quick, full = (sizes[mode] for mode in MODES)
    if not isinstance(quick, Mapping) or not isinstance(full, Mapping):
        raise ValueError(
            f"reproduction `{id}`: the quick and full sizes must be mappings of names to "
            f"values, got {quick!r} and {full!r}"
        )
    if set(quick) != set(full):
        raise ValueError(
            f"reproduction `{id}`: the quick and full sizes must name the same values, got "
            f"{sorted(quick)} and {sorted(full)}"
        )
    return {mode: RunSize(sizes[mode]) for mode in MODES}


@dataclass
class ReproContext:
    """What a reproduction receives: mode, output folder, seed and a progress callback.

    Attributes:
        id: the reproduction's id (used to name its plots).
        quick: run the small version (under a minute; used by the test suite).
        out_dir: folder for this run's plots and files.
        seed: base random seed; use :meth:`generator` / :meth:`numpy_rng` for randomness.
        progress: ``progress(description, fraction)`` with fraction in [0, 1] or None.
        size: the run sizes the reproduction declares for this mode (``ctx.size.n_seeds``).
    """

    id: str
    quick: bool
    out_dir: Path
    seed: int = 0
    progress: ProgressFn = _no_progress
    plots: list[str] = field(default_factory=list)
    size: RunSize = field(default_factory=RunSize)

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

    def subplots(self, *args: Any, **kwargs: Any) -> tuple[Any, Any]:
        """``matplotlib.pyplot.subplots(*args, **kwargs)`` on the non-interactive Agg backend:
        ``(figure, axes)``, to be saved with :meth:`savefig`."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        return plt.subplots(*args, **kwargs)

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
    """What an experiment returns: its measured numbers and the evidence in one line.

    Attributes:
        metrics: measured numbers (JSON-serialisable: floats, ints, lists, dicts, str); the
            reproduction's ``verdict`` function reads them.
        summary: one line with the evidence ("reverse KL covers 1/4 modes, forward 4/4").
        verdict: only for a reproduction registered without a ``verdict`` function (older
            style): its verdict, a :class:`Verdict` or its value.
        held: older style still: ``True`` / ``False`` for ``held`` / ``not held``.
    """

    metrics: dict[str, Any]
    summary: str = ""
    verdict: Verdict | str | None = None
    held: bool | None = None

    def stated_verdict(self) -> Verdict | None:
        """The verdict the outcome carries itself (None when it carries none)."""
        if self.verdict is not None:
            try:
                stated = Verdict(self.verdict)
            except ValueError:
                raise ValueError(
                    f"Outcome.verdict must be one of {[v.value for v in Verdict]}, "
                    f"got {self.verdict!r}"
                ) from None
            if self.held is not None and bool(self.held) != stated.held:
                raise ValueError(f"Outcome has held={self.held} but verdict {stated.value!r}")
            return stated
        if self.held is not None:
            return Verdict.from_bool(bool(self.held))
        return None


VerdictFn = Callable[[Mapping[str, Any]], Verdict]
ExperimentFn = Callable[[ReproContext], Outcome]


@dataclass(frozen=True)
class Reproduction:
    """A registered reproduction: the claim, its experiment and its pure verdict function."""

    id: str
    title: str
    paper: str
    claim: str
    experiment: ExperimentFn
    verdict: VerdictFn | None = None
    tags: tuple[str, ...] = ()
    quick_matches_full: bool = False
    sizes: Mapping[str, RunSize] = field(default_factory=lambda: _check_sizes("", None))
    import_error: str | None = None
    """For a module that failed to import (see :func:`discover_reproductions`): the error in
    one line; the experiment then only raises it. None for a reproduction that loaded."""

    def size(self, quick: bool) -> RunSize:
        """The run sizes of the quick or the full mode."""
        return self.sizes["quick" if quick else "full"]


@dataclass
class ReproductionResult:
    """One row of ``divergent reproduce``.

    ``status`` is the verdict's value or ``"error"``; ``verdict`` is None for an error;
    ``held`` is True only when the verdict is ``held`` (kept for readers of older files);
    ``indicative`` marks a quick run whose verdict the full run may change.
    """

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
    verdict: str | None = None
    indicative: bool = False

    def to_json(self) -> dict[str, Any]:
        return _jsonable(asdict(self))

    @classmethod
    def from_json(cls, row: Any) -> ReproductionResult:
        """Read one stored row; older rows without ``verdict`` get it from ``status``.

        Raises:
            ValueError: the row is not an object with the fields of a result.
        """
        if not isinstance(row, dict):
            raise ValueError(f"a result row must be an object, got {type(row).__name__}")
        names = {f.name for f in fields(cls)}
        required = names - {"error", "verdict", "indicative"}
        missing = sorted(required - row.keys())
        if missing:
            raise ValueError(f"a result row lacks {missing}")
        kinds = {
            "id": str,
            "status": str,
            "quick": bool,
            "seed": int,
            "metrics": dict,
            "plots": list,
            "seconds": (int, float),
            "held": bool,
        }
        for key, kind in kinds.items():
            if not isinstance(row[key], kind):
                raise ValueError(f"field `{key}` of row {row.get('id')!r} has the wrong type")
        allowed = {v.value for v in Verdict} | {"error"}
        if row["status"] not in allowed:
            raise ValueError(f"row {row['id']!r} has unknown status {row['status']!r}")
        data = {k: v for k, v in row.items() if k in names}
        if data.get("verdict") is None and row["status"] != "error":
            data["verdict"] = row["status"]
        return cls(**data)


_REGISTRY: dict[str, Reproduction] = {}


def reproduction(
    id: str,
    *,
    title: str,
    paper: str,
    claim: str,
    verdict: VerdictFn | None = None,
    tags: Sequence[str] = (),
    quick_matches_full: bool = False,
    sizes: Mapping[str, Mapping[str, Any]] | None = None,
) -> Callable[[ExperimentFn], ExperimentFn]:
    """Register ``experiment(ctx) -> Outcome`` as the reproduction ``id``.

    Args:
        id: short name (``divergent reproduce <id>``).
        title, paper, claim: what is reproduced; ``claim`` is one sentence.
        verdict: pure ``verdict(metrics) -> Verdict`` with thresholds fixed in code (the
            way to write one; without it the experiment's :class:`Outcome` must state its
            verdict itself).
        tags: free labels.
        quick_matches_full: the quick run gives the full run's verdict (checked by a test);
            otherwise a quick result is labelled indicative.
        sizes: ``{"quick": {...}, "full": {...}}``, the run sizes of each mode under the same
            names; the experiment reads its mode's as ``ctx.size.<name>``.
    """
    if verdict is not None and not callable(verdict):
        raise ValueError(f"reproduction `{id}`: verdict must be a function, got {verdict!r}")
    mode_sizes = _check_sizes(id, sizes)

    def wrap(fn: ExperimentFn) -> ExperimentFn:
        if id in _REGISTRY and _REGISTRY[id].experiment is not fn:
            raise ValueError(f"reproduction id `{id}` is registered twice")
        _REGISTRY[id] = Reproduction(
            id, title, paper, claim, fn, verdict, tuple(tags), quick_matches_full, mode_sizes
        )
        return fn

    return wrap


def all_reproductions() -> list[Reproduction]:
    """Every registered reproduction by id, those whose module failed to import included."""
    return [_REGISTRY[k] for k in sorted(_REGISTRY)]


def _failed_import(module: str, name: str, line: str, err: Exception) -> Reproduction:
    """The stand-in of a module that failed to import: running it raises the import error."""

    def experiment(ctx: ReproContext) -> Outcome:
        raise ImportError(f"module {module} failed to import: {line}") from err

    return Reproduction(
        name,
        title=f"module {module} (failed to import)",
        paper="",
        claim=f"not loaded: {line}",
        experiment=experiment,
        import_error=line,
    )


def discover_reproductions(package: str, path: Iterable[str]) -> dict[str, str]:
    """Import each module of a package so that it registers its reproduction.

    Modules are imported in name order; names with a leading underscore are skipped. A module
    whose import raises (``SyntaxError``, ``ImportError``, an error in its top-level code) does
    not stop the others: it is registered under its module name as a reproduction whose
    ``import_error`` holds the error in one line and whose run is an error row (with the
    import's traceback), replacing anything it registered before it failed.

    Args:
        package: the package's dotted name (``__name__`` in its ``__init__.py``).
        path: where its modules are (``__path__``).

    Returns:
        ``{module name: one-line error}`` of the modules that failed to import (empty when all
        loaded).
    """
    failed: dict[str, str] = {}
    for info in sorted(pkgutil.iter_modules(list(path)), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = f"{package}.{info.name}"
        try:
            importlib.import_module(module)
        except Exception as err:  # one broken module must not hide the others
            line = " ".join(f"{type(err).__name__}: {err}".split())
            _REGISTRY[info.name] = _failed_import(module, info.name, line, err)
            failed[info.name] = line
    return failed


def did_you_mean(ids: Iterable[str], known: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` naming the closest known id of each near miss in ``ids``, or ``""``.

    >>> did_you_mean(["mode_dem"], ["mode_demo", "apo"])
    " (did you mean 'mode_demo'?)"
    >>> did_you_mean(["zzz"], ["mode_demo"])
    ''
    """
    choices = sorted(known)
    close = [difflib.get_close_matches(i, choices, n=1, cutoff=0.6) for i in ids]
    names = [repr(match[0]) for match in close if match]
    return f" (did you mean {' or '.join(names)}?)" if names else ""


def get_reproduction(id: str) -> Reproduction:
    if id not in _REGISTRY:
        raise ValueError(
            f"unknown reproduction `{id}`{did_you_mean([id], _REGISTRY)}; available: "
            f"{', '.join(sorted(_REGISTRY))}"
        )
    return _REGISTRY[id]


def _jsonable(value: Any) -> Any:
    if isinstance(value, Verdict):
        return value.value
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, torch.Tensor):
        return _jsonable(value.detach().cpu().tolist())
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, (np.floating, np.integer, np.bool_)):
        return _jsonable(value.item())
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        return str(value)  # JSON has no NaN / inf
    if isinstance(value, Path):
        return str(value)
    return value


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically, creating its folder if needed.

    :func:`divergent.train.checkpoint.atomic_write_bytes` does the work: a temporary file in
    the same folder, fsync, :func:`os.replace`, fsync of the folder. The file gets the
    permissions a plain ``open(path, "w")`` would (0666 minus the umask).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, payload: Any) -> None:
    """:func:`atomic_write_text` of ``payload`` as indented JSON (NaN / inf as strings)."""
    atomic_write_text(path, json.dumps(_jsonable(payload), indent=2))


def run_reproduction(
    id: str,
    *,
    quick: bool = False,
    out_dir: Path | str = "runs/reproduce",
    seed: int = 0,
    progress: ProgressFn = _no_progress,
) -> ReproductionResult:
    """Run one reproduction on one torch thread and apply its verdict to the metrics.

    An exception (in the experiment or the verdict) becomes ``status="error"`` with its
    traceback.
    """
    rep = get_reproduction(id)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ctx = ReproContext(
        id=id, quick=quick, out_dir=out, seed=seed, progress=progress, size=rep.size(quick)
    )
    torch.manual_seed(seed)
    np.random.seed(seed)  # noqa: NPY002  (seed code that still uses the legacy global RNG)
    start = time.perf_counter()
    indicative = quick and not rep.quick_matches_full

    def result(**outcome: Any) -> ReproductionResult:
        """The row: what is reproduced, how it ran, and ``outcome`` (status and numbers)."""
        return ReproductionResult(
            id=id,
            title=rep.title,
            paper=rep.paper,
            claim=rep.claim,
            plots=list(ctx.plots),
            quick=quick,
            seed=seed,
            seconds=time.perf_counter() - start,
            indicative=indicative,
            **outcome,
        )

    try:
        with single_thread():
            outcome = rep.experiment(ctx)
        if not isinstance(outcome, Outcome):
            raise TypeError(f"reproduction `{id}` returned {type(outcome).__name__}, not Outcome")
        metrics = _jsonable(outcome.metrics)
        stated = outcome.stated_verdict()
        if rep.verdict is not None:
            verdict = rep.verdict(metrics)
            if not isinstance(verdict, Verdict):
                raise TypeError(f"verdict of `{id}` returned {verdict!r}, not a Verdict")
            if stated is not None and stated is not verdict:
                raise ValueError(
                    f"`{id}`: the outcome states {stated.value!r} but verdict(metrics) gives "
                    f"{verdict.value!r}"
                )
        elif stated is not None:
            verdict = stated
        else:
            raise TypeError(
                f"reproduction `{id}` has no verdict function and its Outcome states no verdict"
            )
        label = f"verdict: {verdict.value}"
        if indicative:
            label += " (quick mode: indicative, the full run decides)"
        summary = f"{outcome.summary} — {label}" if outcome.summary else label
        return result(
            status=verdict.value,
            held=verdict.held,
            metrics=metrics,
            summary=summary,
            verdict=verdict.value,
        )
    except Exception as err:  # report, do not hide: status "error" and exit code 1
        return result(
            status="error",
            held=False,
            metrics={},
            summary=f"{type(err).__name__}: {err}",
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


class ResultsFileError(ValueError):
    """An existing ``results.json`` that cannot be read as reproduction results.

    The file is left untouched; the message says what is wrong in one line.
    """


def load_results(path: Path | str) -> list[ReproductionResult]:
    """The rows of an existing ``results.json`` (an empty list when there is no file).

    Raises:
        ResultsFileError: the file is empty, truncated, not JSON, or JSON of another shape
            (not written by ``divergent reproduce``), or it cannot be read.
    """
    p = Path(path)
    if not p.exists():
        return []
    if p.is_dir():
        raise ResultsFileError(f"{p} is a folder, not a results file")
    try:
        text = p.read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise ResultsFileError(f"cannot read {p}: {err}") from None
    if not text.strip():
        raise ResultsFileError(f"{p} is empty")
    try:
        payload = json.loads(text)
    except json.JSONDecodeError as err:
        raise ResultsFileError(f"{p} is not valid JSON (corrupt or truncated: {err})") from None
    if not isinstance(payload, dict) or not isinstance(payload.get("results"), list):
        raise ResultsFileError(
            f"{p} is not a divergent results file (no `results` list); move it or use another --out"
        )
    rows: list[ReproductionResult] = []
    for i, row in enumerate(payload["results"]):
        try:
            rows.append(ReproductionResult.from_json(row))
        except ValueError as err:
            raise ResultsFileError(f"{p}: row {i} is not a result ({err})") from None
    return rows


@dataclass
class RunPlan:
    """What a run into a folder will do with the rows already stored there.

    Attributes:
        run: ids to run now, in order.
        reuse: stored rows taken as they are (``--resume``, same mode and seed, not errors).
        replaced: ``id -> reason`` for stored rows of a requested id that will be re-run.
        kept_other: stored rows of ids not requested this time (kept in the file unchanged).
    """

    run: list[str]
    reuse: dict[str, ReproductionResult]
    replaced: dict[str, str]
    kept_other: list[ReproductionResult]

    def messages(self) -> list[str]:
        """One line per decision, for the user."""
        lines = []
        for rid, row in self.reuse.items():
            lines.append(
                f"kept {rid}: stored row ({_mode(row.quick)}, seed {row.seed}, {row.status}) reused"
            )
        for rid, reason in self.replaced.items():
            lines.append(f"re-running {rid}: {reason}")
        if self.kept_other:
            ids = ", ".join(r.id for r in self.kept_other)
            lines.append(f"kept unchanged in results.json: {ids}")
        return lines


def _mode(quick: bool) -> str:
    return "quick" if quick else "full"


def plan_run(
    ids: Sequence[str],
    stored: Sequence[ReproductionResult],
    *,
    quick: bool,
    seed: int,
    resume: bool,
) -> RunPlan:
    """Decide which requested ids run and which stored rows are reused, replaced or kept."""
    by_id = {r.id: r for r in stored}
    ordered = list(dict.fromkeys(ids))
    reuse: dict[str, ReproductionResult] = {}
    replaced: dict[str, str] = {}
    for rid in ordered:
        row = by_id.get(rid)
        if row is None:
            continue
        if not resume:
            replaced[rid] = (
                f"replaces the stored row ({_mode(row.quick)}, seed {row.seed}); "
                "--resume would reuse a matching one"
            )
        elif row.status == "error":
            replaced[rid] = "the stored row is an error"
        elif row.quick != quick or row.seed != seed:
            replaced[rid] = (
                f"the stored row is {_mode(row.quick)}, seed {row.seed}; this run "
                f"is {_mode(quick)}, seed {seed}"
            )
        else:
            reuse[rid] = row
    run = [rid for rid in ordered if rid not in reuse]
    kept_other = [r for r in stored if r.id not in set(ordered)]
    return RunPlan(run=run, reuse=reuse, replaced=replaced, kept_other=kept_other)


def check_seed(seed: int) -> int:
    """``seed`` if it is an int in [0, MAX_SEED]; else a ValueError naming it."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise ValueError(f"seed must be an integer in [0, {MAX_SEED}], got {seed!r}")
    return seed


def run_many(
    ids: Iterable[str],
    *,
    quick: bool = False,
    out_dir: Path | str = "runs/reproduce",
    seed: int = 0,
    resume: bool = False,
    on_plan: Callable[[RunPlan], None] | None = None,
    on_start: Callable[[Reproduction], None] | None = None,
    on_done: Callable[[ReproductionResult], None] | None = None,
    progress: ProgressFn = _no_progress,
) -> list[ReproductionResult]:
    """Run several reproductions, writing ``out_dir/results.json`` atomically after each one.

    Rows already in ``results.json`` for ids not requested are kept. A requested id is run
    again unless ``resume`` is set and its stored row has the same mode and seed and is not
    an error (then the stored row is reused). ``on_plan`` receives the decisions first.

    Raises:
        ValueError: an unknown id or a bad seed (before anything runs).
        ResultsFileError: the existing ``results.json`` is not readable as results (it is
            left untouched).
    """
    check_seed(seed)
    out = Path(out_dir)
    results_path = out / "results.json"
    ordered = list(dict.fromkeys(ids))
    for rid in ordered:
        get_reproduction(rid)  # fail fast on unknown ids before running anything
    stored = load_results(results_path)
    plan = plan_run(ordered, stored, quick=quick, seed=seed, resume=resume)
    if on_plan:
        on_plan(plan)
    # the file keeps the stored order; re-run ids replace their row in place, new ids append
    table: dict[str, ReproductionResult] = {r.id: r for r in stored}
    results: dict[str, ReproductionResult] = {}
    for rid in ordered:
        rep = get_reproduction(rid)
        if on_start:
            on_start(rep)
        result = plan.reuse.get(rid) or run_reproduction(
            rid, quick=quick, out_dir=out, seed=seed, progress=progress
        )
        results[rid] = result
        if on_done:
            on_done(result)
        table[rid] = result
        atomic_write_json(
            results_path,
            {
                "format": RESULTS_FORMAT,
                "environment": _environment(),
                "quick": quick,
                "seed": seed,
                "results": [r.to_json() for r in table.values()],
            },
        )
    return [results[rid] for rid in ordered]

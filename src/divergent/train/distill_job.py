r"""The job behind ``divergent distill``: one teacher, a smaller student per objective × seed.

On scikit-learn's embedded digits by default (or a user's ``.npz``/``.csv`` table) the job

1. trains the teacher (an MLP with two hidden layers of 256) **once** and caches it in
   ``OUT/teacher.ckpt``; a rerun with the same data reuses it;
2. trains a clearly smaller student (one hidden layer of 16, ~70× fewer parameters) with each
   selected objective and seed, plus the cross-entropy-only baseline ``ce``, every run with
   :class:`~divergent.train.classifier.ClassifierTrainer` (checkpointed in
   ``OUT/runs/<objective>/seed-<k>/``);
3. measures each student on the held-out split — accuracy, expected calibration error (15
   equal-width bins, :func:`divergent.metrics.expected_calibration_error`), negative
   log-likelihood, fidelity to the teacher (top-1 agreement, :func:`divergent.metrics.fidelity`)
   — and writes ``OUT/report.json``, ``OUT/report.md`` and ``OUT/plots/``.

Every file is written atomically, so a job killed at any moment loses at most the run in
progress, and ``resume=True`` continues it from its last checkpoint to exactly the numbers
of an uninterrupted job. Without ``resume`` the students are trained again (the cached
teacher is always reused). Bad input — a data file that is empty, has one class, NaN features
or labels out of range, a teacher whose class count differs from the data's, an unwritable
output folder, a damaged checkpoint — raises :class:`DistillError` with a one-line message and
leaves everything already written in place.

The job runs PyTorch on one thread (the models are tiny: more threads only add contention),
which also makes its numbers the same on any machine of the same architecture.

Example:
    >>> import tempfile
    >>> config = DistillConfig(objectives=("kd",), seeds=1, epochs=1, teacher_epochs=1,
    ...                        out=tempfile.mkdtemp())
    >>> report = run_distill(config)
    >>> [(run["objective"], run["seed"]) for run in report["runs"]]
    [('ce', 0), ('kd', 0)]
    >>> {"accuracy", "ece", "nll"} <= set(report["teacher"])
    True
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import statistics
import time
import uuid
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from rich.progress import Progress
from torch import Tensor, nn

from divergent._threads import single_thread
from divergent.metrics import expected_calibration_error, fidelity, reliability_diagram
from divergent.objectives import list_objectives, make_objective
from divergent.train.checkpoint import (
    CheckpointError,
    atomic_write_bytes,
    load_checkpoint,
    save_checkpoint,
)
from divergent.train.classifier import ClassifierTrainer, FitResult, evaluate_logits
from divergent.train.data import (
    STUDENT_HIDDEN,
    TEACHER_HIDDEN,
    ClassificationTask,
    DataError,
    count_parameters,
    load_digits_task,
    load_table,
    make_task,
    student_mlp,
    teacher_mlp,
)

__all__ = [
    "BASELINE",
    "DEFAULT_OBJECTIVES",
    "QUICK_OBJECTIVES",
    "DistillConfig",
    "DistillError",
    "finished_run",
    "objective_ids",
    "parse_objectives",
    "prepare_out",
    "resolve_device",
    "run_distill",
    "run_folder",
    "run_grid",
    "run_slug",
    "save_png",
    "summarize",
    "summarize_runs",
    "write_json",
]

BASELINE = "ce"
DEFAULT_OBJECTIVES: tuple[str, ...] = (
    "kd",
    "kd:reverse_kl",
    "kd:js",
    "kd:tv",
    "dkd",
    "dist",
    "lskd",
    "ofa",
    "pld",
    "sinkd",
    "bdkd",
)
QUICK_OBJECTIVES: tuple[str, ...] = ("kd", "kd:reverse_kl", "kd:js", "dkd", "lskd")
TEACHER_FILE = "teacher.ckpt"
_TEACHER_FORMAT = "divergent-distill-teacher"


class DistillError(ValueError):
    """Bad input to the distillation job; the message is one line naming the problem."""


@dataclass(frozen=True)
class DistillConfig:
    """Settings of :func:`run_distill` (the CLI flags of ``divergent distill``).

    Attributes:
        objectives: objective ids (``ce`` is always added first as the baseline).
        seeds: students per objective (seeds ``0 … seeds−1``).
        epochs: student epochs (default 30; 12 with ``quick``).
        quick: the small version (≤ 1 min): fewer epochs and, unless ``objectives`` is
            given, the objectives of :data:`QUICK_OBJECTIVES`.
        out: the output folder.
        resume: keep finished runs of ``out`` and continue interrupted ones.
        device: ``"cpu"``, ``"cuda"`` or ``"auto"``.
        data: a ``.npz``/``.csv`` table of features and labels (default: digits).
        teacher: a teacher file written by an earlier job (``OUT/teacher.ckpt``) to use
            instead of training one.
        teacher_epochs, batch_size, lr, teacher_lr: training settings.
    """

    objectives: tuple[str, ...] | None = None
    seeds: int = 3
    epochs: int | None = None
    quick: bool = False
    out: str | os.PathLike[str] = "runs/distill"
    resume: bool = False
    device: str = "cpu"
    data: str | os.PathLike[str] | None = None
    teacher: str | os.PathLike[str] | None = None
    teacher_epochs: int = 20
    batch_size: int = 64
    lr: float = 1e-2
    teacher_lr: float = 2e-3

    @property
    def student_epochs(self) -> int:
        return self.epochs if self.epochs is not None else (12 if self.quick else 30)

    @property
    def selected(self) -> tuple[str, ...]:
        chosen = self.objectives
        if chosen is None:
            chosen = QUICK_OBJECTIVES if self.quick else DEFAULT_OBJECTIVES
        return parse_objectives(chosen)


def objective_ids(ids: Sequence[str]) -> list[str]:
    """The ids of ``ids`` (repeated and / or comma-separated), baseline ``ce`` first, no repeats.

    >>> objective_ids(["kd, kd:js", "ce", "kd"])
    ['ce', 'kd', 'kd:js']

    Raises:
        DistillError: an empty id (``-o ''``, ``-o kd,,js``), which would otherwise run only
            the baseline without saying so.
    """
    flat = [part.strip() for item in ids for part in str(item).split(",")]
    if "" in flat:
        raise DistillError(
            f"empty objective id in {list(map(str, ids))}; give ids such as kd or kd:js, "
            "repeated (-o kd -o kd:js) or comma-separated without empty items"
        )
    return list(dict.fromkeys([BASELINE, *flat]))


def parse_objectives(ids: Sequence[str]) -> tuple[str, ...]:
    """Validate objective ids (comma-separated items allowed), baseline ``ce`` first, no repeats.

    Raises:
        DistillError: an empty or unknown id (with the registry's did-you-mean suggestion);
            a ``gkd:`` id, which is for ``--task lm``.
    """
    unique = objective_ids(ids)
    for objective_id in unique:
        if objective_id == "gkd" or objective_id.startswith("gkd:"):
            raise DistillError(
                f"objective {objective_id!r} is for --task lm; --task classifier takes "
                f"{', '.join(spec.id for spec in list_objectives())} and kd:<divergence> (any "
                "name of `divergent list`)"
            )
        try:
            make_objective(objective_id)
        except ValueError as err:
            raise DistillError(str(err).splitlines()[0]) from None
    return tuple(unique)


def run_slug(objective_id: str) -> str:
    """The folder name of an objective's runs (``kd:js`` → ``kd-js``)."""
    return re.sub(r"[^a-z0-9_.-]", "-", objective_id.lower())


def run_folder(out: Path, objective_id: str, seed: int) -> Path:
    """``OUT/runs/<objective>/seed-<k>/``: the folder of one run (its ``result.json`` last)."""
    return out / "runs" / run_slug(objective_id) / f"seed-{seed}"


def finished_run(result_path: Path, settings: dict[str, Any]) -> dict[str, Any] | None:
    """The record a finished run wrote to ``result_path`` (what ``--resume`` keeps).

    Returns:
        The saved record, or ``None`` when the run has not finished (no ``result.json``).

    Raises:
        DistillError: the file is unreadable, or was written with other ``settings`` (the
            message names the keys that differ).
    """
    if not result_path.exists():
        return None
    try:
        saved = json.loads(result_path.read_text())
    except (OSError, ValueError) as err:
        raise DistillError(f"--resume: {result_path} is unreadable ({err})") from None
    if saved.get("settings") != settings:
        before = saved.get("settings") if isinstance(saved.get("settings"), dict) else {}
        changed = sorted(k for k in settings if before.get(k) != settings[k])
        raise DistillError(
            f"--resume: {result_path} was written with other settings ({', '.join(changed)})"
            "; use the same settings or another --out"
        )
    return saved


def run_grid(
    objectives: Sequence[str],
    seeds: int,
    out: Path,
    *,
    settings: Callable[[str, int], dict[str, Any]],
    train: Callable[[str, int, dict[str, Any]], dict[str, Any]],
    resume: bool,
    progress: Progress | None = None,
    on_run: Callable[[dict[str, Any]], None] | None = None,
    on_resume: Callable[[int, int], None] | None = None,
) -> list[dict[str, Any]]:
    """Every run of a job, objective by objective, seeds ``0 … seeds−1``: the loop both jobs share.

    With ``resume`` the finished runs (:func:`finished_run` of each run's ``result.json``) are
    read and checked first, so that a run written with other settings stops the job before
    anything trains, and ``on_resume(kept, to_run)`` is told how many are kept and how many
    will run; they are kept as they are. Every other run is ``train(objective, seed,
    settings(objective, seed))``.

    Args:
        objectives: objective ids, in report order.
        seeds: runs per objective.
        out: the job's output folder (runs in :func:`run_folder`).
        settings: the settings of one run (stored in its record; compared on resume).
        train: trains one run and returns its record.
        resume: keep finished runs.
        progress: a running rich ``Progress``: an "all runs" bar is shown in it.
        on_run: called with each run's record (kept or trained), in order.
        on_resume: with ``resume``, called once before training with (kept, to run).

    Returns:
        The records, in order.
    """
    plan = [(objective, seed) for objective in objectives for seed in range(seeds)]
    kept: dict[tuple[str, int], dict[str, Any]] = {}
    if resume:
        for objective, seed in plan:
            path = run_folder(out, objective, seed) / "result.json"
            saved = finished_run(path, settings(objective, seed))
            if saved is not None:
                kept[objective, seed] = saved
        if on_resume is not None:
            on_resume(len(kept), len(plan) - len(kept))
    overall = progress.add_task("all runs", total=len(plan)) if progress is not None else None
    runs = []
    for objective, seed in plan:
        record = kept.get((objective, seed))
        if record is None:
            record = train(objective, seed, settings(objective, seed))
        runs.append(record)
        if on_run is not None:
            on_run(record)
        if progress is not None and overall is not None:
            progress.advance(overall)
    if progress is not None and overall is not None:
        progress.remove_task(overall)
    return runs


def save_png(fig: Any, path: Path) -> None:
    """Render a matplotlib ``Figure`` to ``path`` as PNG (110 dpi), atomically."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    fig.savefig(tmp, format="png", dpi=110)
    os.replace(tmp, path)


def write_json(path: Path, payload: Any) -> None:
    """Write ``payload`` as indented JSON, atomically (a reader sees the old or the new file)."""
    atomic_write_bytes(path, (json.dumps(payload, indent=2, sort_keys=False) + "\n").encode())


def _report_task(report: Path) -> tuple[str, Any] | None:
    """``(job, task)`` of the job that wrote ``report`` (job ``"lm"`` or ``"classifier"``, task
    as stored); None when it is unreadable."""
    try:
        task = json.loads(report.read_text()).get("task")
    except (OSError, ValueError, AttributeError):
        return None
    return ("lm" if task == "lm" else "classifier"), task


def prepare_out(out: Path, *, job: str) -> None:
    """Create ``out`` and check it is writable and holds no report of another job.

    ``job`` is ``"classifier"`` or ``"lm"``: a ``report.json`` that another job (or nothing
    readable) wrote there is refused with a one-line :class:`DistillError`, so a run never
    overwrites the other job's results.
    """
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test-{uuid.uuid4().hex}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise DistillError(f"--out {out}: not a writable folder ({reason})") from None
    report = out / "report.json"
    if report.exists():
        found = _report_task(report)
        if found is None:
            raise DistillError(f"--out {out} holds an unreadable report.json; use another --out")
        if found[0] != job:
            raise DistillError(
                f"--out {out} holds the report of another job (task {found[1]!r}); "
                "use another --out"
            )


def _load_task(config: DistillConfig) -> ClassificationTask:
    if config.data is None:
        return load_digits_task()
    features, labels = load_table(config.data)
    return make_task(features, labels, name=Path(config.data).name)


def resolve_device(name: str) -> str:
    """``--device``: cpu, cuda, cuda:N or auto (cuda when available), checked."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name not in ("cpu", "cuda") and not name.startswith("cuda:"):
        raise DistillError(f"--device must be cpu, cuda, cuda:N or auto, got {name!r}")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise DistillError(f"--device {name}: CUDA is not available on this machine")
    return name


def _metrics(logits: Tensor, labels: Tensor) -> dict[str, float]:
    logits = logits.double()
    return {
        "accuracy": float((logits.argmax(-1) == labels).double().mean()),
        "ece": float(expected_calibration_error(logits.softmax(-1), labels)),
        "nll": float(nn.functional.cross_entropy(logits, labels)),
    }


@dataclass(frozen=True)
class _Job:
    """What every step of one job works with: its settings, data, folder, device and bars."""

    config: DistillConfig
    task: ClassificationTask
    out: Path
    device: str
    progress: Progress | None


def _teacher(job: _Job) -> tuple[nn.Module, dict[str, Any]]:
    """Load the cached (or given) teacher, or train it once and cache it."""
    config, task, out, device = job.config, job.task, job.out, job.device
    given = Path(config.teacher) if config.teacher is not None else None
    path = given if given is not None else out / TEACHER_FILE
    if path.exists():
        try:
            cached = load_checkpoint(path)
        except CheckpointError as err:
            raise DistillError(f"{err}; delete it to train a new teacher") from None
        if cached.get("format") != _TEACHER_FORMAT:
            raise DistillError(f"{path}: not a teacher file written by divergent distill")
        if given is None and cached["data_fingerprint"] != task.fingerprint:
            raise DistillError(
                f"--out {out} holds a teacher trained on other data; use another --out (or "
                f"delete {path} to train a new one)"
            )
        if cached["num_classes"] != task.num_classes:
            raise DistillError(
                f"class-count mismatch: the teacher ({path}) outputs {cached['num_classes']} "
                f"classes but the data ({task.name}) have {task.num_classes}"
            )
        if cached["in_features"] != task.in_features:
            raise DistillError(
                f"{path}: the teacher takes {cached['in_features']} features but the data "
                f"have {task.in_features}"
            )
        if given is None and cached.get("epochs") != config.teacher_epochs:
            raise DistillError(
                f"--out {out} holds a teacher trained for {cached.get('epochs')} epochs, not "
                f"{config.teacher_epochs}; use another --out (or delete {path})"
            )
        teacher = teacher_mlp(task.in_features, task.num_classes)
        teacher.load_state_dict(cached["state_dict"])
        return teacher.to(device).eval(), {**cached, "cached": True}
    if given is not None:
        raise DistillError(f"--teacher {given}: no such file")

    teacher = teacher_mlp(
        task.in_features, task.num_classes, generator=torch.Generator().manual_seed(12345)
    )
    result = _fit(
        job,
        teacher,
        None,
        BASELINE,
        epochs=config.teacher_epochs,
        lr=config.teacher_lr,
        seed=12345,
        checkpoint_dir=out / "teacher-run",
        description="teacher",
    )
    logits, labels = evaluate_logits(teacher, (task.x_test, task.y_test))
    record = {
        "format": _TEACHER_FORMAT,
        "in_features": task.in_features,
        "num_classes": task.num_classes,
        "hidden": list(TEACHER_HIDDEN),
        "data_fingerprint": task.fingerprint,
        "epochs": config.teacher_epochs,
        "seconds": result.seconds,
        "metrics": _metrics(logits, labels),
        "state_dict": {k: v.detach().cpu().clone() for k, v in teacher.state_dict().items()},
    }
    save_checkpoint(path, record)
    return teacher.eval(), {**record, "cached": False}


def _run_settings(job: _Job, teacher_id: str, objective: str, seed: int) -> dict[str, Any]:
    """The settings of one run, stored in its record (``--resume`` compares them)."""
    config = job.config
    return {
        "objective": objective,
        "seed": seed,
        "epochs": config.student_epochs,
        "batch_size": config.batch_size,
        "lr": config.lr,
        "student_hidden": list(STUDENT_HIDDEN),
        "data_fingerprint": job.task.fingerprint,
        "teacher": teacher_id,
    }


def _fit(
    job: _Job,
    model: nn.Module,
    teacher: nn.Module | None,
    objective: str,
    *,
    epochs: int,
    lr: float,
    seed: int,
    checkpoint_dir: Path,
    description: str,
    **options: Any,
) -> FitResult:
    """Train ``model`` on the task's training split with the objective (resumed from its
    checkpoint under ``config.resume``); a damaged checkpoint is a one-line DistillError.
    ``options`` go to :class:`ClassifierTrainer` (scheduler, evaluation, checkpoint cadence)."""
    trainer = ClassifierTrainer(
        model,
        teacher,
        make_objective(objective),
        (job.task.x_train, job.task.y_train),
        epochs=epochs,
        batch_size=job.config.batch_size,
        lr=lr,
        seed=seed,
        checkpoint_dir=checkpoint_dir,
        device=job.device,
        progress=job.progress if job.progress is not None else False,
        description=description,
        **options,
    )
    try:
        return trainer.fit(resume=job.config.resume)
    except CheckpointError as err:
        raise DistillError(str(err)) from None


def _train_run(
    job: _Job,
    teacher: nn.Module,
    teacher_test_logits: Tensor,
    objective: str,
    seed: int,
    settings: dict[str, Any],
) -> dict[str, Any]:
    """Train one student (continuing its checkpoint under ``resume``), measure it, write its
    ``result.json``; return the record."""
    config, task = job.config, job.task
    run_dir = run_folder(job.out, objective, seed)
    run_dir.mkdir(parents=True, exist_ok=True)
    student = student_mlp(
        task.in_features, task.num_classes, generator=torch.Generator().manual_seed(1000 + seed)
    )
    total = math.ceil(task.x_train.shape[0] / config.batch_size) * config.student_epochs
    with warnings.catch_warnings(record=True) as caught:
        # an objective may warn at every step (e.g. a Sinkhorn solve short of its tolerance):
        # count the warnings and keep a few distinct ones instead of flooding the terminal
        warnings.simplefilter("always")
        result = _fit(
            job,
            student,
            teacher,
            objective,
            epochs=config.student_epochs,
            lr=config.lr,
            seed=seed,
            checkpoint_dir=run_dir,
            description=f"{objective} seed {seed}",
            scheduler=lambda opt, steps: torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps),
            eval_data=(task.x_test, task.y_test),
            checkpoint_every=max(1, total // 4),
        )
    distinct = list(dict.fromkeys(f"{w.category.__name__}: {w.message}"[:200] for w in caught))
    logits, labels = evaluate_logits(student, (task.x_test, task.y_test))
    agreement = fidelity(logits, teacher_test_logits)
    record = {
        "objective": objective,
        "seed": seed,
        **_metrics(logits, labels),
        "fidelity": agreement.top1_agreement,
        "fidelity_kl": agreement.kl,
        "seconds": result.seconds,
        "history": result.history,
        "settings": settings,
        "warnings": {"count": len(caught), "distinct": distinct[:3]},
    }
    save_checkpoint(run_dir / "test_logits.ckpt", {"logits": logits})
    write_json(run_dir / "result.json", record)
    return record


def summarize_runs(
    runs: Sequence[dict[str, Any]], primary: str, means: Sequence[str]
) -> list[dict[str, Any]]:
    """Per objective (in first-seen order): ``n``, mean and sample sd of ``primary``, and the
    means of ``means`` (keys ``<name>_mean`` / ``<name>_sd``)."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        groups.setdefault(run["objective"], []).append(run)
    rows = []
    for objective, group in groups.items():
        values = [r[primary] for r in group]
        rows.append(
            {
                "objective": objective,
                "n": len(group),
                f"{primary}_mean": statistics.fmean(values),
                f"{primary}_sd": statistics.stdev(values) if len(values) > 1 else 0.0,
                **{f"{k}_mean": statistics.fmean(r[k] for r in group) for k in means},
            }
        )
    return rows


def summarize(runs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per objective (in first-seen order): mean and sample sd of accuracy, means of the rest."""
    return summarize_runs(runs, "accuracy", ("ece", "nll", "fidelity", "seconds"))


def run_distill(
    config: DistillConfig,
    *,
    progress: Progress | None = None,
    on_run: Callable[[dict[str, Any]], None] | None = None,
    on_resume: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Run the job; return the report (also written to ``OUT/report.json``).

    Args:
        config: the settings.
        progress: a running rich ``Progress`` to show bars in (none by default).
        on_run: called with each finished run's record (e.g. to print a line).
        on_resume: with ``config.resume``, called before training with the number of finished
            runs kept and the number of runs to train (:func:`run_grid`).

    Raises:
        DistillError: bad input (see the module docstring); nothing written is lost.
    """
    if isinstance(config.seeds, bool) or not isinstance(config.seeds, int) or config.seeds < 1:
        raise DistillError(f"--seeds must be an integer >= 1, got {config.seeds!r}")
    if config.student_epochs < 1:
        raise DistillError(f"--epochs must be an integer >= 1, got {config.epochs!r}")
    if config.teacher_epochs < 1:
        raise DistillError(
            f"--teacher-epochs must be an integer >= 1, got {config.teacher_epochs!r}"
        )
    objectives = config.selected
    device = resolve_device(config.device)
    out = Path(config.out)
    try:
        task = _load_task(config)
    except DataError as err:
        raise DistillError(str(err)) from None
    prepare_out(out, job="classifier")
    started = time.perf_counter()
    with single_thread():
        job = _Job(config, task, out, device, progress)
        teacher, teacher_record = _teacher(job)
        teacher_id = _teacher_id(teacher_record)
        teacher_test_logits, _ = evaluate_logits(teacher, (task.x_test, task.y_test))
        teacher_metrics = _metrics(teacher_test_logits, task.y_test)
        runs = run_grid(
            objectives,
            config.seeds,
            out,
            settings=partial(_run_settings, job, teacher_id),
            train=partial(_train_run, job, teacher, teacher_test_logits),
            resume=config.resume,
            progress=progress,
            on_run=on_run,
            on_resume=on_resume,
        )
    student_params = count_parameters(student_mlp(task.in_features, task.num_classes))
    report = {
        "task": task.name,
        "teacher": {
            **teacher_metrics,
            "parameters": count_parameters(teacher),
            "hidden": list(TEACHER_HIDDEN),
            "epochs": teacher_record.get("epochs"),
            "cached": teacher_record["cached"],
        },
        "student": {"parameters": student_params, "hidden": list(STUDENT_HIDDEN)},
        "data": {
            "name": task.name,
            "classes": task.num_classes,
            "features": task.in_features,
            "train_rows": int(task.x_train.shape[0]),
            "test_rows": int(task.x_test.shape[0]),
            "fingerprint": task.fingerprint,
        },
        "settings": {
            "objectives": list(objectives),
            "seeds": config.seeds,
            "epochs": config.student_epochs,
            "teacher_epochs": config.teacher_epochs,
            "batch_size": config.batch_size,
            "lr": config.lr,
            "quick": config.quick,
            "device": device,
        },
        "runs": [
            {k: v for k, v in r.items() if k not in ("history", "settings", "warnings")}
            for r in runs
        ],
        "summary": summarize(runs),
        "seconds": time.perf_counter() - started,
    }
    _plots(out, task, teacher_test_logits, runs, report)
    atomic_write_bytes(out / "report.md", markdown_report(report).encode())
    write_json(out / "report.json", report)  # last: its presence means the job finished
    return report


def _teacher_id(record: dict[str, Any]) -> str:
    digest = hashlib.sha256()
    for key, value in sorted(record["state_dict"].items()):
        digest.update(key.encode())
        digest.update(value.numpy().tobytes())
    return digest.hexdigest()[:16]


def markdown_report(report: dict[str, Any]) -> str:
    """``report.md``: the table, the teacher, the settings and what each column means."""
    teacher, data, settings = report["teacher"], report["data"], report["settings"]
    lines = [
        f"# divergent distill — {report['task']}",
        "",
        f"Teacher: MLP {data['features']}→{'→'.join(map(str, teacher['hidden']))}→"
        f"{data['classes']} ({teacher['parameters']:,} parameters); student: MLP "
        f"{data['features']}→{'→'.join(map(str, report['student']['hidden']))}→"
        f"{data['classes']} ({report['student']['parameters']:,} parameters). "
        f"{data['train_rows']} training rows, {data['test_rows']} test rows; "
        f"{settings['seeds']} seed(s) × {settings['epochs']} epochs per objective.",
        "",
        "| objective | accuracy (mean ± sd) | ECE | NLL | fidelity | seconds |",
        "|---|---|---|---|---|---|",
        f"| teacher | {teacher['accuracy']:.4f} | {teacher['ece']:.4f} | "
        f"{teacher['nll']:.4f} | — | — |",
    ]
    for row in report["summary"]:
        lines.append(
            f"| {row['objective']} | {row['accuracy_mean']:.4f} ± {row['accuracy_sd']:.4f} | "
            f"{row['ece_mean']:.4f} | {row['nll_mean']:.4f} | {row['fidelity_mean']:.4f} | "
            f"{row['seconds_mean']:.1f} |"
        )
    lines += [
        "",
        "Accuracy, ECE (15 equal-width bins, top label), NLL (nats) and fidelity (top-1 "
        "agreement with the teacher) are measured on the held-out split after the last epoch "
        "(no model selection); means over seeds, sd = sample standard deviation. `ce` is the "
        "student trained on the labels only. Seconds: wall time per run on one thread.",
        "",
        "Plots: `plots/accuracy_ece.png`, `plots/reliability.png`, `plots/learning_curves.png`.",
        "",
    ]
    return "\n".join(lines)


def _plots(
    out: Path,
    task: ClassificationTask,
    teacher_logits: Tensor,
    runs: Sequence[dict[str, Any]],
    report: dict[str, Any],
) -> None:
    from matplotlib import colormaps
    from matplotlib.figure import Figure

    folder = out / "plots"
    folder.mkdir(exist_ok=True)

    summary = report["summary"]
    names = [row["objective"] for row in summary]
    fig = Figure(figsize=(max(6.0, 0.6 * len(names) + 2), 6.5), layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True)
    xs = range(len(names))
    top.bar(
        xs,
        [r["accuracy_mean"] for r in summary],
        yerr=[r["accuracy_sd"] for r in summary],
        color="tab:blue",
        capsize=3,
    )
    top.axhline(report["teacher"]["accuracy"], color="black", ls="--", lw=1, label="teacher")
    low = min(r["accuracy_mean"] - r["accuracy_sd"] for r in summary)
    top.set_ylim(max(0.0, low - 0.02), min(1.0, max(report["teacher"]["accuracy"], 0) + 0.01))
    top.set_ylabel("test accuracy")
    top.legend(loc="lower right")
    bottom.bar(xs, [r["ece_mean"] for r in summary], color="tab:orange")
    bottom.axhline(report["teacher"]["ece"], color="black", ls="--", lw=1)
    bottom.set_ylabel("ECE")
    bottom.set_xticks(list(xs), names, rotation=45, ha="right")
    fig.suptitle(f"{report['task']}: students by objective (mean over seeds)")
    save_png(fig, folder / "accuracy_ece.png")

    seed0 = {r["objective"]: r for r in runs if r["seed"] == 0}
    panels = [("teacher", teacher_logits)]
    for objective in names:
        logits_path = run_folder(out, objective, 0) / "test_logits.ckpt"
        if objective in seed0 and logits_path.exists():
            panels.append((objective, load_checkpoint(logits_path)["logits"]))
    cols = min(4, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig = Figure(figsize=(3.2 * cols, 3.2 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, (name, logits) in zip(axes, panels):
        reliability_diagram(logits.double().softmax(-1), task.y_test, ax=ax, title=name)
    for ax in axes[len(panels) :]:
        ax.set_visible(False)
    fig.suptitle("Reliability diagrams (seed 0, test split)")
    save_png(fig, folder / "reliability.png")

    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.subplots()
    palette = colormaps["tab20"]
    for index, objective in enumerate(names):
        curves = [r["history"] for r in runs if r["objective"] == objective and r.get("history")]
        if not curves:
            continue
        epochs = [h["epoch"] for h in curves[0]]
        mean = [statistics.fmean(c[i]["accuracy"] for c in curves) for i in range(len(epochs))]
        ax.plot(
            epochs,
            mean,
            label=objective,
            color="black" if objective == BASELINE else palette(index % 20),
            lw=1.5 if objective == BASELINE else 1.0,
            ls="--" if objective == BASELINE else "-",
        )
    ax.set_xlabel("epoch")
    ax.set_ylabel("test accuracy (mean over seeds)")
    ax.legend(fontsize=7, ncol=2)
    ax.set_title("Learning curves")
    save_png(fig, folder / "learning_curves.png")

r"""A resumable distillation trainer for classifiers (single process or DDP through Accelerate).

:class:`ClassifierTrainer` trains a user's ``student`` on a user's data with a user's
``objective`` — any callable ``objective(student_logits, teacher_logits, labels) -> loss``,
such as those of :func:`divergent.objectives.make_objective` — minimising

.. math::

    \min_\theta \; \frac{1}{|B|}\sum_{i\in B} \ell\big(s_\theta(x_i),\, t(x_i),\, y_i\big)

over mini-batches ``B`` drawn in a seeded order, where ``t`` is the frozen teacher.

What it guarantees:

* **Teacher logits once.** Without ``augment`` the teacher runs once over the training data
  (in eval mode, without gradients) and its logits are reused every epoch (and saved next to
  the checkpoint, so a resumed run reuses exactly the same numbers). With ``augment`` the
  teacher sees each augmented batch.
* **Deterministic on CPU given ``seed``.** The data order of epoch ``e`` is a permutation
  drawn from a generator seeded with ``(seed, e)``; a fresh :meth:`~ClassifierTrainer.fit`
  seeds ``torch``, ``numpy`` and ``random`` with ``seed``.
* **Atomic checkpoints** (:mod:`divergent.train.checkpoint`) every ``checkpoint_every``
  steps and at the end of every epoch: student, objective (when it has state), optimiser,
  scheduler, the RNG states of torch / numpy / python (of every process), the epoch's data
  order and position, the running loss and the history. Writes go through a temporary file
  in the same folder, ``fsync`` and :func:`os.replace`, in a background thread.
* **Exact resume.** ``fit(resume=True)`` continues from the last checkpoint and reaches
  bit-identical final weights after a kill at any moment (SIGKILL included), on CPU.
* **DDP through Accelerate.** Under ``torchrun --nproc_per_node N`` or ``accelerate launch``
  (or with an ``accelerator=`` given) the student is wrapped by
  ``accelerate.Accelerator.prepare`` (gloo on CPU, NCCL on GPU); each global batch of
  ``batch_size`` rows is split between the processes, so the optimisation matches the single
  process run up to floating-point summation order. Only the main process writes.

Example:
    >>> import torch, torch.nn.functional as F
    >>> from divergent.functional import divergence
    >>> _ = torch.manual_seed(0)
    >>> x = torch.randn(64, 5); y = (x[:, 0] > 0).long()
    >>> teacher = torch.nn.Linear(5, 2); student = torch.nn.Linear(5, 2)
    >>> def kd(s, t, labels):
    ...     return divergence("kl", t, s, temperature=2.0) * 4.0 + F.cross_entropy(s, labels)
    >>> trainer = ClassifierTrainer(student, teacher, kd, (x, y), epochs=2, batch_size=16,
    ...                             progress=False)
    >>> result = trainer.fit()
    >>> result.global_step, len(result.history)
    (8, 2)
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from divergent.train.checkpoint import (
    CheckpointError,
    CheckpointWriter,
    load_checkpoint,
    remove_stale_temporaries,
    save_checkpoint,
)

__all__ = [
    "CHECKPOINT_NAME",
    "TEACHER_LOGITS_NAME",
    "ClassifierTrainer",
    "FitResult",
    "NonFiniteLossError",
    "epoch_order",
    "evaluate_logits",
    "fit_classifier",
]

CHECKPOINT_NAME = "last.ckpt"
TEACHER_LOGITS_NAME = "teacher_logits.ckpt"
_FORMAT = "divergent-classifier-trainer"
_FORMAT_VERSION = 1

Objective = Callable[[Tensor, Tensor | None, Tensor], Tensor]
DataLike = tuple[Tensor, Tensor] | Dataset | DataLoader


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite; the last checkpoint (if any) is kept."""


@dataclass
class FitResult:
    """What :meth:`ClassifierTrainer.fit` returns."""

    student: nn.Module
    history: list[dict[str, float]]
    """One entry per epoch: ``epoch``, ``train_loss`` and, with ``eval_data``, ``accuracy`` and
    ``nll`` on it."""
    global_step: int
    seconds: float
    """Wall time of this call (a resumed call counts only its own part)."""
    resumed_from: int | None = None
    """The global step of the checkpoint this call started from, ``None`` for a fresh start."""
    extra: dict[str, Any] = field(default_factory=dict)


def epoch_order(seed: int, epoch: int, n: int) -> Tensor:
    """The data order of ``epoch``: a permutation of ``range(n)`` seeded by ``(seed, epoch)``.

    Independent of every global RNG, so resuming mid-epoch needs only ``(epoch, position)``.

    >>> epoch_order(0, 0, 5).tolist() == epoch_order(0, 0, 5).tolist()
    True
    """
    state = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(epoch)]).generate_state(2)
    generator = torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))
    return torch.randperm(n, generator=generator)


def _python_rng_state() -> dict[str, Any]:
    # 625 ints as one tensor: pickling them one by one costs more than the rest of the state
    version, internal, gauss = random.getstate()
    return {
        "version": version,
        "internal": torch.tensor(internal, dtype=torch.int64),
        "gauss": gauss,
    }


def _capture_rng() -> dict[str, Any]:
    name, keys, pos, has_gauss, cached = np.random.get_state()  # noqa: NPY002 (global state)
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "name": str(name),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": _python_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np_state = state["numpy"]
    np.random.set_state(  # noqa: NPY002 (restores the global state)
        (
            np_state["name"],
            np_state["keys"].numpy().astype(np.uint32),
            np_state["pos"],
            np_state["has_gauss"],
            np_state["cached_gaussian"],
        )
    )
    python = state["python"]
    random.setstate(
        (python["version"], tuple(int(v) for v in python["internal"].tolist()), python["gauss"])
    )
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed & 0xFFFFFFFF)  # noqa: NPY002 (seeds the global state)
    random.seed(seed)


def _as_tensors(data: Any) -> tuple[Tensor, Tensor] | None:
    """``(features, labels)`` when ``data`` is held in two tensors, else ``None``."""
    if isinstance(data, DataLoader):
        data = data.dataset
    if (
        isinstance(data, tuple | list)
        and len(data) == 2
        and all(isinstance(t, Tensor) for t in data)
    ):
        return data[0], data[1]
    if isinstance(data, TensorDataset) and len(data.tensors) == 2:
        return data.tensors[0], data.tensors[1]
    return None


def evaluate_logits(
    model: nn.Module, data: Any, *, batch_size: int = 1024
) -> tuple[Tensor, Tensor]:
    """The logits of ``model`` (in eval mode, without gradients) and the labels, in data order.

    ``data`` is ``(features, labels)``, a ``TensorDataset``, a dataset of ``(x, y)`` pairs or a
    ``DataLoader`` (its dataset is read in order). The model's train/eval mode is restored.
    """
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    was_training = model.training
    model.eval()
    outs, labels = [], []
    try:
        with torch.no_grad():
            tensors = _as_tensors(data)
            if tensors is not None:
                x, y = tensors
                for start in range(0, x.shape[0], batch_size):
                    outs.append(model(x[start : start + batch_size].to(device)).float().cpu())
                labels.append(y.reshape(-1).cpu())
            else:
                dataset = data.dataset if isinstance(data, DataLoader) else data
                collate = data.collate_fn if isinstance(data, DataLoader) else None
                loader = DataLoader(
                    dataset,
                    batch_size=batch_size,
                    shuffle=False,
                    collate_fn=collate,
                    generator=torch.Generator(),
                )
                for xb, yb in loader:
                    outs.append(model(xb.to(device)).float().cpu())
                    labels.append(torch.as_tensor(yb).reshape(-1).cpu())
    finally:
        model.train(was_training)
    return torch.cat(outs), torch.cat(labels)


def _check_labels(labels: Tensor, num_classes: int, where: str) -> None:
    if labels.dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.bool):
        raise ValueError(f"{where}: labels must be an integer tensor, got dtype {labels.dtype}")
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        bad = int(labels.min()) if int(labels.min()) < 0 else int(labels.max())
        raise ValueError(
            f"{where}: labels out of range: found {bad}, but the models have {num_classes} "
            f"classes (labels must be 0..{num_classes - 1})"
        )


class ClassifierTrainer:
    """Distil ``teacher`` into ``student`` with ``objective``; resumable and DDP-ready.

    Args:
        student: the model to train (an ``nn.Module`` mapping features to logits ``(B, C)``).
        teacher: a frozen model with the same ``C`` (or ``None`` for plain supervised
            training; the objective then receives ``teacher_logits=None``).
        objective: ``objective(student_logits, teacher_logits, labels) -> scalar loss``. An
            ``nn.Module`` objective with parameters (e.g. projectors) is trained and
            checkpointed with the student.
        train_data: ``(features, labels)`` tensors, a ``TensorDataset``, a map-style dataset of
            ``(x, y)`` pairs, or a ``DataLoader`` (its dataset, ``batch_size``, ``collate_fn``
            and ``num_workers`` are used; the order is the trainer's own, seeded and
            resumable, so the loader's sampler is ignored).
        epochs: number of passes over the training data.
        batch_size: the *global* batch size (split between processes under DDP); defaults
            to the loader's or 128.
        optimizer: an optimiser over the student's (and objective's) parameters; default
            ``AdamW(lr=lr, weight_decay=weight_decay)``.
        scheduler: an ``LRScheduler`` stepped after every optimiser step, or a callable
            ``(optimizer, total_steps) -> LRScheduler``; default none.
        lr, weight_decay: for the default optimiser.
        seed: seeds the data order and, on a fresh start, torch / numpy / random.
        eval_data: optional held-out data (same forms as ``train_data``) evaluated at each
            epoch end (accuracy and NLL in :attr:`FitResult.history`).
        augment: optional ``x -> x'`` applied to each training batch; the teacher then runs
            on every augmented batch instead of once.
        checkpoint_dir: where ``last.ckpt`` (and ``teacher_logits.ckpt``) go; ``None``
            disables checkpoints (and resuming).
        checkpoint_every: also checkpoint every this many optimiser steps (``None``: only at
            epoch ends).
        max_grad_norm: clip the gradient norm to this value (``None``: no clipping).
        progress: ``True`` for a rich progress bar, ``False`` for none, or a running
            ``rich.progress.Progress`` to add a task to.
        description: label of the progress bar.
        device: ``"cpu"``, ``"cuda"``, a ``torch.device``; default: the accelerator's device
            under DDP, otherwise CPU.
        accelerator: an ``accelerate.Accelerator`` to run under; by default one is created
            when the process was started by ``torchrun`` / ``accelerate launch``
            (``WORLD_SIZE > 1``).
        drop_last: drop the last, smaller batch of each epoch.
    """

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module | None,
        objective: Objective,
        train_data: DataLike,
        *,
        epochs: int,
        batch_size: int | None = None,
        optimizer: torch.optim.Optimizer | None = None,
        scheduler: Any = None,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        seed: int = 0,
        eval_data: DataLike | None = None,
        augment: Callable[[Tensor], Tensor] | None = None,
        checkpoint_dir: str | os.PathLike[str] | None = None,
        checkpoint_every: int | None = None,
        max_grad_norm: float | None = None,
        progress: bool | Progress = True,
        description: str = "train",
        device: str | torch.device | None = None,
        accelerator: Any = None,
        drop_last: bool = False,
    ) -> None:
        if not isinstance(student, nn.Module):
            raise ValueError(f"`student` must be an nn.Module, got {type(student).__name__}")
        if teacher is not None and not isinstance(teacher, nn.Module):
            raise ValueError(
                f"`teacher` must be an nn.Module or None, got {type(teacher).__name__}"
            )
        if not callable(objective):
            raise ValueError(f"`objective` must be callable, got {type(objective).__name__}")
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
            raise ValueError(f"`epochs` must be an integer >= 1, got {epochs!r}")
        if checkpoint_every is not None and (
            isinstance(checkpoint_every, bool)
            or not isinstance(checkpoint_every, int)
            or checkpoint_every < 1
        ):
            raise ValueError(
                f"`checkpoint_every` must be an integer >= 1 or None, got {checkpoint_every!r}"
            )
        self.student = student
        self.teacher = teacher
        self.objective = objective
        self.epochs = epochs
        self.seed = int(seed)
        self.augment = augment
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
        self.checkpoint_every = checkpoint_every
        self.max_grad_norm = max_grad_norm
        self.progress = progress
        self.description = description
        self.drop_last = drop_last
        self.eval_data = eval_data

        loader = train_data if isinstance(train_data, DataLoader) else None
        if batch_size is None:
            batch_size = loader.batch_size if loader is not None and loader.batch_size else 128
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"`batch_size` must be an integer >= 1, got {batch_size!r}")
        self.batch_size = batch_size
        self._tensors = _as_tensors(train_data)
        self._dataset = loader.dataset if loader is not None else train_data
        self._collate = loader.collate_fn if loader is not None else None
        self._num_workers = loader.num_workers if loader is not None else 0
        if self._tensors is not None:
            x, y = self._tensors
            if x.shape[0] != y.shape[0]:
                raise ValueError(f"`train_data`: {x.shape[0]} feature rows but {y.shape[0]} labels")
            self.num_rows = int(x.shape[0])
        else:
            self.num_rows = len(self._dataset)  # type: ignore[arg-type]
        if self.num_rows == 0:
            raise ValueError("`train_data` is empty")

        if accelerator is None and int(os.environ.get("WORLD_SIZE", "1")) > 1:
            try:
                import accelerate  # optional extra: pip install "divergent[distributed]"
            except ImportError:
                raise ImportError(
                    "running under several processes needs accelerate: "
                    'pip install "divergent[distributed]"'
                ) from None
            accelerator = accelerate.Accelerator(cpu=str(device or "").startswith("cpu"))
        self.accelerator = accelerator
        if accelerator is not None:
            self.rank, self.world_size = accelerator.process_index, accelerator.num_processes
            self.device = torch.device(device) if device is not None else accelerator.device
        else:
            self.rank, self.world_size = 0, 1
            self.device = torch.device(device) if device is not None else torch.device("cpu")
        if self.batch_size < self.world_size:
            raise ValueError(
                f"`batch_size` ({self.batch_size}) must be at least the number of processes "
                f"({self.world_size})"
            )

        self.student.to(self.device)
        if self.teacher is not None:
            self.teacher.to(self.device)
            self.teacher.eval()
            for p in self.teacher.parameters():
                p.requires_grad_(False)
        self._objective_module = objective if isinstance(objective, nn.Module) else None
        if self._objective_module is not None:
            self._objective_module.to(self.device)
        self._objective_params = (
            [p for p in self._objective_module.parameters() if p.requires_grad]
            if self._objective_module is not None
            else []
        )
        if optimizer is None:
            optimizer = torch.optim.AdamW(
                [*self.student.parameters(), *self._objective_params],
                lr=lr,
                weight_decay=weight_decay,
            )
        self.optimizer = optimizer
        self.steps_per_epoch = len(self._batches(0))
        self.total_steps = self.steps_per_epoch * self.epochs
        if scheduler is not None and not hasattr(scheduler, "state_dict"):
            scheduler = scheduler(self.optimizer, self.total_steps)
        self.scheduler = scheduler
        self._config_cache: dict[str, Any] | None = None
        self._model = self.student
        if self.accelerator is not None:
            self._model = self.accelerator.prepare(self.student)

    # -- data ------------------------------------------------------------------------------

    def _batches(self, epoch: int, order: Tensor | None = None) -> list[Tensor]:
        """This process's index batches of ``epoch`` (global batches split between ranks)."""
        if order is None:
            order = epoch_order(self.seed, epoch, self.num_rows)
        batches = list(torch.split(order, self.batch_size))
        if batches and (
            (self.drop_last and batches[-1].numel() < self.batch_size)
            or batches[-1].numel() < self.world_size
        ):
            batches.pop()
        if not batches:
            raise ValueError(
                f"`train_data` has {self.num_rows} row(s): not one batch of {self.batch_size}"
                + (" with drop_last" if self.drop_last else "")
            )
        if self.world_size > 1:
            batches = [b[self.rank :: self.world_size] for b in batches]
        return batches

    def _fetch(self, indices: Tensor) -> tuple[Tensor, Tensor]:
        if self._tensors is not None:
            x, y = self._tensors
            return x[indices].to(self.device), y[indices].to(self.device)
        loader = DataLoader(
            self._dataset,  # type: ignore[arg-type]
            batch_sampler=[indices.tolist()],
            collate_fn=self._collate,
            num_workers=0,
            generator=torch.Generator(),  # the global RNG is never touched by data loading
        )
        xb, yb = next(iter(loader))
        return xb.to(self.device), torch.as_tensor(yb).to(self.device)

    def _segment(self, batches: Sequence[Tensor]) -> Any:
        """Iterate ``(indices, x, y)`` over ``batches`` (worker processes when configured)."""
        if self._tensors is not None:
            x_all, y_all = self._tensors
            for indices in batches:
                yield indices, x_all[indices].to(self.device), y_all[indices].to(self.device)
            return
        loader = DataLoader(
            self._dataset,  # type: ignore[arg-type]
            batch_sampler=[b.tolist() for b in batches],
            collate_fn=self._collate,
            num_workers=self._num_workers,
            generator=torch.Generator(),  # the global RNG is never touched by data loading
        )
        for indices, (xb, yb) in zip(batches, loader):
            yield indices, xb.to(self.device), torch.as_tensor(yb).to(self.device)

    # -- teacher ---------------------------------------------------------------------------

    def _teacher_logits_once(self, resume: bool, writer: CheckpointWriter) -> Tensor | None:
        if self.teacher is None or self.augment is not None:
            return None
        path = self.checkpoint_dir / TEACHER_LOGITS_NAME if self.checkpoint_dir else None
        if resume and path is not None and path.exists():
            cached = load_checkpoint(path)
            logits = cached.get("logits")
            if not isinstance(logits, Tensor) or logits.shape[0] != self.num_rows:
                raise CheckpointError(
                    f"checkpoint {path}: teacher logits for {getattr(logits, 'shape', None)} "
                    f"rows, but the training data have {self.num_rows}"
                )
            return logits.to(self.device)
        logits, _ = evaluate_logits(
            self.teacher, self._dataset if self._tensors is None else self._tensors
        )
        if path is not None and self.rank == 0:
            writer.submit(path, {"logits": logits})  # in the background, like checkpoints
        return logits.to(self.device)

    # -- checkpoints -----------------------------------------------------------------------

    def _config(self) -> dict[str, Any]:
        if self._config_cache is None:
            self._config_cache = {
                "epochs": self.epochs,
                "batch_size": self.batch_size,
                "num_rows": self.num_rows,
                "seed": self.seed,
                "world_size": self.world_size,
                "drop_last": self.drop_last,
                "augment": self.augment is not None,
                "student": [[k, list(v.shape)] for k, v in self.student.state_dict().items()],
            }
        return self._config_cache

    def _gather_rng(self) -> list[dict[str, Any]]:
        state = _capture_rng()
        if self.accelerator is None:
            return [state]
        from accelerate.utils import gather_object  # optional extra, imported with it

        return list(gather_object([state]))

    def _load(self, path: Path) -> dict[str, Any]:
        state = load_checkpoint(path)
        if state.get("format") != _FORMAT or state.get("version") != _FORMAT_VERSION:
            raise CheckpointError(f"checkpoint {path}: not a classifier-trainer checkpoint")
        saved, now = state.get("config", {}), self._config()
        for key in now:
            if saved.get(key) != now[key]:
                raise CheckpointError(
                    f"checkpoint {path}: written with {key}={_short(saved.get(key))}, "
                    f"but this run has {key}={_short(now[key])}"
                )
        try:
            self.student.load_state_dict(state["student"])
            if self._objective_module is not None and state["objective"] is not None:
                self._objective_module.load_state_dict(state["objective"])
            self.optimizer.load_state_dict(state["optimizer"])
            if self.scheduler is not None and state["scheduler"] is not None:
                self.scheduler.load_state_dict(state["scheduler"])
            rng = state["rng"]
            _restore_rng(rng[self.rank] if len(rng) > self.rank else rng[0])
        except (KeyError, RuntimeError, ValueError, TypeError, IndexError) as err:
            raise CheckpointError(f"checkpoint {path}: does not fit this run ({err})") from None
        return state

    # -- the loop --------------------------------------------------------------------------

    def _progress(self) -> tuple[Progress | None, bool]:
        if self.rank != 0 or self.progress is False:
            return None, False
        if isinstance(self.progress, Progress):
            return self.progress, False
        bar = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[status]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            transient=True,
            refresh_per_second=4,
        )
        return bar, True

    def fit(self, *, resume: bool = False) -> FitResult:
        """Train to the end (or continue from the last checkpoint with ``resume=True``).

        ``resume=True`` without a checkpoint starts afresh. A finished checkpoint returns at
        once with its weights and history.

        Raises:
            CheckpointError: ``resume=True`` and the checkpoint is damaged or was written with
                other settings (the file is left untouched).
            NonFiniteLossError: the loss became NaN/inf (checked at each checkpoint and epoch
                end; nothing is saved from the diverged state).
            ValueError: the teacher and student disagree on the number of classes, or labels
                are outside ``0..C−1``.
        """
        started = time.perf_counter()
        ckpt_path = self.checkpoint_dir / CHECKPOINT_NAME if self.checkpoint_dir else None
        if self.checkpoint_dir is not None and self.rank == 0:
            self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
            remove_stale_temporaries(self.checkpoint_dir, CHECKPOINT_NAME)
            remove_stale_temporaries(self.checkpoint_dir, TEACHER_LOGITS_NAME)
        if self.accelerator is not None:
            self.accelerator.wait_for_everyone()

        state = None
        if resume and ckpt_path is not None and ckpt_path.exists():
            state = self._load(ckpt_path)
        else:
            _seed_everything(self.seed)
        writer = CheckpointWriter(background=True)
        teacher_logits = self._teacher_logits_once(resume=state is not None, writer=writer)
        self._check_classes(teacher_logits)
        if self.accelerator is not None:
            self.accelerator.wait_for_everyone()

        history: list[dict[str, float]] = []
        epoch, position, global_step = 0, 0, 0
        running = torch.zeros((), dtype=torch.float64, device=self.device)
        running_count = 0
        order: Tensor | None = None
        resumed_from = None
        if state is not None:
            history = [dict(h) for h in state["history"]]
            epoch, position, global_step = state["epoch"], state["position"], state["global_step"]
            running = state["running_loss"].to(self.device, torch.float64)
            running_count = int(state["running_count"])
            order = state["order"] if position > 0 else None
            resumed_from = global_step
            if state["finished"]:
                writer.wait()
                return FitResult(
                    self.student, history, global_step, time.perf_counter() - started, resumed_from
                )

        bar, own_bar = self._progress()
        task = None
        if bar is not None:
            if own_bar:
                bar.start()
            task = bar.add_task(
                self.description, total=self.total_steps, completed=global_step, status=""
            )
        update_every = max(1, self.total_steps // 50)
        self.student.train()
        try:
            while epoch < self.epochs:
                if order is None:
                    order = epoch_order(self.seed, epoch, self.num_rows)
                batches = self._batches(epoch, order)
                set_epoch = getattr(self.objective, "set_epoch", None)
                if callable(set_epoch):  # objectives with a warm-up (dkd) follow the epoch
                    set_epoch(epoch)
                for step, (indices, x, y) in enumerate(
                    self._segment(batches[position:]), start=position
                ):
                    if self.augment is not None:
                        x = self.augment(x)
                    if teacher_logits is not None:
                        t_logits = teacher_logits[indices.to(teacher_logits.device)]
                    elif self.teacher is not None:
                        with torch.no_grad():
                            t_logits = self.teacher(x)
                    else:
                        t_logits = None
                    if self._tensors is None:
                        _check_labels(y, self._num_classes, "`train_data`")
                    loss = self.objective(self._model(x), t_logits, y)
                    self.optimizer.zero_grad(set_to_none=True)
                    if self.accelerator is not None:
                        self.accelerator.backward(loss)
                        for p in self._objective_params:
                            if p.grad is not None:
                                p.grad = self.accelerator.reduce(p.grad, reduction="mean")
                    else:
                        loss.backward()
                    if self.max_grad_norm is not None:
                        torch.nn.utils.clip_grad_norm_(
                            [*self.student.parameters(), *self._objective_params],
                            self.max_grad_norm,
                        )
                    self.optimizer.step()
                    if self.scheduler is not None:
                        self.scheduler.step()
                    running = running + loss.detach().double()
                    running_count += 1
                    global_step += 1
                    if task is not None and (
                        global_step % update_every == 0 or step + 1 == len(batches)
                    ):
                        bar.update(task, completed=global_step)  # type: ignore[union-attr]
                    if (
                        ckpt_path is not None
                        and self.checkpoint_every is not None
                        and global_step % self.checkpoint_every == 0
                        and step + 1 < len(batches)
                    ):
                        self._check_finite(running, epoch, step)
                        self._save(
                            writer,
                            ckpt_path,
                            epoch,
                            step + 1,
                            global_step,
                            order,
                            running,
                            running_count,
                            history,
                            finished=False,
                        )
                self._check_finite(running, epoch, len(batches) - 1)
                record = {
                    "epoch": float(epoch + 1),
                    "train_loss": float(running) / max(running_count, 1),
                }
                if self.eval_data is not None:
                    record.update(self._evaluate())
                history.append(record)
                if task is not None:
                    bar.update(task, status=_status(record))  # type: ignore[union-attr]
                epoch, position, order = epoch + 1, 0, None
                running = torch.zeros((), dtype=torch.float64, device=self.device)
                running_count = 0
                if ckpt_path is not None:
                    self._save(
                        writer,
                        ckpt_path,
                        epoch,
                        0,
                        global_step,
                        torch.empty(0, dtype=torch.long),
                        running,
                        running_count,
                        history,
                        finished=epoch == self.epochs,
                    )
            writer.wait()
        finally:
            if bar is not None and task is not None:
                bar.remove_task(task)
                if own_bar:
                    bar.stop()
            try:
                writer.wait()
            except BaseException:
                pass  # the original error (if any) is the one to report
        return FitResult(
            self.student, history, global_step, time.perf_counter() - started, resumed_from
        )

    def _save(
        self,
        writer: CheckpointWriter,
        path: Path,
        epoch: int,
        position: int,
        global_step: int,
        order: Tensor,
        running: Tensor,
        running_count: int,
        history: list[dict[str, float]],
        *,
        finished: bool,
    ) -> None:
        # every rank gathers its RNG state (a collective), only rank 0 writes
        state = {
            "format": _FORMAT,
            "version": _FORMAT_VERSION,
            "config": self._config(),
            "epoch": epoch,
            "position": position,
            "global_step": global_step,
            "finished": finished,
            # no copies needed: the state is serialised before training continues
            "order": order,
            "running_loss": running.detach().cpu(),
            "running_count": running_count,
            "history": [dict(h) for h in history],
            "student": {k: v.detach().cpu() for k, v in self.student.state_dict().items()},
            "objective": (
                {k: v.detach().cpu() for k, v in self._objective_module.state_dict().items()}
                if self._objective_module is not None
                else None
            ),
            "optimizer": _cpu_copy(self.optimizer.state_dict()),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "rng": self._gather_rng(),
        }
        if self.rank == 0:
            if finished:
                writer.wait()
                save_checkpoint(path, state)
            else:
                writer.submit(path, state)

    def _check_finite(self, running: Tensor, epoch: int, step: int) -> None:
        if not bool(torch.isfinite(running)):
            raise NonFiniteLossError(
                f"the training loss became {float(running)} (epoch {epoch + 1}, by step "
                f"{step + 1}); the last checkpoint is kept"
            )

    def _check_classes(self, teacher_logits: Tensor | None) -> None:
        first = self._batches(0)[0][:2]
        x, _ = self._fetch(first)
        was_training = self.student.training
        self.student.eval()  # no dropout: the check must not consume random numbers
        with torch.no_grad():
            s_classes = int(self.student(x).shape[-1])
            if teacher_logits is not None:
                t_classes = int(teacher_logits.shape[-1])
            elif self.teacher is not None:
                t_classes = int(self.teacher(x).shape[-1])
            else:
                t_classes = s_classes
        self.student.train(was_training)
        if t_classes != s_classes:
            raise ValueError(
                f"class-count mismatch: the teacher outputs {t_classes} classes but the "
                f"student {s_classes}"
            )
        self._num_classes = s_classes
        if self._tensors is not None:
            _check_labels(self._tensors[1], s_classes, "`train_data`")

    def _evaluate(self) -> dict[str, float]:
        logits, labels = evaluate_logits(self.student, self.eval_data)
        return {
            "accuracy": float((logits.argmax(-1) == labels).double().mean()),
            "nll": float(torch.nn.functional.cross_entropy(logits.double(), labels)),
        }


def _cpu_copy(obj: Any) -> Any:
    if isinstance(obj, Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _cpu_copy(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_cpu_copy(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_cpu_copy(v) for v in obj)
    return obj


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _status(record: dict[str, float]) -> str:
    text = f"loss {record['train_loss']:.3f}"
    if "accuracy" in record:
        text += f"  acc {record['accuracy']:.3f}"
    return text


def fit_classifier(
    student: nn.Module,
    teacher: nn.Module | None,
    objective: Objective,
    train_data: DataLike,
    *,
    resume: bool = False,
    **options: Any,
) -> FitResult:
    """One call: ``ClassifierTrainer(student, teacher, objective, train_data, **options)``
    followed by ``.fit(resume=resume)``."""
    return ClassifierTrainer(student, teacher, objective, train_data, **options).fit(resume=resume)

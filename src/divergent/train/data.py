r"""Data and models for classifier distillation: embedded digits, user files, small MLPs.

* :func:`load_digits_task` — scikit-learn's embedded 8×8 digits (1797 images, 64 features,
  10 classes), split 80/20 (stratified, fixed seed) and standardised with the training
  split's mean and standard deviation.
* :func:`load_table` — a user's ``.npz`` (arrays ``X``/``y``, ``features``/``labels``,
  ``x``/``y`` or ``data``/``target``) or ``.csv`` (numbers; an optional header; the label
  column is the one named ``label``/``labels``/``target``/``y``/``class``, else the last),
  validated by :func:`validate_table`: no rows, one class, NaN/inf features and labels that
  are not integers in ``0 … C−1`` are each a :class:`DataError` naming the problem.
* :func:`teacher_mlp` / :func:`student_mlp` — (built with
  :func:`divergent.train.small_models.mlp`) the default teacher (two hidden layers of 256)
  and a clearly smaller student (one hidden layer of 16; about 70× fewer parameters on digits).

Example:
    >>> task = load_digits_task()
    >>> task.x_train.shape, task.x_test.shape, task.num_classes
    (torch.Size([1438, 64]), torch.Size([359, 64]), 10)
    >>> count_parameters(teacher_mlp(64, 10)) // count_parameters(student_mlp(64, 10))
    70
"""

from __future__ import annotations

import csv
import hashlib
import itertools
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from divergent.train.small_models import mlp

__all__ = [
    "ClassificationTask",
    "DataError",
    "count_parameters",
    "load_digits_task",
    "load_table",
    "make_task",
    "student_mlp",
    "teacher_mlp",
    "validate_table",
]

TEACHER_HIDDEN: tuple[int, ...] = (256, 256)
STUDENT_HIDDEN: tuple[int, ...] = (16,)
_NPZ_KEY_PAIRS = (("X", "y"), ("features", "labels"), ("x", "y"), ("data", "target"))
_LABEL_COLUMNS = ("label", "labels", "target", "y", "class")


class DataError(ValueError):
    """A data file or array that cannot be used for classification (the message says why)."""


@dataclass(frozen=True)
class ClassificationTask:
    """A train/test split of standardised features and integer labels ``0 … C−1``."""

    name: str
    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    num_classes: int
    fingerprint: str
    """SHA-256 of the raw features and labels (identifies the data, e.g. for a cached teacher)."""

    @property
    def in_features(self) -> int:
        return int(self.x_train.shape[1])


def validate_table(
    features: np.ndarray, labels: np.ndarray, source: str
) -> tuple[np.ndarray, np.ndarray]:
    """Check a feature matrix and a label vector; return them as float32 / int64 arrays.

    Raises:
        DataError: no rows or no features, rows/labels count mismatch, NaN or inf features,
            labels that are not integers ``≥ 0``, a single class, or labels that skip a class
            (``C`` is taken as the largest label + 1, so every class 0..C-1 must have rows).
    """
    features = np.asarray(features)
    labels = np.asarray(labels)
    if features.ndim == 1:
        features = features[:, None]
    if features.ndim != 2:
        raise DataError(f"{source}: features must be a 2-D table, got shape {features.shape}")
    if features.shape[0] == 0 or labels.size == 0:
        raise DataError(f"{source}: the data are empty (no rows)")
    if features.shape[1] == 0:
        raise DataError(f"{source}: no feature columns")
    labels = labels.reshape(-1)
    if labels.shape[0] != features.shape[0]:
        raise DataError(f"{source}: {features.shape[0]} feature rows but {labels.shape[0]} labels")
    try:
        features = features.astype(np.float64)
    except (TypeError, ValueError):
        raise DataError(f"{source}: features must be numbers") from None
    bad = ~np.isfinite(features)
    if bad.any():
        row, col = (int(i) for i in np.argwhere(bad)[0])
        what = "NaN" if math.isnan(features[row, col]) else "an infinite value"
        raise DataError(
            f"{source}: features contain {what} ({int(bad.sum())} cell(s), first at row {row}, "
            f"column {col})"
        )
    try:
        numeric_labels = labels.astype(np.float64)
    except (TypeError, ValueError):
        raise DataError(f"{source}: labels must be integers 0..C-1, got {labels[:3]!r}") from None
    if not np.isfinite(numeric_labels).all() or (numeric_labels != np.round(numeric_labels)).any():
        raise DataError(f"{source}: labels must be integers 0..C-1 (found non-integer values)")
    if numeric_labels.min() < 0:
        raise DataError(
            f"{source}: labels out of range: found {int(numeric_labels.min())}; labels must be "
            "integers 0..C-1"
        )
    int_labels = numeric_labels.astype(np.int64)
    classes = np.unique(int_labels)
    if classes.size < 2:
        raise DataError(
            f"{source}: only one class (label {int(classes[0])}); classification needs at least 2"
        )
    top = int(classes[-1])
    if classes.size != top + 1:  # C = max + 1 would hold classes never seen
        # the first six gaps between the sorted classes (not a set of 0..max: a label of 10**9
        # must not build one)
        seen = classes.tolist()
        gaps = (c for lo, hi in zip([-1, *seen], seen) for c in range(lo + 1, hi))
        missing = list(itertools.islice(gaps, 6))
        shown = ", ".join(map(str, missing[:5])) + (", ..." if len(missing) > 5 else "")
        raise DataError(
            f"{source}: labels must be 0..C-1 with every class present; found {classes.size} "
            f"classes up to {top}, with no rows labelled {shown} (relabel them "
            "0..C-1, e.g. subtract 1 from labels that start at 1)"
        )
    return features.astype(np.float32), int_labels


def _read_npz(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except Exception as err:
        raise DataError(f"{path}: not a readable .npz file ({err})") from None
    for feature_key, label_key in _NPZ_KEY_PAIRS:
        if feature_key in arrays and label_key in arrays:
            return arrays[feature_key], arrays[label_key]
    if len(arrays) == 2:
        first, second = arrays.values()
        return (first, second) if first.ndim >= second.ndim else (second, first)
    raise DataError(
        f"{path}: expected arrays X and y (or features/labels), found {sorted(arrays) or 'none'}"
    )


def _read_csv(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, newline="") as handle:
            rows = [row for row in csv.reader(handle) if row and any(c.strip() for c in row)]
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: cannot be read ({err})") from None
    if not rows:
        raise DataError(f"{path}: the data are empty (no rows)")

    def numeric(row: list[str]) -> bool:
        try:
            [float(c) for c in row]
        except ValueError:
            return False
        return True

    header = None if numeric(rows[0]) else [c.strip() for c in rows[0]]
    body = rows[1:] if header is not None else rows
    if not body:
        raise DataError(f"{path}: the data are empty (a header but no rows)")
    width = len(body[0])
    if width < 2:
        raise DataError(f"{path}: need at least one feature column and one label column")
    for i, row in enumerate(body):
        if len(row) != width:
            raise DataError(f"{path}: row {i + 1} has {len(row)} columns, expected {width}")
    try:
        table = np.array([[float(c) for c in row] for row in body], dtype=np.float64)
    except ValueError as err:
        raise DataError(f"{path}: non-numeric value ({err})") from None
    label_column = width - 1
    if header is not None:
        lowered = [h.lower() for h in header]
        for name in _LABEL_COLUMNS:
            if name in lowered:
                label_column = lowered.index(name)
                break
    features = np.delete(table, label_column, axis=1)
    return features, table[:, label_column]


def load_table(path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray]:
    """Features (float32, ``(n, d)``) and labels (int64, ``(n,)``) from a ``.npz``/``.csv`` file.

    Raises:
        DataError: the file is missing, of another type, or fails :func:`validate_table`.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such data file")
    suffix = path.suffix.lower()
    if suffix == ".npz":
        features, labels = _read_npz(path)
    elif suffix == ".csv":
        features, labels = _read_csv(path)
    else:
        raise DataError(f"{path}: unsupported data file type {suffix!r}; use .npz or .csv")
    return validate_table(features, labels, str(path))


def _fingerprint(features: np.ndarray, labels: np.ndarray) -> str:
    digest = hashlib.sha256()
    digest.update(np.ascontiguousarray(features, dtype=np.float32).tobytes())
    digest.update(np.ascontiguousarray(labels, dtype=np.int64).tobytes())
    return digest.hexdigest()


def make_task(
    features: np.ndarray,
    labels: np.ndarray,
    *,
    name: str,
    test_fraction: float = 0.2,
    split_seed: int = 0,
) -> ClassificationTask:
    """Split (stratified when every class has ≥ 2 rows) and standardise a validated table.

    The test split holds ``round(test_fraction · n)`` rows (at least 1); features are
    standardised with the training split's mean and standard deviation (a constant column is
    centred only).
    """
    features, labels = validate_table(features, labels, name)
    n = labels.shape[0]
    n_test = max(1, round(test_fraction * n))
    if n - n_test < 2:
        raise DataError(f"{name}: {n} row(s) are too few to split into training and test data")
    from sklearn.model_selection import train_test_split  # sklearn is slow to import

    counts = np.bincount(labels)
    stratify = labels if counts[counts > 0].min() >= 2 and n_test >= counts.size else None
    train_idx, test_idx = train_test_split(
        np.arange(n), test_size=n_test, random_state=split_seed, stratify=stratify
    )
    x_train, x_test = features[train_idx], features[test_idx]
    mean = x_train.mean(axis=0)
    std = x_train.std(axis=0)
    std = np.where(std > 0, std, 1.0)
    return ClassificationTask(
        name=name,
        x_train=torch.from_numpy(((x_train - mean) / std).astype(np.float32)),
        y_train=torch.from_numpy(labels[train_idx]),
        x_test=torch.from_numpy(((x_test - mean) / std).astype(np.float32)),
        y_test=torch.from_numpy(labels[test_idx]),
        num_classes=int(labels.max()) + 1,
        fingerprint=_fingerprint(features, labels),
    )


def load_digits_task() -> ClassificationTask:
    """scikit-learn's embedded digits as a :class:`ClassificationTask` (no download)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    return make_task(digits.data, digits.target, name="digits")


def teacher_mlp(
    in_features: int, num_classes: int, *, generator: torch.Generator | None = None
) -> nn.Sequential:
    """The default teacher: an MLP with two hidden layers of 256 units."""
    return mlp(in_features, TEACHER_HIDDEN, num_classes, generator=generator)


def student_mlp(
    in_features: int, num_classes: int, *, generator: torch.Generator | None = None
) -> nn.Sequential:
    """The default student: an MLP with one hidden layer of 16 units (clearly smaller)."""
    return mlp(in_features, STUDENT_HIDDEN, num_classes, generator=generator)


def count_parameters(model: nn.Module) -> int:
    """The number of parameters of ``model`` (trainable or frozen)."""
    return sum(p.numel() for p in model.parameters())

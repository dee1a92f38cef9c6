r"""Small models, embedded data sets and a minimal training loop for CPU experiments.

The reproductions of :mod:`divergent.papers` train many tiny classifiers (seconds each) on
scikit-learn's embedded data sets (digits, wine, breast cancer). This module holds what they
share so that each experiment states only its method:

* :func:`load_split` — a stratified, seeded train/test split as float32 tensors (features
  scaled to ``[0, 1]`` or standardised with the *training* statistics);
* :func:`mlp` and :class:`DigitsCNN` — a multilayer perceptron and a small convolutional net
  for the 8×8 digits (the heterogeneous teacher of OFA-KD);
* :func:`fit` — mini-batch Adam on any ``loss_fn(model, x_batch, y_batch, index)``; ``index``
  lets a distillation loss look up the precomputed teacher logits of the batch;
* :func:`evaluate` — accuracy, negative log-likelihood and the logits on a test set.

Everything is deterministic given the seed on CPU.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from divergent._validation import check_choice

__all__ = [
    "DATASETS",
    "DigitsCNN",
    "Evaluation",
    "Split",
    "cross_entropy_loss",
    "evaluate",
    "fit",
    "load_split",
    "mlp",
    "reset_parameters",
]

DATASETS: tuple[str, ...] = ("digits", "wine", "breast_cancer", "iris")
SCALINGS: tuple[str, ...] = ("unit", "standard")

LossFn = Callable[[nn.Module, Tensor, Tensor, Tensor], Tensor]


@dataclass(frozen=True)
class Split:
    """A train/test split: float32 features ``(n, d)``, int64 labels ``(n,)``.

    Attributes:
        x_train, y_train, x_test, y_test: the tensors.
        n_classes: number of classes (labels are ``0 .. n_classes - 1``).
        feature_names: names of the ``d`` features.
    """

    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    n_classes: int
    feature_names: tuple[str, ...]

    @property
    def n_features(self) -> int:
        return int(self.x_train.shape[1])


def _load_arrays(name: str) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    from sklearn import datasets  # scikit-learn is a dependency; imported lazily (slow import)

    loaders = {
        "digits": datasets.load_digits,
        "wine": datasets.load_wine,
        "breast_cancer": datasets.load_breast_cancer,
        "iris": datasets.load_iris,
    }
    bunch = loaders[name]()
    names = tuple(str(n) for n in getattr(bunch, "feature_names", range(bunch.data.shape[1])))
    return bunch.data.astype(np.float64), bunch.target.astype(np.int64), names


def load_split(
    name: str,
    *,
    test_fraction: float = 0.3,
    seed: int = 0,
    scaling: str = "unit",
    label_map: Sequence[int] | None = None,
) -> Split:
    r"""A seeded, stratified train/test split of an embedded scikit-learn data set.

    Args:
        name: one of :data:`DATASETS`.
        test_fraction: share of the samples held out for testing, in (0, 1).
        seed: seed of the split.
        scaling: ``"unit"`` maps each feature to [0, 1] by the training min and max (for the
            digits: pixel / 16, so that an L∞ attack budget means the same on every pixel);
            ``"standard"`` subtracts the training mean and divides by the training standard
            deviation.
        label_map: relabel class ``k`` as ``label_map[k]`` (e.g. ``[0]*5 + [1]*5`` makes the
            digits binary: 0–4 vs 5–9).

    Returns:
        A :class:`Split`.

    Example:
        >>> s = load_split("digits", seed=0)
        >>> tuple(s.x_train.shape), s.n_classes, float(s.x_train.max())
        ((1258, 64), 10, 1.0)
    """
    check_choice(name, "name", DATASETS)
    check_choice(scaling, "scaling", SCALINGS)
    if not (isinstance(test_fraction, float) and 0.0 < test_fraction < 1.0):
        raise ValueError(f"`test_fraction` must be a float in (0, 1), got {test_fraction!r}")
    x, y, names = _load_arrays(name)
    if label_map is not None:
        mapping = np.asarray(label_map, dtype=np.int64)
        if mapping.shape != (int(y.max()) + 1,) or mapping.min() < 0:
            raise ValueError(
                f"`label_map` must give a label >= 0 for each of the {int(y.max()) + 1} classes "
                f"of {name!r}, got {list(label_map)!r}"
            )
        y = mapping[y]
    rng = np.random.default_rng(seed)
    test_idx: list[np.ndarray] = []
    for label in np.unique(y):  # stratified: the same share of each class in the test set
        members = rng.permutation(np.flatnonzero(y == label))
        test_idx.append(members[: round(test_fraction * members.size)])
    test = np.zeros(y.size, dtype=bool)
    test[np.concatenate(test_idx)] = True
    train_order = rng.permutation(np.flatnonzero(~test))
    x_tr, y_tr, x_te, y_te = x[train_order], y[train_order], x[test], y[test]
    if name == "digits" and scaling == "unit":
        lo, span = 0.0, 16.0  # pixel intensities are 0..16
    elif scaling == "unit":
        lo = x_tr.min(axis=0)
        span = np.where(x_tr.max(axis=0) > lo, x_tr.max(axis=0) - lo, 1.0)
    else:
        lo = x_tr.mean(axis=0)
        span = np.where(x_tr.std(axis=0) > 0, x_tr.std(axis=0), 1.0)
    x_tr, x_te = (x_tr - lo) / span, (x_te - lo) / span
    return Split(
        x_train=torch.as_tensor(x_tr, dtype=torch.float32),
        y_train=torch.as_tensor(y_tr),
        x_test=torch.as_tensor(x_te, dtype=torch.float32),
        y_test=torch.as_tensor(y_te),
        n_classes=int(y.max()) + 1,
        feature_names=names,
    )


def mlp(
    n_in: int, hidden: Sequence[int], n_out: int, *, generator: torch.Generator | None = None
) -> nn.Sequential:
    """A ReLU multilayer perceptron ``n_in → hidden[0] → … → n_out``.

    With ``generator`` the weights are drawn from it (PyTorch's default init, reproducible
    without touching the global RNG).

    Example:
        >>> net = mlp(64, [32], 10, generator=torch.Generator().manual_seed(0))
        >>> net(torch.zeros(2, 64)).shape
        torch.Size([2, 10])
    """
    sizes = [n_in, *hidden, n_out]
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(itertools.pairwise(sizes)):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    net = nn.Sequential(*layers)
    if generator is not None:
        reset_parameters(net, generator)
    return net


class DigitsCNN(nn.Module):
    """A small convolutional net for 8×8 single-channel images (flattened 64-vectors in).

    ``conv(1→c) → ReLU → conv(c→2c) → ReLU → 2×2 max-pool → linear(32c → embed) → ReLU →
    linear(embed → n_classes)``. :meth:`embed` returns the penultimate representation.
    """

    def __init__(
        self,
        n_classes: int = 10,
        channels: int = 16,
        embed_dim: int = 64,
        *,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, channels, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(channels, 2 * channels, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(2 * channels * 16, embed_dim),
            nn.ReLU(),
        )
        self.head = nn.Linear(embed_dim, n_classes)
        if generator is not None:
            reset_parameters(self, generator)

    def embed(self, x: Tensor) -> Tensor:
        return self.features(x.reshape(-1, 1, 8, 8))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.embed(x))


def reset_parameters(module: nn.Module, generator: torch.Generator) -> None:
    """Re-draw every Linear / Conv2d layer with PyTorch's default init from ``generator``.

    (Kaiming-uniform with a = √5, i.e. U(±1/√fan_in) for weights and biases.)
    """
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            fan_in = m.weight[0].numel()
            bound = 1.0 / math.sqrt(fan_in)
            with torch.no_grad():
                m.weight.uniform_(-bound, bound, generator=generator)
                if m.bias is not None:
                    m.bias.uniform_(-bound, bound, generator=generator)


def cross_entropy_loss(model: nn.Module, x: Tensor, y: Tensor, index: Tensor) -> Tensor:
    r"""The plain supervised :data:`LossFn` for :func:`fit`: mean cross-entropy on the labels,
    :math:`-\frac1B\sum_i \log \operatorname{softmax}(f(x_i))_{y_i}` (``index`` unused).

    Example:
        >>> model = nn.Linear(2, 3)
        >>> _ = nn.init.zeros_(model.weight), nn.init.zeros_(model.bias)
        >>> x, y = torch.zeros(4, 2), torch.tensor([0, 1, 2, 0])
        >>> round(cross_entropy_loss(model, x, y, torch.arange(4)).item(), 4)  # log 3
        1.0986
    """
    del index
    return nn.functional.cross_entropy(model(x), y)


def fit(
    model: nn.Module,
    loss_fn: LossFn,
    x: Tensor,
    y: Tensor,
    *,
    epochs: int,
    batch_size: int = 64,
    lr: float = 1e-2,
    weight_decay: float = 0.0,
    generator: torch.Generator | None = None,
    parameters: Sequence[nn.Parameter] | None = None,
) -> list[float]:
    """Train ``model`` by mini-batch Adam on ``loss_fn(model, x_batch, y_batch, index)``.

    Args:
        model: the network (put in train mode here).
        loss_fn: returns the scalar loss of a batch; ``index`` holds the batch's row indices
            into ``x`` (to look up precomputed teacher outputs).
        x, y: training features and labels.
        epochs: passes over the data; each pass visits the rows in a fresh random order.
        batch_size, lr, weight_decay: mini-batch size and Adam's settings (``lr`` decays
            linearly to 0 over the run, so every run settles).
        generator: RNG of the data order (the global RNG if None).
        parameters: what to optimise (default: ``model.parameters()``; pass more to train
            extra modules such as projectors together with the model).

    Returns:
        The mean training loss of each epoch.
    """
    params = list(model.parameters()) if parameters is None else list(parameters)
    opt = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    n = x.shape[0]
    steps_per_epoch = math.ceil(n / batch_size)
    total = epochs * steps_per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 1.0 - t / total)
    model.train()
    history = []
    for _ in range(epochs):
        order = torch.randperm(n, generator=generator)
        running = 0.0
        for start in range(0, n, batch_size):
            idx = order[start : start + batch_size]
            opt.zero_grad()
            loss = loss_fn(model, x[idx], y[idx], idx)
            loss.backward()
            opt.step()
            sched.step()
            running += float(loss.detach()) * idx.numel()
        history.append(running / n)
    model.eval()
    return history


@dataclass(frozen=True)
class Evaluation:
    """Accuracy, mean negative log-likelihood (nats) and the logits on an evaluation set."""

    accuracy: float
    nll: float
    logits: Tensor


@torch.no_grad()
def evaluate(model: nn.Module, x: Tensor, y: Tensor) -> Evaluation:
    """Accuracy, NLL and logits of ``model`` on ``(x, y)`` (eval mode, no gradients)."""
    model.eval()
    logits = model(x)
    nll = float(nn.functional.cross_entropy(logits, y))
    accuracy = float((logits.argmax(-1) == y).double().mean())
    return Evaluation(accuracy=accuracy, nll=nll, logits=logits)

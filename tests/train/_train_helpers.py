"""Small synthetic data and models shared by the trainer tests (and their subprocess scripts)."""

from __future__ import annotations

import torch

from divergent.train.small_models import mlp


def toy_data(n: int = 96, d: int = 6, classes: int = 3, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=gen)
    w = torch.randn(d, classes, generator=gen)
    y = (x @ w).argmax(-1)
    return x, y


def toy_models(d: int = 6, classes: int = 3, student_classes: int | None = None):
    teacher = mlp(d, [16], classes, generator=torch.Generator().manual_seed(1))
    student = mlp(d, [8], student_classes or classes, generator=torch.Generator().manual_seed(2))
    return teacher, student


def params(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), f"parameter {key} differs"

"""Fidelity (top-1 agreement, mean KL(teacher‖student)) against torch.distributions."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Categorical, kl_divergence

from divergent.metrics import Fidelity, fidelity


def _logits(seed: int, shape=(40, 7)):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64) * 2


@pytest.mark.parametrize("temperature", [1.0, 3.0])
def test_against_torch_distributions(temperature: float):
    s, t = _logits(0), _logits(1)
    f = fidelity(s, t, temperature=temperature)
    ref_kl = kl_divergence(
        Categorical(logits=t / temperature), Categorical(logits=s / temperature)
    ).mean()
    assert isinstance(f, Fidelity)
    assert f.kl == pytest.approx(float(ref_kl), rel=1e-10)
    assert f.top1_agreement == pytest.approx(float((s.argmax(1) == t.argmax(1)).double().mean()))
    assert f.n == 40


def test_identical_logits_are_perfectly_faithful():
    s = _logits(2)
    f = fidelity(s, s.clone())
    assert f.top1_agreement == 1.0 and f.kl == pytest.approx(0.0, abs=1e-12)


def test_direction_is_teacher_first():
    s, t = _logits(3), _logits(4)
    forward = fidelity(s, t).kl
    assert forward != pytest.approx(fidelity(t, s).kl, rel=1e-3)
    ref = kl_divergence(Categorical(logits=t), Categorical(logits=s)).mean()
    assert forward == pytest.approx(float(ref), rel=1e-10)


def test_mask_and_leading_shape():
    s, t = _logits(5, (4, 6, 3)), _logits(6, (4, 6, 3))
    mask = torch.rand(4, 6, generator=torch.Generator().manual_seed(0)) > 0.4
    f = fidelity(s, t, mask=mask)
    ref = kl_divergence(Categorical(logits=t[mask]), Categorical(logits=s[mask])).mean()
    assert f.n == int(mask.sum())
    assert f.kl == pytest.approx(float(ref), rel=1e-10)
    agree = (s[mask].argmax(-1) == t[mask].argmax(-1)).double().mean()
    assert f.top1_agreement == pytest.approx(float(agree))


def test_errors():
    s = _logits(0)
    with pytest.raises(ValueError, match="class axes differ"):
        fidelity(s, s[:, :5])
    with pytest.raises(ValueError, match="temperature"):
        fidelity(s, s, temperature=0.0)
    with pytest.raises(ValueError, match="at least one row"):
        fidelity(s, s, mask=torch.zeros(40, dtype=torch.bool))
    with pytest.raises(ValueError, match="mask"):
        fidelity(s, s, mask=torch.ones(40))


def test_nan_gives_nan_kl():
    s, t = _logits(0), _logits(1)
    s[3, 2] = float("nan")
    assert math.isnan(fidelity(s, t).kl)
    assert math.isnan(fidelity(t, s).kl)

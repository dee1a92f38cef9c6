"""Math-PUMA view alignment against a float64 reference written from the official code."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from divergent.objectives.view_alignment import (
    ViewAlignmentLoss,
    math_puma_loss,
    view_alignment_loss,
    z_normalize_logits,
)


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max())
    return e / e.sum()


def _z(z: np.ndarray) -> np.ndarray:
    return (z - z.mean()) / (z.std(ddof=1) + 1e-6)


def _kl(p: np.ndarray, q: np.ndarray) -> float:
    return math.fsum(pi * math.log(pi / qi) for pi, qi in zip(p, q) if pi > 0)


def _mix_ref(act: np.ndarray, ref: np.ndarray, alpha: float, tau: float, z: bool) -> float:
    if z:
        act, ref = _z(act), _z(ref)
    p, q = _softmax(act / tau), _softmax(ref / tau)
    return tau * tau * (alpha * _kl(p, q) + (1 - alpha) * _kl(q, p))


@pytest.mark.parametrize("alpha", [0.0, 0.3, 1.0])
@pytest.mark.parametrize("z_normalize", [True, False])
def test_view_alignment_matches_reference(alpha: float, z_normalize: bool) -> None:
    g = torch.Generator().manual_seed(0)
    a = torch.randn(2, 3, 8, generator=g, dtype=torch.float64) * 2
    r = torch.randn(2, 3, 8, generator=g, dtype=torch.float64) * 2
    labels = torch.tensor([[1, -100, 2], [0, 3, -100]])
    got = view_alignment_loss(
        a, r, labels, alpha=alpha, temperature=2.0, z_normalize=z_normalize, reduction="none"
    )
    refs = []
    for i in range(2):
        for j in range(3):
            if labels[i, j] == -100:
                assert got[i, j] == 0
                continue
            ref = _mix_ref(a[i, j].numpy(), r[i, j].numpy(), alpha, 2.0, z_normalize)
            assert got[i, j].item() == pytest.approx(ref, abs=1e-12)
            refs.append(ref)
    mean = view_alignment_loss(a, r, labels, alpha=alpha, temperature=2.0, z_normalize=z_normalize)
    assert mean.item() == pytest.approx(sum(refs) / 4, abs=1e-12)


def test_matches_official_code_formulation() -> None:
    """The code's ``F.kl_div`` calls with ``batchmean`` equal ours with normalizer=batch."""
    g = torch.Generator().manual_seed(1)
    act = torch.randn(3, 5, 7, generator=g, dtype=torch.float64)
    ref = torch.randn(3, 5, 7, generator=g, dtype=torch.float64)
    za, zr = z_normalize_logits(act), z_normalize_logits(ref)
    p_act, q_ref = za.softmax(-1), zr.softmax(-1)
    # vta_trainer.py: fkl = kl_div(log q_ref, p_act) = KL(p_act‖q_ref); rkl = KL(q_ref‖p_act)
    fkl = F.kl_div(q_ref.log(), p_act, reduction="batchmean")
    rkl = F.kl_div(p_act.log(), q_ref, reduction="batchmean")
    code = 0.5 * fkl + 0.5 * rkl
    ours = view_alignment_loss(act, ref, alpha=0.5, normalizer=3)
    assert ours.item() == pytest.approx(code.item(), abs=1e-12)


def test_math_puma_loss_matches_reference() -> None:
    g = torch.Generator().manual_seed(2)
    a = torch.randn(4, 6, generator=g, dtype=torch.float64)
    r = torch.randn(4, 6, generator=g, dtype=torch.float64)
    y = torch.tensor([0, 5, -100, 2])
    got = math_puma_loss(a, r, y, kl_weight=0.3, alpha=0.25)
    refs = [
        0.3 * _mix_ref(a[i].numpy(), r[i].numpy(), 0.25, 1.0, True)
        + 0.7 * -math.log(_softmax(a[i].numpy())[y[i]])
        for i in (0, 1, 3)
    ]
    assert got.item() == pytest.approx(sum(refs) / 3, abs=1e-12)


def test_gradient_and_identical_views() -> None:
    a = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    r = torch.randn(3, 5, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda x: view_alignment_loss(x, r, alpha=0.3), (a,))
    same = view_alignment_loss(r, r.clone())
    assert same.item() == pytest.approx(0.0, abs=1e-14)


def test_bad_input() -> None:
    a, r = torch.randn(2, 5), torch.randn(2, 5)
    with pytest.raises(ValueError, match="`alpha`"):
        view_alignment_loss(a, r, alpha=1.5)
    with pytest.raises(ValueError, match="`kl_weight`"):
        math_puma_loss(a, r, torch.tensor([0, 1]), kl_weight=-0.1)
    with pytest.raises(ValueError, match="`temperature`"):
        view_alignment_loss(a, r, temperature=0.0)
    with pytest.raises(ValueError, match="class axes differ"):
        view_alignment_loss(a, torch.randn(2, 4))
    with pytest.raises(ValueError, match="`labels`"):
        math_puma_loss(a, r, torch.tensor([0, 9]))


def test_module_form_matches_function() -> None:
    a, r = torch.randn(5, 7), torch.randn(5, 7)
    module = ViewAlignmentLoss(alpha=0.2, z_normalize=False, reduction="none")
    torch.testing.assert_close(
        module(a, r), view_alignment_loss(a, r, alpha=0.2, z_normalize=False, reduction="none")
    )

"""DAC-KL objectives against hand-written float64 references (loops over rows and classes)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from divergent.objectives.dackl import (
    DACKLLoss,
    clip_teacher_log_probs,
    dackl_loss,
    most_divergent_positions,
    span_loss,
)
from divergent.objectives.kd import kd_loss


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max())
    return e / e.sum()


def _quantile(values: np.ndarray, level: float) -> float:
    return float(np.quantile(values, level))  # numpy's default is linear interpolation


def _clip_ref(logits: np.ndarray, lower: float, upper: float, tau: float = 1.0) -> np.ndarray:
    p = _softmax(logits / tau)
    v_l, v_u = _quantile(p, lower), _quantile(p, upper)
    w = np.array([min(pi, v_u) if pi >= v_l else 0.0 for pi in p])
    return w / w.sum()


def _kl(p: np.ndarray, q: np.ndarray) -> float:
    return math.fsum(pi * math.log(pi / qi) for pi, qi in zip(p, q) if pi > 0)


@pytest.mark.parametrize(("lower", "upper"), [(0.0, 1.0), (0.3, 1.0), (0.5, 0.9), (0.2, 0.2)])
def test_clip_matches_reference(lower: float, upper: float) -> None:
    g = torch.Generator().manual_seed(0)
    t = torch.randn(5, 11, generator=g, dtype=torch.float64) * 2
    got = clip_teacher_log_probs(t, lower=lower, upper=upper, temperature=1.5).exp()
    for i in range(5):
        ref = _clip_ref(t[i].numpy(), lower, upper, 1.5)
        np.testing.assert_allclose(got[i].numpy(), ref, atol=1e-12)


def test_clip_identity_at_full_range() -> None:
    t = torch.randn(3, 4, 7, dtype=torch.float64)
    torch.testing.assert_close(clip_teacher_log_probs(t), t.log_softmax(-1))


def test_per_row_bounds() -> None:
    t = torch.randn(2, 3, 9, dtype=torch.float64)
    lower = torch.tensor([[0.0, 0.4, 0.7], [0.1, 0.2, 0.5]], dtype=torch.float64)
    upper = torch.tensor([[1.0, 0.9, 0.95], [0.8, 1.0, 0.5]], dtype=torch.float64)
    got = clip_teacher_log_probs(t, lower=lower, upper=upper).exp()
    for i in range(2):
        for j in range(3):
            ref = _clip_ref(t[i, j].numpy(), float(lower[i, j]), float(upper[i, j]))
            np.testing.assert_allclose(got[i, j].numpy(), ref, atol=1e-12)


def test_dackl_loss_matches_reference() -> None:
    g = torch.Generator().manual_seed(1)
    s = torch.randn(2, 4, 10, generator=g, dtype=torch.float64)
    t = torch.randn(2, 4, 10, generator=g, dtype=torch.float64) * 3
    labels = torch.randint(0, 10, (2, 4), generator=g)
    labels[0, 1] = -100
    got = dackl_loss(
        s, t, labels, lower=0.4, upper=0.95, temperature=2.0, ce_weight=0.5, reduction="none"
    )
    total, n = 0.0, 0
    for i in range(2):
        for j in range(4):
            if labels[i, j] == -100:
                assert got[i, j] == 0
                continue
            p = _clip_ref(t[i, j].numpy(), 0.4, 0.95, 2.0)
            q = _softmax(s[i, j].numpy() / 2.0)
            ce = -math.log(_softmax(s[i, j].numpy())[labels[i, j]])
            ref = 4.0 * _kl(p, q) + 0.5 * ce
            assert got[i, j].item() == pytest.approx(ref, abs=1e-12)
            total += ref
            n += 1
    mean = dackl_loss(s, t, labels, lower=0.4, upper=0.95, temperature=2.0, ce_weight=0.5)
    assert mean.item() == pytest.approx(total / n, abs=1e-12)


def test_dackl_at_full_range_is_plain_kd() -> None:
    s = torch.randn(6, 8, dtype=torch.float64)
    t = torch.randn(6, 8, dtype=torch.float64)
    plain = kd_loss(s, t, temperature=1.0, ce_weight=0.0, kd_weight=1.0)
    torch.testing.assert_close(dackl_loss(s, t), plain)


def test_dackl_gradient() -> None:
    t = torch.randn(3, 6, dtype=torch.float64)
    s = torch.randn(3, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: dackl_loss(x, t, lower=0.3, upper=0.9), (s,))
    # the clipped teacher is a constant target: no gradient flows to the teacher
    t2 = t.clone().requires_grad_(True)
    dackl_loss(s, t2, lower=0.3).backward()
    assert t2.grad is None or torch.count_nonzero(t2.grad) == 0


def test_span_loss_matches_reference() -> None:
    g = torch.Generator().manual_seed(2)
    s = torch.randn(2, 5, 6, generator=g, dtype=torch.float64)
    t = torch.randn(2, 5, 6, generator=g, dtype=torch.float64)
    spans = torch.tensor([[0, 0, 0, -1, 1], [2, 2, 3, 3, 3]])
    got = span_loss(s, t, spans, temperature=1.5, reduction="none")
    assert got.shape == (2, 4)
    refs = []
    for i in range(2):
        for j in range(4):
            if spans[i, j] < 0 or spans[i, j] != spans[i, j + 1]:
                assert got[i, j] == 0
                continue
            ht = _softmax(t[i, j].numpy() / 1.5) * _softmax(t[i, j + 1].numpy() / 1.5)
            hs = _softmax(s[i, j].numpy() / 1.5) * _softmax(s[i, j + 1].numpy() / 1.5)
            ref = 2.25 * _kl(ht / ht.sum(), hs / hs.sum())
            assert got[i, j].item() == pytest.approx(ref, abs=1e-12)
            refs.append(ref)
    assert len(refs) == 5
    mean = span_loss(s, t, spans, temperature=1.5)
    assert mean.item() == pytest.approx(sum(refs) / len(refs), abs=1e-12)


def test_span_loss_without_pairs_is_zero_with_zero_gradient() -> None:
    s = torch.randn(1, 3, 4, requires_grad=True)
    loss = span_loss(s, torch.randn(1, 3, 4), torch.tensor([[0, 1, 2]]))
    loss.backward()
    assert loss.item() == 0.0 and torch.count_nonzero(s.grad) == 0


def test_most_divergent_positions() -> None:
    g = torch.Generator().manual_seed(3)
    s = torch.randn(4, 7, 5, generator=g, dtype=torch.float64)
    t = torch.randn(4, 7, 5, generator=g, dtype=torch.float64) * 2
    mask = torch.ones(4, 7, dtype=torch.bool)
    mask[:, :3] = False
    got = most_divergent_positions(s, t, mask=mask)
    for i in range(4):
        kls = [
            _kl(_softmax(t[i, j].numpy()), _softmax(s[i, j].numpy())) if mask[i, j] else -1.0
            for j in range(7)
        ]
        assert int(got[i]) == int(np.argmax(kls))


def test_bad_input() -> None:
    s, t = torch.randn(2, 5), torch.randn(2, 5)
    with pytest.raises(ValueError, match="`lower`"):
        dackl_loss(s, t, lower=-0.1)
    with pytest.raises(ValueError, match="`upper`"):
        clip_teacher_log_probs(t, upper=1.5)
    with pytest.raises(ValueError, match="must not exceed"):
        dackl_loss(s, t, lower=0.8, upper=0.2)
    with pytest.raises(ValueError, match="leading shape"):
        dackl_loss(s, t, lower=torch.zeros(3))
    with pytest.raises(ValueError, match="class axes differ"):
        dackl_loss(s, torch.randn(2, 4))
    with pytest.raises(ValueError, match="`span_ids`"):
        span_loss(torch.randn(1, 3, 4), torch.randn(1, 3, 4), torch.zeros(1, 2, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\(B, L, C\)"):
        span_loss(s, t, torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="at least one position"):
        most_divergent_positions(
            torch.randn(1, 2, 3), torch.randn(1, 2, 3), mask=torch.zeros(1, 2, dtype=torch.bool)
        )


def test_nan_in_gives_nan() -> None:
    s = torch.randn(2, 5)
    s[1, 2] = float("nan")
    out = dackl_loss(s, torch.randn(2, 5), reduction="none")
    assert torch.isfinite(out[0]) and torch.isnan(out[1])


def test_module_form_matches_function() -> None:
    s, t = torch.randn(3, 4, 6), torch.randn(3, 4, 6)
    y = torch.randint(0, 6, (3, 4))
    module = DACKLLoss(lower=0.3, upper=0.9, ce_weight=0.5, temperature=2.0)
    expected = dackl_loss(s, t, y, lower=0.3, upper=0.9, ce_weight=0.5, temperature=2.0)
    torch.testing.assert_close(module(s, t, y), expected)
    assert module.needs_labels and not DACKLLoss().needs_labels
    with pytest.raises(TypeError):
        DACKLLoss(quantile=0.5)

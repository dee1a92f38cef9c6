"""LELP projection and pseudo-subclass targets: algebra, planted structure, errors."""

from __future__ import annotations

import pytest
import torch

from divergent.objectives.lelp import (
    LELPProjection,
    lelp_loss,
    lelp_targets,
    subclass_to_class_logits,
)


def _data(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    n, d = 120, 8
    h = torch.randn(n, d, generator=g, dtype=torch.float64)
    y = torch.arange(n) % 2
    w = torch.randn(2, d, generator=g, dtype=torch.float64)
    return h, y, w, g


def test_projection_removes_the_logit_directions() -> None:
    h, y, w, g = _data()
    proj = LELPProjection.fit(h, y, w, 3, generator=g)
    p = proj.null_projector
    assert torch.allclose(w @ p, torch.zeros_like(w), atol=1e-12)
    assert torch.allclose(p @ p, p, atol=1e-12)
    # moving an embedding along the head's rows (changing only its logits) changes no coordinate
    shifted = h + torch.randn(h.shape[0], 2, generator=g, dtype=torch.float64) @ w
    assert torch.allclose(proj.coordinates(shifted), proj.coordinates(h), atol=1e-10)
    # coordinates of each class's own members: centred, sum zero (a softmax ignores shifts),
    # total variance S − 1 (unit mean variance over the S − 1 principal directions)
    u = proj.coordinates(h)
    for c in range(2):
        own = u[y == c, c]
        assert torch.allclose(own.mean(0), torch.zeros(3, dtype=torch.float64), atol=1e-10)
        assert torch.allclose(own.sum(-1), torch.zeros(120 // 2, dtype=torch.float64), atol=1e-10)
        assert float(own.var(0).sum()) == pytest.approx(2.0, rel=1e-10)


@pytest.mark.parametrize("seed", [0, 3, 7])
def test_planted_subclusters_are_recovered(seed: int) -> None:
    # each class = two sub-clusters separated along a null-space direction (invisible to logits)
    g = torch.Generator().manual_seed(seed)
    d = 6
    w = torch.zeros(2, d, dtype=torch.float64)
    w[0, 0], w[1, 1] = 1.0, -1.0
    n = 200
    y = torch.arange(n) % 2
    sub = (torch.arange(n) // 2) % 2
    h = 0.3 * torch.randn(n, d, generator=g, dtype=torch.float64)
    h[:, 0] += 3.0 * (y == 0)  # the class signal, in the head's row space
    h[:, 2] += torch.where(sub == 0, 4.0, -4.0)  # the hidden subclass signal
    proj = LELPProjection.fit(h, y, w, 2, generator=g)
    t = lelp_targets(
        proj.coordinates(h), torch.nn.functional.one_hot(y, 2).double(), temperature=0.1
    )
    assigned = t.reshape(n, 2, 2)[torch.arange(n), y].argmax(-1)
    for c in range(2):
        a, s = assigned[y == c], sub[y == c]
        purity = max(float((a == s).double().mean()), float((a != s).double().mean()))
        assert purity > 0.98


def test_targets_marginals_and_loss() -> None:
    g = torch.Generator().manual_seed(0)
    u = torch.randn(5, 3, 4, generator=g)
    probs = torch.softmax(torch.randn(5, 3, generator=g), -1)
    t = lelp_targets(u, probs, temperature=0.5)
    assert t.shape == (5, 12)
    assert torch.allclose(t.reshape(5, 3, 4).sum(-1), probs, atol=1e-6)
    assert torch.allclose(
        t.reshape(5, 3, 4) / probs[..., None], torch.softmax(u / 0.5, -1), atol=1e-6
    )
    z = torch.randn(5, 12, generator=g)
    assert torch.allclose(lelp_loss(z, t), -(t * torch.log_softmax(z, -1)).sum(-1).mean())
    class_logits = subclass_to_class_logits(z, 4)
    assert torch.allclose(
        torch.softmax(class_logits, -1), torch.softmax(z, -1).reshape(5, 3, 4).sum(-1), atol=1e-6
    )


def test_errors() -> None:
    h, y, w, _ = _data()
    with pytest.raises(ValueError, match="null space"):
        LELPProjection.fit(h, y, w, 8)
    with pytest.raises(ValueError, match="n_subclasses"):
        LELPProjection.fit(h, y, w, 1)
    with pytest.raises(ValueError, match="head_weight"):
        LELPProjection.fit(h, y, w[:, :5], 2)
    with pytest.raises(ValueError, match="labels"):
        LELPProjection.fit(h, y + 2, w, 2)
    with pytest.raises(ValueError, match="class 1 has"):
        LELPProjection.fit(h[:5], torch.tensor([0, 0, 0, 0, 1]), w, 2)
    with pytest.raises(ValueError, match="class_probs"):
        lelp_targets(torch.zeros(2, 3, 2), torch.full((2, 3), 0.5))
    with pytest.raises(ValueError, match="multiple"):
        subclass_to_class_logits(torch.zeros(2, 5), 2)

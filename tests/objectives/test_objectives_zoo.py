"""dist, ofa, pld, sinkd, bdkd and mutual KD against float64 references from the papers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.distributions import Categorical, kl_divergence

from divergent.objectives import (
    BDKDLoss,
    OFALoss,
    batch_sinkhorn_distance,
    bdkd_loss,
    bdkd_online_losses,
    bdkd_reverse_weights,
    dist_loss,
    kd_loss,
    mutual_kd_losses,
    ofa_loss,
    pld_loss,
    sinkd_loss,
)


def _case(seed: int, n: int = 6, c: int = 5, scale: float = 2.0):
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(n, c, generator=g, dtype=torch.float64) * scale
    t = torch.randn(n, c, generator=g, dtype=torch.float64) * scale
    y = torch.randint(0, c, (n,), generator=g)
    return s, t, y


def _kl_rows(p_logits, q_logits):
    return kl_divergence(Categorical(logits=p_logits), Categorical(logits=q_logits))


def _ce_rows(s, y):
    return -Categorical(logits=s).log_prob(y)


# ---------------------------------------------------------------------------------- DIST
@pytest.mark.parametrize("temperature", [1.0, 4.0])
def test_dist_against_numpy_corrcoef(temperature: float):
    s, t, y = _case(0, n=8)
    ys = torch.softmax(s / temperature, 1).numpy()
    yt = torch.softmax(t / temperature, 1).numpy()
    inter = 1 - np.array([np.corrcoef(ys[i], yt[i])[0, 1] for i in range(8)])
    intra = 1 - np.mean([np.corrcoef(ys[:, j], yt[:, j])[0, 1] for j in range(5)])
    beta, gamma = 0.7, 1.3
    ref = _ce_rows(s, y).numpy() + 2 * temperature**2 * (beta * inter + gamma * intra)
    opts = dict(beta=beta, gamma=gamma, temperature=temperature)
    got = dist_loss(s, t, y, eps=0.0, reduction="none", **opts)
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-10)
    assert float(dist_loss(s, t, y, eps=0.0, **opts)) == pytest.approx(ref.mean(), rel=1e-10)
    # the official 1e-8 guard in the denominator moves the value only slightly
    assert float(dist_loss(s, t, y, **opts)) == pytest.approx(ref.mean(), rel=1e-5)


def test_dist_is_zero_for_identical_predictions():
    # identical predictions: both correlations are 1
    s, _, _ = _case(1)
    assert float(dist_loss(s, s.clone(), ce_weight=0.0, eps=0.0)) == pytest.approx(0.0, abs=1e-12)


def test_dist_intra_term_depends_on_the_batch():
    s, t, _ = _case(2, n=10)
    full = dist_loss(s, t, ce_weight=0.0, beta=0.0, reduction="none")
    half = dist_loss(s[:5], t[:5], ce_weight=0.0, beta=0.0, reduction="none")
    assert not torch.allclose(full[:5], half)


# ----------------------------------------------------------------------------------- OFA
@pytest.mark.parametrize("eps,temperature", [(1.0, 1.0), (1.5, 1.0), (2.0, 3.0)])
def test_ofa_against_formula(eps: float, temperature: float):
    s, t, y = _case(3)
    ls = torch.log_softmax(s / temperature, 1).numpy()
    pt = torch.softmax(t / temperature, 1).numpy()
    onehot = np.eye(5)[y.numpy()]
    weight = (pt + onehot) ** eps - onehot
    ref = -(weight * ls).sum(1)
    got = ofa_loss(s, t, y, eps=eps, temperature=temperature, ce_weight=0.0, reduction="none")
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-10)


def test_ofa_at_eps_one_is_soft_cross_entropy():
    s, t, y = _case(4)
    soft_ce = -(torch.softmax(t, 1) * torch.log_softmax(s, 1)).sum(1)
    got = ofa_loss(s, t, y, eps=1.0, ce_weight=0.0, reduction="none")
    torch.testing.assert_close(got, soft_ce, rtol=1e-12, atol=1e-12)
    # the target weight grows with ε (adaptive target enhancement)
    low = ofa_loss(s, t, y, eps=1.0, ce_weight=0.0, reduction="none")
    high = ofa_loss(s, t, y, eps=2.0, ce_weight=0.0, reduction="none")
    assert bool((high != low).all())


def test_ofa_module_with_branch_projectors():
    s, t, y = _case(5)
    feats = [torch.randn(6, 8, dtype=torch.float64), torch.randn(6, 4, dtype=torch.float64)]
    module = OFALoss(n_classes=5, branch_dims=(8, 4), branch_weight=0.5, eps=1.5).double()
    expected = ofa_loss(s, t, y, eps=1.5)
    for proj, f in zip(module.projectors, feats):
        expected = expected + 0.5 * ofa_loss(proj(f), t, y, eps=1.5, ce_weight=0.0)
    torch.testing.assert_close(module(s, t, y, features=feats), expected)
    module(s, t, y, features=feats).backward()
    assert all(p.grad is not None for p in module.parameters())
    with pytest.raises(ValueError, match="one tensor per branch"):
        module(s, t, y)
    with pytest.raises(ValueError, match="n_classes"):
        OFALoss(branch_dims=(3,))


# ----------------------------------------------------------------------------------- PLD
def _pld_reference(s: np.ndarray, t: np.ndarray, y: np.ndarray | None, tau: float) -> np.ndarray:
    out = []
    for i in range(s.shape[0]):
        rest = [int(c) for c in np.argsort(-t[i], kind="stable")]
        perm = rest if y is None else [int(y[i])] + [c for c in rest if c != y[i]]
        q = np.exp(t[i] / tau - np.logaddexp.reduce(t[i] / tau))
        loss = 0.0
        for k, c in enumerate(perm):
            tail = np.logaddexp.reduce(s[i, perm[k:]])
            loss -= q[c] * (s[i, c] - tail)
        out.append(loss)
    return np.array(out)


@pytest.mark.parametrize("tau", [1.0, 4.0])
@pytest.mark.parametrize("with_labels", [True, False])
def test_pld_against_plackett_luce_loop(tau: float, with_labels: bool):
    s, t, y = _case(6, c=7)
    labels = y if with_labels else None
    got = pld_loss(s, t, labels, teacher_temperature=tau, reduction="none")
    ref = _pld_reference(s.numpy(), t.numpy(), None if labels is None else y.numpy(), tau)
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-10)


def test_pld_is_shift_invariant_and_tends_to_ce_for_a_one_hot_teacher():
    s, t, y = _case(7)
    torch.testing.assert_close(pld_loss(s + 3.0, t, y), pld_loss(s, t, y))
    t_onehot = torch.full_like(t, -50.0)
    t_onehot[torch.arange(6), y] = 50.0
    torch.testing.assert_close(
        pld_loss(s, t_onehot, y, reduction="none"), _ce_rows(s, y), rtol=1e-9, atol=1e-12
    )


# --------------------------------------------------------------------------------- SinKD
def test_batch_sinkhorn_against_pot():
    ot = pytest.importorskip("ot")
    s, t, _ = _case(8, n=7)
    ps, pt = torch.softmax(s / 2, 1), torch.softmax(t / 2, 1)
    cost = np.abs(ps.numpy()[:, None, :] - pt.numpy()[None, :, :]).sum(-1)
    a = np.full(7, 1 / 7)
    plan = ot.sinkhorn(a, a, cost, reg=0.1, numItermax=100000, stopThr=1e-13)
    ref = 7 * float((plan * cost).sum())
    got = batch_sinkhorn_distance(ps, pt, eps=0.1, tol=1e-12)
    assert float(got) == pytest.approx(ref, rel=1e-7)


def test_sinkd_is_ce_plus_kl_plus_batch_sinkhorn():
    ot = pytest.importorskip("ot")
    s, t, y = _case(9, n=5)
    ps, pt = torch.softmax(s / 2, 1), torch.softmax(t / 2, 1)
    cost = np.abs(ps.numpy()[:, None, :] - pt.numpy()[None, :, :]).sum(-1)
    plan = ot.sinkhorn(
        np.full(5, 0.2), np.full(5, 0.2), cost, reg=0.1, numItermax=100000, stopThr=1e-13
    )
    sink = 5 * float((plan * cost).sum())
    ref = 0.2 * _ce_rows(s, y) + 0.8 * _kl_rows(t / 2, s / 2) + 0.002 * sink
    got = sinkd_loss(s, t, y, tol=1e-12, reduction="none")
    np.testing.assert_allclose(got.numpy(), ref.numpy(), rtol=1e-8)
    assert float(sinkd_loss(s, t, y, tol=1e-12)) == pytest.approx(float(ref.mean()), rel=1e-8)


def test_sinkd_gradient_matches_finite_differences():
    s, t, y = _case(10, n=4, c=3)
    s.requires_grad_()

    def f(x):
        return sinkd_loss(x, t, y, sinkhorn_weight=1.0, tol=1e-13)

    assert torch.autograd.gradcheck(f, (s,), eps=1e-6, atol=1e-6)


def test_batch_sinkhorn_ignores_row_order():
    s, t, _ = _case(11, n=5)
    ps, pt = torch.softmax(s, 1), torch.softmax(t, 1)
    perm = torch.tensor([3, 0, 4, 1, 2])
    a = batch_sinkhorn_distance(ps, pt, tol=1e-10, max_iter=20000)
    b = batch_sinkhorn_distance(ps, pt[perm], tol=1e-10, max_iter=20000)
    assert float(a) == pytest.approx(float(b), rel=1e-8)


# ---------------------------------------------------------------------------------- BD-KD
def test_bdkd_hard_switch_against_reference():
    s, t, y = _case(12, n=12)
    temperature = 2.0
    hs = Categorical(logits=s / temperature).entropy()
    ht = Categorical(logits=t / temperature).entropy()
    w = (hs > ht).double()
    assert 0 < float(w.sum()) < 12  # both branches are exercised
    fkl = _kl_rows(t / temperature, s / temperature)
    rkl = _kl_rows(s / temperature, t / temperature)
    ref = _ce_rows(s, y) + 4 * ((1 - w) * fkl + w * rkl)
    got = bdkd_loss(s, t, y, temperature=temperature, reduction="none")
    torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(bdkd_reverse_weights(s, t, temperature=temperature), w)


def test_bdkd_soft_weights_and_no_gradient_through_them():
    s, t, y = _case(13)
    w = bdkd_reverse_weights(s, t, sharpness=0.5)
    hs, ht = Categorical(logits=s).entropy(), Categorical(logits=t).entropy()
    torch.testing.assert_close(w, torch.sigmoid((hs - ht) / 0.5))
    s1 = s.clone().requires_grad_()
    loss = bdkd_loss(s1, t, y, temperature=1.0, sharpness=0.5, ce_weight=0.0)
    (g,) = torch.autograd.grad(loss, s1)
    s2 = s.clone().requires_grad_()
    fkl = kd_loss(s2, t, temperature=1.0, ce_weight=0.0, kd_weight=1.0, reduction="none")
    rkl = kd_loss(
        s2,
        t,
        divergence="reverse_kl",
        temperature=1.0,
        ce_weight=0.0,
        kd_weight=1.0,
        reduction="none",
    )
    ((1 - w) * fkl + w * rkl).mean().backward()
    torch.testing.assert_close(g, s2.grad)


def test_bdkd_online_losses_route_gradients():
    s, t, y = _case(14)
    s.requires_grad_()
    t.requires_grad_()
    losses = bdkd_online_losses(s, t, y, temperature=2.0, teacher_kd_weight=0.5)
    (gs_from_teacher,) = torch.autograd.grad(
        losses.teacher, s, allow_unused=True, retain_graph=True
    )
    assert gs_from_teacher is None
    (gt_from_student,) = torch.autograd.grad(
        losses.student, t, allow_unused=True, retain_graph=True
    )
    assert gt_from_student is None
    ref_teacher = _ce_rows(t, y) + 0.5 * 4 * _kl_rows(t / 2, s / 2)
    torch.testing.assert_close(losses.teacher, ref_teacher.mean(), rtol=1e-10, atol=0)
    module = BDKDLoss(temperature=2.0)
    both = module.online(s, t, y)
    torch.testing.assert_close(both.student, losses.student)
    assert module.last_reverse_share is not None and 0 <= module.last_reverse_share <= 1


# ------------------------------------------------------------------------------- mutual KD
def test_mutual_kd_losses_against_reference():
    a, b, y = _case(15)
    a.requires_grad_()
    b.requires_grad_()
    la, lb = mutual_kd_losses(a, b, y, temperature=2.0)
    torch.testing.assert_close(
        la, (_ce_rows(a, y) + 4 * _kl_rows(b / 2, a / 2)).mean(), rtol=1e-10, atol=0
    )
    torch.testing.assert_close(
        lb, (_ce_rows(b, y) + 4 * _kl_rows(a / 2, b / 2)).mean(), rtol=1e-10, atol=0
    )
    (ga_ref,) = torch.autograd.grad(la, a, retain_graph=True)
    ga, gb = torch.autograd.grad(la + lb, (a, b))
    torch.testing.assert_close(ga, ga_ref)
    assert math.isfinite(float(gb.abs().sum()))

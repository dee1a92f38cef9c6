"""KDRL loss: GRPO + KL to a teacher; k2 vs k3 gradients exact by enumeration."""

from __future__ import annotations

import pytest
import torch

from divergent.objectives.kdrl import kdrl_loss, linear_kd_coef, reward_guided_kd_mask
from divergent.objectives.policy_gradient import grpo_loss, policy_gradient_loss

D64 = torch.float64
B, T, K = 6, 4, 6


def _batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    logps = torch.log_softmax(torch.randn(B, T, 5, generator=g, dtype=D64), -1)[..., 0]
    old = (logps + 0.2 * torch.randn(B, T, generator=g, dtype=D64)).clamp(max=-1e-3)
    teacher = (logps + 0.7 * torch.randn(B, T, generator=g, dtype=D64)).clamp(max=-1e-3)
    adv = torch.randn(B, generator=g, dtype=D64)
    mask = torch.arange(T)[None] < torch.tensor([4, 2, 3, 1, 4, 4])[:, None]
    return logps, old, teacher, adv, mask


@pytest.mark.parametrize("kind", ["k1", "k2", "k3"])
@pytest.mark.parametrize("placement", ["loss", "reward"])
@pytest.mark.parametrize("normalization", ["token", "sequence"])
def test_equals_grpo_loss_with_the_teacher_as_reference(kind, placement, normalization):
    logps, old, teacher, adv, mask = _batch(1)
    got = kdrl_loss(
        logps,
        old,
        teacher,
        adv,
        mask,
        kd_coef=0.3,
        kd_estimator=kind,
        kd_in=placement,
        normalization=normalization,
    )
    want = grpo_loss(
        logps,
        old,
        teacher,
        adv,
        mask,
        kl_coef=0.3,
        kl_estimator=kind,
        kl_in=placement,
        normalization=normalization,
    )
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-14)


def _expected_grad(kind, placement):
    g = torch.Generator().manual_seed(2)
    theta = torch.randn(K, generator=g, dtype=D64).requires_grad_(True)
    teacher = torch.log_softmax(torch.randn(K, generator=g, dtype=D64), -1)
    rewards = (torch.arange(K) < 2).to(D64)  # two correct answers
    logp = torch.log_softmax(theta, -1)
    adv = rewards - (logp.exp() * rewards).sum().detach()  # exact baseline
    per = kdrl_loss(
        logp[:, None],
        None,
        teacher[:, None],
        adv,
        kd_coef=0.5,
        kd_estimator=kind,
        kd_in=placement,
        reduction="none",
    )
    (grad,) = torch.autograd.grad((logp.exp().detach() * per[:, 0]).sum(), theta)
    lp = torch.log_softmax(theta, -1)
    reward = (lp.exp() * rewards).sum()
    reverse = (lp.exp() * (lp - teacher)).sum()
    forward = (teacher.exp() * (teacher - lp)).sum()
    return grad, theta, reward, reverse, forward


def _grad(value, theta):
    (g,) = torch.autograd.grad(value, theta, retain_graph=True)
    return g


@pytest.mark.parametrize(
    ("kind", "placement", "kl"),
    [
        ("k2", "loss", "reverse"),
        ("k3", "loss", "forward"),
        ("k1", "reward", "reverse"),
        ("k1", "loss", None),
    ],
)
def test_exact_expected_gradient(kind, placement, kl):
    """E_π[∇ℓ] = −∇E[r] + 0.5 ∇KL for the stated direction (exact, by enumeration)."""
    grad, theta, reward, reverse, forward = _expected_grad(kind, placement)
    want = -_grad(reward, theta)
    if kl is not None:
        want = want + 0.5 * _grad(reverse if kl == "reverse" else forward, theta)
    torch.testing.assert_close(grad, want, rtol=1e-10, atol=1e-12)


def test_kd_mask_removes_the_term_on_unmasked_responses():
    logps, old, teacher, adv, mask = _batch(3)
    kd_mask = torch.tensor([True, False, True, False, False, True])
    per = kdrl_loss(logps, old, teacher, adv, mask, kd_coef=0.3, kd_mask=kd_mask, reduction="none")
    pg = policy_gradient_loss(logps, adv, mask, old_logps=old, clip_eps=0.2, reduction="none")
    full = kdrl_loss(logps, old, teacher, adv, mask, kd_coef=0.3, reduction="none")
    torch.testing.assert_close(per[~kd_mask], pg[~kd_mask])
    torch.testing.assert_close(per[kd_mask], full[kd_mask])
    assert not torch.allclose(full[~kd_mask], pg[~kd_mask])


def test_reward_guided_mask_levels():
    r = torch.tensor([1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0])
    assert reward_guided_kd_mask(r).tolist() == [False, True, True, True, True, False, False, False]
    # groups of 2: (1,0) has a success, (0,0) none, (0,1), (1,1)
    assert reward_guided_kd_mask(r, group_size=2, level="group").tolist() == [
        False,
        False,
        True,
        True,
        False,
        False,
        False,
        False,
    ]


def test_linear_kd_coef():
    assert linear_kd_coef(0, 100) == pytest.approx(5e-3)
    assert linear_kd_coef(50, 100) == pytest.approx(3e-3)
    assert linear_kd_coef(200, 100) == pytest.approx(1e-3)


def test_bad_input():
    logps, old, teacher, adv, mask = _batch(4)
    with pytest.raises(ValueError, match="kd_in"):
        kdrl_loss(logps, old, teacher, adv, mask, kd_in="advantage")
    with pytest.raises(ValueError, match="kd_estimator"):
        kdrl_loss(logps, old, teacher, adv, mask, kd_estimator="k5")
    with pytest.raises(ValueError, match="teacher_logps"):
        kdrl_loss(logps, old, teacher[:, :2], adv, mask)
    with pytest.raises(ValueError, match="kd_mask"):
        kdrl_loss(logps, old, teacher, adv, mask, kd_mask=torch.ones(3, dtype=torch.bool))
    with pytest.raises(ValueError, match="kd_coef"):
        kdrl_loss(logps, old, teacher, adv, mask, kd_coef=-1.0)
    with pytest.raises(ValueError, match="positive"):
        bad = teacher.clone()
        bad[0, 0] = 0.5
        kdrl_loss(logps, old, bad, adv, mask)
    with pytest.raises(ValueError, match="group_size"):
        reward_guided_kd_mask(torch.zeros(5), group_size=2, level="group")
    with pytest.raises(ValueError, match="level"):
        reward_guided_kd_mask(torch.zeros(4), level="prompt")


@pytest.mark.parametrize("name", ["logps", "old_logps", "teacher_logps", "advantages"])
def test_integer_input_names_the_argument_and_dtype(name):
    logps, old, teacher, adv, mask = _batch(5)
    args = {"logps": logps, "old_logps": old, "teacher_logps": teacher, "advantages": adv}
    args[name] = torch.zeros_like(args[name], dtype=torch.long)
    with pytest.raises(
        ValueError, match=rf"`{name}` must be a floating-point tensor.*torch\.int64"
    ):
        kdrl_loss(**args, mask=mask)

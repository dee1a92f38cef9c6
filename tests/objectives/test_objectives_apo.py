"""APO: DADS KL weights, STCR advantage factors and the loss against float64 references."""

from __future__ import annotations

import math

import pytest
import torch

from divergent.objectives.apo import (
    apo_loss,
    dads_kl_weights,
    prompt_difficulty,
    stcr_advantage_scale,
)
from divergent.objectives.policy_gradient import grpo_loss

D = torch.float64


def test_prompt_difficulty() -> None:
    c = torch.tensor([[True, False, False, False], [True] * 4, [False] * 4])
    torch.testing.assert_close(prompt_difficulty(c), torch.tensor([0.75, 0.0, 1.0]))


def test_dads_weights_by_hand() -> None:
    correct = torch.tensor(
        [[True, False, False, False], [True, True, True, False], [True] * 4, [False] * 4]
    )
    adv = torch.tensor(
        [[1.5, -0.5, -0.5, -0.5], [0.5, 0.5, 0.5, -1.5], [0.0] * 4, [0.0] * 4], dtype=D
    )
    adv[2, 0] = 0.3  # positive advantage but d = 0: weight 1
    got = dads_kl_weights(correct, adv)
    hard = 1 - math.exp(-math.e * 0.25)  # d = 0.75
    easy = 1 - math.exp(-math.e * 0.75)  # d = 0.25
    expected = torch.tensor(
        [[hard, 1, 1, 1], [easy, easy, easy, 1], [1, 1, 1, 1], [1, 1, 1, 1]], dtype=D
    )
    torch.testing.assert_close(got, expected, rtol=1e-14, atol=1e-15)
    assert got.dtype == D


def test_dads_weight_limits() -> None:
    n = 1000
    correct = torch.zeros(1, n, dtype=torch.bool)
    correct[0, 0] = True  # d = 0.999: the success keeps almost no KL
    adv = torch.where(correct, 1.0, -0.01).to(D)
    w = dads_kl_weights(correct, adv)
    assert w[0, 0].item() == pytest.approx(1 - math.exp(-math.e * 0.001), rel=1e-12)
    assert w[0, 0] < 0.003 and torch.all(w[0, 1:] == 1)


def test_stcr_by_hand() -> None:
    correct = torch.tensor([[True, True, False, False, False], [False, False, True, True, False]])
    lengths = torch.tensor([[10, 20, 15, 1015, 100015], [3, 5, 8, 8, 2]])
    b = 1.00001
    got = stcr_advantage_scale(correct, lengths)
    expected = torch.tensor(
        [
            [1, 1, 1, 1 + (1 - b**-1000), 1 + (1 - b**-100000)],
            [1, 1, 1, 1, 1],  # shorter wrong answers are not penalised
        ]
    )
    torch.testing.assert_close(got, expected.to(torch.float32), rtol=1e-6, atol=1e-7)
    # no correct response in the group: no penalty
    none = stcr_advantage_scale(torch.zeros(1, 3, dtype=torch.bool), torch.tensor([[1, 50, 900]]))
    assert torch.all(none == 1)
    steep = stcr_advantage_scale(correct, lengths.to(D), base=2.0)
    assert steep[0, 3].item() == pytest.approx(2.0) and steep.dtype == D


def _loss_reference(logps, old, ref, adv, correct, mask, beta, eps, dads, stcr):
    p, g, t = logps.shape
    out = torch.zeros(p, g, dtype=D)
    for a in range(p):
        n_correct = int(correct[a].sum())
        d = 1 - n_correct / g
        lens = [int(mask[a, i].sum()) for i in range(g)]
        mean_c = sum(lens[i] for i in range(g) if correct[a, i]) / max(n_correct, 1)
        for i in range(g):
            if lens[i] == 0:
                continue
            ai = adv[a, i].item()
            if stcr and not correct[a, i] and n_correct > 0 and lens[i] - mean_c > 0:
                ai *= 1 + (1 - 1.00001 ** -(lens[i] - mean_c))
            w = 1.0
            if dads and adv[a, i] > 0 and 0 < d < 1:
                w = 1 - math.exp(-math.e * (1 - d))
            pg, kl = 0.0, 0.0
            for s in range(t):
                if not mask[a, i, s]:
                    continue
                rho = math.exp(logps[a, i, s].item() - old[a, i, s].item())
                pg += -min(rho * ai, min(max(rho, 1 - eps), 1 + eps) * ai)
                lr = ref[a, i, s].item() - logps[a, i, s].item()
                kl += math.exp(lr) - 1 - lr
            out[a, i] = pg / lens[i] + beta * w * kl / lens[i]
    return out


def _batch(seed: int):
    g = torch.Generator().manual_seed(seed)
    shape = (3, 4, 5)
    logps = torch.log(torch.rand(shape, generator=g, dtype=D))
    old = (logps + 0.3 * torch.randn(shape, generator=g, dtype=D)).clamp_max(0)
    ref = torch.log(torch.rand(shape, generator=g, dtype=D))
    correct = torch.tensor([[True, False, False, False], [True, True, False, True], [False] * 4])
    rewards = correct.to(D)
    adv = (rewards - rewards.mean(-1, keepdim=True)) / (rewards.std(-1, keepdim=True) + 1e-4)
    mask = torch.ones(shape, dtype=torch.bool)
    mask[0, 1, 2:] = False
    mask[1, 2, 1:] = False
    mask[2, 3] = False  # an empty response
    return logps, old, ref, adv, correct, mask


@pytest.mark.parametrize(
    ("dads", "stcr"), [(True, True), (True, False), (False, True), (False, False)]
)
def test_loss_matches_reference(dads: bool, stcr: bool) -> None:
    logps, old, ref, adv, correct, mask = _batch(0)
    expected = _loss_reference(logps, old, ref, adv, correct, mask, 0.05, 0.2, dads, stcr)
    got = apo_loss(
        logps, old, ref, adv, correct, mask, kl_coef=0.05, dads=dads, stcr=stcr,
        stcr_base=1.00001, reduction="none",
    )  # fmt: skip
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    mean = apo_loss(logps, old, ref, adv, correct, mask, kl_coef=0.05, dads=dads, stcr=stcr)
    torch.testing.assert_close(mean, expected.sum() / 11)


def test_stcr_changes_the_loss_only_for_long_wrong_answers() -> None:
    logps, old, ref, adv, correct, mask = _batch(1)
    a = apo_loss(logps, old, ref, adv, correct, mask, stcr=False, reduction="none", stcr_base=2.0)
    b = apo_loss(logps, old, ref, adv, correct, mask, stcr=True, reduction="none", stcr_base=2.0)
    changed = (a - b).abs() > 1e-12
    # group 0: correct length 5; wrong ones of length 5 (Δ = 0) and 2 (shorter): unchanged;
    # group 1: correct mean (5+5+5)/3 = 5, wrong one length 1: unchanged; group 2: no correct
    assert not changed.any()
    mask[0, 1] = True  # now Δ = 0 still; make a wrong answer longer than the correct one
    mask[0, 0, 3:] = False
    c = apo_loss(logps, old, ref, adv, correct, mask, stcr=False, reduction="none", stcr_base=2.0)
    d = apo_loss(logps, old, ref, adv, correct, mask, stcr=True, reduction="none", stcr_base=2.0)
    diff = (c - d).abs() > 1e-12
    assert diff[0, 1:].all() and not diff[0, 0] and not diff[1:].any()


def test_gradcheck_and_k3_forward_kl_gradient() -> None:
    _, old, ref, adv, correct, mask = _batch(2)
    g = torch.Generator().manual_seed(5)
    logits = torch.randn(3, 4, 5, 3, generator=g, dtype=D, requires_grad=True)
    tokens = torch.randint(0, 3, (3, 4, 5), generator=g)

    def fn(x):
        lp = torch.log_softmax(x, -1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
        return apo_loss(lp, old, ref, adv, correct, mask, kl_coef=0.3)

    assert torch.autograd.gradcheck(fn, (logits,))
    # k3 in the loss, on-policy and enumerated: gradient of KL(ref ‖ π) (one token)
    theta = torch.randn(6, dtype=D, requires_grad=True)
    ref1 = torch.log_softmax(torch.randn(6, dtype=D), -1)
    lp = torch.log_softmax(theta, -1)
    losses = apo_loss(
        lp.view(1, 6, 1), lp.detach().view(1, 6, 1), ref1.view(1, 6, 1),
        torch.zeros(1, 6, dtype=D), torch.zeros(1, 6, dtype=torch.bool), kl_coef=1.0,
        reduction="none",
    )  # fmt: skip
    (grad,) = torch.autograd.grad((lp.exp().detach() * losses[0]).sum(), theta)
    lp2 = torch.log_softmax(theta, -1)
    (expected,) = torch.autograd.grad((ref1.exp() * (ref1 - lp2)).sum(), theta)
    torch.testing.assert_close(grad, expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"old_logps": torch.zeros(2, 3, 2)}, "shape of `logps`"),
        ({"advantages": torch.zeros(2)}, "sequence shape"),
        ({"correct": torch.zeros(2, 3)}, "bool tensor"),
        ({"correct": torch.zeros(3, 2, dtype=torch.bool)}, "sequence shape"),
        ({"logps": torch.full((2, 3, 4), 0.5)}, "finite and <= 0"),
        ({"kl_coef": -1}, "kl_coef"),
        ({"clip_eps": 0}, "clip_eps"),
        ({"dads": "yes"}, "dads"),
        ({"stcr_base": 1.0}, "base"),
        ({"reduction": "token"}, "reduction"),
        ({"logps": torch.zeros(4)}, "at least 2"),
    ],
)
def test_loss_bad_input(kwargs: dict, match: str) -> None:
    args = {
        "logps": torch.full((2, 3, 4), -1.0),
        "old_logps": torch.full((2, 3, 4), -1.0),
        "ref_logps": torch.full((2, 3, 4), -1.0),
        "advantages": torch.zeros(2, 3),
        "correct": torch.zeros(2, 3, dtype=torch.bool),
    }
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        apo_loss(**args)


@pytest.mark.parametrize(
    ("fn", "args", "match"),
    [
        (prompt_difficulty, (torch.zeros(2, 3),), "bool"),
        (prompt_difficulty, (torch.zeros(2, 0, dtype=torch.bool),), "non-empty"),
        (dads_kl_weights, (torch.zeros(2, 3, dtype=torch.bool), torch.zeros(2, 2)), "shape"),
        (stcr_advantage_scale, (torch.zeros(1, 2, dtype=torch.bool), torch.ones(1, 3)), "shape"),
        (
            stcr_advantage_scale,
            (torch.zeros(1, 2, dtype=torch.bool), torch.tensor([[1, -1]])),
            ">= 0",
        ),
        (stcr_advantage_scale, (torch.zeros(1, 2, dtype=torch.bool), [[1, 2]]), "real tensor"),
    ],
)
def test_helpers_bad_input(fn, args, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        fn(*args)


def test_without_dads_and_stcr_equals_grpo_loss_with_k3_in_the_loss() -> None:
    """The APO baseline is GRPO (per-sequence token means, clipped, k3 KL in the loss)."""
    logps, old, ref, adv, correct, mask = _batch(4)
    mask[2, 3, 0] = True  # no empty response here: both average over the same sequences
    ours = apo_loss(logps, old, ref, adv, correct, mask, kl_coef=0.05, dads=False, stcr=False)
    theirs = grpo_loss(
        logps.reshape(12, 5), old.reshape(12, 5), ref.reshape(12, 5), adv.reshape(12),
        mask.reshape(12, 5), clip_eps=0.2, kl_coef=0.05, kl_estimator="k3", kl_in="loss",
        normalization="sequence",
    )  # fmt: skip
    torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-12)

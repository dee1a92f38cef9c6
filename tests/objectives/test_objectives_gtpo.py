"""GTPO: conflict-token weights, entropy shaping and the loss against brute-force references."""

from __future__ import annotations

import math

import pytest
import torch

from divergent.objectives.gtpo import (
    conflict_token_weights,
    gtpo_entropy_shaping,
    gtpo_loss,
    token_entropy,
)

D = torch.float64


def _slot(seq: list[int], slot: int, from_end: bool) -> int | None:
    """The token of ``seq`` at an aligned slot (from the start or from the end), or None."""
    if slot >= len(seq):
        return None
    return seq[-1 - slot] if from_end else seq[slot]


def _shared(seqs, pos, neg, i: int, slot: int, from_end: bool) -> bool:
    """Completion i's token at ``slot`` also appears there in a + and in a − completion."""
    if not (pos[i] or neg[i]):
        return False
    mine = _slot(seqs[i], slot, from_end)
    if mine is None:
        return False
    has_pos = any(pos[j] and _slot(seqs[j], slot, from_end) == mine for j in range(len(seqs)))
    has_neg = any(neg[j] and _slot(seqs[j], slot, from_end) == mine for j in range(len(seqs)))
    return has_pos and has_neg


def _conflict_reference(ids, adv, mask, w):
    """The rule written out literally, group by group and position by position."""
    p_, g_, _ = ids.shape
    delta = torch.zeros(ids.shape, dtype=D)
    conflicts = torch.zeros(ids.shape, dtype=torch.bool)
    for p in range(p_):
        seqs = [[int(x) for x, m in zip(ids[p, i], mask[p, i]) if m] for i in range(g_)]
        pos = [bool(adv[p, i] > 0) for i in range(g_)]
        neg = [bool(adv[p, i] < 0) for i in range(g_)]
        for i in range(g_):
            n = len(seqs[i])
            fwd = [False] * n
            for t in range(n):  # the run from the start
                if not _shared(seqs, pos, neg, i, t, from_end=False):
                    break
                fwd[t] = True
            bwd = [False] * n
            for s in range(n):  # the run from the end
                if not _shared(seqs, pos, neg, i, s, from_end=True):
                    break
                bwd[n - 1 - s] = True
            for t in range(n):
                d = 1.0
                for c in (fwd[t], bwd[t]):
                    if c:
                        d *= w if pos[i] else 0.0
                delta[p, i, t] = d
                conflicts[p, i, t] = fwd[t] or bwd[t]
    return delta, conflicts


def _random_groups(seed: int, p=4, g=6, t=5, vocab=3):
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (p, g, t), generator=gen)
    lengths = torch.randint(1, t + 1, (p, g), generator=gen)
    lengths[0, 0] = 0  # an empty completion
    mask = torch.arange(t) < lengths.unsqueeze(-1)
    adv = torch.randint(-1, 2, (p, g), generator=gen).to(D) * torch.rand(p, g, generator=gen)
    return ids, adv, mask


@pytest.mark.parametrize("seed", range(6))
def test_conflict_weights_match_reference(seed: int) -> None:
    ids, adv, mask = _random_groups(seed)
    got = conflict_token_weights(ids, adv, mask, conflict_weight=2.0)
    delta, conflicts = _conflict_reference(ids, adv, mask, 2.0)
    torch.testing.assert_close(got.weights, delta)
    assert torch.equal(got.conflicts, conflicts)
    assert torch.equal(got.n_conflicts, conflicts.sum(-1))
    assert got.conflicts.any()  # the test draws do exercise conflicts


def test_conflict_weights_by_hand() -> None:
    ids = torch.tensor([[[7, 1, 2, 9], [7, 1, 3, 9], [7, 4, 4, 0], [7, 1, 2, 9]]])
    adv = torch.tensor([[1.0, -1.0, -0.5, 0.0]])
    mask = torch.tensor([[[1, 1, 1, 1], [1, 1, 1, 1], [1, 1, 1, 0], [1, 1, 1, 1]]]).bool()
    got = conflict_token_weights(ids, adv, mask)
    # prefix: 7 shared by + (0) and − (1, 2); 1 shared by 0 and 1; position 2: 2 vs 3 differ.
    # suffix (aligned at each end): 0 ends ...2,9; 1 ends ...3,9 → 9 conflicts; 2 ends 4,4.
    expected = torch.tensor(
        [[[2.0, 2.0, 1.0, 2.0], [0.0, 0.0, 1.0, 0.0], [0.0, 1.0, 1.0, 0.0], [1, 1, 1, 1]]]
    )
    torch.testing.assert_close(got.weights, expected)
    assert got.n_conflicts.tolist() == [[3, 3, 1, 0]]


def test_no_negatives_means_no_conflicts() -> None:
    ids = torch.zeros(2, 3, 4, dtype=torch.long)
    got = conflict_token_weights(ids, torch.ones(2, 3))
    assert torch.all(got.weights == 1) and not got.conflicts.any()


def test_entropy_shaping_and_token_entropy() -> None:
    adv = torch.tensor([[1.0, -1.0, 0.5, 0.0]], dtype=D)
    h = torch.tensor([[0.2, 0.7, 0.71, 0.3]], dtype=D)
    got = gtpo_entropy_shaping(adv, h)
    torch.testing.assert_close(got, torch.tensor([[0.98, -1.07, 0.0, -0.03]], dtype=D))
    nan = gtpo_entropy_shaping(adv, torch.tensor([[float("nan"), 0.1, 0.1, 0.1]], dtype=D))
    assert torch.isnan(nan[0, 0]) and torch.isfinite(nan[0, 1:]).all()
    logits = torch.tensor([[0.0, 0.0], [0.0, -math.inf]], dtype=D)
    torch.testing.assert_close(token_entropy(logits), torch.tensor([math.log(2), 0.0], dtype=D))


def _loss_reference(logps, ids, adv, mask, ent, divide):
    delta, conflicts = _conflict_reference(ids, adv, mask, 2.0)
    out = torch.zeros(adv.shape, dtype=D)
    grads = torch.zeros(logps.shape, dtype=D)
    for p in range(adv.shape[0]):
        for i in range(adv.shape[1]):
            n = int(mask[p, i].sum())
            if n == 0:
                continue
            a = adv[p, i].item()
            if ent is not None:
                h = sum(ent[p, i, t].item() for t in range(n)) / n
                a = 0.0 if h > 0.7 else a - 0.1 * h
            scale = 1.0 / n
            if divide:
                scale /= max(int(conflicts[p, i].sum()), 1)
            out[p, i] = -scale * sum(delta[p, i, t].item() * a for t in range(n))
            for t in range(n):
                grads[p, i, t] = -scale * delta[p, i, t].item() * a
    return out, grads


@pytest.mark.parametrize("divide", [False, True])
@pytest.mark.parametrize("with_entropy", [False, True])
def test_loss_value_and_gradient_match_reference(divide: bool, with_entropy: bool) -> None:
    ids, adv, mask = _random_groups(3)
    gen = torch.Generator().manual_seed(9)
    logps = torch.log(torch.rand(ids.shape, generator=gen, dtype=D)).requires_grad_(True)
    ent = torch.rand(ids.shape, generator=gen, dtype=D) * 1.2 if with_entropy else None
    expected, grads = _loss_reference(logps.detach(), ids, adv, mask, ent, divide)
    got = gtpo_loss(
        logps, ids, adv, mask, token_entropies=ent, divide_by_conflicts=divide, reduction="none"
    )
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    got.sum().backward()
    torch.testing.assert_close(logps.grad, grads, rtol=1e-12, atol=1e-12)
    n_kept = int(mask.any(-1).sum())
    mean = gtpo_loss(logps, ids, adv, mask, token_entropies=ent, divide_by_conflicts=divide)
    torch.testing.assert_close(mean, expected.sum() / n_kept)


def test_gradient_through_logits_is_the_surrogate_gradient() -> None:
    """The value is constant in θ (ratio ≡ 1), so gradcheck's finite differences do not apply;
    the gradient must equal that of the surrogate −(1/|o|) Σ_t δ Ã log π_θ instead."""
    ids, adv, mask = _random_groups(4, p=2, g=4, t=3)
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(*ids.shape, 3, generator=gen, dtype=D, requires_grad=True)
    lp = torch.log_softmax(logits, -1).gather(-1, ids.unsqueeze(-1)).squeeze(-1)
    (g_loss,) = torch.autograd.grad(gtpo_loss(lp, ids, adv, mask, reduction="sum"), logits)
    delta, _ = _conflict_reference(ids, adv, mask, 2.0)
    lp = torch.log_softmax(logits, -1).gather(-1, ids.unsqueeze(-1)).squeeze(-1)
    n = mask.sum(-1).clamp_min(1).to(D)
    surrogate = -((delta * adv.unsqueeze(-1) * lp * mask).sum(-1) / n).sum()
    (g_ref,) = torch.autograd.grad(surrogate, logits)
    torch.testing.assert_close(g_loss, g_ref, rtol=1e-12, atol=1e-12)
    assert g_ref.abs().max() > 0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"token_ids": torch.zeros(2, 3, 4)}, "integer tensor"),
        ({"token_ids": torch.zeros(2, 3, 5, dtype=torch.long)}, "shape of `logps`"),
        ({"advantages": torch.zeros(3)}, "sequence shape"),
        ({"logps": torch.full((2, 3, 4), 1.0)}, "finite and <= 0"),
        ({"mask": torch.tensor([[[0, 1, 1, 1]] * 3] * 2).bool()}, "right-padded"),
        ({"mask": torch.ones(2, 3, 4)}, "bool tensor"),
        ({"token_entropies": torch.zeros(2, 3)}, "token_entropies"),
        ({"conflict_weight": 0.0}, "conflict_weight"),
        ({"entropy_threshold": -1.0}, "threshold"),
        ({"divide_by_conflicts": 1}, "divide_by_conflicts"),
        ({"reduction": "all"}, "reduction"),
    ],
)
def test_loss_bad_input(kwargs: dict, match: str) -> None:
    args = {
        "logps": torch.full((2, 3, 4), -1.0),
        "token_ids": torch.zeros(2, 3, 4, dtype=torch.long),
        "advantages": torch.tensor([[1.0, -1.0, 0.0], [0.5, 0.5, -1.0]]),
    }
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        gtpo_loss(**args)

"""SuperHF: the top-k filter and the SFT + KL-prior loss against float64 references."""

from __future__ import annotations

import math

import pytest
import torch

from divergent.objectives.superhf import superhf_loss, superhf_select

D = torch.float64


def _select_reference(rewards, k, valid):
    out = torch.zeros(rewards.shape, dtype=torch.bool)
    for p in range(rewards.shape[0]):
        cands = [j for j in range(rewards.shape[1]) if valid is None or valid[p, j]]
        cands.sort(key=lambda j: (-rewards[p, j].item(), j))  # highest first, lower index on ties
        for j in cands[:k]:
            out[p, j] = True
    return out


@pytest.mark.parametrize("k", [1, 2, 4])
def test_select_matches_reference(k: int) -> None:
    g = torch.Generator().manual_seed(0)
    rewards = torch.randint(0, 4, (6, 5), generator=g).to(D)  # many ties
    valid = torch.rand(6, 5, generator=g) > 0.25
    valid[0] = False
    for v in (None, valid):
        got = superhf_select(rewards, k, v)
        assert torch.equal(got, _select_reference(rewards, k, v))
    assert superhf_select(rewards, k, valid)[0].sum() == 0  # no valid completion: none kept


def test_select_leading_shape_and_ties() -> None:
    r = torch.tensor([[[1.0, 3.0, 3.0]], [[2.0, 0.0, 2.0]]])
    assert torch.equal(
        superhf_select(r), torch.tensor([[[False, True, False]], [[True, False, False]]])
    )


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((torch.zeros(2, 3), 0), "`k`"),
        ((torch.zeros(2, 3), 4), "`k`"),
        ((torch.zeros(2, 3), True), "`k`"),
        ((torch.tensor([[float("nan"), 1.0]]), 1), "NaN"),
        ((torch.zeros(2, 3, dtype=torch.long), 1), "floating-point"),
    ],
)
def test_select_bad_input(args, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        superhf_select(*args)
    with pytest.raises(ValueError, match="mask"):
        superhf_select(torch.zeros(2, 3), 1, torch.ones(2, 3))


def test_select_nan_on_invalid_is_fine() -> None:
    r = torch.tensor([[float("nan"), 1.0, 0.0]])
    got = superhf_select(r, 1, torch.tensor([[False, True, True]]))
    assert torch.equal(got, torch.tensor([[False, True, False]]))


def _loss_reference(policy, prior, labels, beta, clamp, ignore=-100):
    out, kept = [], []
    for i in range(policy.shape[0]):
        nll, kl, n = 0.0, 0.0, 0
        for t in range(policy.shape[1]):
            y = int(labels[i, t])
            if y == ignore:
                continue
            n += 1
            lq = torch.log_softmax(policy[i, t], -1)
            lp = torch.log_softmax(prior[i, t], -1)
            nll -= lq[y].item()
            kl += sum(math.exp(lp[v]) * (lp[v] - lq[v]).item() for v in range(policy.shape[2]))
        kept.append(n > 0)
        if n == 0:
            out.append(0.0)
            continue
        mean_kl = kl / n
        out.append(nll / n + beta * (max(mean_kl, 0.0) if clamp else mean_kl))
    return torch.tensor(out, dtype=D), kept


@pytest.mark.parametrize("clamp", [True, False])
def test_loss_matches_reference(clamp: bool) -> None:
    g = torch.Generator().manual_seed(1)
    policy = torch.randn(4, 5, 6, generator=g, dtype=D)
    prior = torch.randn(4, 5, 6, generator=g, dtype=D)
    labels = torch.randint(0, 6, (4, 5), generator=g)
    labels[0, :2] = -100
    labels[3] = -100  # no completion token
    ref, kept = _loss_reference(policy, prior, labels, 0.35, clamp)
    got = superhf_loss(policy, prior, labels, clamp_kl=clamp, reduction="none")
    assert got.dtype == D
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(
        superhf_loss(policy, prior, labels, clamp_kl=clamp), ref.sum() / sum(kept)
    )
    sel = torch.tensor([True, False, True, True])
    torch.testing.assert_close(superhf_loss(policy, prior, labels, mask=sel), (ref[0] + ref[2]) / 2)
    torch.testing.assert_close(
        superhf_loss(policy, prior, labels, mask=sel, reduction="sum"), ref[0] + ref[2]
    )


def test_kl_direction_is_forward_from_prior() -> None:
    """β·KL(π₀‖π_θ), not KL(π_θ‖π₀): the two differ on asymmetric rows."""
    policy = torch.log(torch.tensor([[[0.9, 0.05, 0.05]]], dtype=D))
    prior = torch.log(torch.tensor([[[0.2, 0.4, 0.4]]], dtype=D))
    labels = torch.tensor([[0]])
    got = superhf_loss(policy, prior, labels, kl_coef=1.0, reduction="none")
    p0, q = prior.exp()[0, 0], policy.exp()[0, 0]
    forward = (p0 * (p0.log() - q.log())).sum()
    assert got.item() == pytest.approx(-math.log(0.9) + forward.item(), abs=1e-12)
    reverse = (q * (q.log() - p0.log())).sum()
    assert abs(forward - reverse) > 0.1


def test_zero_kl_coef_is_plain_sft_and_prior_equal_policy_adds_nothing() -> None:
    g = torch.Generator().manual_seed(2)
    policy = torch.randn(3, 4, 5, generator=g, dtype=D)
    labels = torch.randint(0, 5, (3, 4), generator=g)
    ce = torch.nn.functional.cross_entropy(policy.reshape(-1, 5), labels.reshape(-1))
    torch.testing.assert_close(superhf_loss(policy, policy, labels), ce)
    other = torch.randn(3, 4, 5, generator=g, dtype=D)
    torch.testing.assert_close(superhf_loss(policy, other, labels, kl_coef=0.0), ce)


def test_gradcheck() -> None:
    g = torch.Generator().manual_seed(3)
    policy = torch.randn(2, 3, 4, generator=g, dtype=D, requires_grad=True)
    prior = torch.randn(2, 3, 4, generator=g, dtype=D)
    labels = torch.tensor([[-100, 1, 2], [0, 3, -100]])
    assert torch.autograd.gradcheck(lambda x: superhf_loss(x, prior, labels), (policy,))


def test_float32_nan_and_all_masked() -> None:
    policy = torch.randn(2, 3, 4)
    prior = torch.randn(2, 3, 4)
    labels = torch.tensor([[0, 1, 2], [3, 2, 1]])
    assert superhf_loss(policy, prior, labels).dtype == torch.float32
    bad = policy.clone()
    bad[0, 1, 2] = float("nan")
    out = superhf_loss(bad, prior, labels, reduction="none")
    assert torch.isnan(out[0]) and torch.isfinite(out[1])
    x = policy.clone().requires_grad_(True)
    loss = superhf_loss(x, prior, labels, mask=torch.tensor([False, False]))
    loss.backward()
    assert loss.item() == 0.0 and torch.all(x.grad == 0)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"prior_logits": torch.zeros(2, 3, 5)}, "class axes differ"),
        ({"prior_logits": torch.zeros(1, 3, 4)}, "same shape"),
        ({"labels": torch.zeros(2, 3)}, "integer tensor"),
        ({"labels": torch.zeros(2, 2, dtype=torch.long)}, "shape"),
        ({"labels": torch.full((2, 3), 4)}, "outside 0..3"),
        ({"kl_coef": -1.0}, "kl_coef"),
        ({"clamp_kl": 1}, "clamp_kl"),
        ({"mask": torch.ones(2)}, "mask"),
        ({"reduction": "batchmean"}, "reduction"),
        ({"policy_logits": torch.zeros(4), "prior_logits": torch.zeros(4)}, "token axis"),
    ],
)
def test_loss_bad_input(kwargs: dict, match: str) -> None:
    args = {
        "policy_logits": torch.zeros(2, 3, 4),
        "prior_logits": torch.zeros(2, 3, 4),
        "labels": torch.zeros(2, 3, dtype=torch.long),
    }
    args.update(kwargs)
    labels = args.pop("labels")
    with pytest.raises(ValueError, match=match):
        superhf_loss(args.pop("policy_logits"), args.pop("prior_logits"), labels, **args)

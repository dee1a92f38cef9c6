"""SALSA: weight soups and the KL-regularised policy-gradient loss against a reference."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from divergent.objectives.salsa import model_soup, salsa_loss, weight_soup

D = torch.float64


# --------------------------------------------------------------------------------------------
# weight_soup / model_soup
# --------------------------------------------------------------------------------------------
def test_weight_soup_uniform_and_weighted() -> None:
    a = {"w": torch.tensor([[1.0, 2.0]]), "b": torch.tensor([0.5]), "n": torch.tensor(3)}
    b = {"w": torch.tensor([[3.0, -2.0]]), "b": torch.tensor([1.5]), "n": torch.tensor(3)}
    soup = weight_soup([a, b])
    assert torch.equal(soup["w"], torch.tensor([[2.0, 0.0]]))
    assert torch.equal(soup["b"], torch.tensor([1.0]))
    assert soup["n"].item() == 3 and soup["n"].dtype == torch.int64
    soup = weight_soup([a, b], [0.25, 0.75])
    assert torch.allclose(soup["w"], torch.tensor([[2.5, -1.0]]))
    assert torch.equal(a["w"], torch.tensor([[1.0, 2.0]]))  # inputs untouched
    one = weight_soup([a])
    assert torch.equal(one["w"], a["w"]) and one["w"] is not a["w"]


def test_weight_soup_keeps_dtype_and_averages_in_float64() -> None:
    a = {"w": torch.tensor([1.0], dtype=torch.float16)}
    b = {"w": torch.tensor([2.0], dtype=torch.float16)}
    soup = weight_soup([a, b], torch.tensor([0.5, 0.5]))
    assert soup["w"].dtype == torch.float16 and soup["w"].item() == 1.5


@pytest.mark.parametrize(
    ("dicts", "weights", "match"),
    [
        ([], None, "empty"),
        ({"w": torch.zeros(1)}, None, "sequence"),
        ([{"w": torch.zeros(1)}, {"v": torch.zeros(1)}], None, "different parameter names"),
        ([{"w": torch.zeros(1)}, {"w": torch.zeros(2)}], None, "must match"),
        ([{"w": torch.zeros(1)}, {"w": torch.zeros(1, dtype=D)}], None, "must match"),
        ([{"n": torch.tensor(1)}, {"n": torch.tensor(2)}], None, "integer buffers"),
        ([{"w": torch.zeros(1)}, {"w": torch.zeros(1)}], [0.5, 0.6], "sum to 1"),
        ([{"w": torch.zeros(1)}, {"w": torch.zeros(1)}], [1.5, -0.5], ">= 0"),
        ([{"w": torch.zeros(1)}, {"w": torch.zeros(1)}], [1.0], "one entry per model"),
        ([{"w": torch.zeros(1)}, {"w": torch.zeros(1)}], "ab", "sequence of 2 numbers"),
    ],
)
def test_weight_soup_bad_input(dicts, weights, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        weight_soup(dicts, weights)


def test_model_soup_outputs_the_averaged_model() -> None:
    torch.manual_seed(0)
    m1, m2 = nn.Linear(3, 2), nn.Linear(3, 2)
    soup = model_soup([m1, m2], [0.3, 0.7])
    x = torch.randn(4, 3)
    w = 0.3 * m1.weight + 0.7 * m2.weight
    b = 0.3 * m1.bias + 0.7 * m2.bias
    assert torch.allclose(soup(x), x @ w.T + b, atol=1e-6)
    assert soup is not m1 and not torch.equal(soup.weight, m1.weight)
    with pytest.raises(ValueError, match="non-empty sequence"):
        model_soup([])
    with pytest.raises(ValueError, match=r"torch\.nn\.Module"):
        model_soup([m1, "x"])  # type: ignore[list-item]


# --------------------------------------------------------------------------------------------
# salsa_loss: hand-written float64 reference
# --------------------------------------------------------------------------------------------
def _reference(logps, soup, rewards, mask, beta, kind, kl_in, baseline):
    n, t = logps.shape
    kls, scores, kept = [], [], []
    for i in range(n):
        k_sum, s_sum, any_tok = 0.0, 0.0, False
        for j in range(t):
            if mask is not None and not mask[i, j]:
                continue
            any_tok = True
            log_r = soup[i, j].item() - logps[i, j].item()
            k = {"k1": -log_r, "k2": 0.5 * log_r**2, "k3": math.expm1(log_r) - log_r}[kind]
            k_sum += k
            s_sum += logps[i, j].item()
        kls.append(k_sum)
        scores.append(s_sum)
        kept.append(any_tok)
    shaped = [rewards[i].item() - (beta * kls[i] if kl_in == "reward" else 0.0) for i in range(n)]
    out = []
    for i in range(n):
        if baseline == "none":
            b = 0.0
        else:
            others = [shaped[j] for j in range(n) if j != i and kept[j]]
            b = sum(others) / max(len(others), 1)
        v = -(shaped[i] - b) * scores[i]
        if kl_in == "loss":
            v += beta * kls[i]
        out.append(v if kept[i] else 0.0)
    return torch.tensor(out, dtype=D), kept


@pytest.mark.parametrize("kind", ["k1", "k2", "k3"])
@pytest.mark.parametrize("kl_in", ["reward", "loss"])
@pytest.mark.parametrize("baseline", ["none", "leave_one_out"])
def test_salsa_loss_matches_reference(kind: str, kl_in: str, baseline: str) -> None:
    g = torch.Generator().manual_seed(1)
    logps = torch.log(torch.rand(5, 4, generator=g, dtype=D))
    soup = torch.log(torch.rand(5, 4, generator=g, dtype=D))
    rewards = torch.randn(5, generator=g, dtype=D)
    mask = torch.rand(5, 4, generator=g) > 0.3
    mask[2] = False  # a sequence with no token
    ref, kept = _reference(logps, soup, rewards, mask, 0.3, kind, kl_in, baseline)
    got = salsa_loss(
        logps, soup, rewards, mask, beta=0.3, kl_estimator=kind, kl_in=kl_in,
        baseline=baseline, reduction="none",
    )  # fmt: skip
    assert got.dtype == D
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12)
    mean = salsa_loss(
        logps, soup, rewards, mask, beta=0.3, kl_estimator=kind, kl_in=kl_in, baseline=baseline
    )
    torch.testing.assert_close(mean, ref.sum() / sum(kept))
    total = salsa_loss(
        logps, soup, rewards, mask, beta=0.3, kl_estimator=kind, kl_in=kl_in,
        baseline=baseline, reduction="sum",
    )  # fmt: skip
    torch.testing.assert_close(total, ref.sum())
    normed = salsa_loss(
        logps, soup, rewards, mask, beta=0.3, kl_estimator=kind, kl_in=kl_in,
        baseline=baseline, normalizer=10.0,
    )  # fmt: skip
    torch.testing.assert_close(normed, ref.sum() / 10.0)


def _softmax_policy(k: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    theta = torch.randn(k, generator=g, dtype=D, requires_grad=True)
    ref = torch.log_softmax(torch.randn(k, generator=g, dtype=D), -1)
    r = torch.randn(k, generator=g, dtype=D)
    return theta, ref, r


def test_expected_gradient_is_exact_kl_regularised_gradient() -> None:
    """Σ_y π(y) ∇ℓ(y) = −∇(E_π r − β KL(π‖ref)) for k1 in the reward (all y enumerated)."""
    theta, ref, r = _softmax_policy(6, 0)
    beta = 0.4
    logp = torch.log_softmax(theta, -1)
    losses = salsa_loss(
        logp.unsqueeze(-1), ref.unsqueeze(-1), r, beta=beta, kl_estimator="k1",
        kl_in="reward", baseline="none", reduction="none",
    )  # fmt: skip
    expected = (logp.exp().detach() * losses).sum()
    (g_loss,) = torch.autograd.grad(expected, theta)
    logp2 = torch.log_softmax(theta, -1)
    p = logp2.exp()
    objective = (p * r).sum() - beta * (p * (logp2 - ref)).sum()
    (g_obj,) = torch.autograd.grad(objective, theta)
    torch.testing.assert_close(g_loss, -g_obj, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(("kind", "direction"), [("k2", "reverse"), ("k3", "forward")])
def test_kl_in_loss_gradient_semantics(kind: str, direction: str) -> None:
    theta, ref, _ = _softmax_policy(5, 3)
    logp = torch.log_softmax(theta, -1)
    zero = torch.zeros(5, dtype=D)
    losses = salsa_loss(
        logp.unsqueeze(-1), ref.unsqueeze(-1), zero, beta=1.0, kl_estimator=kind,
        kl_in="loss", baseline="none", reduction="none",
    )  # fmt: skip
    (g_loss,) = torch.autograd.grad((logp.exp().detach() * losses).sum(), theta)
    logp2 = torch.log_softmax(theta, -1)
    if direction == "reverse":
        kl = (logp2.exp() * (logp2 - ref)).sum()
    else:
        kl = (ref.exp() * (ref - logp2)).sum()
    (g_kl,) = torch.autograd.grad(kl, theta)
    torch.testing.assert_close(g_loss, g_kl, rtol=1e-10, atol=1e-12)


def test_salsa_loss_gradcheck() -> None:
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(3, 4, 5, generator=g, dtype=D, requires_grad=True)
    tokens = torch.randint(0, 5, (3, 4), generator=g)
    soup = torch.log(torch.rand(3, 4, generator=g, dtype=D))
    rewards = torch.randn(3, generator=g, dtype=D)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1]], dtype=torch.bool)

    def fn(x):
        lp = torch.log_softmax(x, -1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
        return salsa_loss(lp, soup, rewards, mask, beta=0.2, kl_estimator="k3", kl_in="loss")

    assert torch.autograd.gradcheck(fn, (logits,))


def test_salsa_loss_float32_nan_and_all_masked() -> None:
    logps = torch.log(torch.tensor([[0.5, 0.25], [0.1, 0.2]]))
    soup = torch.log(torch.tensor([[0.4, 0.3], [0.2, 0.2]]))
    r = torch.tensor([1.0, 0.0])
    assert salsa_loss(logps, soup, r).dtype == torch.float32
    nan_r = torch.tensor([float("nan"), 0.0])
    out = salsa_loss(logps, soup, nan_r, baseline="none", reduction="none")
    assert torch.isnan(out[0]) and torch.isfinite(out[1])
    x = logps.clone().requires_grad_(True)
    masked = salsa_loss(x, soup, r, torch.zeros(2, 2, dtype=torch.bool))
    masked.backward()
    assert masked.item() == 0.0 and torch.all(x.grad == 0)


def test_salsa_padding_values_are_ignored() -> None:
    logps = torch.log(torch.tensor([[0.5, 0.25], [0.1, 0.2]], dtype=D))
    soup = torch.log(torch.tensor([[0.4, 0.3], [0.2, 0.2]], dtype=D))
    mask = torch.tensor([[True, False], [True, True]])
    padded = logps.clone()
    padded[0, 1] = 7.0  # garbage in padding: not a log-probability, but masked
    r = torch.tensor([1.0, 0.0], dtype=D)
    a = salsa_loss(logps, soup, r, mask, reduction="none")
    b = salsa_loss(padded, soup, r, mask, reduction="none")
    torch.testing.assert_close(a, b)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"soup_logps": torch.zeros(2, 3)}, "shape of `logps`"),
        ({"rewards": torch.zeros(3)}, "sequence shape"),
        ({"logps": torch.tensor([[0.1, -1.0], [-1.0, -1.0]])}, "must be finite and <= 0"),
        ({"logps": torch.tensor([[float("inf"), -1.0], [-1.0, -1.0]])}, "log-probabilities"),
        ({"soup_logps": torch.tensor([[0.5, -1.0], [-1.0, -1.0]])}, "soup_logps"),
        ({"beta": -0.1}, "beta"),
        ({"kl_in": "advantage"}, "kl_in"),
        ({"kl_estimator": "k4"}, "kind"),
        ({"baseline": "mean"}, "baseline"),
        ({"reduction": "avg"}, "reduction"),
        ({"mask": torch.ones(2, 2)}, "mask"),
        ({"mask": torch.ones(2, 3, dtype=torch.bool)}, "token shape"),
        ({"logps": torch.zeros(2, 2, dtype=torch.long)}, "floating-point"),
    ],
)
def test_salsa_loss_bad_input(kwargs: dict, match: str) -> None:
    args = {
        "logps": torch.full((2, 2), -1.0),
        "soup_logps": torch.full((2, 2), -1.0),
        "rewards": torch.zeros(2),
    }
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        salsa_loss(**args)

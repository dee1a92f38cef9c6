"""Tiny causal LMs for the LM reproductions: shapes, causality, MoE routing, training, scores."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from divergent.train.tiny_lm import (
    TinyCausalLM,
    char_corpus,
    char_vocab,
    correct_and_regenerate,
    evaluate_lm,
    generate,
    sample_windows,
    train_lm,
)


def _ce(model, x, y):
    return F.cross_entropy(model(x).flatten(0, 1), y.flatten())


def test_vocab_round_trip_and_unknown() -> None:
    v = char_vocab("aaabbc", max_size=3)
    assert v.chars == "ab" and v.unknown_id == 2
    assert v.encode("abcz").tolist() == [0, 1, 2, 2]
    assert v.decode([0, 1]) == "ab"


def test_char_corpus_split_is_disjoint_text() -> None:
    c = char_corpus(vocab_size=40)
    assert c.train.max() < 40 and c.heldout.max() < 40
    assert c.train.shape[0] > c.heldout.shape[0] > 1000


@pytest.mark.parametrize("n_experts", [0, 4])
def test_model_is_causal(n_experts: int) -> None:
    lm = TinyCausalLM(12, d_model=8, n_layers=2, n_heads=2, context=6, n_experts=n_experts)
    x = torch.randint(0, 12, (2, 6))
    y = x.clone()
    y[:, 4:] = (y[:, 4:] + 1) % 12  # change the future
    a, b = lm(x), lm(y)
    torch.testing.assert_close(a[:, :4], b[:, :4])
    assert not torch.allclose(a[:, 4:], b[:, 4:])


def test_moe_routes_top_k() -> None:
    lm = TinyCausalLM(10, d_model=8, n_layers=1, n_heads=1, context=5, n_experts=4, top_k=2, seed=1)
    x = torch.randint(0, 10, (3, 5))
    logits, routers = lm.forward_with_router(x)
    assert logits.shape == (3, 5, 10) and len(routers) == 1 and routers[0].shape == (3, 5, 4)
    # the MoE output equals the renormalised top-2 mixture of the experts, written out
    moe = lm.blocks[0].ff
    h = torch.randn(3, 5, 8)
    out, r = moe(h)
    p = r.softmax(-1)
    ref = torch.zeros_like(out)
    for i in range(3):
        for j in range(5):
            top = p[i, j].topk(2)
            w = top.values / top.values.sum()
            for k, e in enumerate(top.indices.tolist()):
                ref[i, j] += w[k] * moe.experts[e](h[i, j])
    torch.testing.assert_close(out, ref)


def test_same_seed_same_model() -> None:
    a = TinyCausalLM(10, d_model=8, n_layers=1, n_heads=2, context=4, seed=3)
    b = TinyCausalLM(10, d_model=8, n_layers=1, n_heads=2, context=4, seed=3)
    c = TinyCausalLM(10, d_model=8, n_layers=1, n_heads=2, context=4, seed=4)
    x = torch.randint(0, 10, (2, 4))
    torch.testing.assert_close(a(x), b(x))
    assert not torch.allclose(a(x), c(x))


def test_training_learns_a_periodic_sequence_and_evaluation() -> None:
    ids = torch.arange(600) % 7
    lm = TinyCausalLM(7, d_model=16, n_layers=1, n_heads=2, context=16, seed=0)
    before = evaluate_lm(lm, ids, length=16)
    assert before.perplexity > 3
    curve = train_lm(
        lm, _ce, ids, steps=80, batch_size=16, length=16, generator=torch.Generator(), lr=1e-2
    )
    assert len(curve) == 80 and curve[-1] < 0.3 * curve[0]
    after = evaluate_lm(lm, ids, length=16, teacher=lm)
    assert after.perplexity < 1.5 and after.accuracy > 0.9
    assert after.token_kl == pytest.approx(0.0, abs=1e-12) and after.agreement == 1.0
    assert math.isnan(before.token_kl)


def test_evaluation_matches_a_direct_computation() -> None:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 9, (70,), generator=g)
    student = TinyCausalLM(9, d_model=8, n_layers=1, n_heads=2, context=10, seed=1)
    teacher = TinyCausalLM(9, d_model=8, n_layers=1, n_heads=2, context=10, seed=2)
    e = evaluate_lm(student, ids, length=10, teacher=teacher, batch_size=3)
    w = ids[: 6 * 10 + 1]
    x = torch.stack([w[i * 10 : i * 10 + 10] for i in range(6)])
    y = torch.stack([w[i * 10 + 1 : i * 10 + 11] for i in range(6)])
    with torch.no_grad():
        lq = student(x).double().log_softmax(-1)
        lp = teacher(x).double().log_softmax(-1)
    nll = -lq.gather(-1, y[..., None]).mean()
    assert e.n_tokens == 60
    assert e.perplexity == pytest.approx(math.exp(nll.item()), rel=1e-9)
    assert e.token_kl == pytest.approx((lp.exp() * (lp - lq)).sum(-1).mean().item(), rel=1e-9)
    # a second view of the inputs: the targets stay those of ids
    other = (ids + 1) % 9
    e2 = evaluate_lm(student, ids, length=10, inputs=other)
    with torch.no_grad():
        lq2 = student((x + 1) % 9).double().log_softmax(-1)
    assert e2.accuracy == pytest.approx((lq2.argmax(-1) == y).double().mean().item())
    assert e.as_dict() == {
        "perplexity": e.perplexity,
        "accuracy": e.accuracy,
        "token_kl": e.token_kl,
        "agreement": e.agreement,
        "n_tokens": 60,
    }


def test_generate_and_correct_and_regenerate() -> None:
    student = TinyCausalLM(6, d_model=8, n_layers=1, n_heads=2, context=9, seed=1)
    teacher = TinyCausalLM(6, d_model=8, n_layers=1, n_heads=2, context=9, seed=2)
    g = torch.Generator().manual_seed(0)
    prompt = torch.randint(0, 6, (3, 3), generator=g)
    seq = generate(student, prompt, 7, generator=g)
    assert seq.shape == (3, 10) and torch.equal(seq[:, :3], prompt)
    fixed = correct_and_regenerate(student, teacher, seq, 3, generator=g)
    assert fixed.shape == seq.shape and torch.equal(fixed[:, :3], prompt)
    with torch.no_grad():
        s, t = student(seq[:, :-1]).double(), teacher(seq[:, :-1]).double()
    kl = (t.softmax(-1) * (t.log_softmax(-1) - s.log_softmax(-1))).sum(-1)
    kl[:, :2] = -1  # positions that predict prompt tokens cannot be corrected
    where = kl.argmax(-1)
    for row in range(3):
        i = int(where[row])
        assert torch.equal(fixed[row, : i + 1], seq[row, : i + 1])  # kept up to the choice
        assert fixed[row, i + 1] == t[row, i].argmax()  # the teacher's token
    with pytest.raises(ValueError, match="context"):
        correct_and_regenerate(
            student, teacher, torch.zeros(1, 11, dtype=torch.long), 3, generator=g
        )


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="`n_heads`"):
        TinyCausalLM(10, d_model=9, n_heads=2)
    with pytest.raises(ValueError, match="`n_experts`"):
        TinyCausalLM(10, n_experts=1)
    with pytest.raises(ValueError, match="`top_k`"):
        TinyCausalLM(10, n_experts=2, top_k=3)
    lm = TinyCausalLM(10, d_model=8, n_heads=2, context=4)
    with pytest.raises(ValueError, match="context=4"):
        lm(torch.zeros(1, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="too few"):
        sample_windows(torch.arange(5), 2, 8, torch.Generator())
    with pytest.raises(ValueError, match="`max_size`"):
        char_vocab("abc", max_size=1)
    with pytest.raises(ValueError, match="`prompt_length`"):
        correct_and_regenerate(lm, lm, torch.zeros(1, 4, dtype=torch.long), 4, generator=None)

"""divergent.toy support and policies: enumeration, normalisation, exact log-probs against a
brute-force per-sequence reference, sampling, entropy via the chain rule, factorisation."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from divergent.toy import (
    MLPPolicy,
    SequenceSpace,
    TabularPolicy,
    batch_token_log_probs,
    exact_entropy,
)

# the checks read exact values of differentiable policies with float(); torch warns (once per
# process) that the scalar conversion drops the graph, which is what is wanted here
pytestmark = pytest.mark.filterwarnings("ignore:Converting a tensor with requires_grad=True")


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _brute_log_prob(policy: TabularPolicy | MLPPolicy, tokens: tuple[int, ...]) -> float:
    """log π(s) by walking the prefixes one by one with numpy (independent of the gather)."""
    space = policy.space
    table = policy.prefix_logits().detach().to(torch.float64).numpy()
    v = space.vocab_size
    total = 0.0
    for t, token in enumerate(tokens):
        prefix_rank = 0
        for s in tokens[:t]:
            prefix_rank = prefix_rank * v + s
        prefix_id = sum(v**k for k in range(t)) + prefix_rank
        row = table[prefix_id]
        total += row[token] - (np.log(np.sum(np.exp(row - row.max()))) + row.max())
    return total


def test_enumeration_is_lexicographic_and_complete() -> None:
    space = SequenceSpace(3, 3)
    expected = list(itertools.product(range(3), repeat=3))
    assert [tuple(s) for s in space.sequences.tolist()] == expected
    assert space.size == 27 and space.num_prefixes == 1 + 3 + 9
    assert torch.equal(space.index_of(space.sequences), torch.arange(27))
    # every prefix id is used by exactly the sequences sharing that prefix
    for i, seq in enumerate(expected):
        for t in range(3):
            j = expected.index(seq[:t] + (0,) * (3 - t))
            assert space.prefix_ids[i, t] == space.prefix_ids[j, t]
    assert space.prefix_tokens[space.prefix_ids[20, 2]].tolist() == list(expected[20][:2])


def test_too_large_support_is_refused_naming_the_arguments() -> None:
    with pytest.raises(ValueError, match=r"`vocab_size` \*\* `length`.*max_size=100000"):
        SequenceSpace(10, 6)
    with pytest.raises(ValueError, match="vocab_size"):
        SequenceSpace(1, 3)
    with pytest.raises(ValueError, match="length"):
        SequenceSpace(3, 0)
    assert SequenceSpace(10, 5).size == 100_000


@pytest.mark.parametrize("kind", ["tabular", "mlp"])
def test_log_probs_normalised_and_equal_brute_force(kind: str) -> None:
    space = SequenceSpace(3, 4)
    if kind == "tabular":
        policy = TabularPolicy.random(space, scale=1.5, generator=_gen(1))
    else:
        policy = MLPPolicy(space, hidden=8, generator=_gen(1), init_scale=3.0)
    lp = policy.log_probs().detach()
    assert lp.shape == (81,)
    assert abs(float(torch.logsumexp(lp, 0))) < 1e-12
    assert abs(float(policy.probs().detach().sum()) - 1.0) < 1e-12
    for i in (0, 5, 40, 80):
        tokens = tuple(space.sequences[i].tolist())
        assert float(lp[i]) == pytest.approx(_brute_log_prob(policy, tokens), abs=1e-12)
    index = torch.tensor([80, 3, 3])
    assert torch.allclose(policy.log_probs(index), lp[index])


def test_entropy_matches_chain_rule() -> None:
    space = SequenceSpace(4, 3)
    policy = TabularPolicy.random(space, scale=2.0, generator=_gen(2))
    # chain rule: H = Σ_t E_{s<t}[H(π(·|s<t))] with prefix marginals computed by brute force
    probs = policy.probs().detach().numpy()
    cond = policy.prefix_log_probs().detach().numpy()
    seqs = space.sequences.numpy()
    total = 0.0
    for t in range(3):
        weights: dict[int, float] = {}
        for i in range(space.size):
            pid = int(space.prefix_ids[i, t])
            weights[pid] = weights.get(pid, 0.0) + probs[i]
        for pid, w in weights.items():
            row = cond[pid]
            total += w * float(-(np.exp(row) * row).sum())
    assert float(policy.entropy()) == pytest.approx(total, abs=1e-12)
    assert float(exact_entropy(policy)) == pytest.approx(total, abs=1e-12)
    assert seqs.shape == (64, 3)
    uniform = TabularPolicy(space)
    assert float(uniform.entropy()) == pytest.approx(3 * math.log(4), abs=1e-12)


def test_entropy_with_zero_mass_has_finite_gradient() -> None:
    space = SequenceSpace(2, 2)
    logits = torch.zeros(3, 2, dtype=torch.float64)
    logits[0, 1] = -math.inf
    policy = TabularPolicy(space, logits)
    h = policy.entropy()
    h.backward()
    assert float(h) == pytest.approx(math.log(2), abs=1e-12)
    assert torch.isfinite(policy.logits.grad).all()


def test_sampling_frequencies_match_probabilities() -> None:
    space = SequenceSpace(2, 3)
    policy = TabularPolicy.random(space, generator=_gen(3))
    n = 200_000
    index = policy.sample(n, _gen(4))
    freq = torch.bincount(index, minlength=space.size).double() / n
    p = policy.probs().detach()
    # 5 standard errors per cell
    assert torch.all((freq - p).abs() <= 5 * torch.sqrt(p * (1 - p) / n))
    assert torch.equal(policy.sample(7, _gen(9)), policy.sample(7, _gen(9)))
    with pytest.raises(ValueError, match="`n`"):
        policy.sample(0)


def test_from_log_probs_reproduces_any_joint() -> None:
    space = SequenceSpace(3, 3)
    target = torch.log_softmax(torch.randn(27, generator=_gen(5), dtype=torch.float64), 0)
    target[4] = -math.inf  # a zero-mass sequence
    target = target - torch.logsumexp(target, 0)
    policy = TabularPolicy.from_log_probs(space, target)
    lp = policy.log_probs().detach()
    finite = torch.isfinite(target)
    assert torch.allclose(lp[finite], target[finite], atol=1e-12)
    assert lp[4] == -math.inf
    with pytest.raises(ValueError, match="normalised"):
        TabularPolicy.from_log_probs(space, target - 0.5)
    with pytest.raises(ValueError, match=r"shape \(27,\)"):
        TabularPolicy.from_log_probs(space, target[:5])


def test_gradients_flow_and_batch_helper() -> None:
    space = SequenceSpace(3, 2)
    policy = MLPPolicy(space, hidden=4, generator=_gen(6))
    index = policy.sample(5, _gen(7))
    token_lp, mask = batch_token_log_probs(policy, index)
    assert token_lp.shape == (5, 2) and mask.shape == (5, 2) and bool(mask.all())
    assert torch.allclose(token_lp.sum(-1), policy.log_probs(index))
    token_lp.sum().backward()
    assert policy.w_in.grad is not None and torch.isfinite(policy.w_in.grad).all()
    with pytest.raises(ValueError, match="`index`"):
        policy.log_probs(torch.tensor([9]))
    with pytest.raises(ValueError, match="`index`"):
        policy.log_probs(torch.tensor([0.5]))


def test_bad_constructor_arguments() -> None:
    space = SequenceSpace(2, 2)
    with pytest.raises(ValueError, match="`logits`"):
        TabularPolicy(space, torch.zeros(2, 2))
    with pytest.raises(ValueError, match="`space`"):
        TabularPolicy("space")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="`hidden`"):
        MLPPolicy(space, hidden=0)
    with pytest.raises(ValueError, match="`dtype`"):
        TabularPolicy(space, dtype=torch.int64)
    with pytest.raises(ValueError, match="`sequences`"):
        space.index_of(torch.tensor([[0, 2]]))

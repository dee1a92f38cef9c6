"""DPH-RL rehearsal loss: exact expectation and gradient under π_ref by enumeration."""

from __future__ import annotations

import math

import pytest
import torch

from divergent.functional import divergence
from divergent.objectives.rehearsal import (
    near_perfect_mask,
    rehearsal_estimate,
    rehearsal_loss,
)
from divergent.toy import SequenceSpace, TabularPolicy, batch_token_log_probs, exact_kl

K = 8
D64 = torch.float64


def _pair(seed=0):
    g = torch.Generator().manual_seed(seed)
    theta = torch.randn(K, generator=g, dtype=D64).requires_grad_(True)
    ref = torch.log_softmax(torch.randn(K, generator=g, dtype=D64), -1)
    return theta, ref


CASES = [
    ("kl", {}),
    ("js", {}),
    ("js", {"beta": 0.3}),
    ("reverse_kl", {}),
    ("alpha", {"alpha": 0.2}),
    ("hellinger", {}),
    ("pearson_chi2", {}),
    ("jeffreys", {}),
]


@pytest.mark.parametrize(("name", "params"), CASES)
def test_expectation_under_reference_is_the_divergence_with_its_gradient(name, params):
    theta, ref = _pair(1)
    logp = torch.log_softmax(theta, -1)
    per_sample = rehearsal_loss(logp, ref, divergence=name, reduction="none", **params)
    expected = (ref.exp() * per_sample).sum()  # E_{a ~ π_ref}
    want = divergence(name, ref[None], logp[None], inputs="log_probs", **params).sum()
    torch.testing.assert_close(expected, want, rtol=1e-9, atol=1e-12)
    (g,) = torch.autograd.grad(expected, theta, retain_graph=True)
    (g_want,) = torch.autograd.grad(want, theta)
    torch.testing.assert_close(g, g_want, rtol=1e-8, atol=1e-11)
    assert bool((per_sample.detach() >= -1e-12).all())  # each sample ≥ 0 (control variate)


def test_matches_dph_rl_generators():
    """DPH-F: u − log u − 1; DPH-JS: f(u) = u log u − (u+1) log((u+1)/2) (= 2·ours in mean)."""
    log_u = torch.linspace(-4, 4, 33, dtype=D64)
    u = log_u.exp()
    torch.testing.assert_close(rehearsal_estimate(log_u, "kl"), u - log_u - 1)
    dph_js = u * log_u - (u + 1) * torch.log((u + 1) / 2)
    torch.testing.assert_close(rehearsal_estimate(log_u, "js"), 0.5 * dph_js)
    # DPH-RL's α-divergence generator (α = 0.2): E_ref[f(u)] = the library's alpha D(π_ref‖π)
    # with the same α
    theta, ref = _pair(2)
    logp = torch.log_softmax(theta, -1).detach()
    uu = (logp - ref).exp()
    a = 0.2
    f_alpha = (uu ** (1 - a) - (1 - a) * uu - a) / (a * (a - 1))
    ours = rehearsal_loss(logp, ref, divergence="alpha", alpha=a, reduction="none")
    torch.testing.assert_close((ref.exp() * ours).sum(), (ref.exp() * f_alpha).sum())


def test_sequence_kl_is_the_sum_of_token_terms_on_reference_prefixes():
    """For kl, Σ_t token estimates over reference samples = sequence KL(π_ref‖π) (chain rule)."""
    space = SequenceSpace(vocab_size=3, length=3)
    g = torch.Generator().manual_seed(3)
    ref, pol = TabularPolicy.random(space, generator=g), TabularPolicy.random(space, generator=g)
    index = torch.arange(space.size)
    lp, mask = batch_token_log_probs(pol, index)
    lr, _ = batch_token_log_probs(ref, index)
    per_token = rehearsal_loss(lp, lr.detach(), mask, reduction="none")
    value = (ref.probs().detach() * per_token.sum(-1)).sum()
    torch.testing.assert_close(value, exact_kl(ref, pol).detach(), rtol=1e-10, atol=1e-12)


def test_mask_reduction_and_normalizer():
    theta, ref = _pair(4)
    logp = torch.log_softmax(theta, -1).detach()[None].expand(2, K)
    refs = ref[None].expand(2, K)
    mask = torch.zeros(2, K, dtype=torch.bool)
    mask[0, :3] = True
    per = rehearsal_loss(logp, refs, mask, divergence="js", reduction="none")
    assert torch.all(per[~mask] == 0)
    mean = rehearsal_loss(logp, refs, mask, divergence="js")
    torch.testing.assert_close(mean, per[mask].mean())
    torch.testing.assert_close(
        rehearsal_loss(logp, refs, mask, divergence="js", normalizer=10.0), per.sum() / 10
    )
    none_kept = rehearsal_loss(logp, refs, torch.zeros_like(mask), divergence="js")
    assert float(none_kept) == 0.0
    dirty = logp.clone()
    dirty[1, 0] = math.nan
    torch.testing.assert_close(rehearsal_loss(dirty, refs, mask, divergence="js"), mean)


def test_nan_and_float32():
    theta, ref = _pair(5)
    logp = torch.log_softmax(theta, -1).detach().float()
    out = rehearsal_loss(logp, ref.float(), divergence="js", reduction="none")
    assert out.dtype == torch.float32
    logp[2] = math.nan
    out = rehearsal_loss(logp, ref.float(), divergence="js", reduction="none")
    assert torch.isnan(out[2]) and torch.isfinite(out[[0, 1, 3]]).all()


def test_near_perfect_split():
    n = torch.tensor([8, 6, 5, 7, 0])
    assert near_perfect_mask(n, 8, threshold=0.75).tolist() == [True, True, False, True, False]
    extra = torch.tensor([True, False, True, True, True])
    assert near_perfect_mask(n, 8, threshold=7 / 8, extra_correct=extra).tolist() == [
        True,
        False,
        False,
        True,
        False,
    ]


def test_bad_input():
    theta, ref = _pair(6)
    logp = torch.log_softmax(theta, -1).detach()
    with pytest.raises(ValueError, match="f-divergence"):
        rehearsal_loss(logp, ref, divergence="renyi")
    with pytest.raises(ValueError, match="same shape"):
        rehearsal_loss(logp, ref[:3], divergence="js")
    with pytest.raises(ValueError, match="positive"):
        rehearsal_loss(logp + 1.0, ref, divergence="js")
    with pytest.raises(ValueError, match="ref_logp"):
        bad = ref.clone()
        bad[0] = -math.inf
        rehearsal_loss(logp, bad, divergence="js")
    with pytest.raises(ValueError, match="normalizer"):
        rehearsal_loss(logp, ref, divergence="js", reduction="sum", normalizer=3.0)
    with pytest.raises(ValueError, match="n_correct"):
        near_perfect_mask(torch.tensor([9]), 8)
    with pytest.raises(ValueError, match="threshold"):
        near_perfect_mask(torch.tensor([1]), 8, threshold=1.5)

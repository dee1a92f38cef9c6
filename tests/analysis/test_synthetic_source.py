"""PowerLawSource (divergent.analysis.synthetic_source) against brute force and Monte Carlo."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.special import rel_entr

from divergent.analysis.synthetic_source import PowerLawSource, krichevsky_trofimov_logits


def _probs(src: PowerLawSource) -> tuple[np.ndarray, np.ndarray]:
    """(μ, P) from the logits by plain numpy (independent of the core functions)."""
    t = src.logits.numpy()
    e = np.exp(t - t.max(1, keepdims=True))
    return src.context_probs.numpy(), e / e.sum(1, keepdims=True)


def test_exact_entropy_against_brute_force_enumeration() -> None:
    src = PowerLawSource(40, 9, spectrum_exponent=0.7, logit_rms=2.0, context_exponent=1.5, seed=3)
    mu, p = _probs(src)
    brute = -sum(mu[c] * sum(p[c, x] * math.log(p[c, x]) for x in range(9)) for c in range(40))
    assert src.entropy() == pytest.approx(brute, rel=1e-12)
    assert 0 < src.entropy() < math.log(9)


def test_exact_entropy_against_monte_carlo() -> None:
    src = PowerLawSource(64, 12, logit_rms=1.5, context_exponent=1.0, seed=1)
    ctx, sym = src.sample(200_000, np.random.default_rng(0))
    nll = -src.log_probs.numpy()[ctx, sym]
    se = nll.std(ddof=1) / math.sqrt(nll.size)
    assert abs(nll.mean() - src.entropy()) < 4 * se
    # heldout_nll of the true source is the same estimate
    mean, se2 = src.heldout_nll(src.logits, ctx, sym)
    assert mean == pytest.approx(nll.mean(), rel=1e-12) and se2 == pytest.approx(se, rel=1e-9)


def test_evaluate_against_scipy_and_the_identity() -> None:
    src = PowerLawSource(30, 7, context_exponent=0.8, seed=2)
    model = torch.randn(30, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    mu, p = _probs(src)
    q = torch.softmax(model, -1).numpy()
    ev = src.evaluate(model)
    assert ev["kl"] == pytest.approx(float(mu @ rel_entr(p, q).sum(1)), rel=1e-10)
    assert ev["cross_entropy"] == pytest.approx(
        float(-(mu[:, None] * p * np.log(q)).sum()), rel=1e-12
    )
    assert ev["cross_entropy"] == pytest.approx(ev["entropy"] + ev["kl"], abs=1e-12)
    assert src.evaluate(src.logits)["kl"] == pytest.approx(0.0, abs=1e-14)
    # softmax is shift invariant per context: the KL does not see a per-row constant
    shifted = src.logits + torch.arange(30, dtype=torch.float64).unsqueeze(1)
    assert src.evaluate(shifted)["kl"] == pytest.approx(0.0, abs=1e-12)
    uniform = torch.zeros(30, 7, dtype=torch.float64)
    assert src.evaluate(uniform)["cross_entropy"] == pytest.approx(math.log(7), rel=1e-12)
    assert src.evaluate(model.float())["kl"] == pytest.approx(ev["kl"], rel=1e-5)


@pytest.mark.parametrize("contexts,symbols,a,rms", [(50, 20, 1.0, 1.0), (10, 33, 0.5, 3.0)])
def test_spectrum_rms_and_centring(contexts: int, symbols: int, a: float, rms: float) -> None:
    src = PowerLawSource(contexts, symbols, spectrum_exponent=a, logit_rms=rms, seed=4)
    k = min(contexts, symbols - 1)
    assert src.rank == k and src.singular_values.shape == (k,)
    ratios = src.singular_values / src.singular_values[0]
    np.testing.assert_allclose(ratios, np.arange(1, k + 1) ** (-a), rtol=1e-12)
    sv = np.linalg.svd(src.logits.numpy(), compute_uv=False)
    np.testing.assert_allclose(sv[:k], src.singular_values, rtol=1e-10)
    assert np.all(sv[k:] < 1e-10 * sv[0])
    assert float(src.logits.pow(2).mean().sqrt()) == pytest.approx(rms, rel=1e-12)
    np.testing.assert_allclose(src.logits.sum(1).numpy(), 0.0, atol=1e-12)


def test_rank_truncation_puts_the_source_inside_a_low_rank_class() -> None:
    src = PowerLawSource(20, 15, rank=3, seed=0)
    assert np.linalg.matrix_rank(src.logits.numpy(), tol=1e-9) == 3
    u, s, vh = torch.linalg.svd(src.logits, full_matrices=False)
    rank3 = (u[:, :3] * s[:3]) @ vh[:3]
    assert src.evaluate(rank3)["kl"] == pytest.approx(0.0, abs=1e-14)
    rank2 = (u[:, :2] * s[:2]) @ vh[:2]
    assert src.evaluate(rank2)["kl"] > 1e-3


def test_zipf_context_probabilities() -> None:
    src = PowerLawSource(100, 4, context_exponent=2.0)
    mu = src.context_probs.numpy()
    assert mu.sum() == pytest.approx(1.0, abs=1e-14)
    np.testing.assert_allclose(mu[0] / mu, np.arange(1, 101) ** 2.0, rtol=1e-12)
    flat = PowerLawSource(100, 4).context_probs.numpy()
    np.testing.assert_allclose(flat, 0.01, rtol=1e-14)


def test_samples_follow_the_source() -> None:
    src = PowerLawSource(6, 5, logit_rms=1.5, context_exponent=1.0, seed=7)
    mu, p = _probs(src)
    rng = np.random.default_rng(1)
    ctx, sym = src.sample(120_000, rng)
    assert ctx.dtype == np.int64 and sym.dtype == np.int64
    np.testing.assert_allclose(np.bincount(ctx, minlength=6) / ctx.size, mu, atol=0.006)
    joint = np.zeros((6, 5))
    np.add.at(joint, (ctx, sym), 1.0)
    np.testing.assert_allclose(joint / ctx.size, mu[:, None] * p, atol=0.006)
    counts = src.sample_counts(120_000, rng)
    assert counts.shape == (6, 5) and counts.sum() == 120_000 and counts.dtype == np.int64
    np.testing.assert_allclose(counts / 120_000, mu[:, None] * p, atol=0.006)
    assert src.sample_counts(0, rng).sum() == 0
    assert src.sample(0, rng)[0].shape == (0,)


def test_deterministic_in_the_seed() -> None:
    a, b = PowerLawSource(12, 6, seed=5), PowerLawSource(12, 6, seed=5)
    assert torch.equal(a.logits, b.logits)
    assert not torch.allclose(a.logits, PowerLawSource(12, 6, seed=6).logits)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"contexts": 0, "symbols": 4}, "`contexts`"),
        ({"contexts": 4, "symbols": 1}, "`symbols`"),
        ({"contexts": 4, "symbols": 4, "spectrum_exponent": -1.0}, "`spectrum_exponent`"),
        ({"contexts": 4, "symbols": 4, "logit_rms": math.nan}, "`logit_rms`"),
        ({"contexts": 4, "symbols": 4, "context_exponent": -0.5}, "`context_exponent`"),
        ({"contexts": 4, "symbols": 4, "rank": 0}, "`rank`"),
        ({"contexts": 4, "symbols": 4, "rank": 4}, r"\[1, 3\]"),
    ],
)
def test_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        PowerLawSource(**kwargs)


def test_bad_model_and_sample_sizes() -> None:
    src = PowerLawSource(5, 3)
    with pytest.raises(ValueError, match=r"`model_logits`.*\(5, 3\)"):
        src.evaluate(torch.zeros(3, 5, dtype=torch.float64))
    with pytest.raises(ValueError, match="`model_logits`"):
        src.evaluate(np.zeros((5, 3)))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="`n`"):
        src.sample(-1, np.random.default_rng(0))
    with pytest.raises(ValueError, match="`n`"):
        src.sample_counts(-1, np.random.default_rng(0))


def test_krichevsky_trofimov_matches_hand_count() -> None:
    got = krichevsky_trofimov_logits(np.array([[0, 2], [1, 0]])).exp().numpy()
    np.testing.assert_allclose(got, [[0.5 / 3, 2.5 / 3], [1.5 / 2, 0.5 / 2]])
    with pytest.raises(ValueError, match="counts"):
        krichevsky_trofimov_logits(np.array([[-1, 2]]))

"""Rank-r softmax models on the exact population KL (divergent.train.low_rank_softmax)."""

from __future__ import annotations

import itertools

import pytest

from divergent.analysis.synthetic_source import PowerLawSource
from divergent.train.low_rank_softmax import svd_init, train_low_rank_softmax


def test_random_and_svd_starts_reach_the_same_optimum() -> None:
    src = PowerLawSource(24, 24, seed=1)
    for rank in (1, 3):
        from_svd = train_low_rank_softmax(src, rank, max_chunks=40)
        from_random = train_low_rank_softmax(src, rank, max_chunks=40, init="random", seed=2)
        assert from_svd.converged(1e-4) and from_random.converged(1e-4)
        kl_svd = src.evaluate(from_svd.logits)["kl"]
        assert src.evaluate(from_random.logits)["kl"] == pytest.approx(kl_svd, rel=1e-4)
        trace = from_svd.kl_trace
        assert all(b <= a + 1e-15 for a, b in itertools.pairwise(trace))
        assert trace[-1] == pytest.approx(kl_svd, rel=1e-10)
        assert from_svd.params == rank * (24 + 24) + 24
        assert from_svd.max_abs_grad < 1e-4


def test_svd_start_is_exact_for_a_source_inside_the_class() -> None:
    src = PowerLawSource(16, 16, rank=2, context_exponent=1.0, seed=0)
    e, w, b = svd_init(src, 2)
    assert e.shape == (16, 2) and w.shape == (2, 16) and b.shape == (16,)
    assert src.evaluate(e @ w + b)["kl"] == pytest.approx(0.0, abs=1e-13)
    assert src.evaluate(train_low_rank_softmax(src, 2, 4).logits)["kl"] == pytest.approx(
        0.0, abs=1e-13
    )
    e1, w1, b1 = svd_init(src, 1)
    assert src.evaluate(e1 @ w1 + b1)["kl"] > 1e-3  # one rank short: not representable


def test_bad_arguments() -> None:
    src = PowerLawSource(8, 8, seed=0)
    with pytest.raises(ValueError, match="init"):
        train_low_rank_softmax(src, 1, 2, init="zeros")
    with pytest.raises(ValueError, match="rank"):
        svd_init(src, 0)
    with pytest.raises(ValueError, match="max_chunks"):
        train_low_rank_softmax(src, 1, 0)

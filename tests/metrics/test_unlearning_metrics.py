"""Margin and KLoM (divergent.metrics.unlearning) against float64 / numpy / scipy references."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import entropy

from divergent.metrics.unlearning import KLOM_BINS, KLOM_CLIP, KLOM_FLOOR, binned_kl, klom, margin


def _margin_ref(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Float64 reference by the definition: numpy log-sum-exp over the other classes."""
    out = np.empty(logits.shape[:-1])
    for idx in np.ndindex(*logits.shape[:-1]):
        row = logits[idx].astype(np.float64)
        y = labels[idx[-1]] if labels.ndim == 1 else labels[idx]
        others = np.delete(row, y)
        top = others.max()
        out[idx] = row[y] - (top + math.log(np.exp(others - top).sum()))
    return out


def _klom_ref(p, q, n_bins=20, lo=-100.0, hi=100.0, eps=1e-5) -> float:
    """The benchmark's estimator written with numpy.histogram (last bin closed) + scipy."""
    p = np.clip(np.asarray(p, np.float64), lo, hi)
    q = np.clip(np.asarray(q, np.float64), lo, hi)
    start, end = min(p.min(), q.min()), max(p.max(), q.max())
    if start >= end:
        end = start + 1
    edges = np.linspace(start, end, n_bins + 1)
    pp = np.histogram(p, edges)[0] / p.size
    qq = np.histogram(q, edges)[0] / q.size
    qq = np.where(pp > 0, np.maximum(qq, eps), qq)
    return float(entropy(pp, qq))


# ---------------------------------------------------------------- margin


@pytest.mark.parametrize("scale", [1.0, 30.0, 1e4])
def test_margin_matches_float64_reference(scale: float) -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(5, 7, 10, generator=g) * scale
    labels = torch.randint(0, 10, (7,), generator=g)
    got = margin(logits, labels)
    ref = _margin_ref(logits.double().numpy(), labels.numpy())
    assert got.shape == (5, 7) and got.dtype == torch.float32
    np.testing.assert_allclose(got.double().numpy(), ref, rtol=1e-5, atol=1e-5 * scale)
    assert torch.isfinite(got).all()


def test_margin_float64_exact_and_per_row_labels() -> None:
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(6, 4, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 4, (6,), generator=g)
    got = margin(logits, labels)
    ref = _margin_ref(logits.numpy()[None], labels.numpy())[0]
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-13)
    # binary case: the margin is the logit difference
    two = torch.tensor([[1.5, -0.5]], dtype=torch.float64)
    assert float(margin(two, torch.tensor([0]))) == pytest.approx(2.0)


def test_margin_is_log_odds_of_the_label() -> None:
    """φ = log p_y − log(1 − p_y): an independent identity."""
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(20, 5, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 5, (20,), generator=g)
    p = torch.softmax(logits, -1).gather(-1, labels[:, None]).squeeze(-1)
    torch.testing.assert_close(margin(logits, labels), torch.log(p) - torch.log1p(-p))


def test_margin_gradcheck() -> None:
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(4, 5, generator=g, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([0, 4, 2, 2])
    assert torch.autograd.gradcheck(lambda z: margin(z, labels), (logits,))


def test_margin_nan_and_inf() -> None:
    logits = torch.tensor([[1.0, float("nan"), 0.0], [0.0, 1.0, 2.0], [3.0, -math.inf, -math.inf]])
    out = margin(logits, torch.tensor([0, 1, 0]))
    assert math.isnan(out[0]) and math.isfinite(out[1]) and out[2] == math.inf
    nan_label = margin(torch.tensor([[float("nan"), 0.0, 1.0]]), torch.tensor([0]))
    assert math.isnan(nan_label[0])


@pytest.mark.parametrize(
    ("logits", "labels", "match"),
    [
        (torch.zeros(3, 1), torch.zeros(3, dtype=torch.long), "at least 2 classes"),
        (torch.zeros(3, 4), torch.zeros(3), "`labels` must be an integer"),
        (torch.zeros(3, 4), torch.tensor([0, 4, 1]), r"`labels` must lie in \[0, 4\)"),
        (torch.zeros(3, 4), torch.tensor([0, -1, 1]), "`labels` must lie"),
        (torch.zeros(3, 4), torch.zeros(2, dtype=torch.long), "`labels` of shape"),
        (torch.tensor([[0.0, math.inf]]), torch.tensor([0]), r"`logits` contains \+inf"),
        (torch.full((1, 3), -math.inf), torch.tensor([0]), "`logits` has a row"),
        (torch.zeros(3, 4, dtype=torch.long), torch.zeros(3, dtype=torch.long), "`logits`"),
    ],
)
def test_margin_refuses_bad_arguments(logits, labels, match) -> None:
    with pytest.raises(ValueError, match=match):
        margin(logits, labels)


# ---------------------------------------------------------------- KLoM


def test_klom_equals_scipy_entropy_on_the_benchmark_binning() -> None:
    g = torch.Generator().manual_seed(4)
    unlearned = torch.randn(100, 30, generator=g, dtype=torch.float64) * 2 + 0.5
    oracle = torch.randn(80, 30, generator=g, dtype=torch.float64) * 1.5
    unlearned[:, 0] *= 300  # exercises the clip at ±100
    got = klom(unlearned, oracle)
    ref = [_klom_ref(unlearned[:, j].numpy(), oracle[:, j].numpy()) for j in range(30)]
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-12, atol=1e-14)
    assert got.dtype == torch.float64 and got.shape == (30,)
    assert (got > 0).all()


@pytest.mark.parametrize(("n_bins", "clip", "floor"), [(5, (-3.0, 3.0), 1e-3), (50, (-1, 1), 0.01)])
def test_binned_kl_keywords_match_reference(n_bins, clip, floor) -> None:
    g = torch.Generator().manual_seed(5)
    p = torch.randn(60, 12, generator=g)
    q = torch.randn(60, 12, generator=g) + 0.7
    got = binned_kl(p, q, n_bins=n_bins, clip=clip, floor=floor)
    ref = [
        _klom_ref(p[:, j].numpy(), q[:, j].numpy(), n_bins, clip[0], clip[1], floor)
        for j in range(12)
    ]
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-10, atol=1e-12)


def test_defaults_are_the_benchmarks() -> None:
    assert (KLOM_BINS, KLOM_CLIP, KLOM_FLOOR) == (20, (-100.0, 100.0), 1e-5)


def test_direction_unlearned_first() -> None:
    """KL(P‖Q) with P = unlearned: P's mass where Q has none is what the floor penalises."""
    wide = torch.linspace(-3, 3, 50)
    narrow = torch.linspace(-1, 1, 50)
    assert float(klom(wide, narrow)) > 3.0  # wide unlearned: floor hit
    assert float(klom(narrow, wide)) < 1.5  # narrow unlearned: covered by the oracle
    ref = _klom_ref(wide.numpy(), narrow.numpy())
    assert float(klom(wide, narrow)) == pytest.approx(ref, rel=1e-12)


def test_identical_samples_give_zero() -> None:
    g = torch.Generator().manual_seed(6)
    x = torch.randn(40, 9, generator=g)
    assert torch.equal(klom(x, x.clone()), torch.zeros(9, dtype=torch.float64))
    constant = torch.full((10, 2), 3.0)  # one value: the width-1 range of the benchmark
    assert torch.equal(klom(constant, constant), torch.zeros(2, dtype=torch.float64))
    perm = x[torch.randperm(40, generator=g)]
    assert torch.allclose(klom(perm, x), torch.zeros(9, dtype=torch.float64))


def test_point_shape_and_scalar() -> None:
    g = torch.Generator().manual_seed(7)
    p, q = torch.randn(30, 2, 3, generator=g), torch.randn(25, 2, 3, generator=g)
    out = klom(p, q)
    assert out.shape == (2, 3)
    torch.testing.assert_close(out.reshape(-1), klom(p.reshape(30, 6), q.reshape(25, 6)))
    assert klom(p[:, 0, 0], q[:, 0, 0]).shape == ()


def test_nan_in_gives_nan_for_that_point_only() -> None:
    g = torch.Generator().manual_seed(8)
    p, q = torch.randn(20, 4, generator=g), torch.randn(20, 4, generator=g)
    clean = klom(p, q)
    p[3, 1] = float("nan")
    q[0, 2] = float("nan")
    out = klom(p, q)
    assert math.isnan(out[1]) and math.isnan(out[2])
    torch.testing.assert_close(out[[0, 3]], clean[[0, 3]])


def test_infinite_margins_are_clipped() -> None:
    p = torch.tensor([math.inf, 1.0, 2.0, -math.inf])
    q = torch.tensor([100.0, 1.0, 2.0, -100.0])
    assert float(klom(p, q)) == pytest.approx(0.0, abs=1e-15)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_bins": 0}, "`n_bins`"),
        ({"n_bins": 2.5}, "`n_bins`"),
        ({"clip": (1.0, -1.0)}, "`clip`"),
        ({"clip": (0.0, math.inf)}, "`clip`"),
        ({"clip": 5.0}, "`clip`"),
        ({"floor": 0.0}, "`floor`"),
        ({"floor": 1.0}, "`floor`"),
        ({"floor": float("nan")}, "`floor`"),
    ],
)
def test_klom_refuses_bad_keywords(kwargs, match) -> None:
    x = torch.randn(10, 3)
    with pytest.raises(ValueError, match=match):
        klom(x, x, **kwargs)


def test_klom_refuses_bad_samples() -> None:
    x = torch.randn(10, 3)
    with pytest.raises(ValueError, match="`oracle_margins`"):
        klom(x, torch.randn(10, 4))
    with pytest.raises(ValueError, match="`unlearned_margins`"):
        klom(torch.zeros(0, 3), x)
    with pytest.raises(ValueError, match="`unlearned_margins`"):
        klom(torch.ones(10, 3, dtype=torch.long), x)
    with pytest.raises(ValueError, match="`q_samples`"):
        binned_kl(x, [1.0, 2.0])  # type: ignore[arg-type]


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.floats(-50, 50), min_size=1, max_size=30),
    st.lists(st.floats(-50, 50), min_size=1, max_size=30),
    st.integers(1, 25),
)
def test_klom_property_matches_reference_and_is_bounded(p, q, n_bins) -> None:
    got = float(
        binned_kl(
            torch.tensor(p, dtype=torch.float64),
            torch.tensor(q, dtype=torch.float64),
            n_bins=n_bins,
        )
    )
    assert got == pytest.approx(_klom_ref(p, q, n_bins), rel=1e-9, abs=1e-12)
    # bounded by log(1/ε̃): every bin of q̃ where p > 0 is at least ε / (1 + n_bins ε)
    assert 0.0 <= got <= math.log((1 + n_bins * 1e-5) / 1e-5) + 1e-9

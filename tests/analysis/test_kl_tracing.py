"""KL-tracing maps and flows (divergent.analysis.kl_tracing).

References: a float64 numpy KL per location (log-softmax by hand), a brute-force window mask,
a synthetic "predictor" that translates frame 1 exactly (so the true flow is known without
training), planted peaks, a quadratic peak for the sub-cell refinement, and gradcheck.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from divergent.analysis.kl_tracing import (
    kl_tracing_flow,
    kl_tracing_map,
    rgb_difference_map,
    rgb_tracing_flow,
    search_window,
    trace_peak,
)


def _log_softmax64(z: np.ndarray) -> np.ndarray:
    z = z.astype(np.float64)
    m = z.max(-1, keepdims=True)
    return z - m - np.log(np.exp(z - m).sum(-1, keepdims=True))


def _kl_map64(p_logits: torch.Tensor, q_logits: torch.Tensor) -> np.ndarray:
    lp, lq = _log_softmax64(p_logits.numpy()), _log_softmax64(q_logits.numpy())
    return (np.exp(lp) * (lp - lq)).sum(-1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_map_matches_float64_reference_per_location(dtype: torch.dtype) -> None:
    g = torch.Generator().manual_seed(0)
    clean = (2 * torch.randn(2, 5, 6, 7, generator=g)).to(dtype)
    pert = clean + torch.randn(2, 5, 6, 7, generator=g).to(dtype)
    got = kl_tracing_map(pert, clean)
    assert got.shape == (2, 5, 6) and got.dtype == dtype
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    np.testing.assert_allclose(got.double().numpy(), _kl_map64(pert, clean), rtol=tol, atol=tol)
    # the direction is KL(perturbed ‖ clean); reverse_kl swaps it
    np.testing.assert_allclose(
        kl_tracing_map(pert, clean, divergence="reverse_kl").double().numpy(),
        _kl_map64(clean, pert),
        rtol=tol,
        atol=tol,
    )
    assert not np.allclose(_kl_map64(pert, clean), _kl_map64(clean, pert))
    # temperature divides both sides
    np.testing.assert_allclose(
        kl_tracing_map(pert, clean, temperature=2.0).double().numpy(),
        _kl_map64(pert / 2, clean / 2),
        rtol=tol,
        atol=tol,
    )


def test_identical_rollouts_give_a_zero_map() -> None:
    z = 3 * torch.randn(3, 4, 5, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    assert torch.equal(kl_tracing_map(z, z.clone()), torch.zeros(3, 4, 5, dtype=torch.float64))
    m = torch.rand(4, 5, 3)
    assert torch.equal(rgb_difference_map(m, m.clone()), torch.zeros(4, 5))


def test_rgb_difference_map_is_the_channel_l2_norm() -> None:
    g = torch.Generator().manual_seed(2)
    a, b = torch.rand(2, 4, 5, 3, generator=g), torch.rand(2, 4, 5, 3, generator=g)
    want = np.sqrt(((a.double().numpy() - b.double().numpy()) ** 2).sum(-1))
    np.testing.assert_allclose(rgb_difference_map(a, b).numpy(), want, rtol=1e-6)


def test_map_gradcheck() -> None:
    g = torch.Generator().manual_seed(3)
    p = torch.randn(1, 2, 3, dtype=torch.float64, generator=g, requires_grad=True)
    q = torch.randn(1, 2, 3, dtype=torch.float64, generator=g, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: kl_tracing_map(a, b).sum(), (p, q), fast_mode=True)


@settings(max_examples=10, deadline=None)
@given(st.integers(0, 10_000), st.floats(0.1, 5.0))
def test_map_is_nonnegative_and_zero_only_where_unchanged(seed: int, scale: float) -> None:
    g = torch.Generator().manual_seed(seed)
    clean = scale * torch.randn(4, 4, 5, dtype=torch.float64, generator=g)
    pert = clean.clone()
    pert[1, 2] += torch.randn(5, dtype=torch.float64, generator=g)
    d = kl_tracing_map(pert, clean)
    assert bool((d >= 0).all())
    others = torch.ones(4, 4, dtype=torch.bool)
    others[1, 2] = False
    assert bool((d[others] == 0).all())


@pytest.mark.parametrize("peak", [(0, 0), (3, 5), (6, 2)])
def test_planted_peak_is_found(peak: tuple[int, int]) -> None:
    g = torch.Generator().manual_seed(4)
    m = torch.rand(7, 6, generator=g)
    m[peak] = 5.0
    query = (2, 3)
    flow = trace_peak(m, query)
    assert flow.tolist() == [peak[0] - query[0], peak[1] - query[1]]
    # the peak outside the candidates: the best candidate wins instead
    keep = torch.ones(7, 6, dtype=torch.bool)
    keep[peak] = False
    second = torch.where(keep, m, -1.0).argmax()
    flow = trace_peak(m, query, candidates=keep)
    assert flow.tolist() == [int(second) // 6 - query[0], int(second) % 6 - query[1]]


def test_ties_go_to_the_first_peak_in_row_major_order() -> None:
    m = torch.zeros(3, 3)
    m[1, 2] = m[2, 0] = 1.0
    assert trace_peak(m, [0, 0]).tolist() == [1.0, 2.0]


def _translate(frame: torch.Tensor, shift: tuple[int, int]) -> torch.Tensor:
    """Frame 2 of a pure translation by ``shift`` (bins entering the frame are 0)."""
    h, w = frame.shape[-2:]
    out = torch.zeros_like(frame)
    dr, dc = shift
    src = frame[..., max(0, -dr) : h - max(0, dr), max(0, -dc) : w - max(0, dc)]
    out[..., max(0, dr) : h - max(0, -dr), max(0, dc) : w - max(0, -dc)] = src
    return out


def _synthetic_predictor(frame: torch.Tensor, shift: tuple[int, int], k: int) -> torch.Tensor:
    """Logits of a confident (not one-hot) predictor of the translated frame."""
    one = torch.nn.functional.one_hot(_translate(frame, shift), k).double()
    return torch.log(0.9 * one + 0.1 / k)


@pytest.mark.parametrize("shift", [(0, 0), (2, -1), (-3, 3), (1, 0)])
def test_flow_of_a_pure_translation_is_exact(shift: tuple[int, int]) -> None:
    k, h, w = 6, 9, 10
    g = torch.Generator().manual_seed(5)
    frames = torch.randint(1, k, (5, h, w), generator=g)  # bins 1..k-1: never the fill bin 0
    rows = torch.randint(3, h - 3, (5,), generator=g)
    cols = torch.randint(3, w - 3, (5,), generator=g)
    query = torch.stack([rows, cols], 1)
    traced = frames.clone()
    idx = torch.arange(5)
    traced[idx, rows, cols] = (frames[idx, rows, cols] + k // 2 - 1) % (k - 1) + 1  # a new bin
    assert bool((traced[idx, rows, cols] != frames[idx, rows, cols]).all())
    clean, pert = _synthetic_predictor(frames, shift, k), _synthetic_predictor(traced, shift, k)
    want = torch.tensor(shift, dtype=torch.float64).expand(5, 2)
    assert torch.equal(kl_tracing_flow(pert, clean, query), want)
    assert torch.equal(kl_tracing_flow(pert, clean, query, divergence="js"), want)
    # the baseline on the same predictor's mean intensity
    levels = torch.arange(k, dtype=torch.float64)
    mean, mean_p = ((x.softmax(-1) * levels).sum(-1, keepdim=True) for x in (clean, pert))
    assert torch.equal(rgb_tracing_flow(mean_p, mean, query), want)
    # with the search window of the true radius, and with the parabolic refinement (the
    # map is a single spike, so no neighbour is curved: the integer peak stays)
    window = search_window(h, w, query, 3)
    assert torch.equal(kl_tracing_flow(pert, clean, query, candidates=window), want)
    assert torch.equal(kl_tracing_flow(pert, clean, query, refine="parabolic"), want)


def test_parabolic_refinement_is_exact_on_a_quadratic_peak() -> None:
    rows = torch.arange(8, dtype=torch.float64).view(8, 1)
    cols = torch.arange(9, dtype=torch.float64).view(1, 9)
    centre = (4.3, 2.8)
    m = 10 - (rows - centre[0]) ** 2 - 2 * (cols - centre[1]) ** 2
    flow = trace_peak(m, [1, 1], refine="parabolic")
    np.testing.assert_allclose(flow.numpy(), [centre[0] - 1, centre[1] - 1], atol=1e-12)
    assert trace_peak(m, [1, 1]).tolist() == [3.0, 2.0]
    # a peak on the frame's edge has one neighbour: that axis stays integer
    edge = 10 - (rows - 0.2) ** 2 - (cols - 3.4) ** 2
    flow = trace_peak(edge, [0, 0], refine="parabolic")
    np.testing.assert_allclose(flow.numpy(), [0.0, 3.4], atol=1e-12)


def test_search_window_matches_brute_force() -> None:
    query = torch.tensor([[0, 0], [3, 4], [5, 1]])
    got = search_window(6, 7, query, 2)
    for q, mask in zip(query.tolist(), got):
        want = torch.tensor(
            [[max(abs(r - q[0]), abs(c - q[1])) <= 2 for c in range(7)] for r in range(6)]
        )
        assert torch.equal(mask, want)


def test_nan_gives_nan_flow_only_at_a_candidate() -> None:
    clean = torch.zeros(2, 4, 4, 3)
    pert = clean.clone()
    pert[:, 2, 1, 0] = 3.0
    query = torch.tensor([[1, 1], [1, 1]])
    pert[0, 0, 3, 2] = math.nan
    flow = kl_tracing_flow(pert, clean, query)
    assert bool(torch.isnan(flow[0]).all())
    assert flow[1].tolist() == [1.0, 0.0]
    away = torch.ones(4, 4, dtype=torch.bool)
    away[0, 3] = False  # the NaN location is not a candidate: ignored
    assert kl_tracing_flow(pert, clean, query, candidates=away).tolist() == [[1.0, 0.0]] * 2
    assert bool(torch.isnan(kl_tracing_map(pert, clean)[0, 0, 3]))
    with pytest.raises(ValueError, match="NaN"):
        kl_tracing_map(pert, clean, check_nan=True)
    mean = torch.zeros(4, 4, 1)
    mean_p = mean.clone()
    mean_p[2, 2, 0] = 0.5
    mean_p[0, 0, 0] = math.nan
    assert bool(torch.isnan(rgb_tracing_flow(mean_p, mean, [1, 1])).all())
    assert bool(
        torch.isnan(trace_peak(torch.full((3, 3), math.nan), [0, 0], refine="parabolic")).all()
    )


def test_leading_shape_and_dtypes() -> None:
    clean = torch.zeros(2, 3, 4, 5, 6, dtype=torch.float16)
    pert = clean.clone()
    pert[1, 2, 0, 4, 1] = 4.0
    query = torch.zeros(2, 3, 2, dtype=torch.int32)
    flow = kl_tracing_flow(pert, clean, query)
    assert flow.shape == (2, 3, 2) and flow.dtype == torch.float32
    assert flow[1, 2].tolist() == [0.0, 4.0]


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: kl_tracing_map(torch.zeros(4, 5), torch.zeros(4, 5)), "perturbed_logits"),
        (lambda: kl_tracing_map(torch.zeros(2, 4, 5), torch.zeros(2, 3, 5)), "same shape"),
        (lambda: kl_tracing_map(torch.zeros(2, 4, 5), torch.zeros(2, 4, 4)), "class axes"),
        (
            lambda: kl_tracing_map(torch.zeros(2, 4, 5, dtype=torch.long), torch.zeros(2, 4, 5)),
            "floating",
        ),
        (
            lambda: kl_tracing_map(torch.zeros(2, 4, 5), torch.zeros(2, 4, 5), temperature=0),
            "temperature",
        ),
        (
            lambda: kl_tracing_map(torch.zeros(2, 4, 5), torch.zeros(2, 4, 5), divergence="klx"),
            "klx",
        ),
        (lambda: rgb_difference_map(torch.zeros(4, 3), torch.zeros(4, 3)), "perturbed_mean"),
        (lambda: rgb_difference_map(torch.zeros(2, 4, 1), torch.zeros(2, 4, 3)), "class axes"),
        (
            lambda: rgb_difference_map(torch.full((2, 4, 1), math.inf), torch.zeros(2, 4, 1)),
            "infinite",
        ),
        (lambda: trace_peak(torch.zeros(4), [0, 0]), "score_map"),
        (lambda: trace_peak(torch.zeros(3, 3), [0.0, 1.0]), "integer"),
        (lambda: trace_peak(torch.zeros(3, 3), [0, 1, 2]), r"shape \(2,\)"),
        (lambda: trace_peak(torch.zeros(2, 3, 3), [0, 1]), r"shape \(2, 2\)"),
        (lambda: trace_peak(torch.zeros(3, 3), [3, 0]), "inside the 3×3"),
        (lambda: trace_peak(torch.zeros(3, 3), [0, -1]), "inside the 3×3"),
        (lambda: trace_peak(torch.zeros(3, 3), [0, 0], candidates=torch.ones(3, 3)), "bool"),
        (
            lambda: trace_peak(
                torch.zeros(3, 3), [0, 0], candidates=torch.ones(2, 2, dtype=torch.bool)
            ),
            "broadcast",
        ),
        (
            lambda: trace_peak(
                torch.zeros(3, 3), [0, 0], candidates=torch.zeros(3, 3, dtype=torch.bool)
            ),
            "no location",
        ),
        (lambda: trace_peak(torch.zeros(3, 3), [0, 0], refine="gauss"), "refine"),
        (lambda: search_window(3, 3, [0, 0], -1), "radius"),
    ],
)
def test_bad_inputs_raise_naming_the_argument(call, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call()


def test_infinite_logit_is_refused() -> None:
    pert = torch.zeros(2, 2, 3)
    pert[0, 0, 0] = math.inf
    with pytest.raises(ValueError, match="inf"):
        kl_tracing_map(pert, torch.zeros(2, 2, 3))


@pytest.mark.parametrize("side", [0, 1])
def test_errors_of_the_library_name_this_functions_arguments(side: int) -> None:
    name = ("perturbed_logits", "clean_logits")[side]
    bad = torch.zeros(2, 2, 3)
    bad[1, 1, 2] = math.inf  # in a later position
    args = [torch.zeros(2, 2, 3), torch.zeros(2, 2, 3)]
    args[side] = bad
    with pytest.raises(ValueError, match=f"^`{name}` has a \\+inf entry"):
        kl_tracing_map(*args)
    nan = torch.zeros(2, 2, 3)
    nan[1, 0, 1] = math.nan
    args[side] = nan
    with pytest.raises(ValueError, match=f"^`{name}` contains NaN"):
        kl_tracing_map(*args, check_nan=True)
    probs = torch.full((1, 2, 3), 1 / 3)
    off = probs.clone()
    off[0, 1] = torch.tensor([0.5, 0.6, 0.0])
    pair = [probs, probs.clone()]
    pair[side] = off
    with pytest.raises(ValueError, match=f"`{name}`"):
        kl_tracing_map(*pair, inputs="probs")


def test_rgb_difference_map_gradient_is_finite_where_the_inputs_are_equal() -> None:
    clean = torch.zeros(1, 2, 3, dtype=torch.float64)
    pert = clean.clone()
    pert[0, 1] = torch.tensor([0.3, 0.4, 0.0], dtype=torch.float64)  # location 0 unchanged
    pert.requires_grad_(True)
    out = rgb_difference_map(pert, clean)
    assert out.tolist() == [[0.0, 0.5]]
    out.sum().backward()
    assert torch.isfinite(pert.grad).all()
    torch.testing.assert_close(pert.grad[0, 0], torch.zeros(3, dtype=torch.float64))
    torch.testing.assert_close(pert.grad[0, 1], torch.tensor([0.6, 0.8, 0.0], dtype=torch.float64))
    nan = clean.clone()
    nan[0, 1, 2] = math.nan
    got = rgb_difference_map(nan, clean)
    assert float(got[0, 0]) == 0.0 and math.isnan(float(got[0, 1]))

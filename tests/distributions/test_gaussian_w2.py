"""gaussian_w2: the Gaussian 2-Wasserstein closed form against scipy.linalg.sqrtm, exact cases,
metric properties and errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
import torch

from divergent.distributions.gaussian import gaussian_w2

F64 = torch.float64


def _spd(d: int, rng: np.random.Generator, rank: int | None = None) -> np.ndarray:
    a = rng.standard_normal((d, rank or d))
    return a @ a.T + (0.1 * np.eye(d) if rank is None else 0.0)


def _w2_scipy(m1: np.ndarray, s1: np.ndarray, m2: np.ndarray, s2: np.ndarray) -> float:
    """Independent reference: scipy's matrix square root (Schur method) and the same formula."""
    r2 = scipy.linalg.sqrtm(s2)
    cross = scipy.linalg.sqrtm(r2 @ s1 @ r2)
    w2sq = np.sum((m1 - m2) ** 2) + np.trace(s1 + s2 - 2 * np.real(cross))
    return math.sqrt(max(float(w2sq), 0.0))


@pytest.mark.parametrize("d", [1, 2, 3, 5])
def test_matches_scipy_sqrtm(d: int) -> None:
    rng = np.random.default_rng(d)
    for _ in range(3):
        m1, m2 = rng.standard_normal(d), rng.standard_normal(d)
        s1, s2 = _spd(d, rng), _spd(d, rng)
        got = gaussian_w2(*(torch.tensor(x, dtype=F64) for x in (m1, s1, m2, s2)))
        assert float(got) == pytest.approx(_w2_scipy(m1, s1, m2, s2), rel=1e-9, abs=1e-12)


def test_commuting_covariances_in_closed_form() -> None:
    # diagonal covariances: W2² = |Δμ|² + Σ (√λ₁ − √λ₂)², a singular one included
    w2 = gaussian_w2(
        torch.tensor([1.0, 0.0], dtype=F64),
        torch.diag(torch.tensor([4.0, 0.0], dtype=F64)),
        torch.tensor([0.0, 0.0], dtype=F64),
        torch.diag(torch.tensor([1.0, 9.0], dtype=F64)),
    )
    assert float(w2) == pytest.approx(math.sqrt(1.0 + 1.0 + 9.0), rel=1e-12)


def test_one_dimensional_is_the_quantile_distance() -> None:
    # W2(N(m1, s1²), N(m2, s2²))² = (m1 − m2)² + (s1 − s2)²
    w2 = gaussian_w2(
        torch.tensor([0.5], dtype=F64),
        torch.tensor([[0.25]], dtype=F64),
        torch.tensor([-1.0], dtype=F64),
        torch.tensor([[4.0]], dtype=F64),
    )
    assert float(w2) == pytest.approx(math.hypot(1.5, 1.5), rel=1e-12)


@pytest.mark.filterwarnings("ignore::scipy.linalg.LinAlgWarning")
def test_singular_against_scipy_and_symmetric() -> None:
    rng = np.random.default_rng(7)
    m1, m2 = rng.standard_normal(3), rng.standard_normal(3)
    s1, s2 = _spd(3, rng, rank=1), _spd(3, rng)
    args = [torch.tensor(x, dtype=F64) for x in (m1, s1, m2, s2)]
    forward = float(gaussian_w2(*args))
    backward = float(gaussian_w2(args[2], args[3], args[0], args[1]))
    assert forward == pytest.approx(backward, rel=1e-7)
    assert forward == pytest.approx(_w2_scipy(m1, s1, m2, s2), rel=1e-7)


def test_zero_on_equal_and_triangle_inequality() -> None:
    rng = np.random.default_rng(3)
    g = [
        (torch.tensor(rng.standard_normal(3), dtype=F64), torch.tensor(_spd(3, rng), dtype=F64))
        for _ in range(3)
    ]
    # W2² is 0 up to rounding (the square root magnifies it: W2 itself is ~1e-7)
    assert float(gaussian_w2(*g[0], *g[0])) ** 2 < 1e-12 * float(g[0][1].trace())
    ab, bc, ac = (float(gaussian_w2(*x, *y)) for x, y in ((g[0], g[1]), (g[1], g[2]), (g[0], g[2])))
    assert ac <= ab + bc + 1e-12


def test_batch_broadcasts_and_dtype() -> None:
    rng = np.random.default_rng(5)
    m1 = torch.tensor(rng.standard_normal((4, 2)), dtype=F64)
    s1 = torch.tensor(np.stack([_spd(2, rng) for _ in range(4)]), dtype=F64)
    m2, s2 = torch.zeros(2, dtype=F64), torch.eye(2, dtype=F64)
    out = gaussian_w2(m1, s1, m2, s2)
    assert out.shape == (4,) and out.dtype == F64
    for i in range(4):
        assert float(out[i]) == pytest.approx(float(gaussian_w2(m1[i], s1[i], m2, s2)), rel=1e-12)
    assert gaussian_w2(torch.zeros(2), torch.eye(2), torch.ones(2), torch.eye(2)).dtype == (
        torch.float32
    )


@pytest.mark.parametrize(
    "which,bad,match",
    [
        (0, torch.tensor([math.nan, 0.0]), "mean_p"),
        (1, torch.tensor([[1.0, 0.0], [0.0, math.nan]]), "cov_p"),
        (2, torch.tensor([0.0, math.inf]), "mean_q"),
        (3, torch.tensor([[1.0, 0.5], [0.0, 1.0]]), "cov_q.*symmetric"),
        (3, torch.tensor([[1.0, 0.0], [0.0, -1.0]]), "cov_q.*positive semi-definite"),
        (1, torch.eye(3), "cov_p"),
        (0, torch.tensor([0, 1]), "mean_p"),
    ],
)
def test_bad_input_names_the_argument(which: int, bad: torch.Tensor, match: str) -> None:
    args = [torch.zeros(2), torch.eye(2), torch.zeros(2), torch.eye(2)]
    args[which] = bad
    with pytest.raises(ValueError, match=match):
        gaussian_w2(*args)


def test_different_dimensions_are_refused() -> None:
    with pytest.raises(ValueError, match="`mean_p` and `mean_q` must have the same dimension"):
        gaussian_w2(torch.zeros(2), torch.eye(2), torch.zeros(3), torch.eye(3))

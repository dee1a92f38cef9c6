"""information_bounds: Gaussian KL against torch / closed_form, exact W1 against brute force and
scipy, the measured Lipschitz constant, the MDC, and bad input."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from scipy.stats import wasserstein_distance
from torch.distributions import MultivariateNormal, kl_divergence

from divergent.analysis.information_bounds import (
    MDC_Z,
    assignment_w1,
    class_gaussian_kl,
    class_w1,
    gaussian_kl,
    max_gradient_norm,
    paired_mdc,
)
from divergent.distributions.closed_form import closed_form


def _spd(rng: np.random.Generator, d: int) -> np.ndarray:
    a = rng.normal(size=(d, d))
    return a @ a.T + 0.3 * np.eye(d)


@pytest.mark.parametrize("d", [1, 3, 6])
def test_gaussian_kl_matches_torch_and_closed_form(d: int) -> None:
    rng = np.random.default_rng(d)
    mp, mq = rng.normal(size=d), rng.normal(size=d)
    sp, sq = _spd(rng, d), _spd(rng, d)
    p = MultivariateNormal(torch.tensor(mp), torch.tensor(sp))
    q = MultivariateNormal(torch.tensor(mq), torch.tensor(sq))
    ours = gaussian_kl(mp, sp, mq, sq)
    assert ours == pytest.approx(float(kl_divergence(p, q)), rel=1e-10)
    assert ours == pytest.approx(float(closed_form("kl", p, q).value), rel=1e-10)
    assert gaussian_kl(mp, sp, mp, sp) == pytest.approx(0.0, abs=1e-12)


def test_gaussian_kl_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="positive definite"):
        gaussian_kl(np.zeros(2), np.diag([1.0, -1.0]), np.zeros(2), np.eye(2))
    with pytest.raises(ValueError, match="shapes"):
        gaussian_kl(np.zeros(2), np.eye(2), np.zeros(3), np.eye(3))


def test_class_gaussian_kl_is_the_mean_of_per_class_fits() -> None:
    rng = np.random.default_rng(0)
    tp, tq = rng.normal(size=(60, 2)), rng.normal(size=(80, 2)) + 0.5
    yp, yq = np.repeat([0, 1], 30), np.repeat([0, 1], 40)
    expected = 0.0
    for c in (0, 1):
        a, b = tp[yp == c], tq[yq == c]
        pa = MultivariateNormal(torch.tensor(a.mean(0)), torch.tensor(np.cov(a.T)))
        pb = MultivariateNormal(torch.tensor(b.mean(0)), torch.tensor(np.cov(b.T)))
        expected += 0.5 * float(kl_divergence(pa, pb))
    assert class_gaussian_kl(tp, yp, tq, yq) == pytest.approx(expected, rel=1e-10)
    with pytest.raises(ValueError, match="NaN"):
        class_gaussian_kl(np.full((60, 2), np.nan), yp, tq, yq)
    with pytest.raises(ValueError, match="too few"):
        class_gaussian_kl(tp[:4], yp[:4], tq, yq)


def test_assignment_w1_against_brute_force_and_scipy() -> None:
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(6, 2)), rng.normal(size=(6, 2))
    cost = np.linalg.norm(x[:, None] - y[None], axis=-1)
    brute = min(cost[range(6), list(p)].mean() for p in itertools.permutations(range(6)))
    assert assignment_w1(x, y) == pytest.approx(brute, rel=1e-12)
    a, b = rng.normal(size=50), rng.exponential(size=50)
    assert assignment_w1(a, b) == pytest.approx(wasserstein_distance(a, b), rel=1e-10)
    with pytest.raises(ValueError, match="equal shapes"):
        assignment_w1(x, y[:5])


def test_w1_of_a_translation_is_its_length() -> None:
    rng = np.random.default_rng(2)
    x, v = rng.normal(size=(40, 3)), np.array([0.3, -0.4, 1.2])
    assert assignment_w1(x, x + v) == pytest.approx(np.linalg.norm(v), rel=1e-9)
    y = np.repeat([0, 1], 20)
    assert class_w1(x, y, x + v, y) == pytest.approx(np.linalg.norm(v), rel=1e-9)


def test_max_gradient_norm_of_a_known_loss() -> None:
    t = torch.tensor([[3.0, 4.0], [1.0, 0.0], [0.0, -2.0]], dtype=torch.float64)
    # ½‖t‖² has gradient t: the largest norm is 5
    assert max_gradient_norm(lambda u: 0.5 * (u**2).sum(-1), t) == pytest.approx(5.0)
    # the logistic loss in the logit: |σ(−t)| < 1
    z = torch.linspace(-5, 5, 11, dtype=torch.float64)[:, None]
    lip = max_gradient_norm(lambda u: torch.nn.functional.softplus(-u[:, 0]), z)
    assert lip == pytest.approx(
        float(torch.sigmoid(torch.tensor(5.0, dtype=torch.float64))), rel=1e-12
    )


def test_paired_mdc() -> None:
    d = [0.1, -0.2, 0.4, 0.0, 0.3]
    assert paired_mdc(d) == pytest.approx(MDC_Z * np.std(d, ddof=1) / math.sqrt(5))
    assert paired_mdc([1.0]) == math.inf

"""Empirical W1 and Lipschitz bounds (divergent.analysis.representation_gap).

References: the exact assignment problem (scipy's ``linear_sum_assignment``) for equal-size
clouds, POT's exact ``ot.emd2`` for unequal sizes, scipy's 1-D ``wasserstein_distance``, and
numpy's spectral norm.
"""

from __future__ import annotations

import numpy as np
import ot
import pytest
import torch
from scipy.optimize import linear_sum_assignment
from scipy.spatial.distance import cdist
from scipy.stats import wasserstein_distance

from divergent.analysis.representation_gap import empirical_w1, lipschitz_upper_bound


@pytest.mark.parametrize("d", [2, 16, 64])
def test_w1_matches_exact_assignment(d: int) -> None:
    rng = np.random.default_rng(d)
    x = rng.normal(size=(120, d))
    y = 1.3 * rng.normal(size=(120, d)) + 0.4
    cost = cdist(x, y)
    r, c = linear_sum_assignment(cost)
    exact = cost[r, c].mean()
    got = empirical_w1(x, y)
    assert got >= exact * (1 - 1e-6)  # the entropic plan is feasible: an upper bound
    assert got == pytest.approx(exact, rel=5e-3)


def test_w1_unequal_sizes_matches_pot_and_1d_scipy() -> None:
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(70, 3)), rng.normal(size=(50, 3)) + 0.5
    exact = ot.emd2(np.full(70, 1 / 70), np.full(50, 1 / 50), cdist(x, y))
    assert empirical_w1(torch.from_numpy(x), torch.from_numpy(y)) == pytest.approx(exact, rel=5e-3)
    u, v = rng.exponential(size=80), rng.normal(size=60)
    assert empirical_w1(u, v) == pytest.approx(wasserstein_distance(u, v), rel=5e-3)


def test_w1_identical_clouds_and_errors() -> None:
    x = np.random.default_rng(1).normal(size=(30, 2))
    assert empirical_w1(x, x) == pytest.approx(0.0, abs=5e-3 * float(cdist(x, x).mean()))
    assert empirical_w1(np.zeros((3, 2)), np.zeros((4, 2))) == 0.0
    with pytest.raises(ValueError, match="eps_rel"):
        empirical_w1(x, x, eps_rel=0.0)
    with pytest.raises(ValueError, match="dimension"):
        empirical_w1(x, x[:, :1])


def test_lipschitz_bound_is_the_product_of_spectral_norms_and_bounds_the_network() -> None:
    torch.manual_seed(0)
    layers = [torch.nn.Linear(8, 16), torch.nn.Linear(16, 12), torch.nn.Linear(12, 3)]
    weights = [m.weight for m in layers]
    ref = np.prod([np.linalg.norm(w.detach().numpy(), 2) for w in weights])
    bound = lipschitz_upper_bound(weights)
    assert bound == pytest.approx(float(ref), rel=1e-6)
    net = torch.nn.Sequential(layers[0], torch.nn.ReLU(), layers[1], torch.nn.ReLU(), layers[2])
    with torch.no_grad():
        a, b = torch.randn(2000, 8), torch.randn(2000, 8)
        ratio = (net(a) - net(b)).norm(dim=1) / (a - b).norm(dim=1)
    assert float(ratio.max()) <= bound
    assert lipschitz_upper_bound([]) == 1.0
    assert lipschitz_upper_bound([np.diag([3.0, -4.0])]) == pytest.approx(4.0)


def test_lipschitz_bound_errors() -> None:
    with pytest.raises(ValueError, match="matrix"):
        lipschitz_upper_bound([torch.ones(3)])
    with pytest.raises(ValueError, match="finite"):
        lipschitz_upper_bound([torch.full((2, 2), float("nan"))])

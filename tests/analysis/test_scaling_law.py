"""The saturating power law L(x) = L∞ + (x0/x)^α and its fit (divergent.analysis.scaling_law)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from divergent.analysis.scaling_law import ScalingLawFit, fit_scaling_law, scaling_law


def test_scaling_law_closed_form() -> None:
    x = np.array([1.0, 10.0, 1000.0])
    expected = 0.5 + (50.0 / x) ** 0.3
    np.testing.assert_allclose(scaling_law(x, 0.5, 50.0, 0.3), expected, rtol=1e-14)


@pytest.mark.parametrize(
    "l_inf,x0,alpha",
    [(1.2, 20.0, 0.7), (0.0, 3.0, 1.5), (2.5, 1e4, 0.2), (0.8, 0.5, 1.0)],
)
def test_fit_recovers_exact_parameters(l_inf: float, x0: float, alpha: float) -> None:
    x = np.geomspace(10.0, 1e5, 12)
    fit = fit_scaling_law(x, scaling_law(x, l_inf, x0, alpha))
    assert fit.l_inf == pytest.approx(l_inf, abs=1e-6)
    assert fit.alpha == pytest.approx(alpha, rel=1e-5)
    assert fit.x0 == pytest.approx(x0, rel=1e-4)
    assert fit.rmse < 1e-8
    np.testing.assert_allclose(fit.reducible(x), (x0 / x) ** alpha, rtol=1e-4)
    np.testing.assert_allclose(fit(x), scaling_law(x, l_inf, x0, alpha), rtol=1e-6, atol=1e-9)


def test_fit_with_small_noise_is_close() -> None:
    rng = np.random.default_rng(0)
    x = np.geomspace(100.0, 1e6, 15)
    y = scaling_law(x, 1.0, 300.0, 0.5) * (1 + 1e-4 * rng.standard_normal(x.size))
    fit = fit_scaling_law(x, y)
    assert fit.l_inf == pytest.approx(1.0, abs=0.01)
    assert fit.alpha == pytest.approx(0.5, abs=0.05)


def test_fit_result_is_a_dataclass() -> None:
    x = [1.0, 2.0, 4.0, 8.0, 16.0]
    fit = fit_scaling_law(x, scaling_law(x, 0.3, 2.0, 1.0))
    assert isinstance(fit, ScalingLawFit)
    assert math.isfinite(fit.rmse)


@pytest.mark.parametrize(
    "x,loss,match",
    [
        ([1.0, 2.0, 3.0], [3.0, 2.0, 1.0], "at least 4"),
        ([1.0, 1.0, 2.0, 2.0], [3.0, 2.0, 1.0, 1.0], "at least 4"),
        ([0.0, 1.0, 2.0, 3.0], [1.0, 1.0, 1.0, 1.0], "`x`"),
        ([1.0, 2.0, 3.0, 4.0], [1.0, math.nan, 1.0, 1.0], "`loss`"),
        ([1.0, 2.0, 3.0, 4.0], [1.0, 1.0], "same length"),
    ],
)
def test_fit_bad_inputs(x: list, loss: list, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        fit_scaling_law(x, loss)


def test_bad_parameters() -> None:
    with pytest.raises(ValueError, match="`alpha`"):
        scaling_law([1.0], 0.0, 1.0, 0.0)
    with pytest.raises(ValueError, match="`x0`"):
        scaling_law([1.0], 0.0, -1.0, 1.0)
    with pytest.raises(ValueError, match="`x`"):
        scaling_law([-1.0], 0.0, 1.0, 1.0)
    with pytest.raises(ValueError, match="`alpha_starts`"):
        fit_scaling_law([1.0, 2.0, 3.0, 4.0], [4.0, 3.0, 2.0, 1.0], alpha_starts=())

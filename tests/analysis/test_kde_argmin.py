"""argmin_log_parabola (divergent.analysis.kde_regimes): the vertex of a parabola in log h."""

from __future__ import annotations

import numpy as np
import pytest

from divergent.analysis.kde_regimes import argmin_log_parabola


def test_exact_for_a_parabola_in_log_h() -> None:
    h = np.exp(np.linspace(-1.0, 1.0, 11))
    assert argmin_log_parabola(h, (np.log(h) - 0.33) ** 2) == pytest.approx(np.exp(0.33))


def test_grid_edge_and_bad_input() -> None:
    h = np.exp(np.linspace(-1.0, 1.0, 5))
    assert argmin_log_parabola(h, np.log(h)) == pytest.approx(h[0])  # decreasing: edge
    with pytest.raises(ValueError, match="grid"):
        argmin_log_parabola(h[:2], [1.0, 2.0])
    with pytest.raises(ValueError, match="finite"):
        argmin_log_parabola(h, [1.0, np.nan, 0.0, 1.0, 2.0])

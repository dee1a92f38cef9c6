"""nashmp reproduction: the verdict on both sides of each threshold, and a quick run."""

from __future__ import annotations

from pathlib import Path

import pytest
from _repro_checks import run_quick

from divergent.papers import nashmp
from divergent.repro import Verdict


def _metrics(r2: float, orders: float, faster: float) -> dict:
    return {"min_r2": r2, "min_orders": orders, "fraction_mp_below_md": faster}


@pytest.mark.parametrize(
    ("r2", "orders", "faster", "expected"),
    [
        (0.999, 12.0, 1.0, "held"),
        (0.981, 6.1, 0.81, "held"),
        (0.979, 12.0, 1.0, "inconclusive"),  # R² between 0.9 and 0.98
        (0.91, 12.0, 1.0, "inconclusive"),
        (0.89, 12.0, 1.0, "not held"),  # R² below 0.9
        (0.999, 5.9, 1.0, "inconclusive"),  # orders between 3 and 6
        (0.999, 3.1, 1.0, "inconclusive"),
        (0.999, 2.9, 1.0, "not held"),  # fewer than 3 orders
        (0.999, 12.0, 0.79, "inconclusive"),  # faster on 50-80 % of games
        (0.999, 12.0, 0.51, "inconclusive"),
        (0.999, 12.0, 0.49, "not held"),  # faster on fewer than half
        (float("nan"), 12.0, 1.0, "inconclusive"),
    ],
)
def test_verdict(r2: float, orders: float, faster: float, expected: str) -> None:
    assert nashmp.verdict(_metrics(r2, orders, faster)) == Verdict(expected)


def test_quick_run_is_consistent(tmp_path: Path) -> None:
    result = run_quick("nashmp", tmp_path)
    m = result.metrics
    assert len(m["games"]) == 2
    for game in m["games"]:
        assert game["kl0"] > 0.01
        assert game["orders_mp"] >= game["orders_md"]
        assert 0 < game["rate_per_query"] < 1
    assert m["min_r2"] == pytest.approx(min(g["r2"] for g in m["games"]))

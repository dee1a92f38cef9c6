"""kde: the verdict on literal metrics (both sides of every threshold) and the quick run."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from _repro_checks import run_quick

from divergent.papers import kde
from divergent.repro import ReproductionResult, Verdict


def _row(**kw: object) -> dict:
    row = {
        "h_kl": 0.6,
        "h_kl_at_grid_edge": False,
        "derived_h_clt": 0.8,
        "participation_at_h_kl": 0.30,
        "participation_at_h_clt": 0.10,
    }
    row.update(kw)
    return row


def test_verdict_holds_on_the_claim() -> None:
    m = {"rows": [_row(), _row(h_kl=0.5)]}
    assert kde.verdict(m) is Verdict.HELD
    assert kde.verdict(json.loads(json.dumps(m))) is Verdict.HELD


@pytest.mark.parametrize(
    "row,expected",
    [
        # h_KL below the derived h_CLT (0.8)
        (_row(h_kl=0.79), Verdict.HELD),
        (_row(h_kl=0.8), Verdict.NOT_HELD),
        (_row(h_kl=0.81), Verdict.NOT_HELD),
        # Y₂(h_KL) ≥ 2 Y₂(h_CLT) (0.2 here)
        (_row(participation_at_h_kl=0.201), Verdict.HELD),
        (_row(participation_at_h_kl=0.199), Verdict.NOT_HELD),
        # the old criterion (Y₂ ≥ 0.05) would pass this one: few points at h_CLT too
        (_row(participation_at_h_kl=0.30, participation_at_h_clt=0.20), Verdict.NOT_HELD),
        # h_KL at the edge of the grid: not resolved
        (_row(h_kl_at_grid_edge=True), Verdict.INCONCLUSIVE),
        (_row(h_kl_at_grid_edge=True, h_kl=5.0), Verdict.INCONCLUSIVE),
    ],
)
def test_verdict_on_each_side_of_each_threshold(row: dict, expected: Verdict) -> None:
    assert kde.verdict({"rows": [_row(), row]}) is expected


def test_a_failing_configuration_beats_an_unresolved_one() -> None:
    rows = [_row(h_kl_at_grid_edge=True), _row(h_kl=0.9)]
    assert kde.verdict({"rows": rows}) is Verdict.NOT_HELD
    assert kde.verdict({"rows": []}) is Verdict.INCONCLUSIVE


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> ReproductionResult:
    return run_quick("kde", tmp_path_factory.mktemp("kde"))


def test_quick_run(quick: ReproductionResult) -> None:
    m = quick.metrics
    grid = np.array(m["grid"])
    for row in m["rows"]:
        assert row["n"] == math.ceil(math.exp(row["alpha"] * row["d"]))
        curve = np.array(m["curves"][f"d{row['d']}_a{row['alpha']}"]["kl_per_dim"])
        i = int(curve.argmin())  # the minimiser sits between the grid neighbours
        assert grid[max(i - 1, 0)] <= row["h_kl"] <= grid[min(i + 1, len(grid) - 1)]
        assert curve.min() > 0  # a KL
        for key in ("participation_at_h_kl", "participation_at_h_clt"):
            assert 1.0 / row["n"] - 1e-12 <= row[key] <= 1.0
        # Y₂ decreases with the bandwidth: a smaller h_KL has the larger Y₂
        if row["h_kl"] < row["derived_h_clt"]:
            assert row["participation_at_h_kl"] > row["participation_at_h_clt"]
    assert quick.indicative and "restated" in quick.summary

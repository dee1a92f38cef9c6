"""csib: the verdict on literal metrics (both sides of every threshold), the β convention and
the quick run."""

from __future__ import annotations

import json
import math

import pytest
from _repro_checks import run_quick

from divergent.papers import csib
from divergent.repro import ReproductionResult, Verdict

MSE_RMSE = [50.0, 52.0, 54.0, 56.0, 58.0]  # mean 54: the non-inferiority margin is 1.35
MSE_IXT = [0.05] * 5  # the compression that counts: 0.005
SPREAD = [-1.0, -0.5, 0.0, 0.5, 1.0]
# with 5 splits the 95 % t-interval half-width of mean + k × SPREAD is 0.98162 k


def _metrics(rmse_shift: float, rmse_k: float, ixt_shift: float, ixt_k: float) -> dict:
    return {
        "per_split": {
            "mse": [{"rmse": r, "i_xt": i} for r, i in zip(MSE_RMSE, MSE_IXT)],
            "csib": [
                {"rmse": r + rmse_shift + rmse_k * s, "i_xt": i + ixt_shift + ixt_k * s}
                for r, i, s in zip(MSE_RMSE, MSE_IXT, SPREAD)
            ],
        }
    }


def test_interval_half_width() -> None:
    mean, _low, high = csib.t_interval([0.3 + s for s in SPREAD])
    assert mean == pytest.approx(0.3)
    assert high - mean == pytest.approx(0.98162, abs=1e-5)


def test_verdict_holds_on_the_claim() -> None:
    m = _metrics(0.3, 1.0, -0.002, 0.001)
    assert csib.verdict(m) is Verdict.HELD
    assert csib.verdict(json.loads(json.dumps(m))) is Verdict.HELD


@pytest.mark.parametrize(
    "args,expected",
    [
        # RMSE: upper end ≤ margin 1.35 → no worse; lower end > margin → worse; else open
        ((0.36, 1.0, -0.002, 0.001), Verdict.HELD),  # high 1.34162
        ((0.38, 1.0, -0.002, 0.001), Verdict.INCONCLUSIVE),  # high 1.36162
        ((2.32, 1.0, -0.002, 0.001), Verdict.INCONCLUSIVE),  # low 1.33838
        ((2.34, 1.0, -0.002, 0.001), Verdict.NOT_HELD),  # low 1.35838
        # compression: upper end < 0 → held
        ((0.3, 1.0, -0.00099, 0.001), Verdict.HELD),  # high −0.0000084
        ((0.3, 1.0, -0.00097, 0.001), Verdict.NOT_HELD),  # high +0.0000116, low > −0.005
        # ... lower end above −0.005 (less than a tenth of MSE's I_CS) → not held; else open
        ((0.3, 1.0, 0.0, 0.0050), Verdict.NOT_HELD),  # low −0.0049081
        ((0.3, 1.0, 0.0, 0.0052), Verdict.INCONCLUSIVE),  # low −0.0051044
    ],
)
def test_verdict_on_each_side_of_each_threshold(args: tuple, expected: Verdict) -> None:
    assert csib.verdict(_metrics(*args)) is expected


def test_one_split_is_inconclusive() -> None:
    m = {
        "per_split": {"mse": [{"rmse": 50.0, "i_xt": 0.05}], "csib": [{"rmse": 40.0, "i_xt": 0.01}]}
    }
    assert csib.verdict(m) is Verdict.INCONCLUSIVE


def test_beta_is_the_official_default_in_the_library_convention() -> None:
    assert csib.BETA == pytest.approx(0.01 * math.log(2.0))


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> ReproductionResult:
    return run_quick("csib", tmp_path_factory.mktemp("csib"))


def test_quick_run(quick: ReproductionResult) -> None:
    m = quick.metrics
    per = m["per_split"]
    assert len(per["mse"]) == len(per["csib"]) == len(per["vib"]) == m["n_splits"] >= 2
    for rows in per.values():
        for r in rows:
            assert 35.0 < r["rmse"] < 90.0  # diabetes RMSE is ~50-60 for sensible regressors
            assert r["i_xt"] >= -1e-9 and r["i_yt"] >= -1e-9  # CS-QMI V-statistics are ≥ 0
            assert len(r["fgsm_rmse"]) == len(csib.EPSILONS)
            assert r["fgsm_rmse"][0] == pytest.approx(r["rmse"], rel=1e-5)  # ε = 0: clean
            assert r["fgsm_rmse"][-1] > r["fgsm_rmse"][0]  # the attack hurts
    assert {r["beta"] for r in m["information_plane"]} >= {0.0, csib.BETA}
    assert quick.indicative

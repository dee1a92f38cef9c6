"""infobounds: every part of the verdict on literal metrics (both sides of every threshold) and
the quick run.

The literal metrics have 4 runs; a layer marked noisy gets +ε, −ε, +ε, −ε over the runs, so a
paired difference against a noiseless layer has MDC = 2·ε·√(4/3)/√4 = ε·1.1547 (0.11547 for
ε = 0.1) and a difference between two noiseless layers has MDC 0.
"""

from __future__ import annotations

import json
import math

import pytest
from _repro_checks import run_quick

from divergent.papers import infobounds
from divergent.repro import ReproductionResult, Verdict

EPS = 0.1
MDC = EPS * 2 * math.sqrt(4 / 3) / 2  # 0.11547
PATTERN = [1.0, -1.0, 1.0, -1.0]


def _setting(
    noise: float,
    kl: list[float],
    kl_noisy: tuple[int, ...] = (1,),
    term: list[float] | None = None,
    term_noisy: tuple[int, ...] = (),
    lipschitz: float = 1.0,
    gap: float = 0.5,
    sigma: float = 1.0,
    kl_offset: float = 0.5,
) -> dict:
    term = term if term is not None else [3.0, 2.0, 1.0, 1.5, 2.5]
    runs = []
    for r, p in enumerate(PATTERN):
        layers = []
        for k in range(len(kl)):
            d = kl[k] + (EPS * p if k in kl_noisy else 0.0)
            w = term[k] + (EPS * p if k in term_noisy else 0.0)
            layers.append(
                {
                    "kl": kl_offset + d,
                    "kl_null": kl_offset,
                    "w1": w / lipschitz,
                    "w1_null": 0.0,
                    "lipschitz": lipschitz,
                }
            )
        runs.append({"seed": r, "gap": gap + EPS * p, "sigma": sigma, "layers": layers})
    return {"noise_std": noise, "runs": runs}


SHRINK_LO = [0.0, 0.5, 0.45, 0.42, 0.4]  # ρ = 0.8
SHRINK_HI = [0.0, 0.5, 0.3, 0.2, 0.1]  # ρ = 0.2


def _metrics(**high: object) -> dict:
    lo = _setting(0.1, SHRINK_LO)
    hi = _setting(0.5, high.pop("kl", SHRINK_HI), **high)  # type: ignore[arg-type]
    return {"settings": [lo, hi]}


def test_all_parts_held() -> None:
    m = _metrics()
    c = infobounds.checks(m)
    for s in c["settings"]:
        assert s["dpi"] is Verdict.HELD and s["funnel"] is Verdict.HELD
        assert s["w1_term_argmin_layer"] == 2 and s["w1_term_argmin_interior"]
        assert s["sanity"]["kl"]["verdict"] is Verdict.HELD  # bound σ√(2·0.5) = 1 vs gap 0.5
        assert s["sanity"]["w1"]["verdict"] is Verdict.HELD  # bound 1.0 vs gap 0.5
        assert s["kl_mdc"][1] == pytest.approx(MDC)
    assert c["sdpi"]["ratio_low_noise"] == pytest.approx(0.8)
    assert c["sdpi"]["ratio_high_noise"] == pytest.approx(0.2)
    assert c["sdpi"]["verdict"] is Verdict.HELD
    assert infobounds.verdict(m) is Verdict.HELD
    assert infobounds.verdict(json.loads(json.dumps(m))) is Verdict.HELD


@pytest.mark.parametrize(
    "kl,expected",
    [
        # an increase from the (noisy) first layer: significant above MDC = 0.11547
        ([0.0, 0.5, 0.62, 0.3, 0.1], Verdict.NOT_HELD),
        ([0.0, 0.5, 0.61, 0.3, 0.1], Verdict.HELD),
        # an increase between two noiseless layers (MDC 0)
        ([0.0, 0.5, 0.3, 0.31, 0.1], Verdict.NOT_HELD),
        # power: the first noisy layer must exceed its MDC
        ([0.0, 0.11, 0.1, 0.05, 0.0], Verdict.INCONCLUSIVE),
        ([0.0, 0.12, 0.1, 0.05, 0.0], Verdict.HELD),
        # a measured increase is decisive even without power at the first layer
        ([0.0, 0.11, 0.1, 0.2, 0.0], Verdict.NOT_HELD),
        # the input layer (k = 0) is not judged
        ([5.0, 0.5, 0.3, 0.2, 0.1], Verdict.HELD),
    ],
)
def test_data_processing_part(kl: list[float], expected: Verdict) -> None:
    m = _metrics(kl=kl)
    assert infobounds.checks(m)["settings"][1]["dpi"] is expected
    if expected is not Verdict.HELD:
        assert infobounds.verdict(m) is not Verdict.HELD


@pytest.mark.parametrize(
    "kl,expected",
    [
        ([0.0, 0.5, 0.3, 0.2, 0.1], Verdict.HELD),  # ρ 0.2 < 0.8
        ([0.0, 0.5, 0.6, 0.8, 1.0], Verdict.NOT_HELD),  # ρ 2.0 > 0.8
        ([0.0, 0.5, 0.45, 0.42, 0.4], Verdict.INCONCLUSIVE),  # ρ equal: interval straddles 0
        ([0.0, 0.1, 0.05, 0.02, 0.01], Verdict.INCONCLUSIVE),  # first layer below its MDC
    ],
)
def test_sdpi_part(kl: list[float], expected: Verdict) -> None:
    assert infobounds.checks(_metrics(kl=kl))["sdpi"]["verdict"] is expected


@pytest.mark.parametrize(
    "term,noisy,expected",
    [
        # interior minimum, below the last layer by 0.12 > MDC: held; by 0.11: inconclusive
        ([3.0, 2.0, 1.0, 1.5, 1.12], (4,), Verdict.HELD),
        ([3.0, 2.0, 1.0, 1.5, 1.11], (4,), Verdict.INCONCLUSIVE),
        ([1.12, 2.0, 1.0, 1.5, 3.0], (0,), Verdict.HELD),
        ([1.11, 2.0, 1.0, 1.5, 3.0], (0,), Verdict.INCONCLUSIVE),
        # minimum at the logit layer, below every interior layer by more than the MDC
        ([3.0, 2.0, 1.5, 1.12, 1.0], (4,), Verdict.NOT_HELD),
        ([3.0, 2.0, 1.5, 1.11, 1.0], (4,), Verdict.INCONCLUSIVE),
        # minimum at the input layer
        ([1.0, 1.12, 1.5, 2.0, 3.0], (0,), Verdict.NOT_HELD),
        ([1.0, 1.11, 1.5, 2.0, 3.0], (0,), Verdict.INCONCLUSIVE),
    ],
)
def test_funnel_part(term: list[float], noisy: tuple[int, ...], expected: Verdict) -> None:
    m = _metrics(term=term, term_noisy=noisy, lipschitz=4.0)
    s = infobounds.checks(m)["settings"][1]
    assert s["funnel"] is expected
    assert s["w1_term_mean"] == pytest.approx(term)


@pytest.mark.parametrize(
    "gap,expected",
    [
        # KL bound σ·√(2·0.5) = 1.0 and W1 bound 1.0 at their tightest layer; MDC 0.11547
        (0.88, Verdict.HELD),
        (0.89, Verdict.INCONCLUSIVE),
        (1.11, Verdict.INCONCLUSIVE),
        (1.12, Verdict.NOT_HELD),
    ],
)
def test_sanity_part(gap: float, expected: Verdict) -> None:
    s = infobounds.checks(_metrics(gap=gap))["settings"][1]["sanity"]
    assert s["kl"]["bound_mean"] == pytest.approx(1.0)
    assert s["w1"]["bound_mean"] == pytest.approx(1.0) and s["w1"]["layer"] == 2
    assert s["kl"]["verdict"] is expected and s["w1"]["verdict"] is expected


def test_sanity_uses_sigma() -> None:
    s = infobounds.checks(_metrics(gap=1.5, sigma=2.0))["settings"][1]["sanity"]
    assert s["kl"]["bound_mean"] == pytest.approx(2.0) and s["kl"]["verdict"] is Verdict.HELD


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> ReproductionResult:
    return run_quick("infobounds", tmp_path_factory.mktemp("infobounds"))


def test_quick_run(quick: ReproductionResult) -> None:
    m = quick.metrics
    assert "restated" in quick.summary and "issue 8" in quick.summary
    n_layers = len(infobounds.WIDTHS)
    assert [s["noise_std"] for s in m["settings"]] == list(infobounds.NOISE_LEVELS)
    for setting in m["settings"]:
        assert len(setting["runs"]) == m["runs_per_noise_level"]
        for run in setting["runs"]:
            assert run["test_loss"] - run["train_loss"] == pytest.approx(run["gap"])
            assert run["sigma"] > 0 and len(run["layers"]) == n_layers
            for row in run["layers"]:
                assert row["kl"] >= 0 and row["kl_null"] >= 0 and row["w1"] > 0
            # the loss's slope in the logit is a sigmoid: at most 1
            assert 0 < run["layers"][-1]["lipschitz"] <= 1
    assert m["checks"]["settings"][0]["kl_minus_null"] == pytest.approx(
        infobounds.checks(m)["settings"][0]["kl_minus_null"]
    )

"""scaling: the verdict on literal metrics (both sides of every threshold), the quick run and
the experiment's pieces (nested data sweep)."""

from __future__ import annotations

import copy
import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest
from _repro_checks import run_quick

from divergent.analysis.synthetic_source import PowerLawSource, krichevsky_trofimov_logits
from divergent.papers import scaling
from divergent.repro import ReproContext, ReproductionResult, Verdict

SIZES = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0]
KL = [0.5 / x for x in SIZES]  # smallest KL 0.015625: the L∞ limit is 0.25 × that = 0.00390625
H = 2.0


def _sweep(fitted: list[float] | None = None, l_inf: float = H, kl: list[float] = KL) -> dict:
    return {
        "sizes": SIZES,
        "kl": kl,
        "fitted_reducible": list(kl) if fitted is None else fitted,
        "entropy": H,
        "fit": {"l_inf": l_inf},
        "last_chunk_rel_decrease": [1e-6] * len(SIZES),
    }


def _metrics(**sweeps: dict) -> dict:
    m = {
        "identity_max_abs_error": 1e-15,
        "heldout_max_abs_z": 1.0,
        "model_size": _sweep(),
        "data_size": _sweep(),
    }
    m.update(sweeps)
    return m


def _drifted(total_log_drift: float) -> list[float]:
    """fitted = KL × r(x), log r linear in log x, changing by ``total_log_drift`` over the sweep,
    centred (so its median error stays small)."""
    lx = np.log(SIZES)
    t = (lx - lx[0]) / (lx[-1] - lx[0]) - 0.5
    return [k * math.exp(total_log_drift * ti) for k, ti in zip(KL, t)]


def test_verdict_holds_on_the_claim() -> None:
    assert scaling.verdict(_metrics()) is Verdict.HELD
    assert scaling.verdict(json.loads(json.dumps(_metrics()))) is Verdict.HELD


@pytest.mark.parametrize("which", ["model_size", "data_size"])
@pytest.mark.parametrize(
    "sweep,expected",
    [
        # L∞ within 0.25 × the smallest KL (0.00390625) of the entropy
        (dict(l_inf=H + 0.0039), Verdict.HELD),
        (dict(l_inf=H + 0.0040), Verdict.NOT_HELD),
        (dict(l_inf=H - 0.0039), Verdict.HELD),
        (dict(l_inf=H - 0.0040), Verdict.NOT_HELD),
        # median relative error of the fitted reducible loss ≤ 0.2
        (dict(fitted=[k * 1.19 for k in KL]), Verdict.HELD),
        (dict(fitted=[k * 1.21 for k in KL]), Verdict.NOT_HELD),
        (dict(fitted=[k * 0.81 for k in KL]), Verdict.HELD),
        (dict(fitted=[k * 0.79 for k in KL]), Verdict.NOT_HELD),
        # drift of fitted / KL across the sweep ≤ 25 %, either way
        (dict(fitted=_drifted(math.log(1.24))), Verdict.HELD),
        (dict(fitted=_drifted(math.log(1.26))), Verdict.NOT_HELD),
        (dict(fitted=_drifted(-math.log(1.24))), Verdict.HELD),
        (dict(fitted=_drifted(-math.log(1.26))), Verdict.NOT_HELD),
        # a sweep whose KL reaches 0 (the source is represented exactly) has nothing to read
        (dict(kl=[*KL[:-1], 0.0]), Verdict.NOT_HELD),
    ],
)
def test_verdict_on_each_side_of_each_sweep_threshold(
    which: str, sweep: dict, expected: Verdict
) -> None:
    assert scaling.verdict(_metrics(**{which: _sweep(**sweep)})) is expected


@pytest.mark.parametrize(
    "key,value,expected",
    [
        ("identity_max_abs_error", 1e-9, Verdict.HELD),
        ("identity_max_abs_error", 1.1e-9, Verdict.NOT_HELD),
        ("heldout_max_abs_z", 4.0, Verdict.HELD),
        ("heldout_max_abs_z", 4.1, Verdict.NOT_HELD),
    ],
)
def test_verdict_on_the_exact_checks(key: str, value: float, expected: Verdict) -> None:
    m = _metrics()
    m[key] = value
    assert scaling.verdict(m) is expected


def test_unconverged_students_make_a_failing_size_sweep_inconclusive() -> None:
    size = _sweep(fitted=[k * 1.5 for k in KL])
    assert scaling.verdict(_metrics(model_size=size)) is Verdict.NOT_HELD
    size["last_chunk_rel_decrease"][2] = 1.1e-4  # one student not converged
    assert scaling.verdict(_metrics(model_size=size)) is Verdict.INCONCLUSIVE
    size["last_chunk_rel_decrease"][2] = 1e-4
    assert scaling.verdict(_metrics(model_size=size)) is Verdict.NOT_HELD
    # a failing data-size sweep does not depend on the students: still not held
    unconverged = _sweep()
    unconverged["last_chunk_rel_decrease"][0] = 1.0
    bad_data = _sweep(l_inf=H + 0.1)
    assert scaling.verdict(_metrics(model_size=unconverged, data_size=bad_data)) is (
        Verdict.NOT_HELD
    )
    assert scaling.verdict(_metrics(model_size=unconverged)) is Verdict.HELD


def test_sweep_checks_numbers() -> None:
    c = scaling.sweep_checks(_sweep(fitted=_drifted(math.log(2.0)), l_inf=H + 0.002))
    assert c["ratio_drift"] == pytest.approx(math.log(2.0), rel=1e-9)
    assert c["l_inf_error_over_min_kl"] == pytest.approx(0.002 / KL[-1], rel=1e-9)
    assert c["recovers_entropy"] and not c["no_trend"]


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> ReproductionResult:
    return run_quick("scaling", tmp_path_factory.mktemp("scaling"))


def test_quick_run(quick: ReproductionResult) -> None:
    m = quick.metrics
    assert quick.indicative  # the quick run is labelled indicative
    for name in ("model_size", "data_size"):
        s = m[name]
        np.testing.assert_allclose(np.array(s["loss"]) - np.array(s["kl"]), s["entropy"], atol=1e-9)
        f = s["fit"]
        np.testing.assert_allclose(
            s["fitted_reducible"], (f["x0"] / np.array(s["sizes"])) ** f["alpha"], rtol=1e-9
        )
    size = m["model_size"]
    src = m["sources"]["model_size"]
    assert max(size["ranks"]) <= (src["rank"] + 1) / 16  # no student represents the source
    assert all(b <= a * (1 + 1e-9) for a, b in itertools.pairwise(size["kl"]))
    assert min(size["kl"]) > 1e-3
    assert m["identity_max_abs_error"] <= scaling.IDENTITY_TOL  # a theorem
    inside = m["controls"]["inside_model_class"]
    for r, k in zip(inside["ranks"], inside["kl"]):
        assert (abs(k) < 1e-10) == (r >= 4)  # the capacity threshold of the old design
    peaked = m["controls"]["peaked_teacher"]
    assert peaked["source"]["logit_rms"] == pytest.approx(3.0)
    assert "peaked teacher" in quick.summary and "restated" in quick.summary


def test_data_sweep_uses_nested_samples_and_learns() -> None:
    """Each D adds fresh pairs to the previous sample: the KL falls on average."""
    src = PowerLawSource(50, 4, context_exponent=1.0, seed=0)
    ctx = ReproContext(id="scaling", quick=True, out_dir=Path("."))
    sizes = [16, 64, 256, 1024, 4096]
    losses, kls, models = scaling._data_sweep(src, sizes, seeds=3, ctx=ctx, offset=0)
    assert len(models) == len(sizes)
    np.testing.assert_allclose(np.array(losses) - np.array(kls), src.entropy(), atol=1e-12)
    assert all(b < a for a, b in itertools.pairwise(kls))
    counts = src.sample_counts(16, ctx.numpy_rng(0))
    np.testing.assert_allclose(models[0].numpy(), krichevsky_trofimov_logits(counts).numpy())


def test_metrics_survive_json(quick: ReproductionResult) -> None:
    again = json.loads(json.dumps(copy.deepcopy(quick.metrics)))
    assert scaling.verdict(again).value == quick.status

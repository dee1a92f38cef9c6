"""float32 accuracy of every registered divergence on every path, against float64 (issue 8 §2).

The sweep lives in ``benchmarks/accuracy_fp32.py`` (the full matrix, larger vocabularies and
several seeds, is its command line); here it runs at 4 rows × 257 classes, one seed, for every
registered name (``divergent.list_divergences()``) × parameter values × paths
(``engine="reference"``, ``engine="chunked"``, ``fused_linear_divergence`` for a few) ×
regimes (near-equal at two scales, standard, sharp, two temperatures), and asserts the goal
``|err| ≤ 1e-4·|ref|`` or ``|err| ≤ 1e-7`` on every row. The float64 judge itself is checked
against a 40-digit mpmath evaluation.
"""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import mpmath
import pytest
import torch

import divergent

_SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "accuracy_fp32.py"


def _load_sweep():
    spec = importlib.util.spec_from_file_location("accuracy_fp32", _SCRIPT)
    assert spec is not None and spec.loader is not None, _SCRIPT
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("accuracy_fp32", module)
    spec.loader.exec_module(module)
    return module


acc = _load_sweep()


def test_every_registered_name_is_swept() -> None:
    swept = {name for name, _ in acc.cases()}
    assert swept == {d.name for d in divergent.list_divergences()}
    # the parameter values the issue names are in the sweep
    alphas = {p["alpha"] for n, p in acc.cases() if n == "alpha"}
    orders = {p["order"] for n, p in acc.cases() if n == "renyi"}
    assert {1.0 - 1e-5, 1.0 + 1e-5, 1e-5} <= alphas
    assert {0.5, 2.0, 1.001} <= orders


@pytest.mark.parametrize("regime", acc.REGIMES, ids=[r.name for r in acc.REGIMES])
def test_fp32_accuracy_goal(regime, capsys) -> None:
    failures = []
    results = []
    for i, (name, params) in enumerate(acc.cases()):
        ratios = acc.errors_for(
            name,
            params,
            regime,
            rows=4,
            classes=257,
            seed=7 + i,
            paths=("reference", "chunked", "fused"),
        )
        results.append((name, params, regime.name, ratios))
        if name == "renyi" and math.isinf(params["order"]):
            continue  # a maximum, not a sum: see test_renyi_order_inf_is_as_accurate_as_its_inputs
        failures += [
            f"{acc.case_label(name, params)} [{path}]: ratio {ratio:.3g}"
            for path, ratio in ratios.items()
            if not ratio <= 1.0
        ]
    with capsys.disabled():
        print(f"\n{regime.name}:\n{acc.table(results)}")
    assert not failures, "\n".join(failures)


def test_alpha_kernel_near_one_and_zero_matches_reference_path() -> None:
    """The chunked α kernel at α = 1 ± 1e-5 and 1e-5 (2e-3 relative off before issue 8)."""
    g = torch.Generator().manual_seed(3)
    x = 2.0 * torch.randn(8, 300, generator=g)
    y = x + 0.5 * torch.randn(8, 300, generator=g)
    for a in (1.0 - 1e-5, 1.0 + 1e-5, 1e-5):
        want = acc.reference_rows("alpha", {"alpha": a}, x.double(), y.double(), 0.5)
        for engine in ("reference", "chunked"):
            got = divergent.alpha(x, y, alpha=a, temperature=0.5, reduction="none", engine=engine)
            rel = ((got.double() - want) / want).abs().max()
            assert float(rel) < 1e-5, (a, engine, float(rel))


def _mp_rows(name: str, params: dict[str, float], x: torch.Tensor, y: torch.Tensor, t: float):
    mpmath.mp.dps = 40
    out = []
    for xr, yr in zip(x.tolist(), y.tolist()):
        xs = [mpmath.mpf(v) / t for v in xr]
        ys = [mpmath.mpf(v) / t for v in yr]
        zx = mpmath.fsum(mpmath.exp(v) for v in xs)
        zy = mpmath.fsum(mpmath.exp(v) for v in ys)
        p = [mpmath.exp(v) / zx for v in xs]
        q = [mpmath.exp(v) / zy for v in ys]
        if name == "kl":
            out.append(mpmath.fsum(a * mpmath.log(a / b) for a, b in zip(p, q)))
        elif name == "alpha":
            a_ = mpmath.mpf(params["alpha"])
            s = mpmath.fsum(a**a_ * b ** (1 - a_) for a, b in zip(p, q))
            out.append((s - 1) / (a_ * (a_ - 1)))
        elif name == "renyi":
            o = mpmath.mpf(params["order"])
            s = mpmath.fsum(a**o * b ** (1 - o) for a, b in zip(p, q))
            out.append(mpmath.log(s) / (o - 1))
        elif name == "skew_kl":
            al = mpmath.mpf(params["alpha"])
            out.append(
                mpmath.fsum(a * mpmath.log(a / (al * a + (1 - al) * b)) for a, b in zip(p, q))
            )
    return torch.tensor([float(v) for v in out], dtype=torch.float64)


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("kl", {}),
        ("alpha", {"alpha": 1.0 + 1e-5}),
        ("alpha", {"alpha": 1e-5}),
        ("renyi", {"order": 1.001}),
        ("renyi", {"order": 0.5}),
        ("skew_kl", {"alpha": 0.1}),
    ],
)
def test_float64_judge_agrees_with_mpmath(name: str, params: dict[str, float]) -> None:
    """The sweep's float64 judge is accurate to ≤ 1e-7 relative (1000× below the goal)."""
    g = torch.Generator().manual_seed(11)
    for regime in (acc.REGIMES[0], acc.REGIMES[2]):  # near_1e-2 and standard
        x, y = regime.make(g, 2, 24)
        x, y = x.float().double(), y.float().double()
        judge = acc.reference_rows(name, params, x, y, regime.temperature)
        exact = _mp_rows(name, params, x, y, regime.temperature)
        rel = ((judge - exact) / exact).abs().max()
        assert float(rel) < 1e-7, (regime.name, float(rel))
        assert math.isfinite(float(rel))


@pytest.mark.parametrize("regime", acc.REGIMES, ids=[r.name for r in acc.REGIMES])
def test_renyi_order_inf_is_as_accurate_as_its_inputs(regime) -> None:
    """Rényi ∞ = max_x log(p/q) misses the goal near P = Q (ratio ≈ 2 here, ≈ 8 at V = 32000).

    The documented exception: a maximum does not average the rounding of the float32
    log-probabilities (≈ eps·|log p| per entry, larger than 1e-4 × a value of ~3e-3), so no
    row function of float32 log-probs can do better. Checked: the error stays below
    eps·(1 + max|log p| + max|log q|) on every path.
    """
    g = torch.Generator().manual_seed(5)
    x64, y64 = regime.make(g, 4, 257)
    x, y = x64.float(), y64.float()
    t = regime.temperature
    want = acc.reference_rows("renyi", {"order": math.inf}, x.double(), y.double(), t)
    lp = torch.log_softmax(x.double() / t, -1).abs().amax(-1)
    lq = torch.log_softmax(y.double() / t, -1).abs().amax(-1)
    bound = torch.finfo(torch.float32).eps * (1.0 + lp + lq)
    for engine in ("reference", "chunked"):
        got = divergent.renyi(x, y, order=math.inf, temperature=t, reduction="none", engine=engine)
        err = (got.double() - want).abs()
        assert bool((err <= bound).all()), (engine, err, bound)

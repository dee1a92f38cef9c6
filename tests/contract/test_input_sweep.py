"""The input contract on every path and size (issue 8 §1): the fast part of the sweep.

Bad inputs × every registered name × the reference and chunked paths × a size below and
above the engine threshold (the threshold is lowered to 100 elements here, so that the
``engine="auto"`` dispatch is exercised on small tensors; ``benchmarks/sweep_inputs.py``
runs the full matrix at real sizes), plus the other row-wise entry points (fused linear,
sparse / top-k, the policy-KL family). Every bad input must give a ``ValueError`` naming the
argument, or NaN exactly in the bad rows, as DESIGN.md says; never a silent finite or
infinite number. The cases and the outcome classification live in the benchmark script
(imported here) so that both run the same matrix.
"""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest
import torch

import divergent
from divergent.engine import chunked

_PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "sweep_inputs.py"
_spec = importlib.util.spec_from_file_location("sweep_inputs", _PATH)
assert _spec is not None and _spec.loader is not None
sweep = importlib.util.module_from_spec(_spec)
sys.modules["sweep_inputs"] = sweep
_spec.loader.exec_module(sweep)

F32, BF16, F64 = torch.float32, torch.bfloat16, torch.float64
GRID = [
    (sweep.SMALL_V, None, F32),  # auto, below the (lowered) threshold: the reference path
    (sweep.SMALL_V, "reference", F32),
    (sweep.SMALL_V, "chunked", F32),
    (40, None, F32),  # auto, above the threshold: the engine
    (sweep.SMALL_V, "chunked", BF16),
    (sweep.SMALL_V, "reference", F64),
]


@pytest.fixture
def low_threshold(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(chunked, "AUTO_MIN_ELEMENTS", 100)


def _violations(cases) -> list[str]:  # type: ignore[no-untyped-def]
    results = sweep.run_sweep(cases)
    assert results, "no case ran"
    return [
        f"{c.entry}: {c.what}: {c.outcome} ({c.detail})"
        for c in results
        if c.outcome in sweep.VIOLATIONS
    ]


@pytest.mark.parametrize("name", sweep.registered_names())
def test_divergence_input_contract(name: str, low_threshold: None) -> None:
    cases = [
        c
        for v, engine, dtype in GRID
        for c in sweep.categorical_cases(name, v, engine, dtype=dtype)
    ]
    assert not _violations(iter(cases))


def test_the_grid_crosses_the_engine_threshold(low_threshold: None) -> None:
    """Sizes below and above the threshold really take the two paths."""
    q = torch.randn(sweep.ROWS, 40, requires_grad=True)
    assert "Chunked" in type(divergent.kl(torch.randn(sweep.ROWS, 40), q).grad_fn).__name__
    q = torch.randn(sweep.ROWS, sweep.SMALL_V, requires_grad=True)
    small = divergent.kl(torch.randn(sweep.ROWS, sweep.SMALL_V), q)
    assert "Chunked" not in type(small.grad_fn).__name__


@pytest.mark.parametrize("v", [sweep.SMALL_V, 40])
def test_fused_linear_input_contract(v: int) -> None:
    assert not _violations(sweep.fused_cases(v))


@pytest.mark.parametrize("v", [sweep.SMALL_V, 40])
def test_sparse_and_topk_input_contract(v: int) -> None:
    assert not _violations(sweep.sparse_cases(v))


def test_policy_kl_family_input_contract() -> None:
    assert not _violations(sweep.policy_cases())


def test_classifier_catches_silent_results() -> None:
    """The sweep's classification fails on the outcomes it exists to catch."""
    silent = sweep.Case("t", "x", lambda: torch.tensor(0.3), sweep.ERROR)
    assert sweep.run_case(silent).outcome == "silent-finite"
    inf = sweep.Case("t", "x", lambda: torch.tensor(math.inf), sweep.ERROR)
    assert sweep.run_case(inf).outcome == "silent-inf"
    wrong_row = sweep.Case("t", "x", lambda: torch.tensor([math.nan, 1.0]), sweep.NAN, nan_at=(1,))
    assert sweep.run_case(wrong_row).outcome == "silent-finite"

    def unnamed() -> None:
        raise ValueError("something is wrong")

    assert sweep.run_case(sweep.Case("t", "x", unnamed, sweep.ERROR, names=("`p`",))).outcome == (
        "wrong-error"
    )
    no_warn = sweep.Case("t", "x", lambda: torch.tensor(1.0), sweep.WARN)
    assert sweep.run_case(no_warn).outcome == "no-warning"
    off = sweep.Case(
        "t", "x", lambda: torch.tensor(1.0), sweep.CONTROL, reference=lambda: torch.tensor(2.0)
    )
    assert sweep.run_case(off).outcome == "silent-finite"

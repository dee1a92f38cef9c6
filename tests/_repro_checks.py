"""Shared check of a reproduction's quick run (used by the tests in tests/papers/)."""

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from divergent.repro import (
    ReproductionResult,
    RunSize,
    Verdict,
    framework,
    get_reproduction,
    run_reproduction,
)


def run_quick(rid: str, tmp_path: Path) -> ReproductionResult:
    """Run ``rid`` in quick mode and check the result is well formed; return it.

    Checks: a verdict (not an error), ``held`` true exactly for ``held``, the verdict equal to
    the module's pure ``verdict`` applied to the stored (JSON) metrics, the quick label
    (indicative unless the reproduction declares its quick run decisive), real PNG plots, a
    one-sentence claim and the verdict stated in the summary.
    """
    result = run_reproduction(rid, quick=True, out_dir=tmp_path)
    assert result.status in {v.value for v in Verdict}, result.error
    rep = get_reproduction(rid)
    assert rep.verdict is not None
    assert result.verdict == result.status == rep.verdict(result.metrics).value
    assert result.held is (result.status == "held")
    assert result.indicative is (not rep.quick_matches_full)
    assert f"verdict: {result.status}" in result.summary
    assert result.plots
    for rel in result.plots:
        assert (tmp_path / rel).stat().st_size > 1000  # a real PNG
    assert rep.claim.strip().endswith(".") and rep.claim.count(". ") == 0  # one sentence
    return result


def run_resized(
    rid: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *, quick: bool, **sizes: Any
) -> ReproductionResult:
    """Run ``rid`` in the given mode with some of that mode's run sizes replaced by ``sizes``
    (each must be a size the catalogue declares); the registry is restored afterwards."""
    rep = get_reproduction(rid)
    mode = "quick" if quick else "full"
    unknown = set(sizes) - set(rep.sizes[mode])
    assert not unknown, f"{rid} declares no run sizes {sorted(unknown)}"
    resized = {**rep.sizes, mode: RunSize({**rep.sizes[mode], **sizes})}
    monkeypatch.setitem(framework._REGISTRY, rid, dataclasses.replace(rep, sizes=resized))
    return run_reproduction(rid, quick=quick, out_dir=tmp_path)

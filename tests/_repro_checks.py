"""Shared check of a reproduction's quick run (used by the per-issue reproduction tests)."""

from pathlib import Path

from divergent.repro import get_reproduction, run_reproduction


def run_quick(rid: str, tmp_path: Path) -> dict:
    """Run ``rid`` in quick mode and check the Outcome is well formed; return held + metrics."""
    result = run_reproduction(rid, quick=True, out_dir=tmp_path)
    assert result.status in ("held", "not held"), result.error
    assert result.held is (result.status == "held")
    assert result.summary and result.plots
    for rel in result.plots:
        assert (tmp_path / rel).stat().st_size > 1000  # a real PNG
    rep = get_reproduction(rid)
    assert rep.claim.strip().endswith(".") and rep.claim.count(". ") == 0  # one sentence
    if not result.held:
        assert "NOT held" in result.summary
    return {"held": result.held, "metrics": result.metrics}

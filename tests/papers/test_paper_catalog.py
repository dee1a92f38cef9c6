"""The catalogue of reproductions (papers/catalog.toml) and the registry agree row for row."""

from __future__ import annotations

import pytest

import divergent.papers  # registers every reproduction
from divergent.papers import _catalog
from divergent.repro import all_reproductions


def test_every_paper_module_imports() -> None:
    # discovery tolerates a broken module (it becomes an error row); the suite must not
    assert divergent.papers.IMPORT_ERRORS == {}


def test_every_row_is_a_registered_reproduction_and_back() -> None:
    rows = _catalog.catalog()
    reps = {r.id: r for r in all_reproductions() if not r.id.startswith("zz_")}
    assert set(rows) == set(reps)
    for rid, row in rows.items():
        rep = reps[rid]
        assert (rep.title, rep.paper, rep.claim) == (row["title"], row["paper"], row["claim"])
        assert rep.tags == tuple(row.get("tags", ()))
        assert rep.quick_matches_full is row.get("quick_matches_full", False)
        assert rep.experiment.__module__ == f"divergent.papers.{rid}"
        assert dict(rep.size(quick=True)) == row.get("quick", {})
        assert dict(rep.size(quick=False)) == row.get("full", {})


def test_a_full_run_is_never_smaller_than_the_quick_run() -> None:
    for rid, row in _catalog.catalog().items():
        for name, quick in row.get("quick", {}).items():
            full = row["full"][name]
            if isinstance(quick, int) and not isinstance(quick, bool):
                assert full >= quick, (rid, name)


def test_a_row_with_an_unknown_field_is_refused(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    bad = tmp_path / "catalog.toml"
    bad.write_text('[x]\ntitle = "t"\npaper = "p"\nclaim = "c."\nclaimz = "typo"\n')
    monkeypatch.setattr(_catalog, "CATALOG_PATH", bad)
    _catalog.catalog.cache_clear()
    try:
        with pytest.raises(ValueError, match=r"\[x\]: unknown fields \['claimz'\]"):
            _catalog.catalog()
        bad.write_text('[x]\ntitle = "t"\npaper = "p"\nclaim = "c."\ntags = "a"\n')
        _catalog.catalog.cache_clear()
        with pytest.raises(ValueError, match=r"`tags` must be a list"):
            _catalog.catalog()
        bad.write_text('[x]\ntitle = "t"\npaper = "p"\nclaim = "c."\n')
        _catalog.catalog.cache_clear()
        with pytest.raises(ValueError, match=r"no row in catalog\.toml"):
            _catalog.reproduction("nope", verdict=lambda m: None)  # type: ignore[arg-type,return-value]
    finally:
        _catalog.catalog.cache_clear()

"""Discovery of reproduction modules: one that fails to import does not hide the others.

A throw-away package in ``tmp_path`` plays ``divergent.papers``: good modules before and after
broken ones (a syntax error, a missing import, an error raised by top-level code after the
module registered itself) and a private module that is skipped. Nothing is written in the tree.
"""

from __future__ import annotations

import importlib
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from divergent.repro import discover_reproductions, framework, run_many

GOOD = """
from divergent.repro import Outcome, Verdict, reproduction

@reproduction("{id}", title="{id}", paper="none", claim="holds.",
              verdict=lambda m: Verdict.from_bool(m["ok"]))
def experiment(ctx):
    return Outcome(metrics={{"ok": True}}, summary="ran")
"""

MODULES = {
    "alpha": GOOD.format(id="alpha"),
    "broken_syntax": "def oops(:\n    pass\n",
    "broken_import": "import divergent_no_such_module_h9\n",
    "late_failure": GOOD.format(id="late_failure") + "\nraise RuntimeError('top-level\\ncode')\n",
    "omega": GOOD.format(id="omega"),
    "_private": "raise AssertionError('a private module is not discovered')\n",
}


def plant_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, list[str]]:
    """Write the package, put it on sys.path, give the registry a fresh dict for this test."""
    name = f"zz_papers_{uuid.uuid4().hex[:8]}"
    folder = tmp_path / name
    folder.mkdir()
    (folder / "__init__.py").write_text("")
    for module, text in MODULES.items():
        (folder / f"{module}.py").write_text(text)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(framework, "_REGISTRY", {})
    importlib.invalidate_caches()
    return name, [str(folder)]


@pytest.fixture
def planted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    name, path = plant_package(tmp_path, monkeypatch)
    yield discover_reproductions(name, path)
    for module in [m for m in sys.modules if m == name or m.startswith(f"{name}.")]:
        del sys.modules[module]


def test_broken_modules_are_reported_and_the_others_register(planted: dict[str, str]) -> None:
    assert sorted(planted) == ["broken_import", "broken_syntax", "late_failure"]
    assert planted["broken_syntax"].startswith("SyntaxError: ")
    assert "line 1" in planted["broken_syntax"]
    assert planted["broken_import"] == (
        "ModuleNotFoundError: No module named 'divergent_no_such_module_h9'"
    )
    assert planted["late_failure"] == "RuntimeError: top-level code"  # one line
    ids = [r.id for r in framework.all_reproductions()]
    assert ids == ["alpha", "broken_import", "broken_syntax", "late_failure", "omega"]
    assert framework.get_reproduction("alpha").import_error is None
    assert framework.get_reproduction("omega").import_error is None
    for rid, line in planted.items():
        assert framework.get_reproduction(rid).import_error == line


def test_a_broken_module_runs_as_an_error_row_and_the_others_run(
    tmp_path: Path, planted: dict[str, str]
) -> None:
    rows = run_many(
        ["alpha", "broken_syntax", "late_failure", "omega"], quick=True, out_dir=tmp_path
    )
    status = {r.id: r.status for r in rows}
    assert status == {
        "alpha": "held",
        "broken_syntax": "error",
        "late_failure": "error",
        "omega": "held",
    }
    syntax = rows[1]
    assert syntax.summary.startswith("ImportError: module zz_papers_")
    assert planted["broken_syntax"] in syntax.summary
    # the error keeps the import's own traceback
    assert syntax.error is not None and "SyntaxError" in syntax.error
    assert "Traceback" in rows[2].error and "top-level" in rows[2].error

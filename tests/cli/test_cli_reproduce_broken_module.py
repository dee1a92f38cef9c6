"""``divergent reproduce`` when a paper module fails to import: listed, marked, run as a crash.

The modules are planted in a throw-away package in ``tmp_path`` and discovered with
:func:`divergent.repro.discover_reproductions`, as ``divergent.papers`` discovers its own; the
registry is a fresh dict for the test. Nothing is written in the tree.
"""

from __future__ import annotations

import importlib
import json
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from divergent.cli import app
from divergent.repro import discover_reproductions, framework

runner = CliRunner()


@pytest.fixture
def package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A package with a working reproduction ``fine`` and a module ``broken`` (bad syntax)."""
    name = f"zz_cli_papers_{uuid.uuid4().hex[:8]}"
    root = tmp_path / "src"
    (root / name).mkdir(parents=True)
    (root / name / "__init__.py").write_text("")
    (root / name / "broken.py").write_text("x = (\n")
    (root / name / "fine.py").write_text(
        "from divergent.repro import Outcome, Verdict, reproduction\n"
        "reproduction('fine', title='fine', paper='P', claim='C.',"
        " verdict=lambda m: Verdict.HELD)(lambda ctx: Outcome(metrics={}, summary='ran'))\n"
    )
    monkeypatch.syspath_prepend(str(root))
    monkeypatch.setattr(framework, "_REGISTRY", {})
    importlib.invalidate_caches()
    assert list(discover_reproductions(name, [str(root / name)])) == ["broken"]
    yield tmp_path / "out"
    for module in [m for m in sys.modules if m.split(".")[0] == name]:
        del sys.modules[module]


def _statuses(out: Path) -> dict[str, str]:
    return {r["id"]: r["status"] for r in json.loads((out / "results.json").read_text())["results"]}


def test_list_shows_the_others_and_marks_the_broken_module(package: Path) -> None:
    result = runner.invoke(app, ["reproduce", "--list"])
    assert result.exit_code == 0, result.output
    assert "fine" in result.output
    assert "broken" in result.output and "failed to import" in result.output
    assert "SyntaxError" in result.output
    assert "1 module(s) failed to import (running one gives an error row): broken" in (
        result.output
    )


def test_running_the_broken_id_is_an_error_row_with_exit_code_1(package: Path) -> None:
    result = runner.invoke(app, ["reproduce", "broken", "--quick", "--out", str(package)])
    assert result.exit_code == 1, result.output
    assert "broken crashed" in result.output and "SyntaxError" in result.output
    assert _statuses(package) == {"broken": "error"}


def test_other_ids_run_with_a_warning_about_the_broken_module(package: Path) -> None:
    result = runner.invoke(app, ["reproduce", "fine", "--quick", "--out", str(package)])
    assert result.exit_code == 0, result.output
    assert "warning: `broken` is unavailable, its module failed to import: SyntaxError" in (
        result.output
    )
    assert _statuses(package) == {"fine": "held"}
    everything = runner.invoke(app, ["reproduce", "--all", "--quick", "--out", str(package)])
    assert everything.exit_code == 1, everything.output
    assert _statuses(package) == {"fine": "held", "broken": "error"}

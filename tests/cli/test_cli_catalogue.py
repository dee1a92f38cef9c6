"""`divergent list --json` names every divergence of issue 2 exactly; `divergent info` works."""

from __future__ import annotations

import json

import pytest
from rich.console import Console
from typer.testing import CliRunner

from divergent import cli
from divergent.categorical import get_divergence, list_divergences
from divergent.cli import app

ISSUE_NAMES = ["kl", "reverse_kl", "js", "skew_kl", "skew_reverse_kl", "jeffreys", "tv",
               "hellinger", "pearson_chi2", "neyman_chi2", "alpha", "renyi",
               "soft_cross_entropy"]

runner = CliRunner()


def test_list_json_names_every_registered_divergence() -> None:
    result = runner.invoke(app, ["list", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    names = [r["name"] for r in rows]
    assert set(ISSUE_NAMES) <= set(names)
    assert names == [d.name for d in list_divergences()]
    by_name = {r["name"]: r for r in rows}
    assert by_name["soft_cross_entropy"]["is_divergence"] is False
    assert by_name["js"]["symmetric"] is True  # at the default β = ½
    assert by_name["kl"]["symmetric"] is False
    assert [p["name"] for p in by_name["js"]["parameters"]] == ["beta"]
    assert by_name["js"]["parameters"][0]["range"] == "(0, 1)"
    assert [p["name"] for p in by_name["renyi"]["parameters"]] == ["order"]
    assert by_name["hellinger"]["title"].lower().startswith("squared")
    for r in rows:
        spec = get_divergence(r["name"])
        assert r["formula"] == spec.formula_text and r["bound"] == spec.bound_text
        assert r["f_divergence"] == spec.is_f_divergence


def test_list_table_mentions_every_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "console", Console(width=400))  # no folding of long cells
    result = runner.invoke(app, ["list"])
    assert result.exit_code == 0, result.output
    for name in ISSUE_NAMES:
        assert name in result.output


def test_info_js(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "console", Console(width=400))
    result = runner.invoke(app, ["info", "js"])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "js" in out and "beta = 0.5 in (0, 1)" in out
    assert "symmetric True" in out and "0.6931" in out  # log 2 at the default β
    assert "infinite  never" in out


def test_info_unknown_name_fails_listing_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "console", Console(width=400))
    result = runner.invoke(app, ["info", "kl_div"])
    assert result.exit_code == 2
    assert "unknown divergence" in result.output and "reverse_kl" in result.output

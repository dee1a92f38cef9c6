"""`divergent list` (table at 80 columns and piped, --json, --markdown = docs/divergences.md)
and `divergent info` (aliases, did-you-mean) on the registry."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from divergent.categorical import get_divergence, list_divergences
from divergent.cli import app
from divergent.cli.catalogue import markdown_table

DOCS_TABLE = Path(__file__).resolve().parents[2] / "docs" / "divergences.md"
WIDE = {"COLUMNS": "400"}  # no folding of long cells

ISSUE_NAMES = [
    "kl",
    "reverse_kl",
    "js",
    "skew_kl",
    "skew_reverse_kl",
    "jeffreys",
    "tv",
    "hellinger",
    "pearson_chi2",
    "neyman_chi2",
    "alpha",
    "renyi",
    "soft_cross_entropy",
]

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


def test_list_table_mentions_every_name() -> None:
    result = runner.invoke(app, ["list"], env=WIDE)
    assert result.exit_code == 0, result.output
    for name in ISSUE_NAMES:
        assert name in result.output


def test_info_js() -> None:
    result = runner.invoke(app, ["info", "js"], env=WIDE)
    assert result.exit_code == 0, result.output
    out = result.output
    assert "js" in out and "beta = 0.5 in (0, 1)" in out
    assert "symmetric yes at beta=0.5 (the defaults)" in out
    assert "0.6931 at beta=0.5" in out  # log 2 at the default β
    assert "infinite  never" in out


def test_info_unknown_name_fails_listing_names() -> None:
    result = runner.invoke(app, ["info", "kl_div"], env=WIDE)
    assert result.exit_code == 2
    assert result.stdout == ""  # the error is one line on stderr
    (line,) = result.stderr.splitlines()
    assert line.startswith("error: unknown divergence") and "reverse_kl" in line


@pytest.mark.parametrize("env", [{"COLUMNS": "80"}, {}], ids=["COLUMNS=80", "piped"])
def test_list_is_readable_at_80_columns_and_piped(env: dict[str, str]) -> None:
    """CliRunner's output is not a terminal (as in a pipe): no line over 80 characters, and
    every name appears whole (no name broken across lines), with the defaults of the
    parameterised entries next to it, where symmetric / bound are stated."""
    result = runner.invoke(app, ["list"], env=env)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert max(len(line) for line in lines) <= 80
    tokens = set(re.findall(r"[\w.=]+", result.output))
    for d in list_divergences():
        assert d.name in tokens, d.name
        for p in d.parameters:
            assert f"{p.name}={p.default:g}" in tokens, (d.name, p.name)
    js = next(i for i, line in enumerate(lines) if line.split()[:1] == ["js"])
    assert lines[js + 1].split()[0] == "beta=0.5"
    assert " yes " in lines[js]  # symmetric at the default β = ½
    assert "at the parameter values shown (the defaults)" in " ".join(result.output.split())


def test_list_wide_shows_ranges_and_metric() -> None:
    result = runner.invoke(app, ["list"], env={"COLUMNS": "160"})
    assert result.exit_code == 0, result.output
    assert "beta=0.5 ∈ (0, 1)" in result.output and "metric" in result.output


def test_list_json_has_aliases_and_bound_at_defaults() -> None:
    rows = {r["name"]: r for r in json.loads(runner.invoke(app, ["list", "--json"]).output)}
    assert rows["kl"]["aliases"] == ["fkl", "forward_kl"]
    assert rows["reverse_kl"]["aliases"] == ["rkl"] and rows["js"]["aliases"] == ["jsd"]
    assert rows["js"]["bound_at_defaults"] == "0.6931" and rows["kl"]["bound_at_defaults"] == "∞"


@pytest.mark.parametrize(
    ("alias", "name"), [("fkl", "kl"), ("forward_kl", "kl"), ("rkl", "reverse_kl"), ("jsd", "js")]
)
def test_info_resolves_aliases(alias: str, name: str) -> None:
    result = runner.invoke(app, ["info", alias], env=WIDE)
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"{name}: ")
    assert f"(`{alias}` is an alias of `{name}`)" in result.output
    assert "aliases" in result.output and alias in result.output


@pytest.mark.parametrize(
    ("typo", "suggestion"), [("kll", "kl"), ("helinger", "hellinger"), ("chi2", "pearson_chi2")]
)
def test_info_suggests_close_names(typo: str, suggestion: str) -> None:
    result = runner.invoke(app, ["info", typo], env=WIDE)
    assert result.exit_code == 2
    assert f"Did you mean `{suggestion}`" in result.output


def test_markdown_table_is_the_committed_docs_file() -> None:
    """docs/divergences.md is generated: `divergent list --markdown > docs/divergences.md`."""
    result = runner.invoke(app, ["list", "--markdown"])
    assert result.exit_code == 0, result.output
    assert result.output == markdown_table()
    assert DOCS_TABLE.read_text(encoding="utf-8") == result.output, (
        "docs/divergences.md is stale: run `divergent list --markdown > docs/divergences.md`"
    )
    rows = [line for line in result.output.splitlines() if line.startswith("| `")]
    assert [r.split("`")[1] for r in rows] == [d.name for d in list_divergences()]
    assert r"`½ Σ \|p − q\|`" in result.output  # pipes inside cells are escaped


def test_json_and_markdown_together_are_refused() -> None:
    result = runner.invoke(app, ["list", "--json", "--markdown"])
    assert result.exit_code == 2

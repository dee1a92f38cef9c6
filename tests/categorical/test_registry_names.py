"""Registry names: aliases, did-you-mean suggestions, unregistering, name conflicts."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import divergent
from divergent.categorical import get_divergence, list_divergences, register_divergence
from divergent.categorical.registry import aliases, suggest_names, unregister_divergence


@pytest.mark.parametrize(
    ("alias", "name"),
    [("fkl", "kl"), ("forward_kl", "kl"), ("rkl", "reverse_kl"), ("jsd", "js")],
)
def test_aliases_resolve_everywhere(alias: str, name: str) -> None:
    assert get_divergence(alias) is get_divergence(name)
    assert aliases()[alias] == name
    p, q = torch.randn(3, 5), torch.randn(3, 5)
    assert torch.equal(divergent.divergence(alias, p, q), divergent.divergence(name, p, q))


def test_aliases_are_not_listed_as_entries() -> None:
    names = [d.name for d in list_divergences()]
    assert not set(aliases()) & set(names)
    assert len(names) == len(set(names))


@pytest.mark.parametrize(
    ("typo", "expected"),
    [
        ("kll", ["kl"]),
        ("helinger", ["hellinger"]),
        ("revers_kl", ["reverse_kl"]),
        ("forward-kl", ["kl"]),  # a dash for an underscore, via the alias
        ("chi2", ["pearson_chi2", "neyman_chi2"]),  # part of longer names
        ("KL", ["kl"]),
        ("Reverse-KL", ["reverse_kl"]),  # only the spelling differs: that name alone
        ("kl_div", ["kl"]),  # a registered name with a suffix
    ],
)
def test_unknown_names_get_suggestions(typo: str, expected: list[str]) -> None:
    assert suggest_names(typo)[: len(expected)] == expected
    with pytest.raises(ValueError, match=f"Did you mean `{expected[0]}`") as err:
        get_divergence(typo)
    assert f"unknown divergence `{typo}`" in str(err.value)
    assert "Registered: kl, reverse_kl" in str(err.value)


def test_far_names_get_no_suggestion() -> None:
    assert suggest_names("wasserstein") == []
    with pytest.raises(ValueError) as err:
        get_divergence("wasserstein")
    assert "Did you mean" not in str(err.value)


def test_alias_conflicts_are_refused() -> None:
    kl = get_divergence("kl")
    with pytest.raises(ValueError, match="alias `rkl` of `kl_copy` is already taken"):
        register_divergence(dataclasses.replace(kl, name="kl_copy", aliases=("rkl",)))
    with pytest.raises(ValueError, match="alias `js` of `kl_copy` is already taken by `js`"):
        register_divergence(dataclasses.replace(kl, name="kl_copy", aliases=("js",)))
    with pytest.raises(ValueError, match="already an alias of `kl`"):
        register_divergence(dataclasses.replace(kl, name="fkl", aliases=()))
    with pytest.raises(ValueError, match="non-empty string"):
        register_divergence(dataclasses.replace(kl, name=" kl ", aliases=()))
    assert "kl_copy" not in {d.name for d in list_divergences()}  # nothing half-registered


def test_unregister_removes_the_entry_and_its_aliases() -> None:
    kl = get_divergence("kl")
    copy = register_divergence(dataclasses.replace(kl, name="kl_copy", aliases=("kl2",)))
    assert get_divergence("kl2") is copy
    with pytest.raises(ValueError, match="is an alias of `kl_copy`"):
        unregister_divergence("kl2")
    assert unregister_divergence("kl_copy") is copy
    assert "kl2" not in aliases()
    with pytest.raises(ValueError, match="unknown divergence"):
        get_divergence("kl2")
    with pytest.raises(ValueError, match="no divergence is registered"):
        unregister_divergence("kl_copy")


def test_overwrite_replaces_aliases() -> None:
    kl = get_divergence("kl")
    register_divergence(dataclasses.replace(kl, name="kl_copy", aliases=("kl2",)))
    try:
        register_divergence(
            dataclasses.replace(kl, name="kl_copy", aliases=("kl3",)), overwrite=True
        )
        assert "kl2" not in aliases() and aliases()["kl3"] == "kl_copy"
    finally:
        unregister_divergence("kl_copy")
    assert "kl3" not in aliases()

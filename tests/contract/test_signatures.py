"""Every shortcut (``divergent.kl`` ...) accepts exactly what ``divergent.divergence`` accepts.

The shortcuts are generated from the registry (``functional._make_shortcut``); this test keeps
them from drifting from :func:`divergent.divergence` again: same parameters, kinds, defaults
and annotations (minus ``name`` and ``**params``, plus the entry's own parameters as
keyword-only arguments with the registry's defaults), and the same value on every option.
"""

from __future__ import annotations

import inspect

import pytest
import torch

import divergent
from divergent import functional
from divergent.categorical import get_divergence, list_divergences

SHORTCUTS = [d.name for d in list_divergences() if hasattr(functional, d.name)]


def test_every_registered_name_has_a_shortcut() -> None:
    builtin = {
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
    }
    assert builtin <= set(SHORTCUTS)
    for name in builtin:
        assert getattr(divergent, name) is getattr(functional, name)


def _expected_signature(name: str) -> list[tuple[str, object, object]]:
    base = inspect.signature(divergent.divergence).parameters.values()
    options = [prm for prm in base if prm.name not in ("name", "params")]
    positional = [prm for prm in options if prm.kind is not inspect.Parameter.KEYWORD_ONLY]
    keywords = [prm for prm in options if prm.kind is inspect.Parameter.KEYWORD_ONLY]
    own = [
        (prm.name, inspect.Parameter.KEYWORD_ONLY, prm.default)
        for prm in get_divergence(name).parameters
    ]
    return (
        [(prm.name, prm.kind, prm.default) for prm in positional]
        + own
        + [(prm.name, prm.kind, prm.default) for prm in keywords]
    )


@pytest.mark.parametrize("name", SHORTCUTS)
def test_shortcut_signature_is_divergence_signature(name: str) -> None:
    sig = inspect.signature(getattr(functional, name))
    got = [(prm.name, prm.kind, prm.default) for prm in sig.parameters.values()]
    assert got == _expected_signature(name)
    base = inspect.signature(divergent.divergence)
    for prm in sig.parameters.values():
        if prm.name in base.parameters:
            assert prm.annotation == base.parameters[prm.name].annotation, prm.name
    assert sig.return_annotation == base.return_annotation


def test_signature_check_catches_a_drifted_shortcut() -> None:
    """The comparison above fails on a shortcut that lost a keyword (``engine``)."""

    def drifted(
        p,
        q,
        *,
        temperature=1.0,
        mask=None,
        reduction="mean",
        normalizer=None,
        inputs="logits",
        check_nan=False,
    ):  # type: ignore[no-untyped-def]
        return None

    got = [
        (prm.name, prm.kind, prm.default) for prm in inspect.signature(drifted).parameters.values()
    ]
    assert got != _expected_signature("kl")


def _inputs(kind: str, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    a, b = torch.randn(2, 2, 3, 7, generator=gen, dtype=torch.float64)
    if kind == "probs":
        return a.softmax(-1), b.softmax(-1)
    if kind == "log_probs":
        return a.log_softmax(-1), b.log_softmax(-1)
    return a, b


OPTION_SETS = [
    {},
    {"temperature": 2.5},
    {"reduction": "none"},
    {"reduction": "sum", "check_nan": True},
    {"reduction": "mean", "normalizer": 7.0},
    {"inputs": "log_probs", "temperature": 0.7},
    {"inputs": "probs"},
    {"engine": "chunked", "reduction": "none", "temperature": 1.3},
    {"engine": "reference"},
]


@pytest.mark.parametrize("name", SHORTCUTS)
def test_shortcut_equals_divergence_on_every_option(name: str) -> None:
    gen = torch.Generator().manual_seed(0)
    shortcut = getattr(functional, name)
    mask = torch.tensor([[True, False, True], [True, True, False]])
    params = [{}] + [{prm.name: _inside(prm)} for prm in get_divergence(name).parameters]
    for options in OPTION_SETS:
        for extra in params:
            for use_mask in (False, True):
                kw = dict(options, **extra)
                if use_mask:
                    kw["mask"] = mask
                p, q = _inputs(kw.get("inputs", "logits"), gen)
                want = divergent.divergence(name, p, q, **kw)
                got = shortcut(p, q, **kw)
                torch.testing.assert_close(got, want, rtol=0, atol=0, equal_nan=True)


def _inside(prm) -> float:  # type: ignore[no-untyped-def]
    """A value inside the parameter's range that differs from its default."""
    for value in (0.3, 0.7, 2.0, 0.5):
        if value == prm.default:
            continue
        try:
            prm.validate(value, "test")
        except ValueError:
            continue
        return value
    raise AssertionError(f"no test value for {prm.name}")

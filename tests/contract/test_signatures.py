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
from divergent import _validation, functional
from divergent.categorical import get_divergence, list_divergences
from divergent.categorical.registry import DIVERGENCE_KEYWORDS

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


# ------------------------------------------------------------------------------------------
# the row keywords spelled out by `row_keywords` (the entry points take them via **kwargs)
# ------------------------------------------------------------------------------------------
_ROW = [("temperature", 1.0), ("mask", None), ("reduction", "mean"), ("normalizer", None)]
_KW = inspect.Parameter.KEYWORD_ONLY
_PK = inspect.Parameter.POSITIONAL_OR_KEYWORD
_VAR = inspect.Parameter.VAR_KEYWORD
_EMPTY = inspect.Parameter.empty

# written out as the functions showed them when each spelled its keywords out itself
ENTRY_SIGNATURES = {
    "divergence": [("name", _PK, _EMPTY), ("p", _PK, _EMPTY), ("q", _PK, _EMPTY)]
    + [(n, _KW, d) for n, d in [*_ROW, ("inputs", "logits"), ("check_nan", False)]]
    + [("engine", _KW, None), ("params", _VAR, _EMPTY)],
    "chunked_divergence": [("name", _PK, _EMPTY), ("p", _PK, _EMPTY), ("q", _PK, _EMPTY)]
    + [(n, _KW, d) for n, d in [*_ROW, ("inputs", "logits"), ("check_nan", False)]]
    + [("chunk_size", _KW, None), ("compile", _KW, None), ("params", _VAR, _EMPTY)],
    "uld_distance": [("p", _PK, _EMPTY), ("q", _PK, _EMPTY)]
    + [(n, _KW, d) for n, d in [*_ROW, ("inputs", "logits"), ("check_nan", False)]],
    "vocab_parallel_divergence": [("name", _PK, _EMPTY), ("p", _PK, _EMPTY), ("q", _PK, _EMPTY)]
    + [(n, _KW, d) for n, d in [("group", None), *_ROW, ("check_nan", False)]]
    + [("chunk_size", _KW, None), ("params", _VAR, _EMPTY)],
    "sparse_divergence": [("name", _PK, _EMPTY)]
    + [(n, _PK, _EMPTY) for n in ("teacher_topk_ids", "teacher_topk_logprobs", "student_logits")]
    + [(n, _KW, d) for n, d in [("tail", "bucket"), *_ROW, ("chunk_size", None)]]
    + [("check_inputs", _KW, True), ("params", _VAR, _EMPTY)],
    "fused_linear_divergence": [("name", _PK, _EMPTY)]
    + [(n, _KW, _EMPTY) for n in ("student_hidden", "student_weight")]
    + [(n, _KW, _EMPTY) for n in ("teacher_hidden", "teacher_weight")]
    + [(n, _KW, d) for n, d in [("student_bias", None), ("teacher_bias", None), _ROW[0]]]
    + [("softcap", _KW, None), ("logit_scale", _KW, None)]
    + [(n, _KW, d) for n, d in [*_ROW[1:], ("chunk_size", None), ("vocab", "strict")]]
    + [("compile", _KW, None), ("params", _VAR, _EMPTY)],
}


@pytest.mark.parametrize("name", sorted(ENTRY_SIGNATURES))
def test_entry_point_signature_spells_out_the_row_keywords(name: str) -> None:
    sig = inspect.signature(getattr(divergent, name))
    got = [(prm.name, prm.kind, prm.default) for prm in sig.parameters.values()]
    assert got == ENTRY_SIGNATURES[name]
    annotations = {prm.name: prm.annotation for prm in sig.parameters.values()}
    for row_name, shown in {
        "temperature": "float",
        "mask": "Tensor | None",
        "reduction": "str",
        "normalizer": "float | Tensor | None",
        "inputs": "str",
        "engine": "str | None",
    }.items():
        if row_name in annotations:
            assert annotations[row_name] == shown, row_name


def test_shown_defaults_are_the_defaults_row_options_applies() -> None:
    """A keyword left out gets the default the signature shows (row_options applies it)."""
    validated = inspect.signature(_validation.row_options).parameters
    for name, (default, _) in _validation.ROW_KEYWORD_DEFAULTS.items():
        assert validated[name].default == default, name


def test_an_unknown_keyword_is_still_a_type_error() -> None:
    p = torch.zeros(2, 3)
    with pytest.raises(TypeError, match=r"uld_distance.*unexpected keyword argument 'engine'"):
        divergent.uld_distance(p, p, engine="chunked")
    with pytest.raises(TypeError, match="multiple values for keyword argument 'engine'"):
        divergent.chunked_divergence("kl", p, p, engine="reference")
    # a row keyword an entry point does not take is read as a divergence parameter, as before
    with pytest.raises(ValueError, match="inputs"):
        divergent.sparse_divergence(
            "kl", torch.zeros(2, 1, dtype=torch.long), torch.zeros(2, 1), p, inputs="probs"
        )


def test_the_registry_s_keyword_list_is_divergence_s() -> None:
    # the leaf registry spells divergence()'s keywords for its did-you-mean; they must not drift
    shown = inspect.signature(divergent.divergence).parameters.values()
    keyword_only = {p.name for p in shown if p.kind is inspect.Parameter.KEYWORD_ONLY}
    assert set(DIVERGENCE_KEYWORDS) == keyword_only

"""The objective modules' constructors: the loss function's options, same names and defaults.

The modules' ``__init__`` are generated from (or merged with) the loss function's signature by
``Objective``; these tests pin the resulting signatures and the eager option checks.
"""

from __future__ import annotations

import inspect

import pytest

from divergent.objectives import (
    BDKDLoss,
    CrossEntropyLoss,
    DISTLoss,
    DKDLoss,
    KDLoss,
    LSKDLoss,
    OFALoss,
    PLDLoss,
    SinKDLoss,
    bdkd_loss,
    cross_entropy_loss,
    dist_loss,
    dkd_loss,
    kd_loss,
    lskd_loss,
    ofa_loss,
    pld_loss,
    sinkd_loss,
)

PAIRS = [
    (CrossEntropyLoss, cross_entropy_loss, ()),
    (KDLoss, kd_loss, ()),
    (LSKDLoss, lskd_loss, ()),
    (DISTLoss, dist_loss, ()),
    (SinKDLoss, sinkd_loss, ()),
    (PLDLoss, pld_loss, ()),
    (BDKDLoss, bdkd_loss, ()),
    (DKDLoss, dkd_loss, ("warmup_epochs",)),
    (OFALoss, ofa_loss, ("branch_weight", "n_classes", "branch_dims")),
]


def _options(function):
    return [
        (p.name, p.default, p.kind)
        for p in inspect.signature(function).parameters.values()
        if p.kind in (p.KEYWORD_ONLY, p.VAR_KEYWORD) and p.name not in ("mask", "normalizer")
    ]


@pytest.mark.parametrize(
    ("module", "function", "own"), PAIRS, ids=lambda x: getattr(x, "__name__", "")
)
def test_module_signature_is_the_function_options(module, function, own):
    shown = [
        (p.name, p.default, p.kind)
        for p in inspect.signature(module).parameters.values()
        if p.name not in own
    ]
    assert shown == _options(function)
    own_shown = [p.name for p in inspect.signature(module).parameters.values() if p.name in own]
    assert own_shown == list(own)


@pytest.mark.parametrize(
    ("module", "function", "own"), PAIRS, ids=lambda x: getattr(x, "__name__", "")
)
def test_module_stores_defaults_and_rejects_unknown_options(module, function, own):
    obj = module()
    defaults = {n: d for n, d, k in _options(function) if k is inspect.Parameter.KEYWORD_ONLY}
    defaults.pop("reduction")
    assert obj.options == defaults
    assert obj.reduction == "mean"
    takes_params = any(k is inspect.Parameter.VAR_KEYWORD for _, _, k in _options(function))
    # KD passes unknown names to the divergence, which names them (as kd_loss does)
    with pytest.raises(ValueError if takes_params else TypeError, match="not_an_option"):
        module(not_an_option=1)
    with pytest.raises(TypeError):
        module(1.0)


@pytest.mark.parametrize(
    ("module", "bad"),
    [
        (KDLoss, {"temperature": 0.0}),
        (KDLoss, {"teacher_temperature": -1.0}),
        (KDLoss, {"divergence": "js", "beta": 2.0}),
        (LSKDLoss, {"eps": -1.0}),
        (DISTLoss, {"gamma": -1.0}),
        (SinKDLoss, {"max_iter": 0}),
        (PLDLoss, {"kd_weight": float("nan")}),
        (BDKDLoss, {"sharpness": 0.0}),
        (DKDLoss, {"alpha": -1.0}),
        (DKDLoss, {"warmup_epochs": -1}),
        (OFALoss, {"eps": 0.0}),
        (OFALoss, {"branch_weight": -1.0}),
        (CrossEntropyLoss, {"reduction": "avg"}),
    ],
)
def test_bad_option_fails_at_construction(module, bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        module(**bad)


def test_kd_module_keeps_divergence_parameters_in_order():
    loss = KDLoss(divergence="js", temperature=2.0, beta=0.3)
    assert list(loss.options) == [
        "divergence",
        "temperature",
        "scale_by_temperature_squared",
        "ce_weight",
        "kd_weight",
        "teacher_temperature",
        "ignore_index",
        "beta",
    ]

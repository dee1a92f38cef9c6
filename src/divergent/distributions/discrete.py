r"""Closed forms between categorical distributions: every registered divergence, exactly.

``Categorical``, ``OneHotCategorical`` and ``Bernoulli`` (as the two-class distribution
(1 − p, p)) on either side: the probabilities go to :func:`divergent.divergence` with
``inputs="probs"``, so every name of the divergence registry works, plus Bhattacharyya
:math:`D_B = -\log\sum_x\sqrt{p(x)q(x)} = -\log(1 - H^2)`.
"""

from __future__ import annotations

import itertools

import torch
from torch import Tensor
from torch.distributions import Bernoulli, Categorical, Distribution, OneHotCategorical

from divergent.distributions.registry import ClosedFormRequest, register_closed_form
from divergent.functional import divergence

__all__ = ["CATEGORICAL_TYPES", "categorical_probs"]

CATEGORICAL_TYPES: tuple[type[Distribution], ...] = (Categorical, OneHotCategorical, Bernoulli)
FAMILY = "categorical (Categorical, OneHotCategorical, Bernoulli; both sides)"


def categorical_probs(d: Distribution) -> Tensor:
    """Exact probabilities, class axis last (torch clamps probs when deriving logits)."""
    if isinstance(d, Bernoulli):
        p1 = d.probs
        return torch.stack([1.0 - p1, p1], -1)
    base = d._categorical if isinstance(d, OneHotCategorical) else d
    if base._param is base.__dict__.get("probs"):  # built from probabilities
        return base.probs
    return torch.softmax(base.logits, -1)


def _categorical(p: Distribution, q: Distribution, request: ClosedFormRequest) -> Tensor:
    pp, qq = categorical_probs(p), categorical_probs(q)
    if pp.shape[-1] != qq.shape[-1]:
        raise ValueError(
            f"P and Q have different numbers of categories ({pp.shape[-1]} and {qq.shape[-1]})"
        )
    pp, qq = torch.broadcast_tensors(pp, qq)
    if request.name == "bhattacharyya":
        h2 = divergence("hellinger", pp, qq, inputs="probs", reduction="none")
        return -torch.log1p(-h2.clamp_max(1.0))  # BC = 1 − H², D_B = −log BC
    return divergence(request.name, pp, qq, inputs="probs", reduction="none", **request.params)


for _type_p, _type_q in itertools.product(CATEGORICAL_TYPES, repeat=2):
    register_closed_form(_type_p, _type_q, family=FAMILY, label="categorical")(_categorical)

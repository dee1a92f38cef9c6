"""closed_form errors: names, methods, parameters, shapes; the support table."""

from __future__ import annotations

import pytest
import torch
from _distributions_refs import MIXTURES, mix1d, t
from torch.distributions import (
    Categorical,
    Independent,
    Laplace,
    MixtureSameFamily,
    MultivariateNormal,
    Normal,
    kl_divergence,
)

import divergent

F64 = torch.float64


# --------------------------------------------------------------------------------------------
# errors and the support table
# --------------------------------------------------------------------------------------------
def test_errors_name_what_is_supported() -> None:
    p, q = Normal(t(0.0), t(1.0)), Normal(t(1.0), t(1.0))
    with pytest.raises(ValueError, match=r"unknown divergence `wasserstein`.*Gaussian"):
        divergent.closed_form("wasserstein", p, q)
    with pytest.raises(ValueError, match=r"no closed form between Gaussians.*method='mc'"):
        divergent.closed_form("tv", p, q)
    with pytest.raises(ValueError, match="`method`"):
        divergent.closed_form("kl", p, q, method="quadrature")
    with pytest.raises(ValueError, match=r"not available between Normal and Normal.*Gaussian mix"):
        divergent.closed_form("kl", p, q, method="upper")
    with pytest.raises(ValueError, match="`order`"):
        divergent.closed_form("renyi", p, q, order=-1.0)
    with pytest.raises(ValueError, match="unknown parameter"):
        divergent.closed_form("kl", p, q, beta=0.3)
    with pytest.raises(ValueError, match="`num_samples`"):
        divergent.closed_form("kl", p, q, method="mc", num_samples=1)
    with pytest.raises(ValueError, match=r"`P` must be a torch\.distributions"):
        divergent.closed_form("kl", torch.zeros(2), q)
    mix = mix1d(*MIXTURES[0][0])
    with pytest.raises(ValueError, match="no closed form"):
        divergent.closed_form("kl", mix, q, method="exact")
    with pytest.raises(ValueError, match="between Gaussian mixtures"):
        divergent.closed_form("hellinger", mix, q)
    with pytest.raises(ValueError, match="different numbers of categories"):
        divergent.closed_form(
            "kl", Categorical(logits=torch.zeros(3)), Categorical(logits=torch.zeros(4))
        )
    with pytest.raises(ValueError, match="same number of natural parameters"):
        divergent.exponential_family_kl((t([1.0]),), (t([1.0]), t([2.0])), torch.exp)
    with pytest.raises(ValueError, match="shape"):
        divergent.exponential_family_kl(t([1.0]), t([1.0, 2.0]), torch.exp)
    support = divergent.closed_form_support()
    (categorical,) = [names for family, names in support.items() if "OneHotCategorical" in family]
    assert "bhattacharyya" in categorical and "js" in categorical
    assert any("Laplace" in family for family in support)


# --------------------------------------------------------------------------------------------
# the input contract (issue 8 §1): bad parameters and shapes are errors naming the argument,
# also for distributions built with validate_args=False (no NaN, inf or internal crash)
# --------------------------------------------------------------------------------------------
NAN = float("nan")


@pytest.mark.parametrize("name", ["kl", "hellinger", "renyi"])
@pytest.mark.parametrize("method", ["auto", "mc"])
def test_nan_location_names_the_argument(name: str, method: str) -> None:
    good = Normal(t(0.0), t(1.0))
    bad = Normal(t([0.0, NAN]), t(1.0), validate_args=False)
    params = {"order": 0.5} if name == "renyi" else {}
    with pytest.raises(ValueError, match=r"`P\.loc` \(Normal\) contains NaN.*\(1,\)"):
        divergent.closed_form(name, bad, good, method=method, **params)
    with pytest.raises(ValueError, match=r"`Q\.loc` \(Normal\) contains NaN"):
        divergent.closed_form(name, good, bad, method=method, **params)


def test_zero_or_negative_scale_names_the_argument() -> None:
    good = Normal(t(0.0), t(1.0))
    for scale in (0.0, -1.0):
        bad = Normal(t(0.0), t(scale), validate_args=False)
        with pytest.raises(ValueError, match=r"`Q\.scale` \(Normal\) must satisfy GreaterThan"):
            divergent.closed_form("kl", good, bad)
        with pytest.raises(ValueError, match=r"`P\.scale`"):
            divergent.closed_form("hellinger", bad, good)
    lap = Laplace(t(0.0), t(0.0), validate_args=False)
    with pytest.raises(ValueError, match=r"`Q\.scale` \(Laplace\)"):
        divergent.closed_form("kl", good, lap)


def test_nested_distributions_are_checked() -> None:
    ind = Independent(Normal(t([0.0, NAN]), t([1.0, 1.0]), validate_args=False), 1)
    ok = Independent(Normal(t([0.0, 0.0]), t([1.0, 1.0])), 1)
    with pytest.raises(ValueError, match=r"`P\.base_dist\.loc` \(Normal\) contains NaN"):
        divergent.closed_form("kl", ind, ok)
    comps = Normal(t([0.0, 1.0]), t([1.0, 0.0]), validate_args=False)
    mix = MixtureSameFamily(Categorical(probs=t([0.5, 0.5])), comps, validate_args=False)
    with pytest.raises(ValueError, match=r"`Q\.component_distribution\.scale`"):
        divergent.closed_form("kl", Normal(t(0.0), t(1.0)), mix, method="lower")


def test_batch_shapes_must_broadcast() -> None:
    three, two = (
        Normal(torch.zeros(3, dtype=F64), t(1.0)),
        Normal(torch.zeros(2, dtype=F64), t(1.0)),
    )
    for name, method in (("kl", "auto"), ("hellinger", "auto"), ("kl", "mc")):
        with pytest.raises(ValueError, match=r"batch shapes of `P` \(3,\).*`Q` \(2,\).*broadcast"):
            divergent.closed_form(name, three, two, method=method)
    cats = Categorical(logits=torch.zeros(3, 4)), Categorical(logits=torch.zeros(2, 4))
    with pytest.raises(ValueError, match="do not broadcast"):
        divergent.closed_form("kl", *cats)
    lap = Laplace(torch.zeros(2, dtype=F64), t(1.0))
    with pytest.raises(ValueError, match="do not broadcast"):
        divergent.closed_form("kl", three, lap)


def test_event_shapes_must_match() -> None:
    mvn3 = MultivariateNormal(torch.zeros(3, dtype=F64), torch.eye(3, dtype=F64))
    mvn2 = MultivariateNormal(torch.zeros(2, dtype=F64), torch.eye(2, dtype=F64))
    with pytest.raises(ValueError, match=r"`P` is a 3-dimensional Gaussian.*`Q` a 2-dim"):
        divergent.closed_form("kl", mvn3, mvn2)
    with pytest.raises(ValueError, match=r"`P` is a 3-dimensional.*`Q` a 1-dimensional"):
        divergent.closed_form("hellinger", mvn3, Normal(t(0.0), t(1.0)))
    ind3 = Independent(Normal(torch.zeros(3, dtype=F64), t(1.0)), 1)
    ind2 = Independent(Normal(torch.zeros(2, dtype=F64), t(1.0)), 1)
    with pytest.raises(ValueError, match=r"same event shape, got \(3,\).*\(2,\)"):
        divergent.closed_form("kl", ind3, ind2)
    with pytest.raises(ValueError, match=r"same event shape for Monte Carlo"):
        divergent.closed_form("kl", mvn3, mvn2, method="mc")
    # a univariate Normal is a 1-dimensional Gaussian: comparable with a 1-D MultivariateNormal
    mvn1 = MultivariateNormal(torch.zeros(1, dtype=F64), torch.eye(1, dtype=F64) * 4.0)
    got = divergent.closed_form("kl", Normal(t(0.0), t(1.0)), mvn1)
    assert float(got.value) == pytest.approx(
        float(kl_divergence(Normal(t(0.0), t(1.0)), Normal(t(0.0), t(2.0))))
    )

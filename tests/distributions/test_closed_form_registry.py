"""The closed_form pair registry: run-time registration, most specific match, ties, declining.

Every test registers on private subclasses (or restores the registry), so the registrations
do not leak into other tests.
"""

from __future__ import annotations

import math

import pytest
import torch
from _distributions_refs import t
from torch.distributions import Distribution, Gamma, Independent, Laplace, Normal, kl_divergence

import divergent
import divergent.distributions.registry as registry
from divergent.distributions import ClosedFormResult, register_closed_form


@pytest.fixture
def clean_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Registrations made in the test vanish afterwards."""
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))


def _gamma_kl(p: Gamma, q: Gamma) -> torch.Tensor:
    """KL(Gamma(a₁, b₁)‖Gamma(a₂, b₂)) written out (shape a, rate b), independent of torch."""
    a1, b1, a2, b2 = p.concentration, p.rate, q.concentration, q.rate
    return (
        (a1 - a2) * torch.digamma(a1)
        - torch.lgamma(a1)
        + torch.lgamma(a2)
        + a2 * (torch.log(b1) - torch.log(b2))
        + a1 * (b2 - b1) / b1
    )


def test_a_pair_registered_at_run_time_is_used(clean_registry: None) -> None:
    p, q = Gamma(t([2.0, 3.0]), t([1.0, 0.5])), Gamma(t(1.5), t(2.0))
    # before: torch's registry answers through the (Distribution, Distribution) fallback
    before = divergent.closed_form("kl", p, q)
    assert before.method == "torch.kl_divergence"
    with pytest.raises(ValueError, match="no closed form for `hellinger`"):
        divergent.closed_form("hellinger", p, q)
    calls: list[str] = []

    @register_closed_form(Gamma, Gamma, names=("kl", "hellinger"), family="Gamma pairs")
    def gamma_pair(p_, q_, request):
        calls.append(request.name)
        if request.name == "kl":
            return _gamma_kl(p_, q_)
        # H² = 1 − BC with BC = Γ(ā) b₁^{a₁/2} b₂^{a₂/2} / (√(Γ(a₁)Γ(a₂)) b̄^ā), ā, b̄ the means
        a_bar = 0.5 * (p_.concentration + q_.concentration)
        b_bar = 0.5 * (p_.rate + q_.rate)
        log_bc = (
            torch.lgamma(a_bar)
            - 0.5 * (torch.lgamma(p_.concentration) + torch.lgamma(q_.concentration))
            + 0.5 * (p_.concentration * torch.log(p_.rate) + q_.concentration * torch.log(q_.rate))
            - a_bar * torch.log(b_bar)
        )
        return -torch.expm1(log_bc)

    got = divergent.closed_form("kl", p, q)
    assert got.method == "gamma_pair" and got.kind == "exact"
    torch.testing.assert_close(got.value, kl_divergence(p, q), rtol=1e-12, atol=1e-14)
    hel = divergent.closed_form("hellinger", p, q)
    mc = divergent.closed_form("hellinger", p, q, method="mc", seed=0, num_samples=200_000)
    assert bool(((hel.value - mc.value).abs() <= 4 * mc.stderr).all())
    assert calls == ["kl", "hellinger"]
    # a name the registration does not cover falls through to the less specific ones
    assert divergent.closed_form("jeffreys", p, q).method == "torch.kl_divergence"
    assert divergent.closed_form_support()["Gamma pairs"] == ("kl", "hellinger")


class _SpecialNormal(Normal):
    pass


class _VerySpecialNormal(_SpecialNormal):
    pass


def test_the_most_specific_registration_wins(clean_registry: None) -> None:
    register_closed_form(_SpecialNormal, Normal, names=("kl",), label="special_p")(
        lambda p, q, request: torch.full_like(p.loc, 1.0)
    )
    register_closed_form(_SpecialNormal, _SpecialNormal, names=("kl",), label="special_both")(
        lambda p, q, request: torch.full_like(p.loc, 2.0)
    )
    n, s, vs = (
        Normal(t(0.0), t(1.0)),
        _SpecialNormal(t(0.0), t(1.0)),
        _VerySpecialNormal(t(0.0), t(1.0)),
    )
    assert divergent.closed_form("kl", n, n).method == "gaussian"  # untouched
    assert divergent.closed_form("kl", s, n).method == "special_p"  # distance 0 + 0
    assert divergent.closed_form("kl", s, s).method == "special_both"  # 0 + 0 beats 0 + 1
    assert divergent.closed_form("kl", vs, vs).method == "special_both"  # 1 + 1 beats 1 + 2
    assert divergent.closed_form("kl", vs, n).method == "special_p"  # 1 + 0
    assert float(divergent.closed_form("kl", vs, s).value) == 2.0
    # other names still reach the Gaussian closed forms (the new entries cover only "kl")
    assert divergent.closed_form("hellinger", s, s).method == "gaussian"
    # Q more specific than registered, P not matched by (_SpecialNormal, ·): Gaussian stays
    assert divergent.closed_form("kl", n, s).method == "gaussian"


def test_a_tie_between_two_functions_is_an_error(clean_registry: None) -> None:
    register_closed_form(_SpecialNormal, Normal, names=("kl",), label="left")(
        lambda p, q, request: p.loc
    )
    register_closed_form(Normal, _SpecialNormal, names=("kl",), label="right")(
        lambda p, q, request: q.loc
    )
    s = _SpecialNormal(t(0.0), t(1.0))
    with pytest.raises(ValueError, match=r"ambiguous.*register_closed_form\(_SpecialNormal, _Spec"):
        divergent.closed_form("kl", s, s)
    # the same function on both tied pairs is no ambiguity
    fn = registry._REGISTRY[_SpecialNormal, Normal].fn
    register_closed_form(Normal, _SpecialNormal, names=("kl",), label="left")(fn)
    assert divergent.closed_form("kl", s, s).method == "left"


def test_a_declining_function_passes_to_the_next_registration(clean_registry: None) -> None:
    seen: list[str] = []

    @register_closed_form(_SpecialNormal, _SpecialNormal, names=("kl",))
    def picky(p, q, request):
        seen.append("picky")
        return NotImplemented if bool((p.loc != 0).any()) else torch.zeros_like(p.loc)

    zero, one = _SpecialNormal(t(0.0), t(1.0)), _SpecialNormal(t(1.0), t(1.0))
    assert divergent.closed_form("kl", zero, one).method == "picky"
    got = divergent.closed_form("kl", one, zero)  # declined: the Gaussian closed form answers
    assert got.method == "gaussian" and float(got.value) == pytest.approx(0.5)
    assert seen == ["picky", "picky"]
    # Independent(Laplace) matches the Gaussian entry by type, which declines; torch answers
    p = Independent(Laplace(t([0.0, 1.0]), t([1.0, 2.0])), 1)
    q = Independent(Laplace(t([0.5, 0.0]), t([1.5, 1.0])), 1)
    res = divergent.closed_form("kl", p, q)
    assert res.method == "torch.kl_divergence"
    torch.testing.assert_close(res.value, kl_divergence(p, q))


def test_registered_functions_may_return_results_and_extra_methods(clean_registry: None) -> None:
    @register_closed_form(_SpecialNormal, _SpecialNormal, names=("kl",), methods=("bound",))
    def with_bound(p, q, request):
        value = kl_divergence(p, q)
        if request.method == "bound":
            return ClosedFormResult(value + 1, torch.zeros_like(value), "my_bound", "upper_bound")
        return value

    s = _SpecialNormal(t(0.0), t(1.0))
    assert divergent.closed_form("kl", s, s, method="bound").kind == "upper_bound"
    assert divergent.closed_form("kl", s, s).kind == "exact"
    with pytest.raises(ValueError, match=r"method='bound' is not available between Normal"):
        divergent.closed_form("kl", Normal(t(0.0), t(1.0)), Normal(t(0.0), t(1.0)), method="bound")


def test_registration_errors() -> None:
    with pytest.raises(ValueError, match="`type_p`"):
        register_closed_form(int, Normal)
    with pytest.raises(ValueError, match="`type_q`"):
        register_closed_form(Normal, "Normal")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="`names`"):
        register_closed_form(Normal, Normal, names=())
    with pytest.raises(ValueError, match="'mc'"):
        register_closed_form(Normal, Normal, methods=("mc",))


def test_bad_return_type_is_reported(clean_registry: None) -> None:
    register_closed_form(_SpecialNormal, _SpecialNormal, names=("kl",))(
        lambda p, q, request: math.pi
    )
    s = _SpecialNormal(t(0.0), t(1.0))
    with pytest.raises(ValueError, match="returned float; it must return a Tensor"):
        divergent.closed_form("kl", s, s)


def test_every_builtin_family_is_listed() -> None:
    families = list(divergent.closed_form_support())
    assert len(families) == 6
    assert families[-1] == "any pair with sample() and log_prob(), method='mc'"
    assert all(isinstance(reg.type_p, type) for reg in registry.registrations())
    assert any(reg.type_p is Distribution for reg in registry.registrations())

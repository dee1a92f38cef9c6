"""fdistill reproduction: the verdict on literal metrics on both sides of each threshold, the
training loop against a known answer, and a quick run."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from _repro_checks import run_quick

from divergent.papers import fdistill
from divergent.repro import Verdict
from divergent.train.score_distillation import (
    MixtureGenerator,
    ScoreDistillationConfig,
    distill_mixture_generator,
    mixture_log_prob_and_score,
    ring_mixture,
)


def _metrics(rkl=0.0, kl=1.0, js=1.0, gain_kl=(0.05, 0.2), gain_js=(0.05, 0.2)):
    return {
        "low_mode_cover_rate": {"reverse_kl": rkl, "kl": kl, "js": js},
        "kl_gain_kl": {"low": gain_kl[0], "high": gain_kl[1]},
        "kl_gain_js": {"low": gain_js[0], "high": gain_js[1]},
    }


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({}, "held"),
        # reverse KL drop rate 1 − rkl: at the 0.5 bound, and just under it
        ({"rkl": 0.5, "kl": 1.0, "js": 1.0}, "held"),
        ({"rkl": 0.51, "kl": 1.0, "js": 1.0}, "not held"),
        # cover gain of kl / js over reverse KL: 0.5 holds, 0.4 does not
        ({"rkl": 0.2, "kl": 0.7, "js": 0.9}, "held"),
        ({"rkl": 0.2, "kl": 0.69, "js": 0.9}, "not held"),
        ({"rkl": 0.2, "kl": 0.9, "js": 0.69}, "not held"),
        ({"rkl": 0.3, "kl": 0.8, "js": 0.8}, "held"),  # k/n rates: 0.8 − 0.3 < 0.5 in floats
        # KL gain interval: above 0 held; straddling with high ≥ 0.02 inconclusive; high < 0.02
        ({"gain_kl": (-0.01, 0.05)}, "inconclusive"),
        ({"gain_js": (-0.01, 0.021)}, "inconclusive"),
        ({"gain_js": (-0.01, 0.019)}, "not held"),
        ({"gain_kl": (-0.3, -0.1)}, "not held"),
        # coverage fails: not held whatever the KL parts say
        ({"rkl": 1.0, "gain_kl": (-0.01, 0.05)}, "not held"),
    ],
)
def test_verdict(kwargs, expected):
    assert fdistill.verdict(_metrics(**kwargs)) == Verdict(expected)


def test_checks_name_the_parts():
    parts = fdistill.checks(_metrics(gain_kl=(-0.01, 0.05)))
    assert {k: v.value for k, v in parts.items()} == {
        "coverage": "held",
        "kl_kl": "inconclusive",
        "kl_js": "held",
    }


@pytest.mark.parametrize(
    ("mass", "density", "expected"),
    [
        (0.25, 0.25, True),  # both at their bounds
        (0.24, 5.0, False),  # mass just under
        (5.0, 0.24, False),  # density just under (the restated condition)
        (0.56, 0.12, False),  # the diffuse N(0, 1.5² I) student: mass alone would count it
        (math.nan, 1.0, False),
        (1.0, math.nan, False),
    ],
)
def test_covered_needs_mass_and_density(mass, density, expected):
    assert fdistill.covered(mass, density) is expected


def _teacher():
    return ring_mixture(fdistill._teacher_weights(), radius=fdistill.RADIUS, std=fdistill.MODE_STD)


def test_a_diffuse_student_does_not_cover_the_small_mode():
    """Review finding: one broad N(0, 1.5² I) blob puts > 0.25 × 2 % of its mass within 0.6 of
    mode 0 with no component near it; its density there is 0.12 × the teacher's."""
    teacher = _teacher()
    diffuse = MixtureGenerator(torch.zeros(1, 1, 2), torch.full((1, 1), math.log(1.5)))
    ev = fdistill._evaluate(teacher, diffuse, torch.Generator().manual_seed(0), 1)
    mass, density = float(ev["mass_ratio"][0, 0]), float(ev["density_ratio"][0, 0])
    assert mass > fdistill.COVER_FRACTION  # the old, mass-only criterion called it covered
    # exact density ratio at mode 0: N((3,0); 0, 1.5²) against the teacher's mixture there
    q0 = math.exp(-9 / (2 * 2.25)) / (2 * math.pi * 2.25)
    p0 = float(teacher.log_prob_and_score(teacher.means[:1], torch.zeros(1))[0].exp())
    assert density == pytest.approx(q0 / p0, rel=1e-4)
    assert not fdistill.covered(mass, density)
    # a student with one of 16 components on the mode at the teacher's std covers it
    means = 0.5 * torch.randn(1, 16, 2, generator=torch.Generator().manual_seed(1))
    means[0, 0] = teacher.means[0]
    log_stds = torch.zeros(1, 16)
    log_stds[0, 0] = math.log(fdistill.MODE_STD)
    peaked = MixtureGenerator(means, log_stds)
    ev = fdistill._evaluate(teacher, peaked, torch.Generator().manual_seed(0), 1)
    assert fdistill.covered(float(ev["mass_ratio"][0, 0]), float(ev["density_ratio"][0, 0]))
    assert float(ev["density_ratio"][0, 0]) == pytest.approx(
        (1 / 16) / (2 * math.pi * fdistill.MODE_STD**2) / p0, rel=0.05
    )


def test_mixture_log_prob_rejects_unnormalised_weights_and_propagates_nan():
    x, zero = torch.zeros(3, 2), torch.zeros(3)
    means, var = torch.zeros(2, 2), torch.ones(2)
    with pytest.raises(ValueError, match="`log_weights` must be normalised"):
        mixture_log_prob_and_score(x[:1], zero[:1], torch.tensor([5.0]), means[:1], var[:1])
    with pytest.raises(ValueError, match="`log_weights`"):  # a later batch row unnormalised
        mixture_log_prob_and_score(
            x.expand(2, 3, 2),
            zero.expand(2, 3),
            torch.tensor([[math.log(0.5)] * 2, [0.0, 0.0]]),
            means.expand(2, 2, 2),
            var.expand(2, 2),
        )
    # weights normalised up to rounding pass; NaN in a later weight → NaN, not an error
    ok = torch.tensor([math.log(0.3), math.log(0.7)])
    lp, _ = mixture_log_prob_and_score(x, zero, ok, means, var)
    assert bool(torch.isfinite(lp).all())
    lp, _ = mixture_log_prob_and_score(x, zero, torch.tensor([0.0, math.nan]), means, var)
    assert bool(torch.isnan(lp).all())


def test_mixture_score_matches_autograd_and_density_integrates():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 5, 2, generator=g, dtype=torch.float64, requires_grad=True)
    noise = torch.rand(2, 5, generator=g, dtype=torch.float64)
    log_w = torch.log_softmax(torch.randn(2, 3, generator=g, dtype=torch.float64), -1)
    means = torch.randn(2, 3, 2, generator=g, dtype=torch.float64)
    var = torch.rand(2, 3, generator=g, dtype=torch.float64) + 0.1
    lp, score = mixture_log_prob_and_score(x, noise, log_w, means, var)
    (auto,) = torch.autograd.grad(lp.sum(), x)
    torch.testing.assert_close(score, auto)
    # against torch.distributions for one mixture at σ = 0.5
    mix = torch.distributions.MixtureSameFamily(
        torch.distributions.Categorical(logits=log_w[0]),
        torch.distributions.Independent(
            torch.distributions.Normal(means[0], (var[0] + 0.25).sqrt()[:, None].expand(3, 2)), 1
        ),
    )
    lp0, _ = mixture_log_prob_and_score(
        x[0], torch.full((5,), 0.25, dtype=torch.float64), log_w[0], means[0], var[0]
    )
    torch.testing.assert_close(lp0, mix.log_prob(x[0]))


def test_reverse_kl_distillation_recovers_a_single_gaussian():
    """One component, teacher N((1, 0), 0.5² I): reverse KL (VSD) is minimised at the teacher."""
    teacher = ring_mixture([1.0], radius=1.0, std=0.5)  # one mode at (1, 0)
    student = MixtureGenerator(torch.zeros(1, 1, 2), torch.zeros(1, 1))
    cfg = ScoreDistillationConfig(steps=150, batch_size=128, lr=0.05)
    distill_mixture_generator(
        teacher, student, ["reverse_kl"], cfg, generator=torch.Generator().manual_seed(0)
    )
    torch.testing.assert_close(
        student.means.detach()[0, 0], torch.tensor([1.0, 0.0]), atol=0.08, rtol=0
    )
    assert abs(math.exp(float(student.log_stds.detach()[0, 0])) - 0.5) < 0.08


def test_loop_rejects_mismatched_divergences():
    student = MixtureGenerator(torch.zeros(2, 1, 2), torch.zeros(2, 1))
    with pytest.raises(ValueError, match="divergences"):
        distill_mixture_generator(ring_mixture([1.0]), student, ["kl"])


def test_quick_run_is_consistent(tmp_path: Path) -> None:
    result = run_quick("fdistill", tmp_path)
    m = result.metrics
    n = m["n_seeds"]
    for d in fdistill.DIVERGENCES:
        per = m["per_seed"][d]
        assert len(per["kl_teacher_student"]) == n
        assert all(k > 0 and math.isfinite(k) for k in per["kl_teacher_student"])
        assert all(0 <= c <= fdistill.N_MODES for c in per["modes_covered"])
        pairs = zip(per["low_mode_mass_ratio"], per["low_mode_density_ratio"], strict=True)
        flags = [fdistill.covered(a, b) for a, b in pairs]
        assert per["low_mode_covered"] == flags
        assert m["low_mode_cover_rate"][d] == pytest.approx(sum(flags) / n)
        assert all(r >= 0 and math.isfinite(r) for r in per["low_mode_density_ratio"])
    gain = [
        a - b
        for a, b in zip(
            m["per_seed"]["reverse_kl"]["kl_teacher_student"],
            m["per_seed"]["js"]["kl_teacher_student"],
        )
    ]
    assert m["kl_gain_js"]["mean"] == pytest.approx(sum(gain) / n)
    assert m["checks"] == {k: v.value for k, v in fdistill.checks(m).items()}

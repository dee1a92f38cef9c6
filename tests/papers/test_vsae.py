"""vsae reproduction: the verdict on literal metrics on both sides of each threshold, and a
quick run."""

from __future__ import annotations

from pathlib import Path

import pytest
from _repro_checks import run_quick

from divergent.papers import vsae
from divergent.papers._stats import paired_ci
from divergent.repro import Verdict

SOME_DEAD = {"sae": {"dead_fraction": [0.2, 0.25]}, "vsae": {"dead_fraction": [0.3, 0.25]}}


def _metrics(dead: tuple, fvu: tuple, per_seed: dict = SOME_DEAD) -> dict:
    ci = lambda lo, hi: {"mean": (lo + hi) / 2, "low": lo, "high": hi}  # noqa: E731
    return {
        "paired": {"vsae_minus_sae": {"dead_fraction": ci(*dead), "fvu": ci(*fvu)}},
        "per_seed": per_seed,
    }


@pytest.mark.parametrize(
    ("dead", "fvu", "expected"),
    [
        ((0.01, 0.05), (0.1, 0.5), "held"),
        ((0.001, 0.05), (0.001, 0.2), "held"),
        # dead latents: the interval must lie above 0; not held below the 0.02 margin
        ((-0.001, 0.05), (0.1, 0.5), "inconclusive"),
        ((-0.01, 0.021), (0.1, 0.5), "inconclusive"),
        ((-0.01, 0.019), (0.1, 0.5), "not held"),
        ((0.0, 0.0), (0.1, 0.5), "not held"),
        # reconstruction: FVU interval above 0; not held below the 0.01 margin
        ((0.01, 0.05), (-0.001, 0.2), "inconclusive"),
        ((0.01, 0.05), (-0.02, 0.011), "inconclusive"),
        ((0.01, 0.05), (-0.02, 0.009), "not held"),
        ((-0.05, -0.01), (-0.3, -0.1), "not held"),
        # one part not held wins over the other's inconclusive
        ((-0.01, 0.019), (-0.02, 0.3), "not held"),
        # JSON metrics (strings), NaN → inconclusive
        (("0.01", "0.05"), ("0.1", "0.5"), "held"),
        (("nan", "nan"), (0.1, 0.5), "inconclusive"),
    ],
)
def test_verdict(dead: tuple, fvu: tuple, expected: str) -> None:
    if isinstance(dead[0], str):
        m = {
            "paired": {
                "vsae_minus_sae": {
                    "dead_fraction": dict(zip(("low", "high"), dead)),
                    "fvu": dict(zip(("low", "high"), fvu)),
                }
            },
            "per_seed": {m: {"dead_fraction": ["0.0", "0.25"]} for m in ("sae", "vsae")},
        }
    else:
        m = _metrics(dead, fvu)
    assert vsae.verdict(m) == Verdict(expected)


def _dead(sae: list, vsae: list) -> dict:
    return {"sae": {"dead_fraction": sae}, "vsae": {"dead_fraction": vsae}}


@pytest.mark.parametrize(
    ("per_seed", "expected"),
    [
        # no latent died in either model in any seed: the run cannot show the effect
        (_dead([0.0, 0.0, 0.0], [0.0, 0.0, 0.0]), "inconclusive"),
        (_dead(["0.0", "0.0"], ["0.0", "0.0"]), "inconclusive"),  # JSON strings
        # one dead latent anywhere (a later seed, either model): judged on the interval
        (_dead([0.0, 0.0, 1 / 128], [0.0, 0.0, 0.0]), "not held"),
        (_dead([0.0, 0.0, 0.0], [0.0, 0.0, 1 / 128]), "not held"),
    ],
)
def test_no_dead_latent_in_either_model_is_inconclusive(per_seed: dict, expected: str) -> None:
    # the quick run's case: a difference of exactly 0 [0, 0] with a clearly worse FVU
    m = _metrics((0.0, 0.0), (0.5, 0.8), per_seed)
    assert vsae.checks(m)["worse_reconstruction"] is Verdict.HELD
    assert vsae.checks(m)["more_dead_latents"] == Verdict(expected)
    assert vsae.verdict(m) == Verdict(expected)
    assert vsae.dead_latents_seen(m) is (expected != "inconclusive")


def test_no_dead_latents_does_not_hide_a_measured_fvu_failure() -> None:
    m = _metrics((0.0, 0.0), (-0.3, -0.1), _dead([0.0], [0.0]))
    assert vsae.verdict(m) is Verdict.NOT_HELD


def test_checks_name_both_parts() -> None:
    c = vsae.checks(_metrics((0.01, 0.05), (-0.02, 0.009)))
    assert c == {"more_dead_latents": Verdict.HELD, "worse_reconstruction": Verdict.NOT_HELD}


def test_quick_run_is_consistent(tmp_path: Path) -> None:
    result = run_quick("vsae", tmp_path)
    m = result.metrics
    per, mean = m["per_seed"], m["mean"]
    assert set(per) == {"sae", "vsae"}
    d = paired_ci(per["vsae"]["fvu"], per["sae"]["fvu"])
    assert m["paired"]["vsae_minus_sae"]["fvu"]["low"] == pytest.approx(d["low"])
    for method in per.values():
        assert len(method["fvu"]) == m["n_seeds"]
        assert all(0.0 <= v <= 1.0 for v in method["dead_fraction"])
        assert all(-1.0 <= v <= 1.0 for v in method["max_cosine"])
        assert all(v <= 4.0 + 1e-9 for v in method["l0"])  # at most k = 4 active latents
    assert per["sae"]["fvu"] == pytest.approx(per["sae"]["fvu_sampled"])  # deterministic SAE
    assert mean["sae"]["fvu"] < 0.8  # the SAE learns something even in quick mode
    assert m["checks"] == {k: v.value for k, v in vsae.checks(m).items()}
    assert m["dead_latents_seen"] == vsae.dead_latents_seen(m)
    assert "Criterion restated after the first full run" in result.summary
    if not m["dead_latents_seen"]:  # quick mode: too short for latents to die
        assert m["checks"]["more_dead_latents"] == "inconclusive"

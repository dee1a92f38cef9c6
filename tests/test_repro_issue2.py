"""The first three reproductions (scaling, asymptotics, mode_demo): quick runs and their parts.

The quick runs check the outcome is well formed and that ``held`` is exactly what the
reported numbers and the thresholds stated in each module imply (not whether the paper's
claim holds: that is the reproduction's finding). The helpers are checked against
independent references (numpy power iteration, brute-force enumeration over sequences,
scipy's rel_entr).
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch
from _repro_checks import run_quick
from scipy.special import comb, rel_entr

from divergent.analysis.synthetic_source import PowerLawSource
from divergent.papers import asymptotics, mode_demo, scaling
from divergent.rl.best_of_n import best_of_n_kl, tilted_kl


# --------------------------------------------------------------------------------------------
# asymptotics
# --------------------------------------------------------------------------------------------
def test_asymptotics_quick_outcome_is_computed_from_its_numbers(tmp_path: Path) -> None:
    out = run_quick("asymptotics", tmp_path)
    m = out["metrics"]
    a, b, c = m["A_bound"], m["B_curves"], m["C_asymptotics"]
    # recompute the flags from the raw numbers
    excess = max(
        v - bnd
        for vals in [*a["kl_by_k"].values(), a["kl_ties_random_tiebreak"]]
        for v, bnd in zip(vals, a["bound"])
    )
    assert (excess <= asymptotics.BOUND_SLACK) == a["bound_holds"]
    assert a["loose_with_ties"] == (a["rel_gap_ties"][-1] >= asymptotics.LOOSE_REL_GAP)
    gaps = [t - r for t, r in zip(b["tilted_reward_at_same_kl"], b["bon_reward"])]
    assert b["tilted_dominates"] == (min(gaps) >= -asymptotics.OPTIMALITY_SLACK)
    assert len(c["m"]) == len(c["rel_kl_to_tilted"]) >= 3
    flags = [
        a["bound_holds"], a["approached_at_largest_k"], a["loose_few_outcomes"],
        a["loose_with_ties"], b["tilted_dominates"], c["rel_kl_converges"],
        c["rel_reward_gap_converges"],
    ]
    assert out["held"] == all(flags)
    # numbers that are theorems must come out right whatever the claim's verdict
    assert a["bound_holds"] and b["tilted_dominates"]


def test_compositions_and_the_sequence_level_reduction() -> None:
    """BoN / tilted KL over compositions equal those over all A^m sequences."""
    comps = asymptotics._compositions(5, 3)
    assert comps.shape == (comb(7, 2, exact=True), 3)
    assert (comps.sum(1) == 5).all() and len({tuple(r) for r in comps}) == len(comps)
    rng = np.random.default_rng(0)
    a, m = 3, 4
    tok_p, tok_r = rng.dirichlet(np.ones(a)), rng.standard_normal(a)
    log_c, rew_c = asymptotics._sequence_level_base(tok_p, tok_r, m)
    assert float(torch.logsumexp(log_c, 0)) == pytest.approx(0.0, abs=1e-12)
    seqs = np.array(list(itertools.product(range(a), repeat=m)))
    log_s = torch.from_numpy(np.log(tok_p)[seqs].sum(1))
    # rewards from token counts: summing in sequence order would round permutations
    # differently and break their ties (ties are compared exactly)
    counts = np.stack([(seqs == i).sum(1) for i in range(a)], axis=1)
    rew_s = torch.from_numpy(counts @ tok_r)
    for n in (2, 5, 40):
        assert float(best_of_n_kl(log_s, rew_s, n, inputs="log_probs")) == pytest.approx(
            float(best_of_n_kl(log_c, rew_c, n, inputs="log_probs")), rel=1e-10
        )
    assert float(tilted_kl(log_s, rew_s, 0.7, inputs="log_probs")) == pytest.approx(
        float(tilted_kl(log_c, rew_c, 0.7, inputs="log_probs")), rel=1e-10
    )


# --------------------------------------------------------------------------------------------
# mode_demo
# --------------------------------------------------------------------------------------------
def test_mode_demo_quick_outcome_is_computed_from_its_numbers(tmp_path: Path) -> None:
    out = run_quick("mode_demo", tmp_path)
    m = out["metrics"]
    for name, fit in m["fits"].items():
        covered = [sum(x >= mode_demo.COVER_MASS for x in row) for row in fit["mode_mass"]]
        assert covered == fit["modes_covered"], name
    fwd, rev = m["fit_forward_kl_mean"], m["fit_reverse_kl_mean"]
    assert m["js_between_in_forward_kl"] == (fwd["forward_kl"] <= fwd["js"] <= fwd["reverse_kl"])
    assert m["js_between_in_reverse_kl"] == (rev["reverse_kl"] <= rev["js"] <= rev["forward_kl"])
    assert m["reverse_kl_picks_one_mode"] == all(
        c == 1 for c in m["fits"]["reverse_kl"]["modes_covered"]
    )
    flags = [m["reverse_kl_picks_one_mode"], m["forward_kl_covers_all"],
             m["js_between_in_forward_kl"], m["js_between_in_reverse_kl"]]
    assert out["held"] == all(flags)
    # each objective's fits minimise their own objective best among the three families
    for own in ("forward_kl", "reverse_kl"):
        best_own = min(m["fits"][own][own])
        for other in mode_demo.OBJECTIVES:
            assert best_own <= min(m["fits"][other][own]) + 1e-6


def test_mode_demo_directions_follow_the_convention() -> None:
    grid = torch.linspace(-12.0, 12.0, 241, dtype=torch.float64)
    target = mode_demo._target_logits(grid).unsqueeze(0)
    model = mode_demo._model_logits(
        grid, torch.tensor([2.0], dtype=torch.float64), torch.tensor([0.3], dtype=torch.float64)
    )
    p = torch.softmax(target, -1).numpy()[0]
    q = torch.softmax(model, -1).numpy()[0]
    rev = float(mode_demo._loss_rows("reverse_kl", target, model))
    fwd = float(mode_demo._loss_rows("forward_kl", target, model))
    js_val = float(mode_demo._loss_rows("js", target, model))
    mid = 0.5 * (p + q)
    assert rev == pytest.approx(rel_entr(q, p).sum(), rel=1e-9)  # KL(model ‖ target)
    assert fwd == pytest.approx(rel_entr(p, q).sum(), rel=1e-9)  # KL(target ‖ model)
    assert js_val == pytest.approx(
        0.5 * rel_entr(p, mid).sum() + 0.5 * rel_entr(q, mid).sum(), rel=1e-9
    )


# --------------------------------------------------------------------------------------------
# scaling
# --------------------------------------------------------------------------------------------
def _check_sweep(s: dict, entropy: float) -> None:
    """The flags and derived numbers of one sweep recomputed from its raw numbers."""
    assert s["recovers_entropy"] == (
        abs(s["fit"]["l_inf"] - entropy) / entropy <= scaling.L_INF_REL_TOL
    )
    # the exact losses obey CE = H + KL
    np.testing.assert_allclose(np.array(s["loss"]) - np.array(s["kl"]), entropy, atol=1e-9)
    xs = s["params"] if "params" in s else s["tokens"]
    f = s["fit"]
    np.testing.assert_allclose(
        s["fitted_reducible"], (f["x0"] / np.array(xs, dtype=float)) ** f["alpha"], rtol=1e-9
    )
    rel = [abs(p - k) / k for p, k in zip(s["fitted_reducible"], s["kl"])]
    np.testing.assert_allclose(s["reducible_rel_error"], rel, rtol=1e-12)
    assert s["reducible_median_rel_error"] == pytest.approx(float(np.median(rel)), rel=1e-12)
    assert s["reducible_tracks_kl"] == (
        float(np.median(rel)) <= scaling.REDUCIBLE_MEDIAN_REL_TOL
    )


def test_scaling_quick_outcome_is_computed_from_its_numbers(tmp_path: Path) -> None:
    out = run_quick("scaling", tmp_path)
    m = out["metrics"]
    size, data = m["model_size"], m["data_size"]
    _check_sweep(size, m["sources"]["model_size"]["entropy"])
    _check_sweep(data, m["sources"]["data_size"]["entropy"])
    assert size["all_converged"] == all(
        d <= scaling.CONVERGED_REL for d in size["last_chunk_rel_decrease"]
    )
    assert m["identity_ok"] == (m["identity_max_abs_error"] <= scaling.IDENTITY_TOL)
    z = [(v["heldout_ce"] - v["exact_ce"]) / v["se"] for v in m["heldout"].values()]
    assert max(abs(x) for x in z) == pytest.approx(m["heldout_max_abs_z"], rel=1e-9)
    assert m["heldout_ok"] == (m["heldout_max_abs_z"] <= scaling.EMPIRICAL_SE)
    flags = [m["identity_ok"], m["heldout_ok"], size["all_converged"]] + [
        m[k][f] for k in ("model_size", "data_size")
        for f in ("recovers_entropy", "reducible_tracks_kl")
    ]
    assert out["held"] == all(flags)
    # the design: no student represents the source (rank ≤ K/16), and more rank never hurts
    src = m["sources"]["model_size"]
    assert max(size["ranks"]) <= (src["rank"] + 1) / 16
    assert all(b <= a * (1 + 1e-9) for a, b in itertools.pairwise(size["kl"]))
    assert min(size["kl"]) > 1e-3
    # theorems whatever the verdict: CE = H + KL exactly; the source inside the class is
    # represented exactly from its own rank on (the capacity threshold of the old design)
    assert m["identity_ok"]
    inside = m["controls"]["inside_model_class"]
    assert inside["source"]["rank"] == 4
    for r, k in zip(inside["ranks"], inside["kl"]):
        assert (abs(k) < 1e-10) == (r >= 4)
    assert m["controls"]["peaked_teacher"] == "full mode only"
    flat = m["controls"]["flat_contexts"]
    _check_sweep(flat, flat["source"]["entropy"])
    assert "capacity threshold" in m["previous_design"]


def test_low_rank_training_reaches_the_same_optimum_from_random_starts() -> None:
    """SVD start vs small random start: the same KL, converged, below the truncated SVD."""
    src = PowerLawSource(24, 24, seed=1)
    for rank in (1, 3):
        from_svd = scaling._train_low_rank(src, rank, max_chunks=40)
        from_random = scaling._train_low_rank(src, rank, max_chunks=40, init="random", seed=2)
        assert from_svd["converged"] and from_random["converged"]
        kl_svd = src.evaluate(from_svd["logits"])["kl"]
        kl_random = src.evaluate(from_random["logits"])["kl"]
        assert kl_random == pytest.approx(kl_svd, rel=1e-4)
        trace = from_svd["kl_trace"]
        assert trace[-1] <= trace[0] and all(b <= a + 1e-15 for a, b in itertools.pairwise(trace))
        assert trace[-1] == pytest.approx(kl_svd, rel=1e-10)
        assert from_svd["params"] == rank * (24 + 24) + 24
        assert from_svd["max_abs_grad"] < 1e-4
    e, w, b = scaling._svd_init(src, 1)
    assert e.shape == (24, 1) and w.shape == (1, 24) and b.shape == (24,)


def test_svd_start_is_exact_for_a_source_inside_the_class() -> None:
    src = PowerLawSource(16, 16, rank=2, context_exponent=1.0, seed=0)
    e, w, b = scaling._svd_init(src, 2)
    assert src.evaluate(e @ w + b)["kl"] == pytest.approx(0.0, abs=1e-13)
    run = scaling._train_low_rank(src, 2, max_chunks=4)
    assert src.evaluate(run["logits"])["kl"] == pytest.approx(0.0, abs=1e-13)
    e1, w1, b1 = scaling._svd_init(src, 1)
    assert src.evaluate(e1 @ w1 + b1)["kl"] > 1e-3  # one rank short: not representable


def test_kt_estimator_matches_hand_count() -> None:
    counts = np.array([[0, 2], [1, 0]])
    got = scaling._kt_logits(counts).exp().numpy()
    np.testing.assert_allclose(got, [[0.5 / 3, 2.5 / 3], [1.5 / 2, 0.5 / 2]])


def test_data_sweep_uses_nested_samples_and_learns() -> None:
    """Each D adds fresh pairs to the previous sample: counts grow, the KL falls on average."""
    from divergent.repro import ReproContext

    src = PowerLawSource(50, 4, context_exponent=1.0, seed=0)
    ctx = ReproContext(id="scaling", quick=True, out_dir=Path("."))
    sizes = [16, 64, 256, 1024, 4096]
    losses, kls, models = scaling._data_sweep(src, sizes, seeds=3, ctx=ctx, offset=0)
    assert len(models) == len(sizes)
    np.testing.assert_allclose(np.array(losses) - np.array(kls), src.entropy(), atol=1e-12)
    assert all(b < a for a, b in itertools.pairwise(kls))
    # the seed-0 model at D = 16 is the add-½ estimate of the first 16 pairs of that stream
    counts = src.sample_counts(16, ctx.numpy_rng(0))
    torch.testing.assert_close(models[0], scaling._kt_logits(counts))

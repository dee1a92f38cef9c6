"""The first three reproductions (scaling, asymptotics, mode_demo): quick runs and their parts.

The quick runs check the outcome is well formed and that ``held`` is exactly what the
reported numbers and the thresholds stated in each module imply (not whether the paper's
claim holds: that is the reproduction's finding). The helpers are checked against
independent references (numpy power iteration, brute-force enumeration over sequences,
scipy's rel_entr).
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.special import comb, rel_entr

from divergent.metrics.best_of_n import best_of_n_kl, tilted_kl
from divergent.papers import asymptotics, mode_demo, scaling
from divergent.repro import get_reproduction, run_reproduction


def _quick(rid: str, tmp_path: Path) -> dict:
    result = run_reproduction(rid, quick=True, out_dir=tmp_path)
    assert result.status in ("held", "not held"), result.error
    assert result.held is (result.status == "held")
    assert result.summary and result.plots
    for rel in result.plots:
        assert (tmp_path / rel).stat().st_size > 1000  # a real PNG
    rep = get_reproduction(rid)
    assert rep.claim.strip().endswith(".") and rep.claim.count(". ") == 0  # one sentence
    if not result.held:
        assert "NOT held" in result.summary
    return {"held": result.held, "metrics": result.metrics}


# --------------------------------------------------------------------------------------------
# asymptotics
# --------------------------------------------------------------------------------------------
def test_asymptotics_quick_outcome_is_computed_from_its_numbers(tmp_path: Path) -> None:
    out = _quick("asymptotics", tmp_path)
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
    out = _quick("mode_demo", tmp_path)
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
def test_scaling_quick_outcome_is_computed_from_its_numbers(tmp_path: Path) -> None:
    out = _quick("scaling", tmp_path)
    m = out["metrics"]
    h = m["source"]["entropy_rate"]
    for key in ("model_size", "data_size"):
        s = m[key]
        assert s["recovers_entropy"] == (
            abs(s["fit"]["l_inf"] - h) / h <= scaling.L_INF_REL_TOL
        )
        # the exact losses obey CE = H + KL
        np.testing.assert_allclose(np.array(s["loss"]) - np.array(s["kl"]), h, atol=1e-9)
        rel = [abs(p - k) / k for p, k in zip(s["fitted_reducible"], s["kl"])]
        assert s["reducible_tracks_kl"] == (
            float(np.median(rel)) <= scaling.REDUCIBLE_MEDIAN_REL_TOL
        )
    assert m["identity_ok"] == (m["identity_max_abs_error"] <= scaling.IDENTITY_TOL)
    flags = [m["identity_ok"], m["heldout_ok"]] + [
        m[k][f] for k in ("model_size", "data_size")
        for f in ("recovers_entropy", "reducible_tracks_kl")
    ]
    assert out["held"] == all(flags)


def test_markov_source_against_numpy_power_iteration() -> None:
    rng = np.random.default_rng(4)
    src = scaling._MarkovSource(3, 2, 0.5, rng)
    # context chain by explicit (x1, x2) -> (x2, x3) transitions
    trans = np.zeros((9, 9))
    for x1, x2, x3 in itertools.product(range(3), repeat=3):
        trans[3 * x1 + x2, 3 * x2 + x3] += src.table[3 * x1 + x2, x3]
    mu = np.full(9, 1 / 9)
    for _ in range(5000):
        mu = mu @ trans
    np.testing.assert_allclose(src.mu, mu, atol=1e-12)
    entropy = -np.sum(mu[:, None] * src.table * np.log(src.table))
    exact = src.exact(src.log_table)
    assert exact["entropy_rate"] == pytest.approx(entropy, rel=1e-10)
    assert exact["kl"] == pytest.approx(0.0, abs=1e-12)
    # a uniform model: CE = log A
    assert src.exact(torch.zeros(9, 3, dtype=torch.float64))["cross_entropy"] == pytest.approx(
        math.log(3), rel=1e-12
    )
    # samples follow the chain: empirical transition frequencies of a long run
    ctxs, syms = src.sample(64, 2000, np.random.default_rng(5))
    counts = np.zeros((9, 3))
    np.add.at(counts, (ctxs.ravel(), syms.ravel()), 1)
    freq = counts / counts.sum(1, keepdims=True)
    assert np.abs(freq - src.table).max() < 0.03
    x = src.one_hot_contexts()
    assert x.shape == (9, 6) and (x.sum(1) == 2).all()
    assert int(x[7, :3].argmax()) == 2 and int(x[7, 3:].argmax()) == 1  # 7 = (2, 1)


def test_packed_mlps_are_independent_models() -> None:
    """Perturbing one packed model's weights leaves the other models' outputs unchanged."""
    widths = [1, 3, 2]
    net = scaling._PackedMLPs(8, 4, widths, torch.Generator().manual_seed(0))
    assert net.params == [8 * h + h + h * 4 + 4 for h in widths]
    x = torch.eye(8, dtype=torch.float64)
    with torch.no_grad():
        before = net.logits(x)
        mine = net.owner == 1
        net.w1[:, mine] += 1.0
        net.b1[mine] -= 0.5
        net.w2[mine] *= 3.0
        net.b2[1] += 2.0
        after = net.logits(x)
    torch.testing.assert_close(after[:, [0, 2]], before[:, [0, 2]], rtol=0, atol=0)
    assert (after[:, 1] - before[:, 1]).abs().max() > 0.1
    # training lowers every model's exact loss, the wider model reaching the lower one
    src = scaling._MarkovSource(4, 1, 0.5, np.random.default_rng(0))
    start = scaling._train_mlps(src, [1, 4], steps=1, seed=0)[2]
    models, _, final, at_90 = scaling._train_mlps(src, [1, 4], steps=300, seed=0)
    assert all(f <= a + 1e-12 for f, a in zip(final, at_90))
    assert all(f < s for f, s in zip(final, start))
    assert final[1] < final[0]
    assert [m.shape for m in models] == [(4, 4), (4, 4)]
    assert final == pytest.approx([src.exact(m)["cross_entropy"] for m in models], rel=1e-12)


def test_kt_estimator_matches_hand_count() -> None:
    src = scaling._MarkovSource(2, 1, 1.0, np.random.default_rng(0))
    ctxs = np.array([[0, 0, 1]])
    syms = np.array([[1, 1, 0]])
    got = scaling._kt_logits(src, ctxs, syms).exp().numpy()
    np.testing.assert_allclose(got, [[0.5 / 3, 2.5 / 3], [1.5 / 2, 0.5 / 2]])

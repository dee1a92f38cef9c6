"""The knowledge-tracing simulator, fit, prediction, GRU baseline and AUC (small and fast)."""

from __future__ import annotations

import math

import pytest
import torch
from sklearn.metrics import roc_auc_score

from divergent.objectives.knowledge_tracing import ou_traits
from divergent.train.knowledge_tracing import (
    binary_auc,
    fit_gru_forecaster,
    fit_knowledge_tracing,
    gru_predict,
    predict_answers,
    simulate_learners,
)


def test_binary_auc_matches_sklearn_with_ties():
    g = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 6, (300,), generator=g).double() / 5
    labels = torch.randint(0, 2, (300,), generator=g)
    assert binary_auc(scores, labels) == pytest.approx(roc_auc_score(labels, scores))
    assert binary_auc(scores, torch.ones(300)) != binary_auc(scores, torch.ones(300))  # NaN


@pytest.mark.parametrize("position", [0, 1, 3])
def test_binary_auc_of_a_nan_score_is_nan(position):
    scores = torch.tensor([0.1, 0.4, 0.35, 0.8])
    scores[position] = float("nan")
    assert math.isnan(binary_auc(scores, torch.tensor([0, 0, 1, 1])))
    labels = torch.tensor([0.0, 0.0, 1.0, 1.0])
    labels[position] = float("nan")
    assert math.isnan(binary_auc(torch.tensor([0.1, 0.4, 0.35, 0.8]), labels))


@pytest.mark.parametrize("bad", [0.5, 2.0, -1.0])
def test_binary_auc_refuses_labels_outside_0_1(bad):
    labels = torch.tensor([0.0, 0.0, 1.0, 1.0])
    labels[2] = bad
    with pytest.raises(ValueError, match="`labels`"):
        binary_auc(torch.tensor([0.1, 0.4, 0.35, 0.8]), labels)
    with pytest.raises(ValueError, match="`scores` and `labels`"):
        binary_auc(torch.tensor([0.1, 0.4, 0.35]), torch.tensor([0, 0, 1, 1]))
    # bool and integer labels are fine
    scores = torch.tensor([0.1, 0.4, 0.35, 0.8])
    assert binary_auc(scores, torch.tensor([0, 0, 1, 1]).bool()) == 0.75


def test_simulator_is_stationary_ou():
    g = torch.Generator().manual_seed(1)
    d = simulate_learners(4000, 3, 1, generator=g, trait_scale=(0.0, 0.0, 0.0))
    speed, mean, vol = ou_traits(d.traits[:1])
    var = float(vol**2 / (2 * speed))
    for n in range(3):  # the stationary law at every step
        z = d.states[:, n, 0]
        assert float(z.mean()) == pytest.approx(float(mean), abs=4 * (var / 4000) ** 0.5)
        assert float(z.var()) == pytest.approx(var, rel=0.1)
    assert torch.all(d.gaps[:, 0] == 0) and torch.all(d.gaps[:, 1:] > 0)
    assert set(d.answers.unique().tolist()) <= {0.0, 1.0}
    with pytest.raises(ValueError, match="`n_concepts`"):
        simulate_learners(2, 3, 0)


def test_fit_predict_and_gru_shapes_and_sense():
    g = torch.Generator().manual_seed(2)
    d = simulate_learners(8, 16, 2, generator=g)
    hist, fut = d.split(12)
    assert hist.n_steps == 12 and fut.n_steps == 4
    fit = fit_knowledge_tracing(hist, steps=15, generator=g, learn_prior=False)
    assert fit.state_coupling is not None and fit.elbo_history[-1] > fit.elbo_history[0]
    assert torch.equal(fit.prior_loc, torch.tensor([-1.2039728, 0.0, 0.0]))  # kept fixed
    p = predict_answers(fit, fut.concepts, fut.gaps, generator=g)
    assert p.shape == (8, 4) and torch.all((p > 0) & (p < 1))
    model = fit_gru_forecaster(hist, horizon=3, epochs=3, generator=g)
    q = gru_predict(model, hist, fut.concepts, fut.gaps)
    assert q.shape == (8, 4) and torch.all((q > 0) & (q < 1))
    with pytest.raises(ValueError, match="`learn_prior`"):
        fit_knowledge_tracing(hist, steps=1, learn_prior=1)
    with pytest.raises(ValueError, match="`horizon`"):
        fit_gru_forecaster(hist, horizon=12)

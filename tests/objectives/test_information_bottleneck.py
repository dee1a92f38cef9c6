"""CS-IB loss (divergent.objectives.information_bottleneck) against a float64 numpy reference.

The reference writes out the Gram-matrix formulas of the official code (``loss_cs.py``:
``CS_Div`` and ``CS_QMI`` / ``CS_QMI_normalized``) directly, in natural logs, with both
denominators of the conditional CS estimator.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.distance import cdist

from divergent.objectives.information_bottleneck import (
    CSIBLoss,
    CSIBTerms,
    cs_ib_loss,
    cs_ib_terms,
)


def _gram(a: np.ndarray, b: np.ndarray, sigma: float) -> np.ndarray:
    return np.exp(-cdist(a, b, "sqeuclidean") / (2 * sigma**2))


def _ref_conditional_cs(x, y, yh, sx, sy, denominator):
    k = _gram(x, x, sx)
    l1, l2, l21 = _gram(y, y, sy), _gram(yh, yh, sy), _gram(yh, y, sy)
    den = k.sum(1) ** 2 if denominator == "squared_sum" else (k**2).sum(1)
    s1 = ((k * l1).sum(1) / den).sum()
    s2 = ((k * l2).sum(1) / den).sum()
    s21 = ((k * l21).sum(1) / den).sum()
    return np.log(s1) + np.log(s2) - 2 * np.log(s21)


def _ref_qmi(x, t, sx, st):
    n = x.shape[0]
    k, q = _gram(x, x, sx), _gram(t, t, st)
    return (
        np.log(np.trace(k @ q) / n**2)
        + np.log(k.sum() * q.sum() / n**4)
        - 2 * np.log(np.ones(n) @ k @ q @ np.ones(n) / n**3)
    )


def _data(n=40, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3))
    y = np.sin(x[:, :1]) + 0.1 * rng.normal(size=(n, 1))
    yh = y + 0.3 * rng.normal(size=(n, 1))
    t = np.tanh(x @ rng.normal(size=(3, 5)))
    return x, y, yh, t


@pytest.mark.parametrize("denominator", ["squared_sum", "sum_of_squares"])
@pytest.mark.parametrize("normalized", [True, False])
def test_terms_match_the_gram_matrix_reference(denominator: str, normalized: bool) -> None:
    x, y, yh, t = _data()
    sx, sy, st, beta = 1.3, 0.7, 0.9, 0.05
    terms = cs_ib_terms(
        *(torch.from_numpy(v) for v in (x, y, yh, t)),
        beta,
        sigma_x=sx,
        sigma_y=sy,
        sigma_t=st,
        denominator=denominator,
        normalized=normalized,
    )
    pred = _ref_conditional_cs(x, y, yh, sx, sy, denominator)
    comp = _ref_qmi(x, t, sx, st)
    if normalized:
        comp = comp / np.sqrt(_ref_qmi(x, x, sx, sx) * _ref_qmi(t, t, st, st))
    assert isinstance(terms, CSIBTerms)
    assert float(terms.prediction) == pytest.approx(pred, rel=1e-10, abs=1e-12)
    assert float(terms.compression) == pytest.approx(comp, rel=1e-10)
    assert float(terms.total) == pytest.approx(pred + beta * comp, rel=1e-10)


def test_the_two_denominators_differ_and_loss_is_the_total() -> None:
    x, y, yh, t = (torch.from_numpy(v) for v in _data())
    a = cs_ib_terms(x, y, yh, t, 0.1, denominator="squared_sum")
    b = cs_ib_terms(x, y, yh, t, 0.1, denominator="sum_of_squares")
    assert abs(float(a.prediction) - float(b.prediction)) > 1e-3
    assert float(cs_ib_loss(x, y, yh, t, 0.1)) == pytest.approx(float(a.total), rel=1e-12)


def test_beta_zero_skips_compression_and_perfect_prediction_is_zero() -> None:
    x, y, _, t = (torch.from_numpy(v) for v in _data())
    terms = cs_ib_terms(x, y, y.clone(), t, 0.0)
    assert float(terms.compression) == 0.0
    assert abs(float(terms.prediction)) < 1e-12
    assert float(terms.total) == float(terms.prediction)


def test_gradients_flow_to_predictions_and_representation() -> None:
    x, y, yh, t = (torch.from_numpy(v) for v in _data(n=12))
    yh = yh.clone().requires_grad_(True)
    t = t.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda a, b: cs_ib_loss(x, y, a, b, 0.3, sigma_t=0.8), (yh, t), eps=1e-6, atol=1e-6
    )
    loss = cs_ib_loss(x, y, yh, t, 0.3)
    loss.backward()
    assert float(yh.grad.abs().sum()) > 0 and float(t.grad.abs().sum()) > 0


def test_one_dimensional_targets_and_module_wrapper() -> None:
    x, y, yh, t = (torch.from_numpy(v) for v in _data())
    flat = cs_ib_loss(x, y[:, 0], yh[:, 0], t, 0.02)
    assert float(flat) == pytest.approx(float(cs_ib_loss(x, y, yh, t, 0.02)), rel=1e-12)
    module = CSIBLoss(0.02, denominator="sum_of_squares")
    out = module(x, y, yh, t)
    ref = cs_ib_terms(x, y, yh, t, 0.02, denominator="sum_of_squares")
    assert float(out) == pytest.approx(float(ref.total), rel=1e-12)
    assert module.last_terms is not None and not module.last_terms.total.requires_grad
    assert "sum_of_squares" in repr(module)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"beta": -0.1}, "beta"),
        ({"beta": float("nan")}, "beta"),
        ({"denominator": "squares"}, "denominator"),
        ({"normalized": 1}, "normalized"),
        ({"sigma_x": 0.0}, "sigma_x"),
    ],
)
def test_invalid_parameters_raise(kwargs: dict, match: str) -> None:
    x, y, yh, t = (torch.from_numpy(v) for v in _data(n=6))
    call = {"beta": 0.1, **kwargs}
    with pytest.raises(ValueError, match=match):
        cs_ib_terms(x, y, yh, t, **call)


def test_invalid_shapes_raise() -> None:
    x, y, yh, t = (torch.from_numpy(v) for v in _data(n=6))
    with pytest.raises(ValueError, match="same number of rows"):
        cs_ib_terms(x, y, yh, t[:5])
    with pytest.raises(ValueError, match="torch tensor"):
        cs_ib_terms(x.numpy(), y, yh, t)
    with pytest.raises(ValueError, match="shape"):
        cs_ib_terms(x[None], y, yh, t)
    with pytest.raises(ValueError, match="at least 2"):
        cs_ib_terms(x[:1], y[:1], yh[:1], t[:1])
    with pytest.raises(ValueError, match="beta"):
        CSIBLoss(beta=-1.0)
    with pytest.raises(ValueError, match="sigma_t"):
        CSIBLoss(sigma_t=-2.0)


def test_docstring_examples_run() -> None:
    import doctest

    import divergent.objectives.information_bottleneck as module

    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted >= 3 and result.failed == 0

"""SFDA prior-KL + entropy loss against a float64 numpy/scipy reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.special import rel_entr, softmax

from divergent.objectives.domain_adaptation import (
    PriorKLEntropyLoss,
    class_proportions,
    prior_kl_entropy_loss,
    prior_kl_entropy_terms,
)


def _reference(z: np.ndarray, prior: np.ndarray, w: np.ndarray, direction: str, lam_e, lam_p):
    p = softmax(z, axis=-1)
    entropy = float(np.mean(-(w * p * np.log(p)).sum(-1)))
    tau_hat = p.mean(0)
    if direction == "reverse":
        kl = float(rel_entr(tau_hat, prior).sum())
    else:
        kl = float(rel_entr(prior, tau_hat).sum())
    return lam_e * entropy + lam_p * kl, entropy, kl, tau_hat


@pytest.mark.parametrize("direction", ["reverse", "forward"])
@pytest.mark.parametrize("seed", [0, 1])
def test_matches_float64_reference(direction: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    z = rng.normal(scale=2.0, size=(17, 5))
    prior = rng.dirichlet(np.ones(5))
    w = rng.uniform(0.1, 1.0, size=5)
    t = prior_kl_entropy_terms(
        torch.tensor(z),
        torch.tensor(prior),
        class_weights=torch.tensor(w),
        direction=direction,
        entropy_weight=0.7,
        prior_weight=1.9,
    )
    total, entropy, kl, tau_hat = _reference(z, prior, w, direction, 0.7, 1.9)
    assert t.total.dtype == torch.float64
    assert float(t.total) == pytest.approx(total, rel=1e-10)
    assert float(t.entropy) == pytest.approx(entropy, rel=1e-10)
    assert float(t.prior_kl) == pytest.approx(kl, rel=1e-9, abs=1e-12)
    np.testing.assert_allclose(t.proportions.numpy(), tau_hat, rtol=1e-12)


def test_gradcheck() -> None:
    z = torch.randn(6, 4, dtype=torch.float64, requires_grad=True)
    prior = torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64)
    for direction in ("reverse", "forward"):
        assert torch.autograd.gradcheck(
            lambda x, d=direction: prior_kl_entropy_loss(x, prior, direction=d), (z,)
        )


def test_mask_equals_subset_and_module_equals_function() -> None:
    z = torch.randn(3, 4, 5)
    mask = torch.rand(3, 4) > 0.4
    mask[0, 0] = True
    prior = torch.full((5,), 0.2)
    full = prior_kl_entropy_loss(z, prior, mask=mask)
    subset = prior_kl_entropy_loss(z[mask], prior)
    assert torch.allclose(full, subset)
    module = PriorKLEntropyLoss(prior, entropy_weight=0.5)
    assert torch.allclose(
        module(z, mask), prior_kl_entropy_loss(z, prior, mask=mask, entropy_weight=0.5)
    )
    assert torch.allclose(class_proportions(z, mask=mask), torch.softmax(z[mask], -1).mean(0))


def test_entropy_alone_prefers_collapse_and_prior_term_prefers_the_prior() -> None:
    # confident predictions all on class 0 have ~0 entropy but a large KL to a uniform prior
    collapsed = torch.tensor([[20.0, 0.0, 0.0]]).repeat(6, 1)
    balanced = torch.eye(3).repeat(2, 1) * 20.0
    prior = torch.full((3,), 1 / 3)
    tc = prior_kl_entropy_terms(collapsed, prior)
    tb = prior_kl_entropy_terms(balanced, prior)
    assert tc.entropy < 1e-6 and tb.entropy < 1e-6
    assert float(tc.prior_kl) == pytest.approx(math.log(3), rel=1e-5)
    assert float(tb.prior_kl) == pytest.approx(0.0, abs=1e-6)


def test_zero_prior_class_reverse_is_infinite_forward_is_finite() -> None:
    z = torch.zeros(2, 3)
    prior = torch.tensor([0.5, 0.5, 0.0])
    assert torch.isinf(prior_kl_entropy_terms(z, prior, direction="reverse").prior_kl)
    assert torch.isfinite(prior_kl_entropy_terms(z, prior, direction="forward").prior_kl)


def test_nan_logits_give_nan() -> None:
    z = torch.randn(4, 3)
    z[1, 2] = float("nan")
    assert torch.isnan(prior_kl_entropy_loss(z, torch.full((3,), 1 / 3)))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"prior": torch.tensor([0.5, 0.6, 0.1])}, "sum to 1"),
        ({"prior": torch.tensor([0.5, 0.5])}, "one proportion per class"),
        ({"prior": torch.tensor([1.2, -0.1, -0.1])}, "non-negative"),
        ({"direction": "sideways"}, "direction"),
        ({"entropy_weight": -1.0}, "entropy_weight"),
        ({"class_weights": torch.tensor([1.0, -1.0, 1.0])}, "class_weights"),
        ({"mask": torch.zeros(4, dtype=torch.bool)}, "no row is kept"),
    ],
)
def test_bad_input_names_the_argument(kwargs: dict, match: str) -> None:
    args = {"prior": torch.full((3,), 1 / 3)} | kwargs
    prior = args.pop("prior")
    with pytest.raises(ValueError, match=match):
        prior_kl_entropy_terms(torch.randn(4, 3), prior, **args)

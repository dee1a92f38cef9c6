"""Accuracy near P = Q against a 40-digit mpmath reference computed from the *same* logits.

Divergences written as sums of non-negative terms (js, the α family including α = 1 and 0,
jeffreys, tv, hellinger, χ²) keep a small *relative* error as P → Q: the only error left is
the rounding of the log-probabilities, which enters multiplied by the (small) log-ratio.
kl, reverse_kl, skew_kl and renyi sum terms of both signs (their row functions must stay
Σ q f(p/q) term by term on unnormalised inputs, see named.py) and are accurate to an
*absolute* error of a few eps·(1 + |log p|) only; both guarantees are checked here.
"""

from __future__ import annotations

import math

import mpmath
import pytest
import torch

import divergent

mpmath.mp.dps = 40


def _mp_softmax(row: list[float]) -> list[mpmath.mpf]:
    xs = [mpmath.mpf(v) for v in row]
    m = max(xs)
    e = [mpmath.exp(x - m) for x in xs]
    z = mpmath.fsum(e)
    return [v / z for v in e]


def _mp_value(name: str, p: list[mpmath.mpf], q: list[mpmath.mpf], **params: float) -> float:
    log = mpmath.log
    if name == "kl":
        return float(mpmath.fsum(a * log(a / b) for a, b in zip(p, q)))
    if name == "reverse_kl":
        return float(mpmath.fsum(b * log(b / a) for a, b in zip(p, q)))
    if name == "js":
        beta = mpmath.mpf(params["beta"])
        m = [beta * a + (1 - beta) * b for a, b in zip(p, q)]
        return float(
            mpmath.fsum(
                beta * a * log(a / c) + (1 - beta) * b * log(b / c) for a, b, c in zip(p, q, m)
            )
        )
    if name == "skew_kl":
        al = mpmath.mpf(params["alpha"])
        return float(mpmath.fsum(a * log(a / (al * a + (1 - al) * b)) for a, b in zip(p, q)))
    if name == "jeffreys":
        return float(mpmath.fsum((a - b) * log(a / b) for a, b in zip(p, q)))
    if name == "tv":
        return float(mpmath.fsum(abs(a - b) for a, b in zip(p, q)) / 2)
    if name == "hellinger":
        return float(mpmath.fsum((mpmath.sqrt(a) - mpmath.sqrt(b)) ** 2 for a, b in zip(p, q)) / 2)
    if name == "pearson_chi2":
        return float(mpmath.fsum((a - b) ** 2 / b for a, b in zip(p, q)))
    if name == "alpha":
        a_ = mpmath.mpf(params["alpha"])
        if a_ == 1:
            return _mp_value("kl", p, q)
        if a_ == 0:
            return _mp_value("reverse_kl", p, q)
        s = mpmath.fsum(a**a_ * b ** (1 - a_) for a, b in zip(p, q))
        return float((s - 1) / (a_ * (a_ - 1)))
    if name == "renyi":
        o = mpmath.mpf(params["order"])
        s = mpmath.fsum(a**o * b ** (1 - o) for a, b in zip(p, q))
        return float(log(s) / (o - 1))
    raise KeyError(name)


def _near_pair(delta: float, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = 3.0 * torch.randn(12, 8, generator=g, dtype=torch.float64)
    y = x + delta * torch.randn(12, 8, generator=g, dtype=torch.float64)
    return x.to(dtype), y.to(dtype)


def _errors(
    name: str, params: dict[str, float], delta: float, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    p, q = _near_pair(delta, dtype)
    got = divergent.divergence(name, p, q, reduction="none", **params).double()
    want = torch.tensor(
        [
            _mp_value(name, _mp_softmax(a.tolist()), _mp_softmax(b.tolist()), **params)
            for a, b in zip(p.double(), q.double())
        ],
        dtype=torch.float64,
    )
    assert bool((want > 0).all())
    return (got - want).abs(), (got - want).abs() / want


ACCURATE = [
    ("js", {"beta": 0.5}),
    ("js", {"beta": 0.1}),
    ("jeffreys", {}),
    ("tv", {}),
    ("hellinger", {}),
    ("pearson_chi2", {}),
    ("alpha", {"alpha": 0.5}),
    ("alpha", {"alpha": 1.0}),
    ("alpha", {"alpha": 1.0 - 1e-4}),
    ("alpha", {"alpha": 0.0}),
    ("alpha", {"alpha": 2.0}),
    ("alpha", {"alpha": -1.0}),
]
ABSOLUTE_ONLY = [
    ("kl", {}),
    ("reverse_kl", {}),
    ("skew_kl", {"alpha": 0.1}),
    ("renyi", {"order": 0.5}),
    ("renyi", {"order": 2.0}),
]


@pytest.mark.parametrize(("name", "params"), ACCURATE, ids=[f"{n}{p}" for n, p in ACCURATE])
def test_relative_accuracy_near_equality(name: str, params: dict[str, float]) -> None:
    # float32, log-ratios ~1e-2: rounding the log-probs alone costs ~1e-4 relative
    _, rel32 = _errors(name, params, 1e-2, torch.float32)
    assert float(rel32.max()) < 2e-3, rel32
    # float64, log-ratios ~1e-6 (values ~1e-12): still ~1e-9 relative
    _, rel64 = _errors(name, params, 1e-6, torch.float64)
    assert float(rel64.max()) < 1e-7, rel64


@pytest.mark.parametrize(
    ("name", "params"),
    ACCURATE + ABSOLUTE_ONLY,
    ids=[f"{n}{p}" for n, p in ACCURATE + ABSOLUTE_ONLY],
)
def test_absolute_accuracy_near_equality(name: str, params: dict[str, float]) -> None:
    eps32 = torch.finfo(torch.float32).eps
    abs32, _ = _errors(name, params, 1e-3, torch.float32)
    assert float(abs32.max()) < 32 * eps32 * (1 + 12.0), abs32  # |logits| ≲ 12
    abs64, _ = _errors(name, params, 1e-5, torch.float64)
    assert float(abs64.max()) < 32 * 2.2e-16 * (1 + 12.0), abs64


def test_alpha_at_one_is_an_accurate_kl_near_equality() -> None:
    """On normalised inputs alpha(α=1) is KL; it is the accurate way to evaluate it near P = Q."""
    p, q = _near_pair(1e-2, torch.float64)
    torch.testing.assert_close(
        divergent.alpha(p, q, alpha=1.0, reduction="none"),
        divergent.kl(p, q, reduction="none"),
        rtol=1e-9,
        atol=1e-15,
    )
    assert math.isfinite(float(divergent.alpha(p, q, alpha=1.0)))

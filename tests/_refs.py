"""Independent float64 references for the core divergences (numpy / scipy, textbook formulas).

Everything here works on *probability vectors* (numpy float64, zeros allowed) and is written
from the definitions, not from the library's log-domain row functions, so the tests compare
two independent implementations. Conventions: 0·log 0 = 0, p·log(p/0) = +∞ for p > 0.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from scipy.special import rel_entr

from divergent.categorical import list_divergences
from divergent.testing import parameter_cases

# (name, params) cases from the registry: every entry at the values of
# `divergent.testing.parameter_cases` (default, range ends, kernel switches, integer orders,
# extremes, neighbours of the default), so a new entry or parameter is covered without edits
CASES: list[tuple[str, dict[str, float]]] = [
    (d.name, case) for d in list_divergences() for case in parameter_cases(d)
]


def case_id(case: tuple[str, dict[str, float]]) -> str:
    name, params = case
    return name + "".join(f"-{k}={v:g}" for k, v in params.items())


CASE_IDS = [case_id(c) for c in CASES]


def _kl(p: np.ndarray, q: np.ndarray) -> float:
    return float(rel_entr(p, q).sum())


def _js(p: np.ndarray, q: np.ndarray, beta: float) -> float:
    m = beta * p + (1.0 - beta) * q
    return beta * _kl(p, m) + (1.0 - beta) * _kl(q, m)


def _chi2(p: np.ndarray, q: np.ndarray) -> float:
    """Σ (p − q)²/q over the union of supports; +∞ if p > 0 = q somewhere."""
    if np.any((p > 0) & (q == 0)):
        return math.inf
    keep = q > 0
    return float(np.sum((p[keep] - q[keep]) ** 2 / q[keep]))


def _alpha(p: np.ndarray, q: np.ndarray, a: float) -> float:
    """(Σ p^α q^{1−α} − 1)/(α(α−1)), Cichocki–Amari; α = 1, 0 are KL(P‖Q), KL(Q‖P)."""
    if a == 1.0:
        return _kl(p, q)
    if a == 0.0:
        return _kl(q, p)
    keep = (p > 0) | (q > 0)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        s = float(np.sum(p[keep] ** a * q[keep] ** (1.0 - a)))
    return (s - 1.0) / (a * (a - 1.0))


def _renyi(p: np.ndarray, q: np.ndarray, a: float) -> float:
    """Rényi divergence of order a (van Erven & Harremoës 2014, Def. 2 and Thm. 4/6)."""
    if a == 1.0:
        return _kl(p, q)
    p_only = np.any((p > 0) & (q == 0))
    both = (p > 0) & (q > 0)
    if a == 0.0:
        mass = float(q[p > 0].sum())
        return math.inf if mass == 0.0 else -math.log(mass)
    if math.isinf(a):
        if p_only:
            return math.inf
        return float(np.log(np.max(p[both] / q[both])))
    if a > 1.0 and p_only:
        return math.inf
    s = float(np.sum(p[both] ** a * q[both] ** (1.0 - a)))
    if s == 0.0:
        return math.inf
    return math.log(s) / (a - 1.0)


def reference(name: str, p: np.ndarray, q: np.ndarray, **params: float) -> float:
    """D(P‖Q) for one pair of probability vectors, from the textbook formula."""
    if name == "kl":
        return _kl(p, q)
    if name == "reverse_kl":
        return _kl(q, p)
    if name == "js":
        return _js(p, q, params.get("beta", 0.5))
    if name == "skew_kl":
        a = params.get("alpha", 0.1)
        return _kl(p, a * p + (1.0 - a) * q)
    if name == "skew_reverse_kl":
        a = params.get("alpha", 0.1)
        return _kl(q, a * q + (1.0 - a) * p)
    if name == "jeffreys":
        return _kl(p, q) + _kl(q, p)
    if name == "tv":
        return 0.5 * float(np.abs(p - q).sum())
    if name == "hellinger":
        return 0.5 * float(np.sum((np.sqrt(p) - np.sqrt(q)) ** 2))
    if name == "pearson_chi2":
        return _chi2(p, q)
    if name == "neyman_chi2":
        return _chi2(q, p)
    if name == "alpha":
        return _alpha(p, q, params.get("alpha", 0.5))
    if name == "renyi":
        return _renyi(p, q, params.get("order", 0.5))
    if name == "soft_cross_entropy":
        if np.any((p > 0) & (q == 0)):
            return math.inf
        keep = p > 0
        return float(-np.sum(p[keep] * np.log(q[keep])))
    raise KeyError(name)


def reference_rows(name: str, p: np.ndarray, q: np.ndarray, **params: float) -> np.ndarray:
    """Row-wise :func:`reference` over the last axis of two 2-d probability arrays."""
    return np.array([reference(name, a, b, **params) for a, b in zip(p, q)])


def probs64(logits: torch.Tensor) -> np.ndarray:
    """softmax in float64 numpy (−inf logits give exact zeros)."""
    return torch.softmax(logits.detach().double(), dim=-1).numpy()


# generators written from the textbook definitions, for `divergent.f_divergence`
def user_generator(name: str, **params: float) -> Callable[[torch.Tensor], torch.Tensor]:
    """A plain callable f(t) for each named f-divergence (as a user would write it)."""
    if name == "kl":
        return lambda t: t * torch.log(t)
    if name == "reverse_kl":
        return lambda t: -torch.log(t)
    if name == "js":
        b = params["beta"]
        return lambda t: b * t * torch.log(t) - (b * t + 1 - b) * torch.log(b * t + 1 - b)
    if name == "skew_kl":
        a = params["alpha"]
        return lambda t: t * torch.log(t) - t * torch.log(a * t + 1 - a)
    if name == "skew_reverse_kl":
        a = params["alpha"]
        return lambda t: -torch.log(a + (1 - a) * t)
    if name == "jeffreys":
        return lambda t: (t - 1) * torch.log(t)
    if name == "tv":
        return lambda t: 0.5 * torch.abs(t - 1)
    if name == "hellinger":
        return lambda t: 0.5 * (torch.sqrt(t) - 1) ** 2
    if name == "pearson_chi2":
        return lambda t: (t - 1) ** 2
    if name == "neyman_chi2":
        return lambda t: (t - 1) ** 2 / t
    if name == "alpha":
        a = params["alpha"]
        if a == 1.0:
            return lambda t: t * torch.log(t) - t + 1
        if a == 0.0:
            return lambda t: t - 1 - torch.log(t)
        return lambda t: (t**a - a * t - (1 - a)) / (a * (a - 1))
    raise KeyError(name)


def is_f_case(name: str) -> bool:
    return name not in ("renyi", "soft_cross_entropy")

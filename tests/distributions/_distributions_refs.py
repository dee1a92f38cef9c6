"""Shared references for the closed_form tests: quadrature (scipy) and 1-D Gaussian mixtures."""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy import integrate, stats
from torch.distributions import Categorical, MixtureSameFamily, Normal

F64 = torch.float64


def t(x: float | list) -> torch.Tensor:
    return torch.tensor(x, dtype=F64)


def quad(f, lo: float = -math.inf, hi: float = math.inf) -> float:
    val, _ = integrate.quad(f, lo, hi, limit=400, epsabs=1e-13, epsrel=1e-11)
    return val


# --------------------------------------------------------------------------------------------
# 1-D references by quadrature
# --------------------------------------------------------------------------------------------
def quad_divergence(name: str, logp, logq, params: dict) -> float:
    lim = 60.0  # both densities are < e^{-1000} beyond: finite range, no inf·0 in the tails
    kl = lambda lp, lq: quad(lambda x: math.exp(lp(x)) * (lp(x) - lq(x)), -lim, lim)  # noqa: E731

    def affinity(a: float) -> float:
        return quad(lambda x: math.exp(a * logp(x) + (1 - a) * logq(x)), -lim, lim)

    if name == "kl":
        return kl(logp, logq)
    if name == "reverse_kl":
        return kl(logq, logp)
    if name == "jeffreys":
        return kl(logp, logq) + kl(logq, logp)
    if name == "renyi":
        return math.log(affinity(params["order"])) / (params["order"] - 1)
    if name == "alpha":
        a = params["alpha"]
        return (affinity(a) - 1) / (a * (a - 1))
    if name == "hellinger":
        return 1 - affinity(0.5)
    if name == "bhattacharyya":
        return -math.log(affinity(0.5))
    if name == "pearson_chi2":
        return affinity(2.0) - 1
    if name == "neyman_chi2":
        return affinity(-1.0) - 1
    raise AssertionError(name)


def mix1d(w: list, mu: list, sd: list) -> MixtureSameFamily:
    return MixtureSameFamily(Categorical(probs=t(w)), Normal(t(mu), t(sd)))


def mix_logpdf(w: list, mu: list, sd: list):
    from scipy.special import logsumexp

    return lambda x: float(logsumexp(np.log(w) + stats.norm.logpdf(x, mu, sd)))


MIXTURES = [
    (([0.3, 0.7], [-1.0, 2.0], [0.5, 1.0]), ([0.5, 0.2, 0.3], [-0.5, 1.0, 3.0], [1.0, 0.5, 0.7])),
    (([0.5, 0.5], [-2.0, 2.0], [0.6, 0.6]), ([0.5, 0.5], [-1.8, 2.3], [0.7, 0.5])),
    (([0.2, 0.3, 0.5], [0.0, 1.0, 4.0], [1.0, 0.3, 0.8]), ([1.0], [1.5], [2.0])),
]

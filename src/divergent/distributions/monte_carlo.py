r"""Monte Carlo estimates of D(P‖Q) with their standard errors, for any pair that samples.

Every name reduces to an expectation under P (or Q): KL(P‖Q) = E_P[log p/q]; the affinities
:math:`\int p^a q^{1-a} = \mathbb E_P[(q/p)^{1-a}]` give Rényi, α, Hellinger, Bhattacharyya
and χ² (standard errors by the delta method); TV = ½ E_P|1 − q/p|; JS_β from samples of both
sides. The estimate needs ``sample`` and ``log_prob`` on both distributions and the same event
shape; it is not differentiable.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import torch
from torch import Tensor
from torch.distributions import Distribution

from divergent.distributions.registry import ClosedFormResult

__all__ = ["MC_NAMES", "monte_carlo"]

MC_NAMES: tuple[str, ...] = (
    "kl",
    "reverse_kl",
    "jeffreys",
    "renyi",
    "alpha",
    "hellinger",
    "bhattacharyya",
    "pearson_chi2",
    "neyman_chi2",
    "tv",
    "js",
)


def _device(d: Distribution) -> torch.device:
    """The device of the first tensor a distribution holds (nested ones included)."""
    for value in vars(d).values():
        if isinstance(value, Tensor):
            return value.device
        if isinstance(value, Distribution):
            return _device(value)
    return torch.device("cpu")


def monte_carlo(
    name: str,
    p: Distribution,
    q: Distribution,
    params: Mapping[str, float],
    *,
    num_samples: int,
    seed: int | None,
) -> ClosedFormResult:
    """D(P‖Q) by Monte Carlo with ``num_samples`` draws, seeded without touching the global RNG.

    Args:
        name: one of :data:`MC_NAMES`.
        p, q: distributions with ``sample`` and ``log_prob`` and the same event shape.
        params: the divergence's validated parameters.
        num_samples: draws per side.
        seed: seeds the draws (the global RNG state is restored afterwards); ``None`` uses the
            global stream.

    Returns:
        A :class:`ClosedFormResult` of kind ``"monte_carlo"`` with its standard error.
    """
    if name not in MC_NAMES:
        raise ValueError(f"method='mc' supports {', '.join(MC_NAMES)}; got `{name}`")
    if tuple(p.event_shape) != tuple(q.event_shape):
        raise ValueError(
            f"`P` and `Q` must have the same event shape for Monte Carlo, got "
            f"{tuple(p.event_shape)} ({type(p).__name__}) and {tuple(q.event_shape)} "
            f"({type(q).__name__})"
        )
    device = _device(p)
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices, enabled=seed is not None):
        if seed is not None:
            torch.manual_seed(seed)
        with torch.no_grad():
            return _estimate(name, p, q, params, num_samples)


def _mean_se(x: Tensor) -> tuple[Tensor, Tensor]:
    n = x.shape[0]
    return x.mean(0), x.std(0, correction=1) / math.sqrt(n)


def _log_mean_exp(z: Tensor) -> tuple[Tensor, Tensor]:
    """log of the sample mean of e^z and the standard error of that mean relative to it."""
    n = z.shape[0]
    zmax = z.amax(0)
    zmax = torch.where(torch.isfinite(zmax), zmax, torch.zeros_like(zmax))
    y = torch.exp(z - zmax)
    mean = y.mean(0)
    rel_se = y.std(0, correction=1) / math.sqrt(n) / mean
    return torch.log(mean) + zmax, rel_se


def _result(value: Tensor, stderr: Tensor) -> ClosedFormResult:
    return ClosedFormResult(value, stderr, "monte_carlo", "monte_carlo")


def _log_ratio_under(x_dist: Distribution, y_dist: Distribution, n: int) -> Tensor:
    """log(y/x) at n samples of x."""
    x = x_dist.sample((n,))
    return y_dist.log_prob(x) - x_dist.log_prob(x)


def _kl_family(name: str, p: Distribution, q: Distribution, n: int) -> ClosedFormResult:
    """KL = E_P[log p/q], reverse KL = E_Q[log q/p], Jeffreys = both (independent samples)."""
    parts = []
    if name in ("kl", "jeffreys"):
        parts.append(_mean_se(-_log_ratio_under(p, q, n)))
    if name in ("reverse_kl", "jeffreys"):
        parts.append(_mean_se(-_log_ratio_under(q, p, n)))
    value = sum(v for v, _ in parts)
    se = torch.sqrt(sum(s.square() for _, s in parts))
    return _result(value, se)  # type: ignore[arg-type]


def _js(p: Distribution, q: Distribution, beta: float, n: int) -> ClosedFormResult:
    """JS_β = β E_P[log p/m] + (1−β) E_Q[log q/m], m = βp + (1−β)q."""
    xp = p.sample((n,))
    xq = q.sample((n,))

    def log_m(x: Tensor) -> Tensor:
        return torch.logaddexp(math.log(beta) + p.log_prob(x), math.log1p(-beta) + q.log_prob(x))

    vp, sp = _mean_se(p.log_prob(xp) - log_m(xp))
    vq, sq = _mean_se(q.log_prob(xq) - log_m(xq))
    value = beta * vp + (1 - beta) * vq
    se = torch.sqrt((beta * sp).square() + ((1 - beta) * sq).square())
    return _result(value, se)


# affinity-based names: the exponent a of ∫ p^a q^{1−a}, and (log A, A, se(A)/A) ↦ (value, se)
_AffinityMap = Callable[[Tensor, Tensor, Tensor], tuple[Tensor, Tensor]]
_AFFINITIES: dict[str, tuple[Callable[[Mapping[str, float]], float], _AffinityMap]] = {
    "hellinger": (lambda prm: 0.5, lambda la, aff, rse: (-torch.expm1(la), aff * rse)),
    "bhattacharyya": (lambda prm: 0.5, lambda la, aff, rse: (-la, rse)),
    "pearson_chi2": (lambda prm: 2.0, lambda la, aff, rse: (torch.expm1(la), aff * rse)),
}


def _affinity_divergence(
    name: str, p: Distribution, q: Distribution, params: Mapping[str, float], n: int
) -> ClosedFormResult:
    """Rényi, α, Hellinger, Bhattacharyya, χ² from ∫ p^a q^{1−a} = E_P[(q/p)^{1−a}].

    Standard errors by the delta method from the relative standard error of the mean.
    """
    if name == "renyi":
        a = params["order"]
        if math.isinf(a):
            raise ValueError("renyi order=inf cannot be estimated by Monte Carlo here")
    elif name == "alpha":
        a = params["alpha"]
    else:
        a = _AFFINITIES[name][0](params)
    log_aff, rel_se = _log_mean_exp((1.0 - a) * _log_ratio_under(p, q, n))
    aff = log_aff.exp()
    if name == "renyi":
        if a == 0.0:  # −log Q(supp P) = 0: full-support families
            return _result(torch.zeros_like(log_aff), torch.zeros_like(log_aff))
        return _result(log_aff / (a - 1.0), rel_se / abs(a - 1.0))
    if name == "alpha":
        scale = 1.0 / (a * (a - 1.0))
        return _result(torch.expm1(log_aff) * scale, aff * rel_se * abs(scale))
    return _result(*_AFFINITIES[name][1](log_aff, aff, rel_se))


def _estimate(
    name: str, p: Distribution, q: Distribution, params: Mapping[str, float], n: int
) -> ClosedFormResult:
    # reduce to a form whose estimator has finite variance more often, or to the KL
    if name == "neyman_chi2":  # χ²(Q‖P): sample Q
        name, p, q = "pearson_chi2", q, p
    if name == "alpha" and params["alpha"] < 0:  # D_α(P‖Q) = D_{1−α}(Q‖P)
        name, p, q, params = "alpha", q, p, {"alpha": 1.0 - params["alpha"]}
    if (name == "renyi" and params["order"] == 1.0) or (name == "alpha" and params["alpha"] == 1):
        name = "kl"
    if name == "alpha" and params["alpha"] == 0.0:
        name = "reverse_kl"
    if name in ("kl", "reverse_kl", "jeffreys"):
        return _kl_family(name, p, q, n)
    if name == "js":
        return _js(p, q, params["beta"], n)
    if name == "tv":  # ½ E_P|1 − q/p|
        value, se = _mean_se(0.5 * (-torch.expm1(_log_ratio_under(p, q, n))).abs())
        return _result(value, se)
    return _affinity_divergence(name, p, q, params, n)

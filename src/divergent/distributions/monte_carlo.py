r"""Monte Carlo estimates of D(P‖Q) with their standard errors, for any pair that samples.

Every name reduces to an expectation under P (or Q): KL(P‖Q) = E_P[log p/q]; the affinities
:math:`\int p^a q^{1-a} = \mathbb E_P[(q/p)^{1-a}]` give Rényi, α, Hellinger, Bhattacharyya
and χ² (standard errors by the delta method); TV = ½ E_P|1 − q/p|; JS_β from samples of both
sides. The estimate needs ``sample`` and ``log_prob`` on both distributions and the same event
shape; it is not differentiable.
"""

from __future__ import annotations

import math

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
    params: dict[str, float],
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


def _estimate(
    name: str, p: Distribution, q: Distribution, params: dict[str, float], n: int
) -> ClosedFormResult:
    def log_ratio_under(x_dist: Distribution, y_dist: Distribution) -> Tensor:
        x = x_dist.sample((n,))
        return y_dist.log_prob(x) - x_dist.log_prob(x)  # log(y/x) at samples of x

    if name in ("kl", "reverse_kl", "jeffreys"):
        parts = []
        if name in ("kl", "jeffreys"):
            parts.append(_mean_se(-log_ratio_under(p, q)))
        if name in ("reverse_kl", "jeffreys"):
            parts.append(_mean_se(-log_ratio_under(q, p)))
        value = sum(v for v, _ in parts)
        se = torch.sqrt(sum(s.square() for _, s in parts))
        return ClosedFormResult(value, se, "monte_carlo", "monte_carlo")  # type: ignore[arg-type]
    if name == "js":
        beta = params["beta"]
        xp = p.sample((n,))
        xq = q.sample((n,))

        def log_m(x: Tensor) -> Tensor:
            return torch.logaddexp(
                math.log(beta) + p.log_prob(x), math.log1p(-beta) + q.log_prob(x)
            )

        vp, sp = _mean_se(p.log_prob(xp) - log_m(xp))
        vq, sq = _mean_se(q.log_prob(xq) - log_m(xq))
        value = beta * vp + (1 - beta) * vq
        se = torch.sqrt((beta * sp).square() + ((1 - beta) * sq).square())
        return ClosedFormResult(value, se, "monte_carlo", "monte_carlo")
    if name == "neyman_chi2":  # χ²(Q‖P): sample Q (finite variance more often)
        return _estimate("pearson_chi2", q, p, params, n)
    if name == "alpha" and params["alpha"] < 0:  # D_α(P‖Q) = D_{1−α}(Q‖P)
        return _estimate("alpha", q, p, {"alpha": 1.0 - params["alpha"]}, n)
    lr = log_ratio_under(p, q)  # log q/p under P
    if name == "tv":
        value, se = _mean_se(0.5 * (-torch.expm1(lr)).abs())
        return ClosedFormResult(value, se, "monte_carlo", "monte_carlo")
    # affinities ∫ p^a q^{1−a} = E_P[(q/p)^{1−a}]; delta method for the standard errors
    if name in ("hellinger", "bhattacharyya"):
        a = 0.5
    elif name == "pearson_chi2":
        a = 2.0
    elif name == "renyi":
        a = params["order"]
    else:
        a = params["alpha"]
    if name == "renyi" and a == 1.0:
        return _estimate("kl", p, q, params, n)
    if name == "alpha" and a in (0.0, 1.0):
        return _estimate("kl" if a == 1.0 else "reverse_kl", p, q, params, n)
    if name == "renyi" and math.isinf(a):
        raise ValueError("renyi order=inf cannot be estimated by Monte Carlo here")
    log_aff, rel_se = _log_mean_exp((1.0 - a) * lr)
    aff = log_aff.exp()
    if name == "renyi":
        if a == 0.0:
            value = torch.zeros_like(log_aff)  # −log Q(supp P): full-support families
            return ClosedFormResult(value, torch.zeros_like(value), "monte_carlo", "monte_carlo")
        return ClosedFormResult(
            log_aff / (a - 1.0), rel_se / abs(a - 1.0), "monte_carlo", "monte_carlo"
        )
    if name == "bhattacharyya":
        return ClosedFormResult(-log_aff, rel_se, "monte_carlo", "monte_carlo")
    if name == "hellinger":
        return ClosedFormResult(-torch.expm1(log_aff), aff * rel_se, "monte_carlo", "monte_carlo")
    if name == "pearson_chi2":
        return ClosedFormResult(torch.expm1(log_aff), aff * rel_se, "monte_carlo", "monte_carlo")
    scale = 1.0 / (a * (a - 1.0))
    return ClosedFormResult(
        torch.expm1(log_aff) * scale, aff * rel_se * abs(scale), "monte_carlo", "monte_carlo"
    )

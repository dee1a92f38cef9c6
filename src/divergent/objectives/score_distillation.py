r"""f-distill: one-step diffusion distillation by f-divergence distribution matching.

Xu, Nie & Vahdat (2025) distil a diffusion teacher (marginals :math:`p_t`) into a one-step
generator :math:`x_0 = G_\theta(z)` (marginals :math:`q_{\theta,t}` after the same forward
process :math:`x_t = \alpha_t x_0 + \sigma_t \epsilon`) by minimising
:math:`\mathbb E_t\, D_f(p_t \| q_{\theta,t})`. With the teacher-over-student density ratio
:math:`r_t = p_t / q_{\theta,t}` the gradient is (the paper's main result)

.. math::

    \nabla_\theta D_f(p_t\|q_{\theta,t}) = \mathbb E_{z,\epsilon}\Big[h_f\big(r_t(x_t)\big)
    \big(\nabla_x \log q_{\theta,t}(x_t) - \nabla_x \log p_t(x_t)\big)^{\!\top}
    \frac{\partial x_t}{\partial\theta}\Big], \qquad h_f(r) = r^2 f''(r).

Reverse KL (:math:`f = -\log r`) gives :math:`h \equiv 1`: variational score distillation
(VSD / DMD / Diff-Instruct), the integral-KL gradient at one t. Less mode-seeking divergences
up-weight samples where the teacher's density exceeds the student's:

================  ==================================  ============================
name              divergence (generator f)            :math:`h_f(r)` (library's f)
================  ==================================  ============================
``reverse_kl``    reverse KL, :math:`-\log r`         1
``kl``            forward KL, :math:`r\log r`         r
``js``            Jensen–Shannon (β = ½)              r / (2(1 + r))
``hellinger``     ½(√r − 1)²                          √r / 4
``jeffreys``      (r − 1) log r                       r + 1
``neyman_chi2``   (1 − r)² / r                        2 / r
``pearson_chi2``  (r − 1)²                            2 r²
softened RKL      (r + 1) log((r + 1)/(2r))           1 / (1 + r)
================  ==================================  ============================

(the softened reverse KL is not a registered name: pass :data:`SOFTENED_REVERSE_KL`).

The weights come from the library's generators (:meth:`FGenerator.second_derivative_weight`),
so any registered f-divergence, its parameters (``js``'s ``beta``, ``alpha``'s ``alpha``) or a
user generator callable works; constant factors do not matter once :math:`h` is divided by its
batch mean, as the paper does.

The pipeline (:func:`f_distill_weights`, as in NVIDIA FastGen's implementation):

1. :math:`r = \exp(\mathrm{clamp}(D, -c, c))` from the logits of a discriminator trained with
   the logistic loss (:func:`ratio_discriminator_loss`; at its optimum
   :math:`D = \log p_t/q_t`), optionally clamped to ``[ratio_min, ratio_max]``
   (:func:`discriminator_density_ratio`);
2. optionally divided by the running mean of r in its time bin
   (:class:`TimeBinnedRatioNormalizer`);
3. :math:`h = h_f(r)`, divided by its batch mean (:func:`normalize_batch_weights`).

The generator is trained with the surrogate :func:`score_distillation_loss`,
:math:`\tfrac12\|x - \mathrm{sg}(x - g)\|^2` with :math:`g = h\,(s_\text{fake} -
s_\text{teacher})`, whose gradient with respect to x is exactly g (plus, in the paper, a small
GAN term :func:`gan_generator_loss`). FastGen also divides the weights by the mean absolute
difference of the generated and teacher-denoised x₀ (DMD's normaliser); that factor is the
caller's to fold into ``weight`` (it depends on the denoiser parameterisation).

References:
    Xu, Nie & Vahdat (2025), One-step Diffusion Models with f-Divergence Distribution Matching,
    arXiv 2502.15681. Wang et al. (2023), ProlificDreamer (VSD); Yin et al. (2024), DMD/DMD2;
    Luo et al. (2023), Diff-Instruct.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from divergent._validation import (
    check_bool,
    check_choice,
    check_float_tensor,
    check_int,
    check_positive_scalar,
    check_reduction,
    compute_dtype,
    reduce_rows,
)
from divergent.categorical.fdiv import resolve_divergence
from divergent.categorical.registry import Divergence, FGenerator

__all__ = [
    "SOFTENED_REVERSE_KL",
    "TimeBinnedRatioNormalizer",
    "discriminator_density_ratio",
    "f_distill_loss",
    "f_distill_weights",
    "f_divergence_weight",
    "gan_generator_loss",
    "normalize_batch_weights",
    "ratio_discriminator_loss",
    "score_distillation_loss",
]


def _softened_reverse_kl(t: Tensor) -> Tensor:
    # (t + 1) log((t + 1) / (2t)) = 2·KL(M‖P)-type generator, M = (P + Q)/2 (f-distill's "sf")
    return (t + 1.0) * (torch.log1p(t) - math.log(2.0) - torch.log(t))


SOFTENED_REVERSE_KL: FGenerator = FGenerator(
    f=_softened_reverse_kl,
    f_prime=lambda t: torch.log1p(t) - math.log(2.0) - torch.log(t) - 1.0 / t,
    weighting=lambda r: 1.0 / (1.0 + r),
    f_at_zero=math.inf,
    slope_at_infinity=-math.log(2.0),
)
"""The "softened reverse KL" generator of f-distill, :math:`f(r) = (r+1)\\log\\frac{r+1}{2r}`,
:math:`h_f(r) = 1/(1+r)`; pass it as ``divergence=`` (it is not a registered name)."""

DivergenceArg = str | Divergence | FGenerator | Callable[[Tensor], Tensor]


# ratios at which h = r² f''(r) is probed: a divergence whose h is 0 (or undefined) at all of
# them (tv, any piecewise-linear f) gives a loss without gradient and is refused
_PROBE_RATIOS = (0.1, 0.37, 0.8, 1.7, 4.2, 23.0)
# float64 ratios from which h(r → ∞) is read off (see _weight_at_infinity)
_LARGE_RATIOS = (1e20, 1e40, 1e80)


def _generator(divergence: DivergenceArg, params: dict[str, Any], caller: str) -> FGenerator:
    if isinstance(divergence, FGenerator):
        if params:
            raise ValueError(
                f"{caller}(): a generator takes no divergence parameters, got {sorted(params)}"
            )
        source: Divergence | FGenerator = divergence
        bound: tuple[tuple[str, float], ...] = ()
        name = "the given generator"
    else:
        div = resolve_divergence(divergence)
        if not div.is_f_divergence:
            raise ValueError(
                f"{caller}(): `divergence` must be an f-divergence (it needs h(r) = r² f''(r)); "
                f"`{div.name}` has no generator"
            )
        source = div
        bound = tuple(div.bind(params, caller=caller, keywords=()).items())
        name = f"`{div.name}`"
    try:
        hash(source)
    except TypeError:  # a generator holding an unhashable callable: checked every call
        return _checked_generator.__wrapped__(source, bound, name, caller)
    return _checked_generator(source, bound, name, caller)


@functools.lru_cache(maxsize=64)
def _checked_generator(
    source: Divergence | FGenerator, bound: tuple[tuple[str, float], ...], name: str, caller: str
) -> FGenerator:
    """The generator of ``source`` at ``bound``, its h probed once per (divergence,
    parameters) or generator: the training loops call the weights every step."""
    if isinstance(source, FGenerator):
        gen = source
    else:
        gen = source.generator(**dict(bound))  # type: ignore[misc]
    probe = torch.tensor(_PROBE_RATIOS, dtype=torch.float64)
    try:
        h = gen.second_derivative_weight(probe).detach().double().clone()
    except RuntimeError as err:  # e.g. autograd finds no second derivative of a user f
        raise ValueError(
            f"{caller}(): `divergence` {name}: h(r) = r² f''(r) could not be evaluated ({err})"
        ) from err
    ok = torch.isfinite(h) & (h != 0)
    if not bool(ok.any()):
        raise ValueError(
            f"{caller}(): `divergence` {name} has r² f''(r) identically zero or undefined (at "
            f"r = {', '.join(f'{v:g}' for v in _PROBE_RATIOS)} it is {h.tolist()}): f is "
            "piecewise linear (e.g. tv), so the f-distill weight and the loss's gradient "
            "vanish; use a strictly convex f (js, kl, reverse_kl, hellinger ...)"
        )
    return gen


def _weight_at_infinity(gen: FGenerator) -> float:
    """lim_{r→∞} h(r), read off float64 evaluations at r = 1e20, 1e40, 1e80 (kept below 1e100
    so that r² f''(r) by double autograd does not overflow in an intermediate step): values that
    settle give their limit, values that decay by 12 orders give 0, values whose growth does
    not slow down on this doubling-exponent grid (powers, logs) give +inf; anything else NaN."""
    with torch.no_grad():
        vals = gen.second_derivative_weight(torch.tensor(_LARGE_RATIOS, dtype=torch.float64))
        a, b, c = (float(v) for v in vals.detach().double().clone())
    if any(math.isnan(v) for v in (a, b, c)):
        return math.nan
    if c == math.inf or (c > b > a and c - b >= b - a):
        return math.inf
    if 0 <= c < b < a and c <= 1e-12 * max(1.0, a):
        return 0.0
    scale = max(1.0, abs(c))
    if abs(c - b) <= 1e-6 * scale and abs(b - a) <= 1e-3 * scale:
        return c
    return math.nan


def _h(r: Tensor, gen: FGenerator) -> Tensor:
    """h(r) in r's dtype with NaN kept NaN and h(+inf) its limit (never inf/inf = NaN)."""
    h = gen.second_derivative_weight(r).to(r.dtype)
    h = torch.where(torch.isnan(r), torch.full_like(h, math.nan), h)
    inf = torch.isposinf(r)
    if bool(inf.any()):
        h = torch.where(inf, torch.full_like(h, _weight_at_infinity(gen)), h)
    return h


def f_divergence_weight(ratio: Tensor, divergence: DivergenceArg = "js", **params: Any) -> Tensor:
    r"""The f-distill weight :math:`h_f(r) = r^2 f''(r)` of the score difference.

    Args:
        ratio: density ratios :math:`r = p/q` (teacher over student), ≥ 0, any shape.
        divergence: a registered f-divergence name (``kl``, ``reverse_kl``, ``js``,
            ``hellinger``, ``jeffreys``, ``neyman_chi2``, ``pearson_chi2``, ``alpha`` ...), a
            :class:`~divergent.categorical.registry.FGenerator` (e.g.
            :data:`SOFTENED_REVERSE_KL`) or a generator callable f(t).
        **params: the divergence's parameters (``beta`` for ``js``, ...).

    Returns:
        :math:`h_f(r)`, same shape as ``ratio``, float32 (float64 for a float64 ``ratio``;
        bf16 / fp16 are computed in fp32), not normalised. NaN stays NaN (even where h is
        constant, as for ``reverse_kl``); at :math:`r = +\infty` h is its limit
        :math:`\lim_{r\to\infty} h_f(r)` (``js``: 1 − β, ``reverse_kl``: 1, ``neyman_chi2``:
        0, ``kl``: inf), read off float64 evaluations at r = 1e20, 1e40, 1e80 (NaN if they
        neither settle, decay to 0 nor grow without bound).

    Raises:
        ValueError: a negative ratio, or a ``divergence`` whose :math:`r^2 f''(r)` is zero or
            undefined at every probed r (``tv`` or any piecewise-linear f: no gradient).

    Example:
        >>> r = torch.tensor([0.5, 1.0, 4.0])
        >>> f_divergence_weight(r, "reverse_kl")
        tensor([1., 1., 1.])
        >>> f_divergence_weight(r, "kl"), f_divergence_weight(r, "jeffreys")
        (tensor([0.5000, 1.0000, 4.0000]), tensor([1.5000, 2.0000, 5.0000]))
        >>> f_divergence_weight(r, SOFTENED_REVERSE_KL)
        tensor([0.6667, 0.5000, 0.2000])

    References:
        Xu, Nie & Vahdat (2025), arXiv 2502.15681, Theorem 1 and Table 1.
    """
    ratio = check_float_tensor(ratio, "ratio")
    if bool((ratio < 0).any()):
        raise ValueError(
            f"`ratio` must be >= 0 (a density ratio p/q), got min {float(ratio.min()):g}"
        )
    gen = _generator(divergence, params, "f_divergence_weight")
    return _h(ratio.detach().to(compute_dtype(ratio)), gen)


def normalize_batch_weights(weights: Tensor, *, eps: float = 1e-6) -> Tensor:
    r"""Weights divided by their mean, :math:`h / (\bar h + \varepsilon)` (f-distill's batch
    normalisation: it makes the step size independent of the divergence's scale).

    Args:
        weights: non-negative weights, any shape (the mean is over all entries); a negative
            weight raises ``ValueError`` (it could make the mean near 0 and blow the rest up),
            so does a +inf weight (inf / inf: the normalised weights are undefined).
        eps: added to the mean (≥ 0).

    Returns:
        Normalised weights, detached, same shape, float32 (float64 for float64 weights) (a
        NaN weight makes the mean, and so every weight, NaN: never a plausible number).

    Example:
        >>> normalize_batch_weights(torch.tensor([1.0, 3.0]), eps=0.0)
        tensor([0.5000, 1.5000])
    """
    weights = check_float_tensor(weights, "weights")
    if weights.numel() == 0:
        raise ValueError("`weights` must not be empty")
    eps = check_positive_scalar(eps, "eps", allow_zero=True)
    w = weights.detach()
    if bool((w < 0).any()):  # NaN compares False: it passes and propagates
        raise ValueError(f"`weights` must be >= 0, got min {float(w[w < 0].min()):g}")
    if bool(torch.isposinf(w).any()):
        raise ValueError(
            f"`weights` has {int(torch.isposinf(w).sum())} infinite entr(y/ies): dividing by "
            "the mean (inf) is undefined"
        )
    w = w.to(compute_dtype(w))
    return w / (w.mean() + eps)


def discriminator_density_ratio(
    logits: Tensor,
    *,
    logit_clamp: float = 10.0,
    ratio_min: float | None = None,
    ratio_max: float | None = None,
) -> Tensor:
    r"""Density ratio :math:`r = \exp(\mathrm{clamp}(D, -c, c))` from logistic-discriminator
    logits, optionally clamped to ``[ratio_min, ratio_max]``.

    A discriminator trained with :func:`ratio_discriminator_loss` (teacher samples "real")
    has the optimum :math:`D^*(x) = \log p(x)/q(x)`, so :math:`e^{D}` estimates the ratio.

    Args:
        logits: discriminator logits on generated (student) samples, any shape.
        logit_clamp: c > 0 (``inf`` for none); FastGen uses 10.
        ratio_min, ratio_max: optional bounds on r (FastGen's defaults: 0.1 and 20).

    Returns:
        r, detached, same shape, float32 (float64 for float64 logits; bf16 / fp16 are
        computed in fp32), NaN logits give NaN. With ``logit_clamp=inf`` a logit above
        ≈ 88.7 (float32) gives r = inf.

    Example:
        >>> discriminator_density_ratio(torch.tensor([-30.0, 0.0, 1.0]), ratio_max=2.0)
        tensor([4.5400e-05, 1.0000e+00, 2.0000e+00])
    """
    logits = check_float_tensor(logits, "logits")
    c = check_positive_scalar(logit_clamp, "logit_clamp", allow_inf=True)
    lo = check_positive_scalar(ratio_min, "ratio_min", allow_zero=True, allow_none=True)
    hi = check_positive_scalar(ratio_max, "ratio_max", allow_none=True, allow_inf=True)
    if lo is not None and hi is not None and not lo < hi:
        raise ValueError(f"`ratio_min` must be < `ratio_max`, got {lo!r} and {hi!r}")
    r = torch.exp(logits.detach().to(compute_dtype(logits)).clamp(-c, c))  # type: ignore[arg-type]
    if lo is not None or hi is not None:
        r = r.clamp(min=lo, max=hi)
    return r


class TimeBinnedRatioNormalizer(nn.Module):
    r"""Per-time-bin normalisation of density ratios (f-distill's ``ratio_normalization``).

    Diffusion times in ``[t_min, t_max]`` are split into ``n_bins`` equal bins, and a buffer
    holds a running mean of r per bin (initially 1). In training mode each call first
    updates the bins present in the batch, :math:`m_b \leftarrow \rho\, m_b + (1 - \rho)\,
    \bar r_b` (ρ = ``ema``; ρ = 0 uses the batch's bin mean), then returns
    :math:`r / (m_{b(t)} + \varepsilon)`; in eval mode the buffer is only read. Non-finite
    ratios (NaN, inf) are left out of the bin means (one NaN must not poison the buffer for
    good); their outputs stay NaN / inf. The output is float32 (float64 for float64 ratios).

    Args:
        n_bins: number of time bins (≥ 1).
        t_min, t_max: the time range (times outside, ±inf included, are put in the end
            bins; a NaN time raises ``ValueError``).
        ema: ρ ∈ [0, 1).
        eps: added to the bin mean.

    Example:
        >>> norm = TimeBinnedRatioNormalizer(n_bins=2)
        >>> norm(torch.tensor([1.0, 3.0, 10.0]), torch.tensor([0.1, 0.2, 0.9]))
        tensor([0.5000, 1.5000, 1.0000])
    """

    bin_means: Tensor

    def __init__(
        self,
        n_bins: int = 10,
        *,
        t_min: float = 0.0,
        t_max: float = 1.0,
        ema: float = 0.0,
        eps: float = 1e-6,
    ) -> None:
        super().__init__()
        self.n_bins = check_int(n_bins, "n_bins", 1, "number of time bins")
        numbers_ok = all(
            isinstance(v, int | float) and not isinstance(v, bool) for v in (t_min, t_max)
        )
        if not numbers_ok or not (math.isfinite(t_min) and math.isfinite(t_max) and t_min < t_max):
            raise ValueError(
                f"`t_min` and `t_max` must be finite numbers with t_min < t_max, got "
                f"{t_min!r} and {t_max!r}"
            )
        self.t_min, self.t_max = float(t_min), float(t_max)
        ema_ok = isinstance(ema, int | float) and not isinstance(ema, bool) and 0.0 <= ema < 1.0
        if not ema_ok:
            raise ValueError(f"`ema` must be a number in [0, 1), got {ema!r}")
        self.ema = float(ema)
        self.eps = check_positive_scalar(eps, "eps", allow_zero=True)
        self.register_buffer("bin_means", torch.ones(self.n_bins, dtype=torch.float64))

    def bin_index(self, t: Tensor) -> Tensor:
        """The bin of each time (int64, same shape as ``t``); NaN times raise ``ValueError``."""
        t = check_float_tensor(t, "t")
        if bool(torch.isnan(t).any()):
            raise ValueError(
                f"`t` has {int(torch.isnan(t).sum())} NaN entr(y/ies): a NaN time has no bin"
            )
        u = (t.detach().double() - self.t_min) / (self.t_max - self.t_min)
        return (u * self.n_bins).floor().clamp(0, self.n_bins - 1).long()

    def forward(self, ratio: Tensor, t: Tensor) -> Tensor:
        ratio = check_float_tensor(ratio, "ratio")
        t = check_float_tensor(t, "t")
        if t.shape != ratio.shape:
            raise ValueError(
                f"`t` must have the shape of `ratio` {tuple(ratio.shape)}, got {tuple(t.shape)}"
            )
        idx = self.bin_index(t).reshape(-1)
        r = ratio.detach().reshape(-1).double()
        if self.training and r.numel():
            fin = torch.isfinite(r)
            sums = torch.zeros(self.n_bins, dtype=torch.float64, device=r.device)
            counts = torch.zeros_like(sums)
            sums.index_add_(0, idx[fin], r[fin])
            counts.index_add_(0, idx[fin], torch.ones_like(r[fin]))
            seen = counts > 0
            batch_mean = sums[seen] / counts[seen]
            means = self.bin_means.clone()
            means[seen] = self.ema * means[seen] + (1.0 - self.ema) * batch_mean
            self.bin_means.copy_(means)
        out = r / (self.bin_means[idx] + self.eps)
        return out.reshape(ratio.shape).to(compute_dtype(ratio))


def f_distill_weights(
    logits: Tensor,
    divergence: DivergenceArg = "js",
    *,
    t: Tensor | None = None,
    ratio_normalizer: TimeBinnedRatioNormalizer | None = None,
    logit_clamp: float = 10.0,
    ratio_min: float | None = 0.1,
    ratio_max: float | None = 20.0,
    normalize: bool = True,
    eps: float = 1e-6,
    **params: Any,
) -> Tensor:
    r"""Per-sample f-distill weights from log density ratios (discriminator logits).

    :math:`r = \mathrm{clamp}(e^{\mathrm{clamp}(D,-c,c)}, r_\min, r_\max)`, divided by its
    time bin's running mean when ``ratio_normalizer`` is given; then :math:`h = h_f(r)`,
    divided by its batch mean when ``normalize``. Defaults are FastGen's (JS, r ∈ [0.1, 20]).

    Args:
        logits: :math:`D \approx \log p_t/q_t` at the generated samples, shape ``(B,)`` (or any).
        divergence, **params: the f-divergence (see :func:`f_divergence_weight`).
        t: diffusion times, same shape (needed with ``ratio_normalizer``; checked even
            without one).
        ratio_normalizer: a :class:`TimeBinnedRatioNormalizer`, or None.
        logit_clamp, ratio_min, ratio_max: see :func:`discriminator_density_ratio`.
        normalize: divide h by its batch mean (:func:`normalize_batch_weights`).
        eps: added to the batch mean.

    Returns:
        Detached weights, same shape as ``logits``, float32 (float64 for float64 logits).
        A NaN logit gives a NaN weight (with ``normalize``, every weight NaN). An empty
        batch gives an empty tensor.

    Raises:
        ValueError: with ``normalize``, when h is +inf for some sample (r = e^D overflows
            once ``logit_clamp`` is above ≈ 88 in float32 and ``ratio_max`` is None, and h
            grows without bound, as for ``kl`` or ``hellinger``): the batch mean is then
            undefined. A divergence with a finite :math:`\lim_{r\to\infty} h` (``js``,
            ``reverse_kl``, ``neyman_chi2`` ...) uses that limit instead.

    Example:
        >>> f_distill_weights(torch.tensor([0.5, 1.5]).log(), "kl")
        tensor([0.5000, 1.5000])
    """
    normalize = check_bool(normalize, "normalize")
    logits = check_float_tensor(logits, "logits")
    if t is not None:
        t = check_float_tensor(t, "t")
        if t.shape != logits.shape:
            raise ValueError(
                f"`t` must have the shape of `logits` {tuple(logits.shape)}, got {tuple(t.shape)}"
            )
    r = discriminator_density_ratio(
        logits, logit_clamp=logit_clamp, ratio_min=ratio_min, ratio_max=ratio_max
    )
    if ratio_normalizer is not None:
        if not isinstance(ratio_normalizer, TimeBinnedRatioNormalizer):
            raise ValueError(
                "`ratio_normalizer` must be a TimeBinnedRatioNormalizer or None, got "
                f"{type(ratio_normalizer).__name__}"
            )
        if t is None:
            raise ValueError("`t` (the diffusion times) is required with `ratio_normalizer`")
        r = ratio_normalizer(r, t)
    h = _h(r, _generator(divergence, params, "f_distill_weights"))
    if not normalize:
        return h
    eps = check_positive_scalar(eps, "eps", allow_zero=True)
    if h.numel() == 0:
        return h
    inf = torch.isposinf(h)
    if bool(inf.any()):
        raise ValueError(
            f"f_distill_weights(): h_f(r) is +inf for {int(inf.sum())} sample(s) (largest "
            f"logit {float(logits[inf].max()):g}: r = e^D overflows, and h grows without bound "
            "for this divergence), so the batch normalisation is undefined; lower "
            "`logit_clamp` (FastGen uses 10) or set `ratio_max`"
        )
    return normalize_batch_weights(h, eps=eps)


def score_distillation_loss(
    x: Tensor,
    score_fake: Tensor,
    score_teacher: Tensor,
    weight: Tensor | None = None,
    *,
    reduction: str = "mean",
) -> Tensor:
    r"""The score-distillation surrogate whose gradient is the weighted score difference.

    .. math::

        \ell_i = \tfrac12 \big\|x_i - \mathrm{sg}(x_i - g_i)\big\|^2, \qquad
        g_i = w_i \big(s_\text{fake}(x_i) - s_\text{teacher}(x_i)\big),

    so :math:`\partial \ell_i / \partial x_i = g_i` and, with ``reduction="mean"``,
    :math:`\nabla_\theta \frac1B\sum_i \ell_i = \frac1B\sum_i g_i^\top \partial x_i/\partial
    \theta`: the Monte-Carlo estimate of the f-distill gradient (with :math:`w = h_f(r)`), of
    VSD / DMD / the integral-KL gradient at one time (``weight=None``, :math:`w \equiv 1`).
    The value itself, :math:`\tfrac12\|g_i\|^2`, is not a divergence; only the gradient is
    meaningful. Scores and weights are detached.

    Numerics: the loss is built as :math:`\sum_j (x_{ij} - \mathrm{sg}(x_{ij}))\,g_{ij} +
    \tfrac12 g_{ij}^2` (the same value and gradient as the formula above), so the gradient is
    exactly g instead of the difference :math:`x - (x - g)` of two rounded numbers (which
    loses g when it is small next to x: all of it in bf16 at x = 100, g = 0.01, or in fp32
    at x = 1, g = 1e-9). bf16 / fp16 inputs are computed in fp32 and give an fp32 loss;
    float64 stays float64 (``x``'s gradient has ``x``'s dtype).

    Args:
        x: generated samples (after noising, :math:`x_t`, or any point the scores are taken
            at), batch axis first, differentiable in the generator's parameters.
        score_fake: :math:`\nabla_x \log q_t(x)` (the student's / fake score), shape of ``x``.
        score_teacher: :math:`\nabla_x \log p_t(x)` (the teacher's), shape of ``x``.
        weight: per-sample (shape ``(B,)`` or any leading part of ``x.shape``) or elementwise
            weights, e.g. :func:`f_distill_weights`; None for 1.
        reduction: ``"mean"`` over the batch (default), ``"sum"`` or ``"none"`` (one value per
            sample). Feature axes are always summed.

    Returns:
        The surrogate loss, float32 (float64 when ``x`` is float64). An empty batch gives 0
        (``"mean"``, ``"sum"``) with a zero gradient.

    Example:
        >>> x = torch.tensor([[1.0, 2.0]], requires_grad=True)
        >>> loss = score_distillation_loss(x, torch.tensor([[0.5, 0.0]]), torch.zeros(1, 2),
        ...                                torch.tensor([2.0]))
        >>> loss.backward(); x.grad
        tensor([[1., 0.]])

    References:
        Xu, Nie & Vahdat (2025), arXiv 2502.15681, Eq. (6); Yin et al. (2024), DMD.
    """
    x = check_float_tensor(x, "x", min_dim=1)
    score_fake = check_float_tensor(score_fake, "score_fake")
    score_teacher = check_float_tensor(score_teacher, "score_teacher")
    for name, s in (("score_fake", score_fake), ("score_teacher", score_teacher)):
        if s.shape != x.shape:
            raise ValueError(
                f"`{name}` must have the shape of `x` {tuple(x.shape)}, got {tuple(s.shape)}"
            )
    reduction = check_reduction(reduction)
    inputs = [score_fake, score_teacher]
    if weight is not None:
        weight = check_float_tensor(weight, "weight")
        if tuple(weight.shape) != tuple(x.shape[: weight.dim()]) or weight.dim() == 0:
            raise ValueError(
                f"`weight` must have shape {tuple(x.shape[:1])} (per sample) or a leading part "
                f"of `x`'s shape {tuple(x.shape)}, got {tuple(weight.shape)}"
            )
        inputs.append(weight)
    cdtype = compute_dtype(x)  # the loss's dtype: fp32, or float64 for a float64 x
    gdtype = compute_dtype(x, *inputs)  # g in float64 if any input is
    g = score_fake.detach().to(gdtype) - score_teacher.detach().to(gdtype)
    if weight is not None:
        w = weight.detach().to(gdtype)
        g = g * w.reshape(*weight.shape, *([1] * (x.dim() - weight.dim())))
    g = g.to(cdtype)
    xf = x.to(cdtype)
    # value ½ g² per element (x − sg(x) is exactly 0), gradient exactly g
    per = (xf - xf.detach()) * g + 0.5 * g.square()
    values = per.reshape(x.shape[0], math.prod(x.shape[1:])).sum(-1)  # works for B = 0
    return reduce_rows(values, reduction, count=values.shape[0], normalizer=None)


def f_distill_loss(
    x: Tensor,
    score_fake: Tensor,
    score_teacher: Tensor,
    logits: Tensor,
    divergence: DivergenceArg = "js",
    *,
    t: Tensor | None = None,
    ratio_normalizer: TimeBinnedRatioNormalizer | None = None,
    logit_clamp: float = 10.0,
    ratio_min: float | None = 0.1,
    ratio_max: float | None = 20.0,
    normalize: bool = True,
    eps: float = 1e-6,
    reduction: str = "mean",
    **params: Any,
) -> Tensor:
    r"""The f-distill generator loss: :func:`score_distillation_loss` weighted by
    :func:`f_distill_weights` of the discriminator ``logits`` at the same samples.

    Its gradient estimates :math:`\nabla_\theta D_f(p_t\|q_{\theta,t})` up to the batch
    normalisation of h. Add :func:`gan_generator_loss` (small weight) for the paper's GAN term.

    Args:
        x, score_fake, score_teacher: see :func:`score_distillation_loss`.
        logits: discriminator logits at ``x``, shape ``(B,)``.
        divergence, t, ratio_normalizer, logit_clamp, ratio_min, ratio_max, normalize, eps,
            **params: see :func:`f_distill_weights`.
        reduction: see :func:`score_distillation_loss`.

    Example:
        >>> x = torch.zeros(2, 1, requires_grad=True)
        >>> f_distill_loss(x, torch.ones(2, 1), torch.zeros(2, 1), torch.zeros(2), "kl")
        tensor(0.5000, grad_fn=<DivBackward0>)
    """
    w = f_distill_weights(
        logits,
        divergence,
        t=t,
        ratio_normalizer=ratio_normalizer,
        logit_clamp=logit_clamp,
        ratio_min=ratio_min,
        ratio_max=ratio_max,
        normalize=normalize,
        eps=eps,
        **params,
    )
    return score_distillation_loss(x, score_fake, score_teacher, w, reduction=reduction)


def ratio_discriminator_loss(
    real_logits: Tensor, fake_logits: Tensor, *, reduction: str = "mean"
) -> Tensor:
    r"""Logistic loss of the density-ratio discriminator (teacher samples are "real"):

    .. math::

        \mathcal L_D = \mathbb E_p[\operatorname{softplus}(-D)] +
        \mathbb E_q[\operatorname{softplus}(D)],

    minimised by :math:`D^* = \log p/q` (so :math:`r = e^{D}`,
    :func:`discriminator_density_ratio`). ``softplus(−D) = −log σ(D)``, stable for any D.

    Args:
        real_logits: D on teacher (real, noised) samples, any shape.
        fake_logits: D on generated (noised) samples, any shape.
        reduction: ``"mean"`` (mean of each term, summed) or ``"sum"``.

    Returns:
        The loss, float32 (float64 if either side is float64; bf16 / fp16 are computed in
        fp32). An empty side contributes 0 (with a zero gradient), never NaN.

    Example:
        >>> ratio_discriminator_loss(torch.zeros(3), torch.zeros(2))
        tensor(1.3863)
    """
    real_logits = check_float_tensor(real_logits, "real_logits")
    fake_logits = check_float_tensor(fake_logits, "fake_logits")
    reduction = check_choice(reduction, "reduction", ("mean", "sum"))
    dtype = compute_dtype(real_logits, fake_logits)
    real = F.softplus(-real_logits.to(dtype)).reshape(-1)
    fake = F.softplus(fake_logits.to(dtype)).reshape(-1)
    return reduce_rows(real, reduction, count=real.numel(), normalizer=None) + reduce_rows(
        fake, reduction, count=fake.numel(), normalizer=None
    )


def gan_generator_loss(fake_logits: Tensor, *, reduction: str = "mean") -> Tensor:
    r"""Non-saturating GAN loss of the generator, :math:`\operatorname{softplus}(-D(x_\text{fake}))`
    (f-distill adds it with a small weight, e.g. 3e-3).

    Computed in fp32 for bf16 / fp16 logits (float64 stays float64); an empty batch gives 0
    (``"mean"``, ``"sum"``) with a zero gradient.

    Example:
        >>> gan_generator_loss(torch.zeros(2))
        tensor(0.6931)
    """
    fake_logits = check_float_tensor(fake_logits, "fake_logits")
    reduction = check_reduction(reduction)
    values = F.softplus(-fake_logits.to(compute_dtype(fake_logits)))
    return reduce_rows(values, reduction, count=values.numel(), normalizer=None)

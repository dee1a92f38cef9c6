r"""Preference optimisation with any f-divergence: f-DPO (sigmoid / hinge / IPO forms) and the
SFT ↔ DPO implicit-reward bridge (f-divergence SFT).

**The f-DPO mapping.** RLHF with an f-divergence constraint,
:math:`\max_\pi \mathbb{E}_\pi[r] - \beta D(\pi_{\mathrm{ref}}\|\pi)`, has the KKT stationary
condition :math:`r(y) = \beta\,\psi(u(y)) + \lambda` with the density ratio
:math:`u = \pi(y)/\pi_{\mathrm{ref}}(y)`, so under Bradley–Terry the normaliser cancels and

.. math:: \mathcal L = -\log\sigma\big(\beta\,[\psi(u_w) - \psi(u_l)]\big),
          \qquad \log u = \log\pi_\theta(y) - \log\pi_{\mathrm{ref}}(y)

(Wang et al. 2024, f-DPO, arXiv 2309.16240). ``divergence`` names :math:`D(P\|Q)` in the
library's P-first convention with **P = π_ref, Q = π** (a registered f-divergence
:math:`D_g(P\|Q) = \sum Q\,g(P/Q)`). In the paper's convention
:math:`D_g(\pi_{\mathrm{ref}}\|\pi) = \mathbb{E}_{\pi_{\mathrm{ref}}}[f(u)]` with the
perspective :math:`f(u) = u\,g(1/u)`, whose derivative is the *score*

.. math:: \psi(u) = f'(u) = g(t) - t\,g'(t), \qquad t = 1/u = \pi_{\mathrm{ref}}/\pi .

Scores are normalised to :math:`\psi(1) = 0` (a policy equal to the reference has implicit
reward 0, TRL's convention); a constant would cancel in :math:`\psi(u_w)-\psi(u_l)` but not
once the scores are divided by completion lengths (IPO, ``sigmoid_norm``):

============== ================================== ==========================================
``divergence``  :math:`\psi(u)`                     TRL 1.16 ``f_divergence_type``
============== ================================== ==========================================
``reverse_kl``  :math:`\log u` (DPO)                 ``reverse_kl`` (same β)
``kl``          :math:`1 - 1/u`                      ``forward_kl`` (same β)
``js`` (β_js)   :math:`-(1-\beta_{js})\log(\beta_{js}/u + 1-\beta_{js})`
                                                     ``js_divergence`` = ``js`` (β_js = ½) at
                                                     **twice** TRL's β (TRL uses 2·JSD;
                                                     its IPO loss is then 4 × ours)
``alpha`` (a)   :math:`(1 - u^{-a})/a`               ``alpha_divergence`` with
                                                     ``f_alpha_divergence_coef`` = 1 − a
============== ================================== ==========================================

Any other registered f-divergence (``hellinger``, ``jeffreys``, ``skew_kl`` ...) or a user
generator with an analytic derivative works through :math:`g(t) - t g'(t) + g'(1)`. The paper's
derivation needs :math:`\psi` strictly increasing (f strictly convex) for the implicit reward
to be identifiable: ``tv`` (ψ a step) gives a zero gradient almost everywhere.

**TRL's α.** TRL 1.16's ``alpha_divergence`` score is :math:`(u^{\alpha_T-1}-1)/(\alpha_T-1)`
(α_T = 1: reverse KL, α_T = 0: forward KL; default 0.5); the library's ``alpha`` (Cichocki–
Amari, ``alpha=1`` → ``kl``, ``alpha=0`` → ``reverse_kl``) with P = π_ref gives
:math:`(1-u^{-a})/a`: the same score for :math:`a = 1 - \alpha_T`. (Older TRL releases and the
f-DPO paper used :math:`(1-u^{-\alpha})/\alpha`, i.e. :math:`a = \alpha`.)
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from divergent._validation import (
    check_choice,
    check_positive_scalar,
    compute_dtype,
    row_keywords,
    split_keywords,
)
from divergent.categorical import get_divergence, list_divergences
from divergent.categorical.fdiv import resolve_divergence
from divergent.categorical.registry import Divergence, did_you_mean
from divergent.rl.policy_kl import reduce_samples, sample_options

__all__ = [
    "PREFERENCE_LOSS_TYPES",
    "f_divergences_for_preferences",
    "f_dpo_loss",
    "f_dpo_score",
    "sft_f_divergence_loss",
]

PREFERENCE_LOSS_TYPES: tuple[str, ...] = ("sigmoid", "hinge", "ipo")

# the row keywords of the preference losses (one row per pair / demonstration), taken from
# their **params and shown in their signatures (mask=None, reduction="mean", normalizer=None)
_PAIR_ROWS = ("mask", "reduction", "normalizer")

# a log-probability above this (rounding of a sum of log_softmax values) is refused
_LOGP_TOLERANCE = 1e-5


def f_divergences_for_preferences() -> tuple[str, ...]:
    """Names of the registered f-divergences :func:`f_dpo_loss` accepts."""
    return tuple(d.name for d in list_divergences() if d.is_f_divergence)


def _resolve(
    divergence: Any, params: dict[str, Any], function: Callable[..., Tensor] | None = None
) -> tuple[Divergence, dict[str, float]]:
    """The f-divergence and its bound parameters; a misspelt parameter names ``function`` (the
    loss the user called) and is matched against all its keywords."""
    try:
        spec = resolve_divergence(divergence)
    except (ValueError, KeyError) as err:
        names = f_divergences_for_preferences()
        allowed = ", ".join(names)
        if isinstance(divergence, str):  # an unknown name: did-you-mean among the f-divergences
            raise ValueError(
                f"`divergence`={divergence!r} is not a registered f-divergence."
                f"{did_you_mean(divergence, names)} Allowed: {allowed}; or a Divergence built "
                "from a generator, or a generator callable"
            ) from None
        detail = f" ({err})" if callable(divergence) else ""  # e.g. a generator with f(1) != 0
        raise ValueError(
            f"`divergence` must be a registered f-divergence ({allowed}), a Divergence built "
            f"from a generator, or a generator callable; got {divergence!r}{detail}"
        ) from None
    if not spec.is_f_divergence:
        allowed = ", ".join(f_divergences_for_preferences())
        raise ValueError(
            f"`divergence`={spec.name!r} is not an f-divergence (it has no generator f, so "
            f"f-DPO's score f'(u) is undefined); allowed: {allowed}"
        )
    if function is None:
        return spec, spec.bind(params)
    keywords = tuple(inspect.signature(function).parameters)
    return spec, spec.bind(params, caller=function.__name__, keywords=keywords)


def _named_score(name: str, params: dict[str, float]) -> Callable[[Tensor], Tensor] | None:
    """Stable log-domain scores ψ(log u) of the common entries, ψ(1) = 0."""
    if name == "reverse_kl":
        return lambda log_u: log_u
    if name == "kl":
        return lambda log_u: -torch.expm1(-log_u)
    if name == "js":
        b = params["beta"]
        return lambda log_u: (
            -(1.0 - b)
            * torch.logaddexp(math.log(b) - log_u, torch.full_like(log_u, math.log1p(-b)))
        )
    if name == "alpha":
        a = params["alpha"]
        if a == 0.0:
            return lambda log_u: log_u
        return lambda log_u: -torch.expm1(-a * log_u) / a
    return None


def f_dpo_score(log_ratio: Tensor, *, divergence: Any = "reverse_kl", **params: Any) -> Tensor:
    r"""The f-DPO score :math:`\psi(u) = f'(u) - f'(1) = g(t) - t g'(t) + g'(1)` of
    :math:`\log u` (elementwise, :math:`t = 1/u`).

    :math:`\beta\,\psi(\pi/\pi_{\mathrm{ref}})` is the implicit reward of a policy under the
    divergence :math:`D_g(\pi_{\mathrm{ref}}\|\pi)` (up to a per-prompt constant).

    Args:
        log_ratio: :math:`\log u = \log\pi_\theta(y) - \log\pi_{\mathrm{ref}}(y)`, any shape.
        divergence: a registered f-divergence name (P = π_ref first), a Divergence or a
            generator with an analytic ``f_prime``.
        **params: the divergence's parameters (``beta`` for ``js``, ``alpha`` ...).

    Returns:
        ψ(u), same shape and dtype (fp16/bf16 computed in fp32).

    Example:
        >>> import torch
        >>> f_dpo_score(torch.tensor([0.0, 1.0]), divergence="kl")
        tensor([0.0000, 0.6321])
    """
    spec, bound = _resolve(divergence, params)
    if not isinstance(log_ratio, Tensor) or not log_ratio.dtype.is_floating_point:
        raise ValueError(f"`log_ratio` must be a float tensor, got {_kind(log_ratio)}")
    x = log_ratio.to(compute_dtype(log_ratio))
    registered = spec.name in f_divergences_for_preferences() and spec is get_divergence(spec.name)
    named = _named_score(spec.name, bound) if registered else None
    if named is not None:
        return named(x)
    gen = spec.f_generator(**bound)
    if gen.f_prime is None:
        raise ValueError(
            f"`divergence`={spec.name!r} has no analytic derivative; build it with "
            "divergent.make_f_divergence(f, f_prime=...) so the score f'(u) has a gradient"
        )
    t = torch.exp(-x)
    at_one = gen.f_prime(torch.ones((), dtype=x.dtype))
    return gen.f(t) - t * gen.f_prime(t) + at_one


def _kind(value: Any) -> str:
    """What a refused argument is: the dtype of a tensor, else the type's name."""
    return f"a tensor of dtype {value.dtype}" if isinstance(value, Tensor) else type(value).__name__


def _check_logps(values: dict[str, Any]) -> tuple[Tensor, ...]:
    tensors = []
    shape = None
    first = next(iter(values))
    for name, value in values.items():
        if not isinstance(value, Tensor) or not value.dtype.is_floating_point:
            raise ValueError(
                f"`{name}` must be a float tensor of sequence log-probabilities, got {_kind(value)}"
            )
        if shape is None:
            shape = value.shape
        elif value.shape != shape:
            raise ValueError(
                f"`{name}` has shape {tuple(value.shape)} but `{first}` has {tuple(shape)}; "
                "all four log-probability tensors must have the same (batch) shape"
            )
        if value.numel() and bool((value.detach() > _LOGP_TOLERANCE).any()):
            raise ValueError(
                f"`{name}` holds a positive log-probability (max {float(value.max()):.3g}); "
                "log-probabilities must be <= 0 (pass log π(y), not π(y) or logits)"
            )
        tensors.append(value)
    return tuple(tensors)


def _merge_params(mapping: Any, params: dict[str, Any]) -> dict[str, Any]:
    if mapping is None:
        return params
    if not isinstance(mapping, Mapping):
        raise ValueError(
            f"`divergence_params` must be a mapping of parameter names to values, "
            f"got {type(mapping).__name__}"
        )
    both = sorted(set(mapping) & set(params))
    if both:
        raise ValueError(f"`divergence_params` and keywords both set {both}; give each once")
    return {**mapping, **params}


def _check_lengths(lengths: Any, name: str, shape: torch.Size) -> Tensor | None:
    if lengths is None:
        return None
    if not isinstance(lengths, Tensor) or lengths.shape != shape:
        got = tuple(lengths.shape) if isinstance(lengths, Tensor) else type(lengths).__name__
        raise ValueError(f"`{name}` must be a tensor of shape {tuple(shape)}, got {got}")
    if lengths.numel() and bool((lengths <= 0).any()):
        raise ValueError(f"`{name}` (completion token counts) must be > 0")
    return lengths


def _score(
    policy_logps: Tensor,
    ref_logps: Tensor,
    lengths: Tensor | None,
    dtype: torch.dtype,
    divergence: Any,
    params: dict[str, Any],
) -> Tensor:
    """ψ(log π − log π_ref) in ``dtype``, divided by the completion ``lengths`` when given."""
    log_u = policy_logps.to(dtype) - ref_logps.to(dtype)
    score = f_dpo_score(log_u, divergence=divergence, **params)
    return score if lengths is None else score / lengths.to(dtype)


@row_keywords(
    "divergence",
    "beta",
    "loss_type",
    "label_smoothing",
    "chosen_lengths",
    "rejected_lengths",
    *_PAIR_ROWS,
    "divergence_params",
)
def f_dpo_loss(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
    *,
    divergence: Any = "reverse_kl",
    beta: float = 0.1,
    loss_type: str = "sigmoid",
    label_smoothing: float = 0.0,
    chosen_lengths: Tensor | None = None,
    rejected_lengths: Tensor | None = None,
    divergence_params: Mapping[str, Any] | None = None,
    **params: Any,
) -> Tensor:
    r"""f-DPO: DPO with the reverse-KL constraint replaced by any f-divergence
    :math:`D(\pi_{\mathrm{ref}}\|\pi)`.

    With :math:`\Delta = \psi(u_w)/n_w - \psi(u_l)/n_l` (:func:`f_dpo_score`; the lengths
    :math:`n` are 1 unless ``chosen_lengths`` / ``rejected_lengths`` are given):

    .. math::
        \text{sigmoid:}\ -(1-\varepsilon)\log\sigma(\beta\Delta)
        - \varepsilon\log\sigma(-\beta\Delta)
        \qquad \text{hinge:}\ \max(0, 1 - \beta\Delta)
        \qquad \text{ipo:}\ (\Delta - \tfrac{1}{2\beta})^2

    ``divergence="reverse_kl"`` is DPO (Rafailov et al. 2023); hinge is SLiC (Zhao et al. 2023);
    IPO is Azar et al. 2023 (β is IPO's τ). Equal to TRL 1.16 ``DPOTrainer`` (``loss_type``
    ``sigmoid`` / ``hinge`` / ``ipo``, and ``sigmoid`` with lengths = ``sigmoid_norm``; IPO in
    TRL divides by the completion lengths, pass them) for its ``f_divergence_type`` values as
    mapped in the module docstring.

    Args:
        policy_chosen_logps: :math:`\log\pi_\theta(y_w|x)`, summed over the completion, shape
            ``(B,)`` (any batch shape).
        policy_rejected_logps: :math:`\log\pi_\theta(y_l|x)`, same shape.
        ref_chosen_logps: :math:`\log\pi_{\mathrm{ref}}(y_w|x)`, same shape.
        ref_rejected_logps: :math:`\log\pi_{\mathrm{ref}}(y_l|x)`, same shape.
        divergence: the f-divergence D(π_ref‖π) (P-first): a registered name (see
            :func:`f_divergences_for_preferences`), a Divergence or a generator.
        beta: β > 0 (the constraint's weight; IPO's τ).
        loss_type: ``"sigmoid"`` | ``"hinge"`` | ``"ipo"``.
        label_smoothing: ε ∈ [0, ½) for ``"sigmoid"`` (conservative DPO, the chance a label
            is flipped); 0 = TRL's ``sigmoid``.
        chosen_lengths: optional ``(B,)`` completion token counts dividing the chosen score
            (TRL's ``ipo`` and ``sigmoid_norm``).
        rejected_lengths: same for the rejected completion.
        mask: bool ``(B,)``; False pairs are skipped.
        reduction: ``"none"`` | ``"sum"`` | ``"mean"``.
        normalizer: the mean's denominator instead of the number of kept pairs.
        divergence_params: the divergence's parameters as a mapping; needed for ``js``'s
            skew, which the registry calls ``beta`` like DPO's β
            (``divergence="js", divergence_params={"beta": 0.3}``; default ½).
        **params: more divergence parameters by keyword (``alpha=0.3`` for ``alpha`` ...).

    Returns:
        The loss (scalar, or ``(B,)`` for ``"none"``), float32 (float64 if an input is).

    Raises:
        ValueError: a divergence that is not an f-divergence (``renyi``), mismatched shapes,
            a positive log-probability, β ≤ 0, an unknown ``loss_type``, ε outside [0, ½).

    References:
        Wang, Jiang, Yang, Liu, Chen (2024), "Beyond Reverse KL: Generalizing Direct
        Preference Optimization with Diverse Divergence Constraints", ICLR, arXiv 2309.16240;
        Rafailov et al. (2023), arXiv 2305.18290; Azar et al. (2023), arXiv 2310.12036.

    Example:
        >>> import torch
        >>> pc, pr = torch.tensor([-1.0]), torch.tensor([-2.0])
        >>> rc, rr = torch.tensor([-1.5]), torch.tensor([-1.5])
        >>> f_dpo_loss(pc, pr, rc, rr, beta=1.0)  # -log σ(0.5 - (-0.5))
        tensor(0.3133)
    """
    pc, pr, rc, rr = _check_logps(
        {
            "policy_chosen_logps": policy_chosen_logps,
            "policy_rejected_logps": policy_rejected_logps,
            "ref_chosen_logps": ref_chosen_logps,
            "ref_rejected_logps": ref_rejected_logps,
        }
    )
    beta = check_positive_scalar(beta, "beta", what="the DPO constraint weight β")
    check_choice(loss_type, "loss_type", PREFERENCE_LOSS_TYPES)
    if (
        isinstance(label_smoothing, bool)
        or not isinstance(label_smoothing, (int, float))
        or not 0.0 <= label_smoothing < 0.5
    ):
        raise ValueError(f"`label_smoothing` must be a number in [0, 0.5), got {label_smoothing!r}")
    if label_smoothing and loss_type != "sigmoid":
        raise ValueError(
            f"`label_smoothing` applies to loss_type='sigmoid' only, got {loss_type!r}"
        )
    n_w = _check_lengths(chosen_lengths, "chosen_lengths", pc.shape)
    n_l = _check_lengths(rejected_lengths, "rejected_lengths", pc.shape)
    row, params = split_keywords(params, _PAIR_ROWS)
    opts = sample_options(pc, **row)
    params = _merge_params(divergence_params, params)
    _resolve(divergence, params, f_dpo_loss)
    dtype = compute_dtype(pc, pr, rc, rr)
    score_w = _score(pc, rc, n_w, dtype, divergence, params)
    score_l = _score(pr, rr, n_l, dtype, divergence, params)
    delta = score_w - score_l
    if loss_type == "sigmoid":
        rows = -F.logsigmoid(beta * delta)
        if label_smoothing:
            rows = (1.0 - label_smoothing) * rows - label_smoothing * F.logsigmoid(-beta * delta)
    elif loss_type == "hinge":
        rows = torch.relu(1.0 - beta * delta)
    else:
        rows = (delta - 1.0 / (2.0 * beta)) ** 2
    return reduce_samples(rows, opts)


@row_keywords("divergence", "beta", "lengths", *_PAIR_ROWS, "divergence_params")
def sft_f_divergence_loss(
    policy_logps: Tensor,
    ref_logps: Tensor,
    *,
    divergence: Any = "reverse_kl",
    beta: float = 1.0,
    lengths: Tensor | None = None,
    divergence_params: Mapping[str, Any] | None = None,
    **params: Any,
) -> Tensor:
    r"""SFT as implicit-reward maximisation on demonstrations, for any f-divergence.

    The implicit reward of a policy under :math:`D(\pi_{\mathrm{ref}}\|\pi)` is
    :math:`\hat r = \beta\,\psi(\pi/\pi_{\mathrm{ref}})` (f-DPO's score, up to a constant);
    SFT on demonstrations :math:`y\sim\pi_E` maximises it:

    .. math:: \mathcal L(\theta) = -\beta\,\mathbb{E}_{y\sim\pi_E}\big[\psi(u_\theta(y))/n(y)\big],
              \qquad u_\theta = \pi_\theta/\pi_{\mathrm{ref}}

    With ``reverse_kl`` (ψ = log u) this is β·NLL − β E[log π_ref]: **plain SFT up to a
    constant** — the reference term (the KL-to-reference part of the implicit-reward
    objective) has zero gradient, so SFT does not restrain the drift from π_ref
    (Wang et al. 2025). Other generators keep π_ref in the gradient,
    :math:`\nabla\mathcal L = -\beta\,\mathbb{E}_{\pi_E}[u\,\psi'(u)\,\nabla\log\pi_\theta]`:
    the weight :math:`u\psi'(u)` is 1 for reverse KL, :math:`1/u` for ``kl``,
    :math:`(1-\beta_{js})\beta_{js}/(\beta_{js} + (1-\beta_{js})u)` for ``js``, so the pull
    on a demonstration fades once the policy exceeds the reference there.

    This loss is the library's construction from the paper's abstract (SFT as implicit-reward
    learning; "alternative SFT objectives from other f-divergences that keep a non-constant KL
    term"); the paper's exact f-SFT losses were not available (notes section 15).

    Args:
        policy_logps: :math:`\log\pi_\theta(y)` of demonstrations (summed over tokens), ``(B,)``.
        ref_logps: :math:`\log\pi_{\mathrm{ref}}(y)`, same shape.
        divergence: f-divergence D(π_ref‖π) (P-first), as in :func:`f_dpo_loss`.
        beta: β > 0 (scales the loss).
        lengths: optional ``(B,)`` token counts dividing each score (per-token averaging).
        mask: bool ``(B,)``.
        reduction: ``"none"`` | ``"sum"`` | ``"mean"``.
        normalizer: the mean's denominator.
        divergence_params: the divergence's parameters as a mapping (``js``'s ``beta``).
        **params: more divergence parameters by keyword.

    Returns:
        The loss (scalar or ``(B,)``).

    References:
        Wang, Cheng, Peng, Bao, Li, Guo, Li, Zeng, Zhou, Qiu (2025), "Implicit Reward as the
        Bridge: A Unified View of SFT and DPO Connections", NeurIPS, arXiv 2507.00018;
        Wang et al. (2024), f-DPO, arXiv 2309.16240.

    Example:
        >>> import torch
        >>> lp, ref = torch.tensor([-1.0, -2.0]), torch.tensor([-1.5, -1.0])
        >>> sft_f_divergence_loss(lp, ref)  # -mean(log u) = -mean(0.5, -1.0)
        tensor(0.2500)
    """
    lp, ref = _check_logps({"policy_logps": policy_logps, "ref_logps": ref_logps})
    beta = check_positive_scalar(beta, "beta", what="the implicit-reward scale β")
    n = _check_lengths(lengths, "lengths", lp.shape)
    row, params = split_keywords(params, _PAIR_ROWS)
    opts = sample_options(lp, **row)
    params = _merge_params(divergence_params, params)
    _resolve(divergence, params, sft_f_divergence_loss)
    dtype = compute_dtype(lp, ref)
    return reduce_samples(-beta * _score(lp, ref, n, dtype, divergence, params), opts)

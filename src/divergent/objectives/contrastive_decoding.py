r"""USCD: uncertainty-aware selective contrastive decoding.

Wang, Ding, Shen, Luo, He, Yu, Tao (2024, "Uncertainty-aware Selective Contrastive Decoding
for code generation", arXiv 2409.05923) run every prompt twice per decoding step: the standard
prompt (with its input–output examples) gives :math:`p = \mathrm{softmax}(z)`, a *lame* prompt
(the same prompt without the examples, which exposes the model's noise) gives
:math:`q = \mathrm{softmax}(z_{\text{lame}})`. The contrast is applied only where the
standard prediction is uncertain:

* **gate** (:func:`uncertainty_gate`). The released code (``alphadl/CodeGen-USCD``,
  ``bigcode_eval/contrast.py``) uses the standard deviation of the probability vector over the
  vocabulary, :math:`s = \mathrm{std}_v(p_v)` (``torch.std``: Bessel-corrected), and contrasts
  when :math:`s \le \tau` (defaults ``τ = 0.0035`` in ``main.py``, ``0.005`` in the released
  script, for vocabularies of ~32k tokens: ``s`` scales like :math:`1/\sqrt{V}`). The entropy
  :math:`H(p) \ge \tau` and the top probability :math:`\max_v p_v \le \tau` are offered as
  alternative uncertainty measures.
* **contrast** (:func:`contrastive_log_probs`), on the gated rows: a plausibility filter keeps
  the tokens with :math:`p_v \ge \gamma\,\overline{p} = \gamma / V` (``filter_ratio`` γ; 1/3
  in ``main.py``, 0.667 in the released script) and zeroes the others in both distributions;
  then, in probability space as released,

  .. math:: \text{score}_v = \log\big(w_{\text{std}}\,p_v + w_{\text{lame}}\,q_v\big),
     \qquad (w_{\text{std}}, w_{\text{lame}}) = (1, -0.7),

  where non-positive entries get :math:`-\infty`. ``space="logits"`` gives the classical
  contrastive-decoding form :math:`w_{\text{std}}\log p_v + w_{\text{lame}}\log q_v` on the
  plausible tokens instead (a variant, not the released method).

:func:`uscd_log_probs` returns, per row, :math:`\log p` where the gate is closed and the
*normalised* contrasted scores (``log_softmax`` of the scores above; sampling from the
released processor normalises them the same way) where it is open. A gated row in which no
token keeps a positive score (the lame prompt outweighs the standard one everywhere on the
plausible set; the released code would then have no token to sample) falls back to
:math:`\log p`; :func:`uscd_log_probs` reports these rows.

Conventions: logits with the vocabulary axis last, any leading shape ``(...)``; float64 stays
float64, other dtypes are computed in float32. NaN in a row gives NaN for that row.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import torch
from torch import Tensor

from divergent._validation import (
    check_choice,
    check_pair,
    check_positive_scalar,
    check_tensor,
    compute_dtype,
)

__all__ = [
    "CONTRAST_SPACES",
    "UNCERTAINTY_MEASURES",
    "ContrastiveDecoding",
    "contrastive_log_probs",
    "uncertainty_gate",
    "uncertainty_score",
    "uscd_log_probs",
]

UNCERTAINTY_MEASURES: tuple[str, ...] = ("std", "entropy", "top_prob")
CONTRAST_SPACES: tuple[str, ...] = ("probs", "logits")


class ContrastiveDecoding(NamedTuple):
    """The result of one USCD step.

    Attributes:
        log_probs: the decoding distribution's log-probabilities, ``(..., V)``.
        gated: bool ``(...)``, True where the contrast was applied.
        fallback: bool ``(...)``, True where the gate was open but no token kept a positive
            contrasted score, so the standard distribution was used.
    """

    log_probs: Tensor
    gated: Tensor
    fallback: Tensor


def _check_measure(measure: Any) -> str:
    return check_choice(
        measure,
        "measure",
        UNCERTAINTY_MEASURES,
        " ('std': standard deviation of the probability vector, as released; 'entropy': H(p) "
        "in nats; 'top_prob': max p)",
    )


def _check_logits(x: Any, name: str) -> Tensor:
    x = check_tensor(x, name)
    if bool((x == math.inf).any()):
        raise ValueError(f"`{name}` has +inf entries; logits must be < +inf")
    return x


def uncertainty_score(standard_logits: Tensor, *, measure: str = "std") -> Tensor:
    r"""The uncertainty statistic of the standard next-token distribution :math:`p`.

    * ``"std"``: :math:`s = \sqrt{\frac{1}{V-1}\sum_v (p_v - 1/V)^2}` (``torch.std``, as in the
      released code; *small* = uncertain);
    * ``"entropy"``: :math:`H(p) = -\sum_v p_v \log p_v` (nats; *large* = uncertain);
    * ``"top_prob"``: :math:`\max_v p_v` (*small* = uncertain).

    Args:
        standard_logits: logits of the standard prompt, ``(..., V)``.
        measure: one of :data:`UNCERTAINTY_MEASURES`.

    Returns:
        The statistic, ``(...)``.

    References:
        Wang et al. (2024), arXiv 2409.05923; code ``alphadl/CodeGen-USCD``.
    """
    z = _check_logits(standard_logits, "standard_logits")
    _check_measure(measure)
    if measure == "std" and z.shape[-1] < 2:
        raise ValueError("`measure='std'` needs a vocabulary of at least 2 tokens")
    log_p = torch.log_softmax(z.to(compute_dtype(z)), dim=-1)
    p = log_p.exp()
    if measure == "std":
        return p.std(dim=-1)
    if measure == "top_prob":
        return p.amax(dim=-1)
    return -torch.where(p > 0, p * log_p, 0.0).sum(-1)


def uncertainty_gate(
    standard_logits: Tensor, *, measure: str = "std", threshold: float = 0.005
) -> Tensor:
    r"""Where the standard prediction is uncertain enough for USCD to contrast.

    Open (True) when :math:`s \le \tau` for ``"std"`` and ``"top_prob"`` and when
    :math:`H(p) \ge \tau` for ``"entropy"`` (the released code contrasts unless
    ``std > mean_num``).

    Args:
        standard_logits: logits of the standard prompt, ``(..., V)``.
        measure: see :func:`uncertainty_score`.
        threshold: τ (> 0). The released defaults (0.0035 / 0.005 for ``"std"``) assume a
            ~32k-token vocabulary; ``std`` of a one-hot row is :math:`1/\sqrt{V}`, so scale
            τ by :math:`\sqrt{32000/V}` for another vocabulary size.

    Returns:
        bool ``(...)``; a NaN row is never gated (its output is NaN anyway).

    References:
        Wang et al. (2024), arXiv 2409.05923.
    """
    tau = check_positive_scalar(threshold, "threshold", what="the gate's uncertainty level")
    score = uncertainty_score(standard_logits, measure=measure)
    if measure == "entropy":
        return score >= tau
    return score <= tau


def contrastive_log_probs(
    standard_logits: Tensor,
    lame_logits: Tensor,
    *,
    weights: tuple[float, float] = (1.0, -0.7),
    filter_ratio: float = 0.667,
    space: str = "probs",
) -> tuple[Tensor, Tensor]:
    r"""The contrasted (un-gated) next-token scores of USCD, normalised.

    With :math:`\mathcal{V}_\gamma = \{v : p_v \ge \gamma / V\}` (the plausibility filter):

    .. math::

        \text{score}_v = \begin{cases}
            \log(w_s p_v + w_l q_v) & v \in \mathcal{V}_\gamma,\ w_s p_v + w_l q_v > 0
                \quad (\text{space} = \text{probs})\\
            w_s \log p_v + w_l \log q_v & v \in \mathcal{V}_\gamma \quad (\text{space} =
                \text{logits})\\
            -\infty & \text{otherwise,}
        \end{cases}

    returned as :math:`\mathrm{log\_softmax}(\text{score})`.

    Args:
        standard_logits: logits of the standard prompt, ``(..., V)``.
        lame_logits: logits of the lame prompt (same shape).
        weights: :math:`(w_{\text{std}}, w_{\text{lame}})`, finite, ``w_std > 0`` (released:
            ``(1.0, -0.7)``; a positive ``w_lame`` makes it an ensemble).
        filter_ratio: γ ≥ 0; γ ≤ 1 keeps at least the argmax of :math:`p`.
        space: ``"probs"`` (released) or ``"logits"`` (classical contrastive decoding).

    Returns:
        ``(log_probs, empty)``: normalised log-scores ``(..., V)`` and a bool ``(...)``
        marking the rows in which no token kept a finite score (those rows are all −inf).

    Raises:
        ValueError: shapes, +inf logits, bad ``weights`` / ``filter_ratio`` / ``space``.

    References:
        Wang et al. (2024), arXiv 2409.05923; Li et al. (2023), "Contrastive decoding",
        arXiv 2210.15097 (the log-space form).
    """
    z_std = _check_logits(standard_logits, "standard_logits")
    z_lame = _check_logits(lame_logits, "lame_logits")
    z_std, z_lame = check_pair(z_std, z_lame, "standard_logits", "lame_logits")
    ok = (
        isinstance(weights, (tuple, list))
        and len(weights) == 2
        and all(isinstance(w, (int, float)) and not isinstance(w, bool) for w in weights)
        and all(math.isfinite(w) for w in weights)
        and weights[0] > 0
    )
    if not ok:
        raise ValueError(
            "`weights` must be a pair (w_std, w_lame) of finite numbers with w_std > 0 "
            f"(released: (1.0, -0.7)), got {weights!r}"
        )
    gamma = check_positive_scalar(filter_ratio, "filter_ratio", allow_zero=True)
    check_choice(space, "space", CONTRAST_SPACES)
    dtype = compute_dtype(z_std, z_lame)
    log_p = torch.log_softmax(z_std.to(dtype), dim=-1)
    log_q = torch.log_softmax(z_lame.to(dtype), dim=-1)
    p = log_p.exp()
    n_vocab = z_std.shape[-1]
    plausible = p >= gamma / n_vocab  # γ · mean_v(p), the mean being exactly 1/V
    w_std, w_lame = float(weights[0]), float(weights[1])
    if space == "probs":
        mixed = w_std * p + w_lame * log_q.exp()
        keep = plausible & (mixed > 0)
        score = torch.where(keep, torch.log(torch.where(keep, mixed, 1.0)), -math.inf)
    else:
        finite = plausible & (log_q > -math.inf)
        keep = finite
        score = torch.where(finite, w_std * log_p + w_lame * log_q, -math.inf)
    nan_rows = torch.isnan(log_p).any(-1) | torch.isnan(log_q).any(-1)
    empty = ~keep.any(-1) & ~nan_rows
    # a row with no kept token: log_softmax would give NaN; leave it −inf and report it
    safe = torch.where(empty.unsqueeze(-1), 0.0, score)
    out = torch.where(empty.unsqueeze(-1), -math.inf, torch.log_softmax(safe, dim=-1))
    out = torch.where(nan_rows.unsqueeze(-1), math.nan, out)
    return out, empty


def uscd_log_probs(
    standard_logits: Tensor,
    lame_logits: Tensor,
    *,
    measure: str = "std",
    threshold: float = 0.005,
    weights: tuple[float, float] = (1.0, -0.7),
    filter_ratio: float = 0.667,
    space: str = "probs",
) -> ContrastiveDecoding:
    r"""One USCD decoding step: contrast with the lame prompt only where :math:`p` is uncertain.

    .. math::

        \log \pi_v = \begin{cases}
            \mathrm{log\_softmax}(\text{score})_v & \text{gate open (uncertain) and some
                score finite}\\
            \log p_v & \text{otherwise,}
        \end{cases}

    with the gate of :func:`uncertainty_gate` and the scores of :func:`contrastive_log_probs`.
    Greedy decoding takes the argmax of ``log_probs``; sampling samples it (the released
    script adds temperature 0.8 and top-p 0.95 on top).

    Args:
        standard_logits: logits of the standard prompt, ``(..., V)``.
        lame_logits: logits of the lame prompt, ``(..., V)``.
        measure, threshold: the gate (:func:`uncertainty_gate`; released: ``"std"``, 0.005
            for a ~32k vocabulary).
        weights, filter_ratio, space: the contrast (:func:`contrastive_log_probs`; released:
            ``(1.0, -0.7)``, 0.667, ``"probs"``).

    Returns:
        :class:`ContrastiveDecoding` ``(log_probs (..., V), gated (...), fallback (...))``.

    References:
        Wang, Ding, Shen, Luo, He, Yu, Tao (2024), "Uncertainty-aware Selective Contrastive
        Decoding for code generation", arXiv 2409.05923; code ``alphadl/CodeGen-USCD``.

    Example:
        >>> import torch
        >>> standard = torch.log(torch.tensor([0.40, 0.45, 0.15]))  # noise token 1 wins
        >>> lame = torch.log(torch.tensor([0.05, 0.90, 0.05]))      # the lame prompt's noise
        >>> out = uscd_log_probs(standard, lame, measure="top_prob", threshold=0.6)
        >>> bool(out.gated), int(out.log_probs.argmax())
        (True, 0)
    """
    contrasted, empty = contrastive_log_probs(
        standard_logits, lame_logits, weights=weights, filter_ratio=filter_ratio, space=space
    )
    gate = uncertainty_gate(standard_logits, measure=measure, threshold=threshold)
    z = standard_logits
    log_p = torch.log_softmax(z.to(compute_dtype(z, lame_logits)), dim=-1)
    use = gate & ~empty
    out = torch.where(use.unsqueeze(-1), contrasted, log_p)
    nan_rows = torch.isnan(contrasted).any(-1)
    out = torch.where(nan_rows.unsqueeze(-1), math.nan, out)
    return ContrastiveDecoding(out, use & ~nan_rows, gate & empty)

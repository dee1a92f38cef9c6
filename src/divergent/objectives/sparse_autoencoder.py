r"""Sparse-autoencoder losses: the TopK SAE and the variational TopK SAE (vSAE), plus metrics.

A **TopK SAE** (Gao et al. 2024) encodes :math:`x \in \mathbb R^d` into :math:`m` latents and
keeps the k largest pre-activations, so sparsity is architectural and the loss is only the
reconstruction error:

.. math::

    f = \mathrm{ReLU}\big(\mathrm{TopK}_k(W_{\text{enc}}(x - b_{\text{dec}}) + b_{\text{enc}})\big),
    \qquad \hat x = W_{\text{dec}}^\top f + b_{\text{dec}},
    \qquad \mathcal L_{\text{SAE}} = \lVert x - \hat x\rVert_2^2
    \quad(:func:`sae_reconstruction_loss`).

The **variational SAE** (vSAE; Baker, Li et al. 2025, arXiv 2509.22994) replaces the
deterministic pre-activation by a sample of a Gaussian posterior
:math:`q(z\mid x) = \mathcal N(\mu(x), \operatorname{diag}\sigma^2(x))` and regularises it toward
the standard normal prior:

.. math::

    \mathcal L_{\text{vSAE}} = \lVert x - \hat x\rVert_2^2
        + \lambda_{\text{KL}}\,\mathrm{KL}\big(\mathcal N(\mu, \operatorname{diag}\sigma^2)
        \,\|\, \mathcal N(0, I)\big),
    \qquad \mathrm{KL} = \tfrac12\sum_j\big(\mu_j^2 + \sigma_j^2 - \log\sigma_j^2 - 1\big).

The KL (:func:`gaussian_prior_kl`) is the diagonal case of the library's Gaussian closed form
(:func:`divergent.distributions.closed_form` on ``Independent(Normal)`` pairs; the tests check
that the two agree), written directly in ``log_var`` so that it stays finite and exact for
extreme log-variances (σ = e^{lv/2} underflows to 0 for lv ≲ −208 in fp32, where the closed
form's log σ² would be −inf). σ is either learned (``log_var`` a tensor
from an encoder head, as in the paper's "learned Gaussian posteriors") or fixed (``log_var`` a
number; ``0.0`` is the σ = 1 of the LessWrong write-up, where the KL reduces to
:math:`\tfrac12\lVert\mu\rVert^2`).

**Where TopK sits.** The paper's text does not pin this down (the notes mark it unverified); here
the order is *sample, then select*: :math:`z = \mu + \sigma\odot\varepsilon` with
:math:`\varepsilon\sim\mathcal N(0, I)` (:func:`reparameterize`), then
:math:`f = \mathrm{ReLU}(\mathrm{TopK}_k(z))` (:func:`topk_activation`) and
:math:`\hat x = W_{\text{dec}}^\top f + b_{\text{dec}}`. The KL is taken over the whole
posterior (all m latents, before selection), which is the "naive" variational SAE the paper
analyses; at evaluation the posterior mean is used (:math:`z = \mu`). A variant that charges the
KL only on the selected latents is not implemented.

**Quality metrics** (decoder directions as rows, ``(n_latents, d)``):
:func:`dead_latent_fraction` (latents never active on a batch), :func:`max_cosine_similarity`
(the mean over ground-truth features of the best cosine of any decoder direction, "MMCS";
Sharkey, Braun & Millidge 2022) and :func:`mean_pairwise_cosine` (mean |cosine| between distinct
decoder directions: lower = more independent features).

References:
    Baker, Li et al. 2025, "Analysis of Variational Sparse Autoencoders", arXiv 2509.22994;
    Gao et al. 2024, "Scaling and evaluating sparse autoencoders", arXiv 2406.04093;
    Kingma & Welling 2014, "Auto-Encoding Variational Bayes" (reparameterisation, Gaussian KL).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

from divergent._validation import (
    check_bool,
    check_float_tensor,
    check_int,
    check_positive_scalar,
    check_reduction,
    compute_dtype,
    reduce_rows,
)

__all__ = [
    "VariationalSAETerms",
    "dead_latent_fraction",
    "gaussian_prior_kl",
    "max_cosine_similarity",
    "mean_pairwise_cosine",
    "reparameterize",
    "sae_reconstruction_loss",
    "topk_activation",
    "variational_sae_loss",
    "variational_sae_terms",
]


class VariationalSAETerms(NamedTuple):
    """The vSAE loss and its two terms (each reduced as asked).

    Attributes:
        loss: reconstruction + kl_weight · kl.
        reconstruction: :math:`\\lVert x - \\hat x\\rVert^2`.
        kl: :math:`\\mathrm{KL}(\\mathcal N(\\mu, \\operatorname{diag}\\sigma^2)
            \\|\\mathcal N(0, I))` (unweighted).
    """

    loss: Tensor
    reconstruction: Tensor
    kl: Tensor


def _vectors(x: object, name: str) -> Tensor:
    x = check_float_tensor(x, name, min_dim=1)
    if x.shape[-1] == 0:
        raise ValueError(f"`{name}` has an empty last (feature) axis, shape {tuple(x.shape)}")
    return x


def _reduce(rows: Tensor, reduction: str) -> Tensor:
    if reduction == "none":
        return rows
    return reduce_rows(rows.reshape(-1), reduction, count=rows.numel(), normalizer=None)


def topk_activation(pre: Tensor, k: int) -> Tensor:
    r"""ReLU of the k largest entries of each row; every other entry set to 0.

    .. math:: \mathrm{ReLU}(\mathrm{TopK}_k(a))_j = \max(a_j, 0)\,[a_j \text{ among the k
              largest of } a]

    Exactly k entries per row are selected (ties broken by :func:`torch.topk`); after the ReLU
    at most k are non-zero. The gradient flows to the selected entries only.

    Args:
        pre: pre-activations ``(..., m)``.
        k: number of latents kept per row, ``1 <= k <= m``.

    Returns:
        ``(..., m)`` codes, same dtype as ``pre``.

    Example:
        >>> topk_activation(torch.tensor([[0.5, -1.0, 2.0, 0.1]]), 2)
        tensor([[0.5000, 0.0000, 2.0000, 0.0000]])
    """
    pre = _vectors(pre, "pre")
    k = check_int(k, "k", 1, "latents kept per row", maximum=pre.shape[-1])
    values, index = pre.topk(k, dim=-1)
    return torch.zeros_like(pre).scatter(-1, index, torch.relu(values))


def reparameterize(
    mu: Tensor, log_var: Tensor | float = 0.0, *, generator: torch.Generator | None = None
) -> Tensor:
    r"""A reparameterised sample :math:`z = \mu + e^{\frac12\log\sigma^2}\odot\varepsilon`,
    :math:`\varepsilon\sim\mathcal N(0, I)` (differentiable in μ and log σ²).

    Args:
        mu: posterior means ``(..., m)``.
        log_var: log-variances, a tensor of ``mu``'s shape (learned σ) or a finite number (fixed
            σ; ``0.0`` is σ = 1).
        generator: the random generator of ε (the global one if None).

    Returns:
        ``(..., m)`` sample.

    Example:
        >>> z = reparameterize(torch.zeros(2, 3), -50.0)  # σ ≈ 1e-11: z ≈ μ
        >>> bool(z.abs().max() < 1e-9)
        True
    """
    mu = _vectors(mu, "mu")
    log_var = _log_var(log_var, mu)
    eps = torch.randn(mu.shape, generator=generator, dtype=mu.dtype, device=mu.device)
    return mu + torch.exp(0.5 * log_var) * eps


def _log_var(log_var: Tensor | float, mu: Tensor) -> Tensor:
    if isinstance(log_var, Tensor):
        check_float_tensor(log_var, "log_var")
        if log_var.shape != mu.shape:
            raise ValueError(
                f"`log_var` must have the shape of `mu` {tuple(mu.shape)} (one log-variance per "
                f"latent) or be a number (a fixed σ), got shape {tuple(log_var.shape)}"
            )
        if bool(torch.isinf(log_var).any()):
            raise ValueError("`log_var` must be finite (σ² in (0, ∞)); got ±inf entries")
        return log_var
    if isinstance(log_var, bool) or not isinstance(log_var, (int, float)):
        raise ValueError(f"`log_var` must be a tensor or a finite number, got {log_var!r}")
    if not math.isfinite(log_var):
        raise ValueError(f"`log_var` must be finite (σ² in (0, ∞)), got {log_var!r}")
    return torch.full_like(mu, float(log_var))


def gaussian_prior_kl(
    mu: Tensor, log_var: Tensor | float = 0.0, *, reduction: str = "mean"
) -> Tensor:
    r"""KL of the diagonal Gaussian posterior from the standard normal prior, per row.

    .. math:: \mathrm{KL}\big(\mathcal N(\mu, \operatorname{diag}\sigma^2)\,\|\,
              \mathcal N(0, I)\big)
              = \tfrac12\sum_{j=1}^m\big(\mu_j^2 + \sigma_j^2 - \log\sigma_j^2 - 1\big)

    computed directly from ``log_var`` as :math:`\tfrac12\sum_j(\mu_j^2 + \operatorname{expm1}(l_j)
    - l_j)` with :math:`l = \log\sigma^2` (the same value as the library's
    :func:`divergent.distributions.closed_form` on an ``Independent(Normal)`` pair wherever that
    is finite; σ is never formed, so a very negative ``log_var`` gives its exact finite KL, e.g.
    ≈ 104.5 per latent at l = −210, and a ``log_var`` whose σ² overflows the dtype gives +inf,
    never NaN). NaN in a row's ``mu`` or ``log_var`` gives NaN for that row.

    Args:
        mu: posterior means ``(..., m)``.
        log_var: log σ², a tensor of ``mu``'s shape or a finite number (fixed σ).
        reduction: ``"none"`` (leading shape), ``"sum"`` or ``"mean"`` over rows.

    Returns:
        The KL in nats; fp32 for fp16/bf16/fp32 inputs, fp64 for fp64.

    Example:
        >>> round(float(gaussian_prior_kl(torch.tensor([[1.0, 2.0]]))), 4)  # ½(1 + 4), σ = 1
        2.5
        >>> mu, lv = torch.tensor([0.0]), torch.tensor([math.log(4.0)])
        >>> round(float(gaussian_prior_kl(mu, lv)), 4)  # ½(4 − log 4 − 1)
        0.8069
    """
    mu = _vectors(mu, "mu")
    reduction = check_reduction(reduction)
    log_var = _log_var(log_var, mu)
    if bool(torch.isinf(mu).any()):
        raise ValueError("`mu` must be finite; got ±inf entries")
    dtype = compute_dtype(mu, log_var)
    mu, log_var = mu.to(dtype), log_var.to(dtype)
    # expm1(l) − l = σ² − log σ² − 1 without cancellation near l = 0; no σ is formed, so
    # l → −∞ stays finite (−l dominates) and l → +∞ overflows to +inf, not NaN
    rows = 0.5 * (mu.square() + torch.expm1(log_var) - log_var).sum(-1)
    return _reduce(rows, reduction)


def sae_reconstruction_loss(x: Tensor, x_hat: Tensor, *, reduction: str = "mean") -> Tensor:
    r"""Squared reconstruction error per row, the whole loss of a TopK SAE.

    .. math:: \mathcal L = \lVert x - \hat x\rVert_2^2 = \sum_{i=1}^d (x_i - \hat x_i)^2

    Args:
        x: inputs ``(..., d)``.
        x_hat: reconstructions, same shape.
        reduction: ``"none"`` (leading shape), ``"sum"`` or ``"mean"`` over rows.

    Returns:
        The error; fp32 for fp16/bf16/fp32 inputs, fp64 for fp64. NaN in a row gives NaN there.

    Example:
        >>> sae_reconstruction_loss(torch.tensor([[1.0, 2.0]]), torch.tensor([[0.0, 0.0]]))
        tensor(5.)
    """
    x, x_hat = _vectors(x, "x"), _vectors(x_hat, "x_hat")
    if x.shape != x_hat.shape:
        raise ValueError(
            f"`x` and `x_hat` must have the same shape, got {tuple(x.shape)} and "
            f"{tuple(x_hat.shape)}"
        )
    reduction = check_reduction(reduction)
    dtype = compute_dtype(x, x_hat)
    rows = (x.to(dtype) - x_hat.to(dtype)).square().sum(-1)
    return _reduce(rows, reduction)


def variational_sae_terms(
    x: Tensor,
    x_hat: Tensor,
    mu: Tensor,
    log_var: Tensor | float = 0.0,
    *,
    kl_weight: float = 1.0,
    reduction: str = "mean",
) -> VariationalSAETerms:
    r"""The vSAE loss and its terms:
    :math:`\lVert x - \hat x\rVert^2 + \lambda_{\text{KL}}\,
    \mathrm{KL}(\mathcal N(\mu, \operatorname{diag}\sigma^2)\|\mathcal N(0, I))`.

    ``x_hat`` is the decoding of a reparameterised sample passed through TopK (see the module
    docstring for the order); ``mu`` and ``log_var`` are the posterior of *all* m latents.

    Args:
        x: inputs ``(..., d)``.
        x_hat: reconstructions, same shape.
        mu: posterior means ``(..., m)``, same leading shape as ``x``.
        log_var: log σ², a tensor of ``mu``'s shape (learned σ) or a number (fixed σ).
        kl_weight: λ_KL ≥ 0.
        reduction: ``"none"``, ``"sum"`` or ``"mean"`` over rows (each term alike).

    Returns:
        :class:`VariationalSAETerms` ``(loss, reconstruction, kl)``.

    Example:
        >>> x, x_hat = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.5, 0.0]])
        >>> t = variational_sae_terms(x, x_hat, torch.tensor([[1.0, 0.0, 0.0]]), kl_weight=0.5)
        >>> [round(float(v), 4) for v in t]  # 0.25 + 0.5 · ½ · 1
        [0.5, 0.25, 0.5]
    """
    mu = _vectors(mu, "mu")
    if isinstance(x, Tensor) and mu.shape[:-1] != x.shape[:-1]:
        raise ValueError(
            f"`mu` must have the leading shape of `x` {tuple(x.shape[:-1])} (one posterior per "
            f"input row), got shape {tuple(mu.shape)}"
        )
    weight = check_positive_scalar(kl_weight, "kl_weight", allow_zero=True)
    rec = sae_reconstruction_loss(x, x_hat, reduction=reduction)
    kl = gaussian_prior_kl(mu, log_var, reduction=reduction)
    return VariationalSAETerms(rec + weight * kl, rec, kl)


def variational_sae_loss(
    x: Tensor,
    x_hat: Tensor,
    mu: Tensor,
    log_var: Tensor | float = 0.0,
    *,
    kl_weight: float = 1.0,
    reduction: str = "mean",
) -> Tensor:
    r"""The vSAE loss :math:`\lVert x - \hat x\rVert^2 + \lambda_{\text{KL}}\,
    \mathrm{KL}(\mathcal N(\mu, \operatorname{diag}\sigma^2)\|\mathcal N(0, I))`
    (:func:`variational_sae_terms`'s ``loss``; same arguments).

    Example:
        >>> x = torch.tensor([[1.0, 0.0]])
        >>> round(float(variational_sae_loss(x, x, torch.tensor([[2.0]]), kl_weight=0.1)), 4)
        0.2
    """
    return variational_sae_terms(
        x, x_hat, mu, log_var, kl_weight=kl_weight, reduction=reduction
    ).loss


def dead_latent_fraction(codes: Tensor, *, threshold: float = 0.0) -> float:
    r"""Fraction of latents never active on a batch of codes.

    .. math:: \frac1m\,\#\{j : |f_{nj}| \le \tau \ \forall n\}

    Args:
        codes: latent activations ``(..., m)`` over a batch (all leading axes are rows).
        threshold: τ ≥ 0; a latent is active on a row when ``|code| > threshold``.

    Returns:
        A float in [0, 1].

    Example:
        >>> dead_latent_fraction(torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, 2.0, 0.0, 0.0]]))
        0.5
    """
    codes = _vectors(codes, "codes")
    tau = check_positive_scalar(threshold, "threshold", allow_zero=True)
    if codes.numel() == 0:
        raise ValueError(f"`codes` has no rows (shape {tuple(codes.shape)})")
    if bool(torch.isnan(codes).any()):
        raise ValueError("`codes` contains NaN; the activity of those latents is undefined")
    active = (codes.detach().abs() > tau).reshape(-1, codes.shape[-1]).any(0)
    return float(1.0 - active.double().mean())


def _unit_rows(w: Tensor, name: str) -> Tensor:
    w = check_float_tensor(w, name, dims=2)
    if w.shape[0] == 0 or w.shape[1] == 0:
        raise ValueError(f"`{name}` must have at least one row and column, got {tuple(w.shape)}")
    if not bool(torch.isfinite(w).all()):
        raise ValueError(f"`{name}` must be finite (no NaN / ±inf)")
    norms = torch.linalg.vector_norm(w.double(), dim=1)
    if bool((norms == 0).any()):
        row = int((norms == 0).nonzero()[0])
        raise ValueError(f"`{name}` row {row} has norm 0; its direction (cosine) is undefined")
    return w.double() / norms[:, None]


def max_cosine_similarity(directions: Tensor, ground_truth: Tensor) -> float:
    r"""Mean over ground-truth features of the largest cosine similarity to any decoder
    direction ("MMCS"; 1 = every feature recovered exactly).

    .. math:: \frac1n\sum_{i=1}^n\max_j
              \frac{\langle g_i, w_j\rangle}{\lVert g_i\rVert\lVert w_j\rVert}

    The cosine is signed (SAE codes are non-negative, so a direction pointing the wrong way
    does not recover the feature).

    Args:
        directions: decoder directions as rows ``(m, d)``.
        ground_truth: ground-truth feature directions as rows ``(n, d)``.

    Returns:
        A float in [−1, 1] (computed in float64).

    Example:
        >>> g = torch.eye(2)
        >>> max_cosine_similarity(torch.tensor([[1.0, 0.0], [1.0, 1.0]]), g)  # (1 + √½)/2
        0.8535533905932737
    """
    w = _unit_rows(directions, "directions")
    g = _unit_rows(ground_truth, "ground_truth")
    if w.shape[1] != g.shape[1]:
        raise ValueError(
            f"`directions` and `ground_truth` must have the same dimension, got "
            f"{w.shape[1]} and {g.shape[1]}"
        )
    return float((g @ w.T).max(dim=1).values.mean())


def mean_pairwise_cosine(
    directions: Tensor, *, latents: Tensor | None = None, absolute: bool = True
) -> float:
    r"""Mean cosine similarity between distinct decoder directions (lower |cos| = more
    independent, less overlapping features).

    .. math:: \frac{2}{m(m-1)}\sum_{i<j}\left|\frac{\langle w_i, w_j\rangle}
              {\lVert w_i\rVert\lVert w_j\rVert}\right|

    Args:
        directions: decoder directions as rows ``(m, d)``.
        latents: optional bool ``(m,)`` selecting the directions to compare (e.g. the live
            latents); at least two must be selected.
        absolute: average |cos| (True) or the signed cosine (False).

    Returns:
        A float (computed in float64).

    Example:
        >>> w = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
        >>> round(mean_pairwise_cosine(w), 4)  # (0 + √½ + √½)/3
        0.4714
    """
    w = _unit_rows(directions, "directions")
    check_bool(absolute, "absolute")
    if latents is not None:
        if (
            not isinstance(latents, Tensor)
            or latents.dtype != torch.bool
            or latents.shape != (w.shape[0],)
        ):
            raise ValueError(
                f"`latents` must be None or a bool tensor of shape ({w.shape[0]},) (True = "
                f"include that direction), got {latents!r}"
            )
        w = w[latents.to(w.device)]
    m = w.shape[0]
    if m < 2:
        raise ValueError(f"mean_pairwise_cosine needs at least 2 directions, got {m}")
    cos = w @ w.T
    if absolute:
        cos = cos.abs()
    off = cos.sum() - cos.diagonal().sum()
    return float(off / (m * (m - 1)))

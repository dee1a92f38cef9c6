r"""Measured quantities of the layer-wise generalisation bounds of He & Goldfeld 2024.

For a network :math:`X \to T_1 \to \dots \to T_L` and a loss :math:`\ell(t_k, y)` seen as a
function of layer k's representation, the bounds of He & Goldfeld (arXiv 2404.03176) read, per
layer k (train-side distribution :math:`P^{\mathrm{tr}}_k`, test-side :math:`P^{\mathrm{te}}_k`
of :math:`(T_k, Y)`):

.. math::

    \mathrm{gen} \le \sqrt{2\sigma^2\,\mathrm{KL}(P^{\mathrm{tr}}_k\|P^{\mathrm{te}}_k)},
    \qquad
    \mathrm{gen} \le L_k\,W_1(P^{\mathrm{tr}}_k, P^{\mathrm{te}}_k),

with :math:`\sigma` the sub-Gaussian constant and :math:`L_k` the Lipschitz constant of the loss
in :math:`t_k`. The helpers here measure the pieces from samples:

* :func:`gaussian_kl` — KL between two Gaussians in float64 (closed form);
* :func:`class_gaussian_kl` — KL of :math:`(T, Y)` when each class is fitted by a Gaussian
  (equal class weights on both sides, so the label term is 0);
* :func:`assignment_w1` — the exact 1-Wasserstein distance between two equal-size point clouds
  (an optimal assignment), and :func:`class_w1`, its class-weighted version (a coupling within
  classes, so it upper-bounds the W1 of :math:`(T, Y)` for any metric on the labels);
* :func:`max_gradient_norm` — a *measured* Lipschitz constant, the largest gradient norm of a
  per-point loss over given points (a lower estimate of the true supremum, not a product of
  weight norms);
* :func:`paired_mdc` — the smallest detectable change of a mean over runs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch

__all__ = [
    "MDC_Z",
    "assignment_w1",
    "class_gaussian_kl",
    "class_w1",
    "gaussian_kl",
    "max_gradient_norm",
    "paired_mdc",
]

MDC_Z = 2.0
"""The smallest detectable change is ``MDC_Z`` standard errors (about a 95 % noise band)."""


def _as_points(x: object, name: str) -> np.ndarray:
    arr = np.asarray(x.detach().cpu() if isinstance(x, torch.Tensor) else x, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2 or arr.shape[0] < 2:
        raise ValueError(f"`{name}` must be (n, d) points with n >= 2, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"`{name}` contains NaN or inf")
    return arr


def gaussian_kl(
    mean_p: np.ndarray, cov_p: np.ndarray, mean_q: np.ndarray, cov_q: np.ndarray
) -> float:
    r"""KL(N(m_p, Σ_p) ‖ N(m_q, Σ_q)) in float64, P first.

    .. math::

        \tfrac12\bigl[\operatorname{tr}(\Sigma_q^{-1}\Sigma_p)
        + (m_q - m_p)^\top\Sigma_q^{-1}(m_q - m_p) - d
        + \ln\det\Sigma_q - \ln\det\Sigma_p\bigr]

    Args:
        mean_p, cov_p: mean (d,) and covariance (d, d) of P.
        mean_q, cov_q: the same for Q.

    Returns:
        The KL in nats.

    Raises:
        ValueError: shapes disagree or a covariance is not positive definite.

    >>> round(gaussian_kl(np.zeros(1), np.eye(1), np.ones(1), np.eye(1)), 6)
    0.5
    """
    mp, mq = np.atleast_1d(np.asarray(mean_p, float)), np.atleast_1d(np.asarray(mean_q, float))
    sp, sq = np.atleast_2d(np.asarray(cov_p, float)), np.atleast_2d(np.asarray(cov_q, float))
    d = mp.shape[0]
    if mq.shape != (d,) or sp.shape != (d, d) or sq.shape != (d, d):
        raise ValueError(
            f"gaussian_kl: shapes disagree (means {mp.shape}, {mq.shape}; "
            f"covariances {sp.shape}, {sq.shape})"
        )
    try:
        lp, lq = np.linalg.cholesky(sp), np.linalg.cholesky(sq)
    except np.linalg.LinAlgError:
        raise ValueError("gaussian_kl: a covariance is not positive definite") from None
    a = np.linalg.solve(lq, lp)  # Lq^{-1} Lp: tr(Σq^{-1}Σp) = ‖a‖_F²
    b = np.linalg.solve(lq, mq - mp)
    logdet = 2.0 * (np.log(np.diag(lq)).sum() - np.log(np.diag(lp)).sum())
    return float(0.5 * ((a * a).sum() + (b * b).sum() - d + logdet))


def _fit(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return x.mean(0), np.atleast_2d(np.cov(x, rowvar=False))


def class_gaussian_kl(
    t_p: object, y_p: object, t_q: object, y_q: object, classes: Sequence[int] = (0, 1)
) -> float:
    r"""KL of (T, Y) between two samples when each class is fitted by a Gaussian.

    .. math::

        \mathrm{KL} = \sum_y \tfrac{1}{|\mathcal Y|}\,
        \mathrm{KL}\bigl(\mathcal N(\hat m^p_y, \hat\Sigma^p_y)\,\|\,
        \mathcal N(\hat m^q_y, \hat\Sigma^q_y)\bigr)

    (equal class weights: the label term of the joint KL is 0 for balanced samples, which the
    experiments use). Sample means and unbiased covariances.

    Args:
        t_p, y_p: representations (n, d) and labels (n,) of the P sample (the train side).
        t_q, y_q: the same for Q (the test side).
        classes: the labels to fit.

    Returns:
        The KL in nats.

    >>> rng = np.random.default_rng(0)
    >>> t = rng.normal(size=(400, 2)); y = np.repeat([0, 1], 200)
    >>> class_gaussian_kl(t, y, t, y)
    0.0
    """
    tp, tq = _as_points(t_p, "t_p"), _as_points(t_q, "t_q")
    yp, yq = np.asarray(y_p), np.asarray(y_q)
    total = 0.0
    for c in classes:
        a, b = tp[yp == c], tq[yq == c]
        if len(a) <= tp.shape[1] or len(b) <= tq.shape[1]:
            raise ValueError(f"class {c}: too few points for a covariance ({len(a)}, {len(b)})")
        total += gaussian_kl(*_fit(a), *_fit(b)) / len(classes)
    return total


def assignment_w1(x: object, y: object) -> float:
    r"""Exact W1 between two empirical measures with the same number of points.

    .. math::

        W_1(\hat P, \hat Q) = \min_{\pi\in S_n} \frac1n \sum_i \|x_i - y_{\pi(i)}\|_2

    (for uniform weights and equal sizes an optimal plan is a permutation; solved with
    ``scipy.optimize.linear_sum_assignment``).

    Raises:
        ValueError: different sizes or dimensions, or non-finite points.

    >>> assignment_w1([[0.0], [1.0]], [[3.0], [1.0]])
    1.5
    """
    from scipy.optimize import linear_sum_assignment

    a, b = _as_points(x, "x"), _as_points(y, "y")
    if a.shape != b.shape:
        raise ValueError(f"assignment_w1 needs equal shapes, got {a.shape} and {b.shape}")
    cost = np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1))
    rows, cols = linear_sum_assignment(cost)
    return float(cost[rows, cols].mean())


def class_w1(
    t_p: object, y_p: object, t_q: object, y_q: object, classes: Sequence[int] = (0, 1)
) -> float:
    r"""Class-weighted exact W1, :math:`\sum_y \tfrac{1}{|\mathcal Y|} W_1(\hat P_{T|y},
    \hat Q_{T|y})` (equal class sizes on both sides)."""
    tp, tq = _as_points(t_p, "t_p"), _as_points(t_q, "t_q")
    yp, yq = np.asarray(y_p), np.asarray(y_q)
    return sum(assignment_w1(tp[yp == c], tq[yq == c]) for c in classes) / len(classes)


def max_gradient_norm(loss_per_point: Callable[[torch.Tensor], torch.Tensor], t: object) -> float:
    r"""A measured Lipschitz constant: :math:`\max_i \|\nabla_{t}\,\ell_i(t_i)\|_2`.

    ``loss_per_point(t)`` must return one loss per row of ``t`` that depends on that row only
    (so the gradient of the sum is each point's own gradient).

    >>> t = torch.zeros(4, 2, dtype=torch.float64)
    >>> round(max_gradient_norm(lambda u: 3.0 * u.sum(-1), t), 6)
    4.242641
    """
    t = torch.as_tensor(t).detach().clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(loss_per_point(t).sum(), t)
    return float(grad.flatten(1).norm(dim=1).max())


def paired_mdc(differences: Sequence[float]) -> float:
    r"""Smallest detectable change of the mean of per-run values:
    :math:`\mathrm{MDC} = z\,s/\sqrt{S}` (z = :data:`MDC_Z`, s the sample standard deviation
    over the S runs); ``inf`` for fewer than two runs.

    >>> paired_mdc([1.0, 3.0])
    2.0
    """
    d = np.asarray(differences, dtype=np.float64)
    if d.size < 2:
        return math.inf
    return float(MDC_Z * d.std(ddof=1) / math.sqrt(d.size))

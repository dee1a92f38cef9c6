r"""Nash learning from human feedback on a finite response set: Nash Mirror Prox and Nash-MD.

The game (Munos et al. 2023): a preference matrix :math:`P_{yy'} = P(y \succ y')` over K
responses with :math:`P + P^\top = 1`; :math:`P(\pi\succ\pi') = \pi^\top P \pi'`; the
β-regularised payoff :math:`P(\pi\succ\pi') - \beta\mathrm{KL}(\pi\|\pi_{ref}) +
\beta\mathrm{KL}(\pi'\|\pi_{ref})`. Its unique symmetric equilibrium :math:`\pi^*_\beta` is the
fixed point

.. math::

    \pi^*_\beta(y) \propto \pi_{ref}(y)\,\exp\!\big(P(y\succ\pi^*_\beta)/\beta\big).

**Nash Mirror Prox** (Tiapkin et al. 2025, v1), tabular closed form of each proximal step
(from its stationarity conditions):

.. math::

    \pi_{k+½} \propto \exp\Big(\tfrac{(1/\beta) P(y\succ\pi_k) + \log\pi_{ref}(y) +
    (1/\eta)\log\pi_k(y)}{1 + 1/\eta}\Big),\qquad
    \pi_{k+1} \propto \exp\Big(\tfrac{(1/\beta) P(y\succ\pi_{k+½}) + \log\pi_{ref}(y) +
    (1/\eta)\log\pi_k(y)}{1 + 1/\eta}\Big)

(two preference evaluations per step). **Nash-MD** (Munos et al.), one evaluation per step:
:math:`\pi_{k+1} \propto \pi^{mix}_k \exp(\eta P(y\succ\pi^{mix}_k))`,
:math:`\pi^{mix}_k \propto \pi_k^{1-\eta\beta}\pi_{ref}^{\eta\beta}`.

All functions work on log-probabilities with the response axis last (any leading shape: a batch
of prompts sharing one preference matrix) and contain no loop over the batch.

References:
    D. Tiapkin, D. Calandriello, D. Belomestny, E. Moulines, A. Naumov, K. Rasul, M. Valko,
    P. Ménard, "Accelerating Nash Learning from Human Feedback via Mirror Prox",
    arXiv 2505.19731 (v1, 2025).
    R. Munos et al., "Nash Learning from Human Feedback", arXiv 2312.00886 (2023).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import Tensor

from divergent._validation import check_positive_scalar, mass_tolerance

__all__ = [
    "NashStep",
    "nash_exploitability",
    "nash_md_step",
    "nash_mirror_prox",
    "preference_against",
    "regularized_nash_equilibrium",
]


class NashStep(NamedTuple):
    """One Nash-MP step: the new policy and the extrapolated (half-step) policy."""

    log_probs: Tensor
    half_log_probs: Tensor


def _check_preference(preference: Any, k: int | None = None) -> Tensor:
    if not isinstance(preference, Tensor) or not torch.is_floating_point(preference):
        got = preference.dtype if isinstance(preference, Tensor) else type(preference).__name__
        raise ValueError(f"`preference` must be a floating-point (K, K) tensor, got {got}")
    if preference.dim() != 2 or preference.shape[0] != preference.shape[1]:
        raise ValueError(f"`preference` must be square (K, K), got {tuple(preference.shape)}")
    if k is not None and preference.shape[0] != k:
        raise ValueError(
            f"`preference` is {tuple(preference.shape)} but the policies have {k} responses"
        )
    tol = 1e-6 if preference.dtype == torch.float64 else 1e-4
    p = preference.detach()
    if bool(((p < -tol) | (p > 1 + tol)).any()) or not bool(torch.isfinite(p).all()):
        raise ValueError("`preference` entries must be probabilities P(y ≻ y') in [0, 1]")
    err = float((p + p.T - 1).abs().max())
    if err > tol:
        raise ValueError(
            f"`preference` must satisfy P + Pᵀ = 1 (P(y ≻ y') + P(y' ≻ y) = 1, ½ on the "
            f"diagonal); the largest violation is {err:g}"
        )
    return preference


def _check_log_probs(x: Any, name: str) -> Tensor:
    if not isinstance(x, Tensor) or not torch.is_floating_point(x):
        got = x.dtype if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(
            f"`{name}` must be a floating-point tensor of log-probabilities, got {got}"
        )
    if x.dim() < 1:
        raise ValueError(f"`{name}` must have the response axis last, got a scalar")
    tol = mass_tolerance(x.dtype)
    mass = torch.logsumexp(x.detach(), -1)
    if bool((x.detach() > tol).any()) or bool(((mass.abs() > 1e3 * tol) & ~mass.isnan()).any()):
        raise ValueError(
            f"`{name}` must hold normalised log-probabilities (each row logsumexp = 0, entries "
            "<= 0); apply log_softmax first"
        )
    return x


def preference_against(preference: Tensor, log_probs: Tensor) -> Tensor:
    r""":math:`P(y\succ\pi) = \sum_{y'} P_{yy'}\pi(y')` for every response y.

    Args:
        preference: ``(K, K)`` with ``preference[y, y'] = P(y ≻ y')``.
        log_probs: ``(..., K)`` log π.

    Returns:
        ``(..., K)``.
    """
    return log_probs.exp() @ preference.to(log_probs.dtype).T


def _checked(policy, ref, preference, names=("policy_log_probs", "ref_log_probs")):
    policy = _check_log_probs(policy, names[0])
    ref = _check_log_probs(ref, names[1])
    if ref.shape[-1] != policy.shape[-1]:
        raise ValueError(
            f"`{names[0]}` has {policy.shape[-1]} responses but `{names[1]}` {ref.shape[-1]}"
        )
    preference = _check_preference(preference, policy.shape[-1])
    return policy, ref, preference


def nash_mirror_prox(
    policy_log_probs: Tensor,
    ref_log_probs: Tensor,
    preference: Tensor,
    *,
    beta: float,
    eta: float,
) -> NashStep:
    r"""One Nash Mirror Prox step on a finite response set (tabular closed form).

    .. math::

        \log\pi_{k+½} = \tfrac{\eta}{1+\eta}\big[P(\cdot\succ\pi_k)/\beta + \log\pi_{ref}\big]
        + \tfrac{1}{1+\eta}\log\pi_k - c,\qquad
        \log\pi_{k+1} = \tfrac{\eta}{1+\eta}\big[P(\cdot\succ\pi_{k+½})/\beta +
        \log\pi_{ref}\big] + \tfrac{1}{1+\eta}\log\pi_k - c',

    i.e. the exact minimisers of :math:`\frac1\beta P(\pi_{opp}\succ\pi) + \mathrm{KL}(\pi\|
    \pi_{ref}) + \frac1\eta\mathrm{KL}(\pi\|\pi_k)` with :math:`\pi_{opp} = \pi_k`, then
    :math:`\pi_{k+½}` (c, c' normalise). Fixed point: :math:`\pi^*_\beta`.

    Args:
        policy_log_probs: ``(..., K)`` log π_k (normalised).
        ref_log_probs: ``(..., K)`` or ``(K,)`` log π_ref (normalised).
        preference: ``(K, K)``, ``preference[y, y'] = P(y ≻ y')``, P + Pᵀ = 1.
        beta: regularisation β > 0.
        eta: step size η > 0 of the proximal term (1/η) KL(π‖π_k).

    Returns:
        :class:`NashStep` ``(log_probs, half_log_probs)``, each ``(..., K)``.

    Example:
        >>> rps = torch.tensor([[0.5, 0.9, 0.1], [0.1, 0.5, 0.9], [0.9, 0.1, 0.5]])
        >>> uniform = torch.full((3,), 1 / 3).log()
        >>> step = nash_mirror_prox(uniform, uniform, rps, beta=0.1, eta=0.5)
        >>> torch.allclose(step.log_probs, uniform)  # uniform is the equilibrium of RPS
        True

    References:
        D. Tiapkin et al., arXiv 2505.19731 (v1), Algorithm "Nash-MP".
    """
    policy, ref, preference = _checked(policy_log_probs, ref_log_probs, preference)
    beta = check_positive_scalar(beta, "beta", what="KL regularisation")
    eta = check_positive_scalar(eta, "eta", what="step size")
    lam = eta / (1.0 + eta)

    def prox(opponent: Tensor) -> Tensor:
        logits = (
            lam * (preference_against(preference, opponent) / beta + ref) + (1.0 - lam) * policy
        )
        return torch.log_softmax(logits, -1)

    half = prox(policy)
    return NashStep(prox(half), half)


def nash_md_step(
    policy_log_probs: Tensor,
    ref_log_probs: Tensor,
    preference: Tensor,
    *,
    beta: float,
    eta: float,
) -> Tensor:
    r"""One Nash-MD step (Munos et al. 2023), the one-evaluation baseline of Nash-MP.

    .. math::

        \log\pi^{mix}_k = (1-\eta\beta)\log\pi_k + \eta\beta\log\pi_{ref} - c,\qquad
        \log\pi_{k+1} = \log\pi^{mix}_k + \eta\,P(\cdot\succ\pi^{mix}_k) - c'.

    Args:
        policy_log_probs, ref_log_probs, preference, beta: as :func:`nash_mirror_prox`.
        eta: step size η > 0 with ηβ ≤ 1.

    Returns:
        ``(..., K)`` log π_{k+1}.

    References:
        R. Munos et al., "Nash Learning from Human Feedback", arXiv 2312.00886 (2023), Sec. 5.
    """
    policy, ref, preference = _checked(policy_log_probs, ref_log_probs, preference)
    beta = check_positive_scalar(beta, "beta", what="KL regularisation")
    eta = check_positive_scalar(eta, "eta", what="step size")
    if eta * beta > 1:
        raise ValueError(f"`eta` * `beta` must be <= 1 (a geometric mixture), got {eta * beta:g}")
    mix = torch.log_softmax((1 - eta * beta) * policy + eta * beta * ref, -1)
    return torch.log_softmax(mix + eta * preference_against(preference, mix), -1)


def nash_exploitability(
    policy_log_probs: Tensor, ref_log_probs: Tensor, preference: Tensor, *, beta: float
) -> Tensor:
    r"""Regularised exploitability (duality gap) of π; 0 exactly at :math:`\pi^*_\beta`.

    .. math::

        \max_{\pi'}\big[P(\pi'\succ\pi) - \beta\mathrm{KL}(\pi'\|\pi_{ref})\big]
        - \big[P(\pi\succ\pi) - \beta\mathrm{KL}(\pi\|\pi_{ref})\big]
        = \beta\log\sum_y\pi_{ref}(y)e^{P(y\succ\pi)/\beta} - \tfrac12
        + \beta\mathrm{KL}(\pi\|\pi_{ref}) \;\ge 0 .

    Returns:
        ``(...)`` (one value per leading index).
    """
    policy, ref, preference = _checked(policy_log_probs, ref_log_probs, preference)
    beta = check_positive_scalar(beta, "beta", what="KL regularisation")
    best = beta * torch.logsumexp(ref + preference_against(preference, policy) / beta, -1)
    kl = (policy.exp() * (policy - ref)).sum(-1)
    return best - 0.5 + beta * kl


def regularized_nash_equilibrium(
    ref_log_probs: Tensor,
    preference: Tensor,
    *,
    beta: float,
    tol: float = 1e-13,
    max_iter: int = 100_000,
) -> Tensor:
    r"""The β-regularised symmetric Nash equilibrium :math:`\pi^*_\beta` (for tests and plots).

    Solves :math:`\log\pi = \log\mathrm{softmax}(\log\pi_{ref} + P\pi/\beta)` in float64:
    damped Newton steps on the logits (Jacobian :math:`I - P(\mathrm{diag}\,\pi -
    \pi\pi^\top)/\beta`) from π_ref; where they stall, Nash-MP iterations with the step
    :math:`\eta = 2\beta/\|P - ½\|_2` to a residual of 1e-9, then Newton again, to ``tol``.
    The answer is checked: a residual above ``1e3 · tol`` after ``max_iter`` iterations is a
    ``RuntimeError``.

    Args:
        ref_log_probs: ``(K,)`` log π_ref.
        preference: ``(K, K)``.
        beta: β > 0.
        tol: target max-abs residual of the fixed point in log space.
        max_iter: iteration budget.

    Returns:
        ``(K,)`` float64 log π*.
    """
    ref = _check_log_probs(ref_log_probs, "ref_log_probs")
    if ref.dim() != 1:
        raise ValueError(f"`ref_log_probs` must be (K,), got {tuple(ref.shape)}")
    preference = _check_preference(preference, ref.shape[0]).double()
    beta = check_positive_scalar(beta, "beta", what="KL regularisation")
    ref = ref.detach().double()
    k = ref.shape[0]
    spread = float(torch.linalg.matrix_norm(preference - 0.5, ord=2))
    eta = 2.0 * beta / max(spread, 1e-12)

    def residual(log_pi: Tensor) -> Tensor:
        target = torch.log_softmax(ref + preference_against(preference, log_pi) / beta, -1)
        return target - log_pi

    eye = torch.eye(k, dtype=torch.float64)

    def newton(log_pi: Tensor, steps: int) -> Tensor:
        """Damped Newton on G(z) = z − log π_ref − Pπ(z)/β (zero up to a constant)."""
        for _ in range(steps):
            res = float(residual(log_pi).abs().max())
            if res <= tol:
                break
            pi = log_pi.exp()
            jac = eye - preference @ (torch.diag(pi) - torch.outer(pi, pi)) / beta
            g = log_pi - ref - preference_against(preference, log_pi) / beta
            direction = torch.linalg.solve(jac, g)
            step = 1.0
            while step > 1e-4:
                candidate = torch.log_softmax(log_pi - step * direction, -1)
                if float(residual(candidate).abs().max()) < res:
                    break
                step *= 0.5
            else:
                break  # no progress: leave it to the mirror-prox iterations
            log_pi = candidate
        return log_pi

    log_pi = newton(ref.clone(), 30)
    iters = 0
    while float(residual(log_pi).abs().max()) > max(tol, 1e-9) and iters < max_iter:
        for _ in range(50):
            log_pi = nash_mirror_prox(log_pi, ref, preference, beta=beta, eta=eta).log_probs
        iters += 50
    log_pi = newton(log_pi, 30)
    final = float(residual(log_pi).abs().max())
    if final > 1e3 * tol:
        raise RuntimeError(
            f"regularized_nash_equilibrium did not converge: residual {final:g} after "
            f"{iters} iterations (beta={beta:g}); raise max_iter"
        )
    return log_pi

r"""Balanced entropic optimal transport: log-domain Sinkhorn and the Sinkhorn divergence.

* :func:`sinkhorn` — entropic OT between histograms ``a`` (…, n) and ``b`` (…, m) with cost
  (…, n, m), batched over the leading dimensions; returns :math:`\langle T_\varepsilon, C\rangle`
  (the convention of POT's ``sinkhorn2``) or, with ``objective="entropic"``, the entropic
  objective :math:`\mathrm{OT}_\varepsilon`.
* :func:`sinkhorn_solve` — the same solver returning a :class:`SinkhornResult` (both values,
  dual potentials, plan, iteration counts, marginal errors, convergence flags).
* :func:`sinkhorn_divergence` — the debiased Sinkhorn divergence between point clouds
  (Feydy et al. 2019).

The iterations and the gradients live in :mod:`divergent.transport._sinkhorn_solver`.

Conventions
-----------

Entropic OT uses the KL regularisation towards the product of the marginals,

.. math::
    \mathrm{OT}_\varepsilon(a, b) = \min_{T \in U(a,b)} \langle T, C\rangle
        + \varepsilon\,\mathrm{KL}(T \,\|\, a\otimes b),
    \qquad U(a,b) = \{T \ge 0 : T\mathbf 1 = a,\ T^\top\mathbf 1 = b\}.

Its minimiser :math:`T_\varepsilon` is the same as with POT's regulariser
:math:`\sum T\log T` (the two objectives differ by the constant
:math:`\varepsilon(H(a)+H(b))`), so :math:`\langle T_\varepsilon, C\rangle` equals
``ot.sinkhorn2(a, b, C, eps)``. The solver iterates the dual potentials (f, g), with
:math:`T_{ij} = a_i b_j \exp((f_i + g_j - C_{ij})/\varepsilon)`, in the log domain:

.. math::
    g_j \leftarrow -\varepsilon \log \sum_i a_i e^{(f_i - C_{ij})/\varepsilon}, \qquad
    f_i \leftarrow -\varepsilon \log \sum_j b_j e^{(g_j - C_{ij})/\varepsilon}.

Speed without losing stability: each block builds the stabilised kernel
:math:`\tilde K = e^{(f \oplus g - C)/\varepsilon}` from the current potentials (one pass of
exponentials, all entries ≤ O(nm)) and runs the *same* iteration in scaling form with
matrix–vector products instead of exponentials, absorbing the scalings into (f, g) as soon as
they leave :math:`[e^{-\tau}, e^{\tau}]`; a scaling that under- or overflows sends the solver
back to its last good state and an exact log-sum-exp update (Schmitzer 2019, "Stabilized sparse
scaling algorithms for entropy regularized transport problems"). The iterates are those of
log-domain Sinkhorn up to rounding. ε-scaling (annealing ε from the cost range down to the
target by a factor ``scaling``, a few updates per stage) gives a warm start; by default it runs
only when the cost range exceeds 100 ε, where it saves updates. Convergence is declared per
problem when the L1 violation of the column marginal :math:`\|T^\top\mathbf 1 - b\|_1` is at
most ``tol`` (the row marginal is exact after each f-update); converged problems leave the batch.
"""

from __future__ import annotations

import inspect
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypedDict

import torch
from torch import Tensor

from divergent._validation import (
    check_choice,
    check_float_tensor,
    check_int,
    check_positive_scalar,
    spell_keywords,
    split_keywords,
)
from divergent.transport._common import (
    check_cost,
    check_cost_power,
    flatten_problems,
    marginals,
    pairwise_cost,
)
from divergent.transport._sinkhorn_solver import Schedule, SinkhornFunction

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["SinkhornResult", "sinkhorn", "sinkhorn_divergence", "sinkhorn_solve"]

_OBJECTIVES = ("transport", "entropic")
# a histogram's mass may differ from 1 by this much (rounding); it is then renormalised
_MASS_TOL = 1e-4


def check_histogram(w: Tensor, name: str) -> Tensor:
    """``w`` (…, k) finite, non-negative and summing to 1 along its last axis."""
    if not bool(torch.isfinite(w).all()):
        raise ValueError(f"`{name}` must be finite (a histogram of weights), got NaN or ±inf")
    if bool((w < 0).any()):
        raise ValueError(
            f"`{name}` must be non-negative (a histogram of weights); its smallest entry is "
            f"{float(w.min()):.6g}"
        )
    mass = w.sum(-1)
    bad = (mass - 1.0).abs() > _MASS_TOL
    if bool(bad.any()):
        worst = float(mass[bad].flatten()[0])
        raise ValueError(
            f"`{name}` must sum to 1 along its last axis (balanced OT between probability "
            f"vectors); one sums to {worst:.6g}. Normalise it: {name} / {name}.sum(-1, "
            "keepdim=True)"
        )
    return w


@dataclass
class SinkhornResult:
    r"""Everything :func:`sinkhorn_solve` computes, per problem (leading shape ``batch``).

    Attributes:
        transport: :math:`\langle T_\varepsilon, C\rangle`, the transport cost of the entropic
            plan (POT's ``sinkhorn2``); differentiable (implicit differentiation).
        entropic: :math:`\mathrm{OT}_\varepsilon = \langle T_\varepsilon, C\rangle +
            \varepsilon\,\mathrm{KL}(T_\varepsilon\|a\otimes b)`; differentiable (envelope
            theorem).
        f, g: dual potentials, shapes (batch, n) and (batch, m), in the gauge
            :math:`\langle a, f\rangle = \langle b, g\rangle`; detached.
        plan: :math:`T_\varepsilon`, shape (batch, n, m), detached; ``None`` unless asked for.
        n_iter: Sinkhorn updates at the target ε (annealing stages not counted).
        marginal_error: :math:`\|T^\top\mathbf 1 - b\|_1` at the returned plan.
        converged: ``marginal_error <= tol``.
    """

    transport: Tensor
    entropic: Tensor
    f: Tensor
    g: Tensor
    plan: Tensor | None
    n_iter: Tensor
    marginal_error: Tensor
    converged: Tensor


def sinkhorn_solve(
    a: Tensor | None,
    b: Tensor | None,
    cost: Tensor,
    eps: float,
    *,
    max_iter: int = 1000,
    tol: float | None = None,
    scaling: float = 0.5,
    eps_start: float | None = None,
    return_plan: bool = False,
    warn: bool = True,
) -> SinkhornResult:
    r"""Solve a batch of entropic OT problems; see :func:`sinkhorn` for the arguments.

    Returns a :class:`SinkhornResult` with both values (transport cost and entropic objective),
    the dual potentials, the plan (if ``return_plan``), and per-problem iteration counts,
    marginal errors and convergence flags.
    """
    return _sinkhorn_impl(
        a,
        b,
        cost,
        eps,
        max_iter=max_iter,
        tol=tol,
        scaling=scaling,
        eps_start=eps_start,
        return_plan=return_plan,
        warn=warn,
        symmetric=False,
    )


def _sinkhorn_impl(
    a: Tensor | None,
    b: Tensor | None,
    cost: Tensor,
    eps: float,
    *,
    max_iter: int,
    tol: float | None,
    scaling: float,
    eps_start: float | None,
    return_plan: bool,
    warn: bool,
    symmetric: bool,
) -> SinkhornResult:
    cost, n, m = check_cost(cost)
    eps = check_positive_scalar(eps, "eps")
    max_iter = check_int(max_iter, "max_iter", 1)
    if not isinstance(scaling, (int, float)) or isinstance(scaling, bool) or not 0 < scaling < 1:
        raise ValueError(f"`scaling` (the ε-annealing factor) must be in (0, 1), got {scaling!r}")
    eps_start = check_positive_scalar(eps_start, "eps_start", allow_none=True)
    a, b = marginals(a, b, cost)
    check_histogram(a, "a")
    check_histogram(b, "b")
    a_f, b_f, c_f, batch, tol = flatten_problems(a, b, cost, tol)
    numel = a_f.shape[0]
    schedule = Schedule(eps, max_iter, tol, scaling, eps_start, symmetric)
    transport, entropic, f, g, plan, n_iter, err = SinkhornFunction.apply(
        a_f, b_f, c_f, schedule, return_plan
    )
    converged = err <= tol
    if warn and not bool(converged.all()):
        bad = int((~converged).sum())
        warnings.warn(
            f"sinkhorn: {bad} of {numel} problem(s) did not reach tol={tol:g} in "
            f"max_iter={max_iter} updates (largest marginal error {float(err.max()):.3g}); "
            "increase max_iter, or eps",
            RuntimeWarning,
            stacklevel=4,
        )
    return SinkhornResult(
        transport=transport.reshape(batch),
        entropic=entropic.reshape(batch),
        f=f.reshape(*batch, n),
        g=g.reshape(*batch, m),
        plan=plan.reshape(*batch, n, m) if return_plan else None,
        n_iter=n_iter.reshape(batch),
        marginal_error=err.reshape(batch),
        converged=converged.reshape(batch),
    )


class SolveKeywords(TypedDict, total=False):
    """The solver options :func:`sinkhorn` passes on to :func:`sinkhorn_solve`."""

    max_iter: int
    tol: float | None
    scaling: float
    eps_start: float | None
    return_plan: bool
    warn: bool


_SOLVE_KEYWORDS = tuple(SolveKeywords.__optional_keys__)


@spell_keywords(
    inspect.signature(sinkhorn_solve).parameters,
    "max_iter",
    "tol",
    "scaling",
    "eps_start",
    "objective",
    "return_plan",
    "warn",
)
def sinkhorn(
    a: Tensor | None,
    b: Tensor | None,
    cost: Tensor,
    eps: float,
    *,
    objective: str = "transport",
    **options: Unpack[SolveKeywords],
) -> Tensor | tuple[Tensor, Tensor]:
    r"""Entropic optimal transport by log-domain Sinkhorn, batched and differentiable.

    With :math:`T_\varepsilon = \arg\min_{T\in U(a,b)} \langle T, C\rangle +
    \varepsilon\,\mathrm{KL}(T\|a\otimes b)` (the entropic plan), returns by default its
    transport cost

    .. math:: \langle T_\varepsilon, C\rangle = \sum_{ij} (T_\varepsilon)_{ij} C_{ij},

    the convention of POT's ``ot.sinkhorn2`` — *not* the entropic objective. With
    ``objective="entropic"`` it returns
    :math:`\mathrm{OT}_\varepsilon = \langle T_\varepsilon, C\rangle +
    \varepsilon\,\mathrm{KL}(T_\varepsilon\|a\otimes b)` (what the Sinkhorn divergence
    debiases; POT's ``sinkhorn`` objective with :math:`\sum T\log T` is this minus
    :math:`\varepsilon(H(a)+H(b))`). As ε → 0 both tend to the exact OT cost.

    Gradients (w.r.t. ``a``, ``b`` and ``cost``) are exact at the fixed point and never unroll
    the iterations (memory O(B·n·m) whatever the iteration count):

    * ``objective="entropic"``: the envelope theorem with the final plan and potentials,
      :math:`\partial/\partial C = T_\varepsilon`, :math:`\partial/\partial a = f`,
      :math:`\partial/\partial b = g`.
    * ``objective="transport"``: implicit differentiation of the Sinkhorn fixed point. The
      envelope gradient (T for the cost) is *not* the gradient of ⟨T_ε, C⟩, because T_ε moves
      with C; the exact one solves one (n+m)-sized linear system per problem (dense float64
      Schur complement of the smaller side, conjugate gradient above 2048).

    Gradients w.r.t. ``a`` and ``b`` are defined up to an additive constant (the marginals live
    on the simplex); the returned ones satisfy :math:`\langle a, \cdot\rangle = \langle b,
    \cdot\rangle`. The returned plan is detached.

    Args:
        a: source weights, shape (…, n), non-negative, summing to 1 (``None``: uniform). Zero
            entries are allowed (those rows carry no mass).
        b: target weights, shape (…, m), likewise.
        cost: cost matrices, shape (…, n, m), finite. Leading shapes of a, b and cost broadcast.
        eps: entropic regularisation ε > 0, in the units of the cost (normalise the cost, e.g.
            by its maximum, to make ε scale-free).
        max_iter: maximum Sinkhorn updates per problem at the target ε.
        tol: stop a problem when :math:`\|T^\top\mathbf 1 - b\|_1 \le` ``tol`` (default 1e-9 in
            float64, 1e-6 in float32).
        scaling: ε-annealing factor in (0, 1): ε runs from ``eps_start`` down to ``eps``,
            multiplied by ``scaling`` per stage (a few updates each).
        eps_start: first ε of the annealing. Default: the largest cost range in the batch
            when it exceeds 100·ε, otherwise no annealing (it saves few updates at moderate ε);
            pass ``eps`` to disable annealing, or a larger value to force it.
        objective: ``"transport"`` (⟨T, C⟩, default) or ``"entropic"`` (OT_ε).
        return_plan: also return the plan T_ε (shape (…, n, m), detached).
        warn: emit a ``RuntimeWarning`` when a problem does not converge.

    Returns:
        Values of the leading (batch) shape, in float32 (float64 if an input is float64); with
        ``return_plan``, ``(values, plan)``.

    Example:
        >>> import torch, divergent
        >>> x = torch.linspace(0, 1, 5, dtype=torch.float64)
        >>> cost = (x[:, None] - x[None, :]) ** 2
        >>> a = torch.tensor([0.5, 0.5, 0, 0, 0], dtype=torch.float64)
        >>> b = torch.tensor([0, 0, 0, 0.5, 0.5], dtype=torch.float64)
        >>> round(float(divergent.sinkhorn(a, b, cost, eps=1e-3)), 4)  # exact OT: 0.5625
        0.5625

    References:
        Cuturi 2013, "Sinkhorn distances: lightspeed computation of optimal transport";
        Schmitzer 2019, "Stabilized sparse scaling algorithms for entropy regularized transport
        problems"; Peyré & Cuturi 2019, "Computational optimal transport", §4; Feydy 2020
        (thesis), ε-scaling; POT ``ot.sinkhorn2`` (Flamary et al. 2021).
    """
    check_choice(objective, "objective", _OBJECTIVES)
    options, _ = split_keywords(options, _SOLVE_KEYWORDS, function="sinkhorn")
    res = sinkhorn_solve(a, b, cost, eps, **options)
    value = res.transport if objective == "transport" else res.entropic
    if res.plan is not None:  # return_plan
        return value, res.plan
    return value


def sinkhorn_divergence(
    x: Tensor,
    y: Tensor,
    eps: float,
    p: float = 2,
    *,
    x_weights: Tensor | None = None,
    y_weights: Tensor | None = None,
    max_iter: int = 1000,
    tol: float | None = None,
    scaling: float = 0.5,
    warn: bool = True,
) -> Tensor:
    r"""Debiased Sinkhorn divergence between two weighted point clouds (Feydy et al. 2019).

    .. math::
        S_\varepsilon(\alpha, \beta) = \mathrm{OT}_\varepsilon(\alpha, \beta)
            - \tfrac12 \mathrm{OT}_\varepsilon(\alpha, \alpha)
            - \tfrac12 \mathrm{OT}_\varepsilon(\beta, \beta),

    where :math:`\mathrm{OT}_\varepsilon(\alpha,\beta) = \min_{\pi} \langle\pi, C\rangle +
    \varepsilon\,\mathrm{KL}(\pi\|\alpha\otimes\beta)` is the *entropic objective* (with its
    entropy term; see :func:`sinkhorn` ``objective="entropic"``), not the transport cost
    ⟨T_ε, C⟩, and :math:`C(x, y) = \|x - y\|_2^p`. With this KL-to-product regularisation
    :math:`S_\varepsilon \ge 0`, with equality iff α = β (Feydy et al. 2019, Thm. 1, for
    p ∈ {1, 2}); it interpolates between :math:`W_p^p` (ε → 0) and an MMD (ε → ∞). Other
    entropy conventions (Σ π log π, Σ π(log π − 1)) differ by terms that cancel in the
    debiasing, so S_ε does not depend on that choice. Note GeomLoss uses
    :math:`C = \tfrac12\|x-y\|^2` for p = 2, i.e. half of this cost (and ε = blur^p).

    The self terms :math:`\mathrm{OT}_\varepsilon(\alpha,\alpha)` are solved with the averaged
    symmetric update :math:`f \leftarrow \tfrac12(f + S(f))` (plain alternating Sinkhorn
    oscillates on symmetric problems). Gradients (w.r.t. points and weights) follow from the
    envelope theorem.

    Args:
        x: points of α, shape (…, n, d).
        y: points of β, shape (…, m, d); leading shapes broadcast with x's.
        eps: entropic regularisation ε > 0 in the units of the cost (e.g. blur^p).
        p: cost exponent p ≥ 1.
        x_weights, y_weights: weights (…, n) / (…, m) summing to 1 (``None``: uniform).
        max_iter, tol, scaling, warn: as in :func:`sinkhorn`.

    Returns:
        :math:`S_\varepsilon` of the leading shape (≥ 0 up to the solver tolerance; exactly 0
        when x and y and their weights are identical).

    Example:
        >>> import torch, divergent
        >>> x = torch.rand(50, 2, dtype=torch.float64)
        >>> float(divergent.sinkhorn_divergence(x, x, eps=0.05))
        0.0
        >>> float(divergent.sinkhorn_divergence(x, x + 0.1, eps=0.05)) > 0
        True

    References:
        Genevay, Peyré & Cuturi 2018, "Learning generative models with Sinkhorn divergences";
        Feydy, Séjourné, Vialard, Amari, Trouvé & Peyré 2019, "Interpolating between optimal
        transport and MMD using Sinkhorn divergences" (AISTATS).
    """
    x = check_float_tensor(x, "x", min_dim=2)
    y = check_float_tensor(y, "y", min_dim=2)
    if x.shape[-1] != y.shape[-1]:
        raise ValueError(
            f"`x` and `y` must have the same point dimension (last axis), got {x.shape[-1]} and "
            f"{y.shape[-1]}"
        )
    p = float(check_cost_power(p))
    for name, pts in (("x", x), ("y", y)):
        if not bool(torch.isfinite(pts).all()):
            raise ValueError(f"`{name}` (the points) must be finite, got NaN or ±inf entries")
    for name, w, pts, pts_name in (
        ("x_weights", x_weights, x, "x"),
        ("y_weights", y_weights, y, "y"),
    ):
        if w is not None:
            check_float_tensor(w, name, min_dim=1)
            if w.shape[-1] != pts.shape[-2]:
                raise ValueError(
                    f"`{name}` has {w.shape[-1]} entries on its last axis but `{pts_name}` has "
                    f"{pts.shape[-2]} points (shape {tuple(pts.shape)}); they must match"
                )
            check_histogram(w, name)
    c_xy = pairwise_cost(x, y, p)
    c_xx = pairwise_cost(x, x, p)
    c_yy = pairwise_cost(y, y, p)
    kw: dict[str, Any] = dict(
        max_iter=max_iter, tol=tol, scaling=scaling, eps_start=None, return_plan=False, warn=warn
    )
    # identical clouds: the cross term is the same symmetric problem, so S_ε is exactly 0
    same = (
        x.shape == y.shape
        and torch.equal(x, y)
        and (
            (x_weights is None and y_weights is None)
            or (
                isinstance(x_weights, Tensor)
                and isinstance(y_weights, Tensor)
                and x_weights.shape == y_weights.shape
                and torch.equal(x_weights, y_weights)
            )
        )
    )
    ab = _sinkhorn_impl(x_weights, y_weights, c_xy, eps, symmetric=same, **kw).entropic
    aa = _sinkhorn_impl(x_weights, x_weights, c_xx, eps, symmetric=True, **kw).entropic
    bb = _sinkhorn_impl(y_weights, y_weights, c_yy, eps, symmetric=True, **kw).entropic
    return ab - 0.5 * aa - 0.5 * bb

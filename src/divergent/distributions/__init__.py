"""Divergences between ``torch.distributions`` objects: a pair registry of closed forms.

===================================  ========================================================
module                               what it holds
===================================  ========================================================
:mod:`~.closed_form`                 :func:`closed_form`, :func:`closed_form_support`
:mod:`~.registry`                    :func:`register_closed_form`, :class:`ClosedFormResult`,
                                     :class:`ClosedFormRequest`, the most-specific dispatch
:mod:`~.discrete`                    Categorical / OneHotCategorical / Bernoulli pairs
:mod:`~.gaussian`                    Gaussian pairs (all kinds), Normal <-> Laplace
:mod:`~.mixture`                     Gaussian mixtures (Monte Carlo + certified bounds, approx.)
:mod:`~.monte_carlo`                 Monte Carlo estimates with standard errors (any pair)
:mod:`~.exponential_family`          :func:`exponential_family_kl` (Bregman form)
===================================  ========================================================
"""

from divergent.distributions.closed_form import closed_form, closed_form_support
from divergent.distributions.diffusion import (
    DiffusionPath,
    VEPath,
    VPPath,
    diffused_gaussian,
    diffused_gaussian_kl,
    diffused_gaussian_score,
    integral_kl,
)
from divergent.distributions.exponential_family import exponential_family_kl
from divergent.distributions.gaussian import gaussian_w2
from divergent.distributions.registry import (
    ClosedFormRequest,
    ClosedFormResult,
    register_closed_form,
)

__all__ = [
    "ClosedFormRequest",
    "ClosedFormResult",
    "DiffusionPath",
    "VEPath",
    "VPPath",
    "closed_form",
    "closed_form_support",
    "diffused_gaussian",
    "diffused_gaussian_kl",
    "diffused_gaussian_score",
    "exponential_family_kl",
    "gaussian_w2",
    "integral_kl",
    "register_closed_form",
]

r"""PSI-KT's divergence pieces: Ornstein–Uhlenbeck knowledge, a tempered state-space ELBO.

Zhou, Bamler, Wu & Tejero-Cantero (ICLR 2024) model a learner's knowledge of each concept as
an Ornstein–Uhlenbeck (OU) process whose parameters are the learner's traits,

.. math::

    dz = \alpha(\mu - z)\,dt + \sigma\,dW, \qquad
    y_n \sim \mathrm{Bernoulli}\big(\mathrm{sigmoid}(z_{n, c_n})\big),

observed through binary answers :math:`y_n` about concept :math:`c_n` at irregular times
:math:`t_n`, and fit Gaussian variational posteriors over the traits and the knowledge
states by maximising a (tempered) evidence lower bound. The pieces here:

* :func:`ou_transition`: the exact OU transition over a gap :math:`\Delta`, a Gaussian with
  mean :math:`\mu + (z - \mu)e^{-\alpha\Delta}` and variance
  :math:`\tfrac{\sigma^2}{2\alpha}(1 - e^{-2\alpha\Delta})`;
* :func:`knowledge_tracing_elbo`: the ELBO of the state-space model with mean-field Gaussian
  posteriors :math:`q(s)\,q(z)`, its KL terms in closed form
  (:func:`divergent.distributions.closed_form`), the expected log-likelihood by
  reparameterised Monte Carlo, with PSI-KT's tempering (a KL weight β and an entropy weight λ);
* :func:`learner_type_kl`: the learner-type regulariser :math:`\mathrm{KL}(q(c)\|U_C) = \log C
  - H(q(c))` of PSI-KT's mixture prior over learners, by :func:`divergent.kl`.

Traits. A learner's traits are the vector :math:`s = (\log\alpha, \mu, \log\sigma)` (speed of
mean reversion, long-term mean, volatility; :data:`TRAIT_NAMES`), shared by the learner's
concepts; each concept has its own knowledge path. PSI-KT also couples concepts through a
learned prerequisite graph and encodes the posteriors with LSTMs (amortised); neither is here
(no graph: concepts evolve independently given the traits; the posteriors are free
per-learner parameters, see :mod:`divergent.train.knowledge_tracing`).

References:
    Zhou, Bamler, Wu & Tejero-Cantero 2024, "Predictive, scalable and interpretable knowledge
    tracing on structured domains", ICLR (PSI-KT; code ``mlcolab/psi-kt``); Uhlenbeck &
    Ornstein 1930, "On the theory of the Brownian motion".
"""

from __future__ import annotations

import math
import re
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.distributions import Normal

from divergent._validation import (
    check_choice,
    check_float_tensor,
    check_inputs_kind,
    check_int,
    check_positive_scalar,
    check_reduction,
    check_tensor,
    reduce_rows,
)
from divergent.distributions.closed_form import closed_form
from divergent.distributions.gaussian import normal_kl
from divergent.functional import kl

__all__ = [
    "TRAIT_NAMES",
    "KnowledgeTracingTerms",
    "knowledge_tracing_elbo",
    "learner_type_kl",
    "ou_traits",
    "ou_transition",
    "sample_states",
]

TRAIT_NAMES: tuple[str, ...] = ("log_speed", "mean", "log_volatility")


def _as_tensor(x: Any, name: str, like: Tensor | None = None) -> Tensor:
    if isinstance(x, Tensor):
        return check_float_tensor(x, name)
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        raise ValueError(f"`{name}` must be a float tensor or a number, got {type(x).__name__}")
    dtype = like.dtype if like is not None else torch.get_default_dtype()
    device = like.device if like is not None else None
    return torch.tensor(float(x), dtype=dtype, device=device)


def _check_positive_entries(x: Tensor, name: str, *, allow_zero: bool = False) -> None:
    """Every non-NaN entry finite and > 0 (≥ 0 with ``allow_zero``); NaN entries pass."""
    bad = ~torch.isnan(x) & ~(torch.isfinite(x) & ((x >= 0) if allow_zero else (x > 0)))
    if bool(bad.any()):
        index = tuple(bad.nonzero()[0].tolist())
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(
            f"`{name}` must be finite and {bound} (NaN passes through), got "
            f"{float(x[index]):g} at index {index}"
        )


def ou_traits(traits: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    r"""The OU parameters :math:`(\alpha, \mu, \sigma) = (e^{s_0}, s_1, e^{s_2})` of traits
    :math:`s = (\log\alpha, \mu, \log\sigma)` (last axis of size 3, :data:`TRAIT_NAMES`).

    Args:
        traits: ``(..., 3)`` float tensor.

    Returns:
        ``(speed, mean, volatility)``, each of the leading shape ``(...)``.

    Example:
        >>> speed, mean, vol = ou_traits(torch.tensor([0.0, 0.5, math.log(2.0)]))
        >>> float(speed), float(mean), float(vol)
        (1.0, 0.5, 2.0)
    """
    check_float_tensor(traits, "traits", min_dim=1)
    if traits.shape[-1] != len(TRAIT_NAMES):
        raise ValueError(
            f"`traits` must have a last axis of size 3 {TRAIT_NAMES}, got shape "
            f"{tuple(traits.shape)}"
        )
    return traits[..., 0].exp(), traits[..., 1], traits[..., 2].exp()


def ou_transition(
    z_prev: Tensor | float,
    gap: Tensor | float,
    speed: Tensor | float,
    mean: Tensor | float,
    volatility: Tensor | float,
) -> tuple[Tensor, Tensor]:
    r"""Mean and variance of the OU knowledge state a gap :math:`\Delta` after :math:`z`.

    The solution of :math:`dz = \alpha(\mu - z)\,dt + \sigma\,dW` from :math:`z_0 = z` is
    Gaussian at time :math:`\Delta` with

    .. math::

        \mathbb E[z_\Delta] = \mu + (z - \mu)\,e^{-\alpha\Delta},\qquad
        \operatorname{Var}[z_\Delta] = \frac{\sigma^2}{2\alpha}\big(1 - e^{-2\alpha\Delta}\big),

    computed as :math:`\sigma^2\,(-\operatorname{expm1}(-2\alpha\Delta))/(2\alpha)`, which stays
    accurate as :math:`\alpha\Delta \to 0` (Brownian limit :math:`\sigma^2\Delta`); as
    :math:`\Delta\to\infty` it tends to the stationary law :math:`N(\mu, \sigma^2/2\alpha)`.
    Everything broadcasts.

    Args:
        z_prev: knowledge state at the start of the gap.
        gap: elapsed time :math:`\Delta \ge 0`.
        speed: mean-reversion speed :math:`\alpha > 0`.
        mean: long-term mean :math:`\mu`.
        volatility: :math:`\sigma > 0`.

    Returns:
        ``(mean, variance)`` of :math:`z_\Delta`, broadcast to a common shape.

    Raises:
        ValueError: a negative or infinite gap, a speed or volatility that is not > 0 and
            finite (NaN entries pass through as NaN), or a non-numeric argument.

    Example:
        >>> m, v = ou_transition(2.0, 1.0, speed=0.5, mean=0.0, volatility=1.0)
        >>> round(float(m), 4), round(float(v), 4)
        (1.2131, 0.6321)

    References:
        Uhlenbeck & Ornstein 1930; Zhou et al. 2024 (PSI-KT), Eq. for the OU transition.
    """
    like = next((x for x in (z_prev, gap, speed, mean, volatility) if isinstance(x, Tensor)), None)
    z_prev = _as_tensor(z_prev, "z_prev", like)
    gap = _as_tensor(gap, "gap", like)
    speed = _as_tensor(speed, "speed", like)
    mean = _as_tensor(mean, "mean", like)
    volatility = _as_tensor(volatility, "volatility", like)
    _check_positive_entries(gap, "gap", allow_zero=True)
    _check_positive_entries(speed, "speed")
    _check_positive_entries(volatility, "volatility")
    decay = torch.exp(-speed * gap)
    m = mean + (z_prev - mean) * decay
    # 1 − e^{−2αΔ} by expm1: accurate when αΔ is tiny (the Brownian limit σ²Δ)
    v = volatility.square() * (-torch.expm1(-2.0 * speed * gap)) / (2.0 * speed)
    return torch.broadcast_tensors(m, v)  # type: ignore[return-value]


class KnowledgeTracingTerms(NamedTuple):
    r"""The (tempered) ELBO and its parts, one value per learner (``reduction="none"``) or
    reduced; nats.

    ``elbo = expected_log_likelihood − beta · (kl_traits + kl_states
    + (1 − entropy_weight) · (entropy_traits + entropy_states))``; with ``beta = 1`` and
    ``entropy_weight = 1`` the plain ELBO :math:`\log p(y) - \mathrm{KL}(q\|p(\cdot|y))`.
    """

    elbo: Tensor
    expected_log_likelihood: Tensor
    kl_traits: Tensor
    kl_states: Tensor
    entropy_traits: Tensor
    entropy_states: Tensor


def _check_normal(d: Any, name: str, shape: tuple[int, ...], what: str) -> Normal:
    if not isinstance(d, Normal):
        raise ValueError(f"`{name}` must be a torch.distributions.Normal ({what}), got {d!r}")
    if tuple(d.batch_shape) != shape:
        raise ValueError(
            f"`{name}` must have batch shape {shape} ({what}), got {tuple(d.batch_shape)}"
        )
    return d


def knowledge_tracing_elbo(
    answers: Tensor,
    concepts: Tensor,
    gaps: Tensor,
    trait_posterior: Normal,
    state_posterior: Normal,
    trait_prior: Normal,
    *,
    state_coupling: Tensor | None = None,
    num_samples: int = 8,
    beta: float = 1.0,
    entropy_weight: float = 1.0,
    generator: torch.Generator | None = None,
    reduction: str = "mean",
) -> KnowledgeTracingTerms:
    r"""The tempered ELBO of PSI-KT's state-space model with mean-field Gaussian posteriors.

    Model (per learner; traits :math:`s = (\log\alpha, \mu, \log\sigma)`, knowledge
    :math:`z_n \in \mathbb R^K` at the n-th interaction, gaps :math:`\Delta_n = t_n -
    t_{n-1}`):

    .. math::

        s \sim p(s),\quad z_{0,k} \sim N\big(\mu, \tfrac{\sigma^2}{2\alpha}\big),\quad
        z_{n,k}\mid z_{n-1,k}, s \sim \mathrm{OU}_{\Delta_n}(z_{n-1,k}),\quad
        y_n \sim \mathrm{Bernoulli}\big(\mathrm{sigmoid}(z_{n,c_n})\big).

    With :math:`q(s)\prod_{n,k} q(z_{n,k})` (independent Gaussians) the ELBO splits exactly into

    .. math::

        \mathcal L = \underbrace{\mathbb E_q\textstyle\sum_n \log p(y_n\mid z_{n,c_n})}_{\text{MC}}
          - \underbrace{\mathrm{KL}(q(s)\|p(s))}_{\text{closed form}}
          - \textstyle\sum_{n,k}\mathbb E_{q(s)q(z_{n-1,k})}
            \underbrace{\mathrm{KL}\big(q(z_{n,k})\,\|\,p(z_{n,k}\mid z_{n-1,k}, s)\big)}_{
            \text{closed form}},

    (for n = 0 the stationary law replaces the transition) because :math:`q(z_{n,k})` does not
    depend on the earlier state. With ``state_coupling`` :math:`a` the state posterior is a
    Gauss–Markov chain instead, :math:`q(z_{n,k}\mid z_{n-1,k}) = N(a_{n,k} z_{n-1,k} +
    m_{n,k}, v_{n,k})` (``state_posterior`` then holds the conditional :math:`m, \sqrt v`; a = 0
    is the mean-field case), and the same split holds with :math:`q(z_{n,k}\mid z_{n-1,k})` in
    the KL, still in closed form given the draw of :math:`z_{n-1}` (a mean-field posterior
    cannot represent the temporal correlation the OU prior implies, which biases the fitted
    speed upwards). The expectations over :math:`s` and :math:`z` use ``num_samples``
    reparameterised (ancestral) draws (gradients flow to every posterior parameter). The
    tempered objective, as in PSI-KT's code (which weighs the posterior entropies by
    :math:`\lambda = 0.1`), is

    .. math::

        \mathcal L_{\beta,\lambda} = \mathbb E_q\log p(y\mid z)
          - \beta\Big[\mathrm{KL}_s + \mathrm{KL}_z + (1-\lambda)\big(H[q(s)] + H[q(z)]\big)\Big],

    i.e. :math:`\mathbb E\log p(y|z) + \beta(\mathbb E\log p(z, s) + \lambda H[q])`; β = λ = 1
    is the plain ELBO, a lower bound on :math:`\log p(y)` with gap
    :math:`\mathrm{KL}(q\|p(s, z\mid y))`.

    Args:
        answers: ``(B, T)`` answers in {0, 1} (float or bool); NaN gives NaN for that learner.
        concepts: ``(B, T)`` integer concept of each answer, in ``[0, K)``.
        gaps: ``(B, T)`` time since the previous interaction; ``gaps[:, 0]`` is not used (the
            first state is stationary), the others must be > 0 and finite; NaN gives NaN for
            that learner.
        trait_posterior: ``Normal`` of batch shape ``(B, 3)``, :math:`q(s)` (:data:`TRAIT_NAMES`).
        state_posterior: ``Normal`` of batch shape ``(B, T, K)``, :math:`q(z)`.
        trait_prior: ``Normal`` of batch shape ``(3,)``, ``(1, 3)`` or ``(B, 3)``, :math:`p(s)`.
        state_coupling: None (mean-field q(z)) or ``(B, T, K)`` coefficients :math:`a` of a
            Gauss–Markov posterior (``[:, 0]`` is not used).
        num_samples: Monte Carlo draws of :math:`(s, z)` per learner.
        beta: KL weight β ≥ 0 (1: the plain ELBO).
        entropy_weight: λ ≥ 0, weight of the posterior entropies inside the KL (1: plain;
            PSI-KT's code uses 0.1).
        generator: random generator for the draws (fix it for a deterministic value).
        reduction: ``"none"`` (one value per learner), ``"sum"`` or ``"mean"`` over learners.

    Returns:
        :class:`KnowledgeTracingTerms` (maximise ``elbo``; the loss is ``-elbo``).

    Raises:
        ValueError: shapes that disagree, answers outside {0, 1}, concepts outside
            ``[0, K)``, gaps ≤ 0 or infinite after the first, a posterior or prior that is
            not a ``Normal``, a trait posterior or prior with NaN parameters / non-positive
            scales (named by argument), a state posterior scale ≤ 0 or infinite (NaN in the
            state posterior, as in ``answers`` and ``gaps``, gives NaN for that learner), a
            ``trait_prior`` whose batch shape is not ``(3,)``, ``(1, 3)`` or ``(B, 3)``, bad
            ``num_samples`` / ``beta`` / ``entropy_weight`` / ``reduction``.

    Example:
        >>> from torch.distributions import Normal
        >>> g = torch.Generator().manual_seed(0)
        >>> y = torch.tensor([[1.0, 0.0, 1.0]])
        >>> c = torch.tensor([[0, 1, 0]])
        >>> gaps = torch.tensor([[0.0, 0.5, 2.0]])
        >>> q_s = Normal(torch.zeros(1, 3), 0.3 * torch.ones(1, 3))
        >>> q_z = Normal(torch.zeros(1, 3, 2), torch.ones(1, 3, 2))
        >>> p_s = Normal(torch.zeros(3), torch.ones(3))
        >>> t = knowledge_tracing_elbo(y, c, gaps, q_s, q_z, p_s, num_samples=1000, generator=g)
        >>> round(float(t.elbo), 2), round(float(t.kl_traits), 3)
        (-9.93, 2.247)

    References:
        Zhou, Bamler, Wu & Tejero-Cantero 2024, PSI-KT (ICLR), the ELBO of Sec. 3 and the
        entropy weights of its code; Higgins et al. 2017 (β-weighted KL).
    """
    num_samples = check_int(num_samples, "num_samples", 1, "Monte Carlo draws")
    beta = check_positive_scalar(beta, "beta", allow_zero=True, what="KL weight")  # type: ignore[assignment]
    entropy_weight = check_positive_scalar(  # type: ignore[assignment]
        entropy_weight, "entropy_weight", allow_zero=True, what="entropy weight λ"
    )
    reduction = check_reduction(reduction)
    if not isinstance(state_posterior, Normal) or state_posterior.loc.dim() != 3:
        raise ValueError(
            "`state_posterior` must be a torch.distributions.Normal of batch shape (B, T, K), "
            f"got {state_posterior!r}"
        )
    n_learners, n_steps, n_concepts = state_posterior.batch_shape
    # the state KLs below use the Gaussian formula, which would take a negative scale silently
    _check_positive_entries(state_posterior.scale, "state_posterior.scale")
    answers = _check_answers(answers, (n_learners, n_steps))
    concepts = _check_concepts(concepts, (n_learners, n_steps), n_concepts)
    gaps = check_float_tensor(gaps, "gaps", dims=2)
    if tuple(gaps.shape) != (n_learners, n_steps):
        raise ValueError(
            f"`gaps` must have shape {(n_learners, n_steps)} (learners, steps), got "
            f"{tuple(gaps.shape)}"
        )
    _check_positive_entries(gaps[:, 1:], "gaps[:, 1:]")
    _check_normal(trait_posterior, "trait_posterior", (n_learners, 3), "q(s), (B, 3)")
    if state_coupling is not None:
        check_float_tensor(state_coupling, "state_coupling", dims=3)
        if state_coupling.shape != state_posterior.batch_shape:
            raise ValueError(
                f"`state_coupling` must have the shape {tuple(state_posterior.batch_shape)} of "
                f"`state_posterior` (B, T, K), got {tuple(state_coupling.shape)}"
            )
    _check_trait_prior(trait_prior, n_learners)
    try:
        kl_traits = closed_form("kl", trait_posterior, trait_prior).value.sum(-1)
    except ValueError as err:  # closed_form names its sides P and Q: say which argument
        raise ValueError(
            _rename_sides(str(err), {"P": "trait_posterior", "Q": "trait_prior"})
        ) from err
    kl_traits = kl_traits.expand(n_learners)

    q_loc, q_scale = state_posterior.loc, state_posterior.scale
    dtype, device = q_loc.dtype, q_loc.device
    eps_s = torch.randn(num_samples, n_learners, 3, generator=generator, dtype=dtype)
    eps_z = torch.randn(
        num_samples, n_learners, n_steps, n_concepts, generator=generator, dtype=dtype
    )
    traits = trait_posterior.loc + trait_posterior.scale * eps_s.to(device)  # (S, B, 3)
    states = sample_states(state_posterior, eps_z.to(device), state_coupling)  # (S, B, T, K)

    # E_q log p(y | z): log σ(x) = −softplus(−x); the BCE form is the stable one
    index = concepts.expand(num_samples, -1, -1).unsqueeze(-1)
    logits = states.gather(-1, index).squeeze(-1)  # (S, B, T)
    target = answers.to(dtype).expand_as(logits)
    log_lik = -F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    expected_log_likelihood = log_lik.sum(-1).mean(0)

    speed, mean, vol = (x[..., None, None] for x in ou_traits(traits))  # (S, B, 1, 1)
    # The state KLs by the Gaussian formula, not closed_form / internal Normals: a NaN gap
    # must give NaN for its learner (closed_form and torch's checks refuse NaN parameters).
    q_var = q_scale.square()
    # n = 0: the stationary law N(μ, σ²/2α)
    stationary_var = vol[..., 0, :].square() / (2.0 * speed[..., 0, :])
    kl_first = normal_kl(q_loc[:, 0], q_var[:, 0], mean[..., 0, :], stationary_var)
    kl_states = kl_first.sum(-1).mean(0)
    if n_steps > 1:
        m, v = ou_transition(states[:, :, :-1], gaps[:, 1:, None], speed, mean, vol)
        later_loc = q_loc[:, 1:]
        if state_coupling is not None:  # q(z_n | z_{n−1}) given the draw of z_{n−1}
            later_loc = later_loc + state_coupling[:, 1:] * states[:, :, :-1]
        kl_later = normal_kl(later_loc, q_var[:, 1:], m, v)
        kl_states = kl_states + kl_later.sum((-2, -1)).mean(0)

    entropy_traits = trait_posterior.entropy().sum(-1)
    entropy_states = state_posterior.entropy().sum((-2, -1))
    penalty = kl_traits + kl_states
    if entropy_weight != 1.0:
        penalty = penalty + (1.0 - entropy_weight) * (entropy_traits + entropy_states)
    elbo = expected_log_likelihood - beta * penalty
    terms = (elbo, expected_log_likelihood, kl_traits, kl_states, entropy_traits, entropy_states)
    return KnowledgeTracingTerms(
        *(reduce_rows(t, reduction, count=t.numel(), normalizer=None) for t in terms)
    )


def _check_trait_prior(trait_prior: Any, n_learners: int) -> None:
    """``trait_prior``: a ``Normal`` of batch shape ``(3,)``, ``(1, 3)`` or ``(B, 3)``."""
    want = (n_learners, len(TRAIT_NAMES))
    if not isinstance(trait_prior, Normal):
        raise ValueError(
            f"`trait_prior` must be a torch.distributions.Normal of batch shape (3,), (1, 3) or "
            f"{want} (B, 3: log speed, mean, log volatility), got {trait_prior!r}"
        )
    shape = tuple(trait_prior.batch_shape)
    try:
        fits = shape[-1:] == (3,) and tuple(torch.broadcast_shapes(shape, want)) == want
    except RuntimeError:
        fits = False
    if not fits:
        raise ValueError(
            f"`trait_prior` must have batch shape (3,), (1, 3) or {want} (B, 3: log speed, mean, "
            f"log volatility), got {shape}"
        )


def _rename_sides(message: str, names: dict[str, str]) -> str:
    """``message`` with each side name the library uses (`` `p` ``, ``p / p.sum``) replaced
    by the caller's argument name."""
    pattern = r"(?<![\w.'])(" + "|".join(map(re.escape, names)) + r")(?![\w'(])"
    return re.sub(pattern, lambda m: names[m.group(1)], message)


def sample_states(
    state_posterior: Normal, noise: Tensor, state_coupling: Tensor | None = None
) -> Tensor:
    r"""Reparameterised draws of the knowledge states from the state posterior.

    Mean-field (``state_coupling`` None): :math:`z = m + \sqrt v\,\varepsilon`. Gauss–Markov:
    :math:`z_n = a_n z_{n-1} + m_n + \sqrt{v_n}\,\varepsilon_n` along the step axis (the second
    to last), :math:`z_0 = m_0 + \sqrt{v_0}\,\varepsilon_0`.

    Args:
        state_posterior: ``Normal`` of batch shape ``(B, T, K)`` (the conditional m, √v).
        noise: standard normal draws ``(S, B, T, K)``.
        state_coupling: None or ``(B, T, K)`` coefficients a.

    Returns:
        ``(S, B, T, K)`` draws.

    Example:
        >>> q = Normal(torch.ones(1, 3, 1), torch.ones(1, 3, 1))
        >>> sample_states(q, torch.zeros(1, 1, 3, 1), torch.full((1, 3, 1), 0.5)).flatten().tolist()
        [1.0, 1.5, 1.75]
    """
    z = state_posterior.loc + state_posterior.scale * noise
    if state_coupling is None:
        return z
    # the affine recurrence z_n = a_n z_{n−1} + b_n as a parallel (Hillis–Steele) scan:
    # composing the maps over (n−2d, n−d] and (n−d, n] in ⌈log₂ T⌉ vectorised rounds
    a = torch.cat([torch.zeros_like(state_coupling[..., :1, :]), state_coupling[..., 1:, :]], -2)
    a = a.expand_as(z)
    d, n_steps = 1, z.shape[-2]
    while d < n_steps:
        z = torch.cat([z[..., :d, :], z[..., d:, :] + a[..., d:, :] * z[..., :-d, :]], -2)
        a = torch.cat([a[..., :d, :], a[..., d:, :] * a[..., :-d, :]], -2)
        d *= 2
    return z


def _check_answers(answers: Any, shape: tuple[int, int]) -> Tensor:
    if not isinstance(answers, Tensor):
        raise ValueError(f"`answers` must be a torch.Tensor, got {type(answers).__name__}")
    if answers.dtype == torch.bool:
        answers = answers.float()
    check_float_tensor(answers, "answers", dims=2)
    if tuple(answers.shape) != shape:
        raise ValueError(
            f"`answers` must have shape {shape} (learners, steps), got {tuple(answers.shape)}"
        )
    bad = ~torch.isnan(answers) & (answers != 0) & (answers != 1)
    if bool(bad.any()):
        index = tuple(bad.nonzero()[0].tolist())
        raise ValueError(
            f"`answers` must hold 0 or 1 (Bernoulli outcomes), got {float(answers[index]):g} at "
            f"index {index}"
        )
    return answers


def _check_concepts(concepts: Any, shape: tuple[int, int], n_concepts: int) -> Tensor:
    if not isinstance(concepts, Tensor) or concepts.dtype not in (
        torch.int64,
        torch.int32,
        torch.int16,
        torch.int8,
        torch.uint8,
    ):
        got = concepts.dtype if isinstance(concepts, Tensor) else type(concepts).__name__
        raise ValueError(f"`concepts` must be an integer tensor, got {got}")
    if tuple(concepts.shape) != shape:
        raise ValueError(
            f"`concepts` must have shape {shape} (learners, steps), got {tuple(concepts.shape)}"
        )
    bad = (concepts < 0) | (concepts >= n_concepts)
    if bool(bad.any()):
        index = tuple(bad.nonzero()[0].tolist())
        raise ValueError(
            f"`concepts` must lie in [0, {n_concepts}) (the K axis of `state_posterior`), got "
            f"{int(concepts[index])} at index {index}"
        )
    return concepts.long()


def learner_type_kl(
    type_scores: Tensor, *, inputs: str = "logits", reduction: str = "mean"
) -> Tensor:
    r"""KL from a learner-type posterior to the uniform prior, :math:`\mathrm{KL}(q(c)\|U_C)`.

    PSI-KT puts a mixture (GMVAE) prior over learners with a categorical type :math:`c`; its
    regulariser (``cat_weight · loss_cat``, ``loss_cat = −H(q(c)) − log(1/C)``) is

    .. math:: \mathrm{KL}(q(c)\,\|\,U_C) = \sum_c q(c)\log\big(C\,q(c)\big) = \log C - H(q(c)),

    computed by :func:`divergent.kl` (first argument q, the uniform second).

    Args:
        type_scores: ``(..., C)`` logits (default), log-probabilities or probabilities of q(c).
        inputs: ``"logits"``, ``"log_probs"`` or ``"probs"``.
        reduction: ``"none"`` (one value per row), ``"sum"`` or ``"mean"``.

    Returns:
        The KL in nats, in [0, log C].

    Example:
        >>> round(float(learner_type_kl(torch.tensor([2.0, 0.0, 0.0]))), 4)
        0.433

    References:
        Zhou et al. 2024 (PSI-KT), the ``loss_cat`` term of the code; Dilokthanakul et al.
        2016, "Deep unsupervised clustering with Gaussian mixture variational autoencoders".
    """
    check_tensor(type_scores, "type_scores")
    inputs = check_inputs_kind(inputs)
    check_choice(reduction, "reduction", ("none", "sum", "mean"))
    n_types = type_scores.shape[-1]
    fill = {"logits": 0.0, "log_probs": -math.log(n_types), "probs": 1.0 / n_types}[inputs]
    uniform = torch.full_like(type_scores, fill)
    try:
        return kl(type_scores, uniform, inputs=inputs, reduction=reduction)
    except ValueError as err:  # the library names its sides p and q: say which argument
        raise ValueError(_rename_sides(str(err), {"p": "type_scores"})) from err

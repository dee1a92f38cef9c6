r"""Knowledge tracing on simulated learners: an OU simulator, PSI-KT-style VI, a GRU baseline.

* :func:`simulate_learners`: learners whose knowledge of each concept follows an exact
  Ornstein–Uhlenbeck path with learner-specific traits :math:`(\log\alpha, \mu, \log\sigma)`,
  answering Bernoulli(sigmoid(z)) questions at irregular (log-normal) gaps;
* :func:`fit_knowledge_tracing`: stochastic variational inference of the model of
  :func:`divergent.objectives.knowledge_tracing.knowledge_tracing_elbo` with free per-learner
  mean-field Gaussian posteriors over traits and states and a learned Gaussian population
  prior over traits (empirical Bayes), by Adam on the reparameterised ELBO;
* :func:`predict_answers`: the posterior predictive of future answers, propagating the last
  state through the exact OU transition over the cumulative gap;
* :class:`GRUForecaster`, :func:`fit_gru_forecaster`, :func:`gru_predict`: a GRU over the answer
  history trained with binary cross-entropy to predict the answers 1 … ``horizon`` steps
  ahead from the concept and the elapsed time (the deep-KT baseline);
* :func:`binary_auc`: the area under the ROC curve (Mann–Whitney, ties counted half).

Simplified relative to PSI-KT: no LSTM encoders (the posteriors are free parameters per
learner, fitted per data set: not amortised, so no continual-learning inference), no learned
prerequisite graph (concepts are independent given the traits), a single Gaussian population
prior instead of the mixture over learner types.

References:
    Zhou, Bamler, Wu & Tejero-Cantero (2024), Predictive, Scalable and Interpretable Knowledge
    Tracing on Structured Domains, ICLR, arXiv 2403.13179 (PSI-KT);
    Piech, Bassen, Huang, Ganguli, Sahami, Guibas & Sohl-Dickstein (2015), Deep Knowledge
    Tracing, NeurIPS (the recurrent baseline);
    Hanley & McNeil (1982), The meaning and use of the area under a receiver operating
    characteristic (ROC) curve, Radiology 143(1), 29–36 (AUC as the Mann–Whitney statistic).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import Normal

from divergent._validation import check_bool, check_int, check_positive_scalar
from divergent.objectives.knowledge_tracing import (
    knowledge_tracing_elbo,
    ou_traits,
    ou_transition,
    sample_states,
)

__all__ = [
    "GRUForecaster",
    "KnowledgeTracingFit",
    "LearnerData",
    "binary_auc",
    "fit_gru_forecaster",
    "fit_knowledge_tracing",
    "gru_predict",
    "predict_answers",
    "simulate_learners",
]

# population of simulated traits (log α, μ, log σ): loc and scale of independent normals
TRAIT_LOC = (math.log(0.3), 0.0, 0.0)
TRAIT_SCALE = (0.6, 1.0, 0.4)


@dataclass(frozen=True)
class LearnerData:
    """Interactions of B learners with K concepts, T steps each (``states``/``traits`` are the
    simulator's truth, absent for real data).

    Attributes:
        answers: ``(B, T)`` float 0/1.
        concepts: ``(B, T)`` long in ``[0, K)``.
        gaps: ``(B, T)`` time since the previous interaction (``gaps[:, 0] = 0``).
        traits: ``(B, 3)`` true (log speed, mean, log volatility), or None.
        states: ``(B, T, K)`` true knowledge, or None.
    """

    answers: Tensor
    concepts: Tensor
    gaps: Tensor
    n_concepts: int
    traits: Tensor | None = None
    states: Tensor | None = None

    @property
    def n_learners(self) -> int:
        return self.answers.shape[0]

    @property
    def n_steps(self) -> int:
        return self.answers.shape[1]

    def split(self, n_history: int) -> tuple[LearnerData, LearnerData]:
        """(the first ``n_history`` steps, the rest) of every learner."""
        check_int(n_history, "n_history", 1, maximum=self.n_steps - 1)

        def part(sl: slice) -> LearnerData:
            return LearnerData(
                self.answers[:, sl],
                self.concepts[:, sl],
                self.gaps[:, sl],
                self.n_concepts,
                self.traits,
                None if self.states is None else self.states[:, sl],
            )

        return part(slice(0, n_history)), part(slice(n_history, None))


def simulate_learners(
    n_learners: int,
    n_steps: int,
    n_concepts: int,
    *,
    generator: torch.Generator | None = None,
    trait_loc: tuple[float, float, float] = TRAIT_LOC,
    trait_scale: tuple[float, float, float] = TRAIT_SCALE,
    gap_median: float = 1.0,
    gap_log_sd: float = 1.0,
) -> LearnerData:
    r"""Simulate learners with OU knowledge and Bernoulli answers at irregular times.

    Traits :math:`s_i \sim N(\text{trait\_loc}, \text{diag}(\text{trait\_scale})^2)`; each
    concept's knowledge starts from the stationary law :math:`N(\mu, \sigma^2/2\alpha)` and moves
    by the exact OU transition over log-normal gaps (median ``gap_median``, log-sd
    ``gap_log_sd``); at each step the learner answers a uniformly drawn concept :math:`c` with
    :math:`y \sim \mathrm{Bernoulli}(\mathrm{sigmoid}(z_c))`.

    Returns:
        :class:`LearnerData` with the true traits and states (float32).

    Example:
        >>> d = simulate_learners(4, 6, 2, generator=torch.Generator().manual_seed(0))
        >>> tuple(d.answers.shape), tuple(d.states.shape), d.n_concepts
        ((4, 6), (4, 6, 2), 2)
    """
    n_learners = check_int(n_learners, "n_learners", 1)
    n_steps = check_int(n_steps, "n_steps", 1)
    n_concepts = check_int(n_concepts, "n_concepts", 1)
    check_positive_scalar(gap_median, "gap_median")
    check_positive_scalar(gap_log_sd, "gap_log_sd", allow_zero=True)
    loc, scale = torch.tensor(trait_loc), torch.tensor(trait_scale)
    traits = loc + scale * torch.randn(n_learners, 3, generator=generator)
    speed, mean, vol = (x[:, None] for x in ou_traits(traits))
    noise = torch.randn(n_learners, n_steps, generator=generator)
    gaps = gap_median * torch.exp(gap_log_sd * noise)
    gaps[:, 0] = 0.0
    states = torch.empty(n_learners, n_steps, n_concepts)
    noise = torch.randn(n_learners, n_concepts, generator=generator)
    z = mean + vol / torch.sqrt(2.0 * speed) * noise  # the stationary law
    states[:, 0] = z
    for n in range(1, n_steps):
        m, v = ou_transition(z, gaps[:, n, None], speed, mean, vol)
        z = m + v.sqrt() * torch.randn(n_learners, n_concepts, generator=generator)
        states[:, n] = z
    concepts = torch.randint(0, n_concepts, (n_learners, n_steps), generator=generator)
    logits = states.gather(-1, concepts[..., None]).squeeze(-1)
    answers = torch.bernoulli(torch.sigmoid(logits), generator=generator)
    return LearnerData(answers, concepts, gaps, n_concepts, traits, states)


@dataclass
class KnowledgeTracingFit:
    """Fitted posteriors: q(s) = N(trait_loc, trait_scale²) per learner; q(z) per learner, step
    and concept: N(state_loc, state_scale²) (mean-field) or, with ``state_coupling`` a, the
    Gauss–Markov chain q(z_n | z_{n−1}) = N(a_n z_{n−1} + state_loc_n, state_scale_n²); the
    prior N(prior_loc, prior_scale²) and the ELBO (per learner, plain) along the fit."""

    trait_loc: Tensor
    trait_scale: Tensor
    state_loc: Tensor
    state_scale: Tensor
    prior_loc: Tensor
    prior_scale: Tensor
    state_coupling: Tensor | None = None
    elbo_history: list[float] = field(default_factory=list)

    def trait_posterior(self) -> Normal:
        return Normal(self.trait_loc, self.trait_scale)

    def state_posterior(self) -> Normal:
        return Normal(self.state_loc, self.state_scale)


def fit_knowledge_tracing(
    data: LearnerData,
    *,
    steps: int = 1000,
    num_samples: int = 4,
    lr: float = 0.05,
    beta: float = 1.0,
    entropy_weight: float = 1.0,
    prior_loc: tuple[float, float, float] = TRAIT_LOC,
    prior_scale: tuple[float, float, float] = TRAIT_SCALE,
    learn_prior: bool = True,
    markov: bool = True,
    generator: torch.Generator | None = None,
    record_every: int = 10,
) -> KnowledgeTracingFit:
    r"""Stochastic VI: maximise the (tempered) ELBO of
    :func:`~divergent.objectives.knowledge_tracing.knowledge_tracing_elbo` over per-learner
    Gaussian posteriors and a Gaussian population prior over traits, with Adam, full batch.

    Scales are parameterised as softplus of free parameters (kept > 1e-4). The prior over
    traits starts at N(``prior_loc``, ``prior_scale``²) and is learned with the posteriors when
    ``learn_prior`` (empirical Bayes on the bound), else kept fixed. ``markov``: a Gauss–Markov
    state posterior (coupling coefficients learned, starting at 0.5) instead of mean-field.

    Returns:
        :class:`KnowledgeTracingFit` (detached tensors) with the plain per-learner ELBO every
        ``record_every`` steps.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> d = simulate_learners(8, 20, 2, generator=g)
        >>> fit = fit_knowledge_tracing(d, steps=30, generator=g)
        >>> tuple(fit.state_loc.shape), fit.elbo_history[-1] > fit.elbo_history[0]
        ((8, 20, 2), True)
    """
    steps = check_int(steps, "steps", 1)
    check_int(record_every, "record_every", 1)
    check_positive_scalar(lr, "lr")
    b, t, k = data.n_learners, data.n_steps, data.n_concepts
    check_bool(learn_prior, "learn_prior")
    for name, value in (("prior_scale", prior_scale), ("prior_loc", prior_loc)):
        if len(value) != 3:
            raise ValueError(f"`{name}` must hold 3 numbers (log speed, mean, log volatility)")
    for x in prior_scale:
        check_positive_scalar(x, "prior_scale")

    def inv_softplus(x: Tensor) -> Tensor:
        return torch.log(torch.expm1(x))

    loc0 = torch.tensor(prior_loc, dtype=torch.float32)
    trait_loc = loc0.repeat(b, 1).requires_grad_()
    trait_raw = torch.full((b, 3), math.log(math.expm1(0.3)), requires_grad=True)
    state_loc = torch.zeros(b, t, k, requires_grad=True)
    state_raw = torch.full((b, t, k), math.log(math.expm1(0.5)), requires_grad=True)
    prior_mean = loc0.clone().requires_grad_(learn_prior)
    prior_raw = inv_softplus(torch.tensor(prior_scale) - 1e-4).requires_grad_(learn_prior)
    params = [trait_loc, trait_raw, state_loc, state_raw]
    check_bool(markov, "markov")
    coupling = torch.full((b, t, k), 0.5, requires_grad=True) if markov else None
    if coupling is not None:
        params.append(coupling)
    if learn_prior:
        params += [prior_mean, prior_raw]
    opt = torch.optim.Adam(params, lr=lr)

    def scale(raw: Tensor) -> Tensor:
        return F.softplus(raw) + 1e-4

    history: list[float] = []
    for step in range(steps):
        terms = knowledge_tracing_elbo(
            data.answers,
            data.concepts,
            data.gaps,
            Normal(trait_loc, scale(trait_raw)),
            Normal(state_loc, scale(state_raw)),
            Normal(prior_mean, scale(prior_raw)),
            state_coupling=coupling,
            num_samples=num_samples,
            beta=beta,
            entropy_weight=entropy_weight,
            generator=generator,
        )
        opt.zero_grad()
        (-terms.elbo).backward()
        opt.step()
        if step % record_every == 0 or step == steps - 1:
            history.append(float(terms.elbo.detach()))
    return KnowledgeTracingFit(
        trait_loc.detach(),
        scale(trait_raw).detach(),
        state_loc.detach(),
        scale(state_raw).detach(),
        prior_mean.detach(),
        scale(prior_raw).detach(),
        None if coupling is None else coupling.detach(),
        history,
    )


@torch.no_grad()
def predict_answers(
    fit: KnowledgeTracingFit,
    future_concepts: Tensor,
    future_gaps: Tensor,
    *,
    num_samples: int = 256,
    generator: torch.Generator | None = None,
) -> Tensor:
    r"""Posterior predictive :math:`P(y_{T+j} = 1)` of future answers without new observations.

    For draws :math:`s \sim q(s)`, :math:`z_{T-1} \sim q(z_{T-1})` the state after the cumulative
    gap :math:`\Delta_{1:j}` is Gaussian by :func:`~divergent.objectives.knowledge_tracing.\
ou_transition` (exact: nothing is observed in between), and
    :math:`P(y = 1) = \mathbb E[\mathrm{sigmoid}(z_{T-1+j, c})]` is averaged over the draws.

    Args:
        fit: a fitted model (its last step is the last observed one).
        future_concepts: ``(B, F)`` concepts asked next.
        future_gaps: ``(B, F)`` gaps before each of them.

    Returns:
        ``(B, F)`` probabilities.
    """
    check_int(num_samples, "num_samples", 1)
    s = fit.trait_loc + fit.trait_scale * torch.randn(
        num_samples, *fit.trait_loc.shape, generator=generator
    )
    speed, mean, vol = (x[..., None] for x in ou_traits(s))  # (S, B, 1)
    noise = torch.randn(num_samples, *fit.state_loc.shape, generator=generator)
    z_last = sample_states(fit.state_posterior(), noise, fit.state_coupling)[:, :, -1]  # (S, B, K)
    index = future_concepts.long().expand(num_samples, -1, -1)
    z_prev = z_last.gather(-1, index)  # (S, B, F): the state of the concept asked
    elapsed = future_gaps.cumsum(-1)
    m, v = ou_transition(z_prev, elapsed, speed, mean, vol)
    z = m + v.sqrt() * torch.randn(m.shape, generator=generator)
    return torch.sigmoid(z).mean(0)


class GRUForecaster(nn.Module):
    """GRU over (answer, concept one-hot, log(1 + gap)); a head maps (hidden state, concept
    asked, log(1 + time elapsed)) to the logit of a correct answer."""

    def __init__(self, n_concepts: int, hidden: int = 16) -> None:
        super().__init__()
        self.n_concepts = check_int(n_concepts, "n_concepts", 1)
        hidden = check_int(hidden, "hidden", 1)
        self.gru = nn.GRU(1 + n_concepts + 1, hidden, batch_first=True)
        self.head = nn.Sequential(
            nn.Linear(hidden + n_concepts + 1, hidden), nn.Tanh(), nn.Linear(hidden, 1)
        )

    def encode(self, data: LearnerData) -> Tensor:
        x = torch.cat(
            [
                data.answers[..., None],
                F.one_hot(data.concepts, self.n_concepts).float(),
                torch.log1p(data.gaps)[..., None],
            ],
            -1,
        )
        return self.gru(x)[0]  # (B, T, H)

    def logits(self, hidden: Tensor, concepts: Tensor, elapsed: Tensor) -> Tensor:
        q = torch.cat(
            [hidden, F.one_hot(concepts, self.n_concepts).float(), torch.log1p(elapsed)[..., None]],
            -1,
        )
        return self.head(q).squeeze(-1)


def _horizon_pairs(data: LearnerData, horizon: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(source step, target step) pairs with 1 ≤ target − source ≤ horizon, and the targets'
    concepts, elapsed times and answers, flattened over learners."""
    t = data.n_steps
    src, dst = zip(*[(i, i + j) for j in range(1, horizon + 1) for i in range(t - j)], strict=True)
    src_t, dst_t = torch.tensor(src), torch.tensor(dst)
    times = data.gaps.cumsum(-1)
    elapsed = times[:, dst_t] - times[:, src_t]
    return src_t, data.concepts[:, dst_t], elapsed, data.answers[:, dst_t]


def fit_gru_forecaster(
    data: LearnerData,
    *,
    horizon: int = 10,
    hidden: int = 16,
    epochs: int = 200,
    lr: float = 0.01,
    generator: torch.Generator | None = None,
) -> GRUForecaster:
    """Train :class:`GRUForecaster` with binary cross-entropy on every (step, step + j) pair of
    the histories, j = 1 … ``horizon`` (full batch, Adam).

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> d = simulate_learners(8, 20, 2, generator=g)
        >>> model = fit_gru_forecaster(d, horizon=3, epochs=5, generator=g)
        >>> sum(p.numel() for p in model.parameters())
        1393
    """
    check_int(horizon, "horizon", 1, maximum=data.n_steps - 1)
    check_int(epochs, "epochs", 1)
    if generator is not None:
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            model = GRUForecaster(data.n_concepts, hidden)
    else:
        model = GRUForecaster(data.n_concepts, hidden)
    src, concepts, elapsed, target = _horizon_pairs(data, horizon)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(epochs):
        h = model.encode(data)[:, src]
        loss = F.binary_cross_entropy_with_logits(model.logits(h, concepts, elapsed), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model


@torch.no_grad()
def gru_predict(
    model: GRUForecaster, history: LearnerData, future_concepts: Tensor, future_gaps: Tensor
) -> Tensor:
    """``(B, F)`` probabilities of the future answers from the last hidden state of the history."""
    h = model.encode(history)[:, -1:].expand(-1, future_concepts.shape[1], -1)
    return torch.sigmoid(model.logits(h, future_concepts.long(), future_gaps.cumsum(-1)))


def binary_auc(scores: Tensor, labels: Tensor) -> float:
    """Area under the ROC curve of ``scores`` for binary ``labels`` (Mann–Whitney U / n⁺n⁻,
    tied scores counted half); NaN when one class is absent or any score or label is NaN.

    Raises:
        ValueError: if ``labels`` holds a value other than 0, 1 (or NaN), or ``scores`` and
            ``labels`` differ in their number of elements.

    Example:
        >>> binary_auc(torch.tensor([0.1, 0.4, 0.35, 0.8]), torch.tensor([0, 0, 1, 1]))
        0.75
        >>> binary_auc(torch.tensor([0.1, float("nan"), 0.35, 0.8]), torch.tensor([0, 0, 1, 1]))
        nan
    """
    s = scores.reshape(-1).double()
    lab = labels.reshape(-1).double()
    if s.numel() != lab.numel():
        raise ValueError(
            f"`scores` and `labels` must have as many elements, got {s.numel()} and {lab.numel()}"
        )
    if bool(torch.isnan(s).any()) or bool(torch.isnan(lab).any()):
        return float("nan")
    bad = (lab != 0) & (lab != 1)
    if bool(bad.any()):
        raise ValueError(
            f"`labels` must be 0 or 1, got {float(lab[bad][0])!r} "
            f"({int(bad.sum())} value(s) outside {{0, 1}})"
        )
    y = lab.bool()
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = torch.argsort(s)
    ranks = torch.empty_like(s)
    ranks[order] = torch.arange(1, s.numel() + 1, dtype=torch.float64)
    # average ranks within ties
    uniq, inverse = torch.unique(s, return_inverse=True)
    sums = torch.zeros(uniq.numel(), dtype=torch.float64).index_add_(0, inverse, ranks)
    counts = torch.zeros(uniq.numel(), dtype=torch.float64).index_add_(
        0, inverse, torch.ones_like(ranks)
    )
    ranks = (sums / counts)[inverse]
    u = float(ranks[y].sum()) - n_pos * (n_pos + 1) / 2.0
    return u / (n_pos * n_neg)

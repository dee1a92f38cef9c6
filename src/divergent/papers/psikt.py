r"""PSI-KT: learner traits and future answers from an OU state-space model fitted by an ELBO.

Zhou, Bamler, Wu & Tejero-Cantero (ICLR 2024) model each learner's knowledge as an
Ornstein–Uhlenbeck process whose parameters are interpretable learner traits, observed through
Bernoulli(sigmoid(z)) answers at irregular times, and fit Gaussian variational posteriors by a
(tempered) ELBO; they report better multi-step prediction than deep knowledge-tracing
baselines and interpretable traits (:mod:`divergent.objectives.knowledge_tracing`).

Set-up (the notes' smallest experiment, scaled down). Per seed, ``n_learners`` simulated
learners (:func:`~divergent.train.knowledge_tracing.simulate_learners`) with traits
:math:`(\log\alpha, \mu, \log\sigma)` drawn from a population (:data:`~divergent.train.\
knowledge_tracing.TRAIT_LOC` ± ``TRAIT_SCALE``), :data:`N_CONCEPTS` concepts whose knowledge
follows exact OU paths, and ``n_steps`` + :data:`HORIZON` answers each at log-normal gaps
(median 1, log-sd 1). The first ``n_steps`` answers are the history; the last
:data:`HORIZON` are to be predicted (multi-step, no feedback in between).

* **PSI-KT (simplified)**: per-learner Gaussian posteriors q(s) and a Gauss–Markov q(z),
  fitted by Adam on the plain ELBO (β = λ = 1, 4 reparameterised draws, ``fit_steps`` steps;
  :func:`~divergent.train.knowledge_tracing.fit_knowledge_tracing`); prediction by the exact
  OU transition from q(z_T) (:func:`~divergent.train.knowledge_tracing.predict_answers`).
* **GRU baseline**: a 16-unit GRU over (answer, concept, log gap) with a head that takes the
  concept asked and the elapsed time, trained with binary cross-entropy on every pair (step,
  step + j), j ≤ :data:`HORIZON`, of the same histories (``gru_epochs`` full-batch Adam
  epochs).
* **Oracle** (reported, not judged): the true traits and the true last state.

Scaled down / substituted relative to the paper, and why: synthetic data only (no downloads;
the paper's Assist12 / Junyi15 / EdNet are not available); no LSTM encoders (free per-learner
posteriors: not amortised, no continual inference), no prerequisite graph (concepts
independent given the traits), no learner-type mixture (the KL(q(c)‖U) term is in the library
and tested, not used here). Two choices were made after development runs on seeds outside the
reported ones, before the verdict runs: (1) the state posterior is Gauss–Markov, because a
mean-field q(z) biased the fitted speed (correlation with the truth ≈ 0.1); (2) the population
prior over traits is the simulator's (well specified, fixed), because learning it by
empirical Bayes collapsed its speed and volatility scales to ≈ 0.03 (the ELBO prefers it with
this little data per learner), which erased those traits' recovery. The thresholds below were
fixed before any run.

Verdict (fixed in code): per trait, the 95 % interval over seeds of the Pearson correlation
between posterior means and true traits must lie above its threshold (:data:`CORR_MIN`;
held if the low end is above it, not held if the high end is below it, inconclusive
otherwise); and PSI-KT's future-answer AUC must be no worse than the GRU's (paired interval of
PSI − GRU above −:data:`AUC_MARGIN`, :func:`~divergent.papers._stats.no_worse_than`). All
parts must hold. A NaN per-seed AUC (PSI-KT's or the GRU's) or correlation → inconclusive.
Log-loss differences are reported alongside.

Criterion restated after the first full run: the correlation interval is now Fisher's z
interval (:func:`fisher_z_ci`: Student-t over seeds of atanh r, mapped back by tanh) instead of
a Student-t interval on raw r, which could pass 1 (a quick run had upper ends 1.08 and 1.18).
The thresholds are unchanged; on the full run (8 seeds) the low ends stay above them and the
verdict is unchanged. NaN handling was made explicit at the same time.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from divergent.objectives.knowledge_tracing import TRAIT_NAMES, ou_traits, ou_transition
from divergent.papers._catalog import reproduction
from divergent.papers._stats import (
    better_than,
    format_ci,
    interval,
    mean_ci,
    no_worse_than,
    paired_ci,
    plot_methods,
)
from divergent.repro import Outcome, ReproContext, Verdict
from divergent.train.knowledge_tracing import (
    TRAIT_LOC,
    TRAIT_SCALE,
    binary_auc,
    fit_gru_forecaster,
    fit_knowledge_tracing,
    gru_predict,
    predict_answers,
    simulate_learners,
)

N_CONCEPTS = 2
HORIZON = 10
NUM_SAMPLES = 4
LR = 0.05
GRU_HIDDEN = 16
GRU_LR = 0.01
# thresholds, fixed before the runs
CORR_MIN = {"log_speed": 0.3, "mean": 0.7, "log_volatility": 0.3}
AUC_MARGIN = 0.01
METHODS = ("psikt", "gru", "oracle")


def fisher_z_ci(values: Sequence[float], level: float = 0.95) -> dict[str, float]:
    r"""Interval of the mean correlation over seeds by Fisher's z: the Student-t interval of
    :math:`\operatorname{atanh} r_s` (:func:`~divergent.papers._stats.mean_ci`) mapped back by
    tanh, so it stays inside (−1, 1).

    Returns ``{"mean", "low", "high", "mean_r", "sd_z", "n"}``: ``mean`` is tanh of the mean z
    (the interval's centre), ``mean_r`` the plain mean of the correlations. A NaN correlation
    makes every number NaN except ``n``.

    Example:
        >>> r = fisher_z_ci([0.8, 0.9, 0.95])
        >>> -1 < r["low"] < r["mean"] < r["high"] < 1, round(r["mean_r"], 3)
        (True, 0.883)
    """
    values = [float(v) for v in values]
    if any(math.isnan(v) for v in values):
        nan = math.nan
        return {"mean": nan, "low": nan, "high": nan, "mean_r": nan, "sd_z": nan, "n": len(values)}
    z = mean_ci([math.atanh(v) for v in values], level)
    return {
        "mean": math.tanh(z["mean"]),
        "low": math.tanh(z["low"]),
        "high": math.tanh(z["high"]),
        "mean_r": float(np.mean(values)),
        "sd_z": z["sd"],
        "n": z["n"],
    }


def _above(low: float, high: float, threshold: float) -> Verdict:
    """Interval above ``threshold`` → held, below → not held, straddling (or NaN) →
    inconclusive: :func:`~divergent.papers._stats.better_than` of the interval shifted by the
    threshold, with no further margin (``low − t > 0`` ⇔ ``low > t`` in floating point)."""
    return better_than(low - threshold, high - threshold, 0.0)


def _has_nan(metrics: Mapping[str, Any]) -> bool:
    """A NaN in the per-seed AUCs of PSI-KT or the GRU, or in the per-seed correlations."""
    per_seed = [metrics.get("auc", {}).get(m, []) for m in ("psikt", "gru")]
    per_seed += list(metrics.get("correlation", {}).values())
    return any(math.isnan(float(v)) for values in per_seed for v in values)


def checks(metrics: Mapping[str, Any]) -> dict[str, Verdict]:
    """One verdict per part: each trait's correlation interval vs :data:`CORR_MIN`, and AUC
    non-inferiority against the GRU."""
    parts = {
        f"recovers_{name}": _above(*interval(metrics["trait_correlation"][name]), CORR_MIN[name])
        for name in TRAIT_NAMES
    }
    parts["auc_no_worse_than_gru"] = no_worse_than(
        *interval(metrics["auc_psikt_minus_gru"]), AUC_MARGIN
    )
    return parts


def verdict(metrics: Mapping[str, Any]) -> Verdict:
    """All parts of :func:`checks` must hold; a NaN per-seed AUC (PSI-KT or GRU) or correlation
    → inconclusive, whatever the other parts say."""
    if _has_nan(metrics):
        return Verdict.INCONCLUSIVE
    return Verdict.combine(checks(metrics).values())


def _log_loss(p: torch.Tensor, y: torch.Tensor) -> float:
    p = p.double().clamp(1e-7, 1 - 1e-7)
    return float(-(y * p.log() + (1 - y) * (1 - p).log()).mean())


def _correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(np.corrcoef(a.double().numpy(), b.double().numpy())[0, 1])


@reproduction("psikt", verdict=verdict)
def experiment(ctx: ReproContext) -> Outcome:
    size = ctx.size
    corr: dict[str, list[float]] = {name: [] for name in TRAIT_NAMES}
    auc: dict[str, list[float]] = {m: [] for m in METHODS}
    loss: dict[str, list[float]] = {m: [] for m in METHODS}
    elbo_first, elbo_last = [], []
    last = None
    for k in range(size.n_seeds):
        ctx.progress(f"seed {k + 1}/{size.n_seeds}", k / size.n_seeds)
        g = ctx.generator(1000 + k)
        data = simulate_learners(size.n_learners, size.n_steps + HORIZON, N_CONCEPTS, generator=g)
        history, future = data.split(size.n_steps)
        fit = fit_knowledge_tracing(
            history,
            steps=size.fit_steps,
            num_samples=NUM_SAMPLES,
            lr=LR,
            prior_loc=TRAIT_LOC,
            prior_scale=TRAIT_SCALE,
            learn_prior=False,
            markov=True,
            generator=g,
        )
        elbo_first.append(fit.elbo_history[0])
        elbo_last.append(fit.elbo_history[-1])
        assert data.traits is not None and history.states is not None
        for i, name in enumerate(TRAIT_NAMES):
            corr[name].append(_correlation(fit.trait_loc[:, i], data.traits[:, i]))
        gru = fit_gru_forecaster(
            history,
            horizon=HORIZON,
            hidden=GRU_HIDDEN,
            epochs=size.gru_epochs,
            lr=GRU_LR,
            generator=ctx.generator(2000 + k),
        )
        speed, mean, vol = (x[:, None] for x in ou_traits(data.traits))
        z_last = history.states[:, -1].gather(-1, future.concepts)
        m, v = ou_transition(z_last, future.gaps.cumsum(-1), speed, mean, vol)
        draws = torch.randn(512, *m.shape, generator=g)
        probs = {
            "psikt": predict_answers(fit, future.concepts, future.gaps, generator=g),
            "gru": gru_predict(gru, history, future.concepts, future.gaps),
            "oracle": torch.sigmoid(m + v.sqrt() * draws).mean(0),
        }
        for method, p in probs.items():
            auc[method].append(binary_auc(p, future.answers))
            loss[method].append(_log_loss(p, future.answers))
        last = (fit.trait_loc, data.traits)

    metrics: dict[str, Any] = {
        "n_seeds": size.n_seeds,
        "n_learners": size.n_learners,
        "n_steps": size.n_steps,
        "horizon": HORIZON,
        "n_concepts": N_CONCEPTS,
        "corr_min": CORR_MIN,
        "auc_margin": AUC_MARGIN,
        "correlation": corr,
        "trait_correlation": {name: fisher_z_ci(v) for name, v in corr.items()},
        "auc": auc,
        "log_loss": loss,
        "auc_mean": {m: float(np.mean(v)) for m, v in auc.items()},
        "log_loss_mean": {m: float(np.mean(v)) for m, v in loss.items()},
        "auc_psikt_minus_gru": paired_ci(auc["psikt"], auc["gru"]),
        "log_loss_gru_minus_psikt": paired_ci(loss["gru"], loss["psikt"]),
        "elbo_per_learner_first": float(np.mean(elbo_first)),
        "elbo_per_learner_last": float(np.mean(elbo_last)),
        "checks": {},
    }
    metrics["checks"] = {k: v.value for k, v in checks(metrics).items()}

    assert last is not None
    fig, axes = ctx.subplots(1, 3, figsize=(10, 3.2))
    for i, (ax, name) in enumerate(zip(axes, TRAIT_NAMES, strict=True)):
        ax.plot(last[1][:, i].numpy(), last[0][:, i].numpy(), "o", ms=3, alpha=0.6)
        lo, hi = float(last[1][:, i].min()), float(last[1][:, i].max())
        ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
        ax.set_xlabel(f"true {name}")
        ax.set_ylabel("posterior mean")
        ax.set_title(f"r = {corr[name][-1]:.2f}", fontsize=9)
    ctx.savefig(fig, "traits")
    labels = {"psikt": "PSI-KT", "gru": "GRU", "oracle": "oracle"}
    plot_methods(
        ctx,
        "auc",
        {labels[m]: auc[m] for m in METHODS},
        ylabel=f"AUC, next {HORIZON} answers",
        title=f"{size.n_learners} learners, {size.n_seeds} seeds",
    )

    tc = metrics["trait_correlation"]
    summary = (
        "trait correlations "
        + ", ".join(
            f"{n} {tc[n]['mean']:.2f} [{tc[n]['low']:.2f}, {tc[n]['high']:.2f}]"
            for n in TRAIT_NAMES
        )
        + f"; future AUC PSI-KT {metrics['auc_mean']['psikt']:.3f}, GRU "
        f"{metrics['auc_mean']['gru']:.3f}, oracle {metrics['auc_mean']['oracle']:.3f}; "
        f"PSI-KT − GRU {format_ci(metrics['auc_psikt_minus_gru'])} "
        f"(95 % CI, {size.n_seeds} seeds). Design chosen after development runs "
        "(Gauss–Markov state posterior, fixed population prior; see the module docstring); "
        "thresholds fixed before any run. Criterion restated after the first full run: "
        "correlation intervals by Fisher's z (tanh of a t interval of atanh r) instead of a t "
        "interval on raw r, which could exceed 1; thresholds unchanged"
    )
    return Outcome(metrics=metrics, summary=summary)

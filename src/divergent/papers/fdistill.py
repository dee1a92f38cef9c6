r"""f-distill: forward-KL / JS weighting vs reverse KL (VSD / DMD) for mode coverage.

Xu, Nie & Vahdat (arXiv 2502.15681) distil a diffusion teacher into a one-step generator by
minimising :math:`\mathbb E_t D_f(p_t\|q_{\theta,t})`; the gradient is the VSD / DMD score
difference weighted by :math:`h_f(r) = r^2 f''(r)` of the teacher/student density ratio
(:mod:`divergent.objectives.score_distillation`). Reverse KL (h ≡ 1) is VSD / DMD and is
mode-seeking; the paper reports that less mode-seeking divergences (forward KL, JS; JS is its
default) beat it, and argues they up-weight samples where the teacher has more mass than the
student. This reproduction checks the mode-coverage side of that argument.

Set-up (the notes' smallest experiment, :mod:`divergent.train.score_distillation`):

* teacher: 8 isotropic Gaussians (std 0.2) on a circle of radius 3 with unequal weights, mode
  0 at 2 %, the other seven at 14 % each; its noised marginals and scores are analytic (no
  teacher network);
* one-step generator: K = 16 components, :math:`x_0 = \mu_k + e^{\ell_k}\epsilon` with k
  uniform (so the student can put at least 1/16 of its mass on the small mode), initialised
  collapsed near the origin (means N(0, 0.5²), std 1: a generator initialised from the
  teacher starts near the data mean), same initialisation for every divergence of a seed;
* substitution: the paper trains a fake-score network (DSM on generated samples) and a
  discriminator for the ratio. Here the generator family has an exact noised density, so the
  fake score and the log ratio :math:`\log p_t - \log q_t` are exact (a perfect
  discriminator's logits); they go through the library's pipeline with FastGen's defaults
  (logits clamped to ±10, r ∈ [0.1, 20], 10 time bins, h divided by its batch mean);
* training: VE noise, σ log-uniform in [0.05, 4], weights × σ² (the x₀-prediction scale of
  DMD), no GAN term, Adam (lr 0.03), batch 256, ``steps`` steps; divergences ``reverse_kl``
  (VSD / DMD), ``kl`` (forward KL) and ``js``.

Scaled down: a 2-D toy with an analytic teacher instead of ImageNet-64 / SD; seconds of CPU.

Design chosen after prototype runs (before the first full run; thresholds not changed): with
48 generator components and a wider initialisation, reverse KL kept the small mode too; with
16 components forward KL sometimes stalled as broad blobs near the centre. The module's 16
components initialised near the origin is a setting where the comparison can show, so the
result depends on it (the summary says so).

Metrics per divergence and seed (20 000 samples each): the student's mass within 3 teacher
standard deviations of each mode divided by the teacher's weight; the student's density at
the mode's centre divided by the teacher's (both exact); a mode is *covered* when the mass
ratio is ≥ 0.25 **and** the density ratio is ≥ 0.25; KL(teacher‖student) by Monte Carlo with
the exact densities (:func:`divergent.distributions.closed_form` with ``method="mc"``: the
same teacher samples for every generator of a run, so the paired KL gains share their draws;
not a histogram, since both densities are known).

Criterion restated after the first full run: the first version counted a mode as covered on
the mass ratio alone. A review showed that broad blobs spill that much mass into the mode's
disc without any component near it (a single N(0, 1.5² I) student scores 0.56; in a 3-seed,
600-step run, forward KL and JS each "covered" the small mode in one seed with no component
mean within 0.6 of it and component stds near 2; their density ratios are 0.08 and 0.05).
The density condition (fixed at 0.25, the same fraction as the mass condition, before the
rerun; the diffuse N(0, 1.5² I) student has density ratio 0.12) makes *covered* mean that the
student has a local peak's worth of density there. It can only make covering harder, for
every divergence alike. The quick run (150 steps) covers nothing under it; under the mass
alone its forward KL and JS had "covered" the small mode in every seed.

Verdict (thresholds fixed before the first full run):

* coverage: reverse KL drops the small mode in at least half the seeds, and forward KL and JS
  each cover it in a fraction of seeds at least 0.5 above reverse KL's; otherwise ``not held``;
* KL(teacher‖student): for forward KL and JS, the paired 95 % interval (over seeds) of
  KL_reverse − KL_f above 0 → held, below the 0.02-nat margin → ``not held``, else
  inconclusive;
* overall: coverage not held → ``not held``; otherwise the weakest of the two KL parts.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import torch.distributions as D

from divergent.distributions import closed_form
from divergent.papers._catalog import reproduction
from divergent.papers._stats import better_than, format_ci, interval, paired_ci, plot_methods
from divergent.repro import Outcome, ReproContext, Verdict
from divergent.train.score_distillation import (
    MixtureGenerator,
    ScoreDistillationConfig,
    distill_mixture_generator,
    ring_mixture,
)

DIVERGENCES = ("reverse_kl", "kl", "js")
LESS_MODE_SEEKING = ("kl", "js")
N_MODES = 8
LOW_WEIGHT = 0.02  # mode 0
RADIUS, MODE_STD = 3.0, 0.2
N_COMPONENTS = 16
INIT_MEAN_STD, INIT_STD = 0.5, 1.0
EVAL_SAMPLES = 20_000
COVER_FRACTION = 0.25  # a mode is covered when student mass ≥ this × teacher weight ...
DENSITY_FRACTION = 0.25  # ... and student density at its centre ≥ this × teacher's (restated)
RKL_DROP_RATE_MIN = 0.5  # reverse KL must drop the small mode in at least half the seeds
COVER_GAIN_MIN = 0.5  # kl / js cover rate − reverse KL's cover rate
KL_MARGIN = 0.02  # nats: smallest KL(teacher‖student) gain the claim needs


def _teacher_weights() -> list[float]:
    rest = (1.0 - LOW_WEIGHT) / (N_MODES - 1)
    return [LOW_WEIGHT] + [rest] * (N_MODES - 1)


def covered(mass_ratio: float, density_ratio: float) -> bool:
    """A mode is covered when the student has both mass near it and density at its centre:
    ``mass_ratio ≥ COVER_FRACTION`` and ``density_ratio ≥ DENSITY_FRACTION`` (NaN: not
    covered)."""
    return mass_ratio >= COVER_FRACTION and density_ratio >= DENSITY_FRACTION


def checks(metrics: Mapping[str, Any]) -> dict[str, Verdict]:
    """The verdict's parts: ``coverage`` and ``kl_<div>`` for forward KL and JS."""
    rate = metrics["low_mode_cover_rate"]
    tol = 1e-9  # rates are k/n: 0.7 − 0.2 is 0.49999999999999994 in floating point
    coverage = (1.0 - rate["reverse_kl"]) >= RKL_DROP_RATE_MIN - tol and all(
        rate[d] - rate["reverse_kl"] >= COVER_GAIN_MIN - tol for d in LESS_MODE_SEEKING
    )
    out = {"coverage": Verdict.from_bool(coverage)}
    for d in LESS_MODE_SEEKING:
        out[f"kl_{d}"] = better_than(*interval(metrics[f"kl_gain_{d}"]), KL_MARGIN)
    return out


def verdict(metrics: Mapping[str, Any]) -> Verdict:
    """Forward KL and JS cover the small mode reverse KL drops, with lower KL(teacher‖student)."""
    parts = checks(metrics)
    if parts["coverage"] is Verdict.NOT_HELD:
        return Verdict.NOT_HELD
    kl_parts = [parts[f"kl_{d}"] for d in LESS_MODE_SEEKING]
    if Verdict.NOT_HELD in kl_parts:
        return Verdict.NOT_HELD
    if Verdict.INCONCLUSIVE in kl_parts:
        return Verdict.INCONCLUSIVE
    return Verdict.HELD


def _mixture(log_w: torch.Tensor, means: torch.Tensor, stds: torch.Tensor) -> Any:
    """A batch of isotropic Gaussian mixtures as a ``torch.distributions`` object."""
    comp = D.Independent(D.Normal(means, stds[..., None].expand_as(means)), 1)
    return D.MixtureSameFamily(D.Categorical(logits=log_w), comp)


def _evaluate(
    teacher: Any, student: MixtureGenerator, g: torch.Generator, kl_seed: int
) -> dict[str, Any]:
    """Mode mass ratios, mode-centre density ratios and KL(teacher‖student) of each of the C
    generators."""
    with torch.no_grad():
        x = student.sample(EVAL_SAMPLES, g)  # (C, n, 2)
        c = x.shape[0]
        dist = torch.cdist(x, teacher.means.expand(c, -1, -1))
        nearest, near = dist.argmin(-1), dist.min(-1).values < 3 * MODE_STD
        mass = torch.stack([((nearest == m) & near).double().mean(-1) for m in range(N_MODES)], -1)
        ratio = mass / teacher.weights.double()
        log_w = torch.full((c, student.n_components), -math.log(student.n_components))
        means, stds = student.means.detach(), student.log_stds.detach().exp()
        centres = teacher.means
        log_p0, _ = teacher.log_prob_and_score(centres, torch.zeros(N_MODES))
        log_q0, _ = student.log_prob_and_score(centres.expand(c, -1, -1), torch.zeros(c, N_MODES))
        density = (log_q0 - log_p0).double().exp()  # (C, modes)
        p = _mixture(teacher.weights.log()[None], teacher.means[None], teacher.stds[None])
        kl = closed_form(
            "kl",
            p,
            _mixture(log_w, means, stds),
            method="mc",
            num_samples=EVAL_SAMPLES,
            seed=kl_seed,
        ).value
    return {"mass_ratio": ratio, "density_ratio": density, "kl": kl, "samples": x[:, :2000]}


@reproduction("fdistill", verdict=verdict)
def experiment(ctx: ReproContext) -> Outcome:
    n_seeds, steps = ctx.size.n_seeds, ctx.size.steps
    teacher = ring_mixture(_teacher_weights(), radius=RADIUS, std=MODE_STD)
    inits = []
    for s in range(n_seeds):
        g = ctx.generator(100 + s)
        inits.append(INIT_MEAN_STD * torch.randn(N_COMPONENTS, 2, generator=g))
    means = torch.stack(inits * len(DIVERGENCES))  # generator index = div * n_seeds + seed
    log_stds = torch.full(means.shape[:2], math.log(INIT_STD))
    student = MixtureGenerator(means, log_stds)
    divs = [d for d in DIVERGENCES for _ in range(n_seeds)]
    config = ScoreDistillationConfig(steps=steps)
    distill_mixture_generator(
        teacher,
        student,
        divs,
        config,
        generator=ctx.generator(7),
        progress=lambda f: ctx.progress("training", f),
    )
    ev = _evaluate(teacher, student, ctx.generator(8), ctx.seed + 9)
    ratio = ev["mass_ratio"].reshape(len(DIVERGENCES), n_seeds, N_MODES)
    density = ev["density_ratio"].reshape(len(DIVERGENCES), n_seeds, N_MODES)
    kl = ev["kl"].reshape(len(DIVERGENCES), n_seeds)
    per: dict[str, dict[str, list[Any]]] = {}
    for i, d in enumerate(DIVERGENCES):
        per[d] = {
            "low_mode_mass_ratio": ratio[i, :, 0].tolist(),
            "low_mode_density_ratio": density[i, :, 0].tolist(),
            "low_mode_covered": [
                covered(float(ratio[i, s, 0]), float(density[i, s, 0])) for s in range(n_seeds)
            ],
            "modes_covered": [
                float(
                    sum(
                        covered(float(ratio[i, s, m]), float(density[i, s, m]))
                        for m in range(N_MODES)
                    )
                )
                for s in range(n_seeds)
            ],
            "kl_teacher_student": kl[i].tolist(),
        }
    cover = {d: float(np.mean(per[d]["low_mode_covered"])) for d in DIVERGENCES}
    metrics: dict[str, Any] = {
        "n_seeds": n_seeds,
        "steps": steps,
        "teacher_weights": _teacher_weights(),
        "n_components": N_COMPONENTS,
        "per_seed": per,
        "low_mode_cover_rate": cover,
        "modes_covered_mean": {d: float(np.mean(per[d]["modes_covered"])) for d in DIVERGENCES},
        "kl_teacher_student_mean": {
            d: float(np.mean(per[d]["kl_teacher_student"])) for d in DIVERGENCES
        },
    }
    for d in LESS_MODE_SEEKING:
        metrics[f"kl_gain_{d}"] = paired_ci(
            per["reverse_kl"]["kl_teacher_student"], per[d]["kl_teacher_student"]
        )
    metrics["checks"] = {k: v.value for k, v in checks(metrics).items()}

    fig, axes = ctx.subplots(1, len(DIVERGENCES), figsize=(10.5, 3.6), sharex=True, sharey=True)
    samples = ev["samples"].reshape(len(DIVERGENCES), n_seeds, -1, 2)
    for i, (ax, d) in enumerate(zip(axes, DIVERGENCES, strict=True)):
        ax.scatter(*samples[i, 0].T.numpy(), s=2, alpha=0.3)
        for m in range(N_MODES):
            ax.add_patch(
                _circle(teacher.means[m].tolist(), 3 * MODE_STD, "red" if m == 0 else "0.5")
            )
        ax.set_title(f"{d}: small mode ×{per[d]['low_mode_mass_ratio'][0]:.2f}", fontsize=9)
        ax.set_aspect("equal")
    ctx.savefig(fig, "samples_seed0")
    plot_methods(
        ctx,
        "kl_teacher_student",
        {d: per[d]["kl_teacher_student"] for d in DIVERGENCES},
        ylabel="KL(teacher‖student) [nats]",
        title=f"8-mode ring, small mode {LOW_WEIGHT:.0%}, {n_seeds} seeds",
    )
    plot_methods(
        ctx,
        "low_mode_mass_ratio",
        {d: per[d]["low_mode_mass_ratio"] for d in DIVERGENCES},
        ylabel="student / teacher mass at the small mode",
        title=f"{steps} steps, covered: mass ≥ {COVER_FRACTION} and density ≥ {DENSITY_FRACTION}",
    )
    km = metrics["kl_teacher_student_mean"]
    summary = (
        "Criterion restated after the first full run: a mode counts as covered only if the "
        f"student's density at its centre is also ≥ {DENSITY_FRACTION} × the teacher's (mass "
        "alone let diffuse blobs count). Small-mode cover rate "
        + ", ".join(f"{d} {cover[d]:.2f}" for d in DIVERGENCES)
        + "; KL(teacher‖student) "
        + ", ".join(f"{d} {km[d]:.3f}" for d in DIVERGENCES)
        + "; KL gain over reverse KL "
        + ", ".join(f"{d} {format_ci(metrics[f'kl_gain_{d}'])}" for d in LESS_MODE_SEEKING)
        + f" ({n_seeds} seeds, {steps} steps; exact fake score and ratio; generator size and "
        "initialisation chosen after prototype runs, see the module docstring); checks: "
        + ", ".join(f"{k} {v}" for k, v in metrics["checks"].items())
    )
    return Outcome(metrics=metrics, summary=summary)


def _circle(center: list[float], radius: float, color: str) -> Any:
    from matplotlib.patches import Circle  # lazy: matplotlib only when plotting

    return Circle(center, radius, fill=False, color=color, lw=0.8)

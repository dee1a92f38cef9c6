r"""vSAE: a variational TopK SAE against a TopK SAE on toy superposition data.

Baker, Li et al. (arXiv 2509.22994) replace the deterministic encoder of a TopK sparse
autoencoder by samples of a learned Gaussian posterior with a KL term toward N(0, I)
(:mod:`divergent.objectives.sparse_autoencoder`) and report a negative result on Pythia-70M
residual-stream activations: the vSAE underperforms the TopK SAE on core metrics (reconstruction)
and its KL term kills many more latents, though it scores better on feature-independence
metrics.

Set-up (the notes' smallest experiment; the paper's Pythia-70M activations, SAE Bench,
autointerp and t-SNE are out of reach offline, so a toy model of superposition stands in):
64 ground-truth features, each active with probability 0.05 with magnitude U[0, 1], embedded in
d = 32 along random unit directions (:func:`divergent.train.sparse_autoencoder.superposition_data`,
new directions per seed; 8192 training and 4096 held-out rows). Per seed, a TopK SAE and a TopK
vSAE (dictionary 128, k = 4) start from the same initialisation of their shared weights and see
the same batch sequence: Adam (lr 2·10⁻³, batch 128), the same number of steps, decoder rows
renormalised after every step. The vSAE learns σ (a linear log-variance head initialised at
log σ² = 0, i.e. at the prior), samples :math:`z = \mu + \sigma\odot\varepsilon` before TopK,
charges KL over all 128 latents with λ_KL = 1, and is evaluated at the posterior mean. Where TopK
sits relative to sampling and whether σ is learned are not pinned down by the paper's text; this
is our reading ("learned Gaussian posteriors", TopK on the sampled latents). Metrics on the
held-out rows: fraction of variance unexplained (FVU), fraction of dead latents (never active),
mean max cosine of the decoder directions to the ground truth (MMCS) and mean |cos| between live
decoder directions (feature independence; lower = less overlap); the FVU of the sampled
encoder (one ε per row) is reported beside the posterior-mean FVU that is judged. The full run
adds λ_KL ∈ {0.01, 0.1} and a fixed-σ = 1 vSAE (the LessWrong version), reported only.

Verdict (fixed in code before the run; one restatement, below): with paired 95 % intervals
over seeds of vSAE − SAE, the claim holds when the vSAE has more dead latents (interval above 0)
*and* a worse reconstruction (FVU interval above 0); it is not held when either difference is,
with 95 % confidence, below its margin (2 points of dead latents; 0.01 FVU); otherwise
inconclusive (:func:`divergent.papers._stats.better_than` per part, :meth:`Verdict.combine`).
The feature-independence metrics are reported, not judged.

Criterion restated after the first full run (a new-user trial of the quick run): when neither
model has a single dead latent in any seed (every per-seed dead fraction of the TopK SAE and of
the judged vSAE is 0), the run cannot show the dead-latent effect at all, and the dead-latent
part is ``inconclusive`` instead of ``not held`` from a difference of exactly +0.000 [+0.000,
+0.000]. The thresholds are unchanged, and the first full run (dead latents in every seed of
both models) is judged the same under the restated criterion.

Result of the first full run (8 seeds, 2000 steps): held, but by a collapse rather than a
modest gap: dead latents 0.23 (SAE; no auxiliary loss, so the TopK SAE has its own dead
latents) vs 0.66 (vSAE), FVU 0.09 vs 46 at the posterior mean (6.1 with sampled z), MMCS 0.997
vs 0.25. The paper's "better feature independence" is *not* reproduced: the
vSAE's live decoder rows overlap more (mean |cos| 0.74 vs 0.16). Even λ_KL = 0.01 leaves 70 %
of the latents dead (FVU 0.77), so in this toy set-up the sampling before TopK (σ starting at the
prior's 1), more than the strength of the KL term, is what kills latents. The quick run (100
steps) is too short for latents to die in either model, so its indicative verdict is
``inconclusive`` (it was ``not held`` before the criterion was restated).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

from divergent.papers._catalog import reproduction
from divergent.papers._stats import better_than, compare_methods, format_ci, interval, plot_scores
from divergent.repro import Outcome, ReproContext, Verdict
from divergent.train.sparse_autoencoder import (
    TopKSAE,
    VariationalTopKSAE,
    evaluate_sparse_autoencoder,
    superposition_data,
    train_sparse_autoencoder,
)

N_FEATURES = 64
DIM = 32
P_ACTIVE = 0.05
N_LATENTS = 128
K = 4
N_TRAIN = 8192
N_TEST = 4096
BATCH_SIZE = 128
LR = 2e-3
KL_WEIGHT = 1.0  # λ_KL of the judged vSAE
LOG_VAR_INIT = 0.0  # learned σ starts at the prior's σ = 1
DEAD_MARGIN = 0.02  # the claim needs ≥ 2 points more dead latents (fraction of the dictionary)
FVU_MARGIN = 0.01  # ... and ≥ 0.01 more fraction of variance unexplained
SCORES = ("fvu", "fvu_sampled", "mse", "dead_fraction", "max_cosine", "pairwise_cosine", "l0")


def dead_latents_seen(metrics: Mapping[str, Any]) -> bool:
    """Whether the TopK SAE or the judged vSAE had a dead latent in at least one seed."""
    per = metrics["per_seed"]
    return any(float(v) > 0 for m in ("sae", "vsae") for v in per[m]["dead_fraction"])


def checks(metrics: Mapping[str, Any]) -> dict[str, Verdict]:
    """The two parts of the claim, each a tri-state verdict on its paired interval.

    The dead-latent part is inconclusive when no latent died in either model in any seed
    (restated criterion, see the module notes): such a run cannot show the effect.
    """
    paired = metrics["paired"]["vsae_minus_sae"]
    dead = (
        better_than(*interval(paired["dead_fraction"]), DEAD_MARGIN)
        if dead_latents_seen(metrics)
        else Verdict.INCONCLUSIVE
    )
    return {
        "more_dead_latents": dead,
        "worse_reconstruction": better_than(*interval(paired["fvu"]), FVU_MARGIN),
    }


def verdict(metrics: Mapping[str, Any]) -> Verdict:
    """Held when the vSAE has both more dead latents and a worse FVU than the TopK SAE."""
    return Verdict.combine(checks(metrics).values())


def _variants(size: Any) -> dict[str, dict[str, Any]]:
    """name -> vSAE settings; ``vsae`` is the judged one, the others are reported only."""
    out = {"vsae": {"kl_weight": KL_WEIGHT, "learn_sigma": True}}
    for w in size.kl_sweep:
        out[f"vsae_kl{w:g}"] = {"kl_weight": float(w), "learn_sigma": True}
    if size.fixed_sigma:
        out["vsae_fixed_sigma"] = {"kl_weight": KL_WEIGHT, "learn_sigma": False}
    return out


@reproduction("vsae", verdict=verdict)
def experiment(ctx: ReproContext) -> Outcome:
    variants = _variants(ctx.size)
    per: dict[str, dict[str, list[float]]] = {
        m: {s: [] for s in SCORES} for m in ("sae", *variants)
    }
    for seed in range(ctx.size.n_seeds):
        ctx.progress(f"seed {seed + 1}/{ctx.size.n_seeds}", seed / ctx.size.n_seeds)
        g = ctx.generator(100 + seed)
        train = superposition_data(
            N_TRAIN, n_features=N_FEATURES, dim=DIM, p_active=P_ACTIVE, generator=g
        )
        test = superposition_data(
            N_TEST,
            n_features=N_FEATURES,
            dim=DIM,
            p_active=P_ACTIVE,
            directions=train.directions,
            generator=g,
        )
        for name in ("sae", *variants):
            init = ctx.generator(200 + seed)  # same shared-weight initialisation for every model
            if name == "sae":
                model: TopKSAE = TopKSAE(DIM, N_LATENTS, K, generator=init)
                kl_weight = 0.0
            else:
                spec = variants[name]
                model = VariationalTopKSAE(
                    DIM,
                    N_LATENTS,
                    K,
                    learn_sigma=spec["learn_sigma"],
                    log_var_init=LOG_VAR_INIT,
                    generator=init,
                )
                kl_weight = spec["kl_weight"]
            train_sparse_autoencoder(
                model,
                train.x,
                steps=ctx.size.n_steps,
                batch_size=BATCH_SIZE,
                lr=LR,
                kl_weight=kl_weight,
                generator=ctx.generator(300 + seed),  # same batch sequence for every model
                noise_generator=ctx.generator(400 + seed),
            )
            ev = asdict(
                evaluate_sparse_autoencoder(
                    model, test.x, train.directions, generator=ctx.generator(500 + seed)
                )
            )
            for s in SCORES:
                per[name][s].append(ev[s])

    pairs = [(m, "sae") for m in variants]
    metrics: dict[str, Any] = {
        "n_seeds": ctx.size.n_seeds,
        "n_steps": ctx.size.n_steps,
        "kl_weight": KL_WEIGHT,
        "dead_margin": DEAD_MARGIN,
        "fvu_margin": FVU_MARGIN,
        **compare_methods(per, pairs),
    }
    metrics["dead_latents_seen"] = dead_latents_seen(metrics)
    metrics["checks"] = {k: v.value for k, v in checks(metrics).items()}
    label = {"sae": "TopK SAE", "vsae": f"TopK vSAE (λ={KL_WEIGHT:g})"}
    shown = {label.get(m, m): s for m, s in per.items()}
    title = f"toy superposition (64 features in d=32), m={N_LATENTS}, k={K}"
    plot_scores(
        ctx,
        shown,
        {
            "dead_latents": ("dead_fraction", "fraction of dead latents", title),
            "fvu": ("fvu", "fraction of variance unexplained", title),
            "pairwise_cosine": ("pairwise_cosine", "mean |cos| of live decoder rows", title),
        },
    )
    mean, d = metrics["mean"], metrics["paired"]["vsae_minus_sae"]
    summary = (
        f"dead latents SAE {mean['sae']['dead_fraction']:.3f} vs vSAE "
        f"{mean['vsae']['dead_fraction']:.3f} (Δ {format_ci(d['dead_fraction'])}); FVU SAE "
        f"{mean['sae']['fvu']:.3f} vs vSAE {mean['vsae']['fvu']:.3f} (Δ {format_ci(d['fvu'])}); "
        f"MMCS {mean['sae']['max_cosine']:.3f} vs {mean['vsae']['max_cosine']:.3f}; pairwise "
        f"|cos| {mean['sae']['pairwise_cosine']:.3f} vs {mean['vsae']['pairwise_cosine']:.3f} "
        f"(95 % CI, {ctx.size.n_seeds} seeds, {ctx.size.n_steps} steps); vSAE FVU with sampled "
        f"z {mean['vsae']['fvu_sampled']:.3f}"
    )
    extra = [m for m in variants if m != "vsae"]
    if extra:
        summary += "; reported only (dead, FVU): " + ", ".join(
            f"{m} {mean[m]['dead_fraction']:.3f}, {mean[m]['fvu']:.3f}" for m in extra
        )
    summary += (
        ". Criterion restated after the first full run: when neither model has a dead latent in "
        "any seed the run cannot show the dead-latent effect and that part is inconclusive (not "
        "'not held'); this run: "
        + (
            "dead latents seen, judged on the interval"
            if metrics["dead_latents_seen"]
            else "no dead latent in either model, so inconclusive"
        )
    )
    return Outcome(metrics=metrics, summary=summary)

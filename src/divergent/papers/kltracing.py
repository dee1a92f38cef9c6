r"""KL-tracing vs RGB-difference tracing on tiny next-frame predictors (synthetic videos).

Kim, Aw, Kotar et al. (arXiv 2507.09082) extract flow zero-shot from a generative video
model by injecting a tracer at a query :math:`u` of frame 1 and taking the peak of the
per-location KL divergence between the perturbed and the clean predictive distributions of
frame 2 (:mod:`divergent.analysis.kl_tracing`); they find this works best for models that
predict a *distribution* per location, while tracing the perturbation through the difference
of mean (RGB) predictions, the CWM probe, suffers from blurry mean predictions.

Set-up (scaled down; no video model or data set exists offline). Videos: 12×12 two-frame clips
(:func:`divergent.train.frame_prediction.make_blob_videos`) of two textured discs over a static
textured background (independent pixels), intensities quantised into 8 bins. A disc is "dark"
(bins 0–3) or "bright" (bins 4–7); its flow is drawn from its kind's list — dark: (0, +2) w.p.
0.7, (+2, 0) w.p. 0.3; bright: (−2, 0) w.p. 0.7, (0, −2) w.p. 0.3 — so frame 2 is predictable
from frame 1 up to a genuine two-way ambiguity (a mean predictor must blur it, a categorical
one can keep both modes). Per seed: two predictors of the same size (a dilated CNN trunk, width
16, dilations 1, 1, 2, 1; only the 1×1 head differs) trained from the same initialisation on
the same batches: a per-pixel softmax over the bins (cross-entropy) and a mean-intensity
regressor (squared error). Test: one query per test video on a moving, visible disc pixel; the
tracer moves the query's bin by half its kind's slice (its kind, hence its motion, is kept);
the peak is searched within the flow's range (Chebyshev radius 2 around u) for every method.
End-point error (EPE, pixels) of

* ``kl`` — KL-tracing, :math:`\mathrm{KL}(p'\|p)` per pixel, on the categorical predictor;
* ``rgb`` — RGB-difference tracing on the mean regressor (the claim's baseline);
* ``rgb_categorical`` — RGB-difference tracing on the categorical predictor's mean intensity
  (an ablation: the read-out without the training difference; not part of the verdict);
* ``zero`` — flow 0; ``oracle`` — the most probable flow of the query's kind (the best any
  tracer can do on average without seeing frame 2).

Substituted relative to the paper: no LRAS / generative video model, a per-pixel categorical
CNN instead; no random-access reveal of frame-2 pixels (the motion is coded by appearance
instead, so the model needs no reveal to know it); EPE on synthetic clips instead of TAP-Vid.

Design history, stated because it was chosen after looking at prototype runs (one seed each,
before the thresholds below were used on any run of this module): (1) revealed frame-2 pixels
with per-disc random motion, as the notes suggest: the tiny CNN did not learn the motion within
the CPU budget and both tracers stayed at the zero-flow error; (2) appearance-coded motion
with smooth textures (two 3×3 blurs, width 32): neither predictor carried the one-pixel
tracer (EPE KL 1.88, RGB 1.68, zero flow 2.0, oracle 1.07 — RGB ahead, both far from the
oracle); (3) independent-pixel textures (this module): both carry it. The change from (2) to
(3) was made for the validity condition below (the tracer must be carried), not for the
comparison; it is a place where the result could depend on the design. The one-seed prototype
of (3) (learning rate 3e-3, 600 steps, instead of this module's 2e-3 and 800) had KL-tracing
ahead (EPE 0.90 vs 1.45, oracle 0.81); the full run of this module (10 seeds) has RGB tracing
on the mean model ahead on every seed, so the comparison is sensitive to how well each
predictor is trained. A likely reason for KL's deficit here (not verified): with two motion
modes, the KL at a mode's location is about :math:`\pi\log(\pi/\varepsilon)` (π the
mode's probability, ε the clean probability of the tracer's bin there), so a small ε can lift
the less probable mode above the more probable one, whereas the mean difference is
proportional to π.

Verdict (thresholds fixed in code before the final runs): the models must carry the tracer —
the better of the two tracers must close at least ``GAP_CLOSURE_MIN`` of the EPE gap between
zero flow and the oracle, otherwise ``inconclusive``; then the claim is judged on the paired
per-seed relative EPE reduction :math:`r_s = 1 - \mathrm{EPE}_{kl,s}/\mathrm{EPE}_{rgb,s}`:
its 95 % interval above 0 → held; below ``MARGIN`` without being above 0 → not held;
otherwise inconclusive (:func:`divergent.papers._stats.better_than`). A seed whose RGB EPE is 0
has no relative reduction (NaN), and the verdict is then inconclusive.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from divergent.analysis.kl_tracing import (
    kl_tracing_flow,
    kl_tracing_map,
    rgb_difference_map,
    rgb_tracing_flow,
    search_window,
)
from divergent.papers._catalog import reproduction
from divergent.papers._stats import (
    better_than,
    format_ci,
    interval,
    mean_ci,
    paired_ci,
    plot_methods,
)
from divergent.repro import Outcome, ReproContext, Verdict
from divergent.train.frame_prediction import (
    BlobVideos,
    FramePredictor,
    apply_tracer,
    encode_inputs,
    expected_intensity,
    make_blob_videos,
    predict_frame2,
    train_frame_predictor,
)

SIZE = 12
N_BINS = 8
MAX_FLOW = 2
MOTIONS = (
    ((0, 2, 0.7), (2, 0, 0.3)),  # dark discs (bins 0–3)
    ((-2, 0, 0.7), (0, -2, 0.3)),  # bright discs (bins 4–7)
)
TEXTURE_BLUR = 0  # independent pixels: a one-pixel tracer cannot be guessed from neighbours
WIDTH = 16
DILATIONS = (1, 1, 2, 1)
BATCH = 32
LR = 2e-3
METHODS = ("kl", "rgb", "rgb_categorical", "zero", "oracle")

MARGIN = 0.05  # the smallest relative EPE reduction the claim needs
GAP_CLOSURE_MIN = 0.5  # the better tracer closes ≥ half the zero-flow → oracle gap


def relative_reduction(kl: float, rgb: float) -> float:
    """One seed's relative EPE reduction ``1 − kl / rgb`` of KL-tracing against RGB tracing;
    NaN when RGB's EPE is 0 (no reduction is defined, and :func:`verdict` says inconclusive).

    Example:
        >>> relative_reduction(0.5, 2.0), relative_reduction(0.0, 0.0)
        (0.75, nan)
    """
    return 1 - kl / rgb if rgb != 0 else math.nan


def checks(metrics: Mapping[str, Any]) -> dict[str, bool]:
    """The parts of the verdict, from the per-method mean EPEs and the paired interval (pure)."""
    mean = {m: float(v) for m, v in metrics["epe_mean"].items()}
    gap = mean["zero"] - mean["oracle"]
    best = min(mean["kl"], mean["rgb"])
    low, high = interval(metrics["relative_reduction"])
    return {
        "tracer_carried": gap > 0 and (mean["zero"] - best) >= GAP_CLOSURE_MIN * gap,
        "kl_better": low > 0,
        "kl_not_better_by_margin": not low > 0 and high < MARGIN,
    }


def verdict(metrics: Mapping[str, Any]) -> Verdict:
    """KL-tracing (categorical predictor) below RGB tracing (mean predictor) in EPE."""
    if not checks(metrics)["tracer_carried"]:
        return Verdict.INCONCLUSIVE  # the predictors do not carry the tracer: nothing to compare
    return better_than(*interval(metrics["relative_reduction"]), MARGIN)


def _queries(videos: BlobVideos, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """One query per video on a moving, visible pixel (videos without one are dropped)."""
    ok = (videos.moving & videos.visible).flatten(1)
    rows = ok.any(1).nonzero()[:, 0]
    pick = torch.multinomial(ok[rows].float(), 1, generator=g)[:, 0]
    return rows, torch.stack([pick // SIZE, pick % SIZE], 1)


def _oracle_flow(frame1: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
    """The most probable flow of each query's disc kind (read from its brightness)."""
    per = N_BINS // len(MOTIONS)
    kind = frame1[torch.arange(len(query)), query[:, 0], query[:, 1]] // per
    best = torch.tensor([max(mot, key=lambda e: e[2])[:2] for mot in MOTIONS], dtype=torch.float64)
    return best[kind]


def _run_seed(ctx: ReproContext, k: int) -> dict[str, Any]:
    g = ctx.generator(100 + k)
    videos = {
        split: make_blob_videos(
            n,
            size=SIZE,
            n_bins=N_BINS,
            max_flow=MAX_FLOW,
            motions=MOTIONS,
            texture_blur=TEXTURE_BLUR,
            generator=g,
        )
        for split, n in (("train", ctx.size.n_train), ("test", ctx.size.n_test))
    }
    models, final_loss = {}, {}
    for head in ("categorical", "mean"):
        torch.manual_seed(ctx.seed + 1000 + k)  # the same trunk initialisation for both heads
        net = FramePredictor(N_BINS, head, width=WIDTH, dilations=DILATIONS)
        losses = train_frame_predictor(
            net,
            videos["train"],
            steps=ctx.size.steps,
            batch_size=BATCH,
            lr=LR,
            reveal_fraction=0.0,
            hole_radius=0,
            generator=ctx.generator(2000 + k),
        )
        models[head] = net
        final_loss[head] = float(np.mean(losses[-max(1, len(losses) // 10) :]))
    test = videos["test"]
    rows, query = _queries(test, g)
    f1, f2 = test.frame1[rows], test.frame2[rows]
    hidden = torch.zeros_like(f1, dtype=torch.bool)  # no frame-2 pixel is revealed
    slices = len(MOTIONS)
    x = encode_inputs(f1, f2, hidden, N_BINS)
    x_traced = encode_inputs(apply_tracer(f1, query, N_BINS, slices=slices), f2, hidden, N_BINS)
    window = search_window(SIZE, SIZE, query, MAX_FLOW)
    cat, cat_t = (
        predict_frame2(models["categorical"], x),
        predict_frame2(models["categorical"], x_traced),
    )
    mean, mean_t = predict_frame2(models["mean"], x), predict_frame2(models["mean"], x_traced)
    flows = {
        "kl": kl_tracing_flow(cat_t, cat, query, candidates=window),
        "rgb": rgb_tracing_flow(mean_t, mean, query, candidates=window),
        "rgb_categorical": rgb_tracing_flow(
            expected_intensity(cat_t), expected_intensity(cat), query, candidates=window
        ),
        "zero": torch.zeros(len(rows), 2),
        "oracle": _oracle_flow(f1, query),
    }
    truth = test.flow[rows, query[:, 0], query[:, 1]].double()
    epe = {m: (f.double() - truth).norm(dim=-1) for m, f in flows.items()}
    example = None
    if k == 0:
        example = {
            "frame1": f1[0],
            "frame2": f2[0],
            "query": query[0].tolist(),
            "truth": truth[0].tolist(),
            "kl_map": kl_tracing_map(cat_t[0], cat[0]),
            "rgb_map": rgb_difference_map(mean_t[0], mean[0]),
        }
    return {
        "epe": {m: float(e.mean()) for m, e in epe.items()},
        "exact": {m: float((e < 1e-9).double().mean()) for m, e in epe.items()},
        "per_query_kl_minus_rgb": (epe["kl"] - epe["rgb"]).tolist(),
        "n_queries": len(rows),
        "final_loss": final_loss,
        "example": example,
    }


def _plot_example(ctx: ReproContext, ex: Mapping[str, Any]) -> None:
    fig, axes = ctx.subplots(1, 4, figsize=(10, 2.8))
    r, c = ex["query"]
    tr, tc = r + ex["truth"][0], c + ex["truth"][1]
    panels = [
        (ex["frame1"], "frame 1 (query ×)"),
        (ex["frame2"], "frame 2 (true target ○)"),
        (ex["kl_map"], "KL(p′‖p) map"),
        (ex["rgb_map"], "RGB-difference map"),
    ]
    for ax, (img, title) in zip(axes, panels):
        ax.imshow(img.float().numpy(), cmap="gray" if "frame" in title else "magma")
        ax.plot([c], [r], "x", color="cyan")
        ax.plot([tc], [tr], "o", mfc="none", color="lime")
        ax.set_title(title, fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    ctx.savefig(fig, "example_maps")


@reproduction("kltracing", verdict=verdict)
def experiment(ctx: ReproContext) -> Outcome:
    per_seed: dict[str, list[float]] = {m: [] for m in METHODS}
    exact: dict[str, list[float]] = {m: [] for m in METHODS}
    per_query: list[float] = []
    runs = []
    for k in range(ctx.size.n_seeds):
        ctx.progress(f"seed {k + 1}/{ctx.size.n_seeds}", k / ctx.size.n_seeds)
        run = _run_seed(ctx, k)
        runs.append(run)
        for m in METHODS:
            per_seed[m].append(run["epe"][m])
            exact[m].append(run["exact"][m])
        per_query += run["per_query_kl_minus_rgb"]
    relative = [relative_reduction(kl, rgb) for kl, rgb in zip(per_seed["kl"], per_seed["rgb"])]
    metrics: dict[str, Any] = {
        "n_seeds": ctx.size.n_seeds,
        "steps": ctx.size.steps,
        "n_queries": [r["n_queries"] for r in runs],
        "margin": MARGIN,
        "gap_closure_min": GAP_CLOSURE_MIN,
        "epe": per_seed,
        "epe_mean": {m: float(np.mean(v)) for m, v in per_seed.items()},
        "exact_fraction_mean": {m: float(np.mean(v)) for m, v in exact.items()},
        "final_loss": {h: [r["final_loss"][h] for r in runs] for h in ("categorical", "mean")},
        "relative_reduction": mean_ci(relative),
        "rgb_minus_kl": paired_ci(per_seed["rgb"], per_seed["kl"]),
        "rgb_minus_kl_pooled_queries": mean_ci([-d for d in per_query]),
        "rgb_categorical_minus_kl": paired_ci(per_seed["rgb_categorical"], per_seed["kl"]),
    }
    metrics["checks"] = checks(metrics)
    plot_methods(
        ctx,
        "epe",
        {
            "KL (categorical)": per_seed["kl"],
            "RGB (mean model)": per_seed["rgb"],
            "RGB (categorical mean)": per_seed["rgb_categorical"],
            "zero flow": per_seed["zero"],
            "oracle": per_seed["oracle"],
        },
        ylabel="end-point error (px)",
        title=f"{SIZE}×{SIZE} blob videos, {ctx.size.n_seeds} seeds",
    )
    _plot_example(ctx, runs[0]["example"])
    mean = metrics["epe_mean"]
    summary = (
        f"EPE (px): KL-tracing {mean['kl']:.3f}, RGB-difference (mean model) {mean['rgb']:.3f}, "
        f"RGB on the categorical mean {mean['rgb_categorical']:.3f}, zero flow "
        f"{mean['zero']:.3f}, oracle {mean['oracle']:.3f}; relative EPE reduction of KL vs "
        f"RGB {format_ci(metrics['relative_reduction'])} (95 % CI, {ctx.size.n_seeds} seeds); "
        f"tracer carried: {metrics['checks']['tracer_carried']}. Task design (appearance-coded "
        "motion, independent-pixel textures) chosen after prototype runs; a one-seed prototype "
        "with other training settings had KL-tracing ahead (see the module docstring)"
    )
    return Outcome(metrics=metrics, summary=summary)

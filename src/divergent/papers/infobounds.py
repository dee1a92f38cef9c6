r"""Layer-wise information-theoretic generalisation bounds (He & Goldfeld 2024) on digits.

Set-up: scikit-learn's digits (1797 8×8 images, ships with scikit-learn), pixels / 16, a random
split into 897 training and 900 test images per seed. An MLP 64 → 64 → 48 → 32 → 24 → 16 → 10
(ReLU) is trained full-batch with Adam on cross-entropy until it fits the training set. Layer
k's representation :math:`T_k` (k = 0: the input, 1–5: the hidden ReLU outputs, 6: the logits)
is computed for 450 training images (a random subset) and for two disjoint halves A, B of the
test set (450 each; the quick mode uses 300 of each), so every comparison uses equal sample
sizes.

Per layer:

* **KL** :math:`\widehat{\mathrm{KL}}(P^\mathrm{train}_{T_k}\|P^\mathrm{test}_{T_k})`:
  :func:`divergent.knn_kl` (k = 1, bias-corrected) between the training subset and test half
  A, with its 95 % subsampling interval (``return_ci``); and the same estimator between the
  two test halves B and A (a null: the true value is 0) to show the estimator's floor.
* **W1**: the empirical 1-Wasserstein distance between the same two clouds,
  :func:`divergent.analysis.representation_gap.empirical_w1` (full-dimensional Euclidean cost,
  the core's log-domain Sinkhorn with ε = 0.003 × mean cost, all 450 points, no slicing), its
  null (B vs A), and the W1 term of the bound :math:`L_k \cdot W_1` with
  :math:`L_k = \sqrt2\prod_{j>k}\|W_j\|_2` an upper bound on the Lipschitz constant of the
  cross-entropy as a function of :math:`t_k` (√2 bounds the gradient of cross-entropy in the
  logits; :func:`~divergent.analysis.representation_gap.lipschitz_upper_bound`).

The KL of the paper's bound, :math:`\mathrm{KL}(P_{W,T_k,Y}\|P_W\otimes P_{T_k,Y})`, cannot
increase with k (data processing along X → T_1 → … for fixed weights); a two-sample estimate
from one trained network sees only the part of that gap that shows in the geometry of the
representations. Labels are left out (the marginal of :math:`T_k` obeys the same data
processing inequality). No dimension reduction is applied (none preserves the chain across
layers of different widths), so the kNN estimates carry dimension-dependent bias: the null
column shows its size.

Claim checked (thresholds fixed from the claim before running): "KL shrinks with depth" —
in every seed, no layer's KL interval lies entirely above an earlier layer's interval (no
significant increase with depth); "W1 funnel" — the seed-mean :math:`L_k W_1` is smallest at an
intermediate layer (not the input, not the logits). ``held`` = both.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.stats import spearmanr
from torch import nn

from divergent.analysis.representation_gap import empirical_w1, lipschitz_upper_bound
from divergent.repro import Outcome, ReproContext, reproduction
from divergent.repro.threads import single_thread
from divergent.samples.knn import knn_kl

WIDTHS = (64, 64, 48, 32, 24, 16, 10)
N_TRAIN = 897
N_SUB = 450
CI_LEVEL = 0.95


def _mlp(seed: int) -> nn.Sequential:
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for i in range(len(WIDTHS) - 1):
        layers.append(nn.Linear(WIDTHS[i], WIDTHS[i + 1]))
        if i < len(WIDTHS) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers).double()


def _representations(net: nn.Sequential, x: torch.Tensor) -> list[torch.Tensor]:
    reps = [x]
    h = x
    with torch.no_grad():
        for mod in net:
            h = mod(h)
            if isinstance(mod, nn.ReLU):
                reps.append(h)
        reps.append(h)  # logits
    return reps


def _linears(net: nn.Sequential) -> list[torch.Tensor]:
    return [m.weight for m in net if isinstance(m, nn.Linear)]


def _no_significant_increase(low: list[float], high: list[float]) -> bool:
    return not any(
        low[j] > high[i] for i in range(len(low)) for j in range(i + 1, len(low))
    )


@reproduction(
    "infobounds",
    title="Layer-wise KL and W1 between train and test representations (digits MLP)",
    paper=(
        "He & Goldfeld 2024, Information-Theoretic Generalization Bounds for Deep Neural "
        "Networks, arXiv 2404.03176"
    ),
    claim=(
        "In a trained MLP the KL between the train and test distributions of a layer's "
        "representation shrinks with depth (data processing), while the Lipschitz-weighted W1 "
        "term is smallest at an intermediate layer (a generalisation funnel)."
    ),
    tags=("generalization", "knn", "optimal-transport"),
)
def run(ctx: ReproContext) -> Outcome:
    with single_thread():
        return _run(ctx)


def _run(ctx: ReproContext) -> Outcome:
    from sklearn.datasets import load_digits

    x_np, y_np = load_digits(return_X_y=True)
    x_all = torch.from_numpy(x_np / 16.0)
    y_all = torch.from_numpy(y_np).long()
    seeds = [0] if ctx.quick else [0, 1, 2]
    steps = 300 if ctx.quick else 600
    n_sub_ci = 40 if ctx.quick else 200
    n_pts = 300 if ctx.quick else N_SUB  # points per cloud (quick: fewer, Sinkhorn is O(n²))
    n_layers = len(WIDTHS)
    per_seed: list[dict] = []
    for si, seed in enumerate(seeds):
        ctx.progress(f"seed {seed}: training", si / len(seeds))
        rng = ctx.numpy_rng(500 + seed)
        perm = torch.from_numpy(rng.permutation(len(y_np)))
        tr, te = perm[:N_TRAIN], perm[N_TRAIN:]
        net = _mlp(ctx.seed + seed)
        opt = torch.optim.Adam(net.parameters(), lr=3e-3)
        for _ in range(steps):
            loss = nn.functional.cross_entropy(net(x_all[tr]), y_all[tr])
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            out_tr, out_te = net(x_all[tr]), net(x_all[te])
            ce_tr = float(nn.functional.cross_entropy(out_tr, y_all[tr]))
            ce_te = float(nn.functional.cross_entropy(out_te, y_all[te]))
            acc_tr = float((out_tr.argmax(1) == y_all[tr]).double().mean())
            acc_te = float((out_te.argmax(1) == y_all[te]).double().mean())
        sub = tr[torch.from_numpy(rng.choice(N_TRAIN, n_pts, replace=False))]
        half = te[torch.from_numpy(rng.permutation(len(te)))]
        a_idx, b_idx = half[:n_pts], half[N_SUB : N_SUB + n_pts]
        reps_s = _representations(net, x_all[sub])
        reps_a = _representations(net, x_all[a_idx])
        reps_b = _representations(net, x_all[b_idx])
        weights = _linears(net)
        rows = []
        for k in range(n_layers):
            ctx.progress(f"seed {seed}: layer {k}", (si + (k + 1) / n_layers) / len(seeds))
            s_k, a_k, b_k = reps_s[k].numpy(), reps_a[k].numpy(), reps_b[k].numpy()
            est = knn_kl(s_k, a_k, return_ci=True, ci_level=CI_LEVEL, n_subsamples=n_sub_ci,
                         seed=seed)
            null_kl = knn_kl(b_k, a_k)
            w1 = empirical_w1(s_k, a_k)
            null_w1 = empirical_w1(b_k, a_k)
            lip = math.sqrt(2.0) * lipschitz_upper_bound(weights[k:])
            rows.append({
                "layer": k, "width": WIDTHS[k],
                "kl": est.value, "kl_low": float(est.low), "kl_high": float(est.high),
                "kl_null": null_kl,
                "w1": w1, "w1_null": null_w1, "lipschitz": lip, "w1_term": lip * w1,
            })
        per_seed.append({
            "seed": seed, "train_ce": ce_tr, "test_ce": ce_te, "train_acc": acc_tr,
            "test_acc": acc_te, "gap_ce": ce_te - ce_tr, "layers": rows,
            "kl_no_significant_increase": _no_significant_increase(
                [r["kl_low"] for r in rows], [r["kl_high"] for r in rows]),
            "kl_spearman_with_depth": float(spearmanr(range(n_layers),
                                                      [r["kl"] for r in rows])[0]),
        })

    def mean_over_seeds(key: str) -> list[float]:
        return [float(np.mean([s["layers"][k][key] for s in per_seed])) for k in range(n_layers)]

    kl_mean, kl_null = mean_over_seeds("kl"), mean_over_seeds("kl_null")
    w1_mean, w1_null = mean_over_seeds("w1"), mean_over_seeds("w1_null")
    term_mean = mean_over_seeds("w1_term")
    lip_mean = mean_over_seeds("lipschitz")
    kl_ok = all(s["kl_no_significant_increase"] for s in per_seed)
    ci_width = float(np.median([r["kl_high"] - r["kl_low"] for s in per_seed for r in s["layers"]]))
    argmin_term = int(np.argmin(term_mean))
    funnel = 0 < argmin_term < n_layers - 1
    held = bool(kl_ok and funnel)
    # where do significant increases happen (first seed), for the summary
    s0 = per_seed[0]["layers"]
    increases = [
        (i, j) for i in range(n_layers) for j in range(i + 1, n_layers)
        if s0[j]["kl_low"] > s0[i]["kl_high"]
    ]

    ctx.progress("plots", 0.97)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers = list(range(n_layers))
    labels = ["in"] + [f"h{k}" for k in range(1, n_layers - 1)] + ["logits"]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    ax = axes[0]
    for s in per_seed:
        rows = s["layers"]
        kv = np.array([r["kl"] for r in rows])
        ax.errorbar(np.array(layers) + 0.05 * s["seed"], kv,
                    yerr=[kv - [r["kl_low"] for r in rows], [r["kl_high"] for r in rows] - kv],
                    fmt="o-", ms=3, capsize=2, label=f"train vs test, seed {s['seed']}")
    ax.plot(layers, kl_null, "k--", label="test vs test (null, mean)")
    ax.axhline(0, color="gray", lw=0.6)
    ax.set_xticks(layers, labels)
    ax.set_ylabel("kNN KL estimate [nats]")
    ax.set_title("KL(train ‖ test) per layer, 95 % subsampling CI")
    ax.legend(fontsize=7)
    ax = axes[1]
    ax.plot(layers, w1_mean, "o-", label="W1 train vs test")
    ax.plot(layers, w1_null, "k--", label="W1 test vs test (null)")
    ax.set_yscale("log")
    ax.set_xticks(layers, labels)
    ax.set_ylabel("empirical W1")
    ax.set_title("1-Wasserstein per layer (seed mean)")
    ax.legend(fontsize=7)
    ax = axes[2]
    ax.plot(layers, term_mean, "o-", color="tab:purple", label="L_k · W1 (train vs test)")
    ax.plot(layers, [lip * w for lip, w in zip(lip_mean, w1_null)], "k--",
            label="L_k · W1 (null)")
    ax.plot([argmin_term], [term_mean[argmin_term]], "r*", ms=12, label="minimum")
    ax.set_yscale("log")
    ax.set_xticks(layers, labels)
    ax.set_ylabel("L_k · W1")
    ax.set_title("W1 term of the bound (seed mean)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    ctx.savefig(fig, "layerwise")

    metrics = {
        "widths": list(WIDTHS),
        "seeds": seeds,
        "per_seed": per_seed,
        "kl_mean": kl_mean, "kl_null_mean": kl_null,
        "w1_mean": w1_mean, "w1_null_mean": w1_null,
        "lipschitz_mean": lip_mean, "w1_term_mean": term_mean,
        "kl_no_significant_increase": kl_ok,
        "kl_ci_width_median": ci_width,
        "kl_spearman_with_depth_seed_mean": float(spearmanr(range(n_layers), kl_mean)[0]),
        "w1_below_null_layers": int(sum(w < w0 for w, w0 in zip(w1_mean, w1_null))),
        "w1_term_argmin_layer": argmin_term,
        "w1_funnel": funnel,
        "generalization_gap_ce_mean": float(np.mean([s["gap_ce"] for s in per_seed])),
        "test_acc_mean": float(np.mean([s["test_acc"] for s in per_seed])),
        "points_per_cloud": n_pts,
        "estimators": "KL: knn_kl (k=1, bias-corrected, 95% subsampling CI); W1: entropic OT "
                      f"transport cost, eps = 0.003 × mean Euclidean cost, {n_pts} vs {n_pts} "
                      "points",
    }
    summary = (
        "KL per layer (seed mean, in→logits): " + ", ".join(f"{v:.2f}" for v in kl_mean)
        + f" (null {min(kl_null):.2f}…{max(kl_null):.2f}, median CI width {ci_width:.2f}); "
        f"significant increases (seed {seeds[0]}): {len(increases)}; W1 train–test below the "
        f"test–test null at {metrics['w1_below_null_layers']}/{n_layers} layers; L·W1 minimal "
        f"at layer {labels[argmin_term]}; "
        f"test acc {metrics['test_acc_mean']:.3f}, "
        f"CE gap {metrics['generalization_gap_ce_mean']:.3f}"
        + ("" if held else
           f" — claim NOT held (KL no significant increase: {kl_ok}, W1 funnel: {funnel})")
    )
    return Outcome(held=held, metrics=metrics, summary=summary)

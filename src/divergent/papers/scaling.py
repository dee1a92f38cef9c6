r"""Scaling laws read information-theoretically (Henighan et al. 2020) on a known source.

Henighan et al. fit :math:`L(x) = L_\infty + (x_0/x)^\alpha` to the cross-entropy loss of
generative models and read :math:`L_\infty` as the entropy of the data and the reducible loss
:math:`(x_0/x)^\alpha` as :math:`\mathrm{KL}(\text{data}\|\text{model})`, because
cross-entropy = entropy + KL. Here the data come from a random order-k Markov chain over A
symbols (sparse-ish Dirichlet(0.3) transition rows), whose entropy rate and every model's
exact KL are computable, so the reading can be checked:

a. **Identity.** For each model Q, the exact per-token cross-entropy
   :math:`\sum_c \mu(c)\,H(P_c, Q_c)` (``divergent.soft_cross_entropy``, stationary weights μ)
   equals :math:`H + \sum_c \mu(c)\,\mathrm{KL}(P_c\|Q_c)` (``divergent.kl``), and matches the
   empirical mean negative log-likelihood on held-out sequences within 4 standard errors.
b. **Model size.** Next-token MLPs over the k-token window (one-hot → tanh hidden layer of
   width h → logits) are trained to convergence on the exact population loss (infinite data),
   for a range of widths; the fit of loss vs parameter count should give
   :math:`L_\infty \approx H` and :math:`(x_0/x)^\alpha \approx` the measured KL.
c. **Data size.** The Krichevsky–Trofimov (add-½) n-gram estimator of order k trained on D
   tokens, averaged over several samples; same checks against loss vs D.

Thresholds (fixed from the claim before running): identity error ≤ 1e-9; every empirical
cross-entropy within 4 SE of the exact one; for each sweep
:math:`|L_\infty - H| \le 3\%\,H` and the median over sizes of
:math:`|(x_0/x)^\alpha - \mathrm{KL}|/\mathrm{KL}` ≤ 0.2.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from divergent.core.functional import kl, soft_cross_entropy
from divergent.metrics.scaling_law import fit_scaling_law
from divergent.papers._threads import single_thread
from divergent.repro import Outcome, ReproContext, reproduction

IDENTITY_TOL = 1e-9
EMPIRICAL_SE = 4.0
L_INF_REL_TOL = 0.03
REDUCIBLE_MEDIAN_REL_TOL = 0.2


# --------------------------------------------------------------------------------------------
# the source: an order-k Markov chain over A symbols
# --------------------------------------------------------------------------------------------
class _MarkovSource:
    """Order-k chain; contexts are ids c = Σ_i x_i A^{k-1-i} of the last k symbols."""

    def __init__(self, alphabet: int, order: int, concentration: float, rng: np.random.Generator):
        self.a, self.k = alphabet, order
        self.c = alphabet**order
        self.table = rng.dirichlet(np.full(alphabet, concentration), size=self.c)  # (C, A)
        # floor tiny probabilities so log P is finite (the floor is part of the true source)
        self.table = np.maximum(self.table, 1e-12)
        self.table /= self.table.sum(1, keepdims=True)
        self.next_ctx = (np.arange(self.c)[:, None] * alphabet + np.arange(alphabet)) % self.c
        trans = np.zeros((self.c, self.c))
        np.add.at(trans, (np.repeat(np.arange(self.c), alphabet), self.next_ctx.ravel()),
                  self.table.ravel())
        # stationary distribution: μ (T − I) = 0, Σ μ = 1
        system = np.vstack([trans.T - np.eye(self.c), np.ones((1, self.c))])
        rhs = np.zeros(self.c + 1)
        rhs[-1] = 1.0
        mu = np.linalg.lstsq(system, rhs, rcond=None)[0]
        self.mu = np.clip(mu, 0.0, None) / np.clip(mu, 0.0, None).sum()
        self.cdf = np.cumsum(self.table, axis=1)
        self.log_table = torch.from_numpy(np.log(self.table))

    def one_hot_contexts(self) -> torch.Tensor:
        """(C, k·A) one-hot encoding of every context's k symbols."""
        ids = np.arange(self.c)
        digits = [(ids // self.a ** (self.k - 1 - i)) % self.a for i in range(self.k)]
        x = torch.zeros(self.c, self.k * self.a, dtype=torch.float64)
        for i, d in enumerate(digits):
            x[torch.arange(self.c), i * self.a + torch.from_numpy(d)] = 1.0
        return x

    def sample(
        self, chains: int, steps: int, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """(contexts, next symbols), each (chains, steps), chains started from stationarity."""
        ctx = rng.choice(self.c, size=chains, p=self.mu)
        ctxs = np.empty((chains, steps), dtype=np.int64)
        syms = np.empty((chains, steps), dtype=np.int64)
        for t in range(steps):
            u = rng.random(chains)
            x = np.minimum((u[:, None] > self.cdf[ctx]).sum(1), self.a - 1)
            ctxs[:, t], syms[:, t] = ctx, x
            ctx = self.next_ctx[ctx, x]
        return ctxs, syms

    def exact(self, model_logits: torch.Tensor) -> dict[str, float]:
        """Stationary-weighted cross-entropy, entropy rate and KL (core functions)."""
        mu = torch.from_numpy(self.mu)
        ce = soft_cross_entropy(self.log_table, model_logits, reduction="none") @ mu
        ent = soft_cross_entropy(self.log_table, self.log_table, reduction="none") @ mu
        div = kl(self.log_table, model_logits, reduction="none") @ mu
        return {"cross_entropy": float(ce), "entropy_rate": float(ent), "kl": float(div)}


def _empirical_nll(log_q: torch.Tensor, ctxs: np.ndarray, syms: np.ndarray) -> tuple[float, float]:
    """Mean held-out NLL and its standard error from independent chains' means."""
    lq = torch.log_softmax(log_q, -1).numpy()
    per_chain = -lq[ctxs, syms].mean(1)
    return float(per_chain.mean()), float(per_chain.std(ddof=1) / math.sqrt(len(per_chain)))


# --------------------------------------------------------------------------------------------
# models
# --------------------------------------------------------------------------------------------
class _PackedMLPs:
    """Several one-hidden-layer tanh MLPs (one per width) evaluated in one pass.

    Their hidden units are concatenated and each output layer is masked to its own units, so
    model j's logits depend only on its own weights; with a summed loss and a per-parameter
    optimiser (Adam), each model trains exactly as it would alone.
    """

    def __init__(self, n_in: int, n_out: int, widths: list[int], generator: torch.Generator):
        m = len(widths)
        self.widths = widths
        owner = torch.cat([torch.full((h,), j) for j, h in enumerate(widths)])
        self.owner = owner
        self.mask = torch.nn.functional.one_hot(owner, m).double()  # (units, models)
        units = owner.numel()
        fan2 = torch.tensor(widths, dtype=torch.float64)[owner].sqrt().unsqueeze(-1)

        def uniform(*shape: int) -> torch.Tensor:
            return torch.rand(*shape, generator=generator, dtype=torch.float64) * 2 - 1

        self.w1 = (uniform(n_in, units) / math.sqrt(n_in)).requires_grad_(True)
        self.b1 = (uniform(units) / math.sqrt(n_in)).requires_grad_(True)
        self.w2 = (uniform(units, n_out) / fan2).requires_grad_(True)
        self.b2 = torch.zeros(m, n_out, dtype=torch.float64, requires_grad=True)
        self.params = [n_in * h + h + h * n_out + n_out for h in widths]

    def parameters(self) -> list[torch.Tensor]:
        return [self.w1, self.b1, self.w2, self.b2]

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """(contexts, models, classes) logits for one-hot inputs ``x`` (contexts, n_in)."""
        hidden = torch.tanh(x @ self.w1 + self.b1)  # (C, units)
        return torch.einsum("cu,um,ua->cma", hidden, self.mask, self.w2) + self.b2


def _train_mlps(
    src: _MarkovSource, widths: list[int], steps: int, seed: int
) -> tuple[list[torch.Tensor], list[int], list[float], list[float]]:
    """Train one tanh MLP per width on the exact population cross-entropy, all at once.

    Returns each model's logits over all contexts, its parameter count, its final loss and
    its loss at 90 % of the steps (a convergence check).
    """
    x = src.one_hot_contexts()
    net = _PackedMLPs(x.shape[1], src.a, widths, torch.Generator().manual_seed(seed))
    mu = torch.from_numpy(src.mu)
    target = src.log_table.unsqueeze(1).expand(-1, len(widths), -1)  # (C, models, A)
    opt = torch.optim.Adam(net.parameters(), lr=0.03)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda t: 0.5 * (1.0 + math.cos(math.pi * min(t, steps) / steps))
    )
    at_90: list[float] = []
    for step in range(steps):
        opt.zero_grad()
        ce = soft_cross_entropy(target, net.logits(x), reduction="none")  # (C, models)
        per_model = mu @ ce
        if step == (9 * steps) // 10:
            at_90 = [float(v) for v in per_model.detach()]
        loss = per_model.sum()
        loss.backward()
        opt.step()
        sched.step()
    with torch.no_grad():
        out = net.logits(x)
        final = [float(v) for v in mu @ soft_cross_entropy(target, out, reduction="none")]
    return [out[:, j, :].clone() for j in range(len(widths))], net.params, final, at_90


def _kt_logits(src: _MarkovSource, ctxs: np.ndarray, syms: np.ndarray) -> torch.Tensor:
    """log of the add-½ (Krichevsky–Trofimov) estimate from observed transitions."""
    counts = np.bincount(ctxs.ravel() * src.a + syms.ravel(), minlength=src.c * src.a)
    counts = counts.reshape(src.c, src.a).astype(np.float64) + 0.5
    return torch.from_numpy(np.log(counts / counts.sum(1, keepdims=True)))


def _sweep_checks(
    xs: list[float], losses: list[float], kls: list[float], entropy: float
) -> dict[str, object]:
    fit = fit_scaling_law(xs, losses)
    predicted = fit.reducible(xs)
    rel = [abs(p - k) / k for p, k in zip(predicted.tolist(), kls)]
    median_rel = float(np.median(rel))
    l_inf_rel = abs(fit.l_inf - entropy) / entropy
    return {
        "fit": {"l_inf": fit.l_inf, "x0": fit.x0, "alpha": fit.alpha, "rmse": fit.rmse},
        "l_inf_minus_entropy": fit.l_inf - entropy,
        "l_inf_rel_error": l_inf_rel,
        "fitted_reducible": predicted.tolist(),
        "reducible_rel_error": rel,
        "reducible_median_rel_error": median_rel,
        "recovers_entropy": l_inf_rel <= L_INF_REL_TOL,
        "reducible_tracks_kl": median_rel <= REDUCIBLE_MEDIAN_REL_TOL,
    }


@reproduction(
    "scaling",
    title="Scaling laws: L∞ is the data entropy, the reducible loss is KL(data‖model)",
    paper=(
        "Henighan, Kaplan, Katz, et al. 2020, Scaling Laws for Autoregressive Generative "
        "Modeling, arXiv 2010.14701"
    ),
    claim=(
        "Cross-entropy = entropy + KL(data‖model), so fitting L(x) = L∞ + (x0/x)^α to loss vs "
        "model or data size recovers L∞ as the data's entropy and (x0/x)^α as the KL."
    ),
    tags=("theory", "scaling"),
)
def run(ctx: ReproContext) -> Outcome:
    with single_thread():
        return _run(ctx)


def _run(ctx: ReproContext) -> Outcome:
    rng = ctx.numpy_rng()
    if ctx.quick:
        alphabet, order = 8, 2
        widths = [1, 2, 3, 4, 6, 8, 12, 16, 24, 32]
        train_steps = 1500
        data_sizes = [2**e for e in range(9, 17)]
        data_seeds = 3
        held_out = (200, 250)
    else:
        alphabet, order = 12, 2
        widths = [1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64]
        train_steps = 6000
        data_sizes = [2**e for e in range(10, 21)]
        data_seeds = 6
        held_out = (400, 500)
    src = _MarkovSource(alphabet, order, 0.3, rng)
    entropy = src.exact(src.log_table)["entropy_rate"]
    test_ctx, test_sym = src.sample(*held_out, rng)

    # ---- b. model size -------------------------------------------------------------------
    ctx.progress("training MLPs on the population loss", 0.05)
    models, params, final_train, at_90 = _train_mlps(src, widths, train_steps, ctx.seed)
    size_rows = [src.exact(m) for m in models]

    # ---- c. data size ----------------------------------------------------------------------
    ctx.progress("add-½ n-gram estimators vs data size", 0.6)
    chains = 64
    per_size: list[list[dict[str, float]]] = [[] for _ in data_sizes]
    kt_models: list[torch.Tensor] = []
    for s in range(data_seeds):
        c_all, x_all = src.sample(chains, max(data_sizes) // chains, ctx.numpy_rng(100 + s))
        for i, d in enumerate(data_sizes):
            steps = d // chains
            lq = _kt_logits(src, c_all[:, :steps], x_all[:, :steps])
            per_size[i].append(src.exact(lq))
            if s == 0:
                kt_models.append(lq)
    data_loss = [float(np.mean([r["cross_entropy"] for r in rows])) for rows in per_size]
    data_kl = [float(np.mean([r["kl"] for r in rows])) for rows in per_size]

    # ---- a. identity and held-out estimates ------------------------------------------------
    ctx.progress("cross-entropy = entropy + KL, exact and held-out", 0.85)
    all_models = [*models, *kt_models]
    names = [f"mlp_h{h}" for h in widths] + [f"kt_D{d}" for d in data_sizes]
    identity_err, z_scores, empirical = [], [], {}
    for name, lq in zip(names, all_models):
        ex = src.exact(lq)
        identity_err.append(abs(ex["cross_entropy"] - (ex["entropy_rate"] + ex["kl"])))
        nll, se = _empirical_nll(lq, test_ctx, test_sym)
        z_scores.append((nll - ex["cross_entropy"]) / se)
        empirical[name] = {"exact_ce": ex["cross_entropy"], "heldout_ce": nll, "se": se}
    p_nll, p_se = _empirical_nll(src.log_table, test_ctx, test_sym)
    identity_ok = max(identity_err) <= IDENTITY_TOL
    empirical_ok = max(abs(z) for z in z_scores) <= EMPIRICAL_SE

    size_checks = _sweep_checks(
        [float(p) for p in params], [r["cross_entropy"] for r in size_rows],
        [r["kl"] for r in size_rows], entropy,
    )
    data_checks = _sweep_checks([float(d) for d in data_sizes], data_loss, data_kl, entropy)
    held = bool(
        identity_ok and empirical_ok
        and size_checks["recovers_entropy"] and size_checks["reducible_tracks_kl"]
        and data_checks["recovers_entropy"] and data_checks["reducible_tracks_kl"]
    )

    # ---- plots --------------------------------------------------------------------------------
    ctx.progress("plots", 0.95)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for ax, xs, ys, chk, label in (
        (axes[0], params, [r["cross_entropy"] for r in size_rows], size_checks, "parameters"),
        (axes[1], data_sizes, data_loss, data_checks, "training tokens D"),
    ):
        grid = np.geomspace(min(xs), max(xs), 200)
        f = chk["fit"]
        ax.plot(xs, ys, "o", label="exact loss of each model")
        ax.plot(grid, f["l_inf"] + (f["x0"] / grid) ** f["alpha"], "-",
                label=f"fit: L∞={f['l_inf']:.4f}, α={f['alpha']:.2f}")
        ax.axhline(entropy, color="k", ls="--", lw=1, label=f"entropy rate H={entropy:.4f}")
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel(label)
        ax.set_ylabel("cross-entropy [nats/token]")
        ax.legend(fontsize=8)
    axes[0].set_title("MLPs on the population loss")
    axes[1].set_title("add-½ n-gram vs data size")
    ax = axes[2]
    size_kl = [r["kl"] for r in size_rows]
    ax.loglog(size_kl, size_checks["fitted_reducible"], "o", label="model size")
    ax.loglog(data_kl, data_checks["fitted_reducible"], "s", label="data size")
    lims = [min(data_kl + size_kl), max(data_kl + size_kl)]
    ax.loglog(lims, lims, "k--", lw=1, label="y = x")
    ax.set_xlabel("measured KL(data‖model)")
    ax.set_ylabel("fitted reducible loss (x0/x)^α")
    ax.set_title("Reducible loss vs KL")
    ax.legend(fontsize=8)
    ctx.savefig(fig, "fits")

    metrics = {
        "source": {"alphabet": alphabet, "order": order, "contexts": src.c,
                   "entropy_rate": entropy, "heldout_nll_of_true_source": p_nll,
                   "heldout_se": p_se, "heldout_tokens": held_out[0] * held_out[1]},
        "identity_max_abs_error": max(identity_err),
        "identity_ok": identity_ok,
        "heldout_max_abs_z": max(abs(z) for z in z_scores),
        "heldout_ok": empirical_ok,
        "heldout": empirical,
        "model_size": {
            "widths": widths, "params": params,
            "loss": [r["cross_entropy"] for r in size_rows],
            "kl": [r["kl"] for r in size_rows],
            "train_steps": train_steps,
            "loss_drop_last_10pct_of_training": [a - b for a, b in zip(at_90, final_train)],
            **size_checks,
        },
        "data_size": {"tokens": data_sizes, "seeds": data_seeds, "loss": data_loss,
                      "kl": data_kl, **data_checks},
        "thresholds": {"identity": IDENTITY_TOL, "heldout_se": EMPIRICAL_SE,
                       "l_inf_rel": L_INF_REL_TOL,
                       "reducible_median_rel": REDUCIBLE_MEDIAN_REL_TOL},
    }
    summary = (
        f"H = {entropy:.4f}; CE − (H + KL) ≤ {max(identity_err):.1e}, held-out |z| ≤ "
        f"{metrics['heldout_max_abs_z']:.1f}; model size: L∞ = {size_checks['fit']['l_inf']:.4f} "
        f"({size_checks['l_inf_rel_error']:.1%} off), reducible vs KL median error "
        f"{size_checks['reducible_median_rel_error']:.0%}; data size: L∞ = "
        f"{data_checks['fit']['l_inf']:.4f} ({data_checks['l_inf_rel_error']:.1%} off), "
        f"median error {data_checks['reducible_median_rel_error']:.0%}"
        + ("" if held else " — claim NOT held by these thresholds")
    )
    return Outcome(held=held, metrics=metrics, summary=summary)

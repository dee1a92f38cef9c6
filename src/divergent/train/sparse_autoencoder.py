r"""Small sparse autoencoders on toy superposition data: the TopK SAE and the TopK vSAE.

* :func:`superposition_data` — n sparse ground-truth features (active with probability p,
  magnitude U[0, 1]) embedded in d < n dimensions along random unit directions
  (Elhage et al. 2022's toy model of superposition, linear read-in);
* :class:`TopKSAE` — :math:`f = \mathrm{ReLU}(\mathrm{TopK}_k(W_{\text{enc}}(x - b_{\text{dec}})
  + b_{\text{enc}}))`, :math:`\hat x = f W_{\text{dec}} + b_{\text{dec}}` with unit-norm decoder
  rows (Gao et al. 2024), encoder initialised to the decoder's transpose;
* :class:`VariationalTopKSAE` — the same, with the pre-activation read as the posterior mean μ,
  a log-variance head (learned σ) or a constant (fixed σ), and in training mode
  :math:`f = \mathrm{ReLU}(\mathrm{TopK}_k(\mu + \sigma\odot\varepsilon))` (sample, then
  select; :mod:`divergent.objectives.sparse_autoencoder`); in eval mode :math:`z = \mu`;
* :func:`train_sparse_autoencoder` — mini-batch Adam on the reconstruction loss (TopK SAE) or
  the vSAE loss, renormalising the decoder rows after every step (both models alike);
* :func:`evaluate_sparse_autoencoder` — reconstruction (MSE and fraction of variance
  unexplained), dead latents, recovery of the ground-truth directions and decoder overlap.

Everything is deterministic given the generators on CPU.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from divergent._validation import check_float_tensor, check_int, check_positive_scalar
from divergent.objectives.sparse_autoencoder import (
    dead_latent_fraction,
    max_cosine_similarity,
    mean_pairwise_cosine,
    reparameterize,
    sae_reconstruction_loss,
    topk_activation,
    variational_sae_loss,
)

__all__ = [
    "SAEEvaluation",
    "SAEOutput",
    "SuperpositionData",
    "TopKSAE",
    "VariationalTopKSAE",
    "evaluate_sparse_autoencoder",
    "superposition_data",
    "train_sparse_autoencoder",
]


@dataclass(frozen=True)
class SuperpositionData:
    """Toy superposition data.

    Attributes:
        x: observations ``(n_samples, dim)``, ``x = a @ directions``.
        activations: ground-truth feature activations ``(n_samples, n_features)``.
        directions: unit ground-truth directions as rows ``(n_features, dim)``.
    """

    x: Tensor
    activations: Tensor
    directions: Tensor


def superposition_data(
    n_samples: int,
    *,
    n_features: int = 64,
    dim: int = 32,
    p_active: float = 0.05,
    directions: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> SuperpositionData:
    r"""Sparse features in superposition: :math:`x = \sum_i a_i g_i`, with
    :math:`a_i = b_i u_i`, :math:`b_i\sim\mathrm{Bernoulli}(p)`, :math:`u_i\sim U[0, 1]` and
    random unit directions :math:`g_i\in\mathbb R^d`.

    Args:
        n_samples: rows.
        n_features: ground-truth features n.
        dim: embedding dimension d.
        p_active: activation probability p in (0, 1].
        directions: reuse these unit directions ``(n_features, dim)`` (e.g. a test set drawn
            with the training set's features); drawn when None.
        generator: the random generator.

    Returns:
        :class:`SuperpositionData`.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> d = superposition_data(5, n_features=8, dim=4, generator=g)
        >>> tuple(d.x.shape), round(float(d.directions.norm(dim=1).min()), 4)
        ((5, 4), 1.0)
    """
    n_samples = check_int(n_samples, "n_samples", 1)
    n_features = check_int(n_features, "n_features", 1)
    dim = check_int(dim, "dim", 1)
    p = check_positive_scalar(p_active, "p_active")
    if p > 1:
        raise ValueError(f"`p_active` must be a probability in (0, 1], got {p_active!r}")
    if directions is None:
        g = torch.randn(n_features, dim, generator=generator)
        directions = g / g.norm(dim=1, keepdim=True)
    elif directions.shape != (n_features, dim):
        raise ValueError(
            f"`directions` must have shape ({n_features}, {dim}), got {tuple(directions.shape)}"
        )
    on = torch.rand(n_samples, n_features, generator=generator) < p
    size = torch.rand(n_samples, n_features, generator=generator)
    a = on * size
    return SuperpositionData(a @ directions, a, directions)


@dataclass(frozen=True)
class SAEOutput:
    """One forward pass.

    Attributes:
        x_hat: reconstructions ``(n, d)``.
        codes: latent activations after TopK ``(n, m)``.
        mu: posterior means (vSAE) or the pre-activations (SAE) ``(n, m)``.
        log_var: log σ² ``(n, m)`` (vSAE, learned σ), a float (fixed σ) or None (SAE).
    """

    x_hat: Tensor
    codes: Tensor
    mu: Tensor
    log_var: Tensor | float | None


class TopKSAE(nn.Module):
    """TopK sparse autoencoder (decoder directions are the rows of ``decoder``, unit norm).

    Args:
        dim: input dimension d.
        n_latents: dictionary size m.
        k: latents kept per input.
        generator: initialisation RNG.
    """

    def __init__(
        self, dim: int, n_latents: int, k: int, *, generator: torch.Generator | None = None
    ) -> None:
        super().__init__()
        dim = check_int(dim, "dim", 1)
        n_latents = check_int(n_latents, "n_latents", 1)
        self.k = check_int(k, "k", 1, maximum=n_latents)
        w = torch.randn(n_latents, dim, generator=generator)
        w = w / w.norm(dim=1, keepdim=True)
        self.decoder = nn.Parameter(w.clone())
        self.encoder = nn.Parameter(w.clone())  # tied initialisation (Gao et al. 2024)
        self.b_enc = nn.Parameter(torch.zeros(n_latents))
        self.b_dec = nn.Parameter(torch.zeros(dim))

    def pre_activations(self, x: Tensor) -> Tensor:
        return (x - self.b_dec) @ self.encoder.T + self.b_enc

    def decode(self, codes: Tensor) -> Tensor:
        return codes @ self.decoder + self.b_dec

    def forward(self, x: Tensor, *, generator: torch.Generator | None = None) -> SAEOutput:
        pre = self.pre_activations(x)
        codes = topk_activation(pre, self.k)
        return SAEOutput(self.decode(codes), codes, pre, None)

    @torch.no_grad()
    def normalize_decoder(self) -> None:
        self.decoder.div_(self.decoder.norm(dim=1, keepdim=True).clamp_min(1e-12))


class VariationalTopKSAE(TopKSAE):
    r"""TopK vSAE: the pre-activation is the posterior mean μ; σ learned (a linear head on
    :math:`x - b_{\text{dec}}`, initialised to the constant ``log_var_init``) or fixed
    (``learn_sigma=False``: :math:`\log\sigma^2 =` ``log_var_init`` everywhere). Training mode
    samples :math:`z = \mu + \sigma\odot\varepsilon` and applies TopK to z; eval mode uses μ.

    Args:
        dim, n_latents, k, generator: as :class:`TopKSAE` (same initialisation of the shared
            weights for the same generator state).
        learn_sigma: learned (True) or fixed (False) σ.
        log_var_init: initial (or fixed) log σ².
    """

    def __init__(
        self,
        dim: int,
        n_latents: int,
        k: int,
        *,
        learn_sigma: bool = True,
        log_var_init: float = 0.0,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__(dim, n_latents, k, generator=generator)
        self.learn_sigma = bool(learn_sigma)
        self.log_var_init = float(log_var_init)
        if self.learn_sigma:
            self.var_weight = nn.Parameter(torch.zeros(n_latents, dim))
            self.var_bias = nn.Parameter(torch.full((n_latents,), self.log_var_init))

    def log_var(self, x: Tensor) -> Tensor | float:
        if not self.learn_sigma:
            return self.log_var_init
        return (x - self.b_dec) @ self.var_weight.T + self.var_bias

    def forward(self, x: Tensor, *, generator: torch.Generator | None = None) -> SAEOutput:
        mu = self.pre_activations(x)
        log_var = self.log_var(x)
        z = reparameterize(mu, log_var, generator=generator) if self.training else mu
        codes = topk_activation(z, self.k)
        return SAEOutput(self.decode(codes), codes, mu, log_var)


def train_sparse_autoencoder(
    model: TopKSAE,
    x: Tensor,
    *,
    steps: int,
    batch_size: int = 256,
    lr: float = 1e-3,
    kl_weight: float = 1.0,
    generator: torch.Generator | None = None,
    noise_generator: torch.Generator | None = None,
) -> list[float]:
    """Mini-batch Adam on a :class:`TopKSAE` (reconstruction loss) or a
    :class:`VariationalTopKSAE` (reconstruction + ``kl_weight`` · KL to N(0, I)); the decoder
    rows are renormalised to unit norm after each step and ``b_dec`` starts at the data mean.

    Args:
        model: the autoencoder (left in eval mode afterwards).
        x: training inputs ``(n, d)``.
        steps: optimisation steps.
        batch_size: rows per step (sampled with replacement).
        lr: Adam learning rate.
        kl_weight: λ_KL (vSAE only).
        generator: batch sampling RNG.
        noise_generator: the vSAE's ε RNG (``generator`` when None); a separate one keeps the
            batch sequence of a vSAE equal to that of a SAE trained with the same ``generator``.

    Returns:
        The loss of each step.
    """
    x = check_float_tensor(x, "x", dims=2)
    steps = check_int(steps, "steps", 1)
    batch_size = check_int(batch_size, "batch_size", 1)
    lr = check_positive_scalar(lr, "lr")
    variational = isinstance(model, VariationalTopKSAE)
    noise = generator if noise_generator is None else noise_generator
    with torch.no_grad():
        model.b_dec.copy_(x.mean(0))
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    losses = []
    for _ in range(steps):
        rows = torch.randint(x.shape[0], (batch_size,), generator=generator)
        xb = x[rows]
        out = model(xb, generator=noise)
        if variational:
            loss = variational_sae_loss(xb, out.x_hat, out.mu, out.log_var, kl_weight=kl_weight)
        else:
            loss = sae_reconstruction_loss(xb, out.x_hat)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        model.normalize_decoder()
        losses.append(float(loss.detach()))
    model.eval()
    return losses


@dataclass(frozen=True)
class SAEEvaluation:
    """Quality of a trained SAE on held-out data (posterior mean for the vSAE).

    Attributes:
        mse: mean squared reconstruction error per row, :math:`E\\lVert x - \\hat x\\rVert^2`.
        fvu: fraction of variance unexplained, mse / :math:`E\\lVert x - \\bar x\\rVert^2`.
        dead_fraction: latents never active on the data.
        max_cosine: mean over ground-truth features of the best decoder cosine (MMCS).
        pairwise_cosine: mean |cos| between the live decoder directions (nan if < 2 live).
        l0: mean number of non-zero codes per row.
        fvu_sampled: the FVU of the stochastic encoder (a vSAE in training mode, one sample of
            ε per row); equal to ``fvu`` for a deterministic SAE.
    """

    mse: float
    fvu: float
    dead_fraction: float
    max_cosine: float
    pairwise_cosine: float
    l0: float
    fvu_sampled: float


@torch.no_grad()
def evaluate_sparse_autoencoder(
    model: TopKSAE, x: Tensor, ground_truth: Tensor, *, generator: torch.Generator | None = None
) -> SAEEvaluation:
    """Reconstruction, dead latents and feature metrics of ``model`` (in eval mode) on ``x``.

    Args:
        model: a trained autoencoder.
        x: held-out inputs ``(n, d)``.
        ground_truth: ground-truth directions as rows ``(n_features, d)``.
        generator: the ε RNG of the sampled reconstruction (vSAE only).

    Returns:
        :class:`SAEEvaluation`.
    """
    x = check_float_tensor(x, "x", dims=2)
    was_training = model.training
    model.eval()
    out = model(x)
    mse = float(sae_reconstruction_loss(x, out.x_hat))
    var = float((x - x.mean(0)).square().sum(1).mean())
    mse_sampled = mse
    if isinstance(model, VariationalTopKSAE):
        model.train()
        mse_sampled = float(sae_reconstruction_loss(x, model(x, generator=generator).x_hat))
    model.train(was_training)
    live = (out.codes.abs() > 0).any(0)
    w = model.decoder.detach()
    pairwise = mean_pairwise_cosine(w, latents=live) if int(live.sum()) >= 2 else float("nan")
    return SAEEvaluation(
        mse=mse,
        fvu=mse / var,
        dead_fraction=dead_latent_fraction(out.codes),
        max_cosine=max_cosine_similarity(w, ground_truth),
        pairwise_cosine=pairwise,
        l0=float((out.codes != 0).double().sum(1).mean()),
        fvu_sampled=mse_sampled / var,
    )

r"""Machine unlearning on ensembles of softmax-regression models, vectorised over seeds.

The KLoM evaluation of Georgiev et al. (ICLR 2025; :mod:`divergent.metrics.unlearning`) needs
*distributions over training randomness*: N models trained on the full data with independent
seeds, N oracles retrained without the forget set, and each unlearning method applied to every
full model. This module holds those pieces for a small convex model so that hundreds of models
train in seconds on a CPU: a multinomial logistic regression (softmax regression)
``z = x W + b`` per seed, all seeds stored in one :class:`LinearEnsemble` and trained together
with batched matrix products (analytic gradients, no autograd).

Training (:func:`train_linear_ensemble`) is mini-batch SGD on

.. math::

    L_S(\theta) = \frac{1}{|S|}\sum_{j\in S}\ell_j(\theta) + \frac{\lambda}{2}\|\theta\|^2,
    \qquad \ell_j = -\log\mathrm{softmax}(x_j W + b)_{y_j},

with a random initialisation and a random order of the examples per seed, stopped after a fixed
number of epochs (the seeds' spread is that of the SGD iterate, as for a network trained with
different seeds). The unlearning methods, each applied to every model of an ensemble:

* :func:`gradient_ascent` — ascent steps on the mean cross-entropy of the forget set;
* :func:`fine_tune` — more SGD epochs on the retain set (the training loop continued);
* :func:`match_outputs` — gradient descent on
  :math:`\frac{1}{2m}\sum_i\|z(x_i) - t_i\|^2` towards target logits :math:`t_i` on a set of
  points: **oracle matching** (OM) when the targets are an oracle's logits, **datamodel
  matching** (DMM) when they are *predicted* retrained logits;
* :func:`influence_retrained` — the cheap data-attribution model used by DMM here: the change
  of the minimiser when the forget set F is removed (R = S \ F), from Newton steps on
  :math:`\nabla L_R(\hat\theta) = \nabla L_S(\bar\theta)` at the ensemble's mean
  parameters :math:`\bar\theta`; the first step is the influence-function prediction

  .. math::

      \Delta = -H_R^{-1}\big(\nabla L_R(\bar\theta) - \nabla L_S(\bar\theta)\big),

  with :math:`H_R` the Hessian of :math:`L_R`. The shift :math:`\Delta` is added to every
  model, so each keeps its own seed's deviation (the datamodel predicts the *expected*
  effect of deleting F, as a linear datamodel does); ``shared=False`` computes it at each
  model instead. :func:`predict_retrained_logits` evaluates the prediction on points.

Scaled down from the paper: the paper's DMM uses datamodels / TRAK attributions estimated
from many retrainings of deep networks on CIFAR-10 / Living-17 / QNLI; here the model is convex
and the attribution is its closed-form (influence-function) prediction, which is what the
paper's theory section analyses.

References:
    Georgiev, Rinberg, Park, Garg, Ilyas, Madry & Neel, "Attribute-to-Delete: Machine
    Unlearning via Datamodel Matching", ICLR 2025 (arXiv 2410.23232); Koh & Liang,
    "Understanding black-box predictions via influence functions", ICML 2017.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from divergent._validation import (
    check_bool,
    check_float_tensor,
    check_int,
    check_positive_scalar,
)

__all__ = [
    "LinearEnsemble",
    "fine_tune",
    "gradient_ascent",
    "influence_retrained",
    "match_outputs",
    "predict_retrained_logits",
    "train_linear_ensemble",
]


@dataclass(frozen=True)
class LinearEnsemble:
    """Softmax-regression models, one per seed: ``logits = x @ weight[s] + bias[s]``.

    Attributes:
        weight: ``(n_models, n_features, n_classes)``.
        bias: ``(n_models, n_classes)``.
    """

    weight: Tensor
    bias: Tensor

    def __post_init__(self) -> None:
        check_float_tensor(self.weight, "weight", dims=3)
        check_float_tensor(self.bias, "bias", dims=2)
        s, _, c = self.weight.shape
        if self.bias.shape != (s, c):
            raise ValueError(
                f"`bias` must have shape (n_models, n_classes) = {(s, c)}, got "
                f"{tuple(self.bias.shape)}"
            )

    @property
    def n_models(self) -> int:
        return int(self.weight.shape[0])

    @property
    def n_features(self) -> int:
        return int(self.weight.shape[1])

    @property
    def n_classes(self) -> int:
        return int(self.weight.shape[2])

    def logits(self, x: Tensor) -> Tensor:
        """Logits of every model on ``x``: ``(n, d)`` (shared) or ``(n_models, n, d)``
        (one set per model) → ``(n_models, n, n_classes)``."""
        x = _check_x(x, "x", self.n_features)
        if x.dim() == 2:
            return torch.einsum("nd,sdc->snc", x, self.weight) + self.bias[:, None]
        if x.shape[0] != self.n_models:
            raise ValueError(
                f"`x` of shape {tuple(x.shape)} has {x.shape[0]} sets of points but the "
                f"ensemble has {self.n_models} models"
            )
        return torch.bmm(x, self.weight) + self.bias[:, None]

    def parameters_flat(self) -> Tensor:
        """``(n_models, (n_features + 1) · n_classes)``: each model's [W; b] flattened row-major
        (feature-major, the bias as the last feature)."""
        return torch.cat([self.weight, self.bias[:, None]], 1).reshape(self.n_models, -1)

    @classmethod
    def from_flat(cls, flat: Tensor, n_features: int, n_classes: int) -> LinearEnsemble:
        """Inverse of :meth:`parameters_flat`."""
        full = flat.reshape(flat.shape[0], n_features + 1, n_classes)
        return cls(full[:, :n_features].contiguous(), full[:, n_features].contiguous())


def _check_x(x: Tensor, name: str, n_features: int | None = None) -> Tensor:
    x = check_float_tensor(x, name)
    if x.dim() not in (2, 3):
        raise ValueError(f"`{name}` must be (n, d) or (n_models, n, d), got {tuple(x.shape)}")
    if n_features is not None and x.shape[-1] != n_features:
        raise ValueError(f"`{name}` has {x.shape[-1]} features but the models take {n_features}")
    return x


def _check_labels(y: Tensor, name: str, n: int, n_classes: int) -> Tensor:
    if not isinstance(y, Tensor) or y.dtype.is_floating_point or y.dtype == torch.bool:
        raise ValueError(f"`{name}` must be an integer tensor of class indices")
    if y.shape != (n,):
        raise ValueError(f"`{name}` must have shape ({n},) (one label per row), got {y.shape}")
    if n and (int(y.min()) < 0 or int(y.max()) >= n_classes):
        lo, hi = int(y.min()), int(y.max())
        raise ValueError(f"`{name}` must lie in [0, {n_classes}), got values in [{lo}, {hi}]")
    return y.long()


def _ce_grad(model: LinearEnsemble, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """Gradient of the mean cross-entropy over the rows of ``x`` (shared ``(n, d)`` or per
    model ``(S, n, d)``; labels ``(n,)`` or ``(S, n)``) for every model."""
    probs = torch.softmax(model.logits(x), -1)
    onehot = torch.nn.functional.one_hot(y, model.n_classes).to(probs.dtype)
    resid = (probs - onehot) / x.shape[-2]
    if x.dim() == 2:
        grad_w = torch.einsum("nd,snc->sdc", x, resid)
    else:
        grad_w = torch.bmm(x.transpose(1, 2), resid)
    return grad_w, resid.sum(1)


def train_linear_ensemble(
    x: Tensor,
    y: Tensor,
    n_models: int,
    *,
    n_classes: int,
    epochs: int,
    batch_size: int = 64,
    lr: float = 0.5,
    weight_decay: float = 1e-3,
    init_scale: float = 0.1,
    generator: torch.Generator | None = None,
    init: LinearEnsemble | None = None,
    rows: Tensor | None = None,
) -> LinearEnsemble:
    r"""Train ``n_models`` softmax-regression models with independent seeds, all at once.

    Mini-batch SGD on :math:`\frac1{|S|}\sum_j \ell_j + \frac\lambda2\|\theta\|^2` (mean
    cross-entropy plus L2 on weights and biases), ``epochs`` passes over ``x``, each model
    with its own random order of the rows (and its own Gaussian initialisation of scale
    ``init_scale`` unless ``init`` is given: then training continues from it).

    Args:
        x: ``(n, d)`` features shared by every model.
        y: ``(n,)`` labels in ``[0, n_classes)``.
        n_models: number of seeds (ignored in favour of ``init.n_models`` when ``init`` is
            given; must then agree).
        n_classes: number of classes.
        epochs: passes over the data (>= 0).
        batch_size: rows per SGD step (the last, smaller batch of an epoch is kept).
        lr: SGD step size.
        weight_decay: λ ≥ 0.
        init_scale: standard deviation of the initial weights (biases start at 0).
        generator: the random source of initialisation and orders.
        init: an ensemble to continue from (not modified).
        rows: ``(n_models, m)`` row indices of ``x`` each model trains on (an epoch is a pass
            over that model's rows); all ``n`` rows for every model when None.

    Returns:
        A new :class:`LinearEnsemble` of float32 (or ``x``'s dtype) parameters.

    Example:
        >>> import torch
        >>> g = torch.Generator().manual_seed(0)
        >>> x = torch.randn(60, 3, generator=g)
        >>> y = (x[:, 0] > 0).long()
        >>> m = train_linear_ensemble(x, y, 4, n_classes=2, epochs=20, generator=g)
        >>> acc = (m.logits(x).argmax(-1) == y).float().mean(1)
        >>> bool((acc > 0.9).all()), m.n_models
        (True, 4)
    """
    x = _check_x(x, "x")
    if x.dim() != 2:
        raise ValueError(f"`x` must be (n, d), got {tuple(x.shape)}")
    n, d = x.shape
    n_classes = check_int(n_classes, "n_classes", 2, "number of classes")
    y = _check_labels(y, "y", n, n_classes)
    n_models = check_int(n_models, "n_models", 1, "number of seeds")
    epochs = check_int(epochs, "epochs", 0)
    batch_size = check_int(batch_size, "batch_size", 1)
    lr = check_positive_scalar(lr, "lr")
    weight_decay = check_positive_scalar(weight_decay, "weight_decay", allow_zero=True)
    init_scale = check_positive_scalar(init_scale, "init_scale", allow_zero=True)
    if init is not None:
        if (init.n_features, init.n_classes) != (d, n_classes):
            raise ValueError(
                f"`init` has {init.n_features} features and {init.n_classes} classes, the data "
                f"{d} and {n_classes}"
            )
        weight, bias = init.weight.clone().to(x.dtype), init.bias.clone().to(x.dtype)
        n_models = init.n_models
    else:
        weight = torch.randn(n_models, d, n_classes, generator=generator, dtype=x.dtype)
        weight = weight * init_scale
        bias = torch.zeros(n_models, n_classes, dtype=x.dtype)
    if rows is None:
        rows = torch.arange(n).expand(n_models, n)
    elif not isinstance(rows, Tensor) or rows.dim() != 2 or rows.shape[0] != n_models:
        raise ValueError(f"`rows` must be an index tensor of shape (n_models={n_models}, m)")
    elif rows.numel() and (int(rows.min()) < 0 or int(rows.max()) >= n):
        raise ValueError(f"`rows` must index the {n} rows of `x`")
    n_rows = rows.shape[1]
    decay = 1.0 - lr * weight_decay  # type: ignore[operator]
    for _ in range(epochs):
        # one order per seed: a random permutation of that seed's rows
        order = rows.gather(1, torch.rand(n_models, n_rows, generator=generator).argsort(-1))
        for start in range(0, n_rows, batch_size):
            idx = order[:, start : start + batch_size]
            xb, yb = x[idx], y[idx]  # (S, B, d), (S, B)
            # mean cross-entropy gradient, written out (this loop is the cost of the module)
            resid = torch.softmax(torch.baddbmm(bias[:, None], xb, weight), -1)
            resid.scatter_add_(-1, yb[..., None], torch.full_like(resid[..., :1], -1.0))
            resid /= idx.shape[1]
            weight = weight * decay - lr * torch.bmm(xb.transpose(1, 2), resid)
            bias = bias * decay - lr * resid.sum(1)
    return LinearEnsemble(weight, bias)


def fine_tune(
    model: LinearEnsemble,
    x_retain: Tensor,
    y_retain: Tensor,
    *,
    epochs: int,
    batch_size: int = 64,
    lr: float = 0.5,
    weight_decay: float = 1e-3,
    generator: torch.Generator | None = None,
) -> LinearEnsemble:
    """Fine-tuning on the retain set: ``epochs`` more SGD epochs of the training objective on
    ``x_retain`` from each model (see :func:`train_linear_ensemble`)."""
    return train_linear_ensemble(
        x_retain,
        y_retain,
        model.n_models,
        n_classes=model.n_classes,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        weight_decay=weight_decay,
        generator=generator,
        init=model,
    )


def gradient_ascent(
    model: LinearEnsemble, x_forget: Tensor, y_forget: Tensor, *, steps: int, lr: float
) -> LinearEnsemble:
    r"""Gradient ascent on the forget set: ``steps`` full-batch steps
    :math:`\theta \leftarrow \theta + \eta\,\nabla_\theta \frac{1}{|F|}\sum_{j\in F}\ell_j`.

    Args:
        model: the trained ensemble (not modified).
        x_forget, y_forget: ``(m, d)`` features and ``(m,)`` labels of the forget set.
        steps: number of ascent steps (>= 0).
        lr: step size η > 0.

    Returns:
        The ensemble after ascent.
    """
    x_forget = _check_x(x_forget, "x_forget", model.n_features)
    y_forget = _check_labels(y_forget, "y_forget", x_forget.shape[-2], model.n_classes)
    steps = check_int(steps, "steps", 0)
    lr = check_positive_scalar(lr, "lr")
    weight, bias = model.weight, model.bias
    for _ in range(steps):
        grad_w, grad_b = _ce_grad(LinearEnsemble(weight, bias), x_forget, y_forget)
        weight, bias = weight + lr * grad_w, bias + lr * grad_b
    return LinearEnsemble(weight, bias)


def match_outputs(
    model: LinearEnsemble,
    x: Tensor,
    targets: Tensor,
    *,
    steps: int,
    lr: float | None = None,
) -> LinearEnsemble:
    r"""Fine-tune each model to match target logits: gradient descent on
    :math:`\frac{1}{2m}\sum_{i=1}^m \|z_\theta(x_i) - t_i\|^2`.

    With the targets an oracle's logits this is oracle matching (OM); with predicted retrained
    logits (:func:`predict_retrained_logits`) it is datamodel matching (DMM).

    Args:
        model: the trained ensemble (not modified).
        x: ``(m, d)`` the points to match on (e.g. forget points and a sample of retain
            points).
        targets: ``(n_models, m, n_classes)``, one set of target logits per model.
        steps: number of full-batch gradient steps (>= 0).
        lr: step size; default ``1 / L`` with ``L`` the largest eigenvalue of the (quadratic)
            objective's Hessian, ``λ_max([x, 1]ᵀ[x, 1] / m)``: a safe step that decreases it
            monotonically (gradient descent on a quadratic does so for any step below
            ``2 / L``; ``1 / L`` also never overshoots the minimum along any eigendirection).

    Returns:
        The fine-tuned ensemble.
    """
    x = _check_x(x, "x", model.n_features)
    if x.dim() != 2:
        raise ValueError(f"`x` must be (m, d), got {tuple(x.shape)}")
    targets = check_float_tensor(targets, "targets", dims=3)
    want = (model.n_models, x.shape[0], model.n_classes)
    if tuple(targets.shape) != want:
        raise ValueError(f"`targets` must have shape {want}, got {tuple(targets.shape)}")
    steps = check_int(steps, "steps", 0)
    m = x.shape[0]
    if lr is None:
        x1 = torch.cat([x, torch.ones(m, 1, dtype=x.dtype)], 1).double()
        lr = float(1.0 / torch.linalg.eigvalsh(x1.T @ x1 / m)[-1])
    lr = check_positive_scalar(lr, "lr")
    weight, bias = model.weight, model.bias
    for _ in range(steps):
        resid = (LinearEnsemble(weight, bias).logits(x) - targets) / m
        weight = weight - lr * torch.einsum("nd,snc->sdc", x, resid)
        bias = bias - lr * resid.sum(1)
    return LinearEnsemble(weight, bias)


def _retain_hessian(mean_flat: Tensor, x1: Tensor, n_classes: int, weight_decay: float) -> Tensor:
    """Hessian of the mean cross-entropy over the rows of ``x1`` (bias column appended) plus
    λI, at the flat parameters ``mean_flat``, in the layout of
    :meth:`LinearEnsemble.parameters_flat`."""
    n, d1 = x1.shape
    w = mean_flat.reshape(d1, n_classes)
    probs = torch.softmax(x1 @ w, -1)  # (n, C)
    # Σ_j (diag p_j − p_j p_jᵀ) ⊗ x_j x_jᵀ, feature-major: index (a, k) ↦ a·C + k
    diag_part = torch.einsum("jk,ja,jb->akb", probs, x1, x1)  # (d1, C, d1)
    hess = torch.zeros(d1, n_classes, d1, n_classes, dtype=x1.dtype)
    idx = torch.arange(n_classes)
    hess[:, idx, :, idx] = diag_part.permute(1, 0, 2)
    outer = (x1[:, :, None] * probs[:, None, :]).reshape(n, d1 * n_classes)
    hess = hess.reshape(d1 * n_classes, d1 * n_classes) - outer.T @ outer
    hess = hess / n + weight_decay * torch.eye(d1 * n_classes, dtype=x1.dtype)
    return hess


def _mean_ce_grad_flat(model: LinearEnsemble, x: Tensor, y: Tensor) -> Tensor:
    grad_w, grad_b = _ce_grad(model, x, y)
    return torch.cat([grad_w, grad_b[:, None]], 1).reshape(model.n_models, -1)


def influence_retrained(
    model: LinearEnsemble,
    x_train: Tensor,
    y_train: Tensor,
    forget: Tensor,
    *,
    weight_decay: float = 1e-3,
    newton_steps: int = 1,
    shared: bool = True,
) -> LinearEnsemble:
    r"""Predicted parameters of each model retrained without the forget set (influence).

    The predicted retrained parameters :math:`\hat\theta` solve
    :math:`\nabla L_R(\hat\theta) = \nabla L_S(\theta)` (the retain objective's gradient
    at the prediction equals the full objective's at the trained point, zero at an exact
    minimiser) by ``newton_steps`` Newton steps from :math:`\theta`; the first is

    .. math::

        \hat\theta = \theta - H_R^{-1}\big(\nabla L_R(\theta) - \nabla L_S(\theta)\big),

    the influence-function prediction of retraining. :math:`L_S` is the training objective on
    all of ``x_train`` and :math:`L_R` the same on the retain rows (``~forget``), both with
    the ``weight_decay`` L2 term of :func:`train_linear_ensemble`; :math:`H_R` is the Hessian
    of :math:`L_R` at the current iterate. Solved in float64.

    With ``shared=True`` (default) the shift :math:`\hat\theta - \theta` is computed once,
    at the ensemble's mean parameters, and added to every model: a datamodel's prediction
    of the *expected* effect of deleting F, each model keeping its own seed's deviation.
    With ``shared=False`` it is computed at each model's own parameters (noisier: the
    gradients at an SGD iterate are amplified by :math:`H_R^{-1}` along directions of low
    curvature).

    Args:
        model: the ensemble trained on ``x_train`` (not modified).
        x_train, y_train: ``(n, d)``, ``(n,)``: the full training set.
        forget: bool ``(n,)``, True for the rows to delete (at least one, not all).
        weight_decay: the λ the models were trained with.
        newton_steps: Newton steps (>= 1; 1 = the classic influence function).
        shared: one shift for all models (at their mean) or one per model.

    Returns:
        The predicted retrained ensemble (``model``'s dtype).

    Example:
        >>> import torch
        >>> g = torch.Generator().manual_seed(0)
        >>> x = torch.randn(80, 2, generator=g, dtype=torch.float64)
        >>> y = (x[:, 0] + 0.5 * torch.randn(80, generator=g, dtype=torch.float64) > 0).long()
        >>> forget = torch.zeros(80, dtype=torch.bool)
        >>> forget[:8] = True
        >>> full = train_linear_ensemble(x, y, 1, n_classes=2, epochs=300, batch_size=80,
        ...                              lr=2.0, weight_decay=0.01, generator=g)
        >>> oracle = train_linear_ensemble(x[8:], y[8:], 1, n_classes=2, epochs=300,
        ...                                batch_size=72, lr=2.0, weight_decay=0.01, init=full)
        >>> change = (oracle.weight - full.weight).norm()
        >>> for k in (1, 3):
        ...     pred = influence_retrained(full, x, y, forget, weight_decay=0.01, newton_steps=k)
        ...     print(k, round(float((oracle.weight - pred.weight).norm() / change), 4))
        1 0.1238
        3 0.002
    """
    x_train = _check_x(x_train, "x_train", model.n_features)
    if x_train.dim() != 2:
        raise ValueError(f"`x_train` must be (n, d), got {tuple(x_train.shape)}")
    n = x_train.shape[0]
    y_train = _check_labels(y_train, "y_train", n, model.n_classes)
    if not isinstance(forget, Tensor) or forget.dtype != torch.bool or forget.shape != (n,):
        raise ValueError(f"`forget` must be a bool tensor of shape ({n},)")
    n_forget = int(forget.sum())
    if not 0 < n_forget < n:
        raise ValueError(f"`forget` must select at least one row and not all {n}, got {n_forget}")
    weight_decay = check_positive_scalar(weight_decay, "weight_decay", allow_zero=True)
    newton_steps = check_int(newton_steps, "newton_steps", 1, "Newton steps")
    shared = check_bool(shared, "shared")
    x64, retain = x_train.double(), ~forget
    x_retain, y_retain = x64[retain], y_train[retain]
    x1_retain = torch.cat([x_retain, torch.ones(x_retain.shape[0], 1, dtype=torch.float64)], 1)
    start = LinearEnsemble(model.weight.double(), model.bias.double()).parameters_flat()
    if shared:
        start = start.mean(0, keepdim=True)
    d, c = model.n_features, model.n_classes
    full_grad = _mean_ce_grad_flat(LinearEnsemble.from_flat(start, d, c), x64, y_train)
    flat = start
    for _ in range(newton_steps):
        current = LinearEnsemble.from_flat(flat, d, c)
        if flat.shape[0] == 1:  # one shared shift (or a single model)
            hess = _retain_hessian(flat[0], x1_retain, c, weight_decay)  # type: ignore[arg-type]
        else:
            hess = torch.stack([_retain_hessian(f, x1_retain, c, weight_decay) for f in flat])  # type: ignore[arg-type]
        retain_grad = _mean_ce_grad_flat(current, x_retain, y_retain)
        # ∇L_R(θ̂) − ∇L_S(θ): the L2 terms differ by λ(θ̂ − θ) (they cancel at the first step)
        residual = retain_grad + weight_decay * (flat - start) - full_grad  # type: ignore[operator]
        flat = flat - torch.linalg.solve(hess, residual.unsqueeze(-1)).squeeze(-1)
    shift = LinearEnsemble.from_flat(flat - start, d, c)
    dtype = model.weight.dtype
    return LinearEnsemble(
        (model.weight.double() + shift.weight).to(dtype),
        (model.bias.double() + shift.bias).to(dtype),
    )


def predict_retrained_logits(
    model: LinearEnsemble,
    x_train: Tensor,
    y_train: Tensor,
    forget: Tensor,
    x: Tensor,
    *,
    weight_decay: float = 1e-3,
    newton_steps: int = 1,
    shared: bool = True,
) -> Tensor:
    """The datamodel's prediction of each model's logits on ``x`` after retraining without the
    forget set: :func:`influence_retrained`'s ensemble evaluated on ``x`` →
    ``(n_models, m, n_classes)``."""
    retrained = influence_retrained(
        model,
        x_train,
        y_train,
        forget,
        weight_decay=weight_decay,
        newton_steps=newton_steps,
        shared=shared,
    )
    return retrained.logits(x)

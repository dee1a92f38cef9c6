r"""LELP: pseudo-subclasses from linear projections of teacher embeddings (few-class KD).

Loo, Iliopoulos, Hu & Vee (arXiv 2409.20449, ICLR 2025 submission) observe that a teacher's
class probabilities carry little information when there are few classes (a binary task: one
number per example) and distil its *embedding* instead, as soft targets over pseudo-subclasses:

1. project the teacher's final-layer embeddings :math:`h` onto the null space of its output
   weights :math:`W \in \mathbb R^{C\times d}` (removing what the logits already carry),
   :math:`\tilde h = (I - W^+W)\,h`;
2. per class c, take the top principal directions :math:`V_c` of the projected embeddings
   of that class and rotate them by a random orthogonal :math:`R_c` (spreading the variance
   evenly over the coordinates); the coordinates are scaled by :math:`\sigma_c`, the root mean
   of the kept eigenvalues, so a temperature means the same for every class;
3. split class c into S pseudo-subclasses by a tempered softmax over those coordinates; the
   student has C·S outputs and is trained by cross-entropy to

   .. math::

       t_{c,s}(x) = p(c\mid x)\;\mathrm{softmax}\big(u_c(x)/T\big)_s,

   where :math:`p(c\mid x)` is the teacher's class probability (or the one-hot label); its
   class probability is the sum over its subclasses (:func:`subclass_to_class_logits`).

The method is reconstructed from the abstract and reviews (no official code was found):
the scaling of the coordinates and the way the class probability multiplies the subclass
split are this implementation's choices, and so is the number of directions. A softmax over S
numbers ignores their common shift, so S coordinates carry only S − 1 degrees of freedom and
S raw principal coordinates would silently lose one (random) direction of the PCA subspace.
Here the top **S − 1** directions are kept and mapped isometrically onto the sum-zero
subspace of :math:`\mathbb R^S` by an orthonormal (Helmert-type) basis :math:`H`:
:math:`u_c(x) = H^\top R_c^\top V_c^\top(\tilde h(x) - \mu_c)/\sigma_c`. With S = 2 the split
is a tempered sign of the first principal coordinate. The paper trains with no ground-truth
term (α = 0).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from divergent._validation import as_integer, check_float_tensor, check_int, check_positive_scalar
from divergent.functional import soft_cross_entropy

__all__ = [
    "LELPProjection",
    "lelp_loss",
    "lelp_targets",
    "subclass_to_class_logits",
]


def _check_labels(labels: Tensor, n: int, n_classes: int) -> Tensor:
    if not isinstance(labels, Tensor) or labels.dtype != torch.int64 or labels.shape != (n,):
        raise ValueError(f"`labels` must be an int64 tensor of shape ({n},), got {labels!r}")
    if n and (int(labels.min()) < 0 or int(labels.max()) >= n_classes):
        raise ValueError(
            f"`labels` must lie in [0, {n_classes}) (the rows of `head_weight`), got min "
            f"{int(labels.min())} and max {int(labels.max())}"
        )
    return labels


@dataclass(frozen=True)
class LELPProjection:
    """The fitted projection: null-space projector, class means and rotated PCA bases.

    Attributes:
        null_projector: ``(d, d)``, :math:`I - W^+W`.
        means: ``(C, d)`` class means of the projected embeddings.
        bases: ``(C, d, S)``: the rotated S − 1 principal directions divided by the class
            scale σ_c, mapped onto the sum-zero subspace of the S subclass logits.
    """

    null_projector: Tensor
    means: Tensor
    bases: Tensor

    @property
    def n_classes(self) -> int:
        return int(self.bases.shape[0])

    @property
    def n_subclasses(self) -> int:
        return int(self.bases.shape[2])

    @classmethod
    def fit(
        cls,
        embeddings: Tensor,
        labels: Tensor,
        head_weight: Tensor,
        n_subclasses: int,
        *,
        generator: torch.Generator | None = None,
    ) -> LELPProjection:
        r"""Fit the projection on the teacher's training embeddings.

        Args:
            embeddings: ``(n, d)`` teacher embeddings (inputs of its last linear layer).
            labels: ``(n,)`` int64 labels (the classes the PCA is done within).
            head_weight: ``(C, d)`` the teacher's output weights.
            n_subclasses: S ≥ 2 pseudo-subclasses per class (from S − 1 principal
                directions); each class needs more than S examples and S − 1 must not exceed
                the null space's dimension d − rank(W).
            generator: RNG of the random rotations.

        Example:
            >>> g = torch.Generator().manual_seed(0)
            >>> h = torch.randn(40, 6, generator=g); y = torch.arange(40) % 2
            >>> proj = LELPProjection.fit(h, y, torch.randn(2, 6, generator=g), 3, generator=g)
            >>> tuple(proj.coordinates(h).shape)
            (40, 2, 3)
        """
        h = check_float_tensor(embeddings, "embeddings", dims=2).detach()
        w = check_float_tensor(head_weight, "head_weight", dims=2).detach()
        n, d = h.shape
        if w.shape[1] != d:
            raise ValueError(
                f"`head_weight` must be (C, {d}) to match the embeddings' dimension, got "
                f"{tuple(w.shape)}"
            )
        n_classes = int(w.shape[0])
        _check_labels(labels, n, n_classes)
        check_int(n_subclasses, "n_subclasses", 2)
        dtype = torch.float64  # PCA in float64; the result is cast back to the input dtype
        h64, w64 = h.to(dtype), w.to(dtype)
        null = torch.eye(d, dtype=dtype) - torch.linalg.pinv(w64) @ w64
        null_dim = d - int(torch.linalg.matrix_rank(w64))
        n_dirs = n_subclasses - 1
        if n_dirs > null_dim:
            raise ValueError(
                f"`n_subclasses` − 1 ({n_dirs}) exceeds the dimension of the null space of "
                f"`head_weight` ({null_dim} = {d} − rank)"
            )
        # orthonormal basis of the sum-zero subspace of R^S, (S − 1, S)
        centring = torch.eye(n_subclasses, dtype=dtype) - 1.0 / n_subclasses
        helmert = torch.linalg.qr(centring[:, :n_dirs]).Q.T
        projected = h64 @ null  # null is symmetric
        means, bases = [], []
        for c in range(n_classes):
            members = projected[labels == c]
            if members.shape[0] <= n_subclasses:
                raise ValueError(
                    f"class {c} has {members.shape[0]} examples; the PCA needs more than "
                    f"`n_subclasses` = {n_subclasses}"
                )
            mean = members.mean(0)
            _, sing, vh = torch.linalg.svd(members - mean, full_matrices=False)
            top = vh[:n_dirs].T  # (d, S − 1) principal directions
            eig = sing[:n_dirs] ** 2 / (members.shape[0] - 1)
            scale = eig.mean().sqrt().clamp_min(torch.finfo(dtype).tiny)
            gauss = torch.randn(n_dirs, n_dirs, generator=generator, dtype=dtype)
            q, r = torch.linalg.qr(gauss)
            rotation = q * torch.sign(torch.diagonal(r))  # Haar-distributed orthogonal
            means.append(mean)
            bases.append(top @ rotation @ helmert / scale)  # (d, S)
        out = h.dtype if h.dtype in (torch.float32, torch.float64) else torch.float32
        return cls(
            null_projector=null.to(out),
            means=torch.stack(means).to(out),
            bases=torch.stack(bases).to(out),
        )

    def coordinates(self, embeddings: Tensor) -> Tensor:
        """``(n, C, S)`` coordinates :math:`u_c(x)` of each embedding in each class's basis."""
        h = check_float_tensor(embeddings, "embeddings", dims=2)
        if h.shape[1] != self.null_projector.shape[0]:
            raise ValueError(
                f"`embeddings` must have {self.null_projector.shape[0]} features, got {h.shape[1]}"
            )
        projected = h.to(self.bases.dtype) @ self.null_projector
        centred = projected.unsqueeze(1) - self.means  # (n, C, d)
        return torch.einsum("ncd,cds->ncs", centred, self.bases)


def lelp_targets(coordinates: Tensor, class_probs: Tensor, *, temperature: float = 1.0) -> Tensor:
    r"""Soft targets over the C·S pseudo-subclasses, :math:`p(c|x)\,\mathrm{softmax}(u_c/T)_s`.

    Args:
        coordinates: ``(n, C, S)`` from :meth:`LELPProjection.coordinates`.
        class_probs: ``(n, C)`` class probabilities (the teacher's, or one-hot labels); each
            row sums to 1.
        temperature: T > 0 of the subclass split (small T: hard pseudo-subclasses).

    Returns:
        ``(n, C·S)`` targets, class-major (output ``c·S + s``), each row summing to 1.

    Example:
        >>> u = torch.tensor([[[0.0, 0.0], [1.0, -1.0]]])
        >>> lelp_targets(u, torch.tensor([[0.5, 0.5]]))
        tensor([[0.2500, 0.2500, 0.4404, 0.0596]])
    """
    u = check_float_tensor(coordinates, "coordinates", dims=3)
    p = check_float_tensor(class_probs, "class_probs", dims=2)
    if p.shape != u.shape[:2]:
        raise ValueError(
            f"`class_probs` must be (n, C) = {tuple(u.shape[:2])} to match `coordinates`, got "
            f"{tuple(p.shape)}"
        )
    if bool((p < 0).any()) or not torch.allclose(p.sum(-1), torch.ones_like(p[:, 0]), atol=1e-4):
        raise ValueError("`class_probs` rows must be non-negative and sum to 1")
    t = check_positive_scalar(temperature, "temperature")
    split = torch.softmax(u / t, dim=-1)
    return (p.unsqueeze(-1) * split).reshape(u.shape[0], -1)


def subclass_to_class_logits(logits: Tensor, n_subclasses: int) -> Tensor:
    r"""Class log-scores :math:`\log\sum_s e^{z_{c,s}}` of a C·S-output student (class-major).

    Their softmax is the class probability: the sum of the subclass probabilities.

    Example:
        >>> subclass_to_class_logits(torch.zeros(1, 4), 2)
        tensor([[0.6931, 0.6931]])
    """
    z = check_float_tensor(logits, "logits", min_dim=1)
    given, n_subclasses = n_subclasses, as_integer(n_subclasses)
    if n_subclasses is None or n_subclasses < 1:
        raise ValueError(f"`n_subclasses` must be a positive integer, got {given!r}")
    if z.shape[-1] % n_subclasses:
        raise ValueError(
            f"the last dimension of `logits` ({z.shape[-1]}) must be a multiple of "
            f"`n_subclasses` ({n_subclasses})"
        )
    return torch.logsumexp(z.reshape(*z.shape[:-1], -1, n_subclasses), dim=-1)


def lelp_loss(
    student_logits: Tensor,
    targets: Tensor,
    *,
    mask: Tensor | None = None,
    reduction: str = "mean",
) -> Tensor:
    r"""Cross-entropy of the student's C·S outputs to the LELP targets, :math:`-\sum t\log q`.

    Args:
        student_logits: ``(..., C·S)`` logits.
        targets: same shape, from :func:`lelp_targets` (rows sum to 1).
        mask, reduction: as in :func:`divergent.divergence`.

    Example:
        >>> lelp_loss(torch.zeros(1, 4), torch.tensor([[0.25, 0.25, 0.5, 0.0]]))
        tensor(1.3863)
    """
    z = check_float_tensor(student_logits, "student_logits", min_dim=1)
    t = check_float_tensor(targets, "targets", min_dim=1)
    if t.shape != z.shape:
        raise ValueError(
            f"`targets` must have the shape of `student_logits` {tuple(z.shape)}, got "
            f"{tuple(t.shape)}"
        )
    if bool((t < 0).any()):
        raise ValueError("`targets` must be probabilities (>= 0)")
    # P = targets as log-probabilities (log 0 = −inf, contributing 0), Q = the student
    return soft_cross_entropy(
        t.log(), z.log_softmax(-1), inputs="log_probs", mask=mask, reduction=reduction
    )

r"""A next-symbol source with a known entropy and structure at a spread of scales.

Scaling-law experiments (Henighan et al. 2020) read the irreducible loss of a fit
:math:`L(x) = L_\infty + (x_0/x)^\alpha` as the entropy of the data and the reducible loss as
:math:`\mathrm{KL}(\text{data}\|\text{model})`. Checking that reading needs a source whose
entropy and whose KL to any model are exactly computable, and whose structure is spread over
many scales, so that a model of limited size captures it only partly, and captures more of it
smoothly as the size grows (rather than representing it exactly beyond some size).

:class:`PowerLawSource` is such a source. Contexts :math:`c \in \{0,\dots,C-1\}` occur with
Zipf probabilities :math:`\mu(c) \propto (c+1)^{-\beta}` (:math:`\beta = 0`: uniform); the next
symbol :math:`x \in \{0,\dots,A-1\}` follows :math:`P(x|c) = \mathrm{softmax}(T_c)_x` with
teacher logits that are a sum of rank-one components with power-law weights,

.. math:: T = s \sum_{k=1}^{K} k^{-a}\, u_k v_k^\top, \qquad K = \min(C, A-1),

:math:`u_k \in \mathbb{R}^C` orthonormal, :math:`v_k \in \mathbb{R}^A` orthonormal and orthogonal
to the all-ones vector (every row of T sums to zero, so no component is a per-context constant
that the softmax would ignore), and :math:`s` sets the root-mean-square logit. The singular
values of T are exactly :math:`s\,k^{-a}`: a model whose logits have rank :math:`r < K` cannot
represent the source. Everything is enumerable (:math:`C \times A` entries), so the conditional
entropy :math:`H(X|C) = \sum_c \mu(c) H(P_c)` and every model's cross-entropy and KL are exact
(computed with :func:`divergent.soft_cross_entropy` and :func:`divergent.kl`).

References:
    Henighan, Kaplan, Katz, et al. (2020), "Scaling laws for autoregressive generative
    modeling", arXiv 2010.14701.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from divergent._validation import check_int, check_positive_scalar
from divergent.functional import kl, soft_cross_entropy

__all__ = ["PowerLawSource", "krichevsky_trofimov_logits"]


class PowerLawSource:
    r"""Contexts with Zipf frequencies; next-symbol logits with a power-law singular spectrum.

    .. math:: \mu(c) \propto (c+1)^{-\beta}, \quad
              P(\cdot|c) = \mathrm{softmax}\Big(s \sum_{k=1}^{K} k^{-a} u_k(c)\, v_k\Big)

    Args:
        contexts: number of contexts C ≥ 1.
        symbols: alphabet size A ≥ 2.
        spectrum_exponent: a ≥ 0, the decay of the component weights :math:`k^{-a}`.
        logit_rms: root-mean-square of the teacher logits over all C × A entries (≥ 0).
        context_exponent: β ≥ 0 of the Zipf context probabilities (0: uniform contexts).
        rank: keep only the first ``rank`` components (default all K = min(C, A − 1));
            a small rank puts the source *inside* the class of rank-``rank`` models.
        seed: seed of the random orthonormal factors.

    Attributes:
        logits: (C, A) float64 teacher logits T (rows sum to 0).
        log_probs: (C, A) float64 :math:`\log P(x|c)`.
        context_probs: (C,) float64 :math:`\mu(c)`.
        singular_values: (rank,) float64 numpy array :math:`s\,k^{-a}`.

    Example:
        >>> src = PowerLawSource(8, 4, spectrum_exponent=1.0, logit_rms=1.0, seed=0)
        >>> src.logits.shape, round(src.entropy(), 4), src.evaluate(src.logits)["kl"]
        (torch.Size([8, 4]), 1.0563, 0.0)
        >>> [round(float(v), 4) for v in src.singular_values]  # s · k^{-1}, K = min(8, 4 - 1)
        [4.8487, 2.4244, 1.6162]
        >>> uniform = torch.zeros(8, 4, dtype=torch.float64)
        >>> abs(src.evaluate(uniform)["cross_entropy"] - math.log(4)) < 1e-12
        True
    """

    def __init__(
        self,
        contexts: int,
        symbols: int,
        *,
        spectrum_exponent: float = 1.0,
        logit_rms: float = 1.0,
        context_exponent: float = 0.0,
        rank: int | None = None,
        seed: int = 0,
    ) -> None:
        check_int(contexts, "contexts", 1)
        check_int(symbols, "symbols", 2, "alphabet size")
        for name, value in (
            ("spectrum_exponent", spectrum_exponent),
            ("logit_rms", logit_rms),
            ("context_exponent", context_exponent),
        ):
            check_positive_scalar(value, name, allow_zero=True)
        full = min(contexts, symbols - 1)
        rank = full if rank is None else rank
        check_int(rank, "rank", 1, "components; at most min(contexts, symbols - 1)", maximum=full)
        self.contexts, self.symbols, self.rank = contexts, symbols, rank
        self.spectrum_exponent = float(spectrum_exponent)
        self.logit_rms = float(logit_rms)
        self.context_exponent = float(context_exponent)

        rng = np.random.default_rng(seed)
        u = np.linalg.qr(rng.standard_normal((contexts, rank)))[0]
        z = rng.standard_normal((symbols, rank))
        z -= z.mean(0)  # columns ⊥ 1 (before and, by linearity, after the QR)
        v = np.linalg.qr(z)[0]
        weights = np.arange(1, rank + 1, dtype=np.float64) ** (-self.spectrum_exponent)
        # ‖T‖_F² = s² Σ w_k² (orthonormal factors), so RMS(T) = logit_rms fixes s
        scale = self.logit_rms * math.sqrt(contexts * symbols / float(np.sum(weights**2)))
        self.singular_values = scale * weights
        table = (u * self.singular_values) @ v.T
        self.logits = torch.from_numpy(table - table.mean(1, keepdims=True))  # exact 0 rows
        self.log_probs = torch.log_softmax(self.logits, -1)
        mu = np.arange(1, contexts + 1, dtype=np.float64) ** (-self.context_exponent)
        self.context_probs = torch.from_numpy(mu / mu.sum())
        self._probs = self.log_probs.exp().numpy()
        self._cdf = np.cumsum(self._probs, axis=1)
        self._entropy: float | None = None

    # ------------------------------------------------------------------------------------
    # exact quantities
    # ------------------------------------------------------------------------------------
    def _model(self, model_logits: Tensor) -> Tensor:
        if not isinstance(model_logits, Tensor) or model_logits.shape != self.logits.shape:
            shape = getattr(model_logits, "shape", type(model_logits).__name__)
            raise ValueError(
                f"`model_logits` must be a tensor of shape {tuple(self.logits.shape)} "
                f"(contexts, symbols), got {shape}"
            )
        return model_logits.to(torch.float64)

    def entropy(self) -> float:
        r"""The conditional entropy :math:`H(X|C) = -\sum_c \mu(c) \sum_x P(x|c)\log P(x|c)`."""
        if self._entropy is None:  # computed once (the source is immutable)
            rows = soft_cross_entropy(self.logits, self.logits, reduction="none")
            self._entropy = float(self.context_probs @ rows)
        return self._entropy

    def evaluate(self, model_logits: Tensor) -> dict[str, float]:
        r"""Exact per-symbol cross-entropy, entropy and KL of a model :math:`Q(x|c)`.

        .. math:: \sum_c \mu(c) H(P_c, Q_c) = H(X|C) + \sum_c \mu(c)\,\mathrm{KL}(P_c\|Q_c)

        Args:
            model_logits: (C, A) logits of the model's next-symbol distributions.

        Returns:
            ``{"cross_entropy", "entropy", "kl"}`` in nats per symbol, each computed on its
            own (so the identity above is a check, not an assumption).
        """
        q = self._model(model_logits)
        mu = self.context_probs
        return {
            "cross_entropy": float(mu @ soft_cross_entropy(self.logits, q, reduction="none")),
            "entropy": self.entropy(),
            "kl": float(mu @ kl(self.logits, q, reduction="none")),
        }

    # ------------------------------------------------------------------------------------
    # samples
    # ------------------------------------------------------------------------------------
    def sample(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """``n`` independent (context, symbol) pairs as two int64 arrays of length n."""
        check_int(n, "n", 0, "number of pairs")
        ctx = rng.choice(self.contexts, size=n, p=self.context_probs.numpy())
        u = rng.random(n)
        sym = np.minimum((u[:, None] > self._cdf[ctx]).sum(1), self.symbols - 1)
        return ctx.astype(np.int64), sym.astype(np.int64)

    def sample_counts(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """(C, A) counts of ``n`` independent (context, symbol) pairs (one multinomial draw)."""
        check_int(n, "n", 0, "number of pairs")
        per_context = rng.multinomial(n, self.context_probs.numpy())
        return rng.multinomial(per_context, self._probs).astype(np.int64)

    def heldout_nll(
        self, model_logits: Tensor, contexts: np.ndarray, symbols: np.ndarray
    ) -> tuple[float, float]:
        """Mean negative log-likelihood of sampled pairs under a model, and its standard error."""
        lq = torch.log_softmax(self._model(model_logits), -1).numpy()
        nll = -lq[contexts, symbols]
        return float(nll.mean()), float(nll.std(ddof=1) / math.sqrt(nll.size))


def krichevsky_trofimov_logits(counts: np.ndarray) -> Tensor:
    r"""Log of the add-½ (Krichevsky–Trofimov) estimate per context from (C, A) counts.

    .. math:: \hat P(x|c) = \frac{n_{cx} + \tfrac12}{n_c + \tfrac A2}

    >>> krichevsky_trofimov_logits(np.array([[0, 2]])).exp()
    tensor([[0.1667, 0.8333]], dtype=torch.float64)
    """
    arr = np.asarray(counts)
    if arr.ndim != 2 or (arr < 0).any() or not np.isfinite(arr).all():
        raise ValueError(f"`counts` must be a 2-D array of finite counts ≥ 0, got {arr!r}")
    smoothed = arr.astype(np.float64) + 0.5
    return torch.from_numpy(np.log(smoothed / smoothed.sum(1, keepdims=True)))

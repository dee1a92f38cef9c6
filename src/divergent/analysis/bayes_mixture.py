r"""Exact Bayes mixtures over binary Markov chains of orders 0…D, their regret and its bound.

The hypothesis class: binary Markov chains of order :math:`d \in \{0,\dots,D\}`; a chain of
order d has one parameter :math:`\theta_c = P(x_t = 1 \mid c)` per context
:math:`c = (x_{t-1},\dots,x_{t-d})` (:math:`2^d` parameters). Contexts are coded as integers
with the most recent symbol in the lowest bit, :math:`c = \sum_{j=1}^{d} x_{t-j}2^{j-1}`, so the
order-:math:`d'` context of an order-d context is :math:`c \bmod 2^{d'}`. Every probability is
conditional on a *past* :math:`x_{1-L},\dots,x_0` (L ≥ D symbols, known to the learner), so the
first symbols have full contexts.

**The learner.** A prior :math:`\pi(d)` over the order and independent
:math:`\mathrm{Beta}(a, b)` priors over each context's parameter (a = b = ½: Krichevsky–
Trofimov; a = b = 1: Laplace, the uniform prior) give the Bayes mixture

.. math::

    Q(x^n) = \sum_{d=0}^{D} \pi(d)\, P_d(x^n), \qquad
    P_d(x^n) = \prod_{c} \frac{B(n_{c1} + a,\, n_{c0} + b)}{B(a, b)}
             = \prod_{t=1}^{n} \frac{n^{(t)}_{c_t x_t} + a^{[x_t=1]} b^{[x_t=0]}}
                                    {n^{(t)}_{c_t} + a + b},

with :math:`n_{cx}` the count of symbol x after context c (:math:`n^{(t)}`: counted before
time t). :func:`markov_order_log_probs` gives each order's sequential log-probabilities,
:func:`markov_mixture_log_probs` the mixture's :math:`\log Q(x_t \mid x^{t-1})` (everything in
log space; the mixture is a log-sum-exp of the orders' cumulative log-likelihoods). This mixes
over orders only, not over all context trees as CTW does (Willems et al. 1995).

**Regret.** For a true source :math:`P_{\theta_0}` (:class:`BinaryMarkovSource`) the online
learner's regret (excess log-loss per symbol) is

.. math:: R_n = \frac1n \mathrm{KL}\big(P_{\theta_0}^n \,\|\, Q\big)
              = \frac1n \mathbb E_{P_{\theta_0}}\Big[\sum_{t=1}^n
                \log\frac{P_{\theta_0}(x_t\mid x^{t-1})}{Q(x_t \mid x^{t-1})}\Big],

with the past drawn from the source's stationary law. :func:`mixture_regret_exact` enumerates
all :math:`2^n` sequences (and all pasts) and evaluates the KL with :func:`divergent.kl`;
:func:`mixture_regret` estimates it as the mean log-loss difference over sampled sequences,
for every prefix length at once (Q is prefix-consistent).

**The bound.** With the per-symbol KL rate between the source and a chain of order d
(:func:`markov_kl_rate`, the stationary-weighted conditional KL, computed with
:func:`divergent.kl`),

.. math::

    r(\theta) = \sum_{c \in \{0,1\}^L} \mu_L(c)\,
        \mathrm{KL}\big(P_{\theta_0}(\cdot\mid c)\,\|\,P_\theta(\cdot\mid c)\big),
    \qquad L = \max(k, d),

the ball :math:`B_\varepsilon = \{(d,\theta): r \le \varepsilon\}` and its prior mass
:math:`W_\varepsilon = \sum_d \pi(d)\,\Pr_{\theta\sim\mathrm{Beta}}(r \le \varepsilon)`, the
index-of-resolvability bound (Barron & Cover 1991; the form in Feder, Urbanke & Fogel 2025)

.. math:: R_n \le \min_{\varepsilon} \Big[\varepsilon + \frac1n \log\frac1{W_\varepsilon}\Big]

holds exactly here: with a stationary past, :math:`\mathrm{KL}(P_{\theta_0}^n\|P_\theta^n) =
n\,r(\theta)` for every n, and :math:`Q \ge \int_{B_\varepsilon} \pi w P_\theta` plus Jensen give
the bound. :func:`prior_ball_mass` estimates :math:`W_\varepsilon` by Monte Carlo over the prior
with exponential tilting: per model context c the rate is
:math:`\Delta_d + \sum_c m_c \mathrm{KL}(\bar\theta_c\|\theta_c)` (:math:`m_c` the context's
stationary mass, :math:`\bar\theta_c` the source's mean next-symbol probability there,
:math:`\Delta_d` the rate of the best order-d chain, 0 for d ≥ k), and tilting the prior by
:math:`e^{-\lambda m_c \mathrm{KL}(\bar\theta_c\|\theta_c)}` keeps it a Beta distribution,
:math:`\mathrm{Beta}(a + \lambda m_c\bar\theta_c,\; b + \lambda m_c(1-\bar\theta_c))` with a
closed-form normaliser. Sampling from it with λ set so that the tilted mean rate is ε and
reweighting gives an unbiased estimate of masses far below what plain sampling from the prior
can resolve (:math:`W_\varepsilon \sim \varepsilon^{2^{k}/2}`). :func:`resolvability_bound`
takes the minimum over a grid of ε.

References:
    Feder, Urbanke & Fogel (2025), "The Universality Lens: Why Even Highly Over-Parametrized
    Models Learn Well", arXiv 2506.07661.
    Krichevsky & Trofimov (1981), "The performance of universal encoding", IEEE Trans. IT.
    Barron & Cover (1991), "Minimum complexity density estimation", IEEE Trans. IT.
    Clarke & Barron (1990), "Information-theoretic asymptotics of Bayes methods", IEEE Trans. IT.
    Willems, Shtarkov & Tjalkens (1995), "The context-tree weighting method", IEEE Trans. IT.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy.special import betaln, digamma, logsumexp
from torch import Tensor

from divergent._validation import check_int, check_positive_scalar
from divergent.functional import kl

__all__ = [
    "BallMass",
    "BinaryMarkovSource",
    "RegretEstimate",
    "ResolvabilityBound",
    "binary_sequences",
    "markov_kl_rate",
    "markov_mixture_log_probs",
    "markov_order_log_probs",
    "mixture_regret",
    "mixture_regret_exact",
    "prior_ball_mass",
    "resolvability_bound",
]

MAX_ORDER = 16  # 65 536 contexts per order: far beyond what a dense count table should hold
MAX_ENUMERATED = 2**22  # sequences × pasts enumerated by mixture_regret_exact
_BATCH_ELEMENTS = 2**22  # sequences × orders × length held at once by mixture_regret
_RATE_ROWS = 2**20  # (sample, context) rows per kl call in prior_ball_mass


# --------------------------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------------------------
def _symbols(x: Any, name: str, *, allow_empty: bool = False) -> np.ndarray:
    """``x`` as an int64 array of 0/1 symbols (1-D or 2-D), else a ValueError naming ``name``."""
    arr = np.asarray(x.detach().cpu().numpy() if isinstance(x, Tensor) else x)
    if arr.dtype == bool:
        arr = arr.astype(np.int64)
    ok = arr.ndim in (1, 2) and (np.issubdtype(arr.dtype, np.number))
    ok = ok and (allow_empty or arr.shape[-1] >= 1)
    if ok and arr.size:
        ok = bool(np.isin(arr, (0, 1)).all())  # NaN, 0.5, 2, -1 all fail here
    if not ok:
        raise ValueError(
            f"`{name}` must be a 1-D or 2-D array of binary symbols (0 or 1)"
            f"{'' if allow_empty else ' with at least one symbol per row'}, got "
            f"{arr.dtype} array of shape {arr.shape}"
            + (f" with values {np.unique(arr)[:6].tolist()}" if arr.size else "")
        )
    return arr.astype(np.int64)


def _sequences(sequences: Any) -> tuple[np.ndarray, bool]:
    """(N, n) int64 symbols and whether the input was a single 1-D sequence."""
    arr = _symbols(sequences, "sequences")
    return (arr[None, :], True) if arr.ndim == 1 else (arr, False)


def _past(past: Any, num: int, need: int) -> np.ndarray:
    """(num, L) past symbols, L ≥ ``need`` (default: ``need`` zeros)."""
    if past is None:
        return np.zeros((num, need), dtype=np.int64)
    arr = _symbols(past, "past", allow_empty=True)
    if arr.ndim == 1:
        arr = np.broadcast_to(arr, (num, arr.shape[0]))
    if arr.shape[0] != num or arr.shape[1] < need:
        raise ValueError(
            f"`past` must hold at least {need} symbols (the largest order) per sequence, as "
            f"shape (L,) or ({num}, L) with L >= {need}, oldest first; got shape {arr.shape}"
        )
    return np.ascontiguousarray(arr)


def _log_order_prior(order_prior: Any, max_order: int) -> np.ndarray:
    """log π(d) for d = 0…max_order; uniform when None; never renormalised."""
    if order_prior is None:
        return np.full(max_order + 1, -math.log(max_order + 1))
    arr = np.asarray(
        order_prior.detach().cpu().numpy() if isinstance(order_prior, Tensor) else order_prior,
        dtype=np.float64,
    )
    if (
        arr.shape != (max_order + 1,)
        or not np.isfinite(arr).all()
        or (arr < 0).any()
        or abs(arr.sum() - 1.0) > 1e-9
    ):
        raise ValueError(
            f"`order_prior` must be {max_order + 1} finite probabilities >= 0 (orders 0…"
            f"{max_order}) summing to 1 (it is not renormalised); got shape {arr.shape}"
            + (f" and sum {arr.sum()!r}" if arr.size else "")
        )
    with np.errstate(divide="ignore"):
        return np.log(arr)


def _beta_prior(a: Any, b: Any) -> tuple[float, float]:
    what = "Beta(a, b) prior of each context's P(x = 1); 0.5: KT, 1: Laplace"
    return (
        float(check_positive_scalar(a, "a", what=what)),  # type: ignore[arg-type]
        float(check_positive_scalar(b, "b", what=what)),  # type: ignore[arg-type]
    )


def _max_order(max_order: Any) -> int:
    return check_int(max_order, "max_order", 0, "largest Markov order", maximum=MAX_ORDER)


def _check_rng(rng: Any) -> np.random.Generator:
    if not isinstance(rng, np.random.Generator):
        raise TypeError(
            "`rng` must be a numpy.random.Generator (e.g. np.random.default_rng(0)); got "
            f"{type(rng).__name__} {rng!r}"
        )
    return rng


def _source(source: Any) -> BinaryMarkovSource:
    if not isinstance(source, BinaryMarkovSource):
        raise ValueError(f"`source` must be a BinaryMarkovSource, got {type(source).__name__}")
    return source


# --------------------------------------------------------------------------------------------
# contexts and counts
# --------------------------------------------------------------------------------------------
def _context_codes(z: np.ndarray, start: int, n: int, order: int) -> np.ndarray:
    """(N, n) codes Σ_j x_{t-j} 2^{j-1} of the order-``order`` contexts of z[:, start:start+n]."""
    codes = np.zeros((z.shape[0], n), dtype=np.int64)
    for j in range(1, order + 1):
        codes |= z[:, start - j : start - j + n] << (j - 1)
    return codes


def _code_bits(codes: np.ndarray, length: int) -> np.ndarray:
    """(len(codes), length) int64 bits of each code, most significant (oldest symbol) first."""
    return ((codes[:, None] >> np.arange(length - 1, -1, -1)) & 1).astype(np.int64)


def _earlier_counts(keys: np.ndarray, num_keys: int) -> np.ndarray:
    """For each (i, t): how many t' < t in row i have keys[i, t'] == keys[i, t]."""
    rows, n = keys.shape
    flat = (np.arange(rows, dtype=np.int64)[:, None] * num_keys + keys).ravel()
    order = np.argsort(flat, kind="stable")  # stable: time order kept within a group
    ranked = flat[order]
    starts = np.flatnonzero(np.r_[True, ranked[1:] != ranked[:-1]])
    group_start = np.repeat(starts, np.diff(np.r_[starts, flat.size]))
    out = np.empty_like(flat)
    out[order] = np.arange(flat.size) - group_start
    return out.reshape(rows, n)


def _order_log_probs(
    x: np.ndarray, past: np.ndarray, max_order: int, a: float, b: float
) -> np.ndarray:
    """(N, max_order + 1, n) sequential log-probabilities of each order's Beta(a, b) learner."""
    num, n = x.shape
    start = past.shape[1]
    z = np.concatenate([past, x], axis=1)
    out = np.empty((num, max_order + 1, n))
    pseudo = np.where(x == 1, a, b)
    for d in range(max_order + 1):
        ctx = _context_codes(z, start, n, d)
        seen_ctx = _earlier_counts(ctx, 2**d)
        seen_sym = _earlier_counts(2 * ctx + x, 2 ** (d + 1))
        out[:, d, :] = np.log(seen_sym + pseudo) - np.log(seen_ctx + (a + b))
    return out


def _mixture_from_cumulative(cum: np.ndarray, log_prior: np.ndarray) -> np.ndarray:
    """Conditional log Q(x_t | x^{t-1}) from the orders' cumulative log-likelihoods
    (N, D + 1, n), the cumulative sums of :func:`_order_log_probs`."""
    log_q = logsumexp(log_prior[None, :, None] + cum, axis=1)  # log Q(x^t), t = 1…n
    log_q0 = float(logsumexp(log_prior))  # log Q(empty) = log Σπ (≈ 0)
    return np.diff(log_q, axis=-1, prepend=np.full((log_q.shape[0], 1), log_q0))


# --------------------------------------------------------------------------------------------
# the learner
# --------------------------------------------------------------------------------------------
def markov_order_log_probs(
    sequences: Any, max_order: int, *, a: float = 0.5, b: float = 0.5, past: Any = None
) -> Tensor:
    r"""Sequential log-probabilities of the Beta(a, b) learner of every order d = 0…D.

    .. math:: \log P_d(x_t \mid x^{t-1}) = \log\frac{n^{(t)}_{c_t x_t} + a^{[x_t=1]}
              b^{[x_t=0]}}{n^{(t)}_{c_t} + a + b}

    (:math:`c_t` the order-d context, counts taken over the symbols before t). Their sum over t
    is the closed form :math:`\sum_c \log B(n_{c1}+a, n_{c0}+b) - \log B(a,b)`.

    Args:
        sequences: binary symbols, shape (n,) or (N, n), n ≥ 1.
        max_order: D ≥ 0.
        a, b: the Beta prior of each context's :math:`P(x=1)` (0.5, 0.5: Krichevsky–Trofimov;
            1, 1: Laplace).
        past: the symbols before each sequence, oldest first, shape (L,) or (N, L) with
            L ≥ D (default: D zeros).

    Returns:
        float64 tensor of shape (..., D + 1, n).

    Example:
        >>> lp = markov_order_log_probs([1, 1, 0], max_order=1)
        >>> lp.exp().numpy().round(4).tolist()  # order 0: KT 1/2, 3/4, 1/6
        [[0.5, 0.75, 0.1667], [0.5, 0.5, 0.25]]

    References:
        Krichevsky & Trofimov (1981), IEEE Trans. IT 27(2).
    """
    x, single = _sequences(sequences)
    max_order = _max_order(max_order)
    a, b = _beta_prior(a, b)
    out = torch.from_numpy(_order_log_probs(x, _past(past, x.shape[0], max_order), max_order, a, b))
    return out[0] if single else out


def markov_mixture_log_probs(
    sequences: Any,
    max_order: int,
    *,
    order_prior: Any = None,
    a: float = 0.5,
    b: float = 0.5,
    past: Any = None,
) -> Tensor:
    r"""Sequential log-probabilities :math:`\log Q(x_t\mid x^{t-1})` of the Bayes mixture.

    .. math:: Q(x^t) = \sum_{d=0}^{D}\pi(d)\,P_d(x^t), \qquad
              \log Q(x_t\mid x^{t-1}) = \log Q(x^t) - \log Q(x^{t-1})

    with :math:`P_d` the order-d Beta(a, b) mixture (:func:`markov_order_log_probs`); the
    cumulative log-likelihoods are combined with a log-sum-exp, so long sequences do not
    underflow.

    Args:
        sequences: binary symbols, shape (n,) or (N, n), n ≥ 1.
        max_order: D ≥ 0, the largest order in the mixture.
        order_prior: π(0…D), D + 1 probabilities summing to 1 (zeros allowed; never
            renormalised); default uniform.
        a, b: the Beta prior of each context's :math:`P(x = 1)`.
        past: symbols before each sequence, oldest first, (L,) or (N, L), L ≥ D (default
            zeros).

    Returns:
        float64 tensor of shape (n,) or (N, n); its sum over the last axis is
        :math:`\log Q(x^n)`.

    Example:
        >>> lq = markov_mixture_log_probs([[0, 0, 0, 0], [0, 1, 0, 1]], max_order=1)
        >>> lq.sum(-1).exp().numpy().round(5).tolist()
        [0.27344, 0.02734]
        >>> seqs = binary_sequences(4)  # Q sums to 1 over all 2^4 sequences
        >>> round(float(markov_mixture_log_probs(seqs, 2).sum(-1).exp().sum()), 12)
        1.0

    References:
        Feder, Urbanke & Fogel (2025), arXiv 2506.07661 (the online learner :math:`Q_o`).
    """
    x, single = _sequences(sequences)
    max_order = _max_order(max_order)
    log_prior = _log_order_prior(order_prior, max_order)
    a, b = _beta_prior(a, b)
    per_order = _order_log_probs(x, _past(past, x.shape[0], max_order), max_order, a, b)
    out = torch.from_numpy(_mixture_from_cumulative(np.cumsum(per_order, axis=-1), log_prior))
    return out[0] if single else out


def binary_sequences(n: int) -> np.ndarray:
    """All 2^n binary sequences of length n (1 ≤ n ≤ 20), shape (2^n, n), in binary order.

    >>> binary_sequences(2).tolist()
    [[0, 0], [0, 1], [1, 0], [1, 1]]
    """
    n = check_int(n, "n", 1, "sequence length", maximum=20, why="2^n sequences are enumerated")
    return _code_bits(np.arange(2**n), n)


# --------------------------------------------------------------------------------------------
# the source
# --------------------------------------------------------------------------------------------
class BinaryMarkovSource:
    r"""A binary Markov chain of order k with :math:`P(x_t = 1 \mid c) = \theta_0(c)`.

    Contexts are coded :math:`c = \sum_{j=1}^{k} x_{t-j}2^{j-1}` (most recent symbol in the
    lowest bit). Every :math:`\theta_0(c) \in (0, 1)`, so the chain is irreducible and
    aperiodic and has one stationary law.

    Args:
        probs: :math:`\theta_0`, :math:`2^k` probabilities in the open interval (0, 1).

    Attributes:
        order: k.
        num_parameters: :math:`2^k`.
        probs: (2^k,) float64 numpy array :math:`\theta_0`.
        logits: (2^k, 2) float64 tensor :math:`(\log(1-\theta_0), \log\theta_0)` per context.

    Example:
        >>> src = BinaryMarkovSource([0.2, 0.7])  # P(1 | previous 0) = 0.2, P(1 | 1) = 0.7
        >>> src.order, src.block_probs(1).round(4).tolist(), src.block_probs(2).round(4).tolist()
        (1, [0.6, 0.4], [0.48, 0.12, 0.12, 0.28])
        >>> past, seqs = src.sample(2, 5, np.random.default_rng(0))
        >>> past.shape, seqs.shape
        ((2, 1), (2, 5))
    """

    def __init__(self, probs: Any) -> None:
        raw = probs.detach().cpu().numpy() if isinstance(probs, Tensor) else probs
        try:
            arr: np.ndarray | None = np.array(raw, dtype=np.float64)
        except (TypeError, ValueError):
            arr = None
        if arr is not None and arr.ndim != 1:
            arr = None
        size = 0 if arr is None else arr.size
        k = round(math.log2(size)) if size else -1
        if (
            arr is None
            or size == 0
            or 2**k != size
            or k > MAX_ORDER
            or not np.isfinite(arr).all()
            or not ((arr > 0) & (arr < 1)).all()
        ):
            shape = np.shape(probs)
            raise ValueError(
                "`probs` must be a 1-D array of 2^k probabilities P(x=1 | context) in the open "
                f"interval (0, 1), k <= {MAX_ORDER}; got shape {shape}"
                + ("" if arr is None else f" with values {arr[:8].tolist()}")
            )
        arr.setflags(write=False)
        self.probs = arr
        self.order = k
        self.num_parameters = size
        self.logits = torch.from_numpy(np.stack([np.log1p(-arr), np.log(arr)], axis=1))
        self._stationary = self._solve_stationary()

    def __repr__(self) -> str:
        return f"BinaryMarkovSource(order={self.order}, probs={self.probs.round(4).tolist()})"

    def _solve_stationary(self) -> np.ndarray:
        size = self.num_parameters
        if size == 1:
            return np.ones(1)
        s = np.arange(size)
        trans = np.zeros((size, size))
        trans[s, (2 * s) % size] += 1.0 - self.probs  # next symbol 0 enters the lowest bit
        trans[s, (2 * s + 1) % size] += self.probs
        system = trans.T - np.eye(size)
        system[-1] = 1.0  # replace one (redundant) balance equation by Σμ = 1
        rhs = np.zeros(size)
        rhs[-1] = 1.0
        mu = np.linalg.solve(system, rhs)
        return np.clip(mu, 0.0, None) / np.clip(mu, 0.0, None).sum()  # round-off only

    def block_probs(self, length: int) -> np.ndarray:
        r"""Stationary law of the ``length`` most recent symbols, indexed by context code.

        Below the order it is a marginal of the chain's stationary law :math:`\mu_k`; above,
        :math:`\mu_{L+1}(2c + x) = \mu_L(c)\,P(x \mid c \bmod 2^k)`.

        Returns:
            (2^length,) float64 numpy array summing to 1.
        """
        length = check_int(length, "length", 0, "block length", maximum=MAX_ORDER + 4)
        k = self.order
        if length <= k:
            return np.bincount(
                np.arange(2**k) % 2**length, weights=self._stationary, minlength=2**length
            )
        mu = self._stationary
        for ell in range(k, length):
            c = np.arange(2**ell)
            theta = self.probs[c % 2**k]
            nxt = np.empty(2 ** (ell + 1))
            nxt[2 * c] = mu * (1.0 - theta)
            nxt[2 * c + 1] = mu * theta
            mu = nxt
        return mu

    def sample_past(self, num_sequences: int, length: int, rng: np.random.Generator) -> np.ndarray:
        """(num_sequences, length) pasts drawn from the stationary law, oldest symbol first."""
        num_sequences = check_int(num_sequences, "num_sequences", 1, "number of sequences")
        length = check_int(length, "length", 0, "past length", maximum=MAX_ORDER + 4)
        rng = _check_rng(rng)
        codes = rng.choice(2**length, size=num_sequences, p=self.block_probs(length))
        return _code_bits(codes, length)  # column 0 is the oldest symbol x_{1-L}

    def sample(
        self,
        num_sequences: int,
        length: int,
        rng: np.random.Generator,
        *,
        past_length: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """``num_sequences`` stationary runs of ``length`` symbols after a stationary past.

        Args:
            num_sequences: N ≥ 1.
            length: n ≥ 1 symbols per sequence.
            rng: a numpy Generator.
            past_length: symbols of past (default: the order k; at least k).

        Returns:
            (past (N, L), sequences (N, n)), int64 arrays, oldest symbol first.
        """
        length = check_int(length, "length", 1, "symbols per sequence")
        past_length = self.order if past_length is None else past_length
        past_length = check_int(
            past_length, "past_length", self.order, "symbols before each sequence"
        )
        past = self.sample_past(num_sequences, past_length, rng)
        size = self.num_parameters
        state = _context_codes(past, past_length, 1, self.order)[:, 0] if size > 1 else None
        uniforms = rng.random((past.shape[0], length))
        x = np.empty((past.shape[0], length), dtype=np.int64)
        if state is None:  # i.i.d.
            x[:] = uniforms < self.probs[0]
            return past, x
        for t in range(length):
            x[:, t] = uniforms[:, t] < self.probs[state]
            state = (2 * state + x[:, t]) % size
        return past, x

    def log_probs(self, sequences: Any, past: Any = None) -> Tensor:
        r"""Sequential :math:`\log P_{\theta_0}(x_t \mid \text{past}, x^{t-1})`.

        Args:
            sequences: binary symbols, (n,) or (N, n).
            past: symbols before each sequence, (L,) or (N, L), L ≥ k (default zeros).

        Returns:
            float64 tensor of the shape of ``sequences``.
        """
        x, single = _sequences(sequences)
        p = _past(past, x.shape[0], self.order)
        z = np.concatenate([p, x], axis=1)
        ctx = _context_codes(z, p.shape[1], x.shape[1], self.order)
        lp = self.logits.numpy()[ctx, x]
        out = torch.from_numpy(np.ascontiguousarray(lp))
        return out[0] if single else out


def markov_kl_rate(source: BinaryMarkovSource, model_logits: Any) -> Tensor:
    r"""Per-symbol KL rate from a binary Markov source to order-d chains (stationary-weighted).

    .. math:: r = \sum_{c\in\{0,1\}^L} \mu_L(c)\,
              \mathrm{KL}\big(P_{\theta_0}(\cdot \mid c \bmod 2^k)\,\|\,
              P_\theta(\cdot \mid c \bmod 2^d)\big), \qquad L = \max(k, d)

    with :math:`\mu_L` the source's stationary law of L-blocks; each term is computed with
    :func:`divergent.kl`. With a stationary past,
    :math:`\mathrm{KL}(P_{\theta_0}^n \| P_\theta^n) = n\,r` exactly.

    Args:
        source: the true chain :math:`P_{\theta_0}` (order k).
        model_logits: logits of :math:`P_\theta(x \mid c)` per context, shape
            (..., 2^d, 2) (class 1 is the symbol 1), any leading batch shape.

    Returns:
        float64 tensor of the leading shape: the rate in nats per symbol (+∞ where a model
        gives probability 0 to a symbol the source can emit; NaN in a model gives NaN).

    Example:
        >>> src = BinaryMarkovSource([0.2, 0.7])
        >>> iid = torch.tensor([[0.0, 0.0]], dtype=torch.float64)  # order 0, P(1) = 1/2
        >>> round(float(markov_kl_rate(src, iid)), 6)  # 0.6 KL(0.2‖½) + 0.4 KL(0.7‖½)
        0.14856
        >>> float(markov_kl_rate(src, src.logits))
        0.0
    """
    source = _source(source)
    q = torch.as_tensor(model_logits)
    num = q.shape[-2] if q.ndim >= 2 else 0
    d = round(math.log2(num)) if num else -1
    if q.ndim < 2 or q.shape[-1] != 2 or 2**d != num or d > MAX_ORDER or not q.is_floating_point():
        raise ValueError(
            "`model_logits` must be a float tensor of shape (..., 2^d, 2): logits of P(x | "
            f"context) for the 2^d contexts of an order-d chain; got {q.dtype} of shape "
            f"{tuple(q.shape)}"
        )
    q = q.to(torch.float64)
    length = max(source.order, d)
    codes = torch.arange(2**length)
    mu = torch.from_numpy(source.block_probs(length))
    target = source.logits[codes % source.num_parameters]
    model = q[..., codes % num, :]
    try:
        rows = kl(target.expand_as(model), model, reduction="none")
    except ValueError as err:
        # the library calls the model side `q`; name this function's argument instead
        raise ValueError(str(err).replace("`q`", "`model_logits`")) from err
    return rows @ mu


# --------------------------------------------------------------------------------------------
# regret
# --------------------------------------------------------------------------------------------
def mixture_regret_exact(
    source: BinaryMarkovSource,
    n: int,
    *,
    max_order: int,
    order_prior: Any = None,
    a: float = 0.5,
    b: float = 0.5,
    past: Any = None,
) -> float:
    r"""The mixture's regret :math:`\frac1n\mathrm{KL}(P_{\theta_0}^n\|Q)` by enumeration.

    .. math:: R_n = \frac1n \sum_{c} \mu_L(c) \sum_{x^n\in\{0,1\}^n}
              P_{\theta_0}(x^n \mid c)\log\frac{P_{\theta_0}(x^n\mid c)}{Q(x^n\mid c)}

    over all :math:`2^n` sequences and all :math:`2^L` pasts c (L = max(D, k), weights the
    stationary law :math:`\mu_L`), or for one given past; the inner KL is :func:`divergent.kl`
    on the :math:`2^n` log-probabilities (which also checks that both sides sum to 1).

    Args:
        source: the true chain.
        n: sequence length, 1 ≤ n with :math:`2^{n+L}` at most 2^22.
        max_order, order_prior, a, b: the mixture (:func:`markov_mixture_log_probs`).
        past: one fixed past, shape (L,), L ≥ max(D, k); default: average over the
            stationary past.

    Returns:
        The regret in nats per symbol.

    Example:
        >>> src = BinaryMarkovSource([0.3])
        >>> round(mixture_regret_exact(src, 8, max_order=0), 6)  # KT, i.i.d. source
        0.095169
    """
    source = _source(source)
    max_order = _max_order(max_order)
    n = check_int(n, "n", 1, "sequence length", maximum=20, why="2^n sequences are enumerated")
    length = max(max_order, source.order)
    num_pasts = 2**length if past is None else 1
    if num_pasts * 2**n > MAX_ENUMERATED:
        raise ValueError(
            f"`n` = {n} with {num_pasts} pasts would enumerate {num_pasts * 2**n} sequences "
            f"(at most {MAX_ENUMERATED}); use mixture_regret (sampled) instead"
        )
    seqs = binary_sequences(n)
    if past is None:
        # binary_sequences lists the pasts in code order (row c is context c), so their
        # weights are the block law itself
        pasts = binary_sequences(length) if length else np.zeros((1, 0), dtype=np.int64)
        weights = source.block_probs(length) if length else np.ones(1)
    else:
        pasts = _past(_symbols(past, "past", allow_empty=True).reshape(1, -1), 1, length)
        weights = np.ones(1)
    x = np.tile(seqs, (pasts.shape[0], 1))
    p = np.repeat(pasts, seqs.shape[0], axis=0)
    log_p = source.log_probs(x, p).sum(-1).reshape(pasts.shape[0], -1)
    log_q = (
        markov_mixture_log_probs(x, max_order, order_prior=order_prior, a=a, b=b, past=p)
        .sum(-1)
        .reshape(pasts.shape[0], -1)
    )
    per_past = kl(log_p, log_q, inputs="log_probs", reduction="none")
    return float(per_past @ torch.from_numpy(weights)) / n


@dataclass(frozen=True)
class RegretEstimate:
    r"""Sampled regret of the mixture (and of each order alone) at several lengths.

    Attributes:
        lengths: (m,) the prefix lengths n.
        regret: (m,) mean of :math:`\frac1n\sum_{t\le n}[\log P_{\theta_0} - \log Q]`.
        standard_error: (m,) its standard error over the sequences.
        log_loss_differences: (N, m) per sequence
            :math:`\sum_{t\le n}\log P_{\theta_0}(x_t|\cdot) - \log Q(x_t|\cdot)` (nats).
        single_order: (N, D + 1, m) the same for each order's Beta learner alone.
    """

    lengths: np.ndarray
    regret: np.ndarray
    standard_error: np.ndarray
    log_loss_differences: np.ndarray
    single_order: np.ndarray

    def single_order_regret(self, order: int) -> tuple[np.ndarray, np.ndarray]:
        """(mean, standard error) of the regret of the order-``order`` learner alone."""
        order = check_int(order, "order", 0, maximum=self.single_order.shape[1] - 1)
        per = self.single_order[:, order, :] / self.lengths
        return per.mean(0), per.std(0, ddof=1) / math.sqrt(per.shape[0])

    def log_slope(self, min_length: int = 1) -> tuple[float, float]:
        r"""Slope of :math:`n R_n` against :math:`\log n` over lengths ≥ ``min_length``.

        Least squares per sequence (of its cumulative log-loss difference against log n),
        then the mean and its standard error over sequences; for a k-parameter smooth family
        the slope tends to k/2 (Clarke & Barron 1990).

        Returns:
            (slope, standard error).
        """
        keep = self.lengths >= min_length
        if keep.sum() < 2:
            raise ValueError(
                f"`min_length` = {min_length!r} keeps {int(keep.sum())} lengths; at least 2 "
                f"are needed (lengths: {self.lengths.tolist()})"
            )
        u = np.log(self.lengths[keep].astype(np.float64))
        u = u - u.mean()
        slopes = self.log_loss_differences[:, keep] @ u / (u @ u)
        return float(slopes.mean()), float(slopes.std(ddof=1) / math.sqrt(slopes.size))


def mixture_regret(
    source: BinaryMarkovSource,
    lengths: Any,
    *,
    max_order: int,
    num_sequences: int,
    rng: np.random.Generator,
    order_prior: Any = None,
    a: float = 0.5,
    b: float = 0.5,
) -> RegretEstimate:
    r"""The mixture's regret as the mean log-loss difference over sampled sequences.

    .. math:: \hat R_n = \frac1{N}\sum_{i=1}^{N}\frac1n\sum_{t=1}^{n}
              \log\frac{P_{\theta_0}(x^{(i)}_t\mid\cdot)}{Q(x^{(i)}_t\mid\cdot)}
              \;\xrightarrow{N\to\infty}\; \frac1n\mathrm{KL}(P_{\theta_0}^n\|Q)

    Each sequence starts after a stationary past of max(D, k) symbols, so :math:`\hat R_n` is
    unbiased for the regret of :func:`mixture_regret_exact` (and the bound of
    :func:`resolvability_bound` applies). One run of the longest length gives every prefix.

    Args:
        source: the true chain.
        lengths: increasing prefix lengths n ≥ 1 (sorted, distinct).
        max_order, order_prior, a, b: the mixture (:func:`markov_mixture_log_probs`).
        num_sequences: N ≥ 2.
        rng: numpy Generator for the sequences (anything else raises TypeError).

    Returns:
        :class:`RegretEstimate`.
    """
    source = _source(source)
    max_order = _max_order(max_order)
    num_sequences = check_int(num_sequences, "num_sequences", 2, "number of sequences")
    log_prior = _log_order_prior(order_prior, max_order)
    a, b = _beta_prior(a, b)
    ns = np.asarray(lengths)
    if (
        ns.ndim != 1
        or ns.size == 0
        or not np.issubdtype(ns.dtype, np.integer)
        or (ns < 1).any()
        or (np.diff(ns) <= 0).any()
    ):
        raise ValueError(
            f"`lengths` must be a 1-D increasing sequence of integers >= 1, got {lengths!r}"
        )
    n_max = int(ns[-1])
    rng = _check_rng(rng)
    past, x = source.sample(num_sequences, n_max, rng, past_length=max(max_order, source.order))
    batch = max(1, _BATCH_ELEMENTS // ((max_order + 1) * n_max))
    idx = ns - 1
    diffs, singles = [], []
    for lo in range(0, num_sequences, batch):
        xb, pb = x[lo : lo + batch], past[lo : lo + batch]
        log_p = np.cumsum(source.log_probs(xb, pb).numpy(), axis=-1)
        cum = np.cumsum(_order_log_probs(xb, pb, max_order, a, b), axis=-1)
        log_q = np.cumsum(_mixture_from_cumulative(cum, log_prior), axis=-1)
        diffs.append((log_p - log_q)[:, idx])
        singles.append(log_p[:, None, idx] - cum[:, :, idx])
    diff = np.concatenate(diffs)
    per = diff / ns
    return RegretEstimate(
        lengths=ns.astype(np.int64),
        regret=per.mean(0),
        standard_error=per.std(0, ddof=1) / math.sqrt(num_sequences),
        log_loss_differences=diff,
        single_order=np.concatenate(singles),
    )


# --------------------------------------------------------------------------------------------
# the index of resolvability
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BallMass:
    r"""Monte Carlo estimate of the prior mass :math:`W_\varepsilon` of KL balls.

    Attributes:
        eps: (m,) the radii ε (nats per symbol).
        log_mass: (m,) :math:`\log\hat W_\varepsilon` (−∞ where no sample fell inside).
        log_mass_se: (m,) standard error of :math:`\log\hat W_\varepsilon` (delta method).
        per_order_log_mass: (D + 1, m) :math:`\log \hat W^{(d)}_\varepsilon` per order
            (prior weight of the order not included).
        offsets: (D + 1,) :math:`\Delta_d`, the KL rate of the best order-d chain (0 for d ≥ k).
    """

    eps: np.ndarray
    log_mass: np.ndarray
    log_mass_se: np.ndarray
    per_order_log_mass: np.ndarray
    offsets: np.ndarray


@dataclass(frozen=True)
class ResolvabilityBound:
    r""":math:`\min_\varepsilon[\varepsilon + \frac1n\log(1/\hat W_\varepsilon)]` per length.

    Attributes:
        lengths: (m,) n.
        bound: (m,) the bound in nats per symbol.
        standard_error: (m,) Monte Carlo standard error of the bound (at the minimising ε).
        eps_star: (m,) the minimising ε.
    """

    lengths: np.ndarray
    bound: np.ndarray
    standard_error: np.ndarray
    eps_star: np.ndarray


def _projection(source: BinaryMarkovSource, d: int) -> tuple[np.ndarray, np.ndarray, float]:
    """(m_c, θ̄_c, Δ_d): context masses, the source's mean P(1 | c) and the best rate, order d."""
    length = max(source.order, d)
    mu = source.block_probs(length)
    codes = np.arange(2**length)
    mass = np.bincount(codes % 2**d, weights=mu, minlength=2**d)
    if d >= source.order:  # the source is an order-d chain: θ̄ = θ0, Δ = 0 exactly
        return mass, source.probs[np.arange(2**d) % source.num_parameters], 0.0
    theta = source.probs[codes % source.num_parameters]
    bar = np.bincount(codes % 2**d, weights=mu * theta, minlength=2**d) / mass
    barc = bar[codes % 2**d]
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = theta * np.log(theta / barc) + (1 - theta) * np.log((1 - theta) / (1 - barc))
    return mass, bar, float(np.sum(mu * terms))


def _tilted_mean_rate(lam: np.ndarray, mass: np.ndarray, bar: np.ndarray, a: float, b: float):
    """Σ_c m_c E[KL(θ̄_c ‖ θ_c)] under θ_c ~ Beta(a + λ m_c θ̄_c, b + λ m_c (1 − θ̄_c))."""
    al = a + lam[:, None] * mass * bar
    be = b + lam[:, None] * mass * (1 - bar)
    neg_entropy = bar * np.log(bar) + (1 - bar) * np.log1p(-bar)
    e_kl = neg_entropy - bar * digamma(al) - (1 - bar) * digamma(be) + digamma(al + be)
    return (mass * e_kl).sum(-1)


def _solve_tilt(budget: np.ndarray, mass: np.ndarray, bar: np.ndarray, a: float, b: float):
    """λ ≥ 0 with tilted mean rate = budget (0 where the prior's mean is already below)."""
    lo = np.full(budget.shape, -30.0)
    hi = np.full(budget.shape, 45.0)
    for _ in range(120):  # bisection on log λ (the mean rate decreases in λ)
        mid = 0.5 * (lo + hi)
        above = _tilted_mean_rate(np.exp(mid), mass, bar, a, b) > budget
        lo = np.where(above, mid, lo)
        hi = np.where(above, hi, mid)
    lam = np.exp(0.5 * (lo + hi))
    prior_mean = _tilted_mean_rate(np.zeros(1), mass, bar, a, b)[0]
    return np.where(prior_mean <= budget, 0.0, lam)


def prior_ball_mass(
    source: BinaryMarkovSource,
    eps: Any,
    *,
    max_order: int,
    num_samples: int,
    rng: np.random.Generator,
    order_prior: Any = None,
    a: float = 0.5,
    b: float = 0.5,
) -> BallMass:
    r"""Prior mass of the KL ball around the source, by Monte Carlo over the prior.

    .. math:: W_\varepsilon = \sum_{d=0}^{D}\pi(d)\,
              \Pr_{\theta\sim\mathrm{Beta}(a,b)^{2^d}}\big(r_d(\theta)\le\varepsilon\big)

    with :math:`r_d` the KL rate :func:`markov_kl_rate`. Per order, θ is drawn from the prior
    tilted by :math:`e^{-\lambda (r_d - \Delta_d)}` (again a product of Beta laws, see the
    module notes) and reweighted by :math:`M(\lambda)e^{\lambda (r_d-\Delta_d)}`, with
    :math:`M(\lambda) = \mathbb E_{\text{prior}}e^{-\lambda(r_d-\Delta_d)} =
    \prod_c e^{\lambda m_c H(\bar\theta_c)} B(a+\lambda m_c\bar\theta_c,
    b+\lambda m_c(1-\bar\theta_c))/B(a,b)`; λ solves (tilted mean of :math:`r_d`) = ε
    (λ = 0, plain prior sampling, where the prior's mean is already inside). Unbiased for
    :math:`W_\varepsilon`; each weight is at most :math:`M(\lambda)e^{\lambda(\varepsilon -
    \Delta_d)}` (the Chernoff bound).

    Args:
        source: the true chain (order k).
        eps: radii ε > 0, shape (m,).
        max_order, order_prior, a, b: the mixture's prior (:func:`markov_mixture_log_probs`).
        num_samples: samples per (order, ε), ≥ 2.
        rng: numpy Generator (anything else raises TypeError).

    Returns:
        :class:`BallMass`.

    Example:
        >>> src = BinaryMarkovSource([0.3])
        >>> m = prior_ball_mass(src, [1e-4, 1e-2], max_order=0, num_samples=4000,
        ...                     rng=np.random.default_rng(0))
        >>> np.round(m.log_mass, 2).tolist(), bool((m.log_mass_se < 0.02).all())
        ([-4.73, -2.41], True)
    """
    source = _source(source)
    max_order = _max_order(max_order)
    log_prior = _log_order_prior(order_prior, max_order)
    a, b = _beta_prior(a, b)
    num_samples = check_int(num_samples, "num_samples", 2, "prior samples per order and radius")
    radii = np.asarray(eps, dtype=np.float64).reshape(-1) if np.ndim(eps) <= 1 else None
    if radii is None or radii.size == 0 or not (np.isfinite(radii) & (radii > 0)).all():
        raise ValueError(f"`eps` must be a 1-D array of finite radii > 0, got {eps!r}")
    rng = _check_rng(rng)
    per_order = np.full((max_order + 1, radii.size), -np.inf)
    per_order_var = np.full((max_order + 1, radii.size), -np.inf)  # log of the variance
    offsets = np.zeros(max_order + 1)
    for d in range(max_order + 1):
        mass, bar, offset = _projection(source, d)
        offsets[d] = offset
        live = np.flatnonzero(radii > offset)
        if live.size == 0 or log_prior[d] == -np.inf:
            continue
        budget = radii[live] - offset
        lam = _solve_tilt(budget, mass, bar, a, b)
        al = a + lam[:, None] * mass * bar  # (m', C)
        be = b + lam[:, None] * mass * (1 - bar)
        entropy = -(bar * np.log(bar) + (1 - bar) * np.log1p(-bar))
        log_mgf = (lam[:, None] * mass * entropy + betaln(al, be) - betaln(a, b)).sum(-1)
        per_chunk = max(1, _RATE_ROWS // (num_samples * 2 ** max(d, source.order)))
        for lo in range(0, live.size, per_chunk):
            sl = slice(lo, lo + per_chunk)
            shape = (al[sl].shape[0], num_samples, mass.size)
            g1 = rng.gamma(al[sl][:, None, :], size=shape)
            g0 = rng.gamma(be[sl][:, None, :], size=shape)
            with np.errstate(divide="ignore"):
                logits = torch.from_numpy(np.stack([np.log(g0), np.log(g1)], axis=-1))
            rate = markov_kl_rate(source, logits).numpy()  # (m'', M)
            inside = rate <= radii[live][sl][:, None]
            excess = np.where(inside, rate - offset, 0.0)
            log_w = np.where(inside, log_mgf[sl][:, None] + lam[sl][:, None] * excess, -np.inf)
            top = log_w.max(1, keepdims=True)
            top = np.where(np.isfinite(top), top, 0.0)
            w = np.exp(log_w - top)
            mean = w.mean(1)
            var = w.var(1, ddof=1) / num_samples
            with np.errstate(divide="ignore"):
                per_order[d, live[sl]] = np.log(mean) + top[:, 0]
                per_order_var[d, live[sl]] = np.log(var) + 2 * top[:, 0]
    weighted = log_prior[:, None] + per_order
    log_mass = logsumexp(weighted, axis=0)
    log_var = logsumexp(2 * log_prior[:, None] + per_order_var, axis=0)
    with np.errstate(invalid="ignore"):
        log_se = np.where(np.isfinite(log_mass), np.exp(0.5 * log_var - log_mass), np.inf)
    return BallMass(
        eps=radii,
        log_mass=log_mass,
        log_mass_se=log_se,
        per_order_log_mass=per_order,
        offsets=offsets,
    )


def resolvability_bound(mass: BallMass, lengths: Any) -> ResolvabilityBound:
    r"""The index-of-resolvability bound on the regret, minimised over the radii of ``mass``.

    .. math:: R_n \le \min_{\varepsilon}\Big[\varepsilon + \frac1n\log\frac1{W_\varepsilon}\Big]

    Args:
        mass: :func:`prior_ball_mass` on a grid of ε.
        lengths: n ≥ 1, shape (m,).

    Returns:
        :class:`ResolvabilityBound` (standard error: that of :math:`\log\hat W` at the
        minimising ε, divided by n).

    Example:
        >>> m = BallMass(np.array([0.01, 0.1]), np.log([0.1, 0.5]), np.zeros(2),
        ...              np.zeros((1, 2)), np.zeros(1))
        >>> resolvability_bound(m, [10, 1000]).bound.round(4).tolist()
        [0.1693, 0.0123]
    """
    if not isinstance(mass, BallMass):
        raise ValueError(f"`mass` must be a BallMass, got {type(mass).__name__}")
    ns = np.asarray(lengths, dtype=np.float64).reshape(-1)
    if ns.size == 0 or not (np.isfinite(ns) & (ns >= 1)).all():
        raise ValueError(f"`lengths` must be numbers >= 1, got {lengths!r}")
    ok = np.isfinite(mass.log_mass)
    if not ok.any():
        raise ValueError("`mass` has no radius with an estimated mass > 0")
    eps, log_w, se = mass.eps[ok], mass.log_mass[ok], mass.log_mass_se[ok]
    values = eps[None, :] - log_w[None, :] / ns[:, None]
    best = values.argmin(1)
    return ResolvabilityBound(
        lengths=np.asarray(lengths).reshape(-1),
        bound=values[np.arange(ns.size), best],
        standard_error=se[best] / ns,
        eps_star=eps[best],
    )

"""Bayes mixtures over binary Markov chains: normalisation, closed forms, regret, bound."""

from __future__ import annotations

import math
from itertools import product

import numpy as np
import pytest
import torch
from scipy import optimize, stats

from divergent.analysis.bayes_mixture import (
    BallMass,
    BinaryMarkovSource,
    binary_sequences,
    markov_kl_rate,
    markov_mixture_log_probs,
    markov_order_log_probs,
    mixture_regret,
    mixture_regret_exact,
    prior_ball_mass,
    resolvability_bound,
)
from divergent.analysis.memoryless_sequences import composition_level_base, compositions


# ------------------------------------------------------------------------------------------
# independent references (plain Python, from the definitions)
# ------------------------------------------------------------------------------------------
def _log_beta(x: float, y: float) -> float:
    return math.lgamma(x) + math.lgamma(y) - math.lgamma(x + y)


def _order_marginal_ref(seq: list[int], past: list[int], d: int, a: float, b: float) -> float:
    """log P_d(x^n | past) from final counts per context: Σ_c log B(n1+a, n0+b) − log B(a, b)."""
    z = list(past) + list(seq)
    counts: dict[tuple[int, ...], list[int]] = {}
    for t in range(len(past), len(z)):
        ctx = tuple(z[t - d : t])  # the d previous symbols
        counts.setdefault(ctx, [0, 0])[z[t]] += 1
    return sum(_log_beta(n1 + a, n0 + b) - _log_beta(a, b) for n0, n1 in counts.values())


def _mixture_ref(seq, past, prior, a, b) -> float:
    terms = [
        math.log(w) + _order_marginal_ref(seq, past, d, a, b) for d, w in enumerate(prior) if w > 0
    ]
    top = max(terms)
    return top + math.log(sum(math.exp(t - top) for t in terms))


def _markov_log_prob_ref(seq, past, probs) -> float:
    """log P(x^n | past) of a chain given as a dict context-tuple (most recent last) → P(1)."""
    k = int(math.log2(len(probs)))
    z = list(past) + list(seq)
    total = 0.0
    for t in range(len(past), len(z)):
        c = sum(z[t - j] << (j - 1) for j in range(1, k + 1))
        p1 = probs[c]
        total += math.log(p1 if z[t] == 1 else 1 - p1)
    return total


# ------------------------------------------------------------------------------------------
# the learner
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "max_order,prior,a,b,past",
    [
        (0, None, 0.5, 0.5, None),
        (3, None, 0.5, 0.5, None),
        (3, [0.1, 0.2, 0.3, 0.4], 1.0, 1.0, [1, 0, 1]),
        (2, [0.0, 1.0, 0.0], 0.7, 2.5, [1, 1, 0, 1]),  # zeros in the prior, a longer past
    ],
)
def test_mixture_sums_to_one_over_all_sequences(max_order, prior, a, b, past) -> None:
    for n in (1, 5, 10):
        seqs = binary_sequences(n)
        lq = markov_mixture_log_probs(seqs, max_order, order_prior=prior, a=a, b=b, past=past)
        assert lq.dtype == torch.float64 and lq.shape == (2**n, n)
        assert float(lq.sum(-1).exp().sum()) == pytest.approx(1.0, abs=1e-12)
    # each conditional is a distribution over the next symbol
    seqs = binary_sequences(6)
    lq = markov_mixture_log_probs(seqs, max_order, order_prior=prior, a=a, b=b, past=past)
    flipped = seqs.copy()
    flipped[:, -1] ^= 1
    lq_f = markov_mixture_log_probs(flipped, max_order, order_prior=prior, a=a, b=b, past=past)
    assert torch.allclose(lq[:, -1].exp() + lq_f[:, -1].exp(), torch.ones(64, dtype=torch.float64))


def test_mixture_matches_brute_force_reference() -> None:
    rng = np.random.default_rng(3)
    prior = rng.dirichlet(np.ones(5))
    prior = prior / prior.sum()
    a, b = 0.7, 1.3
    seqs = rng.integers(0, 2, size=(12, 30))
    pasts = rng.integers(0, 2, size=(12, 6))
    lq = markov_mixture_log_probs(seqs, 4, order_prior=prior, a=a, b=b, past=pasts).sum(-1)
    per = markov_order_log_probs(seqs, 4, a=a, b=b, past=pasts).sum(-1)
    for i in range(12):
        s, p = seqs[i].tolist(), pasts[i].tolist()
        assert float(lq[i]) == pytest.approx(_mixture_ref(s, p, prior, a, b), abs=1e-10)
        for d in range(5):
            assert float(per[i, d]) == pytest.approx(_order_marginal_ref(s, p, d, a, b), abs=1e-10)


def test_default_past_is_zeros_and_one_sequence_keeps_its_shape() -> None:
    seq = [1, 0, 0, 1, 1, 1, 0]
    lq = markov_mixture_log_probs(seq, 3)
    assert lq.shape == (7,)
    assert torch.equal(lq, markov_mixture_log_probs([seq], 3, past=[0, 0, 0])[0])
    assert markov_order_log_probs(seq, 2).shape == (3, 7)


@pytest.mark.parametrize("a,b", [(0.5, 0.5), (1.0, 1.0), (0.3, 2.0)])
def test_order_zero_estimator_matches_gamma_closed_form(a: float, b: float) -> None:
    """KT / Laplace / Beta(a, b): Π_t sequential = Γ(n1+a)Γ(n0+b)Γ(a+b) / (Γ(a)Γ(b)Γ(n+a+b))."""
    rng = np.random.default_rng(0)
    for n in (1, 7, 200):
        seqs = (rng.random((20, n)) < rng.random((20, 1))).astype(np.int64)
        got = markov_mixture_log_probs(seqs, 0, a=a, b=b).sum(-1).numpy()
        n1 = seqs.sum(1)
        n0 = n - n1
        want = [
            math.lgamma(k1 + a)
            + math.lgamma(k0 + b)
            + math.lgamma(a + b)
            - math.lgamma(a)
            - math.lgamma(b)
            - math.lgamma(n + a + b)
            for k0, k1 in zip(n0, n1)
        ]
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-9)
    # KT's first predictions by hand: 1/2, then (1 + 1/2)/(1 + 1) = 3/4 after a repeat
    kt = markov_mixture_log_probs([1, 1], 0).exp()
    assert kt.tolist() == pytest.approx([0.5, 0.75])


# ------------------------------------------------------------------------------------------
# the source and the KL rate
# ------------------------------------------------------------------------------------------
def test_source_stationary_law_and_log_probs() -> None:
    probs = [0.1, 0.8, 0.55, 0.3, 0.9, 0.2, 0.45, 0.6]
    src = BinaryMarkovSource(probs)
    assert src.order == 3 and src.num_parameters == 8
    mu3 = src.block_probs(3)
    # stationarity: one step of the chain maps μ3 to itself
    nxt = np.zeros(8)
    for c in range(8):
        nxt[(2 * c + 1) % 8] += mu3[c] * probs[c]
        nxt[(2 * c) % 8] += mu3[c] * (1 - probs[c])
    np.testing.assert_allclose(nxt, mu3, atol=1e-14)
    # consistency of block laws: dropping the oldest symbol of a 5-block gives the 4-block law
    mu5, mu4 = src.block_probs(5), src.block_probs(4)
    np.testing.assert_allclose(np.bincount(np.arange(32) % 16, weights=mu5), mu4, atol=1e-14)
    np.testing.assert_allclose(np.bincount(np.arange(8) % 2, weights=mu3), src.block_probs(1))
    # log-probabilities against the plain reference
    rng = np.random.default_rng(1)
    past, x = src.sample(5, 40, rng, past_length=4)
    got = src.log_probs(x, past).sum(-1).numpy()
    want = [_markov_log_prob_ref(x[i].tolist(), past[i].tolist(), probs) for i in range(5)]
    np.testing.assert_allclose(got, want, atol=1e-12)
    # samples (independent sequences): the last 3-block keeps the stationary law μ3, and each
    # symbol follows P(1 | context)
    past, x = src.sample(20000, 3, np.random.default_rng(2))
    codes = x[:, 2] | (x[:, 1] << 1) | (x[:, 0] << 2)
    freq = np.bincount(codes, minlength=8) / codes.size
    np.testing.assert_allclose(freq, mu3, atol=4 * math.sqrt(0.13 * 0.87 / 20000))
    ctx = past[:, 2] | (past[:, 1] << 1) | (past[:, 0] << 2)
    emitted = np.bincount(ctx, weights=x[:, 0], minlength=8) / np.bincount(ctx, minlength=8)
    np.testing.assert_allclose(emitted, probs, atol=0.05)


@pytest.mark.parametrize(
    "src_probs,model_probs",
    [
        ([0.2, 0.7, 0.4, 0.9], [0.35, 0.6]),  # model order 1 < source order 2
        ([0.2, 0.7], [0.3, 0.6, 0.5, 0.8, 0.1, 0.9, 0.45, 0.75]),  # model order 3 > 1
        ([0.3], [0.5]),
    ],
)
def test_kl_rate_is_the_per_symbol_kl_of_n_blocks(src_probs, model_probs) -> None:
    """With a stationary past, KL(P^n ‖ P'^n) = n·rate exactly (enumerated over pasts, x^n)."""
    src = BinaryMarkovSource(src_probs)
    model = BinaryMarkovSource(model_probs)
    length = max(src.order, model.order)
    n = 6
    mu = src.block_probs(length)
    total = 0.0
    for code in range(2**length):
        past = [(code >> j) & 1 for j in range(length - 1, -1, -1)]
        for seq in product((0, 1), repeat=n):
            lp = _markov_log_prob_ref(seq, past, src_probs)
            lq = _markov_log_prob_ref(seq, past, model_probs)
            total += mu[code] * math.exp(lp) * (lp - lq)
    rate = float(markov_kl_rate(src, model.logits))
    assert rate == pytest.approx(total / n, abs=1e-12)
    # a batch of models: leading shape kept
    own = src.logits[torch.arange(model.num_parameters) % 2**src.order]  # the source itself
    batch = torch.stack([model.logits, own])
    out = markov_kl_rate(src, batch)
    assert out.shape == (2,) and float(out[0]) == pytest.approx(rate)


def test_kl_rate_nan_and_infinite() -> None:
    src = BinaryMarkovSource([0.2, 0.7])
    q = torch.zeros(3, 2, 2, dtype=torch.float64)
    q[1, 0, 0] = float("nan")
    q[2, 1, 1] = -float("inf")  # P(1 | previous 1) = 0 while the source emits 1 there
    out = markov_kl_rate(src, q)
    assert torch.isfinite(out[0]) and torch.isnan(out[1]) and out[2] == float("inf")


def test_kl_rate_errors_name_model_logits() -> None:
    src = BinaryMarkovSource([0.2, 0.7])
    q = torch.zeros(2, 2, 2, dtype=torch.float64)
    q[1, 1, 0] = float("inf")  # in a later position
    with pytest.raises(ValueError, match=r"^`model_logits` has a \+inf entry"):
        markov_kl_rate(src, q)


@pytest.mark.parametrize("rng", [None, 0, np.random.RandomState(0), "seed"])
def test_rng_must_be_a_numpy_generator(rng) -> None:
    with pytest.raises(TypeError, match=r"`rng` must be a numpy\.random\.Generator"):
        mixture_regret(SRC, [2, 4], max_order=1, num_sequences=4, rng=rng)
    with pytest.raises(TypeError, match=r"`rng` must be a numpy\.random\.Generator"):
        prior_ball_mass(SRC, [0.1], max_order=1, num_samples=8, rng=rng)
    with pytest.raises(TypeError, match="`rng`"):
        SRC.sample(2, 5, rng)


# ------------------------------------------------------------------------------------------
# regret
# ------------------------------------------------------------------------------------------
def test_exact_regret_equals_expected_log_loss_difference() -> None:
    src = BinaryMarkovSource([0.15, 0.8])
    n, kw = 8, dict(max_order=2, a=1.0, b=1.0)
    exact = mixture_regret_exact(src, n, **kw)
    # the stationary-past average is the μ-weighted average of fixed pasts
    mu = src.block_probs(2)
    per_past = [mixture_regret_exact(src, n, past=[c >> 1 & 1, c & 1], **kw) for c in range(4)]
    assert exact == pytest.approx(float(np.dot(mu, per_past)), rel=1e-12)
    est = mixture_regret(src, [2, 4, 8], num_sequences=20000, rng=np.random.default_rng(0), **kw)
    assert abs(est.regret[-1] - exact) < 4 * est.standard_error[-1]
    assert est.standard_error[-1] < 0.05 * exact
    # prefixes: the same run estimates the regret at n = 2 and 4 too
    for i, m in enumerate((2, 4)):
        assert abs(est.regret[i] - mixture_regret_exact(src, m, **kw)) < 4 * est.standard_error[i]


def test_kt_regret_asymptotics_for_an_iid_source() -> None:
    """n·R_n = ½ log n + C + O(1/n), C from Clarke–Barron: ½ log(π/2e) for KT, and
    ½ log(1/(2πe θ(1−θ))) for Laplace; exact expectations over the binomial counts."""
    theta = 0.3
    src = BinaryMarkovSource([theta])
    constants = {
        0.5: 0.5 * math.log(math.pi / (2 * math.e)),
        1.0: 0.5 * math.log(1 / (2 * math.pi * math.e * theta * (1 - theta))),
    }
    for a, const in constants.items():
        errors = []
        for n in (30, 300):
            counts = compositions(n, 2)  # (n0, n1); KT depends on the counts only
            log_w, _ = composition_level_base(np.array([1 - theta, theta]), np.zeros(2), n)
            seqs = (np.arange(n)[None, :] >= counts[:, :1]).astype(np.int64)  # 0^{n0} 1^{n1}
            diff = src.log_probs(seqs).sum(-1) - markov_mixture_log_probs(seqs, 0, a=a, b=a).sum(-1)
            total = float(log_w.exp() @ diff)  # n · R_n
            errors.append(abs(total - 0.5 * math.log(n) - const))
        assert errors[1] < (5e-4 if a == 0.5 else 5e-3)
        assert errors[1] < errors[0] / 5  # O(1/n)


def test_log_slope_recovers_a_known_slope() -> None:
    src = BinaryMarkovSource([0.3])
    est = mixture_regret(src, [8, 16], max_order=0, num_sequences=4, rng=np.random.default_rng(0))
    # replace the differences by 2.5·log n + noise-free offsets: slope exactly 2.5
    fake = type(est)(
        lengths=np.array([10, 100, 1000]),
        regret=np.zeros(3),
        standard_error=np.zeros(3),
        log_loss_differences=2.5 * np.log([10, 100, 1000])[None, :] + np.arange(4)[:, None],
        single_order=np.zeros((4, 1, 3)),
    )
    slope, se = fake.log_slope(min_length=10)
    assert slope == pytest.approx(2.5) and se == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="min_length"):
        fake.log_slope(min_length=500)
    mean, _ = est.single_order_regret(0)
    np.testing.assert_allclose(mean, est.regret)  # D = 0: the mixture is the order-0 learner


# ------------------------------------------------------------------------------------------
# the prior mass of KL balls and the bound
# ------------------------------------------------------------------------------------------
def _exact_single_context_mass(theta0: float, eps: float, a: float, b: float) -> float:
    def kl(t: float) -> float:
        return theta0 * math.log(theta0 / t) + (1 - theta0) * math.log((1 - theta0) / (1 - t))

    lo = optimize.brentq(lambda t: kl(t) - eps, 1e-300, theta0) if kl(1e-300) > eps else 0.0
    hi = optimize.brentq(lambda t: kl(t) - eps, theta0, 1 - 1e-16) if kl(1 - 1e-16) > eps else 1.0
    return float(stats.beta.cdf(hi, a, b) - stats.beta.cdf(lo, a, b))


@pytest.mark.parametrize("a,b", [(0.5, 0.5), (1.0, 1.0)])
def test_ball_mass_against_the_exact_single_context_mass(a: float, b: float) -> None:
    src = BinaryMarkovSource([0.3])
    eps = np.array([1e-7, 1e-5, 1e-3, 1e-1, 0.4])
    m = prior_ball_mass(
        src, eps, max_order=0, num_samples=3000, rng=np.random.default_rng(0), a=a, b=b
    )
    exact = np.log([_exact_single_context_mass(0.3, e, a, b) for e in eps])
    assert (m.log_mass_se < 0.03).all()
    assert (np.abs(m.log_mass - exact) < 4 * m.log_mass_se + 1e-3).all()


def test_ball_mass_matches_plain_prior_sampling() -> None:
    """Two orders, one below the source's: the tilted estimate vs sampling the prior itself."""
    src = BinaryMarkovSource([0.2, 0.7])
    prior = np.array([0.3, 0.7])
    eps = np.array([0.03, 0.08, 0.2])
    m = prior_ball_mass(
        src, eps, max_order=1, order_prior=prior, num_samples=3000, rng=np.random.default_rng(1)
    )
    # Δ_0: the best i.i.d. model predicts the stationary P(1) = 0.4
    best_iid = torch.tensor([[math.log(0.6), math.log(0.4)]], dtype=torch.float64)
    assert m.offsets[0] == pytest.approx(float(markov_kl_rate(src, best_iid)), abs=1e-12)
    assert m.offsets[1] == 0.0
    assert m.per_order_log_mass[0, 0] == -np.inf  # ε = 0.03 < Δ_0 ≈ 0.0437: no i.i.d. model
    rng = np.random.default_rng(2)
    num = 100_000
    w = np.zeros(eps.size)
    for d, pd in enumerate(prior):
        theta = rng.beta(0.5, 0.5, size=(num, 2**d))
        logits = torch.from_numpy(np.stack([np.log1p(-theta), np.log(theta)], -1))
        rate = markov_kl_rate(src, logits).numpy()
        w += pd * (rate[:, None] <= eps).mean(0)
    se_plain = np.sqrt(w * (1 - w) / num) / w
    assert (np.abs(m.log_mass - np.log(w)) < 4 * np.hypot(m.log_mass_se, se_plain)).all()


def test_bound_holds_over_the_exact_regret() -> None:
    src = BinaryMarkovSource([0.15, 0.8])
    kw = dict(max_order=2, a=1.0, b=1.0)
    eps = np.geomspace(1e-4, 1.0, 30)
    m = prior_ball_mass(src, eps, num_samples=400, rng=np.random.default_rng(0), **kw)
    ns = [4, 12]
    bound = resolvability_bound(m, ns)
    for i, n in enumerate(ns):
        exact = mixture_regret_exact(src, n, **kw)
        assert exact <= bound.bound[i]
        assert bound.eps_star[i] in eps
    # the bound is the minimum over ε of ε + log(1/W)/n
    i = 1
    assert bound.bound[i] == pytest.approx(np.min(eps - m.log_mass / ns[i]))


# ------------------------------------------------------------------------------------------
# bad input
# ------------------------------------------------------------------------------------------
SRC = BinaryMarkovSource([0.2, 0.7])
BAD = [
    (lambda: markov_mixture_log_probs([0, 1, 2], 1), "sequences"),
    (lambda: markov_mixture_log_probs([0.0, float("nan")], 1), "sequences"),
    (lambda: markov_mixture_log_probs(np.zeros((2, 0)), 1), "sequences"),
    (lambda: markov_mixture_log_probs([0, 1], -1), "max_order"),
    (lambda: markov_mixture_log_probs([0, 1], 1.5), "max_order"),
    (lambda: markov_mixture_log_probs([0, 1], 1, order_prior=[0.5, 0.6]), "order_prior"),
    (lambda: markov_mixture_log_probs([0, 1], 1, order_prior=[1.0]), "order_prior"),
    (lambda: markov_mixture_log_probs([0, 1], 1, order_prior=[1.5, -0.5]), "order_prior"),
    (lambda: markov_mixture_log_probs([0, 1], 1, a=0.0), "`a`"),
    (lambda: markov_mixture_log_probs([0, 1], 1, b=float("nan")), "`b`"),
    (lambda: markov_mixture_log_probs([0, 1], 3, past=[0, 1]), "past"),
    (lambda: markov_order_log_probs([0, 1], 1, past=[[0], [1]]), "past"),
    (lambda: BinaryMarkovSource([0.2, 0.7, 0.5]), "probs"),
    (lambda: BinaryMarkovSource([0.0, 0.5]), "probs"),
    (lambda: BinaryMarkovSource([[0.5]]), "probs"),
    (lambda: BinaryMarkovSource([float("nan")]), "probs"),
    (lambda: SRC.sample(2, 5, np.random.default_rng(0), past_length=0), "past_length"),
    (lambda: SRC.log_probs([0, 1], past=[]), "past"),
    (lambda: markov_kl_rate(SRC, torch.zeros(3, 2)), "model_logits"),
    (lambda: markov_kl_rate(SRC, torch.zeros(2, 3)), "model_logits"),
    (lambda: markov_kl_rate([0.2, 0.7], torch.zeros(2, 2)), "source"),
    (lambda: binary_sequences(21), "`n`"),
    (lambda: mixture_regret_exact(SRC, 18, max_order=8), "`n`"),
    (lambda: mixture_regret(SRC, [4, 2], max_order=1, num_sequences=4, rng=None), "lengths"),
    (lambda: mixture_regret(SRC, [2, 4], max_order=1, num_sequences=1, rng=None), "num_sequences"),
    (lambda: prior_ball_mass(SRC, [0.0, 0.1], max_order=1, num_samples=8, rng=None), "eps"),
    (lambda: prior_ball_mass(SRC, [0.1], max_order=1, num_samples=1, rng=None), "num_samples"),
    (lambda: resolvability_bound("mass", [10]), "mass"),
    (
        lambda: resolvability_bound(
            BallMass(np.ones(1), np.full(1, -np.inf), np.ones(1), np.zeros((1, 1)), np.zeros(1)),
            [10],
        ),
        "mass",
    ),
]


BAD_IDS = [f"{i}-{n.strip('`')}" for i, (_, n) in enumerate(BAD)]


@pytest.mark.parametrize("call,name", BAD, ids=BAD_IDS)
def test_bad_input_is_refused_with_the_argument_named(call, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        call()

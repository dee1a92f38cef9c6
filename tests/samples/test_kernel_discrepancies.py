"""Cauchy–Schwarz (plain, conditional, QMI), MMD and energy distance.

References: full-Gram numpy implementations written here, scikit-learn kernels, scipy's
energy distance, Gaussian closed forms (the kernel expectation
E exp(−‖X−Y‖²/2σ²) = σ^d det(Σ₁+Σ₂+σ²I)^{-1/2} exp(−½Δᵀ(Σ₁+Σ₂+σ²I)^{-1}Δ)), and gradcheck.
Statistical tolerances: 4 standard errors from the Hoeffding projections of each kernel mean
(row/column means of the Gram matrices), combined conservatively (sum of absolute SEs).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.spatial.distance import cdist, pdist
from scipy.special import logsumexp
from scipy.stats import energy_distance as scipy_energy
from sklearn.metrics.pairwise import laplacian_kernel, rbf_kernel

import divergent.samples.kernel as kd
from divergent.samples.kernel import (
    cauchy_schwarz,
    cauchy_schwarz_mutual_information,
    conditional_cauchy_schwarz,
    energy_distance,
    median_heuristic,
    mmd,
)


def gram(a, b, s):
    return np.exp(-cdist(a, b, "sqeuclidean") / (2 * s * s))


def ref_cs(x, y, s):
    return (
        -2 * np.log(gram(x, y, s).mean())
        + np.log(gram(x, x, s).mean())
        + np.log(gram(y, y, s).mean())
    )


def ref_ccs(x, y, yh, sx, sy, squared=True):
    k = gram(x, x, sx)
    den = k.sum(1) ** 2 if squared else (k**2).sum(1)
    s1 = ((k * gram(y, y, sy)).sum(1) / den).sum()
    s2 = ((k * gram(yh, yh, sy)).sum(1) / den).sum()
    s21 = ((k * gram(yh, y, sy)).sum(1) / den).sum()
    return np.log(s1) + np.log(s2) - 2 * np.log(s21)


def ref_qmi(x, t, sx, st):
    k, q = gram(x, x, sx), gram(t, t, st)
    n = len(x)
    return (
        np.log(np.trace(k @ q) / n**2)
        + np.log(k.sum() * q.sum() / n**4)
        - 2 * np.log(np.ones(n) @ k @ q @ np.ones(n) / n**3)
    )


def gauss_kernel_mean(m1, s1, m2, s2, sigma):
    d = len(m1)
    c = s1 + s2 + sigma**2 * np.eye(d)
    dm = m1 - m2
    return sigma**d / math.sqrt(np.linalg.det(c)) * math.exp(-0.5 * dm @ np.linalg.solve(c, dm))


def _se_two(g):  # SE of mean(g) for a two-sample Gram matrix (projections on rows and columns)
    return math.sqrt(g.mean(1).var(ddof=1) / g.shape[0] + g.mean(0).var(ddof=1) / g.shape[1])


def _se_one(g):  # SE of a one-sample U/V mean: 2·SD(row means)/√n
    return 2 * g.mean(1).std(ddof=1) / math.sqrt(g.shape[0])


# ------------------------------------------------------------------ exactness vs brute force
def test_cauchy_schwarz_matches_brute_force_and_properties():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(40, 3)), rng.normal(0.5, 1.2, size=(30, 3))
    for s in (0.3, 1.0, 5.0):
        got = cauchy_schwarz(x, y, s)
        assert got.dtype == torch.float64 and got.dim() == 0
        assert float(got) == pytest.approx(ref_cs(x, y, s), rel=1e-11)
        assert float(cauchy_schwarz(y, x, s)) == pytest.approx(float(got), rel=1e-12)
        assert float(got) > 0
    assert abs(float(cauchy_schwarz(x, x, 1.0))) < 1e-12
    # tiny σ: each mean underflows in a naive implementation; the log-domain one is finite
    assert math.isfinite(float(cauchy_schwarz(x, y, 1e-3)))
    # median heuristic default
    assert float(cauchy_schwarz(x, y)) == pytest.approx(
        ref_cs(x, y, np.median(pdist(np.concatenate([x, y])))), rel=1e-11
    )


@pytest.mark.parametrize("denominator", ["squared_sum", "sum_of_squares"])
def test_conditional_cs_matches_brute_force(denominator):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(50, 3))
    y = np.sin(x[:, :1]) + 0.1 * rng.normal(size=(50, 1))
    yh = 0.8 * np.sin(x[:, :1]) + 0.2 * rng.normal(size=(50, 1))
    got = conditional_cauchy_schwarz(x, y, yh, 0.8, 0.5, denominator=denominator)
    ref = ref_ccs(x, y, yh, 0.8, 0.5, squared=denominator == "squared_sum")
    assert float(got) == pytest.approx(ref, rel=1e-11)
    assert float(conditional_cauchy_schwarz(x, y, y, 0.8, 0.5, denominator=denominator)) == 0.0


def test_conditional_cs_reduces_to_cs_when_x_is_irrelevant():
    rng = np.random.default_rng(2)
    x, y, yh = rng.normal(size=(40, 2)), rng.normal(size=(40, 1)), rng.normal(1, 1, (40, 1))
    for den in ("squared_sum", "sum_of_squares"):
        got = conditional_cauchy_schwarz(x, y, yh, 1e8, 0.7, denominator=den)
        assert float(got) == pytest.approx(float(cauchy_schwarz(y, yh, 0.7)), rel=1e-9)


def test_cs_mutual_information_matches_brute_force():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(45, 2))
    t = x @ rng.normal(size=(2, 3)) + 0.3 * rng.normal(size=(45, 3))
    got = cauchy_schwarz_mutual_information(x, t, 1.0, 1.5)
    assert float(got) == pytest.approx(ref_qmi(x, t, 1.0, 1.5), rel=1e-10)
    assert float(got) > 0
    norm = cauchy_schwarz_mutual_information(x, t, 1.0, 1.5, normalized=True)
    expected = ref_qmi(x, t, 1.0, 1.5) / math.sqrt(
        ref_qmi(x, x, 1.0, 1.0) * ref_qmi(t, t, 1.5, 1.5)
    )
    assert float(norm) == pytest.approx(expected, rel=1e-10)
    # dependence is detected: independent t gives a much smaller value
    t_ind = rng.normal(size=(45, 3))
    assert float(cauchy_schwarz_mutual_information(x, t_ind, 1.0, 1.5)) < 0.5 * float(got)


def test_mmd_matches_sklearn_kernels_and_linear_closed_form():
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(30, 3)), rng.normal(0.3, 1.0, size=(25, 3))
    for kernel, fn in (
        ("gaussian", lambda a, b: rbf_kernel(a, b, gamma=1 / (2 * 0.9**2))),
        ("laplacian", lambda a, b: laplacian_kernel(a, b, gamma=1 / 0.9)),
    ):
        kxx, kyy, kxy = fn(x, x), fn(y, y), fn(x, y)
        n, m = len(x), len(y)
        u = (
            (kxx.sum() - np.trace(kxx)) / (n * (n - 1))
            + (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
            - 2 * kxy.mean()
        )
        v = kxx.mean() + kyy.mean() - 2 * kxy.mean()
        assert float(mmd(x, y, kernel, 0.9)) == pytest.approx(u, rel=1e-11)
        assert float(mmd(x, y, kernel, 0.9, unbiased=False)) == pytest.approx(v, rel=1e-11)
    # linear kernel: the V-statistic is exactly ‖x̄ − ȳ‖²
    lin = lambda a, b: a @ b.T  # noqa: E731
    assert float(mmd(x, y, lin, unbiased=False)) == pytest.approx(
        float(((x.mean(0) - y.mean(0)) ** 2).sum()), rel=1e-10
    )


def test_energy_distance_matches_scipy_1d_and_brute_force_nd():
    rng = np.random.default_rng(5)
    for n, m in ((1, 1), (7, 3), (200, 150)):
        a, b = rng.normal(size=n), rng.exponential(size=m)
        assert float(energy_distance(a, b)) == pytest.approx(scipy_energy(a, b), rel=1e-11)
    a = rng.integers(0, 3, 50).astype(float)  # ties
    b = rng.integers(0, 4, 40).astype(float)
    assert float(energy_distance(a, b)) == pytest.approx(scipy_energy(a, b), rel=1e-11)
    x, y = rng.normal(size=(60, 4)), rng.normal(0.2, 1, size=(50, 4))
    e2 = 2 * cdist(x, y).mean() - cdist(x, x).mean() - cdist(y, y).mean()
    assert float(energy_distance(x, y, squared=True)) == pytest.approx(e2, rel=1e-11)
    assert float(energy_distance(x, y)) == pytest.approx(math.sqrt(e2), rel=1e-11)


def test_median_heuristic():
    rng = np.random.default_rng(6)
    x, y = rng.normal(size=(30, 2)), rng.normal(size=(20, 2))
    z = np.concatenate([x, y])
    assert median_heuristic(x, y) == pytest.approx(np.median(pdist(z)), rel=1e-12)
    assert median_heuristic(x, metric="l1") == pytest.approx(np.median(pdist(x, "cityblock")))
    big = rng.normal(size=(3000, 2))
    assert median_heuristic(big) == median_heuristic(big)  # deterministic subsample
    assert median_heuristic(big) == pytest.approx(np.median(pdist(big[:1500])), rel=0.05)


# ------------------------------------------------------------------ closed forms (Gaussians)
M1, S1 = np.zeros(2), np.diag([1.0, 0.6])
M2, S2 = np.array([0.8, -0.4]), np.array([[1.3, 0.2], [0.2, 0.9]])


def _samples(n, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 2)) @ np.linalg.cholesky(S1).T + M1
    y = rng.standard_normal((n, 2)) @ np.linalg.cholesky(S2).T + M2
    return x, y


def test_cauchy_schwarz_gaussian_closed_form():
    n, sigma = 1500, 0.8
    x, y = _samples(n, 7)
    exx = gauss_kernel_mean(M1, S1, M1, S1, sigma)
    eyy = gauss_kernel_mean(M2, S2, M2, S2, sigma)
    exy = gauss_kernel_mean(M1, S1, M2, S2, sigma)
    # expected V-statistic means include the diagonal (k = 1): 1/n + (1 − 1/n)·E k(X, X')
    vxx, vyy = 1 / n + (1 - 1 / n) * exx, 1 / n + (1 - 1 / n) * eyy
    truth = -2 * math.log(exy) + math.log(vxx) + math.log(vyy)
    gxx, gyy, gxy = gram(x, x, sigma), gram(y, y, sigma), gram(x, y, sigma)
    se = 2 * _se_two(gxy) / gxy.mean() + _se_one(gxx) / gxx.mean() + _se_one(gyy) / gyy.mean()
    got = float(cauchy_schwarz(x, y, sigma))
    assert abs(got - truth) <= 4 * se, (got, truth, se)


def test_mmd_unbiased_gaussian_closed_form():
    n, sigma = 1500, 1.0
    x, y = _samples(n, 8)
    truth = (
        gauss_kernel_mean(M1, S1, M1, S1, sigma)
        + gauss_kernel_mean(M2, S2, M2, S2, sigma)
        - 2 * gauss_kernel_mean(M1, S1, M2, S2, sigma)
    )
    gxx, gyy, gxy = gram(x, x, sigma), gram(y, y, sigma), gram(x, y, sigma)
    se = _se_one(gxx) + _se_one(gyy) + 2 * _se_two(gxy)
    got = float(mmd(x, y, sigma=sigma))
    assert abs(got - truth) <= 4 * se, (got, truth, se)


# ------------------------------------------------------------------ gradients and blocking
def _small(seed, shape):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, dtype=torch.float64, generator=g, requires_grad=True)


@pytest.mark.parametrize("blocked", [False, True])
def test_gradcheck_all(blocked, monkeypatch):
    if blocked:  # 2 rows per block: several blocks, recomputed in backward (checkpointing)
        monkeypatch.setattr(kd, "_BLOCK_ELEMENTS", 2 * 28)
    x, y, yh = _small(0, (7, 2)), _small(1, (6, 2)), _small(2, (7, 2))
    t, t2 = _small(3, (7, 1)), _small(4, (7, 2))
    checks = [
        (lambda a, b: cauchy_schwarz(a, b, 0.9), (x, y)),
        (lambda a, b: mmd(a, b, sigma=0.9), (x, y)),
        (lambda a, b: mmd(a, b, "laplacian", 0.9, unbiased=False), (x, y)),
        (lambda a, b: energy_distance(a, b), (x, y)),
        (lambda a, b, c: conditional_cauchy_schwarz(a, b, c, 0.9, 0.7), (x, yh, t2)),
        (lambda a, b: cauchy_schwarz_mutual_information(a, b, 0.9, 0.6, normalized=True), (x, t)),
    ]
    for fn, args in checks:
        assert torch.autograd.gradcheck(fn, args)


def test_blocked_values_equal_unblocked(monkeypatch):
    rng = np.random.default_rng(9)
    x, y = torch.from_numpy(rng.normal(size=(23, 2))), torch.from_numpy(rng.normal(size=(17, 2)))
    yh = torch.from_numpy(rng.normal(size=(23, 2)))
    fns = [
        lambda: cauchy_schwarz(x, y, 0.7),
        lambda: mmd(x, y, sigma=0.7),
        lambda: energy_distance(x, y),
        lambda: conditional_cauchy_schwarz(x, yh, x, 0.7, 0.5),
        lambda: cauchy_schwarz_mutual_information(x, yh, 0.7, 0.5),
    ]
    full = [f() for f in fns]
    monkeypatch.setattr(kd, "_BLOCK_ELEMENTS", 3)
    for f, v in zip(fns, full):
        torch.testing.assert_close(f(), v, rtol=1e-12, atol=1e-12)


def test_energy_distance_gradient_with_duplicates_is_finite():
    x = torch.tensor([[0.0, 1.0], [0.0, 1.0], [2.0, 0.0]], dtype=torch.float64, requires_grad=True)
    energy_distance(x, x.detach() + 0.5).backward()
    assert torch.isfinite(x.grad).all()
    z = torch.zeros(3, 1, dtype=torch.float64, requires_grad=True)
    energy_distance(z, z.detach()).backward()  # zero distance: gradient 0, not NaN
    assert torch.equal(z.grad, torch.zeros_like(z))


def test_float32_inputs_stay_float32():
    x = torch.randn(20, 2)
    assert cauchy_schwarz(x, x + 1, 1.0).dtype == torch.float32
    assert mmd(x.half(), x.half() + 1, sigma=1.0).dtype == torch.float32
    assert logsumexp([0.0]) == 0.0  # (scipy import used by the references)


def test_errors_name_the_argument():
    x, y = np.zeros((4, 2)), np.ones((3, 2))
    with pytest.raises(ValueError, match="`sigma`"):
        cauchy_schwarz(x, y, sigma=0.0)
    with pytest.raises(ValueError, match="same dimension"):
        mmd(x, np.ones((3, 3)))
    with pytest.raises(ValueError, match="`kernel`"):
        mmd(x, y, kernel="cosine")
    with pytest.raises(ValueError, match="`sigma`"):
        mmd(x, y, kernel=lambda a, b: a @ b.T, sigma=1.0)
    with pytest.raises(ValueError, match="unbiased"):
        mmd(x[:1], y, sigma=1.0)
    with pytest.raises(ValueError, match="`denominator`"):
        conditional_cauchy_schwarz(x, x, x, 1.0, 1.0, denominator="sum")
    with pytest.raises(ValueError, match="same number of rows"):
        conditional_cauchy_schwarz(x, y, y, 1.0, 1.0)
    with pytest.raises(ValueError, match="same shape"):
        conditional_cauchy_schwarz(x, x, x[:, :1], 1.0, 1.0)
    with pytest.raises(ValueError, match="same number of rows"):
        cauchy_schwarz_mutual_information(x, y)
    with pytest.raises(ValueError, match="identical"):
        median_heuristic(np.ones((5, 2)))
    with pytest.raises(ValueError, match="`metric`"):
        median_heuristic(x, metric="cosine")
    with pytest.raises(ValueError, match="`squared`"):
        energy_distance(x, y, squared=1)


def test_mmd_squared_keyword():
    """Issue 8 §1: `mmd` says whether it is squared (default True, as before)."""
    g = torch.Generator().manual_seed(4)
    x, y = torch.randn(30, 2, generator=g), torch.randn(25, 2, generator=g) + 2.0
    for unbiased in (True, False):
        sq = mmd(x, y, sigma=1.0, unbiased=unbiased)
        assert float(sq) > 0
        assert torch.equal(sq, mmd(x, y, sigma=1.0, unbiased=unbiased, squared=True))
        root = mmd(x, y, sigma=1.0, unbiased=unbiased, squared=False)
        torch.testing.assert_close(root, sq.sqrt())
    # the unbiased estimate can be negative (here: P = Q): its root is 0 with gradient 0
    xs = torch.randn(20, 2, generator=g, dtype=torch.float64).requires_grad_(True)
    ys = torch.randn(20, 2, generator=g, dtype=torch.float64)
    sq = mmd(xs, ys, sigma=1.0)
    root = mmd(xs, ys, sigma=1.0, squared=False)
    assert float(sq.detach()) < 0  # this seed: the unbiased estimate is below 0
    assert float(root.detach()) == 0.0
    (grad,) = torch.autograd.grad(root, xs)
    assert bool((grad == 0).all())
    with pytest.raises(ValueError, match="`squared`"):
        mmd(x, y, squared="yes")


def test_sigma_uses_the_shared_positive_check():
    x, y = np.zeros((4, 2)), np.ones((3, 2))
    for bad in (float("nan"), float("inf"), -1.0, True, "1"):
        with pytest.raises(ValueError, match="`sigma` must be a finite number > 0 or None"):
            mmd(x, y, sigma=bad)

"""kNN estimators: exactness against a naive numpy reference, Gaussian closed forms, properties.

References: an O(n²) numpy/scipy implementation of the same formulas written independently
below; closed forms for Gaussians (KL, entropy, Rényi; the Rényi one checked by quadrature);
``universal-divergence`` when installed (the estimator the benchmark compares against).

Statistical tests use fixed seeds and R independent replicates; the tolerance is 4 standard
errors of the replicate mean (SE = sample SD / √R). At d = 2 and n = 3000 the estimators' bias
is far below that (measured: < 0.3 SE for KL), so the bound tests the value, not the noise.
"""

from __future__ import annotations

import inspect
import math

import numpy as np
import pytest
import torch
from scipy import integrate
from scipy.spatial.distance import cdist
from scipy.special import digamma, gammaln

from divergent.samples import knn as knn_module


# the estimators return 0-d tensors; these tests compare numbers
def knn_kl(*args, **kwargs):
    out = knn_module.knn_kl(*args, **kwargs)
    return out if kwargs.get("return_ci") else float(out)


def knn_entropy(*args, **kwargs):
    out = knn_module.knn_entropy(*args, **kwargs)
    return out if kwargs.get("return_ci") else float(out)


def knn_renyi(*args, **kwargs):
    out = knn_module.knn_renyi(*args, **kwargs)
    return out if kwargs.get("return_ci") else float(out)


# ------------------------------------------------------------------ independent references
def _positive_sorted(row: np.ndarray) -> np.ndarray:
    return np.sort(row[row > 0])


def ref_knn_kl(x, y, k=1, bias_correction=True):
    n, d = x.shape
    m = y.shape[0]
    dxx, dxy = cdist(x, x), cdist(x, y)
    logs, digs = [], []
    for i in range(n):
        px, py = _positive_sorted(dxx[i]), _positive_sorted(dxy[i])
        rho, nu = px[k - 1], py[k - 1]
        if not bias_correction:
            logs.append(math.log(nu / rho))
            continue
        eps = max(rho, nu)
        li, ki = int((px <= eps).sum()), int((py <= eps).sum())
        logs.append(math.log(py[ki - 1] / px[li - 1]))
        digs.append(digamma(li) - digamma(ki))
    out = d * np.mean(logs) + math.log(m / (n - 1))
    return out + (np.mean(digs) if bias_correction else 0.0)


def ref_knn_entropy(x, k=1):
    n, d = x.shape
    dxx = cdist(x, x)
    rho = np.array([_positive_sorted(dxx[i])[k - 1] for i in range(n)])
    log_vd = d / 2 * math.log(math.pi) - gammaln(d / 2 + 1)
    return digamma(n) - digamma(k) + log_vd + d * np.mean(np.log(rho))


def ref_knn_renyi(x, y, a, k=1):
    n, d = x.shape
    m = y.shape[0]
    dxx, dxy = cdist(x, x), cdist(x, y)
    rho = np.array([_positive_sorted(dxx[i])[k - 1] for i in range(n)])
    nu = np.array([_positive_sorted(dxy[i])[k - 1] for i in range(n)])
    b = math.gamma(k) ** 2 / (math.gamma(k - a + 1) * math.gamma(k + a - 1))
    inner = b * np.mean(((n - 1) * rho**d / (m * nu**d)) ** (1 - a))
    return math.log(inner) / (a - 1)


def gauss_kl(m1, s1, m2, s2):
    d = len(m1)
    is2 = np.linalg.inv(s2)
    dm = m2 - m1
    return 0.5 * (
        np.trace(is2 @ s1) + dm @ is2 @ dm - d + np.log(np.linalg.det(s2) / np.linalg.det(s1))
    )


def gauss_renyi(a, m1, s1, m2, s2):
    sa = a * s2 + (1 - a) * s1
    dm = m2 - m1
    return a / 2 * dm @ np.linalg.solve(sa, dm) - np.log(
        np.linalg.det(sa) / (np.linalg.det(s1) ** (1 - a) * np.linalg.det(s2) ** a)
    ) / (2 * (a - 1))


def gauss_entropy(s):
    return 0.5 * np.log(np.linalg.det(2 * np.pi * np.e * s))


# ------------------------------------------------------------------ exactness
@pytest.mark.parametrize("method", ["tree", "brute"])
@pytest.mark.parametrize("k", [1, 3])
def test_matches_naive_reference(method, k):
    rng = np.random.default_rng(k)
    x = rng.normal(size=(80, 3))
    y = rng.normal(0.4, 1.3, size=(70, 3))
    for bc in (False, True):
        assert knn_kl(x, y, k=k, bias_correction=bc, method=method) == pytest.approx(
            ref_knn_kl(x, y, k, bc), rel=1e-12, abs=1e-12
        )
    assert knn_entropy(x, k=k, method=method) == pytest.approx(ref_knn_entropy(x, k), rel=1e-12)
    for a in (0.5, 1.7):
        assert knn_renyi(x, y, a, k=k, method=method) == pytest.approx(
            ref_knn_renyi(x, y, a, k), rel=1e-10
        )


@pytest.mark.parametrize("method", ["tree", "brute"])
def test_duplicates_skip_zero_distances(method):
    # integer grid data: many exact duplicates and exact distance ties (all methods agree
    # bit-for-bit on sqrt of integers, so ties are resolved identically)
    rng = np.random.default_rng(5)
    x = rng.integers(0, 4, size=(120, 2)).astype(float)
    y = rng.integers(0, 5, size=(90, 2)).astype(float)
    for k in (1, 2):
        for bc in (False, True):
            got = knn_kl(x, y, k=k, bias_correction=bc, method=method, duplicates="skip")
            assert math.isfinite(got)
            assert got == pytest.approx(ref_knn_kl(x, y, k, bc), rel=1e-12, abs=1e-12)
        assert knn_entropy(x, k=k, method=method, duplicates="skip") == pytest.approx(
            ref_knn_entropy(x, k)
        )


def test_same_sample_gives_exactly_log_n_over_n_minus_one():
    # KL(x‖x): the point itself is skipped in both sets, so ν_k = ρ_k and l_i = k_i
    x = np.random.default_rng(0).normal(size=(500, 4))
    for bc in (False, True):
        got = knn_kl(x, x, bias_correction=bc, duplicates="skip")
        assert got == pytest.approx(math.log(500 / 499), rel=1e-12)


def test_tree_and_brute_agree_with_heavy_ties_in_y():
    # rows of x that coincide with rows of y trigger the exact fallback in the tree path
    rng = np.random.default_rng(6)
    y = rng.normal(size=(300, 2))
    x = np.concatenate([y[:100], rng.normal(size=(200, 2))])
    for bc in (False, True):
        a = knn_kl(x, y, bias_correction=bc, method="tree", duplicates="skip")
        b = knn_kl(x, y, bias_correction=bc, method="brute", duplicates="skip")
        assert a == pytest.approx(b, rel=1e-12)


def test_ball_fallback_paths_match_reference(monkeypatch):
    # force the slow paths of the tree search: no extra neighbours in the first pass, at most
    # one widening, then cKDTree ball queries (normally only for very crowded balls)
    knn_mod = knn_module

    monkeypatch.setattr(knn_mod, "_BALL_EXTRA", 0)
    monkeypatch.setattr(knn_mod, "_MAX_REQUERY", 4)
    rng = np.random.default_rng(12)
    x = rng.normal(size=(150, 3))
    y = rng.normal(0.0, 0.3, size=(120, 3))  # narrow Q: crowded Y-balls around central x
    for k in (1, 2):
        assert knn_kl(x, y, k=k, method="tree") == pytest.approx(
            ref_knn_kl(x, y, k, True), rel=1e-12
        )


def test_universal_divergence_agrees():
    import universal_divergence as ud

    rng = np.random.default_rng(7)
    x, y = rng.normal(size=(150, 2)), rng.normal(0.5, 1, size=(130, 2))
    assert knn_kl(x, y, bias_correction=False) == pytest.approx(ud.estimate(x, y, k=1), rel=1e-10)
    assert knn_kl(x, y) == pytest.approx(ud.estimate(x, y), rel=1e-10)  # adaptive (k=None)


# ------------------------------------------------------------------ closed forms
S1 = np.diag([1.0, 0.5])
M2 = np.array([0.5, -0.3])
S2 = np.array([[1.5, 0.3], [0.3, 1.0]])


def _replicates(fn, n=3000, reps=8, seed=11):
    rng = np.random.default_rng(seed)
    l1, l2 = np.linalg.cholesky(S1), np.linalg.cholesky(S2)
    vals = []
    for _ in range(reps):
        x = rng.standard_normal((n, 2)) @ l1.T
        y = rng.standard_normal((n, 2)) @ l2.T + M2
        vals.append(fn(x, y))
    vals = np.array(vals)
    return vals.mean(), vals.std(ddof=1) / math.sqrt(reps)


@pytest.mark.parametrize("bc", [True, False])
def test_kl_gaussians_within_sampling_error(bc):
    truth = gauss_kl(np.zeros(2), S1, M2, S2)
    mean, se = _replicates(lambda x, y: knn_kl(x, y, bias_correction=bc))
    assert abs(mean - truth) <= 4 * se, (mean, truth, se)


def test_entropy_gaussian_within_sampling_error():
    mean, se = _replicates(lambda x, y: knn_entropy(x, k=2))
    assert abs(mean - gauss_entropy(S1)) <= 4 * se


@pytest.mark.parametrize("a", [0.5, 1.5])
def test_renyi_gaussians_within_sampling_error(a):
    truth = gauss_renyi(a, np.zeros(2), S1, M2, S2)
    mean, se = _replicates(lambda x, y: knn_renyi(x, y, a, k=2))
    assert abs(mean - truth) <= 4 * se, (mean, truth, se)


@pytest.mark.parametrize("a", [0.3, 1.6])
def test_gaussian_renyi_reference_by_quadrature(a):
    # the closed form used above, checked in 1-D by numerical integration
    m1, v1, m2, v2 = 0.0, 0.7, 0.8, 1.9
    p = lambda t: math.exp(-((t - m1) ** 2) / (2 * v1)) / math.sqrt(2 * math.pi * v1)  # noqa: E731
    q = lambda t: math.exp(-((t - m2) ** 2) / (2 * v2)) / math.sqrt(2 * math.pi * v2)  # noqa: E731
    val, _ = integrate.quad(lambda t: p(t) ** a * q(t) ** (1 - a), -30, 30, epsabs=1e-13)
    closed = gauss_renyi(a, np.array([m1]), np.array([[v1]]), np.array([m2]), np.array([[v2]]))
    assert closed == pytest.approx(math.log(val) / (a - 1), rel=1e-9)


def test_consistency_error_shrinks_with_n():
    # P = N(0, I₃), Q = N(0, ¼ I₃): KL = 1.5·(4 − 1 − log 4) ≈ 2.42. P's tails sit where Q has
    # few samples, so the small-n bias is large (≈ −1.7 at n = 250, ≈ −1.0 at n = 8000,
    # measured; SE ≈ 0.035 for both designs below): the error must shrink by > 3 SE.
    rng = np.random.default_rng(3)
    d, s = 3, 0.5
    truth = 0.5 * d * (1 / s**2 - 1 + 2 * math.log(s))

    def errors(n, reps):
        e = [
            knn_kl(
                rng.standard_normal((n, d)), s * rng.standard_normal((n, d)), bias_correction=False
            )
            - truth
            for _ in range(reps)
        ]
        return np.mean(e), np.std(e, ddof=1) / math.sqrt(reps)

    e_small, se_small = errors(250, 16)
    e_large, se_large = errors(8000, 2)
    assert e_small < -3 * se_small  # the small-n bias is real (so the comparison is not vacuous)
    assert abs(e_large) + 3 * math.hypot(se_small, se_large) < abs(e_small)


# ------------------------------------------------------------------ invariances / inputs
def test_invariances():
    rng = np.random.default_rng(8)
    x, y = rng.normal(size=(400, 3)), rng.normal(0.3, 1.2, size=(350, 3))
    base = knn_kl(x, y)
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    shift = np.array([5.0, -2.0, 1.0])
    assert knn_kl(x @ q.T + shift, y @ q.T + shift) == pytest.approx(base, rel=1e-9)
    assert knn_kl(3.0 * x, 3.0 * y) == pytest.approx(base, rel=1e-9)
    perm = rng.permutation(400)
    assert knn_kl(x[perm], y) == pytest.approx(base, rel=1e-12)
    # entropy: h(cX) = h(X) + d log c
    assert knn_entropy(3.0 * x) == pytest.approx(knn_entropy(x) + 3 * math.log(3.0), rel=1e-10)


def test_numpy_torch_and_1d_inputs():
    rng = np.random.default_rng(9)
    x, y = rng.normal(size=300), rng.normal(1.0, 1.0, size=250)
    a = knn_kl(x, y)
    assert knn_kl(torch.from_numpy(x), torch.from_numpy(y)) == a
    assert knn_kl(x[:, None], y[:, None]) == a
    assert knn_kl(torch.from_numpy(x).float(), torch.from_numpy(y).float()) == pytest.approx(
        a, rel=1e-5
    )


def test_confidence_interval():
    rng = np.random.default_rng(10)
    x, y = rng.normal(size=(2000, 2)), rng.normal(0.5, 1.0, size=(2000, 2))
    res = knn_kl(x, y, return_ci=True, n_subsamples=100)
    assert res.value == knn_kl(x, y)
    assert res.low < res.value < res.high and res.level == 0.95
    # a 95% interval should contain the truth (0.25) for this seed, and its width should be
    # of the order of 2·1.96·SD of the estimator (SD ≈ 0.03 at n = 2000, d = 2, measured
    # from replicates in the Gaussian tests above): within a factor 2
    assert res.low <= 0.25 <= res.high
    assert 0.5 * 3.92 * 0.03 <= res.high - res.low <= 2 * 3.92 * 0.03 * math.sqrt(1.5)
    h = knn_entropy(x, return_ci=True, n_subsamples=50, ci_level=0.9)
    assert h.low < h.value < h.high and h.level == 0.9


# ------------------------------------------------------------------ errors
def test_errors_name_the_argument():
    x, y = np.zeros((5, 2)) + np.arange(5)[:, None], np.ones((4, 2)) * np.arange(4)[:, None]
    with pytest.raises(ValueError, match="`k`"):
        knn_kl(x, y, k=5)
    with pytest.raises(ValueError, match="`k`"):
        knn_kl(x, y, k=0)
    with pytest.raises(ValueError, match="same dimension"):
        knn_kl(x, np.ones((4, 3)))
    with pytest.raises(ValueError, match=r"`x`.*NaN"):
        knn_kl(np.full((5, 2), np.nan), y)
    with pytest.raises(ValueError, match=r"`y`.*2-D"):
        knn_kl(x, np.ones((2, 2, 2)))
    with pytest.raises(ValueError, match="`method`"):
        knn_kl(x, y, method="ball")
    with pytest.raises(ValueError, match="`workers`"):
        knn_kl(x, y, workers=0)
    with pytest.raises(ValueError, match="`bias_correction`"):
        knn_kl(x, y, bias_correction="yes")
    with pytest.raises(ValueError, match=r"`order`.*knn_kl"):
        knn_renyi(x, y, 1.0)
    with pytest.raises(ValueError, match="`order`"):
        knn_renyi(x, y, 2.5, k=1)
    with pytest.raises(ValueError, match="`x`"):
        knn_entropy(np.ones(1))
    with pytest.raises(ValueError, match="`ci_level`"):
        knn_entropy(x, return_ci=True, ci_level=1.5)
    # all points identical: refused as duplicates, and with duplicates="skip" no point is
    # at positive distance
    with pytest.raises(ValueError, match="6 of the 6 points of `x` have an exact copy"):
        knn_kl(np.ones((6, 2)), y)
    with pytest.raises(ValueError, match="positive distance"):
        knn_kl(np.ones((6, 2)), y, duplicates="skip")


# ------------------------------------------------------------------ the estimator contract
def test_results_are_tensors_in_the_inputs_dtype():
    """knn_* return 0-d tensors like every sample estimator (issue 8 §1)."""
    rng = np.random.default_rng(21)
    x, y = rng.normal(size=(200, 2)), rng.normal(0.3, 1.0, size=(150, 2))
    for fn, args in (
        (knn_module.knn_kl, (x, y)),
        (knn_module.knn_renyi, (x, y, 0.5)),
        (knn_module.knn_entropy, (x,)),
    ):
        out = fn(*args)
        assert isinstance(out, torch.Tensor) and out.dim() == 0 and out.dtype == torch.float64
        f32 = fn(*[torch.from_numpy(a).float() if isinstance(a, np.ndarray) else a for a in args])
        assert f32.dtype == torch.float32
        assert float(f32) == pytest.approx(float(out), rel=1e-5)
    ci = knn_module.knn_kl(x, y, return_ci=True, n_subsamples=20)
    assert all(isinstance(v, float) for v in ci)


def test_integer_inputs_are_handled_like_floats():
    """numpy and torch integer inputs become float64 in every sample estimator."""
    import divergent

    rng = np.random.default_rng(22)
    # distinct integer points: a shuffled grid (no duplicates)
    grid = np.stack(np.meshgrid(np.arange(40), np.arange(40)), -1).reshape(-1, 2)
    xi = grid[rng.permutation(len(grid))[:300]]
    yi = grid[rng.permutation(len(grid))[:250]] + np.array([100, 0])  # disjoint from x
    xf, yf = xi.astype(np.float64), yi.astype(np.float64)
    for convert in (lambda a: a, torch.from_numpy):
        a, b = convert(xi), convert(yi)
        assert float(knn_module.knn_kl(a, b)) == float(knn_module.knn_kl(xf, yf))
        assert float(knn_module.knn_entropy(a)) == float(knn_module.knn_entropy(xf))
        for fn in (divergent.mmd, divergent.cauchy_schwarz, divergent.energy_distance):
            got = fn(a, b) if fn is divergent.energy_distance else fn(a, b, sigma=3.0)
            want = fn(xf, yf) if fn is divergent.energy_distance else fn(xf, yf, sigma=3.0)
            assert got.dtype == torch.float64
            assert float(got) == pytest.approx(float(want), rel=1e-12)
        assert float(divergent.kde_kl(a, b, bandwidth=2.0)) == pytest.approx(
            float(divergent.kde_kl(xf, yf, bandwidth=2.0)), rel=1e-12
        )


def test_duplicates_are_refused_with_their_count():
    rng = np.random.default_rng(23)
    x = rng.normal(size=(50, 2))
    y = rng.normal(size=(40, 2))
    x[3] = x[7]  # one pair of copies within x: 2 points
    x[10] = y[5]  # one point of x equal to a point of y
    with pytest.raises(
        ValueError,
        match=r"2 of the 50 points of `x` have an exact copy in `x`; "
        r"1 have an exact copy in `y`.*duplicates='skip'",
    ):
        knn_module.knn_kl(x, y)
    with pytest.raises(ValueError, match=r"2 of the 50 points"):
        knn_module.knn_renyi(x, y, 0.5)
    with pytest.raises(ValueError, match=r"2 of the 50 points of `x` have an exact copy in `x`"):
        knn_module.knn_entropy(x)
    # the documented convention on request: finite, equal to the zero-skipping reference
    assert knn_kl(x, y, duplicates="skip") == pytest.approx(ref_knn_kl(x, y), rel=1e-12)
    # copies within y alone give no zero distance and are accepted
    y2 = np.concatenate([y, y[:5]])
    assert math.isfinite(knn_kl(rng.normal(size=(30, 2)), y2))
    with pytest.raises(ValueError, match="`duplicates`"):
        knn_module.knn_kl(x, y, duplicates="ignore")


def test_rounded_data_was_negative_and_is_now_refused():
    """The issue's case: ties from rounding gave a negative KL without a word."""
    rng = np.random.default_rng(24)
    x = np.round(rng.normal(size=(400, 1)), 1)
    y = np.round(rng.normal(size=(400, 1)), 1)
    assert knn_kl(x, y, duplicates="skip") < 0  # the old silent answer (truth: 0)
    with pytest.raises(ValueError, match="exact copy"):
        knn_module.knn_kl(x, y)


def test_scalar_arguments_use_the_shared_check():
    x, y = np.arange(10.0)[:, None], np.arange(8.0)[:, None] + 0.5
    for bad in (float("nan"), -1.0, True, "2"):
        with pytest.raises(ValueError, match="`order`"):
            knn_module.knn_renyi(x, y, bad)
    with pytest.raises(ValueError, match="`ci_level`"):
        knn_module.knn_kl(x, y, return_ci=True, ci_level=float("nan"))


_SHARED = [
    ("method", "auto"),
    ("workers", 1),
    ("duplicates", "raise"),
    ("return_ci", False),
    ("ci_level", 0.95),
    ("n_subsamples", 200),
    ("seed", 0),
]


_EMPTY = inspect.Parameter.empty


@pytest.mark.parametrize(
    ("name", "head", "n_args"),
    [
        ("knn_kl", [("x", _EMPTY), ("y", _EMPTY), ("k", 1), ("bias_correction", True)], 2),
        ("knn_renyi", [("x", _EMPTY), ("y", _EMPTY), ("order", _EMPTY), ("k", 1)], 3),
        ("knn_entropy", [("x", _EMPTY), ("k", 1)], 1),
    ],
)
def test_knn_signatures_spell_out_the_shared_keywords(name: str, head: list, n_args: int) -> None:
    """The shared keywords come through ``**options`` but show as keyword-only parameters."""
    estimator = getattr(knn_module, name)
    sig = inspect.signature(estimator)
    want = [(n, inspect.Parameter.POSITIONAL_OR_KEYWORD, d) for n, d in head]
    want += [(n, inspect.Parameter.KEYWORD_ONLY, d) for n, d in _SHARED]
    assert [(p.name, p.kind, p.default) for p in sig.parameters.values()] == want
    x = np.random.default_rng(0).normal(size=(20, 2))
    args = [x, x, 0.5][:n_args]
    with pytest.raises(TypeError, match=rf"{name}\(\) got an unexpected keyword argument 'foo'"):
        estimator(*args, foo=1)

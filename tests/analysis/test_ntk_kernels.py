"""The NTK tools (divergent.analysis.ntk, divergent.train.ntk_regression) against independent
references: explicit float64 Jacobians, closed forms, Monte Carlo (numpy) and wide networks,
the ODE integrated numerically, and exact gradient descent on a linear model."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp
from torch import nn

from divergent.analysis.ntk import (
    NTKMLP,
    empirical_ntk,
    linearized_prediction,
    relu_gaussian_expectations,
    relu_nngp,
    relu_ntk,
)
from divergent.train.ntk_regression import half_mse, train_mse_gradient_descent


def _jacobian_reference(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """(n·k, P): one autograd.grad call per output entry, parameters flattened in order."""
    params = [p for p in model.parameters() if p.requires_grad]
    out = model(x).reshape(x.shape[0], -1)
    rows = []
    for a in range(out.shape[0]):
        for j in range(out.shape[1]):
            grads = torch.autograd.grad(out[a, j], params, retain_graph=True, allow_unused=True)
            rows.append(
                torch.cat(
                    [
                        (g if g is not None else torch.zeros_like(p)).reshape(-1)
                        for g, p in zip(grads, params)
                    ]
                )
            )
    return torch.stack(rows)


def _reference_ntk(model: nn.Module, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
    j1, j2 = _jacobian_reference(model, x1), _jacobian_reference(model, x2)
    k = j1.shape[0] // x1.shape[0]
    theta = (j1 @ j2.T).reshape(x1.shape[0], k, x2.shape[0], k).permute(0, 2, 1, 3)
    return theta[..., 0, 0] if k == 1 else theta


def _circle(angles) -> torch.Tensor:
    g = torch.as_tensor(angles, dtype=torch.float64)
    return torch.stack([g.cos(), g.sin()], 1)


# --- the empirical kernel ------------------------------------------------------------------


def test_empirical_ntk_matches_explicit_jacobians_multi_output() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 2))
    model = model.double()
    x1, x2 = torch.randn(4, 3, dtype=torch.float64), torch.randn(3, 3, dtype=torch.float64)
    got = empirical_ntk(model, x1, x2)
    assert got.shape == (4, 3, 2, 2)
    torch.testing.assert_close(got, _reference_ntk(model, x1, x2), rtol=1e-12, atol=1e-12)


def test_frozen_parameters_are_left_out() -> None:
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1)).double()
    model[0].weight.requires_grad_(False)
    x = torch.randn(5, 2, dtype=torch.float64)
    got = empirical_ntk(model, x)
    assert got.shape == (5, 5)
    torch.testing.assert_close(got, _reference_ntk(model, x, x), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("widths", [[2, 7, 5, 1], [3, 6, 6, 6, 2], [2, 1]])
@pytest.mark.parametrize("bias", [0.0, 0.1, 1.3])
def test_layerwise_ntk_equals_the_jacobian_reference(widths: list[int], bias: float) -> None:
    net = NTKMLP(widths, bias=bias, generator=torch.Generator().manual_seed(3))
    x1 = torch.randn(4, widths[0], dtype=torch.float64)
    x2 = torch.randn(3, widths[0], dtype=torch.float64)
    ref = _reference_ntk(net, x1, x2)
    torch.testing.assert_close(net.ntk(x1, x2), ref, rtol=1e-11, atol=1e-12)
    torch.testing.assert_close(empirical_ntk(net, x1, x2), ref, rtol=1e-11, atol=1e-12)


def test_ntk_mlp_forward_is_the_ntk_parameterisation() -> None:
    """f(x) = W¹ relu(W⁰x/√n₀ + βb⁰)/√n₁ + βb¹ written out with numpy."""
    net = NTKMLP([3, 4, 2], bias=0.5, generator=torch.Generator().manual_seed(0))
    w0, w1 = (w.detach().numpy() for w in net.weights)
    b0, b1 = (b.detach().numpy() for b in net.biases)
    x = np.random.default_rng(0).normal(size=(5, 3))
    h = np.maximum(x @ w0.T / math.sqrt(3) + 0.5 * b0, 0)
    want = h @ w1.T / 2.0 + 0.5 * b1
    np.testing.assert_allclose(net(torch.from_numpy(x)).detach().numpy(), want, rtol=1e-12)
    # every parameter N(0, 1): the sample moments of a wide layer
    wide = NTKMLP([500, 400, 1], generator=torch.Generator().manual_seed(1))
    w = wide.weights[0].detach()
    assert abs(float(w.mean())) < 0.01 and abs(float(w.std()) - 1) < 0.01


def test_empirical_ntk_is_symmetric_psd() -> None:
    net = NTKMLP([2, 16, 16, 3], generator=torch.Generator().manual_seed(2))
    x = torch.randn(6, 2, dtype=torch.float64)
    theta = empirical_ntk(net, x)
    flat = theta.permute(0, 2, 1, 3).reshape(18, 18)
    torch.testing.assert_close(flat, flat.T, rtol=0, atol=1e-13)
    assert float(torch.linalg.eigvalsh(flat).min()) > -1e-10
    limit = relu_ntk(x, depth=3, bias=0.1)
    torch.testing.assert_close(limit, limit.T, rtol=0, atol=0)
    assert float(torch.linalg.eigvalsh(limit).min()) > 0  # positive definite on distinct inputs


def test_nan_input_gives_nan_rows() -> None:
    net = NTKMLP([2, 4, 1], generator=torch.Generator().manual_seed(0))
    x = torch.tensor([[1.0, 0.0], [math.nan, 0.0], [0.0, 1.0]], dtype=torch.float64)
    for theta in (net.ntk(x), empirical_ntk(net, x), relu_ntk(x, depth=3)):
        assert bool(theta[1].isnan().all()) and bool(theta[:, 1].isnan().all())
        assert bool(theta[[0, 2]][:, [0, 2]].isfinite().all())


# --- the infinite-width limit --------------------------------------------------------------


def _gaussian_pairs(rng: np.random.Generator, cov: np.ndarray, size: int) -> np.ndarray:
    return rng.standard_normal((size, 2)) @ np.linalg.cholesky(cov).T


def test_relu_gaussian_expectations_against_monte_carlo() -> None:
    rng = np.random.default_rng(0)
    for s1, s2, c in [(1.0, 1.0, 0.3), (0.5, 2.0, -0.7), (1.5, 0.8, 1.05)]:
        z = _gaussian_pairs(rng, np.array([[s1, c], [c, s2]]), 200_000)
        mc_e = float((np.maximum(z[:, 0], 0) * np.maximum(z[:, 1], 0)).mean())
        mc_d = float(((z[:, 0] > 0) & (z[:, 1] > 0)).mean())
        e, d = relu_gaussian_expectations(s1, s2, c)
        assert float(e) == pytest.approx(mc_e, abs=8e-3)
        assert float(d) == pytest.approx(mc_d, abs=4e-3)


def test_relu_gaussian_expectations_closed_values() -> None:
    e, d = relu_gaussian_expectations(2.0, 2.0, 2.0)  # u = v: E[relu²] = s/2, P(u > 0) = 1/2
    assert float(e) == pytest.approx(1.0, abs=1e-12) and float(d) == pytest.approx(0.5)
    e, d = relu_gaussian_expectations(1.0, 1.0, -1.0)  # v = −u: never both positive
    assert float(e) == pytest.approx(0.0, abs=1e-12) and float(d) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("depth", [1, 2, 3, 4, 6])
def test_relu_ntk_diagonal_closed_form(depth: int) -> None:
    """β = 0: Θ^(L)(x, x) = L‖x‖²/(n₀ 2^(L−1)); Σ^(L)(x, x) = ‖x‖²/(n₀ 2^(L−1))."""
    x = torch.tensor([[1.0, 0.0, 0.0], [0.6, 0.0, 0.8], [2.0, -1.0, 3.0]], dtype=torch.float64)
    sq = (x**2).sum(1)
    theta = relu_ntk(x, depth=depth, bias=0.0).diagonal()
    torch.testing.assert_close(theta, depth * sq / (3 * 2 ** (depth - 1)))
    torch.testing.assert_close(
        relu_nngp(x, depth=depth, bias=0.0).diagonal(), sq / (3 * 2 ** (depth - 1))
    )


def test_relu_ntk_closed_values_off_the_diagonal() -> None:
    x = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    y = torch.tensor([[0.0, 2.0], [-1.0, 0.0]], dtype=torch.float64)
    # depth 1: the linear kernel x·x'/n₀ + β²
    torch.testing.assert_close(relu_ntk(x, y, depth=1, bias=0.3), (x @ y.T) / 2 + 0.09)
    # depth 2, β = 0: orthogonal inputs give √(s s')/(2π), antipodal inputs 0
    got = relu_ntk(x, y, depth=2, bias=0.0)
    want = torch.tensor([[math.sqrt(0.5 * 2.0) / (2 * math.pi), 0.0]], dtype=torch.float64)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-15)


def test_relu_ntk_recursion_against_a_monte_carlo_recursion() -> None:
    """Each layer's expectations by sampling (numpy), never the arc-cosine formulas."""
    rng = np.random.default_rng(1)
    a = np.array([0.8, -0.6])
    b = np.array([0.2, 1.1])
    beta2, n0, depth = 0.1**2, 2, 4
    sig = np.array([[a @ a, a @ b], [a @ b, b @ b]]) / n0 + beta2
    theta = sig[0, 1]
    for _ in range(depth - 1):
        z = _gaussian_pairs(rng, sig, 250_000)
        r = np.maximum(z, 0)
        dot = float(((z[:, 0] > 0) & (z[:, 1] > 0)).mean())
        new = (r.T @ r) / len(z) + beta2
        theta = theta * dot + new[0, 1]
        sig = new
    got = relu_ntk(torch.from_numpy(a[None]), torch.from_numpy(b[None]), depth=depth, bias=0.1)
    assert float(got) == pytest.approx(theta, rel=1e-2)
    nngp = relu_nngp(torch.from_numpy(a[None]), torch.from_numpy(b[None]), depth=depth, bias=0.1)
    assert float(nngp) == pytest.approx(sig[0, 1], rel=1e-2)


def test_wide_networks_average_to_the_limit() -> None:
    x = _circle([0.0, 0.7, 1.6, 3.0])
    limit = relu_ntk(x, depth=4, bias=0.1)
    kernels = torch.stack(
        [
            NTKMLP([2, 1024, 1024, 1024, 1], generator=torch.Generator().manual_seed(s)).ntk(x)
            for s in range(4)
        ]
    )
    assert float((kernels.mean(0) - limit).abs().max()) < 0.08 * float(limit.max())
    # and a narrow network is further from it than a wide one (concentration)
    narrow = torch.stack(
        [
            NTKMLP([2, 16, 16, 16, 1], generator=torch.Generator().manual_seed(s)).ntk(x)
            for s in range(6)
        ]
    )
    spread_wide = float((kernels - limit).pow(2).mean().sqrt())
    spread_narrow = float((narrow - limit).pow(2).mean().sqrt())
    assert spread_wide < 0.4 * spread_narrow


def test_relu_ntk_is_differentiable_off_the_diagonal() -> None:
    x1 = torch.randn(3, 2, dtype=torch.float64, requires_grad=True)
    x2 = torch.randn(2, 2, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda a: relu_ntk(a, x2, depth=3, bias=0.2), (x1,))


# --- the linearised dynamics ---------------------------------------------------------------


def _problem(seed: int = 0, n: int = 4, m: int = 5):
    x = _circle(np.random.default_rng(seed).uniform(-math.pi, math.pi, n + m))
    k = relu_ntk(x, depth=3, bias=0.1)
    gen = torch.Generator().manual_seed(seed)
    y = torch.randn(n, generator=gen, dtype=torch.float64)
    f0 = 0.3 * torch.randn(n + m, generator=gen, dtype=torch.float64)
    return k[n:, :n], k[:n, :n], y, f0[:n], f0[n:], k


def test_linearized_flow_equals_the_integrated_ode() -> None:
    k_xX, k_XX, y, f0_tr, f0_te, _ = _problem()
    n, eta, t_end = 4, 2.5, 7.0

    def rhs(_t, state):
        grad = (eta / n) * (state[:n] - y.numpy())
        return np.concatenate([-k_XX.numpy() @ grad, -k_xX.numpy() @ grad])

    sol = solve_ivp(rhs, (0, t_end), np.concatenate([f0_tr, f0_te]), rtol=1e-11, atol=1e-12)
    got_te = linearized_prediction(k_xX, k_XX, y, f0_tr, f0_te, time=t_end, lr=eta)
    got_tr = linearized_prediction(k_XX, k_XX, y, f0_tr, f0_tr, time=t_end, lr=eta)
    np.testing.assert_allclose(got_te.numpy(), sol.y[n:, -1], rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(got_tr.numpy(), sol.y[:n, -1], rtol=1e-7, atol=1e-9)
    # f_t(X) = Y + exp(−ηΘt/N)(f₀(X) − Y)
    expm = torch.linalg.matrix_exp(-eta * t_end / n * k_XX)
    torch.testing.assert_close(got_tr, y + expm @ (f0_tr - y))


def test_discrete_prediction_equals_iterated_gradient_descent() -> None:
    k_xX, k_XX, y, f0_tr, f0_te, _ = _problem(1)
    n, eta, steps = 4, 3.0, 37
    f_tr, f_te = f0_tr.clone(), f0_te.clone()
    for _ in range(steps):
        grad = eta / n * (f_tr - y)
        f_tr, f_te = f_tr - k_XX @ grad, f_te - k_xX @ grad
    got = linearized_prediction(k_xX, k_XX, y, f0_tr, f0_te, time=steps, lr=eta, discrete=True)
    torch.testing.assert_close(got, f_te, rtol=1e-10, atol=1e-12)
    # t = 0 is f₀; t → ∞ is kernel regression
    zero = linearized_prediction(k_xX, k_XX, y, f0_tr, f0_te, time=0, lr=eta)
    torch.testing.assert_close(zero, f0_te)
    far = linearized_prediction(k_xX, k_XX, y, f0_tr, f0_te, time=1e6, lr=eta)
    torch.testing.assert_close(far, f0_te + k_xX @ torch.linalg.solve(k_XX, y - f0_tr))


def test_singular_kernel_and_several_outputs() -> None:
    """A duplicated training point (singular Θ(X, X)) is fine; columns are independent."""
    x = _circle([0.3, 0.3, 2.0, -1.0])
    k = relu_ntk(x, depth=3, bias=0.1)
    y = torch.tensor([[1.0, -2.0], [1.0, -2.0], [0.5, 0.0]], dtype=torch.float64)
    f0 = torch.zeros(3, 2, dtype=torch.float64)
    f0_te = torch.zeros(1, 2, dtype=torch.float64)
    both = linearized_prediction(k[3:, :3], k[:3, :3], y, f0, f0_te, time=5.0, lr=1.0)
    assert bool(both.isfinite().all())
    for j in range(2):
        col = linearized_prediction(k[3:, :3], k[:3, :3], y[:, j], f0[:, j], f0_te[:, j], time=5.0)
        torch.testing.assert_close(both[:, j], col)

    def rhs(_t, state):
        grad = (state[:3] - y[:, 0].numpy()) / 3
        return np.concatenate([-k[:3, :3].numpy() @ grad, -k[3:, :3].numpy() @ grad])

    sol = solve_ivp(rhs, (0, 5.0), np.zeros(4), rtol=1e-11, atol=1e-12)
    np.testing.assert_allclose(both[0, 0].item(), sol.y[3, -1], rtol=1e-7)


def test_gradient_descent_on_a_linear_model_is_exactly_the_linearised_prediction() -> None:
    """A model linear in its parameters is its own linearisation: training it with
    train_mse_gradient_descent must land on linearized_prediction(discrete=True)."""
    torch.manual_seed(0)
    features = nn.Sequential(nn.Linear(2, 12), nn.Tanh()).double().requires_grad_(False)
    model = nn.Sequential(features, nn.Linear(12, 1).double())
    x_tr, x_te = torch.randn(5, 2, dtype=torch.float64), torch.randn(7, 2, dtype=torch.float64)
    y = torch.randn(5, 1, dtype=torch.float64)
    k_all = empirical_ntk(model, torch.cat([x_tr, x_te]))
    with torch.no_grad():
        f0_tr, f0_te = model(x_tr), model(x_te)
    want = linearized_prediction(
        k_all[5:, :5], k_all[:5, :5], y, f0_tr, f0_te, time=25, lr=0.05, discrete=True
    )
    losses = train_mse_gradient_descent(model, x_tr, y, lr=0.05, steps=25)
    assert len(losses) == 26 and losses[-1] < losses[0]
    with torch.no_grad():
        torch.testing.assert_close(model(x_te), want, rtol=1e-10, atol=1e-12)


def test_half_mse_and_divergence() -> None:
    assert float(half_mse(torch.tensor([[1.0], [3.0]]), torch.zeros(2, 1))) == pytest.approx(2.5)
    net = NTKMLP([2, 8, 1], generator=torch.Generator().manual_seed(0))
    x = _circle([0.0, 1.0])
    with pytest.raises(FloatingPointError, match="lr"):
        train_mse_gradient_descent(net, x, torch.ones(2, 1, dtype=torch.float64), lr=1e6, steps=50)


def test_nan_in_targets_or_kernel_gives_nan() -> None:
    k_xX, k_XX, y, f0_tr, f0_te, _ = _problem()
    y = y.clone()
    y[0] = math.nan
    assert bool(linearized_prediction(k_xX, k_XX, y, f0_tr, f0_te, time=1.0).isnan().any())
    k_bad = k_XX.clone()
    k_bad[0, 0] = math.nan
    assert bool(linearized_prediction(k_xX, k_bad, y, f0_tr, f0_te, time=1.0).isnan().all())


# --- bad input -----------------------------------------------------------------------------


def test_bad_input_is_refused_with_the_argument_named() -> None:
    net = NTKMLP([2, 3, 1], generator=torch.Generator().manual_seed(0))
    x = torch.zeros(2, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match="`model`"):
        empirical_ntk(lambda t: t, x)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="`model`"):
        empirical_ntk(nn.Linear(2, 1).requires_grad_(False), x)
    with pytest.raises(ValueError, match="`model`"):
        empirical_ntk(nn.Sequential(nn.Linear(2, 4), nn.Unflatten(1, (2, 2))), x.float())
    with pytest.raises(ValueError, match="`x1`"):
        empirical_ntk(net, torch.zeros(2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="`x2`"):
        empirical_ntk(net, x, torch.zeros(2, 3))
    with pytest.raises(ValueError, match="`x2`"):
        relu_ntk(x, torch.zeros(0, 2), depth=2)
    with pytest.raises(ValueError, match="`x1`"):
        net.ntk(torch.zeros(2, 5))
    with pytest.raises(ValueError, match="`x`"):
        net(torch.zeros(2, 5))
    with pytest.raises(ValueError, match="`widths`"):
        NTKMLP([2])
    with pytest.raises(ValueError, match="`widths`"):
        NTKMLP([2, 0, 1])
    with pytest.raises(ValueError, match="`widths`"):
        NTKMLP([2, 3.5, 1])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="`bias`"):
        NTKMLP([2, 3, 1], bias=-0.1)
    with pytest.raises(ValueError, match="`depth`"):
        relu_ntk(x, depth=0)
    with pytest.raises(ValueError, match="`bias`"):
        relu_ntk(x, depth=2, bias=math.nan)
    with pytest.raises(ValueError, match="`x1`"):
        relu_ntk(torch.zeros(3), depth=2)
    with pytest.raises(ValueError, match="`var1`"):
        relu_gaussian_expectations(-1.0, 1.0, 0.0)
    with pytest.raises(ValueError, match="`steps`"):
        train_mse_gradient_descent(net, x, torch.zeros(2, 1), lr=0.1, steps=-1)
    with pytest.raises(ValueError, match="`lr`"):
        train_mse_gradient_descent(net, x, torch.zeros(2, 1), lr=0.0, steps=1)


def test_linearized_prediction_refuses_bad_input() -> None:
    k_xX, k_XX, y, f0_tr, f0_te, _ = _problem()
    ok = dict(time=1.0)
    cases = [
        ((k_xX, k_XX[:3], y, f0_tr, f0_te), ok, "`kernel_train`"),
        ((k_xX, k_XX + torch.triu(torch.ones(4, 4), 1), y, f0_tr, f0_te), ok, "symmetric"),
        ((k_xX[:, :3], k_XX, y, f0_tr, f0_te), ok, "`kernel_test_train`"),
        ((k_xX, k_XX, y[:3], f0_tr, f0_te), ok, "`y_train`"),
        ((k_xX, k_XX, y, f0_tr[:3], f0_te), ok, "`f0_train`"),
        ((k_xX, k_XX, y, f0_tr, f0_te[:2]), ok, "`f0_test`"),
        ((k_xX, k_XX, y, f0_tr, f0_te), dict(time=-1.0), "`time`"),
        ((k_xX, k_XX, y, f0_tr, f0_te), dict(time=1.0, lr=0), "`lr`"),
        ((k_xX, k_XX, y, f0_tr, f0_te), dict(time=1.5, discrete=True), "`time`"),
        ((k_xX, k_XX, y, f0_tr, f0_te), dict(time=1.0, discrete=1), "`discrete`"),
    ]
    for args, kwargs, match in cases:
        with pytest.raises(ValueError, match=match):
            linearized_prediction(*args, **kwargs)


# ------------------------------------------------------------------------------------------
# trial findings: NaN / invalid covariance, types, dtypes, unstable steps
# ------------------------------------------------------------------------------------------
def test_relu_expectations_propagate_nan_in_a_later_position() -> None:
    s1 = torch.tensor([1.0, 2.0, math.nan, 1.0], dtype=torch.float64)
    s2 = torch.tensor([1.0, 1.0, 1.0, 1.0], dtype=torch.float64)
    c = torch.tensor([0.0, 0.5, 0.0, math.nan], dtype=torch.float64)
    e, d = relu_gaussian_expectations(s1, s2, c)
    assert torch.isfinite(e[:2]).all() and torch.isfinite(d[:2]).all()
    assert torch.isnan(e[2:]).all() and torch.isnan(d[2:]).all()
    e0, d0 = relu_gaussian_expectations(math.nan, 1.0, 0.0)
    assert math.isnan(float(e0)) and math.isnan(float(d0))


def test_relu_expectations_refuse_a_correlation_above_one_but_not_rounding() -> None:
    with pytest.raises(ValueError, match="`cov`"):
        relu_gaussian_expectations(1.0, 1.0, 5.0)
    with pytest.raises(ValueError, match="`cov`"):
        relu_gaussian_expectations(1.0, 1.0, -1.001)
    with pytest.raises(ValueError, match="`cov`"):
        relu_gaussian_expectations(0.0, 1.0, 0.1)  # zero variance, nonzero covariance
    # |ρ| = 1 + 1e-9: rounding, clipped to ρ = 1 (E[σ(u)²] = s/2, E[σ'²] = 1/2)
    e, d = relu_gaussian_expectations(2.0, 2.0, 2.0 * (1 + 1e-9))
    assert float(e) == pytest.approx(1.0, rel=1e-6) and float(d) == pytest.approx(0.5)
    e, d = relu_gaussian_expectations(2.0, 2.0, -2.0 * (1 + 1e-9))
    assert float(e) == pytest.approx(0.0, abs=1e-6) and float(d) == pytest.approx(0.0, abs=1e-4)


@pytest.mark.parametrize("bad", ["a", None, True, torch.tensor([True]), torch.tensor([1j])])
def test_relu_expectations_refuse_non_real_input(bad) -> None:
    with pytest.raises(TypeError, match="`var1`"):
        relu_gaussian_expectations(bad, 1.0, 0.0)
    with pytest.raises(TypeError, match="`cov`"):
        relu_gaussian_expectations(1.0, 1.0, bad)


def test_empirical_ntk_names_x_and_the_model_dtype_on_a_mismatch() -> None:
    lin = nn.Linear(2, 1)  # float32
    x32 = torch.randn(3, 2)
    with pytest.raises(ValueError, match=r"`x1` has dtype torch.float64.*torch.float32"):
        empirical_ntk(lin, x32.double())
    with pytest.raises(ValueError, match=r"`x2` has dtype torch.float64.*torch.float32"):
        empirical_ntk(lin, x32, x32.double())
    torch.testing.assert_close(
        empirical_ntk(lin.double(), x32.double()), empirical_ntk(lin.double(), x32.double())
    )


@pytest.mark.parametrize("dtype", [torch.long, torch.bool, torch.complex64, "float64"])
def test_ntk_mlp_dtype_must_be_floating(dtype) -> None:
    with pytest.raises(ValueError, match="`dtype`"):
        NTKMLP([2, 4, 1], dtype=dtype)
    assert NTKMLP([2, 4, 1], dtype=torch.float32).weights[0].dtype == torch.float32


def test_linearized_gradient_descent_refuses_an_unstable_step() -> None:
    k_xX, k_XX, y, f0_tr, f0_te, _ = _problem()
    n = k_XX.shape[0]
    lam_max = float(torch.linalg.eigvalsh(k_XX.double()).max())
    edge = 2 * n / lam_max  # η·λ_max/N = 2
    args = (k_xX, k_XX, y, f0_tr, f0_te)
    with pytest.raises(ValueError, match="`lr`"):
        linearized_prediction(*args, time=10, lr=1000.0, discrete=True)
    with pytest.raises(ValueError, match="`lr`"):
        linearized_prediction(*args, time=10, lr=edge * 1.001, discrete=True)
    ok = linearized_prediction(*args, time=10, lr=edge * 0.999, discrete=True)
    assert torch.isfinite(ok).all()
    # the flow has no step-size limit
    assert torch.isfinite(linearized_prediction(*args, time=10, lr=1000.0)).all()

"""Unlearning on softmax-regression ensembles (divergent.train.unlearning) against autograd and
exact minimisers."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from divergent.train.unlearning import (
    LinearEnsemble,
    _retain_hessian,
    fine_tune,
    gradient_ascent,
    influence_retrained,
    match_outputs,
    predict_retrained_logits,
    train_linear_ensemble,
)


def _data(n=60, d=4, c=3, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=dtype)
    w = torch.randn(d, c, generator=g, dtype=dtype) * 2
    y = (x @ w + 0.5 * torch.randn(n, c, generator=g, dtype=dtype)).argmax(-1)
    return x, y, g


def _objective(weight, bias, x, y, lam):
    """Mean cross-entropy + λ/2 ‖θ‖² of one model, by autograd-able torch ops."""
    return F.cross_entropy(x @ weight + bias, y) + 0.5 * lam * (
        weight.square().sum() + bias.square().sum()
    )


def _minimise(x, y, c, lam, init=None):
    """The exact minimiser of the regularised objective (L-BFGS to gradient 1e-12)."""
    w = torch.zeros(x.shape[1], c, dtype=x.dtype, requires_grad=True)
    b = torch.zeros(c, dtype=x.dtype, requires_grad=True)
    opt = torch.optim.LBFGS(
        [w, b],
        max_iter=500,
        tolerance_grad=1e-13,
        tolerance_change=0,
        line_search_fn="strong_wolfe",
    )

    def closure():
        opt.zero_grad()
        loss = _objective(w, b, x, y, lam)
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach(), b.detach()


def test_one_full_batch_step_is_the_autograd_sgd_step() -> None:
    x, y, g = _data()
    init = LinearEnsemble(
        torch.randn(3, 4, 3, generator=g, dtype=torch.float64),
        torch.randn(3, 3, generator=g, dtype=torch.float64),
    )
    out = train_linear_ensemble(
        x, y, 3, n_classes=3, epochs=1, batch_size=60, lr=0.3, weight_decay=0.05, init=init
    )
    for s in range(3):
        w = init.weight[s].clone().requires_grad_()
        b = init.bias[s].clone().requires_grad_()
        gw, gb = torch.autograd.grad(_objective(w, b, x, y, 0.05), (w, b))
        torch.testing.assert_close(out.weight[s], init.weight[s] - 0.3 * gw)
        torch.testing.assert_close(out.bias[s], init.bias[s] - 0.3 * gb)


def test_training_is_seeded_and_seeds_differ() -> None:
    x, y, _ = _data(dtype=torch.float32)
    kw = {"n_classes": 3, "epochs": 3, "batch_size": 8}
    a = train_linear_ensemble(x, y, 4, generator=torch.Generator().manual_seed(1), **kw)
    b = train_linear_ensemble(x, y, 4, generator=torch.Generator().manual_seed(1), **kw)
    assert torch.equal(a.weight, b.weight) and torch.equal(a.bias, b.bias)
    assert not torch.allclose(a.weight[0], a.weight[1])  # independent seeds within the ensemble
    acc = (a.logits(x).argmax(-1) == y).float().mean(1)
    assert (acc > 0.8).all()


def test_rows_restrict_each_model_to_its_subset() -> None:
    x, y, _ = _data()
    init = LinearEnsemble(
        torch.zeros(2, 4, 3, dtype=torch.float64), torch.zeros(2, 3, dtype=torch.float64)
    )
    rows = torch.stack([torch.arange(0, 30), torch.arange(30, 60)])
    out = train_linear_ensemble(
        x,
        y,
        2,
        n_classes=3,
        epochs=1,
        batch_size=30,
        lr=0.5,
        weight_decay=0.0,
        init=init,
        rows=rows,
    )
    for s, part in enumerate((slice(0, 30), slice(30, 60))):
        w = torch.zeros(4, 3, dtype=torch.float64, requires_grad=True)
        b = torch.zeros(3, dtype=torch.float64, requires_grad=True)
        gw, _ = torch.autograd.grad(_objective(w, b, x[part], y[part], 0.0), (w, b))
        torch.testing.assert_close(out.weight[s], -0.5 * gw)


def test_fine_tune_continues_training() -> None:
    x, y, _ = _data(dtype=torch.float32)
    base = train_linear_ensemble(
        x, y, 2, n_classes=3, epochs=1, generator=torch.Generator().manual_seed(0)
    )
    a = fine_tune(
        base, x[:40], y[:40], epochs=2, batch_size=10, generator=torch.Generator().manual_seed(5)
    )
    b = train_linear_ensemble(
        x[:40],
        y[:40],
        2,
        n_classes=3,
        epochs=2,
        batch_size=10,
        generator=torch.Generator().manual_seed(5),
        init=base,
    )
    assert torch.equal(a.weight, b.weight)
    assert not torch.equal(a.weight, base.weight)


def test_gradient_ascent_raises_the_forget_loss_by_the_autograd_step() -> None:
    x, y, g = _data()
    m = LinearEnsemble(
        torch.randn(2, 4, 3, generator=g, dtype=torch.float64),
        torch.zeros(2, 3, dtype=torch.float64),
    )
    out = gradient_ascent(m, x[:10], y[:10], steps=1, lr=0.2)
    w = m.weight[1].clone().requires_grad_()
    b = m.bias[1].clone().requires_grad_()
    gw, _ = torch.autograd.grad(F.cross_entropy(x[:10] @ w + b, y[:10]), (w, b))
    torch.testing.assert_close(out.weight[1], m.weight[1] + 0.2 * gw)
    more = gradient_ascent(m, x[:10], y[:10], steps=5, lr=0.2)
    loss = lambda e: F.cross_entropy(e.logits(x[:10])[0], y[:10])  # noqa: E731
    assert loss(more) > loss(out) > loss(m)


def test_match_outputs_recovers_the_target_model() -> None:
    x, _, g = _data(n=40)
    src = LinearEnsemble(
        torch.randn(2, 4, 3, generator=g, dtype=torch.float64),
        torch.randn(2, 3, generator=g, dtype=torch.float64),
    )
    tgt = LinearEnsemble(
        torch.randn(2, 4, 3, generator=g, dtype=torch.float64),
        torch.randn(2, 3, generator=g, dtype=torch.float64),
    )
    out = match_outputs(src, x, tgt.logits(x), steps=3000)
    torch.testing.assert_close(out.weight, tgt.weight, atol=1e-6, rtol=0)
    # one step with an explicit lr is the autograd step of the squared error
    one = match_outputs(src, x, tgt.logits(x), steps=1, lr=0.1)
    w = src.weight[0].clone().requires_grad_()
    b = src.bias[0].clone().requires_grad_()
    loss = 0.5 * (x @ w + b - tgt.logits(x)[0]).square().sum(-1).mean()
    gw, _ = torch.autograd.grad(loss, (w, b))
    torch.testing.assert_close(one.weight[0], src.weight[0] - 0.1 * gw)


def test_retain_hessian_matches_autograd() -> None:
    x, y, g = _data(n=30)
    x1 = torch.cat([x, torch.ones(30, 1, dtype=torch.float64)], 1)
    theta = torch.randn(5 * 3, generator=g, dtype=torch.float64)

    def objective(t):
        return F.cross_entropy(x1 @ t.reshape(5, 3), y) + 0.05 * t.square().sum()

    hess = torch.autograd.functional.hessian(objective, theta)
    torch.testing.assert_close(_retain_hessian(theta, x1, 3, 0.1), hess)


@pytest.mark.parametrize("shared", [True, False])
def test_influence_with_newton_steps_gives_the_retrained_minimiser(shared: bool) -> None:
    """At exact minimisers, the Newton iteration solves ∇L_R(θ̂) = 0: the retrained optimum."""
    x, y, _ = _data(n=80)
    lam = 0.02
    forget = torch.zeros(80, dtype=torch.bool)
    forget[:12] = True
    w, b = _minimise(x, y, 3, lam)
    w_r, b_r = _minimise(x[~forget], y[~forget], 3, lam)
    full = LinearEnsemble(w[None].repeat(2, 1, 1), b[None].repeat(2, 1))
    one = influence_retrained(full, x, y, forget, weight_decay=lam, shared=shared)
    many = influence_retrained(full, x, y, forget, weight_decay=lam, newton_steps=8, shared=shared)
    torch.testing.assert_close(many.weight[1], w_r, atol=1e-6, rtol=0)
    torch.testing.assert_close(many.bias[0], b_r, atol=1e-6, rtol=0)
    change = (w_r - w).norm()
    assert (one.weight[0] - w_r).norm() < 0.2 * change  # one step: the influence function
    logits = predict_retrained_logits(
        full, x, y, forget, x[:5], weight_decay=lam, newton_steps=8, shared=shared
    )
    torch.testing.assert_close(logits[0], x[:5] @ w_r + b_r, atol=1e-6, rtol=0)


def test_shared_shift_keeps_each_models_deviation() -> None:
    x, y, g = _data(n=50)
    forget = torch.zeros(50, dtype=torch.bool)
    forget[:5] = True
    m = train_linear_ensemble(x, y, 3, n_classes=3, epochs=2, batch_size=10, generator=g)
    pred = influence_retrained(m, x, y, forget, newton_steps=2)
    shift = pred.weight - m.weight
    torch.testing.assert_close(shift[0], shift[2])  # one shift for all models
    per_model = influence_retrained(m, x, y, forget, newton_steps=2, shared=False)
    assert not torch.allclose(per_model.weight - m.weight, shift)


def test_bad_arguments_are_refused_with_the_name() -> None:
    x, y, _ = _data()
    m = train_linear_ensemble(x, y, 2, n_classes=3, epochs=1)
    forget = torch.zeros(60, dtype=torch.bool)
    forget[0] = True
    cases = [
        (lambda: train_linear_ensemble(x, y, 0, n_classes=3, epochs=1), "`n_models`"),
        (lambda: train_linear_ensemble(x, y, 2, n_classes=3, epochs=1, lr=-1.0), "`lr`"),
        (lambda: train_linear_ensemble(x, y.double(), 2, n_classes=3, epochs=1), "`y`"),
        (lambda: train_linear_ensemble(x, y + 5, 2, n_classes=3, epochs=1), "`y`"),
        (
            lambda: train_linear_ensemble(
                x, y, 2, n_classes=3, epochs=1, rows=torch.zeros(3, 5, dtype=torch.long)
            ),
            "`rows`",
        ),
        (lambda: gradient_ascent(m, x[:, :3], y, steps=1, lr=0.1), "`x_forget`"),
        (lambda: gradient_ascent(m, x, y, steps=-1, lr=0.1), "`steps`"),
        (
            lambda: match_outputs(m, x, torch.zeros(2, 60, 2, dtype=torch.float64), steps=1),
            "`targets`",
        ),
        (lambda: influence_retrained(m, x, y, forget.long()), "`forget`"),
        (lambda: influence_retrained(m, x, y, torch.zeros(60, dtype=torch.bool)), "`forget`"),
        (lambda: influence_retrained(m, x, y, forget, newton_steps=0), "`newton_steps`"),
        (lambda: influence_retrained(m, x, y, forget, shared=1), "`shared`"),
        (lambda: LinearEnsemble(torch.zeros(2, 3, 4), torch.zeros(3, 4)), "`bias`"),
    ]
    for call, name in cases:
        with pytest.raises(ValueError, match=name):
            call()

r"""One place to add a divergence: the triangular discrimination registered at run time.

:math:`\Delta(P\|Q) = \sum_x (p-q)^2/(p+q)`, the f-divergence of
:math:`f(t) = (t-1)^2/(t+1)` (Topsøe 2000, "Some inequalities for information divergence and
related measures of discrimination", IEEE Trans. Inf. Theory 46(4)), symmetric, bounded by
:math:`f(0) + \lim f(t)/t = 2`. First with a row function only (the engine differentiates it
with autograd), then with its own chunk kernel, which the engine must call. In both cases the
entry shows up in ``divergent list`` / ``info`` and passes ``check_divergence``.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import Tensor
from typer.testing import CliRunner

import divergent
from divergent.categorical import (
    Divergence,
    FGenerator,
    get_divergence,
    list_divergences,
    register_divergence,
)
from divergent.categorical.kernels import ElementwiseKernel, KernelPlan
from divergent.cli import app
from divergent.testing import check_divergence, registered

NAME = "triangular"
runner = CliRunner()


def triangular_rows(log_p: Tensor, log_q: Tensor) -> Tensor:
    r"""Σ (p − q)²/(p + q) in the log domain: with m = max(log p, log q) and
    u = exp(−|log p − log q|), each term is e^m (1 − u)²/(1 + u) (0 where p = q = 0)."""
    any_mass = (log_p > -math.inf) | (log_q > -math.inf)
    lp = torch.where(any_mass, log_p, 0.0)
    lq = torch.where(any_mass, log_q, 0.0)
    m = torch.maximum(lp, lq)
    u = torch.exp(-(lp - lq).abs())
    term = torch.exp(m) * (1.0 - u).square() / (1.0 + u)
    return torch.where(any_mass, term, 0.0).sum(-1)


def _generator() -> FGenerator:
    return FGenerator(
        f=lambda t: (t - 1.0).square() / (t + 1.0),
        f_prime=lambda t: (t - 1.0) * (t + 3.0) / (t + 1.0).square(),
        f_at_zero=1.0,
        slope_at_infinity=1.0,
    )


def _entry(**extra: object) -> Divergence:
    return Divergence(
        name=NAME,
        title="Triangular discrimination",
        formula=r"\Delta(P\|Q) = \sum_x \frac{(P(x)-Q(x))^2}{P(x)+Q(x)}",
        formula_text="Σ (p − q)²/(p + q)",
        row_fn=triangular_rows,
        symmetric=lambda: True,
        upper_bound=lambda: 2.0,
        bound_text="2",
        generator=_generator,
        infinite_when="never",
        references=("Topsøe 2000",),
        **extra,  # type: ignore[arg-type]
    )


class TriangularKernel(ElementwiseKernel):
    r"""Value and log-probability gradients of Σ (p − q)²/(p + q) in one pass.

    With s = p + q, r = p/s and v = q/s: the term is s (r − v)², and
    A = ∂/∂log p = s r (r − v)(r + 3v), B = ∂/∂log q = s v (v − r)(v + 3r).
    """

    def __init__(self) -> None:
        self.calls = 0

    def elem(self, lp, lq, c, need_a, need_b):  # type: ignore[override]
        self.calls += 1
        any_mass = (lp > -math.inf) | (lq > -math.inf)
        log_s = torch.logaddexp(lp, lq)
        safe = torch.where(any_mass, log_s, 0.0)
        s = torch.where(any_mass, safe.exp(), 0.0)
        r = torch.where(any_mass, (lp - safe).exp(), 0.0)
        v = torch.where(any_mass, (lq - safe).exp(), 0.0)
        term = s * (r - v).square()
        a = s * r * (r - v) * (r + 3.0 * v) if need_a else None
        b = s * v * (v - r) * (v + 3.0 * r) if need_b else None
        return term, None, a, b


def _list_json() -> dict[str, dict]:
    result = runner.invoke(app, ["list", "--json"])
    assert result.exit_code == 0, result.output
    return {r["name"]: r for r in json.loads(result.output)}


def _assert_listed() -> None:
    rows = _list_json()
    assert rows[NAME]["symmetric"] is True and rows[NAME]["f_divergence"] is True
    assert rows[NAME]["bound_at_defaults"] == "2"
    table = runner.invoke(app, ["list"], env={"COLUMNS": "80"})
    assert table.exit_code == 0 and NAME in table.output
    info = runner.invoke(app, ["info", NAME], env={"COLUMNS": "200"})
    assert info.exit_code == 0, info.output
    assert "Triangular discrimination" in info.output and "Σ (p − q)²/(p + q)" in info.output


def test_row_function_matches_the_definition() -> None:
    p = torch.tensor([[0.5, 0.25, 0.25, 0.0], [0.1, 0.2, 0.3, 0.4]], dtype=torch.float64)
    q = torch.tensor([[0.0, 0.5, 0.25, 0.25], [0.4, 0.3, 0.2, 0.1]], dtype=torch.float64)
    want = [0.25 / 0.5 + 0.0625 / 0.75 + 0.0625 / 0.25, 2 * (0.09 / 0.5 + 0.01 / 0.5)]
    got = triangular_rows(torch.log(p), torch.log(q))
    torch.testing.assert_close(got, torch.tensor(want, dtype=torch.float64), rtol=1e-14, atol=0)


def test_registered_with_a_row_function_only() -> None:
    assert NAME not in {d.name for d in list_divergences()}
    with registered(_entry()) as entry:
        assert get_divergence(NAME) is entry
        _assert_listed()
        report = check_divergence(NAME)
        assert report.checks[0] == "reference" and report.comparisons > 100
        p, q = torch.randn(4, 9), torch.randn(4, 9)
        value = divergent.divergence(NAME, p, q)
        assert bool(value <= 2.0) and bool(value > 0)
        engine = divergent.divergence(NAME, p, q, engine="chunked")
        torch.testing.assert_close(engine, value, rtol=1e-6, atol=1e-7)
    assert NAME not in _list_json()
    with pytest.raises(ValueError, match="unknown divergence"):
        get_divergence(NAME)


def test_registered_with_a_kernel_the_engine_uses() -> None:
    kernel = TriangularKernel()
    plans: list[KernelPlan] = []

    def plan() -> KernelPlan:
        plans.append(KernelPlan(kernel, (), NAME))
        return plans[-1]

    with registered(_entry(kernel=plan)):
        _assert_listed()
        check_divergence(NAME)
        assert kernel.calls > 0 and plans  # the battery's engine checks ran the kernel
        before = kernel.calls
        p = torch.randn(6, 11, dtype=torch.float64)
        q = torch.randn(6, 11, dtype=torch.float64, requires_grad=True)
        got = divergent.chunked_divergence(NAME, p, q, chunk_size=4, compile=False)
        (grad,) = torch.autograd.grad(got, q)
        assert kernel.calls > before  # value and gradient came from the kernel
        q_ref = q.detach().clone().requires_grad_(True)
        want = divergent.divergence(NAME, p, q_ref, engine="reference")
        (grad_ref,) = torch.autograd.grad(want, q_ref)
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(grad, grad_ref, rtol=1e-10, atol=1e-13)
    assert NAME not in _list_json()


def test_a_name_cannot_be_registered_twice_and_is_restored_by_overwrite() -> None:
    with registered(_entry()):
        with pytest.raises(ValueError, match="already registered"):
            register_divergence(_entry())
        replacement = _entry(description="second")
        with registered(replacement, overwrite=True):
            assert get_divergence(NAME).description == "second"
        assert get_divergence(NAME).description == ""

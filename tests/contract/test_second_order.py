"""First-order engines refuse second-order use (issue 8 §3).

The chunked engine, ``fused_linear_divergence``, ``vocab_parallel_divergence`` (see
test_vocab_parallel_contract.py) and ``sparse_divergence`` compute their gradients in closed
form; a gradient penalty through them (``create_graph=True``, then backward through the
gradient) used to run and silently drop the penalty's gradient. Now any higher-order graph
request raises a ``RuntimeError`` pointing to ``engine="reference"``, while first-order use
(also ``retain_graph=True`` with unit gradients) is unchanged, and the reference path gives
the true second-order gradient (checked against gradgradcheck).
"""

from __future__ import annotations

import pytest
import torch

import divergent
from divergent.categorical import list_divergences

NAMES = [d.name for d in list_divergences()]


def _pair(requires_grad: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    p = torch.randn(5, 9, generator=gen, dtype=torch.float64)
    q = torch.randn(5, 9, generator=gen, dtype=torch.float64).requires_grad_(requires_grad)
    return p, q


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_gradient_penalty_through_the_engine_raises(name: str, reduction: str) -> None:
    p, q = _pair()
    loss = divergent.divergence(name, p, q, engine="chunked", reduction=reduction).sum()
    with pytest.raises(RuntimeError, match=r"first-order engine.*engine='reference'"):
        torch.autograd.grad(loss, q, create_graph=True)


@pytest.mark.parametrize("name", ["kl", "js", "renyi"])
def test_reference_path_gives_the_second_order_gradient(name: str) -> None:
    p, q = _pair()
    loss = divergent.divergence(name, p, q, engine="reference")
    (g,) = torch.autograd.grad(loss, q, create_graph=True)
    (hg,) = torch.autograd.grad(g.square().sum(), q)
    assert bool(torch.isfinite(hg).all()) and float(hg.abs().max()) > 0
    assert torch.autograd.gradgradcheck(
        lambda x: divergent.divergence(name, p, x, engine="reference"),
        (q.detach().clone().requires_grad_(),),
    )


def test_gradgradcheck_through_the_engine_raises() -> None:
    p, q = _pair()
    with pytest.raises(RuntimeError, match="first-order"):
        torch.autograd.gradgradcheck(
            lambda x: divergent.divergence("kl", p, x, engine="chunked"), (q,)
        )


def test_first_order_use_is_unchanged() -> None:
    p, q = _pair()
    loss = divergent.divergence("js", p, q, engine="chunked")
    (g,) = torch.autograd.grad(loss, q, retain_graph=True)
    (g2,) = torch.autograd.grad(loss, q)
    ref = torch.autograd.grad(divergent.divergence("js", p, q, engine="reference"), q)[0]
    torch.testing.assert_close(g, ref)
    torch.testing.assert_close(g2, ref)


@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_fused_linear_refuses_second_order(reduction: str) -> None:
    gen = torch.Generator().manual_seed(1)
    hs = torch.randn(4, 6, generator=gen, requires_grad=True)
    ws = torch.randn(11, 6, generator=gen, requires_grad=True)
    ht, wt = torch.randn(4, 5, generator=gen), torch.randn(11, 5, generator=gen)
    loss = divergent.fused_linear_divergence(
        "kl",
        student_hidden=hs,
        student_weight=ws,
        teacher_hidden=ht,
        teacher_weight=wt,
        reduction=reduction,
    ).sum()
    with pytest.raises(RuntimeError, match="first-order engine"):
        torch.autograd.grad(loss, [hs, ws], create_graph=True)
    loss = divergent.fused_linear_divergence(
        "kl",
        student_hidden=hs,
        student_weight=ws,
        teacher_hidden=ht,
        teacher_weight=wt,
        reduction=reduction,
    ).sum()
    g_h, g_w = torch.autograd.grad(loss, [hs, ws])  # first order still works
    assert g_h.shape == hs.shape and g_w.shape == ws.shape


def test_sparse_refuses_second_order() -> None:
    teacher = torch.randn(3, 10)
    student = torch.randn(3, 10, requires_grad=True)
    ids, lp = divergent.topk_logprobs(teacher, 4)
    loss = divergent.sparse_divergence("kl", ids, lp, student)
    with pytest.raises(RuntimeError, match="sparse_divergence is first-order only"):
        torch.autograd.grad(loss, student, create_graph=True)

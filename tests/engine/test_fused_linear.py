"""fused_linear_divergence against the materialised float64 path (logits + reference autograd)."""

from __future__ import annotations

import math

import pytest
import torch
from torch.profiler import ProfilerActivity, profile

import divergent
from divergent.categorical import Divergence

N, HS, HT, V = 13, 8, 6, 41

CASES = [
    ("kl", {}),
    ("reverse_kl", {}),
    ("js", {"beta": 0.3}),
    ("tv", {}),
    ("soft_cross_entropy", {}),
    ("alpha", {"alpha": 2.0}),
    ("renyi", {"order": math.inf}),
    ("skew_reverse_kl", {}),
]


def _inputs(seed: int, dtype=torch.float32, vs: int = V, vt: int = V):
    gen = torch.Generator().manual_seed(seed)
    return [
        torch.randn(N, HS, generator=gen).to(dtype),
        (torch.randn(vs, HS, generator=gen) * 0.5).to(dtype),
        torch.randn(vs, generator=gen).to(dtype),
        torch.randn(N, HT, generator=gen).to(dtype),
        (torch.randn(vt, HT, generator=gen) * 0.5).to(dtype),
        torch.randn(vt, generator=gen).to(dtype),
    ]


def _materialised(name, kw, hs, ws, bs, ht, wt, bt, *, softcap=None, logit_scale=None, **opts):
    """The straightforward path: full logits, reference autograd."""
    zs, zt = hs @ ws.T, ht @ wt.T
    if bs is not None:
        zs = zs + bs
    if bt is not None:
        zt = zt + bt
    if logit_scale is not None:
        zs, zt = zs * logit_scale, zt * logit_scale
    if softcap is not None:
        zs, zt = softcap * torch.tanh(zs / softcap), softcap * torch.tanh(zt / softcap)
    return divergent.divergence(name, zt, zs, engine="reference", **opts, **kw)


def _fused(name, kw, hs, ws, bs, ht, wt, bt, **opts):
    return divergent.fused_linear_divergence(
        name,
        student_hidden=hs,
        student_weight=ws,
        student_bias=bs,
        teacher_hidden=ht,
        teacher_weight=wt,
        teacher_bias=bt,
        compile=False,
        **opts,
        **kw,
    )


def _close(got, want, rtol, what):
    scale = want.double().abs().max().clamp_min(1e-12)
    err = (got.double() - want.double()).abs()
    assert bool((err <= rtol * (want.double().abs() + scale)).all()), (
        f"{what}: max abs err {float(err.max()):.3g}, scale {float(scale):.3g}"
    )


@pytest.mark.parametrize(("name", "kw"), CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("transform", ["plain", "softcap+scale"])
def test_matches_materialised_float64(name, kw, transform) -> None:
    extra = {} if transform == "plain" else {"softcap": 4.0, "logit_scale": 1.5}
    base = _inputs(1)
    mask = torch.rand(N, generator=torch.Generator().manual_seed(2)) > 0.3
    opts = {"temperature": 1.7, "mask": mask, **extra}
    for reduction, more in (("mean", {}), ("sum", {}), ("mean", {"normalizer": 5.0})):
        ref_in = [x.double().requires_grad_(True) for x in base]
        got_in = [x.clone().requires_grad_(True) for x in base]
        want = _materialised(name, kw, *ref_in, reduction=reduction, **opts, **more)
        got = _fused(name, kw, *got_in, reduction=reduction, chunk_size=4, **opts, **more)
        assert got.dtype == torch.float32
        _close(got.detach(), want.detach(), 1e-5, f"{reduction} value")
        g_want = torch.autograd.grad(want, ref_in)
        g_got = torch.autograd.grad(got, got_in)
        labels = (
            "student_hidden",
            "student_weight",
            "student_bias",
            "teacher_hidden",
            "teacher_weight",
            "teacher_bias",
        )
        for g, w, label in zip(g_got, g_want, labels):
            _close(g, w, 1e-5, f"{reduction} grad {label}")
        assert bool((g_got[0][~mask] == 0).all()) and bool((g_got[3][~mask] == 0).all())


def test_rows_reduction_and_frozen_teacher() -> None:
    """reduction="none": the backward recomputes the chunks with the per-row gradient."""
    base = _inputs(3)
    mask = torch.rand(N, generator=torch.Generator().manual_seed(3)) > 0.3
    weights = torch.rand(N)
    got_in = [x.clone().requires_grad_(True) for x in base]
    ref_in = [x.double().requires_grad_(True) for x in base]
    rows = _fused("js", {}, *got_in, reduction="none", mask=mask, chunk_size=5, softcap=3.0)
    assert rows.shape == (N,)
    want = _materialised("js", {}, *ref_in, reduction="none", mask=mask, softcap=3.0)
    _close(rows.detach(), want.detach(), 1e-5, "rows")
    g_got = torch.autograd.grad((rows * weights).sum(), got_in)
    g_want = torch.autograd.grad((want * weights.double()).sum(), ref_in)
    for g, w in zip(g_got, g_want):
        _close(g, w, 1e-5, "weighted rows gradient")
    hs, ws, _, ht, wt, _ = _inputs(3)
    hs.requires_grad_(True)
    ws.requires_grad_(True)
    # the teacher is frozen: its tensors never get a gradient
    ht.requires_grad_(False)
    loss = _fused("kl", {}, hs, ws, None, ht, wt, None)
    loss.backward()
    assert ht.grad is None and wt.grad is None and hs.grad is not None


def test_no_gradient_work_under_no_grad(monkeypatch) -> None:
    from divergent.engine import fused_linear

    seen = []
    run = fused_linear._run

    def spy(job, tensors, need, row_weights=None):
        seen.append(need)
        return run(job, tensors, need, row_weights)

    monkeypatch.setattr(fused_linear, "_run", spy)
    hs, ws, bs, ht, wt, bt = _inputs(10)
    ws.requires_grad_(True)
    with torch.no_grad():
        loss = _fused("kl", {}, hs, ws, bs, ht, wt, bt)
    assert loss.grad_fn is None and not any(seen[-1])
    _fused("kl", {}, hs, ws, bs, ht, wt, bt)
    assert seen[-1] == (False, True, False, False, False, False)


def test_leading_shape_and_hidden_sizes_differ() -> None:
    gen = torch.Generator().manual_seed(4)
    hs = torch.randn(2, 5, 7, generator=gen, requires_grad=True)
    ht = torch.randn(2, 5, 3, generator=gen)
    ws = torch.randn(19, 7, generator=gen, requires_grad=True)
    wt = torch.randn(19, 3, generator=gen)
    mask = torch.rand(2, 5, generator=gen) > 0.2
    rows = divergent.fused_linear_divergence(
        "hellinger",
        student_hidden=hs,
        student_weight=ws,
        teacher_hidden=ht,
        teacher_weight=wt,
        mask=mask,
        reduction="none",
        compile=False,
    )
    assert rows.shape == (2, 5)
    want = divergent.divergence(
        "hellinger", ht @ wt.T, hs @ ws.T, mask=mask, reduction="none", engine="reference"
    )
    _close(rows.detach(), want.detach(), 1e-5, "rows")


def test_vocab_policy() -> None:
    hs, ws, bs, ht, wt, bt = _inputs(5, vs=V, vt=V + 7)  # teacher head padded with 7 rows
    with pytest.raises(ValueError, match="truncate"):
        _fused("kl", {}, hs, ws, bs, ht, wt, bt)
    ws.requires_grad_(True)
    wt.requires_grad_(True)
    got = _fused("kl", {}, hs, ws, bs, ht, wt, bt, vocab="truncate")
    g_ws, g_wt = torch.autograd.grad(got, [ws, wt])
    ws64 = ws.detach().double().requires_grad_(True)
    wt64 = wt.detach().double().requires_grad_(True)
    want = _materialised(
        "kl", {}, hs.double(), ws64, bs.double(), ht.double(), wt64[:V], bt.double()[:V]
    )
    w_ws, w_wt = torch.autograd.grad(want, [ws64, wt64])
    _close(got.detach(), want.detach(), 1e-5, "value")
    _close(g_ws, w_ws, 1e-5, "student weight")
    _close(g_wt, w_wt, 1e-5, "teacher weight")
    assert bool((g_wt[V:] == 0).all())  # padded rows get no gradient
    with pytest.raises(ValueError, match="vocab"):
        _fused("kl", {}, hs, ws, bs, ht, wt, bt, vocab="pad")


def test_bf16_matches_materialised_bf16() -> None:
    base = _inputs(6, dtype=torch.bfloat16)
    ref_in = [x.clone().requires_grad_(True) for x in base]
    got_in = [x.clone().requires_grad_(True) for x in base]
    want = _materialised("kl", {}, *ref_in, temperature=2.0)
    got = _fused("kl", {}, *got_in, temperature=2.0, chunk_size=3)
    assert got.dtype == torch.float32
    _close(got.detach(), want.detach(), 1e-3, "bf16 value")
    for g, w in zip(torch.autograd.grad(got, got_in), torch.autograd.grad(want, ref_in)):
        assert g.dtype == torch.bfloat16
        _close(g.float(), w.float(), 2e-2, "bf16 grad")


def test_kernel_less_divergence_uses_autograd_per_chunk() -> None:
    squared_l2 = Divergence(
        name="squared_l2_fused_test",
        title="squared L2",
        formula=r"\sum_x (p - q)^2",
        formula_text="Σ (p − q)²",
        row_fn=lambda lp, lq: (lp.exp() - lq.exp()).square().sum(-1),
    )
    base = _inputs(7)
    ref_in = [x.double().requires_grad_(True) for x in base]
    got_in = [x.clone().requires_grad_(True) for x in base]
    want = _materialised(squared_l2, {}, *ref_in, softcap=3.0)
    got = _fused(squared_l2, {}, *got_in, softcap=3.0, chunk_size=4)
    _close(got.detach(), want.detach(), 1e-5, "value")
    for g, w in zip(torch.autograd.grad(got, got_in), torch.autograd.grad(want, ref_in)):
        _close(g, w, 1e-5, "grad")


def test_never_allocates_the_logits() -> None:
    """The largest single allocation is a chunk of logits, not N×V."""
    n, v, h = 512, 2048, 8
    gen = torch.Generator().manual_seed(8)
    hs = torch.randn(n, h, generator=gen, requires_grad=True)
    ws = torch.randn(v, h, generator=gen, requires_grad=True)
    ht, wt = torch.randn(n, h, generator=gen), torch.randn(v, h, generator=gen)
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        loss = divergent.fused_linear_divergence(
            "js",
            student_hidden=hs,
            student_weight=ws,
            teacher_hidden=ht,
            teacher_weight=wt,
            chunk_size=32,
            compile=False,
        )
        loss.backward()
    largest = max(e.cpu_memory_usage for e in prof.events())
    assert 0 < largest <= 32 * v * 4  # one chunk of fp32 logits; N×V would be 16× that


def test_validation_errors() -> None:
    hs, ws, _, ht, wt, _ = _inputs(9)
    good = {"student_hidden": hs, "student_weight": ws, "teacher_hidden": ht, "teacher_weight": wt}

    def call(**over):
        return divergent.fused_linear_divergence("kl", **{**good, **over})

    with pytest.raises(ValueError, match="student_weight"):
        call(student_weight=torch.randn(V, HS + 1))
    with pytest.raises(ValueError, match="teacher_hidden"):
        call(teacher_hidden=torch.randn(N + 1, HT))
    with pytest.raises(ValueError, match="student_bias"):
        call(student_bias=torch.randn(V + 1))
    with pytest.raises(ValueError, match="softcap"):
        call(softcap=0.0)
    with pytest.raises(ValueError, match="logit_scale"):
        call(logit_scale=-1.0)
    with pytest.raises(ValueError, match="chunk_size"):
        call(chunk_size=0)
    with pytest.raises(ValueError, match="teacher_weight"):
        call(teacher_weight=torch.randn(V))
    with pytest.raises(ValueError, match="student_hidden"):
        call(student_hidden=torch.ones(N, HS, dtype=torch.long))
    with pytest.raises(ValueError, match="temperature"):
        call(temperature=0.0)
    with pytest.raises(ValueError, match="beta"):
        divergent.fused_linear_divergence("js", beta=1.0, **good)

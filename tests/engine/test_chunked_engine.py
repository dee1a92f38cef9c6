"""The row-chunked engine against the float64 reference path (row function + autograd).

Every registered divergence (and the parameter cases that select different kernels) goes
through the engine eagerly with small chunks (several chunks and a partial last one), with
masks, temperature, every reduction, a normalizer and gradients to both sides; values and
gradients are compared with the float64 reference and with the float32 reference path.
The compiled kernel is exercised on two small cases (compilation is paid once per process).
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from _refs import CASES as REGISTRY_CASES
from torch._dynamo.utils import counters

import divergent
from divergent.categorical import Divergence, get_divergence, kernels, list_divergences
from divergent.engine import chunked

CASES = REGISTRY_CASES  # every entry at its parameter cases (divergent.testing)
IDS = [f"{n}-{'-'.join(f'{k}={v:g}' for k, v in kw.items()) or 'default'}" for n, kw in CASES]


def test_cases_cover_every_registered_name() -> None:
    assert {n for n, _ in CASES} == {d.name for d in list_divergences()}


def _support_for(name, kw, p):
    """Rényi of order 0 is −log Q(supp P): give P a proper support (else D = 0, grad = 0)."""
    if name == "renyi" and kw.get("order") == 0.0:
        p = p.clone()
        p[..., :6] = -math.inf
    return p


def _grads(name, kw, p, q, *, engine, reduction="none", weights=None, **opts):
    """Value and gradients w.r.t. both inputs (leaf copies) for a weighted backward."""
    p = p.detach().clone().requires_grad_(True)
    q = q.detach().clone().requires_grad_(True)
    if engine == "chunked":
        out = divergent.chunked_divergence(
            name, p, q, reduction=reduction, compile=False, chunk_size=4, **opts, **kw
        )
    else:
        out = divergent.divergence(name, p, q, reduction=reduction, engine=engine, **opts, **kw)
    loss = out if weights is None else (out * weights).sum()
    gp, gq = torch.autograd.grad(loss, [p, q])
    return out.detach(), gp, gq


def _assert_close(got, want, rtol, what, floor=1e-12):
    """Elementwise |got − want| ≤ rtol·(|want| + max(max|want|, floor)): relative to each
    value, and to the largest entry for entries far below it (gradient vectors); ``floor`` is
    the absolute scale of values that are 0 up to rounding."""
    got64, want64 = got.double(), want.double()
    if want64.numel() == 0:
        return
    scale = want64.abs().max().clamp_min(floor)
    err = (got64 - want64).abs()
    bad = err > rtol * (want64.abs() + scale)
    worst = f"max abs err {float(err.max()):.3g} (scale {float(scale):.3g})"
    assert not bool(bad.any()), f"{what}: {worst}"


@pytest.mark.parametrize(("name", "kw"), CASES, ids=IDS)
def test_engine_matches_float64_reference(name, kw) -> None:
    gen = torch.Generator().manual_seed(1)
    p = _support_for(name, kw, torch.randn(11, 23, generator=gen) * 2.0)
    q = torch.randn(11, 23, generator=gen) * 2.0
    mask = torch.rand(11, generator=gen) > 0.3
    opts = {"temperature": 1.7, "mask": mask}
    weights = torch.rand(11, generator=gen)
    for reduction, extra, w in (
        ("none", {}, weights),
        ("mean", {"normalizer": 7.0}, None),
        ("sum", {}, None),
        ("mean", {}, None),
    ):
        v, gp, gq = _grads(
            name, kw, p, q, engine="chunked", reduction=reduction, weights=w, **opts, **extra
        )
        v64, gp64, gq64 = _grads(
            name,
            kw,
            p.double(),
            q.double(),
            engine="reference",
            reduction=reduction,
            weights=None if w is None else w.double(),
            **opts,
            **extra,
        )
        v32, gp32, gq32 = _grads(
            name, kw, p, q, engine="reference", reduction=reduction, weights=w, **opts, **extra
        )
        assert v.dtype == torch.float32 and gp.dtype == torch.float32
        # values that are 0 up to float32 rounding of log Σ (Rényi of order 0): 0.1 floor
        _assert_close(v, v64, 1e-5, f"{reduction} value vs float64", floor=0.1)
        _assert_close(v, v32, 1e-5, f"{reduction} value vs float32 reference path", floor=0.1)
        _assert_close(gp, gp64, 1e-5, f"{reduction} grad p vs float64")
        _assert_close(gq, gq64, 1e-5, f"{reduction} grad q vs float64")
        _assert_close(gp, gp32, 1e-5, f"{reduction} grad p vs float32 reference path")
        _assert_close(gq, gq32, 1e-5, f"{reduction} grad q vs float32 reference path")
        # masked rows: value 0, gradient exactly 0
        if reduction == "none":
            assert bool((v[~mask] == 0).all())
        assert bool((gp[~mask] == 0).all()) and bool((gq[~mask] == 0).all())


@pytest.mark.parametrize(("name", "kw"), CASES[::3], ids=IDS[::3])
def test_engine_bf16_inputs(name, kw) -> None:
    gen = torch.Generator().manual_seed(2)
    p = _support_for(name, kw, torch.randn(9, 31, generator=gen) * 3).bfloat16()
    q = (torch.randn(9, 31, generator=gen) * 3).bfloat16()
    mask = torch.tensor([True, True, False, True, True, True, False, True, True])
    v, gp, gq = _grads(
        name, kw, p, q, engine="chunked", temperature=0.7, mask=mask, reduction="sum"
    )
    v32, gp32, gq32 = _grads(
        name, kw, p, q, engine="reference", temperature=0.7, mask=mask, reduction="sum"
    )
    v64, _, _ = _grads(
        name,
        kw,
        p.double(),
        q.double(),
        engine="reference",
        temperature=0.7,
        mask=mask,
        reduction="sum",
    )
    assert v.dtype == torch.float32 and gp.dtype == torch.bfloat16 and gq.dtype == torch.bfloat16
    _assert_close(v, v32, 1e-5, "bf16 value vs reference path", floor=0.1)
    _assert_close(v, v64, 1e-5, "bf16 value vs float64", floor=0.1)
    # both paths compute the gradient in float32 and round it to bf16: one bf16 ulp apart
    for got, want in ((gp, gp32), (gq, gq32)):
        tol = 2.0**-7 * want.float().abs().max()
        assert float((got.float() - want.float()).abs().max()) <= float(tol)


def test_float64_inputs_stay_float64() -> None:
    gen = torch.Generator().manual_seed(3)
    p = torch.randn(6, 17, generator=gen, dtype=torch.float64)
    q = torch.randn(6, 17, generator=gen, dtype=torch.float64)
    for name, kw in CASES:
        v, gp, gq = _grads(
            name,
            kw,
            p,
            q,
            engine="chunked",
            reduction="none",
            weights=torch.ones(6, dtype=torch.float64),
        )
        v64, gp64, gq64 = _grads(
            name,
            kw,
            p,
            q,
            engine="reference",
            reduction="none",
            weights=torch.ones(6, dtype=torch.float64),
        )
        assert v.dtype == torch.float64
        _assert_close(v, v64, 1e-10, f"{name} value", floor=1e-4)
        _assert_close(gp, gp64, 1e-9, f"{name} grad p", floor=1e-6)
        _assert_close(gq, gq64, 1e-9, f"{name} grad q", floor=1e-6)


def test_near_equal_inputs_are_accurate() -> None:
    """Close distributions: the engine's non-negative-term sums stay near the float64 value."""
    gen = torch.Generator().manual_seed(4)
    p = torch.randn(8, 50, generator=gen) * 2
    q = p + 1e-3 * torch.randn(8, 50, generator=gen)
    for name, kw in CASES:
        if name == "renyi" and kw.get("order", 0.5) not in (1.0, math.inf):
            continue  # log Σ p^a q^(1-a) ≈ log 1: absolute accuracy only (as the reference)
        v, _, _ = _grads(name, kw, p, q, engine="chunked", reduction="none", weights=torch.ones(8))
        v64, _, _ = _grads(
            name,
            kw,
            p.double(),
            q.double(),
            engine="reference",
            reduction="none",
            weights=torch.ones(8, dtype=torch.float64),
        )
        # float32 logits carry ~1e-7·|log p| error in log p − log q ≈ 1e-3: ~1e-3 relative
        _assert_close(v, v64, 2e-3, f"{name} {kw} near P = Q")


def test_infinite_rows_get_zero_gradient() -> None:
    p = torch.randn(4, 6)
    q = torch.randn(4, 6)
    q[1, 2] = -math.inf  # P has mass where Q has none: KL(P‖Q) = +inf in row 1
    weights = torch.ones(4)
    v, gp, gq = _grads("kl", {}, p, q, engine="chunked", reduction="none", weights=weights)
    v64, gp64, gq64 = _grads(
        "kl",
        {},
        p.double(),
        q.double(),
        engine="reference",
        reduction="none",
        weights=weights.double(),
    )
    assert math.isinf(float(v[1])) and float(v[1]) > 0
    assert bool(torch.isfinite(v[[0, 2, 3]]).all())
    assert bool((gp[1] == 0).all()) and bool((gq[1] == 0).all())
    keep = [0, 2, 3]
    _assert_close(v[keep], v64[keep], 1e-5, "finite rows")
    _assert_close(gp, gp64, 1e-5, "grad p (reference also 0 on the infinite row)")
    _assert_close(gq, gq64, 1e-5, "grad q")
    # the mean is +inf, gradients of the other rows stay finite
    mean = divergent.chunked_divergence("kl", p, q.clone().requires_grad_(True), compile=False)
    assert math.isinf(float(mean.detach()))
    # Rényi of order < 1 between disjoint supports: +inf (the reference's gradient is NaN there)
    a = torch.tensor([[0.0, -math.inf], [0.0, 0.0]])
    b = torch.tensor([[-math.inf, 0.0], [0.0, 1.0]], requires_grad=True)
    rows = divergent.chunked_divergence("renyi", a, b, reduction="none", compile=False)
    assert math.isinf(float(rows[0].detach())) and math.isfinite(float(rows[1].detach()))
    (g,) = torch.autograd.grad(rows[1], b)
    assert bool(torch.isfinite(g).all()) and bool((g[0] == 0).all())


def test_masked_rows_are_never_read() -> None:
    gen = torch.Generator().manual_seed(5)
    p = torch.randn(7, 12, generator=gen)
    q = torch.randn(7, 12, generator=gen)
    mask = torch.tensor([True, False, True, True, False, True, True])
    p_bad, q_bad = p.clone(), q.clone()
    p_bad[~mask] = math.nan
    q_bad[~mask] = math.nan
    for name, kw in CASES[::4]:
        v, gp, gq = _grads(name, kw, p_bad, q_bad, engine="chunked", reduction="mean", mask=mask)
        v_ok, gp_ok, gq_ok = _grads(name, kw, p, q, engine="chunked", reduction="mean", mask=mask)
        assert torch.equal(v, v_ok)
        assert torch.equal(gp, gp_ok) and torch.equal(gq, gq_ok)
        assert bool((gp[~mask] == 0).all())


def test_fully_masked_batch_is_zero_with_zero_gradient() -> None:
    p = torch.randn(3, 5)
    q = torch.randn(3, 5, requires_grad=True)
    mask = torch.zeros(3, dtype=torch.bool)
    for reduction in ("mean", "sum"):
        out = divergent.chunked_divergence(
            "js", p, q, mask=mask, reduction=reduction, compile=False
        )
        (g,) = torch.autograd.grad(out, q)
        assert float(out.detach()) == 0.0 and bool((g == 0).all())
    rows = divergent.chunked_divergence("kl", p, q, mask=mask, reduction="none", compile=False)
    assert rows.shape == (3,) and bool((rows == 0).all())


def test_extreme_logits_and_padding() -> None:
    """Logits ±1e4, one-hot targets and −inf vocabulary padding on both sides."""
    gen = torch.Generator().manual_seed(6)
    p = torch.randn(6, 10, generator=gen) * 1e4
    q = torch.randn(6, 10, generator=gen) * 1e4
    p[:, -2:] = -math.inf  # padded vocabulary entries, masked on both sides
    q[:, -2:] = -math.inf
    one_hot = torch.full((6, 10), -math.inf)
    one_hot[torch.arange(6), torch.arange(6)] = 0.0
    q_soft = torch.randn(6, 10, generator=gen)
    for a, b in ((p, q), (one_hot, q_soft)):
        for name, kw in CASES:
            weights = torch.ones(6)
            v, gp, gq = _grads(name, kw, a, b, engine="chunked", reduction="none", weights=weights)
            v64, gp64, gq64 = _grads(
                name,
                kw,
                a.double(),
                b.double(),
                engine="reference",
                reduction="none",
                weights=weights.double(),
            )
            finite = torch.isfinite(v64)
            assert torch.equal(torch.isfinite(v), finite), f"{name} {kw}: infinite rows differ"
            assert bool(torch.isfinite(gp).all()) and bool(torch.isfinite(gq).all()), name
            if bool(finite.any()):
                _assert_close(v[finite], v64[finite], 1e-5, f"{name} {kw} extreme values")
            ok = finite & torch.isfinite(gq64).all(-1) & torch.isfinite(gp64).all(-1)
            _assert_close(gq[ok], gq64[ok], 1e-4, f"{name} {kw} extreme grad q")
            _assert_close(gp[ok], gp64[ok], 1e-4, f"{name} {kw} extreme grad p")


def test_backward_scales_and_refuses_a_second_pass() -> None:
    gen = torch.Generator().manual_seed(7)
    p = torch.randn(5, 9, generator=gen)
    q = torch.randn(5, 9, generator=gen)
    _, _, gq = _grads("js", {}, p, q, engine="reference", reduction="mean")
    qq = q.clone().requires_grad_(True)
    loss = divergent.chunked_divergence("js", p, qq, compile=False)
    (3.0 * loss).backward(retain_graph=True)
    torch.testing.assert_close(qq.grad, 3.0 * gq, rtol=1e-5, atol=1e-8)
    with pytest.raises(RuntimeError, match="retain_graph"):  # rescaled in place: refuse
        loss.backward()
    # unit incoming gradients leave the stored gradient untouched: repeating is fine
    qq.grad = None
    loss = divergent.chunked_divergence("js", p, qq, compile=False)
    loss.backward(retain_graph=True)
    loss.backward()
    torch.testing.assert_close(qq.grad, 2.0 * gq, rtol=1e-5, atol=1e-8)
    # reduction="none" with an arbitrary incoming gradient
    weights = torch.rand(5, generator=gen)
    _, _, gq_ref = _grads("js", {}, p, q, engine="reference", reduction="none", weights=weights)
    _, _, gq_eng = _grads("js", {}, p, q, engine="chunked", reduction="none", weights=weights)
    _assert_close(gq_eng, gq_ref, 1e-5, "weighted rows")


def test_gradient_only_where_required(monkeypatch) -> None:
    seen: list[tuple[bool, bool]] = []
    run_rows = chunked._run_rows

    def spy(job, a2, b2, need_a, need_b):
        seen.append((need_a, need_b))
        return run_rows(job, a2, b2, need_a, need_b)

    monkeypatch.setattr(chunked, "_run_rows", spy)
    p = torch.randn(4, 8, requires_grad=True)
    q = torch.randn(4, 8)
    out = divergent.chunked_divergence("kl", p, q, compile=False)
    (g,) = torch.autograd.grad(out, p)
    assert g.shape == p.shape and seen[-1] == (True, False)
    with torch.no_grad():  # evaluation: no gradient is computed (no N×V buffer)
        assert divergent.chunked_divergence("kl", p, q, compile=False).grad_fn is None
    assert seen[-1] == (False, False)


def test_auto_engine_dispatch_and_settings() -> None:
    small_p = torch.randn(4, 8)
    small_q = torch.randn(4, 8, requires_grad=True)
    assert "Chunked" not in type(divergent.kl(small_p, small_q).grad_fn).__name__
    rows = chunked.AUTO_MIN_ELEMENTS // 64
    big_p = torch.randn(rows, 64)
    big_q = torch.randn(rows, 64, requires_grad=True)
    with chunked._settings(compile=False):
        assert "Chunked" in type(divergent.kl(big_p, big_q).grad_fn).__name__
        ref = divergent.divergence("kl", big_p, big_q, engine="reference")
        assert "Chunked" not in type(ref.grad_fn).__name__
        with chunked._settings(engine="reference"):
            assert "Chunked" not in type(divergent.kl(big_p, big_q).grad_fn).__name__
        with chunked._settings(engine="chunked"):
            assert "Chunked" in type(divergent.kl(small_p, small_q).grad_fn).__name__
        # probabilities always take the reference path
        probs = torch.softmax(big_q.detach(), -1).requires_grad_(True)
        out = divergent.divergence(
            "kl", torch.softmax(big_p, -1), probs, inputs="probs", engine="chunked"
        )
        assert "Chunked" not in type(out.grad_fn).__name__
    with pytest.raises(ValueError, match="engine"):
        divergent.set_engine("fast")
    with pytest.raises(ValueError, match="engine"):
        divergent.divergence("kl", small_p, small_q, engine="fast")
    with pytest.raises(ValueError, match="compile"):
        divergent.set_compile("sometimes")
    with pytest.raises(ValueError, match="chunk_size"):
        divergent.chunked_divergence("kl", small_p, small_q, chunk_size=0)
    with pytest.raises(ValueError, match="compile"):
        divergent.chunked_divergence("kl", small_p, small_q, compile="maybe")
    old = divergent.compile_mode()
    divergent.set_compile(False)
    assert divergent.compile_mode() == "off"
    divergent.set_compile(old)
    assert divergent.engine_mode() in chunked.ENGINES


def test_environment_switches(monkeypatch) -> None:
    monkeypatch.setenv("DIVERGENT_COMPILE", "0")
    assert chunked._env_mode("DIVERGENT_COMPILE", "auto", chunked.COMPILE_MODES) == "off"
    monkeypatch.setenv("DIVERGENT_COMPILE", "1")
    assert chunked._env_mode("DIVERGENT_COMPILE", "auto", chunked.COMPILE_MODES) == "on"
    monkeypatch.setenv("DIVERGENT_ENGINE", "nonsense")
    with pytest.warns(UserWarning, match="DIVERGENT_ENGINE"):
        assert chunked._env_mode("DIVERGENT_ENGINE", "auto", chunked.ENGINES) == "auto"


def test_fallback_paths_match_reference() -> None:
    """Log-probs used as given, user generators and kernel-less entries: autograd per chunk."""
    gen = torch.Generator().manual_seed(8)
    p = torch.randn(9, 13, generator=gen)
    q = torch.randn(9, 13, generator=gen)
    mask = torch.rand(9, generator=gen) > 0.2
    lp, lq = torch.log_softmax(p, -1), torch.log_softmax(q, -1)  # used as given at T = 1
    for name, kw in (("alpha", {"alpha": 1.0}), ("js", {}), ("renyi", {"order": 2.0})):
        got = _grads(
            name, kw, lp, lq, engine="chunked", reduction="mean", mask=mask, inputs="log_probs"
        )
        want = _grads(
            name,
            kw,
            lp.double(),
            lq.double(),
            engine="reference",
            reduction="mean",
            mask=mask,
            inputs="log_probs",
        )
        for g, w, what in zip(got, want, ("value", "grad p", "grad q")):
            _assert_close(g, w, 1e-5, f"log_probs {name} {what}")

    def chi2_generator(t):
        return (t - 1.0) ** 2

    squared_l2 = Divergence(
        name="squared_l2_test",
        title="squared L2 between probability vectors",
        formula=r"\sum_x (p - q)^2",
        formula_text="Σ (p − q)²",
        row_fn=lambda log_p, log_q: (log_p.exp() - log_q.exp()).square().sum(-1),
    )
    assert kernels.kernel_for(squared_l2, {}) is None
    for spec in (chi2_generator, squared_l2):
        got = _grads(spec, {}, p, q, engine="chunked", reduction="mean", mask=mask, temperature=1.3)
        want = _grads(
            spec,
            {},
            p.double(),
            q.double(),
            engine="reference",
            reduction="mean",
            mask=mask,
            temperature=1.3,
        )
        for g, w, what in zip(got, want, ("value", "grad p", "grad q")):
            _assert_close(g, w, 1e-5, f"{spec} {what}")


def test_kernel_lookup_is_by_row_function() -> None:
    kl = get_divergence("kl")
    assert isinstance(kernels.kernel_for(kl, {}).kernel, kernels.KLKernel)
    impostor = Divergence(
        name="kl",
        title="not KL",
        formula="",
        formula_text="",
        row_fn=lambda lp, lq: (lp - lq).abs().sum(-1),
    )
    assert kernels.kernel_for(impostor, {}) is None
    assert kernels.kernel_for(get_divergence("alpha"), {"alpha": 1.0}).key == "kl"
    assert kernels.kernel_for(get_divergence("renyi"), {"order": math.inf}).kernel.rounds == 2


def test_compiled_kernel_matches_eager() -> None:
    """torch.compile of the chunk kernel (dynamic shapes): same values and gradients to both
    sides as the float64 reference, and other shapes reuse the compiled graph.

    Kept small (was 107 s cold): one variant (gradients to both sides) and one graph (see
    the shapes below), inductor's C++ built at -O0 without SIMD and in this process (no
    worker pool); partial chunks are checked eagerly in the tests above.
    The generated kernel and its arithmetic are the same; only the C++ optimisation differs.
    """
    import torch._inductor.config as inductor_config

    gen = torch.Generator().manual_seed(9)
    p = torch.randn(10, 40, generator=gen) * 2
    q = torch.randn(10, 40, generator=gen) * 2
    mask = torch.tensor([True, True, False, True, True, True, False, True, True, True])
    # (rows, classes, chunk), one row masked: chunks of 3+3 and 5+5 kept rows. Every call is
    # masked and every chunk full: an unmasked call (chunks that require grad) and a partial
    # last chunk (a view narrower than its buffer) each add a guard, hence a second graph.
    shapes = [(7, 57, 3), (11, 23, 5)]
    others = [
        (torch.randn(r, v, generator=gen), torch.randn(r, v, generator=gen), c)
        for r, v, c in shapes
    ]
    keep = [torch.arange(r) != 1 for r, _, _ in shapes]
    small_compile = {
        "compile_threads": 1,
        "aot_inductor.debug_compile": True,
        "cpp.vec_isa_ok": False,
    }
    n_entries = len(chunked._COMPILED)
    with inductor_config.patch(small_compile), warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # a silent eager fallback would fail here
        out, gp, gq = _compiled_grads(p, q, mask=mask, temperature=1.5, chunk_size=4)
        graphs = counters["stats"]["unique_graphs"]
        results = [
            _compiled_grads(a, b, chunk_size=c, mask=m) for (a, b, c), m in zip(others, keep)
        ]
        assert counters["stats"]["unique_graphs"] == graphs  # no new graph for new shapes
    assert graphs > 0
    assert len(chunked._COMPILED) == n_entries + 1  # one entry for the variant, not per shape
    assert not chunked._COMPILE_FAILED
    v64, gp64, gq64 = _grads(
        "kl",
        {},
        p.double(),
        q.double(),
        engine="reference",
        reduction="mean",
        mask=mask,
        temperature=1.5,
    )
    _assert_close(out, v64, 1e-5, "compiled value")
    _assert_close(gp, gp64, 1e-5, "compiled grad p")
    _assert_close(gq, gq64, 1e-5, "compiled grad q")
    for (a, b, _), m, (value, ga, gb) in zip(others, keep, results):
        want = _grads(
            "kl", {}, a.double(), b.double(), engine="reference", reduction="mean", mask=m
        )
        for got, ref, what in zip((value, ga, gb), want, ("value", "grad p", "grad q")):
            _assert_close(got, ref, 1e-5, f"compiled, shape {tuple(a.shape)}: {what}")


def _compiled_grads(p, q, **opts):
    pp, qq = p.clone().requires_grad_(True), q.clone().requires_grad_(True)
    out = divergent.chunked_divergence("kl", pp, qq, compile=True, **opts)
    gp, gq = torch.autograd.grad(out, [pp, qq])
    return out.detach(), gp, gq


def test_compile_failure_falls_back_to_eager(monkeypatch) -> None:
    def broken(*args, **kwargs):
        def fail(*a, **k):
            raise RuntimeError("no compiler here")

        return fail

    monkeypatch.setattr(chunked, "_COMPILED", {})
    monkeypatch.setattr(chunked, "_COMPILE_FAILED", set())
    monkeypatch.setattr(torch, "compile", broken)
    p = torch.randn(4, 9)
    q = torch.randn(4, 9, requires_grad=True)
    with pytest.warns(RuntimeWarning, match="eager"):
        out = divergent.chunked_divergence("hellinger", p, q, compile=True)
    ref = divergent.divergence("hellinger", p, q, engine="reference")
    torch.testing.assert_close(out, ref)
    assert len(chunked._COMPILE_FAILED) == 1

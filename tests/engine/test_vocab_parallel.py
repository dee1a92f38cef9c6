"""Vocabulary-parallel divergences: 2 CPU processes on gloo against the unsharded result.

One spawn for the whole module: each worker loops over every registered divergence (and the
parameter cases with their own kernels), a user generator, masks, temperature, reductions,
float64 / bf16 inputs and uneven shards, compares its shard's value and gradients with the
float64 reference on the gathered logits, and writes what it found to a JSON file that the
tests below read.
"""

from __future__ import annotations

import json
import math
import socket
from pathlib import Path

import pytest
import torch
from _refs import CASES as REGISTRY_CASES

import divergent

pytestmark = pytest.mark.distributed

V = 37
CUT = 17  # rank 0 holds classes [0, 17), rank 1 holds [17, 37): uneven shards

CASES = REGISTRY_CASES  # every entry at its parameter cases (divergent.testing)
KEYS = [f"{n}-{'-'.join(f'{k}={v:g}' for k, v in kw.items()) or 'default'}" for n, kw in CASES]
EXTRA_KEYS = ["generator", "bf16", "float64", "all_masked", "infinite_row"]


def _squared_generator(t):
    return (t - 1.0) ** 2


def _close(got, want, rtol, floor=0.1):
    got, want = got.double(), want.double()
    if want.numel() == 0:
        return True, 0.0
    scale = want.abs().max().clamp_min(floor)
    err = (got - want).abs()
    return bool((err <= rtol * (want.abs() + scale)).all()), float(err.max())


def _check(rank, name, kw, p, q, *, reduction, weights=None, rtol=1e-5, **opts):
    """Sharded vs float64 unsharded: value and this rank's gradient slices."""
    from divergent.engine.vocab_parallel import vocab_parallel_divergence

    sl = slice(0, CUT) if rank == 0 else slice(CUT, p.shape[-1])
    chunk = {"chunk_size": opts.pop("chunk_size")} if "chunk_size" in opts else {}
    P = p.detach().double().requires_grad_(True)
    Q = q.detach().double().requires_grad_(True)
    ref = divergent.divergence(name, P, Q, engine="reference", reduction=reduction, **opts, **kw)
    ref_loss = ref if weights is None else (ref * weights.double()).sum()
    gP, gQ = torch.autograd.grad(ref_loss, [P, Q])
    ps = p[..., sl].detach().clone().requires_grad_(True)
    qs = q[..., sl].detach().clone().requires_grad_(True)
    out = vocab_parallel_divergence(name, ps, qs, reduction=reduction, **chunk, **opts, **kw)
    loss = out if weights is None else (out * weights).sum()
    ga, gb = torch.autograd.grad(loss, [ps, qs])
    problems = []
    for what, got, want in (
        ("value", out.detach(), ref.detach()),
        ("grad p", ga, gP[..., sl]),
        ("grad q", gb, gQ[..., sl]),
    ):
        ok, err = _close(got.float() if got.dtype == torch.bfloat16 else got, want, rtol)
        if not ok:
            problems.append(f"{what} max err {err:.3g}")
    if ga.dtype != p.dtype or gb.dtype != q.dtype:
        problems.append(f"gradient dtype {ga.dtype} for inputs {p.dtype}")
    return problems


def _worker(rank: int, port: int, out_dir: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    results: dict[str, list[str]] = {}
    try:
        gen = torch.Generator().manual_seed(0)  # same data on both ranks
        p = torch.randn(2, 5, V, generator=gen) * 2
        q = torch.randn(2, 5, V, generator=gen) * 2
        mask = torch.rand(2, 5, generator=gen) > 0.3
        weights = torch.rand(2, 5, generator=gen)
        for key, (name, kw) in zip(KEYS, CASES):
            pp = p.clone()
            if name == "renyi" and kw.get("order") == 0.0:
                pp[..., :4] = -math.inf  # a proper support for −log Q(supp P)
            problems = []
            for reduction, w, extra in (
                ("mean", None, {"mask": mask, "temperature": 1.3}),
                ("none", weights, {"temperature": 0.8}),
                ("mean", None, {"mask": mask, "normalizer": 4.0, "chunk_size": 3}),
            ):
                problems += [
                    f"{reduction}: {m}"
                    for m in _check(rank, name, kw, pp, q, reduction=reduction, weights=w, **extra)
                ]
            results[key] = problems
        results["generator"] = _check(
            rank, _squared_generator, {}, p, q, reduction="mean", mask=mask, temperature=1.1
        )
        results["bf16"] = _check(
            rank, "js", {}, p.bfloat16(), q.bfloat16(), reduction="sum", rtol=2e-2
        )
        results["float64"] = _check(
            rank, "alpha", {"alpha": 0.7}, p.double(), q.double(), reduction="mean", rtol=1e-10
        )
        none_kept = torch.zeros(2, 5, dtype=torch.bool)
        from divergent.engine.vocab_parallel import vocab_parallel_divergence

        sl = slice(0, CUT) if rank == 0 else slice(CUT, V)
        qs = q[..., sl].clone().requires_grad_(True)
        zero = vocab_parallel_divergence("kl", p[..., sl], qs, mask=none_kept)
        (g,) = torch.autograd.grad(zero, qs)
        results["all_masked"] = (
            []
            if float(zero.detach()) == 0 and bool((g == 0).all())
            else [f"value {float(zero.detach())}, max |grad| {float(g.abs().max())}"]
        )
        q_inf = q.clone()
        q_inf[0, 1, 20] = -math.inf  # in rank 1's shard: KL of row (0, 1) is +inf everywhere
        qs = q_inf[..., sl].clone().requires_grad_(True)
        rows = vocab_parallel_divergence("kl", p[..., sl], qs, reduction="none")
        (g,) = torch.autograd.grad(rows[1:].sum() + rows[0, 0], qs)
        ok = math.isinf(float(rows[0, 1].detach())) and bool(torch.isfinite(rows[1]).all())
        results["infinite_row"] = [] if ok and bool(torch.isfinite(g).all()) else ["inf row"]
    except Exception as err:  # report instead of hanging the other rank's collectives
        results["__error__"] = [f"{type(err).__name__}: {err}"]
        raise
    finally:
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(results))
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def sharded_results(tmp_path_factory) -> list[dict[str, list[str]]]:
    import torch.multiprocessing as mp

    out = tmp_path_factory.mktemp("vocab_parallel")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_worker, args=(port, str(out)), nprocs=2, join=True)
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]


@pytest.mark.parametrize("key", KEYS + EXTRA_KEYS)
def test_sharded_equals_unsharded(sharded_results, key) -> None:
    for rank, results in enumerate(sharded_results):
        assert "__error__" not in results, results.get("__error__")
        assert key in results, f"rank {rank} did not run {key}"
        assert results[key] == [], f"rank {rank}, {key}: {results[key]}"


def test_needs_an_initialised_process_group() -> None:
    p, q = torch.randn(2, 5), torch.randn(2, 5)
    with pytest.raises(ValueError, match="init_process_group"):
        divergent.vocab_parallel_divergence("kl", p, q)

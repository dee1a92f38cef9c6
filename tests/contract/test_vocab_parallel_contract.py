"""vocab_parallel_divergence: the input contract across ranks (2 CPU processes on gloo).

Options that differ between ranks (temperature, name, mask, normalizer, reduction, row
count) raise the same clear ``ValueError`` on every rank instead of a wrong value or an
abort; a NaN in one rank's shard makes that row NaN on every rank; a +inf logit or a row
with no mass on any shard raises on every rank; ``check_nan=True`` raises on every rank; a
second-order request raises. After each error the ranks are still in step (a valid call
follows and must match the unsharded value).
"""

from __future__ import annotations

import datetime
import json
import math
import re
import socket
from pathlib import Path

import pytest
import torch

import divergent

pytestmark = pytest.mark.distributed

V, CUT = 12, 5


def _outcome(fn) -> str:  # type: ignore[no-untyped-def]
    try:
        out = fn()
    except ValueError as err:
        return f"ValueError: {err}"
    except RuntimeError as err:
        return f"RuntimeError: {err}"
    values = out.detach().reshape(-1).tolist()
    return "values " + json.dumps([None if math.isnan(v) else round(v, 6) for v in values])


def _worker(rank: int, port: int, out_dir: str) -> None:
    import torch.distributed as dist

    from divergent.engine.vocab_parallel import vocab_parallel_divergence as vpd

    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=2,
        timeout=datetime.timedelta(seconds=60),
    )
    results: dict[str, str] = {}
    gen = torch.Generator().manual_seed(0)
    p = torch.randn(4, V, generator=gen)
    q = torch.randn(4, V, generator=gen)
    sl = slice(0, CUT) if rank == 0 else slice(CUT, V)
    ps, qs = p[:, sl], q[:, sl]

    def valid() -> str:
        return _outcome(lambda: vpd("kl", ps, qs, reduction="none"))

    try:
        results["different temperature"] = _outcome(
            lambda: vpd("kl", ps, qs, temperature=1.0 + rank)
        )
        results["after 1"] = valid()
        results["different name"] = _outcome(lambda: vpd("kl" if rank else "js", ps, qs))
        results["after 2"] = valid()
        mask = torch.tensor([True, True, rank == 0, True])
        results["different mask"] = _outcome(lambda: vpd("kl", ps, qs, mask=mask))
        results["after 3"] = valid()
        results["different normalizer"] = _outcome(lambda: vpd("kl", ps, qs, normalizer=2.0 + rank))
        results["different reduction"] = _outcome(
            lambda: vpd("kl", ps, qs, reduction="sum" if rank else "mean")
        )
        results["different row counts"] = _outcome(
            lambda: vpd("kl", ps[: 3 + rank], qs[: 3 + rank])
        )
        results["after 4"] = valid()
        nan_q = qs.clone()
        if rank == 1:
            nan_q[1, 0] = math.nan
        results["NaN in one shard"] = _outcome(lambda: vpd("js", ps, nan_q, reduction="none"))
        results["NaN in one shard, check_nan"] = _outcome(
            lambda: vpd("js", ps, nan_q, check_nan=True)
        )
        inf_p = ps.clone()
        if rank == 0:
            inf_p[2, 1] = math.inf
        results["+inf in one shard"] = _outcome(lambda: vpd("kl", inf_p, qs))
        empty_all = ps.clone()
        empty_all[3] = -math.inf
        results["row all -inf on every shard"] = _outcome(lambda: vpd("kl", empty_all, qs))
        empty_one = ps.clone()
        if rank == 1:
            empty_one[3] = -math.inf
        results["row all -inf on one shard (valid)"] = _outcome(
            lambda: vpd("tv", empty_one, qs, reduction="none")
        )
        results["temperature 1e-45"] = _outcome(lambda: vpd("kl", ps, qs, temperature=1e-45))
        qg = qs.clone().requires_grad_(True)

        def second_order() -> torch.Tensor:
            (g,) = torch.autograd.grad(vpd("kl", ps, qg), qg, create_graph=True)
            return g.square().sum()

        results["create_graph"] = _outcome(second_order)
        results["after 5"] = valid()
    except Exception as err:  # report instead of hanging the other rank
        results["__error__"] = f"{type(err).__name__}: {err}"
        raise
    finally:
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(results))
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> list[dict[str, str]]:  # type: ignore[no-untyped-def]
    import torch.multiprocessing as mp

    out = tmp_path_factory.mktemp("vocab_parallel_contract")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_worker, args=(port, str(out)), nprocs=2, join=True)
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]


@pytest.mark.parametrize(
    "case,match",
    [
        ("different temperature", "temperature differs across ranks"),
        ("different name", "divergence and parameters differs across ranks"),
        ("different mask", "mask .* differs across ranks"),
        ("different normalizer", "normalizer differs across ranks"),
        ("different reduction", "reduction differs across ranks"),
        ("different row counts", "number of rows differs across ranks"),
        ("NaN in one shard, check_nan", r"contains NaN in row 1 \(on rank 1"),
        ("+inf in one shard", r"shard of `p` has a \+inf entry in row 2"),
        ("row all -inf on every shard", "`p` row 3 is all -inf on every rank"),
        ("temperature 1e-45", "overflow"),
    ],
)
def test_every_rank_raises_the_same_error(results, case: str, match: str) -> None:
    for rank in range(2):
        assert "__error__" not in results[rank], results[rank]["__error__"]
        got = results[rank][case]
        assert got.startswith("ValueError"), (rank, got)
        assert re.search(match, got), (rank, got)
    assert results[0][case] == results[1][case]


def test_ranks_stay_in_step_after_errors(results) -> None:
    gen = torch.Generator().manual_seed(0)
    p = torch.randn(4, V, generator=gen)
    q = torch.randn(4, V, generator=gen)
    want = divergent.kl(p.double(), q.double(), reduction="none").tolist()
    for rank in range(2):
        for key in ("after 1", "after 2", "after 3", "after 4", "after 5"):
            values = json.loads(results[rank][key].removeprefix("values "))
            assert values == pytest.approx(want, rel=1e-5), (rank, key)


def test_nan_in_one_shard_is_nan_on_every_rank(results) -> None:
    for rank in range(2):
        values = json.loads(results[rank]["NaN in one shard"].removeprefix("values "))
        assert values[1] is None and all(v is not None for i, v in enumerate(values) if i != 1)
    assert results[0]["NaN in one shard"] == results[1]["NaN in one shard"]
    for rank in range(2):
        valid = json.loads(
            results[rank]["row all -inf on one shard (valid)"].removeprefix("values ")
        )
        assert all(v is not None and math.isfinite(v) for v in valid)


def test_second_order_is_refused(results) -> None:
    for rank in range(2):
        got = results[rank]["create_graph"]
        assert got.startswith("RuntimeError") and "first-order" in got, got

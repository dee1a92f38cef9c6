"""Teacher-logit cache: round trip, resume after interruption, and detection of damage."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save as st_save

import divergent
from divergent.teacher.cache import MANIFEST_NAME, TeacherCacheError

V, K = 50, 4


def _rows(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return divergent.topk_logprobs(torch.randn(n, V, generator=g) * 2, K)


def _write(directory: Path, ids, lp, *, rows_per_shard: int = 7, **kw) -> None:
    with divergent.TeacherCacheWriter(
        directory, k=K, vocab_size=V, teacher="toy-teacher", rows_per_shard=rows_per_shard, **kw
    ) as w:
        for start in range(0, ids.shape[0], 5):  # uneven batches across shard boundaries
            w.add(ids[start : start + 5], lp[start : start + 5])


def _manifest(directory: Path) -> dict:
    return json.loads((directory / MANIFEST_NAME).read_text())


def _rewrite_manifest(directory: Path, manifest: dict) -> None:
    (directory / MANIFEST_NAME).write_text(json.dumps(manifest))


# --------------------------------------------------------------------------------------------
# round trip
# --------------------------------------------------------------------------------------------
def test_round_trip(tmp_path: Path) -> None:
    ids, lp = _rows(30)
    ids[3, 2:] = -1  # padding survives
    _write(tmp_path, ids, lp, temperature=2.0, metadata={"dataset": "toy", "seq_len": 10})
    r = divergent.TeacherCacheReader(tmp_path)
    assert (len(r), r.num_shards, r.k, r.vocab_size) == (30, 5, K, V)
    assert (r.teacher, r.temperature, r.metadata) == (
        "toy-teacher",
        2.0,
        {"dataset": "toy", "seq_len": 10},
    )
    m = _manifest(tmp_path)
    assert m["format_version"] == 1 and m["complete"] and m["ids_dtype"] == "int32"
    assert [s["rows"] for s in m["shards"]] == [7, 7, 7, 7, 2]
    got_ids, got_lp = r.read(0, 30)
    assert got_ids.dtype == torch.int64
    assert torch.equal(got_ids, ids) and torch.equal(got_lp, lp)
    batches = list(r.iter_batches(8))
    assert [b[0].shape[0] for b in batches] == [8, 8, 8, 6]
    assert torch.equal(torch.cat([b[0] for b in batches]), ids)
    assert torch.equal(torch.cat([b[1] for b in batches]), lp)
    assert [b[0].shape[0] for b in r.iter_batches(8, drop_last=True)] == [8, 8, 8]
    assert torch.equal(torch.cat([s[1] for s in r.iter_shards()]), lp)
    assert torch.equal(r.read(9, 16)[0], ids[9:16])
    r.verify()


def test_round_trip_feeds_sparse_divergence_and_half_storage(tmp_path: Path) -> None:
    teacher = torch.randn(2, 6, V)
    ids, lp = divergent.topk_logprobs(teacher, K)
    student = torch.randn(2, 6, V)
    with divergent.TeacherCacheWriter(
        tmp_path, k=K, vocab_size=V, rows_per_shard=5, logprobs_dtype=torch.bfloat16
    ) as w:
        w.add(ids, lp)  # leading axes are flattened into rows
    r = divergent.TeacherCacheReader(tmp_path)
    c_ids, c_lp = r.read(0, 12)
    assert c_lp.dtype == torch.bfloat16
    got = divergent.sparse_divergence("kl", c_ids.view(2, 6, K), c_lp.view(2, 6, K), student)
    want = divergent.sparse_divergence("kl", ids, lp, student)
    torch.testing.assert_close(got, want, rtol=2e-2, atol=2e-3)  # bf16 storage rounding


# --------------------------------------------------------------------------------------------
# interruption and resume
# --------------------------------------------------------------------------------------------
def test_resume_after_interruption(tmp_path: Path) -> None:
    ids, lp = _rows(40, seed=1)
    with pytest.raises(RuntimeError, match="killed"):
        with divergent.TeacherCacheWriter(
            tmp_path, k=K, vocab_size=V, teacher="t", rows_per_shard=8
        ) as w:
            w.add(ids[:20], lp[:20])  # 2 shards written, 4 rows buffered
            raise RuntimeError("killed")
    m = _manifest(tmp_path)
    assert not m["complete"] and m["num_rows"] == 16 and len(m["shards"]) == 2
    with pytest.raises(TeacherCacheError, match="incomplete"):
        divergent.TeacherCacheReader(tmp_path)
    partial = divergent.TeacherCacheReader(tmp_path, allow_incomplete=True)
    assert torch.equal(partial.read(0, 16)[0], ids[:16])
    # a crash between writing shard 2 and recording it: an orphan shard and a temp file
    (tmp_path / "shard-00002.safetensors").write_bytes(b"half-written garbage")
    (tmp_path / ".shard-00003.safetensors.tmp.12345").write_bytes(b"junk")
    with pytest.raises(ValueError, match="pass resume=True"):
        divergent.TeacherCacheWriter(tmp_path, k=K, vocab_size=V, teacher="t", rows_per_shard=8)
    w = divergent.TeacherCacheWriter(
        tmp_path, k=K, vocab_size=V, teacher="t", rows_per_shard=8, resume=True
    )
    assert w.rows_written == 16 and w.num_shards == 2
    # not a file this library created (issue 8 §4: resume deletes only its own temp files)
    assert (tmp_path / ".shard-00003.safetensors.tmp.12345").read_bytes() == b"junk"
    w.add(ids[w.rows_written :], lp[w.rows_written :])
    w.close()
    r = divergent.TeacherCacheReader(tmp_path)
    assert len(r) == 40
    got_ids, got_lp = r.read(0, 40)
    assert torch.equal(got_ids, ids) and torch.equal(got_lp, lp)
    r.verify()
    with pytest.raises(ValueError, match="is complete"):
        divergent.TeacherCacheWriter(
            tmp_path, k=K, vocab_size=V, teacher="t", rows_per_shard=8, resume=True
        )


def test_resume_refuses_a_different_configuration_or_damaged_shards(tmp_path: Path) -> None:
    ids, lp = _rows(10)
    w = divergent.TeacherCacheWriter(tmp_path, k=K, vocab_size=V, teacher="a", rows_per_shard=4)
    w.add(ids, lp)  # two shards; the writer is then abandoned (process killed)
    del w
    for kwargs, field in [
        ({"k": K + 1}, "k"),
        ({"vocab_size": V + 1}, "vocab_size"),
        ({"teacher": "b"}, "teacher"),
        ({"rows_per_shard": 5}, "rows_per_shard"),
        ({"logprobs_dtype": torch.float16}, "logprobs_dtype"),
    ]:
        args = {"k": K, "vocab_size": V, "teacher": "a", "rows_per_shard": 4, **kwargs}
        with pytest.raises(ValueError, match=f"cannot resume .* its {field} is"):
            divergent.TeacherCacheWriter(tmp_path, resume=True, **args)
    shard = tmp_path / "shard-00001.safetensors"
    data = bytearray(shard.read_bytes())
    data[-1] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(TeacherCacheError, match=r"shard-00001\.safetensors is corrupted"):
        divergent.TeacherCacheWriter(
            tmp_path, k=K, vocab_size=V, teacher="a", rows_per_shard=4, resume=True
        )


def test_resume_true_on_an_empty_directory_starts_a_new_cache(tmp_path: Path) -> None:
    ids, lp = _rows(3)
    with divergent.TeacherCacheWriter(tmp_path / "new", k=K, vocab_size=V, resume=True) as w:
        assert w.rows_written == 0
        w.add(ids, lp)
    assert len(divergent.TeacherCacheReader(tmp_path / "new")) == 3


# --------------------------------------------------------------------------------------------
# damage is detected and names the shard
# --------------------------------------------------------------------------------------------
def test_corrupted_bytes_are_detected(tmp_path: Path) -> None:
    ids, lp = _rows(20)
    _write(tmp_path, ids, lp)
    shard = tmp_path / "shard-00001.safetensors"
    data = bytearray(shard.read_bytes())
    data[-3] ^= 0x01  # one bit inside the tensor data: shapes and sizes still look right
    shard.write_bytes(bytes(data))
    r = divergent.TeacherCacheReader(tmp_path)
    assert torch.equal(r.shard(0)[0], ids[:7])  # intact shards still read
    with pytest.raises(TeacherCacheError, match=r"shard shard-00001.safetensors is corrupted"):
        r.shard(1)
    with pytest.raises(TeacherCacheError, match=r"shard-00001\.safetensors"):
        list(r.iter_batches(6))
    with pytest.raises(TeacherCacheError, match=r"shard-00001\.safetensors is corrupted"):
        r.verify()
    # without checksums the flipped bit goes unnoticed: that is what verify=False gives up
    unchecked = divergent.TeacherCacheReader(tmp_path, verify=False, check_values=False)
    assert unchecked.shard(1)[0].shape == (7, K)


def test_truncated_shard_is_detected(tmp_path: Path) -> None:
    ids, lp = _rows(20)
    _write(tmp_path, ids, lp)
    shard = tmp_path / "shard-00002.safetensors"
    shard.write_bytes(shard.read_bytes()[:-10])
    with pytest.raises(TeacherCacheError, match=r"shard-00002\.safetensors is truncated"):
        divergent.TeacherCacheReader(tmp_path)


def test_missing_shard_is_detected(tmp_path: Path) -> None:
    ids, lp = _rows(20)
    _write(tmp_path, ids, lp)
    (tmp_path / "shard-00000.safetensors").unlink()
    with pytest.raises(TeacherCacheError, match=r"shard-00000\.safetensors is missing"):
        divergent.TeacherCacheReader(tmp_path)


def test_missing_or_broken_manifest(tmp_path: Path) -> None:
    with pytest.raises(TeacherCacheError, match=r"manifest\.json is missing"):
        divergent.TeacherCacheReader(tmp_path)
    ids, lp = _rows(10)
    _write(tmp_path, ids, lp)
    m = _manifest(tmp_path)
    _rewrite_manifest(tmp_path, {**m, "format_version": 99})
    with pytest.raises(TeacherCacheError, match="format_version 99 is not supported"):
        divergent.TeacherCacheReader(tmp_path)
    _rewrite_manifest(tmp_path, {**m, "num_rows": 11})
    with pytest.raises(TeacherCacheError, match="num_rows is 11 but the shards hold 10 rows"):
        divergent.TeacherCacheReader(tmp_path)
    bad_file = [dict(m["shards"][0], file="../elsewhere.safetensors"), m["shards"][1]]
    _rewrite_manifest(tmp_path, {**m, "shards": bad_file})
    with pytest.raises(TeacherCacheError, match="shard entry 0 has file"):
        divergent.TeacherCacheReader(tmp_path)
    (tmp_path / MANIFEST_NAME).write_text("{not json")
    with pytest.raises(TeacherCacheError, match="not a readable JSON manifest"):
        divergent.TeacherCacheReader(tmp_path)


def _replace_shard(directory: Path, index: int, tensors: dict, metadata: dict) -> None:
    """Swap a shard for a well-formed file and update its size and checksum in the manifest,
    so that only the content checks can catch the mismatch."""
    data = st_save(tensors, metadata=metadata)
    (directory / f"shard-{index:05d}.safetensors").write_bytes(data)
    m = _manifest(directory)
    m["shards"][index].update(bytes=len(data), sha256=hashlib.sha256(data).hexdigest())
    _rewrite_manifest(directory, m)


def test_wrong_k(tmp_path: Path) -> None:
    ids, lp = _rows(14)
    with divergent.TeacherCacheWriter(tmp_path, k=K, vocab_size=V, rows_per_shard=7) as w:
        with pytest.raises(ValueError, match=r"`ids` must have shape \(\.\.\., k\) with k = 4"):
            w.add(ids[:, :3], lp[:, :3])
        w.add(ids, lp)
    # a shard whose k disagrees with the manifest (size and checksum made consistent)
    wide = divergent.topk_logprobs(torch.randn(7, V), K + 1)
    _replace_shard(
        tmp_path,
        1,
        {"ids": wide[0].int(), "logprobs": wide[1]},
        {"shard_index": "1", "first_row": "7"},
    )
    r = divergent.TeacherCacheReader(tmp_path)
    r.shard(0)
    with pytest.raises(
        TeacherCacheError,
        match=r"shard-00001.safetensors tensor `ids` has shape \(7, 5\); the "
        r"manifest says \(7, 4\)",
    ):
        r.shard(1)


def test_shard_from_another_position_or_with_bad_values(tmp_path: Path) -> None:
    ids, lp = _rows(14)
    _write(tmp_path, ids, lp, rows_per_shard=7)
    # shard 0's content copied into slot 1: checksum updated, header still says index 0
    _replace_shard(
        tmp_path,
        1,
        {"ids": ids[:7].int(), "logprobs": lp[:7]},
        {"shard_index": "0", "first_row": "0"},
    )
    with pytest.raises(TeacherCacheError, match=r"00001\.safetensors header says shard_index"):
        divergent.TeacherCacheReader(tmp_path).shard(1)
    # values outside the vocabulary
    bad = ids[7:].clone().int()
    bad[0, 0] = V + 3
    _replace_shard(
        tmp_path, 1, {"ids": bad, "logprobs": lp[7:]}, {"shard_index": "1", "first_row": "7"}
    )
    with pytest.raises(TeacherCacheError, match=r"shard-00001.safetensors has invalid contents"):
        divergent.TeacherCacheReader(tmp_path).shard(1)
    # wrong tensor names
    _replace_shard(
        tmp_path,
        1,
        {"ids": ids[7:].int(), "scores": lp[7:]},
        {"shard_index": "1", "first_row": "7"},
    )
    with pytest.raises(TeacherCacheError, match=r"holds tensors \['ids', 'scores'\]"):
        divergent.TeacherCacheReader(tmp_path).shard(1)


# --------------------------------------------------------------------------------------------
# argument validation
# --------------------------------------------------------------------------------------------
def test_writer_validates_arguments_and_rows(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="`k` = 60 exceeds `vocab_size` = 50"):
        divergent.TeacherCacheWriter(tmp_path / "a", k=60, vocab_size=V)
    with pytest.raises(ValueError, match="`rows_per_shard` must be an integer >= 1"):
        divergent.TeacherCacheWriter(tmp_path / "a", k=K, vocab_size=V, rows_per_shard=0)
    with pytest.raises(ValueError, match="`metadata` must be JSON-serialisable"):
        divergent.TeacherCacheWriter(tmp_path / "a", k=K, vocab_size=V, metadata={"x": object()})
    with pytest.raises(ValueError, match="`logprobs_dtype` must be one of"):
        divergent.TeacherCacheWriter(tmp_path / "a", k=K, vocab_size=V, logprobs_dtype=torch.int8)
    ids, lp = _rows(4)
    w = divergent.TeacherCacheWriter(tmp_path / "b", k=K, vocab_size=V)
    bad = ids.clone()
    bad[2, 1] = 77
    with pytest.raises(
        ValueError, match=r"`ids` has id 77 in row 2, outside the vocabulary \[0, 50\);"
    ):
        w.add(bad, lp)
    with pytest.raises(ValueError, match="`logprobs` sums to probability"):
        w.add(ids, torch.full_like(lp, -0.01))
    with pytest.raises(ValueError, match="`ids` must be an integer tensor"):
        w.add(lp, lp)
    assert w.rows_buffered == 0  # rejected batches are not buffered
    r_missing = tmp_path / "b"
    w.close()
    assert len(divergent.TeacherCacheReader(r_missing)) == 0
    with pytest.raises(ValueError, match="closed"):
        w.add(ids, lp)
    reader = divergent.TeacherCacheReader(r_missing)
    with pytest.raises(ValueError, match=r"row range \[0, 5\) must satisfy"):
        reader.read(0, 5)
    with pytest.raises(ValueError, match="`batch_size` must be a positive integer"):
        next(reader.iter_batches(0))

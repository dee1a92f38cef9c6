"""Teacher cache safety (issue 8 §4): own temp files only, O_EXCL temp files, one writer at a
time (stale locks of dead processes taken over), hostile manifests, strict metadata, and what
``verify=False`` does and does not detect."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

import divergent
from divergent.teacher import cache as cache_mod
from divergent.teacher.cache import LOCK_NAME, MANIFEST_NAME, TeacherCacheError

K, V = 4, 50


def _rows(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return divergent.topk_logprobs(torch.randn(n, V, generator=g), K)


def _writer(path: Path, **kw) -> divergent.TeacherCacheWriter:
    args = {"k": K, "vocab_size": V, "teacher": "t", "rows_per_shard": 4, **kw}
    return divergent.TeacherCacheWriter(path, **args)


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _child(code: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], env=env)


def _wait_for(predicate, seconds: float = 120.0) -> None:
    end = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError("timed out waiting for the child process")
        time.sleep(0.05)


# --------------------------------------------------------------------------------------------
# temporary files: only our own, never through a planted file or symlink
# --------------------------------------------------------------------------------------------
def test_resume_never_deletes_files_it_did_not_create(tmp_path: Path) -> None:
    ids, lp = _rows(10)
    w = _writer(tmp_path)
    w.add(ids, lp)
    w.abandon()
    # the user's own dot-files, some matching the pattern the old resume deleted
    mine = {
        ".notes.tmp.123": b"user notes",
        ".shard-00003.safetensors.tmp.12345": b"user file",
        ".divergent-tmp.notahextoken.shard-00000.safetensors": b"user file too",
        ".divergent-tmp." + "ab" * 16 + ".shard-00009.safetensors": b"no lock names this token",
    }
    for name, data in mine.items():
        (tmp_path / name).write_bytes(data)
    w2 = _writer(tmp_path, resume=True)
    w2.add(ids[w2.rows_written :], lp[w2.rows_written :])
    w2.close()
    for name, data in mine.items():
        assert (tmp_path / name).read_bytes() == data, name
    assert torch.equal(divergent.TeacherCacheReader(tmp_path).read(0, 10)[0], ids)


def test_resume_after_a_killed_writer_removes_only_that_writers_temp_files(
    tmp_path: Path,
) -> None:
    """A real crash: the child dies (os._exit) between writing a shard's temp file and renaming
    it; its lock (with its token) and its temp file stay behind."""
    child = _child(
        f"""
        import os, torch, divergent
        from divergent.teacher import cache
        ids, lp = divergent.topk_logprobs(torch.randn(6, {V}), {K})
        w = divergent.TeacherCacheWriter({str(tmp_path)!r}, k={K}, vocab_size={V},
                                         teacher="t", rows_per_shard=4)
        cache.os.replace = lambda *a, **k: os._exit(3)  # die mid-write
        w.add(ids, lp)
        """
    )
    assert child.wait(timeout=300) == 3
    lock = json.loads((tmp_path / LOCK_NAME).read_text())
    assert lock["pid"] == child.pid
    leftover = tmp_path / f".divergent-tmp.{lock['token']}.shard-00000.safetensors"
    assert leftover.is_file()
    unrelated = tmp_path / ".shard-00000.safetensors.tmp.99"
    unrelated.write_bytes(b"keep me")
    w = _writer(tmp_path, resume=True)  # the dead child's lock is taken over
    assert w.rows_written == 0
    assert not leftover.exists()
    assert unrelated.read_bytes() == b"keep me"
    w.abandon()
    assert not (tmp_path / LOCK_NAME).exists()


@pytest.mark.parametrize("target", ["manifest.json", "shard-00000.safetensors"])
def test_planted_symlink_at_a_temp_name_is_never_followed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, target: str
) -> None:
    token = "cd" * 16
    monkeypatch.setattr(cache_mod.secrets, "token_hex", lambda n: token)  # a guessed name
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"precious")
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / f".divergent-tmp.{token}.{target}").symlink_to(victim)
    ids, lp = _rows(4)
    with pytest.raises(TeacherCacheError, match=r"already exists .* nothing was overwritten"):
        w = _writer(cache)
        w.add(ids, lp)
    assert victim.read_bytes() == b"precious"
    assert (cache / f".divergent-tmp.{token}.{target}").is_symlink()  # left alone
    assert not (cache / LOCK_NAME).exists()  # the failed writer released its lock


def test_files_are_created_with_the_users_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        with _writer(tmp_path) as w:
            w.add(*_rows(5))
    finally:
        os.umask(old)
    for name in (MANIFEST_NAME, "shard-00000.safetensors"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o644, name


# --------------------------------------------------------------------------------------------
# one writer at a time
# --------------------------------------------------------------------------------------------
def test_second_writer_in_the_same_process_is_refused(tmp_path: Path) -> None:
    ids, lp = _rows(10)
    w1 = _writer(tmp_path)
    w1.add(ids[:4], lp[:4])
    pattern = rf"being written by another writer \(pid {os.getpid()} on host "
    with pytest.raises(TeacherCacheError, match=pattern):
        _writer(tmp_path, resume=True)
    with pytest.raises(TeacherCacheError, match="being written by another writer"):
        _writer(tmp_path / "sub" / "..", resume=True)  # the same folder by another path
    w1.abandon()
    w2 = _writer(tmp_path, resume=True)
    assert w2.rows_written == 4
    w2.add(ids[4:], lp[4:])
    w2.close()
    assert len(divergent.TeacherCacheReader(tmp_path)) == 10


def test_second_writer_while_another_process_writes_then_after_it_died(tmp_path: Path) -> None:
    child = _child(
        f"""
        import time, torch, divergent
        ids, lp = divergent.topk_logprobs(torch.randn(8, {V}), {K})
        w = divergent.TeacherCacheWriter({str(tmp_path)!r}, k={K}, vocab_size={V},
                                         teacher="t", rows_per_shard=4)
        w.add(ids, lp)
        open({str(tmp_path / "ready")!r}, "w").close()
        time.sleep(600)
        """
    )
    try:
        _wait_for(lambda: (tmp_path / "ready").exists())
        with pytest.raises(TeacherCacheError, match=rf"pid {child.pid} on host "):
            _writer(tmp_path, resume=True)
    finally:
        child.kill()
        child.wait()
    # the child died holding the lock: the kernel released it, the next writer takes over
    w = _writer(tmp_path, resume=True)
    assert w.rows_written == 8
    w.close()


def test_a_stale_lock_file_of_a_dead_pid_is_taken_over(tmp_path: Path) -> None:
    ids, lp = _rows(6)
    w = _writer(tmp_path)
    w.add(ids, lp)
    w.abandon()
    stale = {
        "pid": _dead_pid(),
        "host": socket.gethostname(),
        "started": "earlier",
        "token": "ef" * 16,
    }
    (tmp_path / LOCK_NAME).write_text(json.dumps(stale))
    own_leftover = tmp_path / f".divergent-tmp.{'ef' * 16}.manifest.json"
    own_leftover.write_bytes(b"{")
    w2 = _writer(tmp_path, resume=True)
    assert not own_leftover.exists()
    assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == os.getpid()
    w2.close()
    assert not (tmp_path / LOCK_NAME).exists()


def test_failed_construction_releases_the_lock(tmp_path: Path) -> None:
    w = _writer(tmp_path)
    w.add(*_rows(4))
    w.abandon()
    with pytest.raises(ValueError, match="cannot resume"):
        _writer(tmp_path, resume=True, teacher="other")
    assert not (tmp_path / LOCK_NAME).exists()
    _writer(tmp_path, resume=True).abandon()


# --------------------------------------------------------------------------------------------
# hostile manifests and metadata
# --------------------------------------------------------------------------------------------
def test_deeply_nested_manifest_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / MANIFEST_NAME).write_text("[" * 200_000 + "]" * 200_000)
    with pytest.raises(TeacherCacheError, match="nested too deeply"):
        divergent.TeacherCacheReader(tmp_path)
    with pytest.raises(TeacherCacheError, match="nested too deeply"):
        _writer(tmp_path, resume=True)
    (tmp_path / MANIFEST_NAME).write_text('{"format": ' + "[" * 200_000 + "]" * 200_000 + "}")
    with pytest.raises(TeacherCacheError, match="nested too deeply"):
        divergent.TeacherCacheReader(tmp_path)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_metadata_with_nan_or_inf_is_rejected(tmp_path: Path, bad: float) -> None:
    for meta, where in (
        ({"lr": bad}, r"metadata\['lr'\]"),
        ({"nested": {"values": [1.0, bad]}}, r"metadata\['nested'\]\['values'\]\[1\]"),
    ):
        with pytest.raises(ValueError, match=rf"`metadata` .*\(no NaN or ±inf.*{where} = "):
            _writer(tmp_path / "c", metadata=meta)
    assert not (tmp_path / "c" / MANIFEST_NAME).exists()


def test_manifest_with_nan_is_rejected_by_the_reader(tmp_path: Path) -> None:
    with _writer(tmp_path, metadata={"lr": 0.1}) as w:
        w.add(*_rows(5))
    path = tmp_path / MANIFEST_NAME
    path.write_text(path.read_text().replace('"lr": 0.1', '"lr": NaN'))
    with pytest.raises(TeacherCacheError, match="NaN is not a JSON number"):
        divergent.TeacherCacheReader(tmp_path)


# --------------------------------------------------------------------------------------------
# verify=False: what it does and does not detect (as its docstring says)
# --------------------------------------------------------------------------------------------
def test_verify_false_detects_structure_but_not_valid_looking_bit_flips(tmp_path: Path) -> None:
    ids, lp = _rows(4, seed=3)
    with _writer(tmp_path) as w:
        w.add(ids, lp)
    shard = tmp_path / "shard-00000.safetensors"
    data = bytearray(shard.read_bytes())
    # the last 4 bytes are ids[3, 3] (int32, little-endian): flip its lowest bit, which turns
    # it into another valid id (30 → 31 for this seed)
    assert int(ids[3, 3]) == 30 and 31 not in ids[3].tolist()
    data[-4] ^= 0x01
    shard.write_bytes(bytes(data))
    unchecked = divergent.TeacherCacheReader(tmp_path, verify=False)
    got_ids, got_lp = unchecked.read(0, 4)  # not detected: silently different
    assert int(got_ids[3, 3]) == 31 and torch.equal(got_lp, lp)
    with pytest.raises(TeacherCacheError, match="is corrupted: SHA-256"):
        divergent.TeacherCacheReader(tmp_path).read(0, 4)
    # a flip that makes the value impossible (sign bit: a negative id) is caught by check_values
    data[-1] ^= 0x80
    shard.write_bytes(bytes(data))
    with pytest.raises(TeacherCacheError, match="invalid contents"):
        divergent.TeacherCacheReader(tmp_path, verify=False).read(0, 4)
    # and a truncated shard is caught at construction, hash or not
    shard.write_bytes(bytes(data[:-1]))
    with pytest.raises(TeacherCacheError, match="is truncated"):
        divergent.TeacherCacheReader(tmp_path, verify=False)
    assert "is **not** detected" in divergent.TeacherCacheReader.__doc__

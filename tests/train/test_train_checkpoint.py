"""Atomic checkpoint files: verified reads, no torn files, stale temporaries cleared."""

from __future__ import annotations

import os

import pytest
import torch

from divergent.train.checkpoint import (
    CheckpointError,
    CheckpointWriter,
    atomic_write_bytes,
    load_checkpoint,
    remove_stale_temporaries,
    save_checkpoint,
)


def test_round_trip_keeps_every_value(tmp_path):
    state = {"w": torch.randn(3, 4), "step": 7, "rng": torch.get_rng_state(), "n": [1, (2, 3)]}
    path = tmp_path / "a.ckpt"
    save_checkpoint(path, state)
    got = load_checkpoint(path)
    assert torch.equal(got["w"], state["w"]) and torch.equal(got["rng"], state["rng"])
    assert got["step"] == 7 and got["n"] == [1, (2, 3)]
    assert not list(tmp_path.glob(".*.tmp"))


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda raw: raw[:-5], "truncated"),
        (lambda raw: raw[:60] + bytes([raw[60] ^ 0xFF]) + raw[61:], "SHA-256"),
        (lambda raw: b"NOTACKPT" + raw[8:], "bad header"),
        (lambda raw: b"", "bad header"),
        (lambda raw: raw + b"x", "SHA-256"),
    ],
)
def test_damaged_file_is_refused_and_left_untouched(tmp_path, damage, message):
    path = tmp_path / "a.ckpt"
    save_checkpoint(path, {"w": torch.ones(100)})
    bad = damage(path.read_bytes())
    path.write_bytes(bad)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(path)
    assert path.read_bytes() == bad


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="no such file"):
        load_checkpoint(tmp_path / "nope.ckpt")


def test_payload_cannot_run_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo hacked",))

    import io
    import pickle

    from divergent.train import checkpoint as ck

    payload = pickle.dumps({"x": Evil()}, protocol=2)
    buffer = io.BytesIO(payload)
    import hashlib

    raw = ck._HEADER.pack(ck.MAGIC, hashlib.sha256(buffer.getvalue()).digest(), len(payload))
    (tmp_path / "evil.ckpt").write_bytes(raw + payload)
    with pytest.raises(CheckpointError, match="unreadable payload"):
        load_checkpoint(tmp_path / "evil.ckpt")


def test_failed_write_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "a.ckpt"
    save_checkpoint(path, {"step": 1})

    def broken_replace(src, dst):
        raise OSError("disk gone")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk gone"):
        save_checkpoint(path, {"step": 2})
    monkeypatch.undo()
    assert load_checkpoint(path)["step"] == 1
    assert not list(tmp_path.glob(".*.tmp"))


def test_stale_temporaries_are_removed_but_nothing_else(tmp_path):
    keep = [tmp_path / "a.ckpt", tmp_path / ".a.ckpt.notatoken.tmp", tmp_path / "b.tmp"]
    for f in keep:
        f.write_bytes(b"x")
    stale = tmp_path / f".a.ckpt.{'0' * 31}f.tmp"
    stale.write_bytes(b"half")
    assert remove_stale_temporaries(tmp_path, "a.ckpt") == 1
    assert not stale.exists() and all(f.exists() for f in keep)


def test_background_writer_orders_writes_and_reports_errors(tmp_path):
    writer = CheckpointWriter(background=True)
    path = tmp_path / "a.ckpt"
    for step in range(5):
        writer.submit(path, {"step": step})
    writer.wait()
    assert load_checkpoint(path)["step"] == 4
    writer.submit(tmp_path / "missing-folder" / "a.ckpt", {"step": 5})
    with pytest.raises(FileNotFoundError):
        writer.wait()
    writer.wait()  # the error is reported once


def test_atomic_write_bytes_replaces_whole_content(tmp_path):
    path = tmp_path / "f.bin"
    atomic_write_bytes(path, b"a" * 1000)
    atomic_write_bytes(path, b"b")
    assert path.read_bytes() == b"b"

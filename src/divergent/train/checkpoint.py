r"""Atomic, verified checkpoint files for the trainers.

A checkpoint is one file::

    b"DIVCKPT1"  (8 bytes: format and version)
    SHA-256 of the payload (32 bytes)
    payload length (8 bytes, little-endian)
    payload: a ``torch.save`` of the state dict (tensors, numbers, strings, lists, dicts)

Guarantees:

* **Atomic.** :func:`atomic_write_bytes` writes to a temporary file *in the same folder*,
  flushes and ``fsync``\ s it, moves it into place with :func:`os.replace` (atomic on POSIX)
  and fsyncs the folder. A process killed at any moment (SIGKILL included) leaves either the
  previous file or the new one, never a torn one; at worst a stray ``.*.tmp`` file, which
  :func:`remove_stale_temporaries` clears.
* **Verified.** :func:`load_checkpoint` checks the magic bytes, the length and the SHA-256
  before unpickling (with ``weights_only=True``: no code runs from a checkpoint), and raises
  :class:`CheckpointError` naming the file and what is wrong instead of returning damaged
  state.

Example:
    >>> import tempfile, torch
    >>> from pathlib import Path
    >>> path = Path(tempfile.mkdtemp()) / "state.ckpt"
    >>> save_checkpoint(path, {"step": 3, "w": torch.ones(2)})
    >>> load_checkpoint(path)["step"]
    3
    >>> _ = path.write_bytes(path.read_bytes()[:-1])  # truncate: a damaged file
    >>> try:
    ...     load_checkpoint(path)
    ... except CheckpointError as err:
    ...     print(str(err).split(":")[1].strip())
    truncated (payload 1 byte(s) short)
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import struct
import threading
from pathlib import Path
from typing import Any

import torch

from divergent._files import atomic_write_bytes

__all__ = [
    "CheckpointError",
    "CheckpointWriter",
    "atomic_write_bytes",
    "load_checkpoint",
    "remove_stale_temporaries",
    "save_checkpoint",
    "serialize_checkpoint",
]

MAGIC = b"DIVCKPT1"
_HEADER = struct.Struct("<8s32sQ")


class CheckpointError(ValueError):
    """A checkpoint file is missing, truncated, corrupted or from incompatible settings."""


def remove_stale_temporaries(folder: str | os.PathLike[str], name: str) -> int:
    """Delete temporary files left by a killed :func:`atomic_write_bytes` for ``name``.

    Only files named ``.{name}.<32 hex>.tmp`` are touched (never a finished file).
    Returns how many were removed.
    """
    removed = 0
    for stray in Path(folder).glob(f".{name}.*.tmp"):
        token = stray.name[len(name) + 2 : -4]
        if len(token) == 32 and all(c in "0123456789abcdef" for c in token):
            with contextlib.suppress(OSError):
                stray.unlink()
                removed += 1
    return removed


def serialize_checkpoint(state: dict[str, Any]) -> bytes:
    """The bytes of a checkpoint file holding ``state`` (header + ``torch.save`` payload)."""
    buffer = io.BytesIO()
    # the legacy (non-zip) container: a third faster for small states, read back the same way
    torch.save(state, buffer, _use_new_zipfile_serialization=False)
    payload = buffer.getvalue()
    return _HEADER.pack(MAGIC, hashlib.sha256(payload).digest(), len(payload)) + payload


def save_checkpoint(path: str | os.PathLike[str], state: dict[str, Any]) -> None:
    """Serialise ``state`` and write it to ``path`` atomically (see the module docstring)."""
    atomic_write_bytes(path, serialize_checkpoint(state))


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and verify a checkpoint written by :func:`save_checkpoint`.

    Raises:
        CheckpointError: the file is missing, not a checkpoint, truncated, fails its SHA-256
            check or does not unpickle to a dict.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {path}: no such file") from None
    except OSError as err:
        raise CheckpointError(f"checkpoint {path}: cannot be read ({err.strerror})") from None
    if len(raw) < _HEADER.size or raw[:8] != MAGIC:
        raise CheckpointError(f"checkpoint {path}: not a divergent checkpoint (bad header)")
    _, digest, length = _HEADER.unpack_from(raw)
    payload = raw[_HEADER.size :]
    if len(payload) < length:
        raise CheckpointError(
            f"checkpoint {path}: truncated (payload {length - len(payload)} byte(s) short)"
        )
    if len(payload) > length or hashlib.sha256(payload).digest() != digest:
        raise CheckpointError(f"checkpoint {path}: corrupted (SHA-256 mismatch)")
    try:
        state = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
    except Exception as err:  # a verified payload that still fails: say so, never guess
        raise CheckpointError(f"checkpoint {path}: unreadable payload ({err})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {path}: payload is {type(state).__name__}, not dict")
    return state


class CheckpointWriter:
    """Writes checkpoints in a background thread, in order, never blocking the training loop.

    The state is serialised on the caller's thread (so later training steps cannot change
    it); the write, fsync and rename run in one long-lived background thread. If a newer state
    for the same path arrives while an older one is still queued (not yet started), the older
    one is dropped: every file on disk is always a complete checkpoint, only the newest
    matters. :meth:`wait` blocks until everything queued is on disk and re-raises the first
    error; call it before the process ends (the thread is a daemon).

    Args:
        background: ``False`` writes synchronously.
    """

    def __init__(self, *, background: bool = True) -> None:
        self.background = background
        self._cond = threading.Condition()
        self._pending: dict[Path, bytes] = {}
        self._writing = False
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._pending:
                    self._cond.wait()
                path = next(iter(self._pending))
                data = self._pending.pop(path)
                self._writing = True
            try:
                atomic_write_bytes(path, data)
            except BaseException as err:  # re-raised on the training thread
                with self._cond:
                    self._error = self._error or err
            finally:
                with self._cond:
                    self._writing = False
                    self._cond.notify_all()

    def _raise(self) -> None:
        with self._cond:
            error, self._error = self._error, None
        if error is not None:
            raise error

    def submit(self, path: str | os.PathLike[str], state: dict[str, Any]) -> None:
        """Serialise ``state`` now; write it to ``path`` (in the background if enabled)."""
        data = serialize_checkpoint(state)
        self._raise()
        if not self.background:
            atomic_write_bytes(path, data)
            return
        with self._cond:
            self._pending[Path(path)] = data  # replaces an older state not yet started
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="divergent-checkpoint", daemon=True
                )
                self._thread.start()
            self._cond.notify_all()

    def wait(self) -> None:
        """Block until every queued write has finished; re-raise the first error, if any."""
        with self._cond:
            while self._pending or self._writing:
                self._cond.wait()
        self._raise()

"""Durable file writes shared by every layer (a leaf module, rank 0).

:func:`atomic_write_bytes` writes a temporary file in the destination folder, fsyncs it, renames
it over the destination and fsyncs the folder, so a reader sees the old file or the new one,
never a torn one, even after a kill at any moment. Used by the trainer's checkpoints, the
reproduction runner's ``results.json`` and (its folder fsync) the teacher cache.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path

__all__ = ["atomic_write_bytes", "fsync_dir"]


def fsync_dir(directory: Path) -> None:
    """Make a rename into ``directory`` durable (POSIX); best effort, since not every platform
    can open a folder."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically: temp file in the same folder, fsync, rename.

    Args:
        path: destination; its folder must exist.
        data: the bytes to write.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_dir(path.parent)

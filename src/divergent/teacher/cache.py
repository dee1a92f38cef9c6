r"""An on-disk cache of sparse teacher outputs: top-k ids and log-probs in safetensors shards.

Layout of a cache directory::

    manifest.json               format, version, k, vocabulary size, dtypes, teacher id and
                                metadata, rows per shard, and per shard: file, rows,
                                first row, size in bytes, SHA-256
    shard-00000.safetensors     tensors "ids" (rows, k) int32/int64, "logprobs" (rows, k)
    shard-00001.safetensors     ...

Each row is one position (one token of one sequence, in the order the rows were added);
``logprobs[r, j]`` is :math:`\log P(\text{ids}[r, j])` under the *full* teacher distribution
at the recorded temperature, the input format of :func:`divergent.sparse_divergence`.
Id −1 marks an unused slot.

Guarantees:

* **Atomic shards.** A shard is written to a temporary file, fsynced and moved into place
  with :func:`os.replace`, then the manifest is rewritten the same way. A job killed at any
  moment leaves every shard listed in the manifest intact; rows still in the writer's buffer
  are lost and re-added after resuming (``writer.rows_written`` says how many rows to skip).
* **Verified reads.** The reader checks each shard's size, SHA-256, safetensors header,
  tensor names, dtypes and shapes against the manifest before returning any of its rows; a
  missing, truncated, corrupted or mismatched shard raises :class:`TeacherCacheError` naming
  the shard, never yields data. A manifest that is not the expected JSON (including one
  nested too deeply to parse, or holding NaN / ±Infinity) is a :class:`TeacherCacheError`
  too, never a crash.
* **One writer at a time.** A writer holds the lock file ``.divergent-writer.lock`` in the
  cache directory (an OS file lock, ``fcntl.flock``, released by the kernel when the process
  dies; on systems without ``fcntl``, an exclusive file with the writer's pid, stale when that
  pid is gone on this host). A second writer on the same directory is refused with a
  :class:`TeacherCacheError` naming the holder (pid, host, start time); a lock left by a dead
  process is taken over.
* **Own temporary files only.** Temporary files are created next to their target with
  ``O_CREAT | O_EXCL`` (and ``O_NOFOLLOW``) under a name that carries the writer's random
  token, ``.divergent-tmp.<token>.<target>``, so a planted file or symlink is never written
  through, and resuming deletes only the temporary files of the dead writer whose lock it
  takes over (its token is in the lock file). Nothing else in the directory is touched.

Example:
    >>> import tempfile, torch, divergent
    >>> d = tempfile.mkdtemp()
    >>> logits = torch.randn(10, 50)
    >>> ids, lp = divergent.topk_logprobs(logits, 4)
    >>> with divergent.TeacherCacheWriter(d, k=4, vocab_size=50, rows_per_shard=4) as w:
    ...     w.add(ids, lp)
    >>> r = divergent.TeacherCacheReader(d)
    >>> len(r), r.num_shards
    (10, 3)
    >>> got_ids, got_lp = r.read(0, 10)
    >>> bool((got_ids == ids).all() and (got_lp == lp).all())
    True
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import math
import os
import re
import secrets
import socket
import stat
import struct
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from divergent._files import fsync_dir
from divergent._validation import check_int, check_positive_scalar
from divergent._version import __version__
from divergent.teacher.sparse import validate_topk

try:  # POSIX: an advisory lock the kernel releases when its holder dies
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "LOCK_NAME",
    "MANIFEST_NAME",
    "TeacherCacheError",
    "TeacherCacheReader",
    "TeacherCacheWriter",
]

FORMAT_NAME = "divergent-teacher-cache"
FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"

_LOGPROB_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "float64": torch.float64,
}
_ID_DTYPES: dict[str, torch.dtype] = {"int32": torch.int32, "int64": torch.int64}
LOCK_NAME = ".divergent-writer.lock"
_SHARD_RE = re.compile(r"^shard-\d{5,}\.safetensors$")
_TMP_PREFIX = ".divergent-tmp."
_TOKEN_RE = re.compile(r"^[0-9a-f]{32}$")
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


class TeacherCacheError(ValueError):
    """A teacher cache is missing, incomplete, corrupted or inconsistent with its manifest."""


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _shard_name(index: int) -> str:
    return f"shard-{index:05d}.safetensors"


def _tmp_name(token: str, target: str) -> str:
    return f"{_TMP_PREFIX}{token}.{target}"


def _atomic_write(path: Path, data: bytes, token: str) -> None:
    """Write ``data`` to ``path`` so that readers see either the old file or the whole new one.

    The temporary file is created with ``O_CREAT | O_EXCL | O_NOFOLLOW`` under a name that
    carries the writer's random ``token``: an existing file or a planted symlink of that name
    makes the write fail instead of being written through or overwritten.
    """
    tmp = path.with_name(_tmp_name(token, path.name))
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_NOFOLLOW | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(tmp, flags, 0o666)  # the user's umask applies
    except FileExistsError:
        raise TeacherCacheError(
            f"cannot write {path.name}: the temporary file {tmp} already exists (this writer's "
            "own name; something else created it); nothing was overwritten"
        ) from None
    created = True
    try:
        with open(fd, "wb", closefd=True) as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        created = False
    finally:
        if created:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
    fsync_dir(path.parent)


def _remove_own_temp_files(directory: Path, token: str) -> list[str]:
    """Delete the temporary files of the writer with ``token`` (regular files only)."""
    if not _TOKEN_RE.match(token):
        return []
    pattern = re.compile(
        "^"
        + re.escape(_tmp_name(token, ""))
        + r"(shard-\d{5,}\.safetensors|"
        + re.escape(MANIFEST_NAME)
        + ")$"
    )
    removed = []
    for entry in directory.iterdir():
        if not pattern.match(entry.name):
            continue
        with contextlib.suppress(OSError):
            if stat.S_ISREG(os.lstat(entry).st_mode):
                entry.unlink()
                removed.append(entry.name)
    return removed


# --------------------------------------------------------------------------------------------
# the writer lock
# --------------------------------------------------------------------------------------------
def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # exists (owned by someone else) or cannot tell: assume alive
    return True


def _describe_holder(info: Mapping[str, Any]) -> str:
    return (
        f"pid {info.get('pid', '?')} on host {info.get('host', '?')}, "
        f"since {info.get('started', '?')}"
    )


def _parse_lock(text: str) -> dict[str, Any]:
    try:
        info = json.loads(text)
    except (ValueError, RecursionError):
        return {}
    return info if isinstance(info, dict) else {}


class _WriterLock:
    """The exclusive lock of one writer on a cache directory (see the module docstring)."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / LOCK_NAME
        self.token = secrets.token_hex(16)
        self.previous: dict[str, Any] = {}  # the lock a dead writer left behind, if any
        self._fd: int | None = None
        info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "token": self.token,
        }
        self._text = json.dumps(info) + "\n"
        if fcntl is not None:
            self._acquire_flock()
        else:  # pragma: no cover - exercised on Windows only
            self._acquire_exclusive_file()

    def _refuse(self, holder: Mapping[str, Any]) -> TeacherCacheError:
        return TeacherCacheError(
            f"the teacher cache in {self.path.parent} is being written by another writer "
            f"({_describe_holder(holder)}; lock file {self.path}); two writers would interleave "
            "shards. Wait for it to finish, or, if no writer is running (a job killed on another "
            "machine), delete the lock file"
        )

    def _acquire_flock(self) -> None:
        flags = os.O_RDWR | os.O_CREAT | _O_NOFOLLOW
        for _ in range(100):
            try:
                fd = os.open(self.path, flags, 0o644)
            except OSError as err:
                raise TeacherCacheError(f"cannot open the lock file {self.path}: {err}") from err
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                holder = _parse_lock(os.pread(fd, 4096, 0).decode("utf-8", "replace"))
                os.close(fd)
                raise self._refuse(holder) from None
            # the path may have been unlinked by the previous holder between open and flock:
            # then this lock is on a dead inode; start again
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path, follow_symlinks=False))
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            self.previous = _parse_lock(os.pread(fd, 4096, 0).decode("utf-8", "replace"))
            os.ftruncate(fd, 0)
            os.pwrite(fd, self._text.encode("utf-8"), 0)
            os.fsync(fd)
            self._fd = fd
            return
        raise TeacherCacheError(f"could not take the lock file {self.path} (it keeps changing)")

    def _acquire_exclusive_file(self) -> None:  # pragma: no cover - no fcntl
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_NOFOLLOW
        for _ in range(2):
            try:
                fd = os.open(self.path, flags, 0o644)
            except FileExistsError:
                try:
                    holder = _parse_lock(self.path.read_text(encoding="utf-8", errors="replace"))
                except OSError:
                    holder = {}
                pid = holder.get("pid")
                stale = (
                    holder.get("host") == socket.gethostname()
                    and isinstance(pid, int)
                    and not _pid_alive(pid)
                )
                if not stale:
                    raise self._refuse(holder) from None
                self.previous = holder
                with contextlib.suppress(FileNotFoundError):
                    self.path.unlink()
                continue
            os.write(fd, self._text.encode("utf-8"))
            os.fsync(fd)
            os.close(fd)
            return
        raise TeacherCacheError(f"could not take the lock file {self.path}")

    def release(self) -> None:
        """Remove the lock file and release the lock. Idempotent."""
        if fcntl is None:  # pragma: no cover
            if self._text is not None:
                with contextlib.suppress(OSError):
                    if _parse_lock(self.path.read_text()).get("token") == self.token:
                        self.path.unlink()
                self._text = None  # type: ignore[assignment]
            return
        if self._fd is None:
            return
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()  # while still holding the lock: waiters then see a new inode
        with contextlib.suppress(OSError):
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None


def _safetensors_metadata(data: bytes) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors blob (8-byte little-endian header size + JSON)."""
    (size,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + size])
    return dict(header.get("__metadata__") or {})


def _load_manifest(directory: Path) -> dict[str, Any]:
    path = directory / MANIFEST_NAME
    if not path.is_file():
        raise TeacherCacheError(f"no teacher cache at {directory}: {MANIFEST_NAME} is missing")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise TeacherCacheError(f"{path} is not a readable JSON manifest: {err}") from err
    manifest = _parse_json(text, path)
    _check_manifest(manifest, path)
    return manifest


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _parse_json(text: str, path: Path) -> Any:
    """Strict JSON (no NaN / ±Infinity); any failure, deep nesting included, is a
    :class:`TeacherCacheError` naming the file."""
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        raise TeacherCacheError(
            f"{path} is not a teacher-cache manifest: its JSON is nested too deeply to parse"
        ) from None
    except (ValueError, MemoryError) as err:
        raise TeacherCacheError(f"{path} is not a readable JSON manifest: {err}") from err


def _check_manifest(m: Any, path: Path) -> None:
    def bad(msg: str) -> TeacherCacheError:
        return TeacherCacheError(f"{path}: {msg}")

    if not isinstance(m, dict) or m.get("format") != FORMAT_NAME:
        raise bad(
            f"not a {FORMAT_NAME} manifest (field `format` is {m.get('format')!r})"
            if isinstance(m, dict)
            else "not a JSON object"
        )
    version = m.get("format_version")
    if version != FORMAT_VERSION:
        raise bad(
            f"format_version {version!r} is not supported (this divergent reads "
            f"version {FORMAT_VERSION})"
        )
    for key in ("k", "vocab_size", "rows_per_shard", "num_rows"):
        value = m.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise bad(f"field `{key}` must be a non-negative integer, got {value!r}")
    if m["k"] < 1 or m["vocab_size"] < m["k"] or m["rows_per_shard"] < 1:
        raise bad(
            f"inconsistent sizes k={m['k']}, vocab_size={m['vocab_size']}, "
            f"rows_per_shard={m['rows_per_shard']}"
        )
    if m.get("ids_dtype") not in _ID_DTYPES:
        raise bad(
            f"field `ids_dtype` must be one of {sorted(_ID_DTYPES)}, got {m.get('ids_dtype')!r}"
        )
    if m.get("logprobs_dtype") not in _LOGPROB_DTYPES:
        raise bad(
            f"field `logprobs_dtype` must be one of {sorted(_LOGPROB_DTYPES)}, got "
            f"{m.get('logprobs_dtype')!r}"
        )
    if not isinstance(m.get("teacher"), dict) or not isinstance(m.get("complete"), bool):
        raise bad("fields `teacher` (object) and `complete` (bool) are required")
    shards = m.get("shards")
    if not isinstance(shards, list):
        raise bad("field `shards` must be a list")
    first = 0
    for i, s in enumerate(shards):
        if not isinstance(s, dict):
            raise bad(f"shard entry {i} is not an object")
        name = s.get("file")
        if not isinstance(name, str) or not _SHARD_RE.match(name) or name != _shard_name(i):
            raise bad(f"shard entry {i} has file {name!r}; expected {_shard_name(i)!r}")
        for key in ("rows", "first_row", "bytes"):
            v = s.get(key)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise bad(f"shard {name}: field `{key}` must be a non-negative integer, got {v!r}")
        if s["rows"] < 1 or s["rows"] > m["rows_per_shard"]:
            raise bad(f"shard {name}: {s['rows']} rows, outside [1, {m['rows_per_shard']}]")
        if s["first_row"] != first:
            raise bad(
                f"shard {name}: first_row {s['first_row']} but the previous shards end "
                f"at row {first}"
            )
        sha = s.get("sha256")
        if not isinstance(sha, str) or not re.fullmatch(r"[0-9a-f]{64}", sha):
            raise bad(f"shard {name}: field `sha256` must be 64 hex digits, got {sha!r}")
        first += s["rows"]
    if first != m["num_rows"]:
        raise bad(f"num_rows is {m['num_rows']} but the shards hold {first} rows")


def _decode_shard(
    directory: Path, manifest: Mapping[str, Any], index: int, *, verify: bool, check_values: bool
) -> tuple[Tensor, Tensor]:
    """Read, verify and decode shard ``index``; every failure names the shard."""
    from safetensors.torch import load as st_load

    entry = manifest["shards"][index]
    name = entry["file"]
    path = directory / name

    def fail(msg: str) -> TeacherCacheError:
        return TeacherCacheError(f"teacher cache {directory}: shard {name} {msg}")

    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise fail("is missing (listed in the manifest, not on disk)") from None
    except OSError as err:
        raise fail(f"cannot be read: {err}") from err
    if len(data) != entry["bytes"]:
        kind = "is truncated" if len(data) < entry["bytes"] else "has extra bytes"
        raise fail(f"{kind}: {len(data)} bytes on disk, {entry['bytes']} in the manifest")
    if verify:
        digest = hashlib.sha256(data).hexdigest()
        if digest != entry["sha256"]:
            raise fail(
                f"is corrupted: SHA-256 {digest[:16]}… differs from the manifest's "
                f"{entry['sha256'][:16]}…"
            )
    try:
        tensors = st_load(data)
        meta = _safetensors_metadata(data)
    except Exception as err:  # safetensors raises its own error types
        raise fail(f"is not a valid safetensors file: {err}") from err
    if set(tensors) != {"ids", "logprobs"}:
        raise fail(f"holds tensors {sorted(tensors)}; expected ['ids', 'logprobs']")
    ids, lp = tensors["ids"], tensors["logprobs"]
    want_shape = (entry["rows"], manifest["k"])
    for t_name, t, want_dtype in (
        ("ids", ids, _ID_DTYPES[manifest["ids_dtype"]]),
        ("logprobs", lp, _LOGPROB_DTYPES[manifest["logprobs_dtype"]]),
    ):
        if tuple(t.shape) != want_shape:
            raise fail(
                f"tensor `{t_name}` has shape {tuple(t.shape)}; the manifest says "
                f"{want_shape} (rows, k)"
            )
        if t.dtype != want_dtype:
            raise fail(f"tensor `{t_name}` has dtype {t.dtype}; the manifest says {want_dtype}")
    expected_meta = {"shard_index": str(index), "first_row": str(entry["first_row"])}
    for key, value in expected_meta.items():
        if meta.get(key) != value:
            raise fail(
                f"header says {key}={meta.get(key)!r}, the manifest {value!r} "
                "(a shard from another position or another cache)"
            )
    ids = ids.to(torch.int64)
    if check_values:
        try:
            validate_topk(ids, lp, manifest["vocab_size"], ids_name="ids", logprobs_name="logprobs")
        except ValueError as err:
            raise fail(f"has invalid contents: {err}") from err
    return ids, lp


# --------------------------------------------------------------------------------------------
# writer
# --------------------------------------------------------------------------------------------
class TeacherCacheWriter:
    r"""Append top-k teacher outputs to a sharded, checksummed on-disk cache.

    Rows are buffered and written as shards of ``rows_per_shard`` rows (the last one may be
    shorter; :meth:`flush` writes a short shard on demand). Each shard is written atomically
    (temporary file, fsync, :func:`os.replace`) and only then recorded in the manifest, so an
    interrupted job keeps every finished shard. Resume with ``resume=True``: the writer checks
    that the existing cache has the same k, vocabulary, dtypes and teacher, verifies the
    finished shards' checksums, and continues after them; ``rows_written`` is the number of
    input rows to skip.

    A writer holds the directory's lock file (``.divergent-writer.lock``) from construction to
    :meth:`close` / :meth:`abandon` (or the end of its ``with`` block): a second writer on the
    same directory, in this process or another, is refused with a :class:`TeacherCacheError`
    naming the holder, and a lock left by a process that died is taken over. Resuming deletes
    only the temporary files of that dead writer (named ``.divergent-tmp.<its token>.<target>``);
    no other file in the directory is ever deleted or overwritten.

    Args:
        directory: the cache directory (created if missing).
        k: entries per row.
        vocab_size: V; ids must lie in ``[0, V)`` or be −1 (padding).
        teacher: an identifier of the teacher (model name, revision).
        temperature: the temperature the teacher log-probs were computed at (recorded; the
            student side of :func:`~divergent.sparse_divergence` expects log-probs at the
            distillation temperature).
        metadata: extra JSON-serialisable information (dataset, tokenizer, prompt format ...);
            strict JSON: NaN and ±inf are a ``ValueError``.
        rows_per_shard: rows per shard (default 65536: 20 MiB at k = 64 with float32).
        logprobs_dtype: storage dtype of the log-probs (float32 default; float16 / bfloat16
            halve the size at a relative precision of ~1e-3 / ~8e-3 in probability).
        resume: continue an existing cache in ``directory`` (a fresh cache if there is none);
            without it an existing cache is an error.
        check_values: validate each added batch (ids in range, distinct, log P ≤ 0, P(S) ≤ 1).

    Use as a context manager, or call :meth:`close` to write the last shard and mark the
    cache complete. Leaving the ``with`` block by an exception writes nothing more: finished
    shards stay, buffered rows are dropped, and the cache stays resumable.

    Raises:
        TeacherCacheError: another writer holds the directory, or the existing cache is
            damaged (when resuming).
        ValueError: invalid arguments, or an existing cache without ``resume=True``, or a
            cache that differs from these arguments.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        k: int,
        vocab_size: int,
        teacher: str = "",
        temperature: float = 1.0,
        metadata: Mapping[str, Any] | None = None,
        rows_per_shard: int = 65536,
        logprobs_dtype: torch.dtype = torch.float32,
        resume: bool = False,
        check_values: bool = True,
    ) -> None:
        check_int(k, "k", 1)
        check_int(vocab_size, "vocab_size", 1)
        check_int(rows_per_shard, "rows_per_shard", 1)
        if k > vocab_size:
            raise ValueError(f"`k` = {k} exceeds `vocab_size` = {vocab_size}; need k <= V")
        temperature = check_positive_scalar(temperature, "temperature")
        if logprobs_dtype not in _LOGPROB_DTYPES.values():
            raise ValueError(
                f"`logprobs_dtype` must be one of {sorted(_LOGPROB_DTYPES)}, got {logprobs_dtype}"
            )
        if not isinstance(teacher, str):
            raise ValueError(f"`teacher` must be a string identifier, got {type(teacher).__name__}")
        meta = dict(metadata or {})
        bad_number = _first_non_finite(meta, "metadata")
        if bad_number is not None:
            raise ValueError(
                f"`metadata` must be JSON-serialisable with finite numbers (no NaN or ±inf, "
                f"which are not JSON numbers): {bad_number}"
            )
        try:
            # normalised, as it will read back (strict JSON)
            meta = json.loads(json.dumps(meta, allow_nan=False))
        except (TypeError, ValueError, RecursionError) as err:
            raise ValueError(f"`metadata` must be JSON-serialisable: {err}") from err
        self.directory = Path(directory)
        self.k, self.vocab_size, self.rows_per_shard = k, vocab_size, rows_per_shard
        self.check_values = check_values
        self.ids_dtype = torch.int32 if vocab_size <= 2**31 - 1 else torch.int64
        self.logprobs_dtype = logprobs_dtype
        self._buffer_ids: list[Tensor] = []
        self._buffer_lp: list[Tensor] = []
        self._buffered = 0
        self._closed = False
        fresh: dict[str, Any] = {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "k": k,
            "vocab_size": vocab_size,
            "ids_dtype": _dtype_name(self.ids_dtype),
            "logprobs_dtype": _dtype_name(logprobs_dtype),
            "teacher": {"id": teacher, "temperature": float(temperature), "metadata": meta},
            "rows_per_shard": rows_per_shard,
            "num_rows": 0,
            "complete": False,
            "shards": [],
            "created_with": _created_with(),
        }
        self._lock: _WriterLock | None = None
        manifest_path = self.directory / MANIFEST_NAME
        if manifest_path.exists() and not resume:
            raise ValueError(
                f"{self.directory} already holds a teacher cache ({MANIFEST_NAME} exists); "
                "pass resume=True to continue it, or choose another directory"
            )
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock = _WriterLock(self.directory)  # refuses a second writer
        try:
            if manifest_path.exists():
                if not resume:
                    raise ValueError(
                        f"{self.directory} already holds a teacher cache ({MANIFEST_NAME} "
                        "exists); pass resume=True to continue it, or choose another directory"
                    )
                self._manifest = self._resume(fresh)
            else:
                self._manifest = fresh
                self._write_manifest()
        except BaseException:
            self._release()
            raise

    # -- resume ------------------------------------------------------------------------------
    def _resume(self, fresh: dict[str, Any]) -> dict[str, Any]:
        old = _load_manifest(self.directory)
        if old["complete"]:
            raise ValueError(
                f"the teacher cache in {self.directory} is complete ({old['num_rows']} rows); "
                "nothing to resume. Read it with TeacherCacheReader or use another directory"
            )
        for key in ("k", "vocab_size", "ids_dtype", "logprobs_dtype", "rows_per_shard", "teacher"):
            if old[key] != fresh[key]:
                raise ValueError(
                    f"cannot resume the teacher cache in {self.directory}: its {key} is "
                    f"{old[key]!r} but this writer has {fresh[key]!r}"
                )
        for i in range(len(old["shards"])):  # finished shards must be intact to build on them
            _decode_shard(self.directory, old, i, verify=True, check_values=False)
        # temporary files of the killed writer whose lock this one took over (its token is in
        # the lock file it left); nothing else in the directory is touched
        assert self._lock is not None
        stale_token = self._lock.previous.get("token")
        if isinstance(stale_token, str):
            _remove_own_temp_files(self.directory, stale_token)
        return old

    # -- properties --------------------------------------------------------------------------
    @property
    def rows_written(self) -> int:
        """Rows in finished shards (on disk and in the manifest); skip these when resuming."""
        return int(self._manifest["num_rows"])

    @property
    def rows_buffered(self) -> int:
        """Rows added but not yet in a shard."""
        return self._buffered

    @property
    def num_shards(self) -> int:
        return len(self._manifest["shards"])

    # -- writing -----------------------------------------------------------------------------
    def add(self, ids: Tensor, logprobs: Tensor) -> None:
        """Append rows: ``ids`` integer ``(..., k)`` and ``logprobs`` float ``(..., k)``.

        The leading axes are flattened into rows in order. Full shards are written as soon as
        ``rows_per_shard`` rows are buffered.
        """
        if self._closed:
            raise ValueError("this TeacherCacheWriter is closed")
        if not isinstance(ids, Tensor) or ids.dtype == torch.bool or ids.is_floating_point():
            got = ids.dtype if isinstance(ids, Tensor) else type(ids).__name__
            raise ValueError(f"`ids` must be an integer tensor of shape (..., k), got {got}")
        if not isinstance(logprobs, Tensor) or not logprobs.is_floating_point():
            got = logprobs.dtype if isinstance(logprobs, Tensor) else type(logprobs).__name__
            raise ValueError(f"`logprobs` must be a floating-point tensor (..., k), got {got}")
        if ids.dim() == 0 or ids.shape[-1] != self.k:
            raise ValueError(
                f"`ids` must have shape (..., k) with k = {self.k} (this cache's k), got "
                f"{tuple(ids.shape)}"
            )
        if logprobs.shape != ids.shape:
            raise ValueError(
                f"`ids` and `logprobs` must have the same shape, got {tuple(ids.shape)} and "
                f"{tuple(logprobs.shape)}"
            )
        ids2 = ids.detach().reshape(-1, self.k).to("cpu", torch.int64)
        lp2 = logprobs.detach().reshape(-1, self.k).to("cpu")
        if ids2.shape[0] == 0:
            return
        if self.check_values:
            validate_topk(ids2, lp2, self.vocab_size, ids_name="ids", logprobs_name="logprobs")
        self._buffer_ids.append(ids2.to(self.ids_dtype))
        self._buffer_lp.append(lp2.to(self.logprobs_dtype))
        self._buffered += ids2.shape[0]
        while self._buffered >= self.rows_per_shard:
            self._write_shard(self.rows_per_shard)

    def flush(self) -> None:
        """Write the buffered rows now, as a (possibly short) shard."""
        if self._buffered:
            self._write_shard(self._buffered)

    def close(self) -> None:
        """Write the last shard, mark the cache complete and release the lock. Idempotent."""
        if self._closed:
            return
        try:
            self.flush()
            self._manifest["complete"] = True
            self._write_manifest()
            self._closed = True
        finally:
            if self._closed:
                self._release()

    def abandon(self) -> None:
        """Stop without completing: finished shards stay, buffered rows are dropped, the lock
        is released and the cache stays resumable."""
        self._closed = True
        self._release()

    def _release(self) -> None:
        lock = getattr(self, "_lock", None)
        if lock is not None:
            lock.release()
            self._lock = None

    def __del__(self) -> None:  # an abandoned writer must not keep the directory locked
        with contextlib.suppress(Exception):
            self._release()

    def __enter__(self) -> TeacherCacheWriter:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.close()
        else:  # keep finished shards, drop the buffer: the cache stays resumable
            self.abandon()

    def _take(self, n: int) -> tuple[Tensor, Tensor]:
        ids = torch.cat(self._buffer_ids)
        lp = torch.cat(self._buffer_lp)
        self._buffer_ids, self._buffer_lp = [ids[n:]], [lp[n:]]
        self._buffered -= n
        return ids[:n].contiguous(), lp[:n].contiguous()

    def _write_shard(self, n: int) -> None:
        try:
            self._write_shard_now(n)
        except BaseException:
            # the buffer is gone and the shard may be half written: stop here (finished
            # shards stay, the lock is released, the cache can be resumed)
            self.abandon()
            raise

    def _write_shard_now(self, n: int) -> None:
        from safetensors.torch import save as st_save

        ids, lp = self._take(n)
        index = len(self._manifest["shards"])
        first = self._manifest["num_rows"]
        name = _shard_name(index)
        data = st_save(
            {"ids": ids, "logprobs": lp},
            metadata={
                "format": FORMAT_NAME,
                "format_version": str(FORMAT_VERSION),
                "shard_index": str(index),
                "first_row": str(first),
                "k": str(self.k),
                "vocab_size": str(self.vocab_size),
            },
        )
        _atomic_write(self.directory / name, data, self._token)
        self._manifest["shards"].append(
            {
                "file": name,
                "rows": n,
                "first_row": first,
                "bytes": len(data),
                "sha256": hashlib.sha256(data).hexdigest(),
            }
        )
        self._manifest["num_rows"] = first + n
        self._write_manifest()

    def _write_manifest(self) -> None:
        text = json.dumps(self._manifest, indent=1, sort_keys=False, allow_nan=False) + "\n"
        _atomic_write(self.directory / MANIFEST_NAME, text.encode("utf-8"), self._token)

    @property
    def _token(self) -> str:
        if self._lock is None:
            raise ValueError("this TeacherCacheWriter is closed (it no longer holds the lock)")
        return self._lock.token


def _first_non_finite(value: Any, where: str, depth: int = 0) -> str | None:
    """``"metadata['a'][2] = nan"`` for the first NaN / ±inf float in nested dicts and lists."""
    if depth > 100:
        return None  # json.dumps reports the nesting itself
    if isinstance(value, float) and not math.isfinite(value):
        return f"{where} = {value!r}"
    items: Any = ()
    if isinstance(value, Mapping):
        items = ((f"{where}[{k!r}]", v) for k, v in value.items())
    elif isinstance(value, (list, tuple)):
        items = ((f"{where}[{i}]", v) for i, v in enumerate(value))
    for sub_where, sub in items:
        found = _first_non_finite(sub, sub_where, depth + 1)
        if found is not None:
            return found
    return None


def _created_with() -> str:
    return f"divergent {__version__}"


# --------------------------------------------------------------------------------------------
# reader
# --------------------------------------------------------------------------------------------
def _manifest_int(key: str, doc: str) -> property:
    """A read-only integer field ``key`` of a reader's manifest."""
    return property(lambda reader: int(reader.manifest[key]), doc=doc)


class TeacherCacheReader:
    r"""Read a teacher cache written by :class:`TeacherCacheWriter`, verifying every shard.

    On construction the manifest is parsed and checked (format, version, sizes, shard list)
    and every listed shard file must exist with the recorded size. Each shard's bytes are
    checked against the manifest's SHA-256, and its tensors' names, dtypes and shapes (and,
    with ``check_values``, their values) against the manifest, when it is loaded; a failure
    raises :class:`TeacherCacheError` naming the shard. :meth:`verify` checks all shards up
    front.

    Args:
        directory: the cache directory.
        verify: check each shard's SHA-256 against the manifest on load (default).
            ``verify=False`` skips only that hash (it costs one pass over the bytes). What is
            still detected without it: a missing shard, a shard of the wrong size (truncated
            or with extra bytes), an unreadable safetensors header, wrong tensor names, dtypes
            or shapes, a shard from another position or cache (its header's index and first
            row), and, with ``check_values``, values no top-k row can hold (ids out of range or
            repeated, log P > 0 or NaN, P(S) > 1). What is **not** detected: flipped bytes
            inside the tensor data that leave valid-looking values (an id changed into another
            valid id, a log-prob changed into another one ≤ 0): those rows come back silently
            wrong. Neither setting protects against a manifest edited consistently with edited
            shards (the manifest itself carries no checksum).
        check_values: validate the rows (ids in range and distinct, log P ≤ 0, P(S) ≤ 1).
        allow_incomplete: read a cache whose writer has not finished (its finished shards).

    Returned ids are int64 ``(rows, k)`` (−1 = padding); log-probs ``(rows, k)`` in the stored
    dtype.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        verify: bool = True,
        check_values: bool = True,
        allow_incomplete: bool = False,
    ) -> None:
        self.directory = Path(directory)
        self.manifest = _load_manifest(self.directory)
        if not self.manifest["complete"] and not allow_incomplete:
            raise TeacherCacheError(
                f"the teacher cache in {self.directory} is incomplete (its writer did not "
                f"close; {self.manifest['num_rows']} rows in {len(self.manifest['shards'])} "
                "finished shards); resume the writer or pass allow_incomplete=True"
            )
        for entry in self.manifest["shards"]:
            path = self.directory / entry["file"]
            if not path.is_file():
                raise TeacherCacheError(
                    f"teacher cache {self.directory}: shard {entry['file']} is missing "
                    "(listed in the manifest, not on disk)"
                )
            size = path.stat().st_size
            if size != entry["bytes"]:
                kind = "is truncated" if size < entry["bytes"] else "has extra bytes"
                raise TeacherCacheError(
                    f"teacher cache {self.directory}: shard {entry['file']} {kind}: {size} "
                    f"bytes on disk, {entry['bytes']} in the manifest"
                )
        self.verify_checksums = verify
        self.check_values = check_values
        self._cached: tuple[int, Tensor, Tensor] | None = None

    # -- manifest fields ---------------------------------------------------------------------
    k = _manifest_int("k", "Teacher entries per row (the k of top-k).")
    vocab_size = _manifest_int("vocab_size", "The teacher's vocabulary size V.")
    num_rows = _manifest_int("num_rows", "Rows (token positions) in the cache.")

    @property
    def num_shards(self) -> int:
        return len(self.manifest["shards"])

    @property
    def teacher(self) -> str:
        return str(self.manifest["teacher"].get("id", ""))

    @property
    def temperature(self) -> float:
        return float(self.manifest["teacher"].get("temperature", 1.0))

    @property
    def metadata(self) -> dict[str, Any]:
        return dict(self.manifest["teacher"].get("metadata", {}))

    @property
    def complete(self) -> bool:
        return bool(self.manifest["complete"])

    def __len__(self) -> int:
        return self.num_rows

    # -- reading -----------------------------------------------------------------------------
    def shard(self, index: int) -> tuple[Tensor, Tensor]:
        """The rows of shard ``index`` as ``(ids, logprobs)``, verified."""
        if (
            isinstance(index, bool)
            or not isinstance(index, int)
            or not (0 <= index < self.num_shards)
        ):
            raise ValueError(
                f"`index` must be a shard index in [0, {self.num_shards}), got {index!r}"
            )
        if self._cached is not None and self._cached[0] == index:
            return self._cached[1], self._cached[2]
        ids, lp = _decode_shard(
            self.directory,
            self.manifest,
            index,
            verify=self.verify_checksums,
            check_values=self.check_values,
        )
        self._cached = (index, ids, lp)
        return ids, lp

    def iter_shards(self) -> Iterator[tuple[Tensor, Tensor]]:
        """Yield each shard's ``(ids, logprobs)`` in order."""
        for i in range(self.num_shards):
            yield self.shard(i)

    def read(self, start: int, stop: int) -> tuple[Tensor, Tensor]:
        """Rows ``start:stop`` (0 <= start <= stop <= num_rows) as ``(ids, logprobs)``."""
        for arg, v in (("start", start), ("stop", stop)):
            if isinstance(v, bool) or not isinstance(v, int):
                raise ValueError(f"`{arg}` must be an integer row index, got {v!r}")
        if not 0 <= start <= stop <= self.num_rows:
            raise ValueError(
                f"row range [{start}, {stop}) must satisfy 0 <= start <= stop <= {self.num_rows}"
            )
        parts_ids, parts_lp = [], []
        for i, entry in enumerate(self.manifest["shards"]):
            s0, s1 = entry["first_row"], entry["first_row"] + entry["rows"]
            if s1 <= start or s0 >= stop:
                continue
            ids, lp = self.shard(i)
            a, b = max(start, s0) - s0, min(stop, s1) - s0
            parts_ids.append(ids[a:b])
            parts_lp.append(lp[a:b])
        if not parts_ids:
            lp_dtype = _LOGPROB_DTYPES[self.manifest["logprobs_dtype"]]
            return (
                torch.empty((0, self.k), dtype=torch.int64),
                torch.empty((0, self.k), dtype=lp_dtype),
            )
        return torch.cat(parts_ids), torch.cat(parts_lp)

    def iter_batches(
        self, batch_size: int, *, start: int = 0, drop_last: bool = False
    ) -> Iterator[tuple[Tensor, Tensor]]:
        """Yield ``(ids, logprobs)`` batches of ``batch_size`` rows from row ``start`` on."""
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"`batch_size` must be a positive integer, got {batch_size!r}")
        for r0 in range(start, self.num_rows, batch_size):
            r1 = min(r0 + batch_size, self.num_rows)
            if drop_last and r1 - r0 < batch_size:
                return
            yield self.read(r0, r1)

    def verify(self) -> None:
        """Load and check every shard (checksums included); raise on the first bad one."""
        for i in range(self.num_shards):
            _decode_shard(
                self.directory, self.manifest, i, verify=True, check_values=self.check_values
            )

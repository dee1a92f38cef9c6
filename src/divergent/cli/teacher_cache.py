"""``divergent teacher-cache``: write a top-k teacher cache from a local Hugging Face model folder.

The folder (``--teacher``) is loaded with ``from_pretrained`` (model and tokenizer, no
network); the text file (``--data``) is tokenized with that tokenizer, cut into blocks of
``--seq-len`` tokens (:func:`divergent.train.text_corpus.token_blocks`), and the teacher's
top-k log-probs at every position are written to ``--out``
(:func:`divergent.integrations.teacher_cache_hf.write_teacher_cache`). Running the same command
again after an interruption resumes after the last cached row. Every failure is one line on
stderr: a missing tokenizer or model, a folder that is not a causal LM, an unreadable text, a
``--seq-len`` beyond the teacher's positions, another writer on ``--out``; Ctrl-C says how
many examples were kept (exit code 130). A failure that is not an interruption (a model error)
names the error and does not promise that running again resumes.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import torch
import typer

from divergent.cli._app import fail
from divergent.integrations._hf_models import max_positions
from divergent.integrations.teacher_cache_hf import (
    TeacherCacheWriteInterrupted,
    write_teacher_cache,
)
from divergent.teacher.cache import MANIFEST_NAME, TeacherCacheError
from divergent.train.distill_job import DistillError, resolve_device
from divergent.train.text_corpus import token_blocks

app = typer.Typer(add_completion=False, rich_markup_mode=None)
"""This group's commands (the root app in :mod:`divergent.cli._app` loads them lazily)."""

EXIT_FAILED = 1
EXIT_INTERRUPTED = 130
_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.json",
    "tokenizer.model",
    "vocab.txt",
    "spiece.model",
)
_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def _load_tokenizer(folder: Path) -> Any:
    from transformers import AutoTokenizer

    if not any((folder / name).is_file() for name in _TOKENIZER_FILES):
        raise fail(
            f"no tokenizer in {folder} (none of {', '.join(_TOKENIZER_FILES)}); save the "
            "teacher's tokenizer there with tokenizer.save_pretrained(folder)"
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise fail(
            f"no usable tokenizer in {folder} ({type(err).__name__}); save the teacher's "
            "tokenizer there with tokenizer.save_pretrained(folder)"
        ) from None
    if tokenizer is None or not callable(tokenizer):
        raise fail(f"no usable tokenizer in {folder}; save it with tokenizer.save_pretrained")
    return tokenizer


def _load_teacher(folder: Path) -> Any:
    from transformers.utils import logging as hf_logging

    bar, verbosity = hf_logging.is_progress_bar_enabled(), hf_logging.get_verbosity()
    hf_logging.disable_progress_bar()  # keep stdout / stderr to our own lines
    hf_logging.set_verbosity_error()
    try:
        return _from_pretrained(folder)
    finally:
        hf_logging.set_verbosity(verbosity)
        if bar:
            hf_logging.enable_progress_bar()


def _from_pretrained(folder: Path) -> Any:
    from transformers import AutoModelForCausalLM

    if not (folder / "config.json").is_file():
        raise fail(
            f"{folder} has no config.json: not a Hugging Face model folder (save one with "
            "model.save_pretrained(folder))"
        )
    try:
        return AutoModelForCausalLM.from_pretrained(str(folder), local_files_only=True)
    except ValueError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise fail(f"{folder} is not a causal language model folder: {first}") from None
    except OSError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise fail(f"cannot load the model in {folder}: {first}") from None


def _check_same_settings(out: Path, given: dict[str, Any]) -> None:
    """Refuse, naming the flag, a setting that differs from the cache already in ``out``.

    ``given`` maps each flag to its value here, in the terms of the manifest: ``--k``,
    ``--temperature``, ``--logprobs-dtype``, ``--teacher`` and ``--data`` (resolved paths),
    ``--seq-len``. A cache written with the same settings is resumed (or, when complete, the
    writer says so); an unreadable manifest is left to the writer's own message.
    """
    try:
        manifest = json.loads((out / MANIFEST_NAME).read_text())
        teacher = manifest["teacher"]
        cached = {
            "--k": ("k", manifest["k"]),
            "--temperature": ("temperature", teacher["temperature"]),
            "--logprobs-dtype": ("logprobs_dtype", manifest["logprobs_dtype"]),
            "--teacher": ("teacher", teacher["id"]),
            "--data": ("data", teacher["metadata"]["data"]),
            "--seq-len": ("seq_len", teacher["metadata"]["seq_len"]),
        }
    except (OSError, ValueError, KeyError, TypeError):
        return
    for flag, value in given.items():
        name, old = cached[flag]
        if value != old:
            raise fail(
                f"{flag} {value} differs from the cache's {name}={old} in {out}; use a new --out "
                "or the same settings"
            )


@app.command("teacher-cache")
def teacher_cache_command(
    teacher: Annotated[
        Path,
        typer.Option("--teacher", help="Local Hugging Face model folder (model + tokenizer)."),
    ],
    data: Annotated[Path, typer.Option("--data", help="A UTF-8 text file to run the teacher on.")],
    out: Annotated[Path, typer.Option("--out", help="Cache directory (resumed if unfinished).")],
    k: Annotated[int, typer.Option("--k", help="Top-k ids kept per position.")] = 32,
    seq_len: Annotated[
        int, typer.Option("--seq-len", help="Tokens per example (blocks of the text).")
    ] = 128,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Examples per forward.")] = 8,
    temperature: Annotated[
        float, typer.Option("--temperature", help="Temperature of the stored log-probs.")
    ] = 1.0,
    logprobs_dtype: Annotated[
        str, typer.Option("--logprobs-dtype", help="float32, float16 or bfloat16.")
    ] = "float32",
    device: Annotated[str, typer.Option("--device", help="cpu, cuda, cuda:1 ...")] = "cpu",
) -> None:
    """Write a top-k teacher cache from a local Hugging Face model folder and a text file.

    Each --seq-len block of the tokenized text is one example; row i·(seq_len−1)+t of the
    cache holds the teacher's top-k ids and log-probs at position t of example i. Train a
    student from it with divergent.integrations.transformers.DistillationTrainer(
    teacher_cache=OUT), examples carrying teacher_cache_index = their block number.
    """
    if not teacher.is_dir():
        raise fail(f"--teacher {teacher} is not a directory (a local Hugging Face model folder)")
    if not data.is_file():
        raise fail(f"--data {data} is not a file")
    if logprobs_dtype not in _DTYPES:
        raise fail(f"--logprobs-dtype must be one of {sorted(_DTYPES)}, got {logprobs_dtype!r}")
    for name, value, low in (
        ("--k", k, 1),
        ("--seq-len", seq_len, 2),
        ("--batch-size", batch_size, 1),
    ):
        if value < low:
            raise fail(f"{name} must be >= {low}, got {value}")
    if not temperature > 0:
        raise fail(f"--temperature must be > 0, got {temperature}")
    if out.exists() and not out.is_dir():
        raise fail(f"--out {out} exists and is not a directory")
    try:  # before anything is written: --device cuda on a machine without CUDA
        device = resolve_device(device)
    except DistillError as err:
        raise fail(str(err)) from None
    try:
        text = data.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise fail(f"cannot read --data {data} as UTF-8 text: {err}") from None
    _check_same_settings(
        out,
        {
            "--k": k,
            "--temperature": float(temperature),
            "--logprobs-dtype": logprobs_dtype,
            "--teacher": str(teacher.resolve()),
            "--data": str(data.resolve()),
            "--seq-len": seq_len,
        },
    )
    tokenizer = _load_tokenizer(teacher)
    model = _load_teacher(teacher)
    try:
        blocks = token_blocks(tokenizer, [text], seq_len)
    except ValueError as err:
        raise fail(f"--data {data}: {str(err).replace('block_size', '--seq-len')}") from None
    limit = max_positions(model)
    if limit is not None and seq_len > limit[0]:
        raise fail(
            f"--seq-len {seq_len} exceeds the teacher's maximum of {limit[0]} positions (config "
            f"{limit[1]}); use --seq-len {limit[0]} or less"
        )
    started = time.perf_counter()
    try:
        summary = write_teacher_cache(
            model,
            blocks,
            out,
            k=k,
            batch_size=batch_size,
            max_length=seq_len,
            temperature=temperature,
            logprobs_dtype=_DTYPES[logprobs_dtype],
            teacher_id=str(teacher.resolve()),
            metadata={"data": str(data.resolve()), "seq_len": seq_len},
            device=device,
        )
    except KeyboardInterrupt:  # the one line is already on stderr
        raise typer.Exit(EXIT_INTERRUPTED) from None
    except TeacherCacheWriteInterrupted as err:
        raise fail(str(err), EXIT_FAILED) from None
    except (TeacherCacheError, ValueError) as err:
        raise fail(str(err)) from None
    except RuntimeError as err:  # e.g. --device cuda without a GPU
        raise fail(f"{type(err).__name__}: {err}", EXIT_FAILED) from None
    resumed = summary.resumed_from_example
    typer.echo(
        f"wrote {summary.examples} examples × {summary.rows_per_example} positions, top-{k} of "
        f"{summary.vocab_size} ids, in {summary.shards} shards to {out} "
        f"({f'resumed after example {resumed}, ' if resumed else ''}"
        f"{time.perf_counter() - started:.1f} s)"
    )

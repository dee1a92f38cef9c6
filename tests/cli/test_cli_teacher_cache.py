"""``divergent teacher-cache``: a local HF folder + a text file → a top-k cache equal to the
teacher's own top-k; resuming a finished cache, a missing tokenizer, a folder that is not a
causal LM and bad options are one-line errors."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, T5Config
from typer.testing import CliRunner

from divergent.cli import app
from divergent.teacher.cache import TeacherCacheReader
from divergent.teacher.sparse import topk_logprobs
from divergent.train.text_corpus import token_blocks, train_bpe_tokenizer

TEXT = " ".join(f"word{i % 17} thing{i % 5} and more{i % 3}." for i in range(150))


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf")
    tokenizer = train_bpe_tokenizer([TEXT], vocab_size=300)
    torch.manual_seed(0)
    model = GPT2LMHeadModel(
        GPT2Config(
            n_layer=1,
            n_embd=32,
            n_head=2,
            vocab_size=len(tokenizer),
            n_positions=64,
            eos_token_id=tokenizer.eos_token_id,
            bos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.eos_token_id,
            initializer_range=0.3,
        )
    ).eval()
    teacher = root / "teacher"
    model.save_pretrained(teacher)
    tokenizer.save_pretrained(teacher)
    no_tokenizer = root / "no_tokenizer"
    model.save_pretrained(no_tokenizer)
    seq2seq = root / "t5"
    T5Config(vocab_size=64, d_model=16, d_kv=8, d_ff=32, num_layers=1, num_heads=2).save_pretrained(
        seq2seq
    )
    tokenizer.save_pretrained(seq2seq)
    data = root / "text.txt"
    data.write_text(TEXT, encoding="utf-8")
    return {
        "teacher": teacher,
        "no_tokenizer": no_tokenizer,
        "t5": seq2seq,
        "data": data,
        "model": model,
        "tokenizer": tokenizer,
    }


def invoke(*argv: str):
    return CliRunner().invoke(app, ["teacher-cache", *map(str, argv)])


def test_writes_the_teachers_topk_for_each_block(tmp_path, folders) -> None:
    out = tmp_path / "cache"
    result = invoke(
        "--teacher", folders["teacher"], "--data", folders["data"], "--out", out,
        "--k", 5, "--seq-len", 16, "--batch-size", 3,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    reader = TeacherCacheReader(out)
    blocks = token_blocks(folders["tokenizer"], [TEXT], 16)
    assert "wrote" in result.output and f"{len(blocks)} examples" in result.output
    assert (reader.k, reader.metadata["rows_per_example"]) == (5, 15)
    assert reader.num_rows == 15 * len(blocks)
    for i in (0, len(blocks) - 1):
        with torch.no_grad():
            logits = folders["model"](input_ids=blocks[i : i + 1]).logits[0, :-1]
        want_ids, want_lp = topk_logprobs(logits, 5)
        ids, lp = reader.read(15 * i, 15 * (i + 1))
        assert torch.equal(ids, want_ids)
        torch.testing.assert_close(lp, want_lp, atol=1e-5, rtol=1e-5)
    again = invoke("--teacher", folders["teacher"], "--data", folders["data"], "--out", out,
                   "--k", 5, "--seq-len", 16)  # fmt: skip
    assert again.exit_code == 2 and "already complete" in again.output
    assert again.output.count("\n") == 1
    # a rerun with another setting names it (before loading the model)
    for flag, value, says in (
        ("--k", 16, "--k 16 differs from the cache's k=5"),
        ("--seq-len", 8, "--seq-len 8 differs from the cache's seq_len=16"),
        ("--temperature", 2, "--temperature 2.0 differs from the cache's temperature=1.0"),
        ("--logprobs-dtype", "float16", "differs from the cache's logprobs_dtype=float32"),
    ):
        settings = {"--k": 5, "--seq-len": 16, flag: value}
        other = invoke("--teacher", folders["teacher"], "--data", folders["data"], "--out", out,
                       *[str(x) for item in settings.items() for x in item])  # fmt: skip
        assert other.exit_code == 2, other.output
        assert other.stderr.count("\n") == 1 and other.stdout == ""
        assert says in other.stderr and "use a new --out or the same settings" in other.stderr
    assert TeacherCacheReader(out).k == 5  # the cache is untouched


@pytest.mark.parametrize(
    ("case", "pattern"),
    [
        ("no_tokenizer", "no tokenizer in"),
        ("t5", "is not a causal language model folder"),
        ("missing", "is not a directory"),
        ("no_config", "has no config.json"),
    ],
)
def test_bad_folders_are_one_line_errors(tmp_path, folders, case, pattern) -> None:
    folder = {"missing": tmp_path / "nope", "no_config": tmp_path}.get(case) or folders[case]
    if case == "no_config":
        folders["tokenizer"].save_pretrained(tmp_path)
    result = invoke("--teacher", folder, "--data", folders["data"], "--out", tmp_path / "o")
    assert result.exit_code == 2, result.output
    assert pattern in result.output and result.output.count("\n") == 1
    assert not (tmp_path / "o").exists()  # nothing written


def test_a_seq_len_beyond_the_teachers_positions_is_refused_before_writing(
    tmp_path, folders
) -> None:
    out = tmp_path / "o"
    result = invoke("--teacher", folders["teacher"], "--data", folders["data"], "--out", out)
    assert result.exit_code == 2, result.output
    assert result.stderr == (
        "error: --seq-len 128 exceeds the teacher's maximum of 64 positions (config "
        "n_positions); use --seq-len 64 or less\n"
    )
    assert not out.exists()
    ok = invoke("--teacher", folders["teacher"], "--data", folders["data"], "--out", out,
                "--seq-len", 64, "--k", 4)  # fmt: skip
    assert ok.exit_code == 0, ok.output


def test_bad_options_are_one_line_errors(tmp_path, folders) -> None:
    base = ["--teacher", folders["teacher"], "--data", folders["data"], "--out", tmp_path / "o"]
    for extra, pattern in (
        (["--k", "0"], "--k must be >= 1"),
        (["--k", "100000", "--seq-len", "16"], "`k` must be an integer in [1,"),
        (["--seq-len", "1"], "--seq-len must be >= 2"),
        (["--seq-len", "100000"], "longer than the whole text"),
        (["--logprobs-dtype", "int8"], "--logprobs-dtype must be one of"),
        (["--device", "tpu"], "--device must be cpu, cuda, cuda:N or auto"),
    ):
        result = invoke(*base, *extra)
        assert result.exit_code == 2 and pattern in result.output, (extra, result.output)
        assert result.output.count("\n") == 1
    assert not (tmp_path / "o").exists()  # nothing written by any of them
    if not torch.cuda.is_available():  # refused before the cache folder is created
        result = invoke(*base, "--device", "cuda")
        assert result.exit_code == 2 and "CUDA is not available" in result.output
        assert result.output.count("\n") == 1 and not (tmp_path / "o").exists()
    (tmp_path / "o").mkdir(exist_ok=True)
    (tmp_path / "o" / "manifest.json").write_text(json.dumps({"format": "something else"}))
    result = invoke(*base, "--k", "4", "--seq-len", "16")
    assert result.exit_code == 2 and "manifest" in result.output

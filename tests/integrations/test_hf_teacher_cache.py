"""write_teacher_cache (top-k teacher cache from an HF causal LM) and DistillationTrainer
training from it: the cached rows equal the live teacher's top-k, cache training equals the
live top-k teacher on the same batch, an interrupted write keeps its rows and resumes to the
same bytes, and the one-line errors."""

from __future__ import annotations

import pytest
import torch
from _hf_tiny import tiny_gpt2
from transformers import GPT2LMHeadModel, TrainingArguments

from divergent.integrations.teacher_cache_hf import (
    TeacherCacheWriteInterrupted,
    add_cache_index,
    write_teacher_cache,
)
from divergent.integrations.transformers import DistillationTrainer
from divergent.teacher.cache import TeacherCacheReader, TeacherCacheWriter
from divergent.teacher.sparse import sparse_divergence, topk_logprobs

VOCAB = 80
K = 6


def gpt2(seed: int, vocab: int = VOCAB, init: float = 0.3) -> GPT2LMHeadModel:
    return tiny_gpt2(seed=seed, vocab=vocab, n_positions=32, init=init)


def examples(n: int = 7, seed: int = 0) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        length = int(torch.randint(5, 12, (1,), generator=g))
        out.append({"input_ids": torch.randint(2, VOCAB, (length,), generator=g).tolist()})
    return out


def args(tmp_path, **kw) -> TrainingArguments:
    base = dict(
        output_dir=str(tmp_path / "run"),
        per_device_train_batch_size=3,
        max_steps=1,
        learning_rate=1e-2,
        report_to=[],
        use_cpu=True,
        save_strategy="no",
        disable_tqdm=True,
        seed=0,
    )
    base.update(kw)
    return TrainingArguments(**base)


def live_topk(teacher, ids: list[int], temperature: float = 1.0):
    with torch.no_grad():
        logits = teacher(input_ids=torch.tensor([ids])).logits[0, :-1]
    return topk_logprobs(logits, K, temperature=temperature)


@pytest.fixture(scope="module")
def teacher():
    return gpt2(seed=2)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory, teacher):
    out = tmp_path_factory.mktemp("cache") / "c"
    summary = write_teacher_cache(
        teacher, examples(), out, k=K, batch_size=3, max_length=12, rows_per_shard=13
    )
    assert (summary.examples, summary.rows_per_example, summary.rows) == (7, 11, 77)
    return out


def test_cached_rows_equal_the_live_teachers_topk(cache_dir, teacher) -> None:
    reader = TeacherCacheReader(cache_dir)
    assert reader.metadata["rows_per_example"] == 11 and reader.num_shards == 6
    for i, ex in enumerate(examples()):
        ids, lp = reader.read(11 * i, 11 * (i + 1))
        want_ids, want_lp = live_topk(teacher, ex["input_ids"])
        n = len(ex["input_ids"]) - 1
        torch.testing.assert_close(ids[:n], want_ids)
        torch.testing.assert_close(lp[:n], want_lp, atol=1e-5, rtol=1e-5)
        assert (ids[n:] == -1).all()  # past the example's end: padding rows


@pytest.mark.parametrize(("divergence", "tail"), [("kl", "bucket"), ("js", "renormalize")])
def test_cache_training_equals_the_live_topk_teacher(
    tmp_path, cache_dir, teacher, divergence, tail
) -> None:
    student = gpt2(seed=1, init=0.1)
    data = add_cache_index(examples())
    trainer = DistillationTrainer(
        model=student,
        args=args(tmp_path),
        teacher_cache=cache_dir,
        cache_tail=tail,
        divergence=divergence,
        train_dataset=data,
        ce_weight=0.2,
    )
    picked = [data[5], data[0], data[3]]
    for ex in picked:
        ex["prompt_length"] = 2
    batch = trainer.data_collator(picked)
    loss = trainer.compute_loss(student, batch)
    got = torch.autograd.grad(loss, list(student.parameters()))
    trainer.chunk_size = 4  # the student's rows in several checkpointed chunks
    loss_chunked = trainer.compute_loss(student, batch)
    got_chunked = torch.autograd.grad(loss_chunked, list(student.parameters()))
    # reference: live teacher, top-k, sparse_divergence on the student's full logits
    logits = student(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    y = batch["labels"][:, 1:]
    valid = y != -100
    ids_rows, lp_rows = [], []
    for ex in picked:
        ids, lp = live_topk(teacher, ex["input_ids"])
        pad = batch["input_ids"].shape[1] - 1 - ids.shape[0]
        ids_rows.append(torch.cat([ids, torch.full((pad, K), -1)]))
        lp_rows.append(torch.cat([lp, torch.zeros(pad, K)]))
    ids_t, lp_t = torch.stack(ids_rows)[valid], torch.stack(lp_rows)[valid]
    s = logits[:, :-1][valid]
    kd = sparse_divergence(divergence, ids_t, lp_t, s, tail=tail, reduction="mean")
    ce = torch.nn.functional.cross_entropy(s, y[valid])
    want_loss = 0.8 * kd + 0.2 * ce
    want = torch.autograd.grad(want_loss, list(student.parameters()))
    torch.testing.assert_close(loss, want_loss, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(loss_chunked, want_loss, atol=1e-6, rtol=1e-5)
    for a, b, c in zip(got, want, got_chunked, strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-4)
        torch.testing.assert_close(c, b, atol=1e-6, rtol=1e-4)
    # and Trainer.train keeps the index column and runs
    trainer.train()
    assert trainer.state.global_step == 1


def test_interrupted_write_keeps_rows_says_so_and_resumes_identically(
    tmp_path, cache_dir, teacher, capsys
) -> None:
    out = tmp_path / "c"
    calls = []

    def stop_after_two_batches(done: int) -> None:
        calls.append(done)
        if len(calls) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_teacher_cache(
            teacher,
            examples(),
            out,
            k=K,
            batch_size=3,
            max_length=12,
            rows_per_shard=13,
            progress=stop_after_two_batches,
        )
    line = capsys.readouterr().err.strip()
    assert "\n" not in line and "interrupted" in line and "66 rows = 6 whole examples" in line
    partial = TeacherCacheReader(out, allow_incomplete=True)
    assert partial.num_rows == 66  # both batches' rows: the buffer became a short shard
    # an error mid-way (here: a token id outside the vocabulary) is one line too
    broken = examples()
    broken[6]["input_ids"][2] = 10 * VOCAB
    with pytest.raises(TeacherCacheWriteInterrupted, match="kept 66 rows") as err:
        write_teacher_cache(teacher, broken, out, k=K, max_length=12, rows_per_shard=13)
    assert "\n" not in str(err.value) and "IndexError" in str(err.value)
    # a bug / model error is a failure, not an interruption: no promise that rerunning helps
    assert str(err.value).startswith("teacher-cache write failed (IndexError")
    assert "stops the same way until that error's cause is fixed" in str(err.value)
    assert "run the same command again" not in str(err.value) and not err.value.interrupted
    summary = write_teacher_cache(
        teacher, examples(), out, k=K, batch_size=3, max_length=12, rows_per_shard=13
    )
    assert summary.resumed_from_example == 6 and summary.examples == 7
    resumed, full = TeacherCacheReader(out), TeacherCacheReader(cache_dir)
    ids_a, lp_a = resumed.read(0, 77)
    ids_b, lp_b = full.read(0, 77)
    assert torch.equal(ids_a, ids_b) and torch.equal(lp_a, lp_b)
    with pytest.raises(ValueError, match="already complete"):
        write_teacher_cache(teacher, examples(), out, k=K, max_length=12, rows_per_shard=13)


def test_a_full_disk_is_an_interruption_and_too_long_examples_are_refused_up_front(
    tmp_path, teacher
) -> None:
    out = tmp_path / "c"

    def disk_full(done: int) -> None:
        raise OSError(28, "No space left on device")

    with pytest.raises(TeacherCacheWriteInterrupted) as err:
        write_teacher_cache(
            teacher, examples(), out, k=K, batch_size=3, max_length=12, progress=disk_full
        )
    assert str(err.value).startswith("teacher-cache write interrupted (OSError")
    assert "run the same command again to resume after example 3" in str(err.value)
    assert err.value.interrupted
    with pytest.raises(
        ValueError,
        match=r"^`max_length` 33 exceeds the teacher's maximum of 32 positions \(config "
        r"n_positions\); use max_length=32 or less$",
    ):
        write_teacher_cache(teacher, examples(), tmp_path / "d", k=K, max_length=33)
    assert not (tmp_path / "d").exists()


def test_cache_errors_are_one_line(tmp_path, cache_dir, teacher) -> None:
    data = add_cache_index(examples())
    with pytest.raises(ValueError, match="vocabularies differ: the teacher cache has 80 ids"):
        DistillationTrainer(model=gpt2(1, vocab=88), args=args(tmp_path), teacher_cache=cache_dir)
    with pytest.raises(ValueError, match=r"cache was written at 1\.0"):
        DistillationTrainer(
            model=gpt2(1), args=args(tmp_path), teacher_cache=cache_dir, temperature=2.0
        )
    with pytest.raises(ValueError, match="cannot score generated completions"):
        DistillationTrainer(model=gpt2(1), args=args(tmp_path), teacher_cache=cache_dir, lmbda=0.5)
    raw = tmp_path / "raw"
    with TeacherCacheWriter(raw, k=K, vocab_size=VOCAB) as w:
        w.add(*topk_logprobs(torch.randn(4, VOCAB), K))
    with pytest.raises(ValueError, match="was not written by write_teacher_cache"):
        DistillationTrainer(model=gpt2(1), args=args(tmp_path), teacher_cache=raw)
    student = gpt2(1)
    trainer = DistillationTrainer(
        model=student, args=args(tmp_path), teacher_cache=cache_dir, train_dataset=data
    )
    batch = trainer.data_collator(data[:2])
    no_index = {k: v for k, v in batch.items() if k != "teacher_cache_index"}
    with pytest.raises(ValueError, match="needs `teacher_cache_index` in every batch"):
        trainer.compute_loss(student, no_index)
    wrong = dict(batch, teacher_cache_index=torch.tensor([0, 99]))
    with pytest.raises(ValueError, match="99 is outside the teacher cache's 7 examples"):
        trainer.compute_loss(student, wrong)
    with pytest.raises(ValueError, match=r"`k` must be an integer in \[1, 80\]"):
        write_teacher_cache(teacher, examples(), tmp_path / "k", k=81)
    with pytest.raises(ValueError, match="example of 10 tokens > max_length=8"):
        write_teacher_cache(teacher, examples(), tmp_path / "m", k=K, max_length=8)

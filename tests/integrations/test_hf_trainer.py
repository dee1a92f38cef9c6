"""DistillationTrainer (transformers.Trainer subclass): fused == materialised == a float64
reference, training lowers the KD loss, on-policy / sequence-level generations, gradient
accumulation, and the one-line errors. Tiny random GPT-2 / Llama / Gemma-2 models."""

from __future__ import annotations

import copy

import pytest
import torch
from _hf_tiny import tiny_gpt2
from transformers import (
    Gemma2Config,
    Gemma2ForCausalLM,
    GPT2Model,
    LlamaConfig,
    LlamaForCausalLM,
    TrainingArguments,
)

from divergent.integrations.transformers import (
    CausalLMCollator,
    DistillationTrainer,
    fused_cross_entropy,
)

VOCAB = 96


def gpt2(n_layer: int = 1, n_embd: int = 32, vocab: int = VOCAB, seed: int = 0, init=0.02):
    return tiny_gpt2(seed=seed, vocab=vocab, n_layer=n_layer, n_embd=n_embd, init=init)


def llama(hidden: int = 32, layers: int = 1, seed: int = 0):
    torch.manual_seed(seed)
    config = LlamaConfig(
        num_hidden_layers=layers,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_attention_heads=2,
        num_key_value_heads=2,
        vocab_size=VOCAB,
        max_position_embeddings=64,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=0,
        initializer_range=0.2,
    )
    return LlamaForCausalLM(config)


def examples(n: int = 8, seed: int = 0, prompt: int = 3) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        length = int(torch.randint(7, 15, (1,), generator=g))
        ids = torch.randint(2, VOCAB, (length,), generator=g).tolist()
        out.append({"input_ids": ids, "prompt_length": prompt})
    return out


def args(tmp_path, **kw) -> TrainingArguments:
    base = dict(
        output_dir=str(tmp_path),
        per_device_train_batch_size=4,
        max_steps=1,
        learning_rate=1e-2,
        report_to=[],
        use_cpu=True,
        save_strategy="no",
        disable_tqdm=True,
        logging_steps=1,
        seed=0,
    )
    base.update(kw)
    return TrainingArguments(**base)


def reference_loss(student, teacher, batch, *, temperature, beta, ce_weight):
    """float64: JSD_beta(teacher || student) at T and CE, mean over supervised shifted tokens."""
    ids, mask, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    s = student(input_ids=ids, attention_mask=mask, position_ids=pos).logits[:, :-1].double()
    with torch.no_grad():
        t = teacher(input_ids=ids, attention_mask=mask, position_ids=pos).logits[:, :-1].double()
    y = labels[:, 1:]
    valid = y != -100
    lp = torch.log_softmax(t[valid] / temperature, -1)
    lq = torch.log_softmax(s[valid] / temperature, -1)
    p, q = lp.exp(), lq.exp()
    lm = torch.log(beta * p + (1 - beta) * q)
    jsd = beta * (p * (lp - lm)).sum(-1) + (1 - beta) * (q * (lq - lm)).sum(-1)
    ce = -torch.log_softmax(s[valid], -1).gather(-1, y[valid][:, None]).squeeze(-1)
    return ((1 - ce_weight) * jsd + ce_weight * ce).mean()


def grads(loss, model):
    return torch.autograd.grad(loss, [p for p in model.parameters() if p.requires_grad])


def assert_close_grads(a, b, atol=1e-6, rtol=1e-4):
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        torch.testing.assert_close(x.double(), y.double(), atol=atol, rtol=rtol)


# --------------------------------------------------------------------------------------------
# the loss
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_fused_equals_materialised_and_float64_reference(tmp_path, family) -> None:
    if family == "gpt2":
        student, teacher = gpt2(1, 32, seed=1, init=0.2), gpt2(2, 48, seed=2, init=0.3)
    else:
        student, teacher = llama(32, 1, seed=1), llama(48, 2, seed=2)
    trainer = DistillationTrainer(
        model=student,
        args=args(tmp_path),
        teacher_model=teacher,
        divergence="js",
        divergence_params={"beta": 0.3},
        temperature=2.0,
        ce_weight=0.25,
        train_dataset=examples(),
    )
    batch = trainer.data_collator(examples(4, seed=3))
    assert (batch["attention_mask"] == 0).any()  # padding present
    fused = trainer.compute_loss(student, batch)
    g_fused = grads(fused, student)
    trainer.chunk_size = 5  # several chunks of rows (and of the CE term)
    chunked = trainer.compute_loss(student, batch)
    g_chunked = grads(chunked, student)
    trainer.fused = False
    materialised = trainer.compute_loss(student, batch)
    g_mat = grads(materialised, student)
    ref = reference_loss(student, teacher, batch, temperature=2.0, beta=0.3, ce_weight=0.25)
    g_ref = grads(ref, student)
    assert fused.dtype == torch.float32
    torch.testing.assert_close(fused.double(), ref, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(materialised.double(), ref, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(chunked.double(), ref, atol=1e-6, rtol=1e-5)
    assert_close_grads(g_fused, g_ref)
    assert_close_grads(g_chunked, g_ref)
    assert_close_grads(g_mat, g_ref)


def test_fused_path_honours_final_logit_softcapping(tmp_path) -> None:
    def gemma(seed):
        torch.manual_seed(seed)
        config = Gemma2Config(
            num_hidden_layers=1,
            hidden_size=32,
            intermediate_size=64,
            num_attention_heads=2,
            num_key_value_heads=1,
            head_dim=16,
            vocab_size=VOCAB,
            max_position_embeddings=64,
            final_logit_softcapping=2.0,  # small: the cap changes the logits a lot
            initializer_range=0.5,
            pad_token_id=0,
            eos_token_id=1,
            bos_token_id=0,
        )
        return Gemma2ForCausalLM(config)

    student, teacher = gemma(1), gemma(2)
    trainer = DistillationTrainer(
        model=student, args=args(tmp_path), teacher_model=teacher, train_dataset=examples()
    )
    batch = trainer.data_collator(examples(3, seed=4))
    fused = trainer.compute_loss(student, batch)
    trainer.fused = False
    materialised = trainer.compute_loss(student, batch)
    torch.testing.assert_close(fused, materialised, atol=1e-6, rtol=1e-5)
    # without the cap the value differs: the check above can fail
    student.config.final_logit_softcapping = teacher.config.final_logit_softcapping = None
    trainer.fused = True
    uncapped = trainer.compute_loss(student, batch).detach()
    assert abs(float(uncapped) - float(materialised.detach())) > 1e-3


def test_fused_cross_entropy_equals_full_cross_entropy() -> None:
    torch.manual_seed(0)
    head = torch.nn.Linear(8, 50, bias=True)
    hidden = torch.randn(37, 8, requires_grad=True)
    y = torch.randint(0, 50, (37,))
    got = fused_cross_entropy(hidden, head, y, chunk_size=5)
    want = torch.nn.functional.cross_entropy(head(hidden), y, reduction="sum")
    torch.testing.assert_close(got, want)
    g1 = torch.autograd.grad(got, [hidden, head.weight, head.bias])
    g2 = torch.autograd.grad(want, [hidden, head.weight, head.bias])
    assert_close_grads(g1, g2)


# --------------------------------------------------------------------------------------------
# training
# --------------------------------------------------------------------------------------------
def test_training_steps_reduce_the_kd_loss(tmp_path) -> None:
    student, teacher = gpt2(1, 32, seed=1), gpt2(2, 32, seed=2, init=0.5)  # a peaked teacher
    data = examples(4, seed=5)
    trainer = DistillationTrainer(
        model=student,
        args=args(tmp_path, max_steps=12, learning_rate=3e-2),
        teacher_model=teacher,
        train_dataset=data,
        eval_dataset=data,
    )
    batch = trainer.data_collator(data)
    with torch.no_grad():
        before = float(trainer.compute_loss(student.eval(), batch))
    trainer.train()
    with torch.no_grad():
        after = float(trainer.compute_loss(student.eval(), batch))
    assert after < 0.7 * before, (before, after)
    kd_logged = [row["kd_loss"] for row in trainer.state.log_history if "kd_loss" in row]
    assert len(kd_logged) == 12 and kd_logged[-1] < kd_logged[0]
    # the teacher stays frozen, in eval mode; evaluation reports the same loss
    assert not teacher.training and all(p.grad is None for p in teacher.parameters())
    assert trainer.evaluate()["eval_loss"] == pytest.approx(after, rel=1e-5)


def test_teacher_given_as_a_local_folder(tmp_path) -> None:
    student, teacher = gpt2(1, 32, seed=1), gpt2(2, 32, seed=2, init=0.3)
    teacher.save_pretrained(tmp_path / "teacher")
    batch = CausalLMCollator(0)(examples(2))
    losses = []
    for source in (teacher, str(tmp_path / "teacher")):
        trainer = DistillationTrainer(model=student, args=args(tmp_path), teacher_model=source)
        losses.append(float(trainer.compute_loss(student, batch).detach()))
    assert losses[0] == pytest.approx(losses[1], rel=1e-6) and losses[0] > 0


def _spy_generate(monkeypatch, model, calls, name):
    original = model.generate

    def spy(*a, **kw):
        out = original(*a, **kw)
        calls.append((name, out))
        return out

    monkeypatch.setattr(model, "generate", spy)


def _spy_loss_inputs(monkeypatch, trainer, seen):
    original = trainer._distillation_loss

    def spy(student, inputs, num_items):
        seen.append({k: v.clone() for k, v in inputs.items() if torch.is_tensor(v)})
        return original(student, inputs, num_items)

    monkeypatch.setattr(trainer, "_distillation_loss", spy)


@pytest.mark.parametrize(
    ("lmbda", "seq_kd", "who"),
    [(1.0, False, ["student"]), (0.0, True, ["teacher"]), (0.0, False, [])],
)
def test_on_policy_and_sequence_kd_generations(tmp_path, monkeypatch, lmbda, seq_kd, who) -> None:
    student, teacher = gpt2(1, 32, seed=1), gpt2(1, 32, seed=2)
    data = examples(4, seed=6, prompt=4)
    trainer = DistillationTrainer(
        model=student,
        args=args(tmp_path, max_steps=2),
        teacher_model=teacher,
        train_dataset=data,
        lmbda=lmbda,
        seq_kd=seq_kd,
        max_new_tokens=5,
    )
    calls, seen = [], []
    _spy_generate(monkeypatch, student, calls, "student")
    _spy_generate(monkeypatch, teacher, calls, "teacher")
    _spy_loss_inputs(monkeypatch, trainer, seen)
    trainer.train()
    assert [name for name, _ in calls] == who * 2  # one generation per training batch
    assert len(seen) == 2
    prompts = {tuple(ex["input_ids"][:4]) for ex in data}
    for k, batch in enumerate(seen):
        ids, mask, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
        if not who:  # off-policy: the dataset's own rows
            assert {tuple(r[:4].tolist()) for r in ids} <= prompts
            continue
        generated = calls[k][1]
        # the samples are what the loss trained on
        torch.testing.assert_close(ids[:, : generated.shape[1]], generated)
        for row, m, y in zip(ids, mask, labels, strict=True):
            real = row[m.bool()]
            assert tuple(real[:4].tolist()) in prompts  # the prompt kept
            supervised = y != -100
            assert (y[supervised] == row[supervised]).all()  # completion labels = its tokens
            assert supervised.sum() >= 1 and not supervised[: row.numel() - 5].any()


def test_generations_longer_than_the_positions_are_refused_up_front(tmp_path) -> None:
    student, teacher = gpt2(seed=1), tiny_gpt2(seed=2, vocab=VOCAB, n_positions=20)
    with pytest.raises(
        ValueError,
        match=r"^generating max_new_tokens=64 after a prompt of 1 tokens needs 65 positions, "
        r"more than the student's maximum of 64 \(config n_positions\); lower max_new_tokens",
    ):
        DistillationTrainer(
            model=student, args=args(tmp_path), teacher_model=gpt2(seed=2), lmbda=0.5,
            max_new_tokens=64,
        )  # fmt: skip
    trainer = DistillationTrainer(
        model=student, args=args(tmp_path), teacher_model=teacher, seq_kd=True, max_new_tokens=12
    )
    batch = CausalLMCollator(0)(examples(2, prompt=10))  # 10 + 12 > the teacher's 20
    with pytest.raises(ValueError, match=r"prompt of 10 tokens needs 22 positions, more than "
                       r"the teacher's maximum of 20"):  # fmt: skip
        trainer.generate_completions(teacher, batch)
    DistillationTrainer(  # off-policy training never generates: no limit on max_new_tokens
        model=student, args=args(tmp_path), teacher_model=teacher, max_new_tokens=64
    )


def test_gradient_accumulation_matches_the_large_batch(tmp_path) -> None:
    data = examples(4, seed=7)  # different lengths: the token count matters
    results = []
    for bs, ga in ((4, 1), (2, 2)):
        student, teacher = gpt2(1, 32, seed=1), gpt2(1, 32, seed=2, init=0.3)
        trainer = DistillationTrainer(
            model=student,
            args=args(
                tmp_path / f"{bs}x{ga}",
                per_device_train_batch_size=bs,
                gradient_accumulation_steps=ga,
                optim="sgd",
                learning_rate=1.0,
                lr_scheduler_type="constant",
                max_grad_norm=0.0,
            ),
            teacher_model=teacher,
            train_dataset=data,
            ce_weight=0.5,
        )
        start = copy.deepcopy(student.state_dict())
        trainer.train()
        step = {k: start[k] - v for k, v in student.state_dict().items()}
        results.append((trainer.state.log_history[0], step))
    (log_a, step_a), (log_b, step_b) = results
    for key in ("loss", "kd_loss", "ce_loss"):
        assert log_a[key] == pytest.approx(log_b[key], rel=1e-5), key
    assert log_b["loss"] == pytest.approx(0.5 * log_b["kd_loss"] + 0.5 * log_b["ce_loss"])
    assert any(float(v.abs().max()) > 1e-4 for v in step_a.values())
    for key in step_a:
        torch.testing.assert_close(step_a[key], step_b[key], atol=1e-7, rtol=1e-4)


# --------------------------------------------------------------------------------------------
# bad input
# --------------------------------------------------------------------------------------------
def test_vocabulary_mismatch_is_one_line_naming_both_sizes_and_the_fixes(tmp_path) -> None:
    student, teacher = gpt2(vocab=96), gpt2(vocab=104)
    with pytest.raises(ValueError) as err:
        DistillationTrainer(model=student, args=args(tmp_path), teacher_model=teacher)
    message = str(err.value)
    assert "\n" not in message
    assert "104" in message and "96" in message
    assert "vocab='truncate'" in message and "ULD" in message
    trainer = DistillationTrainer(  # the padded-head fix works
        model=student,
        args=args(tmp_path),
        teacher_model=teacher,
        vocab="truncate",
        train_dataset=examples(),
    )
    assert torch.isfinite(trainer.compute_loss(student, trainer.data_collator(examples(2))))


def test_models_that_are_not_causal_lms_are_refused(tmp_path) -> None:
    backbone_only = GPT2Model(gpt2().config)
    with pytest.raises(ValueError, match=r"`model` \(GPT2Model\) is not a causal language model"):
        DistillationTrainer(model=backbone_only, args=args(tmp_path), teacher_model=gpt2())
    with pytest.raises(ValueError, match=r"`teacher_model` .* is not a causal language model"):
        DistillationTrainer(model=gpt2(), args=args(tmp_path), teacher_model=torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="`teacher_model` is required"):
        DistillationTrainer(model=gpt2(), args=args(tmp_path))


def test_batches_without_or_with_misaligned_labels_are_refused(tmp_path) -> None:
    student = gpt2()
    trainer = DistillationTrainer(
        model=student, args=args(tmp_path), teacher_model=gpt2(seed=3), train_dataset=examples()
    )
    batch = trainer.data_collator(examples(2))
    no_labels = {k: v for k, v in batch.items() if k != "labels"}
    with pytest.raises(ValueError, match="the batch has no `labels`"):
        trainer.compute_loss(student, no_labels)
    short = dict(batch, labels=batch["labels"][:, :-1])
    with pytest.raises(ValueError, match=r"`labels` has shape .* but `input_ids` has"):
        trainer.compute_loss(student, short)
    with pytest.raises(ValueError, match="`labels` has 3 tokens but `input_ids` has 4"):
        CausalLMCollator(0)([{"input_ids": [1, 2, 3, 4], "labels": [1, 2, 3]}])


@pytest.mark.parametrize(
    ("option", "value", "pattern"),
    [
        ("ce_weight", 1.5, r"`ce_weight` must be a number in \[0, 1\], got 1.5"),
        ("lmbda", -0.1, r"`lmbda` must be a number in \[0, 1\]"),
        ("temperature", 0.0, "`temperature` must be a finite number > 0"),
        ("divergence", "not_a_divergence", "not_a_divergence"),
        ("vocab", "pad", "`vocab` must be 'strict' or 'truncate'"),
        ("max_new_tokens", 0, "`max_new_tokens` must be an integer >= 1"),
        ("chunk_size", 0, "`chunk_size` must be a positive integer or None"),
    ],
)
def test_invalid_options_name_the_argument(tmp_path, option, value, pattern) -> None:
    with pytest.raises(ValueError, match=pattern):
        DistillationTrainer(
            model=gpt2(), args=args(tmp_path), teacher_model=gpt2(seed=3), **{option: value}
        )

"""TRL adapters on tiny random Hugging Face models (CPU): the losses equal TRL's own trainers'
on the same batch where they overlap, and a couple of training steps run."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
trl = pytest.importorskip("trl")
transformers = pytest.importorskip("transformers")
datasets = pytest.importorskip("datasets")
tokenizers = pytest.importorskip("tokenizers")

from divergent.integrations.trl import (  # noqa: E402
    DivergenceDistillationTrainer,
    divergence_for_trl_beta,
)
from divergent.objectives.token import token_distillation_loss  # noqa: E402

VOCAB = 64
CHARS = "abcdefghijklmnopqrstuvwxyz .,!?"
PROMPTS = ["hello there", "the cat sat", "a b c", "why not"]


@pytest.fixture(scope="module")
def tokenizer():
    vocab = {"<pad>": 0, "<eos>": 1, "<unk>": 2, **{c: i + 3 for i, c in enumerate(CHARS)}}
    model = tokenizers.models.WordLevel(vocab, unk_token="<unk>")
    tok = tokenizers.Tokenizer(model)
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Split("", "isolated")
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        eos_token="<eos>",
        unk_token="<unk>",
        padding_side="left",
    )


def tiny_lm(kind: str, seed: int, hidden: int, **extra):
    """A 1-layer random causal LM; a large init so the two models' distributions differ."""
    torch.manual_seed(seed)
    common = dict(vocab_size=VOCAB, bos_token_id=1, eos_token_id=1, pad_token_id=0)
    if kind == "gpt2":
        config = transformers.GPT2Config(
            n_layer=1,
            n_embd=hidden,
            n_head=2,
            n_positions=64,
            initializer_range=0.5,
            attn_pdrop=0.0,  # GPT-2's attention dropout is not an nn.Dropout TRL could disable
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            **common,
        )
    else:
        config = transformers.LlamaConfig(
            num_hidden_layers=1,
            hidden_size=hidden,
            intermediate_size=2 * hidden,
            num_attention_heads=2,
            num_key_value_heads=2,
            max_position_embeddings=64,
            initializer_range=0.5,
            **common,
            **extra,
        )
    return transformers.AutoModelForCausalLM.from_config(config)


def distill_config(tmp_path, **overrides):
    kwargs = dict(
        output_dir=str(tmp_path),
        max_steps=2,
        per_device_train_batch_size=2,
        max_completion_length=4,
        report_to="none",
        use_cpu=True,
        logging_steps=1,
        save_strategy="no",
        learning_rate=1e-2,
        seed=0,
        bf16=False,  # fp32 throughout (TRL's default bf16 wraps the teacher's forward in autocast)
    )
    kwargs.update(overrides)
    return trl.DistillationConfig(**kwargs)


def fixed_batch(generator_seed: int = 0) -> dict[str, torch.Tensor]:
    """A batch in the format of TRL's `_generate_and_score_completions` (left-padded prompts,
    right-padded completions), so that both trainers see exactly the same tokens."""
    gen = torch.Generator().manual_seed(generator_seed)
    prompt_ids = torch.randint(3, VOCAB, (3, 5), generator=gen)
    prompt_mask = torch.ones_like(prompt_ids)
    prompt_mask[0, :2] = 0
    prompt_ids[0, :2] = 0
    completion_ids = torch.randint(3, VOCAB, (3, 6), generator=gen)
    completion_mask = torch.ones_like(completion_ids)
    completion_mask[1, 4:] = 0
    completion_mask[2, 2:] = 0
    completion_ids[completion_mask == 0] = 0
    return {
        "prompt_ids": prompt_ids,
        "prompt_mask": prompt_mask,
        "completion_ids": completion_ids,
        "completion_mask": completion_mask,
        "num_items_in_batch": completion_mask.sum(),
    }


def _loss_and_grads(trainer, batch):
    trainer.model.zero_grad(set_to_none=True)
    trainer.model.train()
    loss = trainer.compute_loss(trainer.model, dict(batch), num_items_in_batch=None)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.grad is not None}
    return loss.detach(), grads


# ---------------------------------------------------------------- DistillationTrainer
def test_divergence_for_trl_beta():
    assert divergence_for_trl_beta(0.0) == ("kl", {})
    assert divergence_for_trl_beta(1) == ("reverse_kl", {})
    assert divergence_for_trl_beta(0.25) == ("js", {"beta": 0.25})
    with pytest.raises(ValueError, match="`beta`"):
        divergence_for_trl_beta(1.5)


@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_distillation_loss_equals_trl_trainer(tmp_path, tokenizer, kind, beta):
    student, teacher = tiny_lm(kind, 0, 16), tiny_lm(kind, 1, 32)
    args = distill_config(tmp_path, beta=beta, temperature=1.3)
    theirs = trl.DistillationTrainer(
        model=student, teacher_model=teacher, args=args, processing_class=tokenizer
    )
    name, params = divergence_for_trl_beta(beta)
    ours_explicit = DivergenceDistillationTrainer(
        model=student,
        teacher_model=teacher,
        args=distill_config(tmp_path, beta=0.5, temperature=1.3),  # ignored: divergence given
        processing_class=tokenizer,
        divergence=name,
        divergence_params=params,
    )
    ours_from_beta = DivergenceDistillationTrainer(
        model=student, teacher_model=teacher, args=args, processing_class=tokenizer
    )
    batch = fixed_batch()
    loss_theirs, grads_theirs = _loss_and_grads(theirs, batch)
    assert loss_theirs.item() > 1e-3  # the models differ: a test that can fail
    for ours in (ours_explicit, ours_from_beta):
        loss_ours, grads_ours = _loss_and_grads(ours, batch)
        assert abs(loss_ours.item() - loss_theirs.item()) < 1e-5 * max(1.0, loss_theirs.item())
        assert grads_ours.keys() == grads_theirs.keys()
        for name_, g in grads_theirs.items():
            torch.testing.assert_close(grads_ours[name_], g, atol=1e-5, rtol=1e-4, msg=name_)
    assert ours_explicit._metrics["train"]["entropy"][-1] == pytest.approx(
        theirs._metrics["train"]["entropy"][-1], rel=1e-4
    )


def test_distillation_any_divergence_matches_logits_reference(tmp_path, tokenizer):
    """A divergence TRL cannot express: the adapter equals the token loss on the models' own
    logits at the completion positions (an independent alignment check)."""
    student, teacher = tiny_lm("llama", 0, 16), tiny_lm("llama", 1, 32)
    trainer = DivergenceDistillationTrainer(
        model=student,
        teacher_model=teacher,
        args=distill_config(tmp_path, temperature=0.8),
        processing_class=tokenizer,
        divergence="alpha",
        divergence_params={"alpha": 0.5},
    )
    batch = fixed_batch(1)
    loss, _ = _loss_and_grads(trainer, batch)
    input_ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], dim=1)
    attention = torch.cat([batch["prompt_mask"], batch["completion_mask"]], dim=1)
    n_completion = batch["completion_ids"].shape[1]
    with torch.no_grad():
        z_s = student(input_ids=input_ids, attention_mask=attention).logits
        z_t = teacher(input_ids=input_ids, attention_mask=attention).logits
    positions = slice(-n_completion - 1, -1)  # the logits that predict the completion tokens
    labels = torch.where(batch["completion_mask"].bool(), batch["completion_ids"], -100)
    reference = token_distillation_loss(
        z_s[:, positions], z_t[:, positions], labels, divergence="alpha", alpha=0.5, temperature=0.8
    )
    assert abs(loss.item() - reference.item()) < 1e-5


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_distillation_trainer_trains_on_policy(tmp_path, tokenizer, kind):
    student, teacher = tiny_lm(kind, 0, 16), tiny_lm(kind, 1, 32)
    before = {n: p.detach().clone() for n, p in student.named_parameters()}
    head_before = student.get_output_embeddings().weight.detach().clone()
    trainer = DivergenceDistillationTrainer(
        model=student,
        teacher_model=teacher,
        args=distill_config(tmp_path),
        train_dataset=datasets.Dataset.from_dict({"prompt": PROMPTS}),
        processing_class=tokenizer,
        divergence="tv",
    )
    trainer.train()
    losses = [log["loss"] for log in trainer.state.log_history if "loss" in log]
    assert len(losses) == 2
    assert all(0.0 < value < 1.0 for value in losses)  # TV is in [0, 1]
    changed = [n for n, p in student.named_parameters() if not torch.equal(p, before[n])]
    assert not torch.equal(student.get_output_embeddings().weight, head_before)
    assert len(changed) > 3


def test_distillation_trainer_bad_divergence(tmp_path, tokenizer):
    student, teacher = tiny_lm("gpt2", 0, 16), tiny_lm("gpt2", 1, 16)
    kwargs = dict(
        model=student,
        teacher_model=teacher,
        args=distill_config(tmp_path),
        processing_class=tokenizer,
    )
    with pytest.raises(ValueError, match="no_such_divergence"):
        DivergenceDistillationTrainer(**kwargs, divergence="no_such_divergence")
    with pytest.raises(ValueError, match="beta"):
        DivergenceDistillationTrainer(**kwargs, divergence="js", divergence_params={"beta": 2.0})
    with pytest.raises(ValueError, match="`divergence_params` needs `divergence`"):
        DivergenceDistillationTrainer(**kwargs, divergence_params={"beta": 0.5})

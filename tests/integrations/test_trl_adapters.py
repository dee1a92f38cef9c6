"""TRL adapters on tiny random Hugging Face models (CPU): the losses equal TRL's own trainers'
on the same batch where they overlap, and a couple of training steps run."""

from __future__ import annotations

import copy
import dataclasses
import os

import numpy as np
import pytest
import torch

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
trl = pytest.importorskip("trl")
transformers = pytest.importorskip("transformers")
datasets = pytest.importorskip("datasets")
tokenizers = pytest.importorskip("tokenizers")

from divergent.integrations.trl import (  # noqa: E402
    DivergenceDistillationTrainer,
    FDivergenceDPOTrainer,
    KLConfigurableGRPOTrainer,
    divergence_for_trl_beta,
    divergence_for_trl_f_divergence,
)
from divergent.objectives.policy_gradient import grpo_loss  # noqa: E402
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


@pytest.mark.parametrize(
    ("student_extra", "teacher_extra"),
    [
        ({"logit_scale": 0.7}, {"final_logit_softcapping": 5.0}),  # different caps: no fused path
        ({"final_logit_softcapping": 4.0}, {"final_logit_softcapping": 4.0, "logit_scale": 1.5}),
    ],
    ids=["caps-differ", "same-cap-scales-differ"],
)
def test_distillation_logit_transforms_equal_trl(tmp_path, tokenizer, student_extra, teacher_extra):
    """Soft-caps and logit scales read from the configs as TRL reads them (set on Llama configs
    here: only the distillation losses read them)."""
    student, teacher = tiny_lm("llama", 0, 16), tiny_lm("llama", 1, 32)
    for model, extra in ((student, student_extra), (teacher, teacher_extra)):
        for key, value in extra.items():
            setattr(model.config, key, value)
    args = distill_config(tmp_path, beta=0.3, temperature=1.2)
    kwargs = dict(model=student, teacher_model=teacher, args=args, processing_class=tokenizer)
    theirs = trl.DistillationTrainer(**kwargs)
    ours = DivergenceDistillationTrainer(**kwargs)
    batch = fixed_batch(3)
    loss_theirs, grads_theirs = _loss_and_grads(theirs, batch)
    loss_ours, grads_ours = _loss_and_grads(ours, batch)
    assert abs(loss_ours.item() - loss_theirs.item()) < 1e-5 * max(1.0, loss_theirs.item())
    for name, g in grads_theirs.items():
        torch.testing.assert_close(grads_ours[name], g, atol=1e-5, rtol=1e-4, msg=name)


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


# ---------------------------------------------------------------------------------- DPO
PREFERENCES = {
    "prompt": ["hello", "the cat", "why", "a b"],
    "chosen": [" there", " sat", " not", " c d"],
    "rejected": [" you", " ran off", " so", " e"],
}


def dpo_models():
    """A policy and a nearby reference (log-ratios of order 1)."""
    policy = tiny_lm("llama", 0, 16)
    reference = copy.deepcopy(policy)
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for p in reference.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    return policy, reference


def dpo_config(tmp_path, **overrides):
    kwargs = dict(
        output_dir=str(tmp_path),
        per_device_train_batch_size=4,
        max_steps=1,
        report_to="none",
        use_cpu=True,
        bf16=False,
        save_strategy="no",
        logging_steps=1,
        beta=0.5,
        learning_rate=1e-2,
    )
    kwargs.update(overrides)
    return trl.DPOConfig(**kwargs)


def test_divergence_for_trl_f_divergence():
    assert divergence_for_trl_f_divergence("reverse_kl") == ("reverse_kl", {}, 1.0)
    assert divergence_for_trl_f_divergence("forward_kl") == ("kl", {}, 1.0)
    assert divergence_for_trl_f_divergence("js_divergence") == ("js", {"beta": 0.5}, 2.0)
    assert divergence_for_trl_f_divergence("alpha_divergence", 0.3) == (
        "alpha",
        {"alpha": 0.7},
        1.0,
    )
    with pytest.raises(ValueError, match="`f_divergence_type`"):
        divergence_for_trl_f_divergence("hellinger")


@pytest.mark.parametrize(
    ("f_type", "divergence", "params", "beta_factor"),
    [
        ("reverse_kl", "reverse_kl", {}, 1.0),
        ("forward_kl", "kl", {}, 1.0),
        ("js_divergence", "js", {"beta": 0.5}, 2.0),
        ("alpha_divergence", "alpha", {"alpha": 0.5}, 1.0),
    ],
)
@pytest.mark.parametrize("loss_type", ["sigmoid", "hinge", "ipo", "sigmoid_norm"])
def test_dpo_loss_equals_trl_trainer(
    tmp_path, tokenizer, f_type, divergence, params, beta_factor, loss_type
):
    policy, reference = dpo_models()
    data = datasets.Dataset.from_dict(PREFERENCES)
    theirs = trl.DPOTrainer(
        model=policy,
        ref_model=reference,
        args=dpo_config(tmp_path, f_divergence_type=f_type, loss_type=[loss_type]),
        train_dataset=data,
        processing_class=tokenizer,
    )
    ours = FDivergenceDPOTrainer(
        model=policy,
        ref_model=reference,
        args=dpo_config(tmp_path, beta=0.5 * beta_factor, loss_type=[loss_type]),
        train_dataset=data,
        processing_class=tokenizer,
        divergence=divergence,
        divergence_params=params,
    )
    batch = theirs._prepare_inputs(next(iter(theirs.get_train_dataloader())))
    loss_theirs, grads_theirs = _loss_and_grads(theirs, batch)
    loss_ours, grads_ours = _loss_and_grads(ours, batch)
    # TRL's js score is that of 2·JSD: at twice the β, its IPO loss is 4 × ours (see the mapping)
    scale = 4.0 if (f_type == "js_divergence" and loss_type == "ipo") else 1.0
    assert loss_theirs.item() != pytest.approx(float(np.log(2)), abs=1e-3)  # not the trivial value
    assert scale * loss_ours.item() == pytest.approx(loss_theirs.item(), rel=1e-5, abs=1e-6)
    for name, g in grads_theirs.items():
        torch.testing.assert_close(scale * grads_ours[name], g, atol=1e-6, rtol=1e-4, msg=name)


def test_dpo_default_divergence_is_trls(tmp_path, tokenizer):
    policy, reference = dpo_models()
    data = datasets.Dataset.from_dict(PREFERENCES)
    config = dpo_config(tmp_path, f_divergence_type="js_divergence")
    theirs = trl.DPOTrainer(
        model=policy,
        ref_model=reference,
        args=config,
        train_dataset=data,
        processing_class=tokenizer,
    )
    ours = FDivergenceDPOTrainer(
        model=policy,
        ref_model=reference,
        args=config,
        train_dataset=data,
        processing_class=tokenizer,
    )
    assert (ours.divergence, ours.divergence_beta) == ("js", 1.0)
    batch = theirs._prepare_inputs(next(iter(theirs.get_train_dataloader())))
    loss_theirs, _ = _loss_and_grads(theirs, batch)
    loss_ours, _ = _loss_and_grads(ours, batch)
    assert loss_ours.item() == pytest.approx(loss_theirs.item(), rel=1e-5)


def test_dpo_trainer_trains_with_another_f_divergence(tmp_path, tokenizer):
    policy, reference = dpo_models()
    head_before = policy.get_output_embeddings().weight.detach().clone()
    trainer = FDivergenceDPOTrainer(
        model=policy,
        ref_model=reference,
        args=dpo_config(tmp_path, max_steps=2, per_device_train_batch_size=2),
        train_dataset=datasets.Dataset.from_dict(PREFERENCES),
        processing_class=tokenizer,
        divergence="hellinger",
    )
    trainer.train()
    losses = [log["loss"] for log in trainer.state.log_history if "loss" in log]
    assert len(losses) == 2 and all(np.isfinite(losses))
    assert not torch.equal(policy.get_output_embeddings().weight, head_before)
    assert any("rewards/margins" in log for log in trainer.state.log_history)


def test_dpo_bad_options(tmp_path, tokenizer):
    policy, reference = dpo_models()
    kwargs = dict(
        model=policy,
        ref_model=reference,
        train_dataset=datasets.Dataset.from_dict(PREFERENCES),
        processing_class=tokenizer,
    )
    with pytest.raises(ValueError, match=r"renyi|f-divergence"):
        FDivergenceDPOTrainer(args=dpo_config(tmp_path), divergence="renyi", **kwargs)
    with pytest.raises(ValueError, match="`loss_type`"):
        FDivergenceDPOTrainer(args=dpo_config(tmp_path, loss_type=["bco_pair"]), **kwargs)
    with pytest.raises(ValueError, match="use_weighting"):
        FDivergenceDPOTrainer(args=dpo_config(tmp_path, use_weighting=True), **kwargs)


# --------------------------------------------------------------------------------- GRPO
PROMPT_DATA = datasets.Dataset.from_dict({"prompt": PROMPTS})


def length_reward(completions, **kwargs):
    return [float(len(c)) for c in completions]


@pytest.fixture(scope="module")
def policy_dir(tmp_path_factory, tokenizer):
    """A tiny Llama saved locally: GRPOTrainer builds its reference model from the path."""
    path = tmp_path_factory.mktemp("policy")
    tiny_lm("llama", 0, 16).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


def grpo_config(tmp_path, **overrides):
    kwargs = dict(
        output_dir=str(tmp_path),
        per_device_train_batch_size=4,
        num_generations=2,
        max_completion_length=4,
        max_steps=1,
        report_to="none",
        use_cpu=True,
        bf16=False,
        save_strategy="no",
        logging_steps=1,
        beta=0.2,
        loss_type="grpo",
        use_bias_correction_kl=False,
        learning_rate=1e-2,
    )
    kwargs.update(overrides)
    return trl.GRPOConfig(**kwargs)


def grpo_batch(trainer) -> dict[str, torch.Tensor]:
    """A fixed batch in the format of TRL's `_generate_and_score_completions`."""
    trainer.current_gradient_accumulation_steps = 1  # set by Trainer.train, read by the loss
    batch = fixed_batch(2)
    batch["advantages"] = torch.tensor([1.0, -0.5, 0.3])
    input_ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], dim=1)
    attention = torch.cat([batch["prompt_mask"], batch["completion_mask"]], dim=1)
    n_completion = batch["completion_ids"].shape[1]
    gen = torch.Generator().manual_seed(3)
    # TRL's reference starts equal to the policy (KL 0, zero KL gradient): use a perturbed copy,
    # so that the KL term and its importance weight show in the loss and the gradients
    reference = copy.deepcopy(trainer.ref_model)
    with torch.no_grad():
        for p in reference.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=gen))
        ref, _, _ = trainer._get_per_token_logps_and_entropies(
            reference, input_ids, attention, n_completion
        )
        policy, _, _ = trainer._get_per_token_logps_and_entropies(
            trainer.model, input_ids, attention, n_completion
        )
    batch["ref_per_token_logps"] = ref
    # an older sampling policy, so that the ratios are not 1 and clipping happens
    batch["old_per_token_logps"] = policy + 0.3 * torch.randn(policy.shape, generator=gen)
    return batch


@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dr_grpo", "dapo", "luspo"])
@pytest.mark.parametrize("bias_correction", [False, True])
def test_grpo_default_kl_equals_trl_trainer(
    tmp_path, tokenizer, policy_dir, loss_type, bias_correction
):
    level = "sequence" if loss_type == "luspo" else "token"  # LUSPO is GSPO-based
    config = grpo_config(
        tmp_path,
        loss_type=loss_type,
        use_bias_correction_kl=bias_correction,
        importance_sampling_level=level,
    )
    kwargs = dict(
        reward_funcs=length_reward,
        args=config,
        train_dataset=PROMPT_DATA,
        processing_class=tokenizer,
    )
    theirs = trl.GRPOTrainer(model=policy_dir, **kwargs)
    ours = KLConfigurableGRPOTrainer(model=theirs.model, **kwargs)
    ours.ref_model = theirs.ref_model
    batch = grpo_batch(theirs)
    ours.current_gradient_accumulation_steps = 1
    loss_theirs, grads_theirs = _loss_and_grads(theirs, batch)
    loss_ours, grads_ours = _loss_and_grads(ours, batch)
    assert abs(loss_theirs.item()) > 1e-3
    assert loss_ours.item() == pytest.approx(loss_theirs.item(), rel=1e-5, abs=1e-7)
    for name, g in grads_theirs.items():
        torch.testing.assert_close(grads_ours[name], g, atol=1e-6, rtol=1e-4, msg=name)
    assert ours._metrics["train"]["kl"][-1] == pytest.approx(theirs._metrics["train"]["kl"][-1])


@pytest.mark.parametrize(
    ("estimator", "placement", "gradient", "weighted"),
    [
        ("k1", "reward", None, False),
        ("k2", "loss", None, False),
        ("k3", "loss", "k2", False),
        ("k3", "reward", None, False),
        ("k1", "loss", None, True),
    ],
)
def test_grpo_kl_options_reach_grpo_loss(
    tmp_path, tokenizer, policy_dir, estimator, placement, gradient, weighted
):
    trainer = KLConfigurableGRPOTrainer(
        model=policy_dir,
        reward_funcs=length_reward,
        args=grpo_config(tmp_path, loss_type="bnpo", use_bias_correction_kl=weighted),
        train_dataset=PROMPT_DATA,
        processing_class=tokenizer,
        kl_estimator=estimator,
        kl_in=placement,
        kl_gradient=gradient,
    )
    batch = grpo_batch(trainer)
    loss, grads = _loss_and_grads(trainer, batch)
    input_ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], dim=1)
    attention = torch.cat([batch["prompt_mask"], batch["completion_mask"]], dim=1)
    trainer.model.zero_grad(set_to_none=True)
    logps, _, _ = trainer._get_per_token_logps_and_entropies(
        trainer.model, input_ids, attention, batch["completion_ids"].shape[1]
    )
    expected = grpo_loss(
        logps,
        batch["old_per_token_logps"],
        batch["ref_per_token_logps"],
        batch["advantages"],
        batch["completion_mask"],
        kl_coef=0.2,
        kl_estimator=estimator,
        kl_in=placement,
        kl_gradient=gradient,
        kl_importance_weight=weighted,
        normalization="token",
    )
    expected.backward()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    for name, p in trainer.model.named_parameters():
        if p.grad is not None:
            torch.testing.assert_close(grads[name], p.grad, atol=1e-7, rtol=1e-5, msg=name)


def test_grpo_trainer_trains_with_k2_in_loss(tmp_path, tokenizer, policy_dir):
    trainer = KLConfigurableGRPOTrainer(
        model=policy_dir,
        reward_funcs=length_reward,
        args=grpo_config(tmp_path, max_steps=2),
        train_dataset=PROMPT_DATA,
        processing_class=tokenizer,
        kl_estimator="k2",
    )
    head_before = trainer.model.get_output_embeddings().weight.detach().clone()
    trainer.train()
    logs = [log for log in trainer.state.log_history if "loss" in log]
    assert len(logs) == 2 and all(np.isfinite(log["loss"]) and "kl" in log for log in logs)
    assert not torch.equal(trainer.model.get_output_embeddings().weight, head_before)


def test_grpo_accepts_trls_default_config(tmp_path, tokenizer, policy_dir):
    """TRL's defaults (loss_type "dapo", use_bias_correction_kl=True) are no longer refused; with
    beta != 0 the KL term is weighted, and without a KL term there is nothing to weight."""
    defaults = {f.name: f.default for f in dataclasses.fields(trl.GRPOConfig)}
    assert defaults["use_bias_correction_kl"] is True and defaults["loss_type"] == "dapo"
    kwargs = dict(
        model=policy_dir,
        reward_funcs=length_reward,
        train_dataset=PROMPT_DATA,
        processing_class=tokenizer,
    )
    small = dict(
        output_dir=str(tmp_path),
        per_device_train_batch_size=4,
        num_generations=2,
        use_cpu=True,
        bf16=False,
        report_to="none",
    )
    with_kl = KLConfigurableGRPOTrainer(args=trl.GRPOConfig(beta=0.1, **small), **kwargs)
    assert with_kl.kl_importance_weight
    without_kl = KLConfigurableGRPOTrainer(args=trl.GRPOConfig(**small), kl_in="reward", **kwargs)
    assert not without_kl.kl_importance_weight


def test_grpo_bad_options(tmp_path, tokenizer, policy_dir):
    kwargs = dict(
        model=policy_dir,
        reward_funcs=length_reward,
        train_dataset=PROMPT_DATA,
        processing_class=tokenizer,
    )
    with pytest.raises(ValueError, match="`kl_estimator`"):
        KLConfigurableGRPOTrainer(args=grpo_config(tmp_path), kl_estimator="k4", **kwargs)
    with pytest.raises(ValueError, match="`kl_in`"):
        KLConfigurableGRPOTrainer(args=grpo_config(tmp_path), kl_in="advantage", **kwargs)
    with pytest.raises(ValueError, match="kl_in='loss' only"):
        KLConfigurableGRPOTrainer(
            args=grpo_config(tmp_path), kl_in="reward", kl_gradient="k2", **kwargs
        )
    with pytest.raises(ValueError, match=r"use_bias_correction_kl.*kl_in='reward'"):
        KLConfigurableGRPOTrainer(
            args=grpo_config(tmp_path, use_bias_correction_kl=True), kl_in="reward", **kwargs
        )
    with pytest.raises(ValueError, match=r"use_bias_correction_kl.*kl_gradient"):
        KLConfigurableGRPOTrainer(
            args=grpo_config(tmp_path, use_bias_correction_kl=True), kl_gradient="k2", **kwargs
        )
    with pytest.raises(ValueError, match="`loss_type`"):
        KLConfigurableGRPOTrainer(args=grpo_config(tmp_path, loss_type="cispo"), **kwargs)

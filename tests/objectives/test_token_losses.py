"""Token distillation losses: equality with TRL's GKD and DistillationTrainer losses, the fused
path against the materialised one, and the bad-input errors."""

from __future__ import annotations

import math
import os
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from divergent.objectives.token import (
    fused_token_distillation_loss,
    logit_transform_from_config,
    token_distillation_loss,
)

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
gkd = pytest.importorskip("trl.experimental.gkd")
trl_distillation = pytest.importorskip("trl.trainer.distillation_trainer")
generalized_jsd_loss = gkd.GKDTrainer.generalized_jsd_loss
trl_chunked_divergence_loss = trl_distillation._chunked_divergence_loss

# TRL's beta ↔ our divergence (Agarwal et al. 2024 Eq. 1: mixture βP + (1−β)Q, P the teacher)
BETA_CASES = [
    (0.0, "kl", {}),
    (1.0, "reverse_kl", {}),
    (0.1, "js", {"beta": 0.1}),
    (0.5, "js", {"beta": 0.5}),
    (0.9, "js", {"beta": 0.9}),
]
BETA_IDS = [f"beta={b}" for b, _, _ in BETA_CASES]


def _batch(dtype: torch.dtype, b: int = 3, t: int = 5, v: int = 17, spread: float = 3.0):
    student = (spread * torch.randn(b, t, v, dtype=dtype)).requires_grad_()
    teacher = (spread * torch.randn(b, t, v, dtype=dtype)).requires_grad_()
    labels = torch.randint(0, v, (b, t))
    labels[0, :2] = -100  # prompt
    labels[2, 3:] = -100  # padding
    return student, teacher, labels


def _grads(loss: torch.Tensor, *xs: torch.Tensor) -> tuple[torch.Tensor, ...]:
    return torch.autograd.grad(loss, xs)


# ---------------------------------------------------------------- TRL GKD generalized_jsd_loss
@pytest.mark.parametrize(("beta", "name", "params"), BETA_CASES, ids=BETA_IDS)
@pytest.mark.parametrize("temperature", [1.0, 2.5])
@pytest.mark.parametrize("engine", ["reference", "chunked"])
def test_equals_trl_gkd_float64(beta, name, params, temperature, engine):
    student, teacher, labels = _batch(torch.float64)
    ours = token_distillation_loss(
        student, teacher, labels, divergence=name, temperature=temperature, engine=engine, **params
    )
    theirs = generalized_jsd_loss(student, teacher, labels, beta=beta, temperature=temperature)
    assert abs(ours.item() - theirs.item()) < 1e-10
    for g_ours, g_theirs in zip(_grads(ours, student, teacher), _grads(theirs, student, teacher)):
        torch.testing.assert_close(g_ours, g_theirs, atol=1e-12, rtol=1e-10)


@pytest.mark.parametrize(("beta", "name", "params"), BETA_CASES, ids=BETA_IDS)
def test_equals_trl_gkd_float32_with_num_items(beta, name, params):
    student, teacher, labels = _batch(torch.float32, b=4, t=6, v=50)
    n_items = torch.tensor(37)  # the count over several accumulation steps
    ours = token_distillation_loss(
        student, teacher, labels, divergence=name, num_items_in_batch=n_items, **params
    )
    theirs = generalized_jsd_loss(student, teacher, labels, beta=beta, num_items_in_batch=n_items)
    assert abs(ours.item() - theirs.item()) < 1e-5
    for g_ours, g_theirs in zip(_grads(ours, student, teacher), _grads(theirs, student, teacher)):
        torch.testing.assert_close(g_ours, g_theirs, atol=1e-6, rtol=1e-4)


def test_sum_and_none_match_trl_per_token_values():
    student, teacher, labels = _batch(torch.float64)
    theirs = generalized_jsd_loss(student, teacher, labels, beta=0.3, reduction="none")  # (N, V)
    per_token = token_distillation_loss(
        student, teacher, labels, divergence="js", beta=0.3, reduction="none"
    )
    assert per_token.shape == labels.shape
    valid = labels != -100
    torch.testing.assert_close(per_token[valid], theirs.sum(-1), atol=1e-12, rtol=1e-10)
    assert bool((per_token[~valid] == 0).all())
    total = token_distillation_loss(
        student, teacher, labels, divergence="js", beta=0.3, reduction="sum"
    )
    torch.testing.assert_close(total, theirs.sum(), atol=1e-12, rtol=1e-10)


def test_mean_is_over_valid_tokens_and_num_items_replaces_it():
    student, teacher, labels = _batch(torch.float64)
    rows = token_distillation_loss(student, teacher, labels, reduction="none")
    n_valid = int((labels != -100).sum())
    mean = token_distillation_loss(student, teacher, labels)
    torch.testing.assert_close(mean, rows.sum() / n_valid)
    for n_items in (11, torch.tensor(11), torch.tensor(11.0)):
        loss = token_distillation_loss(student, teacher, labels, num_items_in_batch=n_items)
        torch.testing.assert_close(loss, rows.sum() / 11)


def test_gradient_accumulation_with_num_items_equals_full_batch():
    student, teacher, labels = _batch(torch.float64, b=4)
    full = token_distillation_loss(student, teacher, labels, divergence="reverse_kl")
    (g_full,) = _grads(full, student)
    n_items = (labels != -100).sum()
    accumulated = torch.zeros_like(student)
    for part in (slice(0, 1), slice(1, 4)):  # micro-batches with different token counts
        loss = token_distillation_loss(
            student[part],
            teacher[part],
            labels[part],
            divergence="reverse_kl",
            num_items_in_batch=n_items,
        )
        (g,) = _grads(loss, student)
        accumulated += g
    torch.testing.assert_close(accumulated, g_full, atol=1e-14, rtol=1e-12)


def test_without_labels_every_position_counts():
    student, teacher, _ = _batch(torch.float64)
    ours = token_distillation_loss(student, teacher, divergence="kl")
    reference = (
        (F.softmax(teacher, -1) * (F.log_softmax(teacher, -1) - F.log_softmax(student, -1)))
        .sum(-1)
        .mean()
    )
    torch.testing.assert_close(ours, reference, atol=1e-12, rtol=1e-10)


def test_fully_ignored_batch_gives_zero_with_zero_gradient():
    student, teacher, labels = _batch(torch.float64)
    labels[:] = -100
    loss = token_distillation_loss(student, teacher, labels, divergence="js", beta=0.5)
    assert loss.item() == 0.0
    (g,) = _grads(loss, student)
    assert bool((g == 0).all())
    zero_count = token_distillation_loss(student, teacher, labels, num_items_in_batch=0)
    assert zero_count.item() == 0.0


def test_custom_ignore_index_and_generator():
    student, teacher, labels = _batch(torch.float64)
    pad = 99
    labels = torch.where(labels == -100, pad, labels)
    as_pad = token_distillation_loss(student, teacher, labels, ignore_index=pad)
    as_default = token_distillation_loss(student, teacher, torch.where(labels == pad, -100, labels))
    torch.testing.assert_close(as_pad, as_default)
    kl_generator = token_distillation_loss(
        student, teacher, labels, ignore_index=pad, divergence=lambda r: r * torch.log(r)
    )
    torch.testing.assert_close(kl_generator, as_pad, atol=1e-10, rtol=1e-8)


def test_vocab_truncate_uses_the_shared_prefix():
    student, teacher, labels = _batch(torch.float64, v=20)
    padded_teacher = torch.cat([teacher, torch.randn(3, 5, 4, dtype=torch.float64)], dim=-1)
    ours = token_distillation_loss(student, padded_teacher, labels, vocab="truncate")
    torch.testing.assert_close(ours, token_distillation_loss(student, teacher, labels))
    with pytest.raises(ValueError, match=r"vocab='truncate'.*uld"):
        token_distillation_loss(student, padded_teacher, labels)


# ------------------------------------------------------ TRL DistillationTrainer's chunked loss
@pytest.mark.parametrize(("beta", "name", "params"), BETA_CASES, ids=BETA_IDS)
def test_fused_equals_trl_distillation_trainer_loss(beta, name, params):
    """trl.DistillationTrainer's `_chunked_divergence_loss` (fp32 tiles on CPU), per-side
    logit scale and soft-cap as the trainer reads them from the configs."""
    n_b, n_t, h_s, h_t, v = 2, 5, 8, 12, 40
    hs = torch.randn(n_b, n_t, h_s, requires_grad=True)
    ht = torch.randn(n_b, n_t, h_t)
    head_s, head_t = torch.nn.Linear(h_s, v), torch.nn.Linear(h_t, v, bias=False)
    mask = torch.ones(n_b, n_t, dtype=torch.long)
    mask[1, 3:] = 0
    labels = torch.where(mask.bool(), 1, -100)
    config_s = SimpleNamespace(logit_scale=0.7, final_logit_softcapping=20.0)
    config_t = SimpleNamespace(logit_scale=None, final_logit_softcapping=20.0)
    theirs, _, n_valid = trl_chunked_divergence_loss(
        hs,
        ht,
        head_s.weight,
        head_t.weight,
        mask,
        beta,
        student_lm_head_bias=head_s.bias,
        student_logit_scale=0.7,
        student_final_logit_softcapping=20.0,
        teacher_final_logit_softcapping=20.0,
        temperature=1.5,
    )
    ours = fused_token_distillation_loss(
        hs,
        head_s,
        ht,
        head_t,
        labels,
        divergence=name,
        temperature=1.5,
        student_config=config_s,
        teacher_config=config_t,
        **params,
    )
    assert int(n_valid) == int(mask.sum())
    assert abs(ours.item() - theirs.item()) < 1e-5
    params_s = (hs, head_s.weight, head_s.bias)
    for g_ours, g_theirs in zip(_grads(ours, *params_s), _grads(theirs, *params_s)):
        torch.testing.assert_close(g_ours, g_theirs, atol=1e-5, rtol=1e-4)


# ------------------------------------------------------------------ fused vs materialised
def _softcapped(z: torch.Tensor, cap: float | None) -> torch.Tensor:
    return z if cap is None else cap * torch.tanh(z / cap)


@pytest.mark.parametrize(
    ("name", "params"),
    [("kl", {}), ("reverse_kl", {}), ("js", {"beta": 0.3}), ("tv", {}), ("alpha", {"alpha": 0.5})],
)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_fused_equals_materialised_float64(name, params, reduction):
    n_b, n_t, h_s, h_t, v = 2, 6, 5, 7, 23
    hs = torch.randn(n_b, n_t, h_s, dtype=torch.float64, requires_grad=True)
    ht = torch.randn(n_b, n_t, h_t, dtype=torch.float64, requires_grad=True)
    ws = torch.randn(v, h_s, dtype=torch.float64, requires_grad=True)
    bs = torch.randn(v, dtype=torch.float64, requires_grad=True)
    wt = torch.randn(v, h_t, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, v, (n_b, n_t))
    labels[0, :3] = -100
    config_s = SimpleNamespace(final_logit_softcapping=4.0, logit_scale=0.5)
    config_t = SimpleNamespace(final_logit_softcapping=4.0, logit_scale=2.0)
    kwargs = dict(divergence=name, temperature=1.7, reduction=reduction, **params)
    fused = fused_token_distillation_loss(
        hs,
        ws,
        ht,
        wt,
        labels,
        student_bias=bs,
        student_config=config_s,
        teacher_config=config_t,
        chunk_size=4,
        **kwargs,
    )
    z_s = _softcapped(0.5 * (hs @ ws.T + bs), 4.0)
    z_t = _softcapped(2.0 * (ht @ wt.T), 4.0)
    dense = token_distillation_loss(z_s, z_t, labels, **kwargs)
    torch.testing.assert_close(fused, dense, atol=1e-12, rtol=1e-10)
    weight = torch.randn_like(dense) if reduction == "none" else torch.ones_like(dense)
    leaves = (hs, ht, ws, bs, wt)
    g_fused = torch.autograd.grad((fused * weight).sum(), leaves)
    g_dense = torch.autograd.grad((dense * weight).sum(), leaves)
    for a, b in zip(g_fused, g_dense):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-10)


def test_fused_projects_only_valid_positions():
    """A NaN hidden state at an ignored position never reaches the loss: it is not projected."""
    hs = torch.randn(2, 4, 6, dtype=torch.float64)
    ht = torch.randn(2, 4, 6, dtype=torch.float64)
    head_s, head_t = torch.randn(9, 6, dtype=torch.float64), torch.randn(9, 6, dtype=torch.float64)
    labels = torch.tensor([[1, 2, -100, 3], [-100, 4, 5, 6]])
    hs[0, 2] = math.nan
    ht[1, 0] = math.nan
    fused = fused_token_distillation_loss(hs, head_s, ht, head_t, labels, divergence="js")
    assert torch.isfinite(fused)
    clean = torch.where(torch.isnan(hs), 0.0, hs), torch.where(torch.isnan(ht), 0.0, ht)
    dense = token_distillation_loss(
        clean[0] @ head_s.T, clean[1] @ head_t.T, labels, divergence="js"
    )
    torch.testing.assert_close(fused, dense, atol=1e-12, rtol=1e-10)


def test_fused_num_items_and_vocab_truncate():
    hs, ht = torch.randn(2, 3, 4, dtype=torch.float64), torch.randn(2, 3, 5, dtype=torch.float64)
    ws, wt = torch.randn(10, 4, dtype=torch.float64), torch.randn(13, 5, dtype=torch.float64)
    labels = torch.tensor([[1, -100, 2], [3, 4, -100]])
    fused = fused_token_distillation_loss(
        hs, ws, ht, wt, labels, vocab="truncate", num_items_in_batch=9
    )
    dense = token_distillation_loss(
        hs @ ws.T, ht @ wt.T, labels, vocab="truncate", num_items_in_batch=9
    )
    torch.testing.assert_close(fused, dense, atol=1e-12, rtol=1e-10)
    with pytest.raises(ValueError, match=r"vocab='truncate'.*uld"):
        fused_token_distillation_loss(hs, ws, ht, wt, labels)


def test_fused_refuses_second_order():
    hs = torch.randn(4, 3, requires_grad=True)
    ws, wt = torch.randn(7, 3, requires_grad=True), torch.randn(7, 3)
    loss = fused_token_distillation_loss(hs, ws, torch.randn(4, 3), wt)
    with pytest.raises(RuntimeError):
        torch.autograd.grad(loss, ws, create_graph=True)


def test_logit_transform_from_config():
    assert logit_transform_from_config(None) == (None, None)
    assert logit_transform_from_config(SimpleNamespace(logit_scale=1.0)) == (None, None)
    assert logit_transform_from_config(SimpleNamespace(logit_scale=0.25)) == (0.25, None)
    granite = SimpleNamespace(logits_scaling=8.0, model_type="granite")
    assert logit_transform_from_config(granite) == (0.125, None)
    transformers = pytest.importorskip("transformers")
    gemma = transformers.Gemma2Config(final_logit_softcapping=30.0)
    assert logit_transform_from_config(gemma) == (None, 30.0)


# --------------------------------------------------------------------------- bad input
def test_bad_inputs_are_value_errors_naming_the_argument():
    student, teacher, labels = _batch(torch.float32)
    cases = [
        (dict(labels=labels[:, :-1]), r"`labels` has shape \(3, 4\).*\(3, 5\)"),
        (dict(labels=labels.float()), r"`labels` must hold integer"),
        (dict(divergence="not_a_divergence"), r"not_a_divergence"),
        (dict(reduction="batchmean"), r"`reduction`"),
        (dict(temperature=0.0), r"`temperature`"),
        (dict(vocab="pad"), r"`vocab`"),
        (dict(ignore_index=1.5), r"`ignore_index`"),
        (dict(num_items_in_batch=10, reduction="sum"), r"`num_items_in_batch`"),
        (dict(num_items_in_batch=-1), r"`num_items_in_batch`"),
        (dict(num_items_in_batch=torch.ones(2)), r"`num_items_in_batch`"),
        (dict(divergence="js", beta=1.0), r"beta"),
    ]
    for kwargs, pattern in cases:
        kwargs = {"labels": labels, **kwargs}
        with pytest.raises(ValueError, match=pattern):
            token_distillation_loss(student, teacher, **kwargs)
    with pytest.raises(ValueError, match=r"same positions"):
        token_distillation_loss(student, teacher[:, :-1], labels)


def test_fused_bad_inputs():
    hs, ht = torch.randn(2, 3, 4), torch.randn(2, 3, 4)
    linear = torch.nn.Linear(4, 9)
    labels = torch.zeros(2, 3, dtype=torch.long)
    with pytest.raises(ValueError, match=r"`student_head` must be an nn.Linear"):
        fused_token_distillation_loss(hs, "lm_head", ht, linear)
    with pytest.raises(ValueError, match=r"own bias"):
        fused_token_distillation_loss(hs, linear, ht, linear, student_bias=torch.zeros(9))
    with pytest.raises(ValueError, match=r"soft-cap"):
        fused_token_distillation_loss(
            hs,
            linear,
            ht,
            linear,
            student_config=SimpleNamespace(final_logit_softcapping=30.0),
            teacher_config=SimpleNamespace(final_logit_softcapping=None),
        )
    with pytest.raises(ValueError, match=r"not both"):
        fused_token_distillation_loss(
            hs, linear, ht, linear, student_config=SimpleNamespace(), softcap=3.0
        )
    with pytest.raises(ValueError, match=r"`labels` has shape"):
        fused_token_distillation_loss(hs, linear, ht, linear, labels[:, :2])
    with pytest.raises(ValueError, match=r"`divergence`|nope"):
        fused_token_distillation_loss(hs, linear, ht, linear, divergence="nope")

"""grpo_loss / policy_gradient_loss / group_normalized_advantages / AdaptiveKLController.

References: TRL 1.16's own ``GRPOTrainer._compute_loss`` (called on a stub trainer that feeds it
our log-probabilities), an independent float64 reconstruction of the GRPO formula, and exact
expected gradients by enumeration on a small softmax policy (the k1/k2/k3 semantics).
"""

from __future__ import annotations

import math
from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch

from divergent.objectives.policy_gradient import (
    AdaptiveKLController,
    aggregate_token_loss,
    group_normalized_advantages,
    grpo_loss,
    policy_gradient_loss,
)

B, T = 6, 5


def _batch(seed: int = 0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    logps = torch.log_softmax(torch.randn(B, T, 7, generator=g, dtype=dtype), -1)[..., 0]
    old = logps + 0.3 * torch.randn(B, T, generator=g, dtype=dtype)
    old = old.clamp(max=-1e-3)
    ref = logps + 0.5 * torch.randn(B, T, generator=g, dtype=dtype)
    ref = ref.clamp(max=-1e-3)
    adv = torch.randn(B, generator=g, dtype=dtype)
    lengths = torch.tensor([5, 3, 1, 4, 5, 2])
    mask = torch.arange(T)[None, :] < lengths[:, None]
    return logps, old, ref, adv, mask


# ------------------------------------------------------------------ TRL's own _compute_loss
def _trl_loss(
    logps,
    old,
    ref,
    adv,
    mask,
    *,
    loss_type,
    beta,
    eps_low,
    eps_high,
    level,
    max_len=T,
    num_items=None,
    bias_correction=False,
):
    """Run trl.GRPOTrainer._compute_loss on a stub trainer; return (loss, d loss / d logps)."""
    trl_grpo = pytest.importorskip("trl.trainer.grpo_trainer")
    x = logps.detach().clone().requires_grad_(True)

    class _Acc:
        num_processes = 1
        sync_gradients = True

        def gather(self, t):
            return t

        def gather_for_metrics(self, t):
            return t

        def reduce(self, t, reduction="sum"):
            return t

    stub = SimpleNamespace(
        _get_per_token_logps_and_entropies=lambda *a, **k: (x, torch.zeros_like(x), None),
        top_entropy_quantile=1.0,
        off_policy_mask_threshold=None,
        importance_sampling_level=level,
        beta=beta,
        args=SimpleNamespace(
            use_bias_correction_kl=bias_correction, delta=None, steps_per_generation=1
        ),
        loss_type=loss_type,
        epsilon_low=eps_low,
        epsilon_high=eps_high,
        use_vllm=False,
        model=SimpleNamespace(training=True),
        current_gradient_accumulation_steps=1,
        accelerator=_Acc(),
        _entropy_bonus_enabled=False,
        aux_loss_enabled=False,
        _metrics={"train": defaultdict(list), "eval": defaultdict(list)},
        max_completion_length=max_len,
    )
    inputs = {
        "prompt_ids": torch.zeros(B, 1, dtype=torch.long),
        "prompt_mask": torch.ones(B, 1, dtype=torch.long),
        "completion_ids": torch.zeros(B, T, dtype=torch.long),
        "completion_mask": mask.long(),
        "advantages": adv,
        "old_per_token_logps": old,
        "ref_per_token_logps": ref,
        "num_items_in_batch": torch.tensor(
            float(mask.sum()) if num_items is None else float(num_items)
        ),
    }
    loss = trl_grpo.GRPOTrainer._compute_loss(stub, None, inputs)
    (grad,) = torch.autograd.grad(loss, x)
    return loss.detach(), grad


def _ours(logps, old, ref, adv, mask, **kw):
    x = logps.detach().clone().requires_grad_(True)
    loss = grpo_loss(x, old, ref, adv, mask, **kw)
    (grad,) = torch.autograd.grad(loss, x)
    return loss.detach(), grad


_TRL_CASES = [
    ("grpo", "sequence", {}, "token"),
    ("grpo", "sequence", {}, "sequence"),
    ("bnpo", "token", {}, "token"),
    ("dr_grpo", "max_length", {"max_length": 8}, "token"),
    ("dapo", "token", {"normalizer": 40.0}, "token"),
    ("luspo", "max_length", {"max_length": 1}, "sequence"),
    ("luspo", "max_length", {"max_length": 1}, "token"),
]  # TRL warns against sequence-level importance sampling with bnpo / dr_grpo / dapo


@pytest.mark.parametrize(("loss_type", "normalization", "extra", "level"), _TRL_CASES)
@pytest.mark.parametrize("beta", [0.0, 0.04, 0.1])
@pytest.mark.parametrize("bias_correction", [False, True])
def test_equals_trl_compute_loss(loss_type, normalization, extra, level, beta, bias_correction):
    """TRL's use_bias_correction_kl (its default) = kl_importance_weight."""
    logps, old, ref, adv, mask = _batch(1)
    want_loss, want_grad = _trl_loss(
        logps,
        old,
        ref,
        adv,
        mask,
        loss_type=loss_type,
        beta=beta,
        eps_low=0.2,
        eps_high=0.28,
        level=level,
        max_len=extra.get("max_length", T),
        num_items=extra.get("normalizer"),
        bias_correction=bias_correction,
    )
    got_loss, got_grad = _ours(
        logps,
        old,
        ref,
        adv,
        mask,
        clip_eps=0.2,
        clip_eps_high=0.28,
        kl_coef=beta,
        kl_estimator="k3",
        kl_in="loss",
        kl_importance_weight=bias_correction,
        importance_sampling_level=level,
        normalization=normalization,
        **extra,
    )
    torch.testing.assert_close(got_loss, want_loss, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(got_grad, want_grad, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("bias_correction", [False, True])
def test_equals_trl_on_policy_float32(bias_correction):
    """old_logps None = TRL's per_token_logps.detach() (one step per generation), float32; the
    importance weight is 1 in value there but not in gradient."""
    logps, _, ref, adv, mask = _batch(2, torch.float32)
    x = logps.detach().clone()
    want_loss, want_grad = _trl_loss(
        x,
        x.detach(),
        ref,
        adv,
        mask,
        loss_type="grpo",
        beta=0.1,
        eps_low=0.2,
        eps_high=0.2,
        level="token",
        bias_correction=bias_correction,
    )
    got_loss, got_grad = _ours(
        x, None, ref, adv, mask, kl_coef=0.1, kl_importance_weight=bias_correction
    )
    torch.testing.assert_close(got_loss, want_loss, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(got_grad, want_grad, rtol=1e-6, atol=1e-7)


# ------------------------------------------------------------------ independent reconstruction
def _reference(logps, old, ref, adv, mask, *, eps, beta, kind, kl_in, normalization):
    """Written from the GRPO formula in float64, token by token (slow loops on purpose)."""
    total, per_seq, count = 0.0, [], 0
    for i in range(B):
        seq_sum, seq_n = 0.0, 0
        for t in range(T):
            if not mask[i, t]:
                continue
            lp, lo, lr = float(logps[i, t]), float(old[i, t]), float(ref[i, t])
            log_r = lr - lp
            k = {"k1": -log_r, "k2": 0.5 * log_r**2, "k3": math.exp(log_r) - 1 - log_r}[kind]
            a = float(adv[i]) - (beta * k if kl_in == "reward" else 0.0)
            rho = math.exp(lp - lo)
            term = -min(rho * a, min(max(rho, 1 - eps), 1 + eps) * a)
            if kl_in == "loss":
                term += beta * k
            seq_sum += term
            seq_n += 1
        total += seq_sum
        count += seq_n
        per_seq.append(seq_sum / max(seq_n, 1))
    return sum(per_seq) / B if normalization == "sequence" else total / max(count, 1)


@pytest.mark.parametrize("kind", ["k1", "k2", "k3"])
@pytest.mark.parametrize("kl_in", ["loss", "reward"])
@pytest.mark.parametrize("normalization", ["sequence", "token"])
def test_matches_handwritten_reference(kind, kl_in, normalization):
    logps, old, ref, adv, mask = _batch(3)
    got = grpo_loss(
        logps,
        old,
        ref,
        adv,
        mask,
        clip_eps=0.2,
        kl_coef=0.3,
        kl_estimator=kind,
        kl_in=kl_in,
        normalization=normalization,
    )
    want = _reference(
        logps,
        old,
        ref,
        adv,
        mask,
        eps=0.2,
        beta=0.3,
        kind=kind,
        kl_in=kl_in,
        normalization=normalization,
    )
    assert float(got) == pytest.approx(want, rel=1e-12, abs=1e-14)


# ------------------------------------------------------------------ gradient semantics (exact)
K = 6


def _policy():
    g = torch.Generator().manual_seed(5)
    theta = torch.randn(K, generator=g, dtype=torch.float64).requires_grad_(True)
    ref = torch.log_softmax(torch.randn(K, generator=g, dtype=torch.float64), -1)
    return theta, ref


def _expected_kl_grad(kind, kl_in, clip_eps=0.2, weighted=False, old=None):
    """Σ_a π_old(a) ∇ loss(a): the exact expectation of the sampled-loss gradient on samples of
    π_old (log-probabilities ``old``; None: on-policy, π_old = sg[π_θ])."""
    theta, ref = _policy()
    logp = torch.log_softmax(theta, -1)
    per_token = grpo_loss(
        logp[:, None],
        None if old is None else old[:, None],
        ref[:, None],
        torch.zeros(K, dtype=torch.float64),
        None,
        clip_eps=clip_eps,
        kl_coef=1.0,
        kl_estimator=kind,
        kl_in=kl_in,
        kl_importance_weight=weighted,
        reduction="none",
    )
    sampler = logp.detach() if old is None else old
    expected = (sampler.exp() * per_token[:, 0]).sum()
    (g,) = torch.autograd.grad(expected, theta)
    return g


def _exact(which):
    theta, ref = _policy()
    logp = torch.log_softmax(theta, -1)
    p, pr = logp.exp(), ref.exp()
    value = {
        "reverse": (p * (logp - ref)).sum(),
        "forward": (pr * (ref - logp)).sum(),
        "half_log2": (p * 0.5 * (ref - logp) ** 2).sum(),
    }[which]
    (g,) = torch.autograd.grad(value, theta)
    return g


@pytest.mark.parametrize("clip_eps", [0.2, None])
def test_kl_in_loss_gradient_semantics(clip_eps):
    torch.testing.assert_close(
        _expected_kl_grad("k1", "loss", clip_eps),
        torch.zeros(K, dtype=torch.float64),
        atol=1e-14,
        rtol=0,
    )
    torch.testing.assert_close(_expected_kl_grad("k2", "loss", clip_eps), _exact("reverse"))
    torch.testing.assert_close(_expected_kl_grad("k3", "loss", clip_eps), _exact("forward"))
    assert not torch.allclose(_exact("reverse"), _exact("forward"), atol=1e-3)


@pytest.mark.parametrize("on_policy", [True, False])
def test_importance_weighted_kl_gradient_semantics(on_policy):
    """E_old[∇(ρ k)] = ∇E_θ[k]: k1 and k3 give the reverse-KL gradient, k2 ∇D_{½log²}, on samples
    of π_θ and of any other π_old (exact by enumeration)."""
    g = torch.Generator().manual_seed(11)
    old = None if on_policy else torch.log_softmax(torch.randn(K, generator=g).double(), -1)
    for kind, want in [("k1", "reverse"), ("k2", "half_log2"), ("k3", "reverse")]:
        got = _expected_kl_grad(kind, "loss", weighted=True, old=old)
        torch.testing.assert_close(got, _exact(want), rtol=1e-10, atol=1e-14)
    # unweighted, off-policy samples give neither: the bias the weight corrects
    if not on_policy:
        unweighted = _expected_kl_grad("k3", "loss", old=old)
        assert not torch.allclose(unweighted, _exact("reverse"), atol=1e-3)
        assert not torch.allclose(unweighted, _exact("forward"), atol=1e-3)


def test_kl_in_reward_gradient_semantics():
    torch.testing.assert_close(_expected_kl_grad("k1", "reward"), _exact("reverse"))
    torch.testing.assert_close(
        _expected_kl_grad("k3", "reward"), _exact("reverse") - _exact("forward")
    )
    torch.testing.assert_close(
        _expected_kl_grad("k2", "reward"), _exact("half_log2") - _exact("reverse")
    )


def test_straight_through_k3_value_k2_gradient():
    theta, ref = _policy()
    logp = torch.log_softmax(theta, -1)
    adv = torch.zeros(K, dtype=torch.float64)
    kw = {"kl_coef": 1.0, "reduction": "none"}
    st = grpo_loss(
        logp[:, None], None, ref[:, None], adv, kl_estimator="k3", kl_gradient="k2", **kw
    )
    k3 = grpo_loss(logp[:, None], None, ref[:, None], adv, kl_estimator="k3", **kw)
    torch.testing.assert_close(st, k3)
    (g,) = torch.autograd.grad((logp.detach().exp() * st[:, 0]).sum(), theta)
    torch.testing.assert_close(g, _exact("reverse"))


def test_reward_placement_kl_is_detached_and_enters_the_advantage():
    logps, _, ref, adv, mask = _batch(4)
    got = grpo_loss(
        logps,
        None,
        ref,
        adv,
        mask,
        kl_coef=0.5,
        kl_estimator="k1",
        kl_in="reward",
        reduction="none",
    )
    per_token_adv = adv[:, None] - 0.5 * (logps - ref)
    want = torch.where(mask, -per_token_adv, torch.zeros_like(per_token_adv))
    torch.testing.assert_close(got, want)


def test_policy_gradient_loss_is_reinforce_without_old_logps():
    theta, _ = _policy()
    logp = torch.log_softmax(theta, -1)
    adv = torch.linspace(-1, 1, K, dtype=torch.float64)
    loss = policy_gradient_loss(logp[:, None], adv, normalization="token")
    (g,) = torch.autograd.grad(loss, theta)
    (want,) = torch.autograd.grad(-(adv * torch.log_softmax(theta, -1)).mean(), theta)
    torch.testing.assert_close(g, want)


def test_clipping_stops_gradient_outside_the_trust_region():
    logps = torch.log(torch.tensor([[0.5], [0.5]], dtype=torch.float64)).requires_grad_(True)
    old = torch.log(torch.tensor([[0.3], [0.3]], dtype=torch.float64))  # ratio 5/3 > 1.2
    adv = torch.tensor([1.0, -1.0], dtype=torch.float64)
    loss = grpo_loss(logps, old, None, adv, reduction="sum")
    (g,) = torch.autograd.grad(loss, logps)
    assert g[0, 0] == 0.0  # positive advantage, ratio above 1+ε: clipped
    assert g[1, 0] == pytest.approx(5 / 3)  # negative advantage: the unclipped term is the min


def test_batched_equals_rowwise_and_no_cross_talk():
    logps, old, ref, adv, mask = _batch(6)
    full = grpo_loss(logps, old, ref, adv, mask, kl_coef=0.1, reduction="none")
    for i in range(B):
        row = grpo_loss(
            logps[i : i + 1],
            old[i : i + 1],
            ref[i : i + 1],
            adv[i : i + 1],
            mask[i : i + 1],
            kl_coef=0.1,
            reduction="none",
        )
        torch.testing.assert_close(full[i : i + 1], row)


@pytest.mark.parametrize("level", ["token", "sequence"])
@pytest.mark.parametrize("weighted", [False, True])
def test_padding_values_do_not_leak_and_full_mask_gives_zero(level, weighted):
    logps, old, ref, adv, mask = _batch(7)
    dirty = torch.where(mask, logps, torch.full_like(logps, float("nan")))
    kw = {"kl_coef": 0.1, "kl_importance_weight": weighted, "importance_sampling_level": level}
    a = grpo_loss(logps, old, ref, adv, mask, **kw)
    b = grpo_loss(dirty, old, ref, adv, mask, **kw)
    torch.testing.assert_close(a, b)
    x = logps.clone().requires_grad_(True)
    zero = grpo_loss(x, old, ref, adv, torch.zeros_like(mask), **kw)
    (g,) = torch.autograd.grad(zero, x)
    assert float(zero.detach()) == 0.0 and torch.all(g == 0)


def test_nan_in_kept_token_propagates():
    logps, old, ref, adv, mask = _batch(8)
    logps[0, 0] = float("nan")
    assert torch.isnan(grpo_loss(logps, old, ref, adv, mask, kl_coef=0.1))


def test_float_mask_like_trl_completion_mask():
    logps, old, ref, adv, mask = _batch(9)
    a = grpo_loss(logps, old, ref, adv, mask, kl_coef=0.1)
    b = grpo_loss(logps, old, ref, adv, mask.long(), kl_coef=0.1)
    torch.testing.assert_close(a, b)


def test_aggregate_normalizations():
    loss = torch.tensor([[1.0, 2.0, 3.0], [4.0, 0.0, 0.0]], dtype=torch.float64)
    mask = torch.tensor([[True, True, True], [True, False, False]])
    assert float(aggregate_token_loss(loss, mask, normalization="sequence")) == 3.0  # (2+4)/2
    assert float(aggregate_token_loss(loss, mask, normalization="token")) == 2.5  # 10/4
    assert float(aggregate_token_loss(loss, mask, normalization="max_length")) == 10 / 6
    assert float(aggregate_token_loss(loss, mask, normalization="max_length", max_length=5)) == 1
    assert float(aggregate_token_loss(loss, mask, normalization="token", normalizer=20)) == 0.5
    assert float(aggregate_token_loss(loss, mask, reduction="sum")) == 10.0


# ------------------------------------------------------------------ advantages
def _trl_advantages(rewards, g, scale):
    """TRL 1.16's sum_then_normalize branch, with TRL's own nanstd."""
    from trl.trainer.utils import nanstd

    mean = torch.nanmean(rewards.view(-1, g), dim=1).repeat_interleave(g, dim=0)
    if scale == "batch":
        std = nanstd(rewards).expand_as(rewards)
    else:
        std = nanstd(rewards.view(-1, g), dim=1).repeat_interleave(g, dim=0)
    adv = rewards - mean
    return adv if scale == "none" else adv / (std + 1e-4)


@pytest.mark.parametrize("scale", ["group", "batch", "none"])
def test_group_advantages_equal_trl(scale):
    pytest.importorskip("trl")
    rewards = torch.tensor([1.0, 0.0, 0.5, 0.5, 0.2, 0.9, 3.0, -1.0, 0.0], dtype=torch.float64)
    got = group_normalized_advantages(rewards, 3, scale=scale)
    torch.testing.assert_close(got, _trl_advantages(rewards, 3, scale))


def test_group_advantages_bool_scale_and_properties():
    r = torch.randn(12, dtype=torch.float64)
    a = group_normalized_advantages(r, 4, scale=True, eps=0.0).view(3, 4)
    torch.testing.assert_close(a.mean(-1), torch.zeros(3, dtype=torch.float64), atol=1e-12, rtol=0)
    torch.testing.assert_close(a.std(-1), torch.ones(3, dtype=torch.float64))
    b = group_normalized_advantages(r, 4, scale=False)
    torch.testing.assert_close(
        b.view(3, 4).sum(-1), torch.zeros(3, dtype=torch.float64), atol=1e-12, rtol=0
    )
    flat = group_normalized_advantages(torch.ones(4), 2, eps=0.0)
    assert torch.all(flat == 0)


# ------------------------------------------------------------------ adaptive KL controller
def test_adaptive_kl_controller_follows_ziegler_update():
    c = AdaptiveKLController(0.2, target=6.0, horizon=10000)
    beta = 0.2
    for kl, n in [(12.0, 256), (6.6, 128), (1.0, 512), (6.0, 64)]:
        err = min(max(kl / 6.0 - 1, -0.2), 0.2)
        beta *= 1 + err * n / 10000
        assert c.update(kl, n) == pytest.approx(beta, rel=1e-15)
    assert c.value == pytest.approx(beta)


def test_adaptive_kl_controller_steers_kl_to_target():
    """Closed loop: with KL(β) = 1/β (a tilted-policy-like response), β converges to 1/target."""
    c = AdaptiveKLController(1.0, target=4.0, horizon=100)
    for _ in range(2000):
        c.update(1.0 / c.value, n_steps=10)
    assert c.value == pytest.approx(0.25, rel=1e-3)


# ------------------------------------------------------------------ bad input
@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"kl_estimator": "k4"}, "kl_estimator"),
        ({"kl_in": "advantage"}, "kl_in"),
        ({"normalization": "batch"}, "normalization"),
        ({"kl_coef": -1.0}, "kl_coef"),
        ({"clip_eps": 1.5}, "clip_eps"),
        ({"importance_sampling_level": "seq"}, "importance_sampling_level"),
        ({"kl_in": "reward", "kl_gradient": "k2", "kl_coef": 0.1}, "kl_gradient"),
        ({"normalizer": 3.0}, "normalizer"),
        ({"kl_importance_weight": 1}, "kl_importance_weight"),
        ({"kl_importance_weight": True, "kl_in": "reward"}, "kl_importance_weight.*kl_in='loss'"),
        ({"kl_importance_weight": True, "kl_gradient": "k2"}, "kl_importance_weight.*kl_gradient"),
        ({"reduction": "avg"}, "reduction"),
    ],
)
def test_bad_options(kwargs, match):
    logps, old, ref, adv, mask = _batch()
    with pytest.raises(ValueError, match=match):
        grpo_loss(logps, old, ref, adv, mask, **kwargs)


def test_bad_tensors():
    logps, old, ref, adv, mask = _batch()
    with pytest.raises(ValueError, match="old_logps"):
        grpo_loss(logps, old[:, :2], ref, adv, mask)
    with pytest.raises(ValueError, match="advantages"):
        grpo_loss(logps, old, ref, adv[:2], mask)
    with pytest.raises(ValueError, match="ref_logps"):
        grpo_loss(logps, old, None, adv, mask, kl_coef=0.1)
    with pytest.raises(ValueError, match="mask"):
        grpo_loss(logps, old, ref, adv, mask[:, :2])
    with pytest.raises(ValueError, match="mask"):
        grpo_loss(logps, old, ref, adv, mask.double() * 0.5)
    with pytest.raises(ValueError, match=r"logps.*\(batch, tokens\)"):
        grpo_loss(logps[0], old[0], ref[0], adv[:1], mask[0])
    positive = logps.clone()
    positive[1, 0] = 0.5
    with pytest.raises(ValueError, match=r"`logps` must hold log-probabilities.*\(1, 0\)"):
        grpo_loss(positive, old, ref, adv, mask)
    positive[1, 0], positive[2, 4] = logps[1, 0], 0.5  # (2, 4) is padding: not checked
    grpo_loss(positive, old, ref, adv, mask)


def test_bad_advantage_and_controller_arguments():
    with pytest.raises(ValueError, match="group_size"):
        group_normalized_advantages(torch.zeros(5), 2)
    with pytest.raises(ValueError, match="scale"):
        group_normalized_advantages(torch.zeros(4), 2, scale="prompt")
    with pytest.raises(ValueError, match="rewards"):
        group_normalized_advantages(torch.zeros(2, 2), 2)
    with pytest.raises(ValueError, match="target"):
        AdaptiveKLController(0.1, target=0.0, horizon=10)
    with pytest.raises(ValueError, match="current_kl"):
        AdaptiveKLController(0.1, target=1.0, horizon=10).update(float("nan"), 1)

"""LLaVA-MoD objectives against hand-written float64 references."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from divergent.objectives.moe_distill import (
    MimicDistillationLoss,
    load_balancing_loss,
    mimic_distillation_loss,
    preference_distillation_loss,
    sequence_log_probs,
)


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max())
    return e / e.sum()


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def test_mimic_matches_reference() -> None:
    g = torch.Generator().manual_seed(0)
    s = torch.randn(2, 3, 9, generator=g, dtype=torch.float64)
    t = torch.randn(2, 3, 9, generator=g, dtype=torch.float64) * 2
    y = torch.tensor([[1, 2, -100], [0, -100, 8]])
    got = mimic_distillation_loss(s, t, y, align_weight=0.7, ce_weight=0.4, reduction="none")
    refs = []
    for i in range(2):
        for j in range(3):
            if y[i, j] == -100:
                assert got[i, j] == 0
                continue
            p, q = _softmax(t[i, j].numpy()), _softmax(s[i, j].numpy())
            soft = -math.fsum(pi * math.log(qi) for pi, qi in zip(p, q))
            ref = 0.7 * soft + 0.4 * -math.log(q[y[i, j]])
            assert got[i, j].item() == pytest.approx(ref, abs=1e-12)
            refs.append(ref)
    assert mimic_distillation_loss(s, t, y, align_weight=0.7, ce_weight=0.4).item() == (
        pytest.approx(sum(refs) / 4, abs=1e-12)
    )


def test_mimic_ignores_zero_teacher_mass() -> None:
    t = torch.tensor([[0.0, float("-inf"), 1.0]])
    s = torch.tensor([[0.5, -2.0, 0.0]], requires_grad=True)
    loss = mimic_distillation_loss(s, t, ce_weight=0.0)
    p = torch.tensor([0.0, 1.0]).softmax(-1)
    ref = -(p * s.detach()[0, [0, 2]].double().sub(s.detach()[0].double().logsumexp(-1))).sum()
    assert torch.isfinite(loss) and loss.item() == pytest.approx(ref.item(), abs=1e-6)
    loss.backward()
    assert torch.isfinite(s.grad).all()


def test_load_balancing_matches_reference() -> None:
    g = torch.Generator().manual_seed(1)
    r = torch.randn(3, 5, 4, generator=g, dtype=torch.float64)
    mask = torch.ones(3, 5, dtype=torch.bool)
    mask[0, :2] = False
    got = load_balancing_loss(r, 2, mask=mask)
    rows = [r[i, j].numpy() for i in range(3) for j in range(5) if mask[i, j]]
    probs = np.stack([_softmax(x) for x in rows])
    counts = np.zeros(4)
    for p in probs:
        for e in np.argsort(-p)[:2]:
            counts[e] += 1
    ref = 4 * float(np.sum(counts / (2 * len(rows)) * probs.mean(0)))
    assert got.item() == pytest.approx(ref, abs=1e-12)
    # Hugging Face Mixtral's load_balancing_loss_func is top_k times ours (one layer, no mask)
    hf = pytest.importorskip("transformers.models.mixtral.modeling_mixtral")
    flat = r.reshape(-1, 4)
    theirs = hf.load_balancing_loss_func((flat,), num_experts=4, top_k=2)
    assert theirs.item() == pytest.approx(2 * load_balancing_loss(flat, 2).item(), abs=1e-6)


def test_load_balancing_gradient_and_empty() -> None:
    r = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: load_balancing_loss(x, 1), (r,))
    empty = load_balancing_loss(r, 1, mask=torch.zeros(6, dtype=torch.bool))
    empty.backward()
    assert empty.item() == 0.0 and torch.count_nonzero(r.grad) == 0


def test_sequence_log_probs() -> None:
    g = torch.Generator().manual_seed(2)
    z = torch.randn(2, 4, 6, generator=g, dtype=torch.float64)
    y = torch.tensor([[1, 2, -100, 5], [-100, -100, 0, 3]])
    got = sequence_log_probs(z, y)
    for i in range(2):
        ref = math.fsum(
            math.log(_softmax(z[i, j].numpy())[y[i, j]]) for j in range(4) if y[i, j] != -100
        )
        assert got[i].item() == pytest.approx(ref, abs=1e-12)


@pytest.mark.parametrize("loss_type", ["sigmoid", "kto_pair"])
def test_preference_matches_reference(loss_type: str) -> None:
    g = torch.Generator().manual_seed(3)
    s_w, s_l, t_w, t_l = (
        -torch.randn(5, generator=g, dtype=torch.float64).abs() * 3 for _ in range(4)
    )
    got = preference_distillation_loss(
        s_w, s_l, t_w, t_l, beta=0.4, loss_type=loss_type, reduction="none"
    )
    rho_w = (s_w - t_w).tolist()
    rho_l = (s_l - t_l).tolist()
    kw, kl = max(0.0, sum(rho_w) / 5), max(0.0, sum(rho_l) / 5)
    for i in range(5):
        if loss_type == "sigmoid":
            ref = -math.log(_sigmoid(0.4 * (rho_w[i] - rho_l[i])))
        else:
            ref = 0.5 * (
                (1 - _sigmoid(0.4 * (rho_w[i] - kl))) + (1 - _sigmoid(0.4 * (kw - rho_l[i])))
            )
        assert got[i].item() == pytest.approx(ref, abs=1e-12)
    mean = preference_distillation_loss(s_w, s_l, t_w, t_l, beta=0.4, loss_type=loss_type)
    assert mean.item() == pytest.approx(got.mean().item(), abs=1e-12)


def test_preference_teacher_as_reference_is_invariant_to_shared_shift() -> None:
    """Only the student-minus-teacher log-ratios matter: adding c to both sides of a response
    leaves the loss unchanged (log-probabilities stay <= 0)."""
    s_w, s_l = torch.tensor([-3.0, -1.0]), torch.tensor([-4.0, -2.5])
    t_w, t_l = torch.tensor([-3.5, -2.0]), torch.tensor([-3.0, -2.0])
    a = preference_distillation_loss(s_w, s_l, t_w, t_l)
    b = preference_distillation_loss(s_w - 7, s_l - 2, t_w - 7, t_l - 2)
    assert a.item() == pytest.approx(b.item(), abs=1e-6)


def test_bad_input() -> None:
    v = torch.zeros(3)
    with pytest.raises(ValueError, match="`beta`"):
        preference_distillation_loss(v, v, v, v, beta=0.0)
    with pytest.raises(ValueError, match="`loss_type`"):
        preference_distillation_loss(v, v, v, v, loss_type="ipo")
    with pytest.raises(ValueError, match="`teacher_rejected_logps`"):
        preference_distillation_loss(v, v, v, torch.zeros(2))
    with pytest.raises(ValueError, match="positive log-probability"):
        preference_distillation_loss(v, v + 1, v, v, loss_type="kto_pair")
    with pytest.raises(ValueError, match="`top_k`"):
        load_balancing_loss(torch.zeros(2, 3), 4)
    with pytest.raises(ValueError, match="`labels`"):
        sequence_log_probs(torch.zeros(1, 2, 3), torch.tensor([[0, 3]]))
    with pytest.raises(ValueError, match="`labels`"):
        sequence_log_probs(torch.zeros(1, 2, 3), torch.zeros(1, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="`align_weight`"):
        mimic_distillation_loss(torch.zeros(1, 3), torch.zeros(1, 3), align_weight=-1)


def test_sigmoid_is_dpo_with_the_teacher_as_reference_and_stable() -> None:
    s_w = torch.tensor([-300.0, -2.0], dtype=torch.float64)
    s_l = torch.tensor([-1.0, -900.0], dtype=torch.float64)
    t_w = torch.tensor([-5.0, -3.0], dtype=torch.float64)
    t_l = torch.tensor([-5.0, -3.0], dtype=torch.float64)
    got = preference_distillation_loss(s_w, s_l, t_w, t_l, beta=1.0, reduction="none")
    x = (s_w - t_w) - (s_l - t_l)  # [-299, 898]
    assert got[0].item() == pytest.approx(299.0, rel=1e-12)  # -log σ(-299) ≈ 299
    assert got[1].item() == pytest.approx(math.log1p(math.exp(-x[1].item())), abs=1e-300)


def test_module_form_matches_function() -> None:
    s, t, y = torch.randn(4, 6), torch.randn(4, 6), torch.tensor([0, 1, 2, 3])
    module = MimicDistillationLoss(align_weight=0.5)
    torch.testing.assert_close(module(s, t, y), mimic_distillation_loss(s, t, y, align_weight=0.5))
    assert module.needs_labels and not MimicDistillationLoss(ce_weight=0.0).needs_labels

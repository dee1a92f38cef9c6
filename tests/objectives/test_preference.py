"""f-DPO and f-divergence SFT (divergent.objectives.preference).

The TRL reference is TRL 1.16's own code: ``DPOTrainer._compute_loss`` called unbound on a
stub trainer (the attributes it reads) and a stub model that returns the per-token
log-probabilities we choose, so the loss, its f-divergence scores and its gradients come from
TRL's source, not from a re-derivation.
"""

from __future__ import annotations

import math
from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from divergent.categorical import get_divergence, make_f_divergence
from divergent.objectives.preference import (
    f_divergences_for_preferences,
    f_dpo_loss,
    f_dpo_score,
    sft_f_divergence_loss,
)

trl_dpo = pytest.importorskip("trl.trainer.dpo_trainer")


def _trl_loss(
    logps: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor],
    *,
    f_type: str,
    beta: float,
    loss_type: str = "sigmoid",
    alpha: float = 0.5,
    lengths: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(loss, d loss/d chosen, d loss/d rejected) from TRL's DPOTrainer._compute_loss."""
    pc, pr, rc, rr = logps
    batch = pc.shape[0]
    width = 6
    seq = torch.cat([pc, pr]).detach().clone().requires_grad_(True)
    per_token = F.pad(seq.unsqueeze(1), (0, width - 1))  # the whole log-prob on token 0
    if lengths is None:
        counts = torch.full((2 * batch,), 3)
    else:
        counts = torch.cat(lengths).long()
    completion_mask = (torch.arange(width + 1) >= 1) & (torch.arange(width + 1) <= counts[:, None])
    completion_mask = completion_mask.long()

    def model(**_: object) -> SimpleNamespace:
        zeros = torch.zeros(2 * batch, width, dtype=seq.dtype)
        return SimpleNamespace(
            log_probs=per_token,
            entropy=zeros,
            mean_logits=zeros,
            is_top1=torch.zeros(2 * batch, width, dtype=torch.bool),
        )

    trainer = SimpleNamespace(
        model=SimpleNamespace(training=True),
        accelerator=SimpleNamespace(
            device="cpu", gather_for_metrics=lambda x: x, gather=lambda x: x
        ),
        aux_loss_enabled=False,
        ld_alpha=None,
        precompute_ref_logps=True,
        f_divergence_type=f_type,
        f_alpha_divergence_coef=alpha,
        loss_types=[loss_type],
        loss_weights=[1.0],
        beta=beta,
        use_weighting=False,
        label_smoothing=0.0,
        _metrics={"train": defaultdict(list), "eval": defaultdict(list)},
        _total_train_tokens=0,
        _tp_size=1,
    )
    inputs = {
        "input_ids": torch.ones(2 * batch, width + 1, dtype=torch.long),
        "attention_mask": torch.ones(2 * batch, width + 1, dtype=torch.long),
        "completion_mask": completion_mask,
        "ref_chosen_logps": rc,
        "ref_rejected_logps": rr,
    }
    loss = trl_dpo.DPOTrainer._compute_loss(trainer, model, inputs, False)
    (grad,) = torch.autograd.grad(loss, seq)
    return loss.detach(), grad[:batch], grad[batch:]


def _batch(seed: int, dtype: torch.dtype, batch: int = 16, spread: float = 2.0):
    g = torch.Generator().manual_seed(seed)
    ref = -torch.rand(2, batch, generator=g, dtype=dtype) * 8 - 1
    pol = ref + spread * torch.randn(2, batch, generator=g, dtype=dtype)
    pol = torch.clamp(pol, max=0.0)
    return pol[0], pol[1], ref[0], ref[1]


def _ours(logps, **kwargs):
    pc = logps[0].detach().clone().requires_grad_(True)
    pr = logps[1].detach().clone().requires_grad_(True)
    loss = f_dpo_loss(pc, pr, logps[2], logps[3], **kwargs)
    gc, gr = torch.autograd.grad(loss, (pc, pr))
    return loss.detach(), gc, gr


# (TRL f_divergence_type, TRL alpha, our divergence, our params, our beta / TRL beta)
MAPPING = [
    ("reverse_kl", 0.5, "reverse_kl", {}, 1.0),
    ("forward_kl", 0.5, "kl", {}, 1.0),
    ("js_divergence", 0.5, "js", {"beta": 0.5}, 2.0),
    ("alpha_divergence", 0.5, "alpha", {"alpha": 0.5}, 1.0),
    ("alpha_divergence", 0.2, "alpha", {"alpha": 0.8}, 1.0),
    ("alpha_divergence", 0.8, "alpha", {"alpha": 0.2}, 1.0),
    ("alpha_divergence", 0.0, "alpha", {"alpha": 1.0}, 1.0),
    ("alpha_divergence", 1.0, "alpha", {"alpha": 0.0}, 1.0),
]


@pytest.mark.parametrize("loss_type", ["sigmoid", "hinge", "ipo"])
@pytest.mark.parametrize(("f_type", "trl_alpha", "name", "params", "beta_factor"), MAPPING)
def test_equals_trl_dpo_trainer_loss_and_gradients(
    f_type: str, trl_alpha: float, name: str, params: dict, beta_factor: float, loss_type: str
) -> None:
    # TRL's alpha path only knows float16/bfloat16/float32, so compare in float32
    logps = _batch(1, torch.float32)
    beta = 0.3
    lengths = None
    if loss_type == "ipo":  # TRL's IPO divides each score by its completion length
        g = torch.Generator().manual_seed(3)
        lengths = tuple(torch.randint(1, 6, (2, 16), generator=g).float())
    ref_loss, ref_gc, ref_gr = _trl_loss(
        logps, f_type=f_type, beta=beta, loss_type=loss_type, alpha=trl_alpha, lengths=lengths
    )
    kwargs = dict(
        divergence=name, beta=beta * beta_factor, loss_type=loss_type, divergence_params=params
    )
    # IPO is not invariant to rescaling the score: with TRL's 2·JSD score, TRL's IPO loss at β
    # equals 4 × ours at 2β ((2Δ − 1/(2β))² = 4(Δ − 1/(4β))²); every other case is equal
    factor = 4.0 if loss_type == "ipo" and beta_factor == 2.0 else 1.0
    if loss_type == "ipo":
        kwargs.update(chosen_lengths=lengths[0], rejected_lengths=lengths[1])
    loss, gc, gr = (factor * x for x in _ours(logps, **kwargs))
    assert float(loss) == pytest.approx(float(ref_loss), rel=2e-6, abs=1e-6)
    assert torch.allclose(gc, ref_gc, rtol=1e-5, atol=1e-7)
    assert torch.allclose(gr, ref_gr, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize(
    ("f_type", "name", "params", "beta_factor"),
    [
        ("reverse_kl", "reverse_kl", {}, 1.0),
        ("forward_kl", "kl", {}, 1.0),
        ("js_divergence", "js", {"beta": 0.5}, 2.0),
    ],
)
def test_equals_trl_in_float64_and_sigmoid_norm(
    f_type: str, name: str, params: dict, beta_factor: float
) -> None:
    logps = _batch(2, torch.float64)
    ref_loss, ref_gc, ref_gr = _trl_loss(logps, f_type=f_type, beta=0.1)
    loss, gc, gr = _ours(logps, divergence=name, beta=0.1 * beta_factor, divergence_params=params)
    assert float(loss) == pytest.approx(float(ref_loss), rel=1e-12, abs=1e-14)
    assert torch.allclose(gc, ref_gc, rtol=1e-10, atol=1e-14)
    assert torch.allclose(gr, ref_gr, rtol=1e-10, atol=1e-14)
    # TRL's sigmoid_norm = our sigmoid with the completion lengths
    g = torch.Generator().manual_seed(5)
    lengths = tuple(torch.randint(1, 6, (2, 16), generator=g).double())
    ref_norm = _trl_loss(logps, f_type=f_type, beta=0.1, loss_type="sigmoid_norm", lengths=lengths)
    ours_norm = _ours(
        logps,
        divergence=name,
        beta=0.1 * beta_factor,
        chosen_lengths=lengths[0],
        rejected_lengths=lengths[1],
        divergence_params=params,
    )
    assert float(ours_norm[0]) == pytest.approx(float(ref_norm[0]), rel=1e-12)
    assert torch.allclose(ours_norm[1], ref_norm[1], rtol=1e-10)


def test_reverse_kl_is_hand_written_dpo() -> None:
    pc, pr, rc, rr = _batch(4, torch.float64)
    beta = 0.25
    expected = -torch.log(torch.sigmoid(beta * ((pc - rc) - (pr - rr))))
    got = f_dpo_loss(pc, pr, rc, rr, beta=beta, reduction="none")
    assert torch.allclose(got, expected, rtol=1e-12)
    # conservative DPO
    eps = 0.1
    margin = beta * ((pc - rc) - (pr - rr))
    cdpo = -(1 - eps) * torch.log(torch.sigmoid(margin)) - eps * torch.log(torch.sigmoid(-margin))
    got = f_dpo_loss(pc, pr, rc, rr, beta=beta, label_smoothing=eps, reduction="none")
    assert torch.allclose(got, cdpo, rtol=1e-12)


@pytest.mark.parametrize(
    ("name", "params"),
    [("js", {"beta": 0.5}), ("js", {"beta": 0.2}), ("alpha", {"alpha": 0.3}), ("kl", {})],
)
def test_named_scores_equal_the_generic_perspective_derivative(name: str, params: dict) -> None:
    """ψ(u) = g(1/u) − g'(1/u)/u through the registered generator (a user Divergence built
    from it takes the generic path) equals the stable closed forms up to a constant."""
    generic = make_f_divergence(get_divergence(name).f_generator(**params))
    log_u = torch.linspace(-4, 4, 41, dtype=torch.float64)
    named = f_dpo_score(log_u, divergence=name, **params)
    other = f_dpo_score(log_u, divergence=generic)
    shift = other - named
    assert torch.allclose(shift, shift[0].expand_as(shift), atol=1e-10)
    # and the perspective derivative by finite differences of f(u) = u g(1/u)
    g = get_divergence(name).f_generator(**params).f
    u = log_u.exp()
    h = 1e-6
    fd = ((u + h) * g(1 / (u + h)) - (u - h) * g(1 / (u - h))) / (2 * h)
    assert torch.allclose(other, fd - fd[20], rtol=1e-6, atol=1e-6)  # ψ(1) = 0 at log u = 0


def test_every_registered_f_divergence_runs_and_gradcheck() -> None:
    logps = [x.requires_grad_(True) for x in _batch(6, torch.float64, batch=4, spread=0.5)]
    for name in f_divergences_for_preferences():
        loss = f_dpo_loss(*logps, divergence=name, beta=0.5)
        assert torch.isfinite(loss), name
    for name, params in [("kl", {}), ("js", {"beta": 0.3}), ("hellinger", {})]:
        assert torch.autograd.gradcheck(
            lambda a, b, n=name, p=params: f_dpo_loss(
                a, b, logps[2], logps[3], divergence=n, divergence_params=p
            ),
            (logps[0], logps[1]),
        )


def test_reductions_mask_and_nan() -> None:
    pc, pr, rc, rr = _batch(7, torch.float32, batch=5)
    rows = f_dpo_loss(pc, pr, rc, rr, reduction="none")
    assert rows.shape == (5,)
    assert torch.allclose(f_dpo_loss(pc, pr, rc, rr, reduction="sum"), rows.sum())
    assert torch.allclose(f_dpo_loss(pc, pr, rc, rr), rows.mean())
    mask = torch.tensor([True, False, True, True, False])
    assert torch.allclose(f_dpo_loss(pc, pr, rc, rr, mask=mask), rows[mask].mean())
    nan_pc = pc.clone()
    nan_pc[2] = math.nan
    out = f_dpo_loss(nan_pc, pr, rc, rr, reduction="none")
    assert torch.isnan(out[2]) and torch.isfinite(out[[0, 1, 3, 4]]).all()
    batched = f_dpo_loss(pc.reshape(1, 5), pr.reshape(1, 5), rc.reshape(1, 5), rr.reshape(1, 5))
    assert torch.allclose(batched, rows.mean())


def test_bad_inputs() -> None:
    pc, pr, rc, rr = _batch(8, torch.float32, batch=3)
    not_f = r"`divergence`='renyi' is not an f-divergence.*allowed: .*reverse_kl"
    with pytest.raises(ValueError, match=not_f):
        f_dpo_loss(pc, pr, rc, rr, divergence="renyi")
    with pytest.raises(ValueError, match="`divergence`"):
        f_dpo_loss(pc, pr, rc, rr, divergence="no_such_divergence")
    with pytest.raises(ValueError, match="`ref_rejected_logps` has shape"):
        f_dpo_loss(pc, pr, rc, rr[:2])
    with pytest.raises(ValueError, match="`policy_chosen_logps` holds a positive"):
        f_dpo_loss(pc.abs() + 0.5, pr, rc, rr)
    with pytest.raises(ValueError, match="`beta`"):
        f_dpo_loss(pc, pr, rc, rr, beta=0.0)
    with pytest.raises(ValueError, match="`loss_type`"):
        f_dpo_loss(pc, pr, rc, rr, loss_type="kto")
    with pytest.raises(ValueError, match="`label_smoothing`"):
        f_dpo_loss(pc, pr, rc, rr, label_smoothing=0.5)
    with pytest.raises(ValueError, match="`label_smoothing`"):
        f_dpo_loss(pc, pr, rc, rr, label_smoothing=0.1, loss_type="ipo")
    with pytest.raises(ValueError, match="`chosen_lengths`"):
        f_dpo_loss(pc, pr, rc, rr, chosen_lengths=torch.zeros(3))
    with pytest.raises(ValueError, match="`reduction`"):
        f_dpo_loss(pc, pr, rc, rr, reduction="avg")
    with pytest.raises(ValueError, match="unknown parameter"):
        f_dpo_loss(pc, pr, rc, rr, divergence="kl", alpha=0.3)
    with pytest.raises(ValueError, match="`ref_logps`"):
        sft_f_divergence_loss(pc, rc[:2])
    with pytest.raises(ValueError, match="`divergence_params`"):
        f_dpo_loss(pc, pr, rc, rr, divergence="alpha", divergence_params={"alpha": 0.2}, alpha=0.3)
    js_default = f_dpo_loss(pc, pr, rc, rr, divergence="js")
    js_half = f_dpo_loss(pc, pr, rc, rr, divergence="js", divergence_params={"beta": 0.5})
    assert torch.equal(js_default, js_half)


def test_sft_reverse_kl_is_maximum_likelihood_and_others_keep_the_reference() -> None:
    lp = (-torch.rand(6, dtype=torch.float64) * 5).requires_grad_(True)
    ref = -torch.rand(6, dtype=torch.float64) * 5
    beta = 0.7
    loss = sft_f_divergence_loss(lp, ref, beta=beta)
    (grad,) = torch.autograd.grad(loss, lp)
    nll = -lp.mean()
    (nll_grad,) = torch.autograd.grad(nll, lp)
    assert torch.allclose(grad, beta * nll_grad, rtol=1e-14)
    # the difference to β·NLL is a constant in the policy: −β E[log π_ref]
    assert float((loss - beta * nll).detach()) == pytest.approx(float(beta * ref.mean()), abs=1e-12)
    # forward KL: per-sample weight 1/u = π_ref/π (the reference stays in the gradient)
    loss_kl = sft_f_divergence_loss(lp, ref, divergence="kl", beta=beta, reduction="sum")
    (grad_kl,) = torch.autograd.grad(loss_kl, lp)
    assert torch.allclose(grad_kl, -beta * torch.exp(ref - lp.detach()), rtol=1e-12)
    # JS(β_js): weight β_js(1−β_js)/(β_js + (1−β_js)u)
    b = 0.5
    loss_js = sft_f_divergence_loss(lp, ref, divergence="js", beta=beta, reduction="sum")
    (grad_js,) = torch.autograd.grad(loss_js, lp)
    u = torch.exp(lp.detach() - ref)
    assert torch.allclose(grad_js, -beta * b * (1 - b) / (b + (1 - b) * u), rtol=1e-12)


def test_user_generator_needs_an_analytic_derivative() -> None:
    pc, pr, rc, rr = _batch(9, torch.float64, batch=4)
    # the reverse-KL generator −log t given by hand, with its derivative: DPO exactly
    user = make_f_divergence(lambda t: -torch.log(t), f_prime=lambda t: -1.0 / t)
    assert torch.allclose(
        f_dpo_loss(pc, pr, rc, rr, divergence=user), f_dpo_loss(pc, pr, rc, rr), rtol=1e-12
    )
    # derivative omitted: refused (an autograd f' would be detached: no gradient to the policy)
    no_derivative = lambda t: (t - 1.0) ** 2 / (t + 1.0)  # noqa: E731 (a generator callable)
    with pytest.raises(ValueError, match="no analytic derivative"):
        f_dpo_loss(pc, pr, rc, rr, divergence=no_derivative)


@pytest.mark.parametrize("position", range(4))
def test_integer_log_probabilities_name_the_argument_and_dtype(position: int) -> None:
    names = [
        "policy_chosen_logps",
        "policy_rejected_logps",
        "ref_chosen_logps",
        "ref_rejected_logps",
    ]
    args = list(_batch(8, torch.float32, batch=3))
    args[position] = torch.zeros(3, dtype=torch.long)
    with pytest.raises(ValueError, match=rf"`{names[position]}` must be a float.*torch\.int64"):
        f_dpo_loss(*args)


def test_integer_inputs_of_the_score_and_sft_name_the_dtype() -> None:
    lp = torch.full((3,), -1.0)
    ints = torch.zeros(3, dtype=torch.int32)
    with pytest.raises(ValueError, match=r"`log_ratio` must be a float tensor.*torch\.int32"):
        f_dpo_score(ints)
    with pytest.raises(ValueError, match=r"`policy_logps` must be a float.*torch\.int32"):
        sft_f_divergence_loss(ints, lp)
    with pytest.raises(ValueError, match=r"`ref_logps` must be a float.*got list"):
        sft_f_divergence_loss(lp, [-1.0, -1.0, -1.0])

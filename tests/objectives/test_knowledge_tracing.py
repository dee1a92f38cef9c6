"""PSI-KT pieces: the OU transition, the state-space ELBO and the learner-type KL.

References: the OU moment ODEs solved by scipy, an Euler–Maruyama simulation, Gauss–Hermite
quadrature of the ELBO and of log p(y) (float64, numpy), scipy's entropy, gradcheck.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from numpy.polynomial.hermite_e import hermegauss
from scipy.integrate import solve_ivp
from scipy.stats import entropy as scipy_entropy
from torch.distributions import Normal

from divergent.objectives.knowledge_tracing import (
    knowledge_tracing_elbo,
    learner_type_kl,
    ou_traits,
    ou_transition,
    sample_states,
)

# --------------------------------------------------------------------------------------------
# OU transition
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("z", "gap", "speed", "mean", "vol"),
    [(2.0, 1.0, 0.5, 0.0, 1.0), (-1.0, 0.3, 2.0, 0.7, 0.4), (0.5, 4.0, 0.05, -1.0, 2.0)],
)
def test_ou_transition_solves_the_moment_odes(z, gap, speed, mean, vol):
    # dm/dt = α(μ − m), dv/dt = −2αv + σ² from (z, 0): independent of the closed form
    sol = solve_ivp(
        lambda t, y: [speed * (mean - y[0]), -2 * speed * y[1] + vol**2],
        (0.0, gap),
        [z, 0.0],
        rtol=1e-11,
        atol=1e-13,
    )
    m, v = ou_transition(torch.tensor(z, dtype=torch.float64), gap, speed, mean, vol)
    assert float(m) == pytest.approx(sol.y[0, -1], rel=1e-8, abs=1e-10)
    assert float(v) == pytest.approx(sol.y[1, -1], rel=1e-8, abs=1e-10)


def test_ou_transition_matches_euler_maruyama():
    rng = np.random.default_rng(0)
    z0, gap, speed, mean, vol, dt, n = 1.5, 1.2, 0.8, -0.5, 0.9, 2e-3, 20_000
    z = np.full(n, z0)
    for _ in range(round(gap / dt)):
        z = z + speed * (mean - z) * dt + vol * math.sqrt(dt) * rng.standard_normal(n)
    m, v = ou_transition(torch.tensor(z0, dtype=torch.float64), gap, speed, mean, vol)
    se_mean = math.sqrt(float(v) / n)
    se_var = float(v) * math.sqrt(2.0 / (n - 1))
    assert abs(z.mean() - float(m)) < 4 * se_mean
    assert abs(z.var(ddof=1) - float(v)) < 4 * se_var + 2 * dt  # + the scheme's O(dt) bias


def test_ou_transition_limits_and_broadcasting():
    z = torch.tensor([[0.0], [3.0]], dtype=torch.float64)
    gaps = torch.tensor([0.0, 1e-9, 1e3], dtype=torch.float64)
    m, v = ou_transition(z, gaps, 0.7, 1.0, 2.0)
    assert m.shape == v.shape == (2, 3)
    assert torch.equal(m[:, 0], z[:, 0]) and torch.all(v[:, 0] == 0)  # no time: no change
    assert float(v[0, 1]) == pytest.approx(4.0 * 1e-9, rel=1e-6)  # Brownian σ²Δ
    assert torch.allclose(m[:, 2], torch.ones(2, dtype=torch.float64))  # stationary
    assert float(v[0, 2]) == pytest.approx(4.0 / 1.4)
    # a vanishing speed is Brownian motion over any gap (expm1 keeps it exact)
    _, v0 = ou_transition(0.0, 5.0, 1e-12, 0.0, 1.5)
    assert float(v0) == pytest.approx(1.5**2 * 5.0, rel=1e-6)


def test_ou_transition_gradcheck():
    args = [torch.rand(2, dtype=torch.float64) + 0.2 for _ in range(5)]
    for a in args:
        a.requires_grad_()
    assert torch.autograd.gradcheck(lambda *x: torch.cat(ou_transition(*x)), args, fast_mode=True)


def test_ou_transition_refuses_bad_input_and_passes_nan():
    with pytest.raises(ValueError, match="`gap`"):
        ou_transition(0.0, -1.0, 1.0, 0.0, 1.0)
    with pytest.raises(ValueError, match="`speed`"):
        ou_transition(0.0, 1.0, torch.tensor([1.0, 0.0]), 0.0, 1.0)
    with pytest.raises(ValueError, match="`volatility`"):
        ou_transition(0.0, 1.0, 1.0, 0.0, -2.0)
    with pytest.raises(ValueError, match="`z_prev`"):
        ou_transition("a", 1.0, 1.0, 0.0, 1.0)
    with pytest.raises(ValueError, match="`speed`"):
        ou_transition(0.0, 1.0, torch.tensor([1, 2]), 0.0, 1.0)  # integer tensor
    m, v = ou_transition(0.0, 1.0, torch.tensor([1.0, float("nan")]), 0.0, 1.0)
    assert not torch.isnan(m[0]) and torch.isnan(m[1]) and torch.isnan(v[1])


def test_ou_traits():
    speed, mean, vol = ou_traits(torch.tensor([[math.log(3.0), -1.0, 0.0]]))
    assert (float(speed), float(mean), float(vol)) == pytest.approx((3.0, -1.0, 1.0))
    with pytest.raises(ValueError, match="`traits`"):
        ou_traits(torch.zeros(2, 4))


def test_sample_states_scan_equals_the_recurrence():
    g = torch.Generator().manual_seed(1)
    q = Normal(torch.randn(2, 13, 3, generator=g), torch.rand(2, 13, 3, generator=g) + 0.1)
    a = torch.randn(2, 13, 3, generator=g)
    eps = torch.randn(4, 2, 13, 3, generator=g)
    z = sample_states(q, eps, a)
    base = q.loc + q.scale * eps
    ref = [base[..., 0, :]]
    for n in range(1, 13):
        ref.append(a[..., n, :] * ref[-1] + base[..., n, :])
    assert torch.allclose(z, torch.stack(ref, -2), atol=1e-5)
    assert torch.equal(sample_states(q, eps), base)


# --------------------------------------------------------------------------------------------
# ELBO against quadrature (one learner, one concept)
# --------------------------------------------------------------------------------------------

PRIOR_LOC = np.array([math.log(0.5), 0.2, math.log(0.8)])
PRIOR_SCALE = np.array([0.4, 0.8, 0.3])
Q_S_LOC = np.array([math.log(0.6), 0.5, math.log(0.7)])
Q_S_SCALE = np.array([0.3, 0.5, 0.25])


def _log_normal(x, m, s):
    return -0.5 * ((x - m) / s) ** 2 - np.log(s) - 0.5 * math.log(2 * math.pi)


def _log_sigmoid(x):
    return -np.logaddexp(0.0, -x)


def _log_joint(s, zs, ys, gaps):
    """log p(s) + log p(z | s) + log p(y | z) on grid points (numpy, float64)."""
    out = sum(_log_normal(s[i], PRIOR_LOC[i], PRIOR_SCALE[i]) for i in range(3))
    speed, mean, vol = np.exp(s[0]), s[1], np.exp(s[2])
    out = out + _log_normal(zs[0], mean, vol / np.sqrt(2 * speed))
    for n in range(1, len(zs)):
        decay = np.exp(-speed * gaps[n])
        var = vol**2 * (1 - decay**2) / (2 * speed)
        out = out + _log_normal(zs[n], mean + (zs[n - 1] - mean) * decay, np.sqrt(var))
    for z, y in zip(zs, ys, strict=True):
        out = out + (_log_sigmoid(z) if y else _log_sigmoid(-z))
    return out


def _grid(dims, nodes):
    x, w = hermegauss(nodes)
    w = w / math.sqrt(2 * math.pi)
    xs = np.meshgrid(*([x] * dims), indexing="ij")
    ws = np.meshgrid(*([w] * dims), indexing="ij")
    return [v.ravel() for v in xs], np.prod([v.ravel() for v in ws], axis=0)


def _quadrature_elbo(ys, gaps, z_loc, z_scale, coupling, nodes=9):
    """E_q[log p(y, z, s) − log q(z, s)] by Gauss–Hermite over q (traits and states)."""
    e, w = _grid(3 + len(ys), nodes)
    s = [Q_S_LOC[i] + Q_S_SCALE[i] * e[i] for i in range(3)]
    log_q = sum(_log_normal(s[i], Q_S_LOC[i], Q_S_SCALE[i]) for i in range(3))
    zs = []
    for n in range(len(ys)):
        prev = coupling[n] * zs[-1] if n > 0 else 0.0
        zs.append(prev + z_loc[n] + z_scale[n] * e[3 + n])
        log_q = log_q + _log_normal(zs[n], prev + z_loc[n], z_scale[n])
    integrand = _log_joint(s, zs, ys, gaps) - log_q
    return float(np.sum(w * integrand)), (s, zs, log_q, w)


def _log_evidence(ys, gaps, nodes=24, z_nodes=48):
    """log p(y) = log E_{p(s)} ∫ p(z | s) p(y | z) dz by Gauss–Hermite under the prior (T = 1)."""
    assert len(ys) == 1
    e, w = _grid(3, nodes)
    s = [PRIOR_LOC[i] + PRIOR_SCALE[i] * e[i] for i in range(3)]
    sd = np.exp(s[2]) / np.sqrt(2 * np.exp(s[0]))
    x, wz = hermegauss(z_nodes)
    wz = wz / math.sqrt(2 * math.pi)
    z = s[1][:, None] + sd[:, None] * x[None, :]
    lik = np.exp(_log_sigmoid(z) if ys[0] else _log_sigmoid(-z)) @ wz
    return float(np.log(np.sum(w * lik)))


def _elbo(ys, gaps, z_loc, z_scale, coupling=None, *, num_samples, seed=0, **kw):
    t = len(ys)
    f64 = torch.float64
    return knowledge_tracing_elbo(
        torch.tensor([ys], dtype=f64),
        torch.zeros(1, t, dtype=torch.long),
        torch.tensor([gaps], dtype=f64),
        Normal(torch.tensor(Q_S_LOC)[None], torch.tensor(Q_S_SCALE)[None]),
        Normal(
            torch.tensor(z_loc, dtype=f64).reshape(1, t, 1),
            torch.tensor(z_scale, dtype=f64).reshape(1, t, 1),
        ),
        Normal(torch.tensor(PRIOR_LOC), torch.tensor(PRIOR_SCALE)),
        state_coupling=None
        if coupling is None
        else torch.tensor(coupling, dtype=f64).reshape(1, t, 1),
        num_samples=num_samples,
        generator=torch.Generator().manual_seed(seed),
        **kw,
    )


@pytest.mark.parametrize("coupling", [None, [0.0, 0.6]], ids=["mean-field", "markov"])
def test_elbo_equals_its_quadrature_two_steps(coupling):
    ys, gaps = [1, 0], [0.0, 0.8]
    z_loc, z_scale = [0.4, -0.3], [0.7, 0.5]
    want, _ = _quadrature_elbo(ys, gaps, z_loc, z_scale, coupling or [0.0, 0.0])
    got = _elbo(ys, gaps, z_loc, z_scale, coupling, num_samples=40_000).elbo
    assert float(got) == pytest.approx(want, abs=0.02)


def test_elbo_lower_bounds_log_evidence_with_gap_kl_to_the_posterior():
    ys, gaps, z_loc, z_scale = [1], [0.0], [0.6], [0.9]
    log_py = _log_evidence(ys, gaps)
    elbo_quad, (s, zs, log_q, w) = _quadrature_elbo(ys, gaps, z_loc, z_scale, [0.0], nodes=14)
    # log p(y) again, by quadrature over q (importance weights p/q): an independent grid
    log_ratio = _log_joint(s, zs, ys, gaps) - log_q
    log_py_q = float(np.log(np.sum(w * np.exp(log_ratio))))
    assert log_py_q == pytest.approx(log_py, abs=2e-3)
    # KL(q ‖ p(s, z | y)) = E_q[log q − log p(y, z, s)] + log p(y)
    kl_post = float(np.sum(w * -log_ratio)) + log_py
    assert kl_post > 0.01
    elbo = float(_elbo(ys, gaps, z_loc, z_scale, num_samples=100_000).elbo)
    assert elbo < log_py
    assert log_py - elbo == pytest.approx(kl_post, abs=0.02)
    assert elbo == pytest.approx(elbo_quad, abs=0.02)


def test_beta_one_is_the_plain_elbo_and_the_weights_act_as_documented():
    args = ([1, 0, 1], [0.0, 0.5, 2.0], [0.3, -0.2, 0.1], [0.6, 0.7, 0.8])
    plain = _elbo(*args, num_samples=64)
    t = _elbo(*args, num_samples=64, beta=1.0, entropy_weight=1.0)
    assert torch.equal(plain.elbo, t.elbo)
    assert torch.allclose(
        plain.elbo, plain.expected_log_likelihood - plain.kl_traits - plain.kl_states
    )
    b2 = _elbo(*args, num_samples=64, beta=2.0)
    assert torch.allclose(b2.elbo - plain.elbo, -(plain.kl_traits + plain.kl_states))
    lam = _elbo(*args, num_samples=64, beta=0.5, entropy_weight=0.1)
    ent = plain.entropy_traits + plain.entropy_states
    want = plain.expected_log_likelihood - 0.5 * (plain.kl_traits + plain.kl_states + 0.9 * ent)
    assert torch.allclose(lam.elbo, want)
    # the trait KL is the closed-form Gaussian KL (torch's own formula as the reference)
    ref = torch.distributions.kl_divergence(
        Normal(torch.tensor(Q_S_LOC), torch.tensor(Q_S_SCALE)),
        Normal(torch.tensor(PRIOR_LOC), torch.tensor(PRIOR_SCALE)),
    ).sum()
    assert float(plain.kl_traits) == pytest.approx(float(ref))


def _batch(b=3, t=4, k=2, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    answers = torch.randint(0, 2, (b, t), generator=g).to(dtype)
    concepts = torch.randint(0, k, (b, t), generator=g)
    gaps = torch.rand(b, t, generator=g, dtype=dtype) + 0.2
    q_s = (
        torch.randn(b, 3, generator=g, dtype=dtype) * 0.3,
        torch.rand(b, 3, dtype=dtype, generator=g) + 0.2,
    )
    q_z = (
        torch.randn(b, t, k, generator=g, dtype=dtype),
        torch.rand(b, t, k, generator=g, dtype=dtype) + 0.3,
    )
    return answers, concepts, gaps, q_s, q_z


def _call(answers, concepts, gaps, q_s, q_z, coupling=None, **kw):
    kw.setdefault("generator", torch.Generator().manual_seed(3))
    return knowledge_tracing_elbo(
        answers,
        concepts,
        gaps,
        Normal(*q_s),
        Normal(*q_z),
        Normal(torch.zeros(3, dtype=q_s[0].dtype), torch.ones(3, dtype=q_s[0].dtype)),
        state_coupling=coupling,
        **kw,
    )


def test_reductions_and_per_learner_nan():
    answers, concepts, gaps, q_s, q_z = _batch()
    none = _call(answers, concepts, gaps, q_s, q_z, reduction="none")
    assert none.elbo.shape == (3,)
    assert torch.allclose(
        _call(answers, concepts, gaps, q_s, q_z, reduction="sum").elbo, none.elbo.sum()
    )
    assert torch.allclose(_call(answers, concepts, gaps, q_s, q_z).elbo, none.elbo.mean())
    answers[1, 2] = float("nan")
    out = _call(answers, concepts, gaps, q_s, q_z, reduction="none").elbo
    assert torch.isnan(out[1]) and not torch.isnan(out[[0, 2]]).any()


@pytest.mark.parametrize("markov", [False, True], ids=["mean-field", "markov"])
def test_nan_gap_in_a_later_learner_gives_nan_for_that_learner_only(markov):
    # NaN in gaps[:, 1:] passes the gap check, so it must reach the output as NaN for its own
    # learner (not torch's "Expected parameter loc ... Normal" from an internal distribution)
    answers, concepts, gaps, q_s, q_z = _batch()
    coupling = torch.full((3, 4, 2), 0.5, dtype=torch.float64) if markov else None
    clean = _call(answers, concepts, gaps, q_s, q_z, coupling, reduction="none")
    bad = gaps.clone()
    bad[2, 3] = float("nan")  # the last learner, a later step
    leaves = [x.clone().requires_grad_() for x in (*q_s, *q_z)]
    out = _call(answers, concepts, bad, leaves[:2], leaves[2:], coupling, reduction="none")
    for name in ("elbo", "kl_states"):
        got, want = getattr(out, name), getattr(clean, name)
        assert torch.isnan(got[2]), name
        assert torch.allclose(got[:2], want[:2]), name  # the other learners unchanged
    assert torch.isfinite(out.kl_traits).all() and torch.isfinite(out.expected_log_likelihood).all()
    out.elbo[0].backward()  # the other learners' gradients stay finite
    assert all(torch.isfinite(x.grad[0]).all() for x in leaves)
    assert torch.isnan(_call(answers, concepts, bad, q_s, q_z, coupling).elbo)  # mean
    first = gaps.clone()
    first[1, 0] = float("nan")  # gaps[:, 0] is not used
    assert torch.equal(
        _call(answers, concepts, first, q_s, q_z, coupling, reduction="none").elbo, clean.elbo
    )


@pytest.mark.parametrize("markov", [False, True], ids=["mean-field", "markov"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_empty_batch(reduction, markov):
    # B = 0: mean / sum give 0 with zero gradient (never NaN), "none" an empty tensor
    answers, concepts, gaps, q_s, q_z = _batch(b=0)
    leaves = [x.clone().requires_grad_() for x in (*q_s, *q_z)]
    prior = [torch.zeros(3, dtype=torch.float64, requires_grad=True), torch.ones(3).double()]
    coupling = torch.zeros(0, 4, 2, dtype=torch.float64) if markov else None
    out = knowledge_tracing_elbo(
        answers,
        concepts,
        gaps,
        Normal(*leaves[:2]),
        Normal(*leaves[2:]),
        Normal(*prior),
        state_coupling=coupling,
        reduction=reduction,
    )
    for value in out:
        assert value.shape == ((0,) if reduction == "none" else ())
        assert not torch.isnan(value).any()
    if reduction != "none":
        assert all(float(v.detach()) == 0.0 for v in out)
        out.elbo.backward()
        assert prior[0].grad is not None and torch.equal(prior[0].grad, torch.zeros(3).double())
        assert all(x.grad is not None and x.grad.numel() == 0 for x in leaves)


def test_trait_prior_batch_shape():
    answers, concepts, gaps, q_s, q_z = _batch()  # B = 3
    kw = {"generator": torch.Generator().manual_seed(3)}
    args = (answers, concepts, gaps, Normal(*q_s), Normal(*q_z))
    f64 = torch.float64
    want = knowledge_tracing_elbo(*args, Normal(torch.zeros(3, dtype=f64), 1.0), **kw)
    for shape in [(1, 3), (3, 3)]:  # broadcast to (B, 3): accepted, same value
        kw["generator"] = torch.Generator().manual_seed(3)
        prior = Normal(torch.zeros(shape, dtype=f64), torch.ones(shape, dtype=f64))
        assert torch.allclose(knowledge_tracing_elbo(*args, prior, **kw).elbo, want.elbo)
    for shape in [(5, 3, 3), (2, 3), (3, 2), (4, 1, 3), (3, 1), ()]:  # does not broadcast to (3, 3)
        prior = Normal(torch.zeros(shape, dtype=f64), torch.ones(shape, dtype=f64))
        with pytest.raises(ValueError, match=r"`trait_prior`.*\(3, 3\).*got"):
            knowledge_tracing_elbo(*args, prior, **kw)


def test_closed_form_errors_name_the_trait_arguments():
    answers, concepts, gaps, q_s, q_z = _batch()
    nan_loc = q_s[0].clone()
    nan_loc[2, 1] = float("nan")
    with pytest.raises(ValueError, match=r"`trait_posterior\.loc`") as info:
        knowledge_tracing_elbo(
            answers,
            concepts,
            gaps,
            Normal(nan_loc, q_s[1], validate_args=False),
            Normal(*q_z),
            Normal(torch.zeros(3, dtype=torch.float64), 1.0),
        )
    assert "`P" not in str(info.value)
    scale = q_z[1].clone()
    scale[2, 3, 1] = -0.5  # a negative state scale (validate_args=False) is still refused
    with pytest.raises(ValueError, match=r"`state_posterior\.scale`"):
        knowledge_tracing_elbo(
            answers,
            concepts,
            gaps,
            Normal(*q_s),
            Normal(q_z[0], scale, validate_args=False),
            Normal(torch.zeros(3, dtype=torch.float64), 1.0),
        )
    scale[2, 3, 1] = float("nan")  # NaN: NaN for that learner only
    out = knowledge_tracing_elbo(
        answers,
        concepts,
        gaps,
        Normal(*q_s),
        Normal(q_z[0], scale, validate_args=False),
        Normal(torch.zeros(3, dtype=torch.float64), 1.0),
        reduction="none",
    ).elbo
    assert torch.isnan(out[2]) and torch.isfinite(out[:2]).all()


@pytest.mark.parametrize("markov", [False, True])
def test_elbo_gradcheck(markov):
    answers, concepts, gaps, q_s, q_z = _batch(b=2, t=3, k=2)
    leaves = [x.clone().requires_grad_() for x in (*q_s, *q_z)]
    coupling = torch.full((2, 3, 2), 0.4, dtype=torch.float64, requires_grad=True)
    extra = [coupling] if markov else []

    def f(*xs):
        c = xs[4] if markov else None
        return _call(answers, concepts, gaps, xs[:2], xs[2:4], c, num_samples=3).elbo

    assert torch.autograd.gradcheck(f, [*leaves, *extra], fast_mode=True)


def test_elbo_refuses_bad_input():
    answers, concepts, gaps, q_s, q_z = _batch()
    with pytest.raises(ValueError, match="`answers`"):
        _call(answers * 0.5 + 0.25, concepts, gaps, q_s, q_z)
    with pytest.raises(ValueError, match="`answers`"):
        _call(answers[:, :2], concepts, gaps, q_s, q_z)
    with pytest.raises(ValueError, match="`concepts`"):
        _call(answers, concepts + 2, gaps, q_s, q_z)
    with pytest.raises(ValueError, match="`concepts`"):
        _call(answers, concepts.double(), gaps, q_s, q_z)
    bad = gaps.clone()
    bad[0, 1] = 0.0
    with pytest.raises(ValueError, match=r"`gaps\[:, 1:\]`"):
        _call(answers, concepts, bad, q_s, q_z)
    with pytest.raises(ValueError, match="`trait_posterior`"):
        _call(answers, concepts, gaps, (q_s[0][:2], q_s[1][:2]), q_z)
    with pytest.raises(ValueError, match="`state_coupling`"):
        _call(answers, concepts, gaps, q_s, q_z, torch.zeros(3, 4, 1, dtype=torch.float64))
    with pytest.raises(ValueError, match="`num_samples`"):
        _call(answers, concepts, gaps, q_s, q_z, num_samples=0)
    with pytest.raises(ValueError, match="`beta`"):
        _call(answers, concepts, gaps, q_s, q_z, beta=-1.0)
    with pytest.raises(ValueError, match="`entropy_weight`"):
        _call(answers, concepts, gaps, q_s, q_z, entropy_weight=float("nan"))
    with pytest.raises(ValueError, match="`reduction`"):
        _call(answers, concepts, gaps, q_s, q_z, reduction="avg")
    with pytest.raises(ValueError, match="`state_posterior`"):
        knowledge_tracing_elbo(answers, concepts, gaps, Normal(*q_s), q_z, Normal(0.0, 1.0))
    with pytest.raises(ValueError, match="`trait_prior`"):
        knowledge_tracing_elbo(
            answers, concepts, gaps, Normal(*q_s), Normal(*q_z), Normal(0.0, 1.0)
        )
    with pytest.raises(ValueError, match="loc"):  # a NaN posterior is refused
        _call(answers, concepts, gaps, (q_s[0] * float("nan"), q_s[1]), q_z)


# --------------------------------------------------------------------------------------------
# learner-type KL
# --------------------------------------------------------------------------------------------


def test_learner_type_kl_is_log_c_minus_entropy():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(5, 10, generator=g, dtype=torch.float64) * 2
    probs = torch.softmax(logits, -1)
    want = math.log(10) - scipy_entropy(probs.numpy(), axis=-1)
    got = learner_type_kl(logits, reduction="none")
    assert np.allclose(got.numpy(), want, atol=1e-12)
    assert torch.allclose(learner_type_kl(probs, inputs="probs", reduction="none"), got)
    assert torch.allclose(
        learner_type_kl(torch.log(probs), inputs="log_probs", reduction="none"), got
    )
    assert float(learner_type_kl(logits, reduction="sum")) == pytest.approx(want.sum())
    assert float(learner_type_kl(torch.zeros(4))) == pytest.approx(0.0, abs=1e-7)
    one_hot = torch.tensor([1e4, 0.0, 0.0], dtype=torch.float64)
    assert float(learner_type_kl(one_hot)) == pytest.approx(math.log(3))
    x = logits.clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda v: learner_type_kl(v), [x])
    with pytest.raises(ValueError, match="`inputs`"):
        learner_type_kl(logits, inputs="scores")
    with pytest.raises(ValueError, match="`type_scores`"):
        learner_type_kl(torch.zeros(3, 0))
    with pytest.raises(ValueError, match="`reduction`"):
        learner_type_kl(logits, reduction="avg")


@pytest.mark.parametrize(
    ("scores", "inputs"),
    [
        ([0.5, 0.6, 0.0], "probs"),  # sums to 1.1
        ([1.5, -0.5, 0.0], "probs"),  # negative
        ([0.0, 0.0, 0.0], "log_probs"),  # not normalised
        ([0.0, 0.0, float("inf")], "logits"),  # +inf in a later position
    ],
)
def test_learner_type_kl_errors_name_type_scores(scores, inputs):
    x = torch.tensor([[0.2, 0.3, 0.5], scores]) if inputs == "probs" else torch.tensor(scores)
    with pytest.raises(ValueError, match="`type_scores`") as info:
        learner_type_kl(x, inputs=inputs)
    message = str(info.value)
    assert "`p`" not in message and "p.sum" not in message and "p.log_softmax" not in message


def test_learner_type_kl_nan_in_a_later_row_is_nan_for_that_row():
    x = torch.zeros(3, 4)
    x[2, 3] = float("nan")
    out = learner_type_kl(x, reduction="none")
    assert torch.isnan(out[2]) and torch.equal(out[:2], torch.zeros(2))

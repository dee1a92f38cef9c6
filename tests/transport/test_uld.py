"""uld_distance against a numpy reference; row options; the input contract (NaN, inf, mass)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import divergent

F64 = torch.float64


# --------------------------------------------------------------------------------------------
# ULD
# --------------------------------------------------------------------------------------------
def _uld_reference(p_logits: np.ndarray, q_logits: np.ndarray, t: float) -> np.ndarray:
    def probs(z: np.ndarray) -> np.ndarray:
        z = z / t
        e = np.exp(z - z.max(-1, keepdims=True))
        return e / e.sum(-1, keepdims=True)

    ps = -np.sort(-probs(p_logits), -1)
    qs = -np.sort(-probs(q_logits), -1)
    vocab = max(ps.shape[-1], qs.shape[-1])
    ps = np.pad(ps, [(0, 0)] * (ps.ndim - 1) + [(0, vocab - ps.shape[-1])])
    qs = np.pad(qs, [(0, 0)] * (qs.ndim - 1) + [(0, vocab - qs.shape[-1])])
    return np.abs(ps - qs).sum(-1)


@pytest.mark.parametrize("temperature", [1.0, 2.5])
def test_uld_matches_reference_with_different_vocabularies(temperature: float) -> None:
    g = torch.Generator().manual_seed(0)
    p = torch.randn(3, 4, 11, generator=g, dtype=F64) * 3
    q = torch.randn(3, 4, 7, generator=g, dtype=F64) * 3
    ref = _uld_reference(p.numpy(), q.numpy(), temperature)
    got = divergent.uld_distance(p, q, temperature=temperature, reduction="none")
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-12, atol=1e-15)
    assert float(divergent.uld_distance(p, q, temperature=temperature)) == pytest.approx(
        ref.mean(), rel=1e-12
    )
    mask = torch.rand(3, 4, generator=g) > 0.4
    masked = divergent.uld_distance(p, q, temperature=temperature, mask=mask, reduction="sum")
    assert float(masked) == pytest.approx(ref[mask.numpy()].sum(), rel=1e-12)
    none = divergent.uld_distance(p, q, temperature=temperature, mask=mask, reduction="none")
    assert float(none[~mask].abs().max()) == 0.0
    normed = divergent.uld_distance(p, q, temperature=temperature, mask=mask, normalizer=10.0)
    assert float(normed) == pytest.approx(ref[mask.numpy()].sum() / 10.0, rel=1e-12)


def test_uld_properties_and_gradient() -> None:
    g = torch.Generator().manual_seed(1)
    p = torch.randn(5, 9, generator=g, dtype=F64)
    perm = torch.randperm(9, generator=g)
    # permutation invariant and zero for the same sorted probabilities (padding: −inf logits)
    q = torch.cat([p[:, perm], torch.full((5, 3), -math.inf, dtype=F64)], -1)
    assert float(divergent.uld_distance(p, q, reduction="none").abs().max()) < 1e-15
    r = torch.randn(5, 4, generator=g, dtype=F64)
    vals = divergent.uld_distance(p, r, reduction="none")
    assert bool((vals >= 0).all()) and bool((vals <= 2).all())
    # fully masked batch: 0 with zero gradient
    pp = p.clone().requires_grad_(True)
    out = divergent.uld_distance(pp, r, mask=torch.zeros(5, dtype=torch.bool))
    out.backward()
    assert out.item() == 0.0 and float(pp.grad.abs().max()) == 0.0
    # gradients through the sort (distinct probabilities almost surely)
    pg = p.clone().requires_grad_(True)
    rg = r.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a_, b_: divergent.uld_distance(a_, b_), (pg, rg))
    # bf16 inputs are computed in fp32
    assert divergent.uld_distance(p.bfloat16(), r.bfloat16()).dtype == torch.float32


def test_uld_errors() -> None:
    with pytest.raises(ValueError, match="leading shape"):
        divergent.uld_distance(torch.rand(2, 5), torch.rand(3, 5))
    with pytest.raises(ValueError, match="`temperature`"):
        divergent.uld_distance(torch.rand(2, 5), torch.rand(2, 3), temperature=0.0)
    with pytest.raises(ValueError, match="`reduction`"):
        divergent.uld_distance(torch.rand(2, 5), torch.rand(2, 3), reduction="avg")
    with pytest.raises(ValueError, match="empty class axis"):
        divergent.uld_distance(torch.rand(2, 0), torch.rand(2, 3))


# --------------------------------------------------------------------------------------------
# the input contract (issue 8 §1), shared with the other row-wise entry points
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("inputs", ["logits", "log_probs", "probs"])
@pytest.mark.parametrize("side", ["p", "q"])
def test_uld_nan_in_a_kept_row_gives_nan_for_that_row(inputs: str, side: str) -> None:
    g = torch.Generator().manual_seed(2)
    p = torch.log_softmax(torch.randn(4, 6, generator=g, dtype=F64), -1)
    q = torch.log_softmax(torch.randn(4, 5, generator=g, dtype=F64), -1)
    if inputs == "probs":
        p, q = p.exp(), q.exp()
    clean = divergent.uld_distance(p, q, inputs=inputs, reduction="none")
    bad = (p if side == "p" else q).clone()
    bad[2, 1] = math.nan
    args = (bad, q) if side == "p" else (p, bad)
    rows = divergent.uld_distance(*args, inputs=inputs, reduction="none")
    assert bool(torch.isnan(rows[2])) and bool(torch.isfinite(rows[[0, 1, 3]]).all())
    torch.testing.assert_close(rows[[0, 1, 3]], clean[[0, 1, 3]], rtol=0, atol=0)
    assert bool(torch.isnan(divergent.uld_distance(*args, inputs=inputs)))
    assert bool(torch.isnan(divergent.uld_distance(*args, inputs=inputs, reduction="sum")))
    # a masked NaN row is ignored
    keep = torch.tensor([True, True, False, True])
    masked = divergent.uld_distance(*args, inputs=inputs, mask=keep, reduction="sum")
    assert float(masked) == pytest.approx(float(clean[keep].sum()), rel=1e-12)
    with pytest.raises(ValueError, match=rf"`{side}` contains NaN.*row 2"):
        divergent.uld_distance(*args, inputs=inputs, check_nan=True)


def test_uld_nan_row_label_in_the_leading_shape() -> None:
    p, q = torch.zeros(2, 3, 4), torch.zeros(2, 3, 5)
    q[1, 2, 0] = math.nan
    with pytest.raises(ValueError, match=r"`q` contains NaN.*row \(1, 2\)"):
        divergent.uld_distance(p, q, check_nan=True)


def test_uld_rejects_inf_logits_and_rows_without_mass() -> None:
    p, q = torch.zeros(3, 4), torch.zeros(3, 5)
    bad = p.clone()
    bad[1, 0] = math.inf
    with pytest.raises(ValueError, match=r"`p` has a \+inf entry in row 1"):
        divergent.uld_distance(bad, q)
    empty = q.clone()
    empty[2] = -math.inf
    with pytest.raises(ValueError, match=r"`q` row 2 is all -inf.*`mask`"):
        divergent.uld_distance(p, empty)
    # masking the empty row is the way out; partial -inf (top-k style) stays valid
    keep = torch.tensor([True, True, False])
    assert torch.isfinite(divergent.uld_distance(p, empty, mask=keep))
    partial = q.clone()
    partial[:, :2] = -math.inf
    assert torch.isfinite(divergent.uld_distance(p, partial))


def test_uld_probs_and_log_probs_must_be_normalised() -> None:
    p = torch.full((2, 4), 0.25, dtype=F64)
    q = torch.full((2, 3), 1 / 3, dtype=F64)
    for scale in (0.5, 1.5):
        with pytest.raises(ValueError, match=r"`p` row 0 sums to .*normalise"):
            divergent.uld_distance(p * scale, q, inputs="probs")
        with pytest.raises(ValueError, match=r"`q` row 0 sums to"):
            divergent.uld_distance(p.log(), (q * scale).log(), inputs="log_probs")
    with pytest.raises(ValueError, match="negative entry"):
        divergent.uld_distance(p - 0.3, q, inputs="probs")
    with pytest.raises(ValueError, match="positive entry"):
        divergent.uld_distance(p.log() + 2.0, q.log(), inputs="log_probs")
    # the same check at every temperature (no renormalisation at T != 1 either)
    with pytest.raises(ValueError, match="sums to"):
        divergent.uld_distance(p * 0.5, q, inputs="probs", temperature=2.0)
    # normalised inputs: the three kinds agree (float rounding accepted)
    logits_p, logits_q = torch.randn(2, 4, dtype=F64), torch.randn(2, 3, dtype=F64)
    ref = divergent.uld_distance(logits_p, logits_q, temperature=1.7, reduction="none")
    lp, lq = torch.log_softmax(logits_p, -1), torch.log_softmax(logits_q, -1)
    for inputs, a, b in (("log_probs", lp, lq), ("probs", lp.exp(), lq.exp())):
        got = divergent.uld_distance(a, b, inputs=inputs, temperature=1.7, reduction="none")
        torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-14)
    f32 = torch.softmax(torch.randn(8, 1000), -1)
    assert torch.isfinite(divergent.uld_distance(f32, f32, inputs="probs"))


def test_uld_overflowing_temperature_warnings_and_grad_temperature() -> None:
    p, q = torch.tensor([[1.0, 2.0]]), torch.tensor([[0.0, 1.0, 3.0]])
    with pytest.raises(ValueError, match=r"`p` row 0: logits / temperature overflow"):
        divergent.uld_distance(p, q, temperature=1e-45)
    # float64 holds the same temperature: both sides become one-hot, ULD = 0
    assert float(divergent.uld_distance(p.double(), q.double(), temperature=1e-45)) == 0.0
    probs = torch.softmax(torch.randn(3, 4, dtype=F64), -1)
    with pytest.warns(UserWarning, match=r"`p` looks like probabilities.*inputs='probs'"):
        divergent.uld_distance(probs, torch.randn(3, 5, dtype=F64))
    t = torch.tensor(2.0, requires_grad=True)
    with pytest.raises(ValueError, match="`temperature` is a tensor that requires grad"):
        divergent.uld_distance(p, q, temperature=t)

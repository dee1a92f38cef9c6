"""USCD: the gate statistics and the contrast against hand-written float64 references (a
transcription of the released ``EnsembleLogitsProcessor`` and plain-Python sums), the gate on
both sides of its threshold, the fallback, shapes, NaN and bad input."""

from __future__ import annotations

import math

import pytest
import torch

from divergent.objectives.contrastive_decoding import (
    contrastive_log_probs,
    uncertainty_gate,
    uncertainty_score,
    uscd_log_probs,
)


def _released_scores(std_logits, lame_logits, filter_num, mean_num, weights):
    """The released processor (alphadl/CodeGen-USCD, bigcode_eval/contrast.py), one beam,
    rewritten for one (standard, lame) pair; returns its unnormalised log-scores."""
    scores = torch.softmax(torch.stack([std_logits, lame_logits]), dim=-1)
    std_number = torch.std(scores[0])
    if std_number.item() > mean_num:
        out = torch.log(scores[0])
    else:
        mask = scores[0] >= torch.mean(scores[0]) * filter_num
        scores[0, ~mask] = 0.0
        scores[1, ~mask] = 0.0
        w = torch.tensor(weights, dtype=scores.dtype)
        out = torch.log((w.unsqueeze(-1) * scores).sum(0))
    out = torch.nan_to_num(out, nan=-math.inf)
    # nan_to_num also maps -inf to the lowest finite float (probability 0 after softmax)
    return torch.where(out < -1e300, -math.inf, out)


def _pair(v: int, seed: int, scale: float = 1.0):
    g = torch.Generator().manual_seed(seed)
    std = scale * torch.randn(v, generator=g, dtype=torch.float64)
    lame = scale * torch.randn(v, generator=g, dtype=torch.float64)
    return std, lame


@pytest.mark.parametrize("seed", range(12))
def test_matches_the_released_processor(seed: int) -> None:
    v = 40
    std, lame = _pair(v, seed, scale=0.5 + 0.4 * seed)
    # the released threshold is on std(p); take the row's own std ± a margin to hit both sides
    s = float(torch.softmax(std, -1).std())
    for mean_num in (0.9 * s, 1.1 * s):
        ref = _released_scores(std, lame, 0.667, mean_num, [1.0, -0.7])
        out = uscd_log_probs(std, lame, threshold=mean_num)
        if bool((ref > -math.inf).any()):
            torch.testing.assert_close(out.log_probs, torch.log_softmax(ref, -1))
            assert bool(out.gated) is (mean_num >= s) and not bool(out.fallback)
        else:  # the released code would have nothing to sample: we fall back to log p
            assert bool(out.fallback)
            torch.testing.assert_close(out.log_probs, torch.log_softmax(std, -1))


def test_scores_match_plain_python() -> None:
    std, _ = _pair(7, 100, scale=2.0)
    p = torch.softmax(std, -1).tolist()
    mean = 1 / 7
    std_ref = math.sqrt(math.fsum((x - mean) ** 2 for x in p) / 6)
    ent_ref = -math.fsum(x * math.log(x) for x in p)
    assert float(uncertainty_score(std)) == pytest.approx(std_ref, rel=1e-12)
    assert float(uncertainty_score(std, measure="entropy")) == pytest.approx(ent_ref, rel=1e-12)
    assert float(uncertainty_score(std, measure="top_prob")) == pytest.approx(max(p), rel=1e-12)


def test_gate_on_each_side_of_the_threshold() -> None:
    std = torch.log(torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64))
    s = float(uncertainty_score(std))  # std of (0.5, 0.3, 0.2) = 0.1527...
    assert s == pytest.approx(math.sqrt(((1 / 6) ** 2 + (1 / 30) ** 2 + (2 / 15) ** 2) / 2))
    assert bool(uncertainty_gate(std, threshold=s + 1e-9))
    assert not bool(uncertainty_gate(std, threshold=s - 1e-9))
    assert bool(uncertainty_gate(std, measure="top_prob", threshold=0.51))
    assert not bool(uncertainty_gate(std, measure="top_prob", threshold=0.49))
    h = -(0.5 * math.log(0.5) + 0.3 * math.log(0.3) + 0.2 * math.log(0.2))  # 1.0297 nats
    assert bool(uncertainty_gate(std, measure="entropy", threshold=h - 1e-9))
    assert not bool(uncertainty_gate(std, measure="entropy", threshold=h + 1e-9))


def test_contrast_in_probability_and_logit_space_by_hand() -> None:
    p = [0.40, 0.35, 0.20, 0.05]
    q = [0.10, 0.60, 0.20, 0.10]
    std = torch.tensor(p, dtype=torch.float64).log()
    lame = torch.tensor(q, dtype=torch.float64).log()
    # γ = 0.667: keep p_v ≥ 0.667/4 = 0.16675 → tokens 0, 1, 2
    out, empty = contrastive_log_probs(std, lame, weights=(1.0, -0.5))
    mixed = [p[0] - 0.5 * q[0], p[1] - 0.5 * q[1], p[2] - 0.5 * q[2]]  # 0.35, 0.05, 0.10
    total = sum(mixed)
    ref = [math.log(m / total) for m in mixed] + [-math.inf]
    torch.testing.assert_close(out, torch.tensor(ref, dtype=torch.float64))
    assert not bool(empty)
    out_l, _ = contrastive_log_probs(std, lame, weights=(1.0, -0.5), space="logits")
    raw = [math.log(p[v]) - 0.5 * math.log(q[v]) for v in range(3)]
    norm = math.log(sum(math.exp(x) for x in raw))
    ref_l = [x - norm for x in raw] + [-math.inf]
    torch.testing.assert_close(out_l, torch.tensor(ref_l, dtype=torch.float64))
    # γ = 0 keeps every token; w_lame = 0 gives back p
    out0, _ = contrastive_log_probs(std, lame, weights=(1.0, 0.0), filter_ratio=0.0)
    torch.testing.assert_close(out0, std)


def test_contrast_removes_a_noise_mode_exposed_by_the_lame_prompt() -> None:
    std = torch.tensor([0.40, 0.45, 0.15], dtype=torch.float64).log()  # noise token 1 wins
    lame = torch.tensor([0.05, 0.90, 0.05], dtype=torch.float64).log()
    out = uscd_log_probs(std, lame, measure="top_prob", threshold=0.6)
    assert bool(out.gated) and int(out.log_probs.argmax()) == 0
    closed = uscd_log_probs(std, lame, measure="top_prob", threshold=0.3)
    assert not bool(closed.gated)
    torch.testing.assert_close(closed.log_probs, std)


def test_fallback_when_the_lame_prompt_outweighs_everywhere() -> None:
    std = torch.tensor([0.5, 0.5], dtype=torch.float64).log()
    lame = torch.tensor([0.5, 0.5], dtype=torch.float64).log()
    out = uscd_log_probs(std, lame, weights=(1.0, -1.5), measure="top_prob", threshold=0.9)
    assert bool(out.fallback) and not bool(out.gated)
    torch.testing.assert_close(out.log_probs, std)


def test_batched_rows_and_nan_row() -> None:
    g = torch.Generator().manual_seed(3)
    std = torch.randn(2, 3, 30, generator=g, dtype=torch.float64) * 3
    lame = torch.randn(2, 3, 30, generator=g, dtype=torch.float64) * 3
    tau = float(uncertainty_score(std, measure="entropy").median())
    out = uscd_log_probs(std, lame, measure="entropy", threshold=tau)
    assert out.log_probs.shape == (2, 3, 30) and out.gated.shape == (2, 3)
    for i in range(2):
        for j in range(3):
            one = uscd_log_probs(std[i, j], lame[i, j], measure="entropy", threshold=tau)
            torch.testing.assert_close(out.log_probs[i, j], one.log_probs)
            assert bool(out.gated[i, j]) is bool(one.gated)
    assert bool(out.gated.any()) and not bool(out.gated.all())  # both branches exercised
    lame = lame.clone()
    lame[1, 2, 4] = math.nan
    nan_out = uscd_log_probs(std, lame, measure="entropy", threshold=tau)
    assert bool(torch.isnan(nan_out.log_probs[1, 2]).all())
    torch.testing.assert_close(nan_out.log_probs[0], out.log_probs[0])


def test_float32_stays_float32() -> None:
    std, lame = (x.float() for x in _pair(10, 4))
    assert uscd_log_probs(std, lame).log_probs.dtype == torch.float32


def test_bad_inputs() -> None:
    std, lame = _pair(5, 5)
    with pytest.raises(ValueError, match="lame_logits"):
        uscd_log_probs(std, lame[:4])
    with pytest.raises(ValueError, match="measure"):
        uscd_log_probs(std, lame, measure="variance")
    with pytest.raises(ValueError, match="threshold"):
        uscd_log_probs(std, lame, threshold=0.0)
    with pytest.raises(ValueError, match="weights"):
        uscd_log_probs(std, lame, weights=(0.0, -0.7))
    with pytest.raises(ValueError, match="weights"):
        uscd_log_probs(std, lame, weights=(1.0,))
    with pytest.raises(ValueError, match="filter_ratio"):
        uscd_log_probs(std, lame, filter_ratio=-0.1)
    with pytest.raises(ValueError, match="space"):
        uscd_log_probs(std, lame, space="odds")
    bad = std.clone()
    bad[0] = math.inf
    with pytest.raises(ValueError, match="standard_logits"):
        uscd_log_probs(bad, lame)
    with pytest.raises(ValueError, match="standard_logits"):
        uscd_log_probs(std.long(), lame)
    with pytest.raises(ValueError, match="at least 2"):
        uncertainty_score(torch.zeros(1))

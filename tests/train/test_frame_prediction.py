"""Synthetic blob videos and the tiny frame predictors (divergent.train.frame_prediction).

References: the videos' own ground truth (frame 2 at x + flow equals frame 1 at x wherever the
pixel is visible), brute-force masks, and the losses written out by hand.
"""

from __future__ import annotations

import pytest
import torch

from divergent.train.frame_prediction import (
    FramePredictor,
    apply_tracer,
    encode_inputs,
    expected_intensity,
    make_blob_videos,
    predict_frame2,
    reveal_mask,
    train_frame_predictor,
)


def test_videos_agree_with_their_ground_truth_flow() -> None:
    v = make_blob_videos(
        64, size=12, n_bins=6, n_blobs=2, max_flow=2, generator=torch.Generator().manual_seed(0)
    )
    assert int(v.frame1.min()) >= 0 and int(v.frame1.max()) < 6
    assert bool((v.flow.abs() <= 2).all())
    assert bool((v.flow[~v.moving] == 0).all())
    b, r, c = v.visible.nonzero(as_tuple=True)
    f = v.flow[b, r, c]
    assert torch.equal(v.frame2[b, r + f[:, 0], c + f[:, 1]], v.frame1[b, r, c])
    assert 0.2 < float(v.moving.float().mean()) < 0.8  # discs cover part of the frame
    assert float(v.visible[v.moving].float().mean()) > 0.5
    # the background is static and visible where no disc covers it in either frame
    still = ~v.moving & v.visible
    assert torch.equal(v.frame2[still], v.frame1[still])


def test_invisible_pixels_are_occluded_or_leave_the_frame() -> None:
    v = make_blob_videos(
        32, size=10, n_bins=4, max_flow=2, generator=torch.Generator().manual_seed(1)
    )
    b, r, c = (v.moving & ~v.visible).nonzero(as_tuple=True)
    f = v.flow[b, r, c]
    tr, tc = r + f[:, 0], c + f[:, 1]
    inside = (tr >= 0) & (tr < 10) & (tc >= 0) & (tc < 10)
    assert bool((~inside).any()) and bool(inside.any())


def test_reveal_mask_hole_and_rate() -> None:
    centre = torch.tensor([[0, 0], [5, 6]])
    m = reveal_mask(2, 9, 1.0, centre, 2)
    for k, (r0, c0) in enumerate(centre.tolist()):
        want = torch.tensor(
            [[not (abs(r - r0) <= 2 and abs(c - c0) <= 2) for c in range(9)] for r in range(9)]
        )
        assert torch.equal(m[k], want)
    rate = reveal_mask(200, 9, 0.3, torch.zeros(200, 2, dtype=torch.long), 0).float().mean()
    assert abs(float(rate) - 0.3 * 80 / 81) < 0.02
    with pytest.raises(ValueError, match="fraction"):
        reveal_mask(1, 4, 1.5, torch.zeros(1, 2, dtype=torch.long), 1)
    with pytest.raises(ValueError, match="hole_centre"):
        reveal_mask(2, 4, 0.5, torch.zeros(1, 2, dtype=torch.long), 1)


def test_encoding_and_tracer() -> None:
    f1 = torch.tensor([[[0, 1], [2, 3]]])
    f2 = torch.tensor([[[3, 2], [1, 0]]])
    rev = torch.tensor([[[True, False], [False, True]]])
    x = encode_inputs(f1, f2, rev, 4)
    assert x.shape == (1, 9, 2, 2)
    assert torch.equal(x[0, :4].argmax(0), f1[0])
    assert (
        float(x[0, 4:8].sum()) == 2.0
        and float(x[0, 7, 0, 0]) == 1.0
        and float(x[0, 4, 1, 1]) == 1.0
    )
    assert torch.equal(x[0, 8], rev[0].float())
    t = apply_tracer(f1, torch.tensor([[1, 1]]), 4)
    assert int(t[0, 1, 1]) == 1 and torch.equal(t[0, 0], f1[0, 0]) and int(t[0, 1, 0]) == 2
    assert torch.equal(f1, torch.tensor([[[0, 1], [2, 3]]]))  # the input is not modified


def test_expected_intensity() -> None:
    logits = torch.log(torch.tensor([[0.5, 0.0, 0.5], [0.0, 0.0, 1.0]]) + 1e-30)
    assert torch.allclose(expected_intensity(logits), torch.tensor([[0.5], [1.0]]))


@pytest.mark.parametrize("head", ["categorical", "mean"])
def test_training_lowers_the_loss_and_outputs_are_channels_last(head: str) -> None:
    v = make_blob_videos(
        64, size=8, n_bins=4, max_flow=1, generator=torch.Generator().manual_seed(2)
    )
    torch.manual_seed(0)
    net = FramePredictor(4, head, width=8, dilations=(1, 2))
    losses = train_frame_predictor(
        net,
        v,
        steps=40,
        batch_size=16,
        lr=1e-2,
        hole_radius=1,
        generator=torch.Generator().manual_seed(3),
    )
    assert len(losses) == 40 and sum(losses[-5:]) < sum(losses[:5])
    x = encode_inputs(v.frame1[:3], v.frame2[:3], torch.zeros(3, 8, 8, dtype=torch.bool), 4)
    out = predict_frame2(net, x)
    assert out.shape == ((3, 8, 8, 4) if head == "categorical" else (3, 8, 8, 1))
    assert not out.requires_grad


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="head"):
        FramePredictor(4, "logits")
    with pytest.raises(ValueError, match="radius"):
        make_blob_videos(2, radius=(3.0, 2.0))
    with pytest.raises(ValueError, match="n_bins"):
        make_blob_videos(2, n_bins=1)
    v = make_blob_videos(4, size=6, n_bins=4, max_flow=1)
    with pytest.raises(ValueError, match="intensity bins"):
        train_frame_predictor(FramePredictor(5, "mean", width=4, dilations=(1,)), v, steps=1)
    with pytest.raises(ValueError, match="steps"):
        train_frame_predictor(FramePredictor(4, "mean", width=4, dilations=(1,)), v, steps=0)


def test_motions_code_the_flow_by_brightness() -> None:
    motions = [[(0, 2, 0.7), (2, 0, 0.3)], [(-1, 0, 1.0)]]
    v = make_blob_videos(
        400,
        size=12,
        n_bins=8,
        max_flow=2,
        motions=motions,
        generator=torch.Generator().manual_seed(4),
    )
    b, r, c = v.moving.nonzero(as_tuple=True)
    bright = v.frame1[b, r, c] >= 4
    f = v.flow[b, r, c]
    assert bool((f[bright] == torch.tensor([-1, 0])).all())
    dark = f[~bright]
    right = (dark == torch.tensor([0, 2])).all(1)
    down = (dark == torch.tensor([2, 0])).all(1)
    assert bool((right | down).all())
    frac = float(right.double().mean())
    assert 0.6 < frac < 0.8
    b, r, c = v.visible.nonzero(as_tuple=True)
    f = v.flow[b, r, c]
    assert torch.equal(v.frame2[b, r + f[:, 0], c + f[:, 1]], v.frame1[b, r, c])


def test_tracer_within_slices_keeps_the_kind() -> None:
    f = torch.arange(8).view(1, 1, 8).expand(8, 1, 8).clone()
    q = torch.stack([torch.zeros(8, dtype=torch.long), torch.arange(8)], 1)
    t = apply_tracer(f, q, 8, slices=2)
    got = t[torch.arange(8), 0, torch.arange(8)]
    assert got.tolist() == [2, 3, 0, 1, 6, 7, 4, 5]
    with pytest.raises(ValueError, match="slices"):
        apply_tracer(f, q, 8, slices=3)


@pytest.mark.parametrize(
    ("motions", "match"),
    [
        ([[(0, 3, 1.0)]], "max_flow"),
        ([[(0, 1, 0.5)]], "sum to 1"),
        ([[(0, 1)]], "triples"),
        ([[(0, 1, 1.0)]] * 3, "kinds"),
    ],
)
def test_bad_motions(motions, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make_blob_videos(2, n_bins=8, max_flow=2, motions=motions)

r"""Tiny next-frame predictors on synthetic translating-blob videos (for KL-tracing).

What the KL-tracing reproduction (:mod:`divergent.papers.kltracing`) trains and probes:

* :func:`make_blob_videos` — two-frame videos: a static smooth-textured background and a few
  smooth-textured discs, each translating by its own integer flow; intensities quantised into
  ``n_bins`` bins; ground-truth flow and visibility of every frame-1 pixel;
* :func:`reveal_mask` — which frame-2 pixels the model may see (a random-access "reveal":
  Bernoulli pixels with a square hole around a chosen location);
* :func:`encode_inputs` — one-hot frame 1, the one-hot revealed frame-2 pixels and the reveal
  mask as CNN channels (``2·n_bins + 1``);
* :func:`apply_tracer` — the counterfactual tracer: one frame-1 pixel moved half the intensity
  range (bin ``v → (v + n_bins // 2) mod n_bins``);
* :class:`FramePredictor` — a small dilated CNN with either a per-pixel softmax over the bins
  (``head="categorical"``, trained with cross-entropy) or one mean intensity per pixel
  (``head="mean"``, trained with squared error): the same trunk, only the last 1×1
  convolution differs;
* :func:`train_frame_predictor` — Adam on fresh reveal masks, the loss on the unrevealed pixels;
* :func:`predict_frame2` — per-pixel outputs channels last (logits ``(n, H, W, K)`` or means
  ``(n, H, W, 1)``), the layout of :mod:`divergent.analysis.kl_tracing`;
  :func:`expected_intensity` — the mean intensity of a categorical prediction.

Intensities are ``bin / (n_bins − 1)`` in [0, 1] wherever a number is needed.

References:
    Kim, Aw, Kotar, Eyzaguirre, Lee, Liu, Watrous, Stojanov, Niebles, Wu & Yamins (2025),
    Taming generative video models for zero-shot optical flow extraction, arXiv 2507.09082
    (KL-tracing, the tracer and the random-access reveal);
    Bear, Feigelis, Chen, Lee, Venkatesh, Kotar, Durango & Yamins (2023), Unifying (Machine)
    Vision via Counterfactual World Modeling, arXiv 2306.01828 (the RGB-difference probe);
    Yu & Koltun (2016), Multi-Scale Context Aggregation by Dilated Convolutions, ICLR,
    arXiv 1511.07122 (the dilated trunk).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from divergent._validation import check_choice, check_int, check_positive_scalar

__all__ = [
    "HEADS",
    "BlobVideos",
    "FramePredictor",
    "apply_tracer",
    "encode_inputs",
    "expected_intensity",
    "make_blob_videos",
    "predict_frame2",
    "reveal_mask",
    "train_frame_predictor",
]

HEADS: tuple[str, ...] = ("categorical", "mean")


@dataclass(frozen=True)
class BlobVideos:
    """Two-frame videos of translating textured discs over a static textured background.

    Attributes:
        frame1, frame2: ``(n, H, W)`` int64 intensity bins in ``[0, n_bins)``.
        flow: ``(n, H, W, 2)`` int64 (d_row, d_col) of each frame-1 pixel (0 on the background).
        visible: ``(n, H, W)`` bool: the frame-1 pixel is visible in frame 2 (its target is in
            the frame and not occluded by a disc above it).
        moving: ``(n, H, W)`` bool: the frame-1 pixel belongs to a disc.
        n_bins: number of intensity bins.
    """

    frame1: Tensor
    frame2: Tensor
    flow: Tensor
    visible: Tensor
    moving: Tensor
    n_bins: int

    def __len__(self) -> int:
        return int(self.frame1.shape[0])


def _smooth_texture(n: int, size: int, n_bins: int, g: torch.Generator, blur: int) -> Tensor:
    """``(n, size, size)`` bins of a Gaussian field box-blurred ``blur`` times (3×3),
    equalised per sample."""
    x = torch.randn(n, 1, size, size, generator=g)
    for _ in range(blur):
        x = F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)
    x = x[:, 0]
    flat = x.reshape(n, -1)
    z = (flat - flat.mean(-1, keepdim=True)) / flat.std(-1, keepdim=True).clamp_min(1e-6)
    u = torch.special.ndtr(z).reshape(n, size, size)
    return (u * n_bins).long().clamp(0, n_bins - 1)


def make_blob_videos(
    n: int,
    *,
    size: int = 16,
    n_bins: int = 8,
    n_blobs: int = 2,
    max_flow: int = 2,
    radius: tuple[float, float] = (2.5, 4.5),
    motions: Sequence[Sequence[tuple[int, int, float]]] | None = None,
    texture_blur: int = 2,
    generator: torch.Generator | None = None,
) -> BlobVideos:
    r"""``n`` two-frame videos of ``n_blobs`` discs translating over a static background.

    Each disc b has a centre uniform in the frame, a radius uniform in ``radius``, an integer
    flow :math:`f_b` uniform in :math:`\{-m, \dots, m\}^2` (m = ``max_flow``) and its own
    texture :math:`T_b` (a smooth random field, quantised); frame 1 shows :math:`T_b(x)` on the
    disc at its centre, frame 2 shows :math:`T_b(x - f_b)` on the disc moved by :math:`f_b`
    (the texture moves with the disc). Later discs are drawn over earlier ones; the background
    does not move.

    With ``motions`` (one list of ``(d_row, d_col, probability)`` per disc *kind*), the
    intensity bins are split into ``len(motions)`` equal slices; a disc's kind is uniform, its
    texture uses only its kind's slice (its brightness shows its kind) and its flow is drawn
    from its kind's list. The motion is then predictable from appearance, and uncertain when a
    list holds several flows (a multimodal frame 2).

    Args:
        n: number of videos (≥ 1).
        size: frame side H = W (≥ 4).
        n_bins: intensity bins (≥ 2).
        n_blobs: discs per video (≥ 1).
        max_flow: largest displacement per axis (≥ 0).
        radius: (low, high) disc radius in pixels, 0 < low ≤ high.
        motions: per disc kind, ``(d_row, d_col, probability)`` triples (probabilities
            summing to 1, |d| ≤ ``max_flow``); None: one kind, flow uniform in the square.
        texture_blur: 3×3 box blurs of the textures' Gaussian fields (0: independent pixels;
            more: smoother textures, where a pixel is easier to guess from its neighbours).
        generator: the random source.

    Example:
        >>> v = make_blob_videos(3, size=8, n_bins=4, generator=torch.Generator().manual_seed(0))
        >>> tuple(v.frame1.shape), tuple(v.flow.shape), int(v.frame2.max()) < 4
        ((3, 8, 8), (3, 8, 8, 2), True)
    """
    n = check_int(n, "n", 1, "number of videos")
    size = check_int(size, "size", 4, "frame side")
    n_bins = check_int(n_bins, "n_bins", 2, "intensity bins")
    n_blobs = check_int(n_blobs, "n_blobs", 1, "discs per video")
    m = check_int(max_flow, "max_flow", 0)
    low, high = (float(r) for r in radius)
    if not 0 < low <= high:
        raise ValueError(f"`radius` must be (low, high) with 0 < low <= high, got {radius!r}")
    kinds = _check_motions(motions, m, n_bins)
    blur = check_int(texture_blur, "texture_blur", 0)
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    canvas = size + 2 * m  # textures live on a padded canvas so every shift stays inside it
    rows = torch.arange(size).view(1, size, 1).float()
    cols = torch.arange(size).view(1, 1, size).float()
    frame1 = _smooth_texture(n, size, n_bins, g, blur)
    frame2 = frame1.clone()
    layer1 = torch.full((n, size, size), -1, dtype=torch.long)
    layer2 = layer1.clone()
    flow = torch.zeros(n, size, size, 2, dtype=torch.long)
    batch = torch.arange(n).view(n, 1, 1)
    for b in range(n_blobs):
        centre = torch.rand(n, 2, generator=g) * size - 0.5
        r = low + (high - low) * torch.rand(n, generator=g)
        if kinds is None:
            f = torch.randint(-m, m + 1, (n, 2), generator=g)
            texture = _smooth_texture(n, canvas, n_bins, g, blur)
        else:
            kind = torch.randint(len(kinds), (n,), generator=g)
            per = n_bins // len(kinds)
            texture = _smooth_texture(n, canvas, per, g, blur) + (kind * per).view(n, 1, 1)
            f = torch.zeros(n, 2, dtype=torch.long)
            for k, (flows, probs) in enumerate(kinds):
                pick = torch.multinomial(probs, n, replacement=True, generator=g)
                f = torch.where((kind == k)[:, None], flows[pick], f)
        cr, cc = centre[:, 0].view(n, 1, 1), centre[:, 1].view(n, 1, 1)
        rr = r.view(n, 1, 1)
        disc1 = (rows - cr) ** 2 + (cols - cc) ** 2 <= rr**2
        fr, fc = f[:, 0].view(n, 1, 1), f[:, 1].view(n, 1, 1)
        disc2 = (rows - cr - fr) ** 2 + (cols - cc - fc) ** 2 <= rr**2
        t1 = texture[:, m : m + size, m : m + size]
        src_r = (rows.long() - fr + m).expand(n, size, size)
        src_c = (cols.long() - fc + m).expand(n, size, size)
        t2 = texture[batch, src_r, src_c]
        frame1 = torch.where(disc1, t1, frame1)
        frame2 = torch.where(disc2, t2, frame2)
        layer1 = torch.where(disc1, b, layer1)
        layer2 = torch.where(disc2, b, layer2)
        flow = torch.where(disc1[..., None], f.view(n, 1, 1, 2), flow)
    tr = rows.long() + flow[..., 0]
    tc = cols.long() + flow[..., 1]
    inside = (tr >= 0) & (tr < size) & (tc >= 0) & (tc < size)
    target_layer = layer2[batch, tr.clamp(0, size - 1), tc.clamp(0, size - 1)]
    visible = inside & (target_layer == layer1)
    return BlobVideos(frame1, frame2, flow, visible, layer1 >= 0, n_bins)


def _check_motions(
    motions: Sequence[Sequence[tuple[int, int, float]]] | None, max_flow: int, n_bins: int
) -> list[tuple[Tensor, Tensor]] | None:
    """``motions`` as (flows (j, 2) int64, probabilities (j,)) per kind, validated."""
    if motions is None:
        return None
    if len(motions) < 1 or n_bins % len(motions) or n_bins // len(motions) < 1:
        raise ValueError(
            f"`motions` needs one entry per disc kind, a number of kinds dividing n_bins = "
            f"{n_bins}; got {len(motions)} kinds"
        )
    kinds = []
    for k, entry in enumerate(motions):
        rows = [tuple(e) for e in entry]
        if not rows or any(len(e) != 3 for e in rows):
            raise ValueError(f"`motions[{k}]` must be (d_row, d_col, probability) triples")
        flows = torch.tensor([[int(a), int(b)] for a, b, _ in rows], dtype=torch.long)
        probs = torch.tensor([float(p) for *_, p in rows], dtype=torch.float64)
        if bool((flows.abs() > max_flow).any()):
            raise ValueError(f"`motions[{k}]` has a flow beyond max_flow = {max_flow}")
        if bool((probs < 0).any()) or abs(float(probs.sum()) - 1) > 1e-9:
            raise ValueError(f"`motions[{k}]` probabilities must be >= 0 and sum to 1")
        kinds.append((flows, probs))
    return kinds


def reveal_mask(
    n: int,
    size: int,
    fraction: float,
    hole_centre: Tensor,
    hole_radius: int,
    *,
    generator: torch.Generator | None = None,
) -> Tensor:
    r"""``(n, H, W)`` bool: which frame-2 pixels are revealed to the model.

    Each pixel is revealed with probability ``fraction``, except inside the square of
    Chebyshev radius ``hole_radius`` around ``hole_centre`` (``(n, 2)`` int (row, col)), which
    stays hidden: the model must infer the motion there from revealed pixels further away.

    Example:
        >>> m = reveal_mask(1, 5, 1.0, torch.tensor([[2, 2]]), 1)
        >>> int(m.sum())
        16
    """
    check_positive_scalar(fraction, "fraction", allow_zero=True)
    if fraction > 1:
        raise ValueError(f"`fraction` must be in [0, 1], got {fraction!r}")
    hole_radius = check_int(hole_radius, "hole_radius", 0)
    if tuple(hole_centre.shape) != (n, 2):
        raise ValueError(f"`hole_centre` must have shape {(n, 2)}, got {tuple(hole_centre.shape)}")
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    mask = torch.rand(n, size, size, generator=g) < fraction
    rows = torch.arange(size).view(1, size, 1)
    cols = torch.arange(size).view(1, 1, size)
    hole = ((rows - hole_centre[:, 0].view(n, 1, 1)).abs() <= hole_radius) & (
        (cols - hole_centre[:, 1].view(n, 1, 1)).abs() <= hole_radius
    )
    return mask & ~hole


def encode_inputs(frame1: Tensor, frame2: Tensor, revealed: Tensor, n_bins: int) -> Tensor:
    """``(n, 2·n_bins + 1, H, W)`` float: one-hot frame 1, one-hot frame 2 on the revealed
    pixels (zeros elsewhere), and the reveal mask.

    Example:
        >>> f = torch.zeros(1, 2, 2, dtype=torch.long)
        >>> tuple(encode_inputs(f, f, torch.ones(1, 2, 2, dtype=torch.bool), 3).shape)
        (1, 7, 2, 2)
    """
    one1 = F.one_hot(frame1, n_bins).permute(0, 3, 1, 2).float()
    one2 = F.one_hot(frame2, n_bins).permute(0, 3, 1, 2).float()
    mask = revealed[:, None].float()
    return torch.cat([one1, one2 * mask, mask], 1)


def apply_tracer(frame: Tensor, query: Tensor, n_bins: int, *, slices: int = 1) -> Tensor:
    """A copy of ``frame`` (``(n, H, W)`` bins) with the bin at each ``query`` (``(n, 2)`` int
    (row, col)) moved by half its slice: with the bins split into ``slices`` equal slices of
    s = ``n_bins // slices`` bins, ``v → start + (v − start + s // 2) mod s`` (``slices=1``:
    ``v → (v + n_bins // 2) mod n_bins``). With the slices of :func:`make_blob_videos`'s disc
    kinds, the tracer keeps the pixel's kind (and so its motion).

    Example:
        >>> f, q = torch.tensor([[[0, 5]]]), torch.tensor([[0, 1]])
        >>> apply_tracer(f, q, 8), apply_tracer(f, q, 8, slices=2)
        (tensor([[[0, 1]]]), tensor([[[0, 7]]]))
    """
    slices = check_int(slices, "slices", 1)
    if n_bins % slices:
        raise ValueError(f"`slices` must divide n_bins = {n_bins}, got {slices}")
    s = n_bins // slices
    out = frame.clone()
    idx = torch.arange(frame.shape[0])
    v = frame[idx, query[:, 0], query[:, 1]]
    start = (v // s) * s
    out[idx, query[:, 0], query[:, 1]] = start + (v - start + s // 2) % s
    return out


class FramePredictor(nn.Module):
    """Dilated CNN: ``2·n_bins + 1`` input channels → ``width`` (ReLU, one 3×3 conv per entry
    of ``dilations``) → a 1×1 head with ``n_bins`` logits (``head="categorical"``) or one mean
    intensity (``head="mean"``) per pixel.

    Example:
        >>> net = FramePredictor(4, "categorical", width=8, dilations=(1, 2))
        >>> tuple(net(torch.zeros(2, 9, 6, 6)).shape)
        (2, 4, 6, 6)
    """

    def __init__(
        self,
        n_bins: int,
        head: str,
        *,
        width: int = 32,
        dilations: Sequence[int] = (1, 1, 2, 4, 1),
    ) -> None:
        super().__init__()
        self.n_bins = check_int(n_bins, "n_bins", 2)
        self.head = check_choice(head, "head", HEADS)
        width = check_int(width, "width", 1)
        layers: list[nn.Module] = []
        channels = 2 * self.n_bins + 1
        for d in dilations:
            d = check_int(d, "dilations", 1)
            layers += [nn.Conv2d(channels, width, 3, padding=d, dilation=d), nn.ReLU()]
            channels = width
        self.trunk = nn.Sequential(*layers)
        self.out = nn.Conv2d(channels, self.n_bins if self.head == "categorical" else 1, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.out(self.trunk(x))


def predict_frame2(model: FramePredictor, inputs: Tensor) -> Tensor:
    """Channels-last outputs in evaluation mode without gradients: logits ``(n, H, W, K)``
    (categorical head) or mean intensities ``(n, H, W, 1)`` (mean head)."""
    was = model.training
    model.eval()
    with torch.no_grad():
        out = model(inputs).permute(0, 2, 3, 1).contiguous()
    model.train(was)
    return out


def expected_intensity(logits: Tensor) -> Tensor:
    r"""Mean intensity :math:`\sum_k \mathrm{softmax}(z)_k\,k/(K-1)` of a categorical
    prediction, ``(..., K)`` → ``(..., 1)``.

    >>> expected_intensity(torch.tensor([[0.0, 0.0, 0.0]]))
    tensor([[0.5000]])
    """
    k = logits.shape[-1]
    levels = torch.arange(k, dtype=logits.dtype, device=logits.device) / (k - 1)
    return (logits.softmax(-1) * levels).sum(-1, keepdim=True)


def train_frame_predictor(
    model: FramePredictor,
    videos: BlobVideos,
    *,
    steps: int,
    batch_size: int = 32,
    lr: float = 2e-3,
    reveal_fraction: float = 0.2,
    hole_radius: int = 2,
    generator: torch.Generator | None = None,
) -> list[float]:
    r"""Adam on frame-2 prediction; returns the loss of every step.

    Each step draws ``batch_size`` videos, a reveal mask (:func:`reveal_mask`, the hole at a
    random pixel) and scores the unrevealed pixels: cross-entropy of the bins for a
    categorical head, squared error of the intensity ``bin/(K − 1)`` for a mean head. Two
    models given the same ``generator`` seed see the same batches and masks.

    Args:
        model: the predictor (trained in place).
        videos: training videos (their ``n_bins`` must be the model's).
        steps: optimiser steps (≥ 1).
        batch_size: videos per step (≥ 1).
        lr: Adam learning rate (> 0).
        reveal_fraction: probability of revealing a frame-2 pixel, in [0, 1].
        hole_radius: Chebyshev radius of the hidden square (≥ 0).
        generator: the random source of batches and masks.
    """
    steps = check_int(steps, "steps", 1)
    batch_size = check_int(batch_size, "batch_size", 1)
    check_positive_scalar(lr, "lr")
    if videos.n_bins != model.n_bins:
        raise ValueError(
            f"`videos` has {videos.n_bins} intensity bins but `model` predicts {model.n_bins}"
        )
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    size = videos.frame1.shape[-1]
    k = videos.n_bins
    losses = []
    model.train()
    for _ in range(steps):
        idx = torch.randint(len(videos), (batch_size,), generator=g)
        centre = torch.randint(size, (batch_size, 2), generator=g)
        revealed = reveal_mask(batch_size, size, reveal_fraction, centre, hole_radius, generator=g)
        f1, f2 = videos.frame1[idx], videos.frame2[idx]
        out = model(encode_inputs(f1, f2, revealed, k))
        hidden = (~revealed).float()
        if model.head == "categorical":
            per_pixel = F.cross_entropy(out, f2, reduction="none")
        else:
            per_pixel = (out[:, 0] - f2.float() / (k - 1)) ** 2
        loss = (per_pixel * hidden).sum() / hidden.sum().clamp_min(1.0)
        model.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    model.eval()
    return losses

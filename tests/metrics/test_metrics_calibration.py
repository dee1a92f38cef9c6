"""Calibration metrics against torchmetrics (binning included) and float64 references."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from divergent.metrics import (
    accuracy,
    calibration_bins,
    classwise_calibration_error,
    equal_mass_calibration_error,
    expected_calibration_error,
    negative_log_likelihood,
    reliability_diagram,
)

tm_classification = pytest.importorskip("torchmetrics.functional.classification")


def _torchmetrics(probs: torch.Tensor, labels: torch.Tensor, n_bins: int, norm: str) -> float:
    return float(
        tm_classification.multiclass_calibration_error(
            probs, labels, num_classes=probs.shape[1], n_bins=n_bins, norm=norm
        )
    )


def _random_case(seed: int, n: int, n_classes: int, scale: float):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, n_classes, generator=g) * scale
    labels = torch.randint(0, n_classes, (n,), generator=g)
    # make the classifier better than chance so bins hold both right and wrong samples
    logits[torch.arange(n), labels] += scale * torch.rand(n, generator=g)
    return torch.softmax(logits, -1), labels


def _guo_reference(probs: np.ndarray, labels: np.ndarray, n_bins: int, norm: str) -> float:
    """Guo et al.'s binning written from the paper: bin m = ((m-1)/M, m/M], 0 in bin 1."""
    conf = probs.max(1)
    correct = (probs.argmax(1) == labels).astype(float)
    total, worst, sq = 0.0, 0.0, 0.0
    for m in range(n_bins):
        lo, hi = m / n_bins, (m + 1) / n_bins
        sel = (conf > lo) & (conf <= hi) if m > 0 else (conf >= lo) & (conf <= hi)
        if sel.sum() == 0:
            continue
        gap = abs(correct[sel].mean() - conf[sel].mean())
        total += sel.mean() * gap
        sq += sel.mean() * gap**2
        worst = max(worst, gap)
    return {"l1": total, "l2": math.sqrt(sq), "max": worst}[norm]


@pytest.mark.parametrize("norm", ["l1", "l2", "max"])
@pytest.mark.parametrize("n_bins", [1, 5, 10, 15, 40])
@pytest.mark.parametrize("seed,scale", [(0, 1.0), (1, 4.0), (2, 0.3)])
def test_matches_torchmetrics_on_random_inputs(norm: str, n_bins: int, seed: int, scale: float):
    probs, labels = _random_case(seed, 500, 7, scale)
    ours = expected_calibration_error(probs, labels, n_bins=n_bins, norm=norm)
    assert ours == pytest.approx(_torchmetrics(probs, labels, n_bins, norm), abs=2e-6)


def _edge_case(n_bins: int, n_classes: int = 5):
    """Confidences exactly on each float32 bin edge, with neighbours on both sides, and 1.0."""
    edges = torch.linspace(0, 1, n_bins + 1)
    half = 0.5 / n_bins
    confs, correct = [], []
    for m, e in enumerate(edges.tolist()):
        if e < 1 / n_classes:  # a top-label confidence is at least 1/C
            continue
        for k, c in enumerate((e, e - half / 2, e + half / 2)):
            if 1 / n_classes <= c <= 1:
                confs.append(c)
                correct.append((m + k) % 2 == 0)
    confs += [1.0, 1.0, 1.0, 0.999, 0.999]
    correct += [True, True, False, False, True]
    rows, labels = [], []
    for i, (c, ok) in enumerate(zip(confs, correct)):
        row = torch.full((n_classes,), (1 - c) / (n_classes - 1))
        top = i % n_classes
        row[top] = c
        rows.append(row)
        labels.append(top if ok else (top + 1) % n_classes)
    probs = torch.stack(rows)
    # the confidences must be exactly the intended values for the test to mean anything
    assert torch.equal(probs.max(1).values, torch.tensor(confs, dtype=torch.float32))
    return probs, torch.tensor(labels)


@pytest.mark.parametrize("norm", ["l1", "l2", "max"])
@pytest.mark.parametrize("n_bins", [4, 10, 15])
def test_matches_torchmetrics_on_edges_and_one(norm: str, n_bins: int):
    """Confidences exactly on the float32 bin edges (with neighbours) and at 1.0."""
    probs, labels = _edge_case(n_bins)
    ours = expected_calibration_error(probs, labels, n_bins=n_bins, norm=norm)
    assert ours == pytest.approx(_torchmetrics(probs, labels, n_bins, norm), abs=2e-6)


@pytest.mark.parametrize("n_bins", [4, 10, 15])
def test_edge_case_separates_the_conventions(n_bins: int):
    # guards the test above: a binning that put edges in the bin below would fail it
    probs, labels = _edge_case(n_bins)
    tm = expected_calibration_error(probs, labels, n_bins=n_bins)
    guo = expected_calibration_error(probs, labels, n_bins=n_bins, convention="guo")
    assert abs(tm - guo) > 1e-3


def test_one_has_its_own_bin_in_torchmetrics_convention_and_joins_the_last_in_guo():
    probs = torch.tensor([[1.0, 0.0], [0.95, 0.05], [0.95, 0.05]])
    labels = torch.tensor([0, 1, 0])
    tm = calibration_bins(probs, labels, n_bins=10)
    assert tm.count.tolist() == [0.0] * 9 + [2.0, 1.0]
    guo = calibration_bins(probs, labels, n_bins=10, convention="guo")
    assert guo.count.tolist() == [0.0] * 9 + [3.0]
    # torchmetrics: |0.5 - 0.95|·2/3 + |1 - 1|·1/3; guo: |2/3 - 2.9/3|
    assert expected_calibration_error(probs, labels, n_bins=10) == pytest.approx(0.3)
    assert expected_calibration_error(probs, labels, n_bins=10, convention="guo") == pytest.approx(
        0.3
    )
    # max norm tells them apart: torchmetrics' worst bin is 0.45, guo's pooled bin 0.3
    assert expected_calibration_error(probs, labels, n_bins=10, norm="max") == pytest.approx(0.45)
    assert expected_calibration_error(
        probs, labels, n_bins=10, norm="max", convention="guo"
    ) == pytest.approx(0.3)


@pytest.mark.parametrize("norm", ["l1", "l2", "max"])
@pytest.mark.parametrize("seed", [0, 3])
def test_guo_convention_matches_the_paper_binning(norm: str, seed: int):
    probs, labels = _random_case(seed, 300, 4, 2.0)
    ours = expected_calibration_error(probs, labels, n_bins=15, norm=norm, convention="guo")
    ref = _guo_reference(probs.double().numpy(), labels.numpy(), 15, norm)
    assert ours == pytest.approx(ref, abs=1e-6)


def test_perfectly_calibrated_bins_give_zero_and_overconfidence_is_measured():
    # 10 samples at confidence 0.7 (3 wrong) and 10 at 0.9 (1 wrong) -> calibrated
    probs = torch.tensor([[0.7, 0.3]] * 10 + [[0.9, 0.1]] * 10)
    labels = torch.tensor([0] * 7 + [1] * 3 + [0] * 9 + [1])
    for norm in ("l1", "l2", "max"):
        assert expected_calibration_error(probs, labels, norm=norm) == pytest.approx(0, abs=1e-7)
    wrong = torch.tensor([0] * 5 + [1] * 5 + [0] * 9 + [1])  # accuracy 0.5 at confidence 0.7
    assert expected_calibration_error(probs, wrong) == pytest.approx(0.5 * 0.2)
    assert expected_calibration_error(probs, wrong, norm="max") == pytest.approx(0.2)
    assert expected_calibration_error(probs, wrong, norm="l2") == pytest.approx(
        math.sqrt(0.5 * 0.04)
    )


def _equal_mass_reference(probs: np.ndarray, labels: np.ndarray, n_bins: int, norm: str):
    conf = probs.max(1)
    correct = (probs.argmax(1) == labels).astype(float)
    order = np.argsort(conf, kind="stable")
    n = len(conf)
    total, sq, worst = 0.0, 0.0, 0.0
    for m in range(n_bins):
        idx = [order[i] for i in range(n) if (i * n_bins) // n == m]
        if not idx:
            continue
        gap = abs(correct[idx].mean() - conf[idx].mean())
        total += len(idx) / n * gap
        sq += len(idx) / n * gap**2
        worst = max(worst, gap)
    return {"l1": total, "l2": math.sqrt(sq), "max": worst}[norm]


@pytest.mark.parametrize("norm", ["l1", "l2", "max"])
@pytest.mark.parametrize("n,n_bins", [(100, 10), (103, 15), (7, 15), (64, 1)])
def test_equal_mass_against_reference(norm: str, n: int, n_bins: int):
    probs, labels = _random_case(n, n, 6, 2.0)
    ours = equal_mass_calibration_error(probs, labels, n_bins=n_bins, norm=norm)
    ref = _equal_mass_reference(probs.double().numpy(), labels.numpy(), n_bins, norm)
    assert ours == pytest.approx(ref, abs=1e-6)
    bins = calibration_bins(probs, labels, n_bins=n_bins, binning="equal_mass")
    sizes = bins.count[: min(n, n_bins)]
    assert int(bins.count.sum()) == n and float(sizes.max() - sizes.min()) <= 1


def _classwise_reference(probs: np.ndarray, labels: np.ndarray, n_bins: int) -> float:
    """Kull et al. class-wise ECE with torchmetrics' [lo, hi) bins and 1.0 on its own."""
    n, k = probs.shape
    edges = torch.linspace(0, 1, n_bins + 1).numpy()
    per_class = []
    for c in range(k):
        p = probs[:, c].astype(np.float32)
        hit = (labels == c).astype(float)
        total = 0.0
        for m in range(n_bins + 1):
            if m < n_bins:
                sel = (p >= edges[m]) & (p < edges[m + 1])
            else:
                sel = p >= 1.0
            if sel.any():
                total += sel.sum() / n * abs(hit[sel].mean() - p[sel].astype(float).mean())
        per_class.append(total)
    return float(np.mean(per_class))


@pytest.mark.parametrize("seed", [0, 1])
def test_classwise_against_reference(seed: int):
    probs, labels = _random_case(seed, 400, 5, 2.0)
    ours = classwise_calibration_error(probs, labels, n_bins=10)
    assert ours == pytest.approx(_classwise_reference(probs.numpy(), labels.numpy(), 10), abs=1e-6)


def test_classwise_binary_equals_ece_of_each_class_average():
    # for two classes, class 1's problem mirrors class 0's: cw-ECE = ECE of p_0 vs 1[y = 0]
    probs, labels = _random_case(5, 300, 2, 2.0)
    cw = classwise_calibration_error(probs, labels, n_bins=10, convention="guo")
    per = []
    for c in (0, 1):
        p = probs[:, c].double().numpy()
        hit = (labels.numpy() == c).astype(float)
        total = 0.0
        for m in range(10):
            lo, hi = m / 10, (m + 1) / 10
            sel = (p > lo) & (p <= hi) if m else (p >= lo) & (p <= hi)
            if sel.any():
                total += sel.mean() * abs(hit[sel].mean() - p[sel].mean())
        per.append(total)
    assert cw == pytest.approx(np.mean(per), abs=1e-6)


def test_nll_and_accuracy_against_references():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(50, 6, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 6, (50,), generator=g)
    ref = torch.distributions.Categorical(logits=logits).log_prob(labels).mean()
    assert negative_log_likelihood(logits, labels) == pytest.approx(-float(ref), rel=1e-12)
    assert accuracy(logits, labels) == pytest.approx(
        float((logits.argmax(1) == labels).double().mean())
    )


@pytest.mark.parametrize(
    "probs,labels,match",
    [
        (torch.tensor([[0.5, 0.6]]), torch.tensor([0]), "sum to 1"),
        (torch.tensor([[1.5, -0.5]]), torch.tensor([0]), r"\[0, 1\]"),
        (torch.tensor([[float("nan"), 0.5]]), torch.tensor([0]), "NaN"),
        (torch.tensor([[0.5, 0.5]]), torch.tensor([2]), "out of range"),
        (torch.tensor([[0.5, 0.5]]), torch.tensor([0.0]), "integer"),
        (torch.tensor([[0.5, 0.5]]), torch.tensor([0, 1]), "shape"),
        (torch.zeros(0, 3), torch.zeros(0, dtype=torch.long), "n_samples"),
        (torch.tensor([0.5, 0.5]), torch.tensor([0]), "dimension"),
    ],
)
def test_bad_inputs_raise(probs, labels, match):
    with pytest.raises(ValueError, match=match):
        expected_calibration_error(probs, labels)


def test_bad_options_raise():
    probs, labels = torch.tensor([[0.5, 0.5]]), torch.tensor([0])
    with pytest.raises(ValueError, match="norm"):
        expected_calibration_error(probs, labels, norm="l3")
    with pytest.raises(ValueError, match="n_bins"):
        expected_calibration_error(probs, labels, n_bins=0)
    with pytest.raises(ValueError, match="convention"):
        expected_calibration_error(probs, labels, convention="netcal")
    with pytest.raises(ValueError, match="binning"):
        calibration_bins(probs, labels, binning="quantile")


def test_half_precision_is_upcast():
    probs, labels = _random_case(0, 200, 4, 2.0)
    ref = expected_calibration_error(probs.half().float(), labels)
    assert expected_calibration_error(probs.half(), labels) == pytest.approx(ref, abs=1e-7)


def test_reliability_diagram_returns_a_figure(tmp_path):
    from matplotlib.figure import Figure

    probs, labels = _random_case(0, 200, 4, 2.0)
    probs[0] = torch.tensor([1.0, 0.0, 0.0, 0.0])  # the 1.0 slot is folded into the last bar
    fig = reliability_diagram(probs, labels, n_bins=10, title="student")
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    heights = [p.get_height() for p in ax.patches[: len(ax.patches) // 2]]
    bins = calibration_bins(probs, labels, n_bins=10)
    expected = bins.accuracy[:10][bins.count[:10] > 0]
    assert len(heights) == int((bins.count[:10] > 0).sum())
    assert heights[:-1] == pytest.approx(expected[:-1].tolist())
    fig.savefig(tmp_path / "reliability.png")
    assert (tmp_path / "reliability.png").stat().st_size > 0

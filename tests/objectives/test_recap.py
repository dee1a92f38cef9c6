"""RECAP: the signals and weights against plain-Python references, the loss and its gradient,
the stateful helper (warm-up, window, state round trip) and bad input."""

from __future__ import annotations

import json
import math
import statistics

import pytest
import torch

from divergent.objectives.recap import RecapWeighter, recap_loss, recap_signals, recap_weights


def _ref(history: list[list[float]], window: int, temperature: float):
    """c, i, s and λ = K softmax(s/T) per objective, with Python floats."""
    k = len(history[0])
    c, i, s = [], [], []
    for j in range(k):
        column = [row[j] for row in history[-2 * window :]]
        prev, cur = column[:window], column[window:]
        mu_prev, mu = statistics.fmean(prev), statistics.fmean(cur)
        sigma = statistics.pstdev(cur)
        c.append(mu / mu_prev)
        i.append(sigma / (mu + mu_prev))
        s.append(c[-1] + i[-1])
    z = [math.exp(v / temperature) for v in s]
    lam = [k * v / math.fsum(z) for v in z]
    return c, i, s, lam


@pytest.mark.parametrize(("window", "temperature"), [(1, 5.0), (3, 5.0), (5, 0.5)])
def test_signals_and_weights_match_plain_python(window: int, temperature: float) -> None:
    g = torch.Generator().manual_seed(window)
    history = 0.1 + torch.rand(17, 4, generator=g, dtype=torch.float64)
    c, i, s, lam = _ref(history.tolist(), window, temperature)
    sig = recap_signals(history, window=window)
    torch.testing.assert_close(sig.convergence, torch.tensor(c, dtype=torch.float64))
    torch.testing.assert_close(sig.instability, torch.tensor(i, dtype=torch.float64))
    torch.testing.assert_close(sig.priority, torch.tensor(s, dtype=torch.float64))
    w = recap_weights(history, window=window, temperature=temperature)
    torch.testing.assert_close(w, torch.tensor(lam, dtype=torch.float64))
    assert float(w.sum()) == pytest.approx(4.0, abs=1e-12)


def test_rising_and_volatile_losses_gain_weight_falling_ones_lose_it() -> None:
    steps = 8
    falling = [2.0 * 0.9**t for t in range(steps)]
    flat = [1.0] * steps
    rising = [0.5 * 1.05**t for t in range(steps)]
    volatile = [1.0 + (0.5 if t % 2 else -0.5) for t in range(steps)]
    h = torch.tensor([falling, flat, rising, volatile], dtype=torch.float64).T
    w = recap_weights(h, window=4)
    assert float(w[0]) < float(w[1]) < float(w[2])  # c: 0.656 < 1 < 1.216
    assert float(w[3]) > float(w[1])  # same c = 1, i = 0.25 > 0
    # large T → uniform, small T → the top priority takes (almost) all of K
    torch.testing.assert_close(
        recap_weights(h, window=4, temperature=1e9), torch.ones(4, dtype=torch.float64)
    )
    _, _, priority, _ = _ref(h.tolist(), 4, 5.0)
    top = max(range(4), key=priority.__getitem__)
    assert float(recap_weights(h, window=4, temperature=1e-5)[top]) == pytest.approx(4.0)


def test_batched_histories_equal_one_by_one() -> None:
    g = torch.Generator().manual_seed(7)
    h = 0.2 + torch.rand(2, 3, 10, 2, generator=g, dtype=torch.float64)
    w = recap_weights(h, window=4)
    assert w.shape == (2, 3, 2)
    for a in range(2):
        for b in range(3):
            torch.testing.assert_close(w[a, b], recap_weights(h[a, b], window=4))


def test_only_the_last_two_windows_count_and_nan_propagates() -> None:
    g = torch.Generator().manual_seed(8)
    h = 0.2 + torch.rand(12, 3, generator=g, dtype=torch.float64)
    h2 = h.clone()
    h2[:4] = 50.0  # older than 2·window = 8 steps
    torch.testing.assert_close(recap_weights(h, window=4), recap_weights(h2, window=4))
    h2[-1, 1] = math.nan
    assert bool(torch.isnan(recap_weights(h2, window=4)).all())


def test_loss_and_its_gradient_use_constant_weights() -> None:
    losses = torch.tensor([0.5, 2.0, 1.0], dtype=torch.float64, requires_grad=True)
    weights = torch.tensor([0.9, 1.5, 0.6], dtype=torch.float64, requires_grad=True)
    loss = recap_loss(losses, weights)
    assert float(loss.detach()) == pytest.approx((0.45 + 3.0 + 0.6) / 3)
    loss.backward()
    torch.testing.assert_close(losses.grad, weights.detach() / 3)
    assert weights.grad is None


def test_weighter_warm_up_window_and_state_round_trip() -> None:
    weighter = RecapWeighter(2, window=3, temperature=2.0)
    g = torch.Generator().manual_seed(9)
    seen = []
    for step in range(10):
        values = 0.1 + torch.rand(2, generator=g, dtype=torch.float64)
        values.requires_grad_(True)
        expected_w = (
            torch.ones(2, dtype=torch.float64)
            if step < 6
            else recap_weights(
                torch.tensor(seen[-6:], dtype=torch.float64), window=3, temperature=2.0
            )
        )
        torch.testing.assert_close(weighter.weights, expected_w)
        loss = weighter.step(values)
        assert float(loss.detach()) == pytest.approx(float((expected_w * values.detach()).mean()))
        seen.append(values.detach().tolist())
    assert weighter.history.shape == (6, 2)  # only 2·window steps are kept
    state = json.loads(json.dumps(weighter.state_dict()))
    other = RecapWeighter(2, window=3)
    other.load_state_dict(state)
    torch.testing.assert_close(other.weights, weighter.weights)
    assert other.temperature == 2.0


def test_bad_inputs() -> None:
    h = torch.ones(6, 2)
    with pytest.raises(ValueError, match="window"):
        recap_signals(h, window=0)
    with pytest.raises(ValueError, match="2 · window"):
        recap_signals(h, window=4)
    with pytest.raises(ValueError, match="negative"):
        recap_signals(-h, window=2)
    with pytest.raises(ValueError, match="previous-window mean is 0"):
        recap_signals(torch.cat([torch.zeros(2, 2), torch.ones(2, 2)]), window=2)
    with pytest.raises(ValueError, match="history"):
        recap_signals(torch.ones(6), window=2)
    with pytest.raises(ValueError, match="temperature"):
        recap_weights(h, window=2, temperature=0.0)
    with pytest.raises(ValueError, match="weights"):
        recap_loss(torch.ones(3), torch.ones(2))
    with pytest.raises(ValueError, match="n_objectives"):
        RecapWeighter(0)
    weighter = RecapWeighter(2, window=2)
    with pytest.raises(ValueError, match="K = 2"):
        weighter.record([1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match=">= 0"):
        weighter.record([1.0, -2.0])
    with pytest.raises(ValueError, match="window"):
        weighter.load_state_dict({"n_objectives": 2, "window": 3, "history": []})

r"""RECAP: objective reweighting from short-horizon convergence and instability signals.

Phan, Yang, Yao, Zhang, Bi, Tang, Khabsa, Liu, Lei (2025, "Beyond Reasoning Gains: Mitigating
General Capabilities Forgetting in Large Reasoning Models", arXiv 2510.21978) train K
objectives at once (RLVR rewards and replayed general-capability SFT) and reweight them online.
For objective k with per-step values :math:`L_k^{(t)}` and a window W:

* :math:`\mu_k` = mean of :math:`L_k` over the last W steps, :math:`\tilde\mu_k` = mean over the
  W steps before, :math:`\sigma_k` = standard deviation over the last W steps;
* convergence rate :math:`c_k = \mu_k / \tilde\mu_k`;
* inverse signal-to-noise ratio :math:`i_k = \sigma_k / (\mu_k + \tilde\mu_k)`;
* priority :math:`s_k = c_k + i_k`;
* weights :math:`\lambda_k = K\,\mathrm{softmax}_k(s_k / T)` (T = 5 by default), and the loss
  :math:`\mathcal{L} = \frac1K\sum_k \lambda_k L_k`.

**Sign convention (ours; the sources are ambiguous).** :math:`L_k` is a *loss*: positive,
lower is better. An objective whose loss falls quickly (:math:`c_k < 1`) loses weight, one that
has stalled (:math:`c_k \approx 1`) or is being forgotten (its loss rises, :math:`c_k > 1`) or
is volatile (large :math:`i_k`) gains weight. Pass a reward as a loss, e.g. ``1 − accuracy`` or
``r_max − r``. The weights are constants of the step (no gradient flows through them).

The window W is not stated in the sources we read; ``window=10`` is our default. Before
``2·window`` steps have been seen the weights are uniform (all 1).

Functional API: :func:`recap_signals`, :func:`recap_weights`, :func:`recap_loss`; the stateful
helper :class:`RecapWeighter` keeps the history for a training loop.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor

from divergent._validation import (
    check_float_tensor,
    check_int,
    check_positive_scalar,
    compute_dtype,
)

__all__ = [
    "RecapSignals",
    "RecapWeighter",
    "recap_loss",
    "recap_signals",
    "recap_weights",
]


class RecapSignals(NamedTuple):
    """RECAP's per-objective signals, each ``(..., K)``.

    Attributes:
        convergence: :math:`c_k = \\mu_k / \\tilde\\mu_k`.
        instability: :math:`i_k = \\sigma_k / (\\mu_k + \\tilde\\mu_k)`.
        priority: :math:`s_k = c_k + i_k`.
    """

    convergence: Tensor
    instability: Tensor
    priority: Tensor


def _check_window(window: Any) -> int:
    return check_int(window, "window", 1, "steps")


def recap_signals(history: Tensor, *, window: int = 10) -> RecapSignals:
    r"""Convergence rate, inverse SNR and priority of each objective from its recent losses.

    Uses the last ``2 · window`` steps of ``history``:

    .. math::

        \mu_k = \tfrac1W\sum_{j=0}^{W-1} L_k^{(t-j)},\quad
        \tilde\mu_k = \tfrac1W\sum_{j=W}^{2W-1} L_k^{(t-j)},\quad
        \sigma_k = \Big(\tfrac1W\sum_{j=0}^{W-1}\big(L_k^{(t-j)} - \mu_k\big)^2\Big)^{1/2},

    :math:`c_k = \mu_k/\tilde\mu_k`, :math:`i_k = \sigma_k/(\mu_k + \tilde\mu_k)`,
    :math:`s_k = c_k + i_k` (σ is the population standard deviation of the window).

    Args:
        history: per-step losses, ``(..., steps, K)`` with ``steps >= 2 · window``; values
            must be >= 0 (losses, lower is better) and each previous-window mean > 0.
        window: W, the number of steps per window.

    Returns:
        :class:`RecapSignals` of ``(..., K)`` tensors. NaN in the used steps gives NaN.

    Raises:
        ValueError: a non-float ``history``, fewer than 2 axes or ``2 · window`` steps,
            negative values, a previous-window mean of 0, a bad ``window``.

    References:
        Phan et al. (2025), arXiv 2510.21978, Eq. 1.

    Example:
        >>> import torch
        >>> falling = [4.0, 4.0, 2.0, 2.0]; rising = [1.0, 1.0, 2.0, 2.0]
        >>> recap_signals(torch.tensor([falling, rising]).T, window=2).convergence
        tensor([0.5000, 2.0000])
    """
    w = _check_window(window)
    h = check_float_tensor(history, "history", min_dim=2)
    if h.shape[-2] < 2 * w:
        raise ValueError(
            f"`history` needs at least 2 · window = {2 * w} steps on its second-to-last axis "
            f"(shape (..., steps, K)), got shape {tuple(h.shape)}"
        )
    if h.shape[-1] == 0:
        raise ValueError(f"`history` holds no objective (K = 0), shape {tuple(h.shape)}")
    recent = h[..., -2 * w :, :]
    if bool((recent < 0).any()):
        raise ValueError(
            f"`history` has negative values (min {float(recent.min()):g}); RECAP takes losses "
            ">= 0 (lower is better); pass a reward r as a loss such as r_max − r"
        )
    dtype = compute_dtype(h)
    recent = recent.to(dtype)
    previous, current = recent[..., :w, :], recent[..., w:, :]
    mu_prev, mu = previous.mean(-2), current.mean(-2)
    if bool((mu_prev == 0).any()):
        raise ValueError(
            "`history` has an objective whose previous-window mean is 0, so its convergence "
            "rate μ/μ̃ is undefined; add a small floor to that loss"
        )
    sigma = current.std(-2, correction=0)
    convergence = mu / mu_prev
    instability = sigma / (mu + mu_prev)
    return RecapSignals(convergence, instability, convergence + instability)


def recap_weights(history: Tensor, *, window: int = 10, temperature: float = 5.0) -> Tensor:
    r"""RECAP's objective weights :math:`\lambda_k = K\,\mathrm{softmax}_k(s_k/T)`.

    Args:
        history: per-step losses, ``(..., steps, K)`` (see :func:`recap_signals`).
        window: W.
        temperature: T > 0 (the paper: 5; large T → uniform weights).

    Returns:
        The weights, ``(..., K)``, summing to K along the last axis (float64 for float64
        input, else float32).

    References:
        Phan et al. (2025), arXiv 2510.21978, Eq. 1.

    Example:
        >>> import torch
        >>> h = torch.tensor([[4.0, 1.0], [4.0, 1.0], [2.0, 2.0], [2.0, 2.0]])
        >>> recap_weights(h, window=2, temperature=1.0)  # the rising loss gets the weight
        tensor([0.3649, 1.6351])
    """
    t = check_positive_scalar(temperature, "temperature", what="the softmax temperature T")
    s = recap_signals(history, window=window).priority
    return s.shape[-1] * torch.softmax(s / t, dim=-1)


def recap_loss(losses: Tensor, weights: Tensor) -> Tensor:
    r"""The reweighted loss :math:`\frac1K\sum_k \lambda_k L_k` (weights held constant).

    Args:
        losses: the objectives' losses, ``(..., K)`` (differentiable).
        weights: :math:`\lambda`, broadcasting to ``losses``; detached here.

    Returns:
        ``(...)``.

    References:
        Phan et al. (2025), arXiv 2510.21978.
    """
    losses = check_float_tensor(losses, "losses", min_dim=1)
    weights = check_float_tensor(weights, "weights", min_dim=1)
    if weights.shape[-1] != losses.shape[-1]:
        raise ValueError(
            f"`weights` must have K = {losses.shape[-1]} entries on its last axis like `losses`, "
            f"got shape {tuple(weights.shape)}"
        )
    return (weights.detach().to(losses.dtype) * losses).mean(-1)


class RecapWeighter:
    r"""Stateful RECAP weights for a training loop.

    Keeps the last ``2 · window`` values of each objective; :attr:`weights` are uniform until
    ``2 · window`` steps have been recorded, then :func:`recap_weights` of that history.

    Usage::

        weighter = RecapWeighter(n_objectives=3, window=10)
        for batch in data:
            losses = torch.stack([loss_a(batch), loss_b(batch), loss_c(batch)])
            loss = weighter.step(losses)    # (1/K) Σ λ_k L_k with λ from past steps
            loss.backward(); optimizer.step(); optimizer.zero_grad()

    Args:
        n_objectives: K ≥ 1.
        window: W ≥ 1.
        temperature: T > 0.

    References:
        Phan et al. (2025), arXiv 2510.21978.
    """

    def __init__(self, n_objectives: int, *, window: int = 10, temperature: float = 5.0) -> None:
        check_int(n_objectives, "n_objectives", 1)
        self.n_objectives = n_objectives
        self.window = _check_window(window)
        self.temperature = float(check_positive_scalar(temperature, "temperature"))  # type: ignore[arg-type]
        self._history: list[list[float]] = []

    @property
    def history(self) -> Tensor:
        """The recorded values (at most ``2 · window`` steps), ``(steps, K)`` float64."""
        return torch.tensor(self._history, dtype=torch.float64).reshape(-1, self.n_objectives)

    @property
    def weights(self) -> Tensor:
        """λ for the next step, ``(K,)`` float64 (uniform during the first ``2 · window``)."""
        if len(self._history) < 2 * self.window:
            return torch.ones(self.n_objectives, dtype=torch.float64)
        return recap_weights(self.history, window=self.window, temperature=self.temperature)

    def record(self, losses: Tensor | Sequence[float]) -> None:
        """Append one step's values (detached); ``losses`` has K finite entries >= 0."""
        values = torch.as_tensor(
            losses.detach() if isinstance(losses, Tensor) else losses, dtype=torch.float64
        ).reshape(-1)
        if values.numel() != self.n_objectives:
            raise ValueError(
                f"`losses` must hold K = {self.n_objectives} values, got {values.numel()}"
            )
        if not bool(torch.isfinite(values).all()) or bool((values < 0).any()):
            raise ValueError(f"`losses` must be finite and >= 0, got {values.tolist()}")
        self._history.append(values.tolist())
        del self._history[: -2 * self.window]

    def step(self, losses: Tensor) -> Tensor:
        r""":math:`\frac1K\sum_k\lambda_k L_k` with λ from the past steps, then record ``losses``.

        Args:
            losses: this step's losses, ``(K,)`` (differentiable).

        Returns:
            The scalar loss.
        """
        losses = check_float_tensor(losses, "losses", dims=1)
        loss = recap_loss(losses, self.weights)
        self.record(losses)
        return loss

    def state_dict(self) -> dict[str, Any]:
        """The history and options (plain Python, JSON-serialisable)."""
        return {
            "n_objectives": self.n_objectives,
            "window": self.window,
            "temperature": self.temperature,
            "history": [list(r) for r in self._history],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` (the options must match)."""
        for key in ("n_objectives", "window"):
            if state.get(key) != getattr(self, key):
                raise ValueError(
                    f"state has {key}={state.get(key)!r} but this weighter has "
                    f"{getattr(self, key)!r}"
                )
        history = [[float(v) for v in row] for row in state["history"]]
        bad = (len(r) != self.n_objectives or not all(map(math.isfinite, r)) for r in history)
        if any(bad):
            raise ValueError("state `history` rows must hold K finite values")
        self._history = history[-2 * self.window :]
        self.temperature = float(state.get("temperature", self.temperature))

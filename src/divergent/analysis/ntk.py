r"""The neural tangent kernel: empirical, infinite-width (ReLU) and the linearised dynamics.

For a network :math:`f_\theta:\mathbb R^{n_0}\to\mathbb R^k` the *empirical NTK* is

.. math::

    \Theta_\theta(x, x') = \sum_p \partial_{\theta_p} f_\theta(x)\,
    \partial_{\theta_p} f_\theta(x')^\top = J_\theta(x) J_\theta(x')^\top \in \mathbb R^{k\times k}.

Jacot, Gabriel & Hongler (2018) show that for an MLP in the *NTK parameterisation*
(:class:`NTKMLP`: :math:`\tilde\alpha^{(\ell+1)} = n_\ell^{-1/2} W^{(\ell)}\sigma(\tilde
\alpha^{(\ell)}) + \beta b^{(\ell)}`, every parameter :math:`\mathcal N(0, 1)`) the kernel
converges, as the widths grow, to a deterministic limit :math:`\Theta_\infty\otimes I_k` that
stays constant during gradient-flow training, so the trained network is the kernel-regression
(linearised) predictor of :func:`linearized_prediction`. This module holds:

* :func:`empirical_ntk` — :math:`J(x)J(x')^\top` of any ``nn.Module`` (``torch.func``);
* :class:`NTKMLP` — the NTK-parameterised MLP, with :meth:`NTKMLP.ntk`, the same kernel by
  layer-wise back-propagation (no Jacobian is stored, so widths of thousands are cheap);
* :func:`relu_gaussian_expectations`, :func:`relu_nngp`, :func:`relu_ntk` — the infinite-width
  limit for ReLU by the recursion (arc-cosine closed forms);
* :func:`linearized_prediction` — :math:`f_t(x)` of the linearised gradient flow (or gradient
  descent) through an eigendecomposition of :math:`\Theta(X, X)`.

References:
    A. Jacot, F. Gabriel, C. Hongler (2018), Neural Tangent Kernel: Convergence and
    Generalization in Neural Networks, NeurIPS, arXiv 1806.07572.
    Y. Cho, L. Saul (2009), Kernel Methods for Deep Learning, NeurIPS (arc-cosine kernels).
    J. Lee et al. (2019), Wide Neural Networks of Any Depth Evolve as Linear Models Under
    Gradient Descent, NeurIPS, arXiv 1902.06720.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call, jacrev, vmap

from divergent._validation import (
    check_bool,
    check_float_tensor,
    check_int,
    check_positive_scalar,
    check_same_device,
)

__all__ = [
    "NTKMLP",
    "empirical_ntk",
    "linearized_prediction",
    "relu_gaussian_expectations",
    "relu_nngp",
    "relu_ntk",
]


def _check_pair_inputs(x1: Any, x2: Any) -> tuple[Tensor, Tensor]:
    x1 = check_float_tensor(x1, "x1", min_dim=1)
    x2 = x1 if x2 is None else check_float_tensor(x2, "x2", min_dim=1)
    if x1.shape[1:] != x2.shape[1:]:
        raise ValueError(
            f"`x1` and `x2` must share the shape of one example (all axes but the first), "
            f"got {tuple(x1.shape)} and {tuple(x2.shape)}"
        )
    for x, name in ((x1, "x1"), (x2, "x2")):
        if x.shape[0] == 0:
            raise ValueError(f"`{name}` must hold at least one example, got shape {tuple(x.shape)}")
    check_same_device(x1, "x1", x2, "x2")
    return x1, x2


def _outputs_as_matrix(out: Tensor, n: int) -> Tensor:
    if out.dim() == 1 and out.shape[0] == n:
        return out[:, None]
    if out.dim() == 2 and out.shape[0] == n:
        return out
    raise ValueError(
        f"`model` must map a batch of n = {n} examples to outputs of shape (n,) or (n, k), "
        f"got {tuple(out.shape)}"
    )


def empirical_ntk(model: nn.Module, x1: Tensor, x2: Tensor | None = None) -> Tensor:
    r"""The empirical neural tangent kernel :math:`\Theta(x, x') = J_\theta(x)J_\theta(x')^\top`.

    .. math::

        \Theta_{jj'}(x_a, x'_b) = \sum_{p} \frac{\partial f_j(x_a)}{\partial\theta_p}
        \frac{\partial f_{j'}(x'_b)}{\partial\theta_p}

    summed over every parameter of ``model`` with ``requires_grad`` (buffers are held fixed).
    The Jacobians are computed with ``torch.func`` (``vmap`` over the examples of ``jacrev``
    of the model applied to one example, so layers that couple a batch, such as BatchNorm in
    training mode, are not supported), one parameter tensor at a time: memory is
    O(n·k·largest parameter). For the wide MLPs of the NTK experiments use :meth:`NTKMLP.ntk`
    (layer-wise, no Jacobian stored).

    Args:
        model: maps a batch ``(n, ...)`` to ``(n,)`` (scalar output) or ``(n, k)``.
        x1: ``(n1, ...)`` inputs, floating point.
        x2: ``(n2, ...)`` inputs with the same per-example shape; None for ``x1``. When
            all trainable parameters of ``model`` share one floating dtype, ``x1`` and ``x2``
            must have it too (ValueError otherwise; nothing is cast silently).

    Returns:
        ``(n1, n2)`` when the model has one output (shape ``(n,)`` or ``(n, 1)``), else
        ``(n1, n2, k, k)``; in the dtype of the model's output. NaN in an input gives NaN in
        that input's rows / columns.

    Example:
        >>> lin = nn.Linear(2, 1, bias=False).double()
        >>> with torch.no_grad():
        ...     _ = lin.weight.copy_(torch.tensor([[0.5, -1.0]]))
        >>> x = torch.tensor([[1.0, 2.0], [3.0, 0.0]], dtype=torch.float64)
        >>> empirical_ntk(lin, x)  # a linear model's NTK is x xᵀ
        tensor([[5., 3.],
                [3., 9.]], dtype=torch.float64)

    References:
        Jacot, Gabriel, Hongler (2018), Eq. (1) and §4, arXiv 1806.07572.
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"`model` must be a torch.nn.Module, got {type(model).__name__}")
    x1, x2 = _check_pair_inputs(x1, x2)
    params = {k: v.detach() for k, v in model.named_parameters() if v.requires_grad}
    if not params:
        raise ValueError("`model` has no parameter with requires_grad=True: its NTK is empty")
    float_dtypes = {v.dtype for v in params.values() if v.is_floating_point()}
    if len(float_dtypes) == 1:
        (model_dtype,) = float_dtypes
        for x, name in ((x1, "x1"), (x2, "x2")):
            if x.dtype != model_dtype:
                raise ValueError(
                    f"`{name}` has dtype {x.dtype} but the parameters of `model` are "
                    f"{model_dtype}; cast the inputs (`{name}.to({model_dtype})`) or the model "
                    f"(`model.to({x.dtype})`) so that they match"
                )
    buffers = dict(model.named_buffers())
    same = x2 is x1
    with torch.no_grad():
        _outputs_as_matrix(functional_call(model, (params, buffers), (x1[:1],)), 1)

    total: Tensor | None = None
    for name in params:

        def one(t: Tensor, xi: Tensor, name: str = name) -> Tensor:
            # one example at a time, so a NaN in one input cannot reach another's row
            return functional_call(model, ({**params, name: t}, buffers), (xi[None],)).reshape(-1)

        jac = vmap(jacrev(one), in_dims=(None, 0))
        size = params[name].numel()
        j1 = jac(params[name], x1).reshape(x1.shape[0], -1, size)
        j2 = j1 if same else jac(params[name], x2).reshape(x2.shape[0], -1, size)
        part = torch.einsum("ajp,bkp->abjk", j1, j2)
        total = part if total is None else total + part
    assert total is not None
    return total[..., 0, 0] if total.shape[-1] == 1 else total


class NTKMLP(nn.Module):
    r"""A fully connected network in the NTK parameterisation (Jacot et al. 2018, §2).

    .. math::

        \tilde\alpha^{(1)} = \frac{1}{\sqrt{n_0}} W^{(0)} x + \beta b^{(0)},\qquad
        \tilde\alpha^{(\ell+1)} = \frac{1}{\sqrt{n_\ell}} W^{(\ell)}
        \sigma\big(\tilde\alpha^{(\ell)}\big) + \beta b^{(\ell)},\qquad
        f(x) = \tilde\alpha^{(L)}(x),

    every entry of every :math:`W^{(\ell)}, b^{(\ell)}` drawn :math:`\mathcal N(0, 1)`; σ is
    ReLU. ``widths = [n_0, n_1, …, n_L]`` gives L layers (L weight matrices, L − 1 hidden
    layers).

    Args:
        widths: ``[n_0, …, n_L]``, at least two positive integers.
        bias: β ≥ 0 (0.1 in the paper's figures); the biases are parameters even when β = 0.
        generator: a ``torch.Generator`` for the initialisation (None: the global one).
        dtype: parameter dtype, a floating-point ``torch.dtype`` (float64 by default).

    Example:
        >>> net = NTKMLP([2, 8, 1], generator=torch.Generator().manual_seed(0))
        >>> net(torch.zeros(3, 2)).shape
        torch.Size([3, 1])
    """

    def __init__(
        self,
        widths: Sequence[int],
        bias: float = 0.1,
        *,
        generator: torch.Generator | None = None,
        dtype: torch.dtype = torch.float64,
    ) -> None:
        super().__init__()
        widths = list(widths)
        if len(widths) < 2:
            raise ValueError(f"`widths` must hold at least 2 layer sizes, got {widths!r}")
        self.widths = [check_int(w, "widths", 1, "a layer size") for w in widths]
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise ValueError(
                f"`dtype` must be a floating-point torch.dtype (e.g. torch.float64 or "
                f"torch.float32), got {dtype!r}"
            )
        self.bias = float(check_positive_scalar(bias, "bias", allow_zero=True))
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for n_in, n_out in zip(self.widths[:-1], self.widths[1:]):
            w = torch.randn(n_out, n_in, generator=generator, dtype=dtype)
            b = torch.randn(n_out, generator=generator, dtype=dtype)
            self.weights.append(nn.Parameter(w))
            self.biases.append(nn.Parameter(b))

    def _forward_layers(self, x: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        """Layer inputs :math:`h^{(\\ell)}` (h⁰ = x) and pre-activations α̃^(ℓ+1)."""
        hs, pres = [x], []
        h = x
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            a = h @ w.T / math.sqrt(w.shape[1]) + self.bias * b
            pres.append(a)
            if i < len(self.weights) - 1:
                h = torch.relu(a)
                hs.append(h)
        return hs, pres

    def _check_input(self, x: Tensor, name: str) -> None:
        if x.dim() != 2 or x.shape[1] != self.widths[0]:
            raise ValueError(
                f"`{name}` must have shape (n, {self.widths[0]}), got {tuple(x.shape)}"
            )

    def forward(self, x: Tensor) -> Tensor:
        """``(n, n_0)`` → ``(n, n_L)`` (``x`` is cast to the parameters' dtype)."""
        self._check_input(x, "x")
        return self._forward_layers(x.to(self.weights[0].dtype))[1][-1]

    def _layer_terms(self, x: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        """Per layer ℓ: :math:`h^{(\\ell)}(x)` and :math:`\\delta^{(\\ell+1)} = \\partial f /
        \\partial\\tilde\\alpha^{(\\ell+1)}` of shape ``(n, n_{ℓ+1}, k)``."""
        hs, pres = self._forward_layers(x)
        n, k = x.shape[0], self.widths[-1]
        delta = torch.eye(k, dtype=pres[-1].dtype, device=x.device).expand(n, k, k)
        deltas = [delta]
        for i in range(len(self.weights) - 1, 0, -1):
            w = self.weights[i]
            flat = delta.permute(1, 0, 2).reshape(w.shape[0], n * k)  # (n_out, n·k)
            back = (w.T @ flat).reshape(w.shape[1], n, k).permute(1, 0, 2) / math.sqrt(w.shape[1])
            delta = back * (pres[i - 1] > 0).to(back.dtype)[..., None]
            deltas.append(delta)
        return hs, deltas[::-1]

    def ntk(self, x1: Tensor, x2: Tensor | None = None) -> Tensor:
        r"""This network's empirical NTK by layer-wise back-propagation.

        .. math::

            \Theta_{jj'}(x, x') = \sum_{\ell=0}^{L-1}\Big(\frac{h^{(\ell)}(x)\cdot
            h^{(\ell)}(x')}{n_\ell} + \beta^2\Big)\,\delta^{(\ell+1)}_{j}(x)\cdot
            \delta^{(\ell+1)}_{j'}(x'),

        with :math:`h^{(\ell)}` the input of layer ℓ and :math:`\delta^{(\ell+1)}_j =
        \partial f_j/\partial\tilde\alpha^{(\ell+1)}` (the weight and bias parts of
        :math:`J J^\top`). Equal to :func:`empirical_ntk` of this module; memory O(n·width·k).

        Returns:
            ``(n1, n2)`` when ``n_L = 1``, else ``(n1, n2, k, k)`` (as :func:`empirical_ntk`).
        """
        x1, x2 = _check_pair_inputs(x1, x2)
        self._check_input(x1, "x1")
        self._check_input(x2, "x2")
        dtype = self.weights[0].dtype
        with torch.no_grad():
            h1, d1 = self._layer_terms(x1.to(dtype))
            h2, d2 = (h1, d1) if x2 is x1 else self._layer_terms(x2.to(dtype))
            total = None
            for ell in range(len(self.weights)):
                gram = h1[ell] @ h2[ell].T / self.widths[ell] + self.bias**2
                part = gram[:, :, None, None] * torch.einsum("aij,bik->abjk", d1[ell], d2[ell])
                total = part if total is None else total + part
        assert total is not None
        return total[..., 0, 0] if self.widths[-1] == 1 else total


def relu_gaussian_expectations(var1: Any, var2: Any, cov: Any) -> tuple[Tensor, Tensor]:
    r"""ReLU moments of a centred bivariate Gaussian (arc-cosine closed forms).

    For :math:`(u, v)` Gaussian with variances :math:`s_1, s_2` and covariance c,
    :math:`\rho = c/\sqrt{s_1 s_2}`, :math:`\vartheta = \arccos\rho`:

    .. math::

        \mathbb E[\sigma(u)\sigma(v)] = \frac{\sqrt{s_1 s_2}}{2\pi}\big(\sin\vartheta +
        (\pi - \vartheta)\cos\vartheta\big),\qquad
        \mathbb E[\sigma'(u)\sigma'(v)] = \frac{\pi - \vartheta}{2\pi}.

    ρ is clipped to [−1, 1] when it is outside by rounding only (|ρ| ≤ 1 + 10⁻⁶); a larger
    |c| than :math:`\sqrt{s_1 s_2}` is not a covariance and raises ValueError. A zero variance
    gives ρ = 0 by convention (then the first moment is 0 and the second 1/4). NaN in any
    argument gives NaN in both moments at that position.

    Args:
        var1, var2, cov: broadcastable real numbers or real tensors (variances ≥ 0; bool,
            complex and non-numeric input raise TypeError); computed in float64.

    Returns:
        ``(E[σ(u)σ(v)], E[σ'(u)σ'(v)])``.

    Example:
        >>> e, d = relu_gaussian_expectations(1.0, 1.0, 0.0)
        >>> round(float(e), 6), round(float(d), 6)  # 1/(2π), 1/4
        (0.159155, 0.25)

    References:
        Cho & Saul (2009), arc-cosine kernels of degree 1 and 0.
    """
    s1, s2, c = (
        _real_float64(v, name) for v, name in ((var1, "var1"), (var2, "var2"), (cov, "cov"))
    )
    if bool((s1 < 0).any()) or bool((s2 < 0).any()):
        raise ValueError("`var1` and `var2` must be variances >= 0")
    scale = torch.sqrt(s1 * s2)
    nan = torch.isnan(scale) | torch.isnan(c)
    if bool(((c.abs() > (1.0 + _RHO_TOL) * scale) & ~nan).any()):
        worst = float(torch.where(nan, 0.0, c.abs() - scale).max())
        raise ValueError(
            "`cov` must satisfy |cov| <= sqrt(var1 * var2) (a correlation in [−1, 1]); "
            f"|cov| exceeds it by up to {worst:.3g}"
        )
    rho = torch.where(scale > 0, c / torch.where(scale > 0, scale, 1.0), 0.0)
    theta = torch.arccos(rho.clamp(-1.0, 1.0))
    e_sigma = scale / (2 * math.pi) * (torch.sin(theta) + (math.pi - theta) * torch.cos(theta))
    e_dot = (math.pi - theta) / (2 * math.pi)
    return torch.where(nan, math.nan, e_sigma), torch.where(nan, math.nan, e_dot)


_RHO_TOL = 1e-6  # |ρ| above 1 by more than this is not rounding


def _real_float64(v: Any, name: str) -> Tensor:
    if isinstance(v, Tensor):
        if v.dtype == torch.bool or v.is_complex():
            raise TypeError(f"`{name}` must be a real tensor or number, got dtype {v.dtype}")
        return v.to(torch.float64)
    if isinstance(v, bool):
        raise TypeError(f"`{name}` must be a real number or tensor, got a bool ({v!r})")
    try:
        out = torch.as_tensor(v, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError) as err:
        raise TypeError(
            f"`{name}` must be a real number or tensor, got {type(v).__name__} {v!r}"
        ) from err
    return out


def _relu_kernels(x1: Any, x2: Any, depth: Any, bias: Any) -> tuple[Tensor, Tensor]:
    x1, x2 = _check_pair_inputs(x1, x2)
    if x1.dim() != 2:
        raise ValueError(f"`x1` and `x2` must have shape (n, n_0), got {tuple(x1.shape)}")
    depth = check_int(depth, "depth", 1, "number of layers L")
    beta2 = float(check_positive_scalar(bias, "bias", allow_zero=True)) ** 2
    a, b = x1.double(), x2.double()
    n0 = a.shape[1]
    cross = a @ b.T / n0 + beta2  # Σ¹(x, x')
    d1 = (a * a).sum(1) / n0 + beta2  # Σ¹(x, x)
    d2 = (b * b).sum(1) / n0 + beta2  # Σ¹(x', x')
    ntk = cross
    for _ in range(depth - 1):
        e_cross, dot = relu_gaussian_expectations(d1[:, None], d2[None, :], cross)
        ntk = ntk * dot + e_cross + beta2  # Θ^{ℓ+1} = Θ^ℓ Σ̇^{ℓ+1} + Σ^{ℓ+1}
        cross = e_cross + beta2
        d1 = d1 / 2 + beta2  # E[σ(u)²] = s/2 on the diagonal
        d2 = d2 / 2 + beta2
    return cross, ntk


def relu_nngp(x1: Tensor, x2: Tensor | None = None, *, depth: int, bias: float = 0.1) -> Tensor:
    r"""The limiting output covariance :math:`\Sigma^{(L)}(x, x')` of a ReLU :class:`NTKMLP`.

    .. math::

        \Sigma^{(1)}(x, x') = \frac{x^\top x'}{n_0} + \beta^2,\qquad
        \Sigma^{(\ell+1)}(x, x') = \mathbb E_{f\sim\mathcal{GP}(0,\Sigma^{(\ell)})}
        [\sigma(f(x))\sigma(f(x'))] + \beta^2

    (the expectation by :func:`relu_gaussian_expectations`): at initialisation the network's
    outputs converge to i.i.d. Gaussian processes with this covariance.

    Args:
        x1: ``(n1, n_0)`` inputs; x2: ``(n2, n_0)`` or None for ``x1``.
        depth: L, the number of layers (``len(widths) - 1`` of :class:`NTKMLP`), ≥ 1.
        bias: β ≥ 0.

    Returns:
        ``(n1, n2)`` float64.

    Example:
        >>> x = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
        >>> relu_nngp(x, depth=2, bias=0.0)  # (1/2)/2 on the diagonal, (1/2)/(2π) off it
        tensor([[0.2500, 0.0796],
                [0.0796, 0.2500]], dtype=torch.float64)

    References:
        Jacot, Gabriel, Hongler (2018), Proposition 1, arXiv 1806.07572.
    """
    return _relu_kernels(x1, x2, depth, bias)[0]


def relu_ntk(x1: Tensor, x2: Tensor | None = None, *, depth: int, bias: float = 0.1) -> Tensor:
    r"""The infinite-width NTK :math:`\Theta^{(L)}_\infty(x, x')` of a ReLU :class:`NTKMLP`.

    .. math::

        \Theta^{(1)} = \Sigma^{(1)},\qquad
        \Theta^{(\ell+1)}(x, x') = \Theta^{(\ell)}(x, x')\,\dot\Sigma^{(\ell+1)}(x, x') +
        \Sigma^{(\ell+1)}(x, x'),\qquad
        \dot\Sigma^{(\ell+1)} = \mathbb E_{f\sim\mathcal{GP}(0,\Sigma^{(\ell)})}
        [\sigma'(f(x))\sigma'(f(x'))],

    with Σ as in :func:`relu_nngp` and both expectations in closed form (arc-cosine). On the
    diagonal with β = 0, :math:`\Theta^{(L)}(x, x) = L\,\|x\|^2/(n_0 2^{L-1})`.

    Args:
        x1: ``(n1, n_0)`` inputs; x2: ``(n2, n_0)`` or None for ``x1``.
        depth: L, the number of layers (``len(widths) - 1`` of :class:`NTKMLP`), ≥ 1.
        bias: β ≥ 0 (0.1 in the paper's figures).

    Returns:
        ``(n1, n2)`` float64; the network's kernel tends to this times :math:`I_k`.

    Example:
        >>> x = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
        >>> relu_ntk(x, depth=4, bias=0.0)  # diagonal 4·(1/2)/2³ = 0.25
        tensor([[0.2500, 0.0663],
                [0.0663, 0.2500]], dtype=torch.float64)

    References:
        Jacot, Gabriel, Hongler (2018), Theorem 1, arXiv 1806.07572.
    """
    return _relu_kernels(x1, x2, depth, bias)[1]


def linearized_prediction(
    kernel_test_train: Tensor,
    kernel_train: Tensor,
    y_train: Tensor,
    f0_train: Tensor,
    f0_test: Tensor,
    *,
    time: float,
    lr: float = 1.0,
    discrete: bool = False,
) -> Tensor:
    r"""The output of the linearised network after training with the MSE on (X, Y).

    Gradient flow on :math:`C = \frac{1}{2N}\sum_i\|f(x_i) - y_i\|^2` with learning rate η and a
    constant kernel Θ (the infinite-width limit, or the linearisation around θ₀) gives

    .. math::

        f_t(x) = f_0(x) + \Theta(x, X)\,\Theta(X, X)^{-1}\big(I - e^{-\eta\Theta(X,X)t/N}\big)
        \big(Y - f_0(X)\big),

    computed with the eigendecomposition :math:`\Theta(X,X) = U\Lambda U^\top` as
    :math:`\Theta(x,X)\,U g(\Lambda) U^\top (Y - f_0(X))`, :math:`g(\lambda) = (1 -
    e^{-\eta\lambda t/N})/\lambda` (its limit ηt/N at λ = 0, so a singular Θ(X, X) is fine).
    With ``discrete=True`` the same for t steps of gradient descent, :math:`g(\lambda) =
    (1 - (1 - \eta\lambda/N)^t)/\lambda`, exact for the linearised model. As t → ∞ (Θ(X, X)
    invertible) this is kernel regression :math:`f_0(x) + \Theta(x,X)\Theta(X,X)^{-1}(Y -
    f_0(X))`. At ``kernel_test_train = kernel_train`` it gives
    :math:`f_t(X) = Y + e^{-\eta\Theta t/N}(f_0(X) - Y)`.

    Args:
        kernel_test_train: ``(m, N)`` Θ(x, X) (scalar kernel; multi-output networks use
            Θ ⊗ I_k, one output column at a time).
        kernel_train: ``(N, N)`` Θ(X, X), symmetric.
        y_train: ``(N,)`` or ``(N, k)`` targets.
        f0_train: f₀(X), the shape of ``y_train``.
        f0_test: ``(m,)`` or ``(m, k)`` f₀(x).
        time: t ≥ 0 (the flow's time, or the number of steps when ``discrete``).
        lr: η > 0.
        discrete: gradient descent with step η instead of the flow; ValueError when the step
            is unstable (η·λ_max/N > 2: the iterates diverge).

    Returns:
        f_t(x), the shape of ``f0_test``, float64.

    Example:
        >>> k = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
        >>> y, f0 = torch.tensor([1.0, 1.0]), torch.zeros(2)
        >>> linearized_prediction(k, k, y, f0, f0, time=2.0)  # 1 − e^{−λ t / N}
        tensor([0.8647, 0.6321], dtype=torch.float64)

    References:
        Jacot, Gabriel, Hongler (2018), §5 (least-squares regression), arXiv 1806.07572;
        Lee et al. (2019), Eq. (9), arXiv 1902.06720.
    """
    k_xX = check_float_tensor(kernel_test_train, "kernel_test_train", dims=2)
    k_XX = check_float_tensor(kernel_train, "kernel_train", dims=2)
    n = k_XX.shape[0]
    if k_XX.shape != (n, n) or n == 0:
        raise ValueError(f"`kernel_train` must be square (N, N), got {tuple(k_XX.shape)}")
    if k_xX.shape[1] != n:
        raise ValueError(
            f"`kernel_test_train` must have N = {n} columns (one per training point), got "
            f"shape {tuple(k_xX.shape)}"
        )
    y = check_float_tensor(y_train, "y_train", min_dim=1)
    f0 = check_float_tensor(f0_train, "f0_train", min_dim=1)
    f0x = check_float_tensor(f0_test, "f0_test", min_dim=1)
    if y.dim() > 2 or y.shape[0] != n:
        raise ValueError(
            f"`y_train` must have shape (N,) or (N, k) with N = {n}, got {tuple(y.shape)}"
        )
    if f0.shape != y.shape:
        raise ValueError(
            f"`f0_train` must have the shape of `y_train` {tuple(y.shape)}, got {tuple(f0.shape)}"
        )
    if f0x.shape != (k_xX.shape[0], *y.shape[1:]):
        raise ValueError(
            f"`f0_test` must have shape {(k_xX.shape[0], *y.shape[1:])} (one row per row of "
            f"`kernel_test_train`, the columns of `y_train`), got {tuple(f0x.shape)}"
        )
    t = float(check_positive_scalar(time, "time", allow_zero=True))
    eta = float(check_positive_scalar(lr, "lr"))
    discrete = check_bool(discrete, "discrete")
    if discrete and t != int(t):
        raise ValueError(f"`time` must be a whole number of steps when discrete=True, got {time!r}")
    k_XX64 = k_XX.double()
    finite = bool(torch.isfinite(k_XX64).all())
    asym = float((k_XX64 - k_XX64.T).abs().max()) if finite else 0.0
    if asym > 1e-6 * max(1.0, float(k_XX64.abs().max())):
        raise ValueError(f"`kernel_train` must be symmetric, max |K − Kᵀ| = {asym:.3g}")
    if not finite:
        return torch.full(f0x.shape, math.nan, dtype=torch.float64, device=f0x.device)
    lam, u = torch.linalg.eigh((k_XX64 + k_XX64.T) / 2)
    c = eta / n
    if discrete and c * float(lam.max()) > 2.0 * (1.0 + 1e-12):
        raise ValueError(
            f"`lr` = {eta:g} is unstable for gradient descent on this kernel: "
            f"lr·λ_max/N = {c * float(lam.max()):.4g} > 2, so the iterates diverge; use "
            f"lr < 2N/λ_max = {2.0 / (float(lam.max()) / n):.4g}"
        )
    if discrete:
        # 1 − (1 − cλ)^t over λ; its small-λ limit t·c
        gain = (
            -torch.expm1(t * torch.log1p(-c * lam))
            if bool((c * lam < 1).all())
            else (1 - torch.pow(1 - c * lam, t))
        )
        limit = t * c
    else:
        gain = -torch.expm1(-c * t * lam)  # 1 − e^{−cλt}, accurate for small cλt
        limit = c * t
    tiny = lam.abs() <= 1e-12 * max(1.0, float(lam.abs().max()))
    g = torch.where(tiny, torch.full_like(lam, limit), gain / torch.where(tiny, 1.0, lam))
    resid = (y.double() - f0.double()).reshape(n, -1)
    coef = u @ (g[:, None] * (u.T @ resid))
    out = f0x.double().reshape(k_xX.shape[0], -1) + k_xX.double() @ coef
    return out.reshape(f0x.shape)

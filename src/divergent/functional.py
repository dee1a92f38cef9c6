r"""The functional API: ``divergent.divergence(name, p, q, ...)`` and one shortcut per name.

Conventions (the public contract):

* ``p`` is the target / teacher / reference P, ``q`` the model / student Q; every function
  returns D(P‖Q). ``kl(p, q)`` is KL(P‖Q), ``reverse_kl(p, q)`` is KL(Q‖P).
* Inputs are logits by default (``inputs="logits"``), or ``"log_probs"`` / ``"probs"``;
  the class axis is last, any leading shape. ``temperature`` divides both sides.
* ``mask`` (bool, leading shape, True = keep) selects rows; ``reduction`` is ``"none"``
  (one value per row, masked rows 0), ``"sum"`` or ``"mean"`` (over unmasked rows);
  ``normalizer`` overrides the mean's denominator (e.g. a token count across gradient
  accumulation steps). A fully masked batch gives 0 with zero gradient.
* bf16 / fp16 inputs are computed in fp32 and the result is fp32; float64 stays float64.
* Both arguments are differentiable.
* Rows are ``+inf`` exactly where the divergence is infinite (see each entry's
  ``infinite_when``); the gradient there is not defined.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from divergent._validation import (
    ROW_INPUT_KEYWORDS,
    check_chunk_size,
    check_pair,
    compute_dtype,
    input_rows,
    nan_rows_of,
    row_keywords,
    row_options,
    split_keywords,
    to_log_probs,
)
from divergent.categorical import (
    Divergence,
    DivergenceLike,
    FGenerator,
    get_divergence,
    make_f_divergence,
    resolve_divergence,
)
from divergent.categorical.divergences import normalised_row_values
from divergent.engine.chunked import COMPILE_MODES, engine_divergence, use_engine

__all__ = [
    "alpha",
    "chunked_divergence",
    "divergence",
    "f_divergence",
    "hellinger",
    "jeffreys",
    "js",
    "kl",
    "neyman_chi2",
    "pearson_chi2",
    "renyi",
    "reverse_kl",
    "row_values",
    "skew_kl",
    "skew_reverse_kl",
    "soft_cross_entropy",
    "tv",
]


def row_values(
    spec: Divergence,
    params: dict[str, float],
    p_rows: Tensor,
    q_rows: Tensor,
    *,
    inputs: str = "logits",
    temperature: float = 1.0,
    eager: bool = False,
) -> Tensor:
    """Divergence of each row of two validated ``(rows, classes)`` tensors (reference path).

    Converts both sides to normalised log-probabilities in the compute dtype and evaluates the
    entry's row function with autograd. A row whose log-probabilities hold NaN on either side
    (a NaN input, and also a +inf logit or an all −inf row, which the caller reports) is NaN,
    whatever the row function makes of it. ``eager``: the values may be inspected (not
    compiled, not under a ``torch.func`` transform), which lets a row function skip branches.
    """
    dtype = compute_dtype(p_rows, q_rows)
    lp = to_log_probs(p_rows, inputs, temperature, dtype, "p")
    lq = to_log_probs(q_rows, inputs, temperature, dtype, "q")
    if inputs == "log_probs" and temperature == 1.0:  # used as given: look at every entry
        rows = spec.row_fn(lp, lq, **params)
        bad = nan_rows_of(lp, lq)
    else:  # from log_softmax: normalised rows; a NaN spreads over its row (first column tells)
        rows = normalised_row_values(spec.row_fn, lp, lq, params, eager=eager)
        # log-probs are <= 0 or NaN here (never +inf), so the sum is NaN iff either side is
        bad = torch.isnan(lp[..., 0] + lq[..., 0])
    return torch.where(bad, math.nan, rows)


@row_keywords(*ROW_INPUT_KEYWORDS, "check_nan", "engine")
def divergence(
    name: DivergenceLike | Callable[[Tensor], Tensor],
    p: Tensor,
    q: Tensor,
    *,
    check_nan: bool = False,
    **params: Any,
) -> Tensor:
    r"""D(P‖Q) between the categorical distributions given by ``p`` (target) and ``q`` (model).

    Args:
        name: a registered name (``"kl"``, ``"js"`` ... see ``divergent list``), a
            :class:`~divergent.categorical.registry.Divergence`, or a generator callable f(t) for
            D_f(P‖Q) = Σ q f(p/q).
        p: target / teacher, shape ``(..., C)``.
        q: model / student, same shape.
        temperature: divides both sides' logits (T > 0). No T² factor is applied here;
            distillation objectives apply it.
        mask: bool tensor of shape ``(...)``; False rows are skipped.
        reduction: ``"none"`` | ``"sum"`` | ``"mean"``.
        normalizer: denominator of ``"mean"`` instead of the number of unmasked rows.
        inputs: ``"logits"`` | ``"log_probs"`` | ``"probs"``. Probabilities must be >= 0 and
            each kept row sum to 1, log-probabilities be <= 0 with logsumexp 0, within a
            tolerance set by the dtype (1e-4 for float32); nothing is renormalised silently.
        check_nan: raise a ``ValueError`` naming the side and the first kept row that holds
            NaN (one extra pass); by default such a row's value is NaN.
        engine: ``"auto"`` (default, see :func:`divergent.set_engine`: the row-chunked engine
            of :mod:`divergent.engine.chunked` for large inputs, O(chunk × V) memory and
            gradients computed in the same pass), ``"chunked"`` or ``"reference"`` (plain
            autograd through the entry's row function; needed for double backward).
        **params: the divergence's parameters (``beta`` for ``js``, ``alpha``, ``order`` ...).

    Returns:
        A scalar (``"sum"``, ``"mean"``) or a tensor of the leading shape (``"none"``), in
        float32 (float64 if an input is float64). A kept row holding NaN (either side) is NaN,
        so a reduced result is NaN, on every path and size.

    Raises:
        ValueError: naming the argument, the value and what is allowed, for wrong shapes or
            options, and naming the side and the row for a +inf logit, a kept row that is all
            −inf (no mass: mask it), probabilities / log-probabilities that are not normalised,
            negative probabilities or positive log-probabilities, logits whose ``x / T``
            overflows (or whose finite entries span beyond the float range), a ``temperature``
            tensor that requires grad. Logits that look like probabilities (entries in [0, 1],
            rows summing to 1) give a ``UserWarning`` suggesting ``inputs="probs"``.
        RuntimeError: a second-order graph (``create_graph=True``) through the chunked engine;
            use ``engine="reference"``.

    Example:
        >>> import torch, divergent
        >>> p = torch.tensor([[2.0, 1.0, 0.0]]); q = torch.tensor([[0.0, 1.0, 2.0]])
        >>> divergent.divergence("kl", p, q)
        tensor(1.1504)
        >>> divergent.divergence("js", p, q, beta=0.5) <= torch.log(torch.tensor(2.0))
        tensor(True)
    """
    return _divergence(name, p, q, check_nan=check_nan, caller="divergence", **params)


def _divergence(
    name: DivergenceLike | Callable[[Tensor], Tensor],
    p: Tensor,
    q: Tensor,
    *,
    check_nan: bool,
    chunk_size: int | None = None,
    compile: bool | str | None = None,
    caller: str,
    **params: Any,
) -> Tensor:
    """:func:`divergence` (and :func:`chunked_divergence`, the shortcuts): ``params`` holds the
    row keywords (:data:`ROW_INPUT_KEYWORDS` and ``engine``) and the divergence's parameters;
    ``caller`` is the function the user called, named in an unknown-parameter error."""
    row, params = split_keywords(params, (*ROW_INPUT_KEYWORDS, "engine"))
    spec = resolve_divergence(name)
    bound = spec.bind(params, caller=caller)
    p, q = check_pair(p, q)
    opts = row_options(leading_shape=p.shape[:-1], device=p.device, **row)
    checked = input_rows([("p", p), ("q", q)], opts, check_nan=check_nan, stacklevel=4)
    if use_engine(opts.engine, p, q, opts.inputs):
        return engine_divergence(spec, bound, p, q, opts, chunk_size=chunk_size, compile=compile)
    p_rows, q_rows = checked.kept_sides()
    rows = row_values(
        spec,
        bound,
        p_rows,
        q_rows,
        inputs=opts.inputs,
        temperature=opts.temperature,
        eager=checked.eager,
    )
    return checked.finish(rows)


@row_keywords(*ROW_INPUT_KEYWORDS, "check_nan", "chunk_size", "compile")
def chunked_divergence(
    name: DivergenceLike | Callable[[Tensor], Tensor],
    p: Tensor,
    q: Tensor,
    *,
    check_nan: bool = False,
    chunk_size: int | None = None,
    compile: bool | str | None = None,
    **params: Any,
) -> Tensor:
    r"""D(P‖Q) through the row-chunked engine, with explicit chunk and compile control.

    Same contract as :func:`divergence` (P = ``p`` target / teacher, Q = ``q`` model /
    student, logits by default, class axis last), always on the engine: for each chunk of
    rows one kernel computes the values and the logit gradients

    .. math::
        \frac{\partial D}{\partial a_j} = \frac1T\Big(A_j - p_j\sum_x A_x\Big),\quad
        A_x = \frac{\partial D}{\partial \log p_x}

    (and likewise for Q), so memory beyond the gradients is O(chunk × V).

    Args:
        name: a registered name, a :class:`~divergent.Divergence` or a generator callable.
        p, q: target and model, shape ``(..., V)``.
        temperature, mask, reduction, normalizer, inputs, check_nan, **params: as in
            :func:`divergence`. A tensor ``normalizer`` is treated as a constant.
        chunk_size: rows per chunk (default: about 2**22 elements for the compiled kernel and
            2**19 for the eager one on CPU; 2**26 / 2**24 on CUDA).
        compile: ``True``/``False``/``"auto"`` for this call (default:
            :func:`divergent.compile_mode`).

    Returns:
        As :func:`divergence`; rows with value ``+inf`` get gradient 0.

    Raises:
        ValueError: on invalid inputs (see :func:`divergence`) or a ``chunk_size`` that is
            not a positive integer.

    Example:
        >>> import torch, divergent
        >>> p = torch.tensor([[2.0, 1.0, 0.0]]); q = torch.tensor([[0.0, 1.0, 2.0]])
        >>> divergent.chunked_divergence("kl", p, q)
        tensor(1.1504)
    """
    check_chunk_size(chunk_size)
    if compile is not None and compile not in (True, False, *COMPILE_MODES):
        raise ValueError(
            f"`compile` must be True, False or one of {COMPILE_MODES}, got {compile!r}"
        )
    return _divergence(
        name,
        p,
        q,
        check_nan=check_nan,
        engine="chunked",
        chunk_size=chunk_size,
        compile=compile,
        caller="chunked_divergence",
        **params,
    )


def f_divergence(
    f: Callable[[Tensor], Tensor] | FGenerator,
    p: Tensor,
    q: Tensor,
    **kwargs: Any,
) -> Tensor:
    r"""D_f(P‖Q) = Σ_x Q(x) f(P(x)/Q(x)) for a user generator f, over logits.

    Takes the same keyword arguments as :func:`divergence` (``temperature``, ``mask``,
    ``reduction``, ``normalizer``, ``inputs``, ``check_nan``, ``engine``).

    Example:
        >>> import torch, divergent
        >>> p, q = torch.tensor([[2.0, 0.0, -1.0]]), torch.tensor([[0.0, 1.0, 0.5]])
        >>> f = lambda t: t * torch.log(t)          # the KL generator
        >>> bool(torch.isclose(divergent.f_divergence(f, p, q), divergent.kl(p, q)))
        True
    """
    return divergence(make_f_divergence(f), p, q, **kwargs)


# --------------------------------------------------------------------------------------------
# one shortcut per registered name, generated from the registry entry
# --------------------------------------------------------------------------------------------
_OPTION_DOC = """
    Args:
        p: target / teacher P, shape ``(..., C)`` (logits unless ``inputs`` says otherwise).
        q: model / student Q, same shape.
{params}        temperature, mask, reduction, normalizer, inputs, check_nan, engine: as in
            :func:`divergent.divergence`.

    Returns:
        D(P‖Q): a scalar (``"sum"``, ``"mean"``) or one value per row (``"none"``).
"""


def _shortcut_doc(spec: Divergence) -> str:
    lines = [f"{spec.title}: :math:`{spec.formula}`.", ""]
    if spec.description:
        lines += [spec.description, ""]
    if spec.infinite_when:
        lines += [f"+∞ when {spec.infinite_when}.", ""]
    lines.append(f"Bound: {spec.bound_text}. Metric: {spec.metric}.")
    params = "".join(
        f"        {prm.name}: {prm.description or 'parameter'}; in {prm.range_text()}, "
        f"default {prm.default:g}.\n"
        for prm in spec.parameters
    )
    doc = "\n    ".join(lines) + "\n" + _OPTION_DOC.format(params=params)
    if spec.references:
        doc += "\n    References:\n" + "".join(f"        {r}\n" for r in spec.references)
    doc += (
        "\n    Example:\n"
        "        >>> import torch, divergent\n"
        "        >>> p = torch.tensor([[2.0, 1.0, 0.0]]); q = torch.tensor([[0.0, 1.0, 2.0]])\n"
        f"        >>> bool(divergent.{spec.name}(p, q) == divergent.divergence("
        f"{spec.name!r}, p, q))\n"
        "        True\n"
    )
    return doc


def _make_shortcut(name: str) -> Callable[..., Tensor]:
    """``name(p, q, **options)``: :func:`divergence` with the name fixed.

    The signature is :func:`divergence`'s (every option, so shortcuts cannot drift from it)
    with the entry's own parameters as keyword-only arguments with their defaults.
    """
    spec = get_divergence(name)

    def shortcut(p: Tensor, q: Tensor, *, check_nan: bool = False, **options: Any) -> Tensor:
        return _divergence(name, p, q, check_nan=check_nan, caller=name, **options)

    base = inspect.signature(divergence)
    fixed = [prm for prm in base.parameters.values() if prm.name not in ("name", "params")]
    own = [
        inspect.Parameter(
            prm.name, inspect.Parameter.KEYWORD_ONLY, default=prm.default, annotation=float
        )
        for prm in spec.parameters
    ]
    positional, keywords = fixed[:2], fixed[2:]
    shortcut.__signature__ = base.replace(parameters=[*positional, *own, *keywords])  # type: ignore[attr-defined]
    shortcut.__name__ = shortcut.__qualname__ = name
    shortcut.__doc__ = _shortcut_doc(spec)
    shortcut.__module__ = __name__
    return shortcut


kl = _make_shortcut("kl")
reverse_kl = _make_shortcut("reverse_kl")
js = _make_shortcut("js")
skew_kl = _make_shortcut("skew_kl")
skew_reverse_kl = _make_shortcut("skew_reverse_kl")
jeffreys = _make_shortcut("jeffreys")
tv = _make_shortcut("tv")
hellinger = _make_shortcut("hellinger")
pearson_chi2 = _make_shortcut("pearson_chi2")
neyman_chi2 = _make_shortcut("neyman_chi2")
alpha = _make_shortcut("alpha")
renyi = _make_shortcut("renyi")
soft_cross_entropy = _make_shortcut("soft_cross_entropy")

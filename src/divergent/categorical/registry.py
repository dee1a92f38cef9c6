"""The registry of divergences between categorical distributions.

Every named divergence is one :class:`Divergence` entry: its formula, its parameters with
validated ranges, its properties (symmetric, bound, metric) and the row function the engine
evaluates. f-divergences also carry their generator :class:`FGenerator` (``f``, ``f'``,
``r^2 f''(r)``), which objectives such as f-DPO, f-DPG and f-distill use directly.

Conventions (the public contract, see ``DESIGN.md``):

* ``D(P‖Q)``: the first argument P is the target / teacher / reference, the second Q is the
  model / student.
* ``D_f(P‖Q) = Σ_x Q(x) f(P(x)/Q(x))`` with f convex and f(1) = 0.

Adding a divergence is adding one entry (``register_divergence``), in the style of
``torch.distributions.kl.register_kl``. An entry may declare ``aliases`` (``fkl`` for
``kl``); :func:`get_divergence` resolves them and suggests close names for a typo.
"""

from __future__ import annotations

import difflib
import math
import numbers
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "Divergence",
    "DivergenceLike",
    "FGenerator",
    "Parameter",
    "get_divergence",
    "list_divergences",
    "register_divergence",
    "unregister_divergence",
]

#: the keywords :func:`divergent.divergence` takes besides a divergence's parameters (the
#: did-you-mean candidates of :meth:`Divergence.bind`): ``divergent._validation``'s
#: ``ROW_INPUT_KEYWORDS``, ``engine`` and ``check_nan``, spelt here as the registry is a leaf
DIVERGENCE_KEYWORDS: tuple[str, ...] = (
    "temperature",
    "mask",
    "reduction",
    "normalizer",
    "inputs",
    "engine",
    "check_nan",
)

RowFunction = Callable[..., Tensor]
"""``row_fn(log_p, log_q, **params) -> Tensor``: the divergence of each row, class axis last."""


@dataclass(frozen=True)
class Parameter:
    """A named real parameter of a divergence, with its allowed range.

    Attributes:
        name: keyword name (``beta``, ``alpha``, ``order``).
        default: value used when the caller does not pass one.
        low, high: range ends.
        low_inclusive, high_inclusive: whether the ends are allowed.
        description: one line for docs and ``divergent list``.
        hint: extra text appended to the error when the value is outside the range
            (e.g. "use `kl` or `reverse_kl`").
        allow_infinite: whether ``float('inf')`` is a valid value (Rényi order ∞).
    """

    name: str
    default: float
    low: float = -math.inf
    high: float = math.inf
    low_inclusive: bool = False
    high_inclusive: bool = False
    description: str = ""
    hint: str = ""
    allow_infinite: bool = False

    def range_text(self) -> str:
        left = "[" if self.low_inclusive else "("
        right = "]" if self.high_inclusive else ")"
        lo = "-∞" if self.low == -math.inf else f"{self.low:g}"
        hi = "∞" if self.high == math.inf else f"{self.high:g}"
        return f"{left}{lo}, {hi}{right}"

    def validate(self, value: Any, owner: str) -> float:
        """Return ``value`` as a float or raise a ``ValueError`` naming the parameter."""
        if isinstance(value, Tensor):
            if value.numel() != 1:
                raise ValueError(
                    f"{owner}: parameter `{self.name}` must be a scalar, got a tensor of shape "
                    f"{tuple(value.shape)}"
                )
            value = value.item()
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise ValueError(
                f"{owner}: parameter `{self.name}` must be a real number in "
                f"{self.range_text()}, got {value!r}"
            )
        value = float(value)
        ok = not math.isnan(value)
        if ok and math.isinf(value) and not self.allow_infinite:
            ok = False
        if ok:
            ok = (value > self.low or (self.low_inclusive and value == self.low)) and (
                value < self.high or (self.high_inclusive and value == self.high)
            )
        if not ok:
            hint = f"; {self.hint}" if self.hint else ""
            raise ValueError(
                f"{owner}: parameter `{self.name}`={value!r} is outside its allowed range "
                f"{self.range_text()}{hint}"
            )
        return value


@dataclass(frozen=True)
class FGenerator:
    r"""The generator f of an f-divergence :math:`D_f(P\|Q)=\sum_x Q(x) f(P(x)/Q(x))`.

    Attributes:
        f: elementwise, torch-differentiable convex function with f(1) = 0.
        f_prime: its derivative f'(t) (autograd is used when omitted).
        weighting: :math:`h(r) = r^2 f''(r)`, the weight of the score difference in the
            f-distill gradient (autograd when omitted).
        f_at_zero: :math:`f(0^+)` (may be ``inf``); the contribution of atoms where P = 0 is
            ``Q(x) f(0)``.
        slope_at_infinity: :math:`\lim_{t\to\infty} f(t)/t` (may be ``inf``); the contribution of
            atoms where Q = 0 < P is ``P(x) * slope_at_infinity``.
    """

    f: Callable[[Tensor], Tensor]
    f_prime: Callable[[Tensor], Tensor] | None = None
    weighting: Callable[[Tensor], Tensor] | None = None
    f_at_zero: float = math.nan
    slope_at_infinity: float = math.nan

    def derivative(self, t: Tensor) -> Tensor:
        """f'(t), analytic when given, otherwise by autograd."""
        if self.f_prime is not None:
            return self.f_prime(t)
        with torch.enable_grad():
            x = t.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(self.f(x).sum(), x)
        return g

    def second_derivative_weight(self, r: Tensor) -> Tensor:
        """h(r) = r² f''(r), analytic when given, otherwise by double autograd."""
        if self.weighting is not None:
            return self.weighting(r)
        with torch.enable_grad():
            x = r.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(self.f(x).sum(), x, create_graph=True)
            (h,) = torch.autograd.grad(g.sum(), x)
        return r * r * h


def _limit(values: list[float]) -> float:
    """Classify a sequence of evaluations approaching a limit: finite value or +/-inf."""
    a, b, c = values
    if any(math.isnan(v) for v in values):
        return math.nan
    if math.isinf(c):
        return c
    scale = max(1.0, abs(c))
    if abs(c - b) <= 1e-6 * scale and abs(b - a) <= 1e-3 * scale:
        return c
    if c > b > a and (c - b) > 1e-6 * scale:
        return math.inf
    if c < b < a and (b - c) > 1e-6 * scale:
        return -math.inf
    return c


def generator_from_callable(
    f: Callable[[Tensor], Tensor],
    *,
    f_prime: Callable[[Tensor], Tensor] | None = None,
    f_at_zero: float | None = None,
    slope_at_infinity: float | None = None,
    check: bool = True,
) -> FGenerator:
    """Wrap a user generator, estimating ``f(0+)`` and ``lim f(t)/t`` when not given.

    The limits are read off float64 evaluations at t = 1e-50, 1e-100, 1e-200 (for f(0+)) and at
    t = 1e20, 1e40, 1e80 (for f(t)/t; kept below 1e100 so that forms such as (t − 1)²/t do not
    overflow in an intermediate step): converging values give the limit, values growing
    without bound give ``inf``. Pass them explicitly to skip the estimate. With ``check``, f(1)
    must be 0 and f must be convex on a grid (a ``ValueError`` otherwise).
    """
    if not callable(f):
        raise ValueError(f"generator `f` must be a callable f(t) -> tensor, got {f!r}")
    with torch.no_grad():
        try:
            one = float(f(torch.ones((), dtype=torch.float64)))
        except Exception as err:  # a user callable: report what went wrong
            raise ValueError(
                f"generator `f` could not be evaluated on a float64 tensor: {err}"
            ) from err
        if check:
            if not math.isfinite(one) or abs(one) > 1e-9:
                raise ValueError(
                    f"generator `f` must satisfy f(1) = 0 (got f(1) = {one!r}); "
                    "subtract f(1) or add c·(t − 1), which does not change D_f"
                )
            grid = torch.logspace(-3, 3, 61, dtype=torch.float64)
            vals = f(grid)
            if vals.shape != grid.shape:
                raise ValueError("generator `f` must be elementwise: f(t).shape == t.shape")
            # discrete convexity on a non-uniform grid: slopes must be non-decreasing
            slopes = (vals[1:] - vals[:-1]) / (grid[1:] - grid[:-1])
            tol = 1e-7 * (1.0 + slopes.abs().max())
            if bool((slopes[1:] - slopes[:-1] < -tol).any()):
                raise ValueError("generator `f` must be convex on (0, ∞); it is not on a grid")
        if f_at_zero is None:
            z = float(f(torch.zeros((), dtype=torch.float64)))
            if math.isnan(z):
                pts = torch.tensor([1e-50, 1e-100, 1e-200], dtype=torch.float64)
                z = _limit([float(v) for v in f(pts)])
            f_at_zero = z
        if slope_at_infinity is None:
            pts = torch.tensor([1e20, 1e40, 1e80], dtype=torch.float64)
            slope_at_infinity = _limit([float(v) for v in f(pts) / pts])
    return FGenerator(
        f=f, f_prime=f_prime, f_at_zero=float(f_at_zero), slope_at_infinity=float(slope_at_infinity)
    )


@dataclass(frozen=True)
class Divergence:
    r"""One registered divergence (or, with ``is_divergence=False``, a related loss).

    Attributes:
        name: the public name (``kl``, ``reverse_kl``, ``js`` ...).
        title: human-readable title.
        formula: LaTeX formula of D(P‖Q).
        formula_text: the same in plain Unicode for terminals.
        row_fn: ``row_fn(log_p, log_q, **params)`` → value per row (class axis last reduced).
            Inputs are normalised log-probabilities; ``-inf`` marks zero-probability atoms.
        parameters: the keyword parameters, with ranges.
        symmetric: ``symmetric(**params) -> bool`` (D(P‖Q) = D(Q‖P) for all P, Q).
        upper_bound: ``upper_bound(**params) -> float`` (``inf`` when unbounded).
        bound_text: the bound as text (``log 2``, ``1``, ``∞``).
        metric: whether it is a metric, or which transform of it is.
        is_divergence: False for losses that are registered beside the divergences but are
            not divergences (``soft_cross_entropy``: not 0 when P = Q).
        generator: for f-divergences, ``generator(**params) -> FGenerator``.
        infinite_when: when the value is +∞ (documented contract).
        references: papers / sources.
        description: one paragraph for the API docs and ``divergent info``.
        kernel: optional ``kernel(**params) -> KernelPlan | None``: the value-and-gradient
            chunk kernel the engine uses (see :mod:`divergent.categorical.kernels`); without
            it the engine differentiates ``row_fn`` chunk by chunk with autograd (exact, slower).
        aliases: other names :func:`get_divergence` resolves to this entry (``fkl`` for
            ``kl``); shown by ``divergent info``.
    """

    name: str
    title: str
    formula: str
    formula_text: str
    row_fn: RowFunction
    parameters: tuple[Parameter, ...] = ()
    symmetric: Callable[..., bool] = field(default=lambda **_: False)
    upper_bound: Callable[..., float] = field(default=lambda **_: math.inf)
    bound_text: str = "∞"
    metric: str = "no"
    is_divergence: bool = True
    generator: Callable[..., FGenerator] | None = None
    infinite_when: str = ""
    references: tuple[str, ...] = ()
    description: str = ""
    kernel: Callable[..., Any] | None = None
    aliases: tuple[str, ...] = ()

    # -- parameters ----------------------------------------------------------------------
    def bind(
        self,
        params: Mapping[str, Any] | None = None,
        *,
        caller: str | None = None,
        keywords: Sequence[str] = DIVERGENCE_KEYWORDS,
    ) -> dict[str, float]:
        """Validate keyword parameters, fill defaults; ``ValueError`` on unknown ones.

        The message names ``caller`` (the function the user called) when given and suggests
        the closest of the divergence's parameters and the caller's other ``keywords`` (by
        default the row keywords of :func:`divergent.divergence`) for a misspelt name.

        Example:
            >>> get_divergence("kl").bind({"temprature": 2.0}, caller="kl")  # doctest: +ELLIPSIS
            Traceback (most recent call last):
            ...
            ValueError: kl(): ... ['temprature'] (did you mean 'temperature'?); it takes no ...
        """
        params = dict(params or {})
        known = [p.name for p in self.parameters]
        unknown = sorted(set(params) - set(known))
        if unknown:
            where = f"{caller}(): " if caller else ""
            close = difflib.get_close_matches(unknown[0], [*known, *keywords], n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            takes = (
                f"its parameters are: {', '.join(sorted(known))}"
                if known
                else "it takes no divergence parameters"
            )
            raise ValueError(
                f"{where}divergence `{self.name}` got unknown parameter(s) {unknown}{hint}; {takes}"
            )
        bound: dict[str, float] = {}
        for p in self.parameters:
            value = params.get(p.name, p.default)
            bound[p.name] = p.validate(value, f"divergence `{self.name}`")
        return bound

    @property
    def is_f_divergence(self) -> bool:
        return self.generator is not None

    def f_generator(self, **params: Any) -> FGenerator:
        """The generator of this f-divergence at the given parameters."""
        if self.generator is None:
            raise ValueError(
                f"divergence `{self.name}` is not an f-divergence; it has no generator"
            )
        return self.generator(**self.bind(params))

    def rows(self, log_p: Tensor, log_q: Tensor, **params: Any) -> Tensor:
        """Per-row values from normalised log-probabilities (reference path, autograd)."""
        return self.row_fn(log_p, log_q, **self.bind(params))

    def kernel_plan(self, params: Mapping[str, float]) -> Any:
        """The chunk kernel plan at validated ``params``, or None (autograd fallback).

        ``None`` when the entry declares no ``kernel`` or its factory declines these
        parameters; the engine then differentiates :attr:`row_fn` chunk by chunk.
        """
        if self.kernel is None:
            return None
        return self.kernel(**params)

    def __repr__(self) -> str:  # keep the table-friendly repr short
        params = ", ".join(f"{p.name}={p.default:g}" for p in self.parameters)
        return f"Divergence({self.name!r}{', ' + params if params else ''})"


_REGISTRY: dict[str, Divergence] = {}
_ALIASES: dict[str, str] = {}  # alias -> registered name


def _check_name(name: Any, what: str) -> None:
    if not isinstance(name, str) or not name or name != name.strip():
        raise ValueError(
            f"{what} must be a non-empty string without surrounding spaces, got {name!r}"
        )


def register_divergence(spec: Divergence, *, overwrite: bool = False) -> Divergence:
    """Add ``spec`` to the registry under ``spec.name`` (and its ``aliases``) and return it.

    Args:
        spec: the entry.
        overwrite: replace an entry registered under the same name (its aliases go with it).

    Raises:
        ValueError: ``spec`` is not a :class:`Divergence`, its name is taken (without
            ``overwrite``), or one of its aliases is already a name or another entry's alias.

    Example:
        >>> from divergent.categorical import get_divergence
        >>> get_divergence("fkl").name     # an alias declared by the `kl` entry
        'kl'
    """
    if not isinstance(spec, Divergence):
        raise ValueError(f"register_divergence expects a Divergence, got {type(spec).__name__}")
    _check_name(spec.name, "a divergence name")
    if spec.name in _ALIASES:
        raise ValueError(
            f"`{spec.name}` is already an alias of `{_ALIASES[spec.name]}`; choose another name"
        )
    if spec.name in _REGISTRY and not overwrite:
        raise ValueError(
            f"a divergence named `{spec.name}` is already registered; pass overwrite=True"
        )
    for alias in spec.aliases:
        _check_name(alias, f"alias of `{spec.name}`")
        taken = alias in _REGISTRY or _ALIASES.get(alias, spec.name) != spec.name
        if taken or alias == spec.name:
            owner = alias if alias in _REGISTRY else _ALIASES.get(alias, spec.name)
            raise ValueError(f"alias `{alias}` of `{spec.name}` is already taken by `{owner}`")
    if spec.name in _REGISTRY:
        _drop_aliases(spec.name)
    _REGISTRY[spec.name] = spec
    for alias in spec.aliases:
        _ALIASES[alias] = spec.name
    return spec


def _drop_aliases(name: str) -> None:
    for alias in [a for a, n in _ALIASES.items() if n == name]:
        del _ALIASES[alias]


def unregister_divergence(name: str) -> Divergence:
    """Remove the entry registered as ``name`` (not an alias) with its aliases; return it.

    Raises:
        ValueError: no entry is registered under ``name`` (with close names suggested).

    Example:
        >>> import torch
        >>> from divergent.categorical import Divergence, register_divergence
        >>> entry = register_divergence(Divergence(
        ...     name="half_tv", title="½ TV", formula="TV/2",
        ...     formula_text="¼ Σ |p − q|",
        ...     row_fn=lambda lp, lq: 0.25 * (lp.exp() - lq.exp()).abs().sum(-1)))
        >>> unregister_divergence("half_tv") is entry
        True
    """
    if not isinstance(name, str) or name not in _REGISTRY:
        hint = ""
        if isinstance(name, str) and name in _ALIASES:
            hint = f" (`{name}` is an alias of `{_ALIASES[name]}`)"
        raise ValueError(
            f"cannot unregister `{name}`: no divergence is registered under that name{hint}"
        )
    _drop_aliases(name)
    return _REGISTRY.pop(name)


def list_divergences(*, include_non_divergences: bool = True) -> list[Divergence]:
    """All registered entries, in registration order."""
    return [d for d in _REGISTRY.values() if include_non_divergences or d.is_divergence]


def aliases() -> dict[str, str]:
    """A copy of the alias table: alias → registered name."""
    return dict(_ALIASES)


def suggest_names(name: str, n: int = 3) -> list[str]:
    """Registered names and aliases close to ``name`` (difflib), best first.

    Example:
        >>> suggest_names("kll")[0]
        'kl'
    """
    key = name.strip().lower().replace("-", "_")
    if key in _REGISTRY or key in _ALIASES:  # only the spelling differs: `Reverse-KL`
        return [_ALIASES.get(key, key)]
    found = difflib.get_close_matches(key, list(_REGISTRY), n=n, cutoff=0.6)
    if not found:  # a near-miss alias is suggested as the name it stands for
        found = [_ALIASES[a] for a in difflib.get_close_matches(key, list(_ALIASES), n=n)]
    if len(key) >= 3:  # a part of a longer name: `chi2` -> pearson_chi2, neyman_chi2
        found += [cand for cand in _REGISTRY if key in cand]
    found += [cand for cand in _REGISTRY if key.startswith(cand + "_")]  # `kl_div` -> kl
    out: list[str] = []
    for cand in found:
        if cand not in out:
            out.append(cand)
    return out[:n]


def get_divergence(name: str) -> Divergence:
    """Look a divergence up by name or alias; ``ValueError`` with suggestions when unknown.

    Example:
        >>> get_divergence("rkl").name
        'reverse_kl'
        >>> get_divergence("kll")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: unknown divergence `kll`. Did you mean `kl`? ...
    """
    if not isinstance(name, str):
        raise ValueError(f"divergence name must be a string, got {type(name).__name__}")
    spec = _REGISTRY.get(name)
    if spec is None and name in _ALIASES:
        spec = _REGISTRY[_ALIASES[name]]
    if spec is not None:
        return spec
    raise ValueError(
        f"unknown divergence `{name}`.{did_you_mean(name)} Registered: {', '.join(_REGISTRY)}; "
        "or pass a generator with divergent.f_divergence(f, ...)"
    )


def did_you_mean(name: str, among: Sequence[str] | None = None) -> str:
    """`` Did you mean `kl`?`` for the registered names (or those of them in ``among``, the
    names a caller takes, e.g. the f-divergences) close to ``name``; "" when none is.

    Example:
        >>> did_you_mean("klx", ["kl", "tv"]), did_you_mean("renyj", ["kl", "tv"])
        (' Did you mean `kl`?', '')
    """
    close = [c for c in suggest_names(name) if among is None or c in among]
    return " Did you mean " + " or ".join(f"`{c}`" for c in close) + "?" if close else ""


DivergenceLike = str | Divergence


def iter_names() -> Iterator[str]:
    yield from _REGISTRY

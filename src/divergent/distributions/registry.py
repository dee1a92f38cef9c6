r"""The pair registry behind :func:`~divergent.distributions.closed_form.closed_form`.

In the style of ``torch.distributions.kl.register_kl``: a function that computes D(P‖Q) for a
pair of distribution types is registered with :func:`register_closed_form`, and
:func:`dispatch` picks, among the registrations whose types match ``(type(P), type(Q))`` (by
subclass) and that cover the requested name and method, the most specific one: the smallest
sum of the two MRO distances (0 for the exact class, 1 for its parent ...). Two different
functions at the same smallest distance are ambiguous: a ``ValueError`` asks to register the
exact pair. A function may decline a pair it cannot handle after all (an ``Independent`` whose
base is not a ``Normal``, a mixture of non-Gaussian components) by returning
``NotImplemented``; the next most specific registration is tried.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor
from torch.distributions import Distribution

__all__ = [
    "DEFAULT_METHODS",
    "KL_NAMES",
    "ClosedFormRequest",
    "ClosedFormResult",
    "Registration",
    "check_broadcastable",
    "dispatch",
    "register_closed_form",
    "registrations",
]

DEFAULT_METHODS: tuple[str, ...] = ("auto", "exact")
"""The methods every registration serves (``"mc"`` never reaches the registry)."""
KL_NAMES: tuple[str, ...] = ("kl", "reverse_kl", "jeffreys")
"""The names a registration that knows only the KL of both orders covers."""


def check_broadcastable(p: Distribution, q: Distribution) -> None:
    """A ``ValueError`` naming both batch shapes unless those of ``p`` and ``q`` broadcast."""
    try:
        torch.broadcast_shapes(p.batch_shape, q.batch_shape)
    except RuntimeError:
        raise ValueError(
            f"the batch shapes of `P` {tuple(p.batch_shape)} ({type(p).__name__}) and `Q` "
            f"{tuple(q.batch_shape)} ({type(q).__name__}) do not broadcast"
        ) from None


@dataclass(frozen=True)
class ClosedFormResult:
    r"""The value of D(P‖Q) and how it was obtained.

    Attributes:
        value: the divergence, of the broadcast batch shape of P and Q.
        stderr: its standard error — zeros for exact forms, bounds and deterministic
            approximations (they carry no sampling error; see ``kind``), the Monte Carlo
            standard error for ``kind == "monte_carlo"``.
        method: what computed it (``"gaussian"``, ``"normal_laplace"``, ``"categorical"``,
            ``"torch.kl_divergence"``, ``"hershey_olsen_variational"``, ``"monte_carlo"`` ...;
            for a registered function that returns a tensor, its ``label``).
        kind: ``"exact"``, ``"approximation"``, ``"lower_bound"``, ``"upper_bound"`` or
            ``"monte_carlo"``.
        lower, upper: certified bounds on the true value when known (mixtures), else ``None``.
    """

    value: Tensor
    stderr: Tensor
    method: str
    kind: str
    lower: Tensor | None = None
    upper: Tensor | None = None

    def __float__(self) -> float:
        return float(self.value)


def exact(value: Tensor, method: str) -> ClosedFormResult:
    """An exact value (standard error 0)."""
    return ClosedFormResult(value, torch.zeros_like(value), method, "exact")


@dataclass(frozen=True)
class ClosedFormRequest:
    """What :func:`closed_form` was asked, as a registered function receives it.

    Attributes:
        name: the divergence (``"kl"``, ``"renyi"`` ...).
        params: its validated parameters (``{"order": 0.5}`` ...).
        method: ``"auto"``, ``"exact"`` or a method the registration declared.
        num_samples, seed: the Monte Carlo settings, for :meth:`monte_carlo`.
    """

    name: str
    params: Mapping[str, float]
    method: str
    num_samples: int
    seed: int | None
    estimator: Callable[[Distribution, Distribution], ClosedFormResult] = field(repr=False)

    def monte_carlo(self, p: Distribution, q: Distribution) -> ClosedFormResult:
        """The Monte Carlo estimate of this request's divergence (with its standard error)."""
        return self.estimator(p, q)


Handler = Callable[[Any, Any, ClosedFormRequest], "Tensor | ClosedFormResult"]


@dataclass(frozen=True)
class Registration:
    """One registered pair: the types, the function, what it covers and how it is listed."""

    type_p: type
    type_q: type
    fn: Handler
    names: tuple[str, ...] | None
    methods: tuple[str, ...]
    family: str
    label: str

    def covers(self, name: str, method: str) -> bool:
        return (self.names is None or name in self.names) and method in self.methods

    @property
    def catch_all(self) -> bool:
        return self.type_p is Distribution and self.type_q is Distribution


_REGISTRY: dict[tuple[type, type], Registration] = {}


def _check_type(t: Any, arg: str) -> type:
    if not (isinstance(t, type) and issubclass(t, Distribution)):
        raise ValueError(f"`{arg}` must be a torch.distributions.Distribution subclass, got {t!r}")
    return t


def register_closed_form(
    type_p: type,
    type_q: type,
    *,
    names: Iterable[str] | None = None,
    methods: Iterable[str] = (),
    family: str | None = None,
    label: str | None = None,
) -> Callable[[Handler], Handler]:
    """Decorator registering ``fn(p, q, request)`` as D(P‖Q) for the pair ``(type_p, type_q)``.

    ``fn`` receives the two distributions and a :class:`ClosedFormRequest` (``request.name``,
    ``request.params``, ``request.method``, ``request.monte_carlo(p, q)``) and returns a tensor
    of the broadcast batch shape (reported as exact), a :class:`ClosedFormResult`, or
    ``NotImplemented`` to decline the pair (the next most specific registration is tried). It
    raises a ``ValueError`` for names or inputs it does not support. Registering a pair again
    replaces the earlier function. Subclasses match: the most specific registration wins (sum
    of the MRO distances of both types); a tie between two different functions is an error.

    Args:
        type_p: the class of P (the target, first argument).
        type_q: the class of Q (the model, second argument).
        names: the divergence names ``fn`` computes (``None``: all; ``fn`` raises for the rest).
            A registration that does not cover a name is skipped for it, so a more specific
            registration may add names without shadowing the rest.
        methods: methods besides ``"auto"`` and ``"exact"`` that ``fn`` serves (the mixture
            approximations and bounds ...); read ``request.method``.
        family: how :func:`~divergent.distributions.closed_form.closed_form_support` and error
            messages name what this registration covers (default ``"TypeP -> TypeQ"``).
        label: ``ClosedFormResult.method`` when ``fn`` returns a tensor (default: its name).

    Returns:
        The decorator (it returns ``fn`` unchanged).

    Example:
        >>> import torch
        >>> from torch.distributions import Poisson
        >>> from divergent.distributions import closed_form, register_closed_form
        >>> class Counts(Poisson):  # a subclass, so the example leaves Poisson alone
        ...     pass
        >>> @register_closed_form(Counts, Counts, names=("kl",))
        ... def kl_counts(p, q, request):  # KL = λ_P log(λ_P/λ_Q) − λ_P + λ_Q
        ...     return p.rate * torch.log(p.rate / q.rate) - p.rate + q.rate
        >>> r = closed_form("kl", Counts(torch.tensor(2.0)), Counts(torch.tensor(1.0)))
        >>> round(float(r.value), 4), r.method, r.kind
        (0.3863, 'kl_counts', 'exact')
    """
    _check_type(type_p, "type_p")
    _check_type(type_q, "type_q")
    name_tuple = None if names is None else tuple(names)
    if name_tuple is not None and not (name_tuple and all(isinstance(n, str) for n in name_tuple)):
        raise ValueError(f"`names` must be None or a non-empty sequence of strings, got {names!r}")
    method_tuple = (*DEFAULT_METHODS, *(m for m in methods if m not in DEFAULT_METHODS))
    if "mc" in method_tuple:
        raise ValueError("`methods` must not include 'mc' (Monte Carlo never reaches the registry)")

    def decorator(fn: Handler) -> Handler:
        if not callable(fn):
            raise ValueError(f"register_closed_form decorates a function, got {fn!r}")
        _REGISTRY[type_p, type_q] = Registration(
            type_p=type_p,
            type_q=type_q,
            fn=fn,
            names=name_tuple,
            methods=method_tuple,
            family=family or f"{type_p.__name__} -> {type_q.__name__}",
            label=label or getattr(fn, "__name__", "registered"),
        )
        return fn

    return decorator


def registrations() -> list[Registration]:
    """Every registration, in registration order."""
    return list(_REGISTRY.values())


def _mro_distance(actual: type, registered: type) -> int | None:
    """0 for the class itself, 1 for its parent ...; None if ``registered`` is not a base."""
    mro = actual.__mro__
    return mro.index(registered) if registered in mro else None


def _matches(p: Distribution, q: Distribution) -> list[tuple[int, Registration]]:
    """Registrations whose types match (P, Q), most specific first (stable for ties)."""
    found = []
    for reg in _REGISTRY.values():
        dp, dq = _mro_distance(type(p), reg.type_p), _mro_distance(type(q), reg.type_q)
        if dp is not None and dq is not None:
            found.append((dp + dq, reg))
    found.sort(key=lambda item: item[0])
    return found


def _pair(p: Distribution, q: Distribution) -> str:
    return f"{type(p).__name__} and {type(q).__name__}"


def dispatch(p: Distribution, q: Distribution, request: ClosedFormRequest) -> ClosedFormResult:
    """Run the most specific registration covering ``request`` for ``(P, Q)``.

    Raises:
        ValueError: two different functions match equally well; no registration covers the
            pair, the name or the method (the message says what the matching ones support
            and points to ``method='mc'``).
    """
    matched = _matches(p, q)
    usable = [(d, reg) for d, reg in matched if reg.covers(request.name, request.method)]
    i = 0
    while i < len(usable):
        distance = usable[i][0]
        level = [reg for d, reg in usable[i:] if d == distance]
        i += len(level)
        functions = {id(reg.fn): reg for reg in level}
        if len(functions) > 1:
            pairs = ", ".join(
                f"register_closed_form({r.type_p.__name__}, {r.type_q.__name__})"
                for r in functions.values()
            )
            raise ValueError(
                f"ambiguous closed_form between {_pair(p, q)}: {pairs} match equally well; "
                f"register the exact pair, e.g. register_closed_form({type(p).__name__}, "
                f"{type(q).__name__}), to break the tie"
            )
        reg = level[0]
        result = reg.fn(p, q, request)
        if result is NotImplemented:
            continue
        if isinstance(result, ClosedFormResult):
            return result
        if not isinstance(result, Tensor):
            raise ValueError(
                f"the function registered for ({reg.type_p.__name__}, {reg.type_q.__name__}) "
                f"returned {type(result).__name__}; it must return a Tensor, a "
                "ClosedFormResult or NotImplemented"
            )
        return exact(result, reg.label)
    raise ValueError(_failure_message(p, q, request, matched))


def _failure_message(
    p: Distribution,
    q: Distribution,
    request: ClosedFormRequest,
    matched: list[tuple[int, Registration]],
) -> str:
    name, method = request.name, request.method
    mc = "use method='mc' (Monte Carlo with its standard error)"
    if method not in DEFAULT_METHODS and not any(method in r.methods for _, r in matched):
        families = sorted({r.family for r in _REGISTRY.values() if method in r.methods})
        where = "; ".join(families) if families else "no registered pair"
        return f"method={method!r} is not available between {_pair(p, q)}; it applies to: {where}"
    for _, reg in matched:
        if not reg.catch_all and not reg.covers(name, method) and reg.names is not None:
            return (
                f"`{name}`: no closed form between {reg.family}; supported there: "
                f"{', '.join(reg.names)}; or {mc}"
            )
    return f"no closed form for `{name}` between {_pair(p, q)}; {mc}"

"""Sweep of the input contract (issue 8 §1): bad inputs × names × paths × sizes.

Every public row-wise entry point is called, as a new user would, with inputs that break the
contract of DESIGN.md ("Errors") and with a few valid-but-extreme controls, and the outcome is
compared with what the contract says:

* NaN in a kept row → that row NaN (so the reduced loss NaN), on every path and size;
* a +inf logit, a kept row that is all −inf, probabilities / log-probabilities that are not
  normalised, negative probabilities, positive log-probabilities, logits that overflow at the
  temperature, a temperature that requires grad → a ``ValueError`` naming the argument;
* probabilities passed as logits → one ``UserWarning`` (and the value);
* controls (NaN in a masked row, partial −inf, ±3e38 logits, a temperature of 1e-45 on equal
  logits) → a correct value (against float64) or a clear ``ValueError``.

Outcomes: ``error`` (a ValueError, as due), ``nan`` (NaN exactly in the bad rows, as due),
``warned``, ``ok`` (a control computed correctly) and the violations: ``silent-finite``,
``silent-inf``, ``silent-nan`` (NaN where an error was due, or in the wrong rows),
``wrong-error`` (an error where a value was due, or one that does not name the argument),
``crash`` (any other exception) and ``no-warning``.

Usage::

    python benchmarks/sweep_inputs.py            # the full matrix (every name, 3 sizes, 3 paths)
    python benchmarks/sweep_inputs.py --quick    # the tests' matrix (threshold lowered to 100)

``tests/contract/test_input_sweep.py`` runs the fast matrix (the module is imported from here)
and asserts zero violations.
"""

from __future__ import annotations

import argparse
import collections
import math
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

import divergent
from divergent.categorical import list_divergences
from divergent.engine import chunked

ERROR, NAN, WARN, CONTROL = "error", "nan", "warn", "control"
VIOLATIONS = ("silent-finite", "silent-inf", "silent-nan", "wrong-error", "crash", "no-warning")


@dataclass
class Case:
    """One call and what the contract says it must give."""

    entry: str  # entry point (and path / size)
    what: str  # the bad input
    call: Callable[[], Any]
    expect: str  # ERROR | NAN | WARN | CONTROL
    names: tuple[str, ...] = ()  # an ERROR's message must name one of these
    nan_at: tuple[int, ...] | None = None  # NAN: flat rows that must be NaN (None: all / scalar)
    reference: Callable[[], Any] | None = None  # CONTROL: the float64 value to match
    outcome: str = ""
    detail: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------
# running one case
# --------------------------------------------------------------------------------------------
def _as_tensor(out: Any) -> torch.Tensor:
    if isinstance(out, tuple):
        return out[-1]  # topk_logprobs: the log-probs
    return out


def run_case(case: Case) -> Case:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            out = case.call()
        except ValueError as err:
            msg = str(err)
            if case.expect == CONTROL and case.extra.get("may_reject"):
                case.outcome, case.detail = "error", msg[:160]  # "or reject it clearly"
            elif case.expect != ERROR:
                case.outcome, case.detail = "wrong-error", msg[:160]
            elif case.names and not any(n in msg for n in case.names):
                case.outcome, case.detail = "wrong-error", f"does not name {case.names}: {msg}"
            else:
                case.outcome, case.detail = "error", msg[:160]
            return case
        except Exception as err:  # any other exception is a crash
            case.outcome, case.detail = "crash", f"{type(err).__name__}: {str(err)[:160]}"
            return case
    warned = any(issubclass(w.category, UserWarning) for w in caught)
    out_dtype = _as_tensor(out).dtype
    value = _as_tensor(out).detach().double()
    flat = value.reshape(-1)
    nan = torch.isnan(flat)
    if case.expect == ERROR:
        if bool(nan.any()):
            case.outcome = "silent-nan"
        elif bool(torch.isinf(flat).any()):
            case.outcome = "silent-inf"
        else:
            case.outcome = "silent-finite"
        case.detail = f"value {flat[:4].tolist()}"
        return case
    if case.expect == NAN:
        if case.nan_at is None:
            ok = bool(nan.all())
        else:
            want = torch.zeros_like(nan)
            want[list(case.nan_at)] = True
            ok = bool((nan == want).all()) and bool(torch.isfinite(flat[~want]).all())
        if ok:
            case.outcome = "nan"
        else:
            case.outcome = "silent-inf" if bool(torch.isinf(flat).any()) else "silent-finite"
            case.detail = f"value {flat[:6].tolist()}, NaN due at {case.nan_at}"
        return case
    if case.expect == WARN and not warned:
        case.outcome, case.detail = "no-warning", f"value {flat[:4].tolist()}"
        return case
    if bool(nan.any()):
        case.outcome, case.detail = "silent-nan", f"value {flat[:4].tolist()}"
        return case
    if case.reference is not None:
        want = _as_tensor(case.reference()).detach().double().reshape(-1)
        big = torch.finfo(out_dtype).max
        # a float64 value beyond the float32 range is +inf in float32 (the engine's contract)
        want = torch.where(want.abs() > big, torch.sign(want) * math.inf, want)
        close = torch.isclose(flat, want, rtol=1e-4, atol=1e-6) | (flat == want)
        if not bool(close.all()):
            case.outcome = "silent-inf" if bool(torch.isinf(flat).any()) else "silent-finite"
            case.detail = f"value {flat[:4].tolist()} vs float64 {want[:4].tolist()}"
            return case
    case.outcome = "warned" if case.expect == WARN else "ok"
    return case


# --------------------------------------------------------------------------------------------
# the cases
# --------------------------------------------------------------------------------------------
ROWS = 3
BAD = 1  # the row that holds the bad entry


def _logits(rows: int, v: int, seed: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(rows, v, generator=gen, dtype=torch.float64).to(dtype) * 2


def categorical_cases(
    name: str,
    v: int,
    engine: str | None,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> Iterator[Case]:
    """Bad inputs of :func:`divergent.divergence` for one name, size, path and input dtype."""
    kind = "" if dtype == torch.float32 else f", {str(dtype).removeprefix('torch.')}"
    tag = f"divergence[{name}, V={v}, engine={engine or 'auto'}{kind}]"
    p, q = _logits(ROWS, v, seed, dtype), _logits(ROWS, v, seed + 1, dtype)

    def call(pp: torch.Tensor, qq: torch.Tensor, **kw: Any) -> Callable[[], Any]:
        kw.setdefault("reduction", "none")
        return lambda: divergent.divergence(name, pp, qq, engine=engine, **kw)

    def with_entry(x: torch.Tensor, value: float, row: int = BAD, col: int = 2) -> torch.Tensor:
        x = x.clone()
        x[row, col] = value
        return x

    def with_row(x: torch.Tensor, value: float, row: int = BAD) -> torch.Tensor:
        x = x.clone()
        x[row] = value
        return x

    other = {
        "logits": (p, q),
        "log_probs": (torch.log_softmax(p, -1), torch.log_softmax(q, -1)),
        "probs": (torch.softmax(p, -1), torch.softmax(q, -1)),
    }

    def on(side: str, x: torch.Tensor, kind: str = "logits") -> tuple[torch.Tensor, torch.Tensor]:
        """``x`` on ``side``, the other side valid ``kind`` inputs."""
        return (x, other[kind][1]) if side == "p" else (other[kind][0], x)

    mask = torch.ones(ROWS, dtype=torch.bool)
    mask[BAD] = False
    for side in ("p", "q"):
        src = p if side == "p" else q
        lp, pr = torch.log_softmax(src, -1), torch.softmax(src, -1)
        named = (f"`{side}`",)
        nan_logits = on(side, with_entry(src, math.nan))
        yield Case(tag, f"NaN logit in {side}", call(*nan_logits), NAN, nan_at=(BAD,))
        yield Case(tag, f"NaN logit in {side}, mean", call(*nan_logits, reduction="mean"), NAN)
        yield Case(
            tag,
            f"+inf logit in {side}",
            call(*on(side, with_entry(src, math.inf))),
            ERROR,
            names=named,
        )
        yield Case(
            tag,
            f"all -inf row in {side}",
            call(*on(side, with_row(src, -math.inf))),
            ERROR,
            names=named,
        )
        yield Case(
            tag, f"NaN in a masked row of {side} (control)", call(*nan_logits, mask=mask), CONTROL
        )
        yield Case(
            tag,
            f"NaN in {side} with check_nan=True",
            call(*nan_logits, check_nan=True),
            ERROR,
            names=named,
        )
        yield Case(tag, f"probabilities passed as logits in {side}", call(*on(side, pr)), WARN)

        def lps(x: torch.Tensor, side: str = side, **kw: Any) -> Callable[[], Any]:
            return call(*on(side, x, "log_probs"), inputs="log_probs", **kw)

        yield Case(
            tag, f"unnormalised log-probs (+0.1) in {side}, T=1", lps(lp + 0.1), ERROR, names=named
        )
        yield Case(
            tag,
            f"unnormalised log-probs (+0.1) in {side}, T=1.0001",
            lps(lp + 0.1, temperature=1.0001),
            ERROR,
            names=named,
        )
        yield Case(
            tag, f"unnormalised log-probs (-0.1) in {side}", lps(lp - 0.1), ERROR, names=named
        )
        yield Case(tag, f"positive log-probs in {side}", lps(src.abs() + 1.0), ERROR, names=named)
        yield Case(
            tag, f"NaN log-prob in {side}", lps(with_entry(lp, math.nan)), NAN, nan_at=(BAD,)
        )
        yield Case(
            tag, f"+inf log-prob in {side}", lps(with_entry(lp, math.inf)), ERROR, names=named
        )
        yield Case(
            tag,
            f"all -inf log-prob row in {side}",
            lps(with_row(lp, -math.inf)),
            ERROR,
            names=named,
        )

        def prs(x: torch.Tensor, side: str = side, **kw: Any) -> Callable[[], Any]:
            return call(*on(side, x, "probs"), inputs="probs", **kw)

        yield Case(tag, f"probs summing to 0.5 in {side}", prs(pr * 0.5), ERROR, names=named)
        yield Case(tag, f"probs summing to 1.5 in {side}", prs(pr * 1.5), ERROR, names=named)
        yield Case(tag, f"negative prob in {side}", prs(with_entry(pr, -0.1)), ERROR, names=named)
        yield Case(tag, f"NaN prob in {side}", prs(with_entry(pr, math.nan)), NAN, nan_at=(BAD,))
        yield Case(tag, f"+inf prob in {side}", prs(with_entry(pr, math.inf)), ERROR, names=named)
        yield Case(tag, f"all-zero prob row in {side}", prs(with_row(pr, 0.0)), ERROR, names=named)
    if dtype == torch.float64:  # logits / 1e-45 stay within float64: a value is due
        yield Case(
            tag,
            "temperature 1e-45 (float64: no overflow, control)",
            call(p, q, temperature=1e-45),
            CONTROL,
            reference=lambda: divergent.divergence(
                name, p, q, temperature=1e-45, engine="reference", reduction="none"
            ),
        )
    else:
        yield Case(
            tag,
            "temperature 1e-45 (logits/T overflow)",
            call(p, q, temperature=1e-45),
            ERROR,
            names=("`p`", "`q`"),
        )
    yield Case(
        tag,
        "temperature tensor requiring grad",
        call(p, q, temperature=torch.tensor(2.0, requires_grad=True)),
        ERROR,
        names=("temperature",),
    )
    flat_p, flat_q = torch.zeros(ROWS, v), torch.zeros(ROWS, v)
    flat_q[:, ::2] = -1.0  # x/T: 0 or -inf, i.e. the limit distributions, exactly
    yield Case(
        tag,
        "temperature 1e-45 on logits in {0, -1} (control)",
        call(flat_p, flat_q, temperature=1e-45),
        CONTROL,
        reference=lambda: divergent.divergence(
            name,
            flat_p.double(),
            flat_q.double(),
            temperature=1e-45,
            engine="reference",
            reduction="none",
        ),
        extra={"may_reject": True},
    )
    partial = p.clone()
    partial[:, : v // 2] = -math.inf
    yield Case(
        tag,
        "partial -inf (top-k style, control)",
        call(partial, q),
        CONTROL,
        reference=lambda: divergent.divergence(
            name, partial.double(), q.double(), engine="reference", reduction="none"
        ),
    )
    sign = torch.where(torch.arange(v) % 3 == 0, 1.0, -1.0)
    huge = torch.ones(ROWS, 1) * sign * 3e38
    yield Case(
        tag,
        "fp32 logits of ±3e38 (control)",
        call(huge, q),
        CONTROL,
        reference=lambda: divergent.divergence(
            name, huge.double(), q.double(), engine="reference", reduction="none"
        ),
        extra={"may_reject": True},
    )


def fused_cases(v: int) -> Iterator[Case]:
    tag = f"fused_linear_divergence[V={v}]"
    gen = torch.Generator().manual_seed(3)
    hs, ht = torch.randn(ROWS, 8, generator=gen), torch.randn(ROWS, 6, generator=gen)
    ws, wt = torch.randn(v, 8, generator=gen), torch.randn(v, 6, generator=gen)

    def call(hs=hs, ws=ws, ht=ht, wt=wt, **kw):  # type: ignore[no-untyped-def]
        kw.setdefault("reduction", "none")
        return lambda: divergent.fused_linear_divergence(
            "kl", student_hidden=hs, student_weight=ws, teacher_hidden=ht, teacher_weight=wt, **kw
        )

    def bad(x: torch.Tensor, value: float, row: int = BAD) -> torch.Tensor:
        x = x.clone()
        x[row, 1] = value
        return x

    yield Case(tag, "NaN in student_hidden", call(hs=bad(hs, math.nan)), NAN, nan_at=(BAD,))
    yield Case(tag, "NaN in teacher_hidden", call(ht=bad(ht, math.nan)), NAN, nan_at=(BAD,))
    yield Case(
        tag, "NaN in student_hidden, mean", call(hs=bad(hs, math.nan), reduction="mean"), NAN
    )
    yield Case(tag, "NaN in student_weight", call(ws=bad(ws, math.nan, 0)), NAN)
    yield Case(
        tag, "+inf in student_hidden", call(hs=bad(hs, math.inf)), ERROR, names=("student_hidden",)
    )
    yield Case(
        tag, "-inf in teacher_hidden", call(ht=bad(ht, -math.inf)), ERROR, names=("teacher_hidden",)
    )
    yield Case(
        tag,
        "+inf in teacher_weight",
        call(wt=bad(wt, math.inf, 0)),
        ERROR,
        names=("teacher_weight",),
    )
    yield Case(
        tag, "logits overflowing float32", call(hs=hs * 1e30, ws=ws * 1e30), ERROR, names=("row",)
    )
    yield Case(tag, "temperature 1e-45", call(temperature=1e-45), ERROR, names=("row",))
    yield Case(
        tag,
        "temperature tensor requiring grad",
        call(temperature=torch.tensor(2.0, requires_grad=True)),
        ERROR,
        names=("temperature",),
    )


def sparse_cases(v: int) -> Iterator[Case]:
    teacher, student = _logits(ROWS, v, 5), _logits(ROWS, v, 6)
    k = min(4, v)
    ids, lp = divergent.topk_logprobs(teacher, k)
    for tail in ("bucket", "renormalize", "ignore"):
        tag = f"sparse_divergence[{tail}, V={v}]"

        def call(ids=ids, lp=lp, student=student, tail=tail, **kw):  # type: ignore[no-untyped-def]
            kw.setdefault("reduction", "none")
            return lambda: divergent.sparse_divergence("kl", ids, lp, student, tail=tail, **kw)

        def bad(x: torch.Tensor, value: float, col: int = 2) -> torch.Tensor:
            x = x.clone()
            x[BAD, col] = value
            return x

        row_inf = student.clone()
        row_inf[BAD] = -math.inf
        yield Case(
            tag, "NaN student logit", call(student=bad(student, math.nan)), NAN, nan_at=(BAD,)
        )
        yield Case(
            tag,
            "+inf student logit",
            call(student=bad(student, math.inf)),
            ERROR,
            names=("student_logits",),
        )
        yield Case(
            tag, "all -inf student row", call(student=row_inf), ERROR, names=("student_logits",)
        )
        yield Case(
            tag,
            "NaN teacher log-prob",
            call(lp=bad(lp, math.nan, 0)),
            ERROR,
            names=("teacher_topk_logprobs",),
        )
        yield Case(
            tag,
            "NaN teacher log-prob, check_inputs=False",
            call(lp=bad(lp, math.nan, 0), check_inputs=False),
            NAN,
            nan_at=(BAD,),
        )
        yield Case(
            tag,
            "positive teacher log-prob",
            call(lp=bad(lp, 0.5, 0)),
            ERROR,
            names=("teacher_topk_logprobs",),
        )
        yield Case(
            tag, "temperature 1e-45", call(temperature=1e-45), ERROR, names=("student_logits",)
        )
    tag = f"topk_logprobs[V={v}]"
    t_inf, t_row, t_nan = teacher.clone(), teacher.clone(), teacher.clone()
    t_inf[BAD, 1] = math.inf
    t_row[BAD] = -math.inf
    t_nan[BAD, 1] = math.nan
    yield Case(
        tag,
        "+inf teacher logit",
        lambda: divergent.topk_logprobs(t_inf, k),
        ERROR,
        names=("teacher_logits",),
    )
    yield Case(
        tag,
        "all -inf teacher row",
        lambda: divergent.topk_logprobs(t_row, k),
        ERROR,
        names=("teacher_logits",),
    )
    yield Case(
        tag,
        "NaN teacher logit",
        lambda: divergent.topk_logprobs(t_nan, k),
        NAN,
        nan_at=tuple(range(BAD * k, BAD * k + k)),
    )


def policy_cases() -> Iterator[Case]:
    gen = torch.Generator().manual_seed(7)
    logp = -torch.rand(2, 5, generator=gen) * 3 - 0.01
    ref = -torch.rand(2, 5, generator=gen) * 3 - 0.01
    w = torch.rand(2, 5, generator=gen) + 0.5

    def at(x: torch.Tensor, value: float) -> torch.Tensor:
        x = x.clone()
        x[1, 2] = value
        return x

    bad_entry = (7,)
    for kind in ("k1", "k2", "k3"):
        tag = f"policy_kl[{kind}]"

        def call(lp=logp, rf=ref, iw=None, kind=kind, **kw):  # type: ignore[no-untyped-def]
            return lambda: divergent.policy_kl(lp, rf, kind, importance_weight=iw, **kw)

        yield Case(tag, "NaN logp", call(lp=at(logp, math.nan)), NAN, nan_at=bad_entry)
        yield Case(tag, "NaN ref_logp", call(rf=at(ref, math.nan)), NAN, nan_at=bad_entry)
        yield Case(tag, "NaN logp, mean", call(lp=at(logp, math.nan), reduction="mean"), NAN)
        yield Case(tag, "+inf logp", call(lp=at(logp, math.inf)), ERROR, names=("`logp`",))
        yield Case(tag, "+inf ref_logp", call(rf=at(ref, math.inf)), ERROR, names=("`ref_logp`",))
        yield Case(
            tag,
            "-inf logp (sampled action)",
            call(lp=at(logp, -math.inf)),
            ERROR,
            names=("`logp`",),
        )
        yield Case(tag, "positive logp", call(lp=at(logp, 0.7)), ERROR, names=("`logp`",))
        yield Case(tag, "positive ref_logp", call(rf=at(ref, 0.7)), ERROR, names=("`ref_logp`",))
        yield Case(tag, "NaN importance weight", call(iw=at(w, math.nan)), NAN, nan_at=bad_entry)
        yield Case(
            tag,
            "+inf importance weight",
            call(iw=at(w, math.inf)),
            ERROR,
            names=("importance_weight",),
        )
        yield Case(
            tag,
            "negative importance weight",
            call(iw=at(w, -1.0)),
            ERROR,
            names=("importance_weight",),
        )
    rewards = torch.rand(2, 5, generator=gen)
    tag = "kl_penalty_reward"
    yield Case(
        tag,
        "NaN logp",
        lambda: divergent.kl_penalty_reward(rewards, at(logp, math.nan), ref, 0.1),
        NAN,
        nan_at=bad_entry,
    )
    yield Case(
        tag,
        "+inf logp",
        lambda: divergent.kl_penalty_reward(rewards, at(logp, math.inf), ref, 0.1),
        ERROR,
        names=("`logp`",),
    )
    yield Case(
        tag,
        "positive ref_logp",
        lambda: divergent.kl_penalty_reward(rewards, logp, at(ref, 0.5), 0.1),
        ERROR,
        names=("`ref_logp`",),
    )
    yield Case(
        tag,
        "beta NaN",
        lambda: divergent.kl_penalty_reward(rewards, logp, ref, math.nan),
        ERROR,
        names=("beta",),
    )
    tag = "reference_sample_kl"
    yield Case(
        tag,
        "NaN logp",
        lambda: divergent.reference_sample_kl(at(logp, math.nan), ref),
        NAN,
        nan_at=bad_entry,
    )
    yield Case(
        tag,
        "-inf ref_logp (sampled action)",
        lambda: divergent.reference_sample_kl(logp, at(ref, -math.inf)),
        ERROR,
        names=("`ref_logp`",),
    )
    yield Case(
        tag,
        "+inf logp",
        lambda: divergent.reference_sample_kl(at(logp, math.inf), ref),
        ERROR,
        names=("`logp`",),
    )
    yield Case(
        tag,
        "positive logp",
        lambda: divergent.reference_sample_kl(at(logp, 0.2), ref),
        ERROR,
        names=("`logp`",),
    )


# --------------------------------------------------------------------------------------------
# the matrices
# --------------------------------------------------------------------------------------------
def registered_names() -> list[str]:
    return [d.name for d in list_divergences()]


SMALL_V = 10
LARGE_V = -(-chunked.AUTO_MIN_ELEMENTS // ROWS) + 7  # rows × V above the engine threshold


Grid = list[tuple[int, "str | None", torch.dtype]]


def full_grid() -> Grid:
    """Sizes below and above the engine threshold × the auto, reference and chunked paths
    (float32), plus bfloat16 and float64 inputs at the small size on the two paths."""
    grid: Grid = [
        (v, e, torch.float32)
        for v in (SMALL_V, 257, LARGE_V)
        for e in (None, "reference", "chunked")
    ]
    grid += [
        (SMALL_V, e, d) for d in (torch.bfloat16, torch.float64) for e in ("reference", "chunked")
    ]
    return grid


def all_cases(
    grid: Grid,
    names: list[str] | None = None,
    other_sizes: tuple[int, ...] = (SMALL_V, LARGE_V),
) -> Iterator[Case]:
    """Every (or the given) name over ``grid``, then the other entry points."""
    for name in names if names is not None else registered_names():
        for v, engine, dtype in grid:
            yield from categorical_cases(name, v, engine, dtype=dtype)
    for v in other_sizes:
        yield from fused_cases(v)
        yield from sparse_cases(v)
    yield from policy_cases()


def run_sweep(cases: Iterator[Case]) -> list[Case]:
    with chunked._settings(compile=False):
        return [run_case(case) for case in cases]


def summary(results: list[Case]) -> dict[str, int]:
    counts = collections.Counter(case.outcome for case in results)
    bad_inputs = [c for c in results if c.expect != CONTROL]
    return {
        "calls": len(results),
        "bad inputs tried": len(bad_inputs),
        "clear errors": counts["error"],
        "NaN-propagated": counts["nan"],
        "warned": counts["warned"],
        "controls correct": counts["ok"],
        **{v: counts[v] for v in VIOLATIONS},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="the fast matrix of the tests")
    args = ap.parse_args()
    start = time.perf_counter()
    if args.quick:  # the tests' matrix: the engine threshold lowered so small inputs cross it
        chunked.AUTO_MIN_ELEMENTS, saved = 100, chunked.AUTO_MIN_ELEMENTS
        grid: Grid = [
            (SMALL_V, None, torch.float32),
            (SMALL_V, "reference", torch.float32),
            (SMALL_V, "chunked", torch.float32),
            (40, None, torch.float32),
            (SMALL_V, "chunked", torch.bfloat16),
            (SMALL_V, "chunked", torch.float64),
        ]
        results = run_sweep(all_cases(grid, other_sizes=(SMALL_V, 40)))
        chunked.AUTO_MIN_ELEMENTS = saved
    else:
        results = run_sweep(all_cases(full_grid()))
    figures = summary(results)
    print(
        f"# input-contract sweep ({'quick' if args.quick else 'full'} matrix, "
        f"torch {torch.__version__}, {time.perf_counter() - start:.0f} s)\n"
    )
    print("| figure | count |\n|---|---|")
    for key, value in figures.items():
        print(f"| {key} | {value} |")
    by_entry: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for case in results:
        by_entry[case.entry.split("[")[0]][case.outcome] += 1
    print("\n| entry point | outcomes |\n|---|---|")
    for entry, counter in by_entry.items():
        print(f"| {entry} | {', '.join(f'{k} {n}' for k, n in sorted(counter.items()))} |")
    violations = [c for c in results if c.outcome in VIOLATIONS]
    silent = sum(figures[v] for v in ("silent-finite", "silent-inf", "silent-nan"))
    print(
        f"\nsilent or non-finite results on bad input: {silent} (goal 0); "
        f"violations of any kind: {len(violations)}"
    )
    for case in violations[:60]:
        print(f"- {case.entry}: {case.what}: {case.outcome} ({case.detail})")


if __name__ == "__main__":
    main()

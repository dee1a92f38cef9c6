"""Every error path of the core: a ``ValueError`` whose message names the argument, the
offending value and what is allowed."""

from __future__ import annotations

import math
import re

import pytest
import torch

import divergent
from divergent.categorical import (
    get_divergence,
    list_divergences,
    register_divergence,
    resolve_divergence,
)
from divergent.categorical.fdiv import make_f_divergence

P = torch.randn(3, 4)
Q = torch.randn(3, 4)
ALL_NAMES = [d.name for d in list_divergences()]


def _raises(match: str, fn, *args, **kwargs) -> str:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match=match) as info:
        fn(*args, **kwargs)
    return str(info.value)


# ------------------------------------------------------------------------------------------
# names and parameters
# ------------------------------------------------------------------------------------------
def test_unknown_name_lists_the_registered_names() -> None:
    msg = _raises("unknown divergence `kl_div`", divergent.divergence, "kl_div", P, Q)
    for name in ALL_NAMES:
        assert name in msg
    assert "f_divergence" in msg  # and says how to use a custom generator
    msg = _raises("unknown divergence `Reverse-KL`", get_divergence, "Reverse-KL")
    assert "Did you mean `reverse_kl`?" in msg


def test_name_of_wrong_type() -> None:
    _raises("divergence name must be a string, got int", get_divergence, 3)
    _raises("`divergence` must be a registered name.*got float", resolve_divergence, 3.0)


@pytest.mark.parametrize(
    ("name", "kwargs", "pattern"),
    [
        (
            "kl",
            {"beta": 0.5},
            r"`kl` got unknown parameter\(s\) \['beta'\]; it takes no divergence "
            r"parameters",
        ),
        (
            "js",
            {"alpha": 0.5},
            r"`js` got unknown parameter\(s\) \['alpha'\]; its parameters "
            r"are: beta",
        ),
        ("renyi", {"alpha": 2.0}, r"its parameters are: order"),
    ],
)
def test_unknown_parameter(name: str, kwargs: dict[str, float], pattern: str) -> None:
    _raises(pattern, divergent.divergence, name, P, Q, **kwargs)


@pytest.mark.parametrize("beta", [0.0, 1.0])
def test_js_beta_at_the_ends_points_to_kl(beta: float) -> None:
    msg = _raises(
        rf"`beta`={beta!r} is outside its allowed range \(0, 1\)", divergent.js, P, Q, beta=beta
    )
    assert "`kl`" in msg and "`reverse_kl`" in msg


@pytest.mark.parametrize(
    ("name", "param", "value", "allowed"),
    [
        ("js", "beta", -0.5, r"\(0, 1\)"),
        ("js", "beta", 1.5, r"\(0, 1\)"),
        ("js", "beta", math.nan, r"\(0, 1\)"),
        ("skew_kl", "alpha", 1.0, r"\[0, 1\)"),
        ("skew_kl", "alpha", -0.1, r"\[0, 1\)"),
        ("skew_reverse_kl", "alpha", 1.0, r"\[0, 1\)"),
        ("renyi", "order", -1.0, r"\[0, ∞\]"),
        ("renyi", "order", -math.inf, r"\[0, ∞\]"),
        ("alpha", "alpha", math.inf, r"\(-∞, ∞\)"),
        ("alpha", "alpha", math.nan, r"\(-∞, ∞\)"),
    ],
)
def test_out_of_range_parameters(name: str, param: str, value: float, allowed: str) -> None:
    msg = _raises(
        rf"divergence `{name}`: parameter `{param}`=.* is outside its allowed range "
        rf"{allowed}",
        divergent.divergence,
        name,
        P,
        Q,
        **{param: value},
    )
    assert repr(float(value)) in msg


def test_parameter_of_wrong_type() -> None:
    _raises(
        r"parameter `beta` must be a real number in \(0, 1\), got '0.5'",
        divergent.js,
        P,
        Q,
        beta="0.5",
    )
    _raises(r"parameter `beta` must be a real number.*got True", divergent.js, P, Q, beta=True)
    _raises(
        r"parameter `order` must be a scalar, got a tensor of shape \(2,\)",
        divergent.renyi,
        P,
        Q,
        order=torch.tensor([1.0, 2.0]),
    )
    # scalar tensors and numpy scalars are accepted
    torch.testing.assert_close(
        divergent.js(P, Q, beta=torch.tensor(0.3)), divergent.js(P, Q, beta=0.3)
    )
    np = pytest.importorskip("numpy")
    torch.testing.assert_close(
        divergent.js(P, Q, beta=np.float32(0.25)), divergent.js(P, Q, beta=0.25)
    )


def test_infinite_order_is_allowed_only_where_documented() -> None:
    assert torch.isfinite(divergent.renyi(P, Q, order=math.inf))


# ------------------------------------------------------------------------------------------
# tensors
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.bool, torch.complex64])
def test_non_float_dtype(dtype: torch.dtype) -> None:
    bad = torch.zeros(3, 4, dtype=dtype)
    _raises(
        rf"`p` must be a floating-point tensor.*got dtype {re.escape(str(dtype))}",
        divergent.kl,
        bad,
        Q,
    )
    _raises(
        rf"`q` must be a floating-point tensor.*got dtype {re.escape(str(dtype))}",
        divergent.kl,
        P,
        bad,
    )


def test_not_a_tensor() -> None:
    _raises("`p` must be a torch.Tensor, got list", divergent.kl, [[0.0, 1.0]], Q)
    _raises(
        "`q` must be a torch.Tensor, got ndarray",
        divergent.kl,
        P,
        pytest.importorskip("numpy").zeros((3, 4)),
    )


def test_shape_mismatch() -> None:
    _raises(
        r"`p` and `q` must have the same shape, got \(3, 4\) and \(2, 4\)", divergent.kl, P, Q[:2]
    )
    _raises(
        r"`p` and `q` must have the same shape, got \(3, 4\) and \(1, 3, 4\)",
        divergent.kl,
        P,
        Q[None],
    )


def test_class_axis_mismatch() -> None:
    _raises(
        r"class axes differ: `p` has 4 classes \(shape \(3, 4\)\) and `q` has 5",
        divergent.kl,
        P,
        torch.randn(3, 5),
    )


def test_zero_dim_and_empty_class_axis() -> None:
    _raises(
        "`p` must have a class axis.*got a 0-d tensor",
        divergent.kl,
        torch.tensor(1.0),
        torch.tensor(1.0),
    )
    _raises(
        r"`p` has an empty class axis \(shape \(3, 0\)\)",
        divergent.kl,
        torch.zeros(3, 0),
        torch.zeros(3, 0),
    )


def test_device_mismatch() -> None:
    meta = torch.empty(3, 4, device="meta")
    _raises("`p` is on cpu but `q` is on meta", divergent.kl, P, meta)


# ------------------------------------------------------------------------------------------
# keyword arguments
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("mask", "pattern"),
    [
        (
            torch.ones(3, dtype=torch.float32),
            r"`mask` must be a bool tensor of the leading "
            r"shape \(3,\).*got torch.float32",
        ),
        (torch.ones(3, dtype=torch.int64), r"`mask` must be a bool tensor.*got torch.int64"),
        ([True, False, True], r"`mask` must be a bool tensor.*got list"),
        (
            torch.ones(4, dtype=torch.bool),
            r"`mask` must have the leading shape \(3,\) of the "
            r"inputs.*got \(4,\)",
        ),
        (
            torch.ones(3, 1, dtype=torch.bool),
            r"`mask` must have the leading shape \(3,\).*got "
            r"\(3, 1\)",
        ),
    ],
)
def test_bad_mask(mask: object, pattern: str) -> None:
    _raises(pattern, divergent.kl, P, Q, mask=mask)


@pytest.mark.parametrize("reduction", ["avg", "batchmean", None, "MEAN"])
def test_bad_reduction(reduction: object) -> None:
    _raises(
        rf"`reduction` must be one of \('none', 'sum', 'mean'\), got "
        rf"{re.escape(repr(reduction))}",
        divergent.kl,
        P,
        Q,
        reduction=reduction,
    )


@pytest.mark.parametrize("inputs", ["logit", "log-probs", None])
def test_bad_inputs_kind(inputs: object) -> None:
    _raises(
        rf"`inputs` must be one of \('logits', 'log_probs', 'probs'\), got "
        rf"{re.escape(repr(inputs))}",
        divergent.kl,
        P,
        Q,
        inputs=inputs,
    )


@pytest.mark.parametrize("temperature", [0.0, -1.0, math.inf, math.nan, "2", True, None])
def test_bad_temperature(temperature: object) -> None:
    _raises(
        r"`temperature` must be a finite number > 0, got",
        divergent.kl,
        P,
        Q,
        temperature=temperature,
    )


def test_negative_or_empty_probs() -> None:
    bad = torch.tensor([[0.5, 0.6, -0.1], [0.2, 0.3, 0.5]])
    good = torch.tensor([[0.2, 0.3, 0.5], [0.2, 0.3, 0.5]])
    msg = _raises(
        r"`p` has a negative entry \(-0.1\) in row 0 but inputs='probs'",
        divergent.kl,
        bad,
        good,
        inputs="probs",
    )
    assert ">= 0" in msg
    _raises(r"`q` has a negative entry", divergent.kl, good, bad, inputs="probs")
    zero_row = torch.tensor([[0.0, 0.0, 0.0], [0.2, 0.3, 0.5]])
    _raises(
        r"`q` row 0 has no probability mass .* drop the row with `mask`",
        divergent.kl,
        good,
        zero_row,
        inputs="probs",
    )


@pytest.mark.parametrize(
    "normalizer", [0.0, -3.0, math.inf, math.nan, 0, torch.tensor(0.0), torch.tensor(-2.0)]
)
def test_non_positive_normalizer(normalizer: object) -> None:
    _raises(
        r"`normalizer` must be a finite number > 0, got", divergent.kl, P, Q, normalizer=normalizer
    )


@pytest.mark.parametrize("normalizer", ["3", True, torch.tensor([1.0, 2.0]), torch.tensor(True)])
def test_normalizer_of_wrong_type(normalizer: object) -> None:
    _raises(
        r"`normalizer` must be a (positive|scalar) number",
        divergent.kl,
        P,
        Q,
        normalizer=normalizer,
    )


def test_check_nan() -> None:
    bad = P.clone()
    bad[1, 2] = math.nan
    _raises("`p` contains NaN in row 1", divergent.kl, bad, Q, check_nan=True)
    _raises("`q` contains NaN in row 1", divergent.js, Q, bad, check_nan=True)


# ------------------------------------------------------------------------------------------
# user generators and the registry
# ------------------------------------------------------------------------------------------
def test_generator_not_one_at_one() -> None:
    msg = _raises(
        r"generator `f` must satisfy f\(1\) = 0 \(got f\(1\) = 1.0\)",
        divergent.f_divergence,
        lambda t: t * torch.log(t) + 1.0,
        P,
        Q,
    )
    assert "t − 1" in msg  # says how to fix it


def test_generator_not_convex() -> None:
    _raises(
        r"generator `f` must be convex", divergent.f_divergence, lambda t: -t * torch.log(t), P, Q
    )
    _raises(r"generator `f` must be convex", make_f_divergence, lambda t: torch.sin(t - 1.0))


def test_generator_not_callable_or_broken() -> None:
    _raises(
        r"generator `f` must be a callable f\(t\) -> tensor, got 3", divergent.f_divergence, 3, P, Q
    )
    _raises(
        r"generator `f` could not be evaluated on a float64 tensor",
        divergent.f_divergence,
        lambda t: t.nonexistent(),
        P,
        Q,
    )
    _raises(
        r"generator `f` must be elementwise",
        divergent.f_divergence,
        lambda t: (t - 1.0).square().sum() * torch.ones(1, dtype=t.dtype),
        P,
        Q,
    )


def test_generator_checks_can_be_skipped_with_explicit_limits() -> None:
    """Given f(0) and the slope the estimate is skipped; the value is still right."""
    spec = make_f_divergence(lambda t: (t - 1.0) ** 2, f_at_zero=1.0, slope_at_infinity=math.inf)
    torch.testing.assert_close(divergent.divergence(spec, P, Q), divergent.pearson_chi2(P, Q))


def test_register_duplicate_or_wrong_type() -> None:
    _raises(
        "a divergence named `kl` is already registered; pass overwrite=True",
        register_divergence,
        get_divergence("kl"),
    )
    _raises("register_divergence expects a Divergence, got str", register_divergence, "kl")

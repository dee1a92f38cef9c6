"""The shared contract of every registered distillation objective: masks, reductions,
ignore_index, leading shapes, dtypes, gradcheck, errors, and the registry's id handling."""

from __future__ import annotations

import pytest
import torch

from divergent.objectives import list_objectives, make_objective, objective_spec

IDS = [
    "ce",
    "kd",
    "kd:reverse_kl",
    "kd:js",
    "kd:tv",
    "kd:alpha",
    "lskd",
    "dkd",
    "dist",
    "ofa",
    "pld",
    "sinkd",
    "bdkd",
]
# sinkd's Sinkhorn is run to a tight tolerance where values are compared exactly
EXACT = {"sinkd": {"tol": 1e-11, "max_iter": 20000}}


def _objective(id: str, **kw):
    return make_objective(id, **{**EXACT.get(id, {}), **kw})


def _case(seed: int, n: int = 7, c: int = 5, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(n, c, generator=g, dtype=dtype) * 2
    t = torch.randn(n, c, generator=g, dtype=dtype) * 2
    y = torch.randint(0, c, (n,), generator=g)
    return s, t, y


def test_every_listed_id_is_registered():
    registered = {spec.id for spec in list_objectives()}
    assert {"ce", "kd", "dkd", "dist", "lskd", "ofa", "pld", "sinkd", "bdkd"} <= registered
    for id in IDS:
        assert make_objective(id).id == id


@pytest.mark.parametrize("id", IDS)
def test_reductions_are_consistent(id: str):
    s, t, y = _case(0)
    loss = _objective(id)
    rows = loss(s, t, y, reduction="none")
    assert rows.shape == (7,)
    torch.testing.assert_close(loss(s, t, y, reduction="sum"), rows.sum())
    torch.testing.assert_close(loss(s, t, y), rows.mean())
    torch.testing.assert_close(loss(s, t, y, normalizer=3.5), rows.sum() / 3.5)


@pytest.mark.parametrize("id", IDS)
def test_mask_and_ignore_index_equal_the_subset(id: str):
    s, t, y = _case(1)
    keep = torch.tensor([True, False, True, True, False, True, True])
    loss = _objective(id)
    subset = loss(s[keep], t[keep], y[keep])
    torch.testing.assert_close(loss(s, t, y, mask=keep), subset)
    y_ignored = torch.where(keep, y, torch.full_like(y, -100))
    torch.testing.assert_close(loss(s, t, y_ignored), subset)
    rows = loss(s, t, y, mask=keep, reduction="none")
    assert bool((rows[~keep] == 0).all())
    torch.testing.assert_close(rows[keep], loss(s[keep], t[keep], y[keep], reduction="none"))


@pytest.mark.parametrize("id", IDS)
def test_fully_masked_batch_gives_zero_with_zero_gradient(id: str):
    s, t, y = _case(2)
    s.requires_grad_()
    loss = _objective(id)(s, t, y, mask=torch.zeros(7, dtype=torch.bool))
    assert float(loss.detach()) == 0.0
    (g,) = torch.autograd.grad(loss, s, allow_unused=True)
    assert g is None or bool((g == 0).all())


@pytest.mark.parametrize("id", IDS)
def test_leading_shape_is_flattened(id: str):
    s, t, y = _case(3, n=6)
    loss = _objective(id)
    flat = loss(s, t, y, reduction="none")
    shaped = loss(s.reshape(2, 3, 5), t.reshape(2, 3, 5), y.reshape(2, 3), reduction="none")
    assert shaped.shape == (2, 3)
    torch.testing.assert_close(shaped.reshape(-1), flat)


@pytest.mark.parametrize("id", IDS)
def test_gradcheck(id: str):
    s, t, y = _case(4, n=4, c=3)
    s.requires_grad_()
    loss = _objective(id)
    assert torch.autograd.gradcheck(lambda x: loss(x, t, y), (s,), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("id", IDS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_low_precision_inputs_give_float32(id: str, dtype):
    s, t, y = _case(5, dtype=torch.float32)
    loss = make_objective(id)
    out = loss(s.to(dtype), t.to(dtype), y)
    assert out.dtype == torch.float32 and torch.isfinite(out)
    if dtype == torch.float32:
        ref = _objective(id)(s.double(), t.double(), y)
        torch.testing.assert_close(out.double(), ref, rtol=2e-4, atol=1e-5)


@pytest.mark.parametrize("id", IDS)
def test_extreme_logits_give_finite_values_and_gradients(id: str):
    s, t, y = _case(6, dtype=torch.float32)
    s = (s * 1e3).requires_grad_()
    out = make_objective(id)(s, t * 1e3, y)
    out.backward()
    assert torch.isfinite(out) and bool(torch.isfinite(s.grad).all())


@pytest.mark.parametrize("id", IDS)
def test_nan_in_a_kept_row_gives_nan(id: str):
    s, t, y = _case(7)
    s[2, 1] = float("nan")
    rows = make_objective(id)(s, t, y, reduction="none")
    assert bool(torch.isnan(rows[2]))
    if id.startswith("kd"):  # the divergence term alone, without the CE term
        rows = make_objective(id, ce_weight=0.0)(s, t, y, reduction="none")
        assert bool(torch.isnan(rows[2])) and bool(torch.isfinite(rows[[0, 1, 3]]).all())
    if id == "ce":  # no teacher term
        return
    t[4, 0] = float("nan")  # on the teacher's side too
    assert bool(torch.isnan(make_objective(id)(s, t, y, reduction="none")[4]))


@pytest.mark.parametrize("id", IDS)
def test_bad_inputs_raise_value_errors(id: str):
    s, t, y = _case(8)
    loss = make_objective(id)
    if id != "ce":
        with pytest.raises(ValueError, match="class axes differ"):
            loss(s, t[:, :4], y)
    with pytest.raises(ValueError, match="out of range"):
        loss(s, t, torch.tensor([0, 1, 2, 3, 4, 5, 0]))
    with pytest.raises(ValueError, match="integer"):
        loss(s, t, y.double())
    with pytest.raises(ValueError, match="leading shape"):
        loss(s, t, y[:5])
    with pytest.raises(ValueError, match="mask"):
        loss(s, t, y, mask=torch.ones(7))
    with pytest.raises(ValueError, match="reduction"):
        loss(s, t, y, reduction="batchmean")
    with pytest.raises(ValueError, match="student_logits"):
        loss(torch.zeros(7, 5, dtype=torch.long), t, y)
    if id != "ce":
        with pytest.raises(ValueError, match="teacher_logits"):
            loss(s, None, y)


@pytest.mark.parametrize("id", ["kd", "dkd", "dist", "ofa", "sinkd", "bdkd", "lskd", "ce"])
def test_labels_required_where_used(id: str):
    s, t, _ = _case(9)
    with pytest.raises(ValueError, match="labels"):
        make_objective(id)(s, t)


def test_label_free_objectives():
    s, t, _ = _case(10)
    for id, kw in (("kd", {"ce_weight": 0.0}), ("pld", {}), ("dist", {"ce_weight": 0.0})):
        loss = make_objective(id, **kw)
        assert not loss.needs_labels
        assert torch.isfinite(loss(s, t))


def test_registry_errors_and_suggestions():
    with pytest.raises(ValueError, match=r"did you mean 'dkd'\?"):
        make_objective("dkdd")
    with pytest.raises(ValueError, match=r"did you mean 'kd:reverse_kl'\?"):
        make_objective("kd:reverse_kll")
    with pytest.raises(ValueError, match=r"unknown objective 'foo'\. Known: ce, kd"):
        make_objective("foo")
    with pytest.raises(ValueError, match="invalid override"):
        make_objective("dkd", gamma=3.0)
    with pytest.raises(ValueError, match="fixes the divergence"):
        make_objective("kd:js", divergence="kl")
    with pytest.raises(ValueError, match="temperature"):
        make_objective("kd", temperature=-1.0)
    # one line, so a CLI can print it as is
    try:
        make_objective("sinkdd")
    except ValueError as exc:
        assert "\n" not in str(exc)
    assert objective_spec("kd:js").id == "kd"


def test_overrides_reach_the_function():
    s, t, y = _case(11)
    a = make_objective("kd:alpha", alpha=0.2, temperature=2.0)(s, t, y)
    b = make_objective("kd", divergence="alpha", alpha=0.2, temperature=2.0)(s, t, y)
    torch.testing.assert_close(a, b)
    c = make_objective("kd:alpha", alpha=0.7, temperature=2.0)(s, t, y)
    assert not torch.allclose(a, c)


@pytest.mark.parametrize(
    "id,overrides",
    [
        ("kd", {"ce_weight": 0.0}),
        ("kd:reverse_kl", {"ce_weight": 0.0}),
        ("kd:js", {"ce_weight": 0.0}),
        ("kd:tv", {"ce_weight": 0.0}),
        ("kd:alpha", {"ce_weight": 0.0}),
        ("lskd", {"ce_weight": 0.0}),
        ("dkd", {"ce_weight": 0.0}),
        ("dist", {"ce_weight": 0.0, "eps": 0.0}),
        ("bdkd", {"ce_weight": 0.0}),
    ],
)
def test_distillation_term_vanishes_at_the_teacher_and_is_positive_elsewhere(id, overrides):
    s, t, y = _case(12, n=16)
    loss = make_objective(id, **overrides)
    rows_same = loss(t.clone(), t, y, reduction="none")
    torch.testing.assert_close(rows_same, torch.zeros_like(rows_same), rtol=0, atol=1e-10)
    rows = loss(s, t, y, reduction="none")
    assert bool((rows > 0).all())

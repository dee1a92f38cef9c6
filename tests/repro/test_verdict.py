"""The tri-state Verdict."""

from __future__ import annotations

import json

import pytest

from divergent.repro import Verdict

H, N, I = Verdict.HELD, Verdict.NOT_HELD, Verdict.INCONCLUSIVE


@pytest.mark.parametrize(
    "parts,expected",
    [([H], H), ([H, H], H), ([H, I], I), ([I, I], I), ([H, N], N), ([I, N], N), ([N, N], N)],
)
def test_combine(parts: list[Verdict], expected: Verdict) -> None:
    assert Verdict.combine(parts) is expected
    assert Verdict.combine(reversed(parts)) is expected


def test_values_json_and_held() -> None:
    assert [v.value for v in Verdict] == ["held", "not held", "inconclusive"]
    assert json.dumps({"v": Verdict.NOT_HELD}) == '{"v": "not held"}'
    assert str(Verdict.INCONCLUSIVE) == "inconclusive"
    assert Verdict("inconclusive") is I
    assert [v.held for v in Verdict] == [True, False, False]
    assert Verdict.from_bool(True) is H and Verdict.from_bool(False) is N


def test_combine_refuses_nothing_and_non_verdicts() -> None:
    with pytest.raises(ValueError, match="at least one"):
        Verdict.combine([])
    with pytest.raises(ValueError, match="Verdict values"):
        Verdict.combine([H, True])  # type: ignore[list-item]

"""The tri-state verdict of a reproduction: ``held``, ``not held`` or ``inconclusive``.

A reproduction's ``verdict(metrics) -> Verdict`` is a pure function of its measured numbers
with thresholds fixed in code. ``inconclusive`` means the experiment could not tell (not
enough statistical power, a measurement below its own noise floor); it is neither a pass nor
a failure of the claim.

>>> Verdict.combine([Verdict.HELD, Verdict.INCONCLUSIVE])
<Verdict.INCONCLUSIVE: 'inconclusive'>
>>> Verdict.combine([Verdict.INCONCLUSIVE, Verdict.NOT_HELD]).value
'not held'
>>> Verdict.from_bool(True).value
'held'
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import Enum

__all__ = ["Verdict"]


class Verdict(str, Enum):
    """``held`` / ``not held`` / ``inconclusive`` (a ``str``, so it is JSON as its value)."""

    HELD = "held"
    NOT_HELD = "not held"
    INCONCLUSIVE = "inconclusive"

    def __str__(self) -> str:
        return self.value

    @property
    def held(self) -> bool:
        """True only for ``held`` (the ``held`` field of ``results.json``)."""
        return self is Verdict.HELD

    @classmethod
    def from_bool(cls, held: bool) -> Verdict:
        """``held`` for True, ``not held`` for False (a check with no inconclusive outcome)."""
        return cls.HELD if held else cls.NOT_HELD

    @classmethod
    def combine(cls, parts: Iterable[Verdict]) -> Verdict:
        """The verdict of a conjunction of claims.

        Any part ``not held`` makes the whole ``not held`` (a measured failure is decisive);
        otherwise any ``inconclusive`` part makes the whole ``inconclusive``; otherwise
        ``held``. An empty conjunction is refused (it would hold vacuously).

        Raises:
            ValueError: no parts, or a part that is not a :class:`Verdict`.
        """
        items = list(parts)
        if not items:
            raise ValueError("Verdict.combine needs at least one part (got none)")
        bad = [p for p in items if not isinstance(p, Verdict)]
        if bad:
            raise ValueError(f"Verdict.combine takes Verdict values, got {bad!r}")
        if cls.NOT_HELD in items:
            return cls.NOT_HELD
        if cls.INCONCLUSIVE in items:
            return cls.INCONCLUSIVE
        return cls.HELD

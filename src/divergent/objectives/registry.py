r"""Objective ids for trainers and the CLI: ``make_objective(id, **overrides)``.

An id names a distillation objective with its official defaults:

=================  ==========================================================================
``ce``             hard-label cross-entropy only (the no-teacher baseline)
``kd``             Hinton KD with KL (T=4, 0.1·CE + 0.9·T²·KL)
``kd:<name>``      Hinton KD with any registered divergence, e.g. ``kd:reverse_kl``,
                   ``kd:js``, ``kd:tv``, ``kd:alpha`` (parameters as overrides: ``beta=0.1``)
``dkd``            decoupled KD, α·TCKD + β·NCKD (Zhao et al. 2022)
``dist``           inter/intra-class Pearson relations (Huang et al. 2022)
``lskd``           KD on z-scored logits (Sun et al. 2024)
``ofa``            target-enhanced OFA loss in logit space (Hao et al. 2023)
``pld``            Plackett–Luce list-wise distillation
``sinkd``          batch-wise Sinkhorn distillation (Cui et al. 2024)
``bdkd``           per-sample balance of forward and reverse KL (BD-KD)
=================  ==========================================================================

(The table lists the ids registered by this package's distillation modules; other modules
register more with :func:`register_objective`; :func:`list_objectives` is authoritative.)

:func:`make_objective` returns an :class:`~divergent.objectives._common.Objective` (an
``nn.Module``): ``objective(student_logits, teacher_logits, labels) -> loss`` with the class
axis last, plus the shared keyword options ``mask``, ``reduction``, ``normalizer``. Its
attributes ``id``, ``needs_teacher`` and ``needs_labels`` tell a trainer what to feed it; an
objective with a warm-up (``dkd``) has ``set_epoch(epoch)``, and one with trainable parameters
(``ofa`` projectors) exposes them through ``parameters()`` for the optimiser.

Example:
    >>> import torch
    >>> loss_fn = make_objective("kd:js", temperature=2.0, beta=0.1)
    >>> loss_fn.id, loss_fn.needs_labels
    ('kd:js', True)
    >>> s, t, y = torch.zeros(3, 4), 3 * torch.eye(3, 4), torch.tensor([0, 1, 2])
    >>> loss_fn(s, t, y).shape
    torch.Size([])
    >>> make_objective("kd:helinger")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: unknown objective 'kd:helinger'; did you mean 'kd:hellinger'? Known: ...
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from divergent.categorical import get_divergence, list_divergences
from divergent.objectives._common import Objective
from divergent.objectives.dkd import DKDLoss
from divergent.objectives.kd import CrossEntropyLoss, KDLoss, LSKDLoss
from divergent.objectives.ofa import OFALoss
from divergent.objectives.online import BDKDLoss
from divergent.objectives.ranking import PLDLoss
from divergent.objectives.relational import DISTLoss
from divergent.objectives.sinkhorn import SinKDLoss

__all__ = [
    "ObjectiveSpec",
    "list_objectives",
    "make_objective",
    "objective_spec",
    "register_objective",
]


@dataclass(frozen=True)
class ObjectiveSpec:
    """A registered objective id.

    Attributes:
        id: the id (``"kd"``, ``"dkd"`` ...). ``kd:<divergence>`` ids are derived from ``kd``.
        factory: ``factory(**overrides) -> Objective``.
        summary: one line for listings.
        reference: the paper.
    """

    id: str
    factory: Callable[..., Objective]
    summary: str
    reference: str = ""


_OBJECTIVES: dict[str, ObjectiveSpec] = {}


def register_objective(
    id: str, factory: Callable[..., Objective], summary: str, reference: str = ""
) -> ObjectiveSpec:
    """Register ``factory`` under ``id`` (lowercase letters, digits, ``_``; no ``:``).

    Raises:
        ValueError: a malformed id or one already registered.
    """
    if not isinstance(id, str) or not id or ":" in id or id != id.lower() or " " in id:
        raise ValueError(
            f"objective id must be a non-empty lowercase string without ':' or spaces, got {id!r}"
        )
    if id in _OBJECTIVES:
        raise ValueError(f"objective id {id!r} is already registered")
    spec = ObjectiveSpec(id=id, factory=factory, summary=summary, reference=reference)
    _OBJECTIVES[id] = spec
    return spec


def list_objectives() -> list[ObjectiveSpec]:
    """The registered objectives, in registration order (``kd:<name>`` ids not expanded)."""
    return list(_OBJECTIVES.values())


def _known_ids() -> list[str]:
    names = [d.name for d in list_divergences()]
    return [*_OBJECTIVES, *(f"kd:{n}" for n in names)]


def _unknown(id: str) -> ValueError:
    known = _known_ids()
    close = difflib.get_close_matches(id.lower(), known, n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]!r}?" if close else "."
    return ValueError(
        f"unknown objective {id!r}{hint} Known: {', '.join(_OBJECTIVES)}, kd:<divergence> "
        "(see `divergent list`)"
    )


def objective_spec(id: str) -> ObjectiveSpec:
    """The :class:`ObjectiveSpec` of a registered id (``kd:<name>`` maps to ``kd``)."""
    if not isinstance(id, str):
        raise ValueError(f"objective id must be a string, got {type(id).__name__}")
    base = id.split(":", 1)[0] if id.startswith("kd:") else id
    if base not in _OBJECTIVES:
        raise _unknown(id)
    return _OBJECTIVES[base]


def make_objective(id: str, **overrides: Any) -> Objective:
    """Build the objective registered as ``id`` with its defaults, overridden by ``overrides``.

    Args:
        id: ``ce``, ``kd``, ``kd:<divergence>`` (any registered divergence name), ``dkd``,
            ``dist``, ``lskd``, ``ofa``, ``pld``, ``sinkd``, ``bdkd``, or any id added with
            :func:`register_objective` (see :func:`list_objectives`).
        **overrides: keyword arguments of the objective's module (``temperature``,
            ``ce_weight`` ..., divergence parameters such as ``beta`` for ``kd:js``).

    Returns:
        An :class:`~divergent.objectives._common.Objective` with ``.id`` set to ``id``.

    Raises:
        ValueError: an unknown id (one line, with a did-you-mean suggestion), an unknown
            divergence in ``kd:<name>``, or an invalid override.
    """
    spec = objective_spec(id)
    if id.startswith("kd:"):
        name = id.split(":", 1)[1]
        try:
            get_divergence(name)
        except ValueError:
            raise _unknown(id) from None
        if "divergence" in overrides:
            raise ValueError(
                f"objective {id!r} fixes the divergence to {name!r}; drop the `divergence` "
                "override or use the id 'kd'"
            )
        overrides = {"divergence": name, **overrides}
    try:
        objective = spec.factory(**overrides)
    except TypeError as exc:  # an override the module does not take
        raise ValueError(f"invalid override for objective {id!r}: {exc}") from None
    objective.id = id
    return objective


register_objective("ce", CrossEntropyLoss, "hard-label cross-entropy only (no teacher)")
register_objective(
    "kd",
    KDLoss,
    "Hinton KD: 0.1·CE + 0.9·T²·D(teacher‖student), T=4, D=KL (kd:<name> for any divergence)",
    "Hinton, Vinyals & Dean 2015, arXiv:1503.02531",
)
register_objective(
    "lskd",
    LSKDLoss,
    "KD on z-scored logits: 0.1·CE + 9·T²·KL, T=2",
    "Sun et al., Logit standardization in knowledge distillation, CVPR 2024",
)
register_objective(
    "dkd",
    DKDLoss,
    "decoupled KD: CE + T²(α·TCKD + β·NCKD), α=1, β=8, T=4, 20-epoch warm-up",
    "Zhao et al., Decoupled knowledge distillation, CVPR 2022",
)
register_objective(
    "dist",
    DISTLoss,
    "inter/intra-class Pearson relations: CE + 2·τ²(L_inter + L_intra), τ=1",
    "Huang et al., Knowledge distillation from a stronger teacher, NeurIPS 2022",
)
register_objective(
    "ofa",
    OFALoss,
    "target-enhanced OFA loss in logit space: CE + OFA(ε=1, T=1)",
    "Hao et al., One-for-All (OFA-KD), NeurIPS 2023",
)
register_objective(
    "pld",
    PLDLoss,
    "Plackett–Luce distillation: teacher-weighted ListMLE, τ_T=1, no CE term",
    "Plackett-Luce distillation, arXiv:2506.12542",
)
register_objective(
    "sinkd",
    SinKDLoss,
    "0.2·CE + 0.8·KL(T=2) + batch-wise Sinkhorn (ε=0.1, weight 0.002)",
    "Cui et al., SinKD, COLING 2024 / TNNLS 2024",
)
register_objective(
    "bdkd",
    BDKDLoss,
    "CE + T²·per-sample mix of forward/reverse KL by entropy gap, T=4",
    "Amara et al., BD-KD, arXiv:2212.12965",
)

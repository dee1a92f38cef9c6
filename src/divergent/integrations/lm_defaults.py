"""Default objective lists of ``divergent distill --task lm``, importable without transformers.

The command line shows them in ``divergent distill --help`` whatever the task, so they live
apart from :mod:`divergent.integrations.lm_job` (which needs the optional ``hf`` extra).
"""

from __future__ import annotations

__all__ = ["DEFAULT_LM_OBJECTIVES", "QUICK_LM_OBJECTIVES"]

DEFAULT_LM_OBJECTIVES: tuple[str, ...] = ("kd:kl", "kd:reverse_kl", "kd:js", "kd:tv", "gkd:0.5")
"""Objectives of a full ``--task lm`` run (``ce`` is always run as the baseline)."""

QUICK_LM_OBJECTIVES: tuple[str, ...] = ("kd:kl", "kd:reverse_kl", "kd:js", "gkd:0.5")
"""Objectives of ``--task lm --quick``."""

"""Run small-tensor experiments on one CPU thread (applied once, by the reproduction runner).

The reproductions use tiny tensors, where intra-op threads only add synchronisation: on a
shared 2-core machine a quick run measured 4.5× slower wall time with 2 torch threads than
with 1. :func:`divergent.repro.run_reproduction` wraps every experiment in
:func:`single_thread` (defined in :mod:`divergent.train.threads`, which the distillation job
uses too), so no paper module sets threads itself.
"""

from __future__ import annotations

from divergent.train.threads import single_thread

__all__ = ["single_thread"]

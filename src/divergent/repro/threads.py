"""Run small-tensor experiments on one CPU thread (applied once, by the reproduction runner).

The reproductions use tiny tensors, where intra-op threads only add synchronisation: on a
shared 2-core machine a quick run measured 4.5× slower wall time with 2 torch threads than
with 1. :func:`divergent.repro.run_reproduction` wraps every experiment in
:func:`single_thread`, so no paper module sets threads itself.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

__all__ = ["single_thread"]


@contextmanager
def single_thread() -> Iterator[None]:
    """Set ``torch.set_num_threads(1)`` inside the block and restore the previous value."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)

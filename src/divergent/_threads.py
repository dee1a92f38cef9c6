"""One torch CPU thread for a block of small-tensor work.

Small tensors gain nothing from intra-op threads, only synchronisation: on a shared 2-core
machine a quick reproduction run measured 4.5× slower wall time with 2 torch threads than
with 1. The distillation job (:func:`divergent.train.run_distill`) and the reproduction runner
(:func:`divergent.repro.run_reproduction`) both run inside :func:`single_thread`, so no paper
module sets threads itself. A leaf module (rank 0), so that any layer can use it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

__all__ = ["single_thread"]


@contextmanager
def single_thread() -> Iterator[None]:
    """Set ``torch.set_num_threads(1)`` inside the block and restore the previous value.

    Example:
        >>> before = torch.get_num_threads()
        >>> with single_thread():
        ...     torch.get_num_threads()
        1
        >>> torch.get_num_threads() == before
        True
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)

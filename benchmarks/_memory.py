"""Peak resident memory of one call, for the benchmark scripts (not a benchmark itself).

Linux: the kernel's high-water mark ``VmHWM`` is reset by writing 5 to
``/proc/self/clear_refs``, so the peak of the measured call alone is read back; elsewhere the
process maximum ``ru_maxrss`` is used (an upper bound) and the method says so.
"""

from __future__ import annotations

import gc
import resource
from collections.abc import Callable
from typing import Any, NamedTuple


class PeakRSS(NamedTuple):
    """Resident set size before the call and at its peak (KiB), and how the peak was read."""

    base_kib: int
    peak_kib: int
    method: str  # "clear_refs" (exact peak of the call) or "ru_maxrss" (process maximum)


def rss_kib(field: str) -> int:
    """A field of ``/proc/self/status`` in KiB (``VmRSS``, ``VmHWM``)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(field)


def measure_peak_rss(run: Callable[[], Any]) -> PeakRSS:
    """Collect garbage, read the RSS, reset the high-water mark, call ``run()``, read the peak."""
    gc.collect()
    base = rss_kib("VmRSS")
    method = "clear_refs"
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        method = "ru_maxrss"
    run()
    peak = (
        rss_kib("VmHWM")
        if method == "clear_refs"
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    )
    return PeakRSS(base, peak, method)

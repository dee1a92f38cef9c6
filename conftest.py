"""Shared test configuration (tests/ and the doctests under src/): deterministic seeds,
one thread, a bounded hypothesis profile, and a test order for ``pytest -n``.

Order: the test files with a ``distributed`` test (several processes each) run first, then
those with a ``slow`` test, then the rest, each file kept whole and in its own order. Under
``pytest -n N`` (xdist's default ``--dist load``) whole files are handed out in that order
(:class:`SlowFirstFileScheduling`): a file's module-scoped fixtures (a 2-process spawn,
a trained teacher) are built once instead of once per worker, and the long files start
first instead of ending the run on one worker while the others wait.
"""

from __future__ import annotations

import os
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    max_examples=int(os.environ.get("DIVERGENT_HYPOTHESIS_EXAMPLES", "60")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize=True,
)
settings.load_profile("ci")

torch.set_num_threads(1)

# rank of a file by the markers of its tests: lower runs first
_FILE_RANK = {"distributed": 0, "slow": 1}


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def _file_of(item: pytest.Item) -> str:
    return item.nodeid.split("::", 1)[0]


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Files with a ``distributed`` test first, then files with a ``slow`` test (stable: each
    file stays whole, files and tests otherwise keep their collection order)."""
    rank: dict[str, int] = {}
    for item in items:
        marks = [_FILE_RANK[m.name] for m in item.iter_markers() if m.name in _FILE_RANK]
        file = _file_of(item)
        rank[file] = min([rank.get(file, len(_FILE_RANK)), *marks])
    items.sort(key=lambda item: rank[_file_of(item)])


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """Under xdist's default ``--dist load``: whole files, in collection order (see above).

    An explicit ``--dist`` other than ``load`` keeps xdist's own scheduler.
    """
    if config.getvalue("dist") != "load":
        return None
    from xdist.scheduler import LoadFileScheduling

    class SlowFirstFileScheduling(LoadFileScheduling):
        """xdist's ``loadfile`` without its reordering by file size: files go out in
        collection order, which the hook above puts slow files first in. With fewer files
        than workers (``pytest -n 2 one_file.py``) tests go out one by one, as under
        ``load``, so that every worker gets some."""

        by_file = True

        def schedule(self) -> None:
            if self.collection is None and self.registered_collections:
                ids = next(iter(self.registered_collections.values()))
                files = {nodeid.split("::", 1)[0] for nodeid in ids}
                self.by_file = len(files) >= len(self.nodes)
            self.config.option.loadscopereorder = False
            super().schedule()

        def _split_scope(self, nodeid: str) -> str:
            return super()._split_scope(nodeid) if self.by_file else nodeid

    return SlowFirstFileScheduling(config, log)

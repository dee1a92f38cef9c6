"""Launching a test script on 2 processes with ``torchrun`` (gloo on CPU), for the
``distributed`` tests: a clean environment (no inherited rank variables, one thread per
process) and the launcher's stderr tail in the failure message."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def torchrun_two_processes(
    script: Path, *args: str | Path, pythonpath: Path | None = None, timeout: float = 300
) -> None:
    """Run ``torchrun --standalone --nproc_per_node 2 script *args`` and assert it succeeded.

    ``pythonpath`` is put in front of ``PYTHONPATH`` (for a script that imports helper
    modules next to it).
    """
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    env["OMP_NUM_THREADS"] = "1"
    if pythonpath is not None:
        env["PYTHONPATH"] = os.pathsep.join(
            [str(pythonpath), *filter(None, [env.get("PYTHONPATH")])]
        )
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += ["--nproc_per_node", "2", str(script), *map(str, args)]
    done = subprocess.run(command, env=env, capture_output=True, timeout=timeout)
    assert done.returncode == 0, done.stderr.decode()[-3000:]

"""SIGKILL a training subprocess several times, resume each time: the final weights are
bit-identical (torch.equal on every parameter) to those of an uninterrupted run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from _sigkill_worker import train
from _train_helpers import assert_same_weights, params

WORKER = Path(__file__).with_name("_sigkill_worker.py")


def _start(ckpt: Path, out: Path, *flags: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, str(WORKER), str(ckpt), str(out), *flags],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


@pytest.mark.slow
def test_sigkill_mid_run_twice_then_resume_is_bit_identical(tmp_path):
    ckpt, out = tmp_path / "killed", tmp_path / "killed.pt"
    killed_mid_run = 0
    for i, delay in enumerate((0.05, 0.17)):
        proc = _start(ckpt, out, "--slow", *(["--resume"] if i else []))
        deadline = time.monotonic() + 60
        start_mtime = (
            (ckpt / "last.ckpt").stat().st_mtime_ns if (ckpt / "last.ckpt").exists() else 0
        )
        # wait for a checkpoint newer than the one we started from, then kill a bit later
        while time.monotonic() < deadline and proc.poll() is None:
            path = ckpt / "last.ckpt"
            if path.exists() and path.stat().st_mtime_ns != start_mtime:
                break
            time.sleep(0.01)
        time.sleep(delay)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            killed_mid_run += 1
        _, err = proc.communicate(timeout=60)
        assert proc.returncode in (0, -signal.SIGKILL), err.decode()[-2000:]
    assert killed_mid_run == 2, "the run ended before it could be killed: slow it down"
    assert not out.exists()

    # resume to the end and run the reference, both in this process on one thread (as the
    # subprocesses): the same arithmetic, so any difference comes from the resume
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        resumed = train(ckpt, resume=True, slow=False)
        reference = train(tmp_path / "reference", resume=False, slow=False)
    finally:
        torch.set_num_threads(threads)
    assert resumed.resumed_from is not None and resumed.resumed_from > 0
    assert_same_weights(params(reference.student), params(resumed.student))
    assert reference.history == resumed.history

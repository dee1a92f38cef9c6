"""``divergent distill --resume`` after a SIGKILL reproduces exactly the runs of an
uninterrupted job (every number but the wall-clock seconds)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from typer.testing import CliRunner

from divergent.cli import app

ARGS = [
    "distill",
    "--objectives",
    "kd,dkd,kd:js",
    "--seeds",
    "2",
    "--epochs",
    "4",
    "--teacher-epochs",
    "2",
]


def _runs(out):
    runs = json.loads((out / "report.json").read_text())["runs"]
    return [{k: v for k, v in run.items() if k != "seconds"} for run in runs]


@pytest.mark.slow
def test_sigkill_then_resume_gives_the_same_runs(tmp_path):
    killed = tmp_path / "killed"
    proc = subprocess.Popen(
        [sys.executable, "-m", "divergent", *ARGS, "--out", str(killed)],
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    marker = killed / "runs" / "ce" / "seed-1" / "result.json"
    deadline = time.monotonic() + 120
    while proc.poll() is None and not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.3)  # somewhere inside the next runs
    still_running = proc.poll() is None
    proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate(timeout=60)
    assert still_running, f"the job ended before it was killed: {err.decode()[-1500:]}"
    assert not (killed / "report.json").exists()

    runner = CliRunner()
    resumed = runner.invoke(app, [*ARGS, "--out", str(killed), "--resume"])
    assert resumed.exit_code == 0, resumed.output
    fresh = runner.invoke(app, [*ARGS, "--out", str(tmp_path / "fresh")])
    assert fresh.exit_code == 0, fresh.output
    assert _runs(killed) == _runs(tmp_path / "fresh")

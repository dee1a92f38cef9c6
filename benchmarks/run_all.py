"""Run every benchmark script in this folder, one after the other (``make bench``).

Each ``bench_*.py`` / ``sweep_*.py`` / ``accuracy_*.py`` script prints its own table of ratios
against the alternatives it measures in the same run; this runner only finds them, runs them
with the same interpreter, and reports which failed. Pass ``--quick`` to forward it to the
scripts that accept it (a smoke run), and names to run a subset::

    python benchmarks/run_all.py                 # everything, full size
    python benchmarks/run_all.py --quick engine  # scripts whose name contains "engine"
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PATTERNS = ("bench_*.py", "sweep_*.py", "accuracy_*.py")


def scripts(filters: list[str]) -> list[Path]:
    found = sorted({p for pattern in PATTERNS for p in HERE.glob(pattern)})
    return [p for p in found if not filters or any(f in p.stem for f in filters)]


def accepts_quick(path: Path) -> bool:
    return '"--quick"' in path.read_text()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("names", nargs="*", help="run only scripts whose name contains one of these")
    ap.add_argument("--quick", action="store_true", help="forward --quick where accepted")
    args = ap.parse_args()
    selected = scripts(args.names)
    if not selected:
        print(f"no benchmark script matches {args.names}", file=sys.stderr)
        return 2
    failed: list[str] = []
    for path in selected:
        cmd = [sys.executable, str(path)]
        if args.quick and accepts_quick(path):
            cmd.append("--quick")
        print(f"\n=== {path.name} ({' '.join(cmd[2:]) or 'full'}) ===", flush=True)
        start = time.perf_counter()
        code = subprocess.call(cmd)
        seconds = time.perf_counter() - start
        print(f"=== {path.name}: exit {code} in {seconds:.0f} s ===", flush=True)
        if code != 0:
            failed.append(path.name)
    if failed:
        print(f"\nfailed: {', '.join(failed)}", file=sys.stderr)
        return 1
    print(f"\nall {len(selected)} benchmark scripts ran")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""``divergent distill`` without the optional ``hf`` extra: the classifier task and ``--help``
never import transformers, and ``--task lm`` says in one line which extra to install."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def _run_without_transformers(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the CLI in a fresh interpreter in which ``import transformers`` fails."""
    code = textwrap.dedent(
        f"""
        import sys
        sys.modules["transformers"] = None  # any import of it raises ImportError
        from divergent.cli import main
        sys.argv = ["divergent", *{list(args)!r}]
        main()
        """
    )
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )


def test_distill_help_needs_no_transformers() -> None:
    done = _run_without_transformers("distill", "--help")
    assert done.returncode == 0, done.stderr
    assert "--task" in done.stdout


def test_task_lm_without_the_extra_is_one_line() -> None:
    done = _run_without_transformers("distill", "--task", "lm", "--quick", "--out", "unused")
    assert done.returncode == 2
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert "hf extra" in lines[0] and 'pip install "divergent[hf]"' in lines[0]


def test_classifier_task_does_not_import_transformers() -> None:
    code = (
        "import sys; from divergent.cli._app import load_command; load_command('distill'); "
        "print('transformers' in sys.modules)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stdout.strip() == "False"

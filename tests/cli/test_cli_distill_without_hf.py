"""``divergent distill`` without the optional ``hf`` extra: the classifier task and ``--help``
never import transformers, and ``--task lm`` says in one line which extra to install.

One fresh interpreter for the module (each start imports torch): it first loads the
``distill`` command and records whether transformers got imported, then makes
``import transformers`` fail and runs the CLI's ``main()`` for each command line below,
recording its exit code, stdout and stderr. The tests read what it recorded.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

COMMAND_LINES = {
    "help": ["distill", "--help"],
    "task lm": ["distill", "--task", "lm", "--quick", "--out", "unused"],
}

SCRIPT = textwrap.dedent(
    f"""
    import contextlib, io, json, sys
    from divergent.cli._app import load_command

    load_command("distill")
    results = {{"classifier imports transformers": "transformers" in sys.modules}}
    sys.modules["transformers"] = None  # from here on, any import of it raises ImportError
    from divergent.cli import main

    for key, args in {COMMAND_LINES!r}.items():
        sys.argv = ["divergent", *args]
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main()
                code = 0
            except SystemExit as done:
                code = 0 if done.code is None else done.code
        results[key] = {{"code": code, "stdout": out.getvalue(), "stderr": err.getvalue()}}
    print(json.dumps(results))
    """
)


@pytest.fixture(scope="module")
def recorded() -> dict:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_distill_help_needs_no_transformers(recorded) -> None:
    done = recorded["help"]
    assert done["code"] == 0, done["stderr"]
    assert "--task" in done["stdout"]


def test_task_lm_without_the_extra_is_one_line(recorded) -> None:
    done = recorded["task lm"]
    assert done["code"] == 2
    lines = [line for line in done["stderr"].splitlines() if line.strip()]
    assert len(lines) == 1, done["stderr"]
    assert "hf extra" in lines[0] and 'pip install "divergent[hf]"' in lines[0]


def test_classifier_task_does_not_import_transformers(recorded) -> None:
    assert recorded["classifier imports transformers"] is False

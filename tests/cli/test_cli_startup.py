"""``divergent --help`` and ``import divergent`` start without torch; the lazy names resolve."""

from __future__ import annotations

import subprocess
import sys

import pytest

import divergent
from divergent.cli._app import COMMANDS, load_command


def _run(code: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    return done.stdout.strip()


def test_help_and_import_do_not_import_torch() -> None:
    out = _run(
        "import sys\n"
        "import divergent\n"
        "from typer.testing import CliRunner\n"
        "from divergent.cli import app\n"
        "r = CliRunner().invoke(app, ['--help'])\n"
        "assert r.exit_code == 0, r.output\n"
        "assert all(name in r.output for name in ('distill', 'list', 'info', 'reproduce'))\n"
        "print('torch' in sys.modules)\n"
    )
    assert out == "False"


def test_a_command_loads_the_library() -> None:
    out = _run(
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from divergent.cli import app\n"
        "r = CliRunner().invoke(app, ['info', 'kl'])\n"
        "assert r.exit_code == 0, r.output\n"
        "print('torch' in sys.modules)\n"
    )
    assert out == "True"


@pytest.mark.parametrize("name", list(COMMANDS))
def test_the_help_table_matches_each_command(name: str) -> None:
    """The one-line help shown without importing a command is that command's own."""
    command = load_command(name)
    assert command.name == name
    first_line = (command.help or "").strip().splitlines()[0]
    assert first_line == COMMANDS[name][1]


def test_every_public_name_resolves_and_unknown_names_raise() -> None:
    for name in divergent.__all__:
        assert getattr(divergent, name) is not None, name
    assert set(divergent.__all__) <= set(dir(divergent))
    with pytest.raises(AttributeError, match="no attribute 'not_a_name'"):
        divergent.not_a_name  # noqa: B018

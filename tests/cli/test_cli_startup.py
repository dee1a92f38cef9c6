"""``divergent --help`` and ``import divergent`` start without torch; the lazy names resolve."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import divergent
from divergent.cli._app import COMMANDS, load_command

# One fresh interpreter for both startup tests (each start costs an import of torch): the
# root --help first, with what it imported, then a command, with what that imported.
STARTUP = (
    "import json, sys\n"
    "import divergent\n"
    "from typer.testing import CliRunner\n"
    "from divergent.cli import app\n"
    "r = CliRunner().invoke(app, ['--help'])\n"
    "assert r.exit_code == 0, r.output\n"
    "assert all(name in r.output for name in ('distill', 'list', 'info', 'reproduce'))\n"
    "torch_after_help = 'torch' in sys.modules\n"
    "r = CliRunner().invoke(app, ['info', 'kl'])\n"
    "assert r.exit_code == 0, r.output\n"
    "print(json.dumps({'help': torch_after_help, 'command': 'torch' in sys.modules}))\n"
)


@pytest.fixture(scope="module")
def torch_imported() -> dict[str, bool]:
    """Whether torch was in ``sys.modules`` after ``divergent --help`` and after a command."""
    done = subprocess.run(
        [sys.executable, "-c", STARTUP], capture_output=True, text=True, timeout=120, check=True
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_help_and_import_do_not_import_torch(torch_imported) -> None:
    assert torch_imported["help"] is False


def test_a_command_loads_the_library(torch_imported) -> None:
    assert torch_imported["command"] is True


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

"""The docstring examples of every module in ``divergent.core`` run as tests.

Each module is one test case, so a wrong printed number names its module. Examples print
tensors at PyTorch's default precision (4 decimals); ``NORMALIZE_WHITESPACE`` only.
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest
import torch

import divergent.core

MODULES = sorted(
    f"divergent.core.{m.name}" for m in pkgutil.iter_modules(divergent.core.__path__)
)
# the foundation modules must keep runnable examples (a doctest that silently disappears
# would make this file pass vacuously)
MUST_HAVE_EXAMPLES = {"divergent.core.functional": 5, "divergent.core.fdiv": 3}


@pytest.mark.parametrize("module_name", MODULES)
def test_docstring_examples(module_name: str) -> None:
    module = importlib.import_module(module_name)
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE, verbose=False)
    examples = 0
    torch.manual_seed(0)
    for test in finder.find(module, module_name, globs=None):
        examples += len(test.examples)
        runner.run(test, out=lambda _text: None)
    result = runner.summarize(verbose=False)
    assert examples >= MUST_HAVE_EXAMPLES.get(module_name, 0)
    if result.failed:
        # rerun to report what failed, with the expected and the actual output
        report: list[str] = []
        runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE)
        for test in finder.find(module, module_name, globs=None):
            runner.run(test, out=report.append)
        pytest.fail("".join(report), pytrace=False)


def test_foundation_modules_are_discovered() -> None:
    for name in ("registry", "named", "fdiv", "functional", "_inputs"):
        assert f"divergent.core.{name}" in MODULES

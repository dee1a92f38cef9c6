"""The import graph of ``src/divergent`` points one way: no cycle, no upward import.

The graph is read from the source with :mod:`ast` (nothing is imported). Each module belongs to
a *unit*: the first component below ``divergent`` (``categorical``, ``engine``, ``functional``
...). A unit may import from units of a strictly lower rank and from itself, never from a unit
of the same or a higher rank, so families of one rank (``samples`` and ``transport``) stay
independent. Imports of ``divergent`` modules placed inside a function (the usual way to hide a
cycle) are refused outright. The checker is tested on a small synthetic package with planted
violations, so a checker that cannot fail is caught too.
"""

from __future__ import annotations

import ast
import textwrap
from collections.abc import Mapping
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "divergent"

RANKS: dict[str, int] = {
    "_version": 0,
    "_validation": 0,
    "_files": 0,
    "_threads": 0,
    "categorical": 1,
    "engine": 2,
    "samples": 2,
    "transport": 2,
    "functional": 3,
    "teacher": 4,
    "rl": 4,
    "distributions": 4,
    "analysis": 5,
    "metrics": 5,
    "toy": 5,
    "objectives": 6,
    "train": 7,
    "testing": 8,
    "repro": 8,
    "integrations": 8,
    "papers": 9,
    "cli": 10,
    "__main__": 11,
    "__init__": 11,
}
"""The allowed direction: a unit imports only from units of lower rank (and from itself)."""


def module_name(path: Path, root: Path, package: str) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join([package, *parts])


def _resolve(
    node: ast.ImportFrom, module: str, is_package: bool, modules: Mapping[str, Path]
) -> list[str]:
    """Modules imported by a ``from ... import ...`` (relative levels resolved).

    ``from pkg import sub`` depends on the submodule ``pkg.sub`` when it is one, otherwise on
    ``pkg`` itself (a name defined in its ``__init__``).
    """
    if node.level:
        base = module.split(".")
        base = base if is_package else base[:-1]
        base = base[: len(base) - (node.level - 1)]
        prefix = ".".join(base + ([node.module] if node.module else []))
    else:
        prefix = node.module or ""
    names = [f"{prefix}.{alias.name}" for alias in node.names]
    return [n if n in modules else prefix for n in names]


def import_graph(
    root: Path, package: str
) -> tuple[dict[str, set[str]], list[tuple[str, str, int]]]:
    """``module -> imported package modules`` and the function-level imports found."""
    modules = {module_name(p, root, package): p for p in root.rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    nested: list[tuple[str, str, int]] = []
    for mod, path in modules.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        is_package = path.name == "__init__.py"
        top_level = set(map(id, tree.body))

        def visit(
            node: ast.AST, inside_function: bool, mod: str = mod, is_package: bool = is_package
        ) -> None:
            if isinstance(node, ast.Import | ast.ImportFrom):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                else:
                    names = _resolve(node, mod, is_package, modules)
                targets = [n for n in names if n == package or n.startswith(package + ".")]
                for name in targets:
                    # the longest existing module the name refers to
                    while name not in modules and "." in name:
                        name = name.rsplit(".", 1)[0]
                    if name in modules and name != mod:
                        graph[mod].add(name)
                if targets and inside_function:
                    nested.append((mod, targets[0], node.lineno))
            for child in ast.iter_child_nodes(node):
                fn = isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
                visit(child, inside_function or fn)

        for node in tree.body:
            assert id(node) in top_level
            visit(node, isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef))
    return graph, nested


def unit_of(module: str, package: str) -> str:
    parts = module.split(".")
    return "__init__" if len(parts) == 1 else parts[1]


def find_cycle(graph: Mapping[str, set[str]]) -> list[str] | None:
    """One cycle of the directed graph as a list of modules, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def dfs(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state:
                found = dfs(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = dfs(node)
            if found:
                return found
    return None


def layering_violations(root: Path, package: str, ranks: Mapping[str, int]) -> list[str]:
    """Every broken rule, as readable lines (empty when the package is well layered)."""
    graph, nested = import_graph(root, package)
    problems: list[str] = []
    for mod, target, line in nested:
        problems.append(f"{mod}:{line} imports {target} inside a function")
    for mod, targets in sorted(graph.items()):
        src_unit = unit_of(mod, package)
        if src_unit not in ranks:
            problems.append(f"{mod}: unit `{src_unit}` has no rank in the layering table")
            continue
        for target in sorted(targets):
            dst_unit = unit_of(target, package)
            if dst_unit == src_unit:
                continue
            if dst_unit not in ranks:
                problems.append(f"{target}: unit `{dst_unit}` has no rank in the layering table")
            elif ranks[dst_unit] >= ranks[src_unit]:
                problems.append(
                    f"{mod} (rank {ranks[src_unit]}) imports {target} "
                    f"(rank {ranks[dst_unit]}): upward or sideways"
                )
    cycle = find_cycle(graph)
    if cycle:
        problems.append("import cycle: " + " -> ".join(cycle))
    return problems


# ------------------------------------------------------------------------------------------
# the real package
# ------------------------------------------------------------------------------------------
def test_divergent_is_layered() -> None:
    problems = layering_violations(SRC, "divergent", RANKS)
    assert not problems, "\n".join(problems)


def test_every_unit_has_a_rank() -> None:
    units = {
        p.name.removesuffix(".py")
        for p in SRC.iterdir()
        if (p.suffix == ".py" or (p.is_dir() and (p / "__init__.py").exists()))
    }
    assert units <= set(RANKS), f"add a rank for {sorted(units - set(RANKS))}"


def test_the_registry_is_a_leaf() -> None:
    graph, _ = import_graph(SRC, "divergent")
    assert graph["divergent.categorical.registry"] == set()


# ------------------------------------------------------------------------------------------
# the checker itself, on a synthetic package with planted violations
# ------------------------------------------------------------------------------------------
def _write_package(root: Path, files: Mapping[str, str]) -> Path:
    pkg = root / "toypkg"
    for rel, text in files.items():
        path = pkg / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return pkg


TOY_RANKS = {"base": 0, "low": 1, "other_low": 1, "high": 2, "__init__": 3}
CLEAN = {
    "__init__.py": "from toypkg.high import run\n",
    "base.py": "X = 1\n",
    "low/__init__.py": "from toypkg.low.impl import f\n",
    "low/impl.py": "from toypkg import base\n\ndef f():\n    return base.X\n",
    "other_low.py": "from toypkg.base import X\n",
    "high.py": "from toypkg.low import f\nfrom . import other_low\n\ndef run():\n    return f()\n",
}


def test_checker_accepts_a_clean_package(tmp_path: Path) -> None:
    pkg = _write_package(tmp_path, CLEAN)
    assert layering_violations(pkg, "toypkg", TOY_RANKS) == []


@pytest.mark.parametrize(
    ("name", "files", "expected"),
    [
        ("upward import", {"base.py": "from toypkg.high import run\n"}, "upward or sideways"),
        ("sideways import", {"other_low.py": "from toypkg.low import f\n"}, "upward or sideways"),
        (
            "relative upward import",
            {"low/impl.py": "from ..high import run\n"},
            "upward or sideways",
        ),
        (
            "import inside a function",
            {"base.py": "def g():\n    from toypkg.high import run\n    return run\n"},
            "inside a function",
        ),
        ("unranked unit", {"extra.py": "from toypkg.base import X\n"}, "has no rank"),
        (
            "cycle inside a unit",
            {"low/a.py": "from toypkg.low import b\n", "low/b.py": "from toypkg.low import a\n"},
            "import cycle",
        ),
    ],
)
def test_checker_catches_planted_violations(
    tmp_path: Path, name: str, files: dict[str, str], expected: str
) -> None:
    pkg = _write_package(tmp_path, {**CLEAN, **files})
    problems = layering_violations(pkg, "toypkg", TOY_RANKS)
    assert any(expected in p for p in problems), (name, problems)

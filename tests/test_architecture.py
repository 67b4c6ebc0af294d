"""The package's shape: no import cycles, small modules and classes, every package installed."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import tomllib

PACKAGE = Path(__file__).resolve().parent.parent / "rl_tickets"
ROOT = PACKAGE.parent
MAX_MODULE_LINES = 400
MAX_CLASS_LINES = 220  # "about 200"
EXEMPTION = "exempt from the 400-line limit"  # a module's docstring must say this, and why


def module_name(path: Path) -> str:
    """``rl_tickets/chain/store.py`` -> ``rl_tickets.chain.store`` (a package's ``__init__`` -> the package)."""
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports_of(name: str) -> set[str]:
    """The rl_tickets modules ``name`` imports anywhere (functions included; not under TYPE_CHECKING)."""
    tree = ast.parse(MODULES[name].read_text())
    skipped = {
        id(n)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and _type_checking(node)
        for n in ast.walk(node)
    }
    package = name if MODULES[name].name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:
                child = f"{base}.{alias.name}"
                found.add(child if child in MODULES else base)
    return {m for m in found if m in MODULES and m != name}


def test_the_import_graph_has_no_cycles() -> None:
    graph = {name: imports_of(name) for name in MODULES}
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt) :] + [nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name)


def test_the_cycle_finder_sees_imports_inside_functions(tmp_path: Path) -> None:
    """The graph counts an import hidden in a function (the way cycles used to be dodged)."""
    assert "rl_tickets.trainers" in imports_of("rl_tickets.chain.runner")
    assert "rl_tickets.rl.trainer" in imports_of("rl_tickets.trainers")  # imported inside a function


def test_data_flows_one_way() -> None:
    """Command line -> job -> engine -> trainers -> sparsity/config: nothing below imports above."""
    layers = [
        ("rl_tickets.__main__", "rl_tickets.cli"),
        ("rl_tickets.chain",),
        ("rl_tickets.trainers", "rl_tickets.rl", "rl_tickets.supervised"),
        (
            "rl_tickets.sparsity",
            "rl_tickets.level",
            "rl_tickets.config",
            "rl_tickets.seeds",
            "rl_tickets.timing",
        ),
    ]

    def layer(name: str) -> int | None:
        for index, prefixes in enumerate(layers):
            if any(name == p or name.startswith(p + ".") for p in prefixes):
                return index
        return None

    upward = [
        (name, imported)
        for name in MODULES
        for imported in imports_of(name)
        if layer(name) is not None and layer(imported) is not None and layer(imported) < layer(name)
    ]
    assert not upward, f"imports against the flow: {upward}"


@pytest.mark.parametrize("name", sorted(MODULES))
def test_modules_are_small_unless_their_docstring_says_why(name: str) -> None:
    path = MODULES[name]
    lines = len(path.read_text().splitlines())
    docstring = ast.get_docstring(ast.parse(path.read_text())) or ""
    assert lines <= MAX_MODULE_LINES or EXEMPTION in docstring, (
        f"{path.relative_to(ROOT)} has {lines} lines (limit {MAX_MODULE_LINES}): split it, "
        f"or say in its docstring why it is {EXEMPTION}"
    )


@pytest.mark.parametrize("name", sorted(MODULES))
def test_classes_are_small(name: str) -> None:
    tree = ast.parse(MODULES[name].read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            size = (node.end_lineno or node.lineno) - node.lineno + 1
            assert size <= MAX_CLASS_LINES, f"{name}.{node.name} has {size} lines (limit {MAX_CLASS_LINES})"


def test_every_package_directory_is_installed() -> None:
    """pyproject lists packages explicitly (conf/ is mapped to rl_tickets.conf): a new sub-package left
    out would be missing from a non-editable install."""
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    on_disk = {module_name(p) for p in PACKAGE.rglob("__init__.py")}
    assert on_disk <= listed, f"packages missing from pyproject.toml: {sorted(on_disk - listed)}"
    assert "rl_tickets.conf" in listed


def test_the_top_level_keeps_at_most_eight_modules() -> None:
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(top) <= 8, top

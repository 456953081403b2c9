"""prodcat's import graph has no cycles: a module never imports (directly or through others) a module that imports
it back, counting imports inside functions too (a lazy import hides a cycle only until someone imports the other
module first)."""

from __future__ import annotations

import ast
from pathlib import Path

import prodcat

PACKAGE = Path(prodcat.__file__).parent


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Module -> the prodcat modules it imports anywhere in its source (``from pkg import mod`` counts as ``mod``
    when ``mod`` is a module, else as ``pkg``)."""
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative import
                    anchor = name.split(".") if is_package else name.split(".")[:-1]
                    anchor = anchor[: len(anchor) - node.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            graph[name].update(t for t in targets if t in modules and t != name)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_graph_is_read_from_the_sources() -> None:
    graph = import_graph()
    assert "prodcat.commands.common" in graph["prodcat.cli"]
    assert "prodcat.image.backbones" in graph["prodcat.image.finetune"]  # an import inside a function
    assert "prodcat.model" in graph["prodcat.bundle"]


def test_cycle_finder_finds_a_known_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_prodcat_has_no_import_cycles() -> None:
    graph = import_graph()
    found = cycles(graph)
    details = [
        " / ".join(f"{m} -> {sorted(graph[m] & set(c))}" for m in c)  # who imports whom inside the cycle
        for c in found
    ]
    assert not found, "import cycles:\n" + "\n".join(details)


def test_every_module_imports_on_its_own() -> None:
    """The symptom of the old cli <-> commands circle: ``import prodcat.commands.model`` failed unless
    ``prodcat.cli`` was imported first. Each module is imported in a fresh interpreter."""
    import subprocess
    import sys

    names = sorted(n for n in import_graph() if n.startswith("prodcat.commands"))
    code = "import importlib, sys\nfor n in sys.argv[1:]:\n    importlib.import_module(n)\n"
    for name in names:
        done = subprocess.run([sys.executable, "-c", code, name], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, f"import {name}: {done.stderr[-2000:]}"

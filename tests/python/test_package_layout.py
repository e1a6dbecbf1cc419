"""The package's module graph has no cycle: every import counts, at module level,
inside a function (a lazy import) or under ``if TYPE_CHECKING:``. An edge runs from
a module to each module an import of it executes (``a.b.c`` executes ``a``, ``a.b``
and ``a.b.c``), except the packages that contain the importing module, which are
already executing. ``from pkg import name`` is an edge to ``pkg.name`` when that is
a module, else to ``pkg``.

The layering this keeps (docs/development.md, "Layout"): the leaderboard and the
processor below ``engagehub.shared`` (the shared readers import the row types and
argument checks from ``_types`` and ``_native``, not from ``leaderboard``); the
demo package below ``engagehub.shared.demo`` (the command line,
``engagehub.__main__``, is the one module that runs either).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Dict, List, Set

import engagehub

PACKAGE = Path(engagehub.__file__).resolve().parent
PYPROJECT = PACKAGE.parents[1] / "pyproject.toml"


def _modules(root: Path) -> Dict[str, Path]:
    modules = {}
    for path in root.rglob("*.py"):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def import_graph(root: Path) -> Dict[str, Set[str]]:
    modules = _modules(root)
    graph: Dict[str, Set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base_parts = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    base = ".".join(base_parts + ([node.module] if node.module else []))
                else:
                    base = node.module or ""
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            else:
                continue
            for target in targets:
                parts = target.split(".")
                for i in range(1, len(parts) + 1):
                    executed = ".".join(parts[:i])
                    if executed in modules and executed != name and not name.startswith(executed + "."):
                        graph[name].add(executed)
    return graph


def cycles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    found: List[List[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_package_has_no_import_cycle():
    graph = import_graph(PACKAGE)
    assert "engagehub.processor" in graph and "engagehub.shared.demo" in graph
    assert cycles(graph) == []


def test_the_cycle_check_finds_lazy_and_type_checking_imports(tmp_path):
    # The check itself: a cycle closed only by an import inside a function, or
    # only under TYPE_CHECKING, is found.
    root = tmp_path / "pkg"
    (root / "sub").mkdir(parents=True)
    (root / "__init__.py").write_text("")
    (root / "sub" / "__init__.py").write_text("from . import b\n")
    (root / "a.py").write_text("def f():\n    from .sub import b\n")
    (root / "sub" / "b.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .. import a\n")
    (root / "c.py").write_text("from . import a\n")
    assert cycles(import_graph(root)) == [["pkg.a", "pkg.sub", "pkg.sub.b"]]
    (root / "sub" / "b.py").write_text("")
    assert cycles(import_graph(root)) == []


def test_the_wheel_lists_every_package_of_the_source_tree():
    # setuptools installs only the packages pyproject.toml names: a new
    # subpackage missing there would be absent from the wheel.
    listed = re.search(r"^packages = \[(.*)\]$", PYPROJECT.read_text(encoding="utf-8"), re.MULTILINE)
    assert listed, "pyproject.toml: no packages = [...] line"
    names = {name.strip().strip('"') for name in listed.group(1).split(",")}
    found = {name for name, path in _modules(PACKAGE).items() if path.name == "__init__.py"}
    assert names == found

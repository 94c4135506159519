"""No import circle: no set of modules of the product or the bench imports each other in a loop.

Every module of ``flows/``, ``tasks/``, ``bench/``, ``models_catalog/`` and ``deployments/`` is read with
:mod:`ast`; an import counts wherever it is written (at the top, inside a function, under ``TYPE_CHECKING``), as
``import x.y`` or ``from x import y``, where ``y`` may itself be a module. A package's ``__init__`` is not followed
from the modules under it (Python imports it first, whatever the module imports).
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

from tests.paths import ROOT

PACKAGES = ("flows", "tasks", "bench", "models_catalog", "deployments")


def modules_of(root: Path, packages: Iterable[str]) -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` file under ``root/package``."""
    found: dict[str, Path] = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


def _known(name: str, modules: Mapping[str, Path]) -> str | None:
    """The module of ``modules`` that ``name`` is, or the nearest package of it that is one."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def imports_of(name: str, path: Path, modules: Mapping[str, Path]) -> set[str]:
    """The modules of ``modules`` that module ``name`` imports, anywhere in its file."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*parts, base] if base else parts)
            # ``from x import y``: module ``x.y`` when there is one, else a name of module ``x``
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        for target in targets:
            known = _known(target, modules)
            if known is not None and known != name:
                out.add(known)
    return out


def import_graph(root: Path, packages: Iterable[str] = PACKAGES) -> dict[str, set[str]]:
    modules = modules_of(root, packages)
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def import_circles(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """One loop per set of modules that import each other (a strongly connected component of two or more),
    written as the path ``[a, b, ..., a]``; sorted, so that the message is the same from run to run."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, edges = work[-1]
            nxt = next(edges, None)
            if nxt is not None:
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(graph.get(nxt, ())))))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1:
                    components.append(component)
    return sorted(_loop_in(component, graph) for component in components)


def _loop_in(component: set[str], graph: Mapping[str, set[str]]) -> list[str]:
    """A loop through the first module of ``component`` (a shortest one, found breadth first)."""
    first = min(component)
    came_from: dict[str, str] = {}
    frontier = [first]
    while frontier:
        following = []
        for node in frontier:
            for nxt in sorted(graph[node] & component):
                if nxt == first:
                    path = [node]
                    while path[-1] != first:
                        path.append(came_from[path[-1]])
                    return [first, *reversed(path[:-1]), first]
                if nxt not in came_from:
                    came_from[nxt] = node
                    following.append(nxt)
        frontier = following
    raise AssertionError(f"{sorted(component)} is not a loop")  # a component of two or more always holds one


def _write(root: Path, files: Mapping[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


def test_the_product_and_the_bench_have_no_import_circle() -> None:
    graph = import_graph(ROOT)
    assert {"flows.batch", "tasks.plan", "bench.harness", "deployments.screenshots"} <= set(graph)
    assert "tasks.plan_rules" in graph["tasks.plan"]  # the graph holds the imports it should
    circles = import_circles(graph)
    assert not circles, "modules that import each other in a loop:\n" + "\n".join(" -> ".join(c) for c in circles)


@pytest.mark.parametrize(
    ("files", "loop"),
    [
        (  # top-level imports, both forms
            {"pkg/__init__.py": "", "pkg/a.py": "import pkg.b\n", "pkg/b.py": "from pkg.a import thing\n"},
            ["pkg.a", "pkg.b", "pkg.a"],
        ),
        (  # an import inside a function, and ``from package import module``
            {
                "pkg/__init__.py": "",
                "pkg/a.py": "def f():\n    from pkg import b\n",
                "pkg/b.py": "from pkg.c import x\n",
                "pkg/c.py": "import os\nfrom pkg.a import f\n",
            },
            ["pkg.a", "pkg.b", "pkg.c", "pkg.a"],
        ),
        (  # relative imports
            {
                "pkg/__init__.py": "",
                "pkg/sub/__init__.py": "",
                "pkg/sub/a.py": "from . import b\n",
                "pkg/sub/b.py": "from ..sub.a import f\n",
            },
            ["pkg.sub.a", "pkg.sub.b", "pkg.sub.a"],
        ),
    ],
)
def test_a_circle_is_found_and_named(tmp_path: Path, files: dict[str, str], loop: list[str]) -> None:
    _write(tmp_path, files)
    assert import_circles(import_graph(tmp_path, ["pkg"])) == [loop]


def test_imports_one_way_are_no_circle(tmp_path: Path) -> None:
    _write(
        tmp_path,
        {
            "pkg/__init__.py": "from pkg.a import f\n",  # Python runs it before pkg.a: not an import of pkg.a's
            "pkg/a.py": "from pkg.b import g\n\ndef f():\n    from pkg import c\n",
            "pkg/b.py": "import json\nfrom pkg.c import h\n",
            "pkg/c.py": "import os\n",
            "pkg/d.py": "from pkg import f\n",  # a name of the package: an import of its __init__
        },
    )
    graph = import_graph(tmp_path, ["pkg"])
    assert graph["pkg.a"] == {"pkg.b", "pkg.c"}
    assert graph["pkg.b"] == {"pkg.c"}
    assert graph["pkg.d"] == {"pkg"}
    assert import_circles(graph) == []

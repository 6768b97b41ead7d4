"""The package's layers import one way, with no cycle (DESIGN.md, top).

Every module of the installed ``pyresv`` package is parsed with :mod:`ast`
(the compiled core by its ``.pyx``/``.pxd`` source, read with a pattern);
every ``import`` counts, lazy imports inside functions included, except those
under ``if TYPE_CHECKING:``. Layers: the allocator's (``pyresv``,
``pyresv._core``, ``errors``, ``reference``, ``_validate``, ``_factory``) <
``pyresv.sim`` < ``pyresv.adapters`` < ``pyresv.tools`` (and ``__main__``).
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

import pyresv

LAYERS = {"core": 0, "sim": 1, "adapters": 2, "tools": 3}
ROOT = Path(pyresv.__file__).resolve().parent
# The core's sources: installed next to the compiled module, or in csrc/ of a checkout.
_CYTHON_IMPORT = re.compile(r"^\s*(?:from\s+(pyresv[\w.]*)\s+c?import\s+([\w, ()]+)|c?import\s+(pyresv[\w.]*))", re.M)


def layer_of(module: str) -> int:
    """The layer of a ``pyresv`` module (its dotted name)."""
    parts = module.split(".")
    if len(parts) == 1:
        return LAYERS["core"]
    if parts[1] == "__main__":
        return LAYERS["tools"]
    return LAYERS.get(parts[1], LAYERS["core"])


def _modules() -> dict[str, Path]:
    mods: dict[str, Path] = {}
    for p in ROOT.rglob("*"):
        if p.suffix not in (".py", ".pyx") or "__pycache__" in p.parts:
            continue
        rel = p.relative_to(ROOT.parent).with_suffix("")
        name = ".".join(rel.parts)
        if name.endswith(".__init__"):
            name = name[: -len(".__init__")]
        mods[name] = p
    core_src = Path(__file__).resolve().parent.parent / "csrc" / "pyresv" / "_core"
    for p in core_src.glob("*.pyx"):
        mods.setdefault(f"pyresv._core.{p.stem}", p)
    return mods


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST) -> list[tuple[str, list[str], int]]:
    """``(module, names, line)`` of every import outside ``if TYPE_CHECKING:``."""
    out: list[tuple[str, list[str], int]] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            for a in node.names:
                out.append((a.name, [], node.lineno))
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.module, [a.name for a in node.names], node.lineno))
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return out


def import_graph() -> dict[str, set[str]]:
    """Module -> the ``pyresv`` modules it imports (lazy imports included)."""
    mods = _modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for name, path in mods.items():
        text = path.read_text(encoding="utf-8")
        if path.suffix == ".pyx":
            found = [(m.group(1) or m.group(3), (m.group(2) or "").replace("(", "").replace(")", "").split(","), 0)
                     for m in _CYTHON_IMPORT.finditer(text)]
        else:
            found = _imports(ast.parse(text, filename=str(path)))
        for module, names, _line in found:
            if not module.startswith("pyresv"):
                continue
            targets = [f"{module}.{n.strip()}" for n in names if f"{module}.{n.strip()}" in mods]
            if not targets and module in mods:
                targets = [module]
            for t in targets:
                if t != name:
                    graph[name].add(t)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import cycle as a list of modules (first repeated last), or ``[]``."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def dfs(u: str) -> list[str]:
        state[u] = 1
        stack.append(u)
        for v in sorted(graph.get(u, ())):
            if state.get(v) == 1:
                return stack[stack.index(v):] + [v]
            if v not in state:
                found = dfs(v)
                if found:
                    return found
        state[u] = 2
        stack.pop()
        return []

    for u in sorted(graph):
        if u not in state:
            found = dfs(u)
            if found:
                return found
    return []


def test_the_graph_sees_every_layer_and_lazy_imports() -> None:
    graph = import_graph()
    assert {"pyresv.sim.engine", "pyresv.adapters.simpy", "pyresv.tools.cli", "pyresv.reference"} <= set(graph)
    # A lazy import (inside a function) is an edge: the CLI loads the scenarios on demand.
    assert "pyresv.sim.scenarios" in graph["pyresv.tools.cli"]
    # The compiled core's imports are read from its Cython source.
    assert "pyresv._validate" in graph["pyresv._core.allocator"]


def test_no_import_cycle() -> None:
    assert find_cycle(import_graph()) == []


def test_imports_run_one_way() -> None:
    upward = [
        f"{m} ({layer_of(m)}) imports {t} ({layer_of(t)})"
        for m, targets in sorted(import_graph().items())
        for t in sorted(targets)
        if layer_of(t) > layer_of(m)
    ]
    assert upward == []


def test_the_checks_can_fail() -> None:
    graph = {"pyresv.sim.a": {"pyresv.sim.b"}, "pyresv.sim.b": {"pyresv.sim.a"}}
    assert find_cycle(graph) == ["pyresv.sim.a", "pyresv.sim.b", "pyresv.sim.a"]
    tree = ast.parse("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import pyresv.tools\n"
                     "def f():\n    from pyresv.tools import cli\n")
    assert [m for m, _n, _l in _imports(tree)] == ["typing", "pyresv.tools"]
    assert layer_of("pyresv.tools.cli") > layer_of("pyresv.adapters.simpy") > layer_of("pyresv.sim.engine")
    assert layer_of("pyresv.sim.engine") > layer_of("pyresv.reference") == layer_of("pyresv")


def test_the_reference_runs_without_the_compiled_core() -> None:
    # A machine where the core is not built: block pyresv._core and use the reference.
    code = (
        "import sys\n"
        "sys.modules['pyresv._core'] = None\n"
        "sys.modules['pyresv._core.allocator'] = None\n"
        "import pyresv, pyresv.reference as r\n"
        "from pyresv._factory import allocator_class\n"
        "assert allocator_class('auto') is r.DepthPoolAllocator\n"
        "a = r.DepthPoolAllocator([(1, 1)] * 2, 1)\n"
        "t = a.acquire(3); a.release(t); a.check()\n"
        "try:\n"
        "    pyresv.DepthPoolAllocator\n"
        "except ImportError:\n"
        "    print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


@pytest.mark.parametrize("name", ["DepthPoolAllocator", "PENDING", "AllocatorError", "QueueFull", "ConfigError"])
def test_public_names_of_the_top_package(name: str) -> None:
    assert getattr(pyresv, name) is not None
    assert name in dir(pyresv)

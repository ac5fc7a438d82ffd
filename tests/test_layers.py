"""The package's layers, read from its import statements (no import is executed).

* ``jaxmu.attacks`` holds statistics on arrays: it imports nothing of jaxmu outside itself
  (no training, no checkpoints, no configs).
* No method module imports another method module (shared pieces live in modules named for what
  they hold: ``recipes``, ``relabel``, ``layouts``, ``reinit``, ``ranking``, ``noise``, ``plan``,
  ``driver``, ``stack``).
* The module-level import graph of ``jaxmu`` has no cycle, and no function-local import of a
  jaxmu module would close one (a hidden cycle).
"""

from __future__ import annotations

import ast
from pathlib import Path

import jaxmu.methods as M

PKG = Path(__file__).resolve().parents[1] / "jaxmu"


def _module_name(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> list[tuple[str, bool]]:
    """``(imported jaxmu module, at module level?)`` for every import of a jaxmu module in ``path``."""
    tree = ast.parse(path.read_text())
    top = {id(n) for n in tree.body}
    typing_only = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
                   and "TYPE_CHECKING" in ast.unparse(node.test) for n in ast.walk(node)}
    pkg = _module_name(path) if path.name == "__init__.py" else _module_name(path).rpartition(".")[0]
    out = []
    for node in ast.walk(tree):
        if id(node) in typing_only:  # annotations only, never executed
            continue
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(pkg.split(".")[: len(pkg.split(".")) - node.level + 1] + ([base] if base else []))
            # ``from pkg import sub`` imports the submodule, ``from mod import name`` the module
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
        else:
            continue
        for n in names:
            if n == "jaxmu" or n.startswith("jaxmu."):
                out.append((n, id(node) in top))
    return out


MODULES = {_module_name(p): p for p in PKG.rglob("*.py")}


def _resolve(name: str) -> str | None:
    """The jaxmu module an imported name refers to (``jaxmu.methods.stack.unlearn_stack`` -> module)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _graph(*, module_level_only: bool) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for mod, path in MODULES.items():
        for name, at_top in _imports(path):
            target = _resolve(name)
            if target and target != mod and (at_top or not module_level_only):
                graph[mod].add(target)
                parent = target.rpartition(".")[0]  # importing a.b.c runs a/__init__ and a/b/__init__
                while parent:
                    if parent in MODULES and parent != mod and not mod.startswith(parent + "."):
                        graph[mod].add(parent)
                    parent = parent.rpartition(".")[0]
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                return stack[stack.index(n):] + [n]
            if n not in state and (c := visit(n)):
                return c
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (c := visit(m)):
            return c
    return None


def test_attacks_import_nothing_of_jaxmu_outside_attacks():
    for mod, path in MODULES.items():
        if mod.startswith("jaxmu.attacks"):
            upward = [n for n, _ in _imports(path) if not n.startswith("jaxmu.attacks")]
            assert not upward, f"{mod} imports {upward}: attacks/ holds statistics on arrays only"


def test_no_method_module_imports_another():
    methods = {f"jaxmu.methods.{name}" for name in M.names()}
    for mod in methods:
        others = {_resolve(n) for n, _ in _imports(MODULES[mod])} & (methods - {mod})
        assert not others, f"{mod} imports the method module(s) {sorted(others)}"


def test_import_graph_has_no_cycle_even_through_function_local_imports():
    graph = _graph(module_level_only=False)
    assert _cycle(graph) is None, f"import cycle: {' -> '.join(_cycle(graph))}"

"""The module-level import graph of src/dmoe (issue 19, item 5): no import circles, and the
solvers (dmoe.optimize) import neither torch nor the policies or the model.

The graph is read with ``ast`` (nothing is imported): module-level ``import`` and ``from ...
import`` statements, absolute and relative, including those inside module-level ``if`` /
``try`` blocks, but not those inside functions or classes, nor under ``if TYPE_CHECKING:``.
``from a import b`` is an edge to the submodule ``a.b`` when that is a module, else to ``a``.
Importing ``a.b.c`` also runs the packages ``a`` and ``a.b``: those edges are added, except
to the importer's own ancestor packages (which are already being imported when it runs), so
a package ``__init__`` importing its children is not a circle by itself.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
ROOT = "dmoe"

#: Deprecated re-export modules (old paths kept for one release, issue 19): they import the
#: new home by design and are imported by nothing in src/.
SHIMS = {"dmoe.optimize.policies", "dmoe.optimize.calibrated", "dmoe.optimize.deadline", "dmoe.optimize.layerwise"}


def _modules() -> dict[str, Path]:
    out = {}
    for path in (SRC / ROOT).rglob("*.py"):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _top_level_imports(tree: ast.Module):
    """Import nodes executed when the module is imported (not in functions or classes)."""

    def walk(body):
        for node in body:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                yield node
            elif isinstance(node, ast.If):
                if not _is_type_checking(node.test):
                    yield from walk(node.body)
                yield from walk(node.orelse)
            elif isinstance(node, ast.Try):
                for block in (node.body, node.orelse, node.finalbody, *[h.body for h in node.handlers]):
                    yield from walk(block)
            elif isinstance(node, (ast.With, ast.For, ast.While)):
                yield from walk(node.body)

    yield from walk(tree.body)


def _ancestors(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def import_graph() -> dict[str, set[str]]:
    """``{module: {modules of dmoe it imports at module level}}``."""
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        is_pkg = path.name == "__init__.py"
        package = name if is_pkg else name.rpartition(".")[0]
        targets: set[str] = set()
        for node in _top_level_imports(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
                continue
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            for alias in node.names:
                sub = f"{mod}.{alias.name}"
                targets.add(sub if sub in modules else mod)
        edges = set()
        own = set(_ancestors(name))
        for target in targets:
            if target.split(".")[0] != ROOT:
                continue
            for t in (*_ancestors(target), target):
                if t in modules and t != name and t not in own:
                    edges.add(t)
        graph[name] = edges
    return graph


def external_imports(name: str) -> set[str]:
    path = _modules()[name]
    out = set()
    for node in _top_level_imports(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out.update(alias.name.split(".")[0] for alias in node.names)
        elif not node.level and node.module:
            out.add(node.module.split(".")[0])
    return out


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm (iterative): the components of more than one module."""
    index, low, on_stack, stack, out = {}, {}, set(), [], []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            advanced = False
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                    advanced = True
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                comp = []
                while True:
                    top = stack.pop()
                    on_stack.discard(top)
                    comp.append(top)
                    if top == node:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
    return out


def test_the_graph_reader_on_known_edges():
    graph = import_graph()
    assert "dmoe.policies.base" in graph["dmoe.policies.builtin"]  # absolute
    assert "dmoe.optimize.jesa" in graph["dmoe.policies.base"]
    assert "dmoe.optimize" in graph["dmoe.policies.base"]  # the package runs first
    assert "dmoe.policies.check" in graph["dmoe.runtime.server"]  # relative `from ..policies.check import`
    assert "dmoe.policies.registry" in graph["dmoe.policies"]  # a package's children
    assert "dmoe.policies" not in graph["dmoe.policies.registry"]  # not its own package
    # a toy circle is found; a chain is not
    assert strongly_connected({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert strongly_connected({"a": {"b"}, "b": {"c"}, "c": set()}) == []


def test_no_import_circles():
    cycles = strongly_connected(import_graph())
    assert not cycles, f"module-level import circles in src/dmoe: {cycles}"


def test_policies_layering():
    graph = import_graph()
    # base imports no other policy module; nothing but the package imports the registry
    assert not any(m.startswith("dmoe.policies") for m in graph["dmoe.policies.base"])
    importers = {name for name, edges in graph.items() if "dmoe.policies.registry" in edges}
    assert importers == {"dmoe.policies"}, importers


def _reachable(graph, start):
    seen, todo = set(), [start]
    while todo:
        node = todo.pop()
        for nxt in graph.get(node, ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def test_the_solvers_import_no_torch_policies_or_model():
    graph = import_graph()
    solvers = [n for n in graph if (n == "dmoe.optimize" or n.startswith("dmoe.optimize.")) and n not in SHIMS]
    assert len(solvers) > 10
    for name in solvers:
        reach = _reachable(graph, name) | {name}
        bad = {t for t in reach if t.startswith(("dmoe.policies", "dmoe.model", "dmoe.runtime"))}
        assert not bad, f"{name} imports {bad} (directly or through others)"
        torch_users = {t for t in reach if "torch" in external_imports(t)}
        assert not torch_users, f"{name} imports torch through {torch_users}"
    # the old paths are only re-exports, imported by nothing in src/
    assert not {n for n, edges in graph.items() if edges & SHIMS}

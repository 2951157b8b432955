"""No import circle inside ``explorer/``: the modules are read with ``ast`` (nothing is imported), every
module-level import of a package module becomes an edge, and the graph must have no cycle.

Imports inside functions and under ``if TYPE_CHECKING:`` are left out: they run later, or never, so
they do not make a module's import order depend on another's. Importing ``a.b.c`` also runs ``a.b``'s
``__init__``, so an import reaches the target's enclosing packages too (except the importer's own).
The gallery is held to more: no circle even counting those imports (its old atlas <-> builder circle
was one: a function-level import one way, a TYPE_CHECKING one back).
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = "explorer"
ROOT = Path(__file__).resolve().parents[1]

# Circles outside the gallery that other branches of issue 21 are taking apart; the lead empties this after
# merging them. Each entry is one cycle's modules (a strongly connected component). The gallery's must never be here.
KNOWN_CYCLES: tuple[frozenset[str], ...] = ()


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def package_modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted((ROOT / PACKAGE).rglob("*.py"))}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def module_level_imports(tree: ast.Module, everything: bool = False) -> list[ast.Import | ast.ImportFrom]:
    """The import statements that run when the module is imported (class bodies, try, with and if
    blocks included; function bodies and ``if TYPE_CHECKING:`` bodies not, unless ``everything``)."""
    if everything:
        return [node for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))]
    found: list[ast.Import | ast.ImportFrom] = []

    def visit(statements: list[ast.stmt]) -> None:
        for node in statements:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                found.append(node)
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            elif isinstance(node, ast.If) and _is_type_checking(node.test):
                visit(node.orelse)
            else:
                for child in ast.iter_child_nodes(node):
                    if isinstance(child, ast.stmt):
                        visit([child])
                    elif isinstance(child, (ast.ExceptHandler, ast.match_case)):
                        visit(child.body)

    visit(tree.body)
    return found


def _enclosing(name: str) -> list[str]:
    """``a.b.c`` -> [``a``, ``a.b``, ``a.b.c``]: every module that importing it runs."""
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


def imported_modules(name: str, path: Path, modules: dict[str, Path], everything: bool = False) -> set[str]:
    """The package modules ``name`` imports at module level (relative imports resolved)."""
    is_package = path.name == "__init__.py"
    targets: set[str] = set()
    for node in module_level_imports(ast.parse(path.read_text(), str(path)), everything):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
            continue
        if node.level:
            base = name.split(".") if is_package else name.split(".")[:-1]
            base = base[: len(base) - (node.level - 1)]
            source = ".".join(base + ([node.module] if node.module else []))
        else:
            source = node.module or ""
        targets.add(source)
        targets.update(f"{source}.{alias.name}" for alias in node.names)  # `from pkg import submodule`
    own = set(_enclosing(name))
    return {m for target in targets for m in _enclosing(target) if m in modules and m not in own}


def import_graph(everything: bool = False) -> dict[str, set[str]]:
    modules = package_modules()
    return {name: imported_modules(name, path, modules, everything) for name, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """The strongly connected components with more than one module (Tarjan), each one circle or more."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[frozenset[str]] = []

    def connect(v: str) -> None:  # recursion depth <= number of modules (~100)
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1 or v in graph[v]:
                found.append(frozenset(component))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return found


def _describe(component: frozenset[str], graph: dict[str, set[str]]) -> str:
    edges = [f"{a} -> {b}" for a in sorted(component) for b in sorted(graph[a] & component)]
    return f"{{{', '.join(sorted(component))}}} ({'; '.join(edges)})"


def test_the_graph_sees_relative_imports_and_leaves_out_late_ones():
    graph, full = import_graph(), import_graph(everything=True)
    assert "explorer.gallery.store" in graph["explorer.gallery.catalogue"]  # from .store import …
    assert "explorer.gallery" in graph["explorer.scale"]  # from .gallery.catalogue import MAX runs the package
    assert "explorer.gallery.store" not in graph["explorer.scale"]  # only under TYPE_CHECKING …
    assert "explorer.scale" not in graph["explorer.cli.gallery"]  # … and inside a function
    assert "explorer.gallery.store" in full["explorer.scale"] and "explorer.scale" in full["explorer.cli.gallery"]


def test_a_circle_is_found_and_named():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"d"}, "e": {"a"}}
    assert sorted(map(sorted, cycles(graph))) == [["a", "b", "c"], ["d"]]
    assert _describe(frozenset("abc"), graph) == "{a, b, c} (a -> b; b -> c; c -> a)"


def test_no_import_circle_in_the_package():
    graph = import_graph()
    found = cycles(graph)
    new = [c for c in found if c not in KNOWN_CYCLES]
    assert not new, "import circles (module-level imports):\n" + "\n".join(_describe(c, graph) for c in new)
    gone = [c for c in KNOWN_CYCLES if c not in found]
    assert not gone, "no longer circles, remove them from KNOWN_CYCLES: " + "; ".join(sorted(map(str, gone)))


def test_the_gallery_has_no_circle_even_through_late_imports():
    gallery = f"{PACKAGE}.gallery"
    assert not any(m.startswith(gallery) for cycle in KNOWN_CYCLES for m in cycle)
    full = import_graph(everything=True)
    inside = {m: {t for t in targets if t.startswith(gallery)} for m, targets in full.items() if m.startswith(gallery)}
    found = cycles(inside)
    assert not found, "import circles in the gallery:\n" + "\n".join(_describe(c, inside) for c in found)

"""The floors of docs/ARCHITECTURE.md, checked: every import inside ``explorer/`` (late ones and typing-only
ones included) points down or sideways, feature packages never import each other, and the front ends keep to
their lanes. Only ``explorer/ui/`` imports Streamlit and only ``explorer/scale.py`` imports Ray."""

from __future__ import annotations

import ast

from tests.test_import_graph import PACKAGE, import_graph, module_level_imports, package_modules

FOUNDATIONS = {"errors", "compat", "adversarial", "stats", "progress", "naming", "limits", "files", "devices",
               "capture", "parsing", "images", "settings"}
FEATURES = {"gallery", "fooling", "inversion", "diffusion", "audio"}


def floor(module: str) -> tuple[int, str]:
    """(floor, room) of ``explorer.x.y``: the room is the feature package or front end it belongs to."""
    parts = module.split(".")[1:]
    top = parts[0] if parts else ""
    if not parts or top in FOUNDATIONS:
        return 0, "foundations"
    if top == "models":
        return 1, top
    if top == "optvis":
        return 2, top
    if top in FEATURES:
        return 3, top
    if top == "scale":
        return 4, top
    if top == "vocabulary":
        return 5, top
    if top in ("cli", "ui", "__main__"):
        return 6, "cli" if top == "__main__" else top
    raise AssertionError(f"{module} is on no floor: add it to tests/test_layers.py and docs/ARCHITECTURE.md")


def wrong_imports(graph: dict[str, set[str]]) -> list[str]:
    found = []
    for source, targets in sorted(graph.items()):
        (low, room) = floor(source)
        for target in sorted(targets):
            (high, other) = floor(target)
            if high > low:
                found.append(f"{source} -> {target}: up from floor {low} to {high}")
            elif high == low == 3 and room != other:
                found.append(f"{source} -> {target}: one feature package imports another")
            elif (room, other) in {("cli", "ui"), ("ui", "cli")}:
                found.append(f"{source} -> {target}: the CLI and the pages never import each other")
            elif room == "ui" and other == "scale":
                found.append(f"{source} -> {target}: pages do not start Ray jobs")
            elif room == "cli" and other == "vocabulary":
                found.append(f"{source} -> {target}: the CLI reads its defaults from the library, not the vocabulary")
    return found


def test_every_module_is_on_a_floor_and_the_checker_catches_an_upward_import():
    graph = import_graph(everything=True)
    for module in graph:
        floor(module)
    assert wrong_imports({"explorer.models.base": {"explorer.optvis.render"}})
    assert wrong_imports({"explorer.audio.dream": {"explorer.diffusion.judge"}})
    assert wrong_imports({"explorer.cli.audio": {"explorer.ui.widgets"}})
    assert not wrong_imports({"explorer.audio.dream": {"explorer.optvis.optimise", "explorer.audio.io"}})


def test_imports_point_down_the_floors():
    wrong = wrong_imports(import_graph(everything=True))
    assert not wrong, "imports against docs/ARCHITECTURE.md's floors:\n" + "\n".join(wrong)


def _third_party(top: str) -> list[str]:
    users = []
    for name, path in package_modules().items():
        tree = ast.parse(path.read_text(), str(path))
        for node in module_level_imports(tree, everything=True):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            if any(n == top or n.startswith(top + ".") for n in names if not getattr(node, "level", 0)):
                users.append(name)
                break
    return users


def test_only_the_pages_import_streamlit_and_only_scale_imports_ray():
    assert all(m.startswith(f"{PACKAGE}.ui") for m in _third_party("streamlit")), _third_party("streamlit")
    assert _third_party("streamlit")  # the check sees the pages
    assert _third_party("ray") == [f"{PACKAGE}.scale"]

"""The README and docs name only paths that exist: a renamed module or a moved asset must take its docs along."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
TOP = ("explorer", "benchmarks", "tests", "assets", "docs")
# `explorer/x/y.py`, `benchmarks/z.py`, `assets/a/b.json`, `docs/d.md` (a trailing / names a folder)
CODE_PATH = re.compile(r"`((?:%s)/[A-Za-z0-9_./-]*)`" % "|".join(TOP))
# `explorer.gallery.store`, `explorer.optvis.optimise.optimise` or, inside the package, `gallery.store.GalleryStore`
DOTTED = re.compile(r"`((?:explorer\.)?[a-z_][a-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)+)")
PACKAGE = ROOT / "explorer"
FILE_SUFFIXES = {"py", "md", "json", "csv", "png", "svg", "gif", "wav", "npz", "pt", "safetensors", "txt", "html"}
# Markdown links and images to files in the repository: [text](path) / ![alt](path)
LINK = re.compile(r"\]\(([^)\s#]+)(?:#[^)]*)?\)")


def _module_file(parts: list[str]) -> Path | None:
    base = PACKAGE.joinpath(*parts)
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    return base / "__init__.py" if (base / "__init__.py").is_file() else None


def _defines(source: str, name: str) -> bool:
    """Whether a module's source defines or imports ``name`` (a def, class, assignment or import)."""
    n = re.escape(name)
    return bool(re.search(rf"^\s*(?:async def|def|class) {n}\b|^{n}\s*[:=]|^\s*self\.{n}\s*[:=]|^\s+{n}\s*:"
                          rf"|^(?:from|import) [^\n]*\b{n}\b|^    {n},?$|[\"']{n}[\"']", source, re.MULTILINE))


def _dotted_exists(dotted: str) -> bool | None:
    """For ``[explorer.]module[.submodule…][.name[.attr]]``: the modules exist and the module defines ``name``.
    None when the first part is not one of the package's modules (``st.error``, ``np.float32``: not ours)."""
    parts = dotted.split(".")
    if parts[-1] in FILE_SUFFIXES:  # `scale.py`, `fooling.png`: a file name, not a module path
        return None
    prefixed = parts[0] == "explorer"
    if prefixed:
        parts = parts[1:]
    if not parts or _module_file(parts[:1]) is None:
        return False if prefixed else None
    if not prefixed and len(parts) == 2 and not (PACKAGE / parts[0]).is_dir():
        return None  # `settings.diversity` is as likely a variable's field as a module's name
    end = 1
    while end < len(parts) and _module_file(parts[: end + 1]) is not None:
        end += 1
    if end == len(parts):
        return True
    return _defines(_module_file(parts[:end]).read_text(encoding="utf-8"), parts[end])


def _named_paths(doc: Path) -> list[tuple[str, bool]]:
    """(path or dotted name, exists) for everything ``doc`` names in the repository."""
    text = doc.read_text(encoding="utf-8")
    found = []
    for match in CODE_PATH.finditer(text):
        path = match.group(1).rstrip(".")
        found.append((path, (ROOT / path).exists()))
    for match in DOTTED.finditer(text):
        exists = _dotted_exists(match.group(1).rstrip("."))
        if exists is not None:
            found.append((match.group(1), exists))
    for match in LINK.finditer(text):
        target = match.group(1)
        if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
            continue
        found.append((target, (doc.parent / target).resolve().exists()))
    return found


@pytest.mark.parametrize("doc", DOCS, ids=[d.relative_to(ROOT).as_posix() for d in DOCS])
def test_docs_name_only_existing_paths(doc):
    missing = sorted({name for name, exists in _named_paths(doc) if not exists})
    assert not missing, f"{doc.relative_to(ROOT)} names paths that do not exist: {missing}"


def test_the_checker_sees_paths_and_catches_a_wrong_one(tmp_path):
    """The yardstick can fail: a made-up path in a doc is reported, a real one is not."""
    doc = tmp_path / "x.md"
    doc.write_text("`explorer/optvis/optimise.py` and `explorer/no_such_module.py` and `explorer.optvis.render.render`"
                   " and `explorer.nothing_here.f` and `optvis.render.no_such_function` and `st.error`"
                   " and [img](missing.png)\n", encoding="utf-8")
    named = dict(_named_paths(doc))
    assert named["explorer/optvis/optimise.py"] is True
    assert named["explorer.optvis.render.render"] is True
    assert named["explorer/no_such_module.py"] is False
    assert named["explorer.nothing_here.f"] is False
    assert named["optvis.render.no_such_function"] is False
    assert "st.error" not in named
    assert named["missing.png"] is False

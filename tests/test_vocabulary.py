"""One vocabulary (explorer/vocabulary.py): each setting has one name, one default and one range on the CLI,
the pages and in docs/vocabulary.md. Fails when a flag's default, a widget's label/default/range or the docs
drift from the table — e.g. `fool grow`'s budget (none on the CLI, L∞ 0.05 on the page), the inversion page's
200 steps against `invert`'s 400, or steps up to 4,096 on a page and 10,000 on the CLI."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from explorer import vocabulary

ROOT = Path(__file__).resolve().parents[1]


def test_docs_table_is_generated_from_the_code():
    assert (ROOT / "docs" / "vocabulary.md").read_text() == vocabulary.markdown(), \
        "regenerate: python -m explorer.vocabulary > docs/vocabulary.md"


def _subparser(words: tuple[str, ...]) -> argparse.ArgumentParser:
    from explorer.cli import build_parser

    parser = build_parser()
    for word in words:
        action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = action.choices[word]
    return parser


@pytest.mark.parametrize("cmd", vocabulary.commands(), ids=lambda c: " ".join(c.command))
def test_cli_flags_and_defaults_match_the_vocabulary(cmd):
    parser = _subparser(cmd.command)
    actions = {flag: a for a in parser._actions for flag in a.option_strings}
    for t in cmd.terms:
        assert t.flag in actions, f"{' '.join(cmd.command)} has no {t.flag}"
        action = actions[t.flag]
        if action.default is None:  # "the library's default": the help must name it
            assert str(t.default) in (action.help or ""), (t.flag, action.help)
        else:
            assert action.default == t.default, (t.flag, action.default, t.default)
        if t.choices and action.choices:
            assert tuple(action.choices) == tuple(t.choices), t.flag


def _check_widget(at: AppTest, t: vocabulary.Term) -> None:
    for kind in ("number_input", "selectbox", "multiselect", "slider", "text_input", "radio"):
        found = [w for w in at.get(kind) if getattr(w, "key", None) == t.key]
        if found:
            widget = found[0]
            break
    else:
        raise AssertionError(f"no widget with key {t.key}")
    assert widget.label == t.label or widget.label.startswith(t.label + " ("), (t.key, widget.label, t.label)
    value = widget.value
    if kind == "multiselect":
        value = ",".join(value)
    if t.name == "budget":  # the page splits "linf:0.05" into a kind and a size
        kind_value = value
        size = at.number_input(key=f"fool_grow_eps_{kind_value}").value
        assert f"{kind_value}:{size:g}" == t.default
        return
    assert value == t.default, (t.key, value, t.default)
    if kind in ("number_input", "slider") and t.range is not None:
        lo, hi = t.widget_range()
        shown = (widget.min, widget.max) if kind == "number_input" else (widget.proto.min, widget.proto.max)
        assert tuple(shown) == (lo, hi), (t.key, shown, (lo, hi))
    if kind in ("selectbox", "radio") and t.choices and t.name not in ("family", "param"):  # shown by their titles
        assert tuple(widget.options) == tuple(str(c) for c in t.choices), (t.key, widget.options)


PAGES = [("visualize",), ("invert",), ("dream",), ("caricature",), ("fool", "grow"), ("fool", "sweep"),
         ("gallery", "build"), ("diffusion", "sample"), ("audio", "dream")]


@pytest.mark.parametrize("words", PAGES, ids=" ".join)
def test_page_widgets_match_the_vocabulary(words, tmp_path, monkeypatch):
    monkeypatch.setenv("EXPLORER_CACHE_DIR", str(tmp_path))  # an empty user store: the gallery's defaults
    cmd = vocabulary.command(*words)
    at = AppTest.from_file(str(ROOT / "explorer/ui/pages" / cmd.page), default_timeout=120)
    if cmd.page == "gallery.py":
        at.query_params["layer"] = "blocks.10"
    at.run()
    if cmd.page == "inversion.py" and cmd.mode != "Invert layers":
        at.radio(key="inv_mode").set_value(cmd.mode).run()
    assert not at.exception, at.exception
    for t in cmd.terms:
        if t.key is not None:
            _check_widget(at, t)

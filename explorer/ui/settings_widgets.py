"""Page widgets built from the one vocabulary (:mod:`explorer.vocabulary`): the label, the default and
the range of a setting come from there, so a page cannot drift from the CLI flag and the docs."""

from __future__ import annotations

from typing import Any

import streamlit as st

from ..vocabulary import term


def number(container, command: str, name: str, value: Any = None, **kwargs) -> Any:
    """A number input for ``name`` of ``command`` ("fool grow", "steps"): its label, key, range and default
    (``value`` overrides the default, e.g. from a link; it is clamped to the range)."""
    t = term(command, name)
    lo, hi = t.widget_range()
    start = t.default if value is None else value
    start = type(lo)(min(hi, max(lo, start)))
    return (container or st).number_input(t.label, lo, hi, start, key=kwargs.pop("key", t.key), **kwargs)


def choice(container, command: str, name: str, options: list | None = None, **kwargs) -> Any:
    """A select box for ``name``: the term's choices (or ``options``), the default selected."""
    t = term(command, name)
    options = list(options if options is not None else t.choices)
    index = options.index(t.default) if t.default in options else 0
    return (container or st).selectbox(t.label, options, index=index, key=kwargs.pop("key", t.key), **kwargs)

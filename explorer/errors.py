"""Errors that describe a user's mistake. The UI shows their message instead of a traceback."""

from __future__ import annotations

import difflib
from typing import Iterable


def shorten(text: object, limit: int = 200) -> str:
    """``text`` on one line, at most ``limit`` characters (an ellipsis marks a cut): what a message may echo of
    a user's value (a 100 KB URL parameter is not repeated whole)."""
    one_line = " ".join(str(text).split())
    return one_line if len(one_line) <= limit else one_line[: max(1, limit - 1)] + "…"


def quoted(text: object, limit: int = 60) -> str:
    """A user's value quoted for a message (``repr`` of :func:`shorten`)."""
    return repr(shorten(text, limit))


class UserInputError(ValueError):
    """Bad input from a user (unknown name, out-of-range number, unreadable file)."""


class UnknownLayerError(UserInputError, KeyError):
    def __init__(self, name: str, known: Iterable[str]):
        known = list(known)
        close = difflib.get_close_matches(name, known, n=5, cutoff=0.5)
        if not close:  # also match on the last dotted part ("10" -> "blocks.10")
            close = [k for k in known if k.endswith("." + name.split(".")[-1])][:5]
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        super().__init__(f"Unknown layer {quoted(name)}.{hint} (`python -m explorer layers` lists them.)")
        self.name, self.suggestions = name, close

    def __str__(self) -> str:  # KeyError would quote the message
        return self.args[0]


class UnitOutOfRangeError(UserInputError, IndexError):
    def __init__(self, layer: str, unit: int, size: int, what: str = "channel"):
        plural = {"class": "classes"}.get(what, what + "s")
        super().__init__(f"{what.capitalize()} {unit} is out of range for layer {layer!r}: "
                         f"valid {plural} are 0–{size - 1}.")


class OptimisationDiverged(RuntimeError):
    """The loss became NaN/inf; the result keeps the last finite image."""

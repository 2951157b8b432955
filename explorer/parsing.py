"""Parsing of the small text inputs the CLI and the app share ("0-15,20", "linf:0.05")."""

from __future__ import annotations

import re

from . import limits
from .errors import UnitOutOfRangeError, UserInputError, quoted

_PART = re.compile(r"^(-?\d+)(?:-(-?\d+))?$")
MAX_DIGITS = 18  # a unit number longer than this is out of every range (and int() refuses 4300+ digits)


def parse_units(text: str | int | list[int], limit: int | None = None, *, max_units: int = limits.MAX_UNITS,
                layer: str | None = None, what: str = "channel") -> list[int]:
    """"3" -> [3]; "0-3,7" -> [0, 1, 2, 3, 7]; checks against ``limit`` (exclusive) when given.

    Every range is checked (against ``limit`` and the count against ``max_units``,
    :data:`explorer.limits.MAX_UNITS`) *before* it is expanded: "0-100000000" costs nothing.
    With ``layer`` the out-of-range message names it (``what``: channel, class …).
    """
    if isinstance(text, bool):
        raise UserInputError(f"Cannot read units from {quoted(text)}: use numbers and ranges like 0-15,20.")
    if isinstance(text, int):
        spans = [(text, text)]
    elif isinstance(text, list):
        try:
            spans = [(int(u), int(u)) for u in text]
        except (TypeError, ValueError):
            raise UserInputError(f"Cannot read units from {quoted(text)}: use whole numbers.") from None
    else:
        spans = []
        for part in str(text).replace(" ", "").split(","):
            if not part:
                continue
            match = _PART.match(part)
            if not match:
                raise UserInputError(f"Cannot read units from {quoted(text)}: use numbers and ranges like 0-15,20.")
            if any(g is not None and len(g.lstrip("-")) > MAX_DIGITS for g in match.groups()):
                raise UserInputError(f"Cannot read units from {quoted(text)}: "
                                     f"unit numbers have at most {MAX_DIGITS} digits.")
            lo = int(match.group(1))
            hi = int(match.group(2)) if match.group(2) is not None else lo
            if hi < lo:
                raise UserInputError(f"Empty unit range {quoted(part)}: write the smaller number first (e.g. 0-15).")
            spans.append((lo, hi))
    if not spans:
        raise UserInputError("No units given.")
    if limit is not None:
        for lo, hi in spans:
            bad = lo if not 0 <= lo < limit else (hi if not 0 <= hi < limit else None)
            if bad is not None:
                if layer is not None:
                    raise UnitOutOfRangeError(layer, bad, limit, what)
                raise UserInputError(f"Unit {bad} is out of range: valid units are 0–{limit - 1}.")
    count = sum(hi - lo + 1 for lo, hi in spans)
    if count > max_units:
        raise UserInputError(f"{count:,} units in one request is too many: name at most {max_units:,} "
                             f"(e.g. 0-{max_units - 1}).")
    units: list[int] = []
    for lo, hi in spans:
        units.extend(range(lo, hi + 1))
    return units


def parse_list(text: str) -> list[str]:
    return [p.strip() for p in str(text).split(",") if p.strip()]

"""Parsing of the small text inputs the CLI and the app share ("0-15,20", "linf:0.05")."""

from __future__ import annotations

from .errors import UserInputError


def parse_units(text: str | int | list[int], limit: int | None = None) -> list[int]:
    """"3" -> [3]; "0-3,7" -> [0, 1, 2, 3, 7]; checks against ``limit`` (exclusive) when given."""
    if isinstance(text, int):
        units = [text]
    elif isinstance(text, list):
        units = [int(u) for u in text]
    else:
        units = []
        for part in str(text).replace(" ", "").split(","):
            if not part:
                continue
            try:
                if "-" in part[1:]:
                    lo, hi = part.split("-", 1) if not part.startswith("-") else ("-" + part[1:].split("-", 1)[0], part[1:].split("-", 1)[1])
                    lo_i, hi_i = int(lo), int(hi)
                    if hi_i < lo_i:
                        raise UserInputError(f"Empty unit range {part!r}.")
                    units.extend(range(lo_i, hi_i + 1))
                else:
                    units.append(int(part))
            except ValueError as exc:
                raise UserInputError(f"Cannot read units from {text!r}: use numbers and ranges like 0-15,20.") from exc
    if not units:
        raise UserInputError("No units given.")
    if limit is not None:
        bad = [u for u in units if not 0 <= u < limit]
        if bad:
            raise UserInputError(f"Unit {bad[0]} is out of range: valid units are 0–{limit - 1}.")
    return units


def parse_list(text: str) -> list[str]:
    return [p.strip() for p in str(text).split(",") if p.strip()]

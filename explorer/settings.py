"""The shared behaviour of every frozen settings dataclass (render, inversion, dreams, noise)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, replace
from typing import ClassVar, TypeVar

S = TypeVar("S", bound="Settings")


class Settings:
    """Mixin for frozen dataclasses: JSON-ready dict, a stable digest (cache keys), copy with changes.

    Every instance checks its numeric fields against :data:`explorer.limits.LIMITS` (by field name)
    when it is built, so an out-of-range value is a one-line UserInputError before any work starts.
    A class narrows or widens a bound with ``LIMIT_OVERRIDES = {"field": Limit(...) or None}``.
    """

    LIMIT_OVERRIDES: ClassVar[dict] = {}

    def __post_init__(self) -> None:
        from .limits import check_fields

        check_fields(self, self.LIMIT_OVERRIDES)

    # Fields added after stores were built, with the value that reproduces the old behaviour: while a
    # field holds that value it is left out of to_dict() and so of the digest, and settings saved
    # before the field existed keep their keys and compare equal.
    LEGACY_VALUES: ClassVar[dict] = {}

    def to_dict(self) -> dict:
        data = asdict(self)  # type: ignore[call-overload]
        return {k: v for k, v in data.items() if not (k in self.LEGACY_VALUES and v == self.LEGACY_VALUES[k])}

    def digest(self) -> str:
        return hashlib.sha1(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:12]

    @classmethod
    def from_dict(cls: type[S], data: dict) -> S:
        """Settings from a saved dict: unknown keys are ignored, and a field the dict predates gets its
        old-behaviour value (LEGACY_VALUES), not today's default — the dict was written without it."""
        import dataclasses

        known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        values = {k: v for k, v in cls.LEGACY_VALUES.items() if k not in data}
        values.update({k: v for k, v in data.items() if k in known})
        return cls(**values)

    def with_(self: S, **changes) -> S:
        return replace(self, **changes)  # type: ignore[type-var]

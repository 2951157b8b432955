"""The shared behaviour of every frozen settings dataclass (render, inversion, dreams, noise)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, replace
from typing import TypeVar

S = TypeVar("S", bound="Settings")


class Settings:
    """Mixin for frozen dataclasses: JSON-ready dict, a stable digest (cache keys), copy with changes."""

    def to_dict(self) -> dict:
        return asdict(self)  # type: ignore[call-overload]

    def digest(self) -> str:
        return hashlib.sha1(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:12]

    def with_(self: S, **changes) -> S:
        return replace(self, **changes)  # type: ignore[type-var]

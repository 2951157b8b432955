"""How a rendered image is called: by its own unit (or class) number, never by its place in a batch.

Why: the feature-vis page captioned units ``7,42`` as "#0" and "#1" while the gallery's "#7" is unit 7,
and ``visualize --channels 7,42`` wrote ``000.png`` and ``001.png``. Captions, file names
(``unit-0007.png``) and JSON (``units: [7, 42]``) all come from here, so they cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

OUTPUT_LAYER = "output"  # the logits pseudo-layer: its units are classes


@dataclass(frozen=True)
class ImageName:
    """What one image of a render shows: ``kind`` "unit" or "class" with its ``number``, or a plain
    "image" (DeepDream: no unit); ``copy`` numbers several images of the same unit (a diversity batch)."""

    kind: str
    number: int | None
    copy: int | None = None
    copies: int = 1

    @property
    def label(self) -> str:
        """"unit 7", "class 309", "unit 7 (2 of 4)", "image 1"."""
        if self.number is None:
            return f"image {self.copy or 0}"
        text = f"{self.kind} {self.number}"
        return text if self.copy is None else f"{text} ({self.copy + 1} of {self.copies})"

    def filename(self, suffix: str = ".png", prefix: str = "") -> str:
        """"unit-0007.png", "class-0309.png", "unit-0007-1.png" (second copy), "image-000.png"."""
        if self.number is None:
            return f"{prefix}image-{self.copy or 0:03d}{suffix}"
        stem = f"{prefix}{self.kind}-{self.number:04d}"
        return f"{stem}{'' if self.copy is None else f'-{self.copy}'}{suffix}"


def _unit_checks(objective) -> list:
    return [c for c in getattr(objective, "checks", ()) if c.units]


def unit_kind(objective) -> str | None:
    """"class" for class objectives, "unit" for channel/neuron objectives, None when no unit is named."""
    checks = _unit_checks(objective)
    if len(checks) != 1:
        return None
    return "class" if checks[0].layer == OUTPUT_LAYER else "unit"


def image_units(objective, n_images: int) -> list[int] | None:
    """The unit (or class) number each of the ``n_images`` images shows, or None (no single unit list)."""
    checks = _unit_checks(objective)
    if len(checks) != 1:
        return None
    units = [int(u) for u in checks[0].units]
    if len(units) == n_images:
        return units
    if len(units) == 1:
        return units * n_images
    return None


def image_names(objective, n_images: int) -> list[ImageName]:
    """One :class:`ImageName` per image of a render of ``objective``."""
    units = image_units(objective, n_images)
    if units is None:
        return [ImageName("image", None, i, n_images) for i in range(n_images)]
    kind = unit_kind(objective) or "unit"
    counts = {u: units.count(u) for u in units}
    seen: dict[int, int] = {}
    names = []
    for u in units:
        copy = seen.get(u, 0)
        seen[u] = copy + 1
        names.append(ImageName(kind, u, copy if counts[u] > 1 else None, counts[u]))
    return names


def filenames(names: Sequence[ImageName], suffix: str = ".png", prefix: str = "") -> list[str]:
    return [n.filename(suffix, prefix) for n in names]


def path_component(name: str) -> str:
    """A model's or layer's name as one safe path component (``checkpoint:foo.pt``, ``features.3`` → letters,
    digits and ``._-`` kept, anything else ``_``; never empty): the gallery's store, its atlas and the CLI's
    file names all spell a name this way, so the same unit lands at the same path."""
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in name) or "_"

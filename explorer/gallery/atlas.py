"""The shipped atlas: a read-only, prebuilt gallery of every unit of a model's main layers.

Why: the gallery should open ready, like OpenAI Microscope, instead of on placeholders that take
minutes to render on a CPU. A store built once (``gallery build --all-layers --ray``) is exported
compactly (:func:`~explorer.gallery.export.export_atlas`) into ``assets/atlas/<model>/``; this module reads it:

* ``manifest.json`` — model name, weights fingerprint, the render settings, per layer the unit count,
  the layer each unit was optimised on and every unit's final activation, and how it was built;
* ``<layer>/<unit>.webp`` — one lossy WebP thumbnail per unit (about 3.6 KB at 96 px);
* ``examples/<layer>.npz`` — the dataset-example table of the built-in photos (max/mean per view and
  unit in float16, arg-max positions): the page cuts the top patches from the bundled photos on demand.

It is keyed like the store (model, full weights fingerprint, settings): other weights or other settings
never see it, and an atlas keyed on the legacy partial fingerprint is never served until
:mod:`~explorer.gallery.migrate` has checked its weights and re-keyed it. The user's own store always wins:
:func:`~explorer.gallery.catalogue.lookup` falls back to the atlas only for units the store does not hold.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Iterable

import numpy as np

from ..models.base import LoadedModel
from ..naming import path_component
from ..optvis import RenderSettings
from .catalogue import MAX
from .store import Entry, UnitKey

ATLAS_ROOT = Path(__file__).resolve().parents[2] / "assets" / "atlas"
ATLAS_VAR = "EXPLORER_ATLAS_DIR"  # another folder of atlases (tests, or a user's own shipped atlases)
IMAGE_SUFFIX = ".webp"


def atlas_root() -> Path:
    return Path(os.environ[ATLAS_VAR]).expanduser() if os.environ.get(ATLAS_VAR) else ATLAS_ROOT


@dataclass(frozen=True)
class Atlas:
    """One model's shipped atlas (read-only)."""

    root: Path
    manifest: dict

    @property
    def model(self) -> str:
        return self.manifest["model"]

    @property
    def fingerprint(self) -> str:
        return self.manifest["fingerprint"]

    @property
    def legacy_fingerprint(self) -> bool:
        """Keyed on the old, partial fingerprint: never served until re-keyed (:mod:`explorer.gallery.migrate`)."""
        from ..models.base import is_legacy_fingerprint

        return is_legacy_fingerprint(self.fingerprint)

    @cached_property
    def settings(self) -> RenderSettings:
        return RenderSettings.from_dict(self.manifest["settings"])

    @cached_property
    def digest(self) -> str:
        return self.settings.digest()

    @property
    def layers(self) -> list[str]:
        return list(self.manifest["layers"])

    def units(self, layer: str) -> int:
        info = self.manifest["layers"].get(layer)
        return len(info["activations"]) if info else 0

    def serves(self, model: LoadedModel, settings: RenderSettings, variant: str = MAX) -> bool:
        """True when this atlas holds images for exactly these weights and settings (max variant only)."""
        return variant == MAX and model.name == self.model and model.fingerprint == self.fingerprint \
            and settings.digest() == self.digest

    def file(self, layer: str, unit: int) -> Path:
        return self.root / path_component(layer) / f"{int(unit):05d}{IMAGE_SUFFIX}"

    def entries(self, layer: str, units: Iterable[int] | None = None) -> dict[int, Entry]:
        """The atlas's entries of a layer (all units, or ``units``), shaped like the store's."""
        info = self.manifest["layers"].get(layer)
        if info is None:
            return {}
        acts = info["activations"]
        digest = self.digest
        wanted = range(len(acts)) if units is None else [int(u) for u in units if 0 <= int(u) < len(acts)]
        steps = int(self.manifest["settings"].get("steps", 0))
        seconds = float(info.get("seconds_per_unit", 0.0))
        return {u: Entry(UnitKey(self.model, self.fingerprint, layer, digest, MAX, u), (self.file(layer, u),),
                         (float(acts[u]),), seconds, steps, 0)
                for u in wanted if acts[u] is not None}

    def examples(self, layer: str, image_set_digest: str) -> dict[str, np.ndarray] | None:
        """The layer's dataset-example table (as :func:`~explorer.gallery.examples.load_examples` gives it)
        when the atlas was built on the same image set, else None."""
        meta = self.manifest.get("examples") or {}
        if meta.get("image_set") != image_set_digest or layer not in meta.get("layers", []):
            return None
        return _load_table(str(self.root / "examples" / f"{path_component(layer)}.npz"))


@lru_cache(maxsize=64)
def _load_table(path: str) -> dict[str, np.ndarray] | None:
    if not Path(path).is_file():
        return None
    with np.load(path, allow_pickle=False) as data:
        table = {k: data[k] for k in data.files}
    table["max"] = table["max"].astype(np.float32)
    table["mean"] = table["mean"].astype(np.float32)
    table["argmax"] = table["argmax"].astype(np.int64)
    return table


@lru_cache(maxsize=16)
def _read_manifest(path: str, mtime_ns: int) -> dict:
    return json.loads(Path(path).read_text())


def shipped_atlases(root: Path | None = None) -> list[Atlas]:
    """Every atlas in the atlas folder (read from the manifests: no model is loaded)."""
    found = []
    for manifest_path in sorted((root or atlas_root()).glob("*/manifest.json")):
        try:
            manifest = _read_manifest(str(manifest_path), manifest_path.stat().st_mtime_ns)
            found.append(Atlas(manifest_path.parent, manifest))
        except (OSError, ValueError):
            continue
    return found


def find_atlas(model: LoadedModel, root: Path | None = None) -> Atlas | None:
    """The atlas shipped for this model and weights, or None (no atlas, or other weights)."""
    folder = (root or atlas_root()) / path_component(model.name)
    manifest_path = folder / "manifest.json"
    try:
        manifest = _read_manifest(str(manifest_path), manifest_path.stat().st_mtime_ns)
    except (OSError, ValueError):
        return None
    atlas = Atlas(folder, manifest)
    return atlas if atlas.model == model.name and atlas.fingerprint == model.fingerprint else None

"""Write a shipped atlas from a store: the writer of the folder :mod:`~explorer.gallery.atlas` reads.

Why apart from the reader: exporting needs the builder (the layer each unit was optimised on) and the
dataset examples, while every page and lookup needs only the reader; kept together they imported each
other. The format is described in :mod:`~explorer.gallery.atlas`.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Sequence

import numpy as np

from ..files import atomic_write
from ..models.base import LoadedModel
from ..naming import path_component
from ..optvis import RenderSettings
from .atlas import IMAGE_SUFFIX
from .builder import objective_layer
from .catalogue import MAX, layer_units, lookup
from .examples import ensure_examples
from .store import GalleryStore


def webp_bytes(png: bytes, quality: int = 80) -> bytes:
    """A stored PNG as a lossy WebP (method 6: smallest files at this quality)."""
    from PIL import Image

    with Image.open(io.BytesIO(png)) as image:
        out = io.BytesIO()
        image.convert("RGB").save(out, "WEBP", quality=int(quality), method=6)
    return out.getvalue()


def export_atlas(store: GalleryStore, model: LoadedModel, layers: Sequence[str], settings: RenderSettings, out: Path, *,
                 image_set=None, quality: int = 80, build_info: dict | None = None) -> dict:
    """Write the store's renders of ``layers`` (and the image set's example tables) as an atlas in
    ``out/<model>/``; returns the manifest. Every unit must be rendered: an atlas has no holes."""
    folder = Path(out) / path_component(model.name)
    manifest = {"model": model.name, "weights": model.weights, "fingerprint": model.fingerprint,
                "settings": settings.to_dict(), "digest": settings.digest(), "image_format": "webp",
                "quality": int(quality), "layers": {}, "build": build_info or {}}
    for layer in layers:
        n = layer_units(model, layer)
        entries = lookup(store, model, layer, settings, MAX)
        missing = [u for u in range(n) if u not in entries]
        if missing:
            raise ValueError(f"{layer}: {len(missing)} of {n} units are not rendered (first {missing[0]}); "
                             "build them first.")
        for unit, entry in entries.items():
            atomic_write(folder / path_component(layer) / f"{unit:05d}{IMAGE_SUFFIX}",
                         webp_bytes(entry.file.read_bytes(), quality))
        seconds = [entries[u].seconds for u in range(n)]
        manifest["layers"][layer] = {"units": n, "objective_layer": objective_layer(model, layer),
                                     "activations": [round(entries[u].activation, 4) for u in range(n)],
                                     "seconds_per_unit": round(float(np.mean(seconds)), 3)}
    if image_set is not None:
        tables = ensure_examples(model, list(layers), image_set, store)
        for layer, table in tables.items():
            argmax_type = np.int16 if int(table["argmax"].max(initial=0)) < 2**15 else np.int32
            compact = {"max": table["max"].astype(np.float16), "mean": table["mean"].astype(np.float16),
                       "argmax": table["argmax"].astype(argmax_type), "map_hw": table["map_hw"],
                       "views": table["views"], "rf": table["rf"], "input_hw": table["input_hw"]}
            buffer = io.BytesIO()
            np.savez_compressed(buffer, **compact)
            atomic_write(folder / "examples" / f"{path_component(layer)}.npz", buffer.getvalue())
        manifest["examples"] = {"image_set": image_set.digest, "name": image_set.name, "views": len(image_set),
                                "layers": list(tables)}
    atomic_write(folder / "manifest.json", json.dumps(manifest, indent=1).encode())
    return manifest

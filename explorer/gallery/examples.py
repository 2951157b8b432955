"""Dataset examples: the real image patches that excite a unit most.

An *image set* is a list of views (a source photo, a square crop box on it, a flip), all shown to
the model at its input size. One forward pass per batch records, for every unit of a layer, the
maximum over spatial positions and where it happened; that table is computed once per (model,
weights, layer, image set) and kept in the gallery store. A unit's top-k examples are then crops
of receptive-field size around the arg-max positions — cheap to cut on demand.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import UserInputError, quoted
from ..files import check_regular_file
from ..images import BUILTIN_PHOTOS, fit, load_image
from ..models.base import LoadedModel
from ..progress import ProgressCallback, ShouldStop, stop_requested
from .store import GalleryStore

# The photos the gallery looks through by default: every photo the dependencies ship (the
# greyscale ones and the textures too: they are what some early and texture units like best).
GALLERY_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "stereo_motorcycle", "hubble_deep_field",
                  "immunohistochemistry", "colorwheel", "camera", "coins", "moon", "clock", "brick", "grass",
                  "gravel", "china", "flower")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif")
MIN_PATCH = 16  # px: smaller receptive fields are still shown at a visible size


@dataclass(frozen=True)
class View:
    """A square crop ``(top, left, side)`` of a source image (in its pixels), optionally mirrored."""

    source: str  # "builtin:NAME" or a file path
    top: int
    left: int
    side: int
    flip: bool = False

    @property
    def label(self) -> str:
        name = self.source.split(":", 1)[1] if self.source.startswith("builtin:") else Path(self.source).name
        return f"{name}{' (flipped)' if self.flip else ''}"


@dataclass(frozen=True)
class ImageSet:
    name: str  # what the user sees: "built-in photos" or the folder
    views: tuple[View, ...]
    skipped: tuple[str, ...] = ()  # "file: why" for each file of a folder that could not be read (left out)

    @property
    def digest(self) -> str:
        """Changes whenever any view (or a folder's file list / mtimes) changes."""
        payload = json.dumps([asdict(v) for v in self.views], sort_keys=True) + self.name
        return hashlib.sha1(payload.encode()).hexdigest()[:12]

    def __len__(self) -> int:
        return len(self.views)


@lru_cache(maxsize=64)
def _source(source: str) -> torch.Tensor:
    if not source.startswith("builtin:") and os.path.realpath(source) != source:
        # folder views hold resolved paths, checked against the image root when listed: a path that no longer
        # resolves to itself was swapped for a link since then, and is not followed
        raise UserInputError(f"{Path(source).name}: the file changed into a link after the folder was read; "
                             "read the folder again.")
    return load_image(source, max_side=1024, name=Path(source).name)


def _square_views(source: str, height: int, width: int, crops: bool) -> list[View]:
    """The whole image (centre square) and, with ``crops``, its four corner squares at 70 % — each also mirrored."""
    side = min(height, width)
    boxes = [((height - side) // 2, (width - side) // 2, side)]
    if crops:
        small = max(1, int(round(side * 0.7)))
        for top in (0, height - small):
            for left in (0, width - small):
                boxes.append((top, left, small))
    return [View(source, t, l, s, flip) for t, l, s in boxes for flip in (False, True)]


def builtin_image_set(photos: Sequence[str] = GALLERY_PHOTOS, crops: bool = True) -> ImageSet:
    """The photos scikit-image and scikit-learn ship, with corner crops and flips (10 views each)."""
    views: list[View] = []
    for name in photos:
        if name not in BUILTIN_PHOTOS:
            raise UserInputError(f"No built-in photo {name!r}; available: {', '.join(BUILTIN_PHOTOS)}.")
        image = _source(f"builtin:{name}")
        views += _square_views(f"builtin:{name}", image.shape[1], image.shape[2], crops)
    return ImageSet("built-in photos", tuple(views))


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def folder_image_set(folder: str | Path, crops: bool = False, limit: int = 2000, root: Path | None = None) -> ImageSet:
    """Every image file in ``folder`` (not recursive): centre square and its mirror (plus corners with ``crops``).

    With ``root`` (the app's ``$EXPLORER_IMAGE_ROOT``) every file is resolved and must stay under the root
    *after* resolving: a link to a file outside it is left out, named by its own name only (its target is
    never opened nor shown). Special files (FIFOs, devices) are left out as what they are, before opening."""
    path = Path(folder).expanduser()
    if not path.is_dir():
        raise UserInputError(f"Image folder not found: {path}")
    root = None if root is None else Path(os.path.realpath(root))
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.is_dir())
    if not files:
        raise UserInputError(f"No images ({', '.join(IMAGE_SUFFIXES)}) in {path}.")
    if len(files) > limit:
        raise UserInputError(f"{len(files)} images in {path}: the gallery reads at most {limit}; use a smaller folder.")
    views: list[View] = []
    skipped: list[str] = []
    listed: list[Path] = []
    for file in files:
        resolved = Path(os.path.realpath(file))
        if root is not None and not _inside(resolved, root):
            skipped.append(f"{file.name}: a link to a file outside the image folder root (not read)")
            continue
        try:
            check_regular_file(resolved, "Image file")
            image = _source(str(resolved))
        except UserInputError as exc:  # one bad file is left out (and named), not the whole folder
            skipped.append(str(exc).replace(str(resolved), file.name))
            continue
        listed.append(file)
        # the mtime goes into the source string's hash through the ImageSet name below
        views += _square_views(str(resolved), image.shape[1], image.shape[2], crops)
    if not views:
        raise UserInputError(f"None of the {len(files)} images in {path} could be read (first: {skipped[0]}).")
    stamp = hashlib.sha1("".join(f"{f.name}:{f.stat().st_mtime_ns}" for f in listed).encode()).hexdigest()[:8]
    return ImageSet(f"folder {path.resolve()} [{stamp}]", tuple(views), tuple(skipped))


IMAGE_ROOT_VAR = "EXPLORER_IMAGE_ROOT"


def image_root() -> Path | None:
    """The folder under which the app may read image folders for dataset examples (``$EXPLORER_IMAGE_ROOT``);
    None (the default) means the app reads only the built-in photos. The CLI reads any folder it is given."""
    import os

    value = os.environ.get(IMAGE_ROOT_VAR, "").strip()
    return Path(value).expanduser().resolve() if value else None


def allowed_image_folder(text: str, root: Path | None = None) -> Path:
    """``text`` (from a URL or a text box) as a folder inside the allowed root, else a UserInputError.

    Relative paths are taken from the root; symlinks and ``..`` are resolved before the check, so a
    link cannot reach a server folder outside it."""
    root = image_root() if root is None else Path(root).resolve()
    if root is None:
        raise UserInputError(f"This app reads only its built-in photos: to allow image folders, start it with "
                             f"{IMAGE_ROOT_VAR} set to a folder whose subfolders it may read.")
    candidate = Path(text.strip()).expanduser()
    resolved = (candidate if candidate.is_absolute() else root / candidate).resolve()
    if resolved != root and root not in resolved.parents:
        raise UserInputError(f"Image folder {quoted(text)} is outside {root} (the app's {IMAGE_ROOT_VAR}): "
                             "name a folder inside it.")
    return resolved


def image_set_from_spec(spec: str) -> ImageSet:
    """``builtin`` (default) or a folder path (``folder:PATH`` or just ``PATH``)."""
    spec = (spec or "builtin").strip()
    if spec in ("builtin", "built-in", "builtin-photos"):
        return builtin_image_set()
    return folder_image_set(spec.split(":", 1)[1] if spec.startswith("folder:") else spec)


def view_pixels(view: View, size: int | tuple[int, int]) -> torch.Tensor:
    """The view as the model sees it: 3×H×W in [0, 1] at ``size``."""
    image = _source(view.source)[:, view.top : view.top + view.side, view.left : view.left + view.side]
    image = fit(image, size, "crop")
    return image.flip(-1) if view.flip else image


def receptive_field(model: LoadedModel, layer: str, probe: torch.Tensor | None = None, mass: float = 0.9) -> int:
    """Side (in input pixels) of the centred square that holds ``mass`` of the input-gradient of the
    layer's centre position: the *effective* receptive field, smaller than the theoretical one for deep layers."""
    shape = model.layer_shapes[layer]
    h_in, w_in = model.input_size
    if len(shape) != 3:
        return max(h_in, w_in)
    if probe is None:
        probe = torch.rand(2, model.channels, h_in, w_in, generator=torch.Generator().manual_seed(0))
    x = probe.to(model.device).clone().requires_grad_(True)
    act = model.activations(x, [layer], use_autocast=False)[layer]
    cy, cx = act.shape[-2] // 2, act.shape[-1] // 2
    act[:, :, cy, cx].pow(2).sum().backward()
    grad = x.grad.detach().abs().sum(dim=(0, 1)).cpu().double()
    total = float(grad.sum())
    stride = max(h_in / act.shape[-2], w_in / act.shape[-1])
    if total <= 0:
        return int(max(MIN_PATCH, round(stride)))
    py, px = round((cy + 0.5) * h_in / act.shape[-2]), round((cx + 0.5) * w_in / act.shape[-1])
    side = 1
    for side in range(1, max(h_in, w_in) + 1):
        half = side // 2
        rows = slice(max(0, py - half), py - half + side)
        cols = slice(max(0, px - half), px - half + side)
        if float(grad[rows, cols].sum()) >= mass * total:
            break
    return int(min(max(side, round(stride), MIN_PATCH), max(h_in, w_in)))


@torch.no_grad()
def compute_activations(model: LoadedModel, layers: Sequence[str], image_set: ImageSet, batch: int = 16,
                        callback: ProgressCallback | None = None,
                        should_stop: ShouldStop | None = None) -> dict[str, dict[str, np.ndarray]]:
    """Per layer: ``max`` (N×C, max over positions), ``argmax`` (N×C flat position), ``mean`` (N×C), map size.

    All layers come from the same forward passes (capture stops after the deepest one). After a
    cancel (``should_stop``) the tables cover only the images done so far.
    """
    for layer in layers:
        shape = model.check_layer(layer).shape
        if len(shape) not in (1, 3):
            raise UserInputError(f"Layer {layer!r} has output shape {shape}; dataset examples need C or C×H×W outputs.")
    n = len(image_set)
    size = tuple(model.input_size)
    out = {layer: {"max": [], "argmax": [], "mean": []} for layer in layers}
    map_hw: dict[str, tuple[int, int]] = {}
    for start in range(0, n, batch):
        if stop_requested(should_stop):
            break
        x = torch.stack([view_pixels(v, size) for v in image_set.views[start : start + batch]])
        acts = model.activations(x, list(layers), use_autocast=False)
        for layer in layers:
            a = acts[layer].float()
            flat = a.flatten(2) if a.ndim == 4 else a[:, :, None]
            map_hw[layer] = tuple(a.shape[-2:]) if a.ndim == 4 else (1, 1)
            values, where = flat.max(dim=2)
            out[layer]["max"].append(values.cpu())
            out[layer]["argmax"].append(where.cpu())
            out[layer]["mean"].append(flat.mean(dim=2).cpu())
        if callback is not None:
            done = min(n, start + batch)
            callback(done, n, None, None)
    def joined(parts: list[torch.Tensor], layer: str) -> torch.Tensor:
        return torch.cat(parts) if parts else torch.zeros(0, model.check_layer(layer).shape[0])

    return {layer: {"max": joined(v["max"], layer).numpy().astype(np.float32),
                    "argmax": joined(v["argmax"], layer).numpy().astype(np.int32),
                    "mean": joined(v["mean"], layer).numpy().astype(np.float32),
                    "map_hw": np.asarray(map_hw.get(layer, (0, 0)), dtype=np.int32)} for layer, v in out.items()}


def ensure_examples(model: LoadedModel, layers: Sequence[str], image_set: ImageSet, store: GalleryStore,
                    callback: ProgressCallback | None = None,
                    should_stop: ShouldStop | None = None) -> dict[str, dict[str, np.ndarray]]:
    """Stored activation tables for ``layers`` on ``image_set``; computes (once, in one pass) the missing ones."""
    tables: dict[str, dict[str, np.ndarray]] = {}
    missing = []
    for layer in layers:
        stored = store.load_examples(model.name, model.fingerprint, layer, image_set.digest)
        if stored is None:
            missing.append(layer)
        else:
            tables[layer] = stored
    if missing:
        computed = compute_activations(model, missing, image_set, callback=callback, should_stop=should_stop)
        if any(len(table["max"]) < len(image_set) for table in computed.values()):
            return tables  # cancelled: store nothing partial; the missing layers are simply absent
        views_json = np.asarray(json.dumps([asdict(v) for v in image_set.views]))
        for layer, table in computed.items():
            table = {**table, "views": views_json, "rf": np.asarray(receptive_field(model, layer), dtype=np.int32),
                     "input_hw": np.asarray(model.input_size, dtype=np.int32)}
            store.save_examples(model.name, model.fingerprint, layer, image_set.digest, table, image_set.name)
            tables[layer] = table
    return tables


def load_examples(model: LoadedModel, layer: str, image_set: ImageSet,
                  store: GalleryStore) -> dict[str, np.ndarray] | None:
    """The stored table, or None when it has not been computed yet (no work here: pages call this on every rerun)."""
    return store.load_examples(model.name, model.fingerprint, layer, image_set.digest)


@dataclass(frozen=True)
class Example:
    view: View
    index: int  # row in the image set
    activation: float  # max over positions
    position: tuple[int, int]  # (y, x) in the activation map
    box: tuple[int, int, int, int]  # (top, left, height, width) in the model-input pixels of the view


def top_examples(table: dict[str, np.ndarray], unit: int, k: int = 8, per_source: int = 2) -> list[Example]:
    """The ``k`` views whose max activation for ``unit`` is largest (at most ``per_source`` per photo),
    with crop boxes."""
    values = table["max"][:, unit]
    order = np.argsort(-values, kind="stable")
    views = [View(**v) for v in json.loads(str(table["views"]))]
    map_h, map_w = (int(s) for s in table["map_hw"])
    in_h, in_w = (int(s) for s in table["input_hw"])
    side = int(table["rf"])
    counts: dict[str, int] = {}
    picked: list[Example] = []
    for index in order:
        view = views[int(index)]
        if counts.get(view.source, 0) >= per_source:
            continue
        counts[view.source] = counts.get(view.source, 0) + 1
        y, x = divmod(int(table["argmax"][index, unit]), map_w)
        cy, cx = (y + 0.5) * in_h / map_h, (x + 0.5) * in_w / map_w
        ph, pw = min(side, in_h), min(side, in_w)
        top = int(min(max(round(cy - ph / 2), 0), in_h - ph))
        left = int(min(max(round(cx - pw / 2), 0), in_w - pw))
        picked.append(Example(view, int(index), float(values[index]), (y, x), (top, left, ph, pw)))
        if len(picked) >= k:
            break
    return picked


def example_patch(example: Example, input_size: tuple[int, int], out_size: int | None = 96) -> torch.Tensor:
    """The crop of the view (as the model saw it) around the unit's peak, resized to ``out_size``."""
    pixels = view_pixels(example.view, input_size)
    top, left, h, w = example.box
    patch = pixels[:, top : top + h, left : left + w]
    if out_size and (h, w) != (out_size, out_size):
        patch = F.interpolate(patch[None], size=(out_size, out_size), mode="bilinear", align_corners=False,
                              antialias=h > out_size).clamp(0, 1)[0]
    return patch

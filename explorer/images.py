"""The one image I/O module: decode user files safely, built-in photos, tensors <-> PNG.

Tensors are float32 in [0, 1], C×H×W (or B×C×H×W for batches), RGB.
"""

from __future__ import annotations

import io
import os
import warnings
from functools import lru_cache
from pathlib import Path
from typing import BinaryIO, Literal, Union

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError

from . import limits
from .errors import UserInputError
from .files import atomic_write, read_user_file

ImageSource = Union[str, Path, bytes, BinaryIO, Image.Image, np.ndarray, torch.Tensor]

FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "TIFF", "GIF")  # what Image.open may try (JPEG includes MPO)
_HIGH_DEPTH = ("I;16", "I;16B", "I;16L", "I", "F")  # 16-bit and 32-bit integer / float pixels

# name -> loader returning an H×W×3 uint8 array; all ship inside scikit-image / scikit-learn wheels
_BUILTIN_SKIMAGE = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry",
                    "stereo_motorcycle", "colorwheel", "camera", "coins", "moon", "clock", "brick", "grass", "gravel")
_BUILTIN_SKLEARN = ("china", "flower")
BUILTIN_PHOTOS = _BUILTIN_SKIMAGE + _BUILTIN_SKLEARN


# PIL warns between its own limit and twice that: we check every file's size from its header ourselves
# (limits.check_image_shape), so the warning would only repeat our check in other words.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


class ImageLoadError(UserInputError):
    """The file could not be read as an image; the message says why."""


@lru_cache(maxsize=None)
def _builtin_array(name: str) -> np.ndarray:
    if name in _BUILTIN_SKLEARN:
        from sklearn.datasets import load_sample_image

        return load_sample_image(f"{name}.jpg")
    if name in _BUILTIN_SKIMAGE:
        import skimage.data

        array = getattr(skimage.data, name)()
        return array[0] if isinstance(array, tuple) else array
    import difflib

    close = difflib.get_close_matches(name, BUILTIN_PHOTOS, n=3)
    raise ImageLoadError(f"No built-in photo {name!r}." + (f" Did you mean {', '.join(close)}?" if close else "")
                         + f" Available: {', '.join(BUILTIN_PHOTOS)}.")


def _to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode (grey, 16-bit, RGBA, palette, CMYK, float) -> 8-bit RGB."""
    if img.mode in _HIGH_DEPTH:
        # one float32 copy, scaled in place (4 bytes a pixel, not the 8 × several of float64 temporaries)
        lo, hi = (float(v) for v in img.getextrema())
        scale = 65535.0 if img.mode.startswith("I;16") else (hi if hi > 255 else 255.0)
        if img.mode == "F" and hi <= 1.0 and lo >= 0.0:
            scale = 1.0
        array = np.asarray(img, dtype=np.float32).copy() if img.mode == "F" else np.asarray(img).astype(np.float32)
        array *= 255.0 / max(scale, 1e-12)
        np.clip(array, 0, 255, out=array)
        array += 0.5
        img = Image.fromarray(array.astype(np.uint8), mode="L")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))  # flatten onto white
        img = Image.alpha_composite(background, img)
    return img.convert("RGB")


def _decode(data: bytes, name: str, max_side: int | None) -> Image.Image:
    """Decode ``data`` after checking the header's size against :mod:`explorer.limits` (nothing big is
    allocated before that: PIL reads the size lazily)."""
    if not data:
        raise ImageLoadError(f"{name}: the file is empty (0 bytes).")
    try:  # only the formats we name: no ICO/ICNS/EPS/… containers whose inner image the header does not bound
        img = Image.open(io.BytesIO(data), formats=FORMATS)
    except Image.DecompressionBombError:
        # PIL refuses far beyond our own limit before we could read the header: same message as ours
        raise ImageLoadError(
            f"{name}: over the limit of {limits.MAX_IMAGE_PIXELS:,} pixels; scale it down first.") from None
    except UnidentifiedImageError:
        raise ImageLoadError(f"{name}: not an image file PIL can read (PNG, JPEG, WebP, BMP, TIFF, GIF).") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageLoadError(f"{name}: the file is corrupt or truncated ({exc}).") from None
    width, height = img.size
    try:
        limits.check_image_shape(width, height, name)
    except UserInputError as exc:
        raise ImageLoadError(str(exc)) from None
    if max_side and img.format == "JPEG":
        img.draft("RGB", (max_side, max_side))  # JPEG decodes straight at 1/2, 1/4 or 1/8 scale: less memory
    try:
        img.load()
    except Image.DecompressionBombError:
        raise ImageLoadError(
            f"{name}: over the limit of {limits.MAX_IMAGE_PIXELS:,} pixels; scale it down first.") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageLoadError(f"{name}: the file is corrupt or truncated ({exc}).") from None
    if img.size != (width, height):  # a container that decoded to another size than its header said
        try:
            limits.check_image_shape(*img.size, name)
        except UserInputError as exc:
            raise ImageLoadError(f"{exc} (its header said {width}×{height})") from None
    img = ImageOps.exif_transpose(img)  # honour the camera's orientation tag
    if max_side and img.mode in _HIGH_DEPTH and max(img.size) > max_side:
        img.thumbnail((max_side, max_side), Image.LANCZOS)  # before the 8-bit conversion: its copy stays small
    return _to_rgb(img)


def load_image(source: ImageSource, *, max_side: int | None = limits.LOAD_MAX_SIDE,
               name: str | None = None) -> torch.Tensor:
    """Read an image from a path, ``builtin:NAME``, bytes, a file object, PIL, numpy or a tensor.

    Returns RGB float32 3×H×W in [0, 1]. Images larger than ``max_side`` are downscaled. Files are
    checked against the side, pixel and aspect-ratio limits (:mod:`explorer.limits`) from their header,
    before decoding; in-memory images against the side and aspect-ratio limits. ``name`` labels
    bytes and file objects in messages (e.g. the uploaded file's name).
    """
    if isinstance(source, torch.Tensor):
        tensor = source.detach().float().cpu()
        if tensor.ndim == 2:
            tensor = tensor[None]
        if tensor.ndim != 3 or tensor.shape[0] not in (1, 3):
            raise ImageLoadError(f"{name or 'image'}: expected a C×H×W tensor with 1 or 3 channels, "
                                 f"got {tuple(tensor.shape)}.")
        _check_in_memory(tensor.shape[-1], tensor.shape[-2], name or "image")
        if tensor.shape[0] == 1:
            tensor = tensor.expand(3, -1, -1)
        return tensor.clamp(0, 1).contiguous()
    if isinstance(source, str) and source.startswith("builtin:"):
        array = _builtin_array(source.split(":", 1)[1])
        img = Image.fromarray(array.astype(np.uint8) * (255 if array.dtype == bool else 1))
        img = _to_rgb(img)
    elif isinstance(source, (str, Path)):
        path = Path(source).expanduser()
        if isinstance(source, str) and source in BUILTIN_PHOTOS and not os.path.lexists(path):
            return load_image(f"builtin:{source}", max_side=max_side)
        try:  # a FIFO, a device or a link to one is refused before it is read, and named as what it is
            data = read_user_file(path, "Image file", max_bytes=limits.MAX_IMAGE_FILE_BYTES,
                                  label=None if name is None else name)
        except UserInputError as exc:
            raise ImageLoadError(str(exc)) from None
        img = _decode(data, name or path.name, max_side)
    elif isinstance(source, (bytes, bytearray, memoryview)):
        img = _decode(bytes(source), name or "the uploaded image", max_side)
    elif isinstance(source, Image.Image):
        _check_in_memory(*source.size, name or "image")
        img = _to_rgb(source)
    elif isinstance(source, np.ndarray):
        array = source
        if array.ndim not in (2, 3) or array.size == 0:
            raise ImageLoadError(f"{name or 'image'}: expected an H×W or H×W×C array, got shape {array.shape}.")
        _check_in_memory(array.shape[1], array.shape[0], name or "image")
        if array.dtype != np.uint8:
            array = np.clip(array.astype(np.float64) * (255.0 if array.max() <= 1.0 else 1.0), 0, 255).astype(np.uint8)
        img = _to_rgb(Image.fromarray(array))
    elif hasattr(source, "read"):
        img = _decode(source.read(), name or Path(str(getattr(source, "name", "the uploaded image"))).name, max_side)
    else:
        raise ImageLoadError(f"Cannot read an image from {type(source).__name__}.")
    if max_side and max(img.size) > max_side:
        img.thumbnail((max_side, max_side), Image.LANCZOS)
    array = np.asarray(img, dtype=np.float32) / 255.0
    return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()


def _check_in_memory(width: int, height: int, name: str) -> None:
    """Images already in memory: their pixels are allocated, but an absurd aspect ratio is still refused."""
    try:
        limits.check_image_shape(int(width), int(height), name)
    except UserInputError as exc:
        if "pixels, over the limit" not in str(exc):  # the memory is already spent: only the shape matters
            raise ImageLoadError(str(exc)) from None


def fit(image: torch.Tensor, size: int | tuple[int, int], mode: Literal["crop", "pad"] = "crop") -> torch.Tensor:
    """Resize to ``size`` keeping the aspect ratio: centre-crop the excess, or pad with grey.

    Never allocates more than the input and the output: "crop" cuts the centre box with the target's
    aspect ratio out of the input *first*, then resizes it (a 20000×1 strip costs 224×224, not 224×4.5 M).
    """
    th, tw = (size, size) if isinstance(size, int) else size
    th, tw = int(th), int(tw)
    if not (1 <= th <= limits.MAX_SIZE * 4 and 1 <= tw <= limits.MAX_SIZE * 4):
        raise UserInputError(f"Cannot fit an image to {th}×{tw} px: use 1–{limits.MAX_SIZE * 4} px a side.")
    squeeze = image.ndim == 3
    x = image[None] if squeeze else image
    h, w = x.shape[-2:]
    if mode == "crop":
        if h * tw > w * th:  # taller than the target: keep full width, crop height
            ch, cw = max(1, min(h, round(w * th / tw))), w
        else:
            ch, cw = h, max(1, min(w, round(h * tw / th)))
        top, left = (h - ch) // 2, (w - cw) // 2
        x = x[..., top : top + ch, left : left + cw]
        if (ch, cw) != (th, tw):
            x = F.interpolate(x, size=(th, tw), mode="bilinear", align_corners=False, antialias=True).clamp(0, 1)
    elif mode == "pad":
        scale = min(th / h, tw / w)
        nh, nw = max(1, min(th, round(h * scale))), max(1, min(tw, round(w * scale)))
        if (nh, nw) != (h, w):
            x = F.interpolate(x, size=(nh, nw), mode="bilinear", align_corners=False, antialias=True).clamp(0, 1)
        pt, pl = (th - nh) // 2, (tw - nw) // 2
        x = F.pad(x, (pl, tw - nw - pl, pt, th - nh - pt), value=0.5)
    else:
        raise UserInputError(f"Unknown fit mode {mode!r}; choose crop or pad.")
    return x[0] if squeeze else x


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """C×H×W in [0, 1] -> H×W×C uint8 (H×W for one channel)."""
    array = (image.detach().float().cpu().clamp(0, 1) * 255 + 0.5).to(torch.uint8).permute(1, 2, 0).numpy()
    return array[..., 0] if array.shape[-1] == 1 else array


def to_pil(image: torch.Tensor) -> Image.Image:
    return Image.fromarray(to_uint8(image))


def png_bytes(image: torch.Tensor) -> bytes:
    buffer = io.BytesIO()
    to_pil(image).save(buffer, format="PNG")
    return buffer.getvalue()


def save_png(image: torch.Tensor, path: str | Path) -> Path:
    """Write atomically (:func:`explorer.files.atomic_write`) so readers never see half a PNG."""
    return atomic_write(path, png_bytes(image))


def grid(images: torch.Tensor, columns: int | None = None, padding: int = 2, fill: float = 1.0) -> torch.Tensor:
    """B×C×H×W -> one C×H'×W' contact sheet."""
    b, c, h, w = images.shape
    columns = columns or int(np.ceil(np.sqrt(b)))
    rows = int(np.ceil(b / columns))
    sheet = torch.full((c, rows * (h + padding) + padding, columns * (w + padding) + padding), fill)
    for i in range(b):
        r, col = divmod(i, columns)
        top, left = padding + r * (h + padding), padding + col * (w + padding)
        sheet[:, top : top + h, left : left + w] = images[i].detach().cpu()
    return sheet


def gif_bytes(frames: list[torch.Tensor], duration_ms: int = 80,
              last_frame_ms: int | None = None, loop: int = 0) -> bytes:
    """C×H×W frames in [0, 1] -> an animated GIF (grey frames stay grey; RGB frames get an adaptive palette)."""
    if not frames:
        raise UserInputError("A GIF needs at least one frame.")
    pil = [to_pil(frame) for frame in frames]
    if pil[0].mode == "RGB":
        pil = [p.quantize(colors=256, method=Image.Quantize.MEDIANCUT) for p in pil]
    durations = [duration_ms] * len(pil)
    if last_frame_ms is not None:
        durations[-1] = last_frame_ms
    buffer = io.BytesIO()
    pil[0].save(buffer, format="GIF", save_all=True, append_images=pil[1:], duration=durations,
                loop=loop, optimize=False)
    return buffer.getvalue()

"""Every bound on what a user may ask for, in one table (documented in docs/ARCHITECTURE.md).

Why: a 138-byte PNG, a 2 KB WAV or a URL parameter must not be able to make the app allocate
gigabytes. Each user-given number is checked here *before* anything is allocated, and a value
outside its range is a one-line :class:`~explorer.errors.UserInputError` that says what to use.
Settings dataclasses check their fields against :data:`LIMITS` when they are built (by field
name, see :func:`check_fields`), so the library, the CLI and the pages share the same bounds.
The pages take their widgets' min/max from here too.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Mapping

from .errors import UserInputError

# ---- image files ---------------------------------------------------------------------------------
MAX_IMAGE_PIXELS = 40_000_000  # a decoded file above this is refused (decompression bombs); read from the header
MAX_IMAGE_SIDE = 20_000  # px, either side of a file
MAX_ASPECT = 20.0  # longer side / shorter side; a 20000×1 strip would crop to a 1-px sliver anyway
LOAD_MAX_SIDE = 2048  # px: larger photos are downscaled on load (nothing here needs more)
MAX_IMAGE_FILE_BYTES = 512 * 1024**2  # an image file larger than this is refused before it is read

# ---- renders (feature vis, gallery, inversion, dreams, fooling images) ----------------------------
MIN_SIZE, MAX_SIZE = 16, 1024  # px, side of an optimised image or of a photo after fitting
MAX_BATCH = 256  # images optimised together
# images × side² of one optimised batch: forward + backward memory grows with it. Measured peak on
# EfficientNet-Lite0 (blocks.10, CPU, float32): 2.3 GB for 1024² = 1×1024² = 4×512² = 16×256² = 64×128²
# (`python benchmarks/limits_memory.py`); half of that budget costs about half the memory.
MAX_BATCH_PIXELS = 1024 * 1024
# images × side² of one forward-only batch (fooling sweeps, dataset examples): no gradients kept
MAX_FORWARD_PIXELS = 256 * 224 * 224
MAX_UNITS = 4096  # units (channels, classes) named in one request ("0-4095")
MAX_LAYERS = 8  # layers in one batched inversion/caricature

# ---- audio ---------------------------------------------------------------------------------------
MIN_SAMPLE_RATE, MAX_SAMPLE_RATE = 1_000, 384_000  # Hz, read from the file header before decoding
MAX_AUDIO_SECONDS = 30.0  # of a sound file, from the header (frames / rate) before decoding
MAX_AUDIO_CHANNELS = 8  # mixed down to mono after decoding (30 s × 384 kHz × 8 × float32 = 370 MB at most)
MAX_RESAMPLE_TERMS = 1000  # largest term of the up/down resampling ratio (polyphase filter ~20 × this taps)

# ---- checkpoints ---------------------------------------------------------------------------------
# safetensors JSON header: bytes (a 7B-parameter LLM's is ~1 MB; the format allows 100 MB, which json.loads
# turns into ~1.7 GB of Python objects), nesting depth (a real header nests 3 deep) and tensors, checked on
# the raw bytes before the JSON is parsed
MAX_SAFETENSORS_HEADER = 16 * 1024 * 1024
MAX_HEADER_DEPTH = 8
MAX_CHECKPOINT_TENSORS = 100_000
MAX_CHECKPOINT_BYTES = 4 * 1024 ** 3  # a weights file larger than this is refused before reading, and so is
# one that unpacks to more: a .pt / TorchScript zip's uncompressed sizes are summed before torch reads it
MAX_ARCHIVE_INFLATION = 4  # uncompressed ÷ file size of a .pt zip (torch.save stores uncompressed: ~1.0)


@dataclass(frozen=True)
class Limit:
    """A closed range ``[lo, hi]`` (or ``(lo, hi]`` with ``lo_open``) for a number, with why it is there."""

    lo: float
    hi: float
    unit: str = ""
    why: str = ""
    integer: bool = False
    lo_open: bool = False
    label: str = ""  # how the user knows it ("learning rate"); defaults to the field name

    def describe(self) -> str:
        def fmt(v: float) -> str:
            return f"{int(v):,}" if abs(v) >= 10_000 else f"{v:g}"

        low = f"more than {fmt(self.lo)}" if self.lo_open else fmt(self.lo)
        if self.lo_open:
            return f"{low} and at most {fmt(self.hi)}{self.unit}"
        return f"{low}–{fmt(self.hi)}{self.unit}"


def _int(lo: int, hi: int, unit: str = "", why: str = "", label: str = "") -> Limit:
    return Limit(lo, hi, unit, why, integer=True, label=label)


def _float(lo: float, hi: float, unit: str = "", why: str = "", lo_open: bool = False, label: str = "") -> Limit:
    return Limit(lo, hi, unit, why, lo_open=lo_open, label=label)


_WEIGHT = _float(0.0, 10_000.0, why="a prior or term weight")
_SEED = _int(0, 2**31 - 1, label="seed")  # the pages, the CLI and the docs share this range (explorer/vocabulary.py)

LIMITS: dict[str, Limit] = {
    # renders and photos
    "size": _int(MIN_SIZE, MAX_SIZE, " px", "memory grows with size²", "size"),
    "steps": _int(0, 10_000, "", "0 scores the start only", "steps"),
    "lr": _float(0.0, 1.0, "", "Adam saturates every pixel at larger rates", lo_open=True, label="learning rate"),
    "batch": _int(1, MAX_BATCH, " images", "memory grows with the batch", "batch"),
    "seed": _SEED,
    "decay": _float(0.0, 4.0, label="spectrum decay"),
    "tv": _WEIGHT, "alpha": _WEIGHT, "l1": _WEIGHT, "l2": _WEIGHT, "diversity": _WEIGHT,
    "tv_beta": _float(1.0, 6.0, label="TV exponent β"),
    "alpha_power": _float(1.0, 12.0, label="α-norm exponent"),
    "blur_every": _int(0, 10_000, label="blur interval"),
    "blur_sigma": _float(0.0, 10.0, " px", label="blur σ"),
    "init_blur": _float(0.0, 64.0, " px", label="start blur σ"),
    "octaves": _int(1, 8, label="octaves"),
    "octave_scale": _float(1.0, 4.0, label="octave scale"),
    "jitter": _int(0, MAX_SIZE // 2, " px", "at most half the image size", "jitter"),
    "cos_floor": _float(0.0, 0.99, label="cosine floor"),
    "cos_power": _float(0.0, 16.0, label="cosine power"),
    "units": _int(1, MAX_UNITS, " units", "one image or row per unit", "number of units"),
    "layers": _int(1, MAX_LAYERS, " layers", "one image per layer in one batch", "number of layers"),
    "facets": _int(0, 16, label="facets"),
    "lease": _float(1.0, 86_400.0, " s", label="lease"),
    # fooling
    "n": _int(1, 10_000_000, " samples", "streamed: time, not memory, grows with it", "samples"),
    "gallery": _int(0, 1024, " images", label="gallery size"),
    "index": _int(0, 2**31 - 1, label="sample index"),
    "goal": _float(0.0, 1.0, lo_open=True, label="target confidence"),
    "eps": _float(0.0, 1000.0, lo_open=True, label="budget size"),
    # diffusion
    "eta": _float(0.0, 1.0, label="η"),
    "gif_frames": _int(1, 1000, label="GIF frames"),
    "record_every": _int(1, 100_000, label="record interval"),
    "threads": _int(1, 1024, label="threads"),
    # audio
    "seconds": _float(0.0, MAX_AUDIO_SECONDS, " s", "longer sounds: trim them first", lo_open=True, label="length"),
    "sample_rate": _int(MIN_SAMPLE_RATE, MAX_SAMPLE_RATE, " Hz", "resampling cost grows with the rate", "sample rate"),
    "top": _int(1, 1000, label="top"),
    "griffin_lim_iters": _int(0, 1000, label="Griffin-Lim iterations"),
    "consistency_every": _int(0, 10_000, label="consistency interval"),
    "gain_jitter_db": _float(0.0, 48.0, " dB", label="gain jitter"),
    "momentum": _float(0.0, 2.0, label="Griffin-Lim momentum"),
    "floor_db": _float(-200.0, 200.0, " dB", label="floor"),
    "top_db": _float(-200.0, 200.0, " dB", label="top"),
    "tv_time": _WEIGHT, "tv_freq": _WEIGHT,
    # training (diffusion train / train-classifier)
    "train_steps": _int(1, 10_000_000, label="training steps"),
    "batch_size": _int(1, 4096, " images", "memory grows with the batch", "batch size"),
    "epochs": _int(1, 1000, label="epochs"),
    "warmup": _int(0, 10_000_000, label="warm-up steps"),
    "ema_decay": _float(0.0, 1.0, label="EMA decay"),
    "num_train_timesteps": _int(2, 10_000, label="training timesteps"),
    "layers_per_block": _int(1, 8, label="layers per block"),
    "norm_num_groups": _int(1, 256, label="GroupNorm groups"),
    "checkpoint_every": _int(1, 10_000_000, label="checkpoint interval"),
    "channels": _int(1, 1024, " channels", "memory grows with the width", "channels"),
    "width": _int(1, 512, " channels", label="width"),
    "max_minutes": _float(0.0, 10_000_000.0, " min", lo_open=True, label="time limit"),
}


def _what(name: str, limit: Limit, what: str | None) -> str:
    text = what or limit.label or name.replace("_", " ")
    return text[:1].upper() + text[1:]


def check(name: str, value: Any, *, what: str | None = None, limit: Limit | None = None, lo: float | None = None,
          hi: float | None = None) -> Any:
    """``value`` if it is a finite number inside LIMITS[name] (narrowed by ``lo``/``hi``), else a UserInputError.

    ``what`` is how the message names it (e.g. "--size"). Returns the value unchanged (ints stay ints).
    """
    limit = limit or LIMITS[name]
    if lo is not None or hi is not None:  # a narrowed range: the table's "why" speaks of the wider one, drop it
        limit = dataclasses.replace(limit, lo=limit.lo if lo is None else lo, hi=limit.hi if hi is None else hi, why="")
    label = _what(name, limit, what)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        try:
            value = float(value) if not limit.integer else int(value)
        except (TypeError, ValueError):
            raise UserInputError(f"{label} must be a number ({limit.describe()}), got {value!r}.") from None
    if isinstance(value, float) and not math.isfinite(value):
        raise UserInputError(f"{label} must be a finite number ({limit.describe()}), got {value}.")
    if limit.integer and float(value) != int(value):
        raise UserInputError(f"{label} must be a whole number ({limit.describe()}), got {value}.")
    too_low = value <= limit.lo if limit.lo_open else value < limit.lo
    if too_low or value > limit.hi:
        why = f" ({limit.why})" if limit.why else ""
        shown = f"{value:g}" if isinstance(value, float) else str(value)
        raise UserInputError(f"{label} {shown} is out of range: use {limit.describe()}{why}.")
    return value


def check_fields(obj: Any, overrides: Mapping[str, Limit | None] | None = None) -> None:
    """Check a dataclass's numeric fields: those named in LIMITS (or ``overrides``; None skips one) must
    be in range; every other float must at least be finite. ``None`` values mean "default" and pass."""
    overrides = dict(overrides or {})
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        limit = overrides[f.name] if f.name in overrides else LIMITS.get(f.name)
        if limit is not None:
            check(f.name, value, limit=limit)
        elif isinstance(value, float) and not math.isfinite(value):
            raise UserInputError(f"{f.name.replace('_', ' ').capitalize()} must be a finite number, got {value}.")


def check_batch_pixels(images: int, height: int, width: int | None = None, *, budget: int = MAX_BATCH_PIXELS,
                       what: str = "images", min_side: int = 0) -> None:
    """Refuse a batch whose images × pixels exceed ``budget`` (before any tensor exists).

    The message suggests only what would fit: a smaller batch, and a smaller side only when one exists that
    fits and that the caller can choose — ``min_side`` is the side the cost cannot go below (the network's
    own input size when every image is resized to it), so no size is suggested that costs the same."""
    width = height if width is None else width
    total = int(images) * int(height) * int(width)
    if total > budget:
        most = max(1, budget // (int(height) * int(width)))
        side = int(math.isqrt(budget // max(1, int(images))))
        fits = f"use at most {most} at this size" if most * int(height) * int(width) <= budget else \
            f"even one image of {height}×{width} px is over it"
        if side >= max(MIN_SIZE, int(min_side) + 1) and side < max(int(height), int(width)):
            fits += f", or at most {side} px for {images}"
        elif min_side and side <= int(min_side):
            fits += f" (the network sees {int(min_side)} px whatever the size asked for)"
        raise UserInputError(
            f"{images} {what} of {height}×{width} px is too much for one batch ({total:,} pixels; the limit is "
            f"{budget:,}): {fits}.")


def check_image_shape(width: int, height: int, name: str) -> None:
    """Side, pixel count and aspect ratio of an image file, from its header (before decoding)."""
    if width < 1 or height < 1:
        raise UserInputError(f"{name}: the image is empty ({width}×{height} pixels).")
    if width * height > MAX_IMAGE_PIXELS:
        raise UserInputError(f"{name}: {width}×{height} is {width * height:,} pixels, over the limit of "
                             f"{MAX_IMAGE_PIXELS:,}; scale it down first.")
    if max(width, height) > MAX_IMAGE_SIDE:
        raise UserInputError(f"{name}: {width}×{height} pixels has a side over the limit of {MAX_IMAGE_SIDE:,} px; "
                             "scale it down first.")
    ratio = max(width, height) / min(width, height)
    if ratio > MAX_ASPECT:
        raise UserInputError(f"{name}: {width}×{height} pixels is a {ratio:.0f}:1 strip; "
                             f"the limit is {MAX_ASPECT:g}:1. "
                             "Crop it closer to a square first.")


def limits_table() -> list[dict]:
    """The table as rows (for docs and the CLI's help)."""
    return [{"name": k, "range": v.describe(), "why": v.why} for k, v in LIMITS.items()]

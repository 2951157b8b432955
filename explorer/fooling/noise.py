"""Noise families: seeded generators of images in [0, 1] at a model's input size, made on the model's device.

Sample ``i`` of a family depends only on ``(seed, family, i)``: samples come in fixed chunks of
:data:`CHUNK`, each chunk drawn from its own generator seeded from ``(seed, family, chunk index)``, so a
sweep gives the same numbers whatever its batch size, and any sample can be regenerated later from its
index (the gallery stores indices, not images).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Callable, Iterable, Iterator, Sequence

import torch
import torch.nn.functional as F

from .. import devices
from ..errors import UserInputError
from ..optvis.param import radial_frequency

CHUNK = 32  # samples per independently seeded chunk; never depends on the user's batch size


@dataclass(frozen=True)
class NoiseOptions:
    """Knobs of the families that have any. Part of a sweep's settings (JSON)."""

    sigma: float = 0.25  # gaussian: standard deviation around 0.5, then clipped to [0, 1]
    pink_exponent: float = 1.0  # pink: amplitude ∝ 1/f^a, i.e. power spectrum slope −2a (a=1: natural images)
    pink_colour: bool = True  # pink: independent noise per channel (False: one grey field)
    density: float = 0.2  # salt-and-pepper: fraction of pixels set to black or white (rest mid-grey)
    fft_sd: float = 0.01  # fft: the engine's initial spectrum scale (RenderSettings' default)

    def __post_init__(self) -> None:
        if not 0 < self.sigma <= 10:
            raise UserInputError(f"Gaussian σ must be in (0, 10], got {self.sigma}.")
        if not 0 <= self.pink_exponent <= 4:
            raise UserInputError(f"The pink-noise exponent a (1/f^a) must be in [0, 4], got {self.pink_exponent}.")
        if not 0 <= self.density <= 1:
            raise UserInputError(f"Salt-and-pepper density must be in [0, 1], got {self.density}.")
        if not 0 < self.fft_sd <= 10:
            raise UserInputError(f"The FFT init scale must be in (0, 10], got {self.fft_sd}.")

    def to_dict(self) -> dict:
        return asdict(self)


Maker = Callable[[int, int, tuple[int, int], torch.Generator, torch.device, NoiseOptions], torch.Tensor]


@dataclass(frozen=True)
class NoiseFamily:
    name: str
    title: str
    description: str
    make: Maker  # (n, channels, (h, w), generator, device, options) -> n×C×H×W in [0, 1]
    control: bool = False  # real photos: a confident answer there is not "fooled"


def _uniform(n, c, hw, gen, device, opts):
    return torch.rand(n, c, *hw, generator=gen, device=device)


def _gaussian(n, c, hw, gen, device, opts):
    return (0.5 + opts.sigma * torch.randn(n, c, *hw, generator=gen, device=device)).clamp_(0, 1)


def _pink(n, c, hw, gen, device, opts):
    h, w = hw
    fields = c if opts.pink_colour else 1
    # White noise drawn directly in Fourier space (a complex Gaussian per rfft2 coefficient),
    # shaped by 1/f^a; irfft2 makes it real. No DC term: zero mean.
    white = torch.view_as_complex(torch.randn(n, fields, h, w // 2 + 1, 2, generator=gen, device=device))
    z = torch.fft.irfft2(white.mul_(_pink_amplitude(h, w, opts.pink_exponent, str(device))), s=(h, w))
    # A per-image affine map keeps the spectrum's shape exactly: mean 0.5, peak at 0 or 1. In place, in the
    # order 0.5 + (0.5·z) / peak (the same floats as out of place; the sweep's generation cost is its overhead).
    peak = torch.linalg.vector_norm(z, ord=float("inf"), dim=(-2, -1), keepdim=True).clamp_(min=1e-12)
    x = z.mul_(0.5).div_(peak).add_(0.5)
    return x if fields == c else x.expand(-1, c, -1, -1).contiguous()


@lru_cache(maxsize=8)
def _pink_amplitude(h: int, w: int, exponent: float, device: str) -> torch.Tensor:
    """1/f^a on the rfft2 grid, 0 at DC (made once per size and exponent)."""
    f = radial_frequency(h, w, torch.device(device))
    return torch.where(f > 0, f.clamp(min=1e-12) ** -exponent, torch.zeros_like(f))


def _salt_pepper(n, c, hw, gen, device, opts):
    u = torch.rand(n, 1, *hw, generator=gen, device=device)
    x = torch.full_like(u, 0.5)
    x[u < opts.density / 2] = 0.0
    x[u > 1 - opts.density / 2] = 1.0
    return x.expand(-1, c, -1, -1).contiguous()


def _flat(n, c, hw, gen, device, opts):
    colour = torch.rand(n, c, 1, 1, generator=gen, device=device)
    return colour.expand(-1, -1, *hw).contiguous()


def _stripes(n, c, hw, gen, device, opts):
    """Square-wave stripes (half the samples) or checkerboards (the other half) of random
    frequency (2–40 cycles per image, log-uniform), angle, phase and two random colours."""
    h, w = hw
    draw = torch.rand(n, 6, generator=gen, device=device)
    colours = torch.rand(n, 2, c, generator=gen, device=device)
    freq = torch.exp(math.log(2) + draw[:, 0] * math.log(20))  # cycles per image side
    angle = draw[:, 1] * math.pi
    phase_u, phase_v = draw[:, 2] * 2 * math.pi, draw[:, 3] * 2 * math.pi
    checker = draw[:, 4] < 0.5
    ys = torch.arange(h, device=device, dtype=torch.float32)[:, None] / max(h, w)
    xs = torch.arange(w, device=device, dtype=torch.float32)[None, :] / max(h, w)
    cos, sin = torch.cos(angle)[:, None, None], torch.sin(angle)[:, None, None]
    u = xs * cos + ys * sin
    v = -xs * sin + ys * cos
    k = (2 * math.pi * freq)[:, None, None]
    wave_u = torch.sin(k * u + phase_u[:, None, None]) >= 0
    wave_v = torch.sin(k * v + phase_v[:, None, None]) >= 0
    mask = torch.where(checker[:, None, None], wave_u ^ wave_v, wave_u).float()[:, None]  # n×1×H×W
    first, second = colours[:, 0, :, None, None], colours[:, 1, :, None, None]
    return mask * first + (1 - mask) * second


def _fft_init(n, c, hw, gen, device, opts):
    from ..optvis.param import make_param

    with torch.no_grad():
        return make_param("fft", n, hw, channels=c, sd=opts.fft_sd, generator=gen, device=device)().detach()


PHOTO_BASE = 320  # photos are centre-fitted to this square once, then cropped at random
_SYNTHETIC = {"colorwheel"}  # built-ins that are not photographs


@lru_cache(maxsize=4)
def _photo_stack(device_str: str) -> torch.Tensor:
    from ..images import fit, load_image

    stack = torch.stack([fit(load_image(f"builtin:{n}"), PHOTO_BASE, "crop") for n in photo_names()])
    return stack.to(device_str)


def photo_names() -> list[str]:
    """The built-in images the photo family crops (the photographs, not the synthetic ones)."""
    from ..images import BUILTIN_PHOTOS

    return [n for n in BUILTIN_PHOTOS if n not in _SYNTHETIC]


def _photos(n, c, hw, gen, device, opts):
    """Random crops (side 40–100 % of the photo, random position, random mirror) of the built-in photos."""
    stack = _photo_stack(str(device))
    pick = torch.randint(stack.shape[0], (n,), generator=gen, device=device)
    draw = torch.rand(n, 4, generator=gen, device=device)
    scale = 0.4 + 0.6 * draw[:, 0]
    tx = (2 * draw[:, 1] - 1) * (1 - scale)
    ty = (2 * draw[:, 2] - 1) * (1 - scale)
    flip = torch.where(draw[:, 3] < 0.5, -1.0, 1.0)
    theta = torch.zeros(n, 2, 3, device=device)
    theta[:, 0, 0], theta[:, 0, 2] = scale * flip, tx
    theta[:, 1, 1], theta[:, 1, 2] = scale, ty
    grid = F.affine_grid(theta, [n, 3, *hw], align_corners=False)
    x = F.grid_sample(stack[pick], grid, mode="bilinear", padding_mode="border", align_corners=False).clamp_(0, 1)
    if c == 1:
        return x.mean(dim=1, keepdim=True)
    return x if c == 3 else x[:, :1].expand(-1, c, -1, -1).contiguous()


FAMILIES: dict[str, NoiseFamily] = {
    f.name: f
    for f in [
        NoiseFamily("uniform", "Uniform", "every pixel and channel uniform in [0, 1]", _uniform),
        NoiseFamily("gaussian", "Gaussian", "0.5 + σ·N(0, 1) per pixel and channel, clipped to [0, 1]", _gaussian),
        NoiseFamily("pink", "Pink 1/f^a",
                    "white noise shaped to amplitude ∝ 1/f^a in Fourier space, scaled to [0, 1]", _pink),
        NoiseFamily("salt_pepper", "Salt & pepper",
                    "mid-grey with a fraction of pixels set to black or white", _salt_pepper),
        NoiseFamily("flat", "Flat colour", "one random colour filling the image", _flat),
        NoiseFamily("stripes", "Stripes / checkerboards",
                    "square-wave stripes or checkerboards, random frequency, angle, colours", _stripes),
        NoiseFamily("fft", "Engine FFT init",
                    "the feature-visualisation engine's own random Fourier initialisation", _fft_init),
        NoiseFamily("photos", "Photos (control)",
                    "random crops of the built-in photos: a real-image control", _photos, control=True),
    ]
}


def check_families(names: Iterable[str] | str) -> list[str]:
    """Validate family names ("uniform,pink" or a list); unknown ones raise with suggestions."""
    import difflib

    wanted = [n.strip() for n in names.split(",")] if isinstance(names, str) else [str(n).strip() for n in names]
    wanted = [n for n in wanted if n]
    if not wanted:
        raise UserInputError(f"No noise family given; choose from {', '.join(FAMILIES)}.")
    for name in wanted:
        if name not in FAMILIES:
            close = difflib.get_close_matches(name, list(FAMILIES), n=3, cutoff=0.4)
            hint = f" Did you mean: {', '.join(close)}?" if close else ""
            raise UserInputError(f"Unknown noise family {name!r}.{hint} Known: {', '.join(FAMILIES)}.")
    return list(dict.fromkeys(wanted))


def chunk_seed(seed: int, family: str, chunk: int) -> int:
    """The generator seed of one chunk: a hash of (seed, family, chunk index), 63 bits."""
    digest = hashlib.sha256(f"{int(seed)}:{family}:{int(chunk)}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def generate_chunk(family: str, seed: int, chunk: int, channels: int, size: tuple[int, int],
                   device: torch.device, options: NoiseOptions = NoiseOptions()) -> torch.Tensor:
    """Samples ``chunk*CHUNK … chunk*CHUNK+CHUNK-1`` of a family (CHUNK×C×H×W in [0, 1], on ``device``)."""
    gen = devices.generator(device, chunk_seed(seed, family, chunk))
    return FAMILIES[family].make(CHUNK, channels, tuple(size), gen, device, options)


def noise_batches(family: str, seed: int, n: int, batch_size: int, channels: int, size: tuple[int, int],
                  device: torch.device, options: NoiseOptions = NoiseOptions(),
                  start: int = 0) -> Iterator[tuple[int, torch.Tensor]]:
    """Yield ``(first_index, batch)`` covering samples ``start … start+n-1`` in batches of ``batch_size``.

    Chunks are generated once each and sliced, so any batch size yields the very same samples.
    """
    if batch_size < 1:
        raise UserInputError("The batch size must be at least 1.")
    pending: list[torch.Tensor] = []
    pending_count = 0
    next_index = start  # first sample not yet yielded
    chunk = start // CHUNK
    offset = start - chunk * CHUNK
    end = start + n
    while next_index < end:
        while pending_count < min(batch_size, end - next_index):
            block = generate_chunk(family, seed, chunk, channels, size, device, options)[offset:]
            offset = 0
            chunk += 1
            pending.append(block)
            pending_count += block.shape[0]
        take = min(batch_size, end - next_index)
        joined = pending[0] if len(pending) == 1 else torch.cat(pending)
        yield next_index, joined[:take]
        rest = joined[take:]
        pending, pending_count = ([rest], rest.shape[0]) if rest.shape[0] else ([], 0)
        next_index += take


def samples_at(family: str, seed: int, indices: Sequence[int], channels: int, size: tuple[int, int],
               device: torch.device, options: NoiseOptions = NoiseOptions()) -> torch.Tensor:
    """Regenerate samples by index (e.g. the gallery's most confident ones), on ``device``."""
    check_families([family])
    chunks: dict[int, torch.Tensor] = {}
    out = []
    for index in indices:
        chunk, offset = divmod(int(index), CHUNK)
        if chunk not in chunks:
            chunks[chunk] = generate_chunk(family, seed, chunk, channels, size, device, options)
        out.append(chunks[chunk][offset])
    if not out:
        return torch.zeros(0, channels, *size, device=device)
    return torch.stack(out)


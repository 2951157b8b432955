"""Fooling-noise lab: how often does random static fool a classifier, and how fast does noise
grow into a ≥ 99.6 % fooling image (Nguyen, Yosinski & Clune 2015)?

Three parts:

* **Noise families** — seeded generators of images in [0, 1] at a model's input size, made on
  the model's device. Sample ``i`` of a family depends only on ``(seed, family, i)``: samples
  come in fixed chunks of :data:`CHUNK`, each chunk drawn from its own generator seeded from
  ``(seed, family, chunk index)``, so a sweep gives the same numbers whatever its batch size,
  and any sample can be regenerated later from its index (the gallery stores indices, not images).
* **Sweeps** — stream N samples per family through one or more models in batches (constant
  memory) and count: the max-softmax histogram, fooling rates at several thresholds with exact
  Clopper–Pearson intervals, predicted-class counts, mean entropy, the most confident samples.
* **Growing** — gradient ascent from a noise sample on one class (through the project's one
  optimisation loop) until the class probability reaches 0.996, optionally inside an L∞ or L2
  ball around the start; then a transfer table on the other registry models that load offline.
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import asdict, dataclass, field, replace
from functools import lru_cache
from typing import Callable, Iterable, Iterator, Sequence

import torch
import torch.nn.functional as F

from . import devices, limits
from .capture import OUTPUT
from .errors import UserInputError
from .models.base import LoadedModel
from .optvis.param import radial_frequency
from .progress import CANCELLED, ProgressCallback, ShouldStop, stop_requested

CHUNK = 32  # samples per independently seeded chunk; never depends on the user's batch size
THRESHOLDS = (0.5, 0.9, 0.99, 0.996)
TARGET_CONFIDENCE = 0.996  # Nguyen et al.'s "≥ 99.6 % confidence"
DEFAULT_BUDGET = "linf:0.05"  # grow's budget around a pixel start (a CPPN has none): page, CLI and docs alike
GROW_STEPS, GROW_LR = 300, 0.05  # grow's step limit and learning rate (explorer/vocabulary.py: one default everywhere)
SWEEP_N, SWEEP_BATCH = 1000, 32  # a sweep's samples per family and images per forward pass
SWEEP_FAMILIES = ("uniform", "gaussian", "pink", "stripes")  # the families a sweep takes by default
HISTOGRAM_BINS = 100



# ==== noise families ===========================================================================
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
    f = radial_frequency(h, w, device)
    amplitude = torch.where(f > 0, f.clamp(min=1e-12) ** -opts.pink_exponent, torch.zeros_like(f))
    z = torch.fft.irfft2(white * amplitude, s=(h, w))
    # A per-image affine map keeps the spectrum's shape exactly: mean 0.5, peak at 0 or 1.
    peak = z.abs().amax(dim=(-2, -1), keepdim=True).clamp(min=1e-12)
    x = 0.5 + 0.5 * z / peak
    return x if fields == c else x.expand(-1, c, -1, -1).contiguous()


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
    from .optvis.param import make_param

    with torch.no_grad():
        return make_param("fft", n, hw, channels=c, sd=opts.fft_sd, generator=gen, device=device)().detach()


PHOTO_BASE = 320  # photos are centre-fitted to this square once, then cropped at random
_SYNTHETIC = {"colorwheel"}  # built-ins that are not photographs


@lru_cache(maxsize=4)
def _photo_stack(device_str: str) -> torch.Tensor:
    from .images import BUILTIN_PHOTOS, fit, load_image

    names = [n for n in BUILTIN_PHOTOS if n not in _SYNTHETIC]
    stack = torch.stack([fit(load_image(f"builtin:{n}"), PHOTO_BASE, "crop") for n in names])
    return stack.to(device_str)


def photo_names() -> list[str]:
    from .images import BUILTIN_PHOTOS

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
        NoiseFamily("pink", "Pink 1/f^a", "white noise shaped to amplitude ∝ 1/f^a in Fourier space, scaled to [0, 1]", _pink),
        NoiseFamily("salt_pepper", "Salt & pepper", "mid-grey with a fraction of pixels set to black or white", _salt_pepper),
        NoiseFamily("flat", "Flat colour", "one random colour filling the image", _flat),
        NoiseFamily("stripes", "Stripes / checkerboards", "square-wave stripes or checkerboards, random frequency, angle, colours", _stripes),
        NoiseFamily("fft", "Engine FFT init", "the feature-visualisation engine's own random Fourier initialisation", _fft_init),
        NoiseFamily("photos", "Photos (control)", "random crops of the built-in photos: a real-image control", _photos, control=True),
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
                  device: torch.device, options: NoiseOptions = NoiseOptions(), start: int = 0) -> Iterator[tuple[int, torch.Tensor]]:
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


# ==== statistics ===============================================================================
def clopper_pearson(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Exact (Clopper–Pearson) interval for a binomial proportion k/n: never narrower than it should be."""
    from scipy.stats import beta

    if n <= 0:
        return 0.0, 1.0
    if not 0 <= k <= n:
        raise ValueError(f"k={k} must lie in [0, n={n}].")
    alpha = 1.0 - confidence
    lower = 0.0 if k == 0 else float(beta.ppf(alpha / 2, k, n - k + 1))
    upper = 1.0 if k == n else float(beta.ppf(1 - alpha / 2, k + 1, n - k))
    return lower, upper


class Accumulator:
    """Running statistics of one (model, family) on the model's device: O(classes + bins) memory.

    Accumulators of disjoint sample ranges merge (:meth:`merge`, earlier range first) into the
    accumulator of their union: counts add exactly, sums add (float64), the most confident samples
    are re-ranked. Ties in confidence go to the lower sample index, so the ranking does not depend
    on how the samples were split or batched.
    """

    def __init__(self, num_classes: int, device: torch.device, thresholds: Sequence[float], gallery: int):
        self.n = 0
        self.thresholds = torch.tensor(list(thresholds), device=device)
        self.above = torch.zeros(len(thresholds), dtype=torch.long, device=device)
        self.hist = torch.zeros(HISTOGRAM_BINS, dtype=torch.long, device=device)
        self.classes = torch.zeros(num_classes, dtype=torch.long, device=device)
        self.entropy = torch.zeros((), dtype=torch.float64, device=device)
        self.confidence = torch.zeros((), dtype=torch.float64, device=device)
        self.gallery = gallery
        self.top_conf = torch.zeros(0, device=device)
        self.top_index = torch.zeros(0, dtype=torch.long, device=device)
        self.top_class = torch.zeros(0, dtype=torch.long, device=device)

    def add(self, logits: torch.Tensor, first_index: int) -> torch.Tensor:
        log_p = torch.log_softmax(logits.float(), dim=-1)
        conf, cls = log_p.max(dim=-1)
        conf = conf.exp()
        self.n += logits.shape[0]
        self.above += (conf[:, None] >= self.thresholds[None, :]).sum(0)
        bins = (conf * HISTOGRAM_BINS).long().clamp_(0, HISTOGRAM_BINS - 1)
        # index_add_, not bincount: bincount reads its largest value back to the host (a sync per batch on CUDA)
        ones = torch.ones_like(bins)
        self.hist.index_add_(0, bins, ones)
        self.classes.index_add_(0, cls, ones)
        self.entropy += -(log_p.exp() * log_p).sum(-1).double().sum()
        self.confidence += conf.double().sum()
        if self.gallery:
            index = torch.arange(first_index, first_index + logits.shape[0], device=logits.device)
            self._keep_top(conf, index, cls)
        return conf

    def _keep_top(self, conf: torch.Tensor, index: torch.Tensor, cls: torch.Tensor) -> None:
        """Keep the ``gallery`` most confident; the kept ones come first and have lower indices, so a
        stable sort breaks ties by index."""
        all_conf = torch.cat([self.top_conf, conf])
        keep = torch.sort(all_conf, descending=True, stable=True).indices[: self.gallery]
        self.top_conf = all_conf[keep]
        self.top_index = torch.cat([self.top_index, index])[keep]
        self.top_class = torch.cat([self.top_class, cls])[keep]

    def merge(self, later: "Accumulator") -> "Accumulator":
        """Fold in the statistics of a range of samples that comes after this one's; returns self."""
        self.n += later.n
        self.above += later.above.to(self.above.device)
        self.hist += later.hist.to(self.hist.device)
        self.classes += later.classes.to(self.classes.device)
        self.entropy += later.entropy.to(self.entropy.device)
        self.confidence += later.confidence.to(self.confidence.device)
        if self.gallery:
            device = self.top_conf.device
            self._keep_top(later.top_conf.to(device), later.top_index.to(device), later.top_class.to(device))
        return self

    _STATE = ("thresholds", "above", "hist", "classes", "entropy", "confidence", "top_conf", "top_index", "top_class")

    def state(self) -> dict:
        """Plain CPU tensors and numbers (what a Ray worker sends back)."""
        return {"n": self.n, "gallery": self.gallery, **{k: getattr(self, k).cpu() for k in self._STATE}}

    @classmethod
    def from_state(cls, state: dict, device: torch.device | str = "cpu") -> "Accumulator":
        acc = cls(int(state["classes"].numel()), torch.device(device), state["thresholds"].tolist(), int(state["gallery"]))
        acc.n = int(state["n"])
        for key in cls._STATE:
            setattr(acc, key, state[key].to(device))
        return acc


def accumulate(model: LoadedModel, family: str, seed: int, start: int, count: int, *, batch_size: int = 64,
               options: NoiseOptions = NoiseOptions(), thresholds: Sequence[float] = THRESHOLDS, gallery: int = 8,
               use_autocast: bool = False, acc: Accumulator | None = None,
               on_batch: Callable[[torch.Tensor, torch.Tensor], None] | None = None,
               should_stop: ShouldStop | None = None) -> Accumulator:
    """Statistics of samples ``start … start+count-1`` of a family through ``model`` (streamed in batches).

    ``on_batch(images, confidences)`` follows each batch; ``should_stop()`` is asked before each one
    (the accumulator then holds the batches done). A sweep is this over ``0 … n-1``; Ray pieces of a
    sweep are this over chunk-aligned ranges, merged afterwards."""
    acc = acc if acc is not None else Accumulator(model.num_classes, model.device, thresholds, gallery)
    for first, images in noise_batches(family, seed, count, batch_size, model.channels, tuple(model.input_size),
                                       model.device, options, start=start):
        if stop_requested(should_stop):
            break
        with torch.inference_mode():
            logits = model.activations(images, [OUTPUT], use_autocast=use_autocast)[OUTPUT]
            conf = acc.add(logits, first)
        if on_batch is not None:
            on_batch(images, conf)
    return acc


@dataclass
class FamilyResult:
    """One (model, family) row of a sweep: counts, rates with exact intervals, top classes."""

    model: str
    family: str
    n: int
    seed: int
    shape: tuple[int, int, int]  # C, H, W of the samples
    thresholds: list[float]
    fooled: list[int]  # samples with max softmax ≥ each threshold
    intervals: list[tuple[float, float]]  # 95 % Clopper–Pearson per threshold
    mean_confidence: float
    mean_entropy: float  # nats
    max_entropy: float  # log(number of classes)
    histogram: list[int]  # HISTOGRAM_BINS equal bins of the max softmax on [0, 1]
    top_classes: list[dict]  # {class, label, count, share}, most predicted first
    gallery: list[dict]  # {index, class, label, confidence}, most confident first
    control: bool = False

    @property
    def rates(self) -> list[float]:
        return [k / self.n if self.n else 0.0 for k in self.fooled]

    def row(self) -> dict:
        """A flat table row (CSV, the page's table)."""
        row = {"model": self.model, "family": self.family, "n": self.n}
        for t, k, rate, (lo, hi) in zip(self.thresholds, self.fooled, self.rates, self.intervals):
            row[f"fooled@{t:g}"] = k
            row[f"rate@{t:g}"] = round(rate, 6)
            row[f"ci_low@{t:g}"] = round(lo, 6)
            row[f"ci_high@{t:g}"] = round(hi, 6)
        row["mean_max_softmax"] = round(self.mean_confidence, 6)
        row["mean_entropy_nats"] = round(self.mean_entropy, 4)
        top = self.top_classes[0] if self.top_classes else None
        row["top_class"] = f"{top['class']} {top['label']}" if top else ""
        row["top_class_share"] = round(top["share"], 4) if top else 0.0
        return row

    def to_dict(self) -> dict:
        data = asdict(self)
        data["rates"] = self.rates
        return data


@dataclass
class SweepResult:
    rows: list[FamilyResult]
    settings: dict
    seconds: float
    images: int
    stopped: str | None = None

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0

    def table(self) -> list[dict]:
        return [r.row() for r in self.rows]

    def to_dict(self) -> dict:
        return {
            "settings": self.settings,
            "seconds": round(self.seconds, 3),
            "images": self.images,
            "images_per_second": round(self.images_per_second, 2),
            "stopped": self.stopped,
            "results": [r.to_dict() for r in self.rows],
        }


class Sweep:
    """A sweep whose partial results can be read at any time (:meth:`result`), e.g. after a cancel."""

    def __init__(self, models: Sequence[LoadedModel], families: Iterable[str] | str, n: int, *, seed: int = 0,
                 batch_size: int = SWEEP_BATCH, options: NoiseOptions = NoiseOptions(), thresholds: Sequence[float] = THRESHOLDS,
                 gallery: int = 8, use_autocast: bool = False, top_classes: int = 10):
        if not models:
            raise UserInputError("Pick at least one model to sweep.")
        limits.check("n", n, what="Samples per family")
        limits.check("batch", batch_size, hi=limits.MAX_FORWARD_PIXELS)
        for model in models:  # forward passes only, but a batch of big inputs still fills memory
            limits.check_batch_pixels(int(batch_size), *model.input_size, budget=limits.MAX_FORWARD_PIXELS,
                                      min_side=max(model.input_size),
                                      what=f"noise images for {model.name}")
        limits.check("gallery", gallery)
        limits.check("seed", seed)
        if any(not 0 < t <= 1 for t in thresholds):
            raise UserInputError("Thresholds must lie in (0, 1].")
        self.models = list(models)
        self.families = check_families(families)
        self.n, self.seed, self.batch_size = int(n), int(seed), int(batch_size)
        self.options, self.thresholds = options, [float(t) for t in thresholds]
        self.gallery, self.use_autocast, self.top_k = int(gallery), use_autocast, int(top_classes)
        self._acc: dict[tuple[int, str], Accumulator] = {}
        self.seconds = 0.0
        self.stopped: str | None = None

    @property
    def total(self) -> int:
        return self.n * len(self.families) * len(self.models)

    def run(self, callback: ProgressCallback | None = None, should_stop: ShouldStop | None = None) -> SweepResult:
        start = time.perf_counter()
        done = 0
        try:
            for m, model in enumerate(self.models):
                for family in self.families:
                    acc = Accumulator(model.num_classes, model.device, self.thresholds, self.gallery)
                    self._acc[(m, family)] = acc

                    def on_batch(images: torch.Tensor, conf: torch.Tensor) -> None:
                        nonlocal done
                        done += images.shape[0]
                        if callback is not None:
                            callback(done, self.total, images[:8], conf)

                    accumulate(model, family, self.seed, 0, self.n, batch_size=self.batch_size, options=self.options,
                               use_autocast=self.use_autocast, acc=acc, on_batch=on_batch, should_stop=should_stop)
                    if acc.n < self.n:
                        self.stopped = CANCELLED
                        return self.result()
        finally:
            self.seconds = time.perf_counter() - start
        return self.result()

    def result(self) -> SweepResult:
        """Results so far (every family started; the last may be partial)."""
        rows = []
        for (m, family), acc in self._acc.items():
            if acc.n == 0:
                continue
            model = self.models[m]
            fooled = [int(k) for k in acc.above.tolist()]
            counts = acc.classes.cpu()
            order = torch.argsort(counts, descending=True)[: self.top_k]
            top = [{"class": int(c), "label": model.label(int(c)), "count": int(counts[c]), "share": float(counts[c]) / acc.n}
                   for c in order.tolist() if counts[c] > 0]
            gallery = [{"index": int(i), "class": int(c), "label": model.label(int(c)), "confidence": float(p)}
                       for p, i, c in zip(acc.top_conf.tolist(), acc.top_index.tolist(), acc.top_class.tolist())]
            rows.append(FamilyResult(
                model=model.name, family=family, n=acc.n, seed=self.seed,
                shape=(model.channels, *tuple(model.input_size)), thresholds=list(self.thresholds), fooled=fooled,
                intervals=[clopper_pearson(k, acc.n) for k in fooled],
                mean_confidence=float(acc.confidence) / acc.n, mean_entropy=float(acc.entropy) / acc.n,
                max_entropy=math.log(model.num_classes), histogram=[int(v) for v in acc.hist.tolist()],
                top_classes=top, gallery=gallery, control=FAMILIES[family].control,
            ))
        settings = {
            "models": [m.name for m in self.models], "weights": [m.weights for m in self.models],
            "families": self.families, "n": self.n, "seed": self.seed, "batch_size": self.batch_size,
            "chunk": CHUNK, "options": self.options.to_dict(), "thresholds": self.thresholds,
            "autocast": self.use_autocast, "interval": "95% Clopper-Pearson",
        }
        images = sum(a.n for a in self._acc.values())
        return SweepResult(rows, settings, self.seconds, images, self.stopped)


def sweep(models: Sequence[LoadedModel] | LoadedModel, families: Iterable[str] | str, n: int, *,
          callback: ProgressCallback | None = None, should_stop: ShouldStop | None = None, **kwargs) -> SweepResult:
    """Stream ``n`` samples of each family through each model; see :class:`Sweep` for the options."""
    if isinstance(models, LoadedModel):
        models = [models]
    return Sweep(models, families, n, **kwargs).run(callback, should_stop)


def gallery_images(row: FamilyResult, options: NoiseOptions = NoiseOptions(),
                   device: torch.device | str = "cpu") -> torch.Tensor:
    """The gallery's samples of a sweep row, regenerated from their indices (B×C×H×W, CPU)."""
    c, h, w = row.shape
    dev = devices.choose_device(device)
    return samples_at(row.family, row.seed, [g["index"] for g in row.gallery], c, (h, w), dev, options).cpu()


# ==== growing fooling images ===================================================================
@dataclass(frozen=True)
class Budget:
    """How far the image may move from its start: ``none``, ``linf`` (max pixel change) or
    ``l2`` (Euclidean norm of the change over all pixels and channels, in [0, 1] units)."""

    kind: str = "none"
    eps: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in ("none", "linf", "l2"):
            raise UserInputError(f"Unknown budget {self.kind!r}: use none, linf:EPS or l2:EPS.")
        if self.kind != "none":
            limits.check("eps", self.eps, what=f"The {self.kind} budget size")

    def __str__(self) -> str:
        return "none" if self.kind == "none" else f"{self.kind}:{self.eps:g}"

    def project(self, image: torch.Tensor, start: torch.Tensor) -> torch.Tensor:
        """The closest image to ``image`` inside the budget around ``start`` (and inside [0, 1])."""
        if self.kind == "none":
            return image.clamp(0, 1)
        delta = image - start
        if self.kind == "linf":
            delta = delta.clamp(-self.eps, self.eps)
        else:
            norm = delta.flatten(1).norm(dim=1).clamp(min=1e-12).view(-1, *([1] * (delta.ndim - 1)))
            delta = delta * torch.clamp(self.eps / norm, max=1.0)
        # Clipping to [0, 1] afterwards only moves pixels towards the start: still inside the ball.
        return (start + delta).clamp(0, 1)


def parse_budget(text: str | None) -> Budget:
    """"linf:0.05", "l2:3", "none" (or empty) -> :class:`Budget`."""
    if text is None or str(text).strip().lower() in ("", "none"):
        return Budget()
    kind, sep, value = str(text).strip().lower().partition(":")
    kind = {"l_inf": "linf", "inf": "linf", "linfinity": "linf"}.get(kind, kind)
    if not sep or kind not in ("linf", "l2"):
        raise UserInputError(f"Cannot read the budget {text!r}: write linf:0.05, l2:3 or none.")
    try:
        eps = float(value)
    except ValueError as exc:
        raise UserInputError(f"Cannot read the budget size in {text!r}: write e.g. linf:0.05.") from exc
    return Budget(kind, eps)


def distances(image: torch.Tensor, start: torch.Tensor) -> dict[str, float]:
    """L∞, L2 and RMS distance between two images in [0, 1] (any matching shapes)."""
    delta = (image.float().cpu() - start.float().cpu()).flatten()
    return {"linf": float(delta.abs().max()) if delta.numel() else 0.0, "l2": float(delta.norm()),
            "rms": float(delta.pow(2).mean().sqrt()) if delta.numel() else 0.0}


def quantize_8bit(image: torch.Tensor) -> torch.Tensor:
    """The image as ``save_png``/``png_bytes`` store it (rounded to 1/255 steps)."""
    return (image.clamp(0, 1) * 255 + 0.5).floor() / 255


def difference_image(image: torch.Tensor, start: torch.Tensor) -> torch.Tensor:
    """The change from ``start`` to ``image`` made visible: mid-grey = none, stretched to the largest change."""
    delta = image.float().cpu() - start.float().cpu()
    peak = float(delta.abs().max())
    return (0.5 + 0.5 * delta / peak).clamp(0, 1) if peak > 0 else torch.full_like(delta, 0.5)


@dataclass
class GrowResult:
    image: torch.Tensor  # C×H×W in [0, 1], CPU: the most confident image seen (inside the budget)
    start: torch.Tensor  # C×H×W: where it started
    model: str
    target: int
    label: str
    confidence: float  # p(target) of ``image``
    confidence_8bit: float  # p(target) of ``image`` rounded to 8 bits, i.e. of the saved PNG
    start_confidence: float
    top_class: int  # argmax of ``image``
    top_label: str
    reached: bool  # confidence ≥ goal
    goal: float
    steps: int  # steps taken (the loop's)
    best_step: int  # the step whose image is returned (0: the start)
    stopped: str | None
    seconds: float
    budget: str
    param: str
    source: dict  # family, seed, index (or "image"/"cppn")
    distance: dict[str, float]
    history: list[float]  # p(target) per step
    transfer: list[dict] = field(default_factory=list)

    def summary(self) -> dict:
        data = {k: v for k, v in asdict(self).items() if k not in ("image", "start")}
        data["history"] = [round(v, 6) for v in self.history]
        return data


def _top(model: LoadedModel, image: torch.Tensor) -> tuple[int, float, torch.Tensor]:
    with torch.inference_mode():
        logits = model.activations(image[None] if image.ndim == 3 else image, [OUTPUT], use_autocast=False)[OUTPUT]
    probs = torch.softmax(logits.float(), dim=-1)[0].cpu()
    return int(probs.argmax()), float(probs.max()), probs


def grow(
    model: LoadedModel,
    target: int | None = None,
    *,
    start: torch.Tensor | None = None,
    family: str = "uniform",
    seed: int = 0,
    index: int = 0,
    options: NoiseOptions = NoiseOptions(),
    budget: Budget | str | None = None,
    param: str = "pixel",
    steps: int = GROW_STEPS,
    lr: float = GROW_LR,
    goal: float = TARGET_CONFIDENCE,
    callback: ProgressCallback | None = None,
    should_stop: ShouldStop | None = None,
) -> GrowResult:
    """Gradient ascent on log p(target) until p ≥ ``goal`` or ``steps`` run out.

    The start is ``start`` (an image in [0, 1]) or sample ``index`` of a noise family; ``target``
    None means the start's current top class. ``param="pixel"`` optimises pixels (sigmoid
    logits, no colour decorrelation) and projects onto ``budget`` after every step (None: :data:`DEFAULT_BUDGET`,
    the one default of the page, the CLI and the docs);
    ``param="cppn"`` grows a CPPN from its own random init (Nguyen et al.'s indirect encoding:
    a budget does not apply). It stops at the first image whose 8-bit PNG also reaches ``goal`` and
    returns the most confident such image; otherwise the most confident image evaluated.
    """
    from .optvis import objectives
    from .optvis.optimise import ImageHandling, Progress, Schedule, Selection, optimise
    from .optvis.param import make_param
    from .optvis.render import model_score

    if budget is None:
        budget = Budget() if param == "cppn" else parse_budget(DEFAULT_BUDGET)
    budget = parse_budget(budget) if isinstance(budget, str) else budget
    if param not in ("pixel", "cppn"):
        raise UserInputError(f"Fooling images grow in the 'pixel' or 'cppn' parameterisation, not {param!r}.")
    if param == "cppn" and budget.kind != "none":
        raise UserInputError("A CPPN image is not a small change of a noise sample: use --budget none with --param cppn.")
    limits.check("steps", steps, lo=1)
    limits.check("lr", lr)
    limits.check("seed", seed)
    limits.check("index", index)
    if not 0 < goal < 1:  # NaN fails this too
        raise UserInputError(f"The target confidence must lie in (0, 1), got {goal}.")
    device = model.device
    size = tuple(model.input_size)
    gen = devices.generator(device, seed)

    if param == "cppn":
        image_param = make_param("cppn", 1, size, channels=model.channels, generator=gen, device=device)
        with torch.no_grad():
            start_image = image_param()[0].detach()
        source = {"kind": "cppn", "seed": int(seed)}
    else:
        if start is not None:
            start_image = start.to(device, torch.float32)
            start_image = start_image[0] if start_image.ndim == 4 else start_image
            if tuple(start_image.shape[-2:]) != size:
                from .images import fit

                start_image = fit(start_image, size, "crop")
            source = {"kind": "image"}
        else:
            if index < 0:
                raise UserInputError("The sample index must be ≥ 0.")
            start_image = samples_at(family, seed, [index], model.channels, size, device, options)[0]
            source = {"kind": "noise", "family": family, "seed": int(seed), "index": int(index), "options": options.to_dict()}
        image_param = make_param("pixel", 1, size, channels=start_image.shape[0], decorrelated=False, device=device)
        image_param.set_image_(start_image[None])
    start_top, _, start_probs = _top(model, start_image)
    target = start_top if target is None else int(target)
    if not 0 <= target < model.num_classes:
        raise UserInputError(f"Class {target} is out of range: {model.name} has classes 0–{model.num_classes - 1}.")

    start_batch = start_image[None]
    project = None
    if param == "pixel":
        def project(p) -> None:
            with torch.no_grad():
                p.set_image_(budget.project(p(), start_batch))

    log_p = model_score(model, objectives.class_probability(target, log=True), use_autocast=False)
    log_goal = math.log(goal)

    def score(image: torch.Tensor, transformed: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        values = log_p(image, transformed)
        return values, {"p": values.detach().exp()}

    def fools_as_saved(image: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        # An image at 0.9961 in float can fall to 0.9959 in its PNG: accept only images whose 8-bit
        # version reaches the goal too (one extra forward, only near the goal).
        ok = values >= log_goal
        if bool(ok.any()):
            saved = quantize_8bit(image)
            ok = ok & (log_p(saved, saved) >= log_goal)
        return ok

    result = optimise(image_param, score, Schedule(steps=int(steps), lr=lr),
                      handling=ImageHandling(generator=gen, project=project),
                      progress=Progress(callback=callback, should_stop=should_stop, progress_values="p"),
                      selection=Selection(accept=fools_as_saved, stop_on_accept=True))
    image = result.best_images[0].float()
    top, _, probs = _top(model, image)
    confidence = float(probs[target])
    confidence_8bit = float(_top(model, quantize_8bit(image))[2][target])
    return GrowResult(
        image=image.cpu(), start=start_image.float().cpu(), model=model.name, target=target, label=model.label(target),
        confidence=confidence, confidence_8bit=confidence_8bit, start_confidence=float(start_probs[target]), top_class=top, top_label=model.label(top),
        reached=confidence >= goal, goal=goal, steps=result.steps_done, best_step=int(result.best_steps[0]),
        stopped=result.stopped, seconds=result.seconds, budget=str(budget), param=param, source=source,
        distance=distances(image, start_image), history=[float(v) for v in result.metrics["p"][:, 0]],
    )


# ==== transfer =================================================================================
def transfer_table(image: torch.Tensor, target: int, models: Iterable[LoadedModel],
                   skipped: Iterable[dict] = ()) -> list[dict]:
    """How each model sees a fooling image, shown at the model's own input size: p(target), its top class,
    whether it is fooled too."""
    rows = []
    for model in models:
        top, top_p, probs = _top(model, model.at_input_size(image.to(model.device)[None] if image.ndim == 3
                                                            else image.to(model.device)))
        rows.append({"model": model.name, "weights": model.weights, "status": "ok",
                     "p_target": float(probs[target]) if target < probs.numel() else float("nan"),
                     "top_class": top, "top_label": model.label(top), "top_p": top_p, "fooled": top == target})
    rows.extend(dict(row) for row in skipped)
    return rows


@lru_cache(maxsize=8)
def _offline_candidates(source: str, device_str: str) -> tuple[tuple[LoadedModel, ...], tuple[tuple[tuple[str, str], ...], ...]]:
    from .models import available_models, load_model
    from .models.registry import get_spec

    try:
        family = get_spec(source).family
    except UserInputError:
        return (), ()
    loaded, skipped = [], []
    for spec in available_models():
        if spec.name == source or spec.family != family:
            continue
        if spec.pretrained_available is not None and not spec.pretrained_available():  # timm: random otherwise
            skipped.append((("model", spec.name), ("weights", "pretrained"),
                            ("status", "unavailable: pretrained weights are not in the local cache")))
            continue
        try:
            loaded.append(load_model(spec.name, "pretrained", device=device_str))
        except Exception as exc:  # missing weights, missing optional package: say why
            reason = str(exc).split("\n")[0][:400]
            skipped.append((("model", spec.name), ("weights", "pretrained"), ("status", f"unavailable: {reason}")))
    return tuple(loaded), tuple(skipped)


def transfer_models(source: LoadedModel) -> tuple[list[LoadedModel], list[dict]]:
    """Registry models of the source's family whose *pretrained* weights load offline here
    (random-init architectures would say nothing about transfer), plus a row per model skipped
    and why. Cached per process: failed loads are not retried."""
    loaded, skipped = _offline_candidates(source.name, str(source.device))
    return list(loaded), [dict(row) for row in skipped]


def with_transfer(result: GrowResult, model: LoadedModel, others: Sequence[LoadedModel] | None = None) -> GrowResult:
    """The result with its transfer table: the source model first, then ``others`` (default: every
    registry model of the same family that loads offline)."""
    skipped: list[dict] = []
    if others is None:
        others, skipped = transfer_models(model)
    table = transfer_table(result.image, result.target, [model, *others], skipped)
    return replace(result, transfer=table)

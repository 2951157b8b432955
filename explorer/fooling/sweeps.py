"""Sweeps: stream N samples per noise family through one or more models in batches (constant memory) and
count the max-softmax histogram, fooling rates at several thresholds with exact Clopper–Pearson intervals,
predicted-class counts, mean entropy and the most confident samples.

An :class:`Accumulator` holds one (model, family)'s running statistics; accumulators of disjoint sample
ranges merge, which is how :mod:`explorer.scale` splits a sweep over Ray tasks (:func:`accumulate` on a
piece, :meth:`Accumulator.state` / :meth:`Accumulator.from_state` across processes, :func:`merge_in_order`,
:meth:`Sweep.set_accumulator`).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Callable, Iterable, Sequence

import torch

from .. import devices, limits
from ..capture import OUTPUT
from ..errors import UserInputError
from ..models.base import LoadedModel
from ..progress import CANCELLED, ProgressCallback, ShouldStop, stop_requested
from ..stats import clopper_pearson
from .noise import CHUNK, FAMILIES, NoiseOptions, check_families, noise_batches, samples_at

THRESHOLDS = (0.5, 0.9, 0.99, 0.996)
SWEEP_N, SWEEP_BATCH = 1000, 32  # a sweep's samples per family and images per forward pass
SWEEP_FAMILIES = ("uniform", "gaussian", "pink", "stripes")  # the families a sweep takes by default
HISTOGRAM_BINS = 100


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
        acc = cls(int(state["classes"].numel()), torch.device(device),
                  state["thresholds"].tolist(), int(state["gallery"]))
        acc.n = int(state["n"])
        for key in cls._STATE:
            setattr(acc, key, state[key].to(device))
        return acc


def merge_in_order(pieces: Sequence[Accumulator]) -> Accumulator:
    """One accumulator for consecutive sample ranges given earliest first (folded into the first)."""
    if not pieces:
        raise ValueError("No accumulator to merge.")
    merged = pieces[0]
    for later in pieces[1:]:
        merged = merged.merge(later)
    return merged


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
                 batch_size: int = SWEEP_BATCH, options: NoiseOptions = NoiseOptions(),
                 thresholds: Sequence[float] = THRESHOLDS,
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

    def accumulator(self, model_index: int, family: str) -> Accumulator | None:
        """The statistics gathered so far for one (model, family); None before it started."""
        return self._acc.get((model_index, family))

    def set_accumulator(self, model_index: int, family: str, acc: Accumulator) -> None:
        """Take the statistics of one (model, family) gathered elsewhere (Ray pieces, merged);
        :meth:`result` lists rows in the order they were set."""
        self._acc[(model_index, family)] = acc

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
            top = [{"class": int(c), "label": model.label(int(c)), "count": int(counts[c]),
                    "share": float(counts[c]) / acc.n}
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

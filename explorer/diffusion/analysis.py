"""Reading a recorded chain: when does the classifier make up its mind, what does it think of pure noise,
how good are the samples — plus the exports (GIF frames, CSV rows, JSON summary). No Streamlit here."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..errors import UserInputError
from ..images import gif_bytes, grid
from .recorder import ChainRecord, Probe, sample_chain

STATE_NAMES = {"x_t": "x_t", "x0": "x̂0", "eps": "ε"}


def _probs(record: ChainRecord, state: str) -> torch.Tensor:
    if not record.has_probes:
        raise UserInputError("This chain was recorded without a probe classifier.")
    if state == "x_t":
        return record.probs_xt
    if state == "x0":
        return record.probs_x0
    raise UserInputError(f"Probabilities exist for x_t and x0, not {state!r}.")


def settle_steps(probs: torch.Tensor, final_class: torch.Tensor) -> torch.Tensor:
    """For steps×B×K probabilities: the first step from which the argmax is ``final_class`` at every later
    step ("becomes the argmax for good"); −1 where even the last step disagrees."""
    agree = probs.argmax(-1) == final_class.view(1, -1)  # S×B
    # the suffix of agreeing steps: flip, cumulative product, count
    suffix = torch.cumprod(agree.flip(0).int(), dim=0).sum(0)  # B: how many trailing steps agree
    first = probs.shape[0] - suffix
    return torch.where(suffix > 0, first, torch.full_like(first, -1))


@dataclass
class SampleSummary:
    index: int
    final_class: int
    final_label: str
    final_probability: float
    noise_class: int  # the classifier's verdict on x_T (pure noise)
    noise_label: str
    noise_probability: float
    settle_step_xt: int  # −1: never settles
    settle_t_xt: int | None
    settle_step_x0: int
    settle_t_x0: int | None


def summarise(record: ChainRecord) -> list[SampleSummary]:
    """Per sample: final class, the verdict on the starting noise, the settling step on x_t and on x̂0."""
    if not record.has_probes or record.final_probs is None or record.steps == 0:
        return []
    final = record.final_probs.argmax(-1)
    settle_xt = settle_steps(record.probs_xt, final)
    settle_x0 = settle_steps(record.probs_x0, final)
    noise = record.probs_xt[0]
    label = lambda i: record.labels[i] if 0 <= i < len(record.labels) else f"class {i}"  # noqa: E731
    rows = []
    for b in range(record.batch):
        sx, s0 = int(settle_xt[b]), int(settle_x0[b])
        rows.append(SampleSummary(
            index=b, final_class=int(final[b]), final_label=label(int(final[b])),
            final_probability=float(record.final_probs[b, final[b]]),
            noise_class=int(noise[b].argmax()), noise_label=label(int(noise[b].argmax())),
            noise_probability=float(noise[b].max()),
            settle_step_xt=sx, settle_t_xt=record.timesteps[sx] if sx >= 0 else None,
            settle_step_x0=s0, settle_t_x0=record.timesteps[s0] if s0 >= 0 else None,
        ))
    return rows


def top_classes(record: ChainRecord, sample: int, k: int = 3) -> list[int]:
    """The k classes that reach the highest probability anywhere along the chain (x_t or x̂0) of one sample."""
    peak = torch.maximum(record.probs_xt[:, sample].max(0).values, record.probs_x0[:, sample].max(0).values)
    return peak.topk(min(k, peak.numel())).indices.tolist()


def probability_rows(record: ChainRecord) -> list[dict]:
    """Wide CSV rows: one per (step, sample, state) with a column per class."""
    rows = []
    if not record.has_probes:
        return rows
    names = record.labels or [f"class {i}" for i in range(record.probs_xt.shape[-1])]
    for state, probs in (("x_t", record.probs_xt), ("x0", record.probs_x0)):
        for s in range(probs.shape[0]):
            for b in range(probs.shape[1]):
                row = {"step": s, "t": record.timesteps[s], "sample": b, "state": state}
                row.update({name: round(float(p), 5) for name, p in zip(names, probs[s, b].tolist())})
                rows.append(row)
    return rows


def summary_json(record: ChainRecord, include_probabilities: bool = True) -> dict:
    """Settings, per-sample summaries and (optionally) the per-step probabilities, JSON-ready."""
    data = {
        "kind": record.kind, "settings": record.settings, "timesteps": record.timesteps,
        "stored_steps": record.stored_steps, "seconds": round(record.seconds, 3), "stopped": record.stopped,
        "labels": record.labels, "samples": [vars(s) for s in summarise(record)],
    }
    if record.has_probes:
        data["mean_noise_max_probability"] = round(float(record.probs_xt[0].max(-1).values.mean()), 5)
        if include_probabilities:
            data["probabilities"] = {
                "x_t": [[[round(p, 5) for p in row] for row in step] for step in record.probs_xt.tolist()],
                "x0": [[[round(p, 5) for p in row] for row in step] for step in record.probs_x0.tolist()],
            }
    if record.final_probs is not None:
        data["final_probabilities"] = [[round(p, 5) for p in row] for row in record.final_probs.tolist()]
    return data


def upscale(images: torch.Tensor, min_side: int = 64) -> torch.Tensor:
    """Nearest-neighbour enlargement of small images so screens and GIFs show crisp pixels."""
    factor = max(1, math.ceil(min_side / max(1, min(images.shape[-2:]))))
    return F.interpolate(images, scale_factor=factor, mode="nearest") if factor > 1 else images


def _side_by_side(grids: list[torch.Tensor], gap: int = 6) -> torch.Tensor:
    parts = []
    for g in grids:
        parts += [g, torch.ones(g.shape[0], g.shape[1], gap)]
    return torch.cat(parts[:-1], dim=-1)


def panel(record: ChainRecord, step: int, samples: list[int] | None = None, columns: int | None = None,
          states: tuple[str, ...] = ("x_t", "x0", "eps")) -> torch.Tensor:
    """One C×H×W picture: for each state a grid of the chosen samples, side by side (x_t | x̂0 | ε)."""
    samples = samples if samples is not None else list(range(record.batch))
    return _side_by_side([grid(upscale(record.state(step, s)[samples]), columns=columns) for s in states])


def chain_gif(record: ChainRecord, samples: list[int] | None = None, max_frames: int = 60, duration_ms: int = 80,
              states: tuple[str, ...] = ("x_t", "x0", "eps")) -> bytes:
    """The chain as an animated GIF (x_t | x̂0 | ε per frame), ≤ ``max_frames`` frames, final frame held."""
    if not record.stored_steps:
        raise UserInputError("Nothing was recorded: run the chain with recording on.")
    stored = record.stored_steps
    last_index = len(stored) - 1
    pick = sorted({stored[round(i * last_index / max(1, max_frames - 1))] for i in range(min(max_frames, len(stored)))})
    frames = [panel(record, step, samples, states=states) for step in pick]
    if record.kind == "reverse":  # end on the finished samples (no ε left to show)
        final = grid(upscale(record.final[samples] if samples is not None else record.final))
        frames.append(_side_by_side([torch.ones_like(final) if s == "eps" else final for s in states]))
    return gif_bytes(frames, duration_ms=duration_ms, last_frame_ms=1500)


# ---- sample quality -----------------------------------------------------------------------------------
QUALITY_SEED_STRIDE = 100_003  # batches per seed before two seeds' draws could overlap


@dataclass
class QualityReport:
    n: int
    mean_max_probability: float
    class_counts: list[int]
    labels: list[str]
    seconds: float
    sd_max_probability: float = 0.0  # spread of the per-sample max-probability, for the interval below
    samples: torch.Tensor | None = None  # N×C×H×W in [0, 1] (CPU): the samples the verdicts are on
    stopped: str | None = None

    @property
    def mean_ci95(self) -> tuple[float, float]:
        """Normal-approximation 95 % interval of the mean max-probability: one 500-sample draw is one
        estimate, and draws with different seeds differ by a few hundredths."""
        half = 1.96 * self.sd_max_probability / math.sqrt(max(1, self.n))
        return self.mean_max_probability - half, self.mean_max_probability + half

    @property
    def class_fractions(self) -> list[float]:
        return [c / max(1, self.n) for c in self.class_counts]

    @property
    def classes_covered(self) -> int:
        return sum(1 for c in self.class_counts if c > 0)

    @property
    def largest_fraction(self) -> float:
        return max(self.class_fractions) if self.class_counts else 0.0

    def passes(self, min_confidence: float = 0.8, max_fraction: float = 0.25) -> bool:
        return (self.mean_max_probability >= min_confidence and self.classes_covered == len(self.class_counts)
                and self.largest_fraction <= max_fraction)

    def to_dict(self) -> dict:
        return {"n": self.n, "mean_max_probability": round(self.mean_max_probability, 4),
                "mean_max_probability_ci95": [round(v, 4) for v in self.mean_ci95],
                "classes_covered": self.classes_covered, "largest_class_fraction": round(self.largest_fraction, 4),
                "class_counts": dict(zip(self.labels, self.class_counts)), "seconds": round(self.seconds, 1),
                "passes_targets": self.passes()}


def sample_quality(diffusion, probe: Probe, *, n: int = 500, steps: int = 50, batch: int = 100, seed: int = 0,
                   sampler: str = "ddim", eta: float = 0.0, engine: str = "auto", callback=None,
                   should_stop=None) -> QualityReport:
    """Sample ``n`` images (no recording) and summarise the probe's verdicts: mean max-probability and the
    predicted-class histogram (a classifier-based stand-in for FID on a tiny dataset).

    Batch i is seeded with ``seed * QUALITY_SEED_STRIDE + i``: seed 0 is batches 0, 1, …; other seeds give
    disjoint draws (seed and seed + 1 share no batch) as long as n / batch < the stride."""
    import time

    from ..progress import CANCELLED, stop_requested

    start = time.perf_counter()
    probs, samples = [], []
    done, stopped = 0, None
    for i, first in enumerate(range(0, n, batch)):
        size = min(batch, n - first)
        if stop_requested(should_stop):
            stopped = CANCELLED
            break

        def within(step, total, preview, values, done=done, size=size):  # per-step progress inside the batch
            if callback:
                callback(done + size * step / total, n, None, None)

        record = sample_chain(diffusion, sampler=sampler, steps=steps, batch=size, seed=seed * QUALITY_SEED_STRIDE + i,
                              eta=eta, record=False, engine=engine, callback=within, should_stop=should_stop)
        if record.stopped:
            stopped = record.stopped
            break
        probs.append(probe(record.final))
        samples.append(record.final)
        done += size
        if callback:
            callback(done, n, record.final, None)
    if not probs:
        return QualityReport(0, float("nan"), [0] * len(probe.labels), probe.labels, time.perf_counter() - start,
                             stopped=stopped)
    p = torch.cat(probs)
    counts = torch.bincount(p.argmax(-1), minlength=p.shape[-1]).tolist()
    top = p.max(-1).values.double()
    sd = float(top.std()) if len(top) > 1 else 0.0
    return QualityReport(done, float(top.mean()), counts, probe.labels, time.perf_counter() - start, sd,
                         torch.cat(samples), stopped)

"""Judging a diffusion model as its sources do: sample quality as a distribution (FD_cnn beside its floor,
precision/recall), the probe's confidence and class histogram, and the likelihood bound in bits/dim.

Reference images are a fixed, seeded subset of the Fashion-MNIST test split (the same images for every model
and K); the FD floor is the distance between as many training images and those test images: what a perfect
sampler of the data distribution would score with this N. Everything is measured in the probe's penultimate
features (:mod:`explorer.diffusion.quality`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from ..errors import UserInputError
from ..models.base import LoadedModel
from ..progress import ProgressCallback, ShouldStop
from .analysis import QualityReport, sample_quality
from .likelihood import BoundReport, nll_bits_per_dim
from .quality import frechet_distance, precision_recall, probe_outputs
from .recorder import Probe

REFERENCE_SEED = 0  # the test/train subsets are fixed: every model and K sees the same images


def reference_images(n: int, split: str = "test", data: str = "fashion", seed: int = REFERENCE_SEED) -> torch.Tensor:
    """``n`` images in [0, 1] from a fixed permutation of a split (the same for every model and run)."""
    from .data import load_dataset

    dataset = load_dataset(data, split)
    if n > len(dataset):
        raise UserInputError(f"Only {len(dataset)} {split} images to compare with; ask for at most that many (--n).")
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))
    return dataset.images[order[:n]]


@dataclass
class ModelEvaluation:
    model: str
    probe: str
    sampler: str
    steps: int
    engine: str
    quality: QualityReport
    fd: float | None = None
    fd_floor: float | None = None
    precision: float | None = None
    recall: float | None = None
    nll: BoundReport | None = None
    reference: str = ""
    seconds: float = 0.0
    stopped: str | None = None

    def to_dict(self, include_terms: bool = False) -> dict:
        q = self.quality
        data = {
            "model": self.model, "probe": self.probe, "sampler": self.sampler,
            "steps": self.steps, "engine": self.engine,
            "n": q.n,
            "quality": {"mean_max_probability": round(q.mean_max_probability, 4),
                        "ci95": [round(v, 4) for v in q.mean_ci95]},
            "classes": {"counts": dict(zip(q.labels, q.class_counts)), "covered": q.classes_covered,
                        "largest_fraction": round(q.largest_fraction, 4)},
            "fd": None if self.fd is None else round(self.fd, 4),
            "fd_floor": None if self.fd_floor is None else round(self.fd_floor, 4),
            "precision": None if self.precision is None else round(self.precision, 4),
            "recall": None if self.recall is None else round(self.recall, 4),
            "reference": self.reference, "seconds": round(self.seconds, 1), "stopped": self.stopped,
        }
        if self.nll is not None:
            data["nll_bits_per_dim"] = round(self.nll.mean, 4)
            data["nll_bits_per_dim_ci95"] = [round(v, 4) for v in self.nll.ci95]
            data["nll"] = self.nll.to_dict(include_terms=include_terms)
        return data


def _phase(callback: ProgressCallback | None, offset: float, weight: float, total: float) -> ProgressCallback | None:
    """A callback for one phase of the evaluation that reports into the whole job's ``total`` units."""
    if callback is None:
        return None

    def report(done, phase_total, preview=None, values=None):
        callback(offset + weight * done / max(1, phase_total), total, preview, values)

    return report


def evaluate_diffusion(diffusion, probe: LoadedModel | Probe, *, n: int = 500, steps: int = 50, sampler: str = "ddim",
                       eta: float = 0.0, engine: str = "auto", seed: int = 0, batch: int = 100, nll_images: int = 0,
                       nll_steps: int | None = None, nll_batch: int = 50, nll_variance: str | None = None,
                       data: str = "fashion", fd: bool = True,
                       callback: ProgressCallback | None = None,
                       should_stop: ShouldStop | None = None) -> ModelEvaluation:
    """Sample ``n`` images with ``steps`` steps and judge them; with ``nll_images`` also bound the likelihood of
    that many reference test images (``nll_steps`` UNet calls per image: None = all T, exact).

    ``callback`` counts work units: one per sampled image-step and one per bound UNet call per image."""
    from .recorder import chain_engine

    probe = probe if isinstance(probe, Probe) else Probe(probe)
    started = time.perf_counter()
    engine_used = chain_engine(diffusion, sampler, engine)
    nll_calls = (min(nll_steps or diffusion.num_train_timesteps, diffusion.num_train_timesteps)) * nll_images
    total = n * steps + nll_calls
    quality = sample_quality(diffusion, probe, n=n, steps=steps, batch=batch, seed=seed, sampler=sampler, eta=eta,
                             engine=engine, callback=_phase(callback, 0, n * steps, total), should_stop=should_stop)
    result = ModelEvaluation(diffusion.name, probe.model.name, sampler, steps, engine_used, quality,
                             stopped=quality.stopped)
    if fd and quality.samples is not None and quality.n > 3 and not quality.stopped:
        test = reference_images(quality.n, "test", data)
        train = reference_images(quality.n, "train", data)
        fake = probe_outputs(probe.model, quality.samples).features
        real = probe_outputs(probe.model, test).features
        floor = probe_outputs(probe.model, train).features
        result.fd = frechet_distance(fake, real)
        result.fd_floor = frechet_distance(floor, real)
        result.precision, result.recall = precision_recall(real, fake, k=3)
        result.reference = (f"{data} test: {quality.n} images (fixed permutation, seed {REFERENCE_SEED}); "
                            f"floor: {quality.n} train images")
    if nll_images and not result.stopped:
        images = reference_images(nll_images, "test", data)
        result.nll = nll_bits_per_dim(diffusion, images, batch=nll_batch, seed=seed, steps=nll_steps,
                                      variance_type=nll_variance,
                                      callback=_phase(callback, n * steps, nll_calls, total), should_stop=should_stop)
        result.stopped = result.nll.stopped
    result.seconds = time.perf_counter() - started
    return result


def quality_sweep(models: list, probe: LoadedModel | Probe, steps: list[int], *, n: int = 32, sampler: str = "ddim",
                  seed: int = 0, batch: int = 100, nll_images: int = 0, nll_steps: int | None = 50,
                  data: str = "fashion", callback: ProgressCallback | None = None,
                  should_stop: ShouldStop | None = None) -> list[ModelEvaluation]:
    """:func:`evaluate_diffusion` for every model at every K in ``steps`` (the bound, when asked, once per model
    at its first K). Stops between or inside evaluations; the finished ones are returned."""
    probe = probe if isinstance(probe, Probe) else Probe(probe)
    units = [n * k for k in steps]
    per_model = sum(units) + nll_images * min(nll_steps or 10**9, max(m.num_train_timesteps for m in models))
    total, done, results = per_model * len(models), 0.0, []
    for model in models:
        for j, k in enumerate(steps):
            images = nll_images if j == 0 else 0
            work = units[j] + images * min(nll_steps or model.num_train_timesteps, model.num_train_timesteps)
            result = evaluate_diffusion(model, probe, n=n, steps=k, sampler=sampler, seed=seed, batch=batch,
                                        nll_images=images, nll_steps=nll_steps, data=data,
                                        callback=_phase(callback, done, work, total), should_stop=should_stop)
            done += work
            results.append(result)
            if result.stopped:
                return results
    return results

"""The variational bound on −log p(x0) in bits per dimension (Ho et al. 2020 eq. 5; Improved DDPM §3).

    L = L_T + Σ_{t>1} L_{t−1} + L_0,   L_T = KL(q(x_T | x0) ‖ N(0, I)),
    L_{t−1} = KL(q(x_{t−1} | x_t, x0) ‖ p_θ(x_{t−1} | x_t)),   L_0 = −log p_θ(x0 | x_1) (discretised Gaussian)

With ``steps=None`` every term is computed at every one of the model's T training steps (one UNet call per
image and step, each x_t a fresh draw from q(x_t | x0)), as the papers do. On a CPU that is T UNet calls per
image, so ``steps=M`` estimates the sum instead, without bias: the first ``exact_first`` steps (where the
terms are large and change fast) exactly, the rest split into M − exact_first contiguous strata of nearly
equal length with one step drawn per stratum (per image batch) and weighted by the stratum's length. The
estimator's extra spread ends up in the per-image values, so the interval over images includes it.
The per-step terms L_t can be plotted (where the bits go: Improved DDPM Fig. 2). Data are scaled to
[−1, 1] on 256 levels. The maths of each term is in
:mod:`explorer.diffusion.gaussian`; this module is the loop over images and steps.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from .. import devices
from ..errors import UserInputError
from ..progress import CANCELLED, ProgressCallback, ShouldStop, stop_requested
from .gaussian import GaussianDiffusion

ModelFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (x_t, training timesteps) -> UNet output
NLL_SEED_STRIDE = 1_000_003


@dataclass
class BoundReport:
    """Per-image bounds (bits/dim) with the terms they are made of."""

    bits_per_dim: torch.Tensor  # N: the whole bound per image
    terms: torch.Tensor  # N×K: L_i per image and step (i = 0: the decoder term), bits/dim; NaN where not drawn
    prior: torch.Tensor  # N: L_T
    timesteps: list[int]  # training timestep of each step i
    variance_type: str
    seconds: float = 0.0
    stopped: str | None = None
    settings: dict = field(default_factory=dict)

    @property
    def n(self) -> int:
        return int(self.bits_per_dim.numel())

    @property
    def mean(self) -> float:
        return float(self.bits_per_dim.double().mean()) if self.n else float("nan")

    @property
    def ci95(self) -> tuple[float, float]:
        """Normal-approximation 95 % interval of the mean over images (the images are the sample)."""
        if self.n < 2:
            return (float("nan"), float("nan"))
        half = 1.96 * float(self.bits_per_dim.double().std()) / math.sqrt(self.n)
        return self.mean - half, self.mean + half

    @property
    def mean_terms(self) -> torch.Tensor:
        """K: the mean L_i over the images it was computed for (NaN for steps never drawn)."""
        return self.terms.double().nanmean(0)

    def to_dict(self, include_terms: bool = True) -> dict:
        data = {"n_images": self.n, "bits_per_dim": round(self.mean, 4), "ci95": [round(v, 4) for v in self.ci95],
                "prior_bits_per_dim": round(float(self.prior.double().mean()), 6) if self.n else None,
                "decoder_bits_per_dim": round(float(self.terms[:, 0].double().mean()), 4) if self.n else None,
                "sd_bits_per_dim": round(float(self.bits_per_dim.double().std()), 4) if self.n > 1 else None,
                "variance_type": self.variance_type, "seconds": round(self.seconds, 1), "stopped": self.stopped,
                **self.settings}
        if include_terms and self.n:
            drawn = [i for i, v in enumerate(self.mean_terms.tolist()) if not math.isnan(v)]
            data["term_timesteps"] = [self.timesteps[i] for i in drawn]
            data["terms_bits_per_dim"] = [round(float(self.mean_terms[i]), 6) for i in drawn]
            data["per_image_bits_per_dim"] = [round(float(v), 5) for v in self.bits_per_dim]
        return data


def bound_steps(num_steps: int, steps: int | None, exact_first: int, gen: torch.Generator) -> list[tuple[int, float]]:
    """(step, weight) pairs whose weighted terms sum to the bound's Σ_i L_i (exactly, or unbiased)."""
    if steps is None or steps >= num_steps:
        return [(i, 1.0) for i in range(num_steps)]
    exact = min(exact_first, num_steps)
    strata = steps - exact
    if strata < 1:
        raise UserInputError(f"An estimated bound needs more than {exact} steps (the first {exact} are exact).")
    edges = torch.linspace(exact, num_steps, strata + 1).round().long().tolist()
    pairs = [(i, 1.0) for i in range(exact)]
    for lo, hi in zip(edges[:-1], edges[1:]):
        if hi > lo:
            pairs.append((lo + int(torch.randint(0, hi - lo, (1,), generator=gen)), float(hi - lo)))
    return pairs


def variational_bound(model_fn: ModelFn, gaussian: GaussianDiffusion, x0: torch.Tensor, *, batch: int = 50,
                      seed: int = 0, steps: int | None = None, exact_first: int = 20,
                      device: torch.device | str = "cpu", callback: ProgressCallback | None = None,
                      should_stop: ShouldStop | None = None) -> BoundReport:
    """The bound of every image of ``x0`` (N×C×H×W in [−1, 1], on 256 levels) under ``gaussian``: exact over
    all steps (``steps=None``) or a stratified, unbiased estimate from ``steps`` UNet calls per image.

    Image batch b draws its steps and noise from a CPU generator seeded with ``seed · NLL_SEED_STRIDE + b``.
    A stop keeps the batches already finished. ``callback`` counts images (fractions inside a batch)."""
    if x0.ndim != 4 or x0.shape[0] == 0:
        raise UserInputError("The bound needs a batch of images N×C×H×W.")
    device = torch.device(device)
    K, N = gaussian.num_steps, x0.shape[0]
    totals, all_terms, priors = [], [], []
    start, stopped = time.perf_counter(), None
    for b, first in enumerate(range(0, N, batch)):
        x = x0[first : first + batch].to(device, torch.float32)
        gen = torch.Generator().manual_seed(int(seed) * NLL_SEED_STRIDE + b)
        pairs = bound_steps(K, steps, exact_first, gen)
        # terms stay on the device until the batch ends: no host synchronisation per UNet call
        terms = torch.full((x.shape[0], K), float("nan"), dtype=torch.float64, device=device)
        total = torch.zeros(x.shape[0], dtype=torch.float64, device=device)
        for n, (i, weight) in enumerate(reversed(pairs)):
            if stop_requested(should_stop):
                stopped = CANCELLED
                break
            noise = torch.randn(x.shape, generator=gen).to(device)
            x_t = gaussian.q_sample(x, i, noise)
            t = gaussian.model_timestep(i).expand(x.shape[0]).to(device)
            with torch.inference_mode():
                out = model_fn(x_t, t).float()
                terms[:, i] = gaussian.vlb_bits(out, x, x_t, i)
            total += weight * terms[:, i]
            if callback:
                callback(first + x.shape[0] * (n + 1) / len(pairs), N, None, None)
        if stopped:
            break
        prior = gaussian.prior_bits(x).to(torch.float64)
        all_terms.append(terms.cpu())
        priors.append(prior.cpu())
        totals.append((total + prior).cpu())
    cat = lambda parts, shape: torch.cat(parts) if parts else torch.zeros(shape, dtype=torch.float64)  # noqa: E731
    return BoundReport(cat(totals, (0,)), cat(all_terms, (0, K)), cat(priors, (0,)), gaussian.timesteps.tolist(),
                       gaussian.variance_type, time.perf_counter() - start, stopped)


def nll_bits_per_dim(diffusion, images01: torch.Tensor, *, batch: int = 50, seed: int = 0, steps: int | None = None,
                     exact_first: int = 20, variance_type: str | None = None, callback: ProgressCallback | None = None,
                     should_stop: ShouldStop | None = None) -> BoundReport:
    """The bound of a loaded diffusion model (``DiffusionModel``) on images in [0, 1] at its T training steps.

    ``variance_type`` overrides a fixed-variance model's Σ (fixed_small / fixed_large) for the bound."""
    gaussian = GaussianDiffusion.for_model(diffusion)
    if variance_type and variance_type != gaussian.variance_type:
        if diffusion.learned_variance or variance_type == "learned_range":
            raise UserInputError("Only a fixed-variance model's Σ can be swapped (fixed_small ↔ fixed_large).")
        gaussian = gaussian.with_variance(variance_type)
    x0 = diffusion.adapt_images(images01) * 2 - 1
    x0 = ((x0 + 1) * 127.5).round() / 127.5 - 1  # onto the 256 levels the decoder's bins assume

    def model_fn(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        with devices.fast_fp32(diffusion.device):
            return diffusion.unet(x_t, t).sample

    report = variational_bound(model_fn, gaussian, x0, batch=batch, seed=seed, steps=steps, exact_first=exact_first,
                               device=diffusion.device, callback=callback, should_stop=should_stop)
    report.settings = {"model": diffusion.name, "seed": seed, "T": gaussian.num_steps,
                       "unet_calls_per_image": min(steps or gaussian.num_steps, gaussian.num_steps),
                       "exact_first": exact_first if steps and steps < gaussian.num_steps else gaussian.num_steps}
    return report

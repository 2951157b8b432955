"""Trajectory recorder: our own sampling loop around a diffusers scheduler's ``step()``.

The DDPM/DDIM pipelines have no per-step hook, so this loop calls the UNet and ``scheduler.step`` itself
and records, for every step at timestep t: the state x_t, the predicted clean image x̂0
(``pred_original_sample``) and the predicted noise ε — and, when a probe classifier is given, its class
probabilities on x_t and on x̂0 (one classifier call for both). States are stored as uint8 over a fixed
range (28×28 grey: 3 × 784 bytes per image and step, so 1000 steps × 16 images ≈ 38 MB); long chains
on big images keep every k-th step (probabilities are kept for every step).

The same record type serves the forward (noising) process of a real image, via :func:`forward_process`.
"""

from __future__ import annotations

import math
import threading
import time
import weakref
from dataclasses import dataclass, field
from functools import cached_property
from typing import Callable, Sequence

import numpy as np
import torch

from .. import devices, limits
from ..errors import UserInputError
from ..models.base import LoadedModel
from ..progress import CANCELLED, ProgressCallback, ShouldStop, stop_requested


# Fixed quantisation ranges (model space, data in [-1, 1]): x_t and ε are ~N(0, 1) at high noise.
XT_RANGE = (-4.0, 4.0)
X0_RANGE = (-1.0, 1.0)
EPS_RANGE = (-4.0, 4.0)
DEFAULT_MEMORY_BUDGET = 256 * 2**20  # bytes of stored states before the recorder keeps every k-th step


# ---- compact state storage --------------------------------------------------------------------------
def quantise(x: torch.Tensor, value_range: tuple[float, float], *, on_device: bool = False) -> torch.Tensor:
    """Float tensor -> uint8 over ``value_range`` (values outside are clipped), on the CPU (or where ``x``
    is, with ``on_device``: the recorder moves a whole chain at once, not one step at a time)."""
    low, high = value_range
    x = x.detach().float()
    scaled = ((x if on_device else x.cpu()) - low) * (255.0 / (high - low))
    return scaled.round_().clamp_(0, 255).to(torch.uint8)


def dequantise(q: torch.Tensor, value_range: tuple[float, float]) -> torch.Tensor:
    low, high = value_range
    return q.float() * ((high - low) / 255.0) + low


def to_unit(x: torch.Tensor) -> torch.Tensor:
    """Model space [-1, 1] -> image space [0, 1] (clipped): what a classifier and a screen see."""
    return ((x.float() + 1) / 2).clamp(0, 1)


def eps_to_unit(eps: torch.Tensor) -> torch.Tensor:
    """ε (≈ N(0, 1)) -> [0, 1] for display: ±3σ maps to the ends."""
    return (eps.float() / 6 + 0.5).clamp(0, 1)


# ---- forward process ---------------------------------------------------------------------------------
def q_sample(x0: torch.Tensor, timesteps: torch.Tensor, noise: torch.Tensor,
             alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """x_t = √ᾱ_t · x0 + √(1 − ᾱ_t) · ε: a draw from q(x_t | x0) (Ho et al. 2020, eq. 4)."""
    abar = alphas_cumprod.to(x0.device, torch.float32)[timesteps.to(x0.device).long()]
    abar = abar.view(-1, *([1] * (x0.ndim - 1)))
    return abar.sqrt() * x0 + (1 - abar).sqrt() * noise


def marginal(x0: torch.Tensor, t: int, alphas_cumprod: torch.Tensor) -> tuple[torch.Tensor, float]:
    """Closed-form mean and variance of q(x_t | x0)."""
    abar = float(alphas_cumprod[t])
    return math.sqrt(abar) * x0, 1.0 - abar


# ---- records -----------------------------------------------------------------------------------------
@dataclass
class ChainRecord:
    """Everything one chain run recorded. Images are stored uint8; use the accessors for [0, 1] images."""

    kind: str  # "reverse" (sampling) or "forward" (noising a real image)
    timesteps: list[int]  # timestep of every step, in chain order
    stored_steps: list[int]  # indices into ``timesteps`` whose states are stored
    x_t: torch.Tensor  # uint8 S×B×C×H×W over XT_RANGE
    x0_pred: torch.Tensor  # uint8 over X0_RANGE (zeros when no UNet prediction exists)
    eps_pred: torch.Tensor  # uint8 over EPS_RANGE
    final: torch.Tensor  # B×C×H×W in [0, 1]: the last state (sample, or x_T of a forward run)
    probs_xt: torch.Tensor | None = None  # steps×B×K float32 (every step)
    probs_x0: torch.Tensor | None = None
    final_probs: torch.Tensor | None = None  # B×K on the final state
    labels: list[str] = field(default_factory=list)
    settings: dict = field(default_factory=dict)
    seconds: float = 0.0
    stopped: str | None = None

    @property
    def steps(self) -> int:
        return len(self.timesteps)

    @property
    def batch(self) -> int:
        return int(self.final.shape[0])

    @property
    def has_probes(self) -> bool:
        return self.probs_xt is not None

    @property
    def memory_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.x_t, self.x0_pred, self.eps_pred))

    def stored_index(self, step: int) -> int:
        """Position of chain step ``step`` in the stored states (the nearest stored step at or before it)."""
        import bisect

        return max(0, bisect.bisect_right(self.stored_steps, step) - 1)

    def state(self, step: int, which: str = "x_t") -> torch.Tensor:
        """B×C×H×W in [0, 1] for display: which = "x_t", "x0" or "eps"."""
        i = self.stored_index(step)
        if which == "x_t":
            return to_unit(dequantise(self.x_t[i], XT_RANGE))
        if which == "x0":
            return to_unit(dequantise(self.x0_pred[i], X0_RANGE))
        if which == "eps":
            return eps_to_unit(dequantise(self.eps_pred[i], EPS_RANGE))
        raise UserInputError(f"Unknown state {which!r}: use x_t, x0 or eps.")

    def final_classes(self) -> torch.Tensor | None:
        return None if self.final_probs is None else self.final_probs.argmax(-1)


# ---- the sampling loop --------------------------------------------------------------------------------
class Probe:
    """A registry classifier watching a chain: images in [0, 1] of any size/channels -> probabilities.

    ``LoadedModel.prepare`` already maps 1↔3 channels and resizes for fixed-size nets; nets that take any
    size get small images upsampled to their nominal input size (a 28 px image is too small for an
    ImageNet net's strides).
    """

    def __init__(self, model: LoadedModel):
        self.model = model

    @property
    def labels(self) -> list[str]:
        return list(self.model.labels)

    @cached_property
    def _forward(self) -> torch.nn.Module:
        return inference_copy(self.model.module)

    @torch.inference_mode()
    def on_device(self, images01: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """Probabilities (B×K, float32) left on the model's device: no host synchronisation per call."""
        x = images01
        target = tuple(self.model.input_size)
        if not self.model.fixed_input_size and min(x.shape[-2:]) < min(target):
            x = torch.nn.functional.interpolate(x.float(), size=target, mode="bilinear", align_corners=False)
        out = [torch.softmax(self._forward(self.model.prepare(x[i : i + batch_size])).float(), dim=-1)
               for i in range(0, x.shape[0], batch_size)]
        return torch.cat(out)

    def __call__(self, images01: torch.Tensor) -> torch.Tensor:
        """Probabilities (B×K, float32) on the CPU."""
        return self.on_device(images01).cpu()


_INFERENCE_COPIES: "weakref.WeakKeyDictionary[torch.nn.Module, torch.nn.Module]" = weakref.WeakKeyDictionary()
_COPIES_LOCK = threading.Lock()


def inference_copy(module: torch.nn.Module) -> torch.nn.Module:
    """A copy of an eval-mode classifier with each BatchNorm folded into the convolution before it (the same
    function to float rounding, fewer passes over memory), for callers that need only the output; made once
    per module. Modules that torch.fx cannot trace are returned as they are."""
    with _COPIES_LOCK:
        copy = _INFERENCE_COPIES.get(module)
        if copy is None:
            try:
                from torch.fx.experimental.optimization import fuse

                copy = fuse(module, inplace=False)
            except Exception:  # data-dependent control flow, custom leaf modules: the plain module is still right
                copy = module
            _INFERENCE_COPIES[module] = copy
        return copy


def auto_record_every(steps: int, batch: int, image_shape: Sequence[int], budget: int = DEFAULT_MEMORY_BUDGET) -> int:
    """Smallest stride k so the stored x_t, x̂0, ε (uint8) of every k-th step fit in ``budget`` bytes."""
    per_step = 3 * batch * int(np.prod(image_shape))
    return max(1, math.ceil(steps * per_step / budget))


def _stored(total: int, every: int) -> list[int]:
    keep = list(range(0, total, every))
    if keep[-1] != total - 1:
        keep.append(total - 1)  # always keep the last step
    return keep


ENGINES = ("auto", "diffusers", "core")


@dataclass
class _Plan:
    """How one chain steps: the timesteps shown, what the UNet is fed, and the step itself."""

    timesteps: list[int]  # training timestep of each chain step, in chain order
    init_sigma: float
    run: "Callable[[torch.Tensor, int, torch.Generator], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]"
    engine: str
    variance: str


def _diffusers_plan(diffusion, sampler: str, steps: int, schedule: str | None, eta: float) -> _Plan:
    """The diffusers DDPM/DDIM scheduler's own step (fixed-variance models; any scheduler config a folder has)."""
    scheduler = diffusion.scheduler(sampler, schedule)
    if steps > scheduler.config.num_train_timesteps:
        raise UserInputError(f"At most {scheduler.config.num_train_timesteps} steps (the model's training timesteps).")
    scheduler.set_timesteps(steps, device=diffusion.device)
    model_timesteps = diffusion.model_timesteps(scheduler)  # noise-level matched when schedules differ
    step_kwargs = {"eta": float(eta)} if sampler == "ddim" else {}

    def run(x: torch.Tensor, n: int, gen: torch.Generator):
        t = scheduler.timesteps[n]
        model_input = scheduler.scale_model_input(x, t)
        with devices.fast_fp32(diffusion.device):  # fp32 (TF32 on CUDA): bf16 autocast only adds casts to a small UNet
            eps = diffusion.unet(model_input, model_timesteps[n]).sample
        eps = eps.float()
        out = scheduler.step(eps, t, x, generator=gen, **step_kwargs)
        return out.prev_sample, out.pred_original_sample, eps

    variance = "fixed_small" if sampler == "ddpm" else "ddim"
    return _Plan([int(t) for t in scheduler.timesteps], float(scheduler.init_noise_sigma), run, "diffusers", variance)


def _core_plan(diffusion, sampler: str, steps: int, schedule: str | None, eta: float) -> _Plan:
    """The Gaussian diffusion core (explorer.diffusion.gaussian) through guidance.Denoiser, the step guidance,
    inpainting and branching use: respaced to ``steps`` evenly spaced training steps (the last always kept),
    ancestral with the model's Σ (learned when it has one) or DDIM."""
    from .guidance import Denoiser

    if schedule not in (None, diffusion.train_schedule):
        raise UserInputError("Another β schedule than the model's own needs the diffusers engine "
                             "(fixed-variance models).")
    denoiser = Denoiser(diffusion, steps)
    order = list(range(denoiser.num_steps - 1, -1, -1))
    kind = "ddim" if sampler == "ddim" else "ancestral"

    def run(x: torch.Tensor, n: int, gen: torch.Generator):
        out = denoiser.step(x, order[n], sampler=kind, eta=float(eta), generator=gen)
        return out.prev_sample, out.x0, out.eps

    variance = "ddim" if kind == "ddim" else denoiser.process.variance_type
    return _Plan([denoiser.timestep_t(i) for i in order], 1.0, run, "core", variance)


def chain_engine(diffusion, sampler: str, engine: str = "auto") -> str:
    """"auto": the diffusers schedulers for fixed-variance models with ddim/ddpm (exactly the chains of
    earlier versions), the core for learned variances and for the ancestral sampler."""
    if engine not in ENGINES:
        raise UserInputError(f"Unknown engine {engine!r}: use {', '.join(ENGINES)}.")
    if sampler not in ("ddim", "ddpm", "ancestral"):
        raise UserInputError(f"Unknown sampler {sampler!r}: use ddim, ddpm or ancestral.")
    learned = getattr(diffusion, "learned_variance", False)
    if engine == "diffusers" and (learned or sampler == "ancestral"):
        raise UserInputError(
            "Learned variances and the ancestral sampler need the core engine (--engine core or auto).")
    if engine == "auto":
        return "core" if learned or sampler == "ancestral" else "diffusers"
    return engine


def sample_chain(
    diffusion,  # DiffusionModel
    *,
    sampler: str = "ddim",
    steps: int = 50,
    batch: int = 16,
    seed: int = 0,
    eta: float = 0.0,
    schedule: str | None = None,
    probe: Probe | LoadedModel | None = None,
    record_every: int | None = None,
    record: bool = True,
    callback: ProgressCallback | None = None,
    should_stop: ShouldStop | None = None,
    preview_every: int = 0,
    engine: str = "auto",
) -> ChainRecord:
    """Run the reverse chain from x_T ~ N(0, I) and record every step.

    ``sampler`` "ddpm"/"ancestral" (stochastic) or "ddim" (``eta`` = 0: deterministic given the seed);
    ``schedule`` overrides the β schedule ("linear" / "squaredcos_cap_v2"; default: the model's own).
    ``engine`` (see :func:`chain_engine`): "diffusers" steps with the diffusers schedulers, "core" with
    :mod:`explorer.diffusion.gaussian` (respaced steps, learned Σ); "auto" picks the model's.
    Randomness comes from one CPU generator seeded with ``seed``, so runs match across devices.
    ``record=False`` keeps only the final samples (used to measure the recorder's overhead).
    """
    if steps < 1:
        raise UserInputError("Steps must be at least 1.")
    limits.check("batch", batch)  # every state of every sample is kept: bounded like a render batch
    if eta < 0:
        raise UserInputError("eta must be ≥ 0 (0: deterministic DDIM, 1: DDPM-like noise).")
    engine = chain_engine(diffusion, sampler, engine)
    plan = (_core_plan if engine == "core" else _diffusers_plan)(diffusion, sampler, int(steps), schedule, eta)
    if isinstance(probe, LoadedModel):
        probe = Probe(probe)
    device = diffusion.device
    timesteps = plan.timesteps
    gen = torch.Generator().manual_seed(int(seed))
    shape = (batch, diffusion.channels, *diffusion.sample_size)
    x = torch.randn(shape, generator=gen).to(device) * plan.init_sigma
    every = record_every or auto_record_every(len(timesteps), batch, shape[1:])
    keep = set(_stored(len(timesteps), every)) if record else set()
    xs, x0s, epss, pxt, px0 = [], [], [], [], []
    start, stopped, done = time.perf_counter(), None, 0
    with torch.inference_mode():
        for i in range(len(timesteps)):
            if stop_requested(should_stop):
                stopped = CANCELLED
                break
            prev, x0, eps = plan.run(x, i, gen)
            if record:  # everything stays on the device until the chain ends: no host sync per step
                if i in keep:
                    xs.append(quantise(x, XT_RANGE, on_device=True))
                    x0s.append(quantise(x0, X0_RANGE, on_device=True))
                    epss.append(quantise(eps, EPS_RANGE, on_device=True))
                if probe is not None:
                    probs = probe.on_device(torch.cat([to_unit(x), to_unit(x0)]))
                    pxt.append(probs[:batch])
                    px0.append(probs[batch:])
            x = prev
            done = i + 1
            if callback:
                show = preview_every and (done % preview_every == 0 or done == len(timesteps))
                preview = to_unit(x0) if show else None
                callback(done, len(timesteps), preview, None)
    final = to_unit(x).cpu()
    labels = probe.labels if probe is not None else []
    final_probs = probe(final) if probe is not None and record else None
    stored = [i for i in sorted(keep) if i < done]
    empty = torch.zeros((0, *shape), dtype=torch.uint8)
    return ChainRecord(
        kind="reverse",
        timesteps=timesteps[:done],
        stored_steps=stored,
        x_t=torch.stack(xs).cpu() if xs else empty,
        x0_pred=torch.stack(x0s).cpu() if x0s else empty,
        eps_pred=torch.stack(epss).cpu() if epss else empty,
        final=final,
        probs_xt=torch.stack(pxt).cpu() if pxt else None,
        probs_x0=torch.stack(px0).cpu() if px0 else None,
        final_probs=final_probs,
        labels=labels,
        settings={"model": diffusion.name, "sampler": sampler, "steps": steps, "n": batch, "seed": seed,
                  "eta": eta if sampler == "ddim" else None, "engine": plan.engine, "variance": plan.variance,
                  "schedule": schedule or diffusion.train_schedule,
                  "train_schedule": diffusion.train_schedule, "record_every": every,
                  "probe": probe.model.name if probe is not None else None},
        seconds=time.perf_counter() - start,
        stopped=stopped,
    )


def forward_process(
    images01: torch.Tensor,
    diffusion=None,
    *,
    steps: int = 50,
    seed: int = 0,
    schedule: str | None = None,
    alphas_cumprod: torch.Tensor | None = None,
    probe: Probe | LoadedModel | None = None,
    callback: ProgressCallback | None = None,
) -> ChainRecord:
    """Noise real images (B×C×H×W in [0, 1]) along q(x_t | x0) at ``steps`` evenly spaced timesteps.

    One ε per image is reused for every t, so the slider shows one image dissolving (each x_t is still an
    exact draw from the marginal). With a diffusion model the UNet's ε̂ and x̂0 are recorded too: how well
    does the denoiser recover the real image from each noise level? Probes see x_t and x̂0, as in sampling.
    """
    if images01.ndim != 4:
        raise UserInputError("Expected a batch of images B×C×H×W in [0, 1].")
    if diffusion is not None:
        scheduler = diffusion.scheduler("ddpm", schedule)
        alphas_cumprod = scheduler.alphas_cumprod
        total = scheduler.config.num_train_timesteps
        images01 = diffusion.adapt_images(images01)
        device = diffusion.device
    elif alphas_cumprod is not None:
        total = len(alphas_cumprod)
        device = images01.device
    else:
        raise UserInputError("forward_process needs a diffusion model or an alphas_cumprod table.")
    if isinstance(probe, LoadedModel):
        probe = Probe(probe)
    steps = max(1, min(int(steps), total))
    timesteps = np.unique(np.linspace(0, total - 1, steps).round().astype(int)).tolist()
    x0 = (images01.float() * 2 - 1).to(device)
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(int(seed))).to(device)
    xs, x0s, epss, pxt, px0 = [], [], [], [], []
    start = time.perf_counter()
    model_timesteps = diffusion.model_timesteps_for(schedule, timesteps) if diffusion is not None else None
    with torch.inference_mode():
        for i, t in enumerate(timesteps):
            tt = torch.full((x0.shape[0],), t, dtype=torch.long)
            xt = q_sample(x0, tt, noise, alphas_cumprod)
            if diffusion is not None:
                with devices.fast_fp32(device):
                    eps = diffusion.unet(xt, model_timesteps[i]).sample.float()
                abar = float(alphas_cumprod[t])
                x0_hat = ((xt - math.sqrt(1 - abar) * eps) / math.sqrt(abar)).clamp(-1, 1)
            else:
                eps, x0_hat = noise, x0
            xs.append(quantise(xt, XT_RANGE))
            x0s.append(quantise(x0_hat, X0_RANGE))
            epss.append(quantise(eps, EPS_RANGE))
            if probe is not None:
                probs = probe(torch.cat([to_unit(xt), to_unit(x0_hat)]))
                pxt.append(probs[: x0.shape[0]])
                px0.append(probs[x0.shape[0] :])
            if callback:
                callback(i + 1, len(timesteps), None, None)
    return ChainRecord(
        kind="forward",
        timesteps=timesteps,
        stored_steps=list(range(len(timesteps))),
        x_t=torch.stack(xs),
        x0_pred=torch.stack(x0s),
        eps_pred=torch.stack(epss),
        final=images01.float().cpu(),
        probs_xt=torch.stack(pxt) if pxt else None,
        probs_x0=torch.stack(px0) if px0 else None,
        final_probs=probe(images01.float()) if probe is not None else None,
        labels=probe.labels if probe is not None else [],
        settings={"model": getattr(diffusion, "name", None), "steps": len(timesteps), "seed": seed,
                  "schedule": schedule or getattr(diffusion, "train_schedule", None),
                  "probe": probe.model.name if probe is not None else None},
        seconds=time.perf_counter() - start,
    )

"""Classifier guidance (Dhariwal & Nichol 2021) on the project's Gaussian diffusion core, and the one reverse
loop that guidance, inpainting and branching share.

* Guided ancestral sampling (their Alg. 1): x_{t−1} ~ N(μ + s·Σ·∇ₓ log p_φ(y | x_t), Σ).
* Guided DDIM (their Alg. 2): ε̂' = ε̂ − s·√(1 − ᾱ_t)·∇ₓ log p_φ(y | x_t), then the DDIM step with ε̂'.

The steps themselves are :class:`explorer.diffusion.gaussian.GaussianDiffusion`'s ``ancestral_step`` and
``ddim_step`` (``mean_shift`` / ``eps_override``); this module only adds the classifier's gradient. The
classifier is anything with ``log_prob_grad(x_t, alpha_bar, classes)`` — the noise-aware
:class:`~explorer.diffusion.noisy_classifier.NoisyClassifier`, or a stand-in with a known gradient in tests.
It is fed the noise level ᾱ of the step (respaced steps keep the training ᾱ), never a timestep index.

Truncated guidance: with ``guide_until`` = T₀ > 0 the gradient is applied only at steps whose training timestep
t ≥ T₀; the steps after the cut-off (t < T₀) are the unguided sampler's, and the classifier is not called there.
A guidance interval (Kynkäänniemi et al. 2024 found guidance at the highest noise levels costs diversity and buys
little): with ``guide_from`` = T₁ the gradient is applied only at t ≤ T₁, so the guided steps are T₀ ≤ t ≤ T₁.
Classifier-free guidance (Ho & Salimans 2022) for a class-conditional model (trained with a share of null labels):
ε̃ = (1 + w)·ε(x_t, y) − w·ε(x_t, ∅) with weight w (w = 0: the conditional model alone); a :class:`Condition`
tells the model each sample's class. Classifier guidance works on a conditional model too (Dhariwal & Nichol's
"conditional + guidance"): the classifier's gradient is added to the conditional model's ε or mean.

A confidence gate: with ``stop_at`` = τ a sample gets no gradient at a step where the guide already gives its
target class p(y | x_t) ≥ τ (and gets it again if p falls back): guidance pushes only the samples that still need
it, so those already on course keep their own variety.

Randomness: x_T and every step's noise come from one CPU generator per call, seeded with ``seed``; with
s = 0 the classifier is never called and the samples are exactly the unguided sampler's.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable, Protocol

import torch

from .. import devices, limits
from ..errors import UserInputError
from ..progress import CANCELLED, ProgressCallback, ShouldStop, stop_requested
from .gaussian import GaussianDiffusion, StepOutput

SAMPLERS = ("ddim", "ancestral")
GUIDANCE = ("classifier", "free")  # what a sweep's scales are: classifier scales s, or classifier-free weights w
MAX_SCALE = 100.0


class GradientClassifier(Protocol):
    """What guidance needs of a classifier. The confidence gate (``stop_at``) also needs
    ``log_prob_and_grad(x_t, alpha_bar, classes) -> (log p(y | x_t) per image, ∇ₓ log p)``."""

    labels: list[str]

    def log_prob_grad(self, x_t: torch.Tensor, alpha_bar: torch.Tensor | float, classes: torch.Tensor) -> torch.Tensor:
        ...


@dataclass
class Guide:
    """Steer toward ``classes`` (one per image) with strength ``scale`` using ``classifier``'s gradient."""

    classifier: GradientClassifier
    classes: torch.Tensor
    scale: float
    until: int = 0  # truncated guidance: no gradient at training timesteps t < until (0: every step)
    start: int | None = None  # guidance interval: no gradient at training timesteps t > start (None: every step)
    stop_at: float | None = None  # confidence gate: no gradient for a sample whose p(y | x_t) ≥ stop_at

    def active(self) -> bool:
        return self.scale != 0.0

    def active_at(self, t: int) -> bool:
        """Whether the step at training timestep ``t`` is guided."""
        return self.active() and int(t) >= self.until and (self.start is None or int(t) <= self.start)


@dataclass
class Condition:
    """What a class-conditional model is told at every step: each sample's class, and the classifier-free
    guidance weight w: ε̃ = (1 + w)·ε(x_t, y) − w·ε(x_t, ∅). Only the ε half of a learned-variance output is
    combined; Σ stays the conditional one's."""

    classes: torch.Tensor
    free_weight: float = 0.0


class Denoiser:
    """A diffusion model (UNet) with the :class:`GaussianDiffusion` of the steps it samples with."""

    def __init__(self, model, steps: int | None = None, process: GaussianDiffusion | None = None):
        self.model = model
        full = process or GaussianDiffusion.for_model(model)
        self.train_steps = full.num_steps  # the model's training timesteps (guide_until's range)
        if steps is not None and not 1 <= int(steps) <= full.num_steps:
            raise UserInputError(f"Steps must be between 1 and {full.num_steps} (the model's timesteps), not {steps}.")
        self.process = full if steps is None or int(steps) == full.num_steps else full.respaced(int(steps))

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def num_steps(self) -> int:
        return self.process.num_steps

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.model.channels, *self.model.sample_size)

    def alpha_bar(self, i: int) -> float:
        return float(self.process.alphas_cumprod[i])

    def timestep_t(self, i: int) -> int:
        """The training timestep of kept step i (what "t" means in tables and plots)."""
        return int(self.process.timesteps[i])

    def model_output(self, x: torch.Tensor, i: int, condition: Condition | None = None) -> torch.Tensor:
        """The UNet's output at kept step i: unconditional (a conditional model's null label) without a
        ``condition``; told each sample's class with one, and with its weight w > 0 the classifier-free mix
        (one batched pass over the told and the null halves)."""
        t = self.process.model_timestep(i, self.device).expand(x.shape[0])
        unet = self.model.unet
        with torch.no_grad(), devices.fast_fp32(self.device):  # no_grad, not inference_mode: the guide differentiates x
            if condition is None:
                return unet(x, t).sample.float()
            classes = condition.classes.to(self.device)
            if not condition.free_weight:
                return unet(x, t, class_labels=classes).sample.float()
            null = torch.full_like(classes, unet.null_label)
            both = unet(torch.cat([x, x]), torch.cat([t, t]), class_labels=torch.cat([classes, null])).sample.float()
        told, free = both.chunk(2)
        c, w = x.shape[1], condition.free_weight
        eps = free[:, :c] + (1 + w) * (told[:, :c] - free[:, :c])
        return torch.cat([eps, told[:, c:]], 1)

    def step(self, x: torch.Tensor, i: int, *, sampler: str = "ddim", eta: float = 0.0,
             generator: torch.Generator | None = None, guide: Guide | None = None,
             condition: Condition | None = None) -> StepOutput:
        """One reverse step from kept step i to i − 1, guided when ``guide`` has a non-zero scale, told the class
        (and mixed with the unconditional output) by ``condition``."""
        out = self.model_output(x, i, condition)
        grad = None
        if guide is not None and guide.active_at(self.timestep_t(i)):
            if guide.stop_at is None:
                grad = guide.classifier.log_prob_grad(x, self.alpha_bar(i), guide.classes).to(x.device, x.dtype)
            else:
                log_p, grad = guide.classifier.log_prob_and_grad(x, self.alpha_bar(i), guide.classes)
                unsure = (log_p.exp() < guide.stop_at).to(x.device).view(-1, *[1] * (x.dim() - 1))
                grad = grad.to(x.device, x.dtype)
                grad = torch.where(unsure, grad, torch.zeros_like(grad))  # where, not ×: a gated NaN stays out
        if sampler == "ancestral":
            shift = None
            if grad is not None:  # Alg. 1: μ + s·Σ·∇ log p
                variance = self.process.predict(out, x, i).variance
                shift = guide.scale * variance * grad
            return self.process.ancestral_step(out, x, i, generator=generator, mean_shift=shift)
        if sampler == "ddim":
            override = None
            if grad is not None:  # Alg. 2: ε̂ − s·√(1 − ᾱ)·∇ log p
                eps, _ = self.process.split_output(out)
                override = eps - guide.scale * (1 - self.alpha_bar(i)) ** 0.5 * grad
            return self.process.ddim_step(out, x, i, eta=eta, generator=generator, eps_override=override)
        raise UserInputError(f"Unknown sampler {sampler!r}: use {' or '.join(SAMPLERS)}.")


StepHook = Callable[[torch.Tensor, int], torch.Tensor]  # (x at kept step i, i) -> x to denoise
Observer = Callable[[int, torch.Tensor, StepOutput], None]  # (i, x fed to step i, the step's output)


@dataclass
class ChainResult:
    images: torch.Tensor  # B×C×H×W in [0, 1] (CPU): the finished samples (or the states reached, if stopped)
    x: torch.Tensor  # the last state in model space (device)
    steps_done: int
    stopped: str | None
    seconds: float


def to_unit(x: torch.Tensor) -> torch.Tensor:
    """Model space [−1, 1] → [0, 1] (clipped), on the CPU."""
    return ((x.detach().float().cpu() + 1) / 2).clamp(0, 1)


def run_chain(denoiser: Denoiser, x: torch.Tensor, *, start: int | None = None, sampler: str = "ddim", eta: float = 0.0,
              generator: torch.Generator | None = None, guide: Guide | None = None,
              condition: Condition | None = None, before_step: StepHook | None = None, observe: Observer | None = None,
              callback: ProgressCallback | None = None, should_stop: ShouldStop | None = None,
              preview_every: int = 0) -> ChainResult:
    """Denoise ``x`` (the state at kept step ``start``, default the first: x_T) down through step 0.

    ``before_step(x, i)`` may rewrite the state before step i; ``observe(i, x, out)`` sees every step's input
    state and output (branching keeps states and probes them)."""
    if sampler not in SAMPLERS:
        raise UserInputError(f"Unknown sampler {sampler!r}: use {' or '.join(SAMPLERS)}.")
    first = denoiser.num_steps - 1 if start is None else int(start)
    total = first + 1
    began, stopped, done = time.perf_counter(), None, 0
    for i in range(first, -1, -1):
        if stop_requested(should_stop):
            stopped = CANCELLED
            break
        if before_step is not None:
            x = before_step(x, i)
        out = denoiser.step(x, i, sampler=sampler, eta=eta, generator=generator, guide=guide, condition=condition)
        if observe is not None:
            observe(i, x, out)
        x = out.prev_sample.detach()
        done += 1
        if callback:
            show = preview_every and (done % preview_every == 0 or done == total)
            callback(done, total, to_unit(out.x0) if show else None, None)
    return ChainResult(to_unit(x), x, done, stopped, time.perf_counter() - began)


def initial_noise(denoiser: Denoiser, batch: int, generator: torch.Generator) -> torch.Tensor:
    """x_T ~ N(0, I), drawn on the CPU from ``generator`` (the same draw on every device)."""
    return torch.randn((batch, *denoiser.shape), generator=generator).to(denoiser.device)


def check_guide_until(until: int, timesteps: int) -> int:
    """guide_until (a training timestep) must lie in [0, the model's timesteps]; 0 guides every step."""
    if isinstance(until, float) and not until.is_integer() or not 0 <= until <= timesteps:  # also refuses NaN
        raise UserInputError(f"guide_until must be a whole timestep in [0, {timesteps}] (0: guide every step), "
                             f"not {until}.")
    return int(until)


def check_guide_from(start: int | None, timesteps: int, until: int = 0) -> int | None:
    """guide_from (a training timestep, the top of the guided interval) must lie in [guide_until, the model's
    timesteps]; None guides from the first step, and so does any value at or above the model's last timestep (it
    is recorded as None, so a page run and a CLI run of the same interval have the same settings)."""
    if start is None:
        return None
    if isinstance(start, float) and not start.is_integer() or not 0 <= start <= timesteps:  # also refuses NaN
        raise UserInputError(f"guide_from must be a whole timestep in [0, {timesteps}] (leave it out to guide from "
                             f"the first step), not {start}.")
    if start < until:
        raise UserInputError(f"guide_from ({start}) is below guide_until ({until}): no step would be guided.")
    return None if start >= timesteps - 1 else int(start)


def check_stop_at(stop_at: float | None) -> float | None:
    """The confidence gate τ must lie in (0, 1]; None or 1 gates nothing (recorded as None)."""
    if stop_at is None:
        return None
    value = float(stop_at)
    if not 0.0 < value <= 1.0:  # also refuses NaN
        raise UserInputError(f"The confidence at which guidance stops must lie in (0, 1], not {stop_at}.")
    return None if value == 1.0 else value


def check_scale(scale: float, what: str = "guidance scale") -> float:
    scale = float(scale)
    if not (0.0 <= scale <= MAX_SCALE):  # also refuses NaN
        raise UserInputError(f"The {what} must lie in [0, {MAX_SCALE:g}], not {scale}.")
    return scale


def check_free_guidance(denoiser: Denoiser, free_weight: float, told: bool = True) -> float:
    """A classifier-free weight needs a class-conditional model that is told the class."""
    free_weight = check_scale(free_weight, "classifier-free guidance weight")
    if free_weight and not denoiser.model.num_classes:
        raise UserInputError(f"Classifier-free guidance needs a class-conditional model; {denoiser.model.name} is "
                             "unconditional (train one with `diffusion train --classes N`).")
    if free_weight and not told:
        raise UserInputError("Classifier-free guidance mixes the told and the unconditional outputs: "
                             "it needs the model to be told the class.")
    return free_weight


def check_guidance(guidance: str) -> str:
    if guidance not in GUIDANCE:
        raise UserInputError(f"Unknown guidance {guidance!r}: use {' or '.join(GUIDANCE)} "
                             "(classifier: the scales are s; free: classifier-free weights w).")
    return guidance


@dataclass
class GuidedSamples:
    images: torch.Tensor  # B×C×H×W in [0, 1]
    classes: list[int]  # the target class of each sample
    scale: float
    settings: dict
    seconds: float
    stopped: str | None = None


def guided_samples(denoiser: Denoiser, classifier: GradientClassifier | None, classes: list[int] | torch.Tensor, *,
                   scale: float, sampler: str = "ddim", eta: float = 0.0, seed: int = 0, guide_until: int = 0,
                   guide_from: int | None = None, stop_at: float | None = None, free_weight: float = 0.0,
                   told: bool = True, callback: ProgressCallback | None = None,
                   should_stop: ShouldStop | None = None, preview_every: int = 0) -> GuidedSamples:
    """One batch of samples, image b guided toward ``classes[b]`` with scale ``scale`` (s = 0: unguided),
    only at training timesteps ``guide_until`` ≤ t ≤ ``guide_from`` (defaults: every step) and, with ``stop_at``,
    only while the guide's p(y | x_t) for the sample is below it. A class-conditional model is told
    ``classes[b]`` (``told=False``: its unconditional mode) with classifier-free weight ``free_weight``."""
    scale = check_scale(scale)
    target = torch.as_tensor(classes, dtype=torch.long).reshape(-1)
    limits.check("batch", int(target.numel()))
    if scale and classifier is None:
        raise UserInputError("Guidance with a scale above 0 needs a noise-aware classifier.")
    stop_at = check_stop_at(stop_at)
    if scale and stop_at is not None and not hasattr(classifier, "log_prob_and_grad"):
        raise UserInputError("The confidence gate needs a classifier that reports p(y | x_t) with its gradient "
                             "(log_prob_and_grad); this one gives only the gradient.")
    if target.numel() and int(target.min()) < 0:
        raise UserInputError(f"Class {int(target.min())} is out of range: classes are numbered from 0.")
    if (classifier is not None and len(getattr(classifier, "labels", []))
            and int(target.max()) >= len(classifier.labels)):
        raise UserInputError(f"Class {int(target.max())} is out of range: "
                             f"the classifier has {len(classifier.labels)} classes.")
    conditional = denoiser.model.num_classes > 0
    free_weight = check_free_guidance(denoiser, free_weight, told)
    if conditional and told and target.numel() and int(target.max()) >= denoiser.model.num_classes:
        raise UserInputError(f"Class {int(target.max())} is out of range: "
                             f"{denoiser.model.name} was trained on {denoiser.model.num_classes} classes.")
    guide_until = check_guide_until(guide_until, denoiser.train_steps)
    guide_from = check_guide_from(guide_from, denoiser.train_steps, guide_until)
    gen = torch.Generator().manual_seed(int(seed))
    x = initial_noise(denoiser, int(target.numel()), gen)
    guide = Guide(classifier, target.to(denoiser.device), scale, guide_until, guide_from, stop_at) \
        if classifier is not None else None
    condition = Condition(target, free_weight) if conditional and told else None
    result = run_chain(denoiser, x, sampler=sampler, eta=eta, generator=gen, guide=guide, condition=condition,
                       callback=callback, should_stop=should_stop, preview_every=preview_every)
    settings = {"model": denoiser.model.name, "sampler": sampler, "steps": denoiser.num_steps, "eta": eta,
                "seed": int(seed), "scale": scale, "guide_until": guide_until, "guide_from": guide_from,
                "stop_at_confidence": stop_at,
                "variance_type": denoiser.process.variance_type}
    if conditional:
        settings |= {"told_class": bool(told), "free_weight": free_weight}
    return GuidedSamples(result.images, target.tolist(), scale, settings, result.seconds, result.stopped)


# ---- the scale sweep, judged by the clean classifier ------------------------------------------------------
DEFAULT_SCALES = (0.0, 0.5, 1.0, 2.0, 4.0, 8.0)


@dataclass
class SweepResult:
    rows: list[dict]  # one per (scale, class): the judge's rate + interval, FD_cnn, diversity
    summary: list[dict]  # one per scale: pooled rate + interval, mean FD, FD ratios to s = 0
    floor: list[dict]  # per class: real training images of the same number, judged the same way
    samples: dict[float, torch.Tensor]  # scale -> the first ``keep`` samples of every class (class-major)
    settings: dict
    seconds: float
    stopped: str | None = None
    reference: dict | None = None  # unguided_named_reference: the unguided model's own per-class FD

    def to_dict(self) -> dict:
        return {"settings": self.settings, "summary": self.summary, "rows": self.rows, "floor": self.floor,
                "reference": self.reference, "seconds": round(self.seconds, 1), "stopped": self.stopped}


def _summarise(rows: list[dict], scales: list[float]) -> list[dict]:
    from .judge import rate

    base = {r["class"]: r for r in rows if r["scale"] == scales[0]} if scales and scales[0] == 0 else {}
    out = []
    for s in scales:
        mine = [r for r in rows if r["scale"] == s]
        if not mine:
            continue
        entry = {"scale": s, "classes": len(mine)}
        entry |= rate(sum(r["hits"] for r in mine), sum(r["n"] for r in mine))
        entry["mean_rate_over_classes"] = round(sum(r["rate"] for r in mine) / len(mine), 4)
        entry["min_class_rate"] = min(r["rate"] for r in mine)
        entry["mean_diversity"] = round(sum(r["diversity"] for r in mine) / len(mine), 4)
        if all("fd" in r for r in mine):
            entry["mean_fd"] = round(sum(r["fd"] for r in mine) / len(mine), 3)
            ratios = [r["fd"] / base[r["class"]]["fd"]
                      for r in mine if r["class"] in base and base[r["class"]].get("fd")]
            if ratios:
                entry["fd_ratio_to_s0_mean"] = round(sum(ratios) / len(ratios), 3)
                entry["fd_ratio_to_s0_max"] = round(max(ratios), 3)
        out.append(entry)
    return out


MAX_REFERENCE_POOL = 10_000  # unguided samples held at once for the per-class reference FD (28 px: ~31 MB)


def guidance_sweep(denoiser: Denoiser, classifier: GradientClassifier | None, judge, *, classes: list[int],
                   scales: list[float] | tuple[float, ...] = DEFAULT_SCALES, n_per_class: int = 64,
                   sampler: str = "ddim", eta: float = 0.0, seed: int = 0, keep: int = 8, reference_pool: int = 0,
                   guide_until: int = 0, guide_from: int | None = None, stop_at: float | None = None,
                   reference: dict | None = None, guidance: str = "classifier",
                   callback: ProgressCallback | None = None, should_stop: ShouldStop | None = None) -> SweepResult:
    """For every scale and class: ``n_per_class`` samples guided toward the class, judged by ``judge`` (a
    :class:`~explorer.diffusion.judge.Judge` that never guides). Class c uses the seed ``seed·1000 + c`` at
    every scale: the scales see the same starting noise, so their differences are the guidance's. With
    ``reference_pool`` > 0 the unguided model's own per-class FD (:func:`unguided_named_reference`) is the
    yardstick of each guided set's FD (``fd_ratio_to_unguided_named_*`` in the summary). ``guide_until`` and
    ``guide_from`` bound every scale's guided steps and ``stop_at`` gates them per sample (see :class:`Guide`);
    the reference stays unguided.
    ``reference``: an earlier sweep's per-class reference (from :func:`stored_reference`), used instead of
    sampling a pool. ``guidance="free"``: the scales are classifier-free weights w of a class-conditional model
    and no classifier is called (the guide options then do nothing and are refused). A conditional model is told
    the class at every scale (its s = 0 row: the conditional model alone); its reference is its unconditional
    mode (the null label)."""
    guidance = check_guidance(guidance)
    free = guidance == "free"
    scales = [check_scale(s, "classifier-free guidance weight" if free else "guidance scale") for s in scales]
    if free:
        check_free_guidance(denoiser, max(scales, default=0.0))
        if guide_until or guide_from is not None or stop_at is not None:
            raise UserInputError("guide_until, guide_from and the confidence gate bound a classifier's gradient; "
                                 "classifier-free guidance calls no classifier.")
    elif any(scales) and classifier is None:
        raise UserInputError("Guidance with a scale above 0 needs a noise-aware classifier.")
    limits.check("batch", n_per_class, what="samples per class")
    if reference is not None:
        reference_pool = 0  # the yardstick is given: no pool is sampled
    if reference_pool:  # the pool's images are kept in memory until the judge has named them
        limits.check("n", reference_pool, what="reference pool", lo=0, hi=MAX_REFERENCE_POOL)
    guide_until = check_guide_until(guide_until, denoiser.train_steps)
    guide_from = check_guide_from(guide_from, denoiser.train_steps, guide_until)
    stop_at = check_stop_at(stop_at)
    began = time.perf_counter()
    total = len(scales) * len(classes) * denoiser.num_steps
    rows, samples, stopped, done = [], {}, None, 0
    for s in scales:
        kept = []
        for c in classes:
            if stop_requested(should_stop):
                stopped = CANCELLED
                break
            offset = done

            def report(step, _total, preview, values, offset=offset):
                if callback:
                    callback(offset + step, total, preview, values)

            batch = guided_samples(denoiser, None if free else classifier, [c] * n_per_class,
                                   scale=0.0 if free else s, free_weight=s if free else 0.0, sampler=sampler,
                                   eta=eta, seed=seed * 1000 + c, guide_until=guide_until, guide_from=guide_from,
                                   stop_at=stop_at, callback=report, should_stop=should_stop)
            done += denoiser.num_steps
            if batch.stopped:
                stopped = batch.stopped
                break
            rows.append({"scale": s} | judge.judge_class(batch.images, c))
            kept.append(batch.images[:keep])
        if kept:
            samples[s] = torch.cat(kept)
        if stopped:
            break
    floor = []
    if judge.floor_data is not None and not stopped:
        floor = [judge.floor(c, n_per_class, seed) for c in classes]
    if reference is None and reference_pool and judge.reference is not None and not stopped:
        reference = unguided_named_reference(denoiser, judge, classes=list(classes), n_per_class=n_per_class,
                                             pool=reference_pool, sampler=sampler, eta=eta, seed=seed,
                                             should_stop=should_stop)
    settings = {"model": denoiser.model.name, "guidance": guidance,
                "classifier": None if free else getattr(classifier, "name", None),
                "judge": judge.model.name, "sampler": sampler, "steps": denoiser.num_steps, "eta": eta,
                "seed": seed, "scales": scales, "classes": list(classes), "n_per_class": n_per_class,
                "reference_pool": reference_pool, "guide_until": guide_until, "guide_from": guide_from,
                "stop_at_confidence": stop_at}
    summary = summarise_sweep(rows, scales, floor, reference)
    return SweepResult(rows, summary, floor, samples, settings, time.perf_counter() - began, stopped, reference)


def summarise_sweep(rows: list[dict], scales: list[float], floor: list[dict], reference: dict | None) -> list[dict]:
    """A sweep's per-scale summary from its rows: the judge's rates, FD ratios to scale 0 and to ``reference``,
    and FD above the real-image ``floor``."""
    return with_floor(with_reference(_summarise(rows, scales), rows, reference), rows, floor, reference)


def with_reference(summary: list[dict], rows: list[dict], reference: dict | None) -> list[dict]:
    """Add, per scale, the guided sets' FD over the unguided model's own FD for the same class (mean and max
    over the classes whose reference set has all ``n_per_class`` images)."""
    if not reference:
        return summary
    base = _reference_fds(reference)
    out = []
    for entry in summary:
        ratios = [r["fd"] / base[r["class"]]
                  for r in rows if r["scale"] == entry["scale"] and r["class"] in base and "fd" in r]
        extra = {}
        if ratios:
            extra = {"fd_ratio_to_unguided_named_mean": round(sum(ratios) / len(ratios), 3),
                     "fd_ratio_to_unguided_named_max": round(max(ratios), 3), "reference_classes": len(ratios)}
        out.append(entry | extra)
    return out


def _reference_fds(reference: dict | None) -> dict[int, float]:
    """The unguided yardstick per class: its FD, for the classes whose named set has all ``n_per_class`` images."""
    if not reference:
        return {}
    return {r["class"]: r["fd"] for r in reference["rows"] if r.get("fd") and r["used"] == reference["n_per_class"]}


def with_floor(summary: list[dict], rows: list[dict], floor: list[dict], reference: dict | None) -> list[dict]:
    """Add, per scale, FD above the real-image floor: a Fréchet distance from n_per_class images is biased upward
    (64 real training images of a class score several units against its test images), and the same bias sits in
    a guided set's FD and in the unguided yardstick, pulling their ratio toward 1. ``fd_above_floor_mean`` is the
    mean over classes of (FD − the floor's FD at the same n); with a reference, ``fd_above_floor_ratio`` is that
    mean over the unguided model's own mean above the floor (a ratio of means: one class at the floor does not
    blow it up), over the classes that have all three."""
    floors = {r["class"]: r["fd"] for r in floor or [] if r.get("fd") is not None}
    if not floors:
        return summary
    base = _reference_fds(reference)
    out = []
    for entry in summary:
        mine = [r for r in rows if r["scale"] == entry["scale"] and r["class"] in floors and "fd" in r]
        extra = {}
        if mine:
            extra["fd_above_floor_mean"] = round(sum(r["fd"] - floors[r["class"]] for r in mine) / len(mine), 3)
        both = [r for r in mine if r["class"] in base]
        if both:
            guided = sum(r["fd"] - floors[r["class"]] for r in both) / len(both)
            unguided = sum(base[r["class"]] - floors[r["class"]] for r in both) / len(both)
            extra["unguided_fd_above_floor_mean"] = round(unguided, 3)
            if unguided > 0:
                extra["fd_above_floor_ratio"] = round(guided / unguided, 3)
        out.append(entry | extra)
    return out


SEED_POOL_SETTINGS = ("model", "guidance", "classifier", "judge", "sampler", "steps", "eta", "n_per_class",
                      "guide_until", "guide_from", "stop_at_confidence", "reference_pool")


YARDSTICK_SETTINGS = ("judge", "sampler", "steps", "eta", "seed", "n_per_class")


def with_yardstick(sweep: dict, other: dict) -> dict:
    """``sweep`` judged on another sweep's per-class unguided reference (e.g. a class-conditional model's sets on
    the unconditional model's own named samples, the yardstick of every classifier-guidance row): the same
    judge, sampler, steps, η, seed and set size are required; the model may differ, which is the point."""
    reference = other.get("reference") if isinstance(other, dict) else None
    if not isinstance(reference, dict) or not reference.get("rows"):
        raise UserInputError("The yardstick sweep holds no per-class unguided reference.")
    _check_reference_shape(reference)
    mine, theirs = sweep.get("settings") or {}, other.get("settings") or {}
    differ = [k for k in YARDSTICK_SETTINGS if mine.get(k) != theirs.get(k)]
    if differ:
        raise UserInputError("The yardstick was made with other settings ("
                             + ", ".join(f"{k}: {theirs.get(k)!r}, not {mine.get(k)!r}" for k in differ) + ").")
    rows = sweep.get("rows") or []
    scales = mine.get("scales") or sorted({r["scale"] for r in rows})
    summary = summarise_sweep(rows, list(scales), sweep.get("floor") or [], reference)
    return sweep | {"summary": summary, "reference": reference,
                    "reference_model": theirs.get("model")}


def pooled_over_seeds(sweeps: list[dict]) -> list[dict]:
    """One row per scale for sweeps (``SweepResult.to_dict()``) that differ only in their seed: the judge's hits
    pooled over every seed's samples (exact interval), and each seed's mean FD ratio to its own unguided
    yardstick with their mean and range (and to the same class at scale 0, where the sweep has it: a
    class-conditional model's own unguided samples). A 64-sample FD moves by tens of percent between seeds, so a
    verdict against a fixed ratio should rest on several seeds, not on one."""
    from ..stats import clopper_pearson

    if len(sweeps) < 2:
        raise UserInputError("Pooling over seeds needs at least two sweeps.")
    seeds = [(s.get("settings") or {}).get("seed") for s in sweeps]
    if len(set(seeds)) != len(seeds):
        raise UserInputError(f"Each sweep must have its own seed, not {seeds}.")

    def setting(sweep: dict, key: str):
        value = (sweep.get("settings") or {}).get(key)
        if key == "reference_pool" and not value:  # a stored yardstick (--reference-json): the pool it was made from
            value = (sweep.get("reference") or {}).get("pool")
        if key == "guidance" and value is None:  # sweeps written before classifier-free guidance
            value = "classifier"
        return value

    for sweep in sweeps[1:]:
        differ = [k for k in SEED_POOL_SETTINGS if setting(sweep, k) != setting(sweeps[0], k)]
        if differ:
            raise UserInputError("Sweeps pooled over seeds must share every other setting; these differ: "
                                 + ", ".join(differ) + ".")
    by_scale = [{e["scale"]: e for e in _with_stored_floor(s)} for s in sweeps]
    out = []
    for scale in sorted(set.intersection(*(set(b) for b in by_scale))):
        entries = [b[scale] for b in by_scale]
        hits, n = sum(int(e["hits"]) for e in entries), sum(int(e["n"]) for e in entries)
        low, high = clopper_pearson(hits, n)
        row = {"scale": scale, "seeds": seeds, "hits": hits, "n": n, "rate": round(hits / n, 4),
               "ci95": [round(low, 4), round(high, 4)]}
        ratios = [e.get("fd_ratio_to_unguided_named_mean") for e in entries]
        if all(r is not None for r in ratios):
            row |= {"fd_ratio_per_seed": ratios, "fd_ratio_mean": round(sum(ratios) / len(ratios), 3),
                    "fd_ratio_min": min(ratios), "fd_ratio_max": max(ratios)}
        to_s0 = [e.get("fd_ratio_to_s0_mean") for e in entries]
        if scale and all(r is not None for r in to_s0):
            row |= {"fd_ratio_to_s0_per_seed": to_s0, "fd_ratio_to_s0_mean": round(sum(to_s0) / len(to_s0), 3)}
        above = [e.get("fd_above_floor_ratio") for e in entries]
        if all(r is not None for r in above):
            row |= {"fd_above_floor_ratio_per_seed": above,
                    "fd_above_floor_ratio_mean": round(sum(above) / len(above), 3)}
        out.append(row)
    return out


def _with_stored_floor(sweep: dict) -> list[dict]:
    """A stored sweep's summary with its FD-above-floor figures (re-derived from its rows, floor and reference,
    so sweeps written before they existed get them too; a file whose parts do not fit gets none)."""
    summary = sweep.get("summary") or []
    try:
        reference = sweep.get("reference")
        if reference:
            _check_reference_shape(reference)
        return with_floor(summary, sweep.get("rows") or [], sweep.get("floor") or [], reference)
    except (KeyError, TypeError, ValueError, UserInputError):
        return summary


REFERENCE_SETTINGS = ("model", "judge", "sampler", "steps", "eta", "seed", "n_per_class")


def _check_reference_shape(reference: dict) -> None:
    """A stored reference is read from a user's file: its rows must be what :func:`with_reference` reads."""
    def whole(v) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    rows = reference.get("rows")
    ok = whole(reference.get("n_per_class")) and isinstance(rows, list) and all(
        isinstance(r, dict) and whole(r.get("class")) and whole(r.get("used"))
        and (r.get("fd") is None or (isinstance(r["fd"], (int, float)) and math.isfinite(r["fd"]) and r["fd"] >= 0))
        for r in rows)
    if not ok:
        raise UserInputError("That sweep's reference is damaged: it needs n_per_class and rows with a class, "
                             "the samples used and a finite FD.")


def stored_reference(stored: dict, settings: dict) -> dict:
    """The per-class unguided reference of an earlier sweep (its ``to_dict()``), checked to be made with the same
    ``REFERENCE_SETTINGS`` as ``settings``. The reference never calls the guide, so a sweep with another guide,
    ``guide_until`` or ``guide_from`` is judged on the same FD yardstick without sampling the pool again."""
    reference = stored.get("reference") if isinstance(stored, dict) else None
    if not isinstance(reference, dict) or not reference.get("rows"):
        raise UserInputError("That sweep holds no per-class unguided reference: use one run with --reference-pool > 0.")
    _check_reference_shape(reference)
    earlier = stored.get("settings") or {}
    if not isinstance(earlier, dict):
        raise UserInputError("That sweep's settings are damaged: they are not a mapping.")
    differ = [key for key in REFERENCE_SETTINGS if earlier.get(key) != settings.get(key)]
    if differ:
        raise UserInputError("That sweep's reference was made with other settings ("
                             + ", ".join(f"{k}: {earlier.get(k)!r}, not {settings.get(k)!r}" for k in differ) + ").")
    return reference


def unguided_named_reference(denoiser: Denoiser, judge, *, classes: list[int], n_per_class: int, pool: int = 400,
                             sampler: str = "ddim", eta: float = 0.0, seed: int = 0, batch: int = 100,
                             callback: ProgressCallback | None = None, should_stop: ShouldStop | None = None) -> dict:
    """The unguided model's own per-class realism: ``pool`` unguided samples, and for each class the first
    ``n_per_class`` the judge names as that class, judged like a guided set (FD_cnn to the class's test
    images, diversity) — the yardstick a guided set of the same size is compared with. Seeds are
    ``seed·1000 + 500 + b`` per batch b: disjoint from the sweep's ``seed·1000 + c``. A class-conditional model
    samples its unconditional mode (the null label)."""
    images, done, stopped = [], 0, None
    total = -(-pool // batch) * denoiser.num_steps
    for b, start in enumerate(range(0, pool, batch)):
        offset = b * denoiser.num_steps

        def report(step, _total, preview, values, offset=offset):
            if callback:
                callback(offset + step, total, preview, values)

        out = guided_samples(denoiser, None, [0] * min(batch, pool - start), scale=0.0, sampler=sampler, eta=eta,
                             seed=seed * 1000 + 500 + b, told=False, callback=report, should_stop=should_stop)
        if out.stopped:
            stopped = out.stopped
            break
        images.append(out.images)
        done += out.images.shape[0]
    rows = []
    if images:
        pooled = torch.cat(images)
        named = judge.verdicts(pooled).classes
        for c in classes:
            mine = pooled[named == c][:n_per_class]
            row = {"class": c, "label": judge.labels[c], "named": int((named == c).sum()), "used": int(mine.shape[0])}
            if mine.shape[0] >= 2:
                full = judge.judge_class(mine, c)
                row |= {"fd": full.get("fd"), "diversity": full["diversity"]}
            rows.append(row)
    return {"pool": done, "n_per_class": n_per_class, "rows": rows, "stopped": stopped,
            "class_shares": [round(r["named"] / max(1, done), 4) for r in rows]}

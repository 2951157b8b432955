"""What a layer still knows about a photo, and what it sees in it.

* :func:`invert` — Mahendran & Vedaldi (2015): find an image x whose activations match the
  photo's, minimising ‖Φ(x) − Φ0‖² / ‖Φ0‖² + λ_α·‖x‖_α^α + λ_TV·TV^β. Several layers run as one
  batch: image b reconstructs the photo from layer b, all from one forward pass per step.
* :func:`dream` — DeepDream on a photo: gradient ascent on a layer's (or a channel's) energy,
  octave by octave, carrying the added detail up to each finer scale.
* :func:`caricature` — Lucid-style: from noise, maximise the dot product between the image's
  and the photo's activations, weighted by their cosine similarity (floored), which exaggerates
  what the layer picks out of the photo.

All three run on the one loop (:func:`explorer.optvis.optimise.optimise`) with the one capture
mechanism (``LoadedModel.activations``); they differ only in the score function.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from . import devices, limits
from .capture import OUTPUT
from .errors import UserInputError
from .images import ImageSource, fit, grid, load_image
from .models.base import LoadedModel
from .optvis import objectives, priors
from .optvis.objectives import Context
from .optvis.optimise import ImageHandling, OptimisationResult, Progress, Schedule, Selection, optimise
from .optvis.param import PARAMETERISATIONS, gaussian_blur, make_param
from .optvis.render import model_score
from .optvis.transformer import unit_objective
from .optvis.transforms import TRANSFORM_SETS, Transform, compose, jitter, pad
from .progress import ProgressCallback, ShouldStop
from .settings import Settings

FIT_MODES = ("crop", "pad")
INIT_MODES = ("noise", "grey", "blur", "image")

# Prior weights by relative depth d ∈ [0, 1] (first layer 0, logits 1), interpolated geometrically:
# λ = SHALLOW · (DEEP / SHALLOW)^d. Deep layers discard detail, so the image priors have to supply
# more of it (Mahendran & Vedaldi raise λ_TV with depth the same way); the α-norm keeps deep
# reconstructions from saturating to black and white. Tuned on EfficientNet-Lite0 / astronaut at
# 224 px, see docs/inversion.md.
TV_SHALLOW, TV_DEEP = 0.5, 5.0
ALPHA_SHALLOW, ALPHA_DEEP = 0.005, 3.0


# ---- inputs --------------------------------------------------------------------------------------
def load_photo(source: ImageSource, size: int, fit_mode: str = "crop", *, name: str | None = None) -> torch.Tensor:
    """A photo (path, ``builtin:NAME``, uploaded bytes, PIL, array) as 3×size×size in [0, 1].

    Any aspect ratio (up to :data:`explorer.limits.MAX_ASPECT`): ``fit_mode`` "crop" keeps the centre,
    "pad" adds grey bars. ``name`` labels uploaded bytes in error messages.
    """
    if fit_mode not in FIT_MODES:
        raise UserInputError(f"Unknown fit mode {fit_mode!r}; choose crop or pad.")
    size = limits.check("size", size, what="Image size")  # before the file is read
    return fit(load_image(source, name=name), int(size), fit_mode)  # type: ignore[arg-type]


def check_layers(model: LoadedModel, layers: Sequence[str]) -> list[str]:
    """Known layers with a spatial or vector output; a clear error otherwise."""
    layers = [str(l).strip() for l in layers if str(l).strip()]
    if not layers:
        raise UserInputError("Give at least one layer.")
    if len(layers) > limits.MAX_LAYERS:
        raise UserInputError(f"{len(layers)} layers is too many for one batched run: use at most {limits.MAX_LAYERS}.")
    for layer in layers:
        model.check_layer(layer)
    return layers


def _model_photo(model: LoadedModel, photo: torch.Tensor) -> torch.Tensor:
    """A 3×H×W (or 1×H×W) photo on the CPU with as many channels as the model takes."""
    if photo.ndim != 3:
        raise UserInputError(f"Expected one C×H×W photo, got shape {tuple(photo.shape)}.")
    photo = photo.detach().float().cpu().clamp(0, 1)
    if photo.shape[0] != model.channels:
        photo = photo.mean(0, keepdim=True) if model.channels == 1 else photo[:1].expand(model.channels, -1, -1).contiguous()
    return photo


def relative_depth(model: LoadedModel, layer: str) -> float:
    """0 for the first layer that runs, 1 for the logits: where ``layer`` sits in the forward pass."""
    names = [info.name for info in model.layers]
    if layer not in names:
        model.check_layer(layer)
    return names.index(layer) / max(1, len(names) - 1)


def default_prior_weights(model: LoadedModel, layer: str) -> tuple[float, float]:
    """(λ_TV, λ_α) for inverting ``layer``: both grow geometrically with depth."""
    d = relative_depth(model, layer)
    return TV_SHALLOW * (TV_DEEP / TV_SHALLOW) ** d, ALPHA_SHALLOW * (ALPHA_DEEP / ALPHA_SHALLOW) ** d


def default_layers(model: LoadedModel, count: int = 4) -> list[str]:
    """``count`` main layers spread evenly from shallow to deep (spatial outputs only)."""
    preferred = {"efficientnet_lite0": ["blocks.2", "blocks.6", "blocks.10", "blocks.15"]}.get(model.name)
    if preferred and count == len(preferred):
        return list(preferred)
    spatial = [i.name for i in model.main_layers() if len(i.shape) == 3 or i.tokens]  # C×H×W, or a ViT's N×C
    if len(spatial) <= count:
        return spatial
    picks = np.linspace(0, len(spatial) - 1, count).round().astype(int)
    return [spatial[i] for i in dict.fromkeys(picks.tolist())]


# ---- metrics -------------------------------------------------------------------------------------
def psnr(image: torch.Tensor, reference: torch.Tensor) -> float:
    """Peak signal-to-noise ratio in dB for images in [0, 1]."""
    mse = float((image.float().cpu() - reference.float().cpu()).pow(2).mean())
    return float("inf") if mse == 0 else 10.0 * math.log10(1.0 / mse)


def ssim(image: torch.Tensor, reference: torch.Tensor) -> float:
    """Structural similarity (Wang et al. 2004: Gaussian window σ = 1.5) averaged over colour channels."""
    from skimage.metrics import structural_similarity

    a = image.detach().float().cpu().clamp(0, 1).permute(1, 2, 0).numpy().astype(np.float64)
    b = reference.detach().float().cpu().clamp(0, 1).permute(1, 2, 0).numpy().astype(np.float64)
    return float(structural_similarity(a, b, channel_axis=-1, data_range=1.0, gaussian_weights=True, sigma=1.5,
                                       use_sample_covariance=False))


def normalised_error(act: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """‖Φ(x) − Φ0‖² / ‖Φ0‖² (0: the layer cannot tell x from the photo)."""
    return (act.float() - target.float()).pow(2).sum() / target.float().pow(2).sum().clamp_min(1e-12)


def caricature_score(act: torch.Tensor, target: torch.Tensor, cos_floor: float, cos_power: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(dot · max(cos, floor)^power, cos): dot = ⟨Φ(x), Φ0⟩ / ‖Φ0‖², cos their cosine similarity.

    The dot product alone rewards blowing up whatever the photo activates; the cosine factor keeps
    the image pointed the same way as the photo in activation space, and the floor stops the
    gradient from vanishing while the cosine is still near zero (at the start, from noise).
    """
    a, t = act.float().flatten(), target.float().flatten()
    t_norm2 = t.pow(2).sum().clamp_min(1e-12)
    dot = (a * t).sum()
    cos = dot / (a.norm() * t_norm2.sqrt()).clamp_min(1e-12)
    return dot / t_norm2 * cos.clamp_min(cos_floor).pow(cos_power), cos


# ---- the shared engine: match a photo's activations, one layer per image ------------------------------
def _paired_transform(transform: Transform) -> Callable:
    """Apply the SAME random transform to the image and to the photo, so their feature maps stay
    aligned: the two are stacked along channels, transformed once, and split."""

    def apply(image: torch.Tensor, photo: torch.Tensor, generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
        c = image.shape[1]
        both = transform(torch.cat([image, photo.expand(image.shape[0], -1, -1, -1)], dim=1), generator)
        return both[:, :c], both[:, c:]

    return apply


def _per_image_acts(model: LoadedModel, images: torch.Tensor, layers: Sequence[str], use_autocast: bool) -> list[torch.Tensor]:
    """One forward pass for the whole batch; image b's activation at its own layer ``layers[b]``."""
    acts = model.activations(images, list(dict.fromkeys(layers)), use_autocast=use_autocast)
    return [acts[layer][b] for b, layer in enumerate(layers)]


def _match_photo(
    model: LoadedModel,
    photo: torch.Tensor,
    layers: Sequence[str],
    term: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, dict[str, torch.Tensor]]],
    *,
    shown: str,
    param_kind: str,
    decorrelate: bool,
    steps: int,
    lr: float,
    transforms: str,
    init_images: torch.Tensor | None,
    tv_weights: Sequence[float],
    alpha_weights: Sequence[float],
    tv_beta: float,
    alpha_power: float,
    seed: int | None,
    use_autocast: bool,
    callback: ProgressCallback | None,
    should_stop: ShouldStop | None,
) -> OptimisationResult:
    """Optimise one image per layer; ``term(act, target) -> (score, metrics)`` per image.

    The loop maximises Σ_b score_b − λ_TV,b·TV^β(x_b) − λ_α,b·‖x_b‖_α^α. The loop keeps each metric's
    history and scores the final, untransformed images against the photo's own activations
    (``final_metrics``); progress callbacks receive the metric named ``shown`` as ``values``.
    """
    if param_kind not in PARAMETERISATIONS or param_kind == "cppn":
        raise UserInputError(f"Unknown parameterisation {param_kind!r} here: use fft or pixel.")
    if transforms not in TRANSFORM_SETS:
        raise UserInputError(f"Unknown transform set {transforms!r}; choose from {', '.join(TRANSFORM_SETS)}.")
    if steps < 1:
        raise UserInputError("Steps must be at least 1.")
    device = model.device
    batch, size = len(layers), tuple(photo.shape[-2:])
    limits.check_batch_pixels(batch, *size, what="layers")  # one image per layer, optimised together
    gen = devices.generator(device, seed)
    param = make_param(param_kind, batch, size, channels=photo.shape[0], decorrelated=decorrelate, generator=gen, device=device)
    if init_images is not None:
        param.set_image_(init_images.to(device))
    photo_batch = photo.to(device)[None]
    transform = TRANSFORM_SETS[transforms](size[0])
    paired = _paired_transform(transform) if transform is not None else None
    with torch.no_grad():
        fixed_targets = _per_image_acts(model, photo_batch.expand(batch, -1, -1, -1), layers, use_autocast=False)
    tv_w = torch.tensor(list(tv_weights), dtype=torch.float32, device=device)
    alpha_w = torch.tensor(list(alpha_weights), dtype=torch.float32, device=device)
    alpha_prior = priors.alpha_norm(alpha_power)

    def compare(acts: Sequence[torch.Tensor], targets: Sequence[torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        pairs = [term(a, t) for a, t in zip(acts, targets)]
        values = torch.stack([p[0] for p in pairs])
        metrics = {name: torch.stack([p[1][name] for p in pairs]).detach().float() for name in pairs[0][1]}
        return values, metrics

    def score(image: torch.Tensor, _untransformed_view: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if paired is not None:
            seen, photo_seen = paired(image, photo_batch, gen)
            with torch.no_grad():
                targets = _per_image_acts(model, photo_seen, layers, use_autocast)
        else:
            seen, targets = image, fixed_targets
        values, metrics = compare(_per_image_acts(model, seen, layers, use_autocast), targets)
        penalty = tv_w * priors.tv_value(image, tv_beta) + alpha_w * alpha_prior(Context(acts={}, image=image))
        return values - penalty, metrics

    def final_score(image: torch.Tensor, _same: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return compare(_per_image_acts(model, image, layers, use_autocast=False), fixed_targets)

    # transforms are applied inside score (paired with the photo), so the loop gets none
    return optimise(param, score, Schedule(steps=steps, lr=lr), handling=ImageHandling(transforms=None, generator=gen),
                    progress=Progress(callback=callback, should_stop=should_stop, progress_values=shown),
                    selection=Selection(final_score=final_score))


# ---- inversion --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class InversionSettings(Settings):
    """Everything that changes an inversion (``None`` weights mean: the default for the layer's depth)."""

    size: int = 224
    steps: int = 400
    lr: float = 0.05
    param: str = "fft"  # "fft" (converges faster: see docs/inversion.md) | "pixel"
    decorrelate: bool = True
    tv: float | None = None  # λ_TV for every layer; None: default_prior_weights per layer
    tv_beta: float = 2.0
    alpha: float | None = None  # λ_α for every layer; None: default_prior_weights per layer
    alpha_power: float = 6.0
    transforms: str = "none"  # a key of TRANSFORM_SETS; applied to the image and the photo alike
    init: str = "noise"  # "noise" | "grey" | "blur" | "image" (pass init_image)
    init_blur: float = 8.0  # σ in pixels for init="blur"
    seed: int | None = 0
    fit: str = "crop"
    autocast: bool = True


@dataclass
class InversionResult:
    model: str
    layers: list[str]
    photo: torch.Tensor  # 3×H×W target, CPU
    images: torch.Tensor  # B×3×H×W reconstructions (image b from layers[b])
    initial: torch.Tensor  # B×3×H×W starting images
    error_history: torch.Tensor  # steps × B normalised feature error (of the image each step started from)
    final_error: list[float]
    psnr: list[float]
    ssim: list[float]
    tv_weights: list[float]
    alpha_weights: list[float]
    settings: InversionSettings
    steps_done: int
    stopped: str | None
    seconds: float

    def strip(self) -> torch.Tensor:
        """The photo followed by each layer's reconstruction, in one row."""
        return grid(torch.cat([self.photo[None], self.images]), columns=len(self.layers) + 1, padding=4)

    def rows(self) -> list[dict]:
        return [
            {"layer": layer, "normalised_error": round(e, 5), "psnr_db": round(p, 2), "ssim": round(s, 4),
             "tv_weight": round(tv, 6), "alpha_weight": a}
            for layer, e, p, s, tv, a in zip(self.layers, self.final_error, self.psnr, self.ssim, self.tv_weights,
                                               self.alpha_weights)
        ]

    def summary(self, history_every: int = 1) -> dict:
        every = max(1, int(history_every))
        return {
            "model": self.model,
            "settings": self.settings.to_dict(),
            "layers": self.rows(),
            "steps_done": self.steps_done,
            "stopped": self.stopped,
            "seconds": round(self.seconds, 2),
            "error_history": {layer: [round(float(v), 6) for v in self.error_history[::every, b]]
                              for b, layer in enumerate(self.layers)},
            "error_history_every": every,
        }


def _initial_images(settings: InversionSettings, photo: torch.Tensor, batch: int, init_image: torch.Tensor | None) -> torch.Tensor | None:
    if settings.init not in INIT_MODES:
        raise UserInputError(f"Unknown start {settings.init!r}; choose from {', '.join(INIT_MODES)}.")
    size = tuple(photo.shape[-2:])
    if settings.init == "grey":
        return None  # the parameterisation's own near-grey start
    if settings.init == "noise":
        gen = torch.Generator().manual_seed(0 if settings.seed is None else int(settings.seed))
        noise = 0.5 + 0.15 * torch.randn(batch, photo.shape[0], *size, generator=gen)
        return noise.clamp(0.02, 0.98)
    if settings.init == "blur":
        return gaussian_blur(photo[None], settings.init_blur).clamp(0, 1).expand(batch, -1, -1, -1).contiguous()
    if init_image is None:
        raise UserInputError("init='image' needs a starting image.")
    start = init_image if init_image.ndim == 3 else init_image[0]
    if tuple(start.shape[-2:]) != size:
        start = fit(start, size, settings.fit)  # type: ignore[arg-type]
    return start.clamp(0, 1)[None].expand(batch, -1, -1, -1).contiguous()


def invert(
    model: LoadedModel,
    photo: torch.Tensor,
    layers: Sequence[str],
    settings: InversionSettings | None = None,
    *,
    init_image: torch.Tensor | None = None,
    callback: ProgressCallback | None = None,
    should_stop: ShouldStop | None = None,
) -> InversionResult:
    """Reconstruct ``photo`` (3×H×W in [0, 1]) from each layer in ``layers``: one batched run.

    ``callback(step, total, preview, errors)`` receives the per-layer normalised feature error.
    """
    settings = settings or InversionSettings()
    layers = check_layers(model, layers)
    photo = _model_photo(model, photo)
    weights = [default_prior_weights(model, layer) for layer in layers]
    tv_weights = [settings.tv if settings.tv is not None else w[0] for w in weights]
    alpha_weights = [settings.alpha if settings.alpha is not None else w[1] for w in weights]
    initial = _initial_images(settings, photo, len(layers), init_image)
    run = _match_photo(
        model, photo, layers, lambda a, t: (-(e := normalised_error(a, t)), {"error": e}), shown="error",
        param_kind=settings.param, decorrelate=settings.decorrelate, steps=settings.steps, lr=settings.lr,
        transforms=settings.transforms, init_images=initial, tv_weights=tv_weights, alpha_weights=alpha_weights,
        tv_beta=settings.tv_beta, alpha_power=settings.alpha_power, seed=settings.seed,
        use_autocast=settings.autocast, callback=callback, should_stop=should_stop,
    )
    images = run.images
    start = initial if initial is not None else torch.full_like(images, 0.5)
    return InversionResult(
        model=model.name, layers=list(layers), photo=photo, images=images, initial=start.float().cpu(),
        error_history=run.metrics["error"], final_error=[float(v) for v in run.final_metrics["error"]],
        psnr=[psnr(img, photo) for img in images], ssim=[ssim(img, photo) for img in images],
        tv_weights=[float(v) for v in tv_weights], alpha_weights=[float(v) for v in alpha_weights],
        settings=settings, steps_done=run.steps_done, stopped=run.stopped, seconds=run.seconds,
    )


# ---- caricature ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CaricatureSettings(Settings):
    size: int = 224
    steps: int = 256
    lr: float = 0.05
    param: str = "fft"
    decorrelate: bool = True
    transforms: str = "standard"
    cos_floor: float = 0.1
    cos_power: float = 1.0
    tv: float = 0.0
    seed: int | None = 0
    fit: str = "crop"
    autocast: bool = True


@dataclass
class CaricatureResult:
    model: str
    layers: list[str]
    photo: torch.Tensor
    images: torch.Tensor  # B×3×H×W: image b caricatures the photo at layers[b]
    cosine_history: torch.Tensor  # steps × B
    objective_history: torch.Tensor  # steps × B: dot · max(cos, floor)^power − priors, on the transformed image
    final_cosine: list[float]
    final_dot: list[float]  # ⟨Φ(x), Φ0⟩ / ‖Φ0‖²: > 1 means the layer sees more of the photo than in the photo
    settings: CaricatureSettings
    steps_done: int
    stopped: str | None
    seconds: float

    def strip(self) -> torch.Tensor:
        return grid(torch.cat([self.photo[None], self.images]), columns=len(self.layers) + 1, padding=4)

    def summary(self) -> dict:
        return {
            "model": self.model, "settings": self.settings.to_dict(), "steps_done": self.steps_done,
            "stopped": self.stopped, "seconds": round(self.seconds, 2),
            "layers": [{"layer": l, "cosine": round(c, 4), "dot_over_photo_norm2": round(d, 4)}
                       for l, c, d in zip(self.layers, self.final_cosine, self.final_dot)],
        }


def caricature(
    model: LoadedModel,
    photo: torch.Tensor,
    layers: Sequence[str],
    settings: CaricatureSettings | None = None,
    *,
    callback: ProgressCallback | None = None,
    should_stop: ShouldStop | None = None,
) -> CaricatureResult:
    """From noise, exaggerate what each layer in ``layers`` sees in ``photo`` (one image per layer, one batch).

    ``callback`` receives the per-layer cosine similarity with the photo's activations.
    """
    settings = settings or CaricatureSettings()
    layers = check_layers(model, layers)
    if not 0.0 <= settings.cos_floor < 1.0:
        raise UserInputError(f"Cosine floor {settings.cos_floor} must be in [0, 1).")
    photo = _model_photo(model, photo)
    floor, power = float(settings.cos_floor), float(settings.cos_power)

    def term(act: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        value, cos = caricature_score(act, target, floor, power)
        dot = (act.float() * target.float()).sum() / target.float().pow(2).sum().clamp_min(1e-12)
        return value, {"cosine": cos, "dot": dot}

    run = _match_photo(
        model, photo, layers, term, shown="cosine",
        param_kind=settings.param, decorrelate=settings.decorrelate, steps=settings.steps, lr=settings.lr,
        transforms=settings.transforms, init_images=None, tv_weights=[settings.tv] * len(layers),
        alpha_weights=[0.0] * len(layers), tv_beta=2.0, alpha_power=6.0, seed=settings.seed,
        use_autocast=settings.autocast, callback=callback, should_stop=should_stop,
    )
    return CaricatureResult(
        model=model.name, layers=list(layers), photo=photo, images=run.images, cosine_history=run.metrics["cosine"],
        objective_history=run.history, final_cosine=[float(v) for v in run.final_metrics["cosine"]],
        final_dot=[float(v) for v in run.final_metrics["dot"]], settings=settings,
        steps_done=run.steps_done, stopped=run.stopped, seconds=run.seconds,
    )


# ---- DeepDream ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DreamSettings(Settings):
    size: int = 224
    octaves: int = 3  # scales, coarsest first; 1 = no multi-scale
    octave_scale: float = 1.4  # size ratio between neighbouring octaves
    steps: int = 20  # iterations per octave
    lr: float = 0.05  # step size (Adam on pixel logits)
    jitter: int = 16  # random shift in pixels at the finest octave (scaled down with it)
    tv: float = 0.0
    seed: int | None = 0
    fit: str = "crop"
    autocast: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()  # the limits table
        if self.jitter > self.size // 2:
            raise UserInputError(f"Jitter {self.jitter} px is too large for a {self.size} px photo: "
                                 f"use at most {self.size // 2} px (half the size).")


@dataclass
class DreamResult:
    model: str
    target: str  # what was amplified, e.g. "deepdream blocks.10" or "channel blocks.10:7"
    photo: torch.Tensor  # 3×H×W
    image: torch.Tensor  # 3×H×W dreamed
    octave_sizes: list[int]
    history: torch.Tensor  # total steps: objective on the jittered image
    objective_before: float  # objective (no priors) on the photo
    objective_after: float  # ... and on the dream
    settings: DreamSettings
    steps_done: int
    stopped: str | None
    seconds: float

    @property
    def gain(self) -> float:
        return self.objective_after / self.objective_before if self.objective_before > 0 else float("inf")

    def pair(self) -> torch.Tensor:
        return grid(torch.stack([self.photo, self.image]), columns=2, padding=4)

    def summary(self) -> dict:
        return {
            "model": self.model, "target": self.target, "settings": self.settings.to_dict(),
            "octave_sizes": self.octave_sizes, "objective_before": round(self.objective_before, 5),
            "objective_after": round(self.objective_after, 5), "gain": round(self.gain, 3),
            "steps_done": self.steps_done, "stopped": self.stopped, "seconds": round(self.seconds, 2),
        }


def dream_objective(model: LoadedModel, layer: str, channel: int | None = None) -> objectives.Objective:
    """The whole layer's energy (DeepDream), or one channel's mean activation."""
    if layer == OUTPUT:
        raise UserInputError("DeepDream amplifies a hidden layer; pick one other than the logits.")
    # unit_objective: a ViT layer's channel is its last axis (objectives.channel on other layers)
    objective = objectives.deepdream(layer) if channel is None else unit_objective(model, layer, int(channel))
    objective.validate(model.layer_shapes)
    return objective


def _resize(image: torch.Tensor, side: int) -> torch.Tensor:
    return F.interpolate(image, size=(side, side), mode="bilinear", align_corners=False, antialias=True)


def dream(
    model: LoadedModel,
    photo: torch.Tensor,
    layer: str,
    channel: int | None = None,
    settings: DreamSettings | None = None,
    *,
    callback: ProgressCallback | None = None,
    should_stop: ShouldStop | None = None,
) -> DreamResult:
    """DeepDream ``photo`` at ``layer`` (or one ``channel`` of it) over several octaves.

    Coarsest octave first: the loop runs on the photo shrunk to that scale; the detail it added
    (dream − photo at that scale) is upsampled and added to the photo at the next, finer scale.
    ``callback`` gets the objective over all octaves' steps (``total`` = octaves × steps).
    """
    settings = settings or DreamSettings()
    objective = dream_objective(model, layer, channel)
    if settings.octaves < 1 or settings.octave_scale <= 1.0 and settings.octaves > 1:
        raise UserInputError("Use at least one octave, and an octave scale above 1.")
    if settings.steps < 1:
        raise UserInputError("Steps must be at least 1.")
    photo_side = int(photo.shape[-1])
    if settings.jitter > photo_side // 2:
        raise UserInputError(f"Jitter {settings.jitter} px is too large for a {photo_side} px photo: "
                             f"use at most {photo_side // 2} px (half the size).")
    device = model.device
    gen = devices.generator(device, settings.seed)
    photo = _model_photo(model, photo)
    side = photo.shape[-1]
    sizes = [max(32, round(side / settings.octave_scale ** k)) for k in reversed(range(settings.octaves))]
    total_objective = objective - settings.tv * priors.total_variation(2.0) if settings.tv else objective
    score = model_score(model, total_objective, settings.autocast)
    total_steps = settings.steps * len(sizes)
    base = photo.to(device)[None]
    detail = torch.zeros(1, photo.shape[0], sizes[0], sizes[0], device=device)
    histories, done, stopped, seconds = [], 0, None, 0.0
    current = base
    for octave, size in enumerate(sizes):
        base_here = _resize(base, size) if size != side else base
        start = (base_here + _resize(detail, size)).clamp(0, 1)
        param = make_param("pixel", 1, size, channels=photo.shape[0], decorrelated=False, generator=gen, device=device)
        param.set_image_(start)
        shift = max(1, round(settings.jitter * size / side))
        transforms = compose([pad(shift // 2, mode="reflect"), jitter(shift)]) if shift > 1 else None
        offset = done

        def report(step: int, _total: int, preview: torch.Tensor, values: torch.Tensor, offset: int = offset) -> None:
            if callback is not None:
                callback(offset + step, total_steps, preview, values)

        result = optimise(param, score, Schedule(steps=settings.steps, lr=settings.lr),
                          handling=ImageHandling(transforms=transforms, generator=gen),
                          progress=Progress(callback=report, should_stop=should_stop))
        histories.append(result.history[:, 0])
        done += result.steps_done
        seconds += result.seconds
        current = result.images.to(device)
        detail = current - base_here
        if result.stopped:
            stopped = result.stopped
            break
    image = current if current.shape[-1] == side else _resize(base, side) + _resize(detail, side)
    image = image.clamp(0, 1)[0].float().cpu()
    with torch.no_grad():
        before = float(objective(Context(model.activations(base, sorted(objective.layers), use_autocast=False), base)).item())
        after_input = image[None].to(device)
        after = float(objective(Context(model.activations(after_input, sorted(objective.layers), use_autocast=False), after_input)).item())
    return DreamResult(
        model=model.name, target=objective.name, photo=photo, image=image, octave_sizes=sizes,
        history=torch.cat(histories) if histories else torch.zeros(0), objective_before=before, objective_after=after,
        settings=settings, steps_done=done, stopped=stopped, seconds=seconds,
    )

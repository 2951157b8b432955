"""DeepDream on a photo: gradient ascent on a layer's (or a channel's) energy, octave by octave, carrying the
added detail up to each finer scale. (The audio lab's dreams are :mod:`explorer.audio.dream`.)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .. import devices
from ..capture import OUTPUT
from ..errors import UserInputError
from ..images import grid
from ..models.base import LoadedModel
from ..optvis import objectives, priors
from ..optvis.objectives import Context
from ..optvis.optimise import ImageHandling, Progress, Schedule, optimise
from ..optvis.param import make_param
from ..optvis.render import model_score
from ..optvis.transformer import unit_objective
from ..optvis.transforms import compose, jitter, pad
from ..progress import ProgressCallback, ShouldStop
from ..settings import Settings
from .matching import model_photo


@dataclass(frozen=True)
class DeepDreamSettings(Settings):
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
class DeepDreamResult:
    model: str
    target: str  # what was amplified, e.g. "deepdream blocks.10" or "channel blocks.10:7"
    photo: torch.Tensor  # 3×H×W
    image: torch.Tensor  # 3×H×W dreamed
    octave_sizes: list[int]
    history: torch.Tensor  # total steps: objective on the jittered image
    objective_before: float  # objective (no priors) on the photo
    objective_after: float  # ... and on the dream
    settings: DeepDreamSettings
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


def deep_dream(
    model: LoadedModel,
    photo: torch.Tensor,
    layer: str,
    channel: int | None = None,
    settings: DeepDreamSettings | None = None,
    *,
    callback: ProgressCallback | None = None,
    should_stop: ShouldStop | None = None,
) -> DeepDreamResult:
    """DeepDream ``photo`` at ``layer`` (or one ``channel`` of it) over several octaves.

    Coarsest octave first: the loop runs on the photo shrunk to that scale; the detail it added
    (dream − photo at that scale) is upsampled and added to the photo at the next, finer scale.
    ``callback`` gets the objective over all octaves' steps (``total`` = octaves × steps).
    """
    settings = settings or DeepDreamSettings()
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
    photo = model_photo(model, photo)
    side = photo.shape[-1]
    sizes = [max(32, round(side / settings.octave_scale ** k)) for k in reversed(range(settings.octaves))]
    total_objective = objective - settings.tv * priors.total_variation(2.0) if settings.tv else objective
    score = model_score(model, total_objective, settings.autocast)
    total_steps = settings.steps * len(sizes)
    base = photo.to(device)[None]
    detail = torch.zeros(1, photo.shape[0], sizes[0], sizes[0], device=device)
    histories, done, stopped, seconds = [], 0, None, 0.0
    current = base
    for size in sizes:
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
        before_acts = model.activations(base, sorted(objective.layers), use_autocast=False)
        before = float(objective(Context(before_acts, base)).item())
        after_input = image[None].to(device)
        after_acts = model.activations(after_input, sorted(objective.layers), use_autocast=False)
        after = float(objective(Context(after_acts, after_input)).item())
    return DeepDreamResult(
        model=model.name, target=objective.name, photo=photo, image=image, octave_sizes=sizes,
        history=torch.cat(histories) if histories else torch.zeros(0), objective_before=before, objective_after=after,
        settings=settings, steps_done=done, stopped=stopped, seconds=seconds,
    )

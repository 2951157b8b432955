"""Caricature — Lucid-style: what a layer sees in a photo, exaggerated.

From noise, maximise the dot product between the image's and the photo's activations, weighted by their
cosine similarity (floored), which exaggerates what the layer picks out of the photo. One image per layer,
one batch (:func:`explorer.inversion.matching.match_photo`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from ..errors import UserInputError
from ..images import grid
from ..models.base import LoadedModel
from ..progress import ProgressCallback, ShouldStop
from ..settings import Settings
from .matching import check_layers, match_photo, model_photo


def caricature_score(act: torch.Tensor, target: torch.Tensor, cos_floor: float,
                     cos_power: float) -> tuple[torch.Tensor, torch.Tensor]:
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
    final_dot: list[float]  # ⟨Φ(x), Φ0⟩ / ‖Φ0‖²: > 1: the layer sees more of the photo than in the photo
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
    photo = model_photo(model, photo)
    floor, power = float(settings.cos_floor), float(settings.cos_power)

    def term(act: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        value, cos = caricature_score(act, target, floor, power)
        dot = (act.float() * target.float()).sum() / target.float().pow(2).sum().clamp_min(1e-12)
        return value, {"cosine": cos, "dot": dot}

    run = match_photo(
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

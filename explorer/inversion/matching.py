"""What inversion, caricature and DeepDream share: the photo as input, the layers to use, and the engine that
optimises one image per layer to match (or exaggerate) a photo's activations.

The engine (:func:`match_photo`) runs on the one loop (:func:`explorer.optvis.optimise.optimise`) with the one
capture mechanism (``LoadedModel.activations``); inversion and caricature differ only in the score term.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch

from .. import devices, limits
from ..errors import UserInputError
from ..images import ImageSource, fit, load_image
from ..models.base import LoadedModel
from ..optvis import priors
from ..optvis.objectives import Context
from ..optvis.optimise import ImageHandling, OptimisationResult, Progress, Schedule, Selection, optimise
from ..optvis.param import PARAMETERISATIONS, make_param
from ..optvis.transforms import TRANSFORM_SETS, Transform
from ..progress import ProgressCallback, ShouldStop

FIT_MODES = ("crop", "pad")


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


def model_photo(model: LoadedModel, photo: torch.Tensor) -> torch.Tensor:
    """A 3×H×W (or 1×H×W) photo on the CPU with as many channels as the model takes."""
    if photo.ndim != 3:
        raise UserInputError(f"Expected one C×H×W photo, got shape {tuple(photo.shape)}.")
    photo = photo.detach().float().cpu().clamp(0, 1)
    if photo.shape[0] != model.channels:
        photo = (photo.mean(0, keepdim=True) if model.channels == 1
                 else photo[:1].expand(model.channels, -1, -1).contiguous())
    return photo


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


# ---- the shared engine: match a photo's activations, one layer per image ------------------------------
def _paired_transform(transform: Transform) -> Callable:
    """Apply the SAME random transform to the image and to the photo, so their feature maps stay
    aligned: the two are stacked along channels, transformed once, and split."""

    def apply(image: torch.Tensor, photo: torch.Tensor,
              generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
        c = image.shape[1]
        both = transform(torch.cat([image, photo.expand(image.shape[0], -1, -1, -1)], dim=1), generator)
        return both[:, :c], both[:, c:]

    return apply


def _per_image_acts(model: LoadedModel, images: torch.Tensor, layers: Sequence[str],
                    use_autocast: bool) -> list[torch.Tensor]:
    """One forward pass for the whole batch; image b's activation at its own layer ``layers[b]``."""
    acts = model.activations(images, list(dict.fromkeys(layers)), use_autocast=use_autocast)
    return [acts[layer][b] for b, layer in enumerate(layers)]


def match_photo(
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
    param = make_param(param_kind, batch, size, channels=photo.shape[0], decorrelated=decorrelate,
                       generator=gen, device=device)
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

    def compare(acts: Sequence[torch.Tensor],
                targets: Sequence[torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
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

"""Feature inversion — Mahendran & Vedaldi (2015): what a layer still knows about a photo.

Find an image x whose activations match the photo's, minimising ‖Φ(x) − Φ0‖² / ‖Φ0‖² + λ_α·‖x‖_α^α +
λ_TV·TV^β. Several layers run as one batch: image b reconstructs the photo from layer b, all from one
forward pass per step (:func:`explorer.inversion.matching.match_photo`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from ..errors import UserInputError
from ..images import fit, grid
from ..models.base import LoadedModel
from ..optvis.param import gaussian_blur
from ..progress import ProgressCallback, ShouldStop
from ..settings import Settings
from .matching import check_layers, match_photo, model_photo

INIT_MODES = ("noise", "grey", "blur", "image")

# Prior weights by relative depth d ∈ [0, 1] (first layer 0, logits 1), interpolated geometrically:
# λ = SHALLOW · (DEEP / SHALLOW)^d. Deep layers discard detail, so the image priors have to supply
# more of it (Mahendran & Vedaldi raise λ_TV with depth the same way); the α-norm keeps deep
# reconstructions from saturating to black and white. Tuned on EfficientNet-Lite0 / astronaut at
# 224 px, see docs/inversion.md.
TV_SHALLOW, TV_DEEP = 0.5, 5.0
ALPHA_SHALLOW, ALPHA_DEEP = 0.005, 3.0


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


def _initial_images(settings: InversionSettings, photo: torch.Tensor, batch: int,
                    init_image: torch.Tensor | None) -> torch.Tensor | None:
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
    photo = model_photo(model, photo)
    weights = [default_prior_weights(model, layer) for layer in layers]
    tv_weights = [settings.tv if settings.tv is not None else w[0] for w in weights]
    alpha_weights = [settings.alpha if settings.alpha is not None else w[1] for w in weights]
    initial = _initial_images(settings, photo, len(layers), init_image)
    run = match_photo(
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

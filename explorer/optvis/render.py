"""Feature visualisation: optimise a batch of images so a model's units fire."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, ClassVar, Iterable

import torch
import torch.nn.functional as F

from .. import devices, limits
from ..limits import Limit
from ..capture import OUTPUT
from ..errors import UserInputError
from ..models.base import LoadedModel
from ..settings import Settings
from . import priors
from .objectives import Context, Objective, diversity
from ..progress import ProgressCallback, ShouldStop
from .optimise import Execution, ImageHandling, OptimisationResult, Progress, Schedule, Selection, optimise
from .param import make_param
from .transforms import TRANSFORM_SETS, Staged, Transform, coarse_to_fine_sizes, native_scale_crop


@dataclass(frozen=True)
class RenderSettings(Settings):
    """Everything that changes a render's result (hashable: caches key on :meth:`digest`)."""

    size: int = 224  # the parameterisation's side (Render defaults in docs/ARCHITECTURE.md: measured)
    steps: int = 160  # ≥ 1.3× Lucent's 256-step activation (16 units: 1.33×; 128 steps: 1.28×), issue 22
    lr: float = 0.05
    param: str = "fft"  # "fft" | "pixel" | "maco" | "cppn"
    decorrelate: bool = True
    decay: float = 1.0
    transforms: str = "standard"  # a key of TRANSFORM_SETS
    tv: float = 0.0  # weight of total variation (β = tv_beta)
    tv_beta: float = 2.0
    alpha: float = 0.0  # weight of the α-norm
    alpha_power: float = 6.0
    l1: float = 0.0
    l2: float = 0.0
    blur_every: int = 0  # blur the image every N steps (0: never)
    blur_sigma: float = 0.5
    diversity: float = 0.0  # weight of the batch diversity term
    seed: int | None = 0
    # "auto": the measured choice per device (devices.render_precision); True: bf16 on CUDA only (the
    # old default); "bf16": bf16 everywhere; False: fp32 (+TF32 on CUDA)
    autocast: bool | str = "auto"
    # what the network sees: "model" its own input size (the transformed param resampled to it, as
    # Lucent does), "param" the transformed param as it is (the old behaviour), or a side in pixels
    input_size: int | str = "model"
    lr_schedule: str = "constant"  # "constant" | "cosine" (lr × 1 → 0.1)
    # coarse-to-fine: for the first ``coarse`` fraction of the steps the network sees ``coarse_start`` × its input
    # side, growing to the full side (transforms.coarse_to_fine_sizes); 0 = full size from the first step
    coarse: float = 0.0
    coarse_start: float = 0.5
    coarse_view: str = "resize"  # "resize": the whole image at a smaller side; "crop": a window at full scale
    # a warm start: the first ``warm`` fraction of the steps see the param without the robustness transforms (only
    # resampled to the network's side); the transforms take over for the rest (Render defaults, issue 22)
    warm: float = 0.0
    adam_beta1: float = 0.0  # Adam's momentum: none measured best on both yardsticks (Render defaults, issue 22)


    LEGACY_VALUES: ClassVar[dict] = {"input_size": "param", "lr_schedule": "constant", "coarse": 0.0,
                                     "coarse_start": 0.5, "coarse_view": "resize", "warm": 0.0,
                                     "adam_beta1": 0.9}
    LIMIT_OVERRIDES: ClassVar[dict] = {
        "coarse": Limit(0.0, 0.95, label="coarse fraction of the steps"),
        "coarse_start": Limit(0.1, 1.0, label="coarse start (fraction of the input side)"),
        "warm": Limit(0.0, 0.95, label="warm-start fraction of the steps"),
        "adam_beta1": Limit(0.0, 0.999, label="Adam's beta1 (momentum)"),
    }

    def network_size(self, model: LoadedModel) -> int | None:
        """The side the network sees, or None: the transformed param as it is."""
        if self.input_size == "param":
            return None
        if self.input_size == "model":
            return int(model.input_size[0]) if model.input_size[0] == model.input_size[1] else None
        return int(self.input_size)


# Quick settings (a layer in minutes on a laptop CPU) for tests and benchmarks, the gallery's settings before it
# moved to `gallery.builder.THUMBNAILS` (128 steps); pinned so their digest (cache key) does not move when the
# defaults above change.
FAST = RenderSettings(size=96, steps=96, lr=0.05, autocast=True, input_size="param", lr_schedule="constant", coarse=0.0,
                      warm=0.0, adam_beta1=0.9)


@dataclass
class RenderResult:
    images: torch.Tensor  # B×C×H×W in [0, 1], CPU
    history: torch.Tensor  # steps × B objective values (priors included)
    final_activation: torch.Tensor  # [B] objective without priors, on the untransformed final image
    snapshots: dict[int, torch.Tensor]
    stopped: str | None
    seconds: float
    objective: str
    settings: RenderSettings
    steps_done: int = 0
    model: str = ""

    @property
    def diverged(self) -> bool:
        return bool(self.stopped and self.stopped.startswith("diverged"))

    def summary(self) -> dict:
        return {
            "model": self.model,
            "objective": self.objective,
            "settings": self.settings.to_dict(),
            "final_activation": [round(float(v), 6) for v in self.final_activation],
            "steps_done": self.steps_done,
            "stopped": self.stopped,
            "seconds": round(self.seconds, 3),
        }


def with_priors(objective: Objective, settings: RenderSettings) -> Objective:
    """The objective plus the weighted priors (and diversity) the settings ask for."""
    total = objective
    if settings.tv:
        total = total - settings.tv * priors.total_variation(settings.tv_beta)
    if settings.alpha:
        total = total - settings.alpha * priors.alpha_norm(settings.alpha_power)
    if settings.l1:
        total = total - settings.l1 * priors.l1()
    if settings.l2:
        total = total - settings.l2 * priors.l2()
    if settings.diversity:
        layers = sorted(l for l in objective.layers if l != OUTPUT)
        if layers:
            total = total + settings.diversity * diversity(layers[0])
    return total


def model_score(model: LoadedModel, objective: Objective, use_autocast: bool | str = True) -> Callable:
    """score(image, transformed) for :func:`optimise`: activations of the transformed image,
    priors on the untransformed one."""
    layers = sorted(objective.layers) or [OUTPUT]

    def score(image: torch.Tensor, transformed: torch.Tensor) -> torch.Tensor:
        acts = model.activations(transformed, layers, use_autocast=use_autocast)
        return objective(Context(acts=acts, image=image))

    return score


@torch.no_grad()
def evaluate(model: LoadedModel, objective: Objective, images: torch.Tensor,
             include_priors: bool = False) -> torch.Tensor:
    """The objective on given images (no transforms): the 'final activation' users see."""
    images = images.to(model.device)
    layers = sorted(objective.layers) or [OUTPUT]
    acts = model.activations(images, layers, use_autocast=False)
    return objective(Context(acts=acts, image=images, include_priors=include_priors)).float().cpu()


def render_transforms(model: LoadedModel, settings: RenderSettings) -> Transform | None:
    """The settings' transform set, resampling to the network's side — growing to it step by step when
    ``settings.coarse`` asks for coarse-to-fine (not for networks that resize every input themselves), and
    without the robustness transforms for the first ``settings.warm`` fraction of the steps."""
    make = TRANSFORM_SETS[settings.transforms]
    seen = settings.network_size(model)
    coarse = bool(settings.coarse) and seen is not None and not model.fixed_input_size
    plan = coarse_to_fine_sizes(seen, settings.steps, settings.coarse, settings.coarse_start) if coarse \
        else [(1, seen)]
    warm_until = round(settings.steps * settings.warm)  # the last step without the robustness transforms
    starts = sorted({first for first, _ in plan} | ({1, warm_until + 1} if warm_until >= 1 else set()))
    if len(starts) == 1:
        return make(settings.size, seen)

    def stage(first: int) -> Transform | None:
        side = [s for f, s in plan if f <= first][-1]
        if first <= warm_until:
            return TRANSFORM_SETS["none"](settings.size, side)
        if settings.coarse_view == "crop" and coarse:
            full = make(settings.size, seen)
            return full if side == seen else native_scale_crop(full, seen, side, settings.size)
        return make(settings.size, side)

    return Staged([(first, stage(first)) for first in starts])


def check_request(model: LoadedModel, objective: Objective, settings: RenderSettings, batch: int | None = None) -> int:
    """Everything :func:`render` refuses, checked before any tensor exists (the CLI calls it before its
    progress bar): unknown layers, out-of-range units, a batch that does not match the units, the batch
    and pixel limits of :mod:`explorer.limits`. Returns the batch size."""
    objective.validate(model.layer_shapes)
    n = batch or objective.batch or 1
    if objective.batch is not None and n != objective.batch:
        raise UserInputError(f"A batch of {n} images does not match the {objective.batch} units of {objective.name}: "
                             "leave the batch out (one image per unit) or name as many units as images.")
    limits.check("batch", n)
    if isinstance(settings.input_size, str) and settings.input_size not in ("model", "param"):
        raise UserInputError(f"Unknown input size {settings.input_size!r}: use model, param or a number of pixels.")
    if not isinstance(settings.input_size, str):
        limits.check("size", settings.input_size, what="input size")
    seen = settings.network_size(model) or 0
    # a smaller size costs the same below the network side
    limits.check_batch_pixels(n, max(settings.size, seen), min_side=seen)
    if settings.transforms not in TRANSFORM_SETS:
        raise UserInputError(f"Unknown transform set {settings.transforms!r}; choose from {', '.join(TRANSFORM_SETS)}.")
    if settings.coarse_view not in ("resize", "crop"):
        raise UserInputError(f"Unknown coarse view {settings.coarse_view!r}: use resize or crop.")
    return n


def render(
    model: LoadedModel,
    objective: Objective,
    settings: RenderSettings | None = None,
    *,
    batch: int | None = None,
    init: torch.Tensor | None = None,
    thresholds: Iterable[int] = (),
    callback: ProgressCallback | None = None,
    should_stop: ShouldStop | None = None,
    graph: bool = True,
    **overrides,
) -> RenderResult:
    """Optimise ``batch`` images (default: as many as the objective's units) to maximise ``objective``.

    One forward/backward pass per step serves the whole batch. ``init`` (B×C×H×W or C×H×W in
    [0, 1]) starts from an image instead of noise. Unknown layers and out-of-range units raise
    a :class:`~explorer.errors.UserInputError` before any work starts. On CUDA the step runs as a
    captured CUDA graph (``graph=False``: eager); elsewhere, and whenever capture fails, eagerly.
    """
    settings = (settings or RenderSettings()).with_(**overrides) if overrides else (settings or RenderSettings())
    n = check_request(model, objective, settings, batch)
    device = model.device
    gen = devices.generator(device, settings.seed)
    param = make_param(
        settings.param, n, settings.size, channels=model.channels, decorrelated=settings.decorrelate,
        decay=settings.decay, generator=gen, device=device,
    )
    if init is not None:
        param.set_image_(init.to(device).expand(n, -1, -1, -1) if init.ndim == 3 else init.to(device))
    make_transforms = TRANSFORM_SETS.get(settings.transforms)
    if make_transforms is None:
        raise UserInputError(f"Unknown transform set {settings.transforms!r}; choose from {', '.join(TRANSFORM_SETS)}.")
    total = with_priors(objective, settings)
    measure = model_score(model, objective, use_autocast=False)
    seen_size = settings.network_size(model)
    precision = devices.render_precision(device, settings.autocast)

    def final_score(image: torch.Tensor, _same: torch.Tensor) -> torch.Tensor:
        """The activation users see: no priors, fp32, at the network input size."""
        if seen_size is not None and tuple(image.shape[-2:]) != (seen_size, seen_size):
            image = F.interpolate(image, size=(seen_size, seen_size), mode="bilinear", align_corners=False)
        return measure(image, image)

    with devices.fast_fp32(device):
        result: OptimisationResult = optimise(
            param,
            model_score(model, total, precision),
            Schedule(steps=settings.steps, lr=settings.lr, lr_schedule=settings.lr_schedule,
                     beta1=settings.adam_beta1),
            handling=ImageHandling(transforms=render_transforms(model, settings), generator=gen,
                                   blur_every=settings.blur_every, blur_sigma=settings.blur_sigma),
            progress=Progress(callback=callback, should_stop=should_stop, thresholds=thresholds),
            selection=Selection(final_score=final_score),
            execution=Execution(graph=graph),
        )
    return RenderResult(
        images=result.images,
        history=result.history,
        final_activation=result.final_values,
        snapshots=result.snapshots,
        stopped=result.stopped,
        seconds=result.seconds,
        objective=objective.name,
        settings=settings,
        steps_done=result.steps_done,
        model=model.name,
    )

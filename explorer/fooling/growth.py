"""Growing fooling images: gradient ascent from a noise sample on one class (through the project's one
optimisation loop) until the class probability reaches 0.996 (Nguyen, Yosinski & Clune 2015), optionally
inside an L∞ or L2 ball around the start; then a transfer table on the other registry models that load
offline (:mod:`explorer.models.judges`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Sequence

import torch

from .. import devices, limits
from ..errors import UserInputError
from ..models.base import LoadedModel
from ..models.judges import top_prediction, transfer_models, transfer_table
from ..progress import ProgressCallback, ShouldStop
from .noise import NoiseOptions, samples_at

TARGET_CONFIDENCE = 0.996  # Nguyen et al.'s "≥ 99.6 % confidence"
DEFAULT_BUDGET = "linf:0.05"  # grow's budget around a pixel start (a CPPN has none): page, CLI and docs alike
GROW_STEPS, GROW_LR = 300, 0.05  # grow's step limit and learning rate (explorer/vocabulary.py: one default everywhere)


@dataclass(frozen=True)
class Budget:
    """How far the image may move from its start: ``none``, ``linf`` (max pixel change) or
    ``l2`` (Euclidean norm of the change over all pixels and channels, in [0, 1] units)."""

    kind: str = "none"
    eps: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in ("none", "linf", "l2"):
            raise UserInputError(f"Unknown budget {self.kind!r}: use none, linf:EPS or l2:EPS.")
        if self.kind != "none":
            limits.check("eps", self.eps, what=f"The {self.kind} budget size")

    def __str__(self) -> str:
        return "none" if self.kind == "none" else f"{self.kind}:{self.eps:g}"

    def project(self, image: torch.Tensor, start: torch.Tensor) -> torch.Tensor:
        """The closest image to ``image`` inside the budget around ``start`` (and inside [0, 1])."""
        if self.kind == "none":
            return image.clamp(0, 1)
        delta = image - start
        if self.kind == "linf":
            delta = delta.clamp(-self.eps, self.eps)
        else:
            norm = delta.flatten(1).norm(dim=1).clamp(min=1e-12).view(-1, *([1] * (delta.ndim - 1)))
            delta = delta * torch.clamp(self.eps / norm, max=1.0)
        # Clipping to [0, 1] afterwards only moves pixels towards the start: still inside the ball.
        return (start + delta).clamp(0, 1)


def parse_budget(text: str | None) -> Budget:
    """"linf:0.05", "l2:3", "none" (or empty) -> :class:`Budget`."""
    if text is None or str(text).strip().lower() in ("", "none"):
        return Budget()
    kind, sep, value = str(text).strip().lower().partition(":")
    kind = {"l_inf": "linf", "inf": "linf", "linfinity": "linf"}.get(kind, kind)
    if not sep or kind not in ("linf", "l2"):
        raise UserInputError(f"Cannot read the budget {text!r}: write linf:0.05, l2:3 or none.")
    try:
        eps = float(value)
    except ValueError as exc:
        raise UserInputError(f"Cannot read the budget size in {text!r}: write e.g. linf:0.05.") from exc
    return Budget(kind, eps)


def distances(image: torch.Tensor, start: torch.Tensor) -> dict[str, float]:
    """L∞, L2 and RMS distance between two images in [0, 1] (any matching shapes)."""
    delta = (image.float().cpu() - start.float().cpu()).flatten()
    return {"linf": float(delta.abs().max()) if delta.numel() else 0.0, "l2": float(delta.norm()),
            "rms": float(delta.pow(2).mean().sqrt()) if delta.numel() else 0.0}


def quantize_8bit(image: torch.Tensor) -> torch.Tensor:
    """The image as ``save_png``/``png_bytes`` store it (rounded to 1/255 steps)."""
    return (image.clamp(0, 1) * 255 + 0.5).floor() / 255


def difference_image(image: torch.Tensor, start: torch.Tensor) -> torch.Tensor:
    """The change from ``start`` to ``image`` made visible: mid-grey = none, stretched to the largest change."""
    delta = image.float().cpu() - start.float().cpu()
    peak = float(delta.abs().max())
    return (0.5 + 0.5 * delta / peak).clamp(0, 1) if peak > 0 else torch.full_like(delta, 0.5)


@dataclass
class GrowResult:
    image: torch.Tensor  # C×H×W in [0, 1], CPU: the most confident image seen (inside the budget)
    start: torch.Tensor  # C×H×W: where it started
    model: str
    target: int
    label: str
    confidence: float  # p(target) of ``image``
    confidence_8bit: float  # p(target) of ``image`` rounded to 8 bits, i.e. of the saved PNG
    start_confidence: float
    top_class: int  # argmax of ``image``
    top_label: str
    reached: bool  # confidence ≥ goal
    goal: float
    steps: int  # steps taken (the loop's)
    best_step: int  # the step whose image is returned (0: the start)
    stopped: str | None
    seconds: float
    budget: str
    param: str
    source: dict  # family, seed, index (or "image"/"cppn")
    distance: dict[str, float]
    history: list[float]  # p(target) per step
    transfer: list[dict] = field(default_factory=list)

    def summary(self) -> dict:
        data = {k: v for k, v in asdict(self).items() if k not in ("image", "start")}
        data["history"] = [round(v, 6) for v in self.history]
        return data


def grow(
    model: LoadedModel,
    target: int | None = None,
    *,
    start: torch.Tensor | None = None,
    family: str = "uniform",
    seed: int = 0,
    index: int = 0,
    options: NoiseOptions = NoiseOptions(),
    budget: Budget | str | None = None,
    param: str = "pixel",
    steps: int = GROW_STEPS,
    lr: float = GROW_LR,
    goal: float = TARGET_CONFIDENCE,
    callback: ProgressCallback | None = None,
    should_stop: ShouldStop | None = None,
) -> GrowResult:
    """Gradient ascent on log p(target) until p ≥ ``goal`` or ``steps`` run out.

    The start is ``start`` (an image in [0, 1]) or sample ``index`` of a noise family; ``target``
    None means the start's current top class. ``param="pixel"`` optimises pixels (sigmoid
    logits, no colour decorrelation) and projects onto ``budget`` after every step (None: :data:`DEFAULT_BUDGET`,
    the one default of the page, the CLI and the docs);
    ``param="cppn"`` grows a CPPN from its own random init (Nguyen et al.'s indirect encoding:
    a budget does not apply). It stops at the first image whose 8-bit PNG also reaches ``goal`` and
    returns the most confident such image; otherwise the most confident image evaluated.
    """
    from ..optvis import objectives
    from ..optvis.optimise import ImageHandling, Progress, Schedule, Selection, optimise
    from ..optvis.param import make_param
    from ..optvis.render import model_score

    if budget is None:
        budget = Budget() if param == "cppn" else parse_budget(DEFAULT_BUDGET)
    budget = parse_budget(budget) if isinstance(budget, str) else budget
    if param not in ("pixel", "cppn"):
        raise UserInputError(f"Fooling images grow in the 'pixel' or 'cppn' parameterisation, not {param!r}.")
    if param == "cppn" and budget.kind != "none":
        raise UserInputError("A CPPN image is not a small change of a noise sample: "
                             "use --budget none with --param cppn.")
    limits.check("steps", steps, lo=1)
    limits.check("lr", lr)
    limits.check("seed", seed)
    limits.check("index", index)
    if not 0 < goal < 1:  # NaN fails this too
        raise UserInputError(f"The target confidence must lie in (0, 1), got {goal}.")
    device = model.device
    size = tuple(model.input_size)
    gen = devices.generator(device, seed)

    if param == "cppn":
        image_param = make_param("cppn", 1, size, channels=model.channels, generator=gen, device=device)
        with torch.no_grad():
            start_image = image_param()[0].detach()
        source = {"kind": "cppn", "seed": int(seed)}
    else:
        if start is not None:
            start_image = start.to(device, torch.float32)
            start_image = start_image[0] if start_image.ndim == 4 else start_image
            if tuple(start_image.shape[-2:]) != size:
                from ..images import fit

                start_image = fit(start_image, size, "crop")
            source = {"kind": "image"}
        else:
            if index < 0:
                raise UserInputError("The sample index must be ≥ 0.")
            start_image = samples_at(family, seed, [index], model.channels, size, device, options)[0]
            source = {"kind": "noise", "family": family, "seed": int(seed), "index": int(index),
                      "options": options.to_dict()}
        image_param = make_param("pixel", 1, size, channels=start_image.shape[0], decorrelated=False, device=device)
        image_param.set_image_(start_image[None])
    start_top, _, start_probs = top_prediction(model, start_image)
    target = start_top if target is None else int(target)
    if not 0 <= target < model.num_classes:
        raise UserInputError(f"Class {target} is out of range: {model.name} has classes 0–{model.num_classes - 1}.")

    start_batch = start_image[None]
    project = None
    if param == "pixel":
        def project(p) -> None:
            with torch.no_grad():
                p.set_image_(budget.project(p(), start_batch))

    log_p = model_score(model, objectives.class_probability(target, log=True), use_autocast=False)
    log_goal = math.log(goal)

    def score(image: torch.Tensor, transformed: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        values = log_p(image, transformed)
        return values, {"p": values.detach().exp()}

    def fools_as_saved(image: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        # An image at 0.9961 in float can fall to 0.9959 in its PNG: accept only images whose 8-bit
        # version reaches the goal too (one extra forward, only near the goal).
        ok = values >= log_goal
        if bool(ok.any()):
            saved = quantize_8bit(image)
            ok = ok & (log_p(saved, saved) >= log_goal)
        return ok

    result = optimise(image_param, score, Schedule(steps=int(steps), lr=lr),
                      handling=ImageHandling(generator=gen, project=project),
                      progress=Progress(callback=callback, should_stop=should_stop, progress_values="p"),
                      selection=Selection(accept=fools_as_saved, stop_on_accept=True))
    image = result.best_images[0].float()
    top, _, probs = top_prediction(model, image)
    confidence = float(probs[target])
    confidence_8bit = float(top_prediction(model, quantize_8bit(image))[2][target])
    return GrowResult(
        image=image.cpu(), start=start_image.float().cpu(), model=model.name, target=target, label=model.label(target),
        confidence=confidence, confidence_8bit=confidence_8bit, start_confidence=float(start_probs[target]),
        top_class=top, top_label=model.label(top),
        reached=confidence >= goal, goal=goal, steps=result.steps_done, best_step=int(result.best_steps[0]),
        stopped=result.stopped, seconds=result.seconds, budget=str(budget), param=param, source=source,
        distance=distances(image, start_image), history=[float(v) for v in result.metrics["p"][:, 0]],
    )


def with_transfer(result: GrowResult, model: LoadedModel, others: Sequence[LoadedModel] | None = None) -> GrowResult:
    """The result with its transfer table: the source model first, then ``others`` (default: every
    registry model of the same family that loads offline)."""
    skipped: list[dict] = []
    if others is None:
        others, skipped = transfer_models(model)
    table = transfer_table(result.image, result.target, [model, *others], skipped)
    return replace(result, transfer=table)

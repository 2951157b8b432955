"""The one optimisation loop. Feature visualisation, inversion, DeepDream, fooling images and
audio dreams all run through :func:`optimise`; they differ only in parameterisation, score,
transforms and the optional projection after each step.

The loop keeps its own books, so callers need no mutable closures around it: the score may return
per-item metrics beside its values (their history is kept), an optional acceptance check picks the
best *accepted* image and its step, and the final image is scored by the loop itself.
Its bookkeeping stays on the device (finiteness, last finite image, best image) and is read back
only every ``check_every`` steps, so a CUDA step does not wait for the host.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping, Union

import torch

from ..progress import CANCELLED, TARGET_REACHED, ProgressCallback, ShouldStop, stop_requested
from .param import ImageParam
from .transforms import Transform

# score(image, transformed) -> values [B] to maximise, or (values, {metric name: [B]})
ScoreOutput = Union[torch.Tensor, "tuple[torch.Tensor, Mapping[str, torch.Tensor]]"]
Score = Callable[[torch.Tensor, torch.Tensor], ScoreOutput]
# accept(image, values) -> [B] bool: may this image be returned as a result (e.g. it fools at 8 bits)?
Accept = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

LR_SCHEDULES = ("constant", "cosine")

__all__ = ["Accept", "LR_SCHEDULES", "OptimisationResult", "ProgressCallback", "Score", "optimise", "split_score"]


@dataclass
class OptimisationResult:
    images: torch.Tensor  # B×C×H×W in [0, 1], on the CPU; the final image (the last finite one after a divergence)
    history: torch.Tensor  # steps_done × B score values (image of each step, before its update), on the CPU
    steps_done: int  # optimiser steps taken with a finite objective
    snapshots: dict[int, torch.Tensor] = field(default_factory=dict)  # step -> images (thresholds)
    stopped: str | None = None  # None (finished), CANCELLED, TARGET_REACHED or "diverged: …"
    seconds: float = 0.0
    metrics: dict[str, torch.Tensor] = field(default_factory=dict)  # name -> steps_done × B, CPU
    final_values: torch.Tensor | None = None  # [B] score of ``images`` (no transforms, no gradient), CPU
    final_metrics: dict[str, torch.Tensor] = field(default_factory=dict)  # name -> [B] on ``images``
    # With keep_best/accept: per item, the accepted image with the highest value (if none was accepted,
    # the highest value overall); best_steps counts optimiser steps before it (0: the start).
    best_images: torch.Tensor | None = None
    best_values: torch.Tensor | None = None
    best_steps: torch.Tensor | None = None
    best_accepted: torch.Tensor | None = None

    @property
    def diverged(self) -> bool:
        return bool(self.stopped and self.stopped.startswith("diverged"))


def split_score(output: ScoreOutput) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """A score's output as ``(values, metrics)``."""
    if isinstance(output, tuple):
        values, metrics = output
        return values, dict(metrics)
    return output, {}


class _Best:
    """Per item, the image ranked highest by (accepted, value); all on the device."""

    def __init__(self, image: torch.Tensor, values: torch.Tensor):
        self.image = image.detach().clone()
        self.values = torch.full_like(values.detach().float(), -float("inf"))
        self.accepted = torch.zeros(values.shape, dtype=torch.bool, device=values.device)
        self.step = torch.zeros(values.shape, dtype=torch.long, device=values.device)

    @torch.no_grad()
    def offer(self, image: torch.Tensor, values: torch.Tensor, accepted: torch.Tensor, step: int | torch.Tensor) -> None:
        values = values.detach().float()
        usable = torch.isfinite(values)
        accepted = accepted.to(torch.bool) & usable
        better = usable & ((accepted & ~self.accepted) | ((accepted == self.accepted) & (values > self.values)))
        self.values = torch.where(better, values, self.values)
        self.accepted = torch.where(better, accepted, self.accepted)
        self.step = torch.where(better, torch.as_tensor(step, device=self.step.device), self.step)
        mask = better.view(-1, *([1] * (image.ndim - 1)))
        self.image = torch.where(mask, image.detach(), self.image)


def _lr_factor(schedule: str, step: int, steps: int) -> float:
    """Multiplier of the base learning rate at ``step`` (1-based)."""
    if schedule == "constant" or steps <= 1:
        return 1.0
    if schedule == "cosine":  # from 1 down to 0.1 over the run
        import math

        return 0.1 + 0.45 * (1 + math.cos(math.pi * (step - 1) / (steps - 1)))
    raise ValueError(f"Unknown learning-rate schedule {schedule!r}; choose from {', '.join(LR_SCHEDULES)}.")


def optimise(
    param: ImageParam,
    score: Score,
    *,
    steps: int,
    lr: float = 0.05,
    lr_schedule: str = "constant",
    transforms: Transform | None = None,
    generator: torch.Generator | None = None,
    blur_every: int = 0,
    blur_sigma: float = 0.5,
    project: Callable[[ImageParam], None] | None = None,
    thresholds: Iterable[int] = (),
    callback: ProgressCallback | None = None,
    should_stop: ShouldStop | None = None,
    stop_when: Callable[[torch.Tensor], bool] | None = None,
    accept: Accept | None = None,
    keep_best: bool = False,
    stop_on_accept: bool = False,
    final_score: Score | None = None,
    progress_values: str | None = None,
    weight_decay: float = 0.0,
    check_every: int | None = None,
) -> OptimisationResult:
    """Adam on ``param`` maximising ``score(image, transforms(image))`` summed over the batch.

    * ``score`` returns values [B], or ``(values, metrics)`` with metrics a dict of [B] tensors whose
      history the result keeps (``progress_values`` names the metric callbacks receive as ``values``).
    * ``accept(image, values) -> [B] bool`` (implies ``keep_best``): the result carries, per item, the
      best accepted image and its step; ``stop_on_accept`` stops once every item has one.
    * The final image is scored by the loop: ``final_score`` (default ``score``) on the untransformed
      image, without gradients, into ``final_values``/``final_metrics``.
    * Stops early when ``should_stop()`` (→ ``CANCELLED``), ``stop_when(values)`` (→ ``TARGET_REACHED``),
      or the score turns NaN/inf (→ ``"diverged: …"``, keeping the last finite image).
    * ``check_every``: how often the host reads the device-side bookkeeping (finiteness, targets) and
      calls ``callback``; default every step on CPU, every 16 steps elsewhere.
    """
    start = time.perf_counter()
    if lr_schedule not in LR_SCHEDULES:
        raise ValueError(f"Unknown learning-rate schedule {lr_schedule!r}; choose from {', '.join(LR_SCHEDULES)}.")
    params = list(param.parameters())
    device = params[0].device if params else torch.device("cpu")
    every = max(1, int(check_every or (1 if device.type == "cpu" else 16)))
    keep_best = keep_best or accept is not None
    marks = {int(t) for t in thresholds if 0 < int(t) <= steps}
    optimizer = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    history: list[torch.Tensor] = []
    metric_history: dict[str, list[torch.Tensor]] = {}
    snapshots: dict[int, torch.Tensor] = {}
    stopped: str | None = None
    with torch.no_grad():
        last_good = param().detach().clone()  # the last image whose objective was finite
    all_finite = torch.ones((), dtype=torch.bool, device=device)
    first_bad = torch.zeros((), dtype=torch.long, device=device)  # 1-based step of the first non-finite objective
    bad_was_nan = torch.zeros((), dtype=torch.bool, device=device)
    best: _Best | None = None

    for step in range(1, steps + 1):
        if stop_requested(should_stop):
            stopped = CANCELLED
            break
        for group in optimizer.param_groups:
            group["lr"] = lr * _lr_factor(lr_schedule, step, steps)
        optimizer.zero_grad(set_to_none=True)
        image = param()
        transformed = transforms(image, generator) if transforms is not None else image
        values, metrics = split_score(score(image, transformed))
        loss = -values.sum()
        finite = torch.isfinite(loss.detach())
        newly_bad = all_finite & ~finite
        first_bad = torch.where(newly_bad, torch.full_like(first_bad, step), first_bad)
        bad_was_nan = torch.where(newly_bad, torch.isnan(loss.detach()), bad_was_nan)
        all_finite = all_finite & finite
        seen = image.detach()
        last_good = torch.where(all_finite, seen, last_good)
        check = step % every == 0 or step == steps
        if check and not bool(all_finite):
            break
        loss.backward()
        optimizer.step()
        if project is not None:
            project(param)
        if blur_every and step % blur_every == 0 and param.settable:
            param.blur_(blur_sigma)
        values = values.detach()
        history.append(values)
        for name, value in metrics.items():
            metric_history.setdefault(name, []).append(value.detach())
        if keep_best:
            best = best or _Best(seen, values)
            with torch.no_grad():
                ok = accept(seen, values) if accept is not None else torch.ones_like(values, dtype=torch.bool)
            best.offer(seen, values, ok & all_finite, step - 1)
        if step in marks:
            with torch.no_grad():
                snapshots[step] = param().detach().float().cpu()
        if callback is not None and check:
            shown = metrics[progress_values].detach() if progress_values else values
            callback(step, steps, seen, shown)
        if check and stop_when is not None and stop_when(values):
            stopped = TARGET_REACHED
            break
        if check and stop_on_accept and best is not None and bool(best.accepted.all()):
            stopped = TARGET_REACHED
            break

    steps_done = len(history)
    if not bool(all_finite):
        bad = int(first_bad)
        steps_done = min(steps_done, bad - 1)
        kind = "nan" if bool(bad_was_nan) else "inf"
        stopped = f"diverged: the objective became {kind} at step {bad}; kept the last finite image"
        final = last_good
        snapshots = {s: img for s, img in snapshots.items() if s < bad}
    else:
        with torch.no_grad():
            final = param().detach()
        if not torch.isfinite(final).all():
            final = last_good
            stopped = stopped or "diverged: the parameters became non-finite; kept the last finite image"
    history = history[:steps_done]
    metric_history = {name: values[:steps_done] for name, values in metric_history.items()}

    with torch.no_grad():
        final_values, final_metrics = split_score((final_score or score)(final, final))
        if keep_best and not (stopped or "").startswith("diverged"):
            rank = final_values if final_score is None else split_score(score(final, final))[0]
            best = best or _Best(final, rank)
            ok = accept(final, rank) if accept is not None else torch.ones_like(rank, dtype=torch.bool)
            best.offer(final, rank, ok, steps_done)

    batch = final.shape[0]
    return OptimisationResult(
        images=final.float().cpu(),
        history=torch.stack(history).float().cpu() if history else torch.zeros(0, batch),
        steps_done=steps_done,
        snapshots=snapshots,
        stopped=stopped,
        seconds=time.perf_counter() - start,
        metrics={name: (torch.stack(v).float().cpu() if v else torch.zeros(0, batch)) for name, v in metric_history.items()},
        final_values=final_values.detach().float().cpu(),
        final_metrics={name: v.detach().float().cpu() for name, v in final_metrics.items()},
        best_images=best.image.float().cpu() if best is not None else None,
        best_values=best.values.cpu() if best is not None else None,
        best_steps=best.step.cpu() if best is not None else None,
        best_accepted=best.accepted.cpu() if best is not None else None,
    )

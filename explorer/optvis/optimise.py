"""The one optimisation loop. Feature visualisation, inversion, DeepDream, fooling images and
audio dreams all run through :func:`optimise`; they differ only in parameterisation, score,
transforms and the optional projection after each step."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Iterable, Protocol

import torch

from .param import ImageParam
from .transforms import Transform

# score(image, transformed) -> per-image values to maximise, shape [B]
Score = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class ProgressCallback(Protocol):
    def __call__(self, step: int, total: int, preview: torch.Tensor, values: torch.Tensor) -> None: ...


@dataclass
class OptimisationResult:
    images: torch.Tensor  # B×C×H×W in [0, 1], on the CPU; the last finite image
    history: torch.Tensor  # steps_done × B score values, on the CPU
    steps_done: int
    snapshots: dict[int, torch.Tensor] = field(default_factory=dict)  # step -> images (thresholds)
    stopped: str | None = None  # None (finished), "cancelled", "target reached" or "diverged: …"
    seconds: float = 0.0

    @property
    def diverged(self) -> bool:
        return bool(self.stopped and self.stopped.startswith("diverged"))


def optimise(
    param: ImageParam,
    score: Score,
    *,
    steps: int,
    lr: float = 0.05,
    transforms: Transform | None = None,
    generator: torch.Generator | None = None,
    blur_every: int = 0,
    blur_sigma: float = 0.5,
    project: Callable[[ImageParam], None] | None = None,
    thresholds: Iterable[int] = (),
    callback: ProgressCallback | None = None,
    should_stop: Callable[[], bool] | None = None,
    stop_when: Callable[[torch.Tensor], bool] | None = None,
    weight_decay: float = 0.0,
) -> OptimisationResult:
    """Adam on ``param`` maximising ``score(image, transforms(image)).sum()``.

    Stops early when ``should_stop()`` (cancel) or ``stop_when(values)`` (a target) is true,
    and when the score turns NaN/inf, keeping the last finite image.
    """
    import time

    start = time.perf_counter()
    marks = {int(t) for t in thresholds if 0 < int(t) <= steps}
    optimizer = torch.optim.Adam(param.parameters(), lr=lr, weight_decay=weight_decay)
    history: list[torch.Tensor] = []
    snapshots: dict[int, torch.Tensor] = {}
    stopped: str | None = None
    last_good: torch.Tensor | None = None

    for step in range(1, steps + 1):
        if should_stop is not None and should_stop():
            stopped = "cancelled"
            break
        optimizer.zero_grad(set_to_none=True)
        image = param()
        transformed = transforms(image, generator) if transforms is not None else image
        values = score(image, transformed)
        loss = -values.sum()
        if not torch.isfinite(loss):
            bad = "nan" if math.isnan(loss.item()) else "inf"
            stopped = f"diverged: the objective became {bad} at step {step}; kept the last finite image"
            break
        last_good = image.detach()
        loss.backward()
        optimizer.step()
        if project is not None:
            project(param)
        if blur_every and step % blur_every == 0 and param.settable:
            param.blur_(blur_sigma)
        values = values.detach()
        history.append(values)
        if step in marks:
            with torch.no_grad():
                snapshots[step] = param().detach().float().cpu()
        if callback is not None:
            callback(step, steps, last_good, values)
        if stop_when is not None and stop_when(values):
            stopped = "target reached"
            break
    with torch.no_grad():
        final = param().detach()
    if stopped is not None and stopped.startswith("diverged") and last_good is not None:
        final = last_good  # the last image whose objective was finite
    elif not torch.isfinite(final).all():
        final = last_good if last_good is not None else torch.full_like(final, 0.5)
        stopped = stopped or "diverged: the parameters became non-finite; kept the last finite image"
    hist = torch.stack(history).float().cpu() if history else torch.zeros(0, final.shape[0])
    return OptimisationResult(
        images=final.float().cpu(),
        history=hist,
        steps_done=len(history),
        snapshots=snapshots,
        stopped=stopped,
        seconds=time.perf_counter() - start,
    )

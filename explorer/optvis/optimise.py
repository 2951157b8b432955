"""The one optimisation loop. Feature visualisation, inversion, DeepDream, fooling images and
audio dreams all run through :func:`optimise`; they differ only in parameterisation, score,
transforms and the optional projection after each step.

The loop keeps its own books, so callers need no mutable closures around it: the score may return
per-item metrics beside its values (their history is kept), an optional acceptance check picks the
best *accepted* image and its step, and the final image is scored by the loop itself.
Its bookkeeping stays on the device (finiteness, last finite image, best image) and is read back
only every ``check_every`` steps, so a CUDA step does not wait for the host.

Its options come in five small groups, each with defaults, so a call names only what it changes:
:class:`Schedule` (how long and how fast), :class:`ImageHandling` (what the score sees and what
happens to the parameters after a step), :class:`Progress` (what the caller sees and how it stops the
run), :class:`Selection` (which image is the result and how it is scored) and :class:`Execution`
(graph or eager, and how often the host looks).
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

__all__ = [
    "Accept", "Execution", "ImageHandling", "LR_SCHEDULES", "OptimisationResult", "Progress", "ProgressCallback",
    "Schedule", "Score", "Selection", "optimise", "split_score",
]


@dataclass(frozen=True)
class Schedule:
    """How long and how fast: ``steps`` of Adam at ``lr``, ``lr_schedule`` "constant" or "cosine" (× 1 → 0.1),
    with momentum ``beta1`` (Adam's β1; β2 stays 0.999)."""

    steps: int
    lr: float = 0.05
    lr_schedule: str = "constant"
    weight_decay: float = 0.0
    beta1: float = 0.9


@dataclass(frozen=True)
class ImageHandling:
    """What the score sees and what happens to the parameters after each update.

    ``transforms`` (drawing from ``generator``) make the ``transformed`` image the score receives;
    ``project(param)`` runs after every step (budgets); every ``blur_every`` steps the parameters are
    blurred by ``blur_sigma`` (0: never).
    """

    transforms: Transform | None = None
    generator: torch.Generator | None = None
    blur_every: int = 0
    blur_sigma: float = 0.5
    project: Callable[[ImageParam], None] | None = None


@dataclass(frozen=True)
class Progress:
    """What the caller sees during the run, and how it ends it early.

    ``callback`` is called every ``Execution.check_every`` steps with the score values, or with the metric
    ``progress_values`` names; ``thresholds`` are the steps whose images are kept as snapshots. The run
    stops when ``should_stop()`` (→ ``CANCELLED``) or ``stop_when(values)`` (→ ``TARGET_REACHED``).
    """

    callback: ProgressCallback | None = None
    should_stop: ShouldStop | None = None
    stop_when: Callable[[torch.Tensor], bool] | None = None
    thresholds: Iterable[int] = ()
    progress_values: str | None = None


@dataclass(frozen=True)
class Selection:
    """Which image is the result, and how it is scored.

    ``accept(image, values) -> [B] bool`` (implies ``keep_best``): the result carries, per item, the best
    accepted image and its step; ``stop_on_accept`` stops once every item has one. ``final_score``
    (default: the loop's score) scores the final image, untransformed and without gradients.
    """

    accept: Accept | None = None
    keep_best: bool = False
    stop_on_accept: bool = False
    final_score: Score | None = None


@dataclass(frozen=True)
class Execution:
    """How the steps run: ``graph`` ("auto"/True: capture a CUDA graph on CUDA) and ``check_every`` (how often
    the host reads the device-side books and calls back; default 1 on CPU, 16 elsewhere)."""

    graph: bool | str = False
    check_every: int | None = None


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
    # which path ran the steps: "graph", or "eager: <why>" ("not requested", "CPU", "capture failed: …")
    path: str = ""

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
    """Per item, the image ranked highest by (accepted, value); all on the device, updated in place."""

    def __init__(self, image: torch.Tensor, values: torch.Tensor):
        self.image = image.detach().clone()
        self.values = torch.full_like(values.detach().float(), -float("inf"))
        self.accepted = torch.zeros(values.shape, dtype=torch.bool, device=values.device)
        self.step = torch.zeros(values.shape, dtype=torch.long, device=values.device)

    @torch.no_grad()
    def offer(self, image: torch.Tensor, values: torch.Tensor, accepted: torch.Tensor,
              step: int | torch.Tensor) -> None:
        values = values.detach().float()
        usable = torch.isfinite(values)
        accepted = accepted.to(torch.bool) & usable
        better = usable & ((accepted & ~self.accepted) | ((accepted == self.accepted) & (values > self.values)))
        self.values.copy_(torch.where(better, values, self.values))
        self.accepted.copy_(torch.where(better, accepted, self.accepted))
        self.step.copy_(torch.where(better, torch.as_tensor(step, device=self.step.device), self.step))
        mask = better.view(-1, *([1] * (image.ndim - 1)))
        self.image.copy_(torch.where(mask, image.detach(), self.image))


def _lr_factor(schedule: str, step: int, steps: int) -> float:
    """Multiplier of the base learning rate at ``step`` (1-based)."""
    if schedule == "constant" or steps <= 1:
        return 1.0
    if schedule == "cosine":  # from 1 down to 0.1 over the run
        import math

        return 0.1 + 0.45 * (1 + math.cos(math.pi * (step - 1) / (steps - 1)))
    raise ValueError(f"Unknown learning-rate schedule {schedule!r}; choose from {', '.join(LR_SCHEDULES)}.")


class _Step:
    """One optimisation step and its device-side books, written so a CUDA graph can capture it.

    Everything a step needs from the host is on the device before it runs (the step counter, the
    transforms' random numbers, the learning rate), and everything it records goes into preallocated
    buffers indexed by the counter: the same code runs eagerly (CPU, first steps) or as a graph replay.
    """

    def __init__(self, param: ImageParam, score: Score, transforms: Transform | None, generator: torch.Generator | None,
                 optimizer: torch.optim.Optimizer, steps: int, lr_table: torch.Tensor, lr_tensor: torch.Tensor | None,
                 keep_best: bool, accept: Accept | None, device: torch.device):
        self.param, self.score, self.transforms, self.generator = param, score, transforms, generator
        self.optimizer, self.steps, self.lr_table, self.lr_tensor = optimizer, steps, lr_table, lr_tensor
        self.track_best_inside = keep_best and accept is None  # accept may read values on the host: run it outside
        self.device = device
        with torch.no_grad():
            start = param().detach()
        batch = start.shape[0]
        draws = int(getattr(transforms, "draws", 0)) if hasattr(transforms, "apply") else 0
        # transforms that take their random numbers as a tensor get the whole run's up front, on the device
        self.table = torch.rand(steps, batch, draws, generator=generator, device=device) if draws and steps else None
        self.counter = torch.zeros((), dtype=torch.long, device=device)  # 0-based index of the next step
        self.all_finite = torch.ones((), dtype=torch.bool, device=device)
        # the 1-based step of the first non-finite objective
        self.first_bad = torch.zeros((), dtype=torch.long, device=device)
        self.bad_was_nan = torch.zeros((), dtype=torch.bool, device=device)
        self.last_good = start.clone()  # the last image whose objective was finite
        self.history = torch.zeros(steps, batch, device=device)
        self.metrics: dict[str, torch.Tensor] | None = None
        self.best: _Best | None = None
        self.keep_best = keep_best
        # outputs of the latest step (a graph's static outputs)
        self.image: torch.Tensor | None = None
        self.values: torch.Tensor | None = None
        self.step_metrics: dict[str, torch.Tensor] = {}
        self.finite: torch.Tensor | None = None

    def run(self) -> None:
        index = self.counter.view(1)
        if self.lr_tensor is not None:
            self.lr_tensor.copy_(self.lr_table.index_select(0, index)[0])
        image = self.param()
        if self.table is not None:
            transformed = self.transforms.apply(image, self.table.index_select(0, index)[0])
        elif self.transforms is not None:
            transformed = self.transforms(image, self.generator)
        else:
            transformed = image
        values, metrics = split_score(self.score(image, transformed))
        loss = -values.sum()
        with torch.no_grad():
            seen, done = image.detach(), values.detach().float()
            finite = torch.isfinite(loss.detach())
            newly_bad = self.all_finite & ~finite
            self.first_bad.copy_(torch.where(newly_bad, self.counter + 1, self.first_bad))
            self.bad_was_nan.copy_(torch.where(newly_bad, torch.isnan(loss.detach()), self.bad_was_nan))
            self.all_finite.copy_(self.all_finite & finite)
            self.last_good.copy_(torch.where(self.all_finite, seen, self.last_good))
            self.history.index_copy_(0, index, done[None])
            if self.metrics is None:
                self.metrics = {name: torch.zeros(self.steps, *v.shape, device=self.device)
                                for name, v in metrics.items()}
            for name, value in metrics.items():
                self.metrics[name].index_copy_(0, index, value.detach().float()[None])
            if self.track_best_inside:
                self.best = self.best or _Best(seen, done)
                self.best.offer(seen, done, self.all_finite.expand_as(done), self.counter)
        loss.backward()
        self.optimizer.step()
        with torch.no_grad():
            self.counter.add_(1)
        self.image, self.values, self.step_metrics, self.finite = seen, done, metrics, finite

    def zero_grad(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)


class _CudaGraph:
    """Replays a captured :class:`_Step` (no kernel-launch or Python cost per step); None when capture fails."""

    WARMUP = 3  # eager steps on a side stream before capture (lazy CUDA initialisation happens there)

    def __init__(self, step: _Step):
        self.step = step
        self.graph = None
        self.failure: str | None = None  # why the capture failed, for OptimisationResult.path

    def warm_up(self) -> None:
        stream = torch.cuda.Stream(self.step.device)
        stream.wait_stream(torch.cuda.current_stream(self.step.device))
        with torch.cuda.stream(stream):
            self.step.zero_grad()
            self.step.run()
        torch.cuda.current_stream(self.step.device).wait_stream(stream)

    def capture(self) -> bool:
        """Capture one step; True on success (the captured step has NOT run yet: replay it)."""
        graph = torch.cuda.CUDAGraph()
        self.step.zero_grad()  # backward then allocates the gradients from the graph's pool
        try:
            # thread_local: another session's CUDA work in another thread neither breaks nor is broken by the capture
            with torch.cuda.graph(graph, capture_error_mode="thread_local"):
                self.step.run()
        except Exception as error:  # an unsupported op (host sync, data-dependent shape): stay eager
            torch.cuda.synchronize(self.step.device)
            self.step.zero_grad()
            self.failure = f"{type(error).__name__}: {error}"
            return False
        self.graph = graph
        return True

    def replay(self) -> None:
        self.graph.replay()


def _wants_graph(graph: bool | str, device: torch.device, transforms: Transform | None) -> bool:
    """CUDA graphs only on CUDA, and only when every random draw of a step is known before it runs."""
    if graph is False or graph == "off" or device.type != "cuda" or not torch.cuda.is_available():
        return False
    if transforms is not None and not hasattr(transforms, "apply"):
        return False  # a transform that draws from a generator itself: not replayable
    return getattr(torch.cuda, "CUDAGraph", None) is not None


def _why_eager(graph: bool | str, device: torch.device, transforms: Transform | None) -> str:
    """Why :func:`_wants_graph` said no, in the words of ``OptimisationResult.path``."""
    if graph is False or graph == "off":
        return "eager: not requested"
    if device.type != "cuda":
        return "eager: CPU" if device.type == "cpu" else f"eager: {device.type}, not CUDA"
    if not torch.cuda.is_available():
        return "eager: CUDA is not available"
    if transforms is not None and not hasattr(transforms, "apply"):
        return "eager: the transforms draw their own random numbers"
    return "eager: this torch has no CUDA graphs"


def _graph_optimizer(params: list[torch.Tensor], lr: torch.Tensor, weight_decay: float,
                     betas: tuple[float, float]) -> torch.optim.Optimizer:
    """Adam that a CUDA graph can capture: its step count and learning rate are device tensors."""
    return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, betas=betas, capturable=True)


def optimise(
    param: ImageParam,
    score: Score,
    schedule: Schedule,
    *,
    handling: ImageHandling = ImageHandling(),
    progress: Progress = Progress(),
    selection: Selection = Selection(),
    execution: Execution = Execution(),
) -> OptimisationResult:
    """Adam on ``param`` maximising ``score(image, transforms(image))`` summed over the batch.

    * ``score`` returns values [B], or ``(values, metrics)`` with metrics a dict of [B] tensors whose
      history the result keeps (``progress.progress_values`` names the metric callbacks receive as ``values``).
    * ``selection.accept(image, values) -> [B] bool`` (implies ``keep_best``): the result carries, per item,
      the best accepted image and its step; ``stop_on_accept`` stops once every item has one.
    * The final image is scored by the loop: ``selection.final_score`` (default ``score``) on the
      untransformed image, without gradients, into ``final_values``/``final_metrics``.
    * Stops early when ``progress.should_stop()`` (→ ``CANCELLED``), ``progress.stop_when(values)``
      (→ ``TARGET_REACHED``), or the score turns NaN/inf (→ ``"diverged: …"``, keeping the last finite image).
    * ``execution.check_every``: how often the host reads the device-side bookkeeping (finiteness, targets)
      and calls ``progress.callback``; default every step on CPU, every 16 steps elsewhere.
    * ``execution.graph``: on CUDA, capture the step in a CUDA graph after a few eager steps and replay it
      ("auto"/True); anywhere else, or when capture fails (an op that syncs with the host, a score with
      Python-side state), the loop stays eager, and ``OptimisationResult.path`` says why. The score must
      then be a pure function of its inputs.
    """
    # Set-up (before step 1): the options, the device-side books, and whether the steps run as a CUDA graph.
    start = time.perf_counter()
    steps, lr, lr_schedule = schedule.steps, schedule.lr, schedule.lr_schedule
    transforms, project, accept = handling.transforms, handling.project, selection.accept
    callback, progress_values = progress.callback, progress.progress_values
    if lr_schedule not in LR_SCHEDULES:
        raise ValueError(f"Unknown learning-rate schedule {lr_schedule!r}; choose from {', '.join(LR_SCHEDULES)}.")
    params = list(param.parameters())
    device = params[0].device if params else torch.device("cpu")
    every = max(1, int(execution.check_every or (1 if device.type == "cpu" else 16)))
    keep_best = selection.keep_best or accept is not None
    marks = {int(t) for t in progress.thresholds if 0 < int(t) <= steps}
    staged = hasattr(transforms, "set_step")  # coarse-to-fine: shapes change until the last stage starts
    warm_until = (transforms.last_start - 1 if staged else 0) + _CudaGraph.WARMUP  # eager steps before a capture
    wants_graph = _wants_graph(execution.graph, device, transforms)
    use_graph = wants_graph and steps > warm_until + 1
    if use_graph:
        path: str | None = None  # set by the capture: "graph", or why it failed
    elif wants_graph:
        path = "eager: too few steps to capture"
    else:
        path = _why_eager(execution.graph, device, transforms)
    lr_table = torch.tensor([lr * _lr_factor(lr_schedule, i, steps) for i in range(1, steps + 1)] or [lr],
                            dtype=torch.float32, device=device)
    lr_tensor = torch.tensor(lr, dtype=torch.float32, device=device) if use_graph else None
    betas = (schedule.beta1, 0.999)
    optimizer = (_graph_optimizer(params, lr_tensor, schedule.weight_decay, betas) if use_graph
                 else torch.optim.Adam(params, lr=lr, weight_decay=schedule.weight_decay, betas=betas))
    books = _Step(param, score, transforms, handling.generator, optimizer, steps, lr_table, lr_tensor, keep_best,
                  accept, device)
    runner = _CudaGraph(books) if use_graph else None
    snapshots: dict[int, torch.Tensor] = {}
    stopped: str | None = None
    done = 0  # steps run

    for step in range(1, steps + 1):
        # 1. Stop if the caller asked to.
        if stop_requested(progress.should_stop):
            stopped = CANCELLED
            break
        # 2. Coarse-to-fine transforms move to this step's stage.
        if staged:
            transforms.set_step(step)
        # 3. The step itself: replay the captured graph, or warm up and capture it, or run it eagerly.
        if runner is not None and runner.graph is not None:
            runner.replay()
        elif runner is not None and step <= warm_until:
            runner.warm_up()
        elif runner is not None and runner.capture():
            runner.replay()
            path = "graph"
        else:
            if runner is not None:
                path = f"eager: capture failed: {runner.failure}"
            runner = None
            if lr_tensor is None:  # (with a tensor learning rate the step reads it from lr_table itself)
                for group in optimizer.param_groups:
                    group["lr"] = lr * _lr_factor(lr_schedule, step, steps)
            books.zero_grad()
            books.run()
        done = step
        # 4. Every ``every`` steps the host reads the books: a non-finite objective ends the run.
        check = step % every == 0 or step == steps
        if check and not bool(books.all_finite):
            break
        # 5. The parameters after the update: projection (budgets), then blur.
        if project is not None:
            project(param)
        if handling.blur_every and step % handling.blur_every == 0 and param.settable:
            param.blur_(handling.blur_sigma)
        # 6. The image this step scored is offered to the best-accepted books (accept may read the host).
        if accept is not None:
            books.best = books.best or _Best(books.image, books.values)
            with torch.no_grad():
                ok = accept(books.image, books.values)
            books.best.offer(books.image, books.values, ok & books.all_finite, step - 1)
        # 7. Snapshots at the thresholds.
        if step in marks:
            with torch.no_grad():
                snapshots[step] = param().detach().float().cpu()
        # 8. Progress to the caller.
        if callback is not None and check:
            shown = books.step_metrics[progress_values] if progress_values else books.values
            graphed = runner is not None  # a replay overwrites its outputs: hand out copies
            callback(step, steps, books.image.clone() if graphed else books.image,
                     shown.detach().float().clone() if graphed else shown.detach().float())
        # 9. Stop at the caller's target, or once every item has an accepted image.
        if check and progress.stop_when is not None and progress.stop_when(books.values):
            stopped = TARGET_REACHED
            break
        if check and selection.stop_on_accept and books.best is not None and bool(books.best.accepted.all()):
            stopped = TARGET_REACHED
            break

    # 10. The final image: after a divergence, the last finite one.
    steps_done = done
    if not bool(books.all_finite):
        bad = int(books.first_bad)
        steps_done = min(done, bad - 1)
        kind = "nan" if bool(books.bad_was_nan) else "inf"
        stopped = f"diverged: the objective became {kind} at step {bad}; kept the last finite image"
        final = books.last_good
        snapshots = {s: img for s, img in snapshots.items() if s < bad}
    else:
        with torch.no_grad():
            final = param().detach()
        if not torch.isfinite(final).all():
            final = books.last_good
            stopped = stopped or "diverged: the parameters became non-finite; kept the last finite image"
    best = books.best

    # 11. The loop scores the final image itself, and offers it to the best books.
    final_score = selection.final_score
    with torch.no_grad():
        final_values, final_metrics = split_score((final_score or score)(final, final))
        if keep_best and not (stopped or "").startswith("diverged"):
            rank = final_values if final_score is None else split_score(score(final, final))[0]
            best = best or _Best(final, rank)
            ok = accept(final, rank) if accept is not None else torch.ones_like(rank, dtype=torch.bool)
            best.offer(final, rank, ok, steps_done)

    # 12. The result, on the CPU.
    metrics = books.metrics or {}
    return OptimisationResult(
        images=final.float().cpu(),
        history=books.history[:steps_done].float().cpu(),
        steps_done=steps_done,
        snapshots=snapshots,
        stopped=stopped,
        seconds=time.perf_counter() - start,
        metrics={name: v[:steps_done].float().cpu() for name, v in metrics.items()},
        final_values=final_values.detach().float().cpu(),
        final_metrics={name: v.detach().float().cpu() for name, v in final_metrics.items()},
        best_images=best.image.float().cpu() if best is not None else None,
        best_values=best.values.cpu() if best is not None else None,
        best_steps=best.step.cpu() if best is not None else None,
        best_accepted=best.accepted.cpu() if best is not None else None,
        path=path or "eager: stopped before the capture",
    )

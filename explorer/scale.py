"""Scale-out on Ray: gallery builds and noise sweeps as Ray tasks, on this machine or a cluster.

The only module that imports ``ray`` — and only inside functions, so importing the library or
opening the app never starts (or even loads) Ray. Why this shape:

* **The driver is the single writer.** Workers load the model themselves (from its registry name
  and weights, a :class:`ModelRef`: a ``LoadedModel`` is never pickled), render a batch of units
  and return PNG bytes plus activations. The driver claims the batch in the store before it is
  scheduled, writes the files and marks the rows done, so the store's guarantees (atomic files,
  resumable, no duplicates, ``verify`` clean) are the in-process builder's.
* **Bounded loss.** At most ``2 × workers`` batches are in flight; a killed driver or a lost
  worker loses those batches only (the driver's claims die with its pid; a rerun takes them over).
* **Faults are data.** A batch whose task raises is marked ``failed`` in the store with the error
  and the build goes on; Ctrl-C stops scheduling, cancels what is in flight without waiting and
  gives its claims back.
* **Sweeps** split each family's sample range on :data:`~explorer.fooling.CHUNK` boundaries
  (sample ``i`` depends only on ``(seed, family, i)``), run one accumulator per piece and merge
  them in index order (:func:`~explorer.fooling.merge_in_order`, then :meth:`Sweep.set_accumulator
  <explorer.fooling.Sweep.set_accumulator>`).

Progress and stopping are the library's one mechanism (:mod:`explorer.progress`): ``callback(done, total,
None, None)`` and ``should_stop()``, a stop returning the partial result with ``stopped == CANCELLED``.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import math
import os
import socket
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Sequence

from .errors import UserInputError
from .gallery.catalogue import MAX
from .progress import CANCELLED, ProgressCallback, ShouldStop, stop_requested

if TYPE_CHECKING:  # pragma: no cover - typing only
    from .gallery.store import GalleryStore
    from .models.base import LoadedModel
    from .optvis.render import RenderSettings

LOCAL = "local"


# ==== models by reference ======================================================================
@dataclass(frozen=True)
class ModelRef:
    """How a worker gets the model: a registry name and weights, or an importable factory.

    ``factory`` ("package.module:function", called as ``function()``) serves models outside the
    registry (the tests' tiny nets). Every worker loads its own copy once per process.
    """

    name: str
    weights: str | None = None
    factory: str | None = None

    @classmethod
    def of(cls, model: "LoadedModel") -> "ModelRef":
        """The registry reference of a loaded model (its name and the weights it was loaded with)."""
        return cls(model.name, model.weights)

    def load(self, device: str = "auto") -> "LoadedModel":
        if self.factory:
            return _factory_model(self.factory, device)
        from .models import load_model

        return load_model(self.name, self.weights, device=device)


_FACTORY_CACHE: dict[tuple[str, str], Any] = {}


def _factory_model(factory: str, device: str) -> "LoadedModel":
    key = (factory, device)
    if key not in _FACTORY_CACHE:
        module_name, _, attr = factory.partition(":")
        model = getattr(importlib.import_module(module_name), attr)()
        if device not in ("auto", "cpu"):
            from . import devices

            model.device = devices.choose_device(device)
            model.module.to(model.device)
            model.preprocess.to(model.device)
        _FACTORY_CACHE[key] = model
    return _FACTORY_CACHE[key]


# ==== the cluster ==============================================================================
@dataclass(frozen=True)
class Cluster:
    """What the driver knows about the Ray instance it runs on."""

    address: str  # "local" or what was joined
    cpus: int
    gpus: int
    started_here: bool

    @property
    def use_gpu(self) -> bool:
        return self.gpus > 0

    @property
    def slots(self) -> int:
        """How many tasks run at once: one per GPU, else one per CPU."""
        return max(1, self.gpus if self.use_gpu else self.cpus)

    def describe(self) -> str:
        where = "local Ray instance" if self.address == LOCAL else f"Ray cluster at {self.address}"
        return f"{where}: {self.cpus} CPUs, {self.gpus} GPUs"


def _unreachable(address: str, reason: str) -> UserInputError:
    return UserInputError(f"Cannot reach a Ray cluster at {address} ({reason}); "
                          "start one there with `ray start --head`, "
                          "or run with `--ray` alone to use a local Ray instance on this machine.")


def check_address(address: str | None, timeout: float = 5.0) -> None:
    """Fail fast (one line) when a cluster address's host:port does not answer (ray.init would retry
    for a long time); None, "local" and "auto" pass."""
    if address in (None, "", LOCAL, "auto"):
        return
    target = address.split("://", 1)[-1]
    host, sep, port = target.rpartition(":")
    if not sep or not port.isdigit():
        raise UserInputError(f"Cannot read the Ray address {address!r}: write HOST:PORT (e.g. 10.0.0.5:6379), "
                             "ray://HOST:PORT, auto, or `--ray` alone for a local instance.")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout):
            pass
    except OSError as exc:
        raise _unreachable(address, exc.strerror or type(exc).__name__) from None


@contextlib.contextmanager
def cluster(address: str | None = None, *, num_cpus: int | None = None,
            num_gpus: int | None = None) -> Iterator[Cluster]:
    """A Ray instance for the duration of the block.

    ``address`` None/"local": start a local instance with every local CPU and GPU (or ``num_cpus``),
    no dashboard, quiet logs; "auto": join the cluster ``ray start`` runs on this machine; else
    join HOST:PORT (or ray://HOST:PORT). An instance already running in this process (tests) is
    reused and left running.
    """
    check_address(address)  # before importing ray: a typo costs a second, not a minute
    import ray

    started = False
    if not ray.is_initialized():
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # offline: no usage report
        quiet = dict(include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR, configure_logging=True)
        if address in (None, "", LOCAL):
            ray.init(num_cpus=num_cpus, num_gpus=num_gpus, **quiet)
        else:
            try:
                ray.init(address=address, **quiet)
            except Exception as exc:  # ConnectionError, RuntimeError, grpc errors: one line for the user
                raise _unreachable(address, " ".join(str(exc).split())[:200] or type(exc).__name__) from None
        started = True
    try:
        resources = ray.cluster_resources()
        yield Cluster(LOCAL if address in (None, "", LOCAL) else str(address), int(resources.get("CPU", 0)),
                      int(resources.get("GPU", 0)), started)
    finally:
        if started:
            ray.shutdown()


def _one_line(exc: BaseException) -> str:
    """The error a task raised, as one line (Ray wraps it with a traceback)."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, BaseException):
        exc = cause
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}"[:500] if text else type(exc).__name__


def _task_options(cluster_info: Cluster, retries: int) -> dict:
    options: dict[str, Any] = {"max_retries": int(retries), "retry_exceptions": False}
    if cluster_info.use_gpu:
        options.update(num_gpus=1, num_cpus=1)
    else:
        options.update(num_cpus=1)
    return options


def _set_worker_threads() -> str:
    """One torch thread per CPU the task was given (1 on a CPU worker); the device the task may use."""
    import ray
    import torch

    assigned = ray.get_runtime_context().get_assigned_resources()
    torch.set_num_threads(max(1, int(assigned.get("CPU", 1))))
    return "cuda" if assigned.get("GPU", 0) > 0 else "cpu"


# ==== gallery builds ===========================================================================
def _render_task(ref: ModelRef, layer: str, variant: str, settings: "RenderSettings", units: list[int]) -> dict:
    """Runs in a Ray worker: load the model (once per worker process), render, return bytes."""
    from .gallery.builder import render_units

    device = _set_worker_threads()
    model = ref.load(device)
    started = time.perf_counter()
    rendered = render_units(model, layer, variant, settings, units)
    return {"fingerprint": model.fingerprint, "rendered": rendered, "seconds": time.perf_counter() - started,
            "pid": os.getpid()}


@dataclass
class RayBuildReport:
    """What a Ray build did; units are counted per (layer, variant)."""

    rendered: dict[tuple[str, str], list[int]] = field(default_factory=dict)
    failed: dict[tuple[str, str], list[int]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    already_done: int = 0
    held_elsewhere: int = 0  # claimed by another live builder: left to it
    seconds: float = 0.0
    task_seconds: float = 0.0  # render time summed over tasks (worker side)
    tasks: int = 0
    workers: set[int] = field(default_factory=set)
    stopped: str | None = None

    @property
    def units_rendered(self) -> int:
        return sum(len(v) for v in self.rendered.values())

    @property
    def units_failed(self) -> int:
        return sum(len(v) for v in self.failed.values())

    @property
    def units_per_minute(self) -> float:
        return 60.0 * self.units_rendered / self.seconds if self.seconds else 0.0


def build_layers(model: "LoadedModel", layers: dict[str, Sequence[int] | None], settings: "RenderSettings", *,
                 store: "GalleryStore", cluster_info: Cluster, ref: ModelRef | None = None,
                 variants: Sequence[str] = (MAX,), batch: int = 16, lease: float = 120.0, retries: int = 1,
                 max_in_flight: int | None = None,
                 callback: ProgressCallback | None = None, should_stop: ShouldStop | None = None) -> RayBuildReport:
    """Render every missing (unit, variant) of ``layers`` (layer -> units, None: all) as Ray tasks.

    ``model`` is the driver's copy (layer shapes, weights fingerprint for the store keys); workers
    load ``ref`` (default: the model's registry name and weights) and must arrive at the same
    fingerprint, else their batch is marked failed. ``callback(units_finished, units_total, None, None)``
    counts finished units (stored, failed or found done). Call inside :func:`cluster`.
    """
    import ray

    from .gallery.builder import store_units
    from .gallery.catalogue import checked_request, lookup, unit_key, variant_settings
    from .gallery.store import new_worker_id

    started = time.perf_counter()
    ref = ref or ModelRef.of(model)
    worker = new_worker_id()
    report = RayBuildReport()
    jobs: deque = deque()
    total = 0
    for layer, unit_list in checked_request(model, layers, variants).items():
        for variant in variants:
            vsettings = variant_settings(settings, variant)
            store.remember_settings(vsettings.digest(), vsettings.to_dict())
            finished = set(lookup(store, model, layer, settings, variant, unit_list))
            report.already_done += len(finished)
            report.rendered[(layer, variant)], report.failed[(layer, variant)] = [], []
            pending = [unit_key(model, layer, settings, variant, u) for u in unit_list if u not in finished]
            per_batch = 1 if variant.startswith("facets") else max(1, int(batch))
            for i in range(0, len(pending), per_batch):
                jobs.append((layer, variant, vsettings, pending[i : i + per_batch]))
            total += len(unit_list)
    done = report.already_done
    if callback is not None:
        callback(done, total, None, None)

    remote = ray.remote(_render_task).options(**_task_options(cluster_info, retries))
    limit = max_in_flight or 2 * cluster_info.slots
    in_flight: dict[Any, tuple[str, str, list]] = {}
    last_renew = time.monotonic()
    try:
        while jobs or in_flight:
            if stop_requested(should_stop):
                report.stopped = CANCELLED
                break
            while jobs and len(in_flight) < limit:
                layer, variant, vsettings, keys = jobs.popleft()
                claimed = store.claim(keys, worker, lease=lease)
                skipped = len(keys) - len(claimed)
                if skipped:  # done meanwhile, or another live builder holds them
                    report.held_elsewhere += skipped
                    done += skipped
                if not claimed:
                    continue
                task = remote.remote(ref, layer, variant, vsettings, [k.unit for k in claimed])
                in_flight[task] = (layer, variant, claimed)
                report.tasks += 1
            if not in_flight:
                continue
            ready, _ = ray.wait(list(in_flight), num_returns=1, timeout=min(1.0, lease / 4))
            if time.monotonic() - last_renew > lease / 4:  # keep the claims of long batches
                store.renew([k for _, _, keys in in_flight.values() for k in keys], worker, lease)
                last_renew = time.monotonic()
            for task in ready:
                layer, variant, keys = in_flight.pop(task)
                try:
                    out = ray.get(task)
                    if out["fingerprint"] != model.fingerprint:
                        raise RuntimeError(f"the worker loaded different weights (fingerprint {out['fingerprint']}, "
                                           f"driver {model.fingerprint}): install the same weights on every node")
                except Exception as exc:  # the task raised, its worker died, or its weights differ
                    error = _one_line(exc)
                    store.fail(keys, worker, error)
                    report.failed[(layer, variant)] += [k.unit for k in keys]
                    report.errors.append(f"{layer} {variant} units {keys[0].unit}–{keys[-1].unit}: {error}")
                else:
                    entries = store_units(store, keys, worker, out["rendered"])
                    report.rendered[(layer, variant)] += [e.unit for e in entries]
                    report.task_seconds += out["seconds"]
                    report.workers.add(out["pid"])
                done += len(keys)
                if callback is not None:
                    callback(done, total, None, None)
    finally:  # also on Ctrl-C (KeyboardInterrupt propagates: the report is never returned)
        if in_flight:  # stop scheduling, wait for nothing: cancel and give the claims back
            for task in in_flight:
                with contextlib.suppress(Exception):
                    ray.cancel(task, force=True)
            store.release([k for _, _, keys in in_flight.values() for k in keys], worker)
        report.seconds = time.perf_counter() - started
    return report


# ==== noise sweeps =============================================================================
def _sweep_task(refs: list[ModelRef], m: int, family: str, seed: int, start: int, count: int, batch_size: int,
                options: Any, thresholds: list[float], gallery: int, use_autocast: bool) -> dict:
    """Runs in a Ray worker: samples ``start … start+count-1`` of one family through model ``m``."""
    from . import fooling

    device = _set_worker_threads()
    model = refs[m].load(device)
    acc = fooling.accumulate(model, family, seed, start, count, batch_size=batch_size, options=options,
                             thresholds=thresholds, gallery=gallery, use_autocast=use_autocast)
    return {"state": acc.state(), "fingerprint": model.fingerprint}


def sweep_pieces(n: int, pieces: int, chunk: int) -> list[tuple[int, int]]:
    """``(start, count)`` ranges covering ``0 … n-1`` in about ``pieces`` parts, cut on chunk boundaries."""
    chunks = math.ceil(n / chunk)
    per = max(1, math.ceil(chunks / max(1, pieces)))
    out = []
    for first in range(0, chunks, per):
        start = first * chunk
        out.append((start, min(n, (first + per) * chunk) - start))
    return out


def sweep(models: Sequence["LoadedModel"], families: Iterable[str] | str, n: int, *, cluster_info: Cluster,
          refs: Sequence[ModelRef] | None = None, pieces_per_slot: int = 2, retries: int = 1,
          callback: ProgressCallback | None = None, should_stop: ShouldStop | None = None, **kwargs) -> Any:
    """A noise sweep split over Ray tasks; the same :class:`~explorer.fooling.SweepResult` (and JSON,
    timings aside) as the in-process :func:`~explorer.fooling.sweep` with the same arguments.

    ``models`` are the driver's copies (labels, class counts); workers load ``refs``. Each family's
    samples are cut on chunk boundaries into about ``pieces_per_slot × slots`` tasks per model.
    ``should_stop()`` cancels the pieces not finished yet: the result (``stopped`` :data:`CANCELLED`)
    then holds the finished pieces' samples only. ``callback(samples_done, total, None, None)``.
    """
    import ray

    from . import fooling

    sweeper = fooling.Sweep(list(models), families, n, **kwargs)
    refs = list(refs or [ModelRef.of(m) for m in sweeper.models])
    pieces = sweep_pieces(sweeper.n, pieces_per_slot * cluster_info.slots, fooling.CHUNK)
    remote = ray.remote(_sweep_task).options(**_task_options(cluster_info, retries))
    started = time.perf_counter()
    tasks: dict[Any, tuple[int, str, int]] = {}
    for m in range(len(sweeper.models)):
        for family in sweeper.families:
            for start, count in pieces:
                task = remote.remote(refs, m, family, sweeper.seed, start, count, sweeper.batch_size, sweeper.options,
                                     sweeper.thresholds, sweeper.gallery, sweeper.use_autocast)
                tasks[task] = (m, family, start)
    parts: dict[tuple[int, str], dict[int, Any]] = {}
    done = 0
    pending = list(tasks)
    try:
        while pending:
            if stop_requested(should_stop):
                sweeper.stopped = CANCELLED
                break
            ready, pending = ray.wait(pending, num_returns=1, timeout=1.0)
            for task in ready:
                m, family, start = tasks[task]
                try:
                    out = ray.get(task)
                except Exception as exc:  # a failed piece fails the sweep: statistics with a hole would mislead
                    raise UserInputError(f"A sweep piece ({family}, samples from {start}) failed on Ray: "
                                         f"{_one_line(exc)}. Sweeps are reproducible: run it again.") from None
                if out["fingerprint"] != sweeper.models[m].fingerprint:
                    raise UserInputError(f"A Ray worker loaded different weights for {sweeper.models[m].name} "
                                         f"(fingerprint {out['fingerprint']}): install the same weights on every node.")
                acc = fooling.Accumulator.from_state(out["state"], sweeper.models[m].device)
                parts.setdefault((m, family), {})[start] = acc
                done += acc.n
                if callback is not None:
                    callback(done, sweeper.total, None, None)
    finally:
        for task in pending:  # stopped or failed: wait for nothing
            with contextlib.suppress(Exception):
                ray.cancel(task, force=True)
    for (m, family), by_start in sorted(parts.items(), key=lambda kv: (kv[0][0], sweeper.families.index(kv[0][1]))):
        sweeper.set_accumulator(m, family, fooling.merge_in_order([by_start[s] for s in sorted(by_start)]))
    sweeper.seconds = time.perf_counter() - started
    return sweeper.result()

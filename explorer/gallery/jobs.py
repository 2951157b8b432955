"""Gallery builds in a background thread: the page's "build the missing units" keeps running while the
user browses, and every rerun (of any session) finds the same job and its progress.

No Streamlit here: a job is a thread around :func:`~explorer.gallery.builder.build` with a progress
count in units, a cancel flag and the error, if any. Jobs live in a process-wide table keyed by
(model, weights fingerprint, layer, settings digest), so two sessions asking for the same layer share
one job, and the store's claims keep any other builder (CLI, Ray) from rendering a unit twice.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Sequence

from ..models.base import LoadedModel
from ..optvis import RenderSettings
from .builder import BuildReport, build
from .catalogue import MAX
from .store import GalleryStore

JobKey = tuple[str, str, str, str]


@dataclass
class BuildJob:
    """One background build of some units of a layer."""

    key: JobKey
    units: list[int]
    total: int
    done: float = 0.0
    started: float = field(default_factory=time.time)
    finished: float | None = None
    error: str | None = None
    report: BuildReport | None = None
    _cancel: threading.Event = field(default_factory=threading.Event, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)

    @property
    def running(self) -> bool:
        return self.finished is None

    @property
    def fraction(self) -> float:
        return min(1.0, self.done / self.total) if self.total else 1.0

    def cancel(self) -> None:
        """Stop at the next step; the batch in flight gives its claims back, finished units stay stored."""
        self._cancel.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the job ends (tests); True when it has."""
        if self._thread is not None:
            self._thread.join(timeout)
        return not self.running


_JOBS: dict[JobKey, BuildJob] = {}
_LOCK = threading.Lock()


def job_key(model: LoadedModel, layer: str, settings: RenderSettings) -> JobKey:
    return (model.name, model.fingerprint, layer, settings.digest())


def current_job(model: LoadedModel, layer: str, settings: RenderSettings) -> BuildJob | None:
    """The latest job of this layer and settings (running or finished), if any."""
    with _LOCK:
        return _JOBS.get(job_key(model, layer, settings))


def start_build(model: LoadedModel, layer: str, units: Sequence[int], settings: RenderSettings, store: GalleryStore,
                batch: int = 16) -> BuildJob:
    """Start rendering ``units`` (max variant) in the background, or return the job already running."""
    key = job_key(model, layer, settings)
    with _LOCK:
        existing = _JOBS.get(key)
        if existing is not None and existing.running:
            return existing
        job = BuildJob(key, sorted(int(u) for u in units), len(units))
        _JOBS[key] = job

    def progress(done: float, total: int, preview=None, values=None) -> None:
        job.done, job.total = done, total

    def run() -> None:
        try:
            job.report = build(model, layer, job.units, settings, store=store, variants=(MAX,), batch=batch,
                               wait_for_others=False, callback=progress, should_stop=job._cancel.is_set)
            job.done = job.total if not job.report.stopped else job.done
        except Exception as exc:  # shown on the page; the store stays consistent (claims given back)
            job.error = f"{type(exc).__name__}: {exc}"
        finally:
            job.finished = time.time()

    job._thread = threading.Thread(target=run, name=f"gallery-build-{layer}", daemon=True)
    job._thread.start()
    return job

"""Shared CLI pieces: progress bars, output folders, JSON."""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from tqdm import tqdm

from ..files import write_json  # noqa: F401  (re-exported for the commands)


class ProgressBar:
    """A tqdm bar that is a :data:`~explorer.progress.ProgressCallback`, plus ``should_stop`` for the
    library's one way to stop: the first Ctrl-C asks the job to stop at its next step (it then returns
    and the command saves its partial result); a second Ctrl-C interrupts at once."""

    def __init__(self, total: int, desc: str, unit: str = "step"):
        self.bar = tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True)
        self.done = 0.0
        self.interrupted = False

    def __call__(self, step: float, total: int, preview=None, values=None) -> None:
        if total != self.bar.total:
            self.bar.total = total
        self.bar.update(step - self.done)
        self.done = step
        if values is not None and hasattr(values, "mean"):
            self.bar.set_postfix(objective=f"{float(values.float().mean()):.3f}")

    def should_stop(self) -> bool:
        return self.interrupted

    def _on_interrupt(self, signum, frame) -> None:
        if self.interrupted:
            raise KeyboardInterrupt
        self.interrupted = True
        self.bar.write("Stopping after this step (Ctrl-C again to abort)…")


@contextmanager
def progress(total: int, desc: str, unit: str = "step") -> Iterator[ProgressBar]:
    """A :class:`ProgressBar` (callback + ``should_stop`` on Ctrl-C) for the duration of a job."""
    bar = ProgressBar(total, desc, unit)
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGINT, bar._on_interrupt)
    try:
        yield bar
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
        bar.bar.close()


def output_dir(path: str | Path) -> Path:
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    return out

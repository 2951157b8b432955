"""Progress and stopping: the one callback type every long job reports to, and the one way to stop it.

Every long library job (renders, inversions, dreams, fooling sweeps and growth, gallery builds,
diffusion sampling and training, audio dreams) takes

* ``callback: ProgressCallback | None`` — called as ``callback(done, total, preview, values)`` as work
  finishes: ``done`` of ``total`` (``done`` may be fractional, e.g. units of a running batch),
  ``preview`` an image batch on the job's device or None, ``values`` the per-item figure the job is
  chasing (objective, error, confidence…) or None. Optimisation loops call it every ``check_every``
  steps and after the last (``optvis.optimise``: every step on CPU, every 16 steps on CUDA, so a step
  does not wait for the host);
* ``should_stop: ShouldStop | None`` — polled before each unit of work. When it returns True the job
  stops at that boundary and **returns** its partial result with ``stopped == CANCELLED``.

Library code never raises to stop a job and never signals a stop with a sentinel return value.
Front ends adapt their cancel control to ``should_stop``: the CLI's progress bar turns Ctrl-C into it
(:func:`explorer.cli.common.progress`); in the app, Streamlit abandons a running script when the
user presses Cancel (it raises inside the progress callback, cleanup runs in ``finally`` blocks) and
the page shows the last preview its ``LiveProgress`` kept.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch

ProgressCallback = Callable[[float, int, Optional[torch.Tensor], Optional[torch.Tensor]], None]
ShouldStop = Callable[[], bool]

CANCELLED = "cancelled"  # should_stop() returned True
TARGET_REACHED = "target reached"  # a job's own goal was met early
TIME_LIMIT = "time limit"  # a job given a time budget used it up


def is_cancelled(stopped: str | None) -> bool:
    """True when a result's ``stopped`` says the user cancelled it."""
    return stopped == CANCELLED


def stop_requested(should_stop: ShouldStop | None) -> bool:
    """Poll an optional ``should_stop``."""
    return should_stop is not None and bool(should_stop())

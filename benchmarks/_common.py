"""What the benchmarks share. Importing it puts the repository first on ``sys.path``, so a benchmark run as
``python benchmarks/NAME.py`` (its own folder on the path, not the repository's) imports this checkout's
``explorer`` — import it before anything from ``explorer``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

ROOT = Path(__file__).resolve().parents[1]  # the repository
sys.path.insert(0, str(ROOT))


def sync(device: torch.device) -> None:
    """Wait for the device's queued work, so a timer read next measures it (a no-op off CUDA)."""
    if device.type == "cuda":
        import torch

        torch.cuda.synchronize(device)

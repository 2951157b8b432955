"""Shared CLI pieces: progress bars, output folders, JSON."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from tqdm import tqdm

from ..files import write_json  # noqa: F401  (re-exported for the commands)


@contextmanager
def progress(total: int, desc: str, unit: str = "step") -> Iterator:
    """A tqdm bar and a ``callback(step, total, preview, values)`` that advances it."""
    bar = tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True)
    state = {"done": 0}

    def callback(step: int, total_: int, preview=None, values=None) -> None:
        if total_ != bar.total:
            bar.total = total_
        bar.update(step - state["done"])
        state["done"] = step
        if values is not None and hasattr(values, "mean"):
            bar.set_postfix(objective=f"{float(values.float().mean()):.3f}")

    try:
        yield callback
    finally:
        bar.close()


def output_dir(path: str | Path) -> Path:
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    return out


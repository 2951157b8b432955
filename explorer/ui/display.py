"""How the pages show images and charts: images at their native size or an integer multiple (never
stretched to a column's width and smoothed into mush), log axes labelled at decades only.

Why: a single 224-px class image stretched to a ~940-px column is blurred and pixelated at once, and
Plotly's default log axis labels the minor ticks ("2, 1, 9, 8 … 3, 2"), so 0.2 and 2 look alike.
"""

from __future__ import annotations

import math
from typing import Iterable

import numpy as np
import streamlit as st
import torch

from ..images import to_uint8

TARGET_WIDTH = 256  # px: small renders are enlarged by a whole factor towards this width, never past it


def integer_scale(native: int, target: int = TARGET_WIDTH) -> int:
    """The whole factor a ``native``-px image is shown at: the largest k ≥ 1 with k·native ≤ target."""
    return max(1, int(target) // max(1, int(native)))


def enlarged(image: torch.Tensor, scale: int) -> np.ndarray:
    """``image`` (C×H×W in [0, 1]) as H·k × W·k × 3 uint8 by pixel repetition: exact pixels, no smoothing."""
    array = to_uint8(image)
    if scale > 1:
        array = np.repeat(np.repeat(array, scale, axis=0), scale, axis=1)
    return array


def show_image(image: torch.Tensor, caption: str | None = None, target: int = TARGET_WIDTH, container=None) -> int:
    """Show ``image`` at its native size or a whole multiple of it (see :func:`integer_scale`); returns the
    width in px it is shown at. A column narrower than that may still shrink it (never enlarge it)."""
    scale = integer_scale(image.shape[-1], target)
    array = enlarged(image, scale)
    (container or st).image(array, caption=caption, width=int(array.shape[1]))
    return int(array.shape[1])


# ---- charts ----------------------------------------------------------------------------------------
def _positive(values: Iterable) -> list[float]:
    out = []
    for v in values:
        try:
            f = float(v)
        except (TypeError, ValueError):
            continue
        if math.isfinite(f) and f > 0:
            out.append(f)
    return out


def decade_label(exponent: int) -> str:
    """10^k written plainly: 0.001, 0.01, 0.1, 1, 10, 100, 1000; beyond that 1e-05, 1e+06."""
    value = 10.0 ** exponent
    return f"{value:g}" if -4 <= exponent <= 4 else f"1e{exponent:+03d}"


def decades(values: Iterable) -> tuple[int, int]:
    """The whole decades [10^lo, 10^hi] that hold every positive value (at least one decade wide)."""
    positive = _positive(values)
    if not positive:
        return -1, 0
    lo = math.floor(math.log10(min(positive)))
    hi = math.ceil(math.log10(max(positive)))
    return lo, max(hi, lo + 1)


def log_axis(fig, values: Iterable, axis: str = "y", **where) -> None:
    """Make ``axis`` of ``fig`` logarithmic, labelled at decades only (``0.01, 0.1, 1``), with unlabelled
    minor ticks at 2–9 × each decade; the range spans whole decades around ``values``.
    ``where`` passes ``row=``/``col=`` for subplots."""
    lo, hi = decades(values)
    exponents = range(lo, hi + 1)
    minor = [m * 10.0 ** e for e in range(lo, hi) for m in range(2, 10)]
    update = fig.update_yaxes if axis == "y" else fig.update_xaxes
    update(type="log", range=[lo, hi], tickmode="array", tickvals=[10.0 ** e for e in exponents],
           ticktext=[decade_label(e) for e in exponents],
           minor=dict(tickmode="array", tickvals=minor, ticks="inside", ticklen=3, showgrid=False), **where)

"""Shared pieces of the gallery tests: tiny settings and a builder subprocess on the tiny net."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from explorer.optvis import FAST

ROOT = Path(__file__).resolve().parents[1]
TINY_SETTINGS = FAST.with_(size=32, steps=2)

BUILDER_SCRIPT = textwrap.dedent("""
    import json, sys, torch
    torch.set_num_threads(1)
    sys.path.insert(0, {root!r})
    from tests.tiny import tiny_model
    from explorer.gallery import GalleryStore, build
    from explorer.optvis import FAST
    report = build(tiny_model(), "conv2", range({units}), FAST.with_(size=32, steps={steps}),
                   store=GalleryStore({store!r}), batch={batch}, lease=60)
    print(json.dumps(report.rendered["max"]))
""")


def start_builder(store: Path, units: int = 16, steps: int = 4, batch: int = 2) -> subprocess.Popen:
    """A separate process building conv2 of the tiny net; prints the units it rendered as JSON."""
    code = BUILDER_SCRIPT.format(root=str(ROOT), units=units, steps=steps, store=str(store), batch=batch)
    return subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)

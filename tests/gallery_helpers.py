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
    import json, sys, time, torch
    torch.set_num_threads(1)
    sys.path.insert(0, {root!r})
    from tests.tiny import tiny_model
    from explorer.gallery import GalleryStore, build
    from explorer.optvis import FAST
    report = build(tiny_model(), "conv2", range({units}), FAST.with_(size=32, steps={steps}),
                   store=GalleryStore({store!r}), batch={batch}, lease=60,
                   callback=lambda done, total, *_: time.sleep({pause}) if done >= 2 else None)
    print(json.dumps(report.rendered["max"]))
""")


def start_builder(store: Path, units: int = 16, steps: int = 4, batch: int = 2,
                  pause: float = 0.0) -> subprocess.Popen:
    """A separate process building conv2 of the tiny net; prints the units it rendered as JSON.

    ``pause`` seconds are slept at every progress report once two units are done, so a test that
    kills the builder mid-batch finds it holding claims however fast the machine renders."""
    code = BUILDER_SCRIPT.format(root=str(ROOT), units=units, steps=steps, store=str(store), batch=batch,
                                 pause=float(pause))
    return subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)

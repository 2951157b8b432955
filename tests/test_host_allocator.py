"""devices.tune_host_allocator: freed large blocks are reused instead of unmapped, so a step's second allocation
of the same large tensor does not fault its pages in again (the memory-bound ops of a render step ran 3–4× slower
on fresh pages; benchmarks/allocator.py measures the render)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHILD = """
import json, resource, torch
from explorer import devices
tuned = devices.tune_host_allocator()
faults = []
for _ in range(12):  # a step's pattern: three 37 MB tensors (Lite0's 16x96x112x112 in bf16) live, freed, again
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    xs = [torch.ones(37 << 20, dtype=torch.uint8) for _ in range(3)]
    del xs
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps({"tuned": tuned, "faults": faults}))
"""


def _child(setting: str) -> dict:
    env = dict(os.environ, EXPLORER_MALLOC_TUNING=setting)
    done = subprocess.run([sys.executable, "-c", CHILD], cwd=ROOT, env=env, capture_output=True, text=True,
                          check=True, timeout=120)
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_tuned_process_reuses_a_freed_large_block_and_the_opt_out_does_not():
    if not sys.platform.startswith("linux"):
        return  # glibc only: elsewhere the function says False and changes nothing (checked below)
    default, tuned = _child("0"), _child("1")
    pages = 3 * (37 << 20) // os.sysconf("SC_PAGE_SIZE")
    assert default["tuned"] is False and tuned["tuned"] is True
    # without tuning every allocation is a fresh mapping: all its pages fault in, every round
    assert min(default["faults"]) > 0.9 * pages, default
    # tuned, once the heap has grown to the step's size the freed blocks are reused: the last rounds fault
    # (almost) nothing
    assert sum(tuned["faults"][-4:]) < 0.1 * sum(default["faults"][-4:]), (tuned, default)


def test_tuning_is_done_once_and_every_device_choice_passes_it(monkeypatch):
    from explorer import devices

    calls = []
    monkeypatch.setattr(devices, "tune_host_allocator", lambda: calls.append(1) or True)
    devices.choose_device("cpu")
    assert calls == [1]

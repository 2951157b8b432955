"""What the full weights fingerprint costs (issue 20): blake2b over every byte of every tensor, against the
old partial one (first 64 KB of each tensor), on the shipped models.

    .venv/bin/python benchmarks/fingerprint.py [--repeats 5] [--json out.json]

Prints per model the weights' size, the median time of each fingerprint and the full one's throughput.
The fingerprint is computed once per loaded model (``LoadedModel.fingerprint`` is cached).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from explorer.models import load_model
from explorer.models.base import fingerprint_module, legacy_fingerprint_module

MODELS = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2", "fashion_cnn")


def median_seconds(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    rows = []
    for name in MODELS:
        module = load_model(name, device="cpu").module
        size = sum(t.numel() * t.element_size() for t in module.state_dict().values())
        full = median_seconds(lambda module=module: fingerprint_module(module), args.repeats)
        legacy = median_seconds(lambda module=module: legacy_fingerprint_module(module), args.repeats)
        rows.append({"model": name, "mb": round(size / 1e6, 2), "full_ms": round(full * 1e3, 1),
                     "legacy_ms": round(legacy * 1e3, 1), "full_mb_per_s": round(size / 1e6 / full)})
        print(f"{name:<20} {size / 1e6:6.1f} MB  full {full * 1e3:6.1f} ms ({size / 1e6 / full:5.0f} MB/s)  "
              f"legacy (partial) {legacy * 1e3:6.1f} ms")
    print(f"torch threads {torch.get_num_threads()}")
    if args.json:
        from explorer.files import write_json

        write_json(args.json, rows)


if __name__ == "__main__":
    main()

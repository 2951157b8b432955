"""Fooling-sweep throughput vs the plain forward pass of the same model at the same batch size.

End to end: a ``Sweep`` of ``--batches`` batches (noise generated on the model's device, the model,
running statistics kept on the device, the result table) against as many bare ``module(prepare(x))`` calls
on a batch made beforehand; target ≥ 0.9 × the plain forward's images/s for every family. Blocks alternate
(forward, sweep, sweep, forward, …) so a busy machine slows both alike; it prints the ratio of total times,
the median of per-pair ratios, and the time of noise generation alone relative to the forward pass.

Run: .venv/bin/python benchmarks/fooling_throughput.py [--model efficientnet_lite0] [--batch 16] [--batches 2]
     [--pairs 4] [--families all] [--device auto] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from _common import sync  # also puts the repository on sys.path

from explorer import devices, fooling  # noqa: E402
from explorer.models import load_model  # noqa: E402


def plain_forward(model, batch: torch.Tensor) -> float:
    """Seconds for one bare module(prepare(x)) on a ready-made batch: the same network the sweep runs (the fused
    twin where the model has one), so the ratio is the sweep's overhead, not the twin's gain."""
    module = model.module_for(["output"])
    sync(model.device)
    start = time.perf_counter()
    with torch.inference_mode():
        module(model.prepare(batch))
    sync(model.device)
    return time.perf_counter() - start


def sweep_batches(model, family: str, batch_size: int, batches: int, seed: int) -> float:
    """Seconds for a whole sweep of ``batches`` batches: generation + forward + statistics + result table."""
    sync(model.device)
    start = time.perf_counter()
    fooling.sweep(model, [family], batch_size * batches, seed=seed, batch_size=batch_size, gallery=8)
    sync(model.device)
    return time.perf_counter() - start


def plain_forwards(model, batch: torch.Tensor, batches: int) -> float:
    return sum(plain_forward(model, batch) for _ in range(batches))


def generation_only(model, family: str, batch_size: int, batches: int, seed: int) -> float:
    """Seconds to generate a sweep's noise (no model): where the sweep's overhead comes from. Noise is made in
    chunks of ``noise.CHUNK`` samples, so this generates exactly what a sweep of ``batches`` batches does."""
    sync(model.device)
    start = time.perf_counter()
    for _ in fooling.noise_batches(family, seed, batch_size * batches, batch_size, model.channels,
                                   tuple(model.input_size), model.device):
        pass
    sync(model.device)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="efficientnet_lite0")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--batches", type=int, default=2, help="batches per sweep (and per plain block)")
    parser.add_argument("--pairs", type=int, default=4,
                        help="forward/sweep block pairs per family (order alternates ABBA)")
    parser.add_argument("--families", default="all", help="comma-separated, or all (the 7 noise families)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    model = load_model(args.model, device=args.device)
    device = model.device
    names = ([f for f in fooling.FAMILIES if not fooling.FAMILIES[f].control]
             if args.families == "all" else args.families)
    families = fooling.check_families(names)
    batch = torch.rand(args.batch, model.channels, *model.input_size,
                       generator=devices.generator(device, 0), device=device)
    plain_forward(model, batch)  # warm-up (allocator, kernels, photo cache)
    for family in families:
        sweep_batches(model, family, args.batch, 1, seed=99)
    print(f"model {model.name} on {devices.describe(device)}, torch {torch.__version__}, batch {args.batch}, "
          f"sweeps of {args.batches} batches, {args.pairs} forward/sweep pairs per family")
    summary = []
    for family in families:
        plain, swept, ratios, generate = [], [], [], []
        for i in range(args.pairs):
            if i % 2 == 0:  # ABBA: neither side always runs first
                p = plain_forwards(model, batch, args.batches)
                s = sweep_batches(model, family, args.batch, args.batches, seed=i)
            else:
                s = sweep_batches(model, family, args.batch, args.batches, seed=i)
                p = plain_forwards(model, batch, args.batches)
            generate.append(generation_only(model, family, args.batch, args.batches, seed=i))
            plain.append(p)
            swept.append(s)
            ratios.append(p / s)
        n = args.batch * args.batches * args.pairs
        summary.append((family, n / sum(plain), n / sum(swept), sum(plain) / sum(swept), statistics.median(ratios),
                        sum(generate) / sum(plain)))
    print("family       forward img/s  sweep img/s  ratio(total)  ratio(median pair)  generation/forward time   "
          "[target ratio >= 0.9]")
    figures = {"device": devices.describe(device), "torch": torch.__version__, "model": model.name, "batch": args.batch,
               "batches_per_sweep": args.batches, "pairs": args.pairs, "families": {}}
    for family, p, s, ratio, median, gen_share in summary:
        figures["families"][family] = {"forward_img_s": round(p, 2), "sweep_img_s": round(s, 2),
                                       "ratio": round(ratio, 3), "median_pair_ratio": round(median, 3),
                                       "generation_share": round(gen_share, 4)}
        print(f"{family:11s}  {p:13.2f}  {s:11.2f}  {ratio:12.3f}  {median:18.3f}  {gen_share:23.3f}   "
              f"{'OK' if ratio >= 0.9 else 'BELOW TARGET'}")
    figures["min_ratio"] = round(min(r[3] for r in summary), 3)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()

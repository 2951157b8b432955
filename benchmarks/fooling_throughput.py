"""Sweep throughput vs the plain forward pass of the same model at the same batch size.

The fooling sweep generates its noise on the model's device, runs the model and keeps running
statistics; the target is ≥ 0.9 × the images/s of a bare ``module(prepare(x))`` on a batch made
beforehand. Measurements alternate batch by batch (forward, sweep, sweep, forward, …) so a busy machine slows
both alike. It prints the ratio of total times, the median of per-pair ratios, and the time of
noise generation alone relative to the forward pass (the overhead's source, immune to noise).

Run: .venv/bin/python benchmarks/fooling_throughput.py [--model efficientnet_lite0] [--batch 16]
     [--pairs 6] [--families uniform,pink] [--device auto]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from explorer import devices, fooling
from explorer.models import load_model


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def plain_forward(model, batch: torch.Tensor) -> float:
    """Seconds for one bare module(prepare(x)) on a ready-made batch."""
    sync(model.device)
    start = time.perf_counter()
    with torch.inference_mode():
        model.module(model.prepare(batch))
    sync(model.device)
    return time.perf_counter() - start


def sweep_batch(model, family: str, batch_size: int, seed: int) -> float:
    """Seconds for a sweep of one batch: noise generation + forward + statistics."""
    sync(model.device)
    start = time.perf_counter()
    fooling.sweep(model, [family], batch_size, seed=seed, batch_size=batch_size, gallery=8)
    sync(model.device)
    return time.perf_counter() - start


def generation_only(model, family: str, batch_size: int, seed: int) -> float:
    """Seconds to generate one batch of noise (no model): where the sweep's overhead comes from."""
    sync(model.device)
    start = time.perf_counter()
    for _ in fooling.noise_batches(family, seed, batch_size, batch_size, model.channels, tuple(model.input_size), model.device):
        pass
    sync(model.device)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="efficientnet_lite0")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--pairs", type=int, default=6, help="forward/sweep pairs per family (order alternates ABBA)")
    parser.add_argument("--families", default="uniform,pink")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()

    model = load_model(args.model, device=args.device)
    device = model.device
    families = fooling.check_families(args.families)
    batch = torch.rand(args.batch, model.channels, *model.input_size, generator=devices.generator(device, 0), device=device)
    plain_forward(model, batch)  # warm-up (allocator, kernels, photo cache)
    for family in families:
        sweep_batch(model, family, args.batch, seed=99)
    print(f"model {model.name} on {device}, batch {args.batch}, {args.pairs} forward/sweep pairs per family, "
          f"torch threads {torch.get_num_threads()}")
    summary = []
    for family in families:
        plain, swept, ratios, generate = [], [], [], []
        for i in range(args.pairs):
            if i % 2 == 0:  # ABBA: neither side always runs first
                p = plain_forward(model, batch)
                s = sweep_batch(model, family, args.batch, seed=i)
            else:
                s = sweep_batch(model, family, args.batch, seed=i)
                p = plain_forward(model, batch)
            generate.append(generation_only(model, family, args.batch, seed=i))
            plain.append(p)
            swept.append(s)
            ratios.append(p / s)
            print(f"  {family:10s} pair {i}: forward {args.batch / p:7.2f} img/s  sweep {args.batch / s:7.2f} img/s  "
                  f"ratio {p / s:.3f}  (noise generation alone {1000 * generate[-1] / args.batch:.1f} ms/img)")
        n = args.batch * args.pairs
        summary.append((family, n / sum(plain), n / sum(swept), sum(plain) / sum(swept), statistics.median(ratios),
                        sum(generate) / sum(plain)))
    print("family      forward img/s  sweep img/s  ratio(total)  ratio(median pair)  generation/forward time   [target ratio >= 0.9]")
    for family, p, s, ratio, median, gen_share in summary:
        print(f"{family:10s}  {p:13.2f}  {s:11.2f}  {ratio:12.3f}  {median:18.3f}  {gen_share:23.3f}   "
              f"{'OK' if ratio >= 0.9 else 'BELOW TARGET'}")


if __name__ == "__main__":
    main()

"""Sweep throughput vs the plain forward pass of the same model at the same batch size.

The fooling sweep generates its noise on the model's device, runs the model and keeps running
statistics; the target is ≥ 0.9 × the images/s of a bare ``module(prepare(x))`` on a batch made
beforehand. Measurements alternate (forward, sweep, forward, sweep, …) so a busy machine slows
both alike; the ratio reported is the median of the per-round ratios.

Run: .venv/bin/python benchmarks/fooling_throughput.py [--model efficientnet_lite0] [--batch 16]
     [--batches 3] [--rounds 3] [--families uniform,pink] [--device auto]
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


def plain_forward(model, batch: torch.Tensor, batches: int) -> float:
    """images/s of module(prepare(x)) on a ready-made batch."""
    sync(model.device)
    start = time.perf_counter()
    with torch.inference_mode():
        for _ in range(batches):
            model.module(model.prepare(batch))
    sync(model.device)
    return batches * batch.shape[0] / (time.perf_counter() - start)


def sweep_rate(model, family: str, batch_size: int, batches: int, seed: int) -> float:
    """images/s of a sweep (generation + forward + statistics) over the same number of images."""
    sync(model.device)
    start = time.perf_counter()
    fooling.sweep(model, [family], batches * batch_size, seed=seed, batch_size=batch_size)
    sync(model.device)
    return batches * batch_size / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="efficientnet_lite0")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--batches", type=int, default=3, help="batches per measurement")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--families", default="uniform,pink")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()

    model = load_model(args.model, device=args.device)
    device = model.device
    families = fooling.check_families(args.families)
    batch = torch.rand(args.batch, model.channels, *model.input_size, generator=devices.generator(device, 0), device=device)
    plain_forward(model, batch, 1)  # warm-up (allocator, kernels, photo cache)
    for family in families:
        sweep_rate(model, family, args.batch, 1, seed=99)
    print(f"model {model.name} on {device}, batch {args.batch}, {args.batches} batches per measurement, "
          f"{args.rounds} rounds, torch threads {torch.get_num_threads()}")
    summary = []
    for family in families:
        plain, swept, ratios = [], [], []
        for r in range(args.rounds):
            p = plain_forward(model, batch, args.batches)
            s = sweep_rate(model, family, args.batch, args.batches, seed=r)
            plain.append(p)
            swept.append(s)
            ratios.append(s / p)
            print(f"  {family:12s} round {r}: forward {p:8.2f} img/s  sweep {s:8.2f} img/s  ratio {s / p:.3f}")
        ratio = statistics.median(ratios)
        summary.append((family, statistics.median(plain), statistics.median(swept), ratio))
    print("family        forward img/s   sweep img/s   ratio (median of rounds; target >= 0.9)")
    for family, p, s, ratio in summary:
        print(f"{family:12s}  {p:13.2f}  {s:12.2f}   {ratio:.3f} {'OK' if ratio >= 0.9 else 'BELOW TARGET'}")


if __name__ == "__main__":
    main()

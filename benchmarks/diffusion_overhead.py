"""What does recording a chain cost? Our recorder (probes off / on) against plain diffusers DDIM loops.

Same UNet, same scheduler, same steps and batch, in one process; runs are interleaved (A B C D, A B C D, …)
so a busy machine slows all variants alike, and the median of the repeats is reported.

    .venv/bin/python benchmarks/diffusion_overhead.py [--steps 50] [--batch 16] [--repeats 5] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from explorer.compat import import_diffusers  # noqa: E402
from explorer.diffusion.models import load_diffusion_model  # noqa: E402
from explorer.diffusion.recorder import Probe, sample_chain  # noqa: E402
from explorer.models import load_model  # noqa: E402


def plain_loop(diffusion, steps: int, batch: int, seed: int) -> torch.Tensor:
    """The minimal DDIM loop: UNet, scheduler.step, nothing else (what a pipeline does, minus its extras)."""
    scheduler = diffusion.scheduler("ddim")
    scheduler.set_timesteps(steps)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn((batch, diffusion.channels, *diffusion.sample_size), generator=gen)
    with torch.inference_mode():
        for t in scheduler.timesteps:
            eps = diffusion.unet(x, t).sample
            x = scheduler.step(eps, t, x, eta=0.0, generator=gen).prev_sample
    return x


def pipeline(diffusion, steps: int, batch: int, seed: int):
    diffusers = import_diffusers()
    pipe = diffusers.DDIMPipeline(unet=diffusion.unet, scheduler=diffusion.scheduler("ddim"))
    pipe.set_progress_bar_config(disable=True)
    return pipe(batch_size=batch, num_inference_steps=steps, eta=0.0, generator=torch.Generator().manual_seed(seed),
                output_type="np").images


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="fashion_ddpm")
    parser.add_argument("--probe", default="fashion_cnn")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    diffusion = load_diffusion_model(args.model, device=args.device)
    probe = Probe(load_model(args.probe, device=args.device))
    kw = dict(steps=args.steps, batch=args.batch, seed=0)
    variants = {
        "diffusers DDIMPipeline": lambda: pipeline(diffusion, **kw),
        "plain DDIM loop": lambda: plain_loop(diffusion, **kw),
        "recorder, probes off": lambda: sample_chain(diffusion, sampler="ddim", **kw),
        "recorder, probes on": lambda: sample_chain(diffusion, sampler="ddim", probe=probe, **kw),
    }
    # same samples from the plain loop and the recorder (sanity: we time the same computation)
    same = torch.allclose(((plain_loop(diffusion, **kw).cpu() + 1) / 2).clamp(0, 1), variants["recorder, probes off"]().final, atol=1e-5)
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.repeats):
        for name, run in variants.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    base = statistics.median(times["plain DDIM loop"])
    print(f"{diffusion.describe()}")
    print(f"DDIM {args.steps} steps × batch {args.batch} on {diffusion.device}, torch threads {torch.get_num_threads()}, "
          f"median of {args.repeats} interleaved runs; recorder reproduces the plain loop's samples: {same}")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"  {name:<24} {median:7.3f} s   ratio to plain loop {median / base:5.3f}")
    ratio = statistics.median(times["recorder, probes off"]) / base
    print(f"recording overhead (probes off): {ratio:.3f}× — target ≤ 1.10×: {'PASS' if ratio <= 1.10 else 'FAIL'}")


if __name__ == "__main__":
    main()

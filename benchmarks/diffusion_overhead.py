"""What does recording a chain cost? Our recorder (probes off / on) against plain diffusers DDIM loops.

Same UNet, same scheduler, same steps and batch, in one process, on ``--device``; runs are interleaved
(A B C D, A B C D, …) so a busy machine slows all variants alike, and the median of the repeats is reported.
Targets: recording ≤ 1.10× the plain loop with probes off and with probes on.

    .venv/bin/python benchmarks/diffusion_overhead.py [--steps 50] [--batch 16] [--repeats 5] [--threads 1]
                                                     [--device auto] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

if __package__:  # imported as benchmarks.diffusion_overhead (tests/test_diffusion.py)
    from ._common import sync
else:  # run as a script: its folder is on sys.path
    from _common import sync  # also puts the repository on sys.path

from explorer import devices  # noqa: E402
from explorer.compat import import_diffusers  # noqa: E402
from explorer.diffusion.models import load_diffusion_model  # noqa: E402
from explorer.diffusion.recorder import Probe, sample_chain  # noqa: E402
from explorer.models import load_model  # noqa: E402


def initial_state(diffusion, scheduler, steps: int, batch: int, seed: int) -> torch.Tensor:
    """x_T ~ N(0, I) from a CPU generator (the recorder's draw), on the UNet's device; the scheduler's
    timesteps are put there too. (On CUDA the loop used to feed CPU tensors to the UNet: "mat1 is on cpu".)"""
    scheduler.set_timesteps(steps, device=diffusion.device)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn((batch, diffusion.channels, *diffusion.sample_size), generator=gen)
    return x.to(diffusion.device) * scheduler.init_noise_sigma


def plain_loop(diffusion, steps: int, batch: int, seed: int) -> torch.Tensor:
    """The minimal DDIM loop: UNet, scheduler.step, nothing else (what a pipeline does, minus its extras)."""
    scheduler = diffusion.scheduler("ddim")
    x = initial_state(diffusion, scheduler, steps, batch, seed)
    with torch.inference_mode(), devices.fast_fp32(diffusion.device):  # the recorder's precision
        for t in scheduler.timesteps:
            eps = diffusion.unet(x, t).sample
            x = scheduler.step(eps, t, x, eta=0.0).prev_sample
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
    parser.add_argument("--json", default=None)
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
    same = torch.allclose(((plain_loop(diffusion, **kw).cpu() + 1) / 2).clamp(0, 1),
                          variants["recorder, probes off"]().final, atol=1e-4)
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.repeats):
        for name, run in variants.items():
            sync(diffusion.device)
            start = time.perf_counter()
            run()
            sync(diffusion.device)
            times[name].append(time.perf_counter() - start)
    base = statistics.median(times["plain DDIM loop"])
    print(f"{diffusion.describe()}")
    print(f"DDIM {args.steps} steps × batch {args.batch} on {devices.describe(diffusion.device)}, "
          f"torch {torch.__version__}, median of {args.repeats} interleaved runs; "
          f"recorder reproduces the plain loop's samples: {same}")
    figures = {"device": devices.describe(diffusion.device), "torch": torch.__version__, "steps": args.steps,
               "batch": args.batch, "repeats": args.repeats, "same_samples": bool(same), "seconds": {}, "ratio": {}}
    for name, values in times.items():
        median = statistics.median(values)
        figures["seconds"][name] = round(median, 4)
        figures["ratio"][name] = round(median / base, 4)
        print(f"  {name:<24} {median:7.3f} s   ratio to plain loop {median / base:5.3f}")
    for which in ("probes off", "probes on"):
        ratio = statistics.median(times[f"recorder, {which}"]) / base
        print(f"recording overhead ({which}): {ratio:.3f}× — target ≤ 1.10×: {'PASS' if ratio <= 1.10 else 'FAIL'}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()

"""Coarse-to-fine rendering vs full size from the first step: activation at 224 px after N steps, and time.

Each variant renders the same units of EfficientNet-Lite0 ``--layer`` for each step count (a separate run: the
coarse stages scale with the step count) and measures each unit's activation on the final, untransformed image
at 224 px (the yardstick of ``vs_lucent.py``). The network's cost per step grows with its input pixels, so a
coarse run of N steps costs about ``sum(side_i² · steps_i) / 224²`` full-size steps (printed as "full-step
equivalents"): that figure does not depend on how busy the CPU is, the wall time does.

  .venv/bin/python benchmarks/coarse_to_fine.py --units 8 --steps 32,64 --threads 1
"""

from __future__ import annotations

import argparse
import time

import torch

import _common  # noqa: F401 - puts the repository on sys.path

from explorer import files  # noqa: E402
from explorer.models import load_model  # noqa: E402
from explorer.optvis import RenderSettings, objectives, render  # noqa: E402
from explorer.optvis.transforms import coarse_to_fine_sizes  # noqa: E402
from vs_lucent import cpu_name, unit_activations  # noqa: E402

VARIANTS = {
    "full size": {},
    "coarse 0.5 from 1/2 side": {"coarse": 0.5, "coarse_start": 0.5},
    "coarse 0.75 from 0.4 side": {"coarse": 0.75, "coarse_start": 0.4},
    "crop 0.5 from 1/2 side": {"coarse": 0.5, "coarse_start": 0.5, "coarse_view": "crop"},
    "crop 0.75 from 1/2 side": {"coarse": 0.75, "coarse_start": 0.5, "coarse_view": "crop"},
}


def full_step_equivalents(settings: RenderSettings, side: int = 224) -> float:
    plan = coarse_to_fine_sizes(side, settings.steps, settings.coarse, settings.coarse_start)
    bounds = [first for first, _ in plan] + [settings.steps + 1]
    return sum((bounds[i + 1] - bounds[i]) * (s / side) ** 2 for i, (_, s) in enumerate(plan))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--units", type=int, default=8)
    parser.add_argument("--steps", default="32,64")
    parser.add_argument("--layer", default="blocks.10")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="names of VARIANTS, comma-separated")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model = load_model("efficientnet_lite0", device="cpu")
    units = list(range(args.units))
    figures = {"cpu": cpu_name(), "threads": torch.get_num_threads(), "layer": args.layer,
               "units": len(units), "runs": []}
    render(model, objectives.channel(args.layer, units), RenderSettings(steps=2))  # untimed warm-up
    for name in args.variants.split(","):
        for steps in (int(s) for s in args.steps.split(",")):
            settings = RenderSettings().with_(steps=steps, **VARIANTS[name])
            start = time.perf_counter()
            result = render(model, objectives.channel(args.layer, units), settings)
            seconds = time.perf_counter() - start
            act = unit_activations(model, args.layer, units, result.images)
            row = {"variant": name, "steps": steps, "full_step_equivalents": round(full_step_equivalents(settings), 1),
                   "seconds": round(seconds, 1), "mean_activation_224": round(float(act.mean()), 3)}
            figures["runs"].append(row)
            print(f"{name:28s} {steps:4d} steps ≈ {row['full_step_equivalents']:6.1f} full steps  {seconds:7.1f} s  "
                  f"act@224 {row['mean_activation_224']:.3f}", flush=True)
            if args.json:
                files.write_json(args.json, figures)  # atomic: rewritten after every run


if __name__ == "__main__":
    main()

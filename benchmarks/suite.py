"""All of the render-engine benchmarks in one command, one JSON: the figures of issue 10 on one device.

Runs, each in its own process on ``--device`` (every figure is a ratio or a time measured in one run):

* ``vs_lucent``            — time to Lucent's 48/96/256-step quality over a step ladder (16 units on CUDA,
                              a short 4 units × 32 steps on CPU, where the full comparison takes ~25 min);
* ``render_step``          — fp32(+TF32) vs bf16, contiguous vs channels_last, and bf16's activation ratio;
* ``layer``                — a whole layer (all 112 units of ``blocks.10``) × 256 steps at 224 px (CUDA only);
* ``fooling_throughput``   — end-to-end sweep / plain forward for all 7 noise families;
* ``diffusion_overhead``   — recording (probes off / on) vs a plain diffusers DDIM loop.

    .venv/bin/python benchmarks/suite.py --device cpu  --json out/suite-cpu.json    # < 6 min on 2 quiet cores
    .venv/bin/python benchmarks/suite.py --device cuda --json out/suite-cuda.json

``--full`` runs the CUDA-sized settings on any device (long on a CPU).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from _common import ROOT  # puts the repository on sys.path

from explorer import devices  # noqa: E402

# name -> (arguments on CUDA / with --full, arguments for a short CPU run)
PLAN = {
    "vs_lucent": (["--units", "16", "--lucent-steps", "48,96,256"],
                  ["--units", "4", "--lucent-steps", "32", "--ladder", "8,16,32", "--steps", "32"]),
    "render_step": (["--batch", "16", "--repeats", "5", "--steps", "64"],
                    ["--batch", "8", "--repeats", "2", "--steps", "24"]),
    "layer": (["--steps", "256"], None),
    "fooling_throughput": (["--batch", "256", "--batches", "4", "--pairs", "4"],
                           ["--batch", "16", "--batches", "2", "--pairs", "5"]),  # fewer pairs: ±4 % run to run
    "diffusion_overhead": (["--steps", "50", "--batch", "16", "--repeats", "5"],
                           ["--steps", "50", "--batch", "16", "--repeats", "7"]),  # 3 repeats: ±10 % run to run
}


def layer_figures(device: str, steps: int, json_path: str) -> None:
    """A whole layer: all units of blocks.10 × ``steps`` at 224 px with the render defaults, in batches as
    large as explorer.limits.MAX_BATCH_PIXELS allows (16 at 224 px)."""
    from explorer import limits
    from explorer.models import load_model
    from explorer.optvis import RenderSettings, objectives, render

    model = load_model("efficientnet_lite0", device=device)
    units = list(range(model.layer_shapes["blocks.10"][0]))
    settings = RenderSettings(steps=steps)
    per_batch = 16 if 16 * 224 * 224 <= limits.MAX_BATCH_PIXELS else limits.MAX_BATCH_PIXELS // (224 * 224)
    render(model, objectives.channel("blocks.10", units[:per_batch]), settings.with_(steps=8))  # warm-up
    start = time.perf_counter()
    finals = []
    for first in range(0, len(units), per_batch):
        chunk = units[first : first + per_batch]
        finals.append(render(model, objectives.channel("blocks.10", chunk), settings).final_activation)
    if model.device.type == "cuda":
        torch.cuda.synchronize(model.device)
    seconds = time.perf_counter() - start
    mean_activation = float(torch.cat(finals).mean())
    figures = {"device": devices.describe(model.device), "units": len(units), "batch": per_batch, "steps": steps,
               "seconds": round(seconds, 3),
               "units_per_min": round(len(units) / seconds * 60, 2),
               "mean_activation": round(mean_activation, 4)}
    print(f"whole layer blocks.10: {len(units)} units × {steps} steps in {seconds:.2f} s "
          f"({figures['units_per_min']:.0f} units/min)")
    Path(json_path).write_text(json.dumps(figures, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", default="out/suite.json")
    parser.add_argument("--full", action="store_true", help="the CUDA-sized settings on any device")
    parser.add_argument("--only", default=None, help="comma-separated subset of: " + ", ".join(PLAN))
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    device = devices.choose_device(args.device)
    full = args.full or device.type == "cuda"
    wanted = args.only.split(",") if args.only else list(PLAN)
    started = time.perf_counter()
    report = {"device": devices.describe(device), "device_kind": device.type, "torch": torch.__version__,
              "python": sys.version.split()[0], "settings": "full" if full else "short (CPU)", "benchmarks": {}}
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    with tempfile.TemporaryDirectory() as tmp:
        for name in wanted:
            plan_full, plan_short = PLAN[name]
            extra = plan_full if full else plan_short
            if extra is None:
                print(f"== {name}: skipped on {device.type} without --full (too long here)")
                continue
            out = str(Path(tmp) / f"{name}.json")
            print(f"== {name} {' '.join(extra)}", flush=True)
            t0 = time.perf_counter()
            if name == "layer":
                layer_figures(str(device), int(extra[1]), out)
            else:
                command = [sys.executable, str(ROOT / "benchmarks" / f"{name}.py"),
                           "--device", str(device), "--json", out, *extra]
                if args.threads:
                    command += ["--threads", str(args.threads)]
                subprocess.run(command, check=True, env=env)
            figures = json.loads(Path(out).read_text())
            figures["wall_seconds"] = round(time.perf_counter() - t0, 1)
            report["benchmarks"][name] = figures
    report["wall_seconds"] = round(time.perf_counter() - started, 1)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=2))
    print(f"suite done in {report['wall_seconds']:.0f} s on {report['device']} → {args.json}")


if __name__ == "__main__":
    main()

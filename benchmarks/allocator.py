"""How much the host allocator setting buys: the same render in fresh processes, glibc as set by the platform
(``EXPLORER_MALLOC_TUNING=0``) against ``devices.tune_host_allocator`` (freed large blocks kept for reuse),
alternated A B A B … so both see the same machine load. Prints each run, the median ratio and whether the images
were the same (they must be: only where memory comes from changes).

    .venv/bin/python benchmarks/allocator.py [--units 16] [--threads 2] [--steps 24] [--pairs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHILD = """
import json, resource, sys, time, torch
torch.set_num_threads({threads})
from explorer.models import load_model
from explorer.optvis import RenderSettings, objectives, render
model = load_model("efficientnet_lite0")
objective = objectives.channel("blocks.10", list(range({units})))
render(model, objective, RenderSettings(steps=4))
start = time.perf_counter()
result = render(model, objective, RenderSettings(steps={steps}))
print(json.dumps({{"seconds": time.perf_counter() - start, "activation": result.final_activation.tolist(),
                  "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024}}))
"""


def run(tuned: bool, args: argparse.Namespace) -> dict:
    env = dict(os.environ, EXPLORER_MALLOC_TUNING="1" if tuned else "0")
    code = CHILD.format(threads=args.threads, units=args.units, steps=args.steps)
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=24)
    parser.add_argument("--pairs", type=int, default=3)
    args = parser.parse_args()
    runs = {False: [], True: []}
    for _ in range(args.pairs):
        for tuned in (False, True):
            runs[tuned].append(run(tuned, args))
    for tuned in (False, True):
        label = "tuned (freed blocks kept)" if tuned else "platform default        "
        seconds = [r["seconds"] for r in runs[tuned]]
        print(f"{label} {', '.join(f'{s:.2f}' for s in seconds)} s · peak RSS {runs[tuned][-1]['max_rss_mb']} MB")
    ratio = statistics.median(r["seconds"] for r in runs[False]) / statistics.median(r["seconds"] for r in runs[True])
    same = all(r["activation"] == runs[False][0]["activation"] for r in runs[False] + runs[True])
    print(f"render of {args.units} units × {args.steps} steps, {args.threads} threads: ×{ratio:.2f} faster tuned; "
          f"same images: {'yes' if same else 'NO'}")


if __name__ == "__main__":
    main()

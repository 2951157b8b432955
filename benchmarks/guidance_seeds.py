"""Guidance sweeps pooled over seeds: does a scale meet "rate ≥ R with FD ratio ≤ F" on several seeds, not one?

Each argument is a ``sweep.json`` of ``diffusion guide --sweep`` made with the same settings but its own ``--seed``;
per scale it prints the judge's rate pooled over every seed's samples (Clopper–Pearson interval) and the per-seed
mean FD ratios to each seed's own unguided yardstick, with their mean and range
(``explorer.diffusion.guidance.pooled_over_seeds``).

    .venv/bin/python benchmarks/guidance_seeds.py docs/diffusion_imagination/sweep64_iddpm_ancestral50_seed?_s5.json

``--yardstick`` takes one more sweep.json per seed (same order) whose per-class unguided reference replaces the
sweep's own: a class-conditional model's sets measured on the unconditional model's named samples
(``explorer.diffusion.guidance.with_yardstick``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

if not __package__:
    import _common  # noqa: F401  (puts the repository on sys.path)

from explorer.diffusion.guidance import pooled_over_seeds, with_yardstick  # noqa: E402
from explorer.errors import UserInputError  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweeps", nargs="+", help="sweep.json files, one per seed")
    parser.add_argument("--yardstick", nargs="+", default=None, metavar="SWEEP_JSON",
                        help="one sweep.json per seed whose unguided reference is the FD yardstick instead")
    parser.add_argument("--json", help="write the pooled rows here")
    args = parser.parse_args()
    sweeps = [json.loads(Path(p).read_text()) for p in args.sweeps]
    if args.yardstick:
        if len(args.yardstick) != len(sweeps):
            raise SystemExit("--yardstick needs one file per sweep, in the same order")
        try:
            sweeps = [with_yardstick(s, json.loads(Path(y).read_text())) for s, y in zip(sweeps, args.yardstick)]
        except UserInputError as exc:
            raise SystemExit(f"error: {exc}") from None
        model = sweeps[0].get("reference_model")
        print(f"FD yardstick: the unguided reference of {model} ({', '.join(args.yardstick)})")
    rows = pooled_over_seeds(sweeps)
    for r in rows:
        ratio = "no FD yardstick"
        if "fd_ratio_mean" in r:
            per_seed = ", ".join(f"{x:.2f}" for x in r["fd_ratio_per_seed"])
            ratio = f"FD ratio mean {r['fd_ratio_mean']:.2f} (seeds {per_seed})"
        if "fd_ratio_to_s0_mean" in r:
            ratio += f" · to the same class at scale 0 {r['fd_ratio_to_s0_mean']:.2f}"
        if "fd_above_floor_ratio_mean" in r:
            ratio += f" · above the real-image floor {r['fd_above_floor_ratio_mean']:.2f}"
        print(f"s={r['scale']:<5g} seeds {r['seeds']}: judge names the target {r['hits']}/{r['n']} = {r['rate']:.3f} "
              f"[{r['ci95'][0]:.3f}, {r['ci95'][1]:.3f}] · {ratio}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()

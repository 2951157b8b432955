"""Side-by-side table of diffusion models from `diffusion evaluate --json` results (issue 17).

Usage (after running the evaluate commands listed in docs/diffusion.md):

    .venv/bin/python benchmarks/diffusion_quality.py runs/quality/*.json --out assets/fashion_iddpm/quality.json

Prints one markdown row per (model, sampler, K): FD_cnn beside its floor, precision, recall, the probe's
confidence with its interval, classes covered and the largest class; then the likelihood bounds with their
intervals and, for two models bounded on the same test images, the paired difference and the relative
reduction with a paired bootstrap 95 % interval (2000 resamples over images, seed 0). ``--out`` writes the
combined JSON the diffusion page's "Model quality" tab shows.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

import _common  # noqa: F401 - puts the repository on sys.path


def paired(a: dict, b: dict, seed: int = 0, resamples: int = 2000) -> dict | None:
    """Paired comparison of two bounds on the same images: mean difference b − a and reduction 1 − b/a."""
    xa, xb = np.asarray(a.get("per_image_bits_per_dim", [])), np.asarray(b.get("per_image_bits_per_dim", []))
    if len(xa) < 2 or len(xa) != len(xb):
        return None
    diff = xb - xa
    half = 1.96 * diff.std(ddof=1) / np.sqrt(len(diff))
    rng = np.random.default_rng(seed)
    index = rng.integers(0, len(xa), size=(resamples, len(xa)))
    ratios = 1 - xb[index].mean(1) / xa[index].mean(1)
    return {"images": int(len(xa)), "difference": round(float(diff.mean()), 4),
            "difference_ci95": [round(float(diff.mean() - half), 4), round(float(diff.mean() + half), 4)],
            "reduction": round(float(1 - xb.mean() / xa.mean()), 4),
            "reduction_ci95": [round(float(np.percentile(ratios, 2.5)), 4),
                               round(float(np.percentile(ratios, 97.5)), 4)],
            "fraction_of_images_lower": round(float((diff < 0).mean()), 4)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="+", help="JSON files written by `diffusion evaluate --json`")
    parser.add_argument("--out", default=None, help="write the combined JSON here (the page's measured figures)")
    parser.add_argument("--note", default="", help="a line saying where and how the figures were measured")
    args = parser.parse_args(argv)
    rows = [json.loads(Path(p).read_text()) for p in args.results]
    rows.sort(key=lambda r: (r["model"], r["sampler"], r["engine"], r["steps"], r.get("seed", 0)))
    print("| model | sampler | K | samples (seed) | FD_cnn | FD floor | precision | recall | confidence (95 % CI) | "
          "classes | largest |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        if r.get("n", 0) < 10:  # bound-only runs
            continue
        q = r["quality"]
        print(f"| {r['model']} | {r['sampler']} ({r['engine']}) | {r['steps']} | {r['n']} ({r.get('seed', 0)}) | "
              f"{r['fd']:.2f} | {r['fd_floor']:.2f} | {r['precision']:.3f} | {r['recall']:.3f} | "
              f"{q['mean_max_probability']:.3f} ({q['ci95'][0]:.3f}–{q['ci95'][1]:.3f}) | "
              f"{r['classes']['covered']}/10 | {100 * r['classes']['largest_fraction']:.1f} % |")
    bounds = [r for r in rows if r.get("nll")]
    if bounds:
        print("\n| model | Σ | bits/dim (95 % CI) | test images | UNet calls / image | L_0 (decoder) | L_T (prior) | "
              "seconds |")
        print("|---|---|---|---|---|---|---|---|")
        for r in bounds:
            n = r["nll"]
            print(f"| {r['model']} | {n['variance_type']} | {n['bits_per_dim']:.3f} "
                  f"({n['ci95'][0]:.3f}–{n['ci95'][1]:.3f}) | {n['n_images']} | {n['unet_calls_per_image']} | "
                  f"{n['decoder_bits_per_dim']:.3f} | {n['prior_bits_per_dim']:.2g} | {n['seconds']:.0f} |")
    comparisons = []
    for i, a in enumerate(bounds):
        for b in bounds[i + 1:]:
            result = paired(a["nll"], b["nll"])
            if result:
                comparisons.append({"from": f"{a['model']} ({a['nll']['variance_type']})",
                                    "to": f"{b['model']} ({b['nll']['variance_type']})", **result})
    for c in comparisons:
        print(f"\n{c['to']} vs {c['from']} on the same {c['images']} images: "
              f"difference {c['difference']:+.3f} bits/dim "
              f"({c['difference_ci95'][0]:+.3f} … {c['difference_ci95'][1]:+.3f}), "
              f"reduction {100 * c['reduction']:.1f} % "
              f"({100 * c['reduction_ci95'][0]:.1f} … {100 * c['reduction_ci95'][1]:.1f} %), "
              f"lower on {100 * c['fraction_of_images_lower']:.0f} % of the images")
    if args.out:
        from explorer.files import write_json

        main_rows = [r | {"bound_only": r.get("n", 0) < 10} for r in rows
                     if r.get("seed", 0) == 0 and (r.get("n", 0) >= 10 or r.get("nll"))]
        repeats = [r for r in rows if r.get("seed", 0) != 0]
        write_json(Path(args.out), {"note": args.note, "results": main_rows, "repeats": repeats,
                                    "paired_bounds": comparisons})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

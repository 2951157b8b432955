"""Do class visualisations transfer? Render one image per class on a source model, then ask the OTHER models.

For a fixed list of 50 ImageNet classes (every 20th index, 0–980: not hand-picked), batched renders (as many
classes per batch as explorer.limits allows: 17/17/16 at 224 px) per parameterisation on the source model
(EfficientNet-Lite0 by default) through the project's one loop
(`render()`, RenderSettings defaults unless given here); then each judge — every other registry model of the
family whose pretrained weights load offline (Lite1, Lite2) — sees the images at its own input size and
preprocessing, and we count how often it names the class (top-1 / top-5, exact 95 % Clopper–Pearson
intervals). The source's own view (class logit on the final image, its own top-1/top-5) is printed beside
them: it is what the optimiser maximised, so it cannot fail; the judges can. Chance: top-1 0.1 %, top-5 0.5 %.

Decision rule printed at the end (RenderSettings' default ``param``): the parameterisation with the highest
mean top-5 rate over the judges among those whose mean own class logit is at least 90 % of the current
default's.

Run (CPU-heavy: one 50-image render per parameterisation):
  PYTHONPATH=. .venv/bin/python benchmarks/transfer.py --size 224 --steps 256 --json out/transfer.json \
      [--params fft,pixel,maco] [--classes 50] [--source efficientnet_lite0] [--judges efficientnet_lite2] \
      [--images-dir out/transfer]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time
from pathlib import Path

import torch

CLASSES = tuple(range(0, 1000, 20))  # 50 classes spread over the label space


def main() -> None:
    from explorer.cli.common import progress
    from explorer.images import grid, save_png
    from explorer.limits import MAX_BATCH_PIXELS
    from explorer.models import load_model
    from explorer.models.judges import judge_class_images, transfer_models
    from explorer.optvis import RenderSettings, objectives, render

    defaults = RenderSettings()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default="efficientnet_lite0")
    parser.add_argument("--judges", default=None,
                        help="comma-separated (default: every other offline model of the family)")
    parser.add_argument("--params", default="fft,pixel,maco")
    parser.add_argument("--classes", type=int, default=len(CLASSES), help="use the first N classes of the fixed list")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--steps", type=int, default=defaults.steps)
    parser.add_argument("--seed", type=int, default=0, help="batch k of a parameterisation uses seed + k")
    parser.add_argument("--batch", type=int, default=None,
                        help="classes per render (default: the most explorer.limits allows)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", default=None)
    parser.add_argument("--images-dir", default=None,
                        help="save each parameterisation's images (PNG grid + one per class)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    source = load_model(args.source, device="cpu")
    if args.judges:
        judges = [load_model(name, device="cpu") for name in args.judges.split(",")]
    else:
        judges, skipped = transfer_models(source)
        for row in skipped:
            print(f"judge {row['model']}: {row['status'][:120]}")
    classes = list(CLASSES[: args.classes])
    print(f"source {source.name}; judges {', '.join(j.name for j in judges)}; {len(classes)} classes; "
          f"{args.size} px, {args.steps} steps; torch threads {torch.get_num_threads()}")

    # One batched render per chunk: as many classes per batch as explorer.limits allows at this size.
    per_batch = args.batch or max(1, MAX_BATCH_PIXELS // (args.size * args.size))
    chunks = math.ceil(len(classes) / per_batch)
    bounds = [round(i * len(classes) / chunks) for i in range(chunks + 1)]  # even chunks (17/17/16 at 224 px)
    print(f"{chunks} batch(es) of ≤ {per_batch} classes per parameterisation")
    runs = []
    for param in args.params.split(","):
        start = time.perf_counter()
        images, logits, stopped = [], [], []
        for k in range(chunks):
            part = classes[bounds[k] : bounds[k + 1]]
            settings = defaults.with_(param=param, size=args.size, steps=args.steps, seed=args.seed + k)
            with progress(settings.steps, f"{param} {k + 1}/{chunks}") as bar:
                result = render(source, objectives.class_logit(part), settings, callback=bar)
            images.append(result.images)
            logits.append(result.final_activation)
            stopped.append(result.stopped)
        seconds = time.perf_counter() - start
        images, logits = torch.cat(images), torch.cat(logits)
        own = judge_class_images(images, classes, [source])[0]
        verdicts = judge_class_images(images, classes, judges)
        runs.append({"param": param, "settings": settings.with_(seed=args.seed).to_dict(), "seconds": round(seconds, 1),
                     "batches": chunks, "stopped": stopped, "own_logit_mean": float(logits.mean()),
                     "own_logits": [round(float(v), 4) for v in logits],
                     "own": own.to_dict(), "judges": [v.to_dict() for v in verdicts]})
        if args.images_dir:
            folder = Path(args.images_dir) / param
            folder.mkdir(parents=True, exist_ok=True)
            save_png(grid(images, columns=10), folder / "grid.png")
            for cls, image in zip(classes, images):
                save_png(image, folder / f"{cls:03d}.png")
        print(_row(runs[-1]))
        best = _best(runs, defaults.param)
        if args.json:  # after every parameterisation: a long run that is cut off keeps what it measured
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            meta = {"command": "benchmarks/transfer.py "
                               + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items()
                                          if v is not None),
                    "source": source.name, "judges": [j.name for j in judges], "classes": classes,
                    "class_labels": [source.label(c) for c in classes], "machine": platform.platform(),
                    "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "best": best["param"]}
            Path(args.json).write_text(json.dumps({**meta, "runs": runs}, indent=1))

    print("\n" + _table(runs))
    print(f"\nbest transfer (mean top-5 over judges) keeping ≥ 90 % of {defaults.param}'s own logit, if it ran: "
          f"{_best(runs, defaults.param)['param']}")
    if args.json:
        print(f"wrote {args.json}")


def _best(runs: list[dict], default: str) -> dict:
    """The decision rule: highest mean top-5 rate over the judges among the runs that keep ≥ 90 % of the
    default parameterisation's mean own class logit."""
    baseline = next((r for r in runs if r["param"] == default), runs[0])
    eligible = [r for r in runs if r["own_logit_mean"] >= 0.9 * baseline["own_logit_mean"]]
    return max(eligible, key=lambda r: sum(j["top5_rate"] for j in r["judges"]) / max(1, len(r["judges"])))


def _pct(k: int, n: int, interval) -> str:
    return f"{100 * k / n:.0f} % [{100 * interval[0]:.1f}, {100 * interval[1]:.1f}]"


def _row(run: dict) -> str:
    own = run["own"]
    cells = [(f"{run['param']}: {run['seconds']:.0f} s, own logit {run['own_logit_mean']:.2f}, "
              f"own top-1 {own['top1']}/{own['n']}")]
    for j in run["judges"]:
        cells.append(f"{j['model']} top-1 {_pct(j['top1'], j['n'], j['top1_interval'])}, "
                     f"top-5 {_pct(j['top5'], j['n'], j['top5_interval'])}")
    return " | ".join(cells)


def _table(runs: list[dict]) -> str:
    judges = [j["model"] for j in runs[0]["judges"]]
    head = ["param", "seconds", "own logit (mean)", "own top-1", "own top-5"]
    for name in judges:
        head += [f"{name} top-1 [95 % CI]", f"{name} top-5 [95 % CI]"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for run in runs:
        own = run["own"]
        cells = [run["param"], f"{run['seconds']:.0f}", f"{run['own_logit_mean']:.2f}",
                 f"{own['top1']}/{own['n']}", f"{own['top5']}/{own['n']}"]
        for j in run["judges"]:
            cells += [_pct(j["top1"], j["n"], j["top1_interval"]), _pct(j["top5"], j["n"], j["top5_interval"])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()

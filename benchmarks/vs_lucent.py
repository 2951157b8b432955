"""Ours vs Lucent at equal work: units per minute at a fixed step count, and time to Lucent's quality.

Equal work: both sides feed EfficientNet-Lite0 224-px images (Lucent upsamples its 128-px param to 224 every
step, as its users run it; ours renders at the network input size, or upsamples inside its transforms when a
variant says so). Quality is one yardstick for both: a unit's activation on the final, untransformed image,
measured at 224 px with the same code (images of another size are upsampled the way Lucent does, bilinear,
align_corners=True).

* units/min — units rendered per minute for ``--steps`` steps (ours: one batch of all units; Lucent: one
  ``render_vis`` per unit, as its users call it);
* time to Lucent's quality — seconds until EVERY unit's activation reaches what Lucent's ``--lucent-steps``
  (256) render of that unit reaches (ours checked every ``--every`` steps; the step's timestamp counts, the
  measuring does not); Lucent's own figure is the time of its renders. "units reached" says how many did.

Both sides run in one process, one after the other, on ``--device``. Lucent leaks one hook per module per
call: they are removed between calls (in Lucent's favour). ``--variants`` adds rows of ours with other
settings (how the defaults were chosen: docs/ARCHITECTURE.md, "Render defaults").

  .venv/bin/python benchmarks/vs_lucent.py                       # 16 units × 256 steps (CPU: ~25 min)
  .venv/bin/python benchmarks/vs_lucent.py --units 4 --steps 64 --lucent-steps 64     # a short run
  .venv/bin/python benchmarks/vs_lucent.py --device cuda --json out/vs_lucent.json
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from explorer import devices  # noqa: E402
from explorer.compat import import_lucent  # noqa: E402
from explorer.models import load_model  # noqa: E402
from explorer.optvis import RenderSettings, objectives, render  # noqa: E402
from explorer.optvis.render import evaluate  # noqa: E402

MEASURE_SIZE = 224


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def at_224(images: torch.Tensor) -> torch.Tensor:
    if tuple(images.shape[-2:]) == (MEASURE_SIZE, MEASURE_SIZE):
        return images
    return F.interpolate(images, size=(MEASURE_SIZE, MEASURE_SIZE), mode="bilinear", align_corners=True)


def unit_activations(model, layer: str, units: list[int], images: torch.Tensor) -> torch.Tensor:
    """[units] activation of unit i on image i, at 224 px, untransformed (the one yardstick)."""
    out = []
    for start in range(0, len(units), 16):
        chunk = units[start : start + 16]
        x = at_224(images[start : start + len(chunk)].float()).to(model.device)
        out.append(evaluate(model, objectives.channel(layer, chunk), x))
    return torch.cat(out).float()


def lucent_render(model, layer: str, units: list[int], steps: int, size: int, checkpoints: list[int]) -> dict:
    """One ``render_vis`` per unit (its users' way): 128-px Fourier param upsampled to 224, Adam lr 0.05."""
    import_lucent()
    from lucent.optvis import param, render as lrender, transform

    per_checkpoint: dict[int, list[torch.Tensor]] = {k: [] for k in checkpoints}
    seconds = 0.0
    for unit in units:
        torch.manual_seed(unit)  # Lucent draws from torch's global RNG
        transforms = list(transform.standard_transforms) + [model.preprocess]
        sync(model.device)
        start = time.perf_counter()
        out = lrender.render_vis(
            model.module, f"{layer.replace('.', '_')}:{unit}", param_f=lambda: param.image(size), transforms=transforms,
            thresholds=tuple(checkpoints), preprocess=False, progress=False, show_image=False,
        )
        sync(model.device)
        seconds += time.perf_counter() - start
        for k, image in zip(checkpoints, out):
            per_checkpoint[k].append(torch.from_numpy(image).permute(0, 3, 1, 2))
        for m in model.module.modules():  # undo Lucent's leaked hooks
            m._forward_hooks.clear()
    curve = {k: unit_activations(model, layer, units, torch.cat(v)) for k, v in per_checkpoint.items()}
    return {"seconds": seconds, "curve": curve, "final": curve[steps]}


def ours_render(model, layer: str, units: list[int], settings: RenderSettings, every: int) -> dict:
    """One batch of all units; per-step timestamps from the progress callback, snapshots every ``every`` steps."""
    stamps: dict[int, float] = {}
    sync(model.device)
    start = time.perf_counter()

    def callback(step, total, preview, values):
        stamps[int(step)] = time.perf_counter() - start  # the loop calls back after the step's work

    marks = sorted(set(range(every, settings.steps + 1, every)) | {settings.steps})
    result = render(model, objectives.channel(layer, units), settings, thresholds=marks, callback=callback)
    sync(model.device)
    seconds = time.perf_counter() - start
    curve = {k: unit_activations(model, layer, units, img) for k, img in sorted(result.snapshots.items())}
    return {"seconds": seconds, "curve": curve, "final": curve[max(curve)], "stamps": stamps}


def time_to_reach(run: dict, goal: torch.Tensor) -> tuple[float, int]:
    """(seconds until every unit's activation ≥ its goal, or inf; how many units reached it by the end)."""
    reached = torch.zeros_like(goal, dtype=torch.bool)
    when = math.inf
    stamps = run["stamps"]
    for step, acts in sorted(run["curve"].items()):
        reached |= acts >= goal
        if bool(reached.all()) and when == math.inf:
            later = [t for s, t in stamps.items() if s >= step]  # callbacks may come every few steps (CUDA)
            when = min(later) if later else math.inf
    return when, int(reached.sum())


def parse_variants(text: str) -> list[tuple[str, dict]]:
    """"name:key=value,key=value;name2:…" -> [(name, overrides)]."""
    variants = []
    for chunk in filter(None, (c.strip() for c in text.split(";"))):
        name, _, body = chunk.partition(":")
        overrides = {}
        for item in filter(None, (i.strip() for i in body.split(","))):
            key, _, value = item.partition("=")
            field = RenderSettings.__dataclass_fields__[key]
            kind = field.type if isinstance(field.type, str) else field.type.__name__
            overrides[key] = (None if value == "None" else int(value) if "int" in kind else float(value) if "float" in kind
                              else value.lower() in ("1", "true", "yes") if "bool" in kind else value)
        variants.append((name, overrides))
    return variants


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--units", type=int, default=16)
    parser.add_argument("--steps", type=int, default=256, help="our steps (units/min and the quality curve)")
    parser.add_argument("--lucent-steps", type=int, default=256, help="Lucent's steps: its quality is the goal")
    parser.add_argument("--lucent-size", type=int, default=128, help="Lucent's param size (upsampled to 224)")
    parser.add_argument("--layer", default="blocks.10")
    parser.add_argument("--every", type=int, default=8, help="check our activations every N steps")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--variants", default="", help='extra rows of ours: "name:key=value,…;name2:…"')
    parser.add_argument("--no-default", action="store_true", help="only the --variants rows of ours")
    parser.add_argument("--json", default=None, help="write the figures here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model = load_model("efficientnet_lite0", device=args.device)
    device = model.device
    units = list(range(args.units))
    rows = [] if args.no_default else [("ours (defaults)", {})]
    rows += parse_variants(args.variants)

    lucent_marks = sorted(set(range(args.every, args.lucent_steps + 1, args.every)) | {args.lucent_steps})
    lucent = lucent_render(model, args.layer, units, args.lucent_steps, args.lucent_size, lucent_marks)
    goal = lucent["final"]
    figures = {
        "device": devices.describe(device), "torch": torch.__version__, "threads": torch.get_num_threads(),
        "layer": args.layer, "units": len(units), "steps": args.steps, "lucent_steps": args.lucent_steps,
        "measure": f"activation of each unit at {MEASURE_SIZE} px on the untransformed image",
        "lucent": {"seconds": round(lucent["seconds"], 2), "units_per_min": round(len(units) / lucent["seconds"] * 60, 3),
                   "mean_activation_224": round(float(goal.mean()), 4), "time_to_quality_s": round(lucent["seconds"], 2)},
        "ours": {},
    }
    print(f"EfficientNet-Lite0 {args.layer}, {len(units)} units, {figures['device']}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; quality = activation @{MEASURE_SIZE} px, untransformed image")
    print(f"{'method':34s} {'seconds':>8s} {'units/min':>9s} {'act@224':>8s} {'vs Lucent':>9s} "
          f"{'t→Lucent q':>10s} {'speed-up':>8s} {'reached':>7s}")
    print(f"{'Lucent render_vis ×%d (%d→224 px)' % (len(units), args.lucent_size):34s} {lucent['seconds']:8.1f} "
          f"{len(units) / lucent['seconds'] * 60:9.2f} {float(goal.mean()):8.2f} {1.0:9.2f} {lucent['seconds']:10.1f} "
          f"{1.0:8.2f} {len(units):4d}/{len(units)}")
    for name, overrides in rows:
        settings = RenderSettings().with_(steps=args.steps, **overrides)
        run = ours_render(model, args.layer, units, settings, args.every)
        when, reached = time_to_reach(run, goal)
        upm = len(units) / run["seconds"] * 60
        act = float(run["final"].mean())
        speedup = lucent["seconds"] / when if when < math.inf else 0.0
        figures["ours"][name] = {
            "settings": {k: v for k, v in settings.to_dict().items()}, "seconds": round(run["seconds"], 2),
            "units_per_min": round(upm, 3), "mean_activation_224": round(act, 4),
            "activation_ratio": round(act / float(goal.mean()), 4),
            "time_to_quality_s": round(when, 2) if when < math.inf else None, "units_reached": reached,
            "time_to_quality_speedup": round(speedup, 3) if when < math.inf else None,
            "units_per_min_ratio": round(upm / (len(units) / lucent["seconds"] * 60), 3),
            "curve": {str(k): round(float(v.mean()), 4) for k, v in run["curve"].items()},
        }
        t_text = f"{when:10.1f}" if when < math.inf else f"{'not yet':>10s}"
        s_text = f"{speedup:8.2f}" if when < math.inf else f"{'-':>8s}"
        print(f"{name:34s} {run['seconds']:8.1f} {upm:9.2f} {act:8.2f} {act / float(goal.mean()):9.2f} {t_text} "
              f"{s_text} {reached:4d}/{len(units)}")
    figures["lucent"]["curve"] = {str(k): round(float(v.mean()), 4) for k, v in lucent["curve"].items()}
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(figures, indent=2))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()

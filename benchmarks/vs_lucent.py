"""Ours vs Lucent at equal work: units per minute at a fixed step count, and time to Lucent's quality.

Equal work: both sides feed EfficientNet-Lite0 224-px images (Lucent upsamples its 128-px param to 224 every
step, as its users run it; ours renders at the network input size, or upsamples inside its transforms when a
variant says so). Quality is one yardstick for both: a unit's activation on the final, untransformed image,
measured at 224 px with the same code (images of another size are upsampled the way Lucent does, bilinear,
align_corners=True).

* time to Lucent's quality — for each of Lucent's levels (``--lucent-steps 48,96,256``: the activation its
  k-step render of a unit reaches), the seconds of our shortest run in which EVERY unit reaches its level. Ours
  runs a ladder of step counts (``--ladder 8,12,16,…``), each a separate, timed run, because the render's
  schedules (coarse-to-fine, learning rate) scale with the step count; Lucent's time to its own level k is its
  run's time × k / its steps (its cost per step is constant). "units reached" says how many did when not all.
* the robust yardstick (a second one, which can disagree): each unit's mean activation over 8 fixed random views
  of the final image drawn from Lucent's own transform set (pad 12, jitter 8, scale 0.9–1.1, rotate ±10°), the
  same views for both sides. An image tuned to the one untransformed view (e.g. optimised without transforms) scores
  high on the first yardstick and not on this one; it favours Lucent, whose renders were optimised under exactly
  these transforms. "time to Lucent's robust quality" is the time-to-level on this yardstick.
* units/min and the activation ratio — ours at the render default's step count (``--steps`` to change it)
  against Lucent's top level.

Both sides run in one process, one after the other, on ``--device``. Lucent leaks one hook per module per
call: they are removed between calls (in Lucent's favour). ``--variants`` adds rows of ours with other
settings (how the defaults were chosen: docs/ARCHITECTURE.md, "Render defaults").

  .venv/bin/python benchmarks/vs_lucent.py --lucent-steps 48,96,256 --json out/vs_lucent.json   # 16 units
  .venv/bin/python benchmarks/vs_lucent.py --units 4 --lucent-steps 32 --ladder 8,16,32 --steps 32  # a short run
  .venv/bin/python benchmarks/vs_lucent.py --device cuda --json out/vs_lucent.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from _common import sync  # also puts the repository on sys.path

from explorer import devices, files  # noqa: E402
from explorer.compat import import_lucent  # noqa: E402
from explorer.models import load_model  # noqa: E402
from explorer.optvis import RenderSettings, objectives, render  # noqa: E402
from explorer.optvis.render import evaluate  # noqa: E402

MEASURE_SIZE = 224
DEFAULT_ROW = "ours (defaults)"


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


ROBUST_VIEWS = 8


def robust_activations(model, layer: str, units: list[int], images: torch.Tensor) -> torch.Tensor:
    """[units] mean activation of unit i over ROBUST_VIEWS random views of image i (Lucent's transform set at
    224 px, drawn from a fixed seed: the same views for every image set of the same size)."""
    from explorer.optvis.transforms import lucent_like_transforms

    views = lucent_like_transforms(MEASURE_SIZE)
    generator = torch.Generator().manual_seed(0)
    x = at_224(images.float())
    per_view = [unit_activations(model, layer, units, views(x, generator)) for _ in range(ROBUST_VIEWS)]
    return torch.stack(per_view).mean(0)


def lucent_render(model, layer: str, units: list[int], steps: int, size: int, checkpoints: list[int],
                  robust_at: tuple[int, ...] = ()) -> dict:
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
    robust = {k: robust_activations(model, layer, units, torch.cat(per_checkpoint[k])) for k in robust_at}
    return {"seconds": seconds, "curve": curve, "final": curve[steps], "robust": robust}


def ours_run(model, layer: str, units: list[int], settings: RenderSettings) -> dict:
    """One batch of all units for ``settings.steps`` steps (its schedules scale with that count), timed."""
    sync(model.device)
    start = time.perf_counter()
    result = render(model, objectives.channel(layer, units), settings)
    sync(model.device)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "final": unit_activations(model, layer, units, result.images),
            "robust": robust_activations(model, layer, units, result.images)}


def ladder_runs(model, layer: str, units: list[int], settings: RenderSettings, ladder: list[int],
                goals: dict[int, torch.Tensor], must: int,
                robust_goals: dict[int, torch.Tensor] | None = None) -> dict[int, dict]:
    """A separate run at each step count of the ladder, shortest first; stops once every Lucent level is
    reached by every unit on both yardsticks and the ladder has passed ``must`` steps (the default)."""
    runs: dict[int, dict] = {}
    for steps in ladder:
        runs[steps] = ours_run(model, layer, units, settings.with_(steps=steps))
        run = runs[steps]
        reached_all = all(bool((run["final"] >= goal).all()) for goal in goals.values()) and all(
            bool((run["robust"] >= goal).all()) for goal in (robust_goals or {}).values())
        if reached_all and steps >= must:
            break
    return runs


def per_unit(values: torch.Tensor) -> list[float]:
    """One figure per unit, for the JSON: which unit decides an "every unit" level."""
    return [round(float(v), 3) for v in values.reshape(-1)]


def time_to_level(runs: dict[int, dict], goal: torch.Tensor, key: str = "final") -> tuple[float, int | None, int]:
    """(seconds of the shortest run in which EVERY unit reaches its goal, or inf; its steps; most units reached)."""
    best = 0
    for steps, run in sorted(runs.items()):
        reached = int((run[key] >= goal).sum())
        best = max(best, reached)
        if reached == len(goal):
            return run["seconds"], steps, reached
    return math.inf, None, best


def step_costs(model, layer: str, units: list[int], pairs: int, steps: int, lucent_size: int) -> tuple[float, float]:
    """Median seconds per unit and step of ours (one batch of ``units``) and of Lucent (one unit), measured in
    ``pairs`` interleaved runs of ``steps`` steps: on a CPU shared with other jobs, both sides see the same load."""
    ours, theirs = [], []
    for _ in range(pairs):
        sync(model.device)
        start = time.perf_counter()
        render(model, objectives.channel(layer, units), RenderSettings(steps=steps))
        sync(model.device)
        ours.append((time.perf_counter() - start) / (steps * len(units)))
        theirs.append(lucent_render(model, layer, units[:1], steps, lucent_size, [steps])["seconds"] / steps)
    return statistics.median(ours), statistics.median(theirs)


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
            overrides[key] = (None if value == "None" else int(value) if "int" in kind
                              else float(value) if "float" in kind
                              else value.lower() in ("1", "true", "yes") if "bool" in kind else value)
        variants.append((name, overrides))
    return variants


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--units", type=int, default=16)
    parser.add_argument("--steps", type=int, default=None,
                        help="our step count for units/min and the activation ratio (default: the render default)")
    parser.add_argument("--lucent-steps", default="48,96,256",
                        help="Lucent's quality levels: its activation after each of these steps "
                             "(one run to the largest)")
    parser.add_argument("--ladder", default="8,12,16,24,32,48,64,96,128,192,256",
                        help="our step counts, each a separate run (schedules scale with the count)")
    parser.add_argument("--lucent-size", type=int, default=128, help="Lucent's param size (upsampled to 224)")
    parser.add_argument("--layer", default="blocks.10")
    parser.add_argument("--every", type=int, default=8, help="Lucent's activation curve every N steps")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--variants", default="", help='extra rows of ours: "name:key=value,…;name2:…"')
    parser.add_argument("--no-default", action="store_true", help="only the --variants rows of ours")
    parser.add_argument("--json", default=None, help="write the figures here")
    parser.add_argument("--cost-pairs", type=int, default=0,
                        help="also time both sides' cost per unit-step in N interleaved pairs (a busy CPU's load hits "
                             "both alike) and give the speed-ups as Lucent's steps × its cost / our steps × ours")
    parser.add_argument("--cost-steps", type=int, default=16)
    parser.add_argument("--as-if-no-amx", action="store_true",
                        help="a proxy for a CPU without AMX: our side takes the defaults such a CPU gets (fp32, "
                             "contiguous); run it with ONEDNN_MAX_CPU_ISA=AVX512_CORE_VNNI so oneDNN uses no AMX "
                             "either. Same hardware otherwise: say so beside its figures")
    parser.add_argument("--reuse", default=None,
                        help="a JSON this script wrote: take Lucent's levels and our ladder from it, "
                             "only measure the costs")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.as_if_no_amx:  # every default that depends on AMX reads this one function
        devices.cpu_has_fast_bf16 = lambda: False
    model = load_model("efficientnet_lite0", device=args.device)
    device = model.device
    units = list(range(args.units))
    rows = [] if args.no_default else [(DEFAULT_ROW, {})]
    rows += parse_variants(args.variants)
    levels = sorted({int(v) for v in str(args.lucent_steps).split(",") if v.strip()})
    default_steps = args.steps or RenderSettings().steps
    ladder = sorted({int(v) for v in args.ladder.split(",") if v.strip()} | {default_steps})

    # one untimed warm-up each (lazy initialisation, allocator), so no side pays it in its first timed run
    render(model, objectives.channel(args.layer, units), RenderSettings(steps=2))
    lucent_render(model, args.layer, units[:1], 2, args.lucent_size, [2])
    if args.reuse:
        figures = json.loads(Path(args.reuse).read_text())
        cost_figures(model, args, units, figures)
        write_figures(args.json or args.reuse, figures)
        return
    top = levels[-1]
    lucent_marks = sorted(set(range(args.every, top + 1, args.every)) | set(levels))
    lucent = lucent_render(model, args.layer, units, top, args.lucent_size, lucent_marks, robust_at=tuple(levels))
    goals = {k: lucent["curve"][k] for k in levels}
    robust_goals = lucent["robust"]
    # Lucent's time to its own k-step quality: its run's time × k / top (the cost per step is constant)
    lucent_time = {k: lucent["seconds"] * k / top for k in levels}
    figures = {
        "device": devices.describe(device), "cpu": cpu_name(), "torch": torch.__version__,
        "as_if_no_amx": bool(args.as_if_no_amx), "onednn_max_cpu_isa": os.environ.get("ONEDNN_MAX_CPU_ISA"),
        "threads": torch.get_num_threads(), "layer": args.layer, "units": len(units),
        "default_steps": default_steps, "lucent_levels": levels, "ladder": ladder,
        "measure": f"activation of each unit at {MEASURE_SIZE} px on the untransformed image",
        "lucent": {"seconds": round(lucent["seconds"], 2), "steps": top,
                   "levels": {str(k): {"mean_activation_224": round(float(goals[k].mean()), 4),
                                       "mean_robust_activation": round(float(robust_goals[k].mean()), 4),
                                       "seconds": round(lucent_time[k], 2),
                                       "per_unit": per_unit(goals[k]), "per_unit_robust": per_unit(robust_goals[k])}
                              for k in levels}},
        "ours": {},
    }
    print(f"EfficientNet-Lite0 {args.layer}, {len(units)} units, {figures['device']} ({figures['cpu']}), "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"quality = activation @{MEASURE_SIZE} px, untransformed")
    print(f"Lucent render_vis ×{len(units)} ({args.lucent_size}→224 px): {lucent['seconds']:.1f} s for {top} steps; "
          + ", ".join(f"{k} steps: act {float(goals[k].mean()):.2f}, robust {float(robust_goals[k].mean()):.2f} "
                      f"({lucent_time[k]:.1f} s)" for k in levels))
    for name, overrides in rows:
        settings = RenderSettings().with_(**overrides)
        must = overrides.get("steps", default_steps)
        runs = ladder_runs(model, args.layer, units, settings, sorted(set(ladder) | {must}), goals, must,
                           robust_goals)
        row = {"settings": settings.with_(steps=must).to_dict(), "ladder": {}}
        for steps, run in sorted(runs.items()):
            row["ladder"][str(steps)] = {"seconds": round(run["seconds"], 2),
                                         "mean_activation_224": round(float(run["final"].mean()), 4),
                                         "mean_robust_activation": round(float(run["robust"].mean()), 4),
                                         "per_unit": per_unit(run["final"]),
                                         "per_unit_robust": per_unit(run["robust"])}
        print(f"{name}: " + ", ".join(f"{s}:{r['seconds']:.1f}s/{r['mean_activation_224']:.2f}"
                                      f"/{r['mean_robust_activation']:.2f}" for s, r in row["ladder"].items()))
        if must in runs:
            run = runs[must]
            act = float(run["final"].mean())
            row["default"] = {"steps": must, "seconds": round(run["seconds"], 2),
                              "units_per_min": round(len(units) / run["seconds"] * 60, 3),
                              "mean_activation_224": round(act, 4),
                              "activation_vs_lucent_top": round(act / float(goals[top].mean()), 4)}
            print(f"  at {must} steps: {run['seconds']:.1f} s, act {act:.2f} = {act / float(goals[top].mean()):.2f}× "
                  f"Lucent's {top}-step")
        row["levels"] = {}
        for k in levels:
            when, steps, reached = time_to_level(runs, goals[k])
            speedup = lucent_time[k] / when if when < math.inf else None
            row["levels"][str(k)] = {"time_s": round(when, 2) if when < math.inf else None, "steps": steps,
                                     "units_reached": reached, "lucent_s": round(lucent_time[k], 2),
                                     "speedup": round(speedup, 3) if speedup else None}
            text = f"{when:.1f} s ({steps} steps)" if when < math.inf else f"not reached ({reached}/{len(units)} units)"
            print(f"  time to Lucent's {k}-step quality: {text}; Lucent {lucent_time[k]:.1f} s"
                  + (f"; speed-up ×{speedup:.2f}" if speedup else ""))
            when, steps, reached = time_to_level(runs, robust_goals[k], key="robust")
            speedup = lucent_time[k] / when if when < math.inf else None
            row["levels"][str(k)] |= {"robust_time_s": round(when, 2) if when < math.inf else None,
                                      "robust_steps": steps, "robust_units_reached": reached,
                                      "robust_speedup": round(speedup, 3) if speedup else None}
            text = f"{when:.1f} s ({steps} steps)" if when < math.inf else f"not reached ({reached}/{len(units)} units)"
            print(f"    on the robust yardstick: {text}" + (f"; speed-up ×{speedup:.2f}" if speedup else ""))
        figures["ours"][name] = row
        if args.json:
            write_figures(args.json, figures)
    figures["lucent"]["curve"] = {str(k): round(float(v.mean()), 4) for k, v in lucent["curve"].items()}
    if args.cost_pairs:
        cost_figures(model, args, units, figures)
    if args.json:
        write_figures(args.json, figures)
        print(f"wrote {args.json}")


def cost_figures(model, args: argparse.Namespace, units: list[int], figures: dict) -> None:
    """Speed-ups from steps (load-independent: the ladder's qualities) × interleaved costs per unit-step."""
    ours_cost, lucent_cost = step_costs(model, args.layer, units, args.cost_pairs, args.cost_steps, args.lucent_size)
    figures["step_cost"] = {"pairs": args.cost_pairs, "steps": args.cost_steps, "units": len(units),
                            "ours_s_per_unit_step": round(ours_cost, 5),
                            "lucent_s_per_unit_step": round(lucent_cost, 5),
                            "ratio": round(lucent_cost / ours_cost, 3)}
    print(f"cost per unit-step, median of {args.cost_pairs} interleaved pairs: ours {ours_cost * 1000:.1f} ms "
          f"(batch {len(units)}), Lucent {lucent_cost * 1000:.1f} ms: ×{lucent_cost / ours_cost:.2f}")
    for name, row in figures["ours"].items():
        if name != DEFAULT_ROW:  # the cost was timed with the default settings only: a variant's step cost differs
            continue
        for level, entry in row["levels"].items():
            if entry["steps"]:
                speedup = int(level) * lucent_cost / (entry["steps"] * ours_cost)
                entry["cost_speedup"] = round(speedup, 3)
                print(f"  {name}: Lucent's {level}-step quality in {entry['steps']} steps: ×{speedup:.2f} "
                      f"({level}/{entry['steps']} steps × cost ratio)")


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def write_figures(path: str, figures: dict) -> None:
    files.write_json(path, figures)  # atomic: the JSON is rewritten after every row


if __name__ == "__main__":
    main()

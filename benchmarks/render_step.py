"""Which precision and memory layout should a render step use on this device? Measured, not assumed.

One render step = Fourier param → transforms → EfficientNet-Lite0 forward to ``--layer`` → objective →
backward → Adam, batch ``--batch`` at the network's 224 px. Four variants, timed interleaved (A B C D, A B C
D, …, median of ``--repeats``): fp32 or bf16 autocast (fp32 runs with TF32 on CUDA), contiguous or
channels_last. Quality: each precision renders the same units for ``--steps`` steps from the same seed and
the activation (fp32, 224 px, untransformed image) is compared — bf16 qualifies only within 2 %. These four run
on the network as loaded (``fuse=False``).

``--twin`` adds the fused twin (explorer/models/fused.py: batch norms folded, CPU depthwise convs in fp32 under
autocast) against the network as loaded, both in the device's default layout, fp32 and bf16, interleaved, and
the activation each reaches after ``--steps`` steps.

  .venv/bin/python benchmarks/render_step.py [--device auto] [--batch 16] [--repeats 5] [--steps 48] [--twin] [--json F]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time
from pathlib import Path

import torch

from _common import sync  # also puts the repository on sys.path

from explorer import devices  # noqa: E402
from explorer.models import load_model  # noqa: E402
from explorer.optvis import RenderSettings, objectives, render  # noqa: E402
from explorer.optvis.optimise import Execution, ImageHandling, Schedule, optimise  # noqa: E402
from explorer.optvis.param import make_param  # noqa: E402
from explorer.optvis.render import model_score  # noqa: E402
from explorer.optvis.transforms import standard_transforms  # noqa: E402


def step_seconds(model, layer: str, batch: int, precision, steps: int = 3) -> float:
    """Seconds per step of ``steps`` eager steps (after one warm-up step) in the model's current layout."""
    device = model.device
    objective = objectives.channel(layer, list(range(batch)))
    gen = devices.generator(device, 0)
    param = make_param("fft", batch, 224, generator=gen, device=device)
    score = model_score(model, objective, precision)
    transforms = standard_transforms(224, 224)
    with devices.fast_fp32(device):
        handling = ImageHandling(transforms=transforms, generator=gen)
        optimise(param, score, Schedule(steps=1), handling=handling)
        sync(device)
        start = time.perf_counter()
        optimise(param, score, Schedule(steps=steps), handling=handling, execution=Execution(check_every=steps))
        sync(device)
    return (time.perf_counter() - start) / steps


_MEMORY_FORMAT = devices.memory_format


def set_layout(model, channels_last: bool) -> None:
    """The model's weights and its inputs (LoadedModel.prepare asks devices.memory_format) in one layout."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model.module.to(memory_format=fmt)
    devices.memory_format = lambda device: fmt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--layer", default="blocks.10")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=48, help="steps of the quality comparison")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--twin", action="store_true", help="also time the fused twin against the plain network")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    fused = load_model("efficientnet_lite0", device=args.device)
    model = dataclasses.replace(fused, fuse=False)  # the layout/precision grid measures the network as loaded
    device = model.device
    original = devices.memory_format(device)
    variants = [(layout, precision) for layout in (False, True) for precision in (False, "bf16")]
    times: dict[tuple, list[float]] = {v: [] for v in variants}
    for _ in range(args.repeats):
        for layout, precision in variants:
            set_layout(model, layout)
            times[(layout, precision)].append(step_seconds(model, args.layer, args.batch, precision))
    forward: dict[bool, list[float]] = {False: [], True: []}  # inference only (sweeps, probes), fp32
    x = torch.rand(args.batch, 3, 224, 224, generator=devices.generator(device, 1), device=device)
    for _ in range(args.repeats):
        for layout in (False, True):
            set_layout(model, layout)
            with torch.inference_mode():
                model.module(model.prepare(x))  # warm-up in this layout
                sync(device)
                start = time.perf_counter()
                model.module(model.prepare(x))
                sync(device)
            forward[layout].append(time.perf_counter() - start)
    set_layout(model, original == torch.channels_last)
    devices.memory_format = _MEMORY_FORMAT

    base = statistics.median(times[(False, False)])
    figures = {"device": devices.describe(device), "torch": torch.__version__, "batch": args.batch,
               "layer": args.layer, "repeats": args.repeats, "step_seconds": {}, "quality": {}}
    print(f"render step, EfficientNet-Lite0 to {args.layer}, batch {args.batch} at 224 px, {figures['device']}, "
          f"torch {torch.__version__}; median of {args.repeats} interleaved runs")
    for (layout, precision), values in times.items():
        name = f"{'channels_last' if layout else 'contiguous'} {'bf16' if precision else 'fp32'}"
        median = statistics.median(values)
        figures["step_seconds"][name] = round(median, 4)
        print(f"  {name:24s} {median * 1000:9.1f} ms/step   speed ×{base / median:5.2f} vs contiguous fp32")

    for layout, values in forward.items():
        name = "channels_last" if layout else "contiguous"
        median = statistics.median(values)
        figures.setdefault("forward_seconds", {})[name] = round(median, 4)
        print(f"  forward only, {name:14s} {median * 1000:9.1f} ms/batch ({args.batch / median:.1f} img/s)")

    units = list(range(min(args.batch, 8)))
    acts = {}
    for precision in (False, "bf16"):
        settings = RenderSettings(steps=args.steps, autocast=precision, seed=0)
        acts[precision] = float(render(model, objectives.channel(args.layer, units), settings).final_activation.mean())
    ratio = acts["bf16"] / acts[False]
    figures["quality"] = {"units": len(units), "steps": args.steps, "fp32": round(acts[False], 4),
                          "bf16": round(acts["bf16"], 4), "bf16_over_fp32": round(ratio, 4)}
    print(f"activation @224 after {args.steps} steps ({len(units)} units, measured in fp32): fp32 {acts[False]:.3f}, "
          f"bf16 {acts['bf16']:.3f} (×{ratio:.3f}; bf16 qualifies, within 2 % or better: "
          f"{'yes' if ratio >= 0.98 else 'no'})")
    if args.twin:
        figures["twin"] = twin_figures(model, fused, args)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(figures, indent=2))


def twin_figures(plain, fused, args: argparse.Namespace) -> dict:
    """Step time and reached activation, plain network against its fused twin (the device's default layout)."""
    twin = fused.fused
    if twin is None:
        print(f"no fused twin: {fused.fuse_note}")
        return {"note": fused.fuse_note}
    print(f"fused twin: {twin.folded} batch norms folded, {twin.depthwise_fp32} depthwise convs in fp32 under CPU "
          f"autocast, {twin.static_padding} paddings made static; largest relative difference at a shared layer "
          f"{twin.worst_relative_error:.1e}")
    variants = [(f"{name} {'bf16' if precision else 'fp32'}", m, precision)
                for precision in (False, "bf16") for name, m in (("plain", plain), ("twin", fused))]
    times: dict[str, list[float]] = {key: [] for key, _, _ in variants}
    for _ in range(args.repeats):
        for key, m, precision in variants:
            times[key].append(step_seconds(m, args.layer, args.batch, precision))
    out = {"folded": twin.folded, "depthwise_fp32": twin.depthwise_fp32, "step_seconds": {}, "quality": {}}
    for precision in ("fp32", "bf16"):
        plain_s, twin_s = statistics.median(times[f"plain {precision}"]), statistics.median(times[f"twin {precision}"])
        out["step_seconds"][precision] = {"plain": round(plain_s, 4), "twin": round(twin_s, 4),
                                          "speedup": round(plain_s / twin_s, 3)}
        print(f"  {precision}: plain {plain_s * 1000:.1f} ms/step, twin {twin_s * 1000:.1f} ms/step: "
              f"×{plain_s / twin_s:.2f}")
    units = list(range(min(args.batch, 8)))
    precision = devices.render_precision(fused.device)
    for name, m in (("plain", plain), ("twin", fused)):
        settings = RenderSettings(steps=args.steps, autocast=precision, seed=0)
        out["quality"][name] = round(float(render(m, objectives.channel(args.layer, units),
                                                  settings).final_activation.mean()), 4)
    print(f"activation @224 after {args.steps} steps ({len(units)} units, {precision or 'fp32'}): plain "
          f"{out['quality']['plain']:.3f}, twin {out['quality']['twin']:.3f}")
    return out


if __name__ == "__main__":
    main()

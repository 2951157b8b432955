"""Ours vs Lucent: unit visualisations per minute and mean final activation, measured in one run.

EfficientNet-Lite0, 16 channels of a mid layer, the same steps, 128-px Fourier/decorrelated param
(sd 0.01, Adam lr 0.05) and the same transform family (Lucent's standard set). Lucent is driven as its
users drive it: one `render_vis` call per channel (its default upsampling to 224 px included); ours
renders the 16 channels as one batch. Lucent leaks one hook per module per call: we remove them
between calls so later calls are not slowed by earlier ones (in Lucent's favour).

Activations are measured the same way for both, with our capture on the final untransformed image:
at 128 px (the parameter size) and upsampled to 224 px (what Lucent optimises).

  .venv/bin/python benchmarks/vs_lucent.py [--steps 256] [--channels 16] [--layer blocks.10]
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from explorer.compat import import_lucent
from explorer.models import load_model
from explorer.optvis import RenderSettings, evaluate, objectives, render


def lucent_render(model, layer: str, channels: list[int], steps: int, size: int) -> tuple[torch.Tensor, float]:
    import_lucent()
    from lucent.optvis import param, render as lrender, transform

    images = []
    start = time.perf_counter()
    for c in channels:
        torch.manual_seed(c)
        transforms = list(transform.standard_transforms) + [model.preprocess]
        out = lrender.render_vis(
            model.module, f"{layer.replace('.', '_')}:{c}", param_f=lambda: param.image(size), transforms=transforms,
            thresholds=(steps,), preprocess=False, progress=False, show_image=False,
        )
        images.append(torch.from_numpy(out[-1]).permute(0, 3, 1, 2))
        for m in model.module.modules():  # undo Lucent's leaked hooks
            m._forward_hooks.clear()
    return torch.cat(images), time.perf_counter() - start


def activation(model, layer, channels, images, size=None):
    x = images if size is None else F.interpolate(images, size=(size, size), mode="bilinear", align_corners=True)
    return float(evaluate(model, objectives.channel(layer, channels), x).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=256)
    parser.add_argument("--channels", type=int, default=16)
    parser.add_argument("--layer", default="blocks.10")
    parser.add_argument("--size", type=int, default=128)
    args = parser.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    model = load_model("efficientnet_lite0", device="cpu")
    channels = list(range(args.channels))

    rows = []
    for label, transforms in [("ours (lucent transforms)", "lucent"), ("ours (standard transforms)", "standard")]:
        settings = RenderSettings(size=args.size, steps=args.steps, lr=0.05, transforms=transforms, seed=0)
        start = time.perf_counter()
        result = render(model, objectives.channel(args.layer, channels), settings)
        seconds = time.perf_counter() - start
        rows.append((label, seconds, result.images))
    lucent_images, lucent_seconds = lucent_render(model, args.layer, channels, args.steps, args.size)
    rows.append(("lucent render_vis ×%d" % len(channels), lucent_seconds, lucent_images))

    print(f"EfficientNet-Lite0 {args.layer}, {len(channels)} channels, {args.steps} steps, {args.size}-px FFT param, "
          f"{torch.get_num_threads()} CPU threads")
    print(f"{'method':30s} {'seconds':>8s} {'units/min':>10s} {'act@128':>9s} {'act@224':>9s}")
    table = {}
    for label, seconds, images in rows:
        upm = len(channels) / seconds * 60
        a128 = activation(model, args.layer, channels, images)
        a224 = activation(model, args.layer, channels, images, 224)
        table[label] = (upm, a128, a224)
        print(f"{label:30s} {seconds:8.1f} {upm:10.2f} {a128:9.2f} {a224:9.2f}")
    lucent = table[rows[-1][0]]
    for label, _, _ in rows[:-1]:
        ours = table[label]
        print(f"{label}: {ours[0] / lucent[0]:.2f}x Lucent's units/min; activation ratio "
              f"{ours[1] / lucent[1]:.2f} (@128), {ours[2] / lucent[2]:.2f} (@224)")


if __name__ == "__main__":
    main()

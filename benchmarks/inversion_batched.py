"""Does inverting several layers as ONE batch beat one run per layer? Times both on the same photo,
same steps, interleaved, and prints the speed-up (and that the results agree).

Run: PYTHONPATH=. .venv/bin/python benchmarks/inversion_batched.py [--steps 20] [--size 224]
"""

import argparse
import time

import torch

from explorer import inversion
from explorer.models import load_model

parser = argparse.ArgumentParser()
parser.add_argument("--steps", type=int, default=20)
parser.add_argument("--size", type=int, default=224)
parser.add_argument("--repeats", type=int, default=2)
parser.add_argument("--layers", default="blocks.2,blocks.6,blocks.10,blocks.15")
args = parser.parse_args()

model = load_model("efficientnet_lite0", device="auto")
layers = args.layers.split(",")
photo = inversion.load_photo("builtin:astronaut", args.size)
settings = inversion.InversionSettings(size=args.size, steps=args.steps, init="grey")
inversion.invert(model, photo, layers[:1], settings.with_(steps=2))  # warm-up

batched_s, separate_s = [], []
for _ in range(args.repeats):
    start = time.perf_counter()
    batched = inversion.invert(model, photo, layers, settings)
    batched_s.append(time.perf_counter() - start)
    start = time.perf_counter()
    separate = [inversion.invert(model, photo, [layer], settings) for layer in layers]
    separate_s.append(time.perf_counter() - start)

b, s = min(batched_s), min(separate_s)
print(f"device {model.device}, threads {torch.get_num_threads()}, {len(layers)} layers, {args.steps} steps, "
      f"{args.size} px")
print(f"one batched run : {b:7.2f} s")
print(f"one run per layer: {s:7.2f} s")
print(f"speed-up of the batched run: ×{s / b:.2f}")
agree = max(abs(x - y.final_error[0]) for x, y in zip(batched.final_error, separate))
print(f"largest difference in final normalised error between the two: {agree:.2e} (the random starts differ slightly)")

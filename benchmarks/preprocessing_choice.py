"""Which input scaling suits the EfficientNet-Lite0 weights? Prints top-2 classes per built-in photo
for ImageNet mean/std and for TF-style (x·255 − 127)/128.  Run: .venv/bin/python benchmarks/preprocessing_choice.py"""

import torch

from explorer.images import fit, load_image
from explorer.models import Normalize, load_model
from explorer.models.base import IMAGENET_NORMALIZE
from explorer.models.imagenet import tf_scaling

model = load_model("efficientnet_lite0", device="cpu")
for name in ["chelsea", "coffee", "astronaut", "rocket", "china", "flower"]:
    x = fit(load_image(f"builtin:{name}"), 224)[None]
    row = []
    for tag, pre in [("imagenet mean/std", Normalize(*IMAGENET_NORMALIZE)), ("tf scaling", tf_scaling())]:
        with torch.no_grad():
            p = torch.softmax(model.module(pre(x)), -1)[0]
        values, idx = p.topk(2)
        row.append(f"{tag}: " + ", ".join(f"{model.labels[i]} {v:.3f}" for v, i in zip(values.tolist(), idx.tolist())))
    print(f"{name:10s} | " + " | ".join(row))

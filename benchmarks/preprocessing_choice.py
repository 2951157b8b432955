"""Which input scaling suits each EfficientNet-Lite's weights: TF-style (x·255 − 127)/128 or ImageNet mean/std?

For the built-in photos whose ImageNet class is unambiguous, 16 views each at the model's native size
(see ``views``), it prints per model and scaling the mean log-probability and mean probability of the
right classes and how many views are top-1 right; the registry uses
the scaling with the higher mean log-probability (a proper score; recorded in explorer/models/imagenet.py
LITE_VARIANTS).

Run: PYTHONPATH=. .venv/bin/python benchmarks/preprocessing_choice.py [--models efficientnet_lite0,...]
"""

import argparse

import torch

from explorer.images import fit, load_image
from explorer.models import load_model
from explorer.models.imagenet import INPUT_SCALINGS, LITE_VARIANTS

# photo -> the ImageNet classes that name it correctly
LABELLED_PHOTOS = {
    "chelsea": ("tabby", "tiger cat", "Egyptian cat"),
    "coffee": ("espresso", "cup", "coffee mug"),
    "stereo_motorcycle": ("moped", "motor scooter"),
    "camera": ("tripod",),
    "rocket": ("missile", "projectile", "space shuttle"),
    "china": ("palace", "monastery"),
}


def views(photo: str, size: int, crops: int) -> torch.Tensor:
    """Centre crop, its mirror, the padded whole photo, then ``crops`` random square crops (50–100 % of
    the short side, random place and mirror) from a fixed generator."""
    image = load_image(f"builtin:{photo}")
    crop = fit(image, size)
    out = [crop, crop.flip(-1), fit(image, size, mode="pad")]
    h, w = image.shape[-2:]
    gen = torch.Generator().manual_seed(sum(map(ord, photo)))
    for _ in range(crops):
        side = int(min(h, w) * (0.5 + 0.5 * float(torch.rand((), generator=gen))))
        top = int(torch.randint(0, h - side + 1, (), generator=gen))
        left = int(torch.randint(0, w - side + 1, (), generator=gen))
        view = fit(image[:, top : top + side, left : left + side], size)
        out.append(view.flip(-1) if float(torch.rand((), generator=gen)) < 0.5 else view)
    return torch.stack(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(LITE_VARIANTS))
    parser.add_argument("--crops", type=int, default=13, help="random crops per photo (besides 3 fixed views)")
    args = parser.parse_args()
    torch.set_num_threads(2)
    for name in args.models.split(","):
        model = load_model(name, device="cpu")
        size = model.input_size[0]
        print(f"\n{name} ({size} px); registry uses: {type(model.preprocess).__name__}")
        totals = {}
        for scaling, make in INPUT_SCALINGS.items():
            pre = make()
            masses, hits, cells, logs = [], 0, [], []
            for photo, accepted in LABELLED_PHOTOS.items():
                idx = [model.labels.index(c) for c in accepted]
                with torch.no_grad():
                    p = torch.softmax(model.module(pre(views(photo, size, args.crops))), -1)
                mass = p[:, idx].sum(1)
                logs.append(mass.clamp_min(1e-12).log())
                hit = torch.isin(p.argmax(1), torch.tensor(idx))
                masses.append(mass)
                hits += int(hit.sum())
                cells.append(f"{photo} {float(mass.mean()):.3f}")
            mean, log_mean = float(torch.cat(masses).mean()), float(torch.cat(logs).mean())
            totals[scaling] = log_mean
            n = sum(len(m) for m in masses)
            print(f"  {scaling:9s} mean log p(right) {log_mean:.3f}, mean p(right) {mean:.3f}, "
                  f"top-1 right {hits}/{n} | " + ", ".join(cells))
        print(f"  -> {max(totals, key=totals.get)}")


if __name__ == "__main__":
    main()

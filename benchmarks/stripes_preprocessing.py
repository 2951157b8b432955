"""How much does the stripes fooling rate depend on the input scaling? The same stripe/checkerboard samples
(seed 0) through EfficientNet-Lite0 with TF-style scaling (what the registry uses, measured best on photos)
and with ImageNet mean/std, plus Lite1 and Lite2 (their registry scalings, samples drawn at their own sizes).

Run: PYTHONPATH=. .venv/bin/python benchmarks/stripes_preprocessing.py [--n 1000] [--seed 0] [--batch 32]
"""

import argparse
import time

import torch

from explorer import fooling
from explorer.models import LoadedModel, Normalize, load_model
from explorer.models.base import IMAGENET_NORMALIZE
from explorer.models.imagenet import tf_scaling


def variant(model: LoadedModel, name: str, preprocess) -> LoadedModel:
    """The same network (shared module) behind another input scaling."""
    return LoadedModel(name, model.module, preprocess, model.labels, model.input_size, model.device, model.weights)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--family", default="stripes")
    args = parser.parse_args()
    lite0 = load_model("efficientnet_lite0", device="cpu")
    models = [variant(lite0, "lite0 TF-style (x·255−127)/128", tf_scaling()),
              variant(lite0, "lite0 ImageNet mean/std", Normalize(*IMAGENET_NORMALIZE)),
              load_model("efficientnet_lite1", device="cpu"), load_model("efficientnet_lite2", device="cpu")]
    start = time.perf_counter()
    result = fooling.sweep(models, args.family, args.n, seed=args.seed, batch_size=args.batch)
    print(f"{args.family}, n = {args.n}, seed {args.seed}, {time.perf_counter() - start:.0f} s; "
          "rate of max softmax ≥ t [95 % Clopper–Pearson]")
    for row in result.rows:
        cells = [f"≥{t:g}: {k}/{row.n} = {100 * k / row.n:.1f} % [{100 * lo:.1f}, {100 * hi:.1f}]"
                 for t, k, (lo, hi) in zip(row.thresholds, row.fooled, row.intervals) if t in (0.5, 0.9)]
        best = row.gallery[0] if row.gallery else {}
        print(f"  {row.model:34s} {' | '.join(cells)} | highest {best.get('confidence', 0):.3f} "
              f"({best.get('label', '')}) | mean max p {row.mean_confidence:.3f}")


if __name__ == "__main__":
    torch.set_num_threads(2)
    main()

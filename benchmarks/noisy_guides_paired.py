"""Are two noise-aware guides different at some noise level? A paired test on the same noise draws.

Both classifiers see exactly the draws of ``noisy_classifier.accuracy_by_t`` (seed 4321, all test images, one t
and ε per image and t range), so the accuracies printed are the ones their exports wrote into config.json; per
range, an exact McNemar test on the images only one of the two gets right says whether they differ beyond chance.

    .venv/bin/python benchmarks/noisy_guides_paired.py assets/fashion_noisy_cnn runs/fashion_noisy_cnn_w64 [--json F]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from scipy.stats import binomtest

if not __package__:
    import _common  # noqa: F401  (puts the repository on sys.path)

from explorer.diffusion.data import load_fashion_mnist  # noqa: E402
from explorer.diffusion.noisy_classifier import T_BINS, load_noisy_classifier, log_snr  # noqa: E402
from explorer.diffusion.train import make_scheduler  # noqa: E402


def t_ranges(T: int = 1000, bins: int = T_BINS) -> list[tuple[int, int]]:
    """t = 0 exactly, then ``bins`` equal ranges: accuracy_by_t's rows, in its order (the draws depend on it)."""
    edges = [round(i * T / bins) for i in range(bins + 1)]
    return [(0, 1)] + list(zip(edges[:-1], edges[1:]))


@torch.no_grad()
def paired_rows(old: torch.nn.Module, new: torch.nn.Module, *, seed: int = 4321, batch: int = 500) -> list[dict]:
    """Per t range: both accuracies and the discordant counts on accuracy_by_t's draws."""
    test = load_fashion_mnist("test")
    abar = make_scheduler("linear").alphas_cumprod.float()
    levels = log_snr(abar)
    gen = torch.Generator().manual_seed(seed)
    rows = []
    for lo, hi in t_ranges(len(abar)):
        right_old, right_new = [], []
        for start in range(0, len(test), batch):
            x0 = test.images[start : start + batch] * 2 - 1
            t = torch.randint(lo, hi, (x0.shape[0],), generator=gen)
            noise = torch.randn(x0.shape, generator=gen)
            a = abar[t].view(-1, 1, 1, 1)
            x_t, y = a.sqrt() * x0 + (1 - a).sqrt() * noise, test.labels[start : start + batch]
            right_old.append(old(x_t, levels[t]).argmax(1) == y)
            right_new.append(new(x_t, levels[t]).argmax(1) == y)
        r_old, r_new = torch.cat(right_old), torch.cat(right_new)
        only_new, only_old = int((r_new & ~r_old).sum()), int((r_old & ~r_new).sum())
        p = binomtest(only_new, only_new + only_old).pvalue if only_new + only_old else 1.0
        rows.append({"t_from": lo, "t_to": hi - 1, "old": round(float(r_old.float().mean()), 4),
                     "new": round(float(r_new.float().mean()), 4), "only_new_right": only_new,
                     "only_old_right": only_old, "mcnemar_p": round(p, 4), "n": len(test)})
        print(f"t {lo:>3}–{hi - 1:<3} {rows[-1]['old']:.4f} → {rows[-1]['new']:.4f}  only new right {only_new}, "
              f"only old right {only_old}, exact McNemar p {p:.3f}", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old", help="a noise-aware classifier: fashion_noisy_cnn or a trained folder")
    parser.add_argument("new")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    old, new = (load_noisy_classifier(name, "cpu").module for name in (args.old, args.new))
    rows = paired_rows(old, new)
    if args.json:
        Path(args.json).write_text(json.dumps({"old": args.old, "new": args.new, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()

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
if not __package__:
    import _common  # noqa: F401  (puts the repository on sys.path)

from explorer.diffusion.data import load_fashion_mnist  # noqa: E402
from explorer.diffusion.noisy_classifier import load_noisy_classifier, noised_draws  # noqa: E402
from explorer.diffusion.train import make_scheduler  # noqa: E402
from explorer.stats import exact_mcnemar  # noqa: E402


@torch.no_grad()
def paired_rows(old: torch.nn.Module, new: torch.nn.Module, *, seed: int = 4321, batch: int = 500) -> list[dict]:
    """Per t range: both accuracies and the discordant counts on accuracy_by_t's draws (``noised_draws``)."""
    test = load_fashion_mnist("test")
    abar = make_scheduler("linear").alphas_cumprod.float()
    right: dict[tuple[int, int], tuple[list, list]] = {}
    for lo, hi, x_t, level, y in noised_draws(test, abar, seed=seed, batch_size=batch):
        olds, news = right.setdefault((lo, hi), ([], []))
        olds.append(old(x_t, level).argmax(1) == y)
        news.append(new(x_t, level).argmax(1) == y)
    rows = []
    for (lo, hi), (olds, news) in right.items():
        r_old, r_new = torch.cat(olds), torch.cat(news)
        only_new, only_old = int((r_new & ~r_old).sum()), int((r_old & ~r_new).sum())
        p = exact_mcnemar(only_new, only_old)
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

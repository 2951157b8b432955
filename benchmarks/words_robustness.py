"""How far a keyword net's verdict survives an attack on its log-mel (issue 19, the robust word nets): the
validation accent's keyword clips (espeak-ng en-029, clean, centred in one second, as the trainer's tables read
them), each moved by the project's L2 PGD attack (``explorer.adversarial.l2_pgd``, 10 steps) to the worst point
within radius R of its log-mel (a clip's log-mel norm is ≈ 59), and the number still read right, per net and R.

    python benchmarks/words_robustness.py --data runs/words/data --nets assets/words runs/words/net_adv15 \\
        --json docs/audio/word_dreams_robust/robustness.json
"""

from __future__ import annotations

import argparse

import _common  # noqa: F401 - puts the repository on sys.path
import numpy as np  # noqa: E402
import torch  # noqa: E402

from explorer.adversarial import l2_pgd  # noqa: E402
from explorer.audio.words import load_word_net_dir  # noqa: E402
from explorer.audio.wordsdata import LABELS, SILENCE, UNKNOWN, load_clips  # noqa: E402
from explorer.audio.wordstrain import centred, split  # noqa: E402
from explorer.files import write_json  # noqa: E402


def survivors(net_dir: str, clips: torch.Tensor, labels: torch.Tensor, radii: list[float], steps: int) -> list[int]:
    """Clips read right after the attack at each radius (radius 0: the clean clips)."""
    net = load_word_net_dir(net_dir).net.eval()
    with torch.no_grad():
        log_mel = net.front(clips)

    def logits_of(z: torch.Tensor) -> torch.Tensor:
        return net.head(net.features(z))

    right = []
    for radius in radii:
        with torch.enable_grad():
            attacked = l2_pgd(logits_of, log_mel, labels, radius, steps)
        with torch.no_grad():
            right.append(int((logits_of(attacked).argmax(1) == labels).sum()))
    return right


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="runs/words/data")
    parser.add_argument("--nets", nargs="+", default=["assets/words"])
    parser.add_argument("--radii", nargs="+", type=float, default=[0, 0.75, 1.5, 3, 6])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    _, validation, _ = split(load_clips(args.data))
    keyword = np.flatnonzero(~np.isin(validation.labels, [LABELS.index(SILENCE), LABELS.index(UNKNOWN)]))
    clips = torch.from_numpy(np.stack([centred(validation.clips[i]) for i in keyword])).float()
    labels = torch.from_numpy(validation.labels[keyword]).long()
    record = {"clips": f"validation keywords ({len(keyword)})", "steps": args.steps, "radii": args.radii, "nets": {}}
    print(f"{len(keyword)} validation keyword clips read right after a {args.steps}-step L2 attack on the log-mel")
    print(f"{'net':28s} " + " ".join(f"R={r:<5g}" for r in args.radii))
    for net_dir in args.nets:
        right = survivors(net_dir, clips, labels, args.radii, args.steps)
        record["nets"][net_dir] = right
        print(f"{net_dir:28s} " + " ".join(f"{k:<7d}" for k in right))
    if args.json:
        write_json(args.json, record)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

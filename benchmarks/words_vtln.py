"""Test-time speaker normalisation for the keyword net (issue 19): one frequency warp per voice, chosen without labels.

For each voice, every clip's |STFT| is warped with the training VTLP warp (``wordstrain.vtlp_warp``) at each α of a
grid; the α whose readings have the highest mean top-1 probability over all the voice's clips (keywords, unknown
words, silence — no label is read) is the one that voice is read at. Prints, per voice, the chosen α and the keyword
top-1 at α = 1 and at the chosen α, and the exact McNemar test of the two readings on the same clips, for the
held-out festival voices and the validation accent.

    python benchmarks/words_vtln.py --data runs/words/data --json docs/audio/words_vtln/vtln.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import _common  # noqa: F401 - puts the repository on sys.path
import numpy as np  # noqa: E402
import torch  # noqa: E402

from explorer.audio.words import load_word_net_dir, word_net_folders  # noqa: E402
from explorer.audio.wordsdata import LABELS, UNKNOWN, WordClips, load_clips  # noqa: E402
from explorer.audio.wordstrain import clip_logits, split  # noqa: E402
from explorer.stats import exact_mcnemar  # noqa: E402

ALPHAS = tuple(round(0.80 + 0.04 * k, 2) for k in range(11))


def per_voice(net, data: WordClips) -> dict:
    keyword = np.array([LABELS[i] != UNKNOWN for i in data.labels])
    rows, plain_right, tuned_right = {}, [], []
    for voice in sorted(set(data.voices)):
        mine = np.flatnonzero(data.voices == voice)
        clips = [data.clips[i] for i in mine]
        readings = {a: clip_logits(net, clips, warp=a) for a in ALPHAS}  # a WordNet: log-probabilities
        confidence = {a: float(np.exp(r.max(1)).mean()) for a, r in readings.items()}
        best = max(ALPHAS, key=lambda a: confidence[a])
        labels, kw = data.labels[mine], keyword[mine]
        plain = readings[1.0].argmax(1) == labels
        tuned = readings[best].argmax(1) == labels
        oracle = max(ALPHAS, key=lambda a: int(((readings[a].argmax(1) == labels) & kw).sum()))
        by_oracle = int(((readings[oracle].argmax(1) == labels) & kw).sum())
        rows[str(voice)] = {"alpha": best, "mean_top1_probability": {f"{a:.2f}": round(c, 4) for a, c in
                                                                      confidence.items()},
                            "keywords": int(kw.sum()), "correct_at_1": int(plain[kw].sum()),
                            "correct_at_alpha": int(tuned[kw].sum()),
                            "best_alpha_with_labels": oracle, "correct_at_best_alpha_with_labels": by_oracle}
        plain_right.append(plain[kw])
        tuned_right.append(tuned[kw])
    a, b = np.concatenate(plain_right), np.concatenate(tuned_right)
    only_plain, only_tuned = int((a & ~b).sum()), int((b & ~a).sum())
    return {"voices": rows, "keywords": int(len(a)), "correct_at_1": int(a.sum()), "correct_normalised": int(b.sum()),
            "only_at_1": only_plain, "only_normalised": only_tuned,
            "mcnemar_p": round(float(exact_mcnemar(only_plain, only_tuned)), 4)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="runs/words/data")
    parser.add_argument("--net", default=None, help="word net folder(s) (default: the shipped net)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    net = load_word_net_dir(list(word_net_folders(args.net)), "cpu")
    _, validation, test = split(load_clips(args.data))
    report = {"alphas": list(ALPHAS), "held_out": per_voice(net, test), "validation": per_voice(net, validation)}
    for name, part in (("held-out festival", report["held_out"]), ("validation en-029", report["validation"])):
        print(f"{name}: keywords {part['correct_at_1']}/{part['keywords']} at α = 1 → {part['correct_normalised']}/"
              f"{part['keywords']} normalised (only α = 1 / only normalised {part['only_at_1']} / "
              f"{part['only_normalised']}, exact McNemar p = {part['mcnemar_p']})")
        for voice, row in part["voices"].items():
            print(f"  {voice}: α = {row['alpha']:.2f}, {row['correct_at_1']} → {row['correct_at_alpha']} of "
                  f"{row['keywords']} (with labels the best α {row['best_alpha_with_labels']:.2f} would read "
                  f"{row['correct_at_best_alpha_with_labels']})")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

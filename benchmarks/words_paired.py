"""Two keyword nets on the same clips (issue 19): the held-out festival keywords and the validation accent, each
net's top-1 per voice, the unknown words, and the exact McNemar test on the clips where the nets disagree.

    python benchmarks/words_paired.py --data runs/words/data --baseline assets/words --candidate runs/words/net_v5 \\
        --json docs/audio/words_pseudo/paired_run2.json --pseudo-table

The clips are read as the trainer's tables read them (clean, centred in one second: ``wordstrain.accuracy_table``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import _common  # noqa: F401 - puts the repository on sys.path
import numpy as np  # noqa: E402
import torch  # noqa: E402

from explorer.audio.words import load_word_net_dir, word_net_folders  # noqa: E402
from explorer.audio.wordsdata import ENGINES, KOKORO, LABELS, PSEUDO, SILENCE, UNKNOWN, WordClips, load_clips  # noqa: E402
from explorer.audio.wordstrain import clip_logits, predict_clips, split  # noqa: E402
from explorer.stats import exact_mcnemar  # noqa: E402


def extra_scores(logits: np.ndarray, labels: np.ndarray, keyword: np.ndarray) -> dict:
    """On the keyword clips: top-3 over all 22 classes, and top-1 among the 20 words only (silence and unknown
    set aside)."""
    words = [i for i, name in enumerate(LABELS) if name not in (SILENCE, UNKNOWN)]
    top3 = (np.argsort(-logits, axis=1)[:, :3] == labels[:, None]).any(1)
    among_words = np.array(words)[logits[:, words].argmax(1)] == labels
    return {"top3": int(top3[keyword].sum()), "top1_among_20_words": int(among_words[keyword].sum()),
            "n": int(keyword.sum())}


def paired(right_a: np.ndarray, right_b: np.ndarray) -> dict:
    """Counts of a paired comparison of two nets' right/wrong on the same clips, with the exact McNemar p."""
    only_a, only_b = int((right_a & ~right_b).sum()), int((right_b & ~right_a).sum())
    return {"n": int(len(right_a)), "baseline_correct": int(right_a.sum()), "candidate_correct": int(right_b.sum()),
            "both": int((right_a & right_b).sum()), "only_baseline": only_a, "only_candidate": only_b,
            "exact_mcnemar_p": round(exact_mcnemar(only_a, only_b), 4)}


def compare(baseline, candidate, clips: WordClips) -> dict:
    """Keywords overall (paired), per voice, and the unknown words, for both nets."""
    logits_a, logits_b = clip_logits(baseline, clips.clips), clip_logits(candidate, clips.clips)
    right_a, right_b = logits_a.argmax(1) == clips.labels, logits_b.argmax(1) == clips.labels
    keyword = np.array([LABELS[i] != UNKNOWN for i in clips.labels])
    voices = sorted(set(clips.voices[keyword].astype(str)))
    return {
        "keywords": paired(right_a[keyword], right_b[keyword]),
        "keywords_extra": {"baseline": extra_scores(logits_a, clips.labels, keyword),
                           "candidate": extra_scores(logits_b, clips.labels, keyword)},
        "per_voice": {v: paired(right_a[keyword & (clips.voices == v)], right_b[keyword & (clips.voices == v)])
                      for v in voices},
        "unknown_words": paired(right_a[~keyword], right_b[~keyword]),
    }


def compare_extra_voice(net, clips: WordClips, voice: str) -> dict:
    """:func:`extra_scores` on one voice's clips."""
    one = clips.subset(clips.voices == voice)
    keyword = np.array([LABELS[i] != UNKNOWN for i in one.labels])
    return extra_scores(clip_logits(net, one.clips), one.labels, keyword)


def pseudo_speaker_table(net, data_dir: str) -> dict[str, dict]:
    """The net's top-1 on the keyword clips of flite and of each flite-pseudo speaker (were they new to it?)."""
    out = {}
    for engine in ("flite", PSEUDO):
        clips = load_clips(data_dir, (engine,))
        keyword = np.array([LABELS[i] != UNKNOWN for i in clips.labels])
        right = predict_clips(net, clips.clips) == clips.labels
        groups = np.array([engine if engine == "flite" else f"pseudo-speaker {v.split('~')[1]}"
                           for v in clips.voices.astype(str)])
        for group in sorted(set(groups)):
            mask = keyword & (groups == group)
            out[group] = {"correct": int(right[mask].sum()), "n": int(mask.sum())}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="runs/words/data")
    parser.add_argument("--baseline", default="assets/words")
    parser.add_argument("--candidate", required=True)
    parser.add_argument("--json", default=None)
    parser.add_argument("--pseudo-table", action="store_true",
                        help="also the baseline's top-1 on flite's keyword clips and on each pseudo-speaker's")
    parser.add_argument("--also-engine", default=None, choices=[KOKORO, PSEUDO],
                        help="also compare on every clip of this opt-in engine (a second test of unheard voices "
                             "for nets that never trained on it)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    # "a,b,c" or "ensemble": an ensemble (the members' log-probabilities averaged and renormalised)
    baseline, candidate = (load_word_net_dir(list(word_net_folders(spec))) for spec in (args.baseline, args.candidate))
    _, validation, test = split(load_clips(args.data, ENGINES))
    report = {"baseline": args.baseline, "candidate": args.candidate,
              "held_out_festival": compare(baseline, candidate, test),
              "validation_en_029": compare(baseline, candidate, validation)}
    parts = ["held_out_festival", "validation_en_029"]
    if args.also_engine:
        report[f"all_{args.also_engine}"] = compare(baseline, candidate, load_clips(args.data, (args.also_engine,)))
        parts.append(f"all_{args.also_engine}")
    for name in parts:
        part = report[name]
        rows = [("keywords", part["keywords"])] + list(part["per_voice"].items()) + [("unknown words",
                                                                                      part["unknown_words"])]
        print(name)
        for label, row in rows:
            if name != "held_out_festival" and label not in ("keywords", "unknown words"):
                continue
            print(f"  {label:<24} baseline {row['baseline_correct']}/{row['n']}  candidate "
                  f"{row['candidate_correct']}/{row['n']}  only baseline {row['only_baseline']}, only candidate "
                  f"{row['only_candidate']}: exact McNemar p = {row['exact_mcnemar_p']}")
    for net in ("baseline", "candidate"):
        extra = report["held_out_festival"]["keywords_extra"][net]
        print(f"held-out keywords, {net}: top-3 {extra['top3']}/{extra['n']}, top-1 among the 20 words "
              f"{extra['top1_among_20_words']}/{extra['n']}")
        for voice in sorted(set(test.voices.astype(str))):
            extra = compare_extra_voice(baseline if net == "baseline" else candidate, test, voice)
            print(f"  {voice:<24} top-1 among the 20 words {extra['top1_among_20_words']}/{extra['n']}")
    if args.pseudo_table:
        report["baseline_on_pseudo_speakers"] = pseudo_speaker_table(baseline, args.data)
        print(f"{args.baseline} on the keyword clips of flite and of the pseudo-speakers (made from flite's):")
        for group, row in report["baseline_on_pseudo_speakers"].items():
            print(f"  {group:<24} {row['correct']}/{row['n']} = {row['correct'] / row['n']:.3f}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

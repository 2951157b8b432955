"""Are ked_diphone's vowels outside what the keyword net heard? (issue 19, the held-out voice it reads 45 % of.)

For every keyword clip of the held-out voices and of the training voices (flite's five; espeak-ng's en-029-free
accents with variants m1, m3, f1), Praat (parselmouth) measures F1, F2 and f0 at the vowel nucleus — the loudest
voiced frame (intensity, pitch 60–400 Hz, Burg formants up to 5 kHz, 5.5 kHz for women's voices) — and the script
counts the held-out clips whose F1 and F2 both lie inside the 5th–95th percentile of the training clips of the same
word. Medians per word and voice group are printed beside it.

    python benchmarks/words_formants.py --data runs/words/data --json docs/audio/words_formants.json
"""

from __future__ import annotations

import argparse
from collections import defaultdict

import _common  # noqa: F401 - puts the repository on sys.path
import numpy as np  # noqa: E402

from explorer.audio.words import SAMPLE_RATE  # noqa: E402
from explorer.audio.wordsdata import HELD_OUT, KEYWORDS, load_clips  # noqa: E402
from explorer.audio.wordstrain import VALIDATION_ACCENT  # noqa: E402
from explorer.files import write_json  # noqa: E402

ESPEAK_VARIANTS = ("+m1", "+m3", "+f1")  # three of espeak-ng's twelve variants: enough for its spread, 3× faster
WOMEN = ("slt", "+f")


def nucleus(clip: np.ndarray, woman: bool) -> tuple[float, float, float] | None:
    """(F1, F2, f0) in Hz at the loudest voiced frame, or None when no frame is voiced."""
    import parselmouth

    sound = parselmouth.Sound(clip.astype(np.float64), SAMPLE_RATE)
    pitch = sound.to_pitch(pitch_floor=60, pitch_ceiling=400)
    intensity = sound.to_intensity(minimum_pitch=75)
    formants = sound.to_formant_burg(maximum_formant=5500 if woman else 5000)
    for t in intensity.xs()[np.argsort(-intensity.values[0])]:
        f0 = pitch.get_value_at_time(t)
        if np.isfinite(f0):
            return formants.get_value_at_time(1, t), formants.get_value_at_time(2, t), f0
    return None


def group_of(engine: str, voice: str) -> str | None:
    if engine == HELD_OUT:
        return f"held-out {voice}"
    if engine == "flite":
        return "train flite"
    if engine == "espeak-ng" and voice.endswith(ESPEAK_VARIANTS) and not voice.startswith(VALIDATION_ACCENT + "+"):
        return "train espeak-ng"
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="runs/words/data")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    data = load_clips(args.data)
    measured: dict[tuple[str, str], list] = defaultdict(list)
    for i, word in enumerate(map(str, data.words)):
        group = group_of(str(data.engines[i]), str(data.voices[i])) if word in KEYWORDS else None
        if group is not None:
            point = nucleus(data.clips[i], any(w in str(data.voices[i]) for w in WOMEN))
            if point is not None and all(np.isfinite(point)):
                measured[group, word].append(point)
    held_out = sorted({g for g, _ in measured if g.startswith("held-out")})
    record: dict = {"inside_5_95": {}, "medians": {}}
    print(f"{'word':6s} " + " ".join(f"{g:>26s}" for g in ["train flite", "train espeak-ng", *held_out]))
    for word in KEYWORDS:
        train = np.array(measured["train flite", word] + measured["train espeak-ng", word])
        lo, hi = np.percentile(train[:, :2], 5, axis=0), np.percentile(train[:, :2], 95, axis=0)
        cells = []
        for group in ["train flite", "train espeak-ng", *held_out]:
            points = np.array(measured[group, word])
            if not len(points):
                cells.append(f"{'-':>26s}")
                continue
            f1, f2, f0 = np.median(points, axis=0)
            record["medians"][f"{group}/{word}"] = [round(float(f1)), round(float(f2)), round(float(f0))]
            cells.append(f"{f1:5.0f}/{f2:5.0f} Hz f0 {f0:4.0f} (n {len(points):2d})")
            if group in held_out:
                inside = ((points[:, :2] >= lo) & (points[:, :2] <= hi)).all(1)
                counts = record["inside_5_95"].setdefault(group, [0, 0])
                counts[0] += int(inside.sum())
                counts[1] += len(points)
        print(f"{word:6s} " + " ".join(cells))
    for group, (inside, n) in record["inside_5_95"].items():
        print(f"{group}: F1 and F2 both inside the training clips' 5th-95th percentile of the same word: {inside}/{n}")
    if args.json:
        write_json(args.json, record)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

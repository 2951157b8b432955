"""How much of a recorded word the voice synthesiser can say: a ceiling for word dreams (issue 19).

A word dream can only be heard as its word if the synthesiser it moves can make that word at all. Here the
synthesiser imitates recorded keywords — the Sphinx calibration's own clips (``hearing.calibration_picks``), each
centred in one second — with ``fit_to_clip`` (the analysis by synthesis a clip start uses), the imitation is written to
a 16-bit WAV and read back, and pocketsphinx's closed-set verdict (the dreams' judge) says which word it hears. Printed
per engine and synthesiser setting: the recordings named right, their imitations named right, and the exact McNemar
test of each setting against the first on the same clips and fitting seeds.

    python benchmarks/synth_ceiling.py --data runs/words/data --engines flite espeak-ng --control-ms 10 5 \
        --seeds 0 7777 --json docs/audio/synth_ceiling/ceiling.json

pocketsphinx's decoder adapts its cepstral mean from one utterance to the next, so a clip's verdict can depend on the
clips decoded before it (seen: the same recordings named right 60 and 61 of 80 in two orders).
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import _common  # noqa: F401 - puts the repository on sys.path
import numpy as np  # noqa: E402
import torch  # noqa: E402

from explorer import devices  # noqa: E402
from explorer.audio import io as audio_io  # noqa: E402
from explorer.audio.hearing import calibration_picks, decode  # noqa: E402
from explorer.audio.synth import VOICE, HarmonicPlusNoise, fit_to_clip  # noqa: E402
from explorer.audio.wordsdata import KEYWORDS, load_clips  # noqa: E402
from explorer.audio.wordstrain import centred  # noqa: E402
from explorer.files import write_json  # noqa: E402
from explorer.stats import clopper_pearson, exact_mcnemar  # noqa: E402

SR = 16000
PER_WORD = {"espeak-ng": 8, "flite": 4, "festival": 4}  # the calibration's counts (docs/audio.md)


def imitation(clip: np.ndarray, control_ms: float, seed: int, steps: int) -> np.ndarray:
    """The voice synthesiser's imitation of ``clip`` after ``steps`` of fitting, written to a WAV and read back."""
    config = dataclasses.replace(VOICE, control_rate=1000.0 / control_ms)
    generator = devices.generator(torch.device("cpu"), seed)
    synth = HarmonicPlusNoise(config, len(clip), SR, generator=generator, start="noise")
    fit_to_clip(synth, torch.from_numpy(clip), steps=steps, generator=generator)
    with torch.no_grad():
        wav = synth.waveform().reshape(-1).numpy()
    return audio_io.load_audio(audio_io.wav_bytes(audio_io.safe_loudness(wav, SR), SR), SR)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="runs/words/data", help="the word clips (`audio words-data`)")
    parser.add_argument("--engines", nargs="+", default=["flite", "espeak-ng"], choices=sorted(PER_WORD))
    parser.add_argument("--control-ms", type=float, nargs="+", default=[10.0, 5.0],
                        help="loudness/voicing frame spacings to compare (the first is the baseline)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="fitting seeds (added to the clip's index)")
    parser.add_argument("--steps", type=int, default=100, help="fitting steps per imitation")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    words = tuple(KEYWORDS)
    record: dict = {"steps": args.steps, "seeds": args.seeds, "control_ms": args.control_ms, "engines": {}}
    for engine in args.engines:
        data = load_clips(args.data, (engine,))
        picks = [(word, int(i)) for word in words for i in calibration_picks(data.words, word, PER_WORD[engine])]
        clips = {i: centred(data.clips[i]) for _, i in picks}
        original = np.array([decode(clips[i], words) == word for word, i in picks])
        lo, hi = clopper_pearson(int(original.sum()), len(picks))
        print(f"{engine}: recordings named right {original.sum()}/{len(picks)} [{lo:.3f}, {hi:.3f}]", flush=True)
        rows: dict = {"recordings_right": int(original.sum()), "n": len(picks), "settings": {}}
        right: dict[tuple[float, int], np.ndarray] = {}
        for ms in args.control_ms:
            for seed in args.seeds:
                start = time.perf_counter()
                heard = [decode(imitation(clips[i], ms, i + seed, args.steps), words) for word, i in picks]
                right[ms, seed] = np.array([h == word for h, (word, _) in zip(heard, picks)])
                k = int(right[ms, seed].sum())
                base = right[args.control_ms[0], seed]
                only_here, only_base = int((right[ms, seed] & ~base).sum()), int((base & ~right[ms, seed]).sum())
                rows["settings"][f"{ms:g} ms seed {seed}"] = {
                    "imitations_right": k, "both_right": int((right[ms, seed] & original).sum()),
                    "only_here": only_here, "only_baseline": only_base,
                    "mcnemar_p": round(exact_mcnemar(only_here, only_base), 4),
                    "words_found": sorted({w for (w, _), r in zip(picks, right[ms, seed]) if r}),
                    "heard": heard, "seconds": round(time.perf_counter() - start, 1)}
                p = exact_mcnemar(only_here, only_base)
                print(f"  {ms:g} ms, seed {seed}: imitations named right {k}/{len(picks)}; "
                      f"against {args.control_ms[0]:g} ms {only_here} / {only_base}, p = {p:.3f} "
                      f"({time.perf_counter() - start:.0f} s)", flush=True)
            pooled = sum(int(right[ms, s].sum()) for s in args.seeds)
            total = len(picks) * len(args.seeds)
            print(f"  {ms:g} ms pooled over {len(args.seeds)} seed(s): {pooled}/{total}", flush=True)
        record["engines"][engine] = rows
        if args.json:
            write_json(args.json, record)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Audio dreams before independent judges: calibration sounds, then the default dreams of
``audio dream`` (synthesiser) beside the free spectrogram (adversarial / unconstrained), all
measured on the WAV written and read back.

Judges (explorer.audio.judges): Praat voiced fraction and mean HNR, energy share below 3 kHz,
spectral flatness and, for music:TAG, the musicnn tagger the dream was NOT optimised on. The
optimised network's own score is printed beside them, labelled as such.

Targets (issue 12): speech from noise, 4 s, synthesiser, defaults: Silero ≥ 0.8, voiced ≥ 0.3,
HNR ≥ 3 dB, ≥ 60 % of energy below 3 kHz; music:piano: the other tagger raises p(piano) by ≥ 0.2.

    python benchmarks/audio_judges.py                       # everything (music dreams take minutes each)
    python benchmarks/audio_judges.py --skip-music --seeds 0 1 2
    python benchmarks/audio_judges.py --skip-speech --skip-unconstrained --music-seeds 1 2
    python benchmarks/audio_judges.py --out out/audio_judges --json out/audio_judges.json
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from explorer.audio import io as audio_io  # noqa: E402
from explorer.audio import judges  # noqa: E402
from explorer.audio.clips import builtin_clip  # noqa: E402
from explorer.audio.dream import DreamSettings, dream, save_dream  # noqa: E402
from explorer.audio.silero import load_silero  # noqa: E402

SR = 16000
KEYS = ("voiced_fraction", "mean_hnr_db", "energy_below_3k", "spectral_flatness", "other_tagger")


def _row(name: str, verdicts: dict, own: str = "", seconds: float | None = None) -> dict:
    row = {"sound": name, "own score": own}
    for key in KEYS:
        v = verdicts.get(key)
        row[key] = "" if v is None else v.text()
    row["time"] = "" if seconds is None else f"{seconds:.0f} s"
    return row


def _values(verdicts: dict) -> dict:
    return {k: (None if v.value is None else round(v.value, 4)) for k, v in verdicts.items()}


def calibration(rows: list[dict], record: dict) -> None:
    silero = load_silero("cpu")
    sounds = {"white noise (4 s)": builtin_clip("noise", 4.0, SR), "built-in piano clip (4 s)": builtin_clip("piano", 4.0, SR)}
    if shutil.which("espeak-ng"):
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "speech.wav"
            subprocess.run(["espeak-ng", "-w", str(path), judges.CALIBRATION_SENTENCE], check=True, capture_output=True)
            sounds = {"espeak-ng sentence": audio_io.load_audio(path, SR), **sounds}
    else:
        print("espeak-ng is not installed: no speech calibration row (apt-get install espeak-ng)")
    for name, audio in sounds.items():
        with torch.no_grad():
            speech = float(silero.speech_probability(torch.from_numpy(audio))[0].mean())
        piano = "piano" in name
        verdicts = judges.judge_sound(audio, SR, tag="piano" if piano else None, dreamed_on="MTT_vgg" if piano else None)
        rows.append(_row(name, verdicts, f"Silero {speech:.3f}"))
        record[name] = {"silero": round(speech, 4), "judges": _values(verdicts)}


def run_dream(name: str, settings: DreamSettings, rows: list[dict], record: dict, out: Path | None) -> dict:
    start = time.perf_counter()
    result = dream(settings, device="cpu")
    wall = time.perf_counter() - start
    if out is not None:
        save_dream(result, out / name.replace(" ", "_").replace(":", "_").replace("/", "_"))
    own = f"{result.target} {result.before['value']:.3f} → {result.roundtrip['value']:.3f}"
    before, after = result.judges["before"], result.judges["roundtrip"]
    rows.append(_row(f"{name}: start", before, ""))
    rows.append(_row(f"{name}: dream (WAV)", after, own, wall))
    entry = {"settings": settings.to_dict(), "own_before": round(result.before["value"], 4),
             "own_optimised": round(result.optimised["value"], 4), "own_roundtrip": round(result.roundtrip["value"], 4),
             "judges_before": _values(before), "judges_roundtrip": _values(after), "seconds": round(wall, 1),
             "steps": result.steps_done}
    record[name] = entry
    return entry


def speech_targets(entry: dict) -> dict[str, bool]:
    j = entry["judges_roundtrip"]

    def at_least(key: str, bound: float) -> bool:
        return j.get(key) is not None and j[key] >= bound

    return {"Silero ≥ 0.8": entry["own_roundtrip"] >= 0.8, "voiced ≥ 0.3": at_least("voiced_fraction", 0.3),
            "HNR ≥ 3 dB": at_least("mean_hnr_db", 3.0), "≥ 60 % below 3 kHz": at_least("energy_below_3k", 0.6)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="seeds of the speech dreams")
    parser.add_argument("--music-seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--skip-music", action="store_true")
    parser.add_argument("--skip-speech", action="store_true")
    parser.add_argument("--skip-unconstrained", action="store_true")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", default=None, help="also save every dream (WAVs, spectrograms, dream.json) here")
    parser.add_argument("--json", default=None, help="write all figures to this JSON file")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out) if args.out else None
    rows: list[dict] = []
    record: dict = {"machine": f"{platform.processor() or platform.machine()}, torch {torch.__version__}, "
                               f"{torch.get_num_threads()} threads", "calibration": {}, "dreams": {}}
    calibration(rows, record["calibration"])

    verdict_lines = []
    for seed in [] if args.skip_speech else args.seeds:
        entry = run_dream(f"speech synth seed {seed}", DreamSettings(net="speech", seed=seed), rows, record["dreams"], out)
        checks = speech_targets(entry)
        verdict_lines.append(f"speech, synthesiser, seed {seed}: " + ", ".join(f"{k} {'✔' if ok else '✘'}" for k, ok in checks.items()))
        if not args.skip_unconstrained:
            entry = run_dream(f"speech spectrogram seed {seed}", DreamSettings(net="speech", param="spectrogram", seed=seed),
                              rows, record["dreams"], out)
            checks = speech_targets(entry)
            verdict_lines.append(f"speech, free spectrogram, seed {seed}: " + ", ".join(f"{k} {'✔' if ok else '✘'}" for k, ok in checks.items()))
    if not args.skip_music:
        for seed in args.music_seeds:
            for model in ("MTT_vgg", "MTT_musicnn"):
                params = ["synth"] + ([] if args.skip_unconstrained else ["spectrogram"])
                for param in params:
                    name = f"music:piano {model} {param} seed {seed}"
                    entry = run_dream(name, DreamSettings(net="music:piano", music_model=model, param=param, seed=seed),
                                      rows, record["dreams"], out)
                    before, after = entry["judges_before"].get("other_tagger"), entry["judges_roundtrip"].get("other_tagger")
                    judge = judges.other_tagger(model)
                    if before is None or after is None:
                        verdict_lines.append(f"{name}: {judge} not judged")
                    else:
                        gain = after - before
                        verdict_lines.append(f"{name}: {judge} p(piano) {before:.3f} → {after:.3f} ({gain:+.3f}; "
                                             f"target +0.2 {'✔' if gain >= 0.2 else '✘'})")

    headers = ["sound", "own score", "voiced", "HNR", "< 3 kHz", "flatness", "other tagger", "time"]
    keys = ["sound", "own score", *KEYS, "time"]
    print("\n| " + " | ".join(headers) + " |")
    print("|" + "---|" * len(headers))
    for row in rows:
        print("| " + " | ".join(str(row[k]) for k in keys) + " |")
    print()
    for line in verdict_lines:
        print(line)
    print(f"\nmachine: {record['machine']}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(record, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

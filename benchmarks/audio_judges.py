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

Issue 19 (``--words``): word dreams through the synthesiser (after the WAV round trip) judged by
pocketsphinx's closed-set verdict, DNSMOS and CREPE, beside the same judges on N random starts of
the same parameterisation (the control; shared by every word: a random start does not depend on
the word asked for); Silero speech dreams beside their own random starts (DNSMOS SIG difference
with a bootstrap interval); music dreams with CREPE periodicity beside the other tagger's gain.

    python benchmarks/audio_judges.py --words all --word-seeds 0 --word-steps 64 --control 16 \
        --words-only --speech-seeds 0 1 2 --music-seeds 0 --json out/audio_words.json
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


def _verdict_values(verdicts: dict) -> dict:
    out = _values(verdicts)
    for key in ("sphinx_word", "sphinx_transcript"):
        if key in verdicts:
            out[f"{key}_answer"] = verdicts[key].answer
    return out


def words_benchmark(args, record: dict) -> list[str]:
    """Word dreams, Silero dreams and music dreams beside random starts (issue 19's targets)."""
    from explorer.audio.control import CONTROL_SEED_OFFSET, clopper_pearson, difference, random_start_judges
    from explorer.audio.hearing import sphinx_calibration
    from explorer.audio.wordsdata import KEYWORDS

    lines: list[str] = []
    words = list(KEYWORDS) if args.words == ["all"] else args.words
    calibration = sphinx_calibration() or {}
    espeak = calibration.get("recordings", {}).get("espeak-ng")
    section = record.setdefault("words", {"dreams": {}, "random_starts": {}})

    def judged(settings: DreamSettings, name: str) -> dict:
        start = time.perf_counter()
        result = dream(settings, device="cpu")
        entry = {"own_before": round(result.before["value"], 4), "own_roundtrip": round(result.roundtrip["value"], 4),
                 "judges_before": _verdict_values(result.judges["before"]),
                 "judges_roundtrip": _verdict_values(result.judges["roundtrip"]), "seconds": round(time.perf_counter() - start, 1)}
        print(f"{name}: own {entry['own_before']:.3f} → {entry['own_roundtrip']:.3f}; Sphinx "
              f"{entry['judges_roundtrip'].get('sphinx_word_answer')!r} / {entry['judges_roundtrip'].get('sphinx_transcript_answer')}; "
              f"SIG {entry['judges_roundtrip'].get('dnsmos_sig')}; CREPE {entry['judges_roundtrip'].get('crepe_periodicity')} "
              f"({entry['seconds']:.0f} s)", flush=True)
        return entry

    # the control for word dreams: N random starts of the voice synthesiser, 1 s
    base = DreamSettings(net="words", seconds=1.0, steps=args.word_steps, hearing=True)
    starts = random_start_judges(base, args.control, device="cpu")
    start_values = [_verdict_values(v) for v in starts]
    section["random_starts"]["words synth 1 s"] = start_values
    for seed in args.word_seeds:
        for word in words:
            name = f"words:{word} synth seed {seed}"
            section["dreams"][name] = judged(base.__class__(**{**base.to_dict(), "word": word, "seed": seed}), name)
            if args.json:
                Path(args.json).write_text(json.dumps(record, indent=2))
    dreams = [(name.split()[0].split(":")[1], e) for name, e in section["dreams"].items() if name.startswith("words:")]
    named = [w for w, e in dreams if e["judges_roundtrip"].get("sphinx_word_answer") == w]
    k, n = len(named), len(dreams)
    lo, hi = clopper_pearson(k, n)
    found = sorted({w for w in named})
    missed = sorted({w for w, _ in dreams} - set(found))
    start_named = {w: sum(1 for v in start_values if v.get("sphinx_word_answer") == w) for w in words}
    worst = max(start_named.values()) if start_named else 0
    lines.append(f"word dreams (synth, 1 s, {args.word_steps} steps, seeds {args.word_seeds}): Sphinx closed-set names the "
                 f"target in {k}/{n} = {k / max(n, 1):.3f} [{lo:.3f}, {hi:.3f}]")
    if espeak:
        ratio = (k / max(n, 1)) / espeak["rate"] if espeak["rate"] else float("nan")
        lines.append(f"  espeak-ng's own recordings named right {espeak['correct']}/{espeak['n']} = {espeak['rate']:.3f}: "
                     f"ratio {ratio:.2f} (target ≥ 0.7 {'✔' if ratio >= 0.7 else '✘'})")
    lines.append(f"  random starts ({len(start_values)}): some word named in "
                 f"{sum(1 for v in start_values if v.get('sphinx_word_answer') not in (None, '(nothing)'))}; "
                 f"the most-named word in {worst}/{len(start_values)} (target ≤ 5 % per word {'✔' if worst <= 0.05 * len(start_values) else '✘'})")
    lines.append(f"  words found: {', '.join(found) or 'none'}; missed: {', '.join(missed) or 'none'}")
    for key in ("dnsmos_sig", "dnsmos_ovrl", "crepe_periodicity", "voiced_fraction"):
        d = difference([e["judges_roundtrip"].get(key) for _, e in dreams if e["judges_roundtrip"].get(key) is not None],
                       [v.get(key) for v in start_values if v.get(key) is not None])
        section.setdefault("comparison", {})[key] = d
        if d["difference"] is not None:
            lines.append(f"  {key}: dreams {d['dream_mean']:.3f} vs random starts {d['start_mean']:.3f}: "
                         f"{d['difference']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}] → {d['claim']}")

    # Silero speech dreams (synth, 4 s) beside their own random starts
    if args.speech_seeds:
        speech = DreamSettings(net="speech", hearing=True)
        sstarts = [_verdict_values(v) for v in random_start_judges(speech, args.control, device="cpu")]
        section["random_starts"]["speech synth 4 s"] = sstarts
        sdreams = []
        for seed in args.speech_seeds:
            name = f"speech synth seed {seed} (hearing)"
            entry = judged(DreamSettings(net="speech", hearing=True, seed=seed), name)
            section["dreams"][name] = entry
            sdreams.append(entry)
            if args.json:
                Path(args.json).write_text(json.dumps(record, indent=2))
        for key in ("dnsmos_sig", "dnsmos_ovrl", "crepe_periodicity"):
            d = difference([e["judges_roundtrip"].get(key) for e in sdreams], [v.get(key) for v in sstarts])
            section.setdefault("speech_comparison", {})[key] = d
            if d["difference"] is not None:
                lines.append(f"Silero dreams {key}: {d['dream_mean']:.3f} vs random starts {d['start_mean']:.3f}: "
                             f"{d['difference']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}] → {d['claim']}")
    # music: CREPE periodicity beside the other tagger's gain
    for seed in args.music_seeds_hearing:
        for model in ("MTT_vgg", "MTT_musicnn"):
            name = f"music:piano {model} synth seed {seed} (hearing)"
            entry = judged(DreamSettings(net="music:piano", music_model=model, hearing=True, seed=seed), name)
            section["dreams"][name] = entry
            b, a = entry["judges_before"], entry["judges_roundtrip"]
            gain = None if a.get("other_tagger") is None or b.get("other_tagger") is None else a["other_tagger"] - b["other_tagger"]
            lines.append(f"{name}: other tagger gain {gain:+.3f}; CREPE periodicity {b.get('crepe_periodicity')} → "
                         f"{a.get('crepe_periodicity')}, median pitch {a.get('crepe_pitch_hz')} Hz; DNSMOS SIG {a.get('dnsmos_sig')}")
            if args.json:
                Path(args.json).write_text(json.dumps(record, indent=2))
    return lines


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
    parser.add_argument("--words", nargs="+", default=None, help="issue 19: word dreams for these keywords ('all': every one)")
    parser.add_argument("--word-seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--word-steps", type=int, default=128)
    parser.add_argument("--control", type=int, default=16, help="random starts per parameterisation (the control)")
    parser.add_argument("--speech-seeds", type=int, nargs="*", default=[0, 1, 2], help="Silero dreams judged with the control")
    parser.add_argument("--music-seeds-hearing", type=int, nargs="*", default=[0], help="music dreams with CREPE")
    parser.add_argument("--words-only", action="store_true", help="only the issue-19 part (no calibration rows, no issue-12 dreams)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out) if args.out else None
    rows: list[dict] = []
    record: dict = {"machine": f"{platform.processor() or platform.machine()}, torch {torch.__version__}, "
                               f"{torch.get_num_threads()} threads", "calibration": {}, "dreams": {}}
    if args.words:
        lines = words_benchmark(args, record)
        print()
        for line in lines:
            print(line)
        record["words_summary"] = lines
        if args.json:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(json.dumps(record, indent=2))
        if args.words_only:
            print(f"\nmachine: {record['machine']}")
            return 0
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

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

    python benchmarks/audio_judges.py --words all --word-seeds 0 --control 16 \
        --words-only --speech-seeds 0 1 2 --music-seeds 0 --json out/audio_words.json

``--speed-jitter-pct`` sets the word dreams' random tape speed (default: the product's); ``--merge A.json …
--paired-with B.json …`` also compares each word dream with the same word and seed in B (exact McNemar on
the Sphinx hits, paired differences of the other judges).

``--word-steps`` defaults to 128, the steps of ``audio dream --net words`` and the page (what users get);
docs/audio.md also has a run at 64.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import _common  # noqa: F401 - puts the repository on sys.path

import numpy as np  # noqa: E402
import torch  # noqa: E402

from explorer.audio import io as audio_io  # noqa: E402
from explorer.audio import judges  # noqa: E402
from explorer.audio.clips import builtin_clip  # noqa: E402
from explorer.audio.dream import DreamSettings, dream, save_dream  # noqa: E402
from explorer.audio.parameterisations import control_ms_for, control_tv_for  # noqa: E402
from explorer.audio.targets import WORD_OBJECTIVES  # noqa: E402
from explorer.audio.words import DEFAULT_NAME  # noqa: E402
from explorer.audio.silero import load_silero  # noqa: E402
from explorer.files import write_json  # noqa: E402
from explorer.stats import exact_mcnemar, mean_bootstrap_interval  # noqa: E402

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
    sounds = {"white noise (4 s)": builtin_clip("noise", 4.0, SR),
              "built-in piano clip (4 s)": builtin_clip("piano", 4.0, SR)}
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
        verdicts = judges.judge_sound(audio, SR, tag="piano" if piano else None,
                                      dreamed_on="MTT_vgg" if piano else None)
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


def words_benchmark(args, record: dict) -> None:
    """Word dreams, Silero dreams and music dreams, and random starts of each (issue 19's targets)."""
    from explorer.audio.control import random_start_judges
    from explorer.audio.wordsdata import KEYWORDS

    words = list(KEYWORDS) if args.words == ["all"] else args.words
    section = record.setdefault("words", {"dreams": {}, "random_starts": {}})
    # which net(s) the dreams ascended (merges must not mix them); "shipped" in records older than the hybrid net
    section["word_net"] = args.word_net or DEFAULT_NAME
    section["word_objective"] = args.word_objective  # and what of it (older records: "probability")

    def save() -> None:
        if args.json:
            write_json(args.json, record)  # atomic: a run stopped mid-write keeps the last record

    def judged(settings: DreamSettings, name: str) -> None:
        start = time.perf_counter()
        result = dream(settings, device="cpu")
        entry = {"own_before": round(result.before["value"], 4), "own_roundtrip": round(result.roundtrip["value"], 4),
                 "judges_before": _verdict_values(result.judges["before"]),
                 "judges_roundtrip": _verdict_values(result.judges["roundtrip"]),
                 "seconds": round(time.perf_counter() - start, 1),
                 "steps": result.steps_done}
        print(f"{name}: own {entry['own_before']:.3f} → {entry['own_roundtrip']:.3f}; Sphinx "
              f"{entry['judges_roundtrip'].get('sphinx_word_answer')!r} / "
              f"{entry['judges_roundtrip'].get('sphinx_transcript_answer')}; "
              f"SIG {entry['judges_roundtrip'].get('dnsmos_sig')}; "
              f"CREPE {entry['judges_roundtrip'].get('crepe_periodicity')} ({entry['seconds']:.0f} s)", flush=True)
        section["dreams"][name] = entry
        save()

    def starts(key: str, settings: DreamSettings, n: int) -> None:
        if n:
            section["random_starts"][key] = [_verdict_values(v) for v in random_start_judges(settings, n, device="cpu")]
            save()

    base = DreamSettings(net="words", seconds=1.0, steps=args.word_steps, hearing=True,
                         speed_jitter_pct=args.speed_jitter_pct, word_net=args.word_net,
                         word_objective=args.word_objective,
                         noise_budget=args.noise_budget, edge_silence_ms=args.edge_silence_ms,
                         control_ms=args.control_ms, control_tv=args.control_tv, mask_ms=args.mask_ms,
                         added_noise_db=args.added_noise_db)
    # the synthesiser settings the word dreams used, resolved (the product's defaults change; a record must not)
    section |= {"control_ms": control_ms_for(base), "control_tv": control_tv_for(base), "mask_ms": base.mask_ms}
    starts("words synth 1 s", base, args.control)  # shared by every word: a random start does not depend on the word
    for seed in args.word_seeds:
        for word in words:
            judged(DreamSettings(**{**base.to_dict(), "word": word, "seed": seed}), f"words:{word} synth seed {seed}")
    if args.speech_seeds:
        speech = DreamSettings(net="speech", hearing=True, control_ms=args.control_ms, control_tv=args.control_tv)
        starts("speech synth 4 s", speech, args.speech_control)
        for seed in args.speech_seeds:
            judged(replace(speech, seed=seed), f"speech synth seed {seed} (hearing)")
    for seed in args.music_seeds_hearing:
        for model in args.music_models:
            judged(DreamSettings(net="music:piano", music_model=model, hearing=True, seed=seed),
                   f"music:piano {model} synth seed {seed} (hearing)")


def words_summary(record: dict) -> list[str]:
    """The issue-19 verdicts from the figures in ``record`` (one run or several merged)."""
    from explorer.audio.control import clopper_pearson, difference
    from explorer.audio.hearing import sphinx_calibration

    section = record.get("words", {})
    lines: list[str] = []
    start_values = section.get("random_starts", {}).get("words synth 1 s", [])
    dreams = [(name.split()[0].split(":")[1], e)
              for name, e in section.get("dreams", {}).items() if name.startswith("words:")]
    if dreams:
        named = [w for w, e in dreams if e["judges_roundtrip"].get("sphinx_word_answer") == w]
        k, n = len(named), len(dreams)
        lo, hi = clopper_pearson(k, n)
        steps = sorted({e.get("steps") for _, e in dreams})
        lines.append(f"word dreams (synth, 1 s, {steps} steps, {n} dreams): Sphinx closed-set names the target in "
                     f"{k}/{n} = {k / n:.3f} [{lo:.3f}, {hi:.3f}]")
        espeak = (sphinx_calibration() or {}).get("recordings", {}).get("espeak-ng")
        if espeak:
            ratio = (k / n) / espeak["rate"] if espeak["rate"] else float("nan")
            lines.append(f"  espeak-ng's own recordings named right {espeak['correct']}/{espeak['n']} = "
                         f"{espeak['rate']:.3f} [{espeak['low']:.3f}, {espeak['high']:.3f}]: ratio {ratio:.2f} "
                         f"(target ≥ 0.7 {'✔' if ratio >= 0.7 else '✘'})")
        own = [e["own_roundtrip"] for _, e in dreams]
        lines.append(f"  own score p(word) after the round trip: median {np.median(own):.3f}, min {min(own):.3f}")
        found = sorted({w for w in named})
        missed = sorted({w for w, _ in dreams} - set(found))
        lines.append(f"  words found: {', '.join(found) or 'none'}; missed: {', '.join(missed) or 'none'}")
        heard = {}
        for w, e in dreams:
            heard.setdefault(w, []).append(f"{e['judges_roundtrip'].get('sphinx_word_answer')} / "
                                           f"{e['judges_roundtrip'].get('sphinx_transcript_answer')}")
        lines.append("  Sphinx closed-set / free transcript per word: "
                     + "; ".join(f"{w}: {', '.join(v)}" for w, v in heard.items()))
    if start_values:
        words = sorted({w for w, _ in dreams})
        some = sum(1 for v in start_values if v.get("sphinx_word_answer") not in (None, "(nothing)"))
        worst = max((sum(1 for v in start_values if v.get("sphinx_word_answer") == w) for w in words), default=0)
        lo, hi = clopper_pearson(worst, len(start_values))
        lines.append(f"  random starts ({len(start_values)}): some word named in {some}; the most-named target in "
                     f"{worst}/{len(start_values)} [{lo:.3f}, {hi:.3f}] "
                     f"(target ≤ 5 % {'✔' if worst <= 0.05 * len(start_values) else '✘'})")
        for key in ("dnsmos_sig", "dnsmos_bak", "dnsmos_ovrl", "crepe_periodicity", "voiced_fraction", "mean_hnr_db"):
            d = difference([e["judges_roundtrip"].get(key) for _, e in dreams
                            if e["judges_roundtrip"].get(key) is not None],
                           [v.get(key) for v in start_values if v.get(key) is not None])
            if d["difference"] is not None:
                lines.append(f"  word dreams {key}: {d['dream_mean']:.3f} vs random starts {d['start_mean']:.3f}: "
                             f"{d['difference']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}] → {d['claim']}")
    speech = [e for name, e in section.get("dreams", {}).items() if name.startswith("speech")]
    sstarts = section.get("random_starts", {}).get("speech synth 4 s", [])
    if speech and sstarts:
        for key in ("dnsmos_sig", "dnsmos_bak", "dnsmos_ovrl", "crepe_periodicity"):
            d = difference([e["judges_roundtrip"].get(key) for e in speech
                            if e["judges_roundtrip"].get(key) is not None],
                           [v.get(key) for v in sstarts if v.get(key) is not None])
            if d["difference"] is not None:
                lines.append(f"Silero dreams ({len(speech)}) {key}: {d['dream_mean']:.3f} "
                             f"vs random starts ({len(sstarts)}) {d['start_mean']:.3f}: "
                             f"{d['difference']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}] → {d['claim']}")
    for name, e in section.get("dreams", {}).items():
        if name.startswith("music"):
            b, a = e["judges_before"], e["judges_roundtrip"]
            gain = (None if a.get("other_tagger") is None or b.get("other_tagger") is None
                    else a["other_tagger"] - b["other_tagger"])
            lines.append(f"{name}: other tagger {b.get('other_tagger')} → {a.get('other_tagger')} (gain "
                         f"{'n/a' if gain is None else f'{gain:+.3f}'}); "
                         f"CREPE periodicity {b.get('crepe_periodicity')} → {a.get('crepe_periodicity')}, "
                         f"median pitch {a.get('crepe_pitch_hz')} Hz; "
                         f"DNSMOS SIG {b.get('dnsmos_sig')} → {a.get('dnsmos_sig')}")
    return lines


def _short(name: str) -> str:
    """"words:up synth seed 0" → "up 0"."""
    return name.removeprefix("words:").replace(" synth seed", "")


def _judged(entry: dict, key: str) -> float | None:
    """A dream's own score after the round trip, or one judge's value on it."""
    return entry.get(key) if key == "own_roundtrip" else entry["judges_roundtrip"].get(key)


def paired_summary(record: dict, baseline: dict, *, resamples: int = 4000) -> list[str]:
    """The word dreams of ``record`` against the same-named dreams of ``baseline`` (same word, same seed):
    Sphinx hits by exact McNemar, and the paired mean difference of each judge with a bootstrap interval."""
    ours = {n: e for n, e in record.get("words", {}).get("dreams", {}).items() if n.startswith("words:")}
    theirs = baseline.get("words", {}).get("dreams", {})
    names = sorted(n for n in ours if n in theirs)
    if not names:
        return ["paired: no word dream in both records"]

    def hit(entry: dict, name: str) -> bool:
        return entry["judges_roundtrip"].get("sphinx_word_answer") == name.split()[0].split(":")[1]

    only_ours = [n for n in names if hit(ours[n], n) and not hit(theirs[n], n)]
    only_theirs = [n for n in names if hit(theirs[n], n) and not hit(ours[n], n)]
    both = sum(hit(ours[n], n) and hit(theirs[n], n) for n in names)
    p_value = exact_mcnemar(len(only_ours), len(only_theirs))
    lines = [(f"paired with the baseline ({len(names)} dreams, same word and seed): Sphinx names the target in both "
              f"{both}, only here {len(only_ours)}, only in the baseline {len(only_theirs)}: exact McNemar p = "
              f"{p_value:.3f}"),
             f"  only here: {', '.join(_short(n) for n in only_ours)}",
             f"  only in the baseline: {', '.join(_short(n) for n in only_theirs)}"]
    for key in ("own_roundtrip", "dnsmos_sig", "dnsmos_bak", "dnsmos_ovrl", "crepe_periodicity", "mean_hnr_db"):
        pairs = np.array([(_judged(ours[n], key), _judged(theirs[n], key)) for n in names
                          if _judged(ours[n], key) is not None and _judged(theirs[n], key) is not None], float)
        if not len(pairs):
            continue
        diffs = pairs[:, 0] - pairs[:, 1]
        low, high = mean_bootstrap_interval(diffs, repeats=resamples)
        lines.append(f"  {key}: here {pairs[:, 0].mean():.3f} (median {np.median(pairs[:, 0]):.3f}) vs baseline "
                     f"{pairs[:, 1].mean():.3f} (median {np.median(pairs[:, 1]):.3f}): paired difference "
                     f"{diffs.mean():+.3f} [{low:+.3f}, {high:+.3f}] over {len(diffs)} dreams")
    return lines


def merge(paths: list[str]) -> dict:
    """Several JSON records of word runs as one (dreams and random starts side by side)."""
    record: dict = {"words": {"dreams": {}, "random_starts": {}}, "machine": set()}
    net_of: dict[str, str] = {}  # which word net each kept dream ascended (later files win, as the dreams do)
    synth_of: dict[str, tuple] = {}  # the synthesiser settings of each part that records them
    objective_of: dict[str, str] = {}  # what of the net each part's word dreams ascended
    for path in paths:
        part = json.loads(Path(path).read_text())
        record["machine"].add(part.get("machine", ""))
        words = part.get("words", {})
        if "control_ms" in words and words.get("dreams"):
            synth_of[path] = tuple(words.get(k) for k in ("control_ms", "control_tv", "mask_ms"))
        for key in ("dreams", "random_starts"):
            record["words"][key].update(words.get(key, {}))
        net = words.get("word_net", "shipped")
        net_of |= {name: net for name in words.get("dreams", {}) if name.startswith("words:")}
        if words.get("dreams"):
            objective_of[path] = words.get("word_objective", "probability")
    if len(set(synth_of.values())) > 1:
        raise SystemExit("these records' dreams used different synthesiser settings (control_ms, control_tv, mask_ms: "
                         + "; ".join(f"{p}: {v}" for p, v in synth_of.items()) + "): not merged")
    if len(set(objective_of.values())) > 1:
        raise SystemExit("these records' word dreams ascended different objectives ("
                         + "; ".join(f"{p}: {v}" for p, v in objective_of.items()) + "): not merged")
    nets = sorted(set(net_of.values()))
    if len(nets) > 1:
        raise SystemExit(f"these records' word dreams ascended different word nets ({', '.join(nets)}): not merged")
    record["words"]["word_net"] = nets[0] if nets else "shipped"
    record["machine"] = "; ".join(sorted(record["machine"]))
    return record


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
    parser.add_argument("--words", nargs="+", default=None,
                        help="issue 19: word dreams for these keywords ('all': every one)")
    parser.add_argument("--word-seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--word-steps", type=int, default=DreamSettings.steps,
                        help="steps of each word dream (default: the product's, as `audio dream --net words`)")
    parser.add_argument("--noise-budget", type=float, default=DreamSettings.noise_budget,
                        help="word dreams: the synthesiser's noise budget (default: the product's)")
    parser.add_argument("--edge-silence-ms", type=float, default=DreamSettings.edge_silence_ms,
                        help="word dreams: silent first and last ms (default: the product's)")
    parser.add_argument("--control-ms", type=float, default=DreamSettings.control_ms,
                        help="word dreams: the synthesiser's loudness and voicing frame spacing in ms "
                             "(default: the product's)")
    parser.add_argument("--control-tv", type=float, default=DreamSettings.control_tv,
                        help="word dreams: penalty weight on the synthesiser's loudness/voicing total variation")
    parser.add_argument("--mask-ms", type=float, default=DreamSettings.mask_ms,
                        help="word dreams: two randomly silenced spans of up to this many ms per step")
    parser.add_argument("--word-objective", choices=list(WORD_OBJECTIVES), default=DreamSettings.word_objective,
                        help="what word dreams ascend: " + "; ".join(f"{k}: {v}" for k, v in WORD_OBJECTIVES.items()))
    parser.add_argument("--word-net", default="",
                        help="word dreams through this word net's folder (several, comma-separated: an ensemble); "
                             "default the shipped net")
    parser.add_argument("--speed-jitter-pct", type=float, default=DreamSettings.speed_jitter_pct,
                        help="random tape speed per step of each word dream, ± percent (default: the product's)")
    parser.add_argument("--added-noise-db", type=float, default=DreamSettings.added_noise_db,
                        help="word dreams: white noise this far below the peak at every step (default: the product's, "
                             "-30 dB for word dreams)")
    parser.add_argument("--control", type=int, default=16, help="random starts of the word synthesiser (the control)")
    parser.add_argument("--speech-control", type=int, default=16, help="random starts of the speech synthesiser (4 s)")
    parser.add_argument("--music-models", nargs="+", default=["MTT_vgg", "MTT_musicnn"])
    parser.add_argument("--merge", nargs="+", default=None,
                        help="summarise the JSON records of several --words runs together")
    parser.add_argument("--paired-with", nargs="+", default=None,
                        help="with --merge: compare each word dream with the same word and seed in these JSON records")
    parser.add_argument("--speech-seeds", type=int, nargs="*", default=[0, 1, 2],
                        help="Silero dreams judged with the control")
    parser.add_argument("--music-seeds-hearing", type=int, nargs="*", default=[0], help="music dreams with CREPE")
    parser.add_argument("--words-only", action="store_true",
                        help="only the issue-19 part (no calibration rows, no issue-12 dreams)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out) if args.out else None
    rows: list[dict] = []
    record: dict = {"machine": f"{platform.processor() or platform.machine()}, torch {torch.__version__}, "
                               f"{torch.get_num_threads()} threads", "calibration": {}, "dreams": {}}
    if args.merge:
        merged = merge(args.merge)
        for line in words_summary(merged):
            print(line)
        if args.paired_with:
            for line in paired_summary(merged, merge(args.paired_with)):
                print(line)
        print(f"\nmachine: {merged['machine']}")
        return 0
    if args.words or args.words_only:
        if not args.words:
            args.words, args.control = [], 0
        words_benchmark(args, record)
        lines = words_summary(record)
        print()
        for line in lines:
            print(line)
        record["words_summary"] = lines
        if args.json:
            write_json(args.json, record)  # atomic: a run stopped mid-write keeps the last record
        if args.words_only:
            print(f"\nmachine: {record['machine']}")
            return 0
    calibration(rows, record["calibration"])

    verdict_lines = []
    for seed in [] if args.skip_speech else args.seeds:
        entry = run_dream(f"speech synth seed {seed}", DreamSettings(net="speech", seed=seed),
                          rows, record["dreams"], out)
        checks = speech_targets(entry)
        verdict_lines.append(f"speech, synthesiser, seed {seed}: "
                             + ", ".join(f"{k} {'✔' if ok else '✘'}" for k, ok in checks.items()))
        if not args.skip_unconstrained:
            entry = run_dream(f"speech spectrogram seed {seed}",
                              DreamSettings(net="speech", param="spectrogram", seed=seed),
                              rows, record["dreams"], out)
            checks = speech_targets(entry)
            verdict_lines.append(f"speech, free spectrogram, seed {seed}: "
                                 + ", ".join(f"{k} {'✔' if ok else '✘'}" for k, ok in checks.items()))
    if not args.skip_music:
        for seed in args.music_seeds:
            for model in ("MTT_vgg", "MTT_musicnn"):
                params = ["synth"] + ([] if args.skip_unconstrained else ["spectrogram"])
                for param in params:
                    name = f"music:piano {model} {param} seed {seed}"
                    entry = run_dream(name, DreamSettings(net="music:piano", music_model=model, param=param, seed=seed),
                                      rows, record["dreams"], out)
                    before, after = (entry["judges_before"].get("other_tagger"),
                                     entry["judges_roundtrip"].get("other_tagger"))
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
        write_json(args.json, record)  # atomic: a run stopped mid-write keeps the last record
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

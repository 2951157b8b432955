"""Audio dreams: ascend a network's output through a parameterisation of sound, turn it into a
WAV, and check that the sound still does what the optimiser saw (the round trip) — and what
independent judges the dream never saw say about it (:mod:`explorer.audio.judges`).

What is ascended — speech, a word, a music tag or an image classifier's unit looking at the
spectrogram — is a target (:mod:`explorer.audio.targets`). How the sound is made is one of two
parameterisations (:mod:`explorer.audio.parameterisations`), set up once and run by THE loop
(:func:`explorer.optvis.optimise.optimise`):

* ``synth`` (default) — the knobs of a harmonic-plus-noise synthesiser (:mod:`explorer.audio.synth`):
  pitch contour, formants or harmonic distribution, filtered noise, loudness and voicing. It can
  only make plausible sound; the render goes through random gain, tape speed, delay and added noise
  (what a written file and another speaker may meet) into each network's own front end, and gradients
  reach the knobs.
* ``spectrogram`` / ``spectrogram-fft`` — *adversarial / unconstrained*: any log-magnitude
  spectrogram, turned into sound by Griffin-Lim. It finds what a network responds to, which is
  usually not what a person would hear as speech or music. It is an ordinary image
  parameterisation (``make_param(kind, 1, (bins, frames), channels=1, decorrelated=False)``)
  whose [0, 1] values map linearly to decibels:

    x ∈ [0,1]  →  dB = floor + x·range  →  magnitude  →  target network  →  objective
                                                     − TV along time − TV along frequency

A random gain per step (``gain_jitter_db``) is the audio version of transformation robustness:
it keeps the dream from depending on one exact loudness, which matters because the written file
is peak-normalised.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from .. import devices
from ..errors import UserInputError
from ..files import write_json
from ..limits import Limit, check_fields
from ..optvis.optimise import ImageHandling, Progress, Schedule, optimise
from ..progress import ProgressCallback, ShouldStop
from . import io as audio_io
from .clips import BUILTIN_CLIPS, builtin_clip
from .judges import Verdict, judge_sound, verdicts_to_dict
from .parameterisations import DreamStart, added_noise_for, control_ms_for, control_tv_for, parameterisation
from .spectrogram import DBMap, stft
from .synth import SYNTH_KINDS
from .targets import SAMPLE_RATE, AudioTarget, MusicTarget, WordTarget, check_word_objective, make_target

# parameterisations of a dream: name -> what the page and the JSON call it
PARAMS = {
    "synth": "harmonic-plus-noise synthesiser (plausible sound)",
    "spectrogram": "free spectrogram, pixels (adversarial / unconstrained)",
    "spectrogram-fft": "free spectrogram, Fourier basis (adversarial / unconstrained)",
}
PARAM_ALIASES = {"pixel": "spectrogram", "fft": "spectrogram-fft"}  # the names before the synthesiser

# bounds of the synthesiser's settings (the shared ones live in explorer.limits)
SYNTH_LIMITS = {
    "fit_steps": Limit(0, 10_000, label="fit steps", integer=True),
    "time_shift_ms": Limit(0.0, 1000.0, " ms", label="random delay"),
    "speed_jitter_pct": Limit(0.0, 50.0, " %", label="random tape speed"),
    "added_noise_db": Limit(-200.0, 0.0, " dB", label="added noise level"),
    "control_starts": Limit(0, 256, label="random starts for the control", integer=True),
    "noise_budget": Limit(0.0, 1.0, label="noise budget"),
    "edge_silence_ms": Limit(0.0, 1000.0, " ms", label="silent edges"),
    "control_ms": Limit(2.0, 50.0, " ms", label="loudness and voicing frame spacing"),
    "control_tv": Limit(0.0, 100.0, label="control smoothness weight"),
    "mask_ms": Limit(0.0, 500.0, " ms", label="silenced spans"),
}


# ---- settings and results ---------------------------------------------------------------------
@dataclass(frozen=True)
class DreamSettings:
    """Everything that changes a dream (defaults: 4 s, finish in a few minutes on a laptop CPU)."""

    net: str = "speech"  # speech | words | music:TAG | image:MODEL:LAYER[:UNIT] | image:MODEL:class:N
    word: str = "yes"  # the keyword a `words` dream asks the word network for (words:WORD also works)
    word_net: str = ""  # "": the word net; "log-mel", "ensemble", a folder, or "a,b,c": an ensemble (averaged)
    word_objective: str = "probability"  # "probability": log p(word) | "typical": near its mean features | "log-odds"
    music_model: str = "MTT_vgg"  # "MTT_vgg" | "MTT_musicnn" (for music:TAG)
    start: str = "noise"  # a built-in clip name or a path (see clips.BUILTIN_CLIPS)
    seconds: float = 4.0
    steps: int = 128
    lr: float = 0.05
    param: str = "synth"  # "synth" | "spectrogram" | "spectrogram-fft" (see PARAMS)
    gain_jitter_db: float = 6.0  # random gain per step (robustness to the final loudness)
    floor_db: float = -100.0  # spectrogram pictures: the dB value of 0 (re a full-scale sine in one bin)
    top_db: float = 0.0  # the dB value of 1
    # the synthesiser only
    synth: str | None = None  # "voice" | "instrument"; None: voice for speech, instrument otherwise
    fit_steps: int = 100  # from a clip: steps spent imitating it before dreaming
    time_shift_ms: float = 8.0  # random delay per step (robustness to framing)
    # random tape speed per step, ± percent: pitch, formants and rate together (robustness across speakers)
    speed_jitter_pct: float = 2.0
    # white noise this far below the peak, per step; None: the net's default (added_noise_for)
    added_noise_db: float | None = None
    noise_budget: float = 0.1  # the noise branch's energy at most this share of the harmonic branch's
    edge_silence_ms: float = 0.0  # silent first and last ms (a word-shaped sound; 0: off)
    # the synthesiser's loudness and voicing frames every this many ms; None: the net's default (control_ms_for)
    control_ms: float | None = None
    # a penalty on those knobs' total variation per second (0: off; None: the net's default, control_tv_for):
    # a step costs its height once, flutter costs at every frame — sharp edges, no roughness
    control_tv: float | None = None
    mask_ms: float = 0.0  # two randomly silenced spans of up to this many ms per step (robustness; 0: off)
    # the free spectrogram only
    tv_time: float = 0.0  # total variation weights along time and along frequency
    tv_freq: float = 0.0
    blur_every: int = 0  # blur the spectrogram every N steps (both axes)
    blur_sigma: float = 0.5
    # every N steps replace the spectrogram by |STFT(iSTFT(·))| (0: never; None: 4 for image targets,
    # whose fine detail otherwise does not survive resynthesis, 0 for speech and music, which survive anyway)
    consistency_every: int | None = None
    phase: str = "griffin-lim"  # "griffin-lim" | "original" (only with a clip start)
    griffin_lim_iters: int = 64
    momentum: float = 0.99
    seed: int | None = 0
    # the control: the judges on this many random starts of the same parameterisation (0: none)
    control_starts: int = 0
    hearing: bool = True  # also the judges trained on human speech and ears (Sphinx, DNSMOS, CREPE: ~3 s a sound)

    def __post_init__(self) -> None:
        check_fields(self, SYNTH_LIMITS)  # every number against explorer.limits, before anything is allocated
        check_word_objective(self.word_objective)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class DreamResult:
    settings: DreamSettings
    target: str
    value_label: str
    sample_rate: int
    before_audio: np.ndarray  # the start sound (safe loudness)
    after_audio: np.ndarray  # the dream (safe loudness): what is written and played
    before_db: np.ndarray  # bins×frames spectrogram (dB) of the start
    after_db: np.ndarray  # bins×frames spectrogram the optimiser ended with
    roundtrip_db: np.ndarray  # bins×frames spectrogram of the written sound
    history: list[float]  # objective per step (priors and jitter included)
    before: dict  # network report on the start sound
    optimised: dict  # on what the optimiser ended with (no jitter, no priors)
    roundtrip: dict  # on the WAV written, read back and re-analysed from the waveform
    steps_done: int
    stopped: str | None
    seconds: float
    griffin_lim_convergence: float | None = None
    n_fft: int = 512  # the STFT the spectrograms use (axes of the plots)
    hop: int = 128
    files: dict[str, str] = field(default_factory=dict)
    param: str = "synth"  # the parameterisation (a key of PARAMS)
    # independent judges (explorer.audio.judges) on the start sound and on the WAV read back
    judges: dict[str, dict[str, Verdict]] = field(default_factory=dict)
    controls: dict | None = None  # synthesiser: f0 / loudness / voicing per 10 ms frame, and a summary
    fit_distance: float | None = None  # synthesiser from a clip: spectral distance after imitating it
    notes: list[str] = field(default_factory=list)  # what the user should know (e.g. a short start padded)
    # the control (explorer.audio.control): judges on random starts, and dream − starts per judge with its interval
    random_starts: dict | None = None

    @property
    def param_label(self) -> str:
        return PARAMS.get(self.param, self.param)

    def comparison(self, top: int = 12) -> list[dict]:
        """Rows {label, before, optimised, roundtrip} for the labels that matter most in any of the
        three reports (the target's own label first): the data of the before/after bar chart."""
        reports = (("before", self.before), ("optimised", self.optimised), ("roundtrip", self.roundtrip))
        heard = self.roundtrip["scores"]
        labels = list(heard) + [k for k in self.before["scores"] if k not in heard]
        peak = {k: max(r["scores"].get(k, 0.0) for _, r in reports) for k in labels}
        if self.target.startswith(("music:", "words:")):
            own = self.target.split(":", 1)[1]
        else:
            own = "speech" if self.target == "speech" else None
        ranked = sorted(labels, key=lambda k: (k != own, -peak[k]))[:top]
        return [{"label": k, **{name: round(r["scores"].get(k, float("nan")), 4) for name, r in reports}}
                for k in ranked]

    def summary(self) -> dict:
        convergence = self.griffin_lim_convergence
        def slim(report: dict) -> dict:
            chunk_mean = {"per_chunk_mean": report["value"]} if "per_chunk" in report else {}
            return {k: v for k, v in report.items() if k != "per_chunk"} | chunk_mean

        return {
            "target": self.target, "value_label": self.value_label, "settings": self.settings.to_dict(),
            "before": round(self.before["value"], 4), "optimised": round(self.optimised["value"], 4),
            "roundtrip": round(self.roundtrip["value"], 4),
            "roundtrip_gain": round(self.roundtrip["value"] - self.before["value"], 4),
            "griffin_lim_spectral_convergence": None if convergence is None else round(convergence, 4),
            "steps_done": self.steps_done, "stopped": self.stopped, "seconds": round(self.seconds, 2),
            "reports": {"before": slim(self.before), "optimised": slim(self.optimised),
                        "roundtrip": slim(self.roundtrip)},
            "param": self.param, "param_label": self.param_label,
            "scored_by": f"{self.target} (the network the dream was optimised on)",
            "judges": {when: verdicts_to_dict(v) for when, v in self.judges.items()},
            "synth": None if self.controls is None else self.controls.get("summary"),
            "fit_distance": None if self.fit_distance is None else round(self.fit_distance, 4),
            "notes": list(self.notes),
            "random_starts": self.random_starts,
            "files": self.files,
        }


# ---- the dream ---------------------------------------------------------------------------------
def dream(
    settings: DreamSettings = DreamSettings(),
    *,
    start_audio: np.ndarray | None = None,
    device: str | torch.device = "auto",
    callback: ProgressCallback | None = None,
    should_stop: ShouldStop | None = None,
    target: AudioTarget | None = None,
    start_is_clip: bool = True,
    control_callback: ProgressCallback | None = None,
) -> DreamResult:
    """Dream a sound for ``settings.net`` starting from ``settings.start`` (or ``start_audio``, mono
    at the target's rate), write nothing, measure the round trip in memory (16-bit WAV bytes read
    back with soundfile, exactly what is saved) and let the independent judges listen to it.

    With the synthesiser, a built-in noise/silence start means "from random knobs" (a synthesiser
    cannot make white noise: that is the point); a clip or file is imitated first (``fit_steps``).
    The progress preview is always a [0, 1] spectrogram picture (B×1×bins×frames)."""
    device = devices.choose_device(device)
    kind = _checked_param(settings)
    if kind == "synth":  # the net's defaults written into the settings: dream.json says what was used
        settings = replace(settings, added_noise_db=added_noise_for(settings), control_ms=control_ms_for(settings),
                           control_tv=control_tv_for(settings))
    target = target or make_target(settings.net, device, settings.music_model, settings.word, settings.word_net,
                                   settings.word_objective)
    cfg, sr = target.stft, target.sample_rate
    dbmap = DBMap(cfg, settings.floor_db, settings.top_db)
    target.dbmap = dbmap
    if start_audio is None:
        start_audio, is_clip, note = load_start(settings.start, settings.seconds, sr)
    else:
        samples = int(round(settings.seconds * sr))
        start_audio, note = fit_length(np.asarray(start_audio, dtype=np.float32), samples, sr)
        is_clip = start_is_clip  # False: a noise the caller drew (the control's random starts)
    notes = [note] if note else []
    if settings.phase == "original" and not is_clip:
        raise UserInputError("Original phase needs a clip or upload to start from "
                             "(noise and silence have no useful phase).")
    start = DreamStart(start_audio, is_clip, dbmap, devices.generator(device, settings.seed), device)

    # the parameterisation, set up once (a clip start is imitated here by the synthesiser), then THE loop
    setup = parameterisation(kind, settings, target, start, should_stop)
    result = optimise(
        setup.param, setup.score, Schedule(steps=settings.steps, lr=settings.lr),
        handling=ImageHandling(transforms=setup.transforms, generator=start.generator, blur_every=settings.blur_every,
                               blur_sigma=settings.blur_sigma, project=setup.project),
        progress=Progress(callback=setup.preview(callback), should_stop=should_stop),
    )

    # back to sound, and the round trip: the exact bytes a user downloads, read back and analysed from the waveform
    sound = setup.sound(result)
    after_audio = audio_io.safe_loudness(sound.wav[0].float().cpu().numpy(), sr)
    played = audio_io.load_audio(audio_io.wav_bytes(after_audio, sr), sr, name="the dream WAV")
    played_t = torch.from_numpy(played).to(device)
    roundtrip = target.report_waveform(played_t)
    roundtrip_mag = stft(played_t[None], cfg).abs()

    # the independent judges, on the start sound and on what is heard
    judge_args = _judge_args(target, kind, device, settings.hearing)
    judges = {"before": judge_sound(sound.before_audio, sr, **judge_args),
              "roundtrip": judge_sound(played, sr, **judge_args)}
    if settings.steps > 0:
        judges["optimised"] = judge_sound(after_audio, sr, **judge_args)

    random_starts, note = _control(settings, kind, is_clip, judges["roundtrip"], device=device, target=target,
                                   callback=control_callback, should_stop=should_stop)
    notes += [note] if note else []

    bins = setup.start_unit.shape[-2]

    def db_picture(unit_map: torch.Tensor) -> np.ndarray:
        return dbmap.db(unit_map).reshape(bins, -1).float().cpu().numpy()

    return DreamResult(
        settings=settings, target=target.name, value_label=target.value_label, sample_rate=sr,
        before_audio=sound.before_audio, after_audio=after_audio, before_db=db_picture(setup.start_unit),
        after_db=db_picture(sound.unit), roundtrip_db=db_picture(dbmap.to_unit(roundtrip_mag)),
        history=[float(v) for v in result.history[:, 0]] if len(result.history) else [],
        before=setup.before, optimised=sound.optimised, roundtrip=roundtrip,
        steps_done=result.steps_done, stopped=result.stopped, seconds=result.seconds,
        griffin_lim_convergence=sound.griffin_lim_convergence, n_fft=cfg.n_fft, hop=cfg.hop,
        param=kind, judges=judges, controls=sound.controls, fit_distance=setup.fit_distance, notes=notes,
        random_starts=random_starts,
    )


def _checked_param(settings: DreamSettings) -> str:
    """The parameterisation's name (a key of PARAMS), once the settings that depend on it are consistent."""
    kind = PARAM_ALIASES.get(settings.param, settings.param)
    if kind not in PARAMS:
        raise UserInputError(f"Unknown parameterisation {settings.param!r}: {', '.join(PARAMS)}.")
    if settings.phase not in ("griffin-lim", "original"):
        raise UserInputError(f"Unknown phase {settings.phase!r}: griffin-lim or original.")
    if kind == "synth" and settings.phase == "original":
        raise UserInputError("Original phase belongs to the free spectrogram (--param spectrogram); "
                             "the synthesiser makes its own waveform.")
    if settings.synth is not None and settings.synth not in SYNTH_KINDS:
        raise UserInputError(f"Unknown synthesiser {settings.synth!r}: {' or '.join(SYNTH_KINDS)}.")
    if settings.steps < 0 or settings.fit_steps < 0:
        raise UserInputError("Steps must be ≥ 0.")
    return kind


def _judge_args(target: AudioTarget, kind: str, device: torch.device, hearing: bool) -> dict:
    """What the independent judges need to know about the dream: the tag or word it was after."""
    music, words = isinstance(target, MusicTarget), isinstance(target, WordTarget)
    return dict(tag=target.tag if music else None, dreamed_on=target.model_name if music else None, device=device,
                target_word=target.word if words else None, words=tuple(target.words.keywords) if words else None,
                param=kind, hearing=hearing)


def _control(settings: DreamSettings, kind: str, is_clip: bool, heard: dict[str, Verdict], *, device: torch.device,
             target: AudioTarget, callback: ProgressCallback | None,
             should_stop: ShouldStop | None) -> tuple[dict | None, str | None]:
    """(random_starts, note): the same judges on random starts of this parameterisation, never optimised,
    compared with what the judges heard in the dream; or a note saying why there is no control."""
    if settings.control_starts <= 0 or settings.steps <= 0:
        return None, None
    # only noise (or, for the synthesiser, silence: random knobs) differs per seed; a clip is the same every time
    if is_clip or not (kind == "synth" or settings.start == "noise"):
        return None, ("No control: this start is the same for every seed, "
                      "so there are no random starts to compare with (start from noise for one).")
    from .control import compare_judges, random_start_judges

    starts = random_start_judges(settings, settings.control_starts, device=device, target=target,
                                 callback=callback, should_stop=should_stop)
    if not isinstance(starts, list):  # cancelled
        return None, None
    return {"n": len(starts), "seeds": f"{settings.control_starts} seeds from 1000000",
            "comparison": compare_judges([heard], starts),
            "verdicts": [verdicts_to_dict(v) for v in starts]}, None


def load_start(start: str, seconds: float, sample_rate: int) -> tuple[np.ndarray, bool, str | None]:
    """(samples, is_clip, note): a built-in sound or a file, trimmed or zero-padded to ``seconds``; the note
    says when a file was shorter than that (padded with silence)."""
    if not 0.5 <= seconds <= audio_io.MAX_SECONDS:
        raise UserInputError(f"Dream length must be between 0.5 and {audio_io.MAX_SECONDS:g} s (got {seconds:g}).")
    if start in BUILTIN_CLIPS:
        return builtin_clip(start, seconds, sample_rate), start not in ("silence", "noise"), None
    if isinstance(start, str) and not Path(start).exists() and "/" not in start and "." not in start:
        raise UserInputError(f"Unknown start {start!r}: a file path or one of {', '.join(BUILTIN_CLIPS)}.")
    audio, note = fit_length(audio_io.load_audio(start, sample_rate), int(round(seconds * sample_rate)), sample_rate)
    return audio, True, note


def fit_length(audio: np.ndarray, samples: int, sample_rate: int) -> tuple[np.ndarray, str | None]:
    """``audio`` cut or zero-padded to ``samples``, and a note for the user when it had to be padded."""
    if len(audio) >= samples:
        return audio[:samples].astype(np.float32), None
    note = (f"The start sound lasts {len(audio) / sample_rate:.2f} s, shorter than the {samples / sample_rate:g} s "
            f"dream: the rest was padded with silence.")
    return np.pad(audio, (0, samples - len(audio))).astype(np.float32), note


# ---- pictures, files and listening ---------------------------------------------------------------

def spectrogram_preview(callback: ProgressCallback | None) -> ProgressCallback | None:
    """Wrap a progress callback so its preview shows low frequencies at the bottom."""
    if callback is None:
        return None

    def wrapped(step: int, total: int, preview: torch.Tensor, values: torch.Tensor) -> None:
        callback(step, total, torch.flip(preview, dims=[-2]) if preview is not None else None, values)

    return wrapped


def spectrogram_picture(db: np.ndarray, floor_db: float, top_db: float) -> torch.Tensor:
    """1×bins×frames in [0, 1], low frequencies at the bottom (for PNGs)."""
    unit = np.clip((db - floor_db) / (top_db - floor_db), 0, 1)[::-1].copy()
    return torch.from_numpy(unit)[None].float()


def save_dream(result: DreamResult, out: str | Path) -> dict[str, str]:
    """before.wav, after.wav, before/after/roundtrip spectrogram PNGs and dream.json in ``out``."""
    from ..images import save_png

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    s = result.settings
    files = {
        "before_wav": audio_io.save_wav(result.before_audio, out / "before.wav", result.sample_rate).name,
        "after_wav": audio_io.save_wav(result.after_audio, out / "after.wav", result.sample_rate).name,
    }
    for key, db in (("before", result.before_db), ("after", result.after_db), ("roundtrip", result.roundtrip_db)):
        picture = spectrogram_picture(db, s.floor_db, s.top_db)
        files[f"{key}_png"] = save_png(picture, out / f"{key}_spectrogram.png").name
    result.files = {**files, "json": "dream.json"}
    write_json(out / "dream.json", result.summary())
    return result.files


def listen(source, seconds: float = 4.0, device: str | torch.device = "auto", music_model: str = "MTT_vgg") -> dict:
    """What both audio networks hear in a sound (a built-in name, a path or bytes): the mean
    Silero speech probability and all 50 musicnn tags, most likely first."""
    from .musicnn import load_music_tagger
    from .silero import load_silero

    device = devices.choose_device(device)
    if isinstance(source, str) and source in BUILTIN_CLIPS:
        audio = builtin_clip(source, seconds, SAMPLE_RATE)
    else:
        audio = audio_io.load_audio(source, SAMPLE_RATE)
    wav = torch.from_numpy(audio).to(device)
    with torch.no_grad():
        speech = load_silero(device).speech_probability(wav)[0]
        tagger = load_music_tagger(music_model, device=device)
        tags = tagger.tag_probabilities(wav)[0]
    order = tags.argsort(descending=True)
    return {
        "seconds": round(len(audio) / SAMPLE_RATE, 3),
        "speech_probability": float(speech.mean()),
        "music_model": music_model,
        "music_tags": {tagger.labels[int(i)]: round(float(tags[i]), 4) for i in order},
    }

"""Audio dreams: ascend a network's output through a parameterisation of sound, turn it into a
WAV, and check that the sound still does what the optimiser saw (the round trip) — and what
independent judges the dream never saw say about it (:mod:`explorer.audio.judges`).

Two parameterisations, one loop:

* ``synth`` (default) — the knobs of a harmonic-plus-noise synthesiser (:mod:`explorer.audio.synth`):
  pitch contour, formants or harmonic distribution, filtered noise, loudness and voicing. It can
  only make plausible sound; the render goes through random gain, delay and added noise (what a
  written file may meet) into each network's own front end, and gradients reach the knobs.
* ``spectrogram`` / ``spectrogram-fft`` — *adversarial / unconstrained*: any log-magnitude
  spectrogram, turned into sound by Griffin-Lim. It finds what a network responds to, which is
  usually not what a person would hear as speech or music.

The free spectrogram is an ordinary image parameterisation (``make_param(kind, 1, (bins, frames),
channels=1, decorrelated=False)``) whose [0, 1] values map linearly to decibels, optimised by
THE loop (:func:`explorer.optvis.optimise.optimise`) with a score function:

    x ∈ [0,1]  →  dB = floor + x·range  →  magnitude  →  target network  →  objective
                                                     − TV along time − TV along frequency

A random gain per step (``gain_jitter_db``) is the audio version of transformation robustness:
it keeps the dream from depending on one exact loudness, which matters because the written file
is peak-normalised. Targets:

* ``speech`` — Silero VAD speech probability (mean log p over 32 ms chunks);
* ``music:TAG`` — a MagnaTagATune tag of a musicnn tagger, MTT_vgg or MTT_musicnn (log-sigmoid);
* ``image:MODEL:LAYER[:UNIT]`` or ``image:MODEL:class:N`` — any registry image classifier looking
  at the spectrogram as a picture (low frequencies at the bottom): DeepDream of a layer, a
  channel, or a class.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .. import devices
from ..errors import UserInputError
from ..files import write_json
from ..limits import Limit, check_fields
from ..optvis.optimise import ImageHandling, Progress, Schedule, optimise
from ..progress import ProgressCallback, ShouldStop
from ..optvis.param import make_param
from . import io as audio_io
from .clips import BUILTIN_CLIPS, builtin_clip
from .judges import Verdict, judge_sound, verdicts_to_dict
from .spectrogram import STFTConfig, db_to_magnitude, griffin_lim, istft, magnitude_to_db, stft
from .synth import SYNTH_KINDS, HarmonicPlusNoise, WaveformRobustness, fit_to_clip, preset

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
    "added_noise_db": Limit(-200.0, 0.0, " dB", label="added noise level"),
    "control_starts": Limit(0, 256, label="random starts for the control", integer=True),
}

DEFAULT_IMAGE_STFT = STFTConfig(n_fft=512, hop=128)
SAMPLE_RATE = 16000


# ---- targets -----------------------------------------------------------------------------------
class AudioTarget:
    """What a dream maximises. Subclasses say how a magnitude spectrogram (B×bins×frames) scores
    and how to report a waveform's network output for the round trip."""

    name: str = "target"
    sample_rate: int = SAMPLE_RATE
    stft: STFTConfig = DEFAULT_IMAGE_STFT
    value_label: str = "value"
    device: torch.device = torch.device("cpu")
    dbmap: "DBMap | None" = None  # set by dream(): how magnitudes map to the [0, 1] picture

    def score(self, magnitude: torch.Tensor, image: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """Per-item objective to maximise (differentiable)."""
        raise NotImplementedError

    def report(self, magnitude: torch.Tensor) -> dict:
        """{"value": the headline number, "scores": {label: value} for bar charts} without gradients."""
        raise NotImplementedError

    def report_waveform(self, wav: torch.Tensor) -> dict:
        mag = stft(wav.reshape(1, -1).to(self.device), self.stft).abs()
        return self.report(mag)

    def score_waveform(self, wav: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """Per-item objective of B×N waveforms, differentiable through the target's own front end."""
        magnitude = stft(wav, self.stft).abs()
        image = self.dbmap.to_unit(magnitude)[:, None] if self.dbmap is not None else None
        return self.score(magnitude, image, generator)


class SpeechTarget(AudioTarget):
    """Silero VAD's speech probability, averaged over the clip's 32 ms chunks."""

    value_label = "speech probability"

    def __init__(self, device: torch.device):
        from .silero import SPEECH_STFT, load_silero

        self.model = load_silero(device)
        self.device, self.stft, self.name = device, SPEECH_STFT, "speech"

    def score(self, magnitude, image, generator):
        probs = self.model(magnitude)
        return torch.log(probs.clamp(min=1e-6)).mean(-1)

    @torch.no_grad()
    def report(self, magnitude):
        probs = self.model(magnitude)[0]
        return {"value": float(probs.mean()), "scores": {"speech": float(probs.mean())},
                "per_chunk": [round(float(p), 4) for p in probs]}

    def score_waveform(self, wav, generator):
        # the exact streaming framing of the shipped model: what the round trip will measure
        return self.score(self.model.chunk_magnitudes(wav), None, generator)

    @torch.no_grad()
    def report_waveform(self, wav):
        # the exact streaming framing of the shipped model, not the uniform STFT the dream used
        probs = self.model.speech_probability(wav.reshape(1, -1).to(self.device))[0]
        return {"value": float(probs.mean()), "scores": {"speech": float(probs.mean())},
                "per_chunk": [round(float(p), 4) for p in probs]}


class MusicTarget(AudioTarget):
    """One MagnaTagATune tag of the musicnn VGG tagger; reports all 50 tags."""

    value_label = "tag probability"

    def __init__(self, tag: str, device: torch.device, model: str = "MTT_vgg"):
        from .musicnn import MUSIC_STFT, PATCH_FRAMES, load_music_tagger

        self.model = load_music_tagger(model, device)
        self.index = self.model.tag_index(tag)
        self.tag = self.model.labels[self.index]
        self.device, self.stft, self.name = device, MUSIC_STFT, f"music:{self.tag}"
        self.model_name = model
        self.value_label = f"p({self.tag})"
        self.patch_frames = PATCH_FRAMES

    def score(self, magnitude, image, generator):
        log_mel = self.model.log_mel(magnitude)
        frames = log_mel.shape[-1]
        if frames > self.patch_frames:
            # one random 3 s patch per step: a time-jitter transform that also saves compute
            start = int(torch.randint(0, frames - self.patch_frames + 1, (1,), generator=generator, device=generator.device if generator is not None else "cpu"))
            log_mel = log_mel[..., start : start + self.patch_frames]
        logits = self.model(log_mel)[..., self.index]  # B×P
        return F.logsigmoid(logits).mean(-1)

    @torch.no_grad()
    def report(self, magnitude):
        probs = torch.sigmoid(self.model.logits_from_magnitude(magnitude)).mean(1)[0]
        return {"value": float(probs[self.index]), "scores": {label: float(p) for label, p in zip(self.model.labels, probs)}}


class WordTarget(AudioTarget):
    """One keyword of the project's word network (assets/words): log p(word), mean over 1 s windows."""

    value_label = "word probability"

    def __init__(self, word: str, device: torch.device):
        from .words import WORDS_STFT, load_word_net

        self.words = load_word_net(device)
        self.index = self.words.index(word)
        self.word = self.words.labels[self.index]
        self.device, self.stft, self.name = device, WORDS_STFT, f"words:{self.word}"
        self.value_label = f"p({self.word})"

    def _log_probs_from_magnitude(self, magnitude: torch.Tensor) -> torch.Tensor:
        net = self.words.net
        return F.log_softmax(net.head(net.features(net.front.from_magnitude(magnitude))).float(), -1)

    def score(self, magnitude, image, generator):
        return self._log_probs_from_magnitude(magnitude)[:, self.index]

    @torch.no_grad()
    def report(self, magnitude):
        probs = self._log_probs_from_magnitude(magnitude)[0].exp()
        return {"value": float(probs[self.index]), "scores": dict(zip(self.words.labels, map(float, probs)))}

    def score_waveform(self, wav, generator):
        return self.words.log_probabilities(wav)[:, self.index]

    @torch.no_grad()
    def report_waveform(self, wav):
        probs = self.words.probabilities(wav.reshape(1, -1))[0]
        return {"value": float(probs[self.index]), "scores": dict(zip(self.words.labels, map(float, probs)))}


class ImageTarget(AudioTarget):
    """An image classifier looking at the spectrogram as a grey picture (low pitch at the bottom)."""

    value_label = "objective"

    def __init__(self, model, objective, device: torch.device | None = None):
        objective.validate(model.layer_shapes)
        self.model, self.objective = model, objective
        self.device, self.stft = device or model.device, DEFAULT_IMAGE_STFT
        self.name = f"image:{model.name}:{objective.name}"
        self.dbmap: DBMap | None = None  # set by dream(): how magnitudes become a [0, 1] picture

    @classmethod
    def from_spec(cls, spec: str, device: torch.device) -> "ImageTarget":
        """image:MODEL[:LAYER[:UNIT]] (DeepDream of the layer, or one channel) or image:MODEL:class:N."""
        from ..models import load_model
        from ..optvis import objectives

        parts = spec.split(":")
        if len(parts) < 2 or not parts[1]:
            raise UserInputError("Image targets look like image:MODEL:LAYER, image:MODEL:LAYER:UNIT or image:MODEL:class:N.")
        model = load_model(parts[1], device=device)
        layer = parts[2] if len(parts) > 2 and parts[2] else (model.default_layer or "output")
        if layer == "class":
            if len(parts) < 4:
                raise UserInputError("image:MODEL:class:N needs a class index N.")
            objective = objectives.class_logit(_int(parts[3], "class"))
        elif len(parts) > 3:
            objective = objectives.channel(layer, _int(parts[3], "unit"))
        else:
            objective = objectives.deepdream(layer)
        return cls(model, objective, device)

    def picture(self, unit: torch.Tensor) -> torch.Tensor:
        """B×1×bins×frames in [0, 1] → B×C×H×W at the model's input size, low frequencies at the bottom."""
        flipped = torch.flip(unit, dims=[-2])
        resized = F.interpolate(flipped, size=tuple(self.model.input_size), mode="bilinear", align_corners=False)
        return resized.expand(-1, self.model.channels, -1, -1)

    def _value(self, unit: torch.Tensor) -> torch.Tensor:
        from ..capture import OUTPUT
        from ..optvis.objectives import Context

        picture = self.picture(unit)
        layers = sorted(self.objective.layers | {OUTPUT})
        acts = self.model.activations(picture, layers)
        return self.objective(Context(acts=acts, image=picture)), acts[OUTPUT]

    def score(self, magnitude, image, generator):
        return self._value(image)[0]

    @torch.no_grad()
    def report(self, magnitude):
        value, logits = self._value(self.dbmap.to_unit(magnitude)[:, None])
        probs = torch.softmax(logits.float(), -1)[0]
        top = probs.argsort(descending=True)[:8]
        return {"value": float(value[0]), "scores": {self.model.label(int(i)): float(probs[i]) for i in top}}


def _int(text: str, what: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise UserInputError(f"The {what} must be a whole number, got {text!r}.") from None


# ---- settings and results ---------------------------------------------------------------------
@dataclass(frozen=True)
class DreamSettings:
    """Everything that changes a dream (defaults: 4 s, finish in a few minutes on a laptop CPU)."""

    net: str = "speech"  # speech | words | music:TAG | image:MODEL:LAYER[:UNIT] | image:MODEL:class:N
    word: str = "yes"  # the keyword a `words` dream asks the word network for (words:WORD also works)
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
    added_noise_db: float = -50.0  # white noise this far below the peak, per step
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
        labels = list(self.roundtrip["scores"]) + [k for k in self.before["scores"] if k not in self.roundtrip["scores"]]
        peak = {k: max(r["scores"].get(k, 0.0) for r in (self.before, self.optimised, self.roundtrip)) for k in labels}
        own = self.target.split(":", 1)[1] if self.target.startswith(("music:", "words:")) else ("speech" if self.target == "speech" else None)
        ranked = sorted(labels, key=lambda k: (k != own, -peak[k]))[:top]
        return [{"label": k, **{name: round(r["scores"].get(k, float("nan")), 4) for name, r in
                                (("before", self.before), ("optimised", self.optimised), ("roundtrip", self.roundtrip))}}
                for k in ranked]

    def summary(self) -> dict:
        def slim(report: dict) -> dict:
            return {k: v for k, v in report.items() if k != "per_chunk"} | (
                {"per_chunk_mean": report["value"]} if "per_chunk" in report else {})

        return {
            "target": self.target, "value_label": self.value_label, "settings": self.settings.to_dict(),
            "before": round(self.before["value"], 4), "optimised": round(self.optimised["value"], 4),
            "roundtrip": round(self.roundtrip["value"], 4),
            "roundtrip_gain": round(self.roundtrip["value"] - self.before["value"], 4),
            "griffin_lim_spectral_convergence": None if self.griffin_lim_convergence is None else round(self.griffin_lim_convergence, 4),
            "steps_done": self.steps_done, "stopped": self.stopped, "seconds": round(self.seconds, 2),
            "reports": {"before": slim(self.before), "optimised": slim(self.optimised), "roundtrip": slim(self.roundtrip)},
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
class DBMap:
    """[0, 1] picture ↔ magnitude, through a linear dB scale relative to a full-scale sine."""

    def __init__(self, cfg: STFTConfig, floor_db: float, top_db: float):
        if not top_db > floor_db:
            raise UserInputError(f"The dB range is empty: floor {floor_db:g} dB must be below top {top_db:g} dB.")
        self.ref, self.floor, self.range = cfg.full_scale, float(floor_db), float(top_db - floor_db)

    def to_magnitude(self, unit: torch.Tensor) -> torch.Tensor:
        return db_to_magnitude(self.floor + unit * self.range, self.ref)

    def to_unit(self, magnitude: torch.Tensor) -> torch.Tensor:
        db = magnitude_to_db(magnitude, self.ref, floor_db=self.floor)
        return ((db - self.floor) / self.range).clamp(0.0, 1.0)

    def db(self, unit: torch.Tensor) -> torch.Tensor:
        return self.floor + unit * self.range


def make_target(net: str, device: torch.device, music_model: str = "MTT_vgg", word: str = "yes") -> AudioTarget:
    """Parse ``speech``, ``words`` / ``words:WORD``, ``music:TAG`` or ``image:MODEL:…`` into a target."""
    kind, _, rest = net.partition(":")
    if kind == "speech":
        return SpeechTarget(device)
    if kind == "words":
        return WordTarget(rest or word, device)
    if kind == "music":
        return MusicTarget(rest or "piano", device, music_model)
    if kind == "image":
        return ImageTarget.from_spec(net, device)
    raise UserInputError(f"Unknown net {net!r}: use speech, words (with a word), music:TAG or image:MODEL:LAYER[:UNIT].")


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
    note = (f"The start sound lasts {len(audio) / sample_rate:.2f} s, shorter than the {samples / sample_rate:g} s dream: "
            f"the rest was padded with silence.")
    return np.pad(audio, (0, samples - len(audio))).astype(np.float32), note


def tv_axes(unit: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean squared difference along time and along frequency, per item (B×1×bins×frames)."""
    along_time = (unit[..., :, 1:] - unit[..., :, :-1]).pow(2).flatten(1).mean(1)
    along_freq = (unit[..., 1:, :] - unit[..., :-1, :]).pow(2).flatten(1).mean(1)
    return along_time, along_freq


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
    kind = PARAM_ALIASES.get(settings.param, settings.param)
    if kind not in PARAMS:
        raise UserInputError(f"Unknown parameterisation {settings.param!r}: {', '.join(PARAMS)}.")
    synth = kind == "synth"
    if settings.phase not in ("griffin-lim", "original"):
        raise UserInputError(f"Unknown phase {settings.phase!r}: griffin-lim or original.")
    if synth and settings.phase == "original":
        raise UserInputError("Original phase belongs to the free spectrogram (--param spectrogram); the synthesiser makes its own waveform.")
    if settings.synth is not None and settings.synth not in SYNTH_KINDS:
        raise UserInputError(f"Unknown synthesiser {settings.synth!r}: {' or '.join(SYNTH_KINDS)}.")
    if settings.steps < 0 or settings.fit_steps < 0:
        raise UserInputError("Steps must be ≥ 0.")
    target = target or make_target(settings.net, device, settings.music_model, settings.word)
    cfg, sr = target.stft, target.sample_rate
    dbmap = DBMap(cfg, settings.floor_db, settings.top_db)
    target.dbmap = dbmap
    if start_audio is None:
        start_audio, is_clip, note = load_start(settings.start, settings.seconds, sr)
    else:
        start_audio, note = fit_length(np.asarray(start_audio, dtype=np.float32), int(round(settings.seconds * sr)), sr)
        is_clip = start_is_clip  # False: a noise the caller drew (the control's random starts)
    notes = [note] if note else []
    if settings.phase == "original" and not is_clip:
        raise UserInputError("Original phase needs a clip or upload to start from (noise and silence have no useful phase).")
    samples = len(start_audio)
    gen = devices.generator(device, settings.seed)

    start_wav = torch.from_numpy(start_audio).to(device)[None]
    start_spec = stft(start_wav, cfg)
    state: dict = {}
    project = None
    fit_distance = None

    if synth:
        synth_kind = settings.synth or ("voice" if isinstance(target, (SpeechTarget, WordTarget)) else "instrument")
        param = HarmonicPlusNoise(preset(synth_kind), samples, sr, generator=gen, device=device,
                                  start="clip" if is_clip else settings.start)
        if is_clip and settings.fit_steps:
            fitted = fit_to_clip(param, start_wav, steps=settings.fit_steps, generator=gen, should_stop=should_stop)
            fit_distance = -float(fitted.history[-1, 0]) if len(fitted.history) else None
        with torch.no_grad():
            start_render = _peak_normalised(param.waveform())
        start_spec = stft(start_render, cfg)
        robust = WaveformRobustness(gain_db=settings.gain_jitter_db, shift_ms=settings.time_shift_ms,
                                    noise_db=settings.added_noise_db, sample_rate=sr)

        def transforms(render: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
            return robust(render, generator)

        def score(render: torch.Tensor, transformed: torch.Tensor) -> torch.Tensor:
            # transformed: B×N after the robustness transforms (or the raw render when the loop scores its result)
            return target.score_waveform(transformed.reshape(transformed.shape[0], -1), gen)

        loop_callback = _waveform_preview(callback, dbmap, cfg)
        before = target.report_waveform(start_render)
    else:
        start_unit = dbmap.to_unit(start_spec.abs())[:, None]  # 1×1×bins×frames
        bins, frames = start_unit.shape[-2:]
        before = target.report(start_spec.abs())
        param = make_param("pixel" if kind == "spectrogram" else "fft", 1, (bins, frames), channels=1,
                           decorrelated=False, generator=gen, device=device)
        # a picture of exactly 0 or 1 would sit on the sigmoid's flat tails: keep the start inside
        param.set_image_(start_unit.clamp(0.02, 0.98))
        jitter = settings.gain_jitter_db / dbmap.range

        def transforms(image: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
            if not jitter:
                return image
            shift = (torch.rand(image.shape[0], 1, 1, 1, generator=generator, device=image.device) * 2 - 1) * jitter
            return image + shift

        def score(image: torch.Tensor, transformed: torch.Tensor) -> torch.Tensor:
            value = target.score(dbmap.to_magnitude(transformed[:, 0]), transformed, gen)
            if settings.tv_time or settings.tv_freq:
                along_time, along_freq = tv_axes(image)
                value = value - settings.tv_time * along_time - settings.tv_freq * along_freq
            return value

        every = settings.consistency_every
        if every is None:
            every = 4 if isinstance(target, ImageTarget) else 0
        if every > 0:
            state.update(step=0, phase=start_spec.angle() if is_clip else
                         2 * torch.pi * torch.rand(start_spec.shape, generator=gen, device=device))

            @torch.no_grad()
            def project(p) -> None:
                # One Griffin-Lim step with a phase carried across projections: pulls the spectrogram
                # towards one that a waveform can actually have, so less is lost in the round trip.
                state["step"] += 1
                if state["step"] % every:
                    return
                magnitude = dbmap.to_magnitude(p()[:, 0])
                rebuilt = stft(istft(torch.polar(magnitude, state["phase"]), cfg, samples), cfg)
                state["phase"] = rebuilt.angle()
                p.set_image_(dbmap.to_unit(rebuilt.abs())[:, None].clamp(0.001, 0.999))

        loop_callback = callback

    result = optimise(
        param, score, Schedule(steps=settings.steps, lr=settings.lr),
        handling=ImageHandling(transforms=transforms, generator=gen, blur_every=settings.blur_every,
                               blur_sigma=settings.blur_sigma, project=project),
        progress=Progress(callback=loop_callback, should_stop=should_stop),
    )

    # back to sound
    convergence = None
    controls = None
    if synth:
        wav = _peak_normalised(result.images.to(device).reshape(1, -1))
        optimised = target.report_waveform(wav)
        magnitude = stft(wav, cfg).abs()
        unit = dbmap.to_unit(magnitude)
        start_unit = dbmap.to_unit(start_spec.abs())[:, None]
        controls = _controls_for_page(param)
        before_audio = audio_io.safe_loudness(start_render[0].float().cpu().numpy(), sr)
    else:
        unit = result.images.to(device)[:, 0]  # 1×bins×frames
        magnitude = dbmap.to_magnitude(unit)
        optimised = target.report(magnitude)
        if settings.phase == "original":
            wav = istft(torch.polar(magnitude, start_spec.angle()), cfg, samples)
        else:
            # the phase the projections carried (consistent with this very spectrogram), else the clip's
            init = state.get("phase", start_spec.angle() if is_clip else None)
            wav = griffin_lim(magnitude, cfg, n_iter=settings.griffin_lim_iters, momentum=settings.momentum,
                              length=samples, init_phase=init, generator=gen)
            rebuilt = stft(wav, cfg).abs()
            convergence = float((rebuilt - magnitude).norm() / magnitude.norm().clamp(min=1e-12))
        before_audio = audio_io.safe_loudness(start_audio, sr)
    after_audio = audio_io.safe_loudness(wav[0].float().cpu().numpy(), sr)
    bins = start_unit.shape[-2]

    # the round trip: the exact bytes a user downloads, read back and analysed from the waveform
    played = audio_io.load_audio(audio_io.wav_bytes(after_audio, sr), sr, name="the dream WAV")
    played_t = torch.from_numpy(played).to(device)
    roundtrip = target.report_waveform(played_t)
    roundtrip_mag = stft(played_t[None], cfg).abs()

    # the independent judges, on the start sound and on what is heard
    music = isinstance(target, MusicTarget)
    judge_args = dict(tag=target.tag if music else None, dreamed_on=target.model_name if music else None, device=device,
                      target_word=target.word if isinstance(target, WordTarget) else None,
                      words=tuple(target.words.keywords) if isinstance(target, WordTarget) else None, param=kind,
                      hearing=settings.hearing)
    judges = {"before": judge_sound(before_audio, sr, **judge_args), "roundtrip": judge_sound(played, sr, **judge_args)}
    if settings.steps > 0:
        judges["optimised"] = judge_sound(after_audio, sr, **judge_args)

    # the control: the same judges on random starts of this parameterisation, never optimised
    random_starts = None
    # only noise (or, for the synthesiser, silence: random knobs) differs per seed; a clip is the same every time
    random_start = not is_clip and (synth or settings.start == "noise")
    if settings.control_starts > 0 and settings.steps > 0 and not random_start:
        notes.append("No control: this start is the same for every seed, so there are no random starts to compare "
                     "with (start from noise for one).")
    elif settings.control_starts > 0 and settings.steps > 0:
        from .control import compare_judges, random_start_judges

        starts = random_start_judges(settings, settings.control_starts, device=device, target=target,
                                     callback=control_callback, should_stop=should_stop)
        if isinstance(starts, list):
            random_starts = {"n": len(starts), "seeds": f"{settings.control_starts} seeds from 1000000",
                             "comparison": compare_judges([judges["roundtrip"]], starts),
                             "verdicts": [verdicts_to_dict(v) for v in starts]}

    def db_picture(unit_map: torch.Tensor) -> np.ndarray:
        return dbmap.db(unit_map).reshape(bins, -1).float().cpu().numpy()

    return DreamResult(
        settings=settings, target=target.name, value_label=target.value_label, sample_rate=sr,
        before_audio=before_audio, after_audio=after_audio,
        before_db=db_picture(start_unit), after_db=db_picture(unit), roundtrip_db=db_picture(dbmap.to_unit(roundtrip_mag)),
        history=[float(v) for v in result.history[:, 0]] if len(result.history) else [],
        before=before, optimised=optimised, roundtrip=roundtrip,
        steps_done=result.steps_done, stopped=result.stopped, seconds=result.seconds,
        griffin_lim_convergence=convergence, n_fft=cfg.n_fft, hop=cfg.hop,
        param=kind, judges=judges, controls=controls, fit_distance=fit_distance, notes=notes,
        random_starts=random_starts,
    )


def _peak_normalised(wav: torch.Tensor) -> torch.Tensor:
    """B×1×1×N or B×N render → B×N at the written file's peak level (−1 dBFS)."""
    wav = wav.reshape(wav.shape[0], -1)
    return wav * (10 ** (audio_io.PEAK_DBFS / 20) / wav.abs().amax(-1, keepdim=True).clamp(min=1e-8))


def _waveform_preview(callback: ProgressCallback | None, dbmap: DBMap, cfg: STFTConfig) -> ProgressCallback | None:
    """Wrap a progress callback so a synthesiser's render arrives as a [0, 1] spectrogram picture."""
    if callback is None:
        return None

    def wrapped(step: int, total: int, preview: torch.Tensor, values: torch.Tensor) -> None:
        picture = None
        if preview is not None:
            with torch.no_grad():
                picture = dbmap.to_unit(stft(_peak_normalised(preview[:1]), cfg).abs())[:, None]
        callback(step, total, picture, values)

    return wrapped


@torch.no_grad()
def _controls_for_page(param: HarmonicPlusNoise) -> dict:
    """The synthesiser's contours (first item, first voice) per control frame, for plots and JSON."""
    controls = param.controls()
    rate = controls.control_rate
    out = {
        "frame_seconds": 1.0 / rate,
        "f0_hz": [round(float(v), 1) for v in controls.f0_hz[0].mean(0).cpu()] if param.config.voices == 1
        else [[round(float(v), 1) for v in voice.cpu()] for voice in controls.f0_hz[0]],
        "loudness_db": [round(float(v), 1) for v in controls.loudness_db[0].amax(0).cpu()],
        "voicing": [round(float(v), 3) for v in controls.voicing[0].cpu()],
        "summary": {"synth": param.config.kind, **controls.summary()},
    }
    return out


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
        files[f"{key}_png"] = save_png(spectrogram_picture(db, s.floor_db, s.top_db), out / f"{key}_spectrogram.png").name
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

"""The two ways an audio dream can be made, each set up once and handed to THE loop.

* :class:`SynthDream` — the knobs of a harmonic-plus-noise synthesiser (:mod:`explorer.audio.synth`):
  it can only make plausible sound; the render goes through random gain, tape speed, delay and added
  noise into the target's own front end, and gradients reach the knobs. A clip start is imitated first.
* :class:`SpectrogramDream` — a free log-magnitude spectrogram (pixels or a Fourier basis) whose
  [0, 1] values map linearly to decibels, turned into sound by Griffin-Lim (or the clip's phase):
  adversarial / unconstrained.

Both give the loop a ``param``, ``transforms``, ``score`` and ``project`` (or None), wrap the progress
callback so its preview is always a [0, 1] spectrogram picture (B×1×bins×frames), and turn the
loop's result back into a :class:`Sound`. :func:`parameterisation` picks one by name.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..optvis.optimise import OptimisationResult
from ..optvis.param import ImageParam, make_param
from ..progress import ProgressCallback, ShouldStop
from . import io as audio_io
from .spectrogram import DBMap, STFTConfig, griffin_lim, istft, stft
from .synth import HarmonicPlusNoise, WaveformRobustness, fit_to_clip, preset
from .targets import AudioTarget, ImageTarget, SpeechTarget, WordTarget

if TYPE_CHECKING:  # dream.py imports this module
    from .dream import DreamSettings


ADDED_NOISE_DB = -50.0  # the robustness stack's noise for most dreams: a 16-bit file's dither, no more
WORD_ADDED_NOISE_DB = -30.0  # word dreams: the level that passed its rule (docs/audio.md, noise rule)


def added_noise_for(settings: DreamSettings) -> float:
    """The per-step noise level a dream uses: the settings' own, else its net's default. Word dreams use −30 dB:
    it passed its rule on seeds 0–2 (pocketsphinx 14/60 against 10/60), but on fresh seeds 3–5 it did no better
    than −50 dB (4/60 against 6/60); it costs nothing measurable either way (docs/audio.md)."""
    if settings.added_noise_db is not None:
        return float(settings.added_noise_db)
    return WORD_ADDED_NOISE_DB if _words(settings) else ADDED_NOISE_DB


CONTROL_MS = 10.0  # the synthesiser's loudness and voicing frame spacing (its presets' 100 frames a second)
# speech and word dreams: 5 ms frames with a smoothness prior of weight 0.03. Word dreams passed their rule on fresh
# seeds 6–11 against 10 ms without it — DNSMOS SIG +0.42 [+0.32, +0.52], pocketsphinx names the target 46/240 vs
# 32/240 over seeds 0–11, the own score unchanged; Silero dreams raised SIG on all six seeds (+0.59 [+0.26, +1.12])
# with Silero ≥ 0.99 (docs/audio.md, the eleventh to thirteenth looks and the Silero rule)
VOICE_CONTROL_MS = 5.0
VOICE_CONTROL_TV = 0.03  # what the rules measured (from 19:27 UTC on 2026-12-05 to the fix it read 0.033: a slip)


def _words(settings: DreamSettings) -> bool:
    return settings.net.partition(":")[0] == "words"


def _voice_net(settings: DreamSettings) -> bool:
    """A speech or word network: the dreams the voice settings above were measured on."""
    return settings.net.partition(":")[0] in ("words", "speech")


def control_ms_for(settings: DreamSettings) -> float:
    """The loudness/voicing frame spacing a synthesiser dream uses: the settings' own, else its net's default."""
    if settings.control_ms is not None:
        return float(settings.control_ms)
    return VOICE_CONTROL_MS if _voice_net(settings) else CONTROL_MS


def control_tv_for(settings: DreamSettings) -> float:
    """The weight of the smoothness prior on the loudness/voicing knobs: the settings' own, else its net's default."""
    if settings.control_tv is not None:
        return float(settings.control_tv)
    return VOICE_CONTROL_TV if _voice_net(settings) else 0.0


@dataclass(frozen=True)
class DreamStart:
    """The sound a dream starts from, at the target's rate, and what it needs to be set up."""

    audio: np.ndarray  # mono samples, the dream's length
    is_clip: bool  # a real sound (its phase and content mean something), not noise or silence
    dbmap: DBMap
    generator: torch.Generator
    device: torch.device

    @property
    def wav(self) -> torch.Tensor:
        """1×N on the device."""
        return torch.from_numpy(self.audio).to(self.device)[None]


@dataclass
class Sound:
    """The dream turned back into sound by its parameterisation."""

    wav: torch.Tensor  # 1×N: what the optimiser ended with, as a waveform
    unit: torch.Tensor  # its [0, 1] spectrogram picture
    optimised: dict  # the target's report on it (no jitter, no priors)
    before_audio: np.ndarray  # the start sound as heard (safe loudness)
    griffin_lim_convergence: float | None = None
    controls: dict | None = None  # synthesiser: contours per frame and a summary


class Parameterisation:
    """What the loop optimises for one dream; built once, before the loop."""

    param: ImageParam
    before: dict  # the target's report on the start sound
    start_unit: torch.Tensor  # the start's [0, 1] spectrogram picture
    fit_distance: float | None = None  # synthesiser from a clip: spectral distance after imitating it
    project: ConsistencyProjection | None = None

    def transforms(self, image: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        raise NotImplementedError

    def score(self, image: torch.Tensor, transformed: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def preview(self, callback: ProgressCallback | None) -> ProgressCallback | None:
        """The progress callback the loop gets (its preview a [0, 1] spectrogram picture)."""
        return callback

    def sound(self, result: OptimisationResult) -> Sound:
        raise NotImplementedError


class SynthDream(Parameterisation):
    """The synthesiser's knobs: from random knobs, or from an imitation of a clip (``fit_steps``)."""

    def __init__(self, settings: DreamSettings, target: AudioTarget, start: DreamStart,
                 should_stop: ShouldStop | None = None):
        self.target, self.dbmap, self.generator, self.device = target, start.dbmap, start.generator, start.device
        voice = isinstance(target, (SpeechTarget, WordTarget))
        kind = settings.synth or ("voice" if voice else "instrument")
        config = replace(preset(kind), noise_budget=settings.noise_budget, edge_silence_ms=settings.edge_silence_ms,
                         control_rate=1000.0 / control_ms_for(settings))
        self.param = HarmonicPlusNoise(config, len(start.audio), target.sample_rate, generator=start.generator,
                                       device=start.device, start="clip" if start.is_clip else settings.start)
        if start.is_clip and settings.fit_steps:
            fitted = fit_to_clip(self.param, start.wav, steps=settings.fit_steps, generator=start.generator,
                                 should_stop=should_stop)
            # the distance of the imitation the dream starts from: the loop's score of its final knobs
            self.fit_distance = -float(fitted.final_values[0]) if fitted.steps_done else None
        with torch.no_grad():
            self.start_render = peak_normalised(self.param.waveform())
        self.start_unit = self.dbmap.to_unit(stft(self.start_render, target.stft).abs())[:, None]
        self.robust = WaveformRobustness(gain_db=settings.gain_jitter_db, shift_ms=settings.time_shift_ms,
                                         noise_db=added_noise_for(settings), speed_pct=settings.speed_jitter_pct,
                                         mask_ms=settings.mask_ms, sample_rate=target.sample_rate)
        self.before = target.report_waveform(self.start_render)
        self.control_tv = control_tv_for(settings)

    def transforms(self, render: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        return self.robust(render, generator)

    def score(self, render: torch.Tensor, transformed: torch.Tensor) -> torch.Tensor:
        # transformed: B×N after the robustness transforms (or the raw render when the loop scores its result)
        value = self.target.score_waveform(transformed.reshape(transformed.shape[0], -1), self.generator)
        if self.control_tv:
            value = value - self.control_tv * self.param.control_variation()
        return value

    def preview(self, callback: ProgressCallback | None) -> ProgressCallback | None:
        """Wrap a progress callback so the synthesiser's render arrives as a [0, 1] spectrogram picture."""
        if callback is None:
            return None

        def wrapped(step: int, total: int, preview: torch.Tensor, values: torch.Tensor) -> None:
            picture = None
            if preview is not None:
                with torch.no_grad():
                    picture = self.dbmap.to_unit(stft(peak_normalised(preview[:1]), self.target.stft).abs())[:, None]
            callback(step, total, picture, values)

        return wrapped

    def sound(self, result: OptimisationResult) -> Sound:
        wav = peak_normalised(result.images.to(self.device).reshape(1, -1))
        optimised = self.target.report_waveform(wav)
        unit = self.dbmap.to_unit(stft(wav, self.target.stft).abs())
        before_audio = audio_io.safe_loudness(self.start_render[0].float().cpu().numpy(), self.target.sample_rate)
        return Sound(wav=wav, unit=unit, optimised=optimised, before_audio=before_audio,
                     controls=controls_for_page(self.param))


class SpectrogramDream(Parameterisation):
    """A free spectrogram picture (``kind`` "spectrogram": pixels, "spectrogram-fft": Fourier basis)."""

    def __init__(self, kind: str, settings: DreamSettings, target: AudioTarget, start: DreamStart):
        self.settings, self.target, self.dbmap, self.generator = settings, target, start.dbmap, start.generator
        self.start_audio, self.is_clip = start.audio, start.is_clip
        self.start_spec = stft(start.wav, target.stft)
        self.start_unit = self.dbmap.to_unit(self.start_spec.abs())[:, None]  # 1×1×bins×frames
        bins, frames = self.start_unit.shape[-2:]
        self.before = target.report(self.start_spec.abs())
        self.param = make_param("pixel" if kind == "spectrogram" else "fft", 1, (bins, frames), channels=1,
                                decorrelated=False, generator=start.generator, device=start.device)
        # a picture of exactly 0 or 1 would sit on the sigmoid's flat tails: keep the start inside
        self.param.set_image_(self.start_unit.clamp(0.02, 0.98))
        self.jitter = settings.gain_jitter_db / self.dbmap.range
        every = settings.consistency_every
        if every is None:
            every = 4 if isinstance(target, ImageTarget) else 0
        if every > 0:
            if start.is_clip:
                phase = self.start_spec.angle()
            else:
                phase = 2 * torch.pi * torch.rand(self.start_spec.shape, generator=start.generator, device=start.device)
            self.project = ConsistencyProjection(every, phase, self.dbmap, target.stft, len(start.audio))

    def transforms(self, image: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """A random gain per step: the audio version of transformation robustness."""
        if not self.jitter:
            return image
        shift = (torch.rand(image.shape[0], 1, 1, 1, generator=generator, device=image.device) * 2 - 1) * self.jitter
        return image + shift

    def score(self, image: torch.Tensor, transformed: torch.Tensor) -> torch.Tensor:
        s = self.settings
        value = self.target.score(self.dbmap.to_magnitude(transformed[:, 0]), transformed, self.generator)
        if s.tv_time or s.tv_freq:
            along_time, along_freq = tv_axes(image)
            value = value - s.tv_time * along_time - s.tv_freq * along_freq
        return value

    def sound(self, result: OptimisationResult) -> Sound:
        s, cfg, samples = self.settings, self.target.stft, len(self.start_audio)
        unit = result.images.to(self.start_spec.device)[:, 0]  # 1×bins×frames
        magnitude = self.dbmap.to_magnitude(unit)
        optimised = self.target.report(magnitude)
        convergence = None
        if s.phase == "original":
            wav = istft(torch.polar(magnitude, self.start_spec.angle()), cfg, samples)
        else:
            # the phase the projections carried (consistent with this very spectrogram), else the clip's
            clip_phase = self.start_spec.angle() if self.is_clip else None
            init = self.project.phase if self.project is not None else clip_phase
            wav = griffin_lim(magnitude, cfg, n_iter=s.griffin_lim_iters, momentum=s.momentum,
                              length=samples, init_phase=init, generator=self.generator)
            rebuilt = stft(wav, cfg).abs()
            convergence = float((rebuilt - magnitude).norm() / magnitude.norm().clamp(min=1e-12))
        before_audio = audio_io.safe_loudness(self.start_audio, self.target.sample_rate)
        return Sound(wav=wav, unit=unit, optimised=optimised, before_audio=before_audio,
                     griffin_lim_convergence=convergence)


class ConsistencyProjection:
    """Every ``every`` optimiser steps, one Griffin-Lim step with a phase carried across projections:
    pulls the spectrogram towards one that a waveform can actually have, so less is lost in the
    round trip. The loop calls it once after each step; it keeps the phase for the final Griffin-Lim.
    (It counts its calls because the loop's ``project`` hook is not told the step number.)"""

    def __init__(self, every: int, phase: torch.Tensor, dbmap: DBMap, cfg: STFTConfig, samples: int):
        self.every, self.phase, self.dbmap, self.cfg, self.samples = every, phase, dbmap, cfg, samples
        self.calls = 0

    @torch.no_grad()
    def __call__(self, param: ImageParam) -> None:
        self.calls += 1
        if self.calls % self.every:
            return
        magnitude = self.dbmap.to_magnitude(param()[:, 0])
        rebuilt = stft(istft(torch.polar(magnitude, self.phase), self.cfg, self.samples), self.cfg)
        self.phase = rebuilt.angle()
        param.set_image_(self.dbmap.to_unit(rebuilt.abs())[:, None].clamp(0.001, 0.999))


def parameterisation(kind: str, settings: DreamSettings, target: AudioTarget, start: DreamStart,
                     should_stop: ShouldStop | None = None) -> Parameterisation:
    """The set-up parameterisation ``kind`` (a key of :data:`explorer.audio.dream.PARAMS`)."""
    if kind == "synth":
        return SynthDream(settings, target, start, should_stop)
    return SpectrogramDream(kind, settings, target, start)


def tv_axes(unit: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean squared difference along time and along frequency, per item (B×1×bins×frames)."""
    along_time = (unit[..., :, 1:] - unit[..., :, :-1]).pow(2).flatten(1).mean(1)
    along_freq = (unit[..., 1:, :] - unit[..., :-1, :]).pow(2).flatten(1).mean(1)
    return along_time, along_freq


def peak_normalised(wav: torch.Tensor) -> torch.Tensor:
    """B×1×1×N or B×N render → B×N at the written file's peak level (−1 dBFS)."""
    wav = wav.reshape(wav.shape[0], -1)
    return wav * (10 ** (audio_io.PEAK_DBFS / 20) / wav.abs().amax(-1, keepdim=True).clamp(min=1e-8))


@torch.no_grad()
def controls_for_page(param: HarmonicPlusNoise) -> dict:
    """The synthesiser's contours (first item, first voice) per control frame, for plots and JSON."""
    controls = param.controls()
    rate = controls.control_rate
    f0 = controls.f0_hz[0]
    return {
        "frame_seconds": 1.0 / rate,
        "f0_hz": [round(float(v), 1) for v in f0.mean(0).cpu()] if param.config.voices == 1
        else [[round(float(v), 1) for v in voice.cpu()] for voice in f0],
        "loudness_db": [round(float(v), 1) for v in controls.loudness_db[0].amax(0).cpu()],
        "voicing": [round(float(v), 3) for v in controls.voicing[0].cpu()],
        "summary": {"synth": param.config.kind, **controls.summary()},
    }

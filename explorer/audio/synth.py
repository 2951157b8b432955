"""A differentiable harmonic-plus-noise synthesiser: the parameterisation of audio dreams that can
only produce plausible sound.

A free spectrogram lets the optimiser write any pattern of magnitudes, and the easiest way to
make a network say "speech" turns out to be broadband noise with clicks: an adversarial example,
not a sound anyone would recognise. Here the optimiser instead moves the knobs of a source–filter
synthesiser (in the spirit of DDSP, Engel et al. 2020, and Klatt's cascade formant synthesiser):

* a **fundamental** f0(t) inside a voice or instrument range, so every voiced sound is periodic:
  a smooth contour for the voice (log-f0 knots every 50 ms, linearly interpolated), a pitch held
  per struck note for the instrument;
* **harmonics** k·f0 (k = 1…K, silent wherever they could pass 0.9·Nyquist: band-limited, no
  aliasing) whose amplitudes follow either a *voice* source–filter model — a glottal spectral tilt
  k^−tilt times the magnitude response of a cascade of four formant resonators F1…F4 with their
  bandwidths, all inside human vocal-tract ranges — or, for the *instrument*, three voices of struck
  notes (velocity, decay, a timbre per note whose upper harmonics die away first);
* **filtered noise** (breath, frication) whose spectral envelope is a few smooth mel-spaced bands,
  held to at most a tenth of the harmonic energy;
* a **loudness** envelope and a **voicing** mix (harmonic power share) every 10 ms.

All controls go through sigmoids into their ranges, so any parameter value is a legal sound. The
module renders B waveforms; :mod:`explorer.audio.dream` turns them into each network's input
(Silero: its STFT; musicnn: its log-mel) inside THE optimisation loop, so gradients reach the
synthesiser's knobs. No Griffin-Lim is needed: the waveform *is* the dream.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..errors import UserInputError
from ..optvis.param import ImageParam
from .spectrogram import STFTConfig, hz_to_mel, istft, mel_to_hz

NOISE_STFT = STFTConfig(n_fft=512, hop=128)  # the noise branch is shaped frame by frame in this STFT
SYNTH_KINDS = ("voice", "instrument")


@dataclass(frozen=True)
class SynthConfig:
    """Ranges and resolutions of the synthesiser (a *voice* or an *instrument*)."""

    kind: str = "voice"
    f0_min: float = 80.0  # Hz: the pitch range every contour stays inside
    f0_max: float = 320.0
    harmonics: int = 96  # at most; those that could pass 0.9·Nyquist are silent
    voices: int = 1  # simultaneous pitch contours (an instrument may play a chord)
    f0_rate: float = 20.0  # pitch knots per second (50 ms): a smooth contour
    control_rate: float = 100.0  # loudness and voicing frames per second (10 ms)
    envelope_rate: float = 50.0  # formant / harmonic-distribution frames per second (20 ms)
    noise_bands: int = 12  # mel-spaced bands of the noise envelope
    loudness_range_db: float = 60.0  # loudness runs from −range to 0 dB (re the clip's peak level)
    # the noise branch may carry at most this share of the harmonic branch's energy over the clip
    # (speech: breath and frication are a small part of its energy; without a budget the optimiser
    # turns a voice into shaped noise, the adversarial sound this synthesiser exists to avoid)
    noise_budget: float = 0.1
    # formant centre ranges (Hz) of F1…F4 and the bandwidth range, for kind="voice"
    formants: tuple[tuple[float, float], ...] = ((250.0, 900.0), (700.0, 2500.0), (1700.0, 3300.0), (3000.0, 4300.0))
    bandwidth: tuple[float, float] = (40.0, 400.0)
    tilt: tuple[float, float] = (0.5, 2.5)  # glottal source: harmonic k has amplitude k^−tilt
    # kind="instrument": each voice plays struck notes on a grid (a pitch held for the note, a
    # velocity, a decay time); its loudness is the sum of the struck envelopes
    note_rate: float = 4.0  # note slots per second per voice
    decay: tuple[float, float] = (0.05, 3.0)  # seconds for a note to fall by 1/e
    damping: tuple[float, float] = (0.0, 20.0)  # harmonic k fades as exp(−(k−1)·damping·t) within a note
    attack_ms: float = 5.0
    # the first and last this many ms are silent (then a 20 ms raised-cosine ramp): a word-shaped sound, with
    # silence around it, rather than a second of continuous voice (0: off)
    edge_silence_ms: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in SYNTH_KINDS:
            raise UserInputError(f"Unknown synthesiser {self.kind!r}: {' or '.join(SYNTH_KINDS)}.")
        if not 20.0 <= self.f0_min < self.f0_max <= 4000.0:
            raise UserInputError("The pitch range must satisfy 20 ≤ f0 min < f0 max ≤ 4000 Hz "
                                 f"(got {self.f0_min:g}–{self.f0_max:g}).")
        if not 1 <= self.harmonics <= 256 or not 1 <= self.voices <= 8 or not 1 <= self.noise_bands <= 64:
            raise UserInputError("The synthesiser needs 1–256 harmonics, 1–8 voices and 1–64 noise bands.")
        if not 0.0 <= self.noise_budget <= 1.0 or not 0.0 <= self.edge_silence_ms <= 1000.0:
            raise UserInputError("The noise budget must lie in [0, 1] and the silent edges in [0, 1000] ms.")


VOICE = SynthConfig()
INSTRUMENT = SynthConfig(kind="instrument", f0_min=55.0, f0_max=1000.0, harmonics=40, voices=3, envelope_rate=25.0)


def preset(kind: str) -> SynthConfig:
    """The default configuration of a synthesiser kind ("voice" or "instrument")."""
    if kind == "voice":
        return VOICE
    if kind == "instrument":
        return INSTRUMENT
    raise UserInputError(f"Unknown synthesiser {kind!r}: {' or '.join(SYNTH_KINDS)}.")


@dataclass
class SynthControls:
    """The synthesiser's controls in physical units (what the page plots and the JSON keeps)."""

    f0_hz: torch.Tensor  # B×voices×frames (control rate)
    loudness_db: torch.Tensor  # B×voices×frames
    voicing: torch.Tensor  # B×frames, harmonic power share in [0, 1]
    formants_hz: torch.Tensor | None = None  # B×4×envelope frames (voice)
    bandwidths_hz: torch.Tensor | None = None
    control_rate: float = 100.0
    envelope_rate: float = 50.0
    extra: dict = field(default_factory=dict)

    def summary(self) -> dict:
        """Plain numbers for JSON: f0 range and median, voiced-frame share, loudness range."""
        f0 = self.f0_hz[0].float().cpu()
        voiced = self.voicing[0].float().cpu()
        out = {"f0_median_hz": round(float(f0.median()), 1), "f0_min_hz": round(float(f0.min()), 1),
               "f0_max_hz": round(float(f0.max()), 1), "mean_voicing": round(float(voiced.mean()), 3)}
        if self.formants_hz is not None:
            out["mean_formants_hz"] = [round(float(v), 0) for v in self.formants_hz[0].float().mean(-1).cpu()]
        return out


EDGE_RAMP_MS = 20.0


def edge_window(samples: int, sample_rate: int, silence_ms: float, device: torch.device | str = "cpu") -> torch.Tensor:
    """0 over the first and last ``silence_ms``, then a raised-cosine ramp of EDGE_RAMP_MS up to 1."""
    edge, ramp = round(silence_ms * sample_rate / 1000), max(1, round(EDGE_RAMP_MS * sample_rate / 1000))
    if samples - 2 * (edge + ramp) < 1:
        raise UserInputError(f"Silent edges of {silence_ms:g} ms leave no sound in a "
                             f"{samples / sample_rate:g} s dream.")
    window = torch.ones(samples)
    rise = 0.5 - 0.5 * torch.cos(torch.pi * (torch.arange(ramp) + 0.5) / ramp)
    window[:edge] = 0.0
    window[samples - edge :] = 0.0
    window[edge : edge + ramp] = rise
    window[samples - edge - ramp : samples - edge] = rise.flip(0)
    return window.to(device)


def _squash(raw: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    return lo + (hi - lo) * torch.sigmoid(raw)


def _unsquash(value: torch.Tensor | float, lo: float, hi: float) -> torch.Tensor:
    value = torch.as_tensor(value, dtype=torch.float32)
    return torch.logit(((value - lo) / (hi - lo)).clamp(1e-4, 1 - 1e-4))


def frame_step(sample_rate: int, rate: float) -> int:
    """Samples between frames of a control running at ``rate`` per second (a whole number)."""
    return max(1, int(round(sample_rate / rate)))


def frames_covering(samples: int, step: int) -> int:
    """Frames at samples 0, step, 2·step, … up to and including the last sample (at least 2)."""
    return max(2, math.ceil((samples - 1) / step) + 1)


def interpolate_frames(x: torch.Tensor, step: float, positions: torch.Tensor) -> torch.Tensor:
    """Linear interpolation of frame values ``x[..., f]`` (frame f sits at sample f·step) at the
    given sample positions: controls → samples, or one frame rate → another."""
    p = (positions.to(x.dtype) / step).clamp(0, x.shape[-1] - 1)
    i0 = p.floor().long().clamp(max=x.shape[-1] - 2)
    a = p - i0.to(p.dtype)
    return x[..., i0] * (1 - a) + x[..., i0 + 1] * a


def formant_response(freqs: torch.Tensor, centres: torch.Tensor, bandwidths: torch.Tensor) -> torch.Tensor:
    """Magnitude response of a cascade of two-pole resonators (Klatt), 1 at 0 Hz.

    freqs: B×K×T; centres, bandwidths: B×J×T → B×K×T. Each resonator peaks near its centre at
    about centre/bandwidth and falls off 12 dB/octave above it, like a vocal-tract formant.
    """
    f = freqs[:, None]  # B×1×K×T
    c, half = centres[:, :, None], bandwidths[:, :, None] / 2  # B×J×1×T
    num = c**2 + half**2
    den = torch.sqrt(((f - c) ** 2 + half**2) * ((f + c) ** 2 + half**2))
    return (num / den).prod(dim=1)


def band_matrix(bins: int, bands: int, sample_rate: int) -> torch.Tensor:
    """bins×bands weights that interpolate per-band values linearly between mel-spaced centres."""
    centres = mel_to_hz(torch.linspace(float(hz_to_mel(0.0)), float(hz_to_mel(sample_rate / 2)), bands).numpy())
    freqs = torch.linspace(0, sample_rate / 2, bins).numpy()
    weights = torch.zeros(bins, bands)
    if bands == 1:
        return weights + 1.0
    for i in range(bins):
        j = int(min(max(0, (centres <= freqs[i]).sum() - 1), bands - 2))
        span = centres[j + 1] - centres[j]
        a = float(min(max((freqs[i] - centres[j]) / span, 0.0), 1.0))
        weights[i, j], weights[i, j + 1] = 1 - a, a
    return weights


class HarmonicPlusNoise(ImageParam):
    """The synthesiser as a parameterisation: ``forward()`` → B×1×1×samples waveform.

    It subclasses :class:`ImageParam` only so THE loop can optimise it like any other
    parameterisation (its "image" is one row of samples); it cannot be set from an image.
    Controls are frames at fixed sample steps (pitch knots every 50 ms, loudness/voicing every
    10 ms, spectral envelope every 20 ms), linearly interpolated between frames.
    """

    def __init__(self, config: SynthConfig, samples: int, sample_rate: int = 16000, batch: int = 1, *,
                 generator: torch.Generator | None = None, device: torch.device | str = "cpu",
                 start: str = "random") -> None:
        super().__init__()
        if samples < NOISE_STFT.n_fft:
            raise UserInputError(f"A synthesised dream needs at least {NOISE_STFT.n_fft} samples.")
        self.config, self.samples, self.sample_rate = config, int(samples), int(sample_rate)
        self.batch, self.channels, self.size = batch, 1, (1, int(samples))
        cfg, v = config, config.voices
        self.knot_step = frame_step(sample_rate, cfg.f0_rate)
        self.control_step = frame_step(sample_rate, cfg.control_rate)
        self.env_step = frame_step(sample_rate, cfg.envelope_rate)
        knots = frames_covering(samples, self.knot_step)
        frames = frames_covering(samples, self.control_step)
        env_frames = frames_covering(samples, self.env_step)

        def randn(*shape: int) -> torch.Tensor:
            gen_device = generator.device if generator is not None else "cpu"
            return torch.randn(*shape, generator=generator, device=gen_device).to(device)

        # pitch: voices spread over the middle of the range, a little randomness along time
        if v > 1:
            spread = torch.linspace(-1.0, 1.0, v, device=device)[None, :, None]
        else:
            spread = torch.zeros(1, 1, 1, device=device)
        if cfg.kind == "instrument":
            self.knot_step = frame_step(sample_rate, cfg.note_rate)  # one pitch per note slot
            slots = math.ceil(samples / self.knot_step)
            self.f0 = torch.nn.Parameter(spread + 0.5 * randn(batch, v, slots))
            # every note knob starts in the middle of its range (a sustained, mellow sound), plus noise
            self.velocity = torch.nn.Parameter(0.5 * randn(batch, v, slots))
            self.decay = torch.nn.Parameter(0.3 * randn(batch, v, slots))
        else:
            self.f0 = torch.nn.Parameter(spread + 0.3 * randn(batch, v, knots))
            loud0 = -6.0 if start == "silence" else 2.0
            loud_start = torch.full((batch, v, frames), loud0, device=device)
            self.loudness = torch.nn.Parameter(loud_start + 0.1 * randn(batch, v, frames))
        self.frames = frames
        self.voicing = torch.nn.Parameter(0.1 * randn(batch, frames))  # half voiced, half noise
        self.noise_bands = torch.nn.Parameter(0.1 * randn(batch, cfg.noise_bands, frames))
        if cfg.kind == "voice":
            # a neutral vowel (schwa: 500, 1500, 2500, 3600 Hz) with moderate bandwidths
            neutral = torch.tensor([500.0, 1500.0, 2500.0, 3600.0, 4500.0])[: len(cfg.formants)]
            raw = torch.stack([_unsquash(n, lo, hi) for n, (lo, hi) in zip(neutral, cfg.formants)]).to(device)
            self.formants = torch.nn.Parameter(raw[None, :, None] + 0.1 * randn(batch, len(cfg.formants), env_frames))
            self.bandwidths = torch.nn.Parameter(
                _unsquash(120.0, *cfg.bandwidth).to(device) + 0.1 * randn(batch, len(cfg.formants), env_frames))
            self.tilt = torch.nn.Parameter(_unsquash(1.2, *cfg.tilt).to(device) + 0.1 * randn(batch, 1, env_frames))
        else:
            # a timbre per note (a distribution over harmonics), starting as a 1/k rolloff
            k = torch.arange(1, cfg.harmonics + 1, device=device, dtype=torch.float32)
            slots = self.f0.shape[-1]
            self.harmonic_logits = torch.nn.Parameter(
                (-torch.log(k))[None, None, :, None].expand(batch, v, -1, slots).clone()
                + 0.1 * randn(batch, v, cfg.harmonics, slots))
            self.damping = torch.nn.Parameter(0.3 * randn(batch, v, slots))
        self.register_buffer("band_weights", band_matrix(NOISE_STFT.bins, cfg.noise_bands, sample_rate).to(device))
        noise_frames = NOISE_STFT.frames(self.samples)
        excitation = torch.complex(randn(batch, NOISE_STFT.bins, noise_frames),
                                   randn(batch, NOISE_STFT.bins, noise_frames))
        self.register_buffer("excitation", excitation / math.sqrt(2))
        with torch.no_grad():  # unit-RMS white noise from a flat envelope, whatever the STFT
            flat = istft(self.excitation, NOISE_STFT, self.samples)
            self.noise_scale = float(1.0 / flat.std().clamp(min=1e-8))
        self.edge_window = edge_window(self.samples, sample_rate, cfg.edge_silence_ms, device) \
            if cfg.edge_silence_ms else None

    # ---- controls in physical units -----------------------------------------------------------
    def _log_f0(self) -> torch.Tensor:
        cfg = self.config
        return _squash(self.f0, math.log(cfg.f0_min), math.log(cfg.f0_max))  # B×V×knots

    def log_f0_at(self, positions: torch.Tensor) -> torch.Tensor:
        """log f0 at sample positions, B×V×len: a smooth contour (voice) or held per note (instrument)."""
        if self.config.kind == "instrument":
            slot = torch.div(positions, self.knot_step, rounding_mode="floor").clamp(max=self.f0.shape[-1] - 1)
            return self._log_f0()[..., slot]
        return interpolate_frames(self._log_f0(), self.knot_step, positions)

    def amplitude(self) -> torch.Tensor:
        """Linear amplitude per voice at the control frames, B×V×frames."""
        cfg = self.config
        if cfg.kind != "instrument":
            return 10 ** (_squash(self.loudness, -cfg.loudness_range_db, 0.0) / 20)
        dev = self.f0.device
        t = torch.arange(self.frames, device=dev, dtype=torch.float32) * (self.control_step / self.sample_rate)
        onsets = torch.arange(self.f0.shape[-1], device=dev, dtype=torch.float32) * (self.knot_step / self.sample_rate)
        since = t[:, None] - onsets[None, :]  # frames×slots, seconds since each onset
        attack = (since / (cfg.attack_ms / 1000) + 1).clamp(0.0, 1.0)  # reaches 1 at the onset frame
        tau = _squash(self.decay, *cfg.decay)[..., None, :]  # B×V×1×slots
        struck = attack * torch.exp(-since.clamp(min=0) / tau)  # B×V×frames×slots
        return (struck * torch.sigmoid(self.velocity)[..., None, :]).sum(-1) + 1e-4

    def controls(self) -> SynthControls:
        cfg = self.config
        dev = self.f0.device
        at_frames = torch.arange(self.frames, device=dev) * self.control_step
        out = SynthControls(
            f0_hz=torch.exp(self.log_f0_at(at_frames)),
            loudness_db=20 * torch.log10(self.amplitude()),
            voicing=torch.sigmoid(self.voicing),
            control_rate=self.sample_rate / self.control_step, envelope_rate=self.sample_rate / self.env_step,
        )
        if cfg.kind == "voice":
            out.formants_hz = self._formants()
            out.bandwidths_hz = _squash(self.bandwidths, *cfg.bandwidth)
        return out

    def control_variation(self) -> torch.Tensor:
        """Total variation per second of the loudness (in units of the loudness range) and of the voicing mix, B.

        As a penalty it is what a smooth-but-sharp envelope needs: a step (an onset, a closure) costs its height
        once, whatever the frame spacing, while frame-to-frame flutter costs at every frame — so a fine control grid
        can keep sharp edges without turning a voice rough."""
        loud_db = 20 * torch.log10(self.amplitude().clamp(min=1e-8)) / self.config.loudness_range_db  # B×V×frames
        loud = (loud_db[..., 1:] - loud_db[..., :-1]).abs().sum(-1).mean(1)
        voicing = torch.sigmoid(self.voicing)
        mix = (voicing[..., 1:] - voicing[..., :-1]).abs().sum(-1)
        return (loud + mix) / (self.samples / self.sample_rate)

    def _formants(self) -> torch.Tensor:
        return torch.stack([_squash(self.formants[:, j], lo, hi) for j, (lo, hi) in enumerate(self.config.formants)], 1)

    def harmonic_shape(self, f0_env: torch.Tensor, harmonics: int) -> torch.Tensor:
        """Relative amplitudes of harmonics 1…``harmonics`` at each envelope frame, B×V×K×frames:
        glottal tilt × formant cascade (voice) or a softmax distribution (instrument)."""
        cfg = self.config
        k = torch.arange(1, harmonics + 1, device=f0_env.device, dtype=f0_env.dtype)
        if cfg.kind == "voice":
            tilt = _squash(self.tilt, *cfg.tilt)  # B×1×T
            source = torch.exp(-tilt[:, :, None, :] * torch.log(k)[None, None, :, None])  # B×1×K×T
            freqs = k[None, :, None] * f0_env[:, 0, None, :]  # B×K×T
            return source * formant_response(freqs, self._formants(), _squash(self.bandwidths, *cfg.bandwidth))[:, None]
        at = torch.arange(f0_env.shape[-1], device=f0_env.device) * self.env_step
        slot = torch.div(at, self.knot_step, rounding_mode="floor").clamp(max=self.f0.shape[-1] - 1)
        # within a note the upper harmonics die away faster than the lower ones (a struck string)
        since = ((at - slot * self.knot_step).to(f0_env.dtype) / self.sample_rate)  # seconds into the note slot
        damping = _squash(self.damping, *cfg.damping)[..., slot]  # B×V×T, 1/s per harmonic number
        fade = torch.exp(-(k - 1)[None, None, :, None] * (damping * since)[:, :, None, :])
        return torch.softmax(self.harmonic_logits, dim=2)[:, :, :harmonics][..., slot] * fade

    # ---- rendering ---------------------------------------------------------------------------
    def forward(self) -> torch.Tensor:
        cfg, n, L = self.config, self.samples, self.env_step
        dev = self.f0.device
        b, v = self.f0.shape[:2]
        env_frames = frames_covering(n, L)
        span = (env_frames - 1) * L  # whole envelope segments cover every sample
        f0_samples = torch.exp(self.log_f0_at(torch.arange(span, device=dev)))  # B×V×span
        f0_env = torch.exp(self.log_f0_at(torch.arange(env_frames, device=dev) * L))
        # phase in float64 (seconds of cumulative sum), wrapped before it is multiplied by k
        phase = torch.cumsum(f0_samples.double() * (2 * math.pi / self.sample_rate), dim=-1)
        phase = torch.remainder(phase, 2 * math.pi).to(f0_samples.dtype)

        # band limit: harmonic k is silent in a segment if k·f0 could pass 0.9·Nyquist anywhere in it
        nyquist = self.sample_rate / 2
        seg_f0_max = f0_samples.reshape(b, v, env_frames - 1, L).amax(-1)  # B×V×S
        harmonics = max(1, min(cfg.harmonics, int(0.9 * nyquist / float(seg_f0_max.min().detach()))))
        k = torch.arange(1, harmonics + 1, device=dev, dtype=phase.dtype)
        audible = ((0.9 * nyquist - k[None, None, :, None] * seg_f0_max[:, :, None]) / (0.1 * nyquist)).clamp(0.0, 1.0)
        shape = self.harmonic_shape(f0_env, harmonics)  # B×V×K×F (V broadcast for the voice)
        shape = shape.expand(b, v, -1, -1)
        # per segment: amplitudes at its two ends, masked, each end normalised to unit power
        ends = torch.stack([shape[..., :-1], shape[..., 1:]], dim=-1) * audible[..., None]  # B×V×K×S×2
        ends = ends / ends.pow(2).sum(2, keepdim=True).clamp(min=1e-12).sqrt()
        # one (L×K)·(K×2) product per segment instead of a K×samples amplitude array
        sines = torch.sin(phase.reshape(b, v, env_frames - 1, L, 1) * k)  # B×V×S×L×K
        both = sines @ ends.permute(0, 1, 3, 2, 4)  # B×V×S×L×2
        ramp = torch.arange(L, device=dev, dtype=phase.dtype) / L
        harmonic = (both[..., 0] * (1 - ramp) + both[..., 1] * ramp).reshape(b, v, span)[..., :n] * math.sqrt(2)

        positions = torch.arange(n, device=dev)
        loud = self.amplitude()  # B×V×frames
        voicing = torch.sigmoid(self.voicing)  # B×frames
        gain_h = interpolate_frames(loud * voicing[:, None].sqrt(), self.control_step, positions)  # B×V×N
        wav = (harmonic * gain_h).sum(1) / math.sqrt(v)

        # noise: a fixed complex-Gaussian excitation shaped by the band envelope, per STFT frame
        noise_frames = self.excitation.shape[-1]
        at_noise = torch.arange(noise_frames, device=dev) * NOISE_STFT.hop
        log_env = torch.einsum("fb,nbt->nft", self.band_weights,
                               interpolate_frames(self.noise_bands, self.control_step, at_noise))
        env = torch.exp(log_env)
        env = env / env.pow(2).mean(1, keepdim=True).clamp(min=1e-12).sqrt()  # unit power per frame
        noise_level = loud.pow(2).mean(1).sqrt() * (1 - voicing).clamp(min=0).sqrt()
        noise_gain = interpolate_frames(noise_level, self.control_step, at_noise)
        noise = istft(self.excitation * (env * noise_gain[:, None]), NOISE_STFT, n) * self.noise_scale
        # the energy budget: scale the noise down (never up) to at most noise_budget × harmonic energy
        allowed = cfg.noise_budget * wav.pow(2).sum(-1, keepdim=True)
        noise = noise * (allowed / noise.pow(2).sum(-1, keepdim=True).clamp(min=1e-12)).clamp(max=1.0).sqrt()
        out = wav + noise if self.edge_window is None else (wav + noise) * self.edge_window
        return out[:, None, None]

    def waveform(self) -> torch.Tensor:
        """B×samples."""
        return self()[:, 0, 0]


# ---- robustness: what happens to the sound between the synthesiser and the listener ----------
def tape_speed(wav: torch.Tensor, speed: float) -> torch.Tensor:
    """B×N played ``speed`` times as fast (a tape running fast or slow), same length out.

    Pitch, formants (vocal-tract length) and rate move together, which is roughly how one word
    differs between speakers. Linear interpolation, so gradients flow to the samples; the result is
    cropped, or padded with silence at the end, to N samples (the length the network reads).
    """
    if speed == 1.0:
        return wav
    n = wav.shape[-1]
    new_length = max(2, int(round(n / speed)))
    resampled = F.interpolate(wav[:, None], size=new_length, mode="linear", align_corners=True)[:, 0]
    return F.pad(resampled, (0, max(0, n - new_length)))[:, :n]


@dataclass(frozen=True)
class WaveformRobustness:
    """Random changes a written WAV may go through, applied to B×1×1×N renders in the loop.

    The render is peak-normalised as the saved file will be (the gain is treated as a constant),
    then: a random gain of ± ``gain_db``, a random playback speed of ± ``speed_pct`` percent (a
    tape running slightly fast or slow), a random spectral tilt of ± ``tilt_db`` per octave, a
    random delay of up to ``shift_ms`` (so no network framing is relied on), optionally ``masks`` silenced spans of
    up to ``mask_ms`` each (a dropout in the channel, as the word net's SpecAugment time masks: a dream must not rest
    on one moment), and white noise ``noise_db`` below the peak (16-bit quantisation and playback are far quieter).
    Returns B×N.
    """

    gain_db: float = 6.0
    shift_ms: float = 8.0
    noise_db: float = -50.0
    tilt_db: float = 3.0  # random spectral tilt, ± dB per octave around 1 kHz (a different microphone or speaker)
    speed_pct: float = 2.0  # random playback speed (pitch and tempo together), ± percent
    mask_ms: float = 0.0  # silenced spans of up to this length (0: none)
    masks: int = 2
    peak_dbfs: float = -1.0
    sample_rate: int = 16000

    def __call__(self, render: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        wav = render.reshape(render.shape[0], -1)
        dev = wav.device
        gen_dev = generator.device if generator is not None else dev
        peak = wav.detach().abs().amax(-1, keepdim=True).clamp(min=1e-8)
        wav = wav * (10 ** (self.peak_dbfs / 20) / peak)
        if self.gain_db:
            shift_db = (torch.rand(wav.shape[0], 1, generator=generator, device=gen_dev).to(dev) * 2 - 1) * self.gain_db
            wav = wav * 10 ** (shift_db / 20)
        if self.speed_pct:
            speed = 1 + (float(torch.rand((), generator=generator, device=gen_dev)) * 2 - 1) * self.speed_pct / 100
            wav = tape_speed(wav, speed)
        if self.tilt_db:
            slope = (torch.rand(wav.shape[0], 1, generator=generator, device=gen_dev).to(dev) * 2 - 1) * self.tilt_db
            freqs = torch.fft.rfftfreq(wav.shape[-1], 1.0 / self.sample_rate, device=dev).clamp(min=50.0)
            eq = 10 ** (slope * torch.log2(freqs / 1000.0) / 20)  # B×bins
            wav = torch.fft.irfft(torch.fft.rfft(wav) * eq, n=wav.shape[-1])
        max_shift = int(round(self.shift_ms * self.sample_rate / 1000))
        if max_shift > 0:
            delay = int(torch.randint(0, max_shift + 1, (1,), generator=generator, device=gen_dev))
            wav = F.pad(wav, (delay, 0))[:, : wav.shape[-1]]
        longest = int(round(self.mask_ms * self.sample_rate / 1000))
        if longest > 0:
            n = wav.shape[-1]
            at = torch.arange(n, device=dev)
            keep = torch.ones_like(wav)
            for _ in range(self.masks):
                length = torch.randint(0, longest + 1, (wav.shape[0], 1), generator=generator, device=gen_dev).to(dev)
                start = (torch.rand(wav.shape[0], 1, generator=generator, device=gen_dev).to(dev) * (n - length)).long()
                keep = keep * ~((at >= start) & (at < start + length))
            wav = wav * keep
        if self.noise_db is not None and self.noise_db > -120:
            noise = torch.randn(wav.shape, generator=generator, device=gen_dev).to(dev)
            wav = wav + noise * 10 ** ((self.noise_db + self.peak_dbfs) / 20)
        return wav


# ---- starting from a clip: analysis by synthesis --------------------------------------------
FIT_RESOLUTIONS = (STFTConfig(n_fft=256, hop=64), STFTConfig(n_fft=1024, hop=256))


def spectral_distance(render: torch.Tensor, clip: torch.Tensor) -> torch.Tensor:
    """Per-item mean |log-magnitude difference| over two STFT resolutions (B×N vs 1×N), both
    peak-normalised: how far a render is from sounding like the clip."""
    from .spectrogram import stft

    def norm(x: torch.Tensor) -> torch.Tensor:
        return x / x.detach().abs().amax(-1, keepdim=True).clamp(min=1e-8)

    render, clip = norm(render), norm(clip)
    total = render.new_zeros(render.shape[0])
    for cfg in FIT_RESOLUTIONS:
        floor = cfg.full_scale * 1e-3  # −60 dB re a full-scale sine: quieter detail does not count
        a = torch.log(stft(render, cfg).abs() + floor)
        b = torch.log(stft(clip, cfg).abs() + floor)
        total = total + (a - b).abs().flatten(1).mean(1)
    return total / len(FIT_RESOLUTIONS)


def fit_to_clip(param: HarmonicPlusNoise, clip: torch.Tensor, *, steps: int = 100, lr: float = 0.1,
                generator: torch.Generator | None = None, should_stop=None):
    """Move the synthesiser's knobs until it sounds like ``clip`` (mono, its rate and length), with
    THE loop; the dream then starts from this imitation instead of from random knobs."""
    from ..optvis.optimise import ImageHandling, Progress, Schedule, optimise

    target = clip.reshape(1, -1).to(param.excitation.device)

    def score(render: torch.Tensor, transformed: torch.Tensor) -> torch.Tensor:
        return -spectral_distance(render.reshape(render.shape[0], -1), target)

    return optimise(param, score, Schedule(steps=steps, lr=lr), handling=ImageHandling(generator=generator),
                    progress=Progress(should_stop=should_stop))

"""STFT, inverse STFT, mel filterbank and Griffin-Lim, in plain torch (torchaudio is unusable here).

Framing is explicit: ``pad_left`` samples are added before the first frame (``n_fft // 2`` gives
librosa's centred frames; Silero VAD uses 64), so the forward and inverse transforms agree on
where every frame sits. Everything is differentiable and runs on the waveform's device.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class STFTConfig:
    """A short-time Fourier transform: frame size, hop and where the first frame starts."""

    n_fft: int
    hop: int
    pad_left: int | None = None  # None: n_fft // 2 (centred frames)
    pad_mode: str = "reflect"  # how the edges are padded: "reflect" or "constant"

    @property
    def left(self) -> int:
        return self.n_fft // 2 if self.pad_left is None else int(self.pad_left)

    @property
    def bins(self) -> int:
        return self.n_fft // 2 + 1

    @property
    def right_min(self) -> int:
        """Right padding that keeps the last sample away from the window's vanishing tail."""
        return max(self.n_fft - self.hop - self.left, 0)

    def frames(self, samples: int) -> int:
        """Frames covering ``samples`` samples (Silero: 4 per 512-sample chunk)."""
        return 1 + max(math.ceil((samples + self.left + self.right_min - self.n_fft) / self.hop), 0)

    def samples(self, frames: int) -> int:
        """Samples a spectrogram of ``frames`` frames stands for (inverse of :meth:`frames` on whole hops)."""
        return (frames - 1) * self.hop + self.n_fft - self.left - self.right_min

    def window(self, device: torch.device | str = "cpu") -> torch.Tensor:
        return torch.hann_window(self.n_fft, periodic=True, device=device)

    @property
    def full_scale(self) -> float:
        """Magnitude of a full-scale sine in one bin (sum of the Hann window / 2)."""
        return self.n_fft / 4.0


def _pad(wav: torch.Tensor, cfg: STFTConfig) -> torch.Tensor:
    frames = cfg.frames(wav.shape[-1])
    right = (frames - 1) * cfg.hop + cfg.n_fft - cfg.left - wav.shape[-1]
    left = cfg.left
    x = wav[:, None]
    if cfg.pad_mode == "reflect":
        # reflect needs pad < length; fall back to zeros for very short signals
        if max(left, right) < wav.shape[-1]:
            return F.pad(x, (left, max(right, 0)), mode="reflect")[:, 0]
    return F.pad(x, (left, max(right, 0)))[:, 0]


def stft(wav: torch.Tensor, cfg: STFTConfig) -> torch.Tensor:
    """Complex STFT, B×T (or T) -> B×bins×frames."""
    squeeze = wav.ndim == 1
    wav = wav[None] if squeeze else wav
    padded = _pad(wav, cfg)
    spec = torch.stft(padded, cfg.n_fft, cfg.hop, window=cfg.window(wav.device), center=False, return_complex=True)
    return spec[0] if squeeze else spec


def istft(spec: torch.Tensor, cfg: STFTConfig, length: int | None = None) -> torch.Tensor:
    """Inverse of :func:`stft` by weighted overlap-add, B×bins×frames -> B×length."""
    squeeze = spec.ndim == 2
    spec = spec[None] if squeeze else spec
    window = cfg.window(spec.device)
    frames = spec.shape[-1]
    pieces = torch.fft.irfft(spec, n=cfg.n_fft, dim=1) * window[None, :, None]  # B×n_fft×frames
    total = (frames - 1) * cfg.hop + cfg.n_fft
    signal = F.fold(pieces, (1, total), (1, cfg.n_fft), stride=(1, cfg.hop))[:, 0, 0]
    norm = F.fold((window**2)[None, :, None].expand(1, -1, frames), (1, total), (1, cfg.n_fft),
                  stride=(1, cfg.hop))[:, 0, 0]
    signal = signal / norm.clamp(min=1e-8)
    length = cfg.samples(frames) if length is None else length
    out = signal[:, cfg.left : cfg.left + length]
    if out.shape[-1] < length:
        out = F.pad(out, (0, length - out.shape[-1]))
    return out[0] if squeeze else out


def griffin_lim(magnitude: torch.Tensor, cfg: STFTConfig, *, n_iter: int = 64, momentum: float = 0.99,
                length: int | None = None, init_phase: torch.Tensor | None = None,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """Waveform whose STFT magnitude approaches ``magnitude`` (fast Griffin-Lim, Perraudin et al. 2013).

    ``momentum`` (0: classic Griffin-Lim) extrapolates each projection; ``init_phase`` (e.g. the
    original clip's phase) replaces the random start.
    """
    squeeze = magnitude.ndim == 2
    mag = (magnitude[None] if squeeze else magnitude).detach()
    length = cfg.samples(mag.shape[-1]) if length is None else length
    if init_phase is not None:
        angles = torch.polar(torch.ones_like(mag), init_phase.reshape(mag.shape).to(mag.device))
    else:
        rand = torch.rand(mag.shape, generator=generator, device=mag.device)
        angles = torch.polar(torch.ones_like(mag), 2 * math.pi * rand)
    previous = torch.zeros_like(angles)
    alpha = momentum / (1 + momentum)
    with torch.no_grad():
        for _ in range(max(0, n_iter)):
            wav = istft(mag * angles, cfg, length)
            rebuilt = stft(wav, cfg)
            angles = rebuilt - alpha * previous
            angles = angles / angles.abs().clamp(min=1e-12)
            previous = rebuilt
        wav = istft(mag * angles, cfg, length)
    return wav[0] if squeeze else wav


def spectral_convergence(target: torch.Tensor, estimate: torch.Tensor) -> float:
    """‖|S| − |Ŝ|‖_F / ‖|S|‖_F: 0 for a perfect reconstruction of the magnitudes."""
    return float((target - estimate).norm() / target.norm().clamp(min=1e-12))


# ---- mel ------------------------------------------------------------------------------------------
def hz_to_mel(hz: np.ndarray | float) -> np.ndarray:
    """Slaney's mel scale (librosa's default): linear below 1 kHz, logarithmic above."""
    hz = np.asarray(hz, dtype=np.float64)
    f_sp, min_log_hz, min_log_mel, logstep = 200.0 / 3, 1000.0, 15.0, math.log(6.4) / 27.0
    mel = hz / f_sp
    return np.where(hz >= min_log_hz, min_log_mel + np.log(np.maximum(hz, 1e-10) / min_log_hz) / logstep, mel)


def mel_to_hz(mel: np.ndarray | float) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    f_sp, min_log_hz, min_log_mel, logstep = 200.0 / 3, 1000.0, 15.0, math.log(6.4) / 27.0
    return np.where(mel >= min_log_mel, min_log_hz * np.exp(logstep * (mel - min_log_mel)), f_sp * mel)


def mel_filterbank(sr: int, n_fft: int, n_mels: int, fmin: float = 0.0, fmax: float | None = None) -> np.ndarray:
    """n_mels × (n_fft//2+1) triangular filters, Slaney-normalised (equal area), as librosa builds them."""
    fmax = sr / 2.0 if fmax is None else fmax
    fft_freqs = np.linspace(0, sr / 2.0, n_fft // 2 + 1)
    mel_f = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
    fdiff = np.diff(mel_f)
    ramps = mel_f[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_f[2 : n_mels + 2] - mel_f[:n_mels]))[:, None]
    return weights.astype(np.float32)


# ---- dB -------------------------------------------------------------------------------------------
def magnitude_to_db(magnitude: torch.Tensor, ref: float = 1.0, floor_db: float = -120.0) -> torch.Tensor:
    return (20 * torch.log10(magnitude.clamp(min=1e-12) / ref)).clamp(min=floor_db)


def db_to_magnitude(db: torch.Tensor, ref: float = 1.0) -> torch.Tensor:
    return ref * torch.pow(10.0, db / 20.0)

"""Audio in and out: read any WAV/FLAC/OGG soundfile can, as mono float32 at the wanted rate;
write safe-loudness WAVs (peak −1 dBFS, short fades)."""

from __future__ import annotations

import io
import math
from fractions import Fraction
from pathlib import Path

import numpy as np
import soundfile as sf

from ..errors import UserInputError
from ..files import atomic_write

MAX_SECONDS = 30.0
PEAK_DBFS = -1.0
FADE_SECONDS = 0.01


class AudioInputError(UserInputError):
    """The audio could not be read, is empty or too long."""


def resample(audio: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """Polyphase resampling (scipy.signal.resample_poly) by the exact rational ratio."""
    if from_rate == to_rate:
        return audio.astype(np.float32, copy=False)
    from scipy.signal import resample_poly

    ratio = Fraction(int(to_rate), int(from_rate))
    return resample_poly(audio, ratio.numerator, ratio.denominator).astype(np.float32)


def load_audio(source: "str | Path | bytes | io.IOBase", sample_rate: int = 16000, max_seconds: float = MAX_SECONDS, name: str | None = None) -> np.ndarray:
    """Mono float32 samples at ``sample_rate`` from a path, bytes or file object.

    Multichannel audio is mixed down; files longer than ``max_seconds`` are refused (with the
    duration in the message) rather than silently cut; unreadable or empty files raise
    :class:`AudioInputError`.
    """
    label = name or (str(source) if isinstance(source, (str, Path)) else getattr(source, "name", "the upload"))
    if isinstance(source, (str, Path)) and not Path(source).is_file():
        raise AudioInputError(f"Audio file {label} not found.")
    handle = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source
    try:
        with sf.SoundFile(handle) as f:
            rate, frames = f.samplerate, f.frames
            if frames <= 0:
                raise AudioInputError(f"{label} contains no audio samples.")
            if frames / rate > max_seconds + 1e-6:
                raise AudioInputError(f"{label} is {frames / rate:.1f} s long; the limit is {max_seconds:g} s. Trim it first.")
            data = f.read(dtype="float32", always_2d=True)
    except AudioInputError:
        raise
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
        raise AudioInputError(f"Could not read {label} as audio (WAV, FLAC or OGG): {exc}") from None
    if data.size == 0:
        raise AudioInputError(f"{label} contains no audio samples.")
    mono = data.mean(axis=1)
    if not np.isfinite(mono).all():
        raise AudioInputError(f"{label} contains invalid (NaN/inf) samples.")
    return resample(mono, rate, sample_rate)


def safe_loudness(audio: np.ndarray, sample_rate: int, peak_dbfs: float = PEAK_DBFS, fade_seconds: float = FADE_SECONDS) -> np.ndarray:
    """Short raised-cosine fades in and out, then peak-normalise to ``peak_dbfs`` (silence stays silent)."""
    out = np.asarray(audio, dtype=np.float32).copy()
    fade = min(int(round(fade_seconds * sample_rate)), len(out) // 2)
    if fade > 0:
        ramp = (0.5 - 0.5 * np.cos(np.linspace(0, math.pi, fade))).astype(np.float32)
        out[:fade] *= ramp
        out[-fade:] *= ramp[::-1]
    peak = float(np.abs(out).max()) if out.size else 0.0
    if peak > 1e-9:
        out *= (10 ** (peak_dbfs / 20.0)) / peak
    return out


def wav_bytes(audio: np.ndarray, sample_rate: int) -> bytes:
    """16-bit PCM WAV bytes (for st.audio and downloads)."""
    buffer = io.BytesIO()
    sf.write(buffer, np.clip(audio, -1, 1), sample_rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def save_wav(audio: np.ndarray, path: str | Path, sample_rate: int) -> Path:
    """Write a 16-bit WAV atomically."""
    return atomic_write(path, wav_bytes(audio, sample_rate))

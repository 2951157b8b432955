"""Audio in and out: read any WAV/FLAC/OGG soundfile can, as mono float32 at the wanted rate;
write safe-loudness WAVs (peak −1 dBFS, short fades)."""

from __future__ import annotations

import io
import math
import struct
from fractions import Fraction
from pathlib import Path

import numpy as np
import soundfile as sf

from .. import limits
from ..errors import UserInputError
from ..files import atomic_write, read_user_file

MAX_SECONDS = limits.MAX_AUDIO_SECONDS
PEAK_DBFS = -1.0
FADE_SECONDS = 0.01


class AudioInputError(UserInputError):
    """The audio could not be read, is empty or too long."""


def resample(audio: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """Polyphase resampling (scipy.signal.resample_poly) by the rational ratio ``to_rate / from_rate``.

    The ratio's terms are kept ≤ :data:`explorer.limits.MAX_RESAMPLE_TERMS` (the nearest such
    fraction; for 44 101 Hz → 16 kHz the pitch moves by < 0.0001 %): the polyphase filter has
    ~20 × max(up, down) taps, so an odd rate like 9 999 991 Hz must not become a 200 M-tap filter.
    """
    if from_rate == to_rate:
        return audio.astype(np.float32, copy=False)
    from scipy.signal import resample_poly

    limits.check("sample_rate", from_rate, what="The sound's sample rate")
    limits.check("sample_rate", to_rate, what="The target sample rate")
    ratio = Fraction(int(to_rate), int(from_rate)).limit_denominator(limits.MAX_RESAMPLE_TERMS)
    return resample_poly(audio, ratio.numerator, ratio.denominator).astype(np.float32)


def _libsndfile_reason(exc: Exception) -> str:
    """libsndfile's reason without its 'Error opening <_io.BytesIO object at 0x…>: ' prefix."""
    text = str(exc)
    return text.rsplit(": ", 1)[-1].strip().rstrip(".") if ": " in text else text


def wav_header(data: bytes, total_length: int | None = None) -> dict | None:
    """Sample rate, channels, bytes per frame and the data chunk's declared and present sizes of a RIFF/WAVE
    file, from its header alone (None when ``data`` is not a WAV). ``data`` may be just the file's start
    when ``total_length`` gives the whole file's size. Lets a truncated file be named as such."""
    total = len(data) if total_length is None else int(total_length)
    if len(data) < 12 or data[:4] not in (b"RIFF", b"RIFX") or data[8:12] != b"WAVE":
        return None
    order = "<" if data[:4] == b"RIFF" else ">"
    info: dict = {}
    pos = 12
    while pos + 8 <= len(data):
        chunk, size = data[pos : pos + 4], struct.unpack(order + "I", data[pos + 4 : pos + 8])[0]
        body = pos + 8
        if chunk == b"fmt " and size >= 16 and body + 16 <= len(data):
            _, channels, rate, _, block_align, _ = struct.unpack(order + "HHIIHH", data[body : body + 16])
            info.update(channels=channels, rate=rate, block_align=block_align)
        elif chunk == b"data":
            info.update(declared=size, present=total - body)
            break
        pos = body + size + (size & 1)
    return info


def load_audio(source: "str | Path | bytes | io.IOBase", sample_rate: int = 16000, max_seconds: float = MAX_SECONDS,
               name: str | None = None) -> np.ndarray:
    """Mono float32 samples at ``sample_rate`` from a path, bytes or file object.

    The header is checked first (:mod:`explorer.limits`): the sample rate must lie in
    1 kHz–384 kHz, the length within ``max_seconds`` (refused with the duration in the message,
    never silently cut) and a WAV must hold the data its header announces (a truncated file says
    so). Multichannel audio is mixed down; unreadable or empty files raise :class:`AudioInputError`.
    """
    label = name or (Path(source).name if isinstance(source, (str, Path)) else
                     Path(str(getattr(source, "name", "the uploaded sound"))).name)
    if isinstance(source, (str, Path)):
        path = Path(source).expanduser()
        try:  # the header only (the file may be large); a FIFO or device is refused as what it is
            head, length = read_user_file(path, "Audio file", head=1 << 16), path.stat().st_size
        except UserInputError as exc:
            raise AudioInputError(str(exc)) from None
        return _load(head, length, lambda: sf.SoundFile(str(path)), label, sample_rate, max_seconds)
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
    elif hasattr(source, "read"):
        data = source.read()
    else:
        raise AudioInputError(f"Cannot read a sound from {type(source).__name__}.")
    return _load(data, len(data), lambda: sf.SoundFile(io.BytesIO(data)), label, sample_rate, max_seconds)


def _load(head: bytes, length: int, open_file, label: str, sample_rate: int, max_seconds: float) -> np.ndarray:
    if not length:
        raise AudioInputError(f"{label} is empty (0 bytes): choose a WAV, FLAC or OGG file with sound in it.")
    header = wav_header(head, length)
    if header is not None and header.get("rate") is not None:
        _check_rate(header["rate"], label)
        declared, present, frame = header.get("declared"), header.get("present"), header.get("block_align") or 0
        # declared 0 / 0xFFFFFFFF: length unknown (streams)
        if declared not in (None, 0, 0xFFFFFFFF) and frame and present < declared:
            rate = header["rate"]
            raise AudioInputError(
                f"{label} is truncated: its header announces {declared / frame / rate:.2f} s but the file holds "
                f"{present / frame / rate:.2f} s. Export it again.")
    try:
        with open_file() as f:
            rate, frames = f.samplerate, f.frames
            _check_rate(rate, label)
            if not 1 <= f.channels <= limits.MAX_AUDIO_CHANNELS:
                raise AudioInputError(f"{label} has {f.channels} channels; "
                                      f"at most {limits.MAX_AUDIO_CHANNELS} can be read (they are mixed to mono).")
            if frames <= 0:
                raise AudioInputError(f"{label} contains no audio samples.")
            if frames / rate > max_seconds + 1e-6:
                raise AudioInputError(f"{label} is {frames / rate:.1f} s long; "
                                      f"the limit is {max_seconds:g} s. Trim it first.")
            data_array = f.read(dtype="float32", always_2d=True)
    except AudioInputError:
        raise
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
        raise AudioInputError(
            f"Could not read {label} as audio (WAV, FLAC or OGG): {_libsndfile_reason(exc)}.") from None
    if data_array.size == 0:
        raise AudioInputError(f"{label} contains no audio samples.")
    if not np.isfinite(data_array).all():
        raise AudioInputError(f"{label} contains invalid (NaN/inf) samples.")
    peak = float(np.abs(data_array).max())
    if peak > 1.0:  # a float file beyond full scale (e.g. 1e30): scaled to peak 1 first, so no later sum overflows
        data_array /= peak
    mono = data_array.mean(axis=1)
    return resample(mono, rate, sample_rate)


def _check_rate(rate: int, label: str) -> None:
    if not limits.MIN_SAMPLE_RATE <= int(rate) <= limits.MAX_SAMPLE_RATE:
        raise AudioInputError(f"{label} has a sample rate of {int(rate):,} Hz; only {limits.MIN_SAMPLE_RATE:,}–"
                              f"{limits.MAX_SAMPLE_RATE:,} Hz can be read. Resample it first.")


def safe_loudness(audio: np.ndarray, sample_rate: int, peak_dbfs: float = PEAK_DBFS,
                  fade_seconds: float = FADE_SECONDS) -> np.ndarray:
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

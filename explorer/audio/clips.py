"""Built-in sounds, synthesised in code (no files to ship): tones, chords, a piano-like note,
a drum loop, a chirp and coloured noises. Every clip is mono float32 at the requested rate."""

from __future__ import annotations

from typing import Callable

import numpy as np


def _time(seconds: float, sr: int) -> np.ndarray:
    return np.arange(int(round(seconds * sr)), dtype=np.float64) / sr


def _peak(x: np.ndarray, level: float = 0.5) -> np.ndarray:
    peak = np.abs(x).max()
    return (x * (level / peak) if peak > 0 else x).astype(np.float32)


def tone(seconds: float, sr: int, freq: float = 440.0) -> np.ndarray:
    return _peak(np.sin(2 * np.pi * freq * _time(seconds, sr)))


def chord(seconds: float, sr: int, freqs: tuple[float, ...] = (261.63, 329.63, 392.0)) -> np.ndarray:
    """A sustained major triad with a few harmonics per note."""
    t = _time(seconds, sr)
    x = sum(sum(np.sin(2 * np.pi * f * k * t) / k for k in range(1, 5)) for f in freqs)
    return _peak(x)


def piano(seconds: float, sr: int, notes: tuple[float, ...] = (261.63, 329.63, 392.0, 523.25)) -> np.ndarray:
    """Struck notes with a sharp attack, exponential decay and inharmonic, fast-decaying partials."""
    t_all = _time(seconds, sr)
    out = np.zeros_like(t_all)
    step = seconds / len(notes)
    for i, f in enumerate(notes):
        start = int(i * step * sr)
        t = t_all[: len(t_all) - start]
        note = np.zeros_like(t)
        for k in range(1, 9):
            partial = f * k * np.sqrt(1 + 0.0004 * k * k)  # slight string inharmonicity
            note += np.sin(2 * np.pi * partial * t) * np.exp(-t * (1.5 + 0.8 * k)) / k
        attack = np.minimum(1.0, t / 0.004)
        out[start:] += note * attack
    return _peak(out)


def drums(seconds: float, sr: int, bpm: float = 110.0, seed: int = 0) -> np.ndarray:
    """Kick on beats 1 and 3, snare on 2 and 4, closed hi-hats on every eighth."""
    rng = np.random.default_rng(seed)
    n = int(round(seconds * sr))
    out = np.zeros(n)
    beat = 60.0 / bpm

    def put(start: float, sound: np.ndarray) -> None:
        i = int(start * sr)
        if i < n:
            out[i : i + len(sound)] += sound[: n - i]

    tk = _time(0.35, sr)
    kick = np.sin(2 * np.pi * (50 + 100 * np.exp(-tk * 30)) * tk) * np.exp(-tk * 9)
    ts = _time(0.2, sr)
    snare = (0.6 * rng.standard_normal(len(ts)) + 0.4 * np.sin(2 * np.pi * 190 * ts)) * np.exp(-ts * 20)
    th = _time(0.05, sr)
    hat_noise = rng.standard_normal(len(th))
    hat = np.diff(hat_noise, prepend=0) * np.exp(-th * 80) * 0.3
    b = 0
    while b * beat < seconds:
        put(b * beat, kick if b % 2 == 0 else snare)
        put(b * beat, hat)
        put((b + 0.5) * beat, hat)
        b += 1
    return _peak(out)


def chirp(seconds: float, sr: int, f0: float = 100.0, f1: float = 4000.0) -> np.ndarray:
    """Exponential sweep from f0 to f1."""
    t = _time(seconds, sr)
    k = np.log(f1 / f0) / seconds
    return _peak(np.sin(2 * np.pi * f0 * (np.exp(k * t) - 1) / k))


def noise(seconds: float, sr: int, colour: str = "white", seed: int = 0, level: float = 0.3) -> np.ndarray:
    """White, pink (1/f), brown (1/f²) or blue (f) noise, shaped in the frequency domain."""
    n = int(round(seconds * sr))
    rng = np.random.default_rng(seed)
    spectrum = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1.0 / sr)
    f[0] = f[1] if len(f) > 1 else 1.0
    power = {"white": 0.0, "pink": -1.0, "brown": -2.0, "blue": 1.0}.get(colour)
    if power is None:
        raise ValueError(f"Unknown noise colour {colour!r}: white, pink, brown or blue.")
    x = np.fft.irfft(spectrum * f ** (power / 2), n)
    return _peak(x, level)


def silence(seconds: float, sr: int) -> np.ndarray:
    return np.zeros(int(round(seconds * sr)), dtype=np.float32)


BUILTIN_CLIPS: dict[str, Callable[[float, int], np.ndarray]] = {
    "silence": silence,
    "noise": lambda s, sr: noise(s, sr, "white"),
    "pink_noise": lambda s, sr: noise(s, sr, "pink"),
    "brown_noise": lambda s, sr: noise(s, sr, "brown"),
    "blue_noise": lambda s, sr: noise(s, sr, "blue"),
    "tone": tone,
    "chord": chord,
    "piano": piano,
    "drums": drums,
    "chirp": chirp,
    "quiet": lambda s, sr: noise(s, sr, "pink", level=0.001),
}


def builtin_clip(name: str, seconds: float, sample_rate: int = 16000) -> np.ndarray:
    from .io import AudioInputError

    if name not in BUILTIN_CLIPS:
        raise AudioInputError(f"Unknown built-in clip {name!r}; choose one of {', '.join(BUILTIN_CLIPS)}.")
    if not 0 < seconds <= 30:
        raise AudioInputError(f"Clip length must be between 0 and 30 s (got {seconds:g}).")
    return BUILTIN_CLIPS[name](float(seconds), int(sample_rate))

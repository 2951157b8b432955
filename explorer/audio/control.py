"""The control a dream's judges need: the same judges on random starts of the same
parameterisation, never optimised.

A synthesiser makes voice-like sound from any knobs, so "the judges call the dream voiced" says
little by itself. What the optimisation did is the *difference* between the dreams' scores and
those of random starts (same network, target, parameterisation, length; seeds the dream does not
use), with a bootstrap interval; "the optimisation made it more X" is claimed only where the
interval excludes 0. The closed-set Sphinx verdict is a yes/no per sound: its rates carry exact
Clopper–Pearson intervals as well.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from ..progress import CANCELLED, ProgressCallback, ShouldStop
from ..stats import clopper_pearson
from .judges import Verdict

CONTROL_SEED_OFFSET = 1_000_000  # random starts use seeds the dreams (0, 1, 2, …) do not


def difference(dreams: list[float], starts: list[float], *, level: float = 0.95, resamples: int = 4000,
               seed: int = 0) -> dict:
    """Mean(dreams) − mean(starts) with a percentile-bootstrap interval (each group resampled on its
    own) and the claim it allows: "higher", "lower" or "no difference shown". A single dream is one
    draw, not a mean: it is set against single random starts (not their mean's narrower interval),
    so "higher" needs it to beat (nearly) every start."""
    d, s = np.asarray(dreams, float), np.asarray(starts, float)
    d, s = d[np.isfinite(d)], s[np.isfinite(s)]
    if not len(d) or not len(s):
        return {"dreams": len(d), "starts": len(s), "difference": None, "low": None, "high": None,
                "claim": "not judged", "reason": "no judged dream" if not len(d) else "no judged random start"}
    rng = np.random.default_rng(seed)
    boot_d = d[rng.integers(0, len(d), (resamples, len(d)))].mean(1) if len(d) > 1 else np.full(resamples, d.mean())
    if len(d) == 1:  # one dream vs one random start at a time: the spread a single sound really has
        boot_s = s[rng.integers(0, len(s), resamples)]
    else:
        boot_s = s[rng.integers(0, len(s), (resamples, len(s)))].mean(1) if len(s) > 1 else np.full(resamples, s.mean())
    diffs = boot_d - boot_s
    a = (1 - level) / 2
    low, high = float(np.quantile(diffs, a)), float(np.quantile(diffs, 1 - a))
    claim = "higher" if low > 0 else "lower" if high < 0 else "no difference shown"
    return {"dreams": len(d), "starts": len(s),
            "dream_mean": round(float(d.mean()), 4), "start_mean": round(float(s.mean()), 4),
            "difference": round(float(d.mean() - s.mean()), 4), "low": round(low, 4), "high": round(high, 4),
            "level": level, "claim": claim}


def compare_judges(dream_verdicts: list[dict[str, Verdict]],
                   start_verdicts: list[dict[str, Verdict]]) -> dict[str, dict]:
    """For every judge key: dreams vs random starts (difference, interval, claim); for the Sphinx
    closed-set verdict also both rates with their Clopper–Pearson intervals."""
    keys = [k for k in (dream_verdicts[0] if dream_verdicts else {}) if k != "sphinx_transcript"]
    out = {}
    for key in keys:
        d = [v[key].value for v in dream_verdicts if key in v and v[key].value is not None]
        s = [v[key].value for v in start_verdicts if key in v and v[key].value is not None]
        row = difference(d, s)
        row["label"] = dream_verdicts[0][key].label
        if key == "sphinx_word":
            for name, values in (("dream_rate", d), ("start_rate", s)):
                k, n = int(round(sum(values))), len(values)
                lo, hi = clopper_pearson(k, n)
                row[name] = {"k": k, "n": n, "rate": round(k / n, 4) if n else None,
                             "low": round(lo, 4), "high": round(hi, 4)}
        out[key] = row
    return out


def random_start_judges(settings, n: int, *, device="auto", target=None, callback: ProgressCallback | None = None,
                        should_stop: ShouldStop | None = None) -> list[dict[str, Verdict]] | str:
    """The judges' verdicts on ``n`` random starts of ``settings``' parameterisation: the same
    dream with 0 steps and seeds CONTROL_SEED_OFFSET + i (written to a WAV and read back like a
    dream). For the free spectrogram from noise, each start is a fresh white noise. Returns
    :data:`CANCELLED` when stopped."""
    from .clips import noise
    from .dream import SAMPLE_RATE, dream

    verdicts = []
    for i in range(n):
        if should_stop is not None and should_stop():
            return CANCELLED
        seed = CONTROL_SEED_OFFSET + i
        start_audio = None
        if settings.param != "synth" and settings.start in ("noise",):
            start_audio = noise(settings.seconds, SAMPLE_RATE, seed=seed)
        result = dream(replace(settings, steps=0, seed=seed, control_starts=0), start_audio=start_audio,
                       start_is_clip=start_audio is None, device=device, target=target)
        verdicts.append(result.judges["roundtrip"])
        if callback is not None:
            callback(i + 1, n, None, None)
    return verdicts

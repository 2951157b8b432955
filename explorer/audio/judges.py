"""Independent judges of a sound: measures the dream never saw and cannot have been optimised for.

A dream scored only by the network it was optimised on proves nothing (a speech detector says
0.99 to broadband noise with clicks). These judges look at the written sound instead:

* **Praat's pitch tracker** (``praat-parselmouth``; To Pitch with Praat's defaults: 75–600 Hz,
  autocorrelation) → the *voiced fraction*: the share of analysis frames with a pitch;
* **Praat's harmonicity** (To Harmonicity (cc), defaults) → the *mean harmonics-to-noise ratio*
  in dB over the frames Praat does not call silent (its own "Get mean");
* the **energy share below 3 kHz** of the clip's power spectrum (speech: nearly all of it);
* the **spectral flatness** of the clip's power spectrum (geometric ÷ arithmetic mean; white
  noise ≈ 0.56 for a periodogram, a voice ≈ 0.05);
* for ``music:TAG`` dreams, the **other musicnn tagger** (dreamed on MTT_vgg → judged by
  MTT_musicnn, and vice versa): p(TAG).

A judge that cannot run (a package is missing, the clip is too short or silent) says "not judged"
and why: never a made-up number.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

NOT_JUDGED = "not judged"
LOW_BAND_HZ = 3000.0
PARSELMOUTH_PIN = "praat-parselmouth==0.4.6"
# What the judges say about real (synthetic) speech, for the page's reference column: the espeak-ng
# sentence CALIBRATION_SENTENCE at 16 kHz, measured by benchmarks/audio_judges.py (which prints it
# again on every run, so a drift shows there). White noise: voiced 0.00, HNR −5.8 dB, 37 %, 0.56.
CALIBRATION_SENTENCE = ("The quick brown fox jumps over the lazy dog "
                        "while the children sing a song about the summer rain.")
SPEECH_REFERENCE = {"voiced_fraction": "0.68", "mean_hnr_db": "12.4 dB",
                    "energy_below_3k": "97 %", "spectral_flatness": "0.060",
                    # DNSMOS on the same sentence (issue 19; white noise: SIG 1.20, BAK 1.14, OVRL 1.07)
                    "dnsmos_sig": "3.39", "dnsmos_bak": "3.77", "dnsmos_ovrl": "2.95"}


@dataclass(frozen=True)
class Verdict:
    """One judge's figure on one sound; ``value`` is None when the judge could not run."""

    key: str
    label: str
    value: float | None
    judge: str
    reason: str | None = None
    unit: str = ""
    answer: str | None = None  # a judge that answers in words (Sphinx): what it said
    note: str | None = None  # what the figure is worth (a calibration), shown beside it

    @property
    def judged(self) -> bool:
        return self.value is not None

    def text(self, digits: int = 3) -> str:
        if self.value is None:
            return NOT_JUDGED
        if self.answer is not None:
            return self.answer
        if self.unit == "%":
            return f"{100 * self.value:.0f} %"
        if self.unit:
            return f"{self.value:.1f} {self.unit}"
        return f"{self.value:.{digits}f}"

    def to_dict(self) -> dict:
        out = asdict(self)
        out["value"] = None if self.value is None else round(float(self.value), 4)
        out["text"] = self.text()
        return out


def _not_judged(key: str, label: str, judge: str, reason: str, unit: str = "") -> Verdict:
    return Verdict(key, label, None, judge, reason, unit)


def praat_judges(audio: np.ndarray, sample_rate: int) -> list[Verdict]:
    """Voiced fraction (Praat pitch) and mean HNR in dB (Praat harmonicity), Praat's defaults."""
    pitch_judge, hnr_judge = "Praat pitch tracker (parselmouth)", "Praat harmonicity (parselmouth)"
    try:
        import parselmouth
    except ImportError:
        reason = f"praat-parselmouth is not installed (pip install {PARSELMOUTH_PIN})"
        return [_not_judged("voiced_fraction", "voiced fraction", pitch_judge, reason),
                _not_judged("mean_hnr_db", "mean HNR", hnr_judge, reason, "dB")]
    sound = parselmouth.Sound(np.asarray(audio, dtype=np.float64), sampling_frequency=float(sample_rate))
    out: list[Verdict] = []
    try:
        frequency = sound.to_pitch().selected_array["frequency"]
        out.append(Verdict("voiced_fraction", "voiced fraction", float((frequency > 0).mean()), pitch_judge)
                   if len(frequency) else
                   _not_judged("voiced_fraction", "voiced fraction", pitch_judge, "no pitch frames"))
    except parselmouth.PraatError as exc:
        out.append(_not_judged("voiced_fraction", "voiced fraction", pitch_judge, f"Praat: {str(exc).splitlines()[0]}"))
    try:
        values = sound.to_harmonicity().values[0]
        defined = values[values != -200]  # Praat marks silent frames with −200 dB
        out.append(Verdict("mean_hnr_db", "mean HNR", float(defined.mean()), hnr_judge, unit="dB") if len(defined)
                   else _not_judged("mean_hnr_db", "mean HNR", hnr_judge, "every frame is silent to Praat", "dB"))
    except parselmouth.PraatError as exc:
        out.append(_not_judged("mean_hnr_db", "mean HNR", hnr_judge, f"Praat: {str(exc).splitlines()[0]}", "dB"))
    return out


def spectrum_judges(audio: np.ndarray, sample_rate: int) -> list[Verdict]:
    """Energy share below 3 kHz and spectral flatness of the whole clip's power spectrum."""
    judge = "power spectrum (numpy)"
    x = np.asarray(audio, dtype=np.float64)
    power = np.abs(np.fft.rfft(x)) ** 2 if len(x) else np.zeros(0)
    total = float(power.sum())
    if total <= 0 or not np.isfinite(total):
        reason = "the clip is silent" if len(x) else "the clip is empty"
        return [_not_judged("energy_below_3k", "energy below 3 kHz", judge, reason, "%"),
                _not_judged("spectral_flatness", "spectral flatness", judge, reason)]
    freqs = np.fft.rfftfreq(len(x), 1.0 / sample_rate)
    share = float(power[freqs < LOW_BAND_HZ].sum() / total)
    tiny = total / len(power) * 1e-12  # keeps exact zeros from sending the geometric mean to 0
    flatness = float(np.exp(np.log(power + tiny).mean()) / (power.mean() + tiny))
    return [Verdict("energy_below_3k", "energy below 3 kHz", share, judge, unit="%"),
            Verdict("spectral_flatness", "spectral flatness", flatness, judge)]


def other_tagger(dreamed_on: str) -> str:
    """The musicnn tagger a music dream did NOT see."""
    return "MTT_musicnn" if dreamed_on == "MTT_vgg" else "MTT_vgg"


def tagger_judge(audio: np.ndarray, sample_rate: int, tag: str, dreamed_on: str, device="cpu") -> Verdict:
    """p(tag) from the musicnn tagger the dream was not optimised on (mean over 3 s patches)."""
    import torch

    from ..errors import UserInputError
    from .io import resample

    judge_model = other_tagger(dreamed_on)
    judge = f"musicnn {judge_model} (the tagger the dream never saw)"
    key, label = "other_tagger", f"p({tag}) by {judge_model}"
    try:
        from .musicnn import SAMPLE_RATE, load_music_tagger

        tagger = load_music_tagger(judge_model, device)
        index = tagger.tag_index(tag)
    except (ImportError, UserInputError) as exc:
        return _not_judged(key, label, judge, str(exc))
    wav = torch.from_numpy(resample(np.asarray(audio, dtype=np.float32), sample_rate, SAMPLE_RATE)).to(device)
    if wav.numel() < tagger.stft.n_fft:
        return _not_judged(key, label, judge, "the clip is shorter than one analysis frame")
    return Verdict(key, label, float(tagger.tag_probabilities(wav)[0, index]), judge)


def judge_sound(audio: np.ndarray, sample_rate: int, *, tag: str | None = None, dreamed_on: str | None = None,
                device="cpu", hearing: bool = True, words: tuple[str, ...] | None = None,
                target_word: str | None = None, param: str = "synth") -> dict[str, Verdict]:
    """Every independent judge that applies to this sound, by key (the tagger only for music dreams;
    with ``hearing``, the judges trained on human speech and ears: Sphinx, DNSMOS, CREPE)."""
    verdicts = praat_judges(audio, sample_rate) + spectrum_judges(audio, sample_rate)
    if tag is not None and dreamed_on is not None:
        verdicts.append(tagger_judge(audio, sample_rate, tag, dreamed_on, device))
    if hearing:
        from .hearing import hearing_judges

        verdicts += hearing_judges(audio, sample_rate, words=words, target_word=target_word, param=param, device=device)
    return {v.key: v for v in verdicts}


def verdicts_to_dict(verdicts: dict[str, Verdict]) -> dict[str, dict]:
    return {key: v.to_dict() for key, v in verdicts.items()}

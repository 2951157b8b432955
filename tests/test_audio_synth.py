"""The harmonic-plus-noise synthesiser (the plausible parameterisation of audio dreams) and the
independent judges that listen to every dream."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from explorer.audio import judges
from explorer.audio.clips import builtin_clip, noise
from explorer.audio.synth import (INSTRUMENT, VOICE, HarmonicPlusNoise, WaveformRobustness, fit_to_clip,
                                  spectral_distance, tape_speed)

SR = 16000


def _steady(config, f0: float, seconds: float = 0.5, noise_budget: float = 0.0) -> HarmonicPlusNoise:
    """A synthesiser holding one pitch, fully voiced, with a given noise budget."""
    config = dataclasses.replace(config, noise_budget=noise_budget, voices=1)
    synth = HarmonicPlusNoise(config, int(seconds * SR), SR, generator=torch.Generator().manual_seed(0))
    lo, hi = np.log(config.f0_min), np.log(config.f0_max)
    with torch.no_grad():
        synth.f0.fill_(float(torch.logit(torch.tensor((np.log(f0) - lo) / (hi - lo)))))
        synth.voicing.fill_(8.0)
        if config.kind == "instrument":
            synth.velocity.fill_(-8.0)
            synth.velocity[..., 0] = 8.0  # one long note
            synth.decay.fill_(8.0)
    return synth


def _spectrum(wav: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = wav * np.hanning(len(wav))
    return np.fft.rfftfreq(len(x), 1 / SR), np.abs(np.fft.rfft(x)) ** 2


# ---- the synthesiser ------------------------------------------------------------------------------
@pytest.mark.parametrize("config, f0", [(VOICE, 200.0), (INSTRUMENT, 990.0)])
def test_synth_is_harmonic_and_band_limited(config, f0):
    with torch.no_grad():
        wav = _steady(config, f0)()[0, 0, 0].numpy()
    freqs, power = _spectrum(wav[800:-800])  # skip the first note's attack
    near_harmonic = np.abs(freqs / f0 - np.round(freqs / f0)) * f0 < 15.0
    assert power[near_harmonic & (freqs > 0.5 * f0)].sum() > 0.99 * power.sum()  # all energy at k·f0
    assert power[freqs > 0.9 * SR / 2].sum() < 1e-6 * power.sum()  # nothing near Nyquist, so nothing folds back
    peaks = freqs[np.argsort(power)[-3:]]
    assert np.all(np.abs(peaks / f0 - np.round(peaks / f0)) * f0 < 15.0)


def test_noise_budget_caps_the_noise_branch():
    # start almost unvoiced: without the budget this would be (nearly) white noise
    synth = _steady(VOICE, 150.0, noise_budget=0.1)
    with torch.no_grad():
        synth.voicing.fill_(-6.0)
        wav = synth()[0, 0, 0].numpy()
    freqs, power = _spectrum(wav)
    near_harmonic = np.abs(freqs / 150.0 - np.round(freqs / 150.0)) * 150.0 < 15.0
    harmonic_share = power[near_harmonic].sum() / power.sum()
    assert harmonic_share > 0.85  # noise ≤ 10 % of the harmonic energy, plus its share of the near-harmonic bins


def test_silent_edges_make_a_word_shaped_sound_and_refuse_to_leave_nothing():
    from explorer.audio.dream import DreamSettings, dream
    from explorer.audio.synth import edge_window
    from explorer.errors import UserInputError

    window = edge_window(SR, SR, 150.0)
    edge, ramp = int(0.15 * SR), int(0.02 * SR)
    assert float(window[:edge].abs().max()) == 0 and float(window[-edge:].abs().max()) == 0
    assert torch.all(window[edge + ramp : SR - edge - ramp] == 1)
    rise = window[edge : edge + ramp]
    assert torch.all(rise[1:] >= rise[:-1]) and 0 < float(rise[0]) < 0.01 and float(rise[-1]) > 0.99
    config = dataclasses.replace(VOICE, edge_silence_ms=150.0)
    with torch.no_grad():
        wav = HarmonicPlusNoise(config, SR, SR, generator=torch.Generator().manual_seed(0))()[0, 0, 0]
    assert float(wav[:edge].abs().max()) == 0 and float(wav[-edge:].abs().max()) == 0
    assert float(wav[edge + ramp : SR - edge - ramp].abs().max()) > 0.01  # the middle still sounds
    with pytest.raises(UserInputError, match="leave no sound"):
        edge_window(SR, SR, 490.0)
    with pytest.raises(UserInputError, match="Silent edges -1 is out of range"):
        DreamSettings(edge_silence_ms=-1.0)
    # the dream settings reach the synthesiser: the written dream is silent at its edges too
    result = dream(DreamSettings(net="speech", seconds=1.0, steps=2, edge_silence_ms=150.0, hearing=False),
                   device="cpu")
    assert result.settings.edge_silence_ms == 150.0
    for audio in (result.before_audio, result.after_audio):
        audio = np.asarray(audio).reshape(-1)
        assert float(np.abs(audio[:edge]).max()) == 0 and float(np.abs(audio[-edge:]).max()) == 0
        assert float(np.abs(audio[edge + ramp : -edge - ramp]).max()) > 0.01


def _onset_energy(control_ms: float) -> float:
    """Share of full-loudness energy in the 10 ms after a knob step from −60 dB to 0 dB at 0.5 s."""
    synth = _steady(dataclasses.replace(VOICE, control_rate=1000.0 / control_ms), 200.0, seconds=1.0)
    onset = synth.control_step * round(0.5 * SR / synth.control_step)
    with torch.no_grad():
        synth.loudness.fill_(8.0)  # 0 dB …
        synth.loudness[..., : onset // synth.control_step + 1] = -8.0  # … after −60 dB up to the onset frame
        wav = synth()[0, 0, 0].numpy()
    window = int(0.010 * SR)
    return float((wav[onset : onset + window] ** 2).mean() / (wav[onset + 2000 : onset + 2000 + window] ** 2).mean())


def test_a_finer_control_grid_makes_sharper_onsets_and_reaches_the_dream():
    """At 10 ms frames a −60 → 0 dB step takes 10 ms to rise (a third of the energy of the 10 ms after it), at 5 ms
    frames 5 ms (about two thirds): bursts and closures the coarse grid smears (docs/audio.md, eleventh look)."""
    from explorer.audio.dream import DreamSettings, dream
    from explorer.errors import UserInputError

    coarse, fine = _onset_energy(10.0), _onset_energy(5.0)
    assert 0.25 < coarse < 0.42 and 0.58 < fine < 0.75
    with pytest.raises(UserInputError, match="frame spacing 1 is out of range"):
        DreamSettings(control_ms=1.0)
    result = dream(DreamSettings(net="words", word="six", seconds=1.0, steps=2, control_ms=5.0, hearing=False),
                   device="cpu")
    assert result.settings.control_ms == 5.0 and result.controls["frame_seconds"] == 0.005
    assert len(result.controls["voicing"]) == 201  # a frame every 5 ms over 1 s, both ends included
    # unset, the net's defaults are used and written into the settings (dream.json says what was used)
    from explorer.audio.parameterisations import VOICE_CONTROL_MS, VOICE_CONTROL_TV

    assert (VOICE_CONTROL_MS, VOICE_CONTROL_TV) == (5.0, 0.03)  # what the thirteenth look and the Silero rule adopted
    default = dream(DreamSettings(net="words", word="six", seconds=1.0, steps=1, hearing=False), device="cpu")
    assert (default.settings.control_ms, default.settings.control_tv) == (VOICE_CONTROL_MS, VOICE_CONTROL_TV)
    assert default.controls["frame_seconds"] == pytest.approx(VOICE_CONTROL_MS / 1000)
    speech = dream(DreamSettings(net="speech", seconds=1.0, steps=1, hearing=False), device="cpu")
    assert (speech.settings.control_ms, speech.settings.control_tv) == (VOICE_CONTROL_MS, VOICE_CONTROL_TV)
    music = dream(DreamSettings(net="music:piano", seconds=1.0, steps=1, hearing=False), device="cpu")
    assert (music.settings.control_ms, music.settings.control_tv) == (10.0, 0.0)  # measured on voices only


def test_control_variation_charges_a_step_once_and_flutter_every_frame():
    """The smoothness prior of the twelfth look: a 60 dB onset costs 1 whatever the grid; flutter costs per frame."""
    from explorer.audio.dream import DreamSettings, dream

    costs = {}
    for ms in (10.0, 5.0):
        synth = _steady(dataclasses.replace(VOICE, control_rate=1000.0 / ms), 200.0, seconds=1.0)
        with torch.no_grad():
            synth.loudness.fill_(30.0)  # 0 dB (to float precision) …
            synth.loudness[..., : synth.frames // 2] = -30.0  # … after −60 dB: one step of the whole range
            step = float(synth.control_variation()[0])
            synth.loudness.fill_(0.0)
            synth.loudness[..., ::2] = 0.2  # flutter: every other frame up by the same small amount
            flutter = float(synth.control_variation()[0])
        costs[ms] = (step, flutter)
        assert step == pytest.approx(1.0, abs=0.01)
    assert costs[5.0][1] == pytest.approx(2 * costs[10.0][1], rel=0.05)

    def variation(weight: float) -> tuple[float, float]:
        result = dream(DreamSettings(net="words", word="yes", seconds=1.0, steps=48, control_ms=5.0,
                                     control_tv=weight, hearing=False), device="cpu")
        loud, voicing = np.array(result.controls["loudness_db"]), np.array(result.controls["voicing"])
        return np.abs(np.diff(loud)).sum() / 60 + np.abs(np.diff(voicing)).sum(), result.roundtrip["value"]

    (free, free_p), (smooth, smooth_p) = variation(0.0), variation(0.1)
    assert smooth < 0.5 * free  # the prior removes most of the knobs' variation …
    assert smooth_p > 0.5 and free_p > 0.5  # … while the net still hears its word (start: p < 0.01)


def test_gradients_reach_every_knob_and_the_speech_score_rises():
    from explorer.audio.dream import DreamSettings, dream

    synth = HarmonicPlusNoise(VOICE, SR, SR, generator=torch.Generator().manual_seed(1))
    from explorer.audio.silero import load_silero

    silero = load_silero("cpu")
    silero(silero.chunk_magnitudes(synth()[:, 0, 0])).log().mean().backward()
    for name, p in synth.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name

    result = dream(DreamSettings(net="speech", seconds=1.0, steps=20, hearing=False), device="cpu")
    assert result.param == "synth" and result.controls is not None
    assert result.roundtrip["value"] > result.before["value"] + 0.3
    assert result.history[-1] > result.history[0]
    assert result.griffin_lim_convergence is None  # the waveform is the dream: no phase to guess


def test_fit_to_clip_imitates_a_chord():
    clip = torch.from_numpy(builtin_clip("chord", 0.3, SR))
    synth = HarmonicPlusNoise(VOICE, len(clip), SR, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        before = float(spectral_distance(synth()[:, 0, 0], clip[None]))
    result = fit_to_clip(synth, clip, steps=20, generator=torch.Generator().manual_seed(0))
    assert -float(result.history[-1, 0]) < 0.5 * before  # a clip start begins from its imitation


def test_fit_distance_is_the_distance_of_the_knobs_the_dream_starts_from(tiny):
    """The imitation's distance is the loop's final score of its knobs, not the score before their last update."""
    from explorer.audio.dream import DreamSettings
    from explorer.audio.parameterisations import DreamStart, SynthDream
    from explorer.audio.spectrogram import DBMap
    from explorer.audio.targets import ImageTarget
    from explorer.optvis import objectives

    target = ImageTarget(tiny, objectives.channel("conv2", 3))
    clip = builtin_clip("chord", 0.5, SR)
    target.dbmap = DBMap(target.stft, -100.0, 0.0)  # as dream() sets it
    start = DreamStart(clip, True, target.dbmap, torch.Generator().manual_seed(0), torch.device("cpu"))
    setup = SynthDream(DreamSettings(net="tiny", start="chord", seconds=0.5, fit_steps=5, hearing=False), target, start)
    with torch.no_grad():
        now = float(spectral_distance(setup.param()[:, 0, 0], torch.from_numpy(clip)[None]))
    assert setup.fit_distance == pytest.approx(now, rel=1e-5)


# ---- robustness: the random tape speed (pitch, formants and rate together, as between speakers) -------------
ONLY_SPEED = dict(gain_db=0.0, shift_ms=0.0, noise_db=None, tilt_db=0.0)  # every other transform off


def _centroid(wav: np.ndarray) -> float:
    """Spectral centroid of the power spectrum normalised to sum 1 (so length and loudness do not count)."""
    freqs, power = _spectrum(wav)
    return float((freqs * power).sum() / power.sum())


def test_robustness_masks_silence_at_most_two_short_spans_and_draw_nothing_when_off():
    wav = torch.ones(4, 1, 1, SR)
    masked = WaveformRobustness(gain_db=0, shift_ms=0, noise_db=None, tilt_db=0, speed_pct=0, mask_ms=120.0,
                                peak_dbfs=0.0)(wav, torch.Generator().manual_seed(0))
    silent = (masked == 0)
    assert silent.any()
    for row in silent:
        runs = int((row[1:] & ~row[:-1]).sum() + row[0])  # silent spans
        assert 1 <= runs <= 2 and int(row.sum()) <= 2 * int(0.120 * SR)
    off = WaveformRobustness(mask_ms=0.0)
    a, b = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    off(wav, a)
    WaveformRobustness()(wav, b)
    assert torch.equal(a.get_state(), b.get_state())  # off: the same draws as before the setting existed


def test_tape_speed_zero_is_the_identity():
    with torch.no_grad():
        render = _steady(VOICE, 150.0)()
    wav = render.reshape(1, -1)
    assert torch.equal(tape_speed(wav, 1.0), wav)
    robust = WaveformRobustness(speed_pct=0.0, **ONLY_SPEED)
    out = robust(render, torch.Generator().manual_seed(0))
    peak_normalised = wav * (10 ** (robust.peak_dbfs / 20) / wav.abs().amax())
    assert torch.allclose(out, peak_normalised, atol=1e-7)


@pytest.mark.parametrize("speed", [1.1, 0.9])
def test_tape_speed_moves_the_spectral_centroid_by_its_factor(speed):
    """Faster tape: every frequency (pitch and formants) times the factor; slower: divided."""
    with torch.no_grad():
        wav = _steady(VOICE, 140.0)().reshape(1, -1)
        moved = tape_speed(wav, speed)
    assert moved.shape == wav.shape
    kept = min(wav.shape[-1], int(round(wav.shape[-1] / speed)))  # the rest is the silence padded at the end
    ratio = _centroid(moved[0, :kept].numpy()) / _centroid(wav[0].numpy())
    assert ratio == pytest.approx(speed, rel=0.02)
    if speed > 1:
        assert moved[0, kept + 1:].abs().max() == 0  # shorter: padded with silence to the length the net reads


def test_tape_speed_gradients_reach_the_synth_knobs():
    from explorer.audio.targets import make_target

    synth = HarmonicPlusNoise(VOICE, SR, SR, generator=torch.Generator().manual_seed(1))
    robust = WaveformRobustness(speed_pct=10.0, **ONLY_SPEED)
    target = make_target("words", torch.device("cpu"), word="yes")
    target.score_waveform(robust(synth(), torch.Generator().manual_seed(0)), None).sum().backward()
    for name, p in synth.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_tape_speed_is_drawn_from_the_seeded_generator():
    with torch.no_grad():
        render = _steady(VOICE, 150.0)()
    robust = WaveformRobustness(speed_pct=10.0, **ONLY_SPEED)
    first, again, other = (robust(render, torch.Generator().manual_seed(s)) for s in (3, 3, 4))
    assert torch.equal(first, again)
    assert not torch.allclose(first, other)
    centroids = [_centroid(robust(render, torch.Generator().manual_seed(s))[0].numpy()) for s in range(8)]
    assert max(centroids) / min(centroids) > 1.05  # the draws spread over ± 10 %, not one fixed factor


def test_targets_and_parameterisations_do_not_import_the_dream():
    """dream() builds on them, never the other way round (no import circle)."""
    code = ("import sys, explorer.audio.parameterisations, explorer.audio.targets; "
            "print('explorer.audio.dream' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


# ---- the judges ------------------------------------------------------------------------------------
def _harmonic_tone(seconds: float = 1.0, f0: float = 180.0) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (sum(np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, 12)) * 0.2).astype(np.float32)


def test_judges_hear_a_harmonic_tone_as_voiced_and_noise_as_noise():
    tone = judges.judge_sound(_harmonic_tone(), SR)
    assert tone["voiced_fraction"].value > 0.9
    assert tone["mean_hnr_db"].value > 20.0
    assert tone["energy_below_3k"].value > 0.99  # 11 harmonics of 180 Hz all lie below 2 kHz
    assert tone["spectral_flatness"].value < 0.05

    white = judges.judge_sound(noise(2.0, SR, "white", seed=1), SR)
    assert white["voiced_fraction"].value < 0.05
    assert white["mean_hnr_db"].value < 0.0
    assert abs(white["energy_below_3k"].value - 3000 / 8000) < 0.03  # flat spectrum: 3 kHz of 8
    assert abs(white["spectral_flatness"].value - np.exp(-np.euler_gamma)) < 0.03  # periodogram of white noise


def test_judges_say_not_judged_for_silence_and_without_parselmouth(monkeypatch):
    silent = judges.judge_sound(np.zeros(SR, np.float32), SR)
    assert silent["voiced_fraction"].value == 0.0  # no frame has a pitch: a true answer, not a failure
    for key in ("mean_hnr_db", "energy_below_3k", "spectral_flatness"):  # undefined on silence
        assert silent[key].value is None and silent[key].text() == judges.NOT_JUDGED and silent[key].reason

    monkeypatch.setitem(sys.modules, "parselmouth", None)  # as if praat-parselmouth were not installed
    verdicts = judges.judge_sound(_harmonic_tone(), SR)
    for key in ("voiced_fraction", "mean_hnr_db"):
        assert verdicts[key].value is None and verdicts[key].text() == "not judged"
        assert "praat-parselmouth" in verdicts[key].reason
        assert verdicts[key].to_dict()["value"] is None
    assert verdicts["energy_below_3k"].value > 0.99  # the judges that can run still do


def test_other_tagger_judges_music_dreams(monkeypatch):
    piano = builtin_clip("piano", 3.0, SR)
    verdict = judges.tagger_judge(piano, SR, "piano", dreamed_on="MTT_vgg")
    assert "MTT_musicnn" in verdict.judge and verdict.value > 0.2  # musicnn hears the built-in piano as piano
    assert "MTT_vgg" in judges.tagger_judge(piano, SR, "piano", dreamed_on="MTT_musicnn").judge

    from explorer.audio import musicnn
    from explorer.errors import UserInputError

    def missing(*args, **kwargs):
        raise UserInputError("The music tagger needs the `musicnn` package")

    monkeypatch.setattr(musicnn, "load_music_tagger", missing)
    absent = judges.tagger_judge(piano, SR, "piano", dreamed_on="MTT_vgg")
    assert absent.value is None and "musicnn" in absent.reason


def test_judges_on_espeak_speech_match_the_calibration(tmp_path):
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng) to synthesise the calibration sentence")
    from explorer.audio import io as audio_io

    path = tmp_path / "speech.wav"
    subprocess.run(["espeak-ng", "-w", str(path), judges.CALIBRATION_SENTENCE], check=True, capture_output=True)
    verdicts = judges.judge_sound(audio_io.load_audio(path, SR), SR)
    assert 0.5 < verdicts["voiced_fraction"].value < 0.85
    assert 8.0 < verdicts["mean_hnr_db"].value < 18.0
    assert verdicts["energy_below_3k"].value > 0.9
    assert verdicts["spectral_flatness"].value < 0.15


def test_dream_json_carries_judges_and_who_scored(tmp_path):
    from explorer.cli import main

    out = tmp_path / "dream"
    assert main(["--device", "cpu", "audio", "dream", "--net", "speech", "--seconds", "1", "--steps", "3",
                 "--control", "0", "--no-hearing", "--speed-jitter-pct", "10", "--out", str(out)]) == 0
    data = json.loads((out / "dream.json").read_text())
    assert data["param"] == "synth" and "scored_by" in data and data["synth"]["synth"] == "voice"
    assert data["settings"]["speed_jitter_pct"] == 10.0
    for when in ("before", "roundtrip"):
        assert set(data["judges"][when]) == {"voiced_fraction", "mean_hnr_db", "energy_below_3k", "spectral_flatness"}
        assert all(isinstance(v["value"], float) for v in data["judges"][when].values())

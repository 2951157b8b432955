"""Issue 19: pseudo-speakers for the keyword net — flite's clips through Praat's "Change gender" (an opt-in
engine of the data recipe) and the trainer's weight for them."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from explorer.audio.wordsdata import (ENGINES, FLITE_VOICES, PSEUDO, PSEUDO_SPEAKERS, SAMPLE_RATE, WordClips,
                                      cache_path, change_gender, load_clips, make_engine_data, pseudo_recipe, recipe)
from explorer.audio.wordstrain import class_clip_weights

needs_praat = pytest.mark.skipif(importlib.util.find_spec("parselmouth") is None,
                                 reason="parselmouth (Praat) is not installed (requirements.txt)")


def vowel(f0: float = 120.0, formants: tuple[float, ...] = (700.0, 1200.0, 2600.0), seconds: float = 0.4,
          rate: int = SAMPLE_RATE) -> np.ndarray:
    """A voiced vowel: a pulse train at ``f0`` through second-order resonators at ``formants`` (fixed, no noise)."""
    from scipy.signal import lfilter

    n = int(seconds * rate)
    source = np.zeros(n)
    source[:: int(rate / f0)] = 1.0
    out = source
    for f in formants:
        r = np.exp(-np.pi * 80.0 / rate)  # 80 Hz bandwidth
        out = lfilter([1.0 - r], [1.0, -2 * r * np.cos(2 * np.pi * f / rate), r * r], out)
    return (out / np.abs(out).max() * 0.8).astype(np.float32)


def centroid(audio: np.ndarray, rate: int = SAMPLE_RATE) -> float:
    spectrum = np.abs(np.fft.rfft(audio, 16384))
    freqs = np.fft.rfftfreq(16384, 1 / rate)
    return float((spectrum * freqs).sum() / spectrum.sum())


def test_pseudo_recipe_is_every_flite_clip_as_each_pseudo_speaker_deterministically():
    flite, pseudo = recipe("flite"), recipe(PSEUDO)
    assert pseudo == pseudo_recipe() and pseudo != pseudo_recipe(seed=1)
    assert len(pseudo) == len(PSEUDO_SPEAKERS) * len(flite) == 6 * 820
    assert PSEUDO not in ENGINES  # opt-in: never part of the default recipe or of the test
    for k, ((r_lo, r_hi), (p_lo, p_hi)) in enumerate(PSEUDO_SPEAKERS):
        block = pseudo[k * len(flite) : (k + 1) * len(flite)]
        assert [(u.word, u.label) for u in block] == [(u.word, u.label) for u in flite]
        assert all(u.voice == f"{f.voice}~{k}" and u.engine == PSEUDO for u, f in zip(block, flite))
        assert all(r_lo <= u.formant_ratio <= r_hi and p_lo <= u.pitch_median <= p_hi for u in block)
    assert {u.voice.split("~")[0] for u in pseudo} == set(FLITE_VOICES)  # never festival's voices (the test)


@needs_praat
def test_formant_shift_moves_the_spectral_centroid_the_right_way():
    clip = vowel()
    # the control is ratio 1 through the same Praat path (its resynthesis alone changes the spectrum a little)
    ratios = (0.85, 0.92, 1.0, 1.1, 1.2)
    centroids = [centroid(change_gender(clip, ratio, 120.0)) for ratio in ratios]  # same pitch: formants move
    assert all(np.diff(centroids) > 0), centroids  # monotonic in the ratio
    unshifted = centroids[ratios.index(1.0)]
    assert centroids[0] < 0.95 * unshifted and centroids[-1] > 1.05 * unshifted, centroids
    changed = change_gender(clip, 1.2, 120.0)
    assert np.abs(changed).max() <= 0.99 and abs(len(changed) - len(clip)) <= 320


@needs_praat
def test_change_gender_is_deterministic_and_moves_the_pitch():
    import parselmouth

    clip = vowel(f0=120.0)
    a, b = change_gender(clip, 1.1, 200.0, praat_seed=7), change_gender(clip, 1.1, 200.0, praat_seed=7)
    np.testing.assert_array_equal(a, b)  # Praat's random periods are seeded
    assert not np.array_equal(a, change_gender(clip, 1.1, 200.0, praat_seed=8))  # … by this seed
    pitch = parselmouth.Sound(a.astype(np.float64), sampling_frequency=SAMPLE_RATE).to_pitch()
    f0 = pitch.selected_array["frequency"]
    assert np.median(f0[f0 > 0]) == pytest.approx(200.0, rel=0.08)


@needs_praat
def test_make_engine_data_writes_one_pseudo_clip_per_flite_clip_and_speaker(tmp_path):
    from explorer.files import write_npz

    flite = recipe("flite")
    rng = np.random.default_rng(0)
    clips = [vowel(f0=float(rng.uniform(90, 200)), seconds=0.06) for _ in flite]
    lengths = np.array([len(c) for c in clips])
    write_npz(cache_path(tmp_path, "flite"), dict(
        samples=np.concatenate([np.round(c * 32767).astype(np.int16) for c in clips]),
        offsets=np.concatenate([[0], np.cumsum(lengths)]), labels=np.array([u.label for u in flite]),
        words=np.array([u.word for u in flite]), voices=np.array([u.voice for u in flite]),
        rates=np.array([u.rate for u in flite]), pitches=np.array([u.pitch for u in flite])))
    path = make_engine_data(PSEUDO, tmp_path, chunk=1024)
    assert path == cache_path(tmp_path, PSEUDO)
    data = load_clips(tmp_path, (PSEUDO,))
    assert len(data) == 6 * len(flite) and set(data.engines) == {PSEUDO}
    with np.load(path) as stored:
        assert stored["formant_ratios"].min() >= 0.85 and stored["formant_ratios"].max() <= 1.2
    source = load_clips(tmp_path, ("flite",)).clips
    utterances = pseudo_recipe()
    for i in (0, 1, len(flite) + 5, 5 * len(flite) + 819):
        expected = change_gender(source[i % len(flite)], utterances[i].formant_ratio, utterances[i].pitch_median,
                                 praat_seed=1 + i)
        np.testing.assert_allclose(data.clips[i], expected, atol=2 / 32767)  # int16 storage
        assert data.labels[i] == flite[i % len(flite)].label


def test_class_clip_weights_weigh_each_engine():
    engines = np.array(["espeak-ng", "flite", PSEUDO, PSEUDO, "espeak-ng"])
    train = WordClips([np.zeros(1)] * 5, np.array([0, 0, 0, 1, 1]), np.array(["yes"] * 5), np.array(["v"] * 5),
                      engines)
    by_class = [np.flatnonzero(train.labels == c) for c in range(2)]
    weights = class_clip_weights(train, by_class, {"flite": 3.0, PSEUDO: 0.5})
    np.testing.assert_allclose(weights[0], np.array([1, 3, 0.5]) / 4.5)
    np.testing.assert_allclose(weights[1], np.array([0.5, 1]) / 1.5)
    without = train.subset(train.engines != PSEUDO)
    assert class_clip_weights(without, [np.flatnonzero(without.labels == c) for c in range(2)],
                              {"flite": 1.0, PSEUDO: 0.0}) is None  # the default recipe: every clip alike


def test_cli_refuses_a_negative_weight_and_names_the_missing_clips(tmp_path, capsys):
    from explorer.cli import main

    args = ["audio", "words-train", "--data", str(tmp_path), "--out", str(tmp_path / "net"),
            "--checkpoint", str(tmp_path / "c.pt"), "--steps", "1"]
    assert main(args + ["--pseudo-weight", "-1"]) == 2
    for engine in ENGINES:  # a data folder without flite-pseudo.npz: the error says how to make it
        np.savez(cache_path(tmp_path, engine), samples=np.zeros(1, np.int16), offsets=np.array([0, 1]),
                 labels=np.array([0]), words=np.array(["yes"]), voices=np.array(["v"]))
    assert main(args + ["--pseudo-weight", "0.5"]) == 2
    assert "--pseudo-speakers" in capsys.readouterr().err

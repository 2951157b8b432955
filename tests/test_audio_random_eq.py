"""Issue 19: the random channel colour for the keyword net's training — a smooth gain curve through its anchors,
bounded by its dB limit, drawn from the step's seeded generator, and nothing drawn when it is off."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from explorer.audio.words import SAMPLE_RATE, WINDOW, WORDS_STFT, build_net
from explorer.audio.wordsdata import LABELS
from explorer.audio.wordstrain import EQ_ANCHORS_HZ, TrainSettings, eq_gains_db, random_eq, training_log_mel

BINS = WORDS_STFT.n_fft // 2 + 1


def test_the_curve_passes_through_its_anchors_and_stays_between_them():
    gains = np.array([[6.0, -6.0, 3.0, 0.0, -3.0, 5.0]])
    curve = eq_gains_db(BINS, gains)[0]
    hz = np.linspace(0, SAMPLE_RATE / 2, BINS)
    for anchor, gain in zip(EQ_ANCHORS_HZ, gains[0]):
        k = int(np.argmin(abs(hz - anchor)))
        assert curve[k] == pytest.approx(gain, abs=0.7)  # a bin is 31 Hz wide: within a bin's step of the anchor
    assert curve.max() <= 6.0 + 1e-9 and curve.min() >= -6.0 - 1e-9  # linear between anchors: never overshoots
    assert curve[0] == pytest.approx(6.0) and curve[-1] == pytest.approx(5.0)  # flat beyond the ends
    # smooth in log-frequency: no slope steeper than the steepest anchor-to-anchor line (12 dB over 100–250 Hz)
    inside = hz >= EQ_ANCHORS_HZ[0]
    per_octave = np.diff(curve[inside]) / np.diff(np.log2(hz[inside]))
    assert np.abs(per_octave).max() <= 12.0 / np.log2(250 / 100) + 1e-6


def test_random_colour_is_bounded_and_reaches_the_log_mel_as_a_smooth_shift():
    rng = np.random.default_rng(3)
    spectrum = torch.from_numpy(rng.random((5, BINS, 4)).astype(np.float64)) + 0.1
    coloured = random_eq(spectrum, np.random.default_rng(9), 6.0)
    ratio_db = 20 * torch.log10(coloured / spectrum)
    assert float(ratio_db.abs().max()) <= 6.0 + 1e-6
    assert float(ratio_db.std(dim=1).min()) > 0.3  # each example got a curve, not a constant
    assert torch.allclose(ratio_db[:, :, 0], ratio_db[:, :, 3])  # the same curve in every frame (a channel)


def test_the_same_seed_gives_the_same_coloured_batch_and_off_draws_nothing():
    net = build_net({"labels": LABELS, "widths": [4, 4]})
    wav = torch.from_numpy(np.random.default_rng(1).standard_normal((3, WINDOW)).astype(np.float32)) * 0.1
    on = TrainSettings(random_eq=6.0)

    def batch(seed_step: list[int], settings: TrainSettings) -> torch.Tensor:
        return training_log_mel(net, wav, np.random.default_rng(seed_step), settings)

    assert torch.equal(batch([0, 7], on), batch([0, 7], on))
    assert not torch.equal(batch([0, 7], on), batch([0, 8], on))
    assert not torch.allclose(batch([0, 7], on), net.front(wav))
    rng = np.random.default_rng([0, 7])
    assert torch.equal(training_log_mel(net, wav, rng, TrainSettings()), net.front(wav))
    assert rng.random() == np.random.default_rng([0, 7]).random()

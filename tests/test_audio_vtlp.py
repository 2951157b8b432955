"""Issue 19: vocal-tract-length perturbation (VTLP) for the keyword net's training — the warp moves formants by α,
keeps a flat spectrum's energy, is the identity at α = 1, and is drawn from the step's seeded generator."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from explorer.audio.words import SAMPLE_RATE, WINDOW, WORDS_STFT, build_net
from explorer.audio.wordsdata import LABELS
from explorer.audio.wordstrain import TrainSettings, training_log_mel, vtlp_source_bins, vtlp_warp

BINS = WORDS_STFT.n_fft // 2 + 1


def _centroid(spectrum: torch.Tensor) -> float:
    return float((spectrum * torch.arange(len(spectrum))).sum() / spectrum.sum())


@pytest.mark.parametrize("alpha", [0.85, 0.93, 1.08, 1.15])
def test_a_peak_moves_to_alpha_times_its_bin_and_the_ends_stay(alpha):
    spectrum = torch.zeros(1, BINS, 2)
    spectrum[0, 80] = 1.0  # 2.5 kHz: below the knee for every α in range
    warped = vtlp_warp(spectrum, np.array([alpha]))[0, :, 0]
    assert _centroid(warped) == pytest.approx(80 * alpha, abs=0.05)
    assert abs(int(warped.argmax()) - 80 * alpha) <= 1
    source = vtlp_source_bins(BINS, alpha)
    assert source[0] == 0 and source[-1] == BINS - 1  # 0 Hz and Nyquist stay fixed
    assert np.all(np.diff(source) > 0)  # monotonic: no band is folded over or lost


def test_alpha_one_is_the_identity_and_a_flat_spectrum_keeps_its_energy():
    rng = np.random.default_rng(0)
    spectrum = torch.from_numpy(rng.random((3, BINS, 5)).astype(np.float32))
    assert torch.allclose(vtlp_warp(spectrum, np.ones(3)), spectrum)
    flat = torch.ones(4, BINS, 6)
    warped = vtlp_warp(flat, np.array([0.85, 0.95, 1.05, 1.15]))
    assert torch.allclose(warped, flat)  # flat stays flat, so its energy is kept exactly


@pytest.mark.parametrize("hz", [600, 1000, 2000, 3000])
@pytest.mark.parametrize("alpha", [0.85, 1.15])
def test_warping_a_tone_in_the_net_front_end_looks_like_the_tone_at_alpha_times_its_pitch(hz, alpha):
    """On the log-mel the net reads: a sine at f warped by α has its mel centroid where a sine at α·f has it
    (within 0.1 band), about two bands away from the unwarped one."""
    from explorer.audio.spectrogram import stft

    net = build_net({"labels": LABELS, "widths": [4, 4]})
    t = torch.arange(WINDOW) / SAMPLE_RATE

    def sine(f: float) -> torch.Tensor:
        return torch.sin(2 * torch.pi * f * t)[None] * 0.5

    def centroid(log_mel: torch.Tensor) -> float:
        return _centroid(log_mel[0, 0].mean(-1).exp())

    warped = centroid(net.front.from_magnitude(vtlp_warp(stft(sine(hz), WORDS_STFT).abs(), np.array([alpha]))))
    assert warped == pytest.approx(centroid(net.front(sine(hz * alpha))), abs=0.1)
    assert abs(warped - centroid(net.front(sine(hz)))) > 1.0


def test_the_same_seed_gives_the_same_warped_batch_and_off_draws_nothing():
    net = build_net({"labels": LABELS, "widths": [4, 4]})
    wav = torch.from_numpy(np.random.default_rng(1).standard_normal((3, WINDOW)).astype(np.float32)) * 0.1
    on = TrainSettings(vtlp=0.15, spec_mask=True)

    def batch(seed_step: list[int], settings: TrainSettings) -> torch.Tensor:
        return training_log_mel(net, wav, np.random.default_rng(seed_step), settings)

    assert torch.equal(batch([0, 7], on), batch([0, 7], on))  # a resumed run redraws step 7 exactly
    assert not torch.equal(batch([0, 7], on), batch([0, 8], on))
    rng = np.random.default_rng([0, 7])
    off = training_log_mel(net, wav, rng, TrainSettings())  # the shipped recipe's default: no VTLP, no masks
    assert torch.equal(off, net.front(wav))
    assert rng.random() == np.random.default_rng([0, 7]).random()  # and no random number was spent


def test_cli_refuses_a_warp_out_of_range(tmp_path):
    from explorer.cli import main

    assert main(["audio", "words-train", "--data", str(tmp_path), "--vtlp", "0.5",
                 "--out", str(tmp_path / "net"), "--checkpoint", str(tmp_path / "c.pt")]) == 2

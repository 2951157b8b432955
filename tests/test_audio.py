"""Audio hallucinations: signal processing, network ports, checkpoint reader, dreams, inputs."""

from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import pytest
import soundfile as sf
import torch

from explorer.audio import io as audio_io
from explorer.audio.clips import builtin_clip, chord, noise
from explorer.audio.spectrogram import (STFTConfig, griffin_lim, istft, mel_filterbank, mel_to_hz, hz_to_mel,
                                       spectral_convergence, stft)
from explorer.audio.tfcheckpoint import CheckpointError, read_checkpoint, read_index, write_checkpoint

SR = 16000


# ---- spectrogram --------------------------------------------------------------------------------
@pytest.mark.parametrize("cfg", [STFTConfig(512, 128),
                                 STFTConfig(256, 128, pad_left=64, pad_mode="constant"),
                                 STFTConfig(512, 256)])
def test_istft_inverts_stft(cfg):
    x = torch.from_numpy(noise(0.7, SR, "pink"))[None]
    y = istft(stft(x, cfg), cfg, x.shape[-1])
    assert torch.allclose(x, y, atol=1e-5)


def test_griffin_lim_converges_on_a_chord():
    cfg = STFTConfig(512, 128)
    x = torch.from_numpy(chord(1.0, SR))[None]
    target = stft(x, cfg).abs()
    gen = torch.Generator().manual_seed(0)
    fast = griffin_lim(target, cfg, n_iter=64, momentum=0.99, length=x.shape[-1], generator=gen)
    gen.manual_seed(0)
    plain = griffin_lim(target, cfg, n_iter=64, momentum=0.0, length=x.shape[-1], generator=gen)
    sc_fast = spectral_convergence(target, stft(fast, cfg).abs())
    sc_plain = spectral_convergence(target, stft(plain, cfg).abs())
    assert sc_fast <= 0.15
    assert sc_fast < sc_plain  # momentum is what gets it there in 64 iterations


def test_mel_filterbank_is_slaney_normalised():
    fb = mel_filterbank(SR, 512, 96)
    assert fb.shape == (96, 257) and (fb >= 0).all()
    peaks = fb.argmax(1)
    assert (np.diff(peaks) >= 0).all()  # centres rise with the band index
    # Slaney normalisation: every triangle has unit area in Hz (checked where it spans many bins)
    areas = fb.sum(1) * (SR / 512)
    wide = (fb > 0).sum(1) > 12
    assert np.allclose(areas[wide], 1.0, rtol=0.05)
    assert np.allclose(mel_to_hz(hz_to_mel(np.array([50.0, 999.0, 1000.0, 4321.0]))), [50.0, 999.0, 1000.0, 4321.0])


# ---- Silero VAD port ----------------------------------------------------------------------------
def _espeak(tmp_path) -> np.ndarray | None:
    if shutil.which("espeak-ng") is None:
        return None
    path = tmp_path / "speech.wav"
    subprocess.run(["espeak-ng", "-w", str(path),
                    "Hello there. This sentence is spoken to test a voice activity detector."],
                   check=True, capture_output=True)
    return audio_io.load_audio(path, SR)


def test_silero_port_matches_jit_on_noise_and_tones():
    from explorer.audio.silero import jit_speech_probability, load_silero

    model = load_silero("cpu")
    for audio in (noise(1.5, SR, "white", seed=3), builtin_clip("chirp", 1.2, SR)):
        x = torch.from_numpy(audio)
        ref = jit_speech_probability(x)
        ours = model.speech_probability(x)[0]
        assert ours.shape == ref.shape
        assert torch.allclose(ours, ref, atol=1e-4)
    assert float(ref.mean()) < 0.1


def test_silero_port_matches_jit_on_speech(tmp_path):
    from explorer.audio.silero import jit_speech_probability, load_silero

    speech = _espeak(tmp_path)
    if speech is None:
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng) to synthesise real speech")
    x = torch.from_numpy(speech)
    ref = jit_speech_probability(x)
    ours = load_silero("cpu").speech_probability(x)[0]
    assert torch.allclose(ours, ref, atol=1e-4)
    assert float(ref.max()) > 0.9 and float(ref.mean()) > 0.5  # it is speech, and both say so


def test_silero_gradient_reaches_the_spectrogram():
    from explorer.audio.silero import SPEECH_STFT, load_silero

    mag = stft(torch.from_numpy(noise(0.5, SR))[None], SPEECH_STFT).abs().requires_grad_(True)
    load_silero("cpu")(mag).mean().backward()
    assert mag.grad is not None and mag.grad.abs().sum() > 0


# ---- TF checkpoint reader ------------------------------------------------------------------------
def test_checkpoint_reader_round_trips_a_written_bundle(tmp_path):
    rng = np.random.default_rng(0)
    tensors = {f"layer{i}/kernel": rng.standard_normal((3, i + 1, 2)).astype(np.float32) for i in range(20)}
    tensors |= {"scalar": np.array(3.5, dtype=np.float32), "steps": np.arange(7, dtype=np.int64),
                "half": rng.standard_normal(5).astype(np.float16), "empty": np.zeros((0, 4), np.float32)}
    prefix = tmp_path / "model.ckpt"
    write_checkpoint(prefix, tensors)
    index = read_index(str(prefix) + ".index")
    assert {k: v.shape for k, v in index.items()} == {k: v.shape for k, v in tensors.items()}
    back = read_checkpoint(prefix)
    for name, value in tensors.items():
        assert back[name].dtype == value.dtype and np.array_equal(back[name], value)
    only = read_checkpoint(prefix, names=["steps"])
    assert list(only) == ["steps"]


def test_checkpoint_reader_rejects_bad_files(tmp_path):
    bad = tmp_path / "bad"
    (tmp_path / "bad.index").write_bytes(b"not an sstable" * 10)
    with pytest.raises(CheckpointError, match="magic"):
        read_checkpoint(bad)
    with pytest.raises(CheckpointError, match="not found"):
        read_checkpoint(tmp_path / "missing")


def test_checkpoint_reader_on_shipped_musicnn():
    from explorer.audio.musicnn import checkpoint_prefix

    pytest.importorskip("musicnn.configuration")
    tensors = read_checkpoint(str(checkpoint_prefix("MTT_vgg")) + "/")
    assert tensors["1CNN/kernel"].shape == (3, 3, 1, 128)
    assert tensors["5CNN/kernel"].shape == (3, 3, 128, 128)
    assert tensors["dense/kernel"].shape == (256, 50)
    assert (tensors["batch_normalization_3/moving_variance"] > 0).all()  # variances, as stored
    assert not any("Adam" in k for k in tensors)


# ---- musicnn port --------------------------------------------------------------------------------
@pytest.mark.parametrize("model", ["MTT_vgg", "MTT_musicnn"])
def test_music_tagger_sanity(model):
    from explorer.audio.musicnn import load_music_tagger

    tagger = load_music_tagger(model)

    def top(clip: str, n: int) -> list[str]:
        probs = tagger.tag_probabilities(torch.from_numpy(builtin_clip(clip, 3.0, SR)))[0]
        return [tagger.labels[int(i)] for i in probs.argsort(descending=True)[:n]]

    assert "piano" in top("piano", 3)
    assert {"drums", "beat"} & set(top("drums", 2))
    assert "quiet" in top("quiet", 3)


# ---- inputs and outputs ---------------------------------------------------------------------------
def test_load_audio_mixes_down_and_resamples(tmp_path):
    t = np.arange(8000) / 8000
    left, right = np.sin(2 * np.pi * 300 * t), 0.5 * np.sin(2 * np.pi * 300 * t)
    path = tmp_path / "stereo.flac"
    sf.write(path, np.stack([left, right], 1), 8000)
    audio = audio_io.load_audio(path, 16000)
    assert audio.dtype == np.float32 and len(audio) == 16000
    assert abs(np.abs(audio[2000:-2000]).max() - 0.75) < 0.02  # mean of the two channels
    spectrum = np.abs(np.fft.rfft(audio))
    assert abs(np.argmax(spectrum) * 16000 / len(audio) - 300) < 2


@pytest.mark.parametrize("case, message", [
    ("garbage", "Could not read"), ("empty", "no audio"), ("long", "limit is 30"), ("missing", "not found"),
])
def test_bad_audio_is_rejected_clearly(tmp_path, case, message):
    path = tmp_path / f"{case}.wav"
    if case == "garbage":
        path.write_bytes(b"RIFF\x00\x00garbage" * 50)
    elif case == "empty":
        sf.write(path, np.zeros(0, np.float32), 16000)
    elif case == "long":
        sf.write(path, np.zeros(31 * 1000, np.float32), 1000)
    with pytest.raises(audio_io.AudioInputError, match=message):
        audio_io.load_audio(path)
    if case == "garbage":
        with pytest.raises(audio_io.AudioInputError):
            audio_io.load_audio(path.read_bytes())


def test_safe_loudness_peaks_at_minus_one_dbfs_with_fades():
    loud = np.random.default_rng(0).standard_normal(16000).astype(np.float32) * 30
    out = audio_io.safe_loudness(loud, 16000)
    assert np.isclose(np.abs(out).max(), 10 ** (-1 / 20), rtol=1e-4)
    assert abs(out[0]) < 1e-6 and abs(out[-1]) < 1e-6
    assert np.abs(audio_io.safe_loudness(np.zeros(100), 16000)).max() == 0


# ---- dreams --------------------------------------------------------------------------------------
def test_dream_on_a_tiny_net_rises_and_survives_the_round_trip(tiny):
    from explorer.audio.dream import DreamSettings, dream
    from explorer.audio.targets import ImageTarget
    from explorer.optvis import objectives

    target = ImageTarget(tiny, objectives.channel("conv2", 3))
    # the TV priors are what make it audible: without them most of the gain is phase-incoherent detail
    result = dream(DreamSettings(net="tiny", param="spectrogram", seconds=1.0, steps=30, lr=0.1, seed=0,
                                 hearing=False, tv_time=1.0, tv_freq=1.0, consistency_every=0),
                   device="cpu", target=target)
    assert result.steps_done == 30 and result.stopped is None
    assert result.history[-1] > result.history[0]
    assert result.optimised["value"] > result.before["value"]
    gain = result.optimised["value"] - result.before["value"]
    assert result.roundtrip["value"] - result.before["value"] > 0.5 * gain  # most of it is audible
    assert np.isclose(np.abs(result.after_audio).max(), 10 ** (-1 / 20), rtol=1e-3)
    assert result.after_db.shape == result.before_db.shape == result.roundtrip_db.shape


def test_consistency_projection_closes_the_round_trip_gap(tiny):
    from explorer.audio.dream import DreamSettings, dream
    from explorer.audio.targets import ImageTarget
    from explorer.optvis import objectives

    def run(every: int):
        target = ImageTarget(tiny, objectives.channel("conv2", 3))
        return dream(DreamSettings(net="tiny", param="spectrogram", seconds=1.0, steps=30, lr=0.1, seed=0,
                                   hearing=False, consistency_every=every),
                     device="cpu", target=target)

    free, projected = run(0), run(1)
    assert projected.optimised["value"] > projected.before["value"]
    assert projected.griffin_lim_convergence < 0.1 < free.griffin_lim_convergence
    gap = lambda r: abs(r.optimised["value"] - r.roundtrip["value"])  # noqa: E731
    assert gap(projected) < 0.25 * gap(free)  # what the optimiser saw is what is heard


def test_unconstrained_speech_dream_fools_silero_but_not_the_judges():
    from explorer.audio.dream import DreamSettings, dream

    result = dream(DreamSettings(net="speech", param="spectrogram", start="noise", seconds=1.0, steps=60,
                                 hearing=False), device="cpu")
    assert result.before["value"] < 0.1
    assert result.roundtrip["value"] >= 0.8
    assert len(result.roundtrip["per_chunk"]) == 32  # 1 s = 31.25 chunks of 32 ms, padded
    # ...yet Praat's pitch tracker finds (almost) no voice in it: an adversarial sound, not speech
    assert result.judges["roundtrip"]["voiced_fraction"].value < 0.2


def test_dream_rejects_bad_settings():
    from explorer.audio.dream import DreamSettings, dream
    from explorer.errors import UserInputError

    with pytest.raises(UserInputError, match="Unknown net"):
        dream(DreamSettings(net="radio"), device="cpu")
    with pytest.raises(UserInputError, match="Unknown music tag"):
        dream(DreamSettings(net="music:pianoo", steps=1), device="cpu")
    with pytest.raises(UserInputError, match="Original phase"):
        dream(DreamSettings(net="speech", start="noise", phase="original", steps=1), device="cpu")
    with pytest.raises(UserInputError, match="Original phase needs a clip"):
        dream(DreamSettings(net="speech", param="spectrogram", start="noise", phase="original", steps=1), device="cpu")
    with pytest.raises(UserInputError, match="Unknown parameterisation"):
        dream(DreamSettings(net="speech", param="wavelets", steps=1), device="cpu")
    with pytest.raises(UserInputError, match="Unknown synthesiser"):
        dream(DreamSettings(net="speech", synth="kazoo", steps=1), device="cpu")
    with pytest.raises(UserInputError, match="Unknown start"):
        dream(DreamSettings(net="speech", start="whalesong", steps=1), device="cpu")
    with pytest.raises(UserInputError, match="tape speed"):
        DreamSettings(net="words", speed_jitter_pct=60.0)


def test_cli_dream_writes_wavs_pngs_and_round_trip_json(tmp_path):
    from explorer.cli import main

    out = tmp_path / "dream"
    code = main(["--device", "cpu", "audio", "dream", "--net", "speech", "--param", "spectrogram", "--start", "chord",
                 "--seconds", "1", "--steps", "5", "--phase", "original", "--control", "0",
                 "--no-hearing", "--out", str(out)])
    assert code == 0
    data = json.loads((out / "dream.json").read_text())
    assert {"before", "optimised", "roundtrip", "roundtrip_gain"} <= set(data)
    for name in ("before.wav", "after.wav", "before_spectrogram.png", "after_spectrogram.png",
                 "roundtrip_spectrogram.png"):
        assert (out / name).stat().st_size > 0
    audio, rate = sf.read(out / "after.wav")
    assert rate == 16000 and len(audio) == 16000
    assert main(["audio", "tags", str(tmp_path / "nope.wav")]) == 2  # a clear error, not a traceback

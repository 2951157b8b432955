"""Issue 19: Google's speech embedding in torch (explorer/audio/speech_embedding.py) and the keyword head over it."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from explorer.audio import speech_embedding as se
from tests.test_audio_words import _tiny_word_data

needs_embedding = pytest.mark.skipif(se.available() is not None, reason=str(se.available()))


def _espeak(word: str, tmp_path) -> np.ndarray:
    import subprocess

    import soundfile as sf
    from scipy.signal import resample_poly

    path = tmp_path / f"{word}.wav"
    subprocess.run(["espeak-ng", "-w", str(path), word], check=True)
    x, rate = sf.read(path, dtype="float32")
    return resample_poly(x, 16000, rate).astype(np.float32)


def _test_sounds(tmp_path) -> np.ndarray:
    """1.2 s clips: noise, a chirp with noise, and (with espeak-ng) a spoken word."""
    rng = np.random.default_rng(0)
    t = np.arange(19200) / 16000
    sounds = [0.1 * rng.standard_normal(19200),
              0.4 * np.sin(2 * np.pi * (200 + 600 * t) * t) + 0.01 * rng.standard_normal(19200)]
    if shutil.which("espeak-ng"):
        word = np.zeros(19200)
        said = _espeak("seven", tmp_path)[:17000]
        word[1600:1600 + len(said)] = said
        sounds.append(word)
    return np.stack(sounds).astype(np.float32)


@needs_embedding
def test_port_matches_onnxruntime_window_by_window(tmp_path):
    """The torch log-mel and embedding reproduce the wheel's two ONNX graphs run by onnxruntime (the
    embedding one window at a time, as the graph was built), and the whole-clip embedding is those windows'."""
    import onnxruntime as ort
    import torch

    folder = se.model_dir()
    mel_graph = ort.InferenceSession(str(folder / se.MEL_FILE), providers=["CPUExecutionProvider"])
    emb_graph = ort.InferenceSession(str(folder / se.EMBEDDING_FILE), providers=["CPUExecutionProvider"])
    front, embedding = se.read_front_end()
    sounds = _test_sounds(tmp_path)
    with torch.no_grad():
        log_mel = front(torch.from_numpy(sounds))
        ours = embedding(log_mel).numpy()
    assert log_mel.shape == (len(sounds), 1, se.N_MELS, (19200 - 512) // se.HOP + 1)
    for i, sound in enumerate(sounds):
        reference = mel_graph.run(None, {"input": sound[None] * se.INT16_SCALE})[0][:, 0][0] / 10 + 2
        np.testing.assert_allclose(log_mel[i, 0].T.numpy(), reference, atol=1e-3)
        windows = np.stack([reference[s:s + se.WINDOW_FRAMES]
                            for s in range(0, len(reference) - se.WINDOW_FRAMES + 1, se.EMBEDDING_HOP)])
        expected = emb_graph.run(None, {"input_1": windows[..., None].astype(np.float32)})[0][:, 0, 0]
        assert ours[i].shape == expected.shape == (6, se.EMBEDDING_DIM)
        assert np.abs(ours[i] - expected).max() < 1e-3 * np.abs(expected).max()
    # the windows cut out one by one (the graph's own way) give the same as the whole clip at once
    with torch.no_grad():
        one_by_one = embedding.forward(se.windows_of(log_mel).transpose(2, 3)).reshape(len(sounds), -1, 96)
    torch.testing.assert_close(one_by_one, torch.from_numpy(ours), atol=1e-4, rtol=1e-4)


@needs_embedding
def test_embedding_tells_two_words_apart_better_than_two_voices():
    """Why it is worth building on: two voices saying one word lie nearer in the embedding than one voice saying
    two words (it was trained to separate words across speakers)."""
    import torch

    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng (Debian) is not installed")
    import subprocess
    import tempfile

    import soundfile as sf
    from scipy.signal import resample_poly

    def say(word: str, voice: str) -> torch.Tensor:
        with tempfile.NamedTemporaryFile(suffix=".wav") as f:
            subprocess.run(["espeak-ng", "-v", voice, "-w", f.name, word], check=True)
            x, rate = sf.read(f.name, dtype="float32")
        x = resample_poly(x, 16000, rate).astype(np.float32)[:16000]
        out = np.zeros(19200, np.float32)
        out[1600:1600 + len(x)] = x
        return torch.from_numpy(out)

    front, embedding = se.read_front_end()
    with torch.no_grad():
        def vector(word, voice):
            return embedding(front(say(word, voice)[None])).mean(1)[0]

        yes_m, yes_f, no_m = vector("yes", "en-us+m3"), vector("yes", "en-gb+f2"), vector("no", "en-us+m3")
    cos = torch.nn.functional.cosine_similarity
    assert cos(yes_m, yes_f, dim=0) > cos(yes_m, no_m, dim=0)


@needs_embedding
def test_head_saves_only_what_it_trained_and_gradients_reach_the_waveform(tmp_path):
    import torch

    from explorer.audio.words import SPEECH_EMBEDDING, WORDS_STFT, build_net
    from explorer.audio.spectrogram import stft

    net = build_net({"arch": SPEECH_EMBEDDING, "labels": [f"w{i}" for i in range(22)], "width": 16})
    assert set(net.state_dict()) == {"temporal.weight", "temporal.bias", "head.1.weight", "head.1.bias"}
    assert sum(p.numel() for p in net.parameters()) == 96 * 16 * 3 + 16 + 16 * 22 + 22
    wav = (torch.randn(2, 16000) * 0.1).requires_grad_(True)
    net.eval()
    net(wav)[:, 3].sum().backward()
    assert wav.grad is not None and torch.isfinite(wav.grad).all() and wav.grad.abs().sum() > 0
    # a free spectrogram is read close to how its waveform is (the windows differ: 512-sample Hann vs 400)
    sounds = torch.from_numpy(_test_sounds(tmp_path)[:, 1600:17600])
    with torch.no_grad():
        direct, via = net.front(sounds), net.front.from_magnitude(stft(sounds, WORDS_STFT).abs())
        assert direct.shape == via.shape
        for a, b in zip(direct, via):  # noise 0.94, chirp 0.93 (its ridge is sharper in the longer window), word 0.99
            assert np.corrcoef(a.flatten(), b.flatten())[0, 1] > 0.9
        for a, b in zip(net.embedding(direct), net.embedding(via)):  # what the head reads: within 10 %
            assert float((a - b).norm() / a.norm()) < 0.15
        # a log-mel shorter than one window is padded with each clip's own floor: one embedding, as if alone
        short = direct[..., :40]
        together = net.embedding(torch.cat([short, short[:1] - 3.0]))
        assert together.shape == (len(short) + 1, 1, se.EMBEDDING_DIM)
        torch.testing.assert_close(together[:1], net.embedding(short[:1]), atol=1e-4, rtol=1e-4)


@needs_embedding
def test_training_over_the_embedding_moves_the_head_repeats_and_refuses_what_it_cannot_use(tmp_path):
    import torch
    from safetensors.torch import load_file

    from explorer.audio.words import load_word_net_dir
    from explorer.audio.wordstrain import TrainSettings, train_word_net
    from explorer.cli import main
    from explorer.errors import UserInputError

    _tiny_word_data(tmp_path / "data")
    settings = TrainSettings(steps=3, batch_size=8, spec_mask=True, front="speech-embedding", head_width=16,
                             checkpoint_every=100)
    config = train_word_net(tmp_path / "data", tmp_path / "a", settings)
    train_word_net(tmp_path / "data", tmp_path / "b", settings)
    train_word_net(tmp_path / "data", tmp_path / "c", TrainSettings(**{**settings.__dict__, "stop_after": 1}))
    assert config["arch"] == "speech-embedding" and config["width"] == 16 and config["n_mels"] == se.N_MELS
    first, second, short = (load_file(tmp_path / name / "model.safetensors") for name in "abc")
    assert all(torch.equal(first[k], second[k]) for k in first), "a run repeats bit for bit"
    assert not all(torch.equal(first[k], short[k]) for k in first), "training moved the head: the check can fail"
    net = load_word_net_dir(tmp_path / "a")
    assert type(net.net).__name__ == "EmbeddingKeywordNet"
    mixed = load_word_net_dir([tmp_path / "a", "assets/words"])  # each member reads its own front end
    assert sorted(mixed.fronts) == ["log-mel/40", "speech-embedding"]
    with pytest.raises(ValueError, match="different front ends"):  # one log-mel cannot stand for both
        mixed.log_probabilities_from_log_mel(torch.zeros(1, 1, 40, 101))
    with pytest.raises(UserInputError, match="--vtlp"):
        TrainSettings(front="speech-embedding", vtlp=0.1)
    for bad in ({"front": "wav2vec"}, {"head_width": 0}, {"head_width": 5000}):
        with pytest.raises(UserInputError):
            TrainSettings(**bad)
    common = ["audio", "words-train", "--data", str(tmp_path / "data"), "--steps", "2", "--threads", "1",
              "--checkpoint", str(tmp_path / "c.pt"), "--out", str(tmp_path / "bad")]
    assert main(common + ["--front", "speech-embedding", "--head-width", "-3"]) == 2
    assert not (tmp_path / "bad").exists()
    saved = json.loads((tmp_path / "a" / "config.json").read_text())
    for hostile in ({"arch": "transformer"}, {"width": 10 ** 6}, {"width": True}):
        (tmp_path / "a" / "config.json").write_text(json.dumps(saved | hostile))
        with pytest.raises(UserInputError, match="config"):
            load_word_net_dir(tmp_path / "a")


def test_a_missing_wheel_is_one_line_naming_the_install(monkeypatch, tmp_path):
    import importlib.util

    from explorer.audio.words import SPEECH_EMBEDDING, word_net_available
    from explorer.errors import UserInputError

    (tmp_path / "config.json").write_text(json.dumps({"arch": SPEECH_EMBEDDING, "labels": ["a", "b"], "width": 4}))
    (tmp_path / "model.safetensors").write_bytes(b"")

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == se.PACKAGE else real(name, *a))
    with pytest.raises(UserInputError, match="pip install --no-deps openwakeword==0.4.0"):
        se.model_dir()
    assert "openwakeword" in se.available()
    assert "pip install --no-deps openwakeword" in word_net_available(tmp_path)  # the page says it before loading


@needs_embedding
def test_an_ensemble_of_heads_computes_the_embedding_once_and_gets_the_members_mean():
    import torch
    import torch.nn.functional as F

    from explorer.audio.words import SPEECH_EMBEDDING, WordNet, build_net

    config = {"arch": SPEECH_EMBEDDING, "labels": [f"w{i}" for i in range(22)], "width": 8}
    torch.manual_seed(0)
    members = [build_net(config), build_net(config)]
    ensemble = WordNet(members, config)
    calls = []
    members[0].embedding.register_forward_hook(lambda *_: calls.append(0))
    members[1].embedding.register_forward_hook(lambda *_: calls.append(1))
    wav = torch.randn(2, 16000) * 0.1
    with torch.no_grad():
        got = ensemble.log_probabilities(wav)
        assert calls == [0], "one embedding pass for both heads"
        alone = [F.log_softmax(m(wav), -1) for m in members]
    torch.testing.assert_close(got, F.log_softmax((alone[0] + alone[1]) / 2, -1), atol=1e-5, rtol=1e-5)


def test_a_graph_the_port_cannot_run_exactly_is_refused_not_guessed():
    import torch

    from explorer.errors import UserInputError

    weight = {"w": torch.zeros(2, 1, 3, 3)}
    with pytest.raises(UserInputError, match=r"does not run: \['Softmax'\]"):
        se.SpeechEmbedding([("Conv", ["x", "w"], ["y"], {}), ("Softmax", ["y"], ["z"], {})], weight)
    with pytest.raises(UserInputError, match="not a chain at its Relu node"):  # a branch: input from elsewhere
        se.SpeechEmbedding([("Conv", ["x", "w"], ["y"], {}), ("Relu", ["x"], ["z"], {})], weight)
    with pytest.raises(UserInputError, match="unsupported convolution"):
        se.SpeechEmbedding([("Conv", ["x", "w"], ["y"], {"group": 2})], weight)

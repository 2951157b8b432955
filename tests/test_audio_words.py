"""Issue 19: the keyword network trained on synthetic speech, word dreams, the judges trained on human
speech and ears (pocketsphinx, DNSMOS, CREPE) and the random-start control."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

from explorer.audio.io import load_audio

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None,
                                  reason="espeak-ng is not installed (apt-get install espeak-ng)")


def _installed(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


needs_sphinx = pytest.mark.skipif(not _installed("pocketsphinx"),
                                  reason="pocketsphinx is not installed (requirements.txt)")
needs_dnsmos = pytest.mark.skipif(not all(_installed(m) for m in ("speechmos", "onnxruntime", "librosa")),
                                  reason="speechmos/onnxruntime/librosa are not installed (requirements.txt)")
needs_crepe = pytest.mark.skipif(not _installed("torchcrepe"),
                                 reason="torchcrepe is not installed (requirements-nodeps.txt)")


def espeak(text: str, voice: str = "en-us") -> np.ndarray:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "s.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-w", str(path), text], check=True, capture_output=True)
        return load_audio(path, 16000)


def white_noise(seconds: float = 1.5, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(int(seconds * 16000)) * 0.2).clip(-1, 1).astype(np.float32)


# ---- the data recipe ----------------------------------------------------------------------------
def test_recipe_is_deterministic_and_trim_finds_the_word():
    from explorer.audio.wordsdata import HELD_OUT, KEYWORDS, LABELS, UNKNOWN, recipe, trim

    a, b = recipe("espeak-ng"), recipe("espeak-ng")
    assert a == b and len(a) > 2000
    assert {u.word for u in a} >= set(KEYWORDS)
    assert all(u.label == LABELS.index(UNKNOWN) for u in a if u.word not in KEYWORDS)
    assert HELD_OUT == "festival" and {u.engine for u in recipe("festival")} == {"festival"}
    word = np.sin(np.arange(4000) * 0.1).astype(np.float32)
    padded = np.concatenate([np.zeros(8000, np.float32), word, np.zeros(6000, np.float32)])
    trimmed = trim(padded)
    assert abs(len(trimmed) - 4000) <= 160 and np.abs(trimmed).max() == pytest.approx(np.abs(word).max())


# ---- the shipped word network -------------------------------------------------------------------
@pytest.mark.skipif(shutil.which("festival") is None,
                    reason="festival is not installed (apt-get install festival festvox-kdlpc16k)")
def test_word_net_names_held_out_festival_words_above_chance(tmp_path):
    from scipy.stats import binom

    from explorer.audio.words import load_word_net
    from explorer.audio.wordsdata import KEYWORDS, LABELS, Utterance, engine_missing, synthesise
    from explorer.audio.wordstrain import centred

    if engine_missing("festival"):
        pytest.skip(engine_missing("festival"))
    net = load_word_net("cpu")
    assert net.net.front is not None and sum(p.numel() for p in net.net.parameters()) < 100_000  # small
    # ked_diphone: a voice no training engine has (the net trained on espeak-ng and flite only)
    words = KEYWORDS[::2]
    clips = synthesise([Utterance(w, LABELS.index(w), "festival", "ked_diphone") for w in words], tmp_path)
    right = sum(net.predict(centred(c))[0] == w for c, w in zip(clips, words))
    # chance is 1 in 22 classes: P(≥ right | chance) must be tiny
    assert binom.sf(right - 1, len(words), 1 / len(LABELS)) < 1e-4, f"{right}/{len(words)}"
    # and the word net reads this unheard voice as well as the issue asks of all three (85 %): 10 of these 10; the
    # log-mel net alone, the word net until the twenty-second look, reads 6
    log_mel = load_word_net("cpu", "log-mel")
    right_log_mel = sum(log_mel.predict(centred(c))[0] == w for c, w in zip(clips, words))
    assert right >= 9 and right_log_mel < right, (right, right_log_mel)


def test_word_net_gradient_reaches_the_waveform_and_windows_long_clips():
    import torch

    from explorer.audio.words import load_word_net

    net = load_word_net("cpu")
    wav = (torch.randn(2, 16000 * 2) * 0.1).requires_grad_(True)
    logp = net.log_probabilities(wav)
    assert logp.shape == (2, len(net.labels))
    torch.testing.assert_close(logp.exp().sum(-1), torch.ones(2))
    logp[:, net.index("yes")].sum().backward()
    assert wav.grad is not None and wav.grad.abs().sum() > 0


def test_word_net_ensemble_is_the_members_renormalised_mean_and_refuses_mixed_labels(tmp_path):
    """Members may read different front ends (each its own); they must name the same classes."""
    import torch

    from explorer.audio.words import (ASSET_DIR, DEFAULT_MEMBERS, WordNet, build_net, load_word_net, load_word_net_dir,
                                      word_net_folders)
    from explorer.errors import UserInputError

    shipped = load_word_net("cpu", "log-mel")
    twice = load_word_net_dir([ASSET_DIR, ASSET_DIR])  # a product of two identical experts is the expert itself
    wav = torch.randn(3, 16000) * 0.1
    torch.testing.assert_close(twice.log_probabilities(wav), shipped.log_probabilities(wav), atol=1e-5, rtol=0)
    torch.manual_seed(0)
    other = build_net(shipped.config).eval()
    own = load_word_net_dir(ASSET_DIR).net  # not the cached shipped net: WordNet() sets its members' state
    pair = WordNet((own, other), shipped.config)
    with torch.no_grad():
        mel = shipped.net.front(wav)
        members = [torch.log_softmax(m.head(m.features(mel)), -1) for m in (own, other)]
    expected = torch.log_softmax((members[0] + members[1]) / 2, -1)
    torch.testing.assert_close(pair.log_probabilities(wav), expected, atol=1e-5, rtol=0)
    assert not torch.allclose(expected, members[0], atol=1e-3)  # the second member does count
    x = wav.clone().requires_grad_(True)
    pair.log_probabilities(x)[:, pair.index("go")].sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    # members must name the same classes; an ensemble is bounded
    odd = tmp_path / "odd"
    shutil.copytree(ASSET_DIR, odd)
    config = json.loads((odd / "config.json").read_text())
    config["labels"] = list(reversed(config["labels"]))
    (odd / "config.json").write_text(json.dumps(config))
    with pytest.raises(UserInputError, match="other classes"):
        load_word_net_dir([ASSET_DIR, odd])
    config["labels"] = list(reversed(config["labels"]))  # the same classes, another front end (64 mel bands):
    config["n_mels"] = 64  # each member reads its own, and the ensemble is still the renormalised mean
    (odd / "config.json").write_text(json.dumps(config))
    mixed = load_word_net_dir([ASSET_DIR, odd])
    assert sorted(mixed.fronts) == ["log-mel/40", "log-mel/64"]
    with torch.no_grad():
        alone = [load_word_net_dir(f).log_probabilities(wav) for f in (ASSET_DIR, odd)]
        torch.testing.assert_close(mixed.log_probabilities(wav), torch.log_softmax((alone[0] + alone[1]) / 2, -1),
                                   atol=1e-5, rtol=0)
    config["sample_rate"] = 8000
    (odd / "config.json").write_text(json.dumps(config))
    with pytest.raises(UserInputError, match="16000 Hz"):
        load_word_net_dir([ASSET_DIR, odd])
    with pytest.raises(UserInputError, match="At most"):
        word_net_folders(",".join(["x"] * 9))
    assert word_net_folders("log-mel") == (str(ASSET_DIR),)
    assert word_net_folders("") == (str(ASSET_DIR), *(str(ASSET_DIR / m) for m in DEFAULT_MEMBERS))
    shipped_ensemble = load_word_net("cpu", "ensemble")  # the three shipped members load and differ
    assert len(shipped_ensemble.nets) == 3
    assert not torch.allclose(shipped_ensemble.log_probabilities(wav), shipped.log_probabilities(wav), atol=1e-3)


# ---- the judges ---------------------------------------------------------------------------------
@needs_espeak
@needs_sphinx
def test_closed_set_verdict_names_words_and_can_fail():
    from explorer.audio.hearing import sphinx_judges
    from explorer.audio.wordsdata import KEYWORDS

    yes = sphinx_judges(espeak("yes"), KEYWORDS, target="yes")
    verdict = {v.key: v for v in yes}["sphinx_word"]
    assert verdict.value == 1.0 and verdict.answer == "yes"
    # the same verdict fails: asked for "yes", it hears "three" in espeak-ng's "three", and nothing in noise
    three = {v.key: v for v in sphinx_judges(espeak("three"), KEYWORDS, target="yes")}["sphinx_word"]
    assert three.value == 0.0 and three.answer == "three"
    noise = {v.key: v for v in sphinx_judges(white_noise(), KEYWORDS, target="yes")}["sphinx_word"]
    assert noise.value == 0.0 and noise.answer == "(nothing)"
    assert noise.text() == "(nothing)"


@needs_espeak
@needs_sphinx
@needs_dnsmos
@needs_crepe
def test_each_hearing_judge_scores_espeak_speech_above_white_noise():
    from explorer.audio.hearing import hearing_judges

    speech = hearing_judges(espeak("Hello, can you hear me speaking?"), 16000, target_word=None)
    noise = hearing_judges(white_noise(2.0), 16000, target_word=None)
    s, n = {v.key: v for v in speech}, {v.key: v for v in noise}
    assert s["sphinx_word"].value is not None  # judged
    assert s["sphinx_transcript"].value > n["sphinx_transcript"].value  # words heard in speech, none in noise
    for key in ("dnsmos_sig", "dnsmos_ovrl", "crepe_periodicity"):
        assert s[key].value > n[key].value + 0.3, (key, s[key].value, n[key].value)


@needs_crepe
def test_crepe_port_tracks_a_tone():
    from explorer.audio.clips import tone
    from explorer.audio.crepe import pitch_track

    pitch, periodicity = pitch_track(tone(0.5, 16000, 330.0))
    assert abs(np.median(pitch) / 330.0 - 1) < 0.02 and periodicity.mean() > 0.8
    _, noisy = pitch_track(white_noise(0.5))
    assert noisy.mean() < 0.4


def test_hearing_judges_say_not_judged_without_their_packages(monkeypatch):
    from explorer.audio import hearing

    monkeypatch.setitem(sys.modules, "pocketsphinx", None)
    monkeypatch.setitem(sys.modules, "speechmos", None)
    verdicts = {v.key: v
                for v in hearing.sphinx_judges(white_noise(), ("yes", "no")) + hearing.dnsmos_judges(white_noise())}
    for key in ("sphinx_word", "sphinx_transcript", "dnsmos_sig", "dnsmos_bak", "dnsmos_ovrl"):
        assert verdicts[key].value is None and verdicts[key].text() == "not judged"
    assert "pip install pocketsphinx" in verdicts["sphinx_word"].reason
    assert "speechmos" in verdicts["dnsmos_sig"].reason


# ---- the control --------------------------------------------------------------------------------
def test_difference_interval_and_claim_follow_the_data():
    from explorer.audio.control import clopper_pearson, difference

    same = difference([1.0, 2.0, 3.0], [1.0, 2.0, 3.0])
    assert same["difference"] == 0 and same["low"] < 0 < same["high"] and same["claim"] == "no difference shown"
    apart = difference([5.0, 5.1, 4.9], [1.0, 1.2, 0.8, 1.1])
    assert apart["difference"] == pytest.approx(5.0 - 1.025) and apart["low"] > 0 and apart["claim"] == "higher"
    assert difference([0.0], [1.0, 1.0, 1.0])["claim"] == "lower"
    # one dream is one draw: inside the starts' range it is no claim, though above their mean's interval
    starts = [1.0, 2.0, 3.0, 4.0] * 2
    assert (difference([3.5], starts)["claim"] == "no difference shown"
            and difference([5.0], starts)["claim"] == "higher")
    assert difference([], [1.0])["claim"] == "not judged"
    lo, hi = clopper_pearson(0, 10)
    assert lo == 0 and hi == pytest.approx(1 - 0.025 ** (1 / 10), abs=1e-9)  # exact upper bound for k = 0


def test_a_start_that_is_the_same_for_every_seed_gets_no_control():
    from explorer.audio.dream import DreamSettings, dream

    fixed = dream(DreamSettings(net="words", start="tone", seconds=1.0, steps=2, fit_steps=2,
                                control_starts=2, hearing=False))
    assert fixed.random_starts is None and any("No control" in note for note in fixed.notes)
    free = dream(DreamSettings(net="words", param="spectrogram", start="noise", seconds=1.0, steps=2,
                               control_starts=2, hearing=False))
    assert free.random_starts["n"] == 2 and not any("No control" in note for note in free.notes)


# ---- dreams -------------------------------------------------------------------------------------
def test_word_dream_through_the_synthesiser_and_the_free_spectrogram():
    from explorer.audio.dream import DreamSettings, dream

    synth = dream(DreamSettings(net="words", word="seven", seconds=1.0, steps=12, hearing=False), device="cpu")
    assert synth.param == "synth" and synth.target == "words:seven" and synth.controls is not None
    assert synth.roundtrip["value"] > synth.before["value"] + 0.2  # heard in the WAV, not only by the optimiser
    free = dream(DreamSettings(net="words", word="no", seconds=1.0, steps=12, param="spectrogram",
                               hearing=False), device="cpu")
    assert "adversarial" in free.param_label and free.roundtrip["value"] > free.before["value"]


@needs_sphinx
def test_cli_word_dream_writes_judges_and_the_random_start_control(tmp_path):
    from explorer.cli import main

    out = tmp_path / "yes"
    assert main(["--device", "cpu", "audio", "dream", "--net", "words", "--target", "yes", "--steps", "4",
                 "--control", "2", "--out", str(out)]) == 0
    data = json.loads((out / "dream.json").read_text())
    assert data["target"] == "words:yes" and data["settings"]["seconds"] == 1.0
    for when in ("before", "optimised", "roundtrip"):
        assert ({"sphinx_word", "sphinx_transcript", "dnsmos_sig", "crepe_periodicity", "voiced_fraction"}
                <= set(data["judges"][when]))
    control = data["random_starts"]
    assert control["n"] == 2 and len(control["verdicts"]) == 2
    sig = control["comparison"]["dnsmos_sig"]
    assert sig["starts"] == 2 and sig["low"] <= sig["difference"] <= sig["high"]
    assert set(control["comparison"]["sphinx_word"]["start_rate"]) == {"k", "n", "rate", "low", "high"}
    assert main(["audio", "dream", "--net", "words", "--target", "banana", "--out", str(tmp_path / "b")]) == 2


def _tiny_word_data(folder) -> None:
    """Two short tones per class and voice for espeak-ng (one of them the validation accent), flite and
    festival: the cache format `words-data` writes, small enough to train a few steps in a second."""
    from explorer.audio.wordsdata import LABELS, cache_path

    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    voices = {"espeak-ng": ["en-gb+m1", "en-029+m1"], "flite": ["kal"], "festival": ["ked_diphone"]}
    for engine, names in voices.items():
        clips, labels, words, voice = [], [], [], []
        for c, label in enumerate(LABELS):
            for v in names:
                for _ in range(2):
                    t = np.arange(int(0.3 * 16000)) / 16000
                    tone = 0.3 * np.sin(2 * np.pi * (150 + 40 * c) * t) + 0.01 * rng.standard_normal(len(t))
                    clips.append((tone * 32767).astype(np.int16))
                    labels.append(c)
                    words.append(label)
                    voice.append(v)
        offsets = np.concatenate([[0], np.cumsum([len(x) for x in clips])])
        np.savez(cache_path(folder, engine), samples=np.concatenate(clips), offsets=offsets,
                 labels=np.array(labels), words=np.array(words), voices=np.array(voice))


def test_word_net_training_repeats_exactly_and_a_resumed_run_matches_an_uninterrupted_one(tmp_path):
    """Every random draw of step k (batch, augmentation, masks and dropout) is a function of (seed, k)."""
    import torch
    from safetensors.torch import load_file

    from explorer.audio.wordstrain import TrainSettings, train_word_net

    _tiny_word_data(tmp_path / "data")
    settings = TrainSettings(steps=6, batch_size=8, spec_mask=True, seed=3, checkpoint_every=100)

    def weights(name: str, stop_after: int | None = None, checkpoint=None) -> dict:
        run = settings if stop_after is None else TrainSettings(**{**settings.__dict__, "stop_after": stop_after})
        train_word_net(tmp_path / "data", tmp_path / name, run, checkpoint=checkpoint)
        return load_file(tmp_path / name / "model.safetensors")

    torch.manual_seed(123)  # the caller's global RNG state must not matter
    first = weights("a")
    torch.manual_seed(456)
    again = weights("b")
    assert all(torch.equal(first[k], again[k]) for k in first)
    ckpt = tmp_path / "resume.pt"
    weights("c", stop_after=3, checkpoint=ckpt)
    resumed = weights("d", checkpoint=ckpt)
    assert all(torch.equal(first[k], resumed[k]) for k in first)
    start = weights("e", stop_after=1)
    assert not all(torch.equal(first[k], start[k]) for k in first)  # training moved the weights: the check can fail


def test_cli_trains_the_widths_it_is_given_and_refuses_bad_ones(tmp_path):
    import json as _json

    from explorer.audio.words import load_word_net_dir
    from explorer.audio.wordstrain import TrainSettings
    from explorer.cli import main
    from explorer.errors import UserInputError

    _tiny_word_data(tmp_path / "data")
    common = ["audio", "words-train", "--data", str(tmp_path / "data"), "--steps", "2", "--batch-size", "4",
              "--checkpoint", str(tmp_path / "c.pt"), "--threads", "1"]
    assert main(common + ["--widths", "8,12", "--out", str(tmp_path / "net")]) == 0
    assert _json.loads((tmp_path / "net" / "config.json").read_text())["widths"] == [8, 12]
    net = load_word_net_dir(tmp_path / "net")
    assert [m.out_channels for m in net.net.body if hasattr(m, "out_channels")] == [8, 12]
    for bad in ("8,x", "0,8", ",".join(["4"] * 7), "2048"):  # 7 blocks would halve 40 mel bands to nothing
        assert main(common + ["--widths", bad, "--out", str(tmp_path / "bad")]) == 2
    assert not (tmp_path / "bad").exists()
    config = _json.loads((tmp_path / "net" / "config.json").read_text())
    (tmp_path / "net" / "config.json").write_text(_json.dumps(config | {"widths": [4] * 7}))
    with pytest.raises(UserInputError, match="halve 40 mel bands"):  # a shipped config is checked the same way
        load_word_net_dir(tmp_path / "net")
    with pytest.raises(UserInputError, match="halve 40 mel bands"):  # and so is a library caller's recipe
        TrainSettings(widths=(4,) * 7)
    for bad in ({"random_eq": float("nan")}, {"vtlp": 0.5}, {"flite_weight": 0.0}, {"stop_after": 9, "steps": 4}):
        with pytest.raises(UserInputError):
            TrainSettings(**bad)


def test_word_dreams_default_to_noise_30_db_below_the_peak_and_record_it():
    from explorer.audio.dream import DreamSettings, dream
    from explorer.audio.parameterisations import added_noise_for

    assert added_noise_for(DreamSettings(net="words")) == -30.0
    assert added_noise_for(DreamSettings(net="words:up")) == -30.0
    assert added_noise_for(DreamSettings(net="speech")) == -50.0
    assert added_noise_for(DreamSettings(net="music:piano")) == -50.0
    assert added_noise_for(DreamSettings(net="words", added_noise_db=-45.0)) == -45.0  # a chosen level wins
    result = dream(DreamSettings(net="words", word="up", seconds=1.0, steps=2, hearing=False), device="cpu")
    assert result.settings.added_noise_db == -30.0  # dream.json says what the loop used, not "default"
    chosen = dream(DreamSettings(net="words", word="up", seconds=1.0, steps=2, hearing=False, added_noise_db=-60.0),
                   device="cpu")
    assert chosen.settings.added_noise_db == -60.0
    assert not np.array_equal(result.after_audio, chosen.after_audio)  # the level reaches the loop
    free = dream(DreamSettings(net="words", word="up", seconds=1.0, steps=1, hearing=False, param="spectrogram"),
                 device="cpu")
    assert free.settings.added_noise_db is None  # the free spectrogram adds no noise: nothing to record


def test_cli_refuses_a_colour_out_of_range_and_training_uses_it(tmp_path):
    import torch
    from safetensors.torch import load_file

    from explorer.audio.wordstrain import TrainSettings, train_word_net
    from explorer.cli import main

    _tiny_word_data(tmp_path / "data")
    common = ["audio", "words-train", "--data", str(tmp_path / "data"), "--steps", "2", "--batch-size", "4",
              "--checkpoint", str(tmp_path / "c.pt"), "--threads", "1"]
    for bad in ("30", "-1", "nan"):
        assert main(common + ["--random-eq", bad, "--out", str(tmp_path / "bad")]) == 2
    assert not (tmp_path / "bad").exists()  # refused before the output folder is made
    assert main(common + ["--random-eq", "6", "--out", str(tmp_path / "ok")]) == 0  # the same data trains
    # the option reaches the training loop: two steps with the colour move the weights elsewhere than without
    plain = TrainSettings(steps=2, batch_size=4, checkpoint_every=100)
    coloured = TrainSettings(steps=2, batch_size=4, checkpoint_every=100, random_eq=6.0)
    train_word_net(tmp_path / "data", tmp_path / "plain", plain)
    train_word_net(tmp_path / "data", tmp_path / "coloured", coloured)
    a, b = load_file(tmp_path / "plain" / "model.safetensors"), load_file(tmp_path / "coloured" / "model.safetensors")
    assert not all(torch.equal(a[k], b[k]) for k in a)


def test_adversarial_training_is_bounded_reaches_the_loop_and_repeats(tmp_path):
    import torch
    from safetensors.torch import load_file

    from explorer.audio.wordstrain import TrainSettings, train_word_net
    from explorer.cli import main
    from explorer.errors import UserInputError

    _tiny_word_data(tmp_path / "data")
    common = ["audio", "words-train", "--data", str(tmp_path / "data"), "--steps", "2", "--batch-size", "4",
              "--checkpoint", str(tmp_path / "c.pt"), "--threads", "1"]
    for flag, bad in (("--adv-eps", "25"), ("--adv-eps", "-1"), ("--adv-eps", "nan"), ("--adv-steps", "0"),
                      ("--adv-steps", "50")):
        assert main(common + [flag, bad, "--out", str(tmp_path / "bad")]) == 2
    assert not (tmp_path / "bad").exists()  # refused before the output folder is made
    for bad in ({"adv_eps": float("inf")}, {"adv_steps": 2.5}):
        with pytest.raises(UserInputError):
            TrainSettings(**bad)
    plain = TrainSettings(steps=2, batch_size=4, checkpoint_every=100)
    robust = TrainSettings(steps=2, batch_size=4, checkpoint_every=100, adv_eps=3.0)
    train_word_net(tmp_path / "data", tmp_path / "plain", plain)
    train_word_net(tmp_path / "data", tmp_path / "robust", robust)
    train_word_net(tmp_path / "data", tmp_path / "again", robust)
    a, b, c = (load_file(tmp_path / d / "model.safetensors") for d in ("plain", "robust", "again"))
    assert not all(torch.equal(a[k], b[k]) for k in a)  # the attack's points, not the clean ones, were trained on
    assert all(torch.equal(b[k], c[k]) for k in b)  # and a run repeats bit for bit (the attack draws nothing)


def test_a_checkpoint_resumes_only_with_its_own_recipe(tmp_path):
    from explorer.audio.wordstrain import TrainSettings, train_word_net
    from explorer.errors import UserInputError

    _tiny_word_data(tmp_path / "data")
    ckpt = tmp_path / "c.pt"
    first = TrainSettings(steps=4, stop_after=2, batch_size=4, checkpoint_every=100)
    train_word_net(tmp_path / "data", tmp_path / "a", first, checkpoint=ckpt)
    for other in (TrainSettings(steps=4, batch_size=4, random_eq=6.0), TrainSettings(steps=4, batch_size=4,
                                                                                      widths=(8, 8))):
        with pytest.raises(UserInputError, match="other settings"):
            train_word_net(tmp_path / "data", tmp_path / "b", other, checkpoint=ckpt)
    train_word_net(tmp_path / "data", tmp_path / "c", TrainSettings(steps=4, batch_size=4, checkpoint_every=50),
                   checkpoint=ckpt)  # only where it stops (and how often it saves) may differ


def test_calibration_starts_are_the_word_dreams_control_and_can_be_redone_alone(tmp_path):
    """The calibration's random starts are the starts the word dreams' own control judges (at the word dreams'
    synthesiser defaults, recorded), and ``--keep-recordings`` decodes only them, keeping the recordings rows."""
    import json as _json

    pytest.importorskip("pocketsphinx")
    from explorer.audio import io as audio_io
    from explorer.audio.dream import DreamSettings, dream
    from explorer.audio.hearing import random_start_sound
    from explorer.cli import main

    start = random_start_sound("synth", 1_000_000)
    control = dream(DreamSettings(net="words", seconds=1.0, steps=0, seed=1_000_000, hearing=False), device="cpu")
    played = audio_io.load_audio(audio_io.wav_bytes(control.after_audio, 16000), 16000)
    assert np.array_equal(start, played)  # the very sound the control hears, not a look-alike
    old = _json.loads((Path(__file__).resolve().parents[1] / "assets/words/sphinx_calibration.json").read_text())
    (tmp_path / "old.json").write_text(_json.dumps(old))
    _tiny_word_data(tmp_path / "data")
    args = ["audio", "words-calibrate", "--data", str(tmp_path / "data"), "--synth-starts", "2",
            "--spectrogram-starts", "1"]
    assert main(args + ["--keep-recordings", str(tmp_path / "old.json"), "--out", str(tmp_path / "new")]) == 0
    table = _json.loads((tmp_path / "new" / "sphinx_calibration.json").read_text())
    assert table["recordings"] == old["recordings"]  # kept as they were, not decoded again
    synth = table["random_starts"]["synth"]
    assert synth["n"] == 2 and synth["control_ms"] == 5.0 and synth["control_tv"] == 0.03
    (tmp_path / "bad.json").write_text("[1, 2]")
    assert main(args + ["--keep-recordings", str(tmp_path / "bad.json"), "--out", str(tmp_path / "x")]) == 2

"""Sound files are checked from their header before anything is decoded or resampled (issue 13 defects 2, 12)."""

from __future__ import annotations

import io
import time

import numpy as np
import pytest

from explorer import limits
from explorer.audio import io as audio_io
from tests.bad_inputs import wav_bytes


@pytest.mark.parametrize("rate", [9_999_991, 2**31 - 1, 500, 0])
def test_odd_or_huge_sample_rates_are_refused_before_resampling(rate):
    started = time.perf_counter()
    with pytest.raises(audio_io.AudioInputError, match=f"sample rate of {rate:,} Hz; only 1,000–384,000 Hz"):
        audio_io.load_audio(wav_bytes(0.1, header_rate=rate), name="odd.wav")
    assert time.perf_counter() - started < 1.0  # before the fix: 4.8 GB then MemoryError (2³¹−1 Hz: 320 GiB)


def test_an_awkward_but_legal_rate_resamples_with_a_small_filter():
    """44 101 Hz → 16 kHz has no small exact ratio (16000/44101): the nearest ratio with terms ≤ 1000 keeps the
    pitch."""
    rate = 44_101
    audio = audio_io.load_audio(wav_bytes(0.5, rate=rate), 16000, name="odd.wav")
    assert abs(len(audio) - 8000) <= 2
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(len(audio))))
    assert abs(np.argmax(spectrum) * 16000 / len(audio) - 440) < 4


def test_a_truncated_wav_says_so_instead_of_being_padded():
    truncated = wav_bytes(2.0, keep_frames=1440)  # header: 2 s; data: 0.09 s
    with pytest.raises(audio_io.AudioInputError,
                       match=r"short.wav is truncated: its header announces 2.00 s but the file holds 0.09 s"):
        audio_io.load_audio(truncated, name="short.wav")


def test_a_zero_byte_wav_names_the_file_not_a_python_object(tmp_path):
    for source, name in ((b"", "empty.wav"), (io.BytesIO(b""), "empty.wav")):
        with pytest.raises(audio_io.AudioInputError) as caught:
            audio_io.load_audio(source, name=name)
        assert str(caught.value).startswith("empty.wav is empty (0 bytes)") and "0x" not in str(caught.value)
    (tmp_path / "e.wav").write_bytes(b"")
    with pytest.raises(audio_io.AudioInputError, match="e.wav is empty"):
        audio_io.load_audio(tmp_path / "e.wav")
    with pytest.raises(audio_io.AudioInputError) as caught:
        audio_io.load_audio(b"RIFF" + bytes(60), name="junk.wav")
    assert "object at 0x" not in str(caught.value)


def test_too_many_channels_and_too_long_are_refused_from_the_header():
    with pytest.raises(audio_io.AudioInputError, match="12 channels; at most 8"):
        audio_io.load_audio(wav_bytes(0.05, channels=12), name="multi.wav")
    long = wav_bytes(limits.MAX_AUDIO_SECONDS + 1, rate=1000)
    with pytest.raises(audio_io.AudioInputError, match="31.0 s long; the limit is 30 s"):
        audio_io.load_audio(long, name="long.wav")


def test_an_ordinary_wav_still_loads(tmp_path):
    path = tmp_path / "ok.wav"
    path.write_bytes(wav_bytes(0.25, rate=22050, channels=2))
    audio = audio_io.load_audio(path, 16000)
    assert audio.dtype == np.float32 and abs(len(audio) - 4000) <= 1


def test_a_short_start_sound_is_padded_with_a_note_in_the_result_the_json_and_the_cli(tmp_path, capsys):
    """A complete WAV shorter than the dream is padded with silence — and the user is told (page, CLI, JSON)."""
    import json

    from explorer.cli import main

    short = tmp_path / "short.wav"
    short.write_bytes(wav_bytes(0.3, rate=16000))
    out = tmp_path / "dream"
    code = main(["--device", "cpu", "audio", "dream", "--net", "speech", "--param", "spectrogram",
                 "--start", str(short),
                 "--seconds", "1", "--steps", "1", "--control", "0", "--no-hearing", "--out", str(out)])
    assert code == 0
    note = "The start sound lasts 0.30 s, shorter than the 1 s dream: the rest was padded with silence."
    assert f"note: {note}" in capsys.readouterr().out
    assert json.loads((out / "dream.json").read_text())["notes"] == [note]
    long = tmp_path / "long.wav"
    long.write_bytes(wav_bytes(1.2, rate=16000))
    assert main(["--device", "cpu", "audio", "dream", "--net", "speech", "--param", "spectrogram", "--start", str(long),
                 "--seconds", "1", "--steps", "1", "--control", "0", "--no-hearing",
                 "--out", str(tmp_path / "d2")]) == 0
    assert json.loads((tmp_path / "d2" / "dream.json").read_text())["notes"] == []

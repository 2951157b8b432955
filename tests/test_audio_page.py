"""AppTest of the "Audio hallucinations" page: a short speech dream end to end."""

from __future__ import annotations

from streamlit.testing.v1 import AppTest


def _page(root) -> AppTest:
    return AppTest.from_file(str(root / "explorer/ui/pages/audio.py"), default_timeout=120)


def test_page_dreams_speech_and_shows_round_trip(root):
    at = _page(root).run()
    assert not at.exception
    at.number_input(key="audio_seconds").set_value(1.0)
    at.number_input(key="audio_steps").set_value(40)
    at.button(key="audio_go").click().run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    metrics = {m.label: m.value for m in at.metric}
    start = float(metrics["Start: speech probability"])
    roundtrip = float(metrics["Round trip (WAV read back)"])
    assert start < 0.1 and roundtrip > start + 0.5  # the dream is heard by the network, not just seen
    labels = [b.label for b in at.get("download_button")]
    assert {"Download before.wav", "Download after.wav", "Download round-trip figures JSON"} <= set(labels)
    assert len(at.get("plotly_chart")) >= 4  # bars, per-chunk curve, spectrograms
    assert len(at.get("audio")) == 2


def test_page_music_choice_and_bad_settings(root):
    at = _page(root).run()
    at.radio(key="audio_net").set_value("music").run()
    assert at.selectbox(key="audio_tag").value == "piano"
    at.selectbox(key="audio_start").set_value("noise").run()
    at.selectbox(key="audio_phase").set_value("original").run()
    at.button(key="audio_go").click().run()
    assert not at.exception
    assert any("Original phase" in e.value for e in at.error)  # a message, not a traceback

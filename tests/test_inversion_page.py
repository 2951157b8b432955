"""The Inversion & DeepDream page, headless (AppTest): uploaded photo, built-in photo, bad upload, all modes."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

PAGE = "explorer/ui/pages/inversion.py"


def _png(h: int = 60, w: int = 90) -> bytes:
    yy, xx = np.mgrid[0:h, 0:w]
    array = np.stack([xx * 255 // w, yy * 255 // h, np.full_like(xx, 120)], -1).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def app(root):
    at = AppTest.from_file(str(root / PAGE), default_timeout=180)
    at.run()
    assert not at.exception, at.exception
    return at


def assert_log_axis_labels_decades(chart, axis: str) -> None:
    """A log axis whose labelled ticks are powers of ten only, written plainly (0.01, 0.1, 1)."""
    import json
    import math

    layout = json.loads(chart.proto.spec)["layout"][axis]
    assert layout["type"] == "log" and layout["tickmode"] == "array", layout
    assert layout["tickvals"] and all(abs(math.log10(v) - round(math.log10(v))) < 1e-9 for v in layout["tickvals"])
    assert layout["ticktext"] == [f"{v:g}" for v in layout["tickvals"]]


def _tiny_settings(at: AppTest) -> None:
    at.number_input(key="inv_size").set_value(48)
    at.run()


def _upload(app: AppTest, name: str, data: bytes) -> None:
    app.radio(key="inv_source").set_value("Upload")
    app.run()
    app.file_uploader(key="inv_file").upload(name, data, "image/png")
    app.run()


def test_invert_an_uploaded_photo(app):
    _upload(app, "gradient.png", _png())
    _tiny_settings(app)
    assert any("gradient.png · 48×48" in str(img.proto) for img in app.get("image"))  # the uploaded photo is shown
    app.multiselect(key="inv_layers").set_value(["blocks.0", "blocks.4"])
    app.number_input(key="inv_steps").set_value(3)
    app.run()
    app.button(key="inv_go").click()
    app.run()
    assert not app.exception, app.exception
    assert not app.error, [e.value for e in app.error]
    result = app.session_state["inv_result"]["result"]
    assert result.layers == ["blocks.0", "blocks.4"] and result.steps_done == 3
    assert result.photo.shape == (3, 48, 48)
    assert "What each layer remembers" in app.subheader[0].value
    assert len(app.get("plotly_chart")) == 2  # error per step per layer, final error + SSIM per layer
    assert_log_axis_labels_decades(app.get("plotly_chart")[0], "yaxis")  # the error chart: no minor-tick digits
    assert len(app.get("download_button")) >= 4  # one per reconstruction, strip, JSON


def test_removing_the_upload_with_its_x_stops_using_it(app):
    """Defect 12 of issue 13: after the ✕ the page kept using the removed photo."""
    _upload(app, "gradient.png", _png())
    assert any("gradient.png" in str(img.proto) for img in app.get("image"))
    app.file_uploader(key="inv_file").clear()
    app.run()
    assert not app.exception
    assert not any("gradient.png" in str(img.proto) for img in app.get("image"))
    assert any("Upload a photo to start" in i.value for i in app.info)
    # switching to a built-in photo and back does not bring the removed file back either
    app.radio(key="inv_source").set_value("Built-in").run()
    app.radio(key="inv_source").set_value("Upload").run()
    assert any("Upload a photo to start" in i.value for i in app.info)


def test_corrupt_upload_shows_an_error_and_the_page_survives(app):
    _upload(app, "broken.jpg", b"\xff\xd8\xff\xe0" + b"junk" * 50)
    assert not app.exception
    assert len(app.error) == 1
    message = app.error[0].value.lower()
    assert "corrupt" in message or "not an image" in message
    assert not app.button  # the page stopped cleanly before offering a run


def test_dream_and_caricature_of_a_builtin_photo(app):
    _tiny_settings(app)
    app.radio(key="inv_mode").set_value("DeepDream")
    app.run()
    app.number_input(key="inv_octaves").set_value(2)
    app.number_input(key="inv_dream_steps").set_value(2)
    app.run()
    app.button(key="inv_go").click()
    app.run()
    assert not app.exception, app.exception
    dream = app.session_state["inv_result"]["result"]
    assert dream.steps_done == 4 and dream.image.shape == (3, 48, 48)

    app.radio(key="inv_mode").set_value("Caricature")
    app.run()
    app.number_input(key="inv_car_steps").set_value(2)
    app.run()
    app.button(key="inv_go").click()
    app.run()
    assert not app.exception, app.exception
    caricature = app.session_state["inv_result"]["result"]
    assert caricature.steps_done == 2 and caricature.images.shape[0] == 1
    assert any("Caricature" in s.value for s in app.subheader)


def test_invert_a_builtin_photo_from_another_photo(app):
    _tiny_settings(app)
    app.multiselect(key="inv_layers").set_value(["blocks.2"])
    app.number_input(key="inv_steps").set_value(2)
    app.selectbox(key="inv_init").set_value("image")
    app.run()
    app.selectbox(key="inv_init_photo").set_value("coffee")
    app.run()
    app.button(key="inv_go").click()
    app.run()
    assert not app.exception, app.exception
    result = app.session_state["inv_result"]["result"]
    from explorer import inversion

    assert result.settings.init == "image"
    assert (result.initial[0] - inversion.load_photo("builtin:coffee", 48)).abs().max() < 1e-6  # started from coffee
    assert result.photo.shape == (3, 48, 48)  # the astronaut, the default built-in photo

"""Bounds before allocation (issue 13 defects 1, 3, 4, 10, 12): every user-given number has a documented
limit (explorer/limits.py) and is checked before anything big exists."""

from __future__ import annotations

import io
import math
import time

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from explorer import inversion, limits
from explorer.errors import UserInputError
from explorer.images import ImageLoadError, fit, load_image
from explorer.optvis import RenderSettings, objectives, render
from explorer.parsing import parse_units


def _png(width: int, height: int, mode: str = "1") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, (width, height)).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


# ---- defect 1: a 138-byte 20000×1 PNG -------------------------------------------------------------
def test_a_tiny_wide_strip_is_refused_from_its_header_naming_the_file():
    strip = _png(20000, 1)
    assert len(strip) < 200
    with pytest.raises(ImageLoadError, match=r"wide\.png: 20000×1 pixels is a 20000:1 strip; the limit is 20:1"):
        inversion.load_photo(strip, 224, name="wide.png")


def test_fit_never_allocates_the_huge_intermediate():
    # before the fix: resize to 1024×(1024·10000) first = 126 GB, then crop (RuntimeError: can't allocate)
    strip = torch.rand(3, 2, 20000)
    cropped = fit(strip, 1024, "crop")
    assert cropped.shape == (3, 1024, 1024)
    padded = fit(strip, 1024, "pad")
    assert padded.shape == (3, 1024, 1024)
    assert torch.allclose(padded[:, :500], torch.full((3, 500, 1024), 0.5))  # grey bars above and below


@pytest.mark.parametrize("name", ["chelsea", "coffee", "rocket"])
@pytest.mark.parametrize("target", [64, 224])
def test_crop_first_matches_resize_then_crop_on_real_photos(name, target):
    """The memory-safe order gives the picture the old order gave (they differ by under half an output
    pixel of centring, the old order rounding the crop offset in the resized image)."""
    photo = load_image(f"builtin:{name}")
    h, w = photo.shape[1:]
    scale = max(target / h, target / w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    big = F.interpolate(photo[None], size=(nh, nw), mode="bilinear", align_corners=False, antialias=True)[0]
    top, left = (nh - target) // 2, (nw - target) // 2
    reference = big[:, top : top + target, left : left + target].clamp(0, 1)
    assert (fit(photo, target, "crop") - reference).abs().mean() < 0.02


def test_the_pixel_limit_message_names_one_limit_and_the_file():
    for side in (7000, 15000):  # under PIL's own error threshold, and over it (PIL refuses first)
        with pytest.raises(ImageLoadError) as caught:
            load_image(_png(side, side), name="holiday.png")
        message = str(caught.value)
        assert message.startswith("holiday.png:") and f"{limits.MAX_IMAGE_PIXELS:,}" in message
        assert "80" not in message.replace(f"{limits.MAX_IMAGE_PIXELS:,}", "") and "upload:" not in message


def test_empty_image_file_says_so():
    with pytest.raises(ImageLoadError, match="empty"):
        load_image(b"", name="x.png")


# ---- defect 3: parse_units checks ranges before expanding ------------------------------------------
def test_parse_units_checks_a_huge_range_before_expanding_it():
    started = time.perf_counter()
    with pytest.raises(UserInputError, match="Unit 100000000 is out of range: valid units are 0–23"):
        parse_units("0-100000000", limit=24)
    with pytest.raises(UserInputError, match="too many"):
        parse_units("0-100000000")
    with pytest.raises(UserInputError, match="too many"):
        parse_units(",".join(f"0-{limits.MAX_UNITS}" for _ in range(3)))
    assert time.perf_counter() - started < 0.5  # before the fix: 12.8 s and 4.7 GB
    assert parse_units("0-3,7") == [0, 1, 2, 3, 7]
    assert parse_units("5-5") == [5]
    with pytest.raises(UserInputError, match="smaller number first"):
        parse_units("9-3")


# ---- defects 4 and 10: sizes, batches, steps and learning rates ------------------------------------
@pytest.mark.parametrize("field, value, message", [
    ("size", 8192, "Size 8192 is out of range: use 16–1024 px"),
    ("size", 1, "Size 1 is out of range"),
    ("size", 0, "Size 0 is out of range"),
    ("steps", -5, "Steps -5 is out of range"),
    ("steps", 10**9, "Steps 1000000000 is out of range"),
    ("lr", 1e9, "Learning rate 1e\\+09 is out of range: use more than 0 and at most 1"),
    ("lr", -1.0, "Learning rate -1 is out of range"),
    ("lr", 0.0, "Learning rate 0 is out of range"),
    ("lr", math.nan, "Learning rate must be a finite number"),
    ("lr", math.inf, "Learning rate must be a finite number"),
    ("tv", math.nan, "Tv must be a finite number"),
    ("seed", -1, "Seed -1 is out of range"),
])
def test_render_settings_refuse_out_of_range_numbers_when_built(field, value, message):
    with pytest.raises(UserInputError, match=message):
        RenderSettings(**{field: value})


def test_render_refuses_a_batch_over_the_pixel_budget_before_allocating(tiny):
    objective = objectives.deepdream(tiny.main_layers()[0].name)
    started = time.perf_counter()
    with pytest.raises(UserInputError, match="too much for one batch"):
        render(tiny, objective, RenderSettings(size=1024, steps=1), batch=4)
    with pytest.raises(UserInputError, match="Batch 10000 is out of range"):
        render(tiny, objective, RenderSettings(size=32, steps=1), batch=10_000)
    assert time.perf_counter() - started < 1.0


def test_a_batch_that_does_not_match_the_units_is_a_user_error(tiny):
    layer = tiny.main_layers()[0].name
    with pytest.raises(UserInputError, match="does not match the 2 units"):
        render(tiny, objectives.channel(layer, [0, 1]), RenderSettings(size=32, steps=1), batch=3)


def test_inversion_budget_counts_every_layer(tiny):
    photo = torch.rand(3, 1024, 1024)
    layers = [i.name for i in tiny.main_layers() if len(i.shape) == 3][:2]
    with pytest.raises(UserInputError, match="2 layers of 1024×1024 px is too much"):
        inversion.invert(tiny, photo, layers, inversion.InversionSettings(size=1024, steps=1))


def test_fool_grow_refuses_bad_learning_rates_and_steps(tiny):
    from explorer import fooling

    for kwargs, message in (({"lr": -1}, "Learning rate -1"), ({"lr": 1e9}, "Learning rate"),
                            ({"steps": 0}, "Steps 0 is out of range: use 1–"), ({"lr": math.nan}, "finite")):
        with pytest.raises(UserInputError, match=message):
            fooling.grow(tiny, 0, **kwargs)


# ---- defect 12: DeepDream at size 32 with jitter 64 -------------------------------------------------
def test_dream_jitter_larger_than_half_the_photo_is_a_clear_error(tiny):
    photo = torch.rand(3, 32, 32)
    layer = [i.name for i in tiny.main_layers() if len(i.shape) == 3][0]
    with pytest.raises(UserInputError, match="Jitter 64 px is too large for a 32 px photo: use at most 16 px"):
        inversion.dream(tiny, photo, layer, settings=inversion.DreamSettings(size=32, jitter=64, steps=1, octaves=1))
    result = inversion.dream(tiny, photo, layer,
                             settings=inversion.DreamSettings(size=32, jitter=16, steps=1, octaves=2))
    assert result.image.shape == (3, 32, 32)


def test_class_errors_say_classes():
    from explorer.errors import UnitOutOfRangeError

    assert "valid classes are 0–9" in str(UnitOutOfRangeError("output", 12, 10, "class"))


def test_every_limit_is_documented_in_the_architecture_notes(root):
    text = (root / "docs" / "ARCHITECTURE.md").read_text()
    for name in ("MAX_IMAGE_PIXELS", "MAX_ASPECT", "MAX_BATCH_PIXELS", "MAX_SIZE", "MAX_UNITS", "MAX_SAMPLE_RATE"):
        assert name in text, name

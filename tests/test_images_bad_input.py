"""Every class of awkward or broken image file the upload box can receive, through explorer.images."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from explorer import limits
from explorer.errors import UserInputError
from explorer.images import ImageLoadError, fit, load_image


def _encode(img: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def _gradient_rgb(h: int = 40, w: int = 60) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    return np.stack([xx * 255 // (w - 1), yy * 255 // (h - 1), np.full_like(xx, 90)], -1).astype(np.uint8)


def test_corrupt_file_raises_a_clear_user_error():
    with pytest.raises(ImageLoadError, match="not an image file"):
        load_image(b"this is a text file, not a picture" * 10)
    # a valid PNG signature followed by garbage is corrupt too
    with pytest.raises(UserInputError):
        load_image(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_file_raises_a_clear_user_error(fmt):
    rng = np.random.default_rng(0)
    data = _encode(Image.fromarray(rng.integers(0, 256, (128, 128, 3), dtype=np.uint8)), fmt)
    with pytest.raises(ImageLoadError, match="corrupt or truncated"):
        load_image(data[: len(data) // 2])


def test_huge_image_is_refused_before_decoding(monkeypatch):
    # a 1-bit 12000×12000 PNG is only a few kB on disk but 144 M pixels once decoded (decompression bomb)
    bomb = _encode(Image.new("1", (12000, 12000)), "PNG")
    assert len(bomb) < 100_000
    with pytest.raises(ImageLoadError, match="pixel"):
        load_image(bomb)
    # the limit is the module's, whatever PIL's global setting
    monkeypatch.setattr(limits, "MAX_IMAGE_PIXELS", 100 * 100)
    with pytest.raises(ImageLoadError):
        load_image(_encode(Image.new("RGB", (101, 100)), "PNG"))
    assert load_image(_encode(Image.new("RGB", (100, 100)), "PNG")).shape == (3, 100, 100)


def test_16bit_grey_keeps_its_full_range():
    ramp = np.linspace(0, 65535, 64 * 32).reshape(32, 64).astype(np.uint16)
    data = _encode(Image.fromarray(ramp), "PNG")
    assert Image.open(io.BytesIO(data)).mode.startswith("I")
    tensor = load_image(data)
    assert tensor.shape == (3, 32, 64)
    assert torch.allclose(tensor[0], tensor[1]) and torch.allclose(tensor[0], tensor[2])
    expected = torch.from_numpy(ramp.astype(np.float32) / 65535.0)
    assert (tensor[0] - expected).abs().max() < 1.5 / 255  # not clipped to 255/65535, not wrapped
    assert tensor.min() < 0.01 and tensor.max() > 0.99


def test_16bit_rgb_tiff_is_scaled_not_clipped():
    # PIL cannot build 16-bit RGB in memory; a TIFF with 16-bit samples is what scanners and cameras write
    array = (_gradient_rgb().astype(np.uint16) * 257)
    tiff = _encode_16bit_rgb_tiff(array)
    tensor = load_image(tiff)
    assert tensor.shape == (3, 40, 60)
    assert (tensor - torch.from_numpy(_gradient_rgb()).permute(2, 0, 1) / 255.0).abs().max() < 2 / 255


def _encode_16bit_rgb_tiff(array: np.ndarray) -> bytes:
    """A minimal uncompressed little-endian RGB TIFF with 16 bits per sample."""
    import struct

    h, w, _ = array.shape
    pixels = array.astype("<u2").tobytes()
    entries = [
        (256, 3, 1, w), (257, 3, 1, h), (258, 3, 3, None), (259, 3, 1, 1), (262, 3, 1, 2),
        (273, 4, 1, None), (277, 3, 1, 3), (278, 3, 1, h), (279, 4, 1, len(pixels)), (284, 3, 1, 1),
    ]
    ifd_offset = 8
    ifd_size = 2 + 12 * len(entries) + 4
    bits_offset = ifd_offset + ifd_size
    data_offset = bits_offset + 6
    out = bytearray(b"II*\x00" + struct.pack("<I", ifd_offset))
    out += struct.pack("<H", len(entries))
    for tag, typ, count, value in entries:
        if tag == 258:
            out += struct.pack("<HHII", tag, typ, count, bits_offset)
        elif tag == 273:
            out += struct.pack("<HHII", tag, typ, count, data_offset)
        elif typ == 3:
            out += struct.pack("<HHIHH", tag, typ, count, value, 0)
        else:
            out += struct.pack("<HHII", tag, typ, count, value)
    out += struct.pack("<I", 0)
    out += struct.pack("<HHH", 16, 16, 16)
    out += pixels
    return bytes(out)


def test_cmyk_jpeg_becomes_rgb():
    rgb = Image.fromarray(_gradient_rgb())
    data = _encode(rgb.convert("CMYK"), "JPEG", quality=95)
    assert Image.open(io.BytesIO(data)).mode == "CMYK"
    tensor = load_image(data)
    assert tensor.shape == (3, 40, 60)
    reference = torch.from_numpy(np.asarray(rgb, dtype=np.float32) / 255).permute(2, 0, 1)
    assert (tensor - reference).abs().mean() < 0.05  # colours survive, not inverted


def test_rgba_is_flattened_onto_white():
    array = np.zeros((20, 30, 4), dtype=np.uint8)
    array[..., 0] = 255  # red ...
    array[:, :15, 3] = 255  # ... opaque on the left, fully transparent on the right
    tensor = load_image(_encode(Image.fromarray(array, "RGBA"), "PNG"))
    assert tensor.shape == (3, 20, 30)
    assert torch.allclose(tensor[:, :, :15], torch.tensor([1.0, 0.0, 0.0])[:, None, None].expand(3, 20, 15))
    assert torch.allclose(tensor[:, :, 15:], torch.ones(3, 20, 15))


def test_palette_with_transparency_and_grey_become_rgb():
    pal = Image.fromarray(_gradient_rgb()).convert("P", palette=Image.ADAPTIVE, colors=16)
    pal.info["transparency"] = 0
    assert load_image(_encode(pal, "PNG")).shape == (3, 40, 60)
    grey = load_image(_encode(Image.fromarray(_gradient_rgb()[..., 0]), "PNG"))
    assert grey.shape == (3, 40, 60) and torch.equal(grey[0], grey[2])


@pytest.mark.parametrize("orientation, expected_hw", [(1, (40, 60)), (3, (40, 60)), (6, (60, 40)), (8, (60, 40))])
def test_exif_orientation_is_honoured(orientation, expected_hw):
    array = np.zeros((40, 60, 3), dtype=np.uint8)
    array[:10, :10] = 255  # a white mark in the stored top-left corner
    img = Image.fromarray(array)
    exif = img.getexif()
    exif[0x0112] = orientation
    tensor = load_image(_encode(img, "JPEG", exif=exif.tobytes(), quality=95))
    assert tuple(tensor.shape[-2:]) == expected_hw
    corners = {
        "tl": tensor[:, :8, :8].mean(), "tr": tensor[:, :8, -8:].mean(),
        "bl": tensor[:, -8:, :8].mean(), "br": tensor[:, -8:, -8:].mean(),
    }
    # where the stored top-left corner ends up after applying the tag (EXIF spec)
    expected_corner = {1: "tl", 3: "br", 6: "tr", 8: "bl"}[orientation]
    assert max(corners, key=corners.get) == expected_corner


@pytest.mark.parametrize("fmt", ["WEBP", "BMP", "TIFF", "GIF"])
def test_other_upload_formats_decode(fmt):
    tensor = load_image(_encode(Image.fromarray(_gradient_rgb()), fmt))
    assert tensor.shape == (3, 40, 60)
    assert 0.0 <= float(tensor.min()) and float(tensor.max()) <= 1.0


@pytest.mark.parametrize("mode", ["crop", "pad"])
def test_fit_handles_any_aspect_ratio(mode):
    tall = torch.rand(3, 300, 70)
    out = fit(tall, 64, mode)
    assert out.shape == (3, 64, 64)
    if mode == "pad":  # grey bars left and right, the photo in the middle
        assert torch.allclose(out[:, :, :5], torch.full((3, 64, 5), 0.5))
    else:  # no grey bars
        assert not torch.allclose(out[:, :, :5], torch.full((3, 64, 5), 0.5), atol=0.02)


def test_missing_file_and_unknown_builtin_are_user_errors(tmp_path):
    with pytest.raises(ImageLoadError, match="not found"):
        load_image(tmp_path / "nope.png")
    with pytest.raises(ImageLoadError, match="Did you mean astronaut"):
        load_image("builtin:astronot")

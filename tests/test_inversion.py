"""Inversion, caricature and DeepDream on the tiny net: the behaviour that matters, fast."""

from __future__ import annotations

import io
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from explorer import inversion
from explorer.errors import UnknownLayerError, UserInputError
from explorer.images import ImageLoadError
from explorer.inversion import CaricatureSettings, DeepDreamSettings, InversionSettings


def smooth_photo(size: int = 32, seed: int = 0) -> torch.Tensor:
    """A photo-like test image: smooth colour blobs plus an edge (no high-frequency noise)."""
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, 4, 4, generator=gen)
    image = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)[0]
    image[:, :, size // 2 :] *= 0.6
    return image.clamp(0.05, 0.95)


def count_forwards(model) -> list[int]:
    _ = model.layers, model.num_classes, model.fused  # the one-off dry runs happen before counting
    calls = [0]
    model.module.register_forward_pre_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


def test_feature_error_decreases_for_every_layer_in_one_batched_run(tiny):
    photo = smooth_photo()
    layers = ["conv1", "conv2", "conv3"]
    forwards = count_forwards(tiny)
    seen = []
    result = inversion.invert(tiny, photo, layers, InversionSettings(size=32, steps=40, lr=0.1, init="noise"),
                              callback=lambda step, total, preview, errors: seen.append((step, total, errors.clone())))
    assert result.images.shape == (3, 3, 32, 32) and result.steps_done == 40
    history = result.error_history
    assert history.shape == (40, 3)
    for b, layer in enumerate(layers):
        assert history[-1, b] < 0.5 * history[0, b], f"{layer}: {history[0, b]:.3f} -> {history[-1, b]:.3f}"
        assert result.final_error[b] <= float(history[-1, b]) * 1.2  # the final image is at least as good
    # one forward pass per step serves all layers (plus the target's and the final evaluation)
    assert forwards[0] == 40 + 2
    # the callback reports the per-layer normalised error, not the prior-laden objective
    assert [s[0] for s in seen] == list(range(1, 41)) and seen[-1][1] == 40
    assert torch.allclose(seen[-1][2], history[-1])
    # each image chased its own layer: swapping targets would give different errors
    assert len({round(e, 6) for e in result.final_error}) == 3


def test_identity_like_first_layer_reconstructs_the_photo(tiny):
    """conv1 (3 -> 8 channels, 3×3, before the ReLU) keeps everything: inverting it returns the photo."""
    photo = smooth_photo(seed=1)
    settings = InversionSettings(size=32, steps=150, lr=0.1, tv=0.0, alpha=0.0, init="noise", seed=3)
    result = inversion.invert(tiny, photo, ["conv1"], settings)
    assert result.final_error[0] < 0.01
    assert result.ssim[0] > 0.9
    assert result.psnr[0] > 25
    start_ssim = inversion.ssim(result.initial[0], photo)
    assert start_ssim < 0.3  # it really started from noise


def test_deeper_layers_remember_less(tiny):
    photo = smooth_photo(seed=2)
    result = inversion.invert(tiny, photo, ["conv1", "conv3"],
                              InversionSettings(size=32, steps=80, lr=0.1, tv=0.0, alpha=0.0))
    assert result.ssim[0] > result.ssim[1]


def test_default_tv_weight_grows_with_depth(tiny):
    shallow, _ = inversion.default_prior_weights(tiny, "conv1")
    deep, _ = inversion.default_prior_weights(tiny, "conv3")
    assert 0 < shallow < deep
    assert inversion.relative_depth(tiny, "conv1") < inversion.relative_depth(tiny, "conv3") <= 1.0
    result = inversion.invert(tiny, smooth_photo(), ["conv1", "conv3"], InversionSettings(size=32, steps=1))
    assert result.tv_weights == [shallow, deep]


def test_start_modes_and_seed(tiny):
    photo = smooth_photo()
    base = InversionSettings(size=32, steps=3)
    blur = inversion.invert(tiny, photo, ["conv2"], base.with_(init="blur", init_blur=2.0))
    assert inversion.ssim(blur.initial[0], photo) > 0.5  # starts near the photo
    other = torch.rand(3, 32, 32)
    from_image = inversion.invert(tiny, photo, ["conv2"], base.with_(init="image"), init_image=other)
    assert torch.allclose(from_image.initial[0], other)
    a = inversion.invert(tiny, photo, ["conv2"], base.with_(seed=5))
    b = inversion.invert(tiny, photo, ["conv2"], base.with_(seed=5))
    c = inversion.invert(tiny, photo, ["conv2"], base.with_(seed=6))
    assert torch.equal(a.images, b.images) and not torch.equal(a.images, c.images)
    with pytest.raises(UserInputError, match="starting image"):
        inversion.invert(tiny, photo, ["conv2"], base.with_(init="image"))


def test_fft_param_and_paired_transforms_still_converge(tiny):
    photo = smooth_photo()
    settings = InversionSettings(size=32, steps=40, lr=0.1, param="fft", transforms="standard")
    result = inversion.invert(tiny, photo, ["conv2"], settings)
    assert result.error_history[-1, 0] < 0.6 * result.error_history[0, 0]


def test_paired_transform_moves_image_and_photo_together():
    from explorer.inversion.matching import _paired_transform
    from explorer.optvis.transforms import standard_transforms

    paired = _paired_transform(standard_transforms(32))
    image = torch.rand(2, 3, 32, 32)
    a, b = paired(image, image[:1].clone(), torch.Generator().manual_seed(0))
    assert torch.allclose(a[0], b[0])  # same random shift/scale/rotation for the pair
    assert a.shape == b.shape


def test_metrics():
    x = smooth_photo()
    assert inversion.ssim(x, x) == pytest.approx(1.0)
    noisy = (x + 0.1 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    mse = float((noisy - x).pow(2).mean())
    assert inversion.psnr(noisy, x) == pytest.approx(10 * math.log10(1 / mse))
    assert inversion.ssim(noisy, x) < 0.9
    assert inversion.ssim(torch.rand(3, 32, 32), x) < 0.2
    t = torch.randn(8, 5, 5)
    assert float(inversion.normalised_error(t, t)) == 0.0
    assert float(inversion.normalised_error(torch.zeros_like(t), t)) == pytest.approx(1.0)


def test_caricature_exaggerates_what_the_layer_sees(tiny):
    photo = smooth_photo()
    settings = CaricatureSettings(size=32, steps=40, lr=0.1, transforms="none")
    result = inversion.caricature(tiny, photo, ["conv2", "conv3"], settings)
    assert result.images.shape == (2, 3, 32, 32) and result.cosine_history.shape == (40, 2)
    objective = result.objective_history
    for b in range(2):
        assert objective[-1, b] > objective[0, b] * 1.2
        assert result.final_dot[b] > 1.0  # more of the photo's pattern than the photo itself has ...
        assert result.final_cosine[b] > 0.8  # ... pointing the same way


def test_caricature_score_floor():
    target = torch.tensor([1.0, 0.0])
    score, cos = inversion.caricature_score(torch.tensor([0.0, 1.0]), target, 0.1, 1.0)
    assert float(cos) == pytest.approx(0.0) and float(score) == pytest.approx(0.0)  # dot 0
    score, cos = inversion.caricature_score(torch.tensor([2.0, 0.0]), target, 0.1, 1.0)
    assert float(cos) == pytest.approx(1.0) and float(score) == pytest.approx(2.0)
    score, cos = inversion.caricature_score(torch.tensor([2.0, -10.0]), target, 0.1, 1.0)
    assert float(score) == pytest.approx(2.0 * float(cos)) and float(cos) > 0.1
    score, cos = inversion.caricature_score(torch.tensor([1.0, -20.0]), target, 0.1, 2.0)
    assert float(cos) < 0.1 and float(score) == pytest.approx(1.0 * 0.1**2)  # the floor applies


def test_dream_amplifies_the_layer_over_octaves(tiny):
    photo = smooth_photo(size=64)
    steps = []
    settings = DeepDreamSettings(size=64, octaves=2, octave_scale=1.5, steps=10, lr=0.1, jitter=4)
    result = inversion.deep_dream(
        tiny, photo, "conv2", settings=settings,
        callback=lambda step, total, preview, values: steps.append((step, total, preview.shape[-1])))
    assert result.octave_sizes == [43, 64]
    assert [s[0] for s in steps] == list(range(1, 21)) and {s[1] for s in steps} == {20}
    assert steps[0][2] < steps[-1][2] <= 64  # coarse octave first
    assert result.image.shape == photo.shape
    assert result.objective_after > 1.5 * result.objective_before
    assert 0.0 < inversion.ssim(result.image, photo) < 0.999  # changed, but still the photo underneath
    channel = inversion.deep_dream(tiny, photo, "conv2", channel=3, settings=settings)
    assert channel.target.startswith("channel conv2:3") and channel.objective_after > channel.objective_before


def test_bad_inputs_raise_user_errors(tiny):
    photo = smooth_photo()
    with pytest.raises(UnknownLayerError):
        inversion.invert(tiny, photo, ["conv9"], InversionSettings(size=32, steps=1))
    with pytest.raises(UserInputError, match="at least one layer"):
        inversion.invert(tiny, photo, [], InversionSettings(size=32, steps=1))
    with pytest.raises(UserInputError, match="at most 8"):
        inversion.check_layers(tiny, ["conv1"] * 9)
    with pytest.raises(UserInputError, match="start"):
        inversion.invert(tiny, photo, ["conv1"], InversionSettings(size=32, steps=1, init="banana"))
    with pytest.raises(UserInputError, match="parameterisation"):
        inversion.invert(tiny, photo, ["conv1"], InversionSettings(size=32, steps=1, param="cppn"))
    with pytest.raises(UserInputError, match="logits"):
        inversion.deep_dream(tiny, photo, "output")
    with pytest.raises(UserInputError):
        inversion.deep_dream(tiny, photo, "conv2", channel=99)
    with pytest.raises(UserInputError, match="Cosine floor"):
        inversion.caricature(tiny, photo, ["conv2"], CaricatureSettings(cos_floor=1.5))
    with pytest.raises(UserInputError, match="size"):
        inversion.load_photo("builtin:astronaut", 4)
    with pytest.raises(ImageLoadError):
        inversion.load_photo(b"\xff\xd8\xff\xe0 not really a jpeg", 32)


def test_load_photo_from_uploaded_bytes_any_aspect():
    buffer = io.BytesIO()
    Image.fromarray(np.full((30, 90, 3), 200, dtype=np.uint8)).save(buffer, format="PNG")
    cropped = inversion.load_photo(buffer.getvalue(), 48, "crop")
    padded = inversion.load_photo(buffer.getvalue(), 48, "pad")
    assert cropped.shape == padded.shape == (3, 48, 48)
    assert torch.allclose(cropped, torch.full_like(cropped, 200 / 255), atol=1e-3)
    assert torch.allclose(padded[:, 0, :], torch.full((3, 48), 0.5))  # grey bar on top


def test_summary_is_json_ready(tiny):
    result = inversion.invert(tiny, smooth_photo(), ["conv1", "conv2"], InversionSettings(size=32, steps=4))
    data = json.loads(json.dumps(result.summary()))
    assert [row["layer"] for row in data["layers"]] == ["conv1", "conv2"]
    assert len(data["error_history"]["conv2"]) == 4
    assert result.strip().shape[-1] > 3 * 32

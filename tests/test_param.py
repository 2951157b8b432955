import math

import numpy as np
import pytest
import torch

from explorer.optvis.param import CPPNParam, FourierParam, PixelParam, correlate, decorrelate, gaussian_blur, make_param
from explorer.optvis.priors import tv_value


def radial_power_slope(images: torch.Tensor) -> float:
    """Slope of log mean power vs log radial frequency (mid frequencies)."""
    x = images - images.mean(dim=(-2, -1), keepdim=True)
    power = (torch.fft.fft2(x).abs() ** 2).mean(dim=(0, 1))
    h, w = power.shape
    fy = torch.fft.fftfreq(h)[:, None]
    fx = torch.fft.fftfreq(w)[None, :]
    f = torch.sqrt(fx**2 + fy**2)
    bins = np.logspace(np.log10(2.0 / h), np.log10(0.4), 12)
    xs, ys = [], []
    for lo, hi in zip(bins[:-1], bins[1:]):
        mask = (f >= lo) & (f < hi)
        if mask.any():
            xs.append(math.log((lo * hi) ** 0.5))
            ys.append(math.log(float(power[mask].mean())))
    return float(np.polyfit(xs, ys, 1)[0])


@pytest.mark.parametrize("decay", [0.5, 1.0, 1.5])
def test_fourier_init_spectrum_follows_power_law(decay):
    gen = torch.Generator().manual_seed(0)
    param = FourierParam(16, (128, 128), decay=decay, decorrelated=True, generator=gen)
    with torch.no_grad():
        images = param()
    slope = radial_power_slope(images)
    assert abs(slope - (-2 * decay)) < 0.25, slope


def test_pixel_init_is_white():
    param = PixelParam(8, (64, 64), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert abs(radial_power_slope(param())) < 0.2


def test_decorrelation_is_invertible():
    x = torch.randn(2, 3, 8, 8)
    assert torch.allclose(correlate(decorrelate(x)), x, atol=1e-5)
    assert torch.allclose(decorrelate(correlate(x)), x, atol=1e-5)


@pytest.mark.parametrize("kind", ["fft", "pixel"])
def test_set_image_round_trips(kind):
    param = make_param(kind, 2, (30, 41), generator=torch.Generator().manual_seed(1))
    target = torch.rand(2, 3, 30, 41) * 0.9 + 0.05
    param.set_image_(target)
    with torch.no_grad():
        assert torch.allclose(param(), target, atol=1e-4)


def test_cppn_images_in_range_and_differ_per_batch():
    param = CPPNParam(3, (32, 32), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        images = param()
    assert images.shape == (3, 3, 32, 32)
    assert images.min() >= 0 and images.max() <= 1
    assert (images[0] - images[1]).abs().mean() > 1e-3
    assert not param.settable


def test_grey_fourier_param():
    param = make_param("fft", 1, 16, channels=1)
    assert param().shape == (1, 1, 16, 16)


def test_total_variation_zero_for_constant_and_rises_with_noise():
    flat = torch.full((1, 3, 32, 32), 0.3)
    assert float(tv_value(flat)) == 0.0
    gen = torch.Generator().manual_seed(0)
    previous = 0.0
    for amount in [0.01, 0.1, 0.3]:
        noisy = (flat + amount * torch.randn(1, 3, 32, 32, generator=gen)).clamp(0, 1)
        value = float(tv_value(noisy))
        assert value > previous
        previous = value
    assert float(tv_value(torch.rand(1, 3, 32, 32), beta=1.0)) > 0


def test_gaussian_blur_lowers_tv_and_keeps_mean():
    x = torch.rand(1, 3, 32, 32)
    y = gaussian_blur(x, 1.0)
    assert float(tv_value(y)) < 0.5 * float(tv_value(x))
    assert abs(float(y.mean() - x.mean())) < 0.01

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


# ---- MACO -------------------------------------------------------------------------------------------
def _half_spectrum_magnitude(param) -> torch.Tensor:
    with torch.no_grad():
        return torch.fft.rfft2(param.spatial(), norm="ortho").abs()


@pytest.mark.parametrize("size, channels", [((32, 32), 3), ((23, 30), 1)])
def test_maco_keeps_its_magnitude_exactly_while_the_phase_moves_and_the_objective_rises(size, channels):
    from explorer.optvis.param import MacoParam

    gen = torch.Generator().manual_seed(0)
    param = MacoParam(2, size, channels=channels, generator=gen)
    target = torch.rand(2, channels, *size, generator=gen)  # objective: look like a fixed random image

    def objective() -> torch.Tensor:
        return -((param() - target) ** 2).mean(dim=(1, 2, 3))

    start_phase, start_value = param.phase.detach().clone(), objective().detach()
    optimiser = torch.optim.Adam(param.parameters(), lr=0.05)
    for _ in range(40):
        optimiser.zero_grad()
        (-objective().sum()).backward()
        optimiser.step()
    assert (objective().detach() > start_value + 0.2 * start_value.abs()).all()  # it rose for every image
    assert (param.phase - start_phase).abs().mean() > 0.05  # the phase moved ...
    magnitude = _half_spectrum_magnitude(param)  # ... and the image's spectrum is still the template
    assert torch.allclose(magnitude, param.magnitude.expand_as(magnitude), rtol=1e-4,
                          atol=1e-4 * float(param.magnitude.max()))
    assert param().shape == (2, channels, *size) and 0 <= float(param().min()) and float(param().max()) <= 1


def test_maco_template_is_a_natural_image_spectrum_and_deterministic():
    from explorer.optvis.param import photo_magnitude, radial_frequency

    magnitude, dc = photo_magnitude(64, 64)
    photo_magnitude.cache_clear()
    again, dc_again = photo_magnitude(64, 64)
    assert torch.equal(magnitude, again) and torch.equal(dc, dc_again)
    f = radial_frequency(64, 64)
    mid = (f > 2 / 64) & (f < 0.35)
    for channel in magnitude:  # amplitude ~ 1/f^a with a near 1 for photos (a 1/f^2 power spectrum)
        slope = np.polyfit(np.log(f[mid].numpy()), np.log(channel[mid].numpy()), 1)[0]
        assert -2.0 < slope < -0.8, slope
    channel_energy = magnitude.square().mean(dim=(1, 2))  # the decorrelated basis whitens colour: similar energies
    assert float(channel_energy.max() / channel_energy.min()) < 3


def test_maco_takes_an_images_phase_and_renders_through_the_one_loop(tiny):
    from explorer.images import fit, load_image
    from explorer.optvis import objectives, render
    from explorer.optvis.param import MacoParam

    photo = fit(load_image("builtin:chelsea"), 48)
    param = MacoParam(1, (48, 48))
    param.set_image_(photo)
    with torch.no_grad():
        got = param()[0]
    corr = np.corrcoef(got.mean(0).flatten().numpy(), photo.mean(0).flatten().numpy())[0, 1]
    assert corr > 0.6, corr  # phase carries the structure (the magnitude stays the template's)
    assert torch.allclose(_half_spectrum_magnitude(param), param.magnitude, rtol=1e-4, atol=1e-3)

    result = render(tiny, objectives.channel("conv2", [0, 1, 2]), param="maco", size=32, steps=12, transforms="none")
    first = result.history[0]
    assert result.images.shape == (3, 3, 32, 32)
    assert (result.history[-1] > first).all()

"""Image parameterisations: learnable tensors that produce a batch of images in [0, 1].

Every parameterisation is an ``nn.Module`` whose ``forward()`` returns B×C×H×W in [0, 1].
``set_image_`` writes a given image into the parameters (start from a photo, project onto
a budget, blur); it is exact for pixel and Fourier parameterisations.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import nn

# Square root of the colour covariance of natural images (ImageNet), from its SVD: the
# decorrelated space in which Lucid optimises. A 3×3 matrix of measured statistics.
COLOR_CORRELATION_SVD_SQRT = torch.tensor(
    [[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]], dtype=torch.float32
)
_COLOR_MATRIX = COLOR_CORRELATION_SVD_SQRT / COLOR_CORRELATION_SVD_SQRT.norm(dim=0).max()


def decorrelate(x: torch.Tensor) -> torch.Tensor:
    """Decorrelated colour space -> RGB (before the sigmoid). x: B×3×H×W."""
    return torch.einsum("ij,bjhw->bihw", _COLOR_MATRIX.to(x.device, x.dtype), x)


def correlate(rgb: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`decorrelate`."""
    inverse = torch.linalg.inv(_COLOR_MATRIX.double()).float()
    return torch.einsum("ij,bjhw->bihw", inverse.to(rgb.device, rgb.dtype), rgb)


def _logit(image: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    return torch.logit(image.clamp(eps, 1 - eps))


def gaussian_blur(image: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur with reflect padding; sigma in pixels."""
    if sigma <= 0:
        return image
    radius = max(1, int(math.ceil(3 * sigma)))
    coords = torch.arange(-radius, radius + 1, device=image.device, dtype=image.dtype)
    kernel = torch.exp(-0.5 * (coords / sigma) ** 2)
    kernel = kernel / kernel.sum()
    c = image.shape[1]
    pad_h, pad_w = min(radius, image.shape[-2] - 1), min(radius, image.shape[-1] - 1)
    x = F.pad(image, (pad_w, pad_w, pad_h, pad_h), mode="reflect")
    kx = kernel[radius - pad_w : radius + pad_w + 1].view(1, 1, 1, -1).repeat(c, 1, 1, 1)
    ky = kernel[radius - pad_h : radius + pad_h + 1].view(1, 1, -1, 1).repeat(c, 1, 1, 1)
    x = F.conv2d(x, kx, groups=c)
    return F.conv2d(x, ky, groups=c)


class ImageParam(nn.Module):
    """Base class: ``forward()`` -> B×C×H×W in [0, 1]."""

    batch: int
    channels: int
    size: tuple[int, int]

    def set_image_(self, image: torch.Tensor) -> None:
        raise NotImplementedError(f"{type(self).__name__} cannot be set from an image.")

    @torch.no_grad()
    def blur_(self, sigma: float) -> None:
        """Blur the current image in place (Yosinski et al.'s 'blur every N steps' prior)."""
        self.set_image_(gaussian_blur(self(), sigma))

    @property
    def settable(self) -> bool:
        return type(self).set_image_ is not ImageParam.set_image_


class PixelParam(ImageParam):
    """One logit per pixel (sigmoid keeps the image in [0, 1]); optionally colour-decorrelated."""

    def __init__(self, batch: int, size: tuple[int, int], channels: int = 3, sd: float = 0.01,
                 decorrelated: bool = False, generator: torch.Generator | None = None,
                 device: torch.device | str = "cpu"):
        super().__init__()
        self.batch, self.channels, self.size = batch, channels, tuple(size)
        self.decorrelated = decorrelated and channels == 3
        init = torch.randn(batch, channels, *self.size, generator=generator, device=device) * sd
        self.pixels = nn.Parameter(init)

    def forward(self) -> torch.Tensor:
        x = decorrelate(self.pixels) if self.decorrelated else self.pixels
        return torch.sigmoid(x)

    @torch.no_grad()
    def set_image_(self, image: torch.Tensor) -> None:
        x = _logit(image.to(self.pixels.device, self.pixels.dtype).expand_as(self.pixels))
        self.pixels.copy_(correlate(x) if self.decorrelated else x)


def radial_frequency(h: int, w: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Radial frequency |f| (cycles per pixel) of each ``rfft2`` coefficient of an h×w image."""
    fy = torch.fft.fftfreq(h, device=device)[:, None]
    fx = torch.fft.rfftfreq(w, device=device)[None, :]
    return torch.sqrt(fx * fx + fy * fy)


class FourierParam(ImageParam):
    """Fourier coefficients scaled by 1/f^decay (natural-image spectrum), colour-decorrelated, sigmoid.

    Steps of gradient descent then move low frequencies as easily as high ones, which is what
    keeps feature visualisations from drowning in high-frequency noise (Olah et al. 2017).
    """

    def __init__(self, batch: int, size: tuple[int, int], channels: int = 3, sd: float = 0.01,
                 decay: float = 1.0, decorrelated: bool = True, generator: torch.Generator | None = None,
                 device: torch.device | str = "cpu"):
        super().__init__()
        self.batch, self.channels, self.size = batch, channels, tuple(size)
        self.decorrelated = decorrelated and channels == 3
        self.decay = float(decay)
        h, w = self.size
        freqs = radial_frequency(h, w, device)
        scale = 1.0 / torch.clamp(freqs, min=1.0 / max(h, w)) ** self.decay
        self.register_buffer("scale", scale[None, None, :, :, None].float(), persistent=False)
        init = torch.randn(batch, channels, h, w // 2 + 1, 2, generator=generator, device=device) * sd
        self.spectrum = nn.Parameter(init)

    def spatial(self) -> torch.Tensor:
        """The image before colour mapping and sigmoid (linear in the parameters)."""
        coeffs = torch.view_as_complex((self.spectrum * self.scale).contiguous())
        return torch.fft.irfft2(coeffs, s=self.size, norm="ortho") / 4.0

    def forward(self) -> torch.Tensor:
        x = self.spatial()
        if self.decorrelated:
            x = decorrelate(x)
        return torch.sigmoid(x)

    @torch.no_grad()
    def set_image_(self, image: torch.Tensor) -> None:
        x = _logit(image.to(self.spectrum.device, torch.float32).expand(self.batch, self.channels, *self.size))
        if self.decorrelated:
            x = correlate(x)
        coeffs = torch.fft.rfft2(x * 4.0, norm="ortho")
        self.spectrum.copy_(torch.view_as_real(coeffs) / self.scale)


# ---- MACO: phase only, under a fixed natural-image magnitude spectrum ------------------------------------
# Colour photos among the built-in ones (explorer.images.BUILTIN_PHOTOS): natural scenes, no synthetic colour
# wheel, no astronomy/microscopy, no grey photos (they would pull the colour channels' spectra towards zero).
MAGNITUDE_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "stereo_motorcycle", "china", "flower")
MAGNITUDE_CROPS_PER_PHOTO = 16
_PIXEL_EPS = 1.0 / 255.0  # logit of 8-bit pixels: 0 and 255 map to ±5.5 instead of ±inf


def _to_spatial(rgb: torch.Tensor, channels: int, decorrelated: bool) -> torch.Tensor:
    """Images in [0, 1] (B×3×H×W) -> the space MacoParam builds its images in (before colour mapping and sigmoid)."""
    x = rgb.mean(dim=1, keepdim=True) if channels == 1 else rgb
    x = torch.logit(x.clamp(_PIXEL_EPS, 1 - _PIXEL_EPS))
    return correlate(x) if decorrelated and channels == 3 else x


@functools.lru_cache(maxsize=16)
def photo_magnitude(h: int, w: int, channels: int = 3, decorrelated: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """The mean amplitude spectrum of natural photos at h×w, estimated from the built-in photos.

    How: 16 random crops of each photo in :data:`MAGNITUDE_PHOTOS` (fixed generator: the result is
    deterministic), each 50–100 % of the largest crop of aspect h:w, at a random place, mirrored half the
    time, resized (antialiased) to h×w; each crop goes into MacoParam's own space (logit of the pixels, then
    the decorrelated colour basis, or grey for one channel); the template is the mean of
    ``|rfft2(hann · (crop − its mean), norm="ortho")|`` over the crops, per channel and frequency (the window,
    scaled to keep the power, stops the crops' borders from adding a cross of energy along the axes). The DC
    term is kept signed (the mean colour of the crops): returns (magnitude C×H×(W//2+1), dc C), on the CPU,
    cached per size.
    """
    from ..images import load_image

    gen = torch.Generator().manual_seed(0)
    # A Hann window (scaled to keep the power) so the crops' borders, which a periodic FFT sees as edges,
    # do not put a bright cross along kx = 0 and ky = 0 (random phases would turn it into streaks).
    window = torch.outer(torch.hann_window(h, periodic=False, dtype=torch.float64),
                         torch.hann_window(w, periodic=False, dtype=torch.float64))
    window = window / window.square().mean().sqrt()
    total = torch.zeros(channels, h, w // 2 + 1, dtype=torch.float64)
    dc, n = torch.zeros(channels, dtype=torch.float64), 0
    for name in MAGNITUDE_PHOTOS:
        photo = load_image(f"builtin:{name}")
        ph, pw = photo.shape[-2:]
        full = min(ph / h, pw / w)  # largest crop of aspect h:w, in units of the target size
        crops = []
        for _ in range(MAGNITUDE_CROPS_PER_PHOTO):
            scale = full * (0.5 + 0.5 * float(torch.rand((), generator=gen)))
            ch, cw = max(2, round(h * scale)), max(2, round(w * scale))
            top = int(torch.randint(0, ph - ch + 1, (), generator=gen))
            left = int(torch.randint(0, pw - cw + 1, (), generator=gen))
            crop = F.interpolate(photo[None, :, top : top + ch, left : left + cw], size=(h, w), mode="bilinear",
                                 align_corners=False, antialias=True)[0]
            crops.append(crop.flip(-1) if float(torch.rand((), generator=gen)) < 0.5 else crop)
        z = _to_spatial(torch.stack(crops).clamp(0, 1), channels, decorrelated).double()
        means = z.mean(dim=(-2, -1), keepdim=True)
        total += torch.fft.rfft2((z - means) * window, norm="ortho").abs().sum(0)
        dc += means.sum(0).flatten() * math.sqrt(h * w)  # the DC coefficient of the unwindowed crop
        n += len(crops)
    magnitude, dc = (total / n).float(), (dc / n).float()
    magnitude[:, 0, 0] = dc.abs()
    return magnitude, dc


class MacoParam(ImageParam):
    """MACO (Fel et al. 2023, "Unlocking feature visualization for deeper networks with magnitude constrained
    optimization"): only the Fourier *phase* is optimised; the magnitude is fixed to the mean spectrum of natural
    photos (:func:`photo_magnitude`), so every image the loop can reach has a photo's amplitude spectrum and
    contrast, and the optimiser can only move where structure sits, not how much of each frequency there is.

    Image = sigmoid(colour(irfft2(M · e^{iφ}))) with M fixed. On the columns of the half spectrum that hold
    their own conjugates (kx = 0 and, for even widths, kx = W/2) φ is made odd in ky, and the DC term is the
    photos' mean colour, so the spectrum of the real image is exactly M (tested). ``phase_scale`` multiplies
    the parameters: with the loop's Adam at lr 0.05 a step turns phases by up to ~0.05·phase_scale radians.
    """

    def __init__(self, batch: int, size: tuple[int, int], channels: int = 3, decorrelated: bool = True,
                 phase_scale: float = 4.0, generator: torch.Generator | None = None,
                 device: torch.device | str = "cpu"):
        super().__init__()
        self.batch, self.channels, self.size = batch, channels, tuple(size)
        self.decorrelated = decorrelated and channels == 3
        self.phase_scale = float(phase_scale)
        h, w = self.size
        magnitude, dc = photo_magnitude(h, w, channels, self.decorrelated)
        self.register_buffer("magnitude", magnitude[None].to(device), persistent=False)
        self.register_buffer("dc", dc.view(1, channels).to(device), persistent=False)
        own_conjugate = torch.zeros(w // 2 + 1, dtype=torch.bool, device=device)
        own_conjugate[0] = True
        if w % 2 == 0:
            own_conjugate[w // 2] = True
        self.register_buffer("own_conjugate", own_conjugate, persistent=False)
        self.register_buffer("negative_ky", (-torch.arange(h, device=device)) % h, persistent=False)
        is_dc = torch.zeros(h, w // 2 + 1, dtype=torch.bool, device=device)
        is_dc[0, 0] = True
        self.register_buffer("is_dc", is_dc, persistent=False)
        init = (torch.rand(batch, channels, h, w // 2 + 1, generator=generator, device=device) * 2 - 1) * math.pi
        self.phase = nn.Parameter(init / self.phase_scale)

    def spectrum(self) -> torch.Tensor:
        """The complex half spectrum (B×C×H×(W//2+1)) of :meth:`spatial`: magnitude M, optimised phase."""
        phase = self.phase * self.phase_scale
        odd = 0.5 * (phase - phase[:, :, self.negative_ky, :])
        phase = torch.where(self.own_conjugate, odd, phase)
        coeffs = torch.complex(self.magnitude * torch.cos(phase), self.magnitude * torch.sin(phase))
        return torch.where(self.is_dc, self.dc.to(coeffs.dtype)[:, :, None, None], coeffs)

    def spatial(self) -> torch.Tensor:
        """The image before colour mapping and sigmoid."""
        return torch.fft.irfft2(self.spectrum(), s=self.size, norm="ortho")

    def forward(self) -> torch.Tensor:
        x = self.spatial()
        return torch.sigmoid(decorrelate(x) if self.decorrelated else x)

    @torch.no_grad()
    def set_image_(self, image: torch.Tensor) -> None:
        """Take the image's phase (where its structure is); magnitude and mean colour stay the photos'."""
        x = image.to(self.phase.device, torch.float32).expand(self.batch, -1, *self.size)
        if x.shape[1] == 1 and self.channels == 3:
            x = x.expand(-1, 3, -1, -1)
        z = _to_spatial(x, self.channels, self.decorrelated)
        self.phase.copy_(torch.angle(torch.fft.rfft2(z, norm="ortho")) / self.phase_scale)


class CPPNParam(ImageParam):
    """A compositional pattern-producing network per image (Nguyen et al.'s indirect encoding).

    Each of the B images has its own small network mapping (x, y, r) to a colour, evaluated at
    every pixel; all B networks run at once as grouped 1×1 convolutions.
    """

    def __init__(self, batch: int, size: tuple[int, int], channels: int = 3, hidden: int = 24, depth: int = 8,
                 generator: torch.Generator | None = None, device: torch.device | str = "cpu"):
        super().__init__()
        self.batch, self.channels, self.size = batch, channels, tuple(size)
        h, w = self.size
        ys = torch.linspace(-math.sqrt(3), math.sqrt(3), h, device=device)
        xs = torch.linspace(-math.sqrt(3), math.sqrt(3), w, device=device)
        yy, xx = torch.meshgrid(ys, xs, indexing="ij")
        coords = torch.stack([xx, yy, torch.sqrt(xx**2 + yy**2)])  # 3×H×W
        self.register_buffer("coords", coords.repeat(batch, 1, 1)[None], persistent=False)
        widths = [3] + [hidden] * depth
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for fan_in, fan_out in zip(widths[:-1], widths[1:]):
            in_width = fan_in if fan_in == 3 else fan_in * 3  # activations triple the width
            w_init = (torch.randn(batch * fan_out, in_width, 1, 1, generator=generator, device=device)
                      / math.sqrt(in_width))
            self.weights.append(nn.Parameter(w_init))
            self.biases.append(nn.Parameter(torch.zeros(batch * fan_out, device=device)))
        out_init = torch.randn(batch * channels, hidden * 3, 1, 1, generator=generator, device=device)
        self.out_weight = nn.Parameter(out_init / math.sqrt(hidden * 3))
        self.out_bias = nn.Parameter(torch.zeros(batch * channels, device=device))

    @staticmethod
    def _activation(x: torch.Tensor, groups: int) -> torch.Tensor:
        b, n, h, w = x.shape
        x = x.view(b, groups, n // groups, h, w)
        mixed = torch.cat([torch.sin(x), torch.tanh(x), torch.exp(-x * x)], dim=2)
        return mixed.view(b, -1, h, w)

    def forward(self) -> torch.Tensor:
        x = self.coords
        for weight, bias in zip(self.weights, self.biases):
            x = self._activation(F.conv2d(x, weight, bias, groups=self.batch), self.batch)
        x = F.conv2d(x, self.out_weight, self.out_bias, groups=self.batch)
        return torch.sigmoid(x.view(self.batch, self.channels, *self.size))


PARAMETERISATIONS = ("fft", "pixel", "maco", "cppn")


def make_param(kind: str, batch: int, size: int | tuple[int, int], *, channels: int = 3, decorrelated: bool = True,
               decay: float = 1.0, sd: float = 0.01, generator: torch.Generator | None = None,
               device: torch.device | str = "cpu") -> ImageParam:
    """Build a parameterisation by name: "fft", "pixel", "maco" (phase only, fixed photo spectrum) or "cppn"."""
    hw = (size, size) if isinstance(size, int) else tuple(size)
    if kind == "fft":
        return FourierParam(batch, hw, channels, sd=sd, decay=decay, decorrelated=decorrelated,
                            generator=generator, device=device)
    if kind == "pixel":
        return PixelParam(batch, hw, channels, sd=sd, decorrelated=decorrelated, generator=generator, device=device)
    if kind == "maco":
        return MacoParam(batch, hw, channels, decorrelated=decorrelated, generator=generator, device=device)
    if kind == "cppn":
        return CPPNParam(batch, hw, channels, generator=generator, device=device)
    raise ValueError(f"Unknown parameterisation {kind!r}; choose one of {', '.join(PARAMETERISATIONS)}.")

"""Transformation robustness: random ``image -> image`` functions in pure torch, on the image's device.

Each factory returns ``transform(image, generator) -> image``; the generator (on the image's
device) makes runs reproducible. Random parameters are drawn per image of the batch.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

Transform = Callable[[torch.Tensor, "torch.Generator | None"], torch.Tensor]


def _choice(values: Sequence[float], n: int, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    table = torch.tensor(list(values), dtype=torch.float32, device=device)
    index = torch.randint(len(table), (n,), generator=generator, device=device)
    return table[index]


def pad(width: int, mode: str = "constant", value: float = 0.5) -> Transform:
    """Pad every side by ``width`` (constant grey by default, or "reflect")."""

    def transform(image: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if mode == "constant":
            return F.pad(image, (width,) * 4, mode="constant", value=value)
        return F.pad(image, (width,) * 4, mode=mode)

    return transform


def jitter(d: int) -> Transform:
    """Random crop that shifts the image by up to ``d - 1`` pixels (the output is d-1 pixels smaller)."""

    def transform(image: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if d <= 1:
            return image
        h, w = image.shape[-2:]
        dy, dx = torch.randint(d, (2,), generator=generator, device=image.device).tolist()
        return image[..., dy : h - (d - 1) + dy, dx : w - (d - 1) + dx]

    return transform


def _affine(image: torch.Tensor, scale: torch.Tensor, angle_deg: torch.Tensor) -> torch.Tensor:
    """Per-image zoom and rotation about the centre, same output size, bilinear, border padding."""
    theta = torch.zeros(image.shape[0], 2, 3, device=image.device, dtype=image.dtype)
    rad = angle_deg.to(image.dtype) * (math.pi / 180.0)
    inv = 1.0 / scale.to(image.dtype)  # affine_grid maps output -> input coordinates
    theta[:, 0, 0] = torch.cos(rad) * inv
    theta[:, 0, 1] = -torch.sin(rad) * inv
    theta[:, 1, 0] = torch.sin(rad) * inv
    theta[:, 1, 1] = torch.cos(rad) * inv
    grid = F.affine_grid(theta, list(image.shape), align_corners=False)
    return F.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=False)


def random_scale(scales: Sequence[float]) -> Transform:
    """Zoom each image by a factor drawn from ``scales``."""

    def transform(image: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        s = _choice(scales, image.shape[0], generator, image.device)
        return _affine(image, s, torch.zeros_like(s))

    return transform


def random_rotate(angles: Sequence[float]) -> Transform:
    """Rotate each image by an angle (degrees) drawn from ``angles``."""

    def transform(image: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        a = _choice(angles, image.shape[0], generator, image.device)
        return _affine(image, torch.ones_like(a), a)

    return transform


def compose(transforms: Sequence[Transform]) -> Transform:
    def transform(image: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        for t in transforms:
            image = t(image, generator)
        return image

    return transform


def standard_transforms(size: int = 128) -> Transform:
    """The robustness set of Olah et al. (2017), pads and jitters scaled to the image size
    (the paper's 16/16/8 px at 224 px): pad, jitter, scale 0.95–1.05, rotate ±5°, jitter."""
    k = max(size, 32) / 224.0
    big, small = max(2, round(16 * k)), max(2, round(8 * k))
    return compose(
        [
            pad(big),
            jitter(big),
            random_scale([0.95 + 0.01 * i for i in range(11)]),
            random_rotate([float(a) for a in range(-5, 6)]),
            jitter(small),
        ]
    )


def lucent_like_transforms() -> Transform:
    """Lucent's ``standard_transforms`` re-expressed with ours (for like-for-like benchmarks)."""
    return compose(
        [
            pad(12),
            jitter(8),
            random_scale([1 + (i - 5) / 50.0 for i in range(11)]),
            random_rotate([float(a) for a in list(range(-10, 11)) + 5 * [0]]),
            jitter(4),
        ]
    )


TRANSFORM_SETS: dict[str, Callable[[int], Transform | None]] = {
    "standard": standard_transforms,
    "lucent": lambda size: lucent_like_transforms(),
    "none": lambda size: None,
}

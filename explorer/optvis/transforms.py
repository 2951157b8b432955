"""Transformation robustness: random ``image -> image`` functions in pure torch, on the image's device.

Each factory returns ``transform(image, generator) -> image``; the generator (on the image's
device) makes runs reproducible. Nothing here reads a random draw back to the host.

The render sets ("standard", "lucent") are :class:`RandomAffine`: pad → jitter → scale → rotate →
jitter composed into ONE affine map and ONE bilinear resample, which can also resize to the
network's input size (a small parameterisation upsampled inside the differentiable transforms).
Its random numbers come as a tensor (``apply(image, u)``), so the loop can draw a whole run's
numbers up front on the device and a captured CUDA graph can replay the step.
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
    """Random crop that shifts the image by up to ``d - 1`` pixels (the output is d-1 pixels smaller).

    The offset stays on the device (indices, not a host-side slice): no synchronisation."""

    def transform(image: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if d <= 1:
            return image
        h, w = image.shape[-2:]
        offset = torch.randint(d, (2,), generator=generator, device=image.device)
        rows = offset[0] + torch.arange(h - (d - 1), device=image.device)
        cols = offset[1] + torch.arange(w - (d - 1), device=image.device)
        return image.index_select(-2, rows).index_select(-1, cols)

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


class RandomAffine:
    """pad → jitter → zoom → rotate → jitter as one affine map and one bilinear resample.

    Equivalent to composing :func:`pad` (constant ``fill``), :func:`jitter`, :func:`random_scale`,
    :func:`random_rotate` and :func:`jitter`, but with a single interpolation (less blur, one kernel)
    and per-image jitter. ``output_size`` resizes the result (e.g. a 128-px param seen at 224 px by
    the network); None keeps the composed size ``size + 2·pad − (jitter − 1) − (jitter2 − 1)``.
    Each image takes :attr:`draws` uniform numbers in [0, 1).
    """

    draws = 6  # jitter y, jitter x, scale, angle, jitter2 y, jitter2 x

    def __init__(self, pad: int = 0, jitter: int = 1, scales: Sequence[float] = (1.0,),
                 angles: Sequence[float] = (0.0,), jitter2: int = 1,
                 output_size: int | tuple[int, int] | None = None, fill: float = 0.5):
        self.pad, self.jitter, self.jitter2 = int(pad), max(1, int(jitter)), max(1, int(jitter2))
        self.scales = torch.tensor([float(v) for v in scales], dtype=torch.float32)
        self.angles = torch.tensor([float(v) for v in angles], dtype=torch.float32)
        self.output_size = None if output_size is None else _pair(output_size)
        self.fill = float(fill)
        self._on_device: dict[tuple[int, str], torch.Tensor] = {}

    def crop_size(self, h: int, w: int) -> tuple[int, int]:
        """Size after pad and both jitters, before any resize to ``output_size``."""
        shrink = 2 * self.pad - (self.jitter - 1) - (self.jitter2 - 1)
        return h + shrink, w + shrink

    def out_size(self, h: int, w: int) -> tuple[int, int]:
        return tuple(self.output_size) if self.output_size is not None else self.crop_size(h, w)

    def __call__(self, image: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        u = torch.rand(image.shape[0], self.draws, generator=generator, device=image.device)
        return self.apply(image, u)

    def _pick(self, table: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        key = (id(table), str(u.device))
        on_device = self._on_device.get(key)
        if on_device is None:  # copied once per device (a copy inside a CUDA-graph capture is not allowed)
            on_device = self._on_device[key] = table.to(u.device)
        return on_device[(u * len(table)).long().clamp_(0, len(table) - 1)]

    def theta(self, u: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """B×2×3 maps from output to input coordinates (``affine_grid``'s convention, align_corners=False)."""
        u = u.float()
        c2h, c2w = self.crop_size(h, w)
        o1 = torch.floor(u[:, 0:2] * self.jitter).clamp_(max=self.jitter - 1) - (self.jitter - 1) / 2  # y, x offsets
        o2 = torch.floor(u[:, 4:6] * self.jitter2).clamp_(max=self.jitter2 - 1) - (self.jitter2 - 1) / 2
        scale = self._pick(self.scales, u[:, 2])
        angle = self._pick(self.angles, u[:, 3]) * (math.pi / 180.0)
        cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
        # pixel offsets from the crop's centre: p = A·n + b (n: normalised output coordinate, x first)
        ax, ay = c2w / 2.0, c2h / 2.0
        bx, by = o2[:, 1], o2[:, 0]
        # rotate/zoom about the centre, then back to the input's normalised coordinates, shifted by the first jitter
        theta = torch.zeros(u.shape[0], 2, 3, device=u.device)
        theta[:, 0, 0] = (2.0 / w) * cos * ax
        theta[:, 0, 1] = -(2.0 / w) * sin * ay
        theta[:, 1, 0] = (2.0 / h) * sin * ax
        theta[:, 1, 1] = (2.0 / h) * cos * ay
        theta[:, 0, 2] = (2.0 / w) * (cos * bx - sin * by) + 2.0 * o1[:, 1] / w
        theta[:, 1, 2] = (2.0 / h) * (sin * bx + cos * by) + 2.0 * o1[:, 0] / h
        return theta

    def apply(self, image: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """The transform with given random numbers ``u`` (B×draws in [0, 1))."""
        b, c, h, w = image.shape
        theta = self.theta(u, h, w).to(image.dtype)
        grid = F.affine_grid(theta, [b, c, *self.out_size(h, w)], align_corners=False)
        if self.pad <= 0:  # nothing padded: edges repeat, as a plain resize or the old rotate did
            return F.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=False)
        # outside the image: ``fill`` (grey), as if padded with it
        sampled = F.grid_sample(image - self.fill, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        return sampled + self.fill


class Staged:
    """Coarse-to-fine: a different :class:`RandomAffine` from given steps on (the network sees a smaller image
    early, growing to its full input size). The loop calls :meth:`set_step` before each step; the random
    numbers per step are the same ``draws`` as one RandomAffine's, so a whole run's table is drawn up front."""

    draws = RandomAffine.draws

    def __init__(self, stages: Sequence[tuple[int, "RandomAffine | None"]]):
        self.stages = sorted((max(1, int(first)), transform) for first, transform in stages)
        self.current = self.stages[0][1]

    @property
    def last_start(self) -> int:
        """The step (1-based) from which the last stage runs: shapes no longer change after it."""
        return self.stages[-1][0]

    def set_step(self, step: int) -> None:
        for first, transform in self.stages:
            if first <= step:
                self.current = transform

    def apply(self, image: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        return image if self.current is None else self.current.apply(image, u)

    def __call__(self, image: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return image if self.current is None else self.current(image, generator)


def native_scale_crop(transform: "RandomAffine | None", full: int, side: int, param_size: int) -> RandomAffine:
    """``transform`` showing the network a ``side``-px window at the full stage's scale instead of the whole image
    resampled to ``side`` px: its first jitter widened by the part of the crop the window leaves out (the jitter
    crops), so the window is ``side/full`` of the crop and wanders over all of it (coarse-to-fine by crops:
    fewer pixels per step, features at their own scale)."""
    base = transform if transform is not None else RandomAffine()
    h, _ = base.crop_size(param_size, param_size)
    wander = int(round(h * (1 - side / full)))
    return RandomAffine(pad=base.pad, jitter=base.jitter + wander, scales=base.scales.tolist(),
                        angles=base.angles.tolist(), jitter2=base.jitter2, output_size=side, fill=base.fill)


def coarse_to_fine_sizes(full: int, steps: int, fraction: float, start: float, stages: int = 3,
                         multiple: int = 16) -> list[tuple[int, int]]:
    """[(first step, network side)]: the first ``fraction`` of the steps see ``start``·full growing to full in
    ``stages`` - 1 equal parts (sides rounded to ``multiple``), the rest the full size."""
    if fraction <= 0 or steps < 2 or start >= 1:
        return [(1, full)]
    coarse_steps = int(round(fraction * steps))
    plan, parts = [], max(1, stages - 1)
    for k in range(parts):
        side = full * (start + (1 - start) * k / parts)
        side = int(max(multiple, min(full, round(side / multiple) * multiple)))
        first = 1 + (coarse_steps * k) // parts
        if not plan or side != plan[-1][1]:
            plan.append((first, side))
    plan.append((1 + coarse_steps, full))
    return [(first, side) for i, (first, side) in enumerate(plan) if i == len(plan) - 1 or plan[i + 1][0] > first]


def resize_to(output_size: int | tuple[int, int]) -> RandomAffine:
    """No randomness, only a bilinear resize (the "none" set when the network input differs from the param)."""
    return RandomAffine(output_size=output_size)


def standard_transforms(size: int = 128, output_size: int | tuple[int, int] | None = None) -> RandomAffine:
    """The robustness set of Olah et al. (2017), pads and jitters scaled to the image size
    (the paper's 16/16/8 px at 224 px): pad, jitter, scale 0.95–1.05, rotate ±5°, jitter."""
    k = max(size, 32) / 224.0
    big, small = max(2, round(16 * k)), max(2, round(8 * k))
    return RandomAffine(pad=big, jitter=big, scales=[0.95 + 0.01 * i for i in range(11)],
                        angles=[float(a) for a in range(-5, 6)], jitter2=small, output_size=output_size)


def lucent_like_transforms(output_size: int | tuple[int, int] | None = None) -> RandomAffine:
    """Lucent's ``standard_transforms`` re-expressed with ours (for like-for-like benchmarks)."""
    return RandomAffine(pad=12, jitter=8, scales=[1 + (i - 5) / 50.0 for i in range(11)],
                        angles=[float(a) for a in list(range(-10, 11)) + 5 * [0]], jitter2=4, output_size=output_size)


def _pair(size: int | tuple[int, int]) -> tuple[int, int]:
    return (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[1]))


def _none(size: int, output_size: int | tuple[int, int] | None = None) -> RandomAffine | None:
    return None if output_size is None or _pair(output_size) == _pair(size) else resize_to(output_size)


# name -> factory(param size, output size or None) -> transform (or None: the identity)
TRANSFORM_SETS: dict[str, Callable[..., Transform | None]] = {
    "standard": standard_transforms,
    "lucent": lambda size, output_size=None: lucent_like_transforms(output_size),
    "none": _none,
}

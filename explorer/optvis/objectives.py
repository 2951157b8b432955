"""Objectives: per-image scores to maximise, composable with ``+ - *`` and scalars.

An objective maps a :class:`Context` (captured activations + the untransformed image) to a
tensor of shape [B]: one score per image, so a batch of B images can chase B different
units in one forward/backward pass (``channel("blocks.10", range(16))``).
Priors (total variation, norms) are objectives too, marked as such so the final activation
reported to the user can leave them out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Mapping, Sequence, Union

import torch

from ..capture import OUTPUT
from ..errors import UnitOutOfRangeError, UserInputError

Units = Union[int, Sequence[int]]


@dataclass
class Context:
    acts: Mapping[str, torch.Tensor]
    image: torch.Tensor  # B×C×H×W in [0, 1], before transforms
    include_priors: bool = True

    @property
    def batch(self) -> int:
        return self.image.shape[0]


@dataclass(frozen=True)
class UnitCheck:
    layer: str
    units: tuple[int, ...]
    axis: int = 0  # axis of the layer's per-example shape the units index
    what: str = "channel"
    size: int | None = None  # how many units there are when no axis counts them (attention heads)


class Objective:
    def __init__(
        self,
        fn: Callable[[Context], torch.Tensor],
        *,
        layers: Iterable[str] = (),
        name: str = "objective",
        checks: Iterable[UnitCheck] = (),
        batch: int | None = None,
        is_prior: bool = False,
    ):
        self.fn = fn
        self.layers = frozenset(layers)
        self.name = name
        self.checks = tuple(checks)
        self.batch = batch
        self.is_prior = is_prior

    def __call__(self, ctx: Context) -> torch.Tensor:
        if self.is_prior and not ctx.include_priors:
            return torch.zeros(ctx.batch, device=ctx.image.device)
        value = self.fn(ctx)
        if value.ndim == 0:
            value = value.expand(ctx.batch)
        return value

    def __repr__(self) -> str:
        return f"Objective({self.name})"

    # ---- composition -----------------------------------------------------------------------
    @staticmethod
    def _merge_batch(a: int | None, b: int | None) -> int | None:
        if a is not None and b is not None and a != b:
            raise UserInputError(f"Objectives disagree on the batch size ({a} vs {b}).")
        return a if a is not None else b

    def _combine(self, other: "Objective | float", op: Callable, symbol: str) -> "Objective":
        if isinstance(other, Objective):
            first, second = self, other
            return Objective(
                lambda ctx: op(first(ctx), second(ctx)),
                layers=self.layers | other.layers,
                name=f"({self.name} {symbol} {other.name})",
                checks=self.checks + other.checks,
                batch=self._merge_batch(self.batch, other.batch),
            )
        if isinstance(other, (int, float)):
            first, number = self, float(other)
            return Objective(
                lambda ctx: op(first(ctx), number),
                layers=self.layers,
                name=f"({self.name} {symbol} {number:g})",
                checks=self.checks,
                batch=self.batch,
                is_prior=self.is_prior,
            )
        return NotImplemented

    def __add__(self, other):
        return self._combine(other, lambda a, b: a + b, "+")

    def __radd__(self, other):
        if isinstance(other, (int, float)) and other == 0:  # sum([...])
            return self
        return self._combine(other, lambda a, b: b + a, "+")

    def __sub__(self, other):
        return self._combine(other, lambda a, b: a - b, "-")

    def __rsub__(self, other):
        return self._combine(other, lambda a, b: b - a, "r-")

    def __mul__(self, other):
        return self._combine(other, lambda a, b: a * b, "*")

    def __rmul__(self, other):
        return self._combine(other, lambda a, b: b * a, "*")

    def __truediv__(self, other):
        return self._combine(other, lambda a, b: a / b, "/")

    def __neg__(self):
        return self * -1.0

    # ---- validation ------------------------------------------------------------------------
    def validate(self, layer_shapes: Mapping[str, tuple[int, ...]]) -> None:
        """Raise a user-facing error for unknown layers or out-of-range units."""
        from ..errors import UnknownLayerError

        for layer in self.layers:
            if layer not in layer_shapes:
                raise UnknownLayerError(layer, layer_shapes)
        for check in self.checks:
            shape = layer_shapes[check.layer]
            size = check.size if check.size is not None else shape[check.axis] if len(shape) > check.axis else 1
            for unit in check.units:
                if not 0 <= unit < size:
                    what = "class" if check.layer == OUTPUT else check.what
                    raise UnitOutOfRangeError(check.layer, unit, size, what)


# ---- helpers ---------------------------------------------------------------------------------
def _units(units: Units) -> tuple[tuple[int, ...], int | None]:
    if isinstance(units, int):
        return (int(units),), None
    values = tuple(int(u) for u in units)
    if not values:
        raise UserInputError("No units given.")
    return values, (len(values) if len(values) > 1 else None)


def _per_image(units: tuple[int, ...], batch: int, device: torch.device) -> torch.Tensor:
    if len(units) == 1:
        return torch.full((batch,), units[0], device=device, dtype=torch.long)
    if len(units) != batch:
        raise UserInputError(f"{len(units)} units for a batch of {batch} images.")
    return torch.tensor(units, device=device, dtype=torch.long)


def _select_channel(act: torch.Tensor, units: tuple[int, ...]) -> torch.Tensor:
    """act B×C×... -> B×... with image b's own channel."""
    index = _per_image(units, act.shape[0], act.device)
    return act[torch.arange(act.shape[0], device=act.device), index]


# ---- objectives on activations ---------------------------------------------------------------
def channel(layer: str, units: Units) -> Objective:
    """Mean activation of a channel over all positions (one unit, or one per image)."""
    values, batch = _units(units)

    def fn(ctx: Context) -> torch.Tensor:
        picked = _select_channel(ctx.acts[layer], values)
        return picked.flatten(1).mean(1) if picked.ndim > 1 else picked

    return Objective(fn, layers=[layer], name=f"channel {layer}:{_fmt(values)}",
                     checks=[UnitCheck(layer, values)], batch=batch)


def neuron(layer: str, units: Units, x: int | None = None, y: int | None = None) -> Objective:
    """Activation of a channel at one spatial position (the centre by default)."""
    values, batch = _units(units)

    def fn(ctx: Context) -> torch.Tensor:
        picked = _select_channel(ctx.acts[layer], values)
        if picked.ndim == 1:
            return picked
        h, w = picked.shape[-2:]
        yy = h // 2 if y is None else min(max(y, 0), h - 1)
        xx = w // 2 if x is None else min(max(x, 0), w - 1)
        return picked[:, yy, xx]

    return Objective(fn, layers=[layer], name=f"neuron {layer}:{_fmt(values)}",
                     checks=[UnitCheck(layer, values, what="neuron channel")], batch=batch)


def deepdream(layer: str) -> Objective:
    """Mean squared activation of a whole layer (what DeepDream amplifies)."""

    def fn(ctx: Context) -> torch.Tensor:
        return ctx.acts[layer].pow(2).flatten(1).mean(1)

    return Objective(fn, layers=[layer], name=f"deepdream {layer}")


def class_logit(classes: Units) -> Objective:
    """The pre-softmax score of a class (one, or one per image)."""
    values, batch = _units(classes)

    def fn(ctx: Context) -> torch.Tensor:
        return _select_channel(ctx.acts[OUTPUT], values)

    return Objective(fn, layers=[OUTPUT], name=f"logit {_fmt(values)}",
                     checks=[UnitCheck(OUTPUT, values, what="class")], batch=batch)


def class_probability(classes: Units, log: bool = True) -> Objective:
    """Softmax probability of a class; ``log=True`` maximises log p (better gradients, same optimum)."""
    values, batch = _units(classes)

    def fn(ctx: Context) -> torch.Tensor:
        logp = torch.log_softmax(ctx.acts[OUTPUT], dim=-1)
        picked = _select_channel(logp, values)
        return picked if log else picked.exp()

    return Objective(fn, layers=[OUTPUT], name=f"{'log ' if log else ''}p {_fmt(values)}",
                     checks=[UnitCheck(OUTPUT, values, what="class")], batch=batch)


def direction(layer: str, vector: torch.Tensor | Sequence[float], cosine: bool = False) -> Objective:
    """Activation projected on a direction in channel space (B×C vectors: one per image).

    ``cosine=True`` scores the mean cosine similarity instead, which ignores magnitude.
    """
    vec = torch.as_tensor(vector, dtype=torch.float32)
    if vec.ndim == 1:
        vec = vec[None]
    batch = vec.shape[0] if vec.shape[0] > 1 else None

    def fn(ctx: Context) -> torch.Tensor:
        act = ctx.acts[layer]
        v = vec.to(act.device)
        if act.shape[1] != v.shape[1]:
            raise UserInputError(f"Direction has {v.shape[1]} components but {layer} has {act.shape[1]} channels.")
        v = v.expand(act.shape[0], -1)
        flat = act.flatten(2)  # B×C×N
        dot = torch.einsum("bcn,bc->bn", flat, v)
        if cosine:
            dot = dot / (flat.norm(dim=1) * v.norm(dim=1, keepdim=True) + 1e-8)
        return dot.mean(1)

    return Objective(fn, layers=[layer], name=f"direction {layer}{' (cos)' if cosine else ''}", batch=batch)


def diversity(layer: str) -> Objective:
    """Negative mean cosine similarity between each image's Gram matrix and the others' (Olah et al. 2017).

    Add it with a weight to make a batch of images for the same unit show different facets.
    """

    def fn(ctx: Context) -> torch.Tensor:
        act = ctx.acts[layer]
        b = act.shape[0]
        if b < 2:
            return torch.zeros(b, device=act.device)
        flat = act.flatten(2)
        gram = torch.bmm(flat, flat.transpose(1, 2)).flatten(1)
        gram = gram / (gram.norm(dim=1, keepdim=True) + 1e-8)
        sim = gram @ gram.T
        off_diagonal = sim.sum(1) - sim.diagonal()
        return -off_diagonal / (b - 1)

    return Objective(fn, layers=[layer], name=f"diversity {layer}")


def _fmt(values: tuple[int, ...]) -> str:
    if len(values) == 1:
        return str(values[0])
    if values == tuple(range(values[0], values[0] + len(values))):
        return f"{values[0]}-{values[-1]}"
    return ",".join(map(str, values[:4])) + ("…" if len(values) > 4 else "")

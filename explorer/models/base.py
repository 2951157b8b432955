"""A loaded classifier: the module plus everything the rest of the project needs to use it."""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass, field
from functools import cached_property
from typing import Callable, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .. import devices
from ..capture import OUTPUT, capture, layer_shapes, resolve_modules
from ..errors import UnknownLayerError, UserInputError
from .fused import FusedTwin, fused_twin


class Normalize(nn.Module):
    """(x - mean) / std per channel, for inputs in [0, 1]."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class Affine(nn.Module):
    """x * scale + offset: TF-style (x·255 − 127)/128, or Caffe-style x·255 − 117."""

    def __init__(self, scale: float, offset: float):
        super().__init__()
        self.scale, self.offset = float(scale), float(offset)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale + self.offset

    def extra_repr(self) -> str:
        return f"scale={self.scale}, offset={self.offset}"


IMAGENET_NORMALIZE = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


@dataclass(frozen=True)
class ModelSpec:
    """A registry entry: how to load one model by name."""

    name: str
    title: str
    # loader(weights, device) -> LoadedModel; weights is "pretrained", "random" or a file path
    loader: Callable[[str, torch.device], "LoadedModel"]
    default_weights: str = "pretrained"
    offline: bool = True  # its default weights ship with the project's dependencies
    default_layer: str | None = None
    family: str = "imagenet"  # label family: models of one family can judge each other's images
    # When set: whether weights="pretrained" gives real weights here, checked without building the model (timm
    # entries fall back to random weights with a notice; judges must not be random)
    pretrained_available: Callable[[], bool] | None = None


@dataclass(frozen=True)
class LayerInfo:
    name: str
    shape: tuple[int, ...]  # output shape without the batch dimension
    kind: str  # module class name
    calls: int  # how often the module runs in one forward pass
    tokens: bool = False  # a transformer's token tensor: shape is (tokens N, channels C), not (C, …)

    @property
    def channels(self) -> int:
        if self.tokens:
            return self.shape[-1]
        return self.shape[0] if self.shape else 1

    def describe(self) -> str:
        shape = f"{self.shape[0]} tokens × {self.shape[1]}" if self.tokens else '×'.join(map(str, self.shape))
        return f"{self.name}  {self.kind}  {shape}"


FINGERPRINT_SCHEME = "blake2b-128 of every tensor's name, dtype, shape and every byte"
FINGERPRINT_HEX = 32  # characters; the legacy (partial) fingerprint had 16


def _tensor_bytes(tensor: torch.Tensor) -> memoryview:
    """Every byte of a tensor's values as stored (dense, contiguous, on the CPU), without a copy when it is one."""
    data = tensor.detach()
    if data.layout != torch.strided:
        data = data.to_dense()
    if data.is_quantized:
        data = data.int_repr()
    data = data.cpu().contiguous().reshape(-1)
    return memoryview(data.view(torch.uint8).numpy()) if data.numel() else memoryview(b"")


def fingerprint_module(module: nn.Module) -> str:
    """A hash of *all* the weights (:data:`FINGERPRINT_SCHEME`): the gallery store, the shipped atlas and the
    page's caches key on it, so other weights never meet this network's stored results. Two checkpoints that
    differ in any byte of any tensor (or in a name, dtype or shape) get different fingerprints. Costs one
    blake2b pass over the weights (EfficientNet-Lite0's 18.6 MB: ~0.03 s; benchmarks/fingerprint.py)."""
    digest = hashlib.blake2b(digest_size=FINGERPRINT_HEX // 2)
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(f"{name}\0{str(tensor.dtype)}\0{tuple(tensor.shape)}\0".encode())
        digest.update(_tensor_bytes(tensor))
    return digest.hexdigest()


def is_legacy_fingerprint(fingerprint: str) -> bool:
    """True for the fingerprint used before issue 20 (16 hex digits of a hash that read only the first 64 KB
    of each tensor): results keyed on it cannot tell weights apart and are never served."""
    return len(fingerprint) == 16 and all(c in "0123456789abcdef" for c in fingerprint)


def legacy_fingerprint_module(module: nn.Module) -> str:
    """The old, partial fingerprint (first 64 KB of each tensor as float32). Only for migrations: it checks
    that a result keyed on it was made with these weights *as far as it could tell*, before re-keying."""
    digest = hashlib.sha1()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        data = tensor.detach().to("cpu", torch.float32).contiguous() if tensor.is_floating_point() else tensor.cpu()
        digest.update(data.numpy().tobytes()[: 1 << 16])
        digest.update(str(tuple(tensor.shape)).encode())
    return digest.hexdigest()[:16]


def make_inference_ready(module: nn.Module) -> nn.Module:
    """eval mode, frozen weights, no in-place activations (they would overwrite captured tensors)."""
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    for m in module.modules():
        if getattr(m, "inplace", False) is True:
            m.inplace = False
    return module


@dataclass
class LoadedModel:
    """A classifier ready for the project: shared read-only between threads and sessions."""

    name: str
    module: nn.Module
    preprocess: nn.Module
    labels: list[str]
    input_size: tuple[int, int]
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    weights: str = "pretrained"
    channels: int = 3
    fixed_input_size: bool = False  # resize every input to input_size (nets with a flatten)
    default_layer: str | None = None
    description: str = ""
    # Transformers (timm ViTs): None for other networks; otherwise its 2-D layer outputs are B×N×C token
    # tensors whose first ``token_prefix`` tokens are not image patches (CLS, distillation, registers).
    token_prefix: int | None = None
    # run layers through the checked, faster twin (models/fused.py) where it computes them as the module does
    fuse: bool = True
    fuse_note: str = field(default="", init=False)  # "fused", or why there is no twin

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        make_inference_ready(self.module)
        self.module.to(self.device, memory_format=devices.memory_format(self.device))
        self.preprocess.to(self.device)

    # ---- layers --------------------------------------------------------------------------
    @property
    def scripted(self) -> bool:
        """A TorchScript module: it takes no hooks, so only its output (the logits) can be read."""
        return isinstance(self.module, torch.jit.ScriptModule)

    @cached_property
    def _dry_run(self) -> tuple[dict[str, tuple[int, ...]], dict[str, int]]:
        if self.scripted:
            return {}, {}
        with self._lock:
            x = torch.full((1, self.channels, *self.input_size), 0.5, device=self.device)
            return layer_shapes(self.module, self.preprocess(x))

    @cached_property
    def layers(self) -> list[LayerInfo]:
        """Every module that produces a tensor, in execution order, with its output shape."""
        shapes, calls = self._dry_run
        kinds = {n: type(m).__name__ for n, m in self.module.named_modules()}
        tokens = self.token_prefix is not None
        infos = [LayerInfo(n, s, kinds.get(n, "?"), calls.get(n, 1), tokens and len(s) == 2) for n, s in shapes.items()]
        out = self.num_classes
        infos.append(LayerInfo(OUTPUT, (out,), "logits", 1))
        return infos

    @cached_property
    def fused(self) -> FusedTwin | None:
        """The faster twin (batch norms folded, CPU depthwise convs in fp32 under autocast), built and checked
        once on a seeded random input; None when ``fuse`` is off or the check refused it."""
        if not self.fuse or self.scripted:
            return None
        with self._lock:
            gen = torch.Generator().manual_seed(0)
            example = torch.rand((1, self.channels, *self.input_size), generator=gen).to(self.device)
            try:
                twin, self.fuse_note = fused_twin(self.module, self.preprocess(example))
            except Exception as error:  # a network the dry run cannot handle: the original always works
                twin, self.fuse_note = None, f"not fused: {type(error).__name__}: {error}"
            if twin is not None:
                twin.module.to(self.device, memory_format=devices.memory_format(self.device))
            return twin

    def module_for(self, layers: Iterable[str]) -> nn.Module:
        """The module that computes ``layers``: the fused twin unless a requested layer is one it changed."""
        twin = self.fused
        if twin is None or not twin.changed.isdisjoint(layers):
            return self.module
        return twin.module

    @cached_property
    def layer_shapes(self) -> dict[str, tuple[int, ...]]:
        return {info.name: info.shape for info in self.layers}

    @cached_property
    def reused_layers(self) -> frozenset[str]:
        return frozenset(n for n, c in self._dry_run[1].items() if c > 1)

    @cached_property
    def num_classes(self) -> int:
        with self._lock, torch.no_grad():
            x = torch.full((1, self.channels, *self.input_size), 0.5, device=self.device)
            return int(self.module(self.preprocess(x)).shape[-1])

    def main_layers(self) -> list[LayerInfo]:
        """The layers worth offering first: spatial (C×H×W) or token (N×C) outputs of modules with children or
        convs, plus logits."""
        modules = dict(self.module.named_modules())
        picked = []
        for info in self.layers:
            module = modules.get(info.name)
            if info.name == OUTPUT:
                picked.append(info)
            elif info.tokens and isinstance(module, nn.Sequential):
                continue  # a ViT's `blocks` stack: its blocks are the layers
            elif module is not None and info.calls == 1 and (len(info.shape) in (1, 3) or info.tokens):
                if info.name.count(".") <= 1 and (len(list(module.children())) > 0
                                                  or isinstance(module, (nn.Conv2d, nn.Linear))):
                    picked.append(info)
        return picked

    def check_layer(self, name: str) -> LayerInfo:
        for info in self.layers:
            if info.name == name:
                return info
        if self.scripted:
            raise UserInputError(f"{self.name} is TorchScript: its inner layers take no hooks, "
                                 f"only {OUTPUT!r} (the logits) can be read. "
                                 "A state dict with --arch exposes every layer.")
        resolve_modules(self.module, [name])  # raises with suggestions when unknown
        raise UnknownLayerError(name, self.layer_shapes)  # a module that produces no tensor

    # ---- running -------------------------------------------------------------------------
    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1] (B×C×H×W) -> the module's input: device, size, channels, normalisation."""
        x = images.to(self.device, torch.float32)
        if x.shape[1] != self.channels:
            if x.shape[1] == 1:
                x = x.expand(-1, self.channels, -1, -1)
            elif self.channels == 1:
                x = x.mean(dim=1, keepdim=True)
            else:
                raise ValueError(f"{self.name} takes {self.channels}-channel images, got {x.shape[1]}.")
        if self.fixed_input_size and tuple(x.shape[-2:]) != tuple(self.input_size):
            x = F.interpolate(x, size=self.input_size, mode="bilinear", align_corners=False, antialias=True)
        x = self.preprocess(x)
        return x.contiguous(memory_format=devices.memory_format(self.device))

    def activations(
        self, images: torch.Tensor, layers: Iterable[str], *, use_autocast: bool = True
    ) -> dict[str, torch.Tensor]:
        """Activations of ``layers`` for images in [0, 1]; the forward pass stops after the deepest."""
        x = self.prepare(images)
        layers = list(layers)
        with devices.autocast(self.device, use_autocast):
            acts = capture(self.module_for(layers), x, layers, reused=self.reused_layers)
        return {k: v.float() for k, v in acts.items()}

    def at_input_size(self, images: torch.Tensor) -> torch.Tensor:
        """Images resized (bilinear, antialiased) to the resolution the model was trained at: how it judges an
        image made at another size (e.g. a 224-px render shown to a 260-px network)."""
        if tuple(images.shape[-2:]) == tuple(self.input_size):
            return images
        return F.interpolate(images, size=tuple(self.input_size), mode="bilinear", align_corners=False,
                             antialias=True).clamp(0, 1)

    @torch.no_grad()
    def probabilities(self, images: torch.Tensor, *, batch_size: int = 64, native_size: bool = False) -> torch.Tensor:
        """Softmax over classes for images in [0, 1], computed in batches; returned on the CPU.
        ``native_size`` first resizes them to the model's input size (:meth:`at_input_size`)."""
        out = []
        for start in range(0, images.shape[0], batch_size):
            chunk = images[start : start + batch_size]
            if native_size:
                chunk = self.at_input_size(chunk.to(self.device, torch.float32))
            logits = self.activations(chunk, [OUTPUT])[OUTPUT]
            out.append(torch.softmax(logits, dim=-1).cpu())
        return torch.cat(out)

    def label(self, index: int) -> str:
        return self.labels[index] if 0 <= index < len(self.labels) else f"class {index}"

    @cached_property
    def fingerprint(self) -> str:
        return fingerprint_module(self.module)

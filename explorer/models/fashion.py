"""The project's own Fashion-MNIST classifier (trained by ``python -m explorer diffusion train-classifier``).

Shipped as ``assets/fashion_cnn/{model.safetensors,config.json}``; registered as ``fashion_cnn`` so every
page can use it (the diffusion inspector probes its denoising chains with it).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from .. import devices
from ..errors import UserInputError
from .base import LoadedModel, ModelSpec, Normalize
from .labels import FASHION_LABELS
from .weights import WeightsUnavailable, load_weights

ASSET_DIR = Path(__file__).resolve().parents[2] / "assets" / "fashion_cnn"


class SmallCNN(nn.Module):
    """Two conv-conv-pool stages and a two-layer head: ~92 % on Fashion-MNIST after 3 CPU epochs.

    Layer names read ``features.block1``, ``features.block2``, ``head`` for the layer pickers.
    """

    def __init__(self, input_size: tuple[int, int] = (28, 28), channels: int = 1, width: int = 32,
                 hidden: int = 128, num_classes: int = 10, dropout: float = 0.25):
        super().__init__()
        h, w = input_size

        def stage(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(),
                nn.Conv2d(cout, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(),
                nn.MaxPool2d(2),
            )

        self.features = nn.Sequential()
        self.features.add_module("block1", stage(channels, width))
        self.features.add_module("block2", stage(width, 2 * width))
        flat = 2 * width * (h // 4) * (w // 4)
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(dropout), nn.Linear(flat, hidden), nn.ReLU(),
                                  nn.Dropout(dropout), nn.Linear(hidden, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def build_classifier(config: dict) -> SmallCNN:
    """The architecture described by a config.json (the trainer writes the same keys)."""
    return SmallCNN(
        input_size=tuple(config["input_size"]), channels=int(config.get("channels", 1)),
        width=int(config.get("width", 32)), hidden=int(config.get("hidden", 128)),
        num_classes=len(config["labels"]),
    )


def load_classifier_dir(folder: str | Path, device: torch.device | str = "cpu", name: str | None = None) -> LoadedModel:
    """A LoadedModel from a folder with model.safetensors + config.json (labels, input size, normalisation)."""
    folder = Path(folder).expanduser()
    config_file, weights_file = folder / "config.json", folder / "model.safetensors"
    if not config_file.is_file() or not weights_file.is_file():
        raise WeightsUnavailable(
            f"{folder} needs config.json and model.safetensors; train them with "
            "`python -m explorer diffusion train-classifier --out assets/fashion_cnn`."
        )
    try:
        config = json.loads(config_file.read_text())
        module = build_classifier(config)
    except (ValueError, KeyError, TypeError) as exc:
        raise UserInputError(f"{config_file} is not a classifier config ({type(exc).__name__}: {exc}).") from None
    load_weights(module, weights_file, "the network its config.json describes", label=str(weights_file))
    mean, std = config.get("normalize", [[0.0], [1.0]])
    return LoadedModel(
        name=name or config.get("name", folder.name),
        module=module,
        preprocess=Normalize(mean, std),
        labels=list(config["labels"]),
        input_size=tuple(config["input_size"]),
        device=torch.device(device),
        weights=str(folder),
        channels=int(config.get("channels", 1)),
        fixed_input_size=True,
        default_layer="features.block2",
        description=config.get("description", "Small CNN trained by the project"),
    )


def _load_fashion_cnn(weights: str, device: torch.device) -> LoadedModel:
    if weights == "random":
        labels = list(FASHION_LABELS)
        config = {"input_size": [28, 28], "labels": labels, "normalize": [[0.286], [0.353]]}
        with devices.seeded(0):  # the same random weights every time, the caller's RNG untouched
            module = build_classifier(config)
        return LoadedModel("fashion_cnn", module, Normalize(*config["normalize"]), labels,
                           (28, 28), device, "random", channels=1, fixed_input_size=True,
                           default_layer="features.block2")
    folder = ASSET_DIR if weights == "pretrained" else Path(weights)
    return load_classifier_dir(folder, device, name="fashion_cnn")


SPECS = [ModelSpec(
    name="fashion_cnn",
    title="Fashion-MNIST CNN (trained by the project)",
    loader=_load_fashion_cnn,
    default_weights="pretrained",
    offline=True,
    default_layer="features.block2",
    family="fashion",
)]

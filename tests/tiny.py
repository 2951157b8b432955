"""A tiny random-init classifier for fast, honest tests of the engine."""

from __future__ import annotations

import torch
from torch import nn

from explorer.models import LoadedModel


class TinyNet(nn.Module):
    def __init__(self, classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.act1 = nn.ReLU()
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1, stride=2)
        self.act2 = nn.ReLU()
        self.conv3 = nn.Conv2d(16, 16, 3, padding=1, stride=2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act1(self.conv1(x))
        x = self.act2(self.conv2(x))
        x = self.conv3(x)
        return self.fc(torch.flatten(self.pool(x), 1))


def tiny_model(seed: int = 0, classes: int = 10, size: int = 32) -> LoadedModel:
    torch.manual_seed(seed)
    return LoadedModel(
        name="tiny", module=TinyNet(classes), preprocess=nn.Identity(), labels=[f"c{i}" for i in range(classes)],
        input_size=(size, size), device=torch.device("cpu"), weights="random", default_layer="conv2",
    )


# ---- a tiny net that fails once, for the fault tests of Ray builds (tests/test_scale.py) ----------
FAULT_DIR_VAR = "EXPLORER_TEST_FAULT_DIR"


class FragileNet(TinyNet):
    """TinyNet (same weights and fingerprint) whose forward consumes a flag file in
    ``$EXPLORER_TEST_FAULT_DIR``: ``raise`` makes that one forward raise, ``crash`` kills its
    process (a lost Ray worker). Removing the file is atomic, so exactly one forward fails."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        import os

        folder = os.environ.get(FAULT_DIR_VAR)
        if folder:
            for kind in ("raise", "crash"):
                try:
                    os.remove(os.path.join(folder, kind))
                except FileNotFoundError:
                    continue
                if kind == "crash":
                    os._exit(1)
                raise RuntimeError("injected fault")
        return super().forward(x)


def fragile_model(seed: int = 0) -> LoadedModel:
    torch.manual_seed(seed)
    return LoadedModel(
        name="tiny", module=FragileNet(), preprocess=nn.Identity(), labels=[f"c{i}" for i in range(10)],
        input_size=(32, 32), device=torch.device("cpu"), weights="random", default_layer="conv2",
    )

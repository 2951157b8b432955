"""musicnn's MagnaTagATune VGG tagger (Pons & Serra 2019) ported to torch, weights read from the
TF1 checkpoint shipped in the ``musicnn`` package (no TensorFlow needed).

Front end as musicnn computes it with librosa: 16 kHz, centred STFT (n_fft 512, hop 256,
periodic Hann, reflect padding), power spectrum → 96 Slaney mel bands → log10(10000·mel + 1).
The network sees 187-frame (3 s) patches laid out time × frequency, like TF's NHWC:

    BN(input) → 5 × [conv 3×3 'same' → ReLU → BN → max-pool] → flatten (NHWC order) → dense 50

Pools: (4,1)/stride 2, then 2×2, 2×2, 2×2, then 4×4 — all 'valid' as TF's max_pooling2d.
Batch norms use TF's ε = 1e-3. Tag probabilities are sigmoids; a clip's probability is the mean
over overlapping patches that cover it (short clips are repeat-padded, as musicnn trained).
"""

from __future__ import annotations

import threading
from importlib.util import find_spec
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UserInputError
from .spectrogram import STFTConfig, mel_filterbank, stft
from .tfcheckpoint import read_checkpoint

SAMPLE_RATE = 16000
N_MELS = 96
PATCH_FRAMES = 187
MUSIC_STFT = STFTConfig(n_fft=512, hop=256, pad_mode="reflect")
BN_EPS = 1e-3
MODELS = ("MTT_vgg", "MTT_musicnn")


def mtt_labels() -> list[str]:
    """The 50 MagnaTagATune tags, in the model's output order (from musicnn's configuration)."""
    from musicnn import configuration

    return list(configuration.MTT_LABELS)


def checkpoint_prefix(name: str = "MTT_vgg") -> Path:
    spec = find_spec("musicnn")
    if spec is None or spec.origin is None:
        raise UserInputError("The music tagger needs the `musicnn` package: pip install --no-deps musicnn==0.1.0")
    folder = Path(spec.origin).parent / name
    if not (folder / ".index").is_file():
        raise UserInputError(f"musicnn is installed but its {name} checkpoint is missing ({folder}/.index).")
    return folder


class BatchNormTF(nn.Module):
    """Inference batch norm with TF's parameter names and ε, over dim 1."""

    def __init__(self, channels: int):
        super().__init__()
        for name in ("gamma", "beta", "moving_mean", "moving_variance"):
            self.register_buffer(name, torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = (1, -1) + (1,) * (x.ndim - 2)
        scale = self.gamma / torch.sqrt(self.moving_variance + BN_EPS)
        return (x - self.moving_mean.view(shape)) * scale.view(shape) + self.beta.view(shape)


class MusicVGG(nn.Module):
    """The network on 1×187×96 log-mel patches → 50 logits."""

    POOLS = [((4, 1), (2, 2)), ((2, 2), (2, 2)), ((2, 2), (2, 2)), ((2, 2), (2, 2)), ((4, 4), (4, 4))]

    def __init__(self, filters: int = 128, classes: int = 50):
        super().__init__()
        self.bn_input = BatchNormTF(1)
        self.convs = nn.ModuleList(nn.Conv2d(1 if i == 0 else filters, filters, 3, padding=1) for i in range(5))
        self.bns = nn.ModuleList(BatchNormTF(filters) for _ in range(5))
        self.dense = nn.Linear(2 * 1 * filters, classes)
        self.pool1 = nn.Identity()  # named outputs for activation capture (musicnn's feature names)
        self.pool2 = nn.Identity()
        self.pool3 = nn.Identity()
        self.pool4 = nn.Identity()
        self.pool5 = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn_input(x)
        taps = [self.pool1, self.pool2, self.pool3, self.pool4, self.pool5]
        for conv, bn, (size, stride), tap in zip(self.convs, self.bns, self.POOLS, taps):
            x = tap(F.max_pool2d(bn(F.relu(conv(x))), size, stride))
        return self.dense(x.permute(0, 2, 3, 1).flatten(1))  # TF flattens NHWC

    def load_tf(self, tensors: dict[str, np.ndarray]) -> "MusicVGG":
        def t(name: str) -> torch.Tensor:
            return torch.from_numpy(tensors[name]).float()

        with torch.no_grad():
            for i, bn in enumerate([self.bn_input, *self.bns]):
                prefix = "batch_normalization" + (f"_{i}" if i else "")
                for name in ("gamma", "beta", "moving_mean", "moving_variance"):
                    getattr(bn, name).copy_(t(f"{prefix}/{name}"))
            for i, conv in enumerate(self.convs, start=1):
                conv.weight.copy_(t(f"{i}CNN/kernel").permute(3, 2, 0, 1))  # kh,kw,in,out -> out,in,kh,kw
                conv.bias.copy_(t(f"{i}CNN/bias"))
            self.dense.weight.copy_(t("dense/kernel").T)
            self.dense.bias.copy_(t("dense/bias"))
        return self


def _same_pad(kernel: int) -> tuple[int, int]:
    """TF 'same' padding for stride 1: the extra sample of an even kernel goes after."""
    return (kernel - 1) // 2, kernel - 1 - (kernel - 1) // 2


class Musicnn(nn.Module):
    """musicnn (MTT_musicnn): musically motivated front end, dense mid end, temporal pooling back end.

    Front end on the BN'd log-mel (time × frequency): two timbral convs (7×38 and 7×67, 204
    filters, time padded by 3) and three temporal convs (128×1, 64×1, 32×1 'same', 51 filters),
    each ReLU → BN → max over frequency. Mid end: three 7-tap convs over the 561 concatenated
    features (64 filters, ReLU → BN, residual for the 2nd and 3rd). Back end: max and mean over
    time of the 753 dense-connected features (TF's flatten interleaves them), BN, dense 200
    (ReLU → BN), dense 50.
    """

    def __init__(self, mels: int = N_MELS, classes: int = 50):
        super().__init__()
        self.bn_input = BatchNormTF(1)
        self.timbral = nn.ModuleList(nn.Conv2d(1, 204, (7, int(f * mels))) for f in (0.4, 0.7))
        self.temporal = nn.ModuleList(nn.Conv2d(1, 51, (k, 1)) for k in (128, 64, 32))
        self.front_bns = nn.ModuleList(BatchNormTF(c) for c in (204, 204, 51, 51, 51))
        self.mid = nn.ModuleList(nn.Conv1d(c, 64, 7, padding=3) for c in (561, 64, 64))
        self.mid_bns = nn.ModuleList(BatchNormTF(64) for _ in range(3))
        self.pool_bn = BatchNormTF(1506)
        self.penultimate = nn.Linear(1506, 200)
        self.penultimate_bn = BatchNormTF(200)
        self.dense = nn.Linear(200, classes)
        self.timbral_out = nn.Identity()  # named outputs (musicnn's feature names)
        self.temporal_out = nn.Identity()
        self.cnn3 = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn_input(x)  # B×1×T×F
        features = []
        for conv, bn in zip(self.timbral, self.front_bns[:2]):
            y = F.relu(conv(F.pad(x, (0, 0, 3, 3))))
            features.append(bn(y).amax(-1))
        for conv, bn in zip(self.temporal, self.front_bns[2:]):
            y = F.relu(conv(F.pad(x, (0, 0) + _same_pad(conv.kernel_size[0]))))
            features.append(bn(y).amax(-1))
        front = torch.cat([self.timbral_out(torch.cat(features[:2], 1)),
                           self.temporal_out(torch.cat(features[2:], 1))], 1)
        layers = [front]
        h = self.mid_bns[0](F.relu(self.mid[0](front)))
        layers.append(h)
        for conv, bn in zip(self.mid[1:], self.mid_bns[1:]):
            h = bn(F.relu(conv(h))) + h
            layers.append(h)
        mid = torch.cat(layers, 1)  # B×753×T
        self.cnn3(h)
        pooled = torch.stack([mid.amax(-1), mid.mean(-1)], dim=-1).flatten(1)  # TF: [max, mean] per feature
        hidden = self.penultimate_bn(F.relu(self.penultimate(self.pool_bn(pooled))))
        return self.dense(hidden)

    def load_tf(self, tensors: dict[str, np.ndarray]) -> "Musicnn":
        def t(name: str) -> torch.Tensor:
            return torch.from_numpy(tensors[name]).float()

        bns = [self.bn_input, *self.front_bns, *self.mid_bns, self.pool_bn, self.penultimate_bn]
        with torch.no_grad():
            for i, bn in enumerate(bns):
                prefix = "batch_normalization" + (f"_{i}" if i else "")
                for name in ("gamma", "beta", "moving_mean", "moving_variance"):
                    getattr(bn, name).copy_(t(f"{prefix}/{name}"))
            for i, conv in enumerate([*self.timbral, *self.temporal]):
                name = "conv2d" + (f"_{i}" if i else "")
                conv.weight.copy_(t(f"{name}/kernel").permute(3, 2, 0, 1))
                conv.bias.copy_(t(f"{name}/bias"))
            for i, conv in enumerate(self.mid, start=5):
                conv.weight.copy_(t(f"conv2d_{i}/kernel")[:, :, 0, :].permute(2, 1, 0))  # kt,kf,1,out -> out,kf,kt
                conv.bias.copy_(t(f"conv2d_{i}/bias"))
            for layer, name in ((self.penultimate, "dense"), (self.dense, "dense_1")):
                layer.weight.copy_(t(f"{name}/kernel").T)
                layer.bias.copy_(t(f"{name}/bias"))
        return self


class MusicTagger(nn.Module):
    """Waveform or magnitude spectrogram → MagnaTagATune tag logits, differentiably."""

    sample_rate = SAMPLE_RATE
    stft = MUSIC_STFT

    def __init__(self, network: nn.Module, labels: list[str]):
        super().__init__()
        self.network = network
        self.labels = labels
        self.register_buffer("mel", torch.from_numpy(mel_filterbank(SAMPLE_RATE, MUSIC_STFT.n_fft, N_MELS)))

    def tag_index(self, tag: str) -> int:
        wanted = tag.strip().lower().replace("_", " ")
        if wanted in self.labels:
            return self.labels.index(wanted)
        import difflib

        close = difflib.get_close_matches(wanted, self.labels, n=4)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise UserInputError(f"Unknown music tag {tag!r}.{hint} Tags: {', '.join(self.labels)}.")

    def log_mel(self, magnitude: torch.Tensor) -> torch.Tensor:
        """B×257×frames magnitudes → B×96×frames musicnn log-mel."""
        return torch.log10(10000.0 * torch.einsum("mf,bft->bmt", self.mel, magnitude**2) + 1.0)

    def waveform_log_mel(self, wav: torch.Tensor) -> torch.Tensor:
        return self.log_mel(stft(wav if wav.ndim == 2 else wav[None], MUSIC_STFT).abs())

    @staticmethod
    def patches(log_mel: torch.Tensor) -> torch.Tensor:
        """B×96×T → B×P×1×187×96: overlapping patches covering the clip (repeat-padded if short)."""
        frames = log_mel.shape[-1]
        if frames < PATCH_FRAMES:
            log_mel = log_mel.repeat(1, 1, -(-PATCH_FRAMES // frames))[..., :PATCH_FRAMES]
            frames = PATCH_FRAMES
        count = 1 + -(-(frames - PATCH_FRAMES) // (PATCH_FRAMES // 2))  # hop ≤ half a patch
        starts = np.linspace(0, frames - PATCH_FRAMES, count).round().astype(int)
        return torch.stack([log_mel[..., s : s + PATCH_FRAMES] for s in starts], dim=1).transpose(-1, -2)[:, :, None]

    def forward(self, log_mel: torch.Tensor) -> torch.Tensor:
        """B×96×T log-mel → B×P×50 logits (one row per patch)."""
        patches = self.patches(log_mel)
        b, p = patches.shape[:2]
        return self.network(patches.flatten(0, 1)).reshape(b, p, -1)

    def logits_from_magnitude(self, magnitude: torch.Tensor) -> torch.Tensor:
        return self(self.log_mel(magnitude))

    @torch.no_grad()
    def tag_probabilities(self, wav: torch.Tensor) -> torch.Tensor:
        """B×T (or T) 16 kHz waveform → B×50 probabilities (mean over patches)."""
        return torch.sigmoid(self(self.waveform_log_mel(wav))).mean(1)


_LOCK = threading.Lock()
_CACHE: dict[tuple[str, str], MusicTagger] = {}


def load_music_tagger(name: str = "MTT_vgg", device: torch.device | str = "cpu") -> MusicTagger:
    """The tagger with weights from musicnn's checkpoint, frozen, one instance per device."""
    if name not in MODELS:
        raise UserInputError(f"Music model {name!r} is not ported; available: {', '.join(MODELS)}.")
    key = (name, str(device))
    with _LOCK:
        if key not in _CACHE:
            tensors = read_checkpoint(str(checkpoint_prefix(name)) + "/")
            network = (MusicVGG() if name == "MTT_vgg" else Musicnn()).load_tf(tensors)
            _CACHE[key] = MusicTagger(network, mtt_labels()).to(device).eval().requires_grad_(False)
        return _CACHE[key]

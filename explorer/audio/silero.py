"""Silero VAD (v6, 16 kHz) re-implemented in plain torch so gradients reach a magnitude spectrogram.

The shipped model is TorchScript and streams 512-sample chunks: each chunk is prefixed with
the previous chunk's last 64 samples (zeros at the start), reflect-padded by 64 on the right,
turned into 4 STFT frames (n_fft 256, hop 128, periodic Hann) → 4 conv layers (ReLU; strides
1, 2, 2, 1) → an LSTM cell carried across chunks → ReLU, 1×1 conv, sigmoid: one speech
probability per chunk (32 ms). Weights come from the JIT model's state dict.

Two front ends feed the same network:

* :meth:`SileroVAD.chunk_magnitudes` — exactly the JIT model's per-chunk framing (verification,
  round trips);
* :data:`SPEECH_STFT` — a uniform STFT over the whole clip whose frames sit where the JIT model's
  do (frame ``4i + k`` of chunk ``i``). Only each chunk's 4th frame differs: the JIT model sees
  64 reflected samples there, the uniform STFT sees the real next samples. Dreams optimise
  this spectrogram; the round trip then measures the exact model on the waveform.
"""

from __future__ import annotations

import threading

import torch
import torch.nn.functional as F
from torch import nn

from .spectrogram import STFTConfig

SAMPLE_RATE = 16000
CHUNK = 512
CONTEXT = 64
SPEECH_STFT = STFTConfig(n_fft=256, hop=128, pad_left=CONTEXT, pad_mode="constant")


class SileroVAD(nn.Module):
    """Silero VAD's 16 kHz network; ``forward(magnitude)`` → per-chunk speech probabilities."""

    sample_rate = SAMPLE_RATE
    stft = SPEECH_STFT

    def __init__(self) -> None:
        super().__init__()
        specs = [(129, 128, 1), (128, 64, 2), (64, 64, 2), (64, 128, 1)]
        self.encoder = nn.ModuleList(nn.Conv1d(i, o, 3, stride=s, padding=1) for i, o, s in specs)
        self.rnn = nn.LSTMCell(128, 128)
        self.head = nn.Conv1d(128, 1, 1)
        self.register_buffer("forward_basis", torch.zeros(258, 1, 256))

    @classmethod
    def from_jit(cls) -> "SileroVAD":
        """Build from the TorchScript model shipped in the silero-vad package (offline)."""
        from silero_vad import load_silero_vad

        jit = load_silero_vad()
        state = {k[len("_model.") :]: v for k, v in jit.state_dict().items() if k.startswith("_model.")}
        model = cls()
        mapping = {"forward_basis": "stft.forward_basis_buffer", "head.weight": "decoder.decoder.2.weight",
                   "head.bias": "decoder.decoder.2.bias"}
        for i in range(4):
            for p in ("weight", "bias"):
                mapping[f"encoder.{i}.{p}"] = f"encoder.{i}.reparam_conv.{p}"
        for p in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            mapping[f"rnn.{p}"] = f"decoder.rnn.{p}"
        model.load_state_dict({ours: state[theirs] for ours, theirs in mapping.items()})
        return model.eval().requires_grad_(False)

    # ---- front ends ----------------------------------------------------------------------------
    @staticmethod
    def pad_to_chunks(wav: torch.Tensor) -> torch.Tensor:
        """Zero-pad B×T to whole 512-sample chunks (as Silero's own utilities do)."""
        extra = (-wav.shape[-1]) % CHUNK
        return F.pad(wav, (0, extra)) if extra else wav

    def chunk_magnitudes(self, wav: torch.Tensor) -> torch.Tensor:
        """B×T waveform → B×129×(4·chunks) magnitudes, framed exactly as the streaming JIT model."""
        wav = self.pad_to_chunks(wav if wav.ndim == 2 else wav[None])
        b, n = wav.shape[0], wav.shape[-1] // CHUNK
        with_context = F.pad(wav, (CONTEXT, 0))
        chunks = with_context.unfold(-1, CHUNK + CONTEXT, CHUNK)  # B×n×576
        chunks = F.pad(chunks.reshape(b * n, 1, -1), (0, CONTEXT), mode="reflect")
        spec = F.conv1d(chunks, self.forward_basis.to(wav.dtype), stride=128)  # (B·n)×258×4
        mag = torch.sqrt(spec[:, :129] ** 2 + spec[:, 129:] ** 2)
        return mag.reshape(b, n, 129, 4).permute(0, 2, 1, 3).reshape(b, 129, n * 4)

    # ---- network --------------------------------------------------------------------------------
    def forward(self, magnitude: torch.Tensor) -> torch.Tensor:
        """B×129×(4·n) magnitudes → B×n speech probabilities (one per 32 ms chunk)."""
        b, bins, frames = magnitude.shape
        if bins != 129:
            raise ValueError(f"Silero expects 129 frequency bins, got {bins}.")
        n = frames // 4
        x = magnitude[..., : n * 4].reshape(b, 129, n, 4).permute(0, 2, 1, 3).reshape(b * n, 129, 4)
        for conv in self.encoder:
            x = F.relu(conv(x))
        features = x.reshape(b, n, 128)  # one 128-vector per chunk
        h = features.new_zeros(b, 128)
        c = features.new_zeros(b, 128)
        outputs = []
        for i in range(n):
            h, c = self.rnn(features[:, i], (h, c))
            outputs.append(h)
        hidden = torch.stack(outputs, dim=2)  # B×128×n
        return torch.sigmoid(self.head(F.relu(hidden)))[:, 0]

    def speech_probability(self, wav: torch.Tensor) -> torch.Tensor:
        """B×T (or T) waveform at 16 kHz → B×chunks probabilities, as the JIT model streams them."""
        return self(self.chunk_magnitudes(wav if wav.ndim == 2 else wav[None]))


_LOCK = threading.Lock()
_CACHE: dict[str, SileroVAD] = {}


def load_silero(device: torch.device | str = "cpu") -> SileroVAD:
    """One shared, frozen instance per device."""
    key = str(device)
    with _LOCK:
        if key not in _CACHE:
            _CACHE[key] = SileroVAD.from_jit().to(device)
        return _CACHE[key]


@torch.no_grad()
def jit_speech_probability(wav: torch.Tensor) -> torch.Tensor:
    """Reference: the shipped JIT model streamed chunk by chunk over a 1-D waveform (tests)."""
    from silero_vad import load_silero_vad

    jit = load_silero_vad()
    jit.reset_states()
    wav = SileroVAD.pad_to_chunks(wav.reshape(1, -1).float())
    probs = [jit(wav[:, i : i + CHUNK], SAMPLE_RATE).reshape(()) for i in range(0, wav.shape[-1], CHUNK)]
    return torch.stack(probs)

"""Google's speech embedding (Lin et al. 2020, "Training keyword spotters with limited and synthesized speech
data"), ported to plain torch so gradients reach the waveform.

The network was trained by Google on a large corpus of real speech to map 0.775 s of log-mel (76 frames × 32 mel
bands) to a 96-number embedding in which spoken words are easy to tell apart; its authors show small keyword
classifiers trained on *synthetic* speech over it work on real voices. It ships (Apache-2.0, re-implemented by
openWakeWord) as two ONNX files inside the ``openwakeword==0.4.0`` wheel (installed without its dependencies;
the wake-word models beside it are not used). This module reads their tensors with the ``onnx`` package and runs
them as torch operations; ``tests/test_audio_speech_embedding.py`` checks the port against onnxruntime.

Only the operations these two graphs use are supported: any other graph is refused, never guessed at.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import UserInputError

PACKAGE = "openwakeword"
PACKAGE_VERSION = "0.4.0"  # the last wheel that carries the models inside it
MEL_FILE, EMBEDDING_FILE = "melspectrogram.onnx", "embedding_model.onnx"
SAMPLE_RATE = 16000
HOP = 160  # 10 ms frames
WINDOW_FRAMES = 76  # one embedding reads 76 frames (0.775 s of audio)
EMBEDDING_HOP = 8  # and the next one starts 8 frames (80 ms) later
N_MELS = 32
EMBEDDING_DIM = 96
INT16_SCALE = 32767.0  # the features were computed on 16-bit sample values
TOP_DB = 80.0


def model_dir() -> Path:
    """The folder of the wheel's ONNX files, found without importing the package (its import loads more)."""
    spec = importlib.util.find_spec(PACKAGE)
    folder = None if spec is None or not spec.submodule_search_locations else \
        Path(list(spec.submodule_search_locations)[0]) / "resources" / "models"
    if folder is None or not (folder / MEL_FILE).exists() or not (folder / EMBEDDING_FILE).exists():
        raise UserInputError(f"The speech embedding needs the `{PACKAGE}=={PACKAGE_VERSION}` wheel (its models "
                             f"ship inside): `pip install --no-deps {PACKAGE}=={PACKAGE_VERSION}`.")
    return folder


def available() -> str | None:
    """None when the speech embedding can be loaded, else why not (one line)."""
    try:
        model_dir()
        import onnx  # noqa: F401
    except (UserInputError, ImportError) as exc:
        return str(exc)
    return None


def _read_graph(path: Path):
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    tensors = {t.name: torch.from_numpy(numpy_helper.to_array(t).copy()) for t in model.graph.initializer}
    nodes = []
    for node in model.graph.node:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type == "Constant":
            tensors[node.output[0]] = torch.from_numpy(numpy_helper.to_array(attrs["value"]).copy())
            continue
        nodes.append((node.op_type, list(node.input), list(node.output), attrs))
    return nodes, tensors


class LogMel32(nn.Module):
    """Waveform B×N in [-1, 1] at 16 kHz → B×1×32×frames: the embedding's own front end (a 512-sample
    windowed DFT every 10 ms, power, 32 mel bands, 10·log10, floored 80 dB below the clip's loudest cell,
    then /10 + 2), so frames = (N − 512) // 160 + 1."""

    def __init__(self, dft_real: torch.Tensor, dft_imag: torch.Tensor, mel: torch.Tensor):
        super().__init__()
        self.register_buffer("dft", torch.cat([dft_real, dft_imag]).float(), persistent=False)  # 2·bins×1×512
        self.register_buffer("mel", mel.float(), persistent=False)  # bins×32

    @property
    def n_fft(self) -> int:
        return int(self.dft.shape[-1])

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        wav = wav.reshape(wav.shape[0], -1)
        if wav.shape[-1] < self.n_fft:
            wav = F.pad(wav, (0, self.n_fft - wav.shape[-1]))
        spec = F.conv1d(wav[:, None].float() * INT16_SCALE, self.dft, stride=HOP)  # B×2·bins×frames
        bins = spec.shape[1] // 2
        return self.from_power(spec[:, :bins] ** 2 + spec[:, bins:] ** 2)

    def window_energy(self) -> float:
        """Σ w² of the graph's analysis window (its DFT's bin-0 row), for reading another STFT's power."""
        return float(self.dft[0, 0].pow(2).sum())

    def from_power(self, power: torch.Tensor) -> torch.Tensor:
        """B×bins×frames power of the graph's DFT (16-bit sample units) → B×1×32×frames."""
        db = 10.0 * torch.log10(torch.einsum("bft,fm->bmt", power, self.mel).clamp_min(1e-10))
        floor = db.amax(dim=(1, 2), keepdim=True) - TOP_DB
        return (torch.maximum(db, floor) / 10.0 + 2.0)[:, None]


class SpeechEmbedding(nn.Module):
    """B×1×32×frames log-mel (:class:`LogMel32`) → B×T×96, one embedding per 76-frame window every 8 frames,
    T = (frames − 76) // 8 + 1. The graph is one window's; its time convolutions are unpadded and its three
    time pools halve, so run over the whole clip at once it gives every window's embedding exactly (checked
    in the tests), at a sixth of the cost of cutting the windows out."""

    SUPPORTED = {"Pad", "Reshape", "Conv", "Relu", "BatchNormalization", "LeakyRelu", "Max", "MaxPool"}

    def __init__(self, nodes: list, tensors: dict[str, torch.Tensor]):
        super().__init__()
        unknown = sorted({op for op, *_ in nodes} - self.SUPPORTED)
        if unknown:
            raise UserInputError(f"The speech embedding graph uses operations this port does not run: {unknown}")
        for (_, _, before, _), (op, inputs, _, _) in zip(nodes, nodes[1:]):
            if inputs[0] != before[0]:  # the port runs the nodes in order: a branch would be computed wrongly
                raise UserInputError(f"The speech embedding graph is not a chain at its {op} node.")
        self.steps: list[tuple[str, dict]] = []
        names: dict[str, str] = {}

        def buffer(name: str) -> str:
            if name not in names:
                names[name] = f"t{len(names)}"
                self.register_buffer(names[name], tensors[name].float(), persistent=False)
            return names[name]

        for op, inputs, _outputs, attrs in nodes:
            if op in ("Pad", "Reshape"):  # the NHWC → NCHW reshuffle and the mel padding: done in forward
                continue
            if op == "Conv":
                pads = list(attrs.get("pads", [0, 0, 0, 0]))
                if attrs.get("group", 1) != 1 or list(attrs.get("strides", [1, 1])) != [1, 1] \
                        or pads[:2] != pads[2:]:
                    raise UserInputError(f"unsupported convolution in the speech embedding: {attrs}")
                self.steps.append(("conv", {"weight": buffer(inputs[1]),
                                            "bias": buffer(inputs[2]) if len(inputs) > 2 else None,
                                            "padding": tuple(pads[:2])}))
            elif op == "BatchNormalization":
                self.steps.append(("bn", {"scale": buffer(inputs[1]), "shift": buffer(inputs[2]),
                                          "mean": buffer(inputs[3]), "var": buffer(inputs[4]),
                                          "eps": float(attrs.get("epsilon", 1e-5))}))
            elif op == "Relu":
                self.steps.append(("relu", {}))
            elif op == "LeakyRelu":
                self.steps.append(("leaky", {"alpha": float(attrs.get("alpha", 0.01))}))
            elif op == "Max":
                self.steps.append(("max", {"floor": buffer(inputs[1])}))
            elif op == "MaxPool":
                if any(attrs.get("pads", [0, 0, 0, 0])):
                    raise UserInputError("unsupported padded max-pool in the speech embedding")
                self.steps.append(("pool", {"kernel": tuple(attrs["kernel_shape"]),
                                            "stride": tuple(attrs["strides"])}))

    def forward(self, log_mel: torch.Tensor) -> torch.Tensor:
        x = log_mel.transpose(2, 3)  # B×1×frames×32, the graph's layout (time × mel)
        if x.shape[2] < WINDOW_FRAMES:  # too short for one window: pad with each clip's floor (no host sync)
            floor = x.amin(dim=(2, 3), keepdim=True).expand(-1, -1, WINDOW_FRAMES - x.shape[2], x.shape[3])
            x = torch.cat([x, floor], dim=2)
        x = F.pad(x, (1, 1))  # the graph's zero padding of the mel axis (32 → 34)
        for kind, a in self.steps:
            if kind == "conv":
                bias = None if a["bias"] is None else getattr(self, a["bias"])
                x = F.conv2d(x, getattr(self, a["weight"]), bias, padding=a["padding"])
            elif kind == "bn":
                x = F.batch_norm(x, getattr(self, a["mean"]), getattr(self, a["var"]), getattr(self, a["scale"]),
                                 getattr(self, a["shift"]), False, 0.0, a["eps"])
            elif kind == "relu":
                x = F.relu(x)
            elif kind == "leaky":
                x = F.leaky_relu(x, a["alpha"])
            elif kind == "max":
                x = torch.maximum(x, getattr(self, a["floor"]))
            else:
                x = F.max_pool2d(x, a["kernel"], a["stride"])
        return x[:, :, :, 0].transpose(1, 2)  # B×96×T×1 → B×T×96


def read_front_end() -> tuple[LogMel32, SpeechEmbedding]:
    """Fresh torch modules with the wheel's weights (buffers, never trained; not saved in a state dict)."""
    folder = model_dir()
    mel_nodes, mel_tensors = _read_graph(folder / MEL_FILE)
    conv = [inputs[1] for op, inputs, *_ in mel_nodes if op == "Conv"]
    matmul = [inputs[1] for op, inputs, *_ in mel_nodes if op == "MatMul"]
    if len(conv) != 2 or len(matmul) != 1:
        raise UserInputError(f"{folder / MEL_FILE} is not the log-mel graph this port knows.")
    front = LogMel32(mel_tensors[conv[0]], mel_tensors[conv[1]], mel_tensors[matmul[0]])
    embedding = SpeechEmbedding(*_read_graph(folder / EMBEDDING_FILE))
    return front, embedding


def windows_of(log_mel: torch.Tensor) -> torch.Tensor:
    """B×1×32×frames → (B·W)×1×76×32: the windows the original graph reads one at a time, in its layout
    (time × mel), for checking the port against it."""
    w = log_mel[:, 0].unfold(2, WINDOW_FRAMES, EMBEDDING_HOP)  # B×32×W×76
    return w.permute(0, 2, 3, 1).reshape(-1, 1, WINDOW_FRAMES, N_MELS)

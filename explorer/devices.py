"""Device and dtype choice. Nothing else in the project picks a device.

There are no module-level device globals: every function takes the preference it is
given ("auto", "cpu", "cuda", "cuda:1", a torch.device or None) and resolves it now.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch

from .errors import UserInputError



def choose_device(preference: str | torch.device | None = "auto") -> torch.device:
    """Resolve a device preference; "auto"/None means CUDA when present, else CPU."""
    if isinstance(preference, torch.device):
        return preference
    if preference is None or preference == "auto":
        return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    try:
        device = torch.device(preference)
    except (RuntimeError, TypeError, ValueError):
        raise UserInputError(f"Unknown device {preference!r}: use auto, cpu, cuda or cuda:N.") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserInputError(f"Device {preference!r} was requested but CUDA is not available here: use auto or cpu.")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UserInputError(f"Device {preference!r} does not exist: this machine has {torch.cuda.device_count()} "
                                 f"CUDA device(s), cuda:0–cuda:{torch.cuda.device_count() - 1}.")
    elif device.type == "mps" and getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        pass
    elif device.type != "cpu":
        raise UserInputError(f"Device {preference!r} is not supported here: use auto, cpu, cuda or cuda:N.")
    return device


def autocast(device: torch.device, enabled: bool = True) -> contextlib.AbstractContextManager:
    """Mixed precision for forward passes on CUDA (bf16 where supported); a no-op on CPU."""
    if not enabled or device.type != "cuda":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast(device_type="cuda", dtype=dtype)


def memory_format(device: torch.device) -> torch.memory_format:
    """channels_last helps convolutions on CUDA; on CPU it brings nothing reliable."""
    return torch.channels_last if device.type == "cuda" else torch.contiguous_format


def generator(device: torch.device, seed: int | None) -> torch.Generator:
    """A generator on the device, seeded when a seed is given (reproducible CPU runs)."""
    gen = torch.Generator(device=device)
    if seed is None:
        gen.seed()
    else:
        gen.manual_seed(int(seed))
    return gen


@contextlib.contextmanager
def seeded(seed: int, device: torch.device | str | None = None) -> Iterator[None]:
    """Run a block with torch's global RNG seeded, then give the caller's RNG state back.

    Only for code that can draw from nothing else (module initialisers, dropout); everything the
    project draws itself takes a :func:`generator`. The caller's global RNG is never reseeded.
    """
    cuda = (device is None and torch.cuda.is_available()) or (device is not None and torch.device(device).type == "cuda")
    with torch.random.fork_rng(devices=[torch.device(device or "cuda")] if cuda else []):
        torch.manual_seed(int(seed))
        yield

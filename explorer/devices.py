"""Device and dtype choice. Nothing else in the project picks a device.

There are no module-level device globals: every function takes the preference it is
given ("auto", "cpu", "cuda", "cuda:1", a torch.device or None) and resolves it now.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
from typing import Iterator

import torch

from .errors import UserInputError

MALLOC_TUNING_ENV = "EXPLORER_MALLOC_TUNING"  # "0": leave the C allocator as the platform set it
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)
KEEP_BLOCKS_UP_TO = 1 << 30  # tensors up to 1 GiB come from the reusable heap, not a fresh mmap each time


@functools.cache
def tune_host_allocator() -> bool:
    """Let glibc keep freed large blocks for reuse instead of unmapping them (True when it was set).

    By default glibc serves every block over a few MiB with a fresh ``mmap`` and unmaps it on free, so each
    optimisation step's activations (37 MB for EfficientNet-Lite0's 16×96×112² layer in bf16) are new pages
    that fault on first touch: memory-bound ops (ReLU6, casts, pads and their backward) ran 3–4× slower, and a
    16-unit render step 1.5× slower (``benchmarks/allocator.py``). Process-wide and once; peak memory is
    the same (the blocks are the ones the step needs again). ``EXPLORER_MALLOC_TUNING=0`` opts out."""
    if os.environ.get(MALLOC_TUNING_ENV, "1") == "0" or not sys.platform.startswith("linux"):
        return False
    import ctypes

    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # not glibc (musl, …): nothing to tune
        return False
    keep = ctypes.c_int(KEEP_BLOCKS_UP_TO)
    return bool(mallopt(_M_MMAP_THRESHOLD, keep)) and bool(mallopt(_M_TRIM_THRESHOLD, keep))


def choose_device(preference: str | torch.device | None = "auto") -> torch.device:
    """Resolve a device preference; "auto"/None means CUDA when present, else CPU. (Every path that picks a device
    passes here, so the process's host allocator is tuned here once: :func:`tune_host_allocator`.)"""
    tune_host_allocator()
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
            raise UserInputError(
                f"Device {preference!r} was requested but CUDA is not available here: use auto or cpu.")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UserInputError(f"Device {preference!r} does not exist: this machine has {torch.cuda.device_count()} "
                                 f"CUDA device(s), cuda:0–cuda:{torch.cuda.device_count() - 1}.")
    elif (device.type == "mps" and getattr(torch.backends, "mps", None) is not None
          and torch.backends.mps.is_available()):
        pass
    elif device.type != "cpu":
        raise UserInputError(f"Device {preference!r} is not supported here: use auto, cpu, cuda or cuda:N.")
    return device


def autocast(device: torch.device, enabled: bool | str = True) -> contextlib.AbstractContextManager:
    """Mixed precision for forward passes.

    ``True``: bf16 (fp16 where bf16 is unsupported) on CUDA, nothing on CPU; ``"bf16"``: bf16 on any
    device; ``False``: full precision. The weight-cast cache is off so a CUDA graph can capture it.
    """
    if not enabled:
        return contextlib.nullcontext()
    if enabled == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16, cache_enabled=False)
    if device.type != "cuda":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast(device_type="cuda", dtype=dtype, cache_enabled=False)


@functools.lru_cache(maxsize=1)
def cpu_has_fast_bf16() -> bool:
    """True when the CPU multiplies bf16 in hardware (AMX tiles), where bf16 autocast pays off."""
    try:
        return bool(torch._C._cpu._init_amx())
    except Exception:  # older torch, another architecture
        return False


def render_precision(device: torch.device, choice: bool | str = "auto") -> bool | str:
    """The mixed-precision mode for feature-visualisation steps on ``device`` (what ``autocast`` takes).

    ``"auto"`` is the measured choice (docs/ARCHITECTURE.md, "Render defaults"): fp32 + TF32 on CUDA
    (bf16 autocast made H100 renders 2.2× slower, issue 10), bf16 on CPUs with AMX when it is faster
    there at an activation within 2 % of fp32, fp32 elsewhere. Anything else is passed through.
    """
    if choice != "auto":
        return choice
    if device.type == "cpu" and CPU_BF16_RENDERS and cpu_has_fast_bf16():
        return "bf16"
    return False


# set by measurement (benchmarks/render_step.py, 2026-12-01, 2-core Xeon with AMX, batch 16 at 224 px): bf16 autocast
# 1.29× faster than fp32 (contiguous), 1.70× with channels_last, activation after 48 steps ×1.000 of fp32
CPU_BF16_RENDERS = True


@contextlib.contextmanager
def fast_fp32(device: torch.device) -> Iterator[None]:
    """TF32 tensor-core maths for fp32 matmuls and convolutions on CUDA during the block (restored after)."""
    if device.type != "cuda":
        yield
        return
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn


def memory_format(device: torch.device) -> torch.memory_format:
    """channels_last on CUDA and on CPUs with AMX, where benchmarks/render_step.py measured it faster
    (2-core AMX Xeon, batch 16 at 224 px: render step ×1.20 in fp32, ×1.31 in bf16, forward ×1.39);
    contiguous on other CPUs (not measured: no gain assumed)."""
    if device.type == "cuda" or (device.type == "cpu" and cpu_has_fast_bf16()):
        return torch.channels_last
    return torch.contiguous_format


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
    cuda = ((device is None and torch.cuda.is_available())
            or (device is not None and torch.device(device).type == "cuda"))
    with torch.random.fork_rng(devices=[torch.device(device or "cuda")] if cuda else []):
        torch.manual_seed(int(seed))
        yield


def describe(device: torch.device | str) -> str:
    """The hardware behind a device, for benchmark records: "NVIDIA H100 80GB HBM3" or "CPU: <model>, N cores"."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import os
    import platform

    name = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"CPU: {name}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads"

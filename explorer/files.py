"""Writing files safely: the one ``atomic_write`` every writer in the project goes through.

Why: gallery builders, app sessions and CLI runs may write the same path at the same moment and
any of them may be killed mid-write. ``atomic_write`` writes to a temp file with a *unique* name in
the same folder (``tempfile.mkstemp``), fsyncs it, renames it over the target (atomic on POSIX)
and fsyncs the folder, so a reader sees the old file or the new one, never a partial or empty
one, and two writers never trip over each other's temp file. Every other helper here (JSON, CSV,
torch checkpoints, safetensors, npz) serialises to bytes and calls it.
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable, Mapping

from .errors import UserInputError


def _current_umask() -> int:
    mask = os.umask(0)  # read once at import (single-threaded): os.umask can only be read by setting it
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_current_umask()  # what open(path, "w") would give; mkstemp makes 0600 files


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # some platforms/filesystems cannot open a directory: the rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically and durably; returns the path.

    Creates missing parent folders. An impossible target (a parent that is a file, no permission,
    disk full) raises a one-line :class:`~explorer.errors.UserInputError` naming the path.
    """
    path = Path(path)
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"atomic_write takes bytes, not {type(data).__name__}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_dir():
            raise IsADirectoryError(21, "Is a directory")
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise UserInputError(f"Cannot write {path}: {exc.strerror or exc}.") from None
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            tmp.unlink()
        except OSError:
            pass
        if isinstance(exc, OSError):
            raise UserInputError(f"Cannot write {path}: {exc.strerror or exc}.") from None
        raise
    _fsync_dir(path.parent)
    return path


def json_bytes(data: Any) -> bytes:
    """Indented JSON (numbers, paths and other objects via ``str``), UTF-8."""
    return json.dumps(data, indent=2, default=str).encode()


def write_json(path: str | os.PathLike, data: Any) -> Path:
    return atomic_write(path, json_bytes(data))


def csv_bytes(rows: Iterable[Mapping[str, Any]]) -> bytes:
    """A CSV table with a header from the first row's keys (empty for no rows)."""
    rows = list(rows)
    buffer = io.StringIO()
    if rows:
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return buffer.getvalue().encode()


def write_csv(path: str | os.PathLike, rows: Iterable[Mapping[str, Any]]) -> Path:
    return atomic_write(path, csv_bytes(rows))


def torch_bytes(obj: Any) -> bytes:
    """``torch.save`` into memory (checkpoints are written with :func:`atomic_write`)."""
    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def write_torch(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write(path, torch_bytes(obj))


def write_safetensors(path: str | os.PathLike, tensors: Mapping[str, Any], metadata: dict[str, str] | None = None) -> Path:
    from safetensors.torch import save

    return atomic_write(path, save(dict(tensors), metadata=metadata))


def write_npz(path: str | os.PathLike, arrays: Mapping[str, Any]) -> Path:
    import numpy as np

    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return atomic_write(path, buffer.getvalue())


def move_in(source_dir: str | os.PathLike, target_dir: str | os.PathLike) -> list[Path]:
    """Copy every file a third-party writer left in ``source_dir`` into ``target_dir``, each atomically."""
    source, target = Path(source_dir), Path(target_dir)
    written = []
    for file in sorted(p for p in source.rglob("*") if p.is_file()):
        written.append(atomic_write(target / file.relative_to(source), file.read_bytes()))
    return written

"""Writing files safely: the one ``atomic_write`` every writer in the project goes through.

Why: gallery builders, app sessions and CLI runs may write the same path at the same moment and
any of them may be killed mid-write. ``atomic_write`` writes to a temp file with a *unique* name in
the same folder (``tempfile.mkstemp``), fsyncs it, renames it over the target (atomic on POSIX)
and fsyncs the folder, so a reader sees the old file or the new one, never a partial or empty
one, and two writers never trip over each other's temp file. Every other helper here (JSON, CSV,
torch checkpoints, safetensors, npz) serialises to bytes and calls it.

What a write may touch (:func:`output_target`): a symlinked output is written *through* (its target is
replaced atomically, the link stays); anything that exists and is not a regular file — a device such as
``/dev/null``, a FIFO, a socket — is refused, as is any path that resolves into ``/proc``, ``/sys`` or
``/dev``. Reads of user files go through :func:`read_user_file`, which refuses special files *before*
opening them for reading and names what they are ("a FIFO", "a character device"), not "not found".
"""

from __future__ import annotations

import csv
import io
import json
import errno
import os
import re
import stat
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


class CannotWrite(UserInputError):
    """A target that cannot be written (read-only, full disk, quota, permissions, a special file): the
    message names the path and why. ``errno`` is the OS's reason when there is one."""

    def __init__(self, message: str, errno_: int | None = None):
        super().__init__(message)
        self.errno = errno_


# errno values that mean "this storage cannot take the write", as opposed to "the data is damaged"
WRITE_ERRNOS = frozenset(e for e in (errno.EROFS, errno.ENOSPC, getattr(errno, "EDQUOT", None), errno.EFBIG,
                                     errno.EACCES, errno.EPERM) if e is not None)
# kernel and device trees: never written, never followed into
SYSTEM_TREES = (Path("/proc"), Path("/sys"), Path("/dev"))


def special_kind(mode: int) -> str | None:
    """What a non-regular file is, in words ("a FIFO", "a character device" …); None for a regular file."""
    for test, name in ((stat.S_ISREG, None), (stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def system_tree(path: str | os.PathLike) -> Path | None:
    """The system tree (/proc, /sys, /dev) ``path`` lies in or resolves into, else None."""
    given = Path(path).expanduser()
    for candidate in (Path(os.path.abspath(given)), Path(os.path.realpath(given))):
        for tree in SYSTEM_TREES:
            if candidate == tree or tree in candidate.parents:
                return tree
    return None


def output_target(path: str | os.PathLike, what: str = "") -> Path:
    """The file a write to ``path`` really replaces: the path itself, or — for a symlink — the file it
    points to (resolved, so the link survives the write). Refuses, with one line naming ``path``, a target
    that exists and is not a regular file (device, FIFO, socket, folder) and any target in /proc, /sys or
    /dev. Checked again by :func:`atomic_write` right before it writes."""
    given = Path(path).expanduser()
    label = f"{what} {path}".strip()
    target = Path(os.path.realpath(given))  # follows every link, also in the folders above
    tree = system_tree(given)
    if tree is not None:
        raise CannotWrite(f"Cannot write {label}: it is in {tree}, a system tree the explorer never writes to; "
                          "name a file in an ordinary folder.")
    try:
        info = os.stat(target)
    except FileNotFoundError:
        return target  # a new file (its folder is created by the writer)
    except OSError as exc:
        raise CannotWrite(f"Cannot write {label}: {exc.strerror or exc}.", exc.errno) from None
    kind = special_kind(info.st_mode)
    if kind is not None:
        shown = f" (it points to {target})" if target != Path(os.path.abspath(given)) else ""
        raise CannotWrite(
            f"Cannot write {label}: it is {kind}{shown}, not a regular file; name a new or ordinary file.")
    return target


_WEB_ADDRESS = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):/+(?=[^/])")  # https://… (a Path collapses it to https:/…)


def refuse_web_address(path: str | os.PathLike, what: str = "File") -> None:
    """A URL named where a file is expected: one line saying that only files on this machine are read
    (nothing is downloaded), instead of "not found: https:/…" with the double slash collapsed."""
    text = os.fspath(path)
    match = _WEB_ADDRESS.match(text)
    if match and match.group(1).lower() in ("http", "https", "ftp", "s3", "gs", "hf", "file"):
        shown = _WEB_ADDRESS.sub(lambda m: f"{m.group(1)}://", text, count=1)
        raise UserInputError(f"{what} {shown} is a web address: only files on this machine are read (nothing is "
                             "downloaded); download it first and name the file.")


def read_user_file(path: str | os.PathLike, what: str = "File", *, max_bytes: int | None = None,
                   head: int | None = None, label: str | None = None) -> bytes:
    """The bytes of a user-named file (or its first ``head`` bytes), refusing special files before reading.

    Missing: "<what> not found: PATH". A folder, FIFO, device or socket: "PATH is a FIFO …, not a regular
    file" — checked on the opened descriptor (opened non-blocking, so a FIFO cannot hang the open), so a
    file swapped for a special one between a check and the open is caught too. ``max_bytes`` refuses larger
    files before reading them. ``label`` names the file in messages (default: the path as given)."""
    refuse_web_address(path, what)
    p = Path(path).expanduser()
    shown = label or str(path)
    try:
        fd = os.open(p, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0))
    except FileNotFoundError:
        raise UserInputError(f"{what} not found: {shown}") from None
    except IsADirectoryError:
        raise UserInputError(f"{shown} is a folder, not a regular file: name a file.") from None
    except OSError as exc:
        raise UserInputError(f"Cannot read {shown}: {exc.strerror or exc}.") from None
    try:
        info = os.fstat(fd)
        kind = special_kind(info.st_mode)
        if kind is not None:
            raise UserInputError(f"{shown} is {kind}, not a regular file: name a file.")
        if max_bytes is not None and info.st_size > max_bytes:
            raise UserInputError(f"{shown} is {info.st_size:,} bytes; files up to {max_bytes:,} bytes are read.")
        if os.name == "posix" and hasattr(os, "O_NONBLOCK"):
            os.set_blocking(fd, True)
        with os.fdopen(fd, "rb", closefd=True) as handle:
            fd = -1
            return handle.read() if head is None else handle.read(head)
    except OSError as exc:
        raise UserInputError(f"Cannot read {shown}: {exc.strerror or exc}.") from None
    finally:
        if fd >= 0:
            os.close(fd)


def check_regular_file(path: str | os.PathLike, what: str = "File") -> os.stat_result:
    """Stat a user-named file (following links): missing → "<what> not found", special → named as what it is."""
    refuse_web_address(path, what)
    p = Path(path).expanduser()
    try:
        info = os.stat(p)
    except FileNotFoundError:
        raise UserInputError(f"{what} not found: {path}") from None
    except OSError as exc:
        raise UserInputError(f"Cannot read {path}: {exc.strerror or exc}.") from None
    kind = special_kind(info.st_mode)
    if kind is not None:
        raise UserInputError(f"{path} is {kind}, not a regular file: name a file.")
    return info


def _cannot_write(label: object, exc: OSError) -> CannotWrite:
    return CannotWrite(f"Cannot write {label}: {exc.strerror or exc}.", exc.errno)


def atomic_write(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically and durably; returns the path.

    Creates missing parent folders. A symlink is written through (its target is replaced, the link stays);
    a device, FIFO, socket or anything in /proc, /sys or /dev is refused (:func:`output_target`). An
    impossible target (a parent that is a file, no permission, disk full) raises a one-line
    :class:`CannotWrite` (a :class:`~explorer.errors.UserInputError`) naming the path.
    """
    path = Path(path)
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"atomic_write takes bytes, not {type(data).__name__}")
    try:
        target = output_target(path)
        if target.is_dir():
            raise IsADirectoryError(21, "Is a directory")
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as exc:
        raise _cannot_write(path, exc) from None
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, _FILE_MODE)
        output_target(path)  # still a regular file or a new path (not swapped for a device meanwhile)
        os.replace(tmp, target)
    except BaseException as exc:
        try:
            tmp.unlink()
        except OSError:
            pass
        if isinstance(exc, OSError):
            raise _cannot_write(path, exc) from None
        raise
    _fsync_dir(target.parent)
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


def write_safetensors(path: str | os.PathLike, tensors: Mapping[str, Any],
                      metadata: dict[str, str] | None = None) -> Path:
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

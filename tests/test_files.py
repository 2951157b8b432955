"""atomic_write: concurrent writers of one path never collide and readers never see a partial file."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from explorer.errors import UserInputError
from explorer.files import atomic_write, write_json


def _payload(writer: int, i: int) -> bytes:
    body = bytes([writer]) * (20_000 + 37 * i)  # different lengths: a torn write cannot pass the digest
    return hashlib.sha1(body).digest() + body


def _valid(data: bytes) -> bool:
    return len(data) > 20 and hashlib.sha1(data[20:]).digest() == data[:20]


def hammer(path: Path, write, times: int = 300) -> tuple[list[BaseException], list[str]]:
    """Two threads write ``path`` ``times`` times each while a third reads it as fast as it can; returns the
    writers' errors and the reader's bad reads (``write.check(data)`` judges a read, default: a digest)."""
    errors: list[BaseException] = []
    bad_reads: list[str] = []
    done = threading.Event()

    def writer(k: int) -> None:
        try:
            for i in range(times):
                write(k, i)
        except BaseException as exc:  # noqa: BLE001 — every failure is the test's business
            errors.append(exc)

    def reader() -> None:
        while not done.is_set():
            try:
                data = path.read_bytes()
            except FileNotFoundError:
                continue  # not written yet
            if not data:
                bad_reads.append("0-byte file")
            elif not check(data):
                bad_reads.append(f"partial file ({len(data)} bytes)")

    check = getattr(write, "check", _valid)
    threads = [threading.Thread(target=writer, args=(k,)) for k in (1, 2)]
    watcher = threading.Thread(target=reader)
    watcher.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    done.set()
    watcher.join()
    return errors, bad_reads


def test_two_threads_writing_one_path_never_collide_and_readers_never_see_partial_files(tmp_path):
    path = tmp_path / "out" / "shared.bin"
    errors, bad = hammer(path, lambda k, i: atomic_write(path, _payload(k, i)))
    assert not errors, errors[:3]
    assert not bad, bad[:5]
    assert _valid(path.read_bytes())
    assert sorted(p.name for p in path.parent.iterdir()) == ["shared.bin"]  # no temp files left behind


@pytest.mark.parametrize("kind", ["png", "json", "wav"])
def test_the_project_writers_are_atomic_under_concurrency(tmp_path, kind):
    """The writers the issue caught sharing one temp name (save_png, write_json, save_wav): 24 errors before."""
    from explorer.audio.io import save_wav
    from explorer.images import save_png

    path = tmp_path / f"shared.{kind}"

    def write(k: int, i: int) -> None:
        if kind == "png":
            save_png(torch.full((3, 24, 24), k / 3), path)
        elif kind == "json":
            write_json(path, {"writer": k, "i": i, "pad": "x" * (5000 + i)})
        else:
            save_wav(np.full(4000 + i, 0.1 * k, dtype=np.float32), path, 16000)

    def check(data: bytes) -> bool:
        if kind == "png":
            return data.startswith(b"\x89PNG") and data.rstrip().endswith(b"IEND\xaeB`\x82")
        if kind == "json":
            import json

            try:
                return json.loads(data)["writer"] in (1, 2)
            except ValueError:
                return False
        return data[:4] == b"RIFF" and int.from_bytes(data[4:8], "little") + 8 == len(data)

    write.check = check  # type: ignore[attr-defined]
    errors, bad = hammer(path, write)
    assert not errors, errors[:3]
    assert not bad, bad[:5]


def test_impossible_targets_are_one_line_user_errors(tmp_path):
    a_file = tmp_path / "plain.txt"
    a_file.write_text("x")
    with pytest.raises(UserInputError, match="Cannot write .*plain.txt/x.png"):
        atomic_write(a_file / "x.png", b"data")  # a parent that is a file
    with pytest.raises(UserInputError, match="Cannot write"):
        atomic_write(tmp_path, b"data")  # a folder
    assert a_file.read_text() == "x"


def test_written_files_get_ordinary_permissions(tmp_path):
    import os
    import stat

    path = atomic_write(tmp_path / "a.bin", b"1")
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask  # mkstemp's 0600 would hide exports from others


def test_a_symlinked_output_is_written_through_and_the_link_stays(tmp_path):
    real = tmp_path / "real.json"
    real.write_text("old")
    link = tmp_path / "link.json"
    link.symlink_to(real)
    write_json(link, {"new": 1})
    assert link.is_symlink() and real.read_text().strip().startswith("{") and '"new": 1' in real.read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.json", "real.json"]  # no temp file left


@pytest.mark.parametrize("special", ["fifo", "socket", "dev-null-link", "proc"])
def test_special_outputs_are_refused_and_left_alone(tmp_path, special):
    import os
    import socket

    from explorer.files import CannotWrite

    target = tmp_path / special
    if special == "fifo":
        os.mkfifo(target)
    elif special == "socket":
        server = socket.socket(socket.AF_UNIX)
        server.bind(str(target))
    elif special == "dev-null-link":
        target.symlink_to("/dev/null")
    else:
        target = Path("/proc/self/comm")
    with pytest.raises(CannotWrite, match=r"FIFO|socket|system tree"):
        atomic_write(target, b"x")
    if special == "fifo":
        import stat

        assert stat.S_ISFIFO(os.stat(target).st_mode)
    if special == "dev-null-link":
        assert target.is_symlink() and os.readlink(target) == "/dev/null"
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_reading_a_special_file_names_what_it_is(tmp_path):
    import os

    from explorer.files import read_user_file

    os.mkfifo(tmp_path / "pipe.png")
    (tmp_path / "zero.png").symlink_to("/dev/zero")
    with pytest.raises(UserInputError, match=r"pipe\.png is a FIFO"):
        read_user_file(tmp_path / "pipe.png")  # returns at once: the FIFO is never opened for a blocking read
    with pytest.raises(UserInputError, match=r"zero\.png is a character device"):
        read_user_file(tmp_path / "zero.png")
    with pytest.raises(UserInputError, match=r"^Image file not found"):
        read_user_file(tmp_path / "missing.png", "Image file")

"""The gallery store: rendered units as PNG files plus an SQLite index (WAL mode).

Why this shape: several builders (CLI runs, app sessions) may work on one store at once and
any of them may be killed at any moment. So

* every image is written atomically (``images.save_png``: temp file + rename) *before* its
  index row turns ``done`` — an indexed entry always has its files;
* work is *claimed* first: a ``claimed`` row with a worker id and a lease that the builder
  renews while it renders. Other builders skip claimed rows; a claim whose lease ran out, or
  whose worker process is gone (same host), is taken over — so a crash never blocks a unit
  and two live builders never render the same one;
* rows are keyed by model, weights fingerprint, layer, settings digest, variant and unit, so
  a change of weights or of any render setting never serves a stale image.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sqlite3
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from ..errors import UserInputError
from ..files import atomic_write, write_npz

ENV_VAR = "EXPLORER_CACHE_DIR"
SCHEMA = """
CREATE TABLE IF NOT EXISTS renders (
    model TEXT NOT NULL, fingerprint TEXT NOT NULL, layer TEXT NOT NULL, digest TEXT NOT NULL,
    variant TEXT NOT NULL, unit INTEGER NOT NULL,
    status TEXT NOT NULL,            -- 'claimed' while a builder works on it, then 'done' (or 'failed')
    worker TEXT, lease_until REAL,
    files TEXT,                      -- JSON list of paths relative to the store root
    activations TEXT,                -- JSON list: final activation of each image
    seconds REAL, steps_done INTEGER, attempts INTEGER NOT NULL DEFAULT 0, finished REAL,
    error TEXT,                      -- why the last attempt failed ('failed' rows; a rerun tries again)
    PRIMARY KEY (model, fingerprint, layer, digest, variant, unit)
);
CREATE TABLE IF NOT EXISTS settings (digest TEXT PRIMARY KEY, json TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS example_sets (
    model TEXT NOT NULL, fingerprint TEXT NOT NULL, layer TEXT NOT NULL, image_set TEXT NOT NULL,
    path TEXT NOT NULL, n_images INTEGER NOT NULL, description TEXT, created REAL,
    PRIMARY KEY (model, fingerprint, layer, image_set)
);
"""


def default_root() -> Path:
    """``$EXPLORER_CACHE_DIR/gallery``, else ``$XDG_CACHE_HOME`` (or ~/.cache)/machine-imagination/gallery."""
    base = os.environ.get(ENV_VAR)
    if base:
        return Path(base).expanduser() / "gallery"
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "machine-imagination" / "gallery"


def new_worker_id() -> str:
    """host:pid:random — the pid lets a builder on the same host see that a claimer died."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _worker_is_dead(worker: str | None) -> bool:
    if not worker:
        return True
    host, _, rest = worker.partition(":")
    pid_text = rest.partition(":")[0]
    if host != socket.gethostname() or not pid_text.isdigit():
        return False  # another machine: only its lease can tell
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def _safe(part: str) -> str:
    """A path component from a model/layer name (checkpoint:foo.pt, features.3, …)."""
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in part) or "_"


@dataclass(frozen=True)
class UnitKey:
    """What one row renders: a unit of a layer under given weights and settings, in one variant."""

    model: str
    fingerprint: str
    layer: str
    digest: str
    variant: str  # "max" | "neg" | "facets4" …
    unit: int

    def as_tuple(self) -> tuple:
        return (self.model, self.fingerprint, self.layer, self.digest, self.variant, self.unit)

    def file_stem(self) -> str:
        """Where this row's images live, relative to the store root (without suffix)."""
        return "/".join(["renders", _safe(self.model), self.fingerprint, _safe(self.layer), self.digest,
                         f"{self.unit:05d}-{self.variant}"])


@dataclass(frozen=True)
class Entry:
    """A finished row: absolute image paths and their final activations."""

    key: UnitKey
    files: tuple[Path, ...]
    activations: tuple[float, ...]
    seconds: float
    steps_done: int
    attempts: int

    @property
    def unit(self) -> int:
        return self.key.unit

    @property
    def file(self) -> Path:
        return self.files[0]

    @property
    def activation(self) -> float:
        return self.activations[0]


_KEY_WHERE = "model=? AND fingerprint=? AND layer=? AND digest=? AND variant=? AND unit=?"


class GalleryStore:
    """Files under ``root`` and the index ``root/index.sqlite``. Cheap to create; safe to share
    between threads (each operation opens its own connection) and processes (SQLite locking)."""

    def __init__(self, root: str | Path | None = None, busy_timeout: float = 60.0):
        self.root = Path(root).expanduser() if root else default_root()
        self.busy_timeout = busy_timeout
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserInputError(f"Cannot create the gallery store at {self.root}: {exc}") from exc
        self.db_path = self.root / "index.sqlite"
        with self._connect() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(SCHEMA)
            columns = {row[1] for row in db.execute("PRAGMA table_info(renders)")}
            if "error" not in columns:  # a store made before failed rows existed
                db.execute("ALTER TABLE renders ADD COLUMN error TEXT")

    def __repr__(self) -> str:
        return f"GalleryStore({str(self.root)!r})"

    # ---- connections ---------------------------------------------------------------------
    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.db_path, timeout=self.busy_timeout, isolation_level=None)
        try:
            db.execute(f"PRAGMA busy_timeout={int(self.busy_timeout * 1000)}")
            db.execute("PRAGMA synchronous=NORMAL")
            yield db
        finally:
            db.close()

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, taken eagerly (BEGIN IMMEDIATE) so check-then-write is atomic."""
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    # ---- settings ------------------------------------------------------------------------
    def remember_settings(self, digest: str, settings: dict) -> None:
        with self._write() as db:
            db.execute("INSERT OR IGNORE INTO settings VALUES (?, ?)", (digest, json.dumps(settings, sort_keys=True)))

    def settings(self, digest: str) -> dict | None:
        with self._connect() as db:
            row = db.execute("SELECT json FROM settings WHERE digest=?", (digest,)).fetchone()
        return json.loads(row[0]) if row else None

    # ---- claims --------------------------------------------------------------------------
    def claim(self, keys: Sequence[UnitKey], worker: str, lease: float = 120.0, limit: int | None = None) -> list[UnitKey]:
        """Claim up to ``limit`` of ``keys`` that are neither done nor held by a live claimer (failed rows are retried)."""
        got: list[UnitKey] = []
        now = time.time()
        with self._write() as db:
            for key in keys:
                if limit is not None and len(got) >= limit:
                    break
                row = db.execute(f"SELECT status, worker, lease_until FROM renders WHERE {_KEY_WHERE}", key.as_tuple()).fetchone()
                if row is None:
                    db.execute(
                        "INSERT INTO renders (model, fingerprint, layer, digest, variant, unit, status, worker, lease_until, attempts)"
                        " VALUES (?, ?, ?, ?, ?, ?, 'claimed', ?, ?, 1)", (*key.as_tuple(), worker, now + lease))
                elif row[0] == "done":
                    continue
                elif row[0] == "failed" or row[1] == worker or (row[2] or 0) < now or _worker_is_dead(row[1]):
                    db.execute(f"UPDATE renders SET status='claimed', worker=?, lease_until=?, attempts=attempts+1 WHERE {_KEY_WHERE}",
                               (worker, now + lease, *key.as_tuple()))
                else:
                    continue  # a live builder is on it
                got.append(key)
        return got

    def renew(self, keys: Iterable[UnitKey], worker: str, lease: float = 120.0) -> None:
        """Extend this worker's claims (called while it renders, so a long batch keeps them)."""
        until = time.time() + lease
        with self._write() as db:
            for key in keys:
                db.execute(f"UPDATE renders SET lease_until=? WHERE {_KEY_WHERE} AND status='claimed' AND worker=?",
                           (until, *key.as_tuple(), worker))

    def release(self, keys: Iterable[UnitKey], worker: str) -> None:
        """Give back claims without a result (cancelled or failed render)."""
        with self._write() as db:
            for key in keys:
                db.execute(f"DELETE FROM renders WHERE {_KEY_WHERE} AND status='claimed' AND worker=?", (*key.as_tuple(), worker))

    def fail(self, keys: Iterable[UnitKey], worker: str, error: str) -> int:
        """Mark this worker's claims failed with ``error`` (one line); the next build tries them again."""
        error = " ".join(str(error).split())[:500]
        count = 0
        with self._write() as db:
            for key in keys:
                cursor = db.execute(f"UPDATE renders SET status='failed', error=?, lease_until=NULL, finished=?"
                                    f" WHERE {_KEY_WHERE} AND status='claimed' AND worker=?", (error, time.time(), *key.as_tuple(), worker))
                count += cursor.rowcount
        return count

    def failures(self, model: str | None = None, layer: str | None = None) -> list[tuple[UnitKey, str]]:
        """Rows whose last attempt failed, with the error (optionally of one model / layer)."""
        with self._connect() as db:
            rows = db.execute("SELECT model, fingerprint, layer, digest, variant, unit, error FROM renders WHERE status='failed'"
                              " ORDER BY model, layer, variant, unit").fetchall()
        return [(UnitKey(*r[:6]), r[6] or "") for r in rows
                if (model is None or r[0] == model) and (layer is None or r[2] == layer)]

    def put_file(self, rel: str, data: bytes) -> Path:
        """Write ``data`` at ``rel`` under the root atomically (:func:`explorer.files.atomic_write`): a
        builder writes a row's files with this before :meth:`complete` indexes them."""
        return atomic_write(self.root / rel, data)

    def complete(self, key: UnitKey, worker: str, files: Sequence[str], activations: Sequence[float],
                 seconds: float, steps_done: int) -> bool:
        """Mark a claimed row done. Call only after its files exist. False if the claim was lost."""
        for rel in files:
            if not (self.root / rel).is_file():
                raise FileNotFoundError(f"{rel} must exist before its index row is committed")
        with self._write() as db:
            cursor = db.execute(
                f"UPDATE renders SET status='done', files=?, activations=?, seconds=?, steps_done=?, finished=?, lease_until=NULL, error=NULL"
                f" WHERE {_KEY_WHERE} AND status='claimed' AND worker=?",
                (json.dumps(list(files)), json.dumps([round(float(a), 6) for a in activations]), float(seconds),
                 int(steps_done), time.time(), *key.as_tuple(), worker))
            return cursor.rowcount == 1

    # ---- reading -------------------------------------------------------------------------
    def _entry(self, row: Sequence) -> Entry:
        key = UnitKey(*row[:6])
        return Entry(key=key, files=tuple(self.root / f for f in json.loads(row[6])), activations=tuple(json.loads(row[7])),
                     seconds=float(row[8] or 0.0), steps_done=int(row[9] or 0), attempts=int(row[10] or 0))

    _ENTRY_COLUMNS = "model, fingerprint, layer, digest, variant, unit, files, activations, seconds, steps_done, attempts"

    def entries(self, model: str, fingerprint: str, layer: str, digest: str, variant: str = "max",
                units: Iterable[int] | None = None) -> dict[int, Entry]:
        """Finished entries of one layer/settings/variant, by unit (only ``units`` when given)."""
        with self._connect() as db:
            rows = db.execute(
                f"SELECT {self._ENTRY_COLUMNS} FROM renders WHERE model=? AND fingerprint=? AND layer=? AND digest=?"
                " AND variant=? AND status='done' ORDER BY unit", (model, fingerprint, layer, digest, variant)).fetchall()
        wanted = None if units is None else set(int(u) for u in units)
        return {int(r[5]): self._entry(r) for r in rows if wanted is None or int(r[5]) in wanted}

    def entry(self, key: UnitKey) -> Entry | None:
        with self._connect() as db:
            row = db.execute(f"SELECT {self._ENTRY_COLUMNS} FROM renders WHERE {_KEY_WHERE} AND status='done'",
                             key.as_tuple()).fetchone()
        return self._entry(row) if row else None

    def summary(self) -> list[dict]:
        """One line per model/layer/settings/variant: how many units are done, claimed and failed."""
        with self._connect() as db:
            rows = db.execute(
                "SELECT r.model, r.fingerprint, r.layer, r.digest, r.variant, SUM(r.status='done'), SUM(r.status='claimed'),"
                " SUM(CASE WHEN r.status='done' THEN r.seconds ELSE 0 END), s.json, SUM(r.status='failed') FROM renders r"
                " LEFT JOIN settings s ON s.digest = r.digest GROUP BY r.model, r.fingerprint, r.layer, r.digest, r.variant"
                " ORDER BY r.model, r.layer, r.digest, r.variant").fetchall()
        return [{"model": r[0], "fingerprint": r[1], "layer": r[2], "digest": r[3], "variant": r[4], "done": int(r[5] or 0),
                 "claimed": int(r[6] or 0), "failed": int(r[9] or 0), "seconds": round(float(r[7] or 0.0), 2),
                 "settings": json.loads(r[8]) if r[8] else None}
                for r in rows]

    def layer_digests(self, model: str, fingerprint: str, layer: str, variant: str = "max") -> list[tuple[str, dict | None, int]]:
        """(digest, settings, units done) for the settings a layer was rendered with, most units first."""
        return [(s["digest"], s["settings"], s["done"]) for s in sorted(self.summary(), key=lambda s: -s["done"])
                if s["model"] == model and s["fingerprint"] == fingerprint and s["layer"] == layer and s["variant"] == variant
                and s["done"]]

    def verify(self) -> list[str]:
        """Problems found: done rows whose files are missing or not readable PNGs. Empty when consistent."""
        from PIL import Image

        problems = []
        with self._connect() as db:
            rows = db.execute(f"SELECT {self._ENTRY_COLUMNS} FROM renders WHERE status='done'").fetchall()
        for row in rows:
            entry = self._entry(row)
            if not entry.files:
                problems.append(f"{entry.key}: no files")
            if len(entry.files) != len(entry.activations):
                problems.append(f"{entry.key}: {len(entry.files)} files but {len(entry.activations)} activations")
            for path in entry.files:
                try:
                    with Image.open(path) as img:
                        img.verify()
                except (OSError, SyntaxError) as exc:
                    problems.append(f"{entry.key}: {path.name}: {exc}")
        return problems

    # ---- dataset-example activations -----------------------------------------------------
    def example_set_path(self, model: str, fingerprint: str, layer: str, image_set: str) -> Path:
        return self.root / "examples" / _safe(model) / fingerprint / _safe(layer) / f"{image_set}.npz"

    def save_examples(self, model: str, fingerprint: str, layer: str, image_set: str, arrays: dict[str, np.ndarray],
                      description: str) -> Path:
        """Write the arrays atomically, then index them (same rule as renders: file first)."""
        path = self.example_set_path(model, fingerprint, layer, image_set)
        write_npz(path, arrays)
        n = int(next(iter(arrays.values())).shape[0]) if arrays else 0
        with self._write() as db:
            db.execute("INSERT OR REPLACE INTO example_sets VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                       (model, fingerprint, layer, image_set, str(path.relative_to(self.root)), n, description, time.time()))
        return path

    def load_examples(self, model: str, fingerprint: str, layer: str, image_set: str) -> dict[str, np.ndarray] | None:
        with self._connect() as db:
            row = db.execute("SELECT path FROM example_sets WHERE model=? AND fingerprint=? AND layer=? AND image_set=?",
                             (model, fingerprint, layer, image_set)).fetchone()
        if row is None or not (self.root / row[0]).is_file():
            return None
        with np.load(self.root / row[0], allow_pickle=False) as data:
            return {k: data[k] for k in data.files}

    def example_sets(self) -> list[dict]:
        with self._connect() as db:
            rows = db.execute("SELECT model, fingerprint, layer, image_set, n_images, description FROM example_sets"
                              " ORDER BY model, layer").fetchall()
        return [dict(zip(("model", "fingerprint", "layer", "image_set", "n_images", "description"), r)) for r in rows]

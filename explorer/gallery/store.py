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
  a change of weights or of any render setting never serves a stale image;
* each finished row also leaves a small JSON *side file* next to its PNGs (and each example table
  next to its npz) holding everything its index row holds. The index records its schema version
  (``meta`` table); a store whose index is unreadable, or was reset (no version row, yet images on
  disk), says so instead of silently starting over, and :meth:`GalleryStore.repair`
  (``gallery verify --repair``) rebuilds the index from the side files without re-rendering.
  Stores made before side files existed stay readable; only their re-indexing needs the files.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import socket
import sqlite3
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from ..errors import UserInputError, shorten
from ..files import WRITE_ERRNOS, CannotWrite, atomic_write
from ..naming import path_component

ENV_VAR = "EXPLORER_CACHE_DIR"
SCHEMA_VERSION = 2  # 1: before the meta table and side files (still read); 2: meta + side files
SIDE_SUFFIX = ".json"  # a row's side file: renders/…/00003-max.json beside 00003-max.png
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
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS example_sets (
    model TEXT NOT NULL, fingerprint TEXT NOT NULL, layer TEXT NOT NULL, image_set TEXT NOT NULL,
    path TEXT NOT NULL, n_images INTEGER NOT NULL, description TEXT, created REAL,
    PRIMARY KEY (model, fingerprint, layer, image_set)
);
"""


class StoreDamaged(UserInputError):
    """The index cannot be read, or was reset while rendered images remain: the message says how to repair it."""


class StoreUnwritable(UserInputError):
    """The store cannot be written (read-only medium, full disk, quota, file-size limit, permissions): nothing
    is damaged, nothing is moved aside; reading it still works."""


def _repair_hint(root: Path) -> str:
    return f"`python -m explorer gallery verify --repair --store {root}` rebuilds it from the images' side files"


_DAMAGE_SIGNS = ("not a database", "malformed", "corrupt", "no such table", "unsupported file format", "disk i/o error",
                 "database schema")


# SQLite's extended result codes that mean "this storage cannot take a write" (read-only medium, permissions,
# full disk, quota or file-size limit: the write, sync, truncate or shared-memory growth failed)
_UNWRITABLE_CODES = ("SQLITE_READONLY", "SQLITE_CANTOPEN", "SQLITE_FULL", "SQLITE_PERM", "SQLITE_AUTH",
                     "SQLITE_IOERR_WRITE", "SQLITE_IOERR_FSYNC", "SQLITE_IOERR_DIR_FSYNC", "SQLITE_IOERR_TRUNCATE",
                     "SQLITE_IOERR_SHMOPEN", "SQLITE_IOERR_SHMSIZE", "SQLITE_IOERR_SHMMAP", "SQLITE_IOERR_DELETE",
                     "SQLITE_IOERR_ACCESS", "SQLITE_IOERR_MMAP", "SQLITE_IOERR_NOMEM")


def _is_unwritable(exc: sqlite3.Error) -> bool:
    name = getattr(exc, "sqlite_errorname", "") or ""
    text = str(exc).lower()
    return name.startswith(_UNWRITABLE_CODES) or "readonly database" in text or "database or disk is full" in text


def _is_damage(exc: sqlite3.DatabaseError) -> bool:
    """What a damaged index file says (not a lock, a busy database, a bug in a query, nor storage that
    cannot take a write)."""
    if _is_unwritable(exc):
        return False
    text = str(exc).lower()
    return any(sign in text for sign in _DAMAGE_SIGNS)


def _unwritable_message(root: Path, why: object) -> str:
    return (f"The gallery store {root} cannot be written ({why}): the disk may be read-only or full, or a quota or "
            "file-size limit is reached. Nothing in it is damaged or moved; it can still be read. Free some space, or "
            "use another --store (or $EXPLORER_CACHE_DIR).")


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
        return "/".join(["renders", path_component(self.model), self.fingerprint, path_component(self.layer),
                         self.digest, f"{self.unit:05d}-{self.variant}"])


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


@dataclass
class RepairReport:
    """What :meth:`GalleryStore.repair` did."""

    restored: int = 0  # render rows re-indexed from side files
    examples_restored: int = 0  # dataset-example tables re-indexed
    skipped: list[str] = field(default_factory=list)  # side files that could not be used, and why
    without_side_files: int = 0  # images no row knows and no side file describes (cannot be re-indexed)
    moved_aside: Path | None = None  # where an unreadable index was moved


_KEY_WHERE = "model=? AND fingerprint=? AND layer=? AND digest=? AND variant=? AND unit=?"
_MISSING = object()


def _text_field(data: dict, name: str) -> str:
    value = data.get(name, _MISSING)
    if value is _MISSING:
        raise KeyError(f"no {name!r}")
    if not isinstance(value, str) or not value:
        raise TypeError(f"{name!r} must be text, not {type(value).__name__}")
    return value


def _int_field(data: dict, name: str, default: object = _MISSING) -> int:
    value = data.get(name, default)
    if value is _MISSING:
        raise KeyError(f"no {name!r}")
    if type(value) is not int:
        raise TypeError(f"{name!r} must be a whole number, not {type(value).__name__}")
    return value


def _float_field(data: dict, name: str, default: float) -> float:
    value = data.get(name, default)
    if type(value) not in (int, float) or value != value:
        raise TypeError(f"{name!r} must be a number, not {type(value).__name__}")
    return float(value)


class GalleryStore:
    """Files under ``root`` and the index ``root/index.sqlite``. Cheap to create; safe to share
    between threads (each operation opens its own connection) and processes (SQLite locking)."""

    def __init__(self, root: str | Path | None = None, busy_timeout: float = 60.0, *, check: bool = True):
        """Open (or create) the store. With ``check`` (the default) a damaged or reset index raises
        :class:`StoreDamaged`; ``verify``/``repair`` open with ``check=False`` to look at it."""
        self.root = Path(root).expanduser() if root else default_root()
        self.busy_timeout = busy_timeout
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserInputError(f"Cannot create the gallery store at {self.root}: {exc.strerror or exc}.") from None
        self.db_path = self.root / "index.sqlite"
        self.damage: str | None = None  # why the index cannot be trusted (None: healthy)
        self.index_unreadable = False  # the index itself cannot be read (else: it was reset)
        self.read_only: str | None = None  # why the store cannot be written (None: writable); reads still work
        self._read_uri: str | None = None
        try:
            self._open_index()
        except StoreUnwritable as exc:
            self._fall_back_to_reading(str(exc))
        except StoreDamaged as exc:
            self.damage, self.index_unreadable = str(exc), True
        if self.damage is None:
            self.damage = self._reset_damage()
        if check and self.damage:
            raise StoreDamaged(self.damage)

    def _fall_back_to_reading(self, why: str) -> None:
        """The index cannot be written: read it as it is (``mode=ro``, else ``immutable=1`` when even the shared
        memory file cannot be made), so ``ls`` and ``verify`` still work; every write says why it cannot."""
        self.read_only = why
        if not self.db_path.is_file():
            return  # nothing to read: an empty store that cannot be created
        base = self.db_path.resolve().as_uri()
        for uri in (f"{base}?mode=ro", f"{base}?immutable=1"):
            self._read_uri = uri
            try:
                with self._connect() as db:
                    version = db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
                if version is not None and str(version[0]).isdigit() and int(version[0]) > SCHEMA_VERSION:
                    raise StoreDamaged(f"The gallery index {self.db_path} was written by a newer version (schema "
                                       f"{version[0]} > {SCHEMA_VERSION}): update the explorer or use another --store.")
                return
            except StoreUnwritable:
                continue
            except StoreDamaged as exc:
                self.damage, self.index_unreadable = str(exc), True
                return
        self.damage, self.index_unreadable = why, True

    def _open_index(self) -> None:
        with self._connect() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("BEGIN IMMEDIATE")  # one creator: the version row is written with the tables
            try:
                had_tables = db.execute("SELECT count(*) FROM sqlite_master WHERE name='renders'").fetchone()[0] > 0
                for statement in re.split(r";\s*\n", SCHEMA):  # (comments may hold semicolons)
                    if statement.strip():
                        db.execute(statement)
                columns = {row[1] for row in db.execute("PRAGMA table_info(renders)")}
                if "error" not in columns:  # a store made before failed rows existed
                    db.execute("ALTER TABLE renders ADD COLUMN error TEXT")
                version = db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
                if version is None:
                    # a new index, or one made before version rows (schema 1): either way, now it has one.
                    # 'created_empty' remembers that this index started empty, which is how a reset shows.
                    db.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
                    db.execute("INSERT OR IGNORE INTO meta VALUES ('created', ?)", (str(time.time()),))
                    if not had_tables:
                        db.execute("INSERT OR IGNORE INTO meta VALUES ('created_empty', '1')")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
            if version is not None and not str(version[0]).isdigit():
                raise StoreDamaged(f"The gallery index {self.db_path} has an unreadable schema version {version[0]!r}: "
                                   f"{_repair_hint(self.root)}.")
            if version is not None and int(version[0]) > SCHEMA_VERSION:
                raise StoreDamaged(f"The gallery index {self.db_path} was written by a newer version (schema "
                                   f"{version[0]} > {SCHEMA_VERSION}): update the explorer or use another --store.")

    def _reset_damage(self) -> str | None:
        """An index that started empty while rendered images (with side files) lie on disk was reset: say so."""
        if self.read_only and not self.db_path.is_file():
            return None
        with self._connect() as db:
            fresh = db.execute("SELECT value FROM meta WHERE key='created_empty'").fetchone() is not None
            rows = db.execute("SELECT count(*) FROM renders").fetchone()[0]
        if not fresh or rows:
            return None
        renders = self.root / "renders"
        orphan = next((p for p in renders.rglob(f"*{SIDE_SUFFIX}")), None) if renders.is_dir() else None
        if orphan is None:
            return None
        n = sum(1 for _ in renders.rglob(f"*{SIDE_SUFFIX}"))
        hint = _repair_hint(self.root)
        return (f"The gallery index {self.db_path} is empty but {n} rendered unit(s) lie in {renders}: the index was "
                f"reset or replaced. {hint[0].upper()}{hint[1:]} (nothing is re-rendered).")

    def __repr__(self) -> str:
        return f"GalleryStore({str(self.root)!r})"

    # ---- connections ---------------------------------------------------------------------
    def _describe(self, exc: sqlite3.Error) -> str:
        name = getattr(exc, "sqlite_errorname", "")
        return f"{exc}" + (f", {name}" if name else "")

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        try:
            if self.read_only is not None:
                if self._read_uri is None:
                    raise StoreUnwritable(self.read_only)
                db = sqlite3.connect(self._read_uri, uri=True, timeout=self.busy_timeout, isolation_level=None)
            else:
                db = sqlite3.connect(self.db_path, timeout=self.busy_timeout, isolation_level=None)
        except sqlite3.Error as exc:
            if _is_unwritable(exc):
                raise StoreUnwritable(_unwritable_message(self.root, self._describe(exc))) from None
            raise UserInputError(f"Cannot open the gallery index {self.db_path}: {exc}.") from None
        try:
            db.execute(f"PRAGMA busy_timeout={int(self.busy_timeout * 1000)}")
            if self.read_only is None:
                db.execute("PRAGMA synchronous=NORMAL")
            yield db
        except sqlite3.DatabaseError as exc:  # the store's boundary: no raw sqlite3 error reaches a page or the CLI
            if _is_unwritable(exc):
                raise StoreUnwritable(_unwritable_message(self.root, self._describe(exc))) from None
            if not _is_damage(exc):
                raise
            raise StoreDamaged(
                f"The gallery index {self.db_path} is damaged ({exc}): {_repair_hint(self.root)}.") from None
        finally:
            db.close()

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, taken eagerly (BEGIN IMMEDIATE) so check-then-write is atomic."""
        if self.read_only is not None:
            raise StoreUnwritable(self.read_only)
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
    def claim(self, keys: Sequence[UnitKey], worker: str, lease: float = 120.0,
              limit: int | None = None) -> list[UnitKey]:
        """Claim up to ``limit`` of ``keys`` that are neither done nor held by a live claimer
        (failed rows are retried)."""
        got: list[UnitKey] = []
        now = time.time()
        with self._write() as db:
            for key in keys:
                if limit is not None and len(got) >= limit:
                    break
                row = db.execute(f"SELECT status, worker, lease_until FROM renders WHERE {_KEY_WHERE}",
                                 key.as_tuple()).fetchone()
                if row is None:
                    db.execute(
                        "INSERT INTO renders (model, fingerprint, layer, digest, variant, unit, status, worker, "
                        "lease_until, attempts) VALUES (?, ?, ?, ?, ?, ?, 'claimed', ?, ?, 1)",
                        (*key.as_tuple(), worker, now + lease))
                elif row[0] == "done":
                    continue
                elif row[0] == "failed" or row[1] == worker or (row[2] or 0) < now or _worker_is_dead(row[1]):
                    db.execute("UPDATE renders SET status='claimed', worker=?, lease_until=?, attempts=attempts+1 "
                               f"WHERE {_KEY_WHERE}", (worker, now + lease, *key.as_tuple()))
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
                db.execute(f"DELETE FROM renders WHERE {_KEY_WHERE} AND status='claimed' AND worker=?",
                           (*key.as_tuple(), worker))

    def fail(self, keys: Iterable[UnitKey], worker: str, error: str) -> int:
        """Mark this worker's claims failed with ``error`` (one line); the next build tries them again."""
        error = " ".join(str(error).split())[:500]
        count = 0
        with self._write() as db:
            for key in keys:
                cursor = db.execute(f"UPDATE renders SET status='failed', error=?, lease_until=NULL, finished=?"
                                    f" WHERE {_KEY_WHERE} AND status='claimed' AND worker=?",
                                    (error, time.time(), *key.as_tuple(), worker))
                count += cursor.rowcount
        return count

    def failures(self, model: str | None = None, layer: str | None = None) -> list[tuple[UnitKey, str]]:
        """Rows whose last attempt failed, with the error (optionally of one model / layer)."""
        with self._connect() as db:
            rows = db.execute("SELECT model, fingerprint, layer, digest, variant, unit, error FROM renders WHERE "
                              "status='failed' ORDER BY model, layer, variant, unit").fetchall()
        return [(UnitKey(*r[:6]), r[6] or "") for r in rows
                if (model is None or r[0] == model) and (layer is None or r[2] == layer)]

    def put_file(self, rel: str, data: bytes) -> Path:
        """Write ``data`` at ``rel`` under the root atomically (:func:`explorer.files.atomic_write`): a
        builder writes a row's files with this before :meth:`complete` indexes them."""
        return self._put(self.root / rel, data)

    def _put(self, path: Path, data: bytes) -> Path:
        """Every file the store writes: atomically, and a disk that cannot take it is "cannot write", not damage."""
        if self.read_only is not None:
            raise StoreUnwritable(self.read_only)
        try:
            return atomic_write(path, data)
        except CannotWrite as exc:
            if exc.errno in WRITE_ERRNOS:
                raise StoreUnwritable(_unwritable_message(self.root, exc)) from None
            raise

    def complete(self, key: UnitKey, worker: str, files: Sequence[str], activations: Sequence[float],
                 seconds: float, steps_done: int) -> bool:
        """Mark a claimed row done. Call only after its files exist. False if the claim was lost."""
        for rel in files:
            if not (self.root / rel).is_file():
                raise FileNotFoundError(f"{rel} must exist before its index row is committed")
        digest_settings = self.settings(key.digest)
        key_fields = ("model", "fingerprint", "layer", "digest", "variant", "unit")
        side = {"schema": SCHEMA_VERSION, "key": dict(zip(key_fields, key.as_tuple())),
                "files": list(files), "activations": [round(float(a), 6) for a in activations],
                "seconds": float(seconds), "steps_done": int(steps_done), "finished": time.time(),
                "settings": digest_settings}
        self._put(self.root / f"{key.file_stem()}{SIDE_SUFFIX}", json.dumps(side, indent=1).encode())  # before the row
        with self._write() as db:
            cursor = db.execute(
                "UPDATE renders SET status='done', files=?, activations=?, seconds=?, steps_done=?, finished=?, "
                f"lease_until=NULL, error=NULL WHERE {_KEY_WHERE} AND status='claimed' AND worker=?",
                (json.dumps(list(files)), json.dumps([round(float(a), 6) for a in activations]), float(seconds),
                 int(steps_done), time.time(), *key.as_tuple(), worker))
            return cursor.rowcount == 1

    # ---- reading -------------------------------------------------------------------------
    def _entry(self, row: Sequence) -> Entry:
        key = UnitKey(*row[:6])
        return Entry(key=key, files=tuple(self.root / f for f in json.loads(row[6])),
                     activations=tuple(json.loads(row[7])), seconds=float(row[8] or 0.0),
                     steps_done=int(row[9] or 0), attempts=int(row[10] or 0))

    _ENTRY_COLUMNS = ("model, fingerprint, layer, digest, variant, unit, "
                      "files, activations, seconds, steps_done, attempts")

    def entries(self, model: str, fingerprint: str, layer: str, digest: str, variant: str = "max",
                units: Iterable[int] | None = None) -> dict[int, Entry]:
        """Finished entries of one layer/settings/variant, by unit (only ``units`` when given)."""
        with self._connect() as db:
            rows = db.execute(
                f"SELECT {self._ENTRY_COLUMNS} FROM renders WHERE model=? AND fingerprint=? AND layer=? AND digest=?"
                " AND variant=? AND status='done' ORDER BY unit",
                (model, fingerprint, layer, digest, variant)).fetchall()
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
                "SELECT r.model, r.fingerprint, r.layer, r.digest, r.variant, SUM(r.status='done'), "
                "SUM(r.status='claimed'), SUM(CASE WHEN r.status='done' THEN r.seconds ELSE 0 END), s.json, "
                "SUM(r.status='failed') FROM renders r LEFT JOIN settings s ON s.digest = r.digest "
                "GROUP BY r.model, r.fingerprint, r.layer, r.digest, r.variant "
                "ORDER BY r.model, r.layer, r.digest, r.variant").fetchall()
        from ..models.base import is_legacy_fingerprint

        return [{"model": r[0], "fingerprint": r[1], "layer": r[2], "digest": r[3], "variant": r[4],
                 "done": int(r[5] or 0), "claimed": int(r[6] or 0), "failed": int(r[9] or 0),
                 "seconds": round(float(r[7] or 0.0), 2),
                 "settings": json.loads(r[8]) if r[8] else None, "legacy_fingerprint": is_legacy_fingerprint(r[1])}
                for r in rows]

    def layer_digests(self, model: str, fingerprint: str, layer: str,
                      variant: str = "max") -> list[tuple[str, dict | None, int]]:
        """(digest, settings, units done) for the settings a layer was rendered with, most units first."""
        return [(s["digest"], s["settings"], s["done"]) for s in sorted(self.summary(), key=lambda s: -s["done"])
                if s["model"] == model and s["fingerprint"] == fingerprint and s["layer"] == layer
                and s["variant"] == variant and s["done"]]

    def _done_entries(self) -> list[Entry]:
        with self._connect() as db:
            rows = db.execute(f"SELECT {self._ENTRY_COLUMNS} FROM renders WHERE status='done'")
            return [self._entry(r) for r in rows]

    def _known_stems(self) -> set[str]:
        """File stems of every row (claimed ones too: a builder may be writing their images right now)."""
        with self._connect() as db:
            rows = db.execute("SELECT model, fingerprint, layer, digest, variant, unit FROM renders").fetchall()
        return {UnitKey(*r).file_stem() for r in rows}

    def _unindexed(self) -> tuple[list[Path], list[Path]]:
        """(side files, PNGs without a side file) under renders/ that no index row knows."""
        renders = self.root / "renders"
        if not renders.is_dir():
            return [], []
        known = self._known_stems()
        sides, bare = [], []
        side_stems = set()
        for side in renders.rglob(f"*{SIDE_SUFFIX}"):
            stem = str(side.relative_to(self.root).with_suffix(""))
            side_stems.add(stem)
            if stem not in known:
                sides.append(side)
        for png in renders.rglob("*.png"):
            stem = str(png.relative_to(self.root).with_suffix(""))
            base = stem.rsplit("-", 1)[0] if stem.rsplit("-", 1)[-1].isdigit() else stem  # facets: stem-0.png …
            if stem not in known and base not in known and stem not in side_stems and base not in side_stems:
                bare.append(png)
        return sorted(sides), sorted(bare)

    def verify(self) -> list[str]:
        """Problems found: a damaged or reset index, done rows whose files are missing or not readable PNGs,
        rendered images the index does not know. Empty when consistent."""
        from PIL import Image

        if self.index_unreadable:
            return [self.damage or "The gallery index cannot be read."]  # nothing in it can be checked
        problems = [self.damage] if self.damage else []
        for entry in self._done_entries():
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
        problems += self._side_file_problems()
        problems += self._legacy_problems()
        sides, bare = self._unindexed()
        if sides and not self.damage:
            problems.append(f"{len(sides)} rendered unit(s) are on disk but not in the index (first: "
                            f"{sides[0].relative_to(self.root)}): {_repair_hint(self.root)}.")
        if bare:
            problems.append(f"{len(bare)} image(s) are in no index row and have no side file (first: "
                            f"{bare[0].relative_to(self.root)}); the side file was deleted, or they were made before "
                            "side files existed: render them again.")
        return problems

    def _side_file_problems(self, named: int = 5) -> list[str]:
        """Done rows whose side file (what ``--repair`` would rebuild them from) is missing or malformed, by name.
        Rows finished before this index had side files (a schema-1 store) are not expected to have one."""
        with self._connect() as db:
            since = db.execute("SELECT value FROM meta WHERE key='created'").fetchone()
            rows = db.execute("SELECT model, fingerprint, layer, digest, variant, unit, finished FROM renders"
                              " WHERE status='done'").fetchall()
        try:
            since_time = float(since[0]) if since else 0.0
        except ValueError:
            since_time = 0.0
        problems = []
        for row in rows:
            key = UnitKey(*row[:6])
            side = self.root / f"{key.file_stem()}{SIDE_SUFFIX}"
            if not side.is_file():
                if (row[6] or 0.0) >= since_time:
                    problems.append(f"side file {side.relative_to(self.root)} is missing "
                                    f"(unit {key.unit} of {key.layer}): "
                                    "the index can no longer be rebuilt for it; render it again to restore it.")
                continue
            try:
                if self._side_row(side)["key"] != key:
                    raise ValueError("it describes another unit")
            except Exception as exc:  # noqa: BLE001 — any defect of the file is the finding
                problems.append(f"side file {side.relative_to(self.root)} is malformed ({type(exc).__name__}: "
                                f"{shorten(exc, 120)}): render unit {key.unit} of {key.layer} again to restore it.")
        if len(problems) > named:
            problems = problems[:named] + [f"… and {len(problems) - named} more side file problem(s)."]
        return problems

    def _legacy_problems(self) -> list[str]:
        """Rows and example tables keyed on the legacy, partial weights fingerprint: flagged, never served."""
        from ..models.base import is_legacy_fingerprint

        with self._connect() as db:
            renders = db.execute(
                "SELECT model, fingerprint, count(*) FROM renders GROUP BY model, fingerprint").fetchall()
            tables = db.execute(
                "SELECT model, fingerprint, count(*) FROM example_sets GROUP BY model, fingerprint").fetchall()
        out = []
        for kind, rows in (("rendered unit(s)", renders), ("dataset-example table(s)", tables)):
            for model, fingerprint, count in rows:
                if is_legacy_fingerprint(fingerprint):
                    out.append(f"{count} {kind} of {model} are keyed on the legacy weights fingerprint {fingerprint} "
                               "(it read only the first 64 KB of each tensor, so it cannot tell weights apart): "
                               "they are never served; render them again with these weights.")
        return out

    def repair(self) -> "RepairReport":
        """Rebuild the index from the side files, without re-rendering: rows for every rendered unit whose
        images are readable, their settings, and the dataset-example tables. An unreadable index is moved
        aside first (``index.sqlite.damaged-<time>``). Stop builders before repairing."""
        from PIL import Image

        report = RepairReport()
        if self.read_only is not None:
            raise StoreUnwritable(f"{self.read_only} Nothing was repaired or moved.")
        if (self.index_unreadable or not self._readable()) and self._really_damaged():
            stamp = time.strftime("%Y%m%d-%H%M%S")
            for suffix in ("", "-wal", "-shm"):
                old = self.root / f"index.sqlite{suffix}"
                if old.exists():
                    target = self.root / f"index.sqlite{suffix}.damaged-{stamp}"
                    old.replace(target)
                    if not suffix:
                        report.moved_aside = target
            self._open_index()
            self.index_unreadable = False
        known = {e.key for e in self._done_entries()}
        renders = self.root / "renders"
        for side in sorted(renders.rglob(f"*{SIDE_SUFFIX}")) if renders.is_dir() else []:
            try:  # every field is read and typed here: one bad side file is skipped (and named), the rest go on
                row = self._side_row(side)
                for rel in row["files"]:
                    with Image.open(self.root / rel) as img:
                        img.verify()
            except Exception as exc:  # noqa: BLE001 — whatever is wrong with one file, report it and finish the rest
                report.skipped.append(f"{side.relative_to(self.root)}: {type(exc).__name__}: {shorten(exc, 200)}")
                continue
            key = row["key"]
            if key in known:
                continue
            with self._write() as db:
                if row["settings"] is not None:
                    db.execute("INSERT OR IGNORE INTO settings VALUES (?, ?)",
                               (key.digest, json.dumps(row["settings"], sort_keys=True)))
                db.execute("INSERT OR REPLACE INTO renders (model, fingerprint, layer, digest, variant, unit, status, "
                           "files, activations, seconds, steps_done, attempts, finished) "
                           "VALUES (?, ?, ?, ?, ?, ?, 'done', ?, ?, ?, ?, 1, ?)",
                           (*key.as_tuple(), json.dumps(row["files"]), json.dumps(row["activations"]), row["seconds"],
                            row["steps_done"], row["finished"]))
            known.add(key)
            report.restored += 1
        examples = self.root / "examples"
        for side in sorted(examples.rglob(f"*{SIDE_SUFFIX}")) if examples.is_dir() else []:
            npz = side.with_suffix(".npz")
            try:
                data = json.loads(side.read_text())
                if not isinstance(data, dict):
                    raise TypeError("not a JSON object")
                row = tuple(_text_field(data, k) for k in ("model", "fingerprint", "layer", "image_set"))
                n_images = _int_field(data, "n_images", 0)
                description = data.get("description")
                description = None if description is None else str(description)
            except Exception as exc:  # noqa: BLE001 — one bad side file is skipped and named
                report.skipped.append(f"{side.relative_to(self.root)}: {type(exc).__name__}: {shorten(exc, 200)}")
                continue
            if not npz.is_file():
                report.skipped.append(f"{side.relative_to(self.root)}: its table {npz.name} is missing")
                continue
            with self._write() as db:
                if db.execute("SELECT 1 FROM example_sets WHERE model=? AND fingerprint=? AND layer=? AND image_set=?",
                              row).fetchone():
                    continue
                db.execute("INSERT INTO example_sets VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                           (*row, str(npz.relative_to(self.root)), n_images, description, time.time()))
            report.examples_restored += 1
        report.without_side_files = len(self._unindexed()[1])
        self.damage = self._reset_damage() if report.restored == 0 else None
        return report

    def _readable(self) -> bool:
        try:
            with self._connect() as db:
                db.execute("SELECT count(*) FROM renders").fetchone()
            return True
        except StoreDamaged:
            return False

    def _really_damaged(self) -> bool:
        """Before an index is moved aside: read it once more, read-only, with SQLite's own check. A healthy
        index (the trouble was elsewhere: a lock, a full disk) is never moved."""
        if not self.db_path.is_file():
            return False
        try:
            db = sqlite3.connect(f"{self.db_path.resolve().as_uri()}?mode=ro", uri=True, timeout=self.busy_timeout)
            try:
                verdict = db.execute("PRAGMA quick_check").fetchone()
                tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            finally:
                db.close()
        except sqlite3.Error as exc:
            return not _is_unwritable(exc)
        return verdict is None or verdict[0] != "ok" or "renders" not in tables

    def _side_row(self, side: Path) -> dict:
        """A render side file's fields, each checked for its type (ValueError/TypeError/KeyError name the bad one)."""
        data = json.loads(side.read_text())
        if not isinstance(data, dict) or not isinstance(data.get("key"), dict):
            raise TypeError("not a side file (no 'key' table)")
        key_data = data["key"]
        key = UnitKey(*(_text_field(key_data, k) for k in ("model", "fingerprint", "layer", "digest", "variant")),
                      _int_field(key_data, "unit"))
        files = data.get("files")
        if not (isinstance(files, list) and files and all(isinstance(f, str) for f in files)):
            raise TypeError("'files' must be a list of paths")
        for rel in files:
            target = (self.root / rel).resolve()
            if Path(rel).is_absolute() or self.root.resolve() not in target.parents:
                raise ValueError(f"'files' names {shorten(rel, 80)!r}, outside the store")
        activations = data.get("activations")
        if not (isinstance(activations, list) and all(type(a) in (int, float) for a in activations)):
            raise TypeError("'activations' must be a list of numbers")
        settings = data.get("settings")
        if settings is not None and not isinstance(settings, dict):
            raise TypeError("'settings' must be a table")
        return {"key": key, "files": files, "activations": [float(a) for a in activations],
                "seconds": _float_field(data, "seconds", 0.0), "steps_done": _int_field(data, "steps_done", 0),
                "finished": _float_field(data, "finished", time.time()), "settings": settings}

    # ---- dataset-example activations -----------------------------------------------------
    def example_set_path(self, model: str, fingerprint: str, layer: str, image_set: str) -> Path:
        return self.root / "examples" / path_component(model) / fingerprint / path_component(layer) / f"{image_set}.npz"

    def save_examples(self, model: str, fingerprint: str, layer: str, image_set: str, arrays: dict[str, np.ndarray],
                      description: str) -> Path:
        """Write the arrays atomically, then index them (same rule as renders: file first)."""
        path = self.example_set_path(model, fingerprint, layer, image_set)
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        self._put(path, buffer.getvalue())
        n = int(next(iter(arrays.values())).shape[0]) if arrays else 0
        side = {"schema": SCHEMA_VERSION, "model": model, "fingerprint": fingerprint, "layer": layer,
                "image_set": image_set, "n_images": n, "description": description}
        self._put(path.with_suffix(SIDE_SUFFIX), json.dumps(side, indent=1).encode())
        with self._write() as db:
            db.execute("INSERT OR REPLACE INTO example_sets VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                       (model, fingerprint, layer, image_set, str(path.relative_to(self.root)), n,
                        description, time.time()))
        return path

    def load_examples(self, model: str, fingerprint: str, layer: str, image_set: str) -> dict[str, np.ndarray] | None:
        with self._connect() as db:
            row = db.execute(
                "SELECT path FROM example_sets WHERE model=? AND fingerprint=? AND layer=? AND image_set=?",
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

"""A damaged or reset gallery index says so, and `gallery verify --repair` rebuilds it from the images'
side files without re-rendering (issue 13 defect 7: a corrupt index gave a raw sqlite3.DatabaseError, a
0-byte index silently reset the store: verify said "0 problems" beside 16 orphaned PNGs)."""

from __future__ import annotations

import json
import sqlite3

import pytest

from explorer.cli import main
from explorer.gallery import MAX, GalleryStore, StoreDamaged, build, lookup
from explorer.gallery.examples import builtin_image_set, ensure_examples
from tests.gallery_helpers import TINY_SETTINGS
from tests.tiny import tiny_model

UNITS = 6


@pytest.fixture
def built(tmp_path):
    model = tiny_model()
    store = GalleryStore(tmp_path / "store")
    build(model, "conv2", range(UNITS), TINY_SETTINGS, store=store, batch=3)
    images = builtin_image_set(photos=("chelsea",), crops=False)
    ensure_examples(model, ["conv2"], images, store)
    return model, store, images


def _entries(store, model):
    return lookup(store, model, "conv2", TINY_SETTINGS, MAX)


def test_every_finished_unit_leaves_a_side_file_with_its_row(built):
    model, store, _ = built
    entry = _entries(store, model)[2]
    side = json.loads((store.root / f"{entry.key.file_stem()}.json").read_text())
    assert side["key"]["unit"] == 2 and side["files"] == [str(entry.file.relative_to(store.root))]
    assert side["activations"] == list(entry.activations) and side["settings"] == TINY_SETTINGS.to_dict()


def test_a_zero_byte_index_is_detected_and_repaired_without_rendering(built, capsys):
    model, store, images = built
    before = {u: (e.file.read_bytes(), e.activations) for u, e in _entries(store, model).items()}
    store.db_path.write_bytes(b"")  # the reset the issue found: verify said 0 problems, build re-rendered all
    for suffix in ("-wal", "-shm"):
        (store.root / f"index.sqlite{suffix}").unlink(missing_ok=True)
    with pytest.raises(StoreDamaged, match=f"{UNITS} rendered unit.*reset.*verify --repair"):
        GalleryStore(store.root)
    assert main(["gallery", "verify", "--store", str(store.root)]) == 1
    assert "reset" in capsys.readouterr().out
    assert main(["gallery", "verify", "--repair", "--store", str(store.root)]) == 0
    out = capsys.readouterr().out
    assert f"re-indexed {UNITS} rendered unit(s) and 1 example table(s)" in out and "0 problems" in out
    repaired = GalleryStore(store.root)
    after = _entries(repaired, model)
    # same files, nothing re-rendered
    assert {u: (e.file.read_bytes(), e.activations) for u, e in after.items()} == before
    assert repaired.load_examples(model.name, model.fingerprint, "conv2", images.digest) is not None
    report = build(model, "conv2", range(UNITS), TINY_SETTINGS, store=repaired)
    assert report.units_rendered == 0 and report.already_done == UNITS


def test_a_corrupt_index_is_a_one_line_error_and_repair_moves_it_aside(built, capsys):
    model, store, _ = built
    store.db_path.write_bytes(b"this is not an SQLite database" * 100)
    for suffix in ("-wal", "-shm"):
        (store.root / f"index.sqlite{suffix}").unlink(missing_ok=True)
    with pytest.raises(StoreDamaged) as caught:
        GalleryStore(store.root)
    message = str(caught.value)
    assert "damaged" in message and "verify --repair" in message and "\n" not in message
    assert not isinstance(caught.value, sqlite3.Error)
    assert main(["gallery", "ls", "--store", str(store.root)]) == 2  # one line on stderr, no traceback
    assert capsys.readouterr().err.startswith("error: The gallery index")
    assert main(["gallery", "verify", "--repair", "--store", str(store.root)]) == 0
    out = capsys.readouterr().out
    assert "moved to" in out and f"re-indexed {UNITS}" in out
    assert len(_entries(GalleryStore(store.root), model)) == UNITS
    assert list(store.root.glob("index.sqlite.damaged-*"))


def test_rows_lost_from_a_readable_index_are_reported_and_restored(built, capsys):
    model, store, _ = built
    with sqlite3.connect(store.db_path) as db:
        db.execute("DELETE FROM renders WHERE unit >= 4")  # e.g. an index restored from an old backup
    assert len(_entries(GalleryStore(store.root), model)) == 4
    problems = GalleryStore(store.root).verify()
    assert any("2 rendered unit(s) are on disk but not in the index" in p for p in problems)
    report = GalleryStore(store.root, check=False).repair()
    assert report.restored == 2 and not report.skipped
    assert len(_entries(GalleryStore(store.root), model)) == UNITS and not GalleryStore(store.root).verify()


def test_a_schema_one_store_without_side_files_stays_readable(tmp_path):
    """Stores made before the meta table: no version row, rows present. They open and read as before."""
    model = tiny_model()
    store = GalleryStore(tmp_path / "old")
    build(model, "conv2", range(2), TINY_SETTINGS, store=store)
    with sqlite3.connect(store.db_path) as db:
        db.execute("DROP TABLE meta")
    for side in store.root.rglob("*.json"):
        side.unlink()
    reopened = GalleryStore(store.root)
    assert len(_entries(reopened, model)) == 2 and not reopened.verify()

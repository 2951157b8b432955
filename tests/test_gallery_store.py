"""Gallery store and builder: claims, crash recovery, concurrent builders, settings invalidation."""

from __future__ import annotations

import json
import signal
import sqlite3
import time

import pytest
from PIL import Image

from explorer.errors import UserInputError
from explorer.gallery import MAX, NEG, GalleryStore, UnitKey, build, facets_variant, lookup, new_worker_id
from tests.gallery_helpers import TINY_SETTINGS, start_builder
from tests.tiny import tiny_model


def _key(unit: int, variant: str = MAX) -> UnitKey:
    return UnitKey("tiny", "f" * 16, "conv2", "d" * 12, variant, unit)


def _rows(store: GalleryStore) -> list[tuple]:
    with sqlite3.connect(store.db_path) as db:
        return db.execute("SELECT unit, status, attempts FROM renders ORDER BY unit").fetchall()


def test_claims_exclude_live_workers_and_recover_expired_or_dead_ones(tmp_path):
    store = GalleryStore(tmp_path)
    me, other = new_worker_id(), new_worker_id()  # same live process: only leases can free `other`'s claims
    keys = [_key(u) for u in range(4)]
    assert store.claim(keys, other, lease=60, limit=2) == keys[:2]
    assert store.claim(keys, me, lease=60) == keys[2:], "a live claim must not be taken"
    assert store.claim(keys[:1], other, lease=-1) == keys[:1]  # its own claim, renewed with an expired lease
    assert store.claim(keys, me, lease=60) == keys[:1] + keys[2:], "an expired lease is taken over"
    dead = "{}:999999999:deadbeef".format(__import__("socket").gethostname())
    store.claim([_key(9)], dead, lease=600)
    assert store.claim([_key(9)], me) == [_key(9)], "a claim of a dead process on this host is taken at once"
    # completing needs the files first, and only the claim holder may complete
    (tmp_path / "a.png").write_bytes(b"")
    with pytest.raises(FileNotFoundError):
        store.complete(keys[2], me, ["missing.png"], [1.0], 0.1, 1)
    assert not store.complete(keys[1], me, ["a.png"], [1.0], 0.1, 1), "keys[1] belongs to `other`"
    assert store.complete(keys[2], me, ["a.png"], [1.0], 0.1, 1)
    assert store.claim(keys[2:3], other, lease=-1) == [], "done rows are never claimed again"


def test_settings_and_weights_key_the_store(tmp_path):
    store = GalleryStore(tmp_path)
    model = tiny_model()
    first = build(model, "conv2", [0, 1], TINY_SETTINGS, store=store)
    assert first.rendered[MAX] == [0, 1]
    again = build(model, "conv2", [0, 1], TINY_SETTINGS, store=store)
    assert again.rendered[MAX] == [] and again.already_done == 2, "stored units are not rendered twice"
    changed = TINY_SETTINGS.with_(steps=3)
    assert lookup(store, model, "conv2", changed) == {}, "other settings must never get the stale images"
    assert build(model, "conv2", [0, 1], changed, store=store).rendered[MAX] == [0, 1]
    old, new = lookup(store, model, "conv2", TINY_SETTINGS), lookup(store, model, "conv2", changed)
    assert {e.file for e in old.values()}.isdisjoint(e.file for e in new.values())
    assert [e.steps_done for e in new.values()] == [3, 3] and [e.steps_done for e in old.values()] == [2, 2]
    assert lookup(store, tiny_model(seed=1), "conv2", TINY_SETTINGS) == {}, "new weights, new fingerprint"
    assert store.verify() == []


def test_variants_store_their_own_activations(tmp_path):
    store = GalleryStore(tmp_path)
    model = tiny_model()
    build(model, "conv2", [2], TINY_SETTINGS.with_(steps=6), store=store, variants=[MAX, NEG, facets_variant(3)])
    settings = TINY_SETTINGS.with_(steps=6)
    best = lookup(store, model, "conv2", settings, MAX)[2]
    worst = lookup(store, model, "conv2", settings, NEG)[2]
    facets = lookup(store, model, "conv2", settings, facets_variant(3))[2]
    assert worst.activation < best.activation, "the negative image must activate the unit less than the positive one"
    assert len(facets.files) == len(facets.activations) == 3
    images = [Image.open(f).tobytes() for f in facets.files]
    assert len(set(images)) == 3, "facets must differ"
    with pytest.raises(UserInputError):
        build(model, "conv2", [99], TINY_SETTINGS, store=store)


def test_killed_builder_resumes_without_loss_or_duplicates(tmp_path):
    proc = start_builder(tmp_path, units=16, steps=6, batch=2, pause=0.2)  # each later batch stays claimed >= 1 s
    store = GalleryStore(tmp_path)
    deadline, seen = time.time() + 180, None
    try:
        while time.time() < deadline and proc.poll() is None:
            summary = [s for s in store.summary() if s["variant"] == MAX]
            if summary and summary[0]["done"] >= 2 and summary[0]["claimed"] >= 1:
                seen = summary[0]
                proc.send_signal(signal.SIGKILL)  # mid-batch: claimed rows, maybe half-written temp files
                break
            time.sleep(0.05)
    finally:
        if proc.poll() is None and seen is None:
            proc.kill()
        proc.wait()
    assert seen is not None, (f"builder (exit {proc.returncode}) was never seen mid-batch in 180 s: "
                              f"{proc.stderr.read()[-2000:]}")
    done_before = {u for u, status, _ in _rows(store) if status == "done"}
    assert store.verify() == [], "every indexed entry must have a valid image even right after the kill"

    report = build(tiny_model(), "conv2", range(16), TINY_SETTINGS.with_(steps=6), store=store, batch=4)
    rows = _rows(store)
    assert [u for u, _, _ in rows] == list(range(16)), "each unit exactly once"
    assert all(status == "done" for _, status, _ in rows)
    assert report.already_done == len(done_before)
    assert sorted(report.rendered[MAX]) == sorted(set(range(16)) - done_before), "resume renders only what was missing"
    assert any(attempts == 2 for _, _, attempts in rows), "the killed builder's claim was taken over"
    assert store.verify() == []


def test_two_concurrent_builders_share_the_work(tmp_path):
    GalleryStore(tmp_path)  # create the schema once, as the first CLI run would
    procs = [start_builder(tmp_path, units=8, steps=2, batch=2) for _ in range(2)]
    outputs = []
    for proc in procs:
        out, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, err[-2000:]
        outputs.append(set(json.loads(out.strip().splitlines()[-1])))
    a, b = outputs
    assert a.isdisjoint(b), f"a unit was rendered twice: {a & b}"
    assert a | b == set(range(8))
    store = GalleryStore(tmp_path)
    rows = _rows(store)
    assert len(rows) == 8 and all(status == "done" and attempts == 1 for _, status, attempts in rows)
    assert store.verify() == []

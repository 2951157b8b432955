"""Ray scale-out (explorer/scale.py): builds and sweeps on one local Ray instance (num_cpus=2) shared by the module.

Workers load the tiny nets from tests/tiny.py by import path (a ``ModelRef`` factory), as a cluster
node would load a registry model: nothing is pickled but the reference.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import textwrap
import time

import pytest

from explorer import fooling, scale
from explorer.errors import UserInputError
from explorer.gallery import GalleryStore, build, lookup
from explorer.optvis import FAST
from tests.test_fooling import assert_same_sweep
from tests.tiny import FAULT_DIR_VAR, tiny_model

pytest.importorskip("ray")

SETTINGS = FAST.with_(size=32, steps=4)
TINY = scale.ModelRef("tiny", factory="tests.tiny:tiny_model")
FRAGILE = scale.ModelRef("tiny", factory="tests.tiny:fragile_model")
LAYERS = {"conv1": None, "conv2": None, "conv3": None}  # 8 + 16 + 16 units


@pytest.fixture(scope="module")
def ray_cluster(root, tmp_path_factory):
    """One local Ray instance for the module; workers find `tests` and `explorer` through PYTHONPATH."""
    fault_dir = tmp_path_factory.mktemp("faults")
    old = {k: os.environ.get(k) for k in ("PYTHONPATH", FAULT_DIR_VAR, "RAY_worker_niceness")}
    os.environ["PYTHONPATH"] = os.pathsep.join([str(root)] + ([old["PYTHONPATH"]] if old["PYTHONPATH"] else []))
    os.environ[FAULT_DIR_VAR] = str(fault_dir)
    os.environ["RAY_worker_niceness"] = "0"  # Ray nices workers to 15: on a busy CI machine the tests would crawl
    try:
        with scale.cluster(num_cpus=2) as info:
            yield info, fault_dir
    finally:
        for key, value in old.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def rows(store: GalleryStore) -> list[tuple]:
    with sqlite3.connect(store.db_path) as db:
        return db.execute("SELECT layer, variant, unit, status, attempts FROM renders ORDER BY layer, unit").fetchall()


def test_ray_builds_every_layer_like_the_in_process_builder(ray_cluster, tmp_path):
    info, _ = ray_cluster
    assert info.cpus == 2 and info.slots == 2 and not info.use_gpu
    model = tiny_model()
    store = GalleryStore(tmp_path / "ray")
    seen = []
    report = scale.build_layers(model, LAYERS, SETTINGS, store=store, cluster_info=info, ref=TINY, batch=4,
                                callback=lambda done, total, preview, values: seen.append((done, total)))
    assert report.units_rendered == 40 and report.units_failed == 0 and report.tasks == 10
    assert len(report.workers) == 2, "both workers took batches"
    assert seen[-1] == (40, 40) and all(a[0] <= b[0] for a, b in zip(seen, seen[1:])), "progress counts finished units"
    table = rows(store)
    assert len(table) == 40 and {r[3] for r in table} == {"done"} and {r[4] for r in table} == {1}
    assert store.verify() == []
    # the same batches rendered in this process give the same activations: the workers did the same work
    local = GalleryStore(tmp_path / "local")
    for layer in LAYERS:
        build(model, layer, None, SETTINGS, store=local, batch=4)
        ray_acts = {u: e.activation for u, e in lookup(store, model, layer, SETTINGS).items()}
        local_acts = {u: e.activation for u, e in lookup(local, model, layer, SETTINGS).items()}
        assert ray_acts.keys() == local_acts.keys()
        assert list(ray_acts.values()) == pytest.approx(list(local_acts.values()), rel=1e-3, abs=1e-4)
    again = scale.build_layers(model, LAYERS, SETTINGS, store=store, cluster_info=info, ref=TINY, batch=4)
    assert again.units_rendered == 0 and again.already_done == 40 and again.tasks == 0, "a rerun has nothing to do"


def test_a_task_that_raises_marks_its_units_failed_and_the_build_goes_on(ray_cluster, tmp_path):
    info, fault_dir = ray_cluster
    model = tiny_model()
    store = GalleryStore(tmp_path / "store")
    (fault_dir / "raise").touch()  # exactly one forward pass in one worker raises
    report = scale.build_layers(model, LAYERS, SETTINGS, store=store, cluster_info=info, ref=FRAGILE, batch=4)
    assert report.units_failed == 4 and report.units_rendered == 36, "one batch failed, every other batch stored"
    failures = store.failures()
    assert len(failures) == 4 and all("RuntimeError: injected fault" in error for _, error in failures)
    assert "injected fault" in report.errors[0]
    failed_units = {(k.layer, k.unit) for k, _ in failures}
    rerun = scale.build_layers(model, LAYERS, SETTINGS, store=store, cluster_info=info, ref=FRAGILE, batch=4)
    assert rerun.units_rendered == 4 and rerun.units_failed == 0 and rerun.already_done == 36
    table = rows(store)
    assert len(table) == 40 and {r[3] for r in table} == {"done"}, "every unit once, none failed"
    assert {(r[0], r[2]) for r in table if r[4] == 2} == failed_units, "only the failed units were rendered twice"
    assert store.failures() == [] and store.verify() == []


def test_a_lost_worker_fails_its_batch_only_and_the_rerun_completes(ray_cluster, tmp_path):
    info, fault_dir = ray_cluster
    model = tiny_model()
    store = GalleryStore(tmp_path / "store")
    (fault_dir / "crash").touch()  # one worker process dies mid-task (os._exit)
    report = scale.build_layers(model, LAYERS, SETTINGS, store=store, cluster_info=info,
                                ref=FRAGILE, batch=4, retries=0)
    assert report.units_failed == 4 and report.units_rendered == 36
    assert all("Worker" in error or "died" in error.lower() for _, error in store.failures()), store.failures()
    rerun = scale.build_layers(model, LAYERS, SETTINGS, store=store, cluster_info=info, ref=FRAGILE, batch=4)
    assert rerun.units_rendered == 4
    table = rows(store)
    assert len(table) == 40 and {r[3] for r in table} == {"done"} and store.verify() == []
    # with a retry (the default) Ray reruns the lost task on a fresh worker: nothing fails at all
    (fault_dir / "crash").touch()
    retried = scale.build_layers(model, {"conv2": None}, SETTINGS.with_(steps=5), store=store, cluster_info=info,
                                 ref=FRAGILE, batch=4)
    assert retried.units_rendered == 16 and retried.units_failed == 0
    assert not (fault_dir / "crash").exists(), "the fault did fire"


DRIVER = textwrap.dedent("""
    import sys
    sys.path.insert(0, {root!r})
    from explorer import scale
    from explorer.gallery import GalleryStore
    from explorer.optvis import FAST
    from tests.tiny import tiny_model
    with scale.cluster({address!r}) as info:
        scale.build_layers(tiny_model(), {{"conv2": None, "conv3": None}}, FAST.with_(size=32, steps=24),
                           store=GalleryStore({store!r}), cluster_info=info,
                           ref=scale.ModelRef("tiny", factory="tests.tiny:tiny_model"), batch=2)
""")


def test_a_killed_driver_loses_only_the_batches_in_flight(ray_cluster, root, tmp_path):
    """A second driver joins the running instance by address, is SIGKILLed after its first batches land; a rerun
    resumes."""
    import ray

    info, _ = ray_cluster
    store_dir = tmp_path / "store"
    store = GalleryStore(store_dir)
    code = DRIVER.format(root=str(root), address=ray.get_runtime_context().gcs_address, store=str(store_dir))
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=root, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 45
    while time.monotonic() < deadline and sum(r[3] == "done" for r in rows(store)) < 4:
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        time.sleep(0.2)
    proc.kill()
    proc.wait()
    before = rows(store)
    done_before = {(r[0], r[2]) for r in before if r[3] == "done"}
    assert 4 <= len(done_before) < 32, "killed mid-build"
    assert len(before) - len(done_before) <= 2 * 2 * info.slots, \
        "at most the batches in flight were claimed and not done"
    model = tiny_model()
    settings = FAST.with_(size=32, steps=24)
    rerun = scale.build_layers(model, {"conv2": None, "conv3": None}, settings, store=store,
                               cluster_info=info, ref=TINY, batch=16)
    assert rerun.already_done == len(done_before) and rerun.units_rendered == 32 - len(done_before)
    after = rows(store)
    assert len(after) == 32 and {r[3] for r in after} == {"done"} and store.verify() == []


def test_an_unreachable_address_is_one_line_naming_it_and_the_local_fallback():
    with pytest.raises(UserInputError) as caught:
        scale.check_address("127.0.0.1:9")
    message = str(caught.value)
    assert "127.0.0.1:9" in message and "`--ray` alone" in message and "\n" not in message
    with pytest.raises(UserInputError, match="HOST:PORT"):
        scale.check_address("nowhere")


def test_cli_refuses_an_unreachable_address_before_loading_anything(capsys):
    from explorer.cli import main

    assert main(["gallery", "build", "--ray", "127.0.0.1:9", "--layers", "blocks.10"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: Cannot reach a Ray cluster at 127.0.0.1:9") and "\n" not in err


def test_a_sweep_split_over_ray_tasks_equals_the_in_process_sweep(ray_cluster):
    info, _ = ray_cluster
    model = tiny_model()
    kwargs = dict(seed=5, batch_size=24, gallery=6)
    local = fooling.sweep(model, "uniform,pink", 200, **kwargs).to_dict()
    seen = []
    merged = scale.sweep([model], "uniform,pink", 200, cluster_info=info, refs=[TINY],
                         callback=lambda done, total, preview, values: seen.append((done, total)), **kwargs).to_dict()
    assert len(scale.sweep_pieces(200, 4, fooling.CHUNK)) == 4, "the 7 chunks went out as 4 tasks per family"
    assert seen[-1] == (400, 400)
    for timing in ("seconds", "images_per_second"):
        local.pop(timing), merged.pop(timing)
    results_local, results_merged = local.pop("results"), merged.pop("results")
    assert json.dumps(merged, sort_keys=True) == json.dumps(local, sort_keys=True), "same settings, counts, stop state"
    assert_same_sweep(results_merged, results_local, rel=1e-6)


def test_sweep_pieces_cover_the_range_on_chunk_boundaries():
    for n in (1, 31, 32, 33, 200, 1000):
        for pieces in (1, 3, 8, 100):
            cut = scale.sweep_pieces(n, pieces, 32)
            assert cut[0][0] == 0 and sum(c for _, c in cut) == n and len(cut) <= max(1, pieces)
            assert all(start % 32 == 0 and s2 == start + c for (start, c), (s2, _) in zip(cut, cut[1:] + [(n, 0)]))


def test_accumulators_merge_to_the_whole_range():
    model = tiny_model()
    whole = fooling.accumulate(model, "gaussian", 1, 0, 100, batch_size=100, gallery=5)
    parts = [fooling.accumulate(model, "gaussian", 1, s, c, batch_size=7, gallery=5)
             for s, c in ((0, 32), (32, 64), (96, 4))]
    merged = fooling.Accumulator.from_state(parts[0].state())
    for part in parts[1:]:
        merged.merge(fooling.Accumulator.from_state(part.state()))
    assert merged.n == 100
    for name in ("above", "hist", "classes", "top_index", "top_class"):
        assert getattr(merged, name).tolist() == getattr(whole, name).tolist(), name
    assert float(merged.entropy) == pytest.approx(float(whole.entropy), rel=1e-6)
    assert float(merged.confidence) == pytest.approx(float(whole.confidence), rel=1e-6)


def test_stopping_cancels_what_is_in_flight_and_gives_its_claims_back(ray_cluster, tmp_path):
    """What Ctrl-C does in the CLI (its first Ctrl-C sets should_stop): no more scheduling, no waiting."""
    info, _ = ray_cluster
    model = tiny_model()
    store = GalleryStore(tmp_path / "store")
    seen = []
    report = scale.build_layers(model, LAYERS, SETTINGS.with_(steps=30), store=store,
                                cluster_info=info, ref=TINY, batch=2,
                                callback=lambda done, total, preview, values: seen.append(done),
                                should_stop=lambda: len(seen) > 1)
    assert report.stopped == "cancelled"
    table = rows(store)
    assert {r[3] for r in table} == {"done"}, "claims of the cancelled batches were given back"
    assert 2 <= len(table) < 40 and report.units_rendered == len(table)
    rerun = scale.build_layers(model, LAYERS, SETTINGS.with_(steps=30), store=store,
                               cluster_info=info, ref=TINY, batch=8)
    assert rerun.already_done == len(table) and len(rows(store)) == 40 and store.verify() == []


def test_fool_sweep_ray_cli_writes_the_same_json(ray_cluster, tmp_path, capsys):
    """`fool sweep --ray` on a registry model the workers load by name (the shipped fashion_cnn)."""
    from explorer.cli import main

    common = ["fool", "sweep", "--model", "fashion_cnn", "--families", "uniform,stripes", "--n", "96", "--batch", "40",
              "--seed", "2"]
    assert main(common + ["--json", str(tmp_path / "local.json")]) == 0
    assert main(common + ["--ray", "--json", str(tmp_path / "ray.json")]) == 0
    assert "fool sweep on Ray" in capsys.readouterr().err
    local, ray_run = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("local", "ray"))
    assert ray_run["settings"] == local["settings"] and ray_run["images"] == local["images"] == 192
    assert_same_sweep(ray_run["results"], local["results"], rel=1e-6)


def test_tasks_ask_for_a_gpu_each_when_the_cluster_has_gpus():
    cpu_only = scale.Cluster("local", cpus=16, gpus=0, started_here=True)
    with_gpus = scale.Cluster("10.0.0.5:6379", cpus=64, gpus=8, started_here=False)
    assert cpu_only.slots == 16 and scale._task_options(cpu_only, 1) == {
        "max_retries": 1, "retry_exceptions": False, "num_cpus": 1}
    assert with_gpus.slots == 8, "one task per GPU at a time"
    assert scale._task_options(with_gpus, 0) == {
        "max_retries": 0, "retry_exceptions": False, "num_gpus": 1, "num_cpus": 1}

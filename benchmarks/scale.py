"""Ray scale-out figures, measured in one run (explorer/scale.py; docs/scale.md).

1. unit   — per-unit cost of a gallery build in this process (one torch thread, batch 16, THUMBNAILS);
2. ray    — the same work as Ray tasks on a local instance with 1 worker, then with 2 workers
            (num_cpus=1 and 2, one torch thread each): units/minute and the speed-up;
3. task   — Ray's per-task overhead (round trip of a no-op task with a small argument and result),
            a worker's first model load, and the driver's cost per stored unit (PNG write + index row).

Results go to stdout and, with --json, to a file that benchmarks/scale_simulation.py reads.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/scale.py --json out/scale.json
    .venv/bin/python benchmarks/scale.py --quick          # a smoke run: tiny settings
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

from _common import ROOT  # puts the repository on sys.path

os.environ["PYTHONPATH"] = os.pathsep.join(
    [str(ROOT)] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else []))

import torch  # noqa: E402

from explorer import scale  # noqa: E402
from explorer.files import write_json  # noqa: E402
from explorer.gallery import THUMBNAILS, GalleryStore, MAX, build, render_units, store_units, unit_key  # noqa: E402
from explorer.gallery.store import new_worker_id  # noqa: E402
from explorer.models import load_model  # noqa: E402


def _noop(payload: bytes) -> bytes:
    return payload[:16]


def _load_in_worker(name: str, layer: str) -> float:
    """Runs in a fresh Ray worker: import torch + the project, load the model and render one step
    (what a worker's first task pays once); returns the seconds it took."""
    started = time.perf_counter()
    torch.set_num_threads(1)
    from explorer.gallery import render_units as render_once
    from explorer.models import load_model as load

    model = load(name, device="cpu")
    render_once(model, layer, MAX, THUMBNAILS.with_(steps=1), [0])
    time.sleep(1.0)  # hold the worker so the other warm-up task goes to another one
    return time.perf_counter() - started - 1.0


def bench_unit(model, layer: str, units: int, batch: int, settings) -> float:
    torch.set_num_threads(1)
    store = GalleryStore(tempfile.mkdtemp(prefix="scale_unit_"))
    report = build(model, layer, range(units), settings, store=store, batch=batch)
    per_unit = report.render_seconds / report.units_rendered
    print(f"unit: {model.name} {layer}, {units} units in batches of {batch}, size {settings.size}, "
          f"{settings.steps} steps, 1 thread, in-process: {per_unit:.3f} s/unit ({60 / per_unit:.1f} units/minute)")
    return per_unit


def bench_ray(model, layer: str, units: int, batch: int, settings, workers: int) -> dict:
    store = GalleryStore(tempfile.mkdtemp(prefix=f"scale_ray{workers}_"))
    started = time.perf_counter()
    with scale.cluster(num_cpus=workers) as info:
        startup = time.perf_counter() - started
        # warm every worker (process start, imports, model load) so the timed part is the steady state
        import ray

        warm = ray.remote(_load_in_worker).options(num_cpus=1)
        loads = ray.get([warm.remote(model.name, layer) for _ in range(workers)])
        report = scale.build_layers(model, {layer: list(range(units))}, settings, store=store,
                                    cluster_info=info, batch=batch)
    rate = report.units_per_minute
    print(f"ray: {workers} worker(s): {report.units_rendered} units in {report.tasks} tasks, "
          f"{report.seconds:.1f} s wall -> {rate:.1f} units/minute (instance start {startup:.1f} s, "
          f"first model load in a worker {max(loads):.1f} s incl. a 1-step render, not counted)")
    assert report.units_failed == 0, report.errors
    return {"workers": workers, "units": report.units_rendered, "seconds": report.seconds, "units_per_minute": rate,
            "startup_seconds": startup, "worker_load_seconds": max(loads)}


def bench_overhead(model, layer: str, settings, tasks: int) -> dict:
    import ray

    out = {}
    with scale.cluster(num_cpus=1):
        noop = ray.remote(_noop).options(num_cpus=1)
        ray.get(noop.remote(b"x"))  # start the worker
        payload = os.urandom(64 * 1024)  # about what a task returns for 16 thumbnails
        started = time.perf_counter()
        for _ in range(tasks):
            ray.get(noop.remote(payload))
        out["task_round_trip_seconds"] = (time.perf_counter() - started) / tasks
        started = time.perf_counter()
        ray.get([noop.remote(payload) for _ in range(tasks)])
        out["task_pipelined_seconds"] = (time.perf_counter() - started) / tasks
    # the driver's part per unit: claim, write the PNG (atomic, fsync), mark the row done
    store = GalleryStore(tempfile.mkdtemp(prefix="scale_driver_"))
    rendered = render_units(model, layer, MAX, settings.with_(steps=1), list(range(16)))
    worker = new_worker_id()
    times = []
    for rep in range(4):
        keys = [unit_key(model, layer, settings.with_(seed=rep), MAX, u) for u in range(16)]
        started = time.perf_counter()
        claimed = store.claim(keys, worker)
        store_units(store, claimed, worker, rendered)
        times.append((time.perf_counter() - started) / 16)
    out["driver_seconds_per_unit"] = statistics.median(times)
    out["png_bytes_per_unit"] = statistics.mean(len(r.images[0]) for r in rendered)
    print(f"task: Ray no-op task with a 64 KiB result: {out['task_round_trip_seconds'] * 1000:.1f} ms one at a time, "
          f"{out['task_pipelined_seconds'] * 1000:.2f} ms each when {tasks} are in flight")
    print(f"task: driver per stored unit (claim + atomic PNG write with fsync + index row): "
          f"{out['driver_seconds_per_unit'] * 1000:.2f} ms ({out['png_bytes_per_unit'] / 1024:.1f} KiB PNG)")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="efficientnet_lite0")
    parser.add_argument("--layer", default="blocks.6", help="80 units; 3/4 of the network's cost per forward")
    parser.add_argument("--units", type=int, default=64)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--tasks", type=int, default=200, help="no-op tasks for the overhead figure")
    parser.add_argument("--quick", action="store_true", help="smoke run: 8 steps, 16 units, batch 4")
    parser.add_argument("--json", help="write the figures here (input of benchmarks/scale_simulation.py)")
    args = parser.parse_args()
    settings = THUMBNAILS.with_(steps=8) if args.quick else THUMBNAILS
    if args.quick:
        args.units, args.batch, args.tasks = 16, 4, 20
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; torch {torch.__version__}")
    model = load_model(args.model, device="cpu")
    figures: dict = {"model": args.model, "layer": args.layer, "settings": settings.to_dict(), "batch": args.batch,
                     "cpus": os.cpu_count()}
    figures["unit_seconds_cpu"] = bench_unit(model, args.layer, args.units, args.batch, settings)
    one = bench_ray(model, args.layer, args.units, args.batch, settings, 1)
    two = bench_ray(model, args.layer, args.units, args.batch, settings, 2)
    figures["ray"] = [one, two]
    figures["speedup_2_workers"] = two["units_per_minute"] / one["units_per_minute"]
    print(f"ray: speed-up from 1 to 2 workers: x{figures['speedup_2_workers']:.2f} (target >= 1.7); "
          f"1 Ray worker vs in-process: x{one['units_per_minute'] / (60 / figures['unit_seconds_cpu']):.2f}")
    figures.update(bench_overhead(model, args.layer, settings, args.tasks))
    figures["worker_load_seconds"] = max(one["worker_load_seconds"], two["worker_load_seconds"])
    print(f"machine: load average now {os.getloadavg()[0]:.1f}")
    if args.json:
        write_json(args.json, figures)  # atomic; makes the folder
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()

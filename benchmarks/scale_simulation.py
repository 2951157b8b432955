"""Wall time of an atlas of 10 models × ~3,000 units on 1, 8 and 64 workers: a discrete-event
simulation of explorer/scale.py's build loop, fed with the figures benchmarks/scale.py measured here.

What it models (the real loop, docs/scale.md):
* the driver is ONE thread: it submits a task (claim + Ray submit, ``driver_submit`` s), and for each
  finished task writes the batch's PNGs and index rows (``driver_seconds_per_unit`` × batch);
* at most 2 × workers tasks are in flight; a task reaches a worker after Ray's latency (``task_latency``);
* a worker renders a batch in ``batch × unit_seconds``; the first task of a model on a worker also
  pays the model load (``worker_load_seconds``); tasks go out model after model.
It prints, per worker count, the wall time, how busy the workers and the driver were, and names the
bottleneck: the workers (compute), the driver (writes to the store), or Ray's per-task latency.

GPU figures are NOT measured (no GPU was lent): ``--speedups`` only asks "what if one worker rendered
k× faster than one core of this CPU" — a what-if on the measured CPU cost, not a GPU estimate.

    .venv/bin/python benchmarks/scale_simulation.py --figures out/scale.json
    .venv/bin/python benchmarks/scale_simulation.py            # the figures recorded in docs/scale.md
"""

from __future__ import annotations

import argparse
import heapq
import json
from pathlib import Path

# Measured on this machine (2 shared CPU cores, no GPU) by benchmarks/scale.py; docs/scale.md has the run.
DEFAULTS = {
    "unit_seconds_cpu": 1.30,  # one unit at THUMBNAILS (96 px, 128 steps), batch 16, one torch thread
    "task_round_trip_seconds": 0.0027,  # Ray latency of one task (no-op, 64 KiB result)
    "task_pipelined_seconds": 0.0015,  # driver-side cost per task when many are in flight
    "driver_seconds_per_unit": 0.016,  # claim + atomic PNG write (fsync) + index row
    "worker_load_seconds": 10.0,  # a fresh worker: imports + model load + first step
    "batch": 16,
}


def simulate(workers: int, models: int, units: int, batch: int, unit_seconds: float, latency: float, submit: float,
             driver_per_unit: float, load: float) -> dict:
    """Event-driven run of the driver loop; returns wall time and busy fractions."""
    tasks = [(m, min(batch, units - start)) for m in range(models) for start in range(0, units, batch)]
    limit = 2 * workers
    loaded: list[set[int]] = [set() for _ in range(workers)]
    worker_free = [(0.0, w) for w in range(workers)]  # (time the worker is free, worker)
    heapq.heapify(worker_free)
    finished: list[tuple[float, int]] = []  # (time the result is at the driver, units)
    driver_time = 0.0
    driver_busy = 0.0
    worker_busy = 0.0
    next_task = 0
    in_flight = 0
    while next_task < len(tasks) or in_flight:
        # the driver submits while it may (each submit costs driver time)
        while next_task < len(tasks) and in_flight < limit:
            model, n = tasks[next_task]
            next_task += 1
            in_flight += 1
            driver_time += submit
            driver_busy += submit
            free_at, w = heapq.heappop(worker_free)
            start = max(free_at, driver_time + latency)
            run = n * unit_seconds + (load if model not in loaded[w] else 0.0)
            loaded[w].add(model)
            worker_busy += run
            heapq.heappush(worker_free, (start + run, w))
            heapq.heappush(finished, (start + run + latency, n))
        # then it handles the next result (waiting for it if none is there yet)
        done_at, n = heapq.heappop(finished)
        driver_time = max(driver_time, done_at) + n * driver_per_unit
        driver_busy += n * driver_per_unit
        in_flight -= 1
    wall = driver_time
    return {"workers": workers, "wall_seconds": wall, "worker_busy": worker_busy / (workers * wall),
            "driver_busy": driver_busy / wall, "compute_bound": worker_busy / workers, "driver_bound": driver_busy}


def bottleneck(row: dict) -> str:
    """The larger of the two lower bounds on the wall time (workers' compute, the driver's own work)."""
    name, bound = max((("the workers (compute)", row["compute_bound"]),
                       ("the driver (store writes)", row["driver_bound"])),
                      key=lambda kv: kv[1])
    if row["wall_seconds"] > 1.3 * bound:
        return f"Ray task latency / model loads (wall {row['wall_seconds'] / bound:.1f}x the larger bound)"
    return name


def hours(seconds: float) -> str:
    return f"{seconds / 3600:.2f} h" if seconds >= 3600 else f"{seconds / 60:.1f} min"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--figures", help="JSON written by benchmarks/scale.py (default: the figures in docs/scale.md)")
    parser.add_argument("--models", type=int, default=10)
    parser.add_argument("--units", type=int, default=3000, help="units per model")
    parser.add_argument("--workers", default="1,8,64")
    parser.add_argument("--speedups", default="1,10,100",
                        help="what-if: a worker renders k× faster than one core of this CPU (GPU: not measured yet)")
    args = parser.parse_args()
    figures = dict(DEFAULTS)
    if args.figures:
        figures.update({k: v for k, v in json.loads(Path(args.figures).read_text()).items() if k in DEFAULTS})
    batch = int(figures["batch"])
    print(f"inputs (measured on this CPU): {json.dumps({k: round(v, 4) for k, v in figures.items()})}")
    print(f"atlas: {args.models} models x {args.units} units = {args.models * args.units} units, batches of {batch}, "
          f"at most 2 tasks per worker in flight")
    driver_limit = 1.0 / figures["driver_seconds_per_unit"]
    print(f"driver ceiling: {driver_limit:.0f} units/s whatever the workers "
          f"({figures['driver_seconds_per_unit'] * 1000:.1f} ms per stored unit)")
    print("k (worker speed vs one CPU core) | workers | wall time | workers busy | driver busy | bottleneck")
    for k in [float(x) for x in args.speedups.split(",")]:
        for w in [int(x) for x in args.workers.split(",")]:
            row = simulate(w, args.models, args.units, batch, figures["unit_seconds_cpu"] / k,
                           figures["task_round_trip_seconds"], figures["task_pipelined_seconds"],
                           figures["driver_seconds_per_unit"], figures["worker_load_seconds"])
            print(f"{k:>6g} | {w:>4} | {hours(row['wall_seconds']):>9} | {row['worker_busy']:6.0%} | "
                  f"{row['driver_busy']:6.0%} | {bottleneck(row)}")
        crossover = figures["unit_seconds_cpu"] / k / figures["driver_seconds_per_unit"]
        print(f"{'':>6}   the driver saturates beyond about {crossover:.0f} workers at this k")


if __name__ == "__main__":
    main()

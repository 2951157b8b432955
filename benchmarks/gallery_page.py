"""Layer gallery figures, measured in one run.

0. atlas — the page opened on the shipped atlas with an EMPTY user store: server-side time of the
           model overview (every layer, 8 units each) and of the whole blocks.10 grid (112 units),
           each in a fresh session (a new AppTest) of a server that has loaded the model once;
           the very first run of the process (model load) is reported apart. Budget: 1 s.
0b. browser — the real app (`streamlit run`, Chromium): wall time from opening the gallery to every
           overview image shown, on a server that has just started (its first view loads the model) and
           again in a new tab; then the same for the whole blocks.10 grid.
1. page  — server-side render time of a cached 64-unit grid page (Streamlit AppTest run of the
           page script with the model already loaded and all 64 tiles in the store), against the
           1 s budget of the issue.
2. build — units/minute for a layer build at the fast thumbnail settings (explorer.optvis.FAST),
           and the batched-vs-one-at-a-time ratio at a reduced step count (throughput per step
           does not depend on the step count, so the ratio carries over).

    .venv/bin/python benchmarks/gallery_page.py                 # all
    .venv/bin/python benchmarks/gallery_page.py --only atlas
    .venv/bin/python benchmarks/gallery_page.py --only page
    .venv/bin/python benchmarks/gallery_page.py --only build --units 16 --batch 16
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from _common import ROOT  # puts the repository on sys.path

import torch  # noqa: E402

from explorer.gallery import GalleryStore, build  # noqa: E402
from explorer.models import load_model  # noqa: E402
from explorer.optvis import FAST  # noqa: E402


def _tiles(at) -> int:
    """Images the page shows: grid tiles are <img> tags in st.html elements, the rest st.image."""
    return sum(h.proto.body.count("<img") for h in at.get("html")) + len(at.get("image"))


def bench_atlas(model_name: str, layer: str, repeats: int) -> None:
    from streamlit.testing.v1 import AppTest

    from explorer.gallery.atlas import find_atlas

    os.environ["EXPLORER_CACHE_DIR"] = tempfile.mkdtemp(prefix="gallery_atlas_bench_")  # an empty user store
    page = str(ROOT / "explorer/ui/pages/gallery.py")
    components = {}  # a server scans installed packages for components once at start-up; AppTest does it per instance

    def session(**query):
        at = AppTest.from_file(page, default_timeout=300)
        if components:
            at._bidi_component_manager = components["manager"]
        at.query_params["model"] = model_name
        for k, v in query.items():
            at.query_params[k] = v
        started = time.perf_counter()
        at.run()
        seconds = time.perf_counter() - started
        if at.exception:
            raise SystemExit(at.exception[0].value)
        components.setdefault("manager", at._bidi_component_manager)
        return seconds, _tiles(at), at

    first, _, _ = session()
    atlas = find_atlas(load_model(model_name, device="auto"))
    if atlas is None:
        raise SystemExit(f"no atlas for {model_name} in {ROOT / 'assets/atlas'}")
    print(f"atlas: {atlas.root} ({len(atlas.layers)} layers, {sum(atlas.units(l) for l in atlas.layers)} units); "
          f"first run of this process (imports, model load, layer dry run): {first:.2f} s")
    for label, query in (("overview of every layer", {}), (f"{layer} grid", {"layer": layer})):
        times, tiles = [], 0
        for _ in range(repeats):
            seconds, tiles, _ = session(**query)
            times.append(seconds)
        median = statistics.median(times)
        print(f"atlas: {label}, fresh session, empty user store: median {median * 1000:.0f} ms over {repeats} sessions "
              f"(min {min(times) * 1000:.0f}, max {max(times) * 1000:.0f}); {tiles} images shown; budget 1000 ms")


def bench_browser(model_name: str, layer: str) -> None:
    from tests.browser import browser_page, running_app, wait_for_count

    from explorer.gallery.atlas import find_atlas

    env = {"EXPLORER_CACHE_DIR": tempfile.mkdtemp(prefix="gallery_browser_bench_")}  # an empty user store
    atlas = find_atlas(load_model(model_name, device="auto"))
    if atlas is None:
        raise SystemExit(f"no atlas for {model_name}")
    overview_images = sum(min(8, atlas.units(name)) for name in atlas.layers)  # what the atlas can show
    grid_images = atlas.units(layer)
    with running_app(env) as url, browser_page() as page:
        for label, query, expected in (("overview, first view after server start (loads the model)", "",
                                        overview_images),
                                       ("overview, opened again (a new session)", "", overview_images),
                                       (f"{layer} grid (a new session)", f"&layer={layer}", grid_images),
                                       (f"{layer} grid, opened again", f"&layer={layer}", grid_images)):
            tab = page  # every goto loads the page afresh: a new Streamlit session
            started = time.perf_counter()
            tab.goto(f"{url}/gallery?model={model_name}{query}")
            shown = wait_for_count(tab.locator("a.gal-tile img"), expected, timeout=300)
            tab.wait_for_function("Array.from(document.querySelectorAll('a.gal-tile img'))"
                                  f".filter(i => i.complete && i.naturalWidth > 0).length >= {expected}",
                                  timeout=300_000)
            print(f"browser: {label}: {expected} images shown (counted {shown}) "
                  f"{time.perf_counter() - started:.2f} s after opening")


def bench_page(model_name: str, layer: str, repeats: int) -> None:
    from streamlit.testing.v1 import AppTest

    cache = Path(tempfile.mkdtemp(prefix="gallery_bench_"))
    os.environ["EXPLORER_CACHE_DIR"] = str(cache)
    model = load_model(model_name, device="auto")
    store = GalleryStore()
    # 64 tiles at the thumbnail size; 1 step is enough: the page's cost is the files, not their quality
    settings = FAST.with_(steps=1)
    started = time.perf_counter()
    build(model, layer, range(64), settings, store=store, batch=32)
    print(f"page: filled the store with 64 tiles of {layer} ({settings.size} px) in "
          f"{time.perf_counter() - started:.1f} s")
    at = AppTest.from_file(str(ROOT / "explorer/ui/pages/gallery.py"), default_timeout=300)
    for k, v in {"model": model_name, "layer": layer, "steps": str(settings.steps)}.items():
        at.query_params[k] = v
    started = time.perf_counter()
    at.run()
    first = time.perf_counter() - started
    if at.exception:
        raise SystemExit(at.exception[0].value)
    tiles = _tiles(at)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        at.run()
        times.append(time.perf_counter() - started)
    median = statistics.median(times)
    print(f"page: first run (model load, layer dry run) {first:.2f} s; {tiles} tiles shown")
    print(f"page: cached 64-unit page render: median {median * 1000:.0f} ms over {repeats} runs "
          f"(min {min(times) * 1000:.0f}, max {max(times) * 1000:.0f}); "
          f"budget 1000 ms -> ratio {median / 1.0:.2f} of budget")


def bench_build(model_name: str, layer: str, units: int, batch: int, ratio_steps: int, ratio_units: int) -> None:
    model = load_model(model_name, device="auto")
    store = GalleryStore(tempfile.mkdtemp(prefix="gallery_build_"))
    print(f"build: {model_name} {layer}, FAST = size {FAST.size}, {FAST.steps} steps, device {model.device}, "
          f"{torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f}")
    report = build(model, layer, range(units), FAST, store=store, batch=batch)
    print(f"build: {units} units in batches of {batch}: {report.render_seconds:.1f} s rendering -> "
          f"{report.units_per_minute():.2f} units/minute; {report.seconds:.1f} s wall including store writes")
    short = FAST.with_(steps=ratio_steps)
    batched = build(model, layer, range(ratio_units), short, store=store, batch=ratio_units)
    single = build(model, layer, range(ratio_units, 2 * ratio_units), short, store=store, batch=1)
    print(f"build: at {ratio_steps} steps, {ratio_units} units batched: {batched.units_per_minute():.1f} units/minute; "
          f"one at a time: {single.units_per_minute():.1f} units/minute "
          f"-> batching x{batched.units_per_minute() / single.units_per_minute():.2f}")
    print(f"build: load average now {os.getloadavg()[0]:.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=["atlas", "browser", "page", "build"])
    parser.add_argument("--model", default="efficientnet_lite0")
    parser.add_argument("--layer", default="blocks.10")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--units", type=int, default=16, help="units of the FAST build (the layer has 112)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--ratio-steps", type=int, default=8)
    parser.add_argument("--ratio-units", type=int, default=8)
    args = parser.parse_args()
    if args.only in (None, "atlas"):
        bench_atlas(args.model, args.layer, args.repeats)
    if args.only in (None, "browser"):
        bench_browser(args.model, args.layer)
    if args.only in (None, "page"):
        bench_page(args.model, args.layer, args.repeats)
    if args.only in (None, "build"):
        bench_build(args.model, args.layer, args.units, args.batch, args.ratio_steps, args.ratio_units)


if __name__ == "__main__":
    main()

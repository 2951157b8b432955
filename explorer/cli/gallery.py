"""``gallery build | ls | export | atlas | verify``: the layer gallery from the command line."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from .. import limits
from ..errors import UserInputError
from ..files import atomic_write, write_csv
from ..naming import path_component
from ..gallery.builder import THUMBNAILS
from ..parsing import parse_list, parse_units
from .common import add_model_options, check_options, load_cli_model, output_dir, progress, write_json
from .visualize import add_render_options, settings_from_args


def _store(args: argparse.Namespace, check: bool = True):
    from ..gallery import GalleryStore

    return GalleryStore(args.store or None, check=check)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("gallery", help="layer gallery: render every unit of a layer into a resumable store")
    sub = p.add_subparsers(dest="gallery_command", required=True)
    store_help = "gallery store folder (default: $EXPLORER_CACHE_DIR/gallery or ~/.cache/machine-imagination/gallery)"

    b = sub.add_parser("build", help="render the missing units of layers (resumable; safe to run twice at once)")
    add_model_options(b)
    b.add_argument("--layers", help="comma-separated layers (default: the model's default layer)")
    b.add_argument("--all-layers", action="store_true",
                   help="every main layer of the model (EfficientNet-Lite0: stem, blocks.0-15, head; ~3,100 units)")
    b.add_argument("--ray", nargs="?", const="local", default=None, metavar="auto|ADDRESS",
                   help="render on Ray: alone, a local instance with every CPU/GPU here; "
                        "auto or HOST:PORT joins a cluster")
    b.add_argument("--workers", type=int, default=None,
                   help="with --ray alone: CPUs the local Ray instance may use (default: all)")
    b.add_argument("--units", help="units, e.g. 0-63 (default: all of each layer)")
    b.add_argument("--facets", type=int, default=0, help="also render N diversity facets per unit (N ≥ 2)")
    b.add_argument("--negative", action="store_true", help="also render the minimising (negative) image")
    b.add_argument("--batch", type=int, default=16, help="units rendered together (one forward/backward per step)")
    b.add_argument("--examples", default="builtin",
                   help="dataset examples: 'builtin' (bundled photos), a folder of images, or 'none'")
    b.add_argument("--store", help=store_help)
    b.add_argument("--lease", type=float, default=120.0,
                   help="seconds a claim lasts without renewal (crashed builders)")
    b.add_argument("--no-wait", action="store_true", help="skip units another builder is rendering instead of waiting")
    add_render_options(b, THUMBNAILS)
    b.set_defaults(func=run_build)

    ls = sub.add_parser("ls", help="what the store holds: layers, settings, units done")
    ls.add_argument("--store", help=store_help)
    ls.add_argument("--json", action="store_true", help="machine-readable output")
    ls.set_defaults(func=run_ls)

    e = sub.add_parser("export",
                       help="copy a layer's images (your store first, then the shipped atlas) "
                            "to a folder with index.json and index.csv")
    add_model_options(e, weights_help=None)
    e.add_argument("--layer", required=True)
    e.add_argument("--units", help="units to export (default: every unit of the layer that is rendered)")
    e.add_argument("--variants", default="all",
                   help="comma-separated: max, neg, facetsN; all (default): max, neg and every facets variant stored")
    e.add_argument("--no-atlas", action="store_true", help="only your own store, not the shipped atlas")
    e.add_argument("--out", default="out/gallery")
    e.add_argument("--store", help=store_help)
    add_render_options(e, THUMBNAILS)
    e.set_defaults(func=run_export)

    a = sub.add_parser("atlas", help="export a store's renders of every main layer as a compact read-only atlas (WebP)")
    add_model_options(a, weights_help=None)
    a.add_argument("--layers", help="comma-separated layers (default: every main layer, as build --all-layers)")
    a.add_argument("--store", help=store_help)
    a.add_argument("--out", default="assets/atlas", help="atlas folder (the model's atlas goes to OUT/<model>/)")
    a.add_argument("--quality", type=int, default=80, help="WebP quality of the thumbnails (1-100)")
    a.add_argument("--examples", default="builtin", help="image set of the dataset-example tables: builtin or none")
    a.add_argument("--build-command", default="", help="the command that built the store (recorded in the manifest)")
    a.add_argument("--build-seconds", type=float, default=None, help="its wall time (recorded in the manifest)")
    add_render_options(a, THUMBNAILS)
    a.set_defaults(func=run_atlas)

    v = sub.add_parser("verify",
                       help="check the index and every indexed entry's image files; --repair rebuilds the index")
    v.add_argument("--store", help=store_help)
    v.add_argument("--repair", action="store_true",
                   help="rebuild a damaged or reset index from the images' side files "
                        "(no re-rendering; stop builders first)")
    v.set_defaults(func=run_verify)


def run_build(args: argparse.Namespace) -> int:
    from ..gallery import all_layers, build, ensure_examples, image_set_from_spec, layer_units, variants_for

    settings = settings_from_args(args)  # every number before the store or the model is touched
    check_options(args, "batch", "facets", "lease")
    if args.facets == 1:
        raise UserInputError("--facets must be 0 (none) or at least 2.")
    limits.check_batch_pixels(max(args.batch, args.facets), settings.size, what="units")
    if args.all_layers and args.layers:
        raise UserInputError("Give --layers or --all-layers, not both.")
    if args.workers is not None and (args.ray != "local" or args.workers < 1):
        raise UserInputError("--workers N (N ≥ 1) sizes a local Ray instance: use it with --ray alone.")
    if args.ray is not None:
        from ..scale import check_address

        check_address(None if args.ray == "local" else args.ray)
    store = _store(args)
    model = load_cli_model(args)
    if args.all_layers:
        layers = all_layers(model)
    elif args.layers:
        layers = parse_list(args.layers)
    else:
        layers = [model.default_layer or ""]
    if not layers or not layers[0]:
        raise UserInputError("--layers is required for this model (`python -m explorer layers` lists them).")
    sizes = {layer: layer_units(model, layer) for layer in layers}  # validates every layer before any work
    units = {layer: parse_units(args.units, limit=sizes[layer], layer=layer) if args.units
             else list(range(sizes[layer]))
             for layer in layers}
    variants = variants_for(args.facets, args.negative)
    image_set = None if args.examples.lower() == "none" else image_set_from_spec(args.examples)
    print(f"store: {store.root}")
    if args.ray is not None:
        if not _build_on_ray(args, model, store, units, settings, variants):
            return 0
    else:
        for layer in layers:
            desc = f"{model.name} {layer} ({', '.join(variants)})"
            with progress(len(units[layer]) * len(variants), desc, unit="unit") as callback:
                report = build(model, layer, units[layer], settings, store=store, variants=variants, batch=args.batch,
                               lease=args.lease, wait_for_others=not args.no_wait, callback=callback,
                               should_stop=callback.should_stop)
                callback(len(units[layer]) * len(variants), len(units[layer]) * len(variants))
            rate = report.units_per_minute()
            per_variant = ", ".join(f"{v} {len(u)}" for v, u in report.rendered.items())
            print(f"{layer}: rendered {report.units_rendered} ({per_variant}),"
                  f" {report.already_done} already stored, {report.seconds:.1f} s"
                  + (f"; {rate:.1f} units/minute (max variant, batch {args.batch})" if rate else ""))
            if report.stopped:
                print(f"stopped: {report.stopped} (finished units are stored; run again to continue)")
                return 0
    if image_set is not None:
        with progress(len(image_set), f"dataset examples: {image_set.name}", unit="image") as callback:
            started = time.perf_counter()
            ensure_examples(model, layers, image_set, store, callback=callback, should_stop=callback.should_stop)
        print(f"dataset examples for {len(layers)} layer(s): {len(image_set)} views "
              f"({time.perf_counter() - started:.1f} s)")
    return 0


def _build_on_ray(args: argparse.Namespace, model, store, units: dict, settings, variants: list[str]) -> bool:
    """All layers' batches as one pool of Ray tasks; the driver (this process) writes the store.
    False when stopped (Ctrl-C: scheduling stops, batches in flight are cancelled and their claims given back)."""
    from .. import scale

    total = sum(len(u) for u in units.values()) * len(variants)
    with scale.cluster(None if args.ray == "local" else args.ray, num_cpus=args.workers) as info:
        print(f"ray: {info.describe()}; {len(units)} layer(s), {total} units, batches of {args.batch}")
        with progress(total, f"{model.name} on Ray", unit="unit") as callback:
            report = scale.build_layers(model, units, settings, store=store, cluster_info=info, variants=variants,
                                        batch=args.batch, lease=args.lease, callback=callback,
                                        should_stop=callback.should_stop)
    print(f"rendered {report.units_rendered} units in {report.tasks} tasks on {len(report.workers)} worker process(es),"
          f" {report.already_done} already stored, {report.held_elsewhere} left to another builder,"
          f" {report.seconds:.1f} s"
          + (f"; {report.units_per_minute:.1f} units/minute" if report.units_rendered else ""))
    if report.units_failed:
        print(f"{report.units_failed} units FAILED (marked in the store; a rerun tries them again):")
        for line in report.errors[:10]:
            print(f"  {line}")
    if report.stopped:
        print(f"stopped: {report.stopped} (finished units are stored; run again to continue)")
        return False
    return True


def run_ls(args: argparse.Namespace) -> int:
    from ..gallery.atlas import shipped_atlases

    store = _store(args)
    rows = store.summary()
    examples = store.example_sets()
    atlases = [{"model": a.model, "fingerprint": a.fingerprint, "folder": str(a.root), "layers": len(a.layers),
                "units": sum(a.units(layer) for layer in a.layers), "settings": a.manifest["settings"],
                "legacy_fingerprint": a.legacy_fingerprint} for a in shipped_atlases()]
    if args.json:
        listing = {"store": str(store.root), "renders": rows, "examples": examples, "atlases": atlases}
        print(json.dumps(listing, indent=2))
        return 0
    for a in atlases:
        print(f"atlas (read-only): {a['model']:<20} {a['fingerprint'][:8]} {a['layers']} layers, {a['units']} units"
              f" (size {a['settings'].get('size')}, {a['settings'].get('steps')} steps) in {a['folder']}"
              + ("  LEGACY FINGERPRINT: not served until re-keyed (python -m explorer.gallery.migrate)"
                 if a["legacy_fingerprint"] else ""))
    print(f"store: {store.root}" + ("  (read-only: it cannot be written)" if store.read_only else ""))
    if not rows:
        print("(no renders yet: `python -m explorer gallery build --layers blocks.10`)")
    for r in rows:
        s = r["settings"] or {}
        print(f"{r['model']:<20} {r['fingerprint'][:8]} {r['layer']:<14} {r['variant']:<8} settings {r['digest']}"
              f" (size {s.get('size', '?')}, {s.get('steps', '?')} steps)"
              f"  done {r['done']:>4}  claimed {r['claimed']:>3}  {r['seconds']:.0f} s"
              + (f"  FAILED {r['failed']}" if r.get("failed") else "")
              + ("  LEGACY FINGERPRINT: never served, render again" if r.get("legacy_fingerprint") else ""))
    for key, error in store.failures()[:20]:
        print(f"failed: {key.model} {key.layer} {key.variant} unit {key.unit}: {error}")
    for e in examples:
        print(f"examples: {e['model']:<20} {e['layer']:<14} {e['n_images']} views of {e['description']}")
    return 0


def _export_variants(text: str, stored: set[str]) -> list[str]:
    """The variants ``--variants`` names: ``all`` = max, neg and every facets variant stored for the layer."""
    from ..gallery import MAX, NEG, facet_count

    if text.strip().lower() == "all":
        return [MAX, NEG] + sorted(v for v in stored if v.startswith("facets"))
    wanted = parse_list(text)
    for v in wanted:
        if v not in (MAX, NEG) and not (v.startswith("facets") and v[6:].isdigit() and facet_count(v) > 1):
            raise UserInputError(f"Unknown variant {v!r}: use max, neg, facetsN (N ≥ 2) or all.")
    return wanted


def run_export(args: argparse.Namespace) -> int:
    """What the page shows, as files: the user's store first, then the shipped atlas, for every variant
    asked for; each row of the index says where its image came from."""
    from ..gallery import layer_units, lookup
    from ..gallery.atlas import find_atlas

    settings = settings_from_args(args)
    out = output_dir(args.out)
    store = _store(args)
    model = load_cli_model(args)
    n = layer_units(model, args.layer)
    units = parse_units(args.units, limit=n, layer=args.layer) if args.units else None
    stored = {r["variant"] for r in store.summary() if r["layer"] == args.layer and r["model"] == model.name}
    variants = _export_variants(args.variants, stored)
    atlas = None if args.no_atlas else find_atlas(model)
    rows, counts, missing = [], {}, {}
    for variant in variants:
        own = lookup(store, model, args.layer, settings, variant, units)
        found = lookup(store, model, args.layer, settings, variant, units, atlas=atlas)
        wanted = list(range(n)) if units is None else list(units)
        missing[variant] = [u for u in wanted if u not in found]
        for unit, entry in found.items():
            source = "store" if unit in own else "atlas"
            counts.setdefault(variant, {"store": 0, "atlas": 0})[source] += 1
            for j, (path, activation) in enumerate(zip(entry.files, entry.activations)):
                name = (f"{path_component(args.layer)}_unit-{unit:04d}_{variant}"
                        + (f"_{j}" if len(entry.files) > 1 else "")
                        + path.suffix)
                atomic_write(out / name, path.read_bytes())
                rows.append({"unit": unit, "variant": variant, "index": j, "file": name, "activation": activation,
                             "source": source, "seconds": round(entry.seconds, 3), "steps": entry.steps_done})
    if not rows:
        where = "the store" + (" or the shipped atlas" if atlas is not None else "")
        raise UserInputError(f"Nothing in {where} for {model.name} {args.layer} ({', '.join(variants)}) "
                             f"with these settings (digest {settings.digest()}); `gallery ls` shows what is there.")
    rows.sort(key=lambda r: (r["unit"], r["variant"], r["index"]))
    write_json(out / "index.json", {"model": model.name, "fingerprint": model.fingerprint, "layer": args.layer,
                                    "settings": settings.to_dict(), "digest": settings.digest(), "variants": variants,
                                    "atlas": str(atlas.root) if atlas is not None else None,
                                    "counts": counts, "missing": {v: u for v, u in missing.items() if u},
                                    "images": rows})
    write_csv(out / "index.csv", rows)
    print(f"{len(rows)} images of {len({r['unit'] for r in rows})} units in {out} (index.json, index.csv)")
    for variant in variants:
        c = counts.get(variant, {"store": 0, "atlas": 0})
        parts = [f"{c['store']} from your store ({store.root})"]
        parts += [f"{c['atlas']} from the shipped atlas ({atlas.root})"] if c["atlas"] else []
        line = f"  {variant}: " + ", ".join(parts)
        if missing[variant]:
            first = missing[variant][:8]
            line += (f"; {len(missing[variant])} not rendered (units {', '.join(map(str, first))}"
                     f"{' …' if len(missing[variant]) > len(first) else ''}: `gallery build --layers {args.layer}"
                     f"{_build_flag(variant)}` renders them)")
        print(line)
    return 0


def _build_flag(variant: str) -> str:
    from ..gallery import NEG, facet_count

    if variant == NEG:
        return " --negative"
    if variant.startswith("facets"):
        return f" --facets {facet_count(variant)}"
    return ""


def run_atlas(args: argparse.Namespace) -> int:
    from ..gallery import all_layers, builtin_image_set, layer_units
    from ..gallery.export import export_atlas

    if not 1 <= args.quality <= 100:
        raise UserInputError("--quality must be between 1 and 100.")
    if args.examples not in ("builtin", "none"):
        raise UserInputError("--examples must be builtin or none (an atlas ships only photos every user has).")
    store = _store(args)
    model = load_cli_model(args)
    layers = parse_list(args.layers) if args.layers else all_layers(model)
    for layer in layers:
        layer_units(model, layer)
    build = {"command": args.build_command, "seconds": args.build_seconds} if args.build_command else {}
    try:
        manifest = export_atlas(store, model, layers, settings_from_args(args), Path(args.out),
                                image_set=builtin_image_set() if args.examples == "builtin" else None,
                                quality=args.quality, build_info=build)
    except ValueError as exc:
        raise UserInputError(f"Cannot export the atlas: {exc}") from None
    units = sum(info["units"] for info in manifest["layers"].values())
    folder = Path(args.out) / model.name
    size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
    print(f"atlas of {model.name}: {len(layers)} layers, {units} units in {folder} ({size / 2**20:.1f} MiB)")
    return 0


def run_verify(args: argparse.Namespace) -> int:
    store = _store(args, check=False)  # a damaged index is what verify is for
    if args.repair:
        report = store.repair()
        if report.moved_aside:
            print(f"the unreadable index was moved to {report.moved_aside}")
        print(f"re-indexed {report.restored} rendered unit(s) and {report.examples_restored} example table(s) "
              "from side files (nothing re-rendered)")
        for line in report.skipped:
            print(f"skipped {line}")
    problems = store.verify()
    for p in problems:
        print(p)
    done = 0 if store.index_unreadable else sum(r["done"] for r in store.summary())
    print(f"{store.root}: {done} entries, {len(problems)} problems")
    return 1 if problems else 0

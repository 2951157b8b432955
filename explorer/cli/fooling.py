"""``fool sweep`` and ``fool grow``: the fooling-noise lab from the command line."""

from __future__ import annotations

import argparse
import sys

from .. import fooling, limits
from ..errors import UserInputError
from ..images import grid, save_png
from ..files import write_csv
from ..parsing import parse_list
from .common import (add_model_options, check_options, load_cli_model, load_cli_models, output_dir, output_file,
                     progress, write_json)


def _add_noise_options(p: argparse.ArgumentParser) -> None:
    d = fooling.NoiseOptions()
    g = p.add_argument_group("noise family options")
    g.add_argument("--sigma", type=float, default=d.sigma, help="gaussian: σ around 0.5 (clipped to [0, 1])")
    g.add_argument("--pink-exponent", type=float, default=d.pink_exponent,
                   help="pink: amplitude ∝ 1/f^a (power slope −2a)")
    g.add_argument("--pink-grey", action="store_true", help="pink: one grey field instead of independent channels")
    g.add_argument("--density", type=float, default=d.density, help="salt_pepper: fraction of black/white pixels")
    g.add_argument("--fft-sd", type=float, default=d.fft_sd, help="fft: the engine's initial spectrum scale")


def _options(args: argparse.Namespace) -> fooling.NoiseOptions:
    return fooling.NoiseOptions(sigma=args.sigma, pink_exponent=args.pink_exponent, pink_colour=not args.pink_grey,
                                density=args.density, fft_sd=args.fft_sd)


def register(subparsers: argparse._SubParsersAction) -> None:
    fool = subparsers.add_parser("fool", help="how often noise fools a classifier; grow noise into a fooling image")
    commands = fool.add_subparsers(dest="fool_command", required=True)

    family_list = ", ".join(f"{f.name} ({f.description})" for f in fooling.FAMILIES.values())
    s = commands.add_parser("sweep", help="fooling rates of noise families with exact 95%% intervals",
                            description=f"Families: {family_list}.")
    add_model_options(s, model_help="one model or several, comma-separated",
                      weights_help="pretrained | random | PATH (for every model)")
    s.add_argument("--families", default=",".join(fooling.SWEEP_FAMILIES),
                   help=f"comma-separated: {','.join(fooling.FAMILIES)}")
    s.add_argument("--n", type=int, default=fooling.SWEEP_N,
                   help="samples per family (streamed: memory does not grow with n)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--batch", type=int, default=fooling.SWEEP_BATCH,
                   help="images per forward pass (results do not depend on it)")
    s.add_argument("--gallery", type=int, default=8, help="keep this many most confident samples per family")
    s.add_argument("--json", help="write every statistic (histograms, classes, intervals) to this JSON file")
    s.add_argument("--csv", help="write the summary table to this CSV file")
    s.add_argument("--gallery-dir", help="save each family's most confident samples as PNGs here")
    s.add_argument("--autocast", action="store_true", help="mixed precision on CUDA (faster, slightly less exact)")
    s.add_argument("--ray", nargs="?", const="local", default=None, metavar="auto|ADDRESS",
                   help="split the samples over Ray tasks: alone, a local instance with every CPU/GPU; "
                        "auto or HOST:PORT joins a cluster")
    s.add_argument("--workers", type=int, default=None, help="with --ray alone: CPUs the local Ray instance may use")
    _add_noise_options(s)
    s.set_defaults(func=run_sweep)

    g = commands.add_parser("grow", help="gradient ascent from noise to a ≥ 0.996-confidence fooling image")
    add_model_options(g, weights_help=None)
    g.add_argument("--class", dest="target", type=int, default=None,
                   help="target class (default: the start's top class)")
    g.add_argument("--family", default="uniform", help="noise family of the start")
    g.add_argument("--index", type=int, default=0,
                   help="which sample of the family (same as in a sweep with this seed)")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--start", help="start from this image file (or builtin:NAME) instead of noise")
    g.add_argument("--budget", default=None,
                   help="linf:EPS, l2:EPS or none: distance from the start, pixels in [0, 1] "
                        f"(default {fooling.DEFAULT_BUDGET} for a pixel start, none for --param cppn)")
    g.add_argument("--param", choices=["pixel", "cppn"], default="pixel",
                   help="cppn: Nguyen et al.'s indirect encoding")
    g.add_argument("--steps", type=int, default=fooling.GROW_STEPS, help="step limit")
    g.add_argument("--lr", type=float, default=fooling.GROW_LR)
    g.add_argument("--goal", type=float, default=fooling.TARGET_CONFIDENCE, help="stop at this confidence")
    g.add_argument("--no-transfer", action="store_true", help="skip the transfer table on other registry models")
    g.add_argument("--out", default="out/fooling")
    _add_noise_options(g)
    g.set_defaults(func=run_grow)


def _fmt_rate(row: fooling.FamilyResult, i: int) -> str:
    lo, hi = row.intervals[i]
    return f"{row.rates[i]:.4f} [{lo:.4f}, {hi:.4f}]"


def print_table(result: fooling.SweepResult, file=None) -> None:
    file = file or sys.stdout  # looked up per call: a default bound at import would outlive a redirected stdout
    thresholds = result.settings["thresholds"]
    rate_columns = [f"≥{t:g} rate [95% CI]" for t in thresholds]
    header = ["model", "family", "n"] + rate_columns + ["mean max p", "entropy", "top classes"]
    print(" | ".join(header), file=file)
    for row in result.rows:
        top = ", ".join(f"{c['label']} ({c['share']:.0%})" for c in row.top_classes[:3])
        cells = [row.model, row.family, str(row.n)] + [_fmt_rate(row, i) for i in range(len(thresholds))]
        cells += [f"{row.mean_confidence:.3f}", f"{row.mean_entropy:.2f}/{row.max_entropy:.2f}", top]
        print(" | ".join(cells), file=file)


def run_sweep(args: argparse.Namespace) -> int:
    names = parse_list(args.model)
    families = fooling.check_families(args.families)
    options = _options(args)
    if args.workers is not None and (args.ray != "local" or args.workers < 1):
        raise UserInputError("--workers N (N ≥ 1) sizes a local Ray instance: use it with --ray alone.")
    if args.ray is not None:
        from ..scale import check_address

        check_address(None if args.ray == "local" else args.ray)
    check_options(args, "n", "gallery", "seed")
    limits.check("batch", args.batch, what="--batch", hi=limits.MAX_FORWARD_PIXELS)  # then by pixels, per model
    output_file(args.json, "--json")
    output_file(args.csv, "--csv")
    if args.gallery_dir:
        output_dir(args.gallery_dir, "--gallery-dir")
    models = load_cli_models(names, args.weights, args.device, args.arch)
    kwargs = dict(seed=args.seed, batch_size=args.batch, options=options, gallery=args.gallery,
                  use_autocast=args.autocast)
    sweeper = fooling.Sweep(models, families, args.n, **kwargs)  # validates every number before Ray starts
    if args.ray is not None:
        from .. import scale

        with scale.cluster(None if args.ray == "local" else args.ray, num_cpus=args.workers) as info:
            print(f"ray: {info.describe()}")
            with progress(sweeper.total, "fool sweep on Ray", unit="img") as callback:
                result = scale.sweep(models, families, args.n, cluster_info=info, callback=callback,
                                     should_stop=callback.should_stop, **kwargs)
    else:
        with progress(sweeper.total, "fool sweep", unit="img") as callback:
            result = sweeper.run(callback=lambda done, total, preview, values: callback(done, total),
                                 should_stop=callback.should_stop)
    print_table(result)
    print(f"{result.images} images in {result.seconds:.1f} s ({result.images_per_second:.1f} img/s)")
    if args.json:
        write_json(args.json, result.to_dict())
        print(f"wrote {args.json}")
    if args.csv:
        write_csv(args.csv, result.table())
        print(f"wrote {args.csv}")
    if args.gallery_dir and args.gallery:
        out = output_dir(args.gallery_dir, "--gallery-dir")
        for row in result.rows:
            images = fooling.gallery_images(row, options, device=args.device)
            save_png(grid(images, columns=min(8, len(images))), out / f"{row.model}_{row.family}.png")
        print(f"galleries in {out}")
    return 0


def run_grow(args: argparse.Namespace) -> int:
    options = _options(args)  # check every input before the (slow) model load
    budget = None if args.budget is None else fooling.parse_budget(args.budget)  # None: the library's one default
    check_options(args, "steps", "lr", "seed", "index")
    if not 0 < args.goal < 1:
        raise UserInputError(f"--goal must lie in (0, 1), got {args.goal}.")
    out = output_dir(args.out)
    start = None
    if args.start:
        from ..images import load_image

        start = load_image(args.start)
    else:
        fooling.check_families([args.family])
    model = load_cli_model(args)
    if args.target is not None and not 0 <= args.target < model.num_classes:
        raise UserInputError(
            f"Class {args.target} is out of range: {model.name} has classes 0–{model.num_classes - 1}.")
    with progress(args.steps, f"grow {model.name}") as callback:
        result = fooling.grow(model, args.target, start=start, family=args.family, seed=args.seed, index=args.index,
                              options=options, budget=budget, param=args.param, steps=args.steps, lr=args.lr,
                              goal=args.goal, callback=callback, should_stop=callback.should_stop)
    if not args.no_transfer:
        result = fooling.with_transfer(result, model)
    save_png(result.start, out / "start.png")
    save_png(result.image, out / "fooling.png")
    save_png(fooling.difference_image(result.image, result.start), out / "difference.png")
    write_json(out / "result.json", result.summary())
    d = result.distance
    state = "reached" if result.reached else "NOT reached"
    print(f"{model.name}: class {result.target} ({result.label}) p={result.confidence:.4f} ({state} {result.goal}) "
          f"after {result.steps} steps, {result.seconds:.1f} s; started at p={result.start_confidence:.4f}; "
          f"as saved (8-bit PNG) p={result.confidence_8bit:.4f}")
    print(f"distance from start: L∞ {d['linf']:.4f}, L2 {d['l2']:.3f}, RMS {d['rms']:.4f} (budget {result.budget})")
    for row in result.transfer:
        if row["status"] == "ok":
            print(f"  transfer {row['model']}: p(target)={row['p_target']:.4f}, top {row['top_class']} "
                  f"{row['top_label']} ({row['top_p']:.3f}){' FOOLED' if row['fooled'] else ''}")
        else:
            print(f"  transfer {row['model']}: {row['status']}")
    print(f"images and result.json in {out}")
    return 0 if result.reached else 1

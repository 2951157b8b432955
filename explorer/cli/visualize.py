"""``visualize`` and ``layers`` commands."""

from __future__ import annotations

import argparse

from .. import limits
from ..errors import UserInputError
from ..images import grid, save_png
from ..naming import image_names, image_units, unit_kind
from ..optvis import RenderSettings, objectives, render
from ..optvis.param import PARAMETERISATIONS
from ..optvis.render import check_request
from ..optvis.transformer import UNIT_KINDS, unit_count, unit_objective
from ..parsing import parse_units
from .common import add_model_options, check_options, load_cli_model, output_dir, progress, write_json


# the units rendered when none are named: the feature-vis page's default too (explorer/vocabulary.py)
DEFAULT_UNITS = "0-3"


def add_render_options(p: argparse.ArgumentParser, defaults: RenderSettings = RenderSettings()) -> None:
    """Render settings as options (shared with other commands that render)."""
    g = p.add_argument_group("render settings")
    g.add_argument("--steps", type=int, default=defaults.steps)
    g.add_argument("--size", type=int, default=defaults.size)
    g.add_argument("--lr", type=float, default=defaults.lr)
    g.add_argument("--param", choices=PARAMETERISATIONS, default=defaults.param,
                   help="fft: decorrelated Fourier; pixel; maco: phase only under a fixed photo spectrum; cppn")
    g.add_argument("--no-decorrelate", action="store_true", help="optimise RGB directly")
    g.add_argument("--decay", type=float, default=defaults.decay, help="Fourier spectrum decay (1/f^decay)")
    g.add_argument("--transforms", choices=["standard", "lucent", "none"], default=defaults.transforms)
    g.add_argument("--tv", type=float, default=defaults.tv, help="total-variation weight")
    g.add_argument("--alpha", type=float, default=defaults.alpha, help="alpha-norm weight (alpha=6)")
    g.add_argument("--l2", type=float, default=defaults.l2, help="L2 weight")
    g.add_argument("--blur-every", type=int, default=defaults.blur_every)
    g.add_argument("--blur-sigma", type=float, default=defaults.blur_sigma)
    g.add_argument("--diversity", type=float, default=defaults.diversity)
    g.add_argument("--seed", type=int, default=defaults.seed)
    g.add_argument("--input-size", default=str(defaults.input_size),
                   help="what the network sees: 'model' (its input size), "
                        "'param' (the transformed image as it is) or pixels")
    g.add_argument("--lr-schedule", choices=["constant", "cosine"], default=defaults.lr_schedule)
    g.add_argument("--coarse", type=float, default=defaults.coarse,
                   help="coarse-to-fine: fraction of the steps in which the network sees a smaller image (0: off)")
    g.add_argument("--coarse-start", type=float, default=defaults.coarse_start,
                   help="the network's first side during --coarse, as a fraction of its input side")
    g.add_argument("--coarse-view", choices=["resize", "crop"], default=defaults.coarse_view,
                   help="during --coarse: the whole image resized (resize) or a window at full scale (crop)")
    g.add_argument("--adam-beta1", type=float, default=defaults.adam_beta1,
                   help="Adam's momentum β1 (β2 stays 0.999)")
    g.add_argument("--warm", type=float, default=defaults.warm,
                   help="warm start: fraction of the steps at the start without the robustness transforms (0: off)")
    g.add_argument("--precision", choices=["auto", "fp32", "bf16", "cuda-bf16"],
                   default=_precision_name(defaults.autocast),
                   help="auto: the measured choice for the device; fp32 (+TF32 on CUDA); bf16; "
                        "cuda-bf16: bf16 on CUDA only")


def _precision_name(autocast: bool | str) -> str:
    return {True: "cuda-bf16", False: "fp32"}[autocast] if isinstance(autocast, bool) else str(autocast)


def _input_size(text: str) -> int | str:
    if text in ("model", "param"):
        return text
    try:
        size = int(text)
    except ValueError:
        raise UserInputError(f"--input-size takes model, param or a number of pixels, not {text!r}.") from None
    if not 16 <= size <= 1024:
        raise UserInputError(f"--input-size {size} is out of range: use 16–1024 px (or model / param).")
    return size


def settings_from_args(args: argparse.Namespace) -> RenderSettings:
    """The render settings the options name; every number is checked against explorer.limits here
    (commands need at least one step: 0 steps only makes sense inside the library)."""
    check_options(args, "size", "steps", "lr", "seed", "decay", "tv", "alpha", "l2",
                  "blur_every", "blur_sigma", "diversity")
    return RenderSettings(
        size=args.size, steps=args.steps, lr=args.lr, param=args.param, decorrelate=not args.no_decorrelate,
        decay=args.decay, transforms=args.transforms, tv=args.tv, alpha=args.alpha, l2=args.l2,
        blur_every=args.blur_every, blur_sigma=args.blur_sigma, diversity=args.diversity, seed=args.seed,
        input_size=_input_size(args.input_size), lr_schedule=args.lr_schedule, coarse=args.coarse,
        coarse_start=args.coarse_start, coarse_view=args.coarse_view, warm=args.warm,
        adam_beta1=args.adam_beta1,
        autocast={"auto": "auto", "fp32": False, "bf16": "bf16", "cuda-bf16": True}[args.precision],
    )


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("visualize", help="feature visualisation of channels, neurons, classes or a layer")
    add_model_options(p)
    p.add_argument("--layer", help="layer name as `layers` lists it (e.g. blocks.10)")
    target = p.add_mutually_exclusive_group()
    target.add_argument("--units", "--channels", dest="channels", metavar="UNITS",
                        help="units of the layer, e.g. 0-15,20: one image per unit, rendered as one batch "
                             f"(default {DEFAULT_UNITS})")
    target.add_argument("--neuron", help="units at the centre position")
    target.add_argument("--class", dest="classes", help="class indices (logit)")
    target.add_argument("--deepdream", action="store_true", help="mean squared activation of the whole layer")
    p.add_argument("--kind", choices=list(UNIT_KINDS), default="channel",
                   help="what a unit of --channels is on a transformer (ViT) layer: channel (mean over patch tokens), "
                        "neuron (one token: --token, default the centre patch), cls (the CLS token's channel), "
                        "head (an attention head of a block: units are heads)")
    p.add_argument("--token", type=int, default=None, help="token index for --kind neuron (0 = CLS on a ViT)")
    p.add_argument("--batch", type=int, default=None, help="images per unit for --deepdream/diversity")
    p.add_argument("--out", default="out/visualize")
    add_render_options(p)
    p.set_defaults(func=run_visualize)

    q = subparsers.add_parser("layers", help="list a model's layers with output shapes")
    add_model_options(q, weights_help=None)
    q.add_argument("--all", action="store_true", help="every submodule, not only the main layers")
    q.set_defaults(func=run_layers)


def build_objective(model, args: argparse.Namespace) -> objectives.Objective:
    if args.classes is not None:
        return objectives.class_logit(parse_units(args.classes, limit=model.num_classes, layer="output", what="class"))
    layer = args.layer or model.default_layer
    if layer is None:
        raise UserInputError("--layer is required for this model (`python -m explorer layers` lists them).")
    if args.deepdream:
        return objectives.deepdream(layer)
    if args.neuron is not None:
        channels = model.check_layer(layer).channels
        return unit_objective(model, layer, parse_units(args.neuron, limit=channels, layer=layer), "neuron", args.token)
    count = unit_count(model, layer, args.kind)  # channels, or heads for --kind head
    units = parse_units(args.channels or DEFAULT_UNITS, limit=count, layer=layer,
                        what="attention head" if args.kind == "head" else "channel")
    return unit_objective(model, layer, units, args.kind, args.token)


def run_visualize(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)  # every number checked before the model loads
    if args.batch is not None:
        limits.check("batch", args.batch, what="--batch")
    out = output_dir(args.out)
    model = load_cli_model(args)
    objective = build_objective(model, args)
    check_request(model, objective, settings, args.batch)  # fail before any output or progress bar
    with progress(settings.steps, f"{model.name} {objective.name}") as callback:
        result = render(model, objective, settings, batch=args.batch, callback=callback,
                        should_stop=callback.should_stop)
    names = image_names(objective, len(result.images))  # files and JSON name each image by its own unit
    files = [save_png(image, out / name.filename()).name for image, name in zip(result.images, names)]
    save_png(grid(result.images), out / "grid.png")
    write_json(out / "result.json", {**result.summary(), "unit_kind": unit_kind(objective),
                                     "units": image_units(objective, len(result.images)), "files": files})
    if result.stopped:
        print(f"stopped: {result.stopped}")
    print(f"{len(files)} images in {out} ({result.seconds:.1f} s); final activation mean "
          f"{float(result.final_activation.mean()):.3f}")
    return 1 if result.diverged else 0


def run_layers(args: argparse.Namespace) -> int:
    model = load_cli_model(args)
    infos = model.layers if args.all else model.main_layers()
    width = max(len(i.name) for i in infos)
    for info in infos:
        print(f"{info.name:<{width}}  {'×'.join(map(str, info.shape)):>14}  {info.kind}")
    return 0

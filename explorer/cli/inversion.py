"""``invert``, ``dream`` and ``caricature`` commands: a photo through a layer's eyes."""

from __future__ import annotations

import argparse
import re

from .. import inversion, limits
from ..errors import UserInputError
from ..images import save_png
from ..parsing import parse_list
from .common import add_model_options, check_options, load_cli_model, output_dir, progress, write_json


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def _photo_options(p: argparse.ArgumentParser, size: int) -> None:
    add_model_options(p)
    p.add_argument("--image", default="builtin:astronaut",
                   help="a photo file (PNG, JPEG, WebP, BMP, TIFF) or builtin:NAME (astronaut, chelsea, coffee, …)")
    p.add_argument("--size", type=int, default=size, help="the photo is resized to SIZE×SIZE pixels")
    p.add_argument("--fit", choices=inversion.FIT_MODES, default="crop", help="non-square photos: centre-crop or pad")
    p.add_argument("--seed", type=int, default=0)


def register(subparsers: argparse._SubParsersAction) -> None:
    defaults = inversion.InversionSettings()
    p = subparsers.add_parser("invert", help="reconstruct a photo from its activations at several layers (one batch)")
    _photo_options(p, defaults.size)
    p.add_argument("--layers", default=None,
                   help="comma-separated layers, shallow to deep (default: 4 spread over the net)")
    p.add_argument("--steps", type=int, default=defaults.steps)
    p.add_argument("--lr", type=float, default=defaults.lr)
    p.add_argument("--param", choices=["fft", "pixel"], default=defaults.param)
    p.add_argument("--no-decorrelate", action="store_true", help="optimise RGB directly")
    p.add_argument("--tv", type=float, default=None,
                   help="total-variation weight for every layer (default: grows with depth)")
    p.add_argument("--alpha", type=float, default=None,
                   help="alpha-norm weight (alpha=6) for every layer (default: grows with depth)")
    p.add_argument("--transforms", choices=["none", "standard", "lucent"], default=defaults.transforms,
                   help="random jitter/scale/rotation, applied to the image and the photo alike")
    p.add_argument("--init", choices=inversion.INIT_MODES, default=defaults.init,
                   help="start from noise, grey, the blurred photo, or --init-image")
    p.add_argument("--init-image", default=None, help="starting image for --init image")
    p.add_argument("--out", default="out/invert")
    p.set_defaults(func=run_invert)

    d_defaults = inversion.DeepDreamSettings()
    d = subparsers.add_parser("dream", help="DeepDream a photo: amplify a layer or a channel over several octaves")
    _photo_options(d, d_defaults.size)
    d.add_argument("--layer", default=None, help="layer to amplify (default: the model's default layer)")
    d.add_argument("--channel", type=int, default=None, help="amplify one channel instead of the whole layer")
    d.add_argument("--octaves", type=int, default=d_defaults.octaves)
    d.add_argument("--octave-scale", type=float, default=d_defaults.octave_scale)
    d.add_argument("--steps", type=int, default=d_defaults.steps, help="iterations per octave")
    d.add_argument("--lr", type=float, default=d_defaults.lr, help="step size")
    d.add_argument("--jitter", type=int, default=d_defaults.jitter, help="random shift in pixels (0: off)")
    d.add_argument("--tv", type=float, default=d_defaults.tv)
    d.add_argument("--out", default="out/dream")
    d.set_defaults(func=run_dream)

    c_defaults = inversion.CaricatureSettings()
    c = subparsers.add_parser("caricature",
                              help="exaggerate what layers see in a photo, from noise (one image per layer)")
    _photo_options(c, c_defaults.size)
    c.add_argument("--layers", default=None, help="comma-separated layers (default: the model's default layer)")
    c.add_argument("--steps", type=int, default=c_defaults.steps)
    c.add_argument("--lr", type=float, default=c_defaults.lr)
    c.add_argument("--param", choices=["fft", "pixel"], default=c_defaults.param)
    c.add_argument("--transforms", choices=["standard", "lucent", "none"], default=c_defaults.transforms)
    c.add_argument("--cos-floor", type=float, default=c_defaults.cos_floor)
    c.add_argument("--cos-power", type=float, default=c_defaults.cos_power)
    c.add_argument("--tv", type=float, default=c_defaults.tv)
    c.add_argument("--out", default="out/caricature")
    c.set_defaults(func=run_caricature)


def run_invert(args: argparse.Namespace) -> int:
    check_options(args, "size", "steps", "lr", "seed", "tv", "alpha")
    settings = inversion.InversionSettings(  # every number checked before the photo or the model is read
        size=args.size, steps=args.steps, lr=args.lr, param=args.param, decorrelate=not args.no_decorrelate,
        tv=args.tv, alpha=args.alpha, transforms=args.transforms, init=args.init, seed=args.seed, fit=args.fit,
    )
    photo = inversion.load_photo(args.image, args.size, args.fit)
    init_image = inversion.load_photo(args.init_image, args.size, args.fit) if args.init_image else None
    out = output_dir(args.out)
    model = load_cli_model(args)
    layers = inversion.check_layers(model, parse_list(args.layers) if args.layers else inversion.default_layers(model))
    limits.check_batch_pixels(len(layers), args.size, what="layers")  # one reconstruction per layer, one batch
    with progress(settings.steps, f"invert {','.join(layers)}") as bar:
        def callback(step, total, preview, errors):
            bar(step, total)
        result = inversion.invert(model, photo, layers, settings, init_image=init_image, callback=callback,
                                  should_stop=bar.should_stop)
    save_png(result.photo, out / "photo.png")
    files = {}
    for layer, image in zip(result.layers, result.images):
        files[layer] = save_png(image, out / f"invert_{_safe(layer)}.png").name
    save_png(result.strip(), out / "strip.png")
    write_json(out / "inversion.json", {**result.summary(), "image": args.image, "files": files})
    if result.stopped:
        print(f"stopped: {result.stopped}")
    print(f"{'layer':<12} {'error':>8} {'PSNR dB':>8} {'SSIM':>6}")
    for row in result.rows():
        print(f"{row['layer']:<12} {row['normalised_error']:>8.4f} {row['psnr_db']:>8.2f} {row['ssim']:>6.3f}")
    print(f"{len(layers)} reconstructions in {out} ({result.seconds:.1f} s)")
    return 1 if result.stopped and result.stopped.startswith("diverged") else 0


def run_dream(args: argparse.Namespace) -> int:
    check_options(args, "size", "steps", "lr", "seed", "octaves", "octave_scale", "jitter", "tv")
    settings = inversion.DeepDreamSettings(
        size=args.size, octaves=args.octaves, octave_scale=args.octave_scale, steps=args.steps, lr=args.lr,
        jitter=args.jitter, tv=args.tv, seed=args.seed, fit=args.fit,
    )
    photo = inversion.load_photo(args.image, args.size, args.fit)
    out = output_dir(args.out)
    model = load_cli_model(args)
    layer = args.layer or model.default_layer
    if layer is None:
        raise UserInputError("--layer is required for this model (`python -m explorer layers` lists them).")
    objective = inversion.dream_objective(model, layer, args.channel)  # fail before the progress bar
    with progress(settings.steps * settings.octaves, f"dream {objective.name}") as callback:
        result = inversion.deep_dream(model, photo, layer, args.channel, settings, callback=callback,
                                 should_stop=callback.should_stop)
    save_png(result.photo, out / "photo.png")
    save_png(result.image, out / "dream.png")
    save_png(result.pair(), out / "pair.png")
    write_json(out / "dream.json", {**result.summary(), "image": args.image,
                                    "files": ["photo.png", "dream.png", "pair.png"]})
    if result.stopped:
        print(f"stopped: {result.stopped}")
    print(f"{result.target}: {result.objective_before:.4f} on the photo -> {result.objective_after:.4f} "
          f"(×{result.gain:.2f}) in {result.seconds:.1f} s; written to {out}")
    return 1 if result.stopped and result.stopped.startswith("diverged") else 0


def run_caricature(args: argparse.Namespace) -> int:
    check_options(args, "size", "steps", "lr", "seed", "cos_floor", "cos_power", "tv")
    settings = inversion.CaricatureSettings(
        size=args.size, steps=args.steps, lr=args.lr, param=args.param, transforms=args.transforms,
        cos_floor=args.cos_floor, cos_power=args.cos_power, tv=args.tv, seed=args.seed, fit=args.fit,
    )
    photo = inversion.load_photo(args.image, args.size, args.fit)
    out = output_dir(args.out)
    model = load_cli_model(args)
    wanted = parse_list(args.layers) if args.layers else [model.default_layer or inversion.default_layers(model)[-1]]
    layers = inversion.check_layers(model, wanted)
    limits.check_batch_pixels(len(layers), args.size, what="layers")
    with progress(settings.steps, f"caricature {','.join(layers)}") as bar:
        def callback(step, total, preview, cosines):
            bar(step, total)
        result = inversion.caricature(model, photo, layers, settings, callback=callback, should_stop=bar.should_stop)
    save_png(result.photo, out / "photo.png")
    files = {layer: save_png(image, out / f"caricature_{_safe(layer)}.png").name
             for layer, image in zip(result.layers, result.images)}
    save_png(result.strip(), out / "strip.png")
    write_json(out / "caricature.json", {**result.summary(), "image": args.image, "files": files})
    if result.stopped:
        print(f"stopped: {result.stopped}")
    for row in result.summary()["layers"]:
        print(f"{row['layer']}: cosine {row['cosine']:.3f}, dot/‖Φ0‖² {row['dot_over_photo_norm2']:.2f}")
    print(f"written to {out} ({result.seconds:.1f} s)")
    return 1 if result.stopped and result.stopped.startswith("diverged") else 0

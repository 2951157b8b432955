"""``diffusion sample | train | train-classifier``: the diffusion inspector's command-line twin."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from .. import limits
from ..errors import UserInputError
from ..files import atomic_write, write_csv
from .common import add_arch_option, check_options, output_dir, output_file, progress, write_json


def _threads(args: argparse.Namespace) -> None:
    if getattr(args, "threads", None) is not None:
        check_options(args, "threads")
        torch.set_num_threads(int(args.threads))


def _check_sampling(args: argparse.Namespace, streamed: bool) -> None:
    """The sampling options, before the model loads (the chain's own limits follow in sample_chain).
    ``sample`` keeps every state of every sample (--n is a batch); ``evaluate`` streams them."""
    check_options(args, "steps", "eta", "seed")
    limits.check("n" if streamed else "batch", args.n, what="--n")


def _init_folder(name: str | None) -> str:
    """--init-from: a built-in diffusion model's name or a diffusers folder ("" for none)."""
    if not name:
        return ""
    from ..diffusion.models import BUILTIN

    folder = Path(BUILTIN[name] if name in BUILTIN else name).expanduser()
    if not any((f / "diffusion_pytorch_model.safetensors").is_file() for f in (folder, folder / "unet")):
        raise UserInputError(f"--init-from {name}: no diffusion_pytorch_model.safetensors there (or in unet/); "
                             f"use {', '.join(BUILTIN)} or a diffusers UNet folder.")
    return name if name in BUILTIN else str(folder)  # a built-in is recorded by name: no machine's path in the record


def _train(args: argparse.Namespace) -> int:
    from ..diffusion.data import load_dataset
    from ..diffusion.train import DDPMConfig, train_ddpm

    _threads(args)
    check_options(args, "max_minutes")
    try:
        channels = tuple(int(c) for c in args.channels.split(","))
    except ValueError:
        raise UserInputError(f"--channels {args.channels!r}: write block widths like 16,32,64.") from None
    config = DDPMConfig(
        steps=args.steps, batch_size=args.batch_size, lr=args.lr, warmup=args.warmup, ema_decay=args.ema,
        seed=args.seed, schedule=args.schedule, num_train_timesteps=args.timesteps,
        block_out_channels=channels, layers_per_block=args.layers,
        attention=not args.no_attention, norm_num_groups=args.groups, checkpoint_every=args.checkpoint_every,
        variance_type=args.variance_type, vlb_weight=args.vlb_weight, init_from=_init_folder(args.init_from),
        num_classes=args.classes, class_dropout=args.class_dropout, class_lr_scale=args.class_lr_scale,
    )
    out = output_dir(args.out)
    data = load_dataset(args.data, "train")
    print(f"training a DDPM on {data.source} ({len(data)} images {data.size[0]}×{data.size[1]}) → {out}")
    with progress(config.steps, "diffusion train") as callback:
        report = train_ddpm(
            data, out, config, resume=not args.no_resume, device=args.device, callback=callback,
            should_stop=callback.should_stop, time_limit_s=args.max_minutes * 60 if args.max_minutes else None,
        )
    last = f", last loss {report.losses[-1]:.4f}" if report.losses else ""
    print(f"{report.steps_done}/{config.steps} steps in {report.total_seconds / 60:.1f} min on {report.hardware}{last}"
          + (f" (stopped: {report.stopped})" if report.stopped else ""))
    return 0


def _train_classifier(args: argparse.Namespace) -> int:
    from ..diffusion.data import load_dataset
    from ..diffusion.train import train_classifier

    _threads(args)
    check_options(args, "epochs", "batch_size", "lr", "width", "seed")
    out = output_dir(args.out)
    train, test = load_dataset(args.data, "train"), load_dataset(args.data, "test")
    steps = args.epochs * -(-len(train) // args.batch_size)
    with progress(steps, "classifier train") as callback:
        report = train_classifier(
            train, test, out, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
            width=args.width, seed=args.seed, device=args.device, callback=callback,
        )
    print(f"test accuracy {report.test_accuracy:.4f} ({test.source}, {len(test)} images) after "
          f"{report.seconds / 60:.1f} min on {report.hardware}; saved to {report.out_dir}")
    return 0


def _load(args: argparse.Namespace):
    from ..diffusion.models import load_diffusion_model
    from ..diffusion.recorder import Probe
    from .common import load_cli_models

    diffusion = load_diffusion_model(args.model, device=args.device)
    if not args.probe or args.probe == "none":
        return diffusion, None
    if Path(args.probe).is_dir():  # a classifier folder written by train-classifier
        from ..models.fashion import load_classifier_dir

        return diffusion, Probe(load_classifier_dir(args.probe, diffusion.device))
    return diffusion, Probe(load_cli_models([args.probe], None, args.device, args.probe_arch)[0])


def _check_engine(diffusion, args: argparse.Namespace) -> None:
    """The sampler/engine/schedule combination, before any progress bar (the chain checks it again)."""
    from ..diffusion.recorder import chain_engine

    engine = chain_engine(diffusion, args.sampler, args.engine)
    if engine == "core" and args.schedule not in (None, diffusion.train_schedule):
        raise UserInputError("Another β schedule than the model's own needs the diffusers engine "
                             "(fixed-variance models).")


def _sample(args: argparse.Namespace) -> int:
    from ..diffusion.analysis import chain_gif, probability_rows, summarise, summary_json
    from ..diffusion.recorder import sample_chain
    from ..images import grid, save_png

    _threads(args)
    _check_sampling(args, streamed=False)
    check_options(args, "record_every", "gif_frames")
    out = output_dir(args.out)
    diffusion, probe = _load(args)
    _check_engine(diffusion, args)
    with progress(args.steps, f"{args.sampler} sampling") as callback:
        record = sample_chain(
            diffusion, sampler=args.sampler, steps=args.steps, batch=args.n, seed=args.seed, eta=args.eta,
            schedule=args.schedule, probe=probe, record_every=args.record_every, engine=args.engine, callback=callback,
            should_stop=callback.should_stop,
        )
    save_png(grid(record.final), out / "samples.png")
    gif = chain_gif(record, max_frames=args.gif_frames)
    atomic_write(out / "chain.gif", gif)
    write_json(out / "chain.json", summary_json(record))
    files = ["samples.png", "chain.gif", "chain.json"]
    if record.has_probes:
        write_csv(out / "probabilities.csv", probability_rows(record))
        files.append("probabilities.csv")
        for row in summarise(record):
            settle = (f"argmax for good from step {row.settle_step_xt} (t={row.settle_t_xt})" if row.settle_step_xt >= 0
                      else "the last x_t still disagrees with the final sample")
            print(f"#{row.index:02d} {row.final_label:<12} p={row.final_probability:.2f} · on x_T: "
                  f"{row.noise_label} p={row.noise_probability:.2f} · {settle}")
    print(f"{record.steps} steps × {record.batch} samples in {record.seconds:.1f} s → {out}: {', '.join(files)}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from ..diffusion.evaluation import evaluate_diffusion

    _threads(args)
    _check_sampling(args, streamed=True)
    limits.check("batch", args.batch, what="--batch")
    if args.nll:
        limits.check("n", args.nll_n, what="--nll-n")
        if args.nll_steps is not None:
            limits.check("steps", args.nll_steps, what="--nll-steps", lo=1)
    out = output_dir(args.out) if args.out else None
    json_file = output_file(args.json, "--json")
    diffusion, probe = _load(args)
    if probe is None:
        raise UserInputError("evaluate needs --probe (a registry classifier, e.g. fashion_cnn).")
    _check_engine(diffusion, args)
    nll_n = args.nll_n if args.nll else 0
    work = args.n * args.steps + nll_n * min(args.nll_steps or diffusion.num_train_timesteps,
                                             diffusion.num_train_timesteps)
    with progress(work, "evaluate (sampling" + (" + bound)" if args.nll else ")"), unit="call") as callback:
        result = evaluate_diffusion(
            diffusion, probe, n=args.n, steps=args.steps, sampler=args.sampler, eta=args.eta, engine=args.engine,
            seed=args.seed, batch=args.batch,
            nll_images=nll_n, nll_steps=args.nll_steps, nll_variance=args.nll_variance,
            data=args.data, fd=not args.no_fd,
            callback=callback, should_stop=callback.should_stop,
        )
    # the earlier flat fields first (kept for old readers), then the issue-17 fields ("seconds": the whole run)
    data = result.quality.to_dict() | {"eta": args.eta, "seed": args.seed} | result.to_dict(include_terms=True)
    shown = {k: v for k, v in data.items() if k != "nll"}
    if "nll" in data:
        shown["nll"] = {k: v for k, v in data["nll"].items() if k not in ("term_timesteps", "terms_bits_per_dim",
                                                                          "per_image_bits_per_dim")}
    print(json.dumps(shown, indent=2))
    if out is not None:
        write_json(out / "quality.json", data)
    if json_file is not None:
        write_json(json_file, data)
    return 0


def _add_model_options(p: argparse.ArgumentParser, n_default: int) -> None:
    p.add_argument("--model", default="fashion_ddpm",
                   help="fashion_ddpm, fashion_iddpm (learned Σ), fashion_cddpm (class-conditional; its "
                        "unconditional mode here) or a diffusers-format UNet folder")
    p.add_argument("--probe", default="fashion_cnn",
                   help="registry classifier (or a train-classifier folder) watching the chain; none: off")
    add_arch_option(p, "--probe-arch")
    p.add_argument("--sampler", choices=["ddim", "ddpm", "ancestral"], default="ddim",
                   help="ancestral: respaced, with the learned Σ when the model has one (the core engine)")
    p.add_argument("--engine", choices=["auto", "diffusers", "core"], default="auto",
                   help="auto: diffusers schedulers for fixed-variance models (as before), the Gaussian core otherwise")
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--eta", type=float, default=0.0, help="DDIM noise (0: deterministic)")
    p.add_argument("--schedule", choices=["linear", "squaredcos_cap_v2"], default=None,
                   help="β schedule of the sampler (default: the model's own; others are noise-level matched)")
    p.add_argument("--n", type=int, default=n_default, help="number of samples")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("diffusion", help="sample / inspect / train the project's diffusion models")
    sub = p.add_subparsers(dest="diffusion_command", required=True)

    s = sub.add_parser("sample",
                       help="sample and record the chain: samples.png, chain.gif, chain.json, probabilities.csv")
    _add_model_options(s, 16)
    s.add_argument("--record-every", type=int, default=None, help="store every k-th state (default: fit 256 MB)")
    s.add_argument("--gif-frames", type=int, default=60)
    s.add_argument("--out", default="out/diffusion")
    s.set_defaults(func=_sample)

    e = sub.add_parser("evaluate",
                       help="sample quality (probe confidence, classes, FD_cnn + floor, precision/recall) "
                            "and, with --nll, the likelihood bound")
    _add_model_options(e, 500)
    e.add_argument("--batch", type=int, default=100)
    e.add_argument("--out", default=None, help="also write quality.json here")
    e.add_argument("--json", default=None, help="write the result (all fields, per-step bound terms) to this file")
    e.add_argument("--nll", action="store_true", help="also bound the likelihood (bits/dim) of --nll-n test images")
    e.add_argument("--nll-n", type=int, default=200, help="test images for --nll")
    e.add_argument("--nll-steps", type=int, default=None,
                   help="UNet calls per image for the bound (default: all T, exact; fewer: stratified, unbiased)")
    e.add_argument("--nll-variance", choices=["fixed_small", "fixed_large"], default=None,
                   help="bound a fixed-variance model with this Σ instead of its own")
    e.add_argument("--data", default="fashion", help="reference images: fashion (Debian IDX files), digits or a folder")
    e.add_argument("--no-fd", action="store_true", help="skip FD_cnn / precision / recall (no Fashion-MNIST needed)")
    e.set_defaults(func=_evaluate)

    t = sub.add_parser("train", help="train a DDPM (diffusers UNet2DModel) with EMA, resumable checkpoints")
    t.add_argument("--data", default="fashion",
                   help="fashion (Debian IDX files), digits (sklearn 8×8) or a folder of IDX files")
    t.add_argument("--out", default="runs/fashion_ddpm", help="output folder (diffusers format + checkpoint.pt)")
    t.add_argument("--steps", type=int, default=8000)
    t.add_argument("--batch-size", type=int, default=32)
    t.add_argument("--lr", type=float, default=2e-3)
    t.add_argument("--warmup", type=int, default=200)
    t.add_argument("--ema", type=float, default=0.998, help="EMA decay of the exported weights")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--schedule", choices=["linear", "squaredcos_cap_v2"], default="linear")
    t.add_argument("--timesteps", type=int, default=1000, help="number of training timesteps T")
    t.add_argument("--channels", default="16,32,64", help="UNet block_out_channels")
    t.add_argument("--layers", type=int, default=1, help="resnet layers per UNet block")
    t.add_argument("--groups", type=int, default=8, help="GroupNorm groups")
    t.add_argument("--no-attention", action="store_true", help="no self-attention at the coarsest level")
    t.add_argument("--variance-type", choices=["fixed_small", "fixed_large", "learned_range"], default="fixed_small",
                   help="learned_range: Improved DDPM (the UNet also outputs v; hybrid loss L_simple + λ·L_vlb)")
    t.add_argument("--vlb-weight", type=float, default=0.001, help="λ of the hybrid loss (learned variances)")
    t.add_argument("--init-from", default=None,
                   help="start from this model's weights where shapes match (fashion_ddpm or a diffusers folder)")
    t.add_argument("--classes", type=int, default=0,
                   help="> 0: a class-conditional model with this many classes (labels from the data), for "
                        "classifier-free guidance; 0: unconditional")
    t.add_argument("--class-dropout", type=float, default=0.1,
                   help="share of training images shown with the null label (the unconditional mode)")
    t.add_argument("--class-lr-scale", type=float, default=1.0,
                   help="the class embedding's learning rate over the rest's (it starts at zero, so a fine-tuned "
                        "model learns its labels faster with e.g. 10)")
    t.add_argument("--checkpoint-every", type=int, default=250)
    t.add_argument("--no-resume", action="store_true", help="start over even if OUT/checkpoint.pt exists")
    t.add_argument("--max-minutes", type=float, default=None, help="stop cleanly (checkpoint + export) after this long")
    t.add_argument("--threads", type=int, default=None, help="torch CPU threads (1 is fastest on a busy machine)")
    t.set_defaults(func=_train)

    c = sub.add_parser("train-classifier", help="train the small CNN probe (safetensors + config.json)")
    c.add_argument("--data", default="fashion")
    c.add_argument("--out", default="runs/fashion_cnn")
    c.add_argument("--epochs", type=int, default=3)
    c.add_argument("--batch-size", type=int, default=128)
    c.add_argument("--lr", type=float, default=3e-3)
    c.add_argument("--width", type=int, default=16, help="channels of the first conv stage")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--threads", type=int, default=None)
    c.set_defaults(func=_train_classifier)

    from .diffusion_imagination import register_subcommands  # guide, inpaint, branch, train-noisy-classifier

    register_subcommands(sub)

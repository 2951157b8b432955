"""``diffusion sample | train | train-classifier``: the diffusion inspector's command-line twin."""

from __future__ import annotations

import argparse
import json

import torch

from .common import output_dir, progress, write_json


def _threads(args: argparse.Namespace) -> None:
    if getattr(args, "threads", None):
        torch.set_num_threads(int(args.threads))


def _train(args: argparse.Namespace) -> int:
    from ..diffusion.data import load_dataset
    from ..diffusion.train import DDPMConfig, train_ddpm

    _threads(args)
    data = load_dataset(args.data, "train")
    config = DDPMConfig(
        steps=args.steps, batch_size=args.batch_size, lr=args.lr, warmup=args.warmup, ema_decay=args.ema,
        seed=args.seed, schedule=args.schedule, num_train_timesteps=args.timesteps,
        block_out_channels=tuple(int(c) for c in args.channels.split(",")), layers_per_block=args.layers,
        attention=not args.no_attention, norm_num_groups=args.groups, checkpoint_every=args.checkpoint_every,
    )
    out = output_dir(args.out)
    print(f"training a DDPM on {data.source} ({len(data)} images {data.size[0]}×{data.size[1]}) → {out}")
    with progress(config.steps, "diffusion train") as callback:
        report = train_ddpm(
            data, out, config, resume=not args.no_resume, device=args.device, callback=callback,
            time_limit_s=args.max_minutes * 60 if args.max_minutes else None,
        )
    last = f", last loss {report.losses[-1]:.4f}" if report.losses else ""
    print(f"{report.steps_done}/{config.steps} steps in {report.total_seconds / 60:.1f} min on {report.hardware}{last}"
          + (f" (stopped: {report.stopped})" if report.stopped else ""))
    return 0


def _train_classifier(args: argparse.Namespace) -> int:
    from ..diffusion.data import load_dataset
    from ..diffusion.train import train_classifier

    _threads(args)
    train, test = load_dataset(args.data, "train"), load_dataset(args.data, "test")
    steps = args.epochs * -(-len(train) // args.batch_size)
    with progress(steps, "classifier train") as callback:
        report = train_classifier(
            train, test, output_dir(args.out), epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
            width=args.width, seed=args.seed, device=args.device, callback=callback,
        )
    print(f"test accuracy {report.test_accuracy:.4f} ({test.source}, {len(test)} images) after "
          f"{report.seconds / 60:.1f} min on {report.hardware}; saved to {report.out_dir}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("diffusion", help="sample / inspect / train the project's diffusion models")
    sub = p.add_subparsers(dest="diffusion_command", required=True)

    t = sub.add_parser("train", help="train a DDPM (diffusers UNet2DModel) with EMA, resumable checkpoints")
    t.add_argument("--data", default="fashion", help="fashion (Debian IDX files), digits (sklearn 8×8) or a folder of IDX files")
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

"""``diffusion train-noisy-classifier | guide | inpaint | branch``: the imagination experiments' CLI twin.

Registered into the ``diffusion`` command by :func:`register_subcommands` (one call in ``cli/diffusion.py``).
"""

from __future__ import annotations

import argparse

from ..errors import UserInputError
from .common import check_options, output_dir, progress


def _threads(args: argparse.Namespace) -> None:
    from .diffusion import _threads as set_threads

    set_threads(args)


def _train_noisy(args: argparse.Namespace) -> int:
    from ..diffusion.data import load_dataset
    from ..diffusion.noisy_classifier import NoisyClassifierConfig, train_noisy_classifier

    _threads(args)
    check_options(args, "max_minutes")
    config = NoisyClassifierConfig(
        steps=args.steps, batch_size=args.batch_size, lr=args.lr, warmup=args.warmup, ema_decay=args.ema,
        seed=args.seed, width=args.width, schedule=args.schedule, num_train_timesteps=args.timesteps,
        checkpoint_every=args.checkpoint_every,
    )
    out = output_dir(args.out)
    train, test = load_dataset(args.data, "train"), load_dataset(args.data, "test")
    print(f"training a noise-aware classifier on {train.source} noised along the {config.schedule} schedule "
          f"(T={config.num_train_timesteps}) → {out}")
    with progress(config.steps, "noisy classifier train") as callback:
        report = train_noisy_classifier(
            train, test, out, config, resume=not args.no_resume, device=args.device, callback=callback,
            should_stop=callback.should_stop, time_limit_s=args.max_minutes * 60 if args.max_minutes else None,
        )
    print(f"{report.steps_done}/{config.steps} steps in {report.total_seconds / 60:.1f} min on {report.hardware}"
          + (f" (stopped: {report.stopped})" if report.stopped else ""))
    for row in report.accuracy_by_t:
        print(f"  t {row['t_from']:>4}–{row['t_to']:<4} accuracy {row['accuracy']:.4f} ({row['n']} test images)")
    return 0


def register_subcommands(sub: argparse._SubParsersAction) -> None:
    """Add the imagination subcommands to ``diffusion``."""
    n = sub.add_parser("train-noisy-classifier",
                       help="train the noise-aware classifier p(y | x_t, t) for guidance (safetensors + config.json)")
    n.add_argument("--data", default="fashion", help="fashion (Debian IDX files), digits or a folder of IDX files")
    n.add_argument("--out", default="runs/fashion_noisy_cnn")
    n.add_argument("--steps", type=int, default=4000)
    n.add_argument("--batch-size", type=int, default=128)
    n.add_argument("--lr", type=float, default=2e-3)
    n.add_argument("--warmup", type=int, default=100)
    n.add_argument("--ema", type=float, default=0.999)
    n.add_argument("--width", type=int, default=32, help="channels of the first conv stage")
    n.add_argument("--seed", type=int, default=0)
    n.add_argument("--schedule", choices=["linear", "squaredcos_cap_v2"], default="linear",
                   help="noise schedule of the DDPM it will guide (fashion_ddpm: linear)")
    n.add_argument("--timesteps", type=int, default=1000)
    n.add_argument("--checkpoint-every", type=int, default=250)
    n.add_argument("--no-resume", action="store_true")
    n.add_argument("--max-minutes", type=float, default=None, help="stop cleanly (checkpoint + export) after this long")
    n.add_argument("--threads", type=int, default=None)
    n.set_defaults(func=_train_noisy)

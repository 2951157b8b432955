"""Command-line twin of the app: ``python -m explorer <command> ...``.

Each feature adds a module here with ``register(subparsers)``; listing it in COMMAND_MODULES
is all it takes to appear.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys

from ..errors import UserInputError

COMMAND_MODULES = ["visualize", "gallery", "inversion", "fooling", "diffusion", "audio"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m explorer", description="Machine Imagination Explorer")
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:1 …")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name in COMMAND_MODULES:
        if importlib.util.find_spec(f"{__name__}.{name}") is None:
            continue  # feature not built yet
        importlib.import_module(f"{__name__}.{name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except UserInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130

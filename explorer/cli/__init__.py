"""Command-line twin of the app: ``python -m explorer <command> ...``.

Each feature adds a module here with ``register(subparsers)``; listing it in COMMAND_MODULES
is all it takes to appear (a listed module that does not import is an error, never skipped).
"""

from __future__ import annotations

import argparse
import importlib
import re
import sys
import warnings
from typing import NoReturn

from ..errors import UserInputError, shorten

COMMAND_MODULES = ["visualize", "gallery", "inversion", "fooling", "diffusion", "audio"]


class OneLineParser(argparse.ArgumentParser):
    """argparse with the project's one-line errors: ``--size 1e3`` says what is wrong with the value in one
    ``error: …`` line (exit 2) instead of printing the command's whole usage. Subcommands inherit it."""

    _BAD_VALUE = re.compile(r"argument (?P<option>\S+): invalid (?P<kind>int|float) value: (?P<value>.*)$")

    def error(self, message: str) -> NoReturn:
        bad = self._BAD_VALUE.match(message)
        if bad:
            kind = "a whole number in plain digits (e.g. 1000, not 1e3)" if bad["kind"] == "int" else \
                "a decimal number (e.g. 0.05 or 5e-2; not hexadecimal)"
            message = f"{bad['option'].split('/')[0]} {shorten(bad['value'], 40)} is not {kind}"
        self.exit(2, f"error: {shorten(message, 300)} (`{self.prog} --help` lists the options).\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="python -m explorer", description="Machine Imagination Explorer")
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:1 …")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(f"{__name__}.{name}").register(subparsers)
    return parser


def _one_line_warnings(message, category, filename, lineno, file=None, line=None) -> None:
    """The project's own warnings (e.g. a TorchScript file must be trusted) as one line, no source location."""
    from ..models import TorchScriptTrustWarning
    from ..models.timm_models import RandomWeightsNotice

    if issubclass(category, (TorchScriptTrustWarning, RandomWeightsNotice)):
        print(f"warning: {message}", file=sys.stderr)
    else:
        _default_showwarning(message, category, filename, lineno, file, line)


_default_showwarning = warnings.showwarning


def _leaf_parser(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.ArgumentParser:
    """The (sub)command parser that parsed ``args``: ``diffusion sample``'s for ``diffusion sample …``."""
    while True:
        sub = next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)
        name = getattr(args, sub.dest, None) if sub is not None else None
        if sub is None or name not in sub.choices:
            return parser
        parser = sub.choices[name]


# other words for an option, as a page or another command calls it (docs/vocabulary.md has the one name)
_SYNONYMS = {"--batch": ("--n",), "--samples": ("--n",), "--channels": ("--units",), "--classes": ("--class",),
             "--iterations": ("--steps",), "--image-size": ("--size",)}


def _unknown_options(parser: argparse.ArgumentParser, unknown: list[str]) -> str:
    """"unrecognized arguments: --batch 4 (did you mean --n?)" — with the closest options of this command."""
    import difflib

    known = [flag for action in parser._actions for flag in action.option_strings if flag.startswith("--")]
    hints = []
    for word in unknown:
        if word.startswith("--"):
            flag = word.split("=")[0]
            synonyms = [f for f in _SYNONYMS.get(flag, ()) if f in known]
            close = synonyms or difflib.get_close_matches(flag, known, n=2, cutoff=0.75)
            if close:
                hints.append(f"{flag}: did you mean {' or '.join(close)}?")
    return f"unrecognized arguments: {' '.join(unknown)}" + (f" ({'; '.join(hints)})" if hints else "")


def main(argv: list[str] | None = None) -> int:
    """Run one command. A user's mistake (any :class:`UserInputError`, raised before work starts wherever
    the input allows) prints one line ``error: …`` to stderr and exits 2, never a traceback."""
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # said by the subcommand that was given them (its usage, its options), not the top level
        _leaf_parser(parser, args).error(_unknown_options(_leaf_parser(parser, args), unknown))
    try:
        from ..devices import choose_device

        choose_device(args.device)  # --device bogus / cuda without CUDA: refused before anything loads
        with warnings.catch_warnings():
            warnings.showwarning = _one_line_warnings
            return int(args.func(args) or 0)
    except UserInputError as exc:
        print("error: " + " ".join(str(exc).split()), file=sys.stderr)
        return 2
    except MemoryError:
        print("error: out of memory: use a smaller --size, --batch or --n (limits: docs/ARCHITECTURE.md).",
              file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130

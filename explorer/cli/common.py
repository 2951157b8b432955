"""Shared CLI pieces: progress bars, output folders, JSON."""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from tqdm import tqdm

from .. import limits
from ..errors import UserInputError
from ..files import atomic_write, output_target, system_tree, write_json  # noqa: F401  (write_json: re-exported for the commands)


class ProgressBar:
    """A tqdm bar that is a :data:`~explorer.progress.ProgressCallback`, plus ``should_stop`` for the
    library's one way to stop: the first Ctrl-C asks the job to stop at its next step (it then returns
    and the command saves its partial result); a second Ctrl-C interrupts at once.

    The tqdm bar appears at the first progress report, not before: a library call that refuses its
    input prints its one-line error with no "0%|" bar in front of it."""

    def __init__(self, total: int, desc: str, unit: str = "step"):
        self.total, self.desc, self.unit = total, desc, unit
        self._bar: tqdm | None = None
        self.done = 0.0
        self.interrupted = False

    @property
    def bar(self) -> tqdm:
        if self._bar is None:
            self._bar = tqdm(total=self.total, desc=self.desc, unit=self.unit, dynamic_ncols=True)
        return self._bar

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()

    def __call__(self, step: float, total: int, preview=None, values=None) -> None:
        if total != self.bar.total:
            self.bar.total = total
        self.bar.update(step - self.done)
        self.done = step
        if values is not None and hasattr(values, "mean"):
            self.bar.set_postfix(objective=f"{float(values.float().mean()):.3f}")

    def should_stop(self) -> bool:
        return self.interrupted

    def _on_interrupt(self, signum, frame) -> None:
        if self.interrupted:
            raise KeyboardInterrupt
        self.interrupted = True
        self.bar.write("Stopping after this step (Ctrl-C again to abort)…")


@contextmanager
def progress(total: int, desc: str, unit: str = "step") -> Iterator[ProgressBar]:
    """A :class:`ProgressBar` (callback + ``should_stop`` on Ctrl-C) for the duration of a job."""
    bar = ProgressBar(total, desc, unit)
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGINT, bar._on_interrupt)
    try:
        yield bar
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
        bar.close()


def check_options(args, *names: str) -> None:
    """Check the named numeric options against explorer.limits, naming them as typed (``--size 1 …``).

    Commands need at least one step (0 steps only makes sense inside the library). Options left at
    None (meaning "the default") pass.
    """
    for name in names:
        value = getattr(args, name, None)
        if value is not None:
            limits.check(name, value, what=f"--{name.replace('_', '-')}", lo=1 if name == "steps" else None)


OUTPUT_MARKER = ".explorer-output"  # left in every --out folder: the commands may write there again


def output_dir(path: str | Path, option: str = "--out") -> Path:
    """The output folder, created now (before any work) so an impossible ``--out`` fails first.

    It must be new, empty, or one an explorer command wrote before (it holds :data:`OUTPUT_MARKER`):
    files we did not write are never overwritten, and ``--out ""`` never means the current folder."""
    if not str(path).strip():
        raise UserInputError(f"{option} is empty: name a folder for the results (e.g. {option} out/results).")
    out = Path(path).expanduser()
    if system_tree(out) is not None:
        raise UserInputError(f"--out {path} is in {system_tree(out)}, a system tree the explorer never writes to.")
    if out.exists() and not out.is_dir():
        raise UserInputError(f"--out {path} is a file, not a folder: name a folder (it is created if missing).")
    if out.is_dir() and not (out / OUTPUT_MARKER).exists() and _has_entries(out):
        here = ", and it is the current folder" if out.resolve() == Path.cwd().resolve() else ""
        raise UserInputError(
            f"{option} {path} already holds files that no explorer command wrote (no {OUTPUT_MARKER} in it{here}): "
            f"name a new or empty folder (or, if its files may be overwritten, create {Path(path) / OUTPUT_MARKER}).")
    try:
        out.mkdir(parents=True, exist_ok=True)
        if not (out / OUTPUT_MARKER).exists():
            atomic_write(out / OUTPUT_MARKER,
                         b"Written by Machine Imagination Explorer: its commands may write here again.\n")
    except OSError as exc:
        raise UserInputError(f"Cannot create the output folder {path}: {exc.strerror or exc}.") from None
    return out


def _has_entries(folder: Path) -> bool:
    try:
        return any(folder.iterdir())
    except OSError as exc:
        raise UserInputError(f"Cannot read the output folder {folder}: {exc.strerror or exc}.") from None


def output_file(path: str | Path | None, option: str) -> Path | None:
    """Check (before any work) that a file can be written at ``path``: its folder exists or can be made."""
    if path is None:
        return None
    file = Path(path).expanduser()
    if file.is_dir():
        raise UserInputError(f"{option} {path} is a folder: name a file.")
    output_target(file, option)  # a device, FIFO or socket, or a path in /proc, /sys, /dev: refused now
    try:
        file.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserInputError(f"Cannot write {option} {path}: {exc.strerror or exc}.") from None
    return file


ARCH_HELP = ("architecture of a checkpoint:PATH state dict: a torchvision name such as resnet50 "
             "(TorchScript files need none)")


def add_arch_option(p, flag: str = "--arch") -> None:
    """``--arch`` beside ``--model``: what a ``checkpoint:PATH`` state dict is."""
    p.add_argument(flag, default=None, metavar="NAME", help=ARCH_HELP)


WEIGHTS_HELP = "pretrained | random | PATH"


def add_model_options(p, model_help: str | None = None, weights_help: str | None = WEIGHTS_HELP) -> None:
    """``--model``, ``--weights`` and ``--arch``: the classifier a command loads (read by :func:`load_cli_model`)."""
    from ..models import DEFAULT_MODEL

    p.add_argument("--model", default=DEFAULT_MODEL, help=model_help)
    p.add_argument("--weights", default=None, help=weights_help)
    add_arch_option(p)


def load_cli_models(names: list[str], weights: str | None, device: str, arch: str | None) -> list:
    """Registry models by name, and ``checkpoint:PATH`` files with ``arch``; --arch without a checkpoint is an error."""
    from ..models import CHECKPOINT_PREFIX, load_model

    if arch and not any(name.startswith(CHECKPOINT_PREFIX) for name in names):
        raise UserInputError(f"--arch only applies to --model {CHECKPOINT_PREFIX}PATH (a state dict file).")
    return [load_model(name, weights, device=device, arch=arch if name.startswith(CHECKPOINT_PREFIX) else None)
            for name in names]


def load_cli_model(args, name: str | None = None):
    """The model of a command's --model/--weights/--arch/--device options."""
    return load_cli_models([name or args.model], args.weights, args.device, args.arch)[0]

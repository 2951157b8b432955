"""Scoped activation capture: the one mechanism every feature uses to read a layer.

``capture(model, x, layers)`` runs the model and returns the requested layers' outputs.
Hooks live only for that call (removed on exit, also on exceptions), and they answer
only to the call that registered them: two threads sharing one model each see their own
activations. The forward pass is aborted right after the deepest requested layer runs,
so nothing after it is computed. The pseudo-layer ``"output"`` is the model's output
(a full forward pass).
"""

from __future__ import annotations

import contextlib
import contextvars
from typing import Callable, Iterable, Iterator

import torch
from torch import nn

from .errors import UnknownLayerError, UserInputError

OUTPUT = "output"
ForwardHook = Callable[[nn.Module, object, object], None]

# The capture call that owns the current thread/context. Hooks of other calls ignore it.
_active_call: contextvars.ContextVar[object | None] = contextvars.ContextVar("explorer_capture", default=None)


class _StopForward(Exception):
    """Raised from a hook to abandon the rest of the forward pass."""


def _first_tensor(output: object) -> torch.Tensor:
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    raise TypeError(f"Layer output of type {type(output).__name__} is not a tensor.")


def _is_scripted(model: nn.Module) -> bool:
    return isinstance(model, torch.jit.ScriptModule)


def resolve_modules(model: nn.Module, layers: Iterable[str]) -> dict[str, nn.Module]:
    """Map layer names (as ``named_modules`` spells them) to modules; unknown names suggest close ones."""
    if _is_scripted(model) and any(name != OUTPUT for name in layers):
        raise UserInputError("This model is a TorchScript file: PyTorch cannot hook the layers inside it, so only its "
                             "outputs (classes) can be read. Load its weights as a state dict of a named architecture "
                             "to see its layers.")
    modules = dict(model.named_modules())
    found: dict[str, nn.Module] = {}
    for name in layers:
        if name == OUTPUT:
            continue
        if name not in modules or name == "":
            raise UnknownLayerError(name, [n for n in modules if n] + [OUTPUT])
        found[name] = modules[name]
    return found


def capture(
    model: nn.Module,
    x: torch.Tensor,
    layers: Iterable[str],
    *,
    stop_early: bool = True,
    reused: Iterable[str] = (),
) -> dict[str, torch.Tensor]:
    """Run ``model(x)`` and return ``{layer: activation}`` for the requested layers.

    ``reused`` names modules that run more than once per forward pass (a shared ReLU):
    their last call is kept, and the pass cannot stop early at them.
    """
    wanted = list(dict.fromkeys(layers))
    if not wanted:
        raise ValueError("capture() needs at least one layer.")
    modules = resolve_modules(model, wanted)
    reused_set = set(reused) & set(modules)
    need_output = OUTPUT in wanted
    can_stop = stop_early and not need_output and not reused_set
    remaining = set(modules)
    acts: dict[str, torch.Tensor] = {}

    def make_hook(name: str) -> ForwardHook:
        def hook(_module: nn.Module, _inputs: object, output: object) -> None:
            acts[name] = _first_tensor(output)
            remaining.discard(name)
            if can_stop and not remaining:
                raise _StopForward

        return hook

    with scoped_forward_hooks((module, make_hook(name)) for name, module in modules.items()):
        try:
            out = model(x)
            if need_output:
                acts[OUTPUT] = _first_tensor(out)
        except _StopForward:
            pass
    missing = [n for n in wanted if n not in acts]
    if missing:
        raise RuntimeError(f"Layers {missing} did not run during the forward pass.")
    return {n: acts[n] for n in wanted}


def hook_count(model: nn.Module) -> int:
    """Forward hooks currently attached anywhere in ``model`` (tests: must be 0 after a capture)."""
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


@contextlib.contextmanager
def scoped_forward_hooks(hooks: Iterable[tuple[nn.Module, ForwardHook]]) -> Iterator[None]:
    """Forward hooks that live only inside the ``with`` block (removed on exit, also on exceptions) and answer only
    to the forward passes run in it, in this thread/context — the plumbing of every dry run that watches modules."""
    token = object()

    def only_mine(fn: ForwardHook) -> ForwardHook:
        def hook(module: nn.Module, inputs: object, output: object) -> None:
            if _active_call.get() is token:
                fn(module, inputs, output)

        return hook

    reset = _active_call.set(token)
    handles = []
    try:
        for module, fn in hooks:
            handles.append(module.register_forward_hook(only_mine(fn)))
        yield
    finally:
        for handle in handles:
            handle.remove()
        _active_call.reset(reset)


def layer_shapes(model: nn.Module, x: torch.Tensor) -> tuple[dict[str, tuple[int, ...]], dict[str, int]]:
    """Dry run: every module's output shape (batch dimension dropped) and how often it ran."""
    shapes: dict[str, tuple[int, ...]] = {}
    calls: dict[str, int] = {}

    def make_hook(name: str) -> ForwardHook:
        def hook(_m: nn.Module, _i: object, output: object) -> None:
            calls[name] = calls.get(name, 0) + 1
            try:
                shapes[name] = tuple(_first_tensor(output).shape[1:])
            except TypeError:
                pass

        return hook

    # TorchScript allows no hooks: only its output is known
    watched = [] if _is_scripted(model) else [(m, make_hook(n)) for n, m in model.named_modules() if n]
    with scoped_forward_hooks(watched), torch.no_grad():
        model(x)
    return shapes, calls



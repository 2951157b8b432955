"""A faster twin of a classifier for the many forward/backward passes of optimisation: same function, fewer ops.

Every feature reads a network through ``LoadedModel.activations``; when the twin computes the requested layers
exactly as the original does (up to float rounding), it runs instead. What the twin changes (measured on the
2-core AMX Xeon, EfficientNet-Lite0, batch 4 at 224 px, one thread: ``benchmarks/render_step.py --twin``):

* **batch norm folded into the convolution before it** (eval mode: y = γ·(Wx − μ)/σ + β is one conv with weights
  γ/σ·W and bias β − γμ/σ; timm's ``BatchNormAct2d`` keeps its activation). The folded conv's own output changes
  meaning, so a request that names that conv runs on the original; a request that names the batch norm gets the
  same tensor from an identity.
* **strided depthwise convolutions computed in fp32 inside bf16 autocast on the CPU**: oneDNN's bf16 depthwise
  backward was 3–6× slower than fp32 with channels_last for stride 2 (3×3 on 4×96×112²: 44–57 ms against
  7–18 ms), while for stride 1 bf16 is the faster (16×144×56², 3×3, forward + backward: 8 ms against 24 ms), so
  stride-1 depthwise convs stay in bf16 (a 12-step render ×1.12 at batch 16 / 2 threads, ×1.16 at batch 4 / 1).
* **static "same" padding** for stride-1 ``Conv2dDynamicSamePadding`` (TensorFlow's padding is symmetric there),
  instead of a pad copy per call; the stride-2 ones, kept in fp32 as depthwise convs, pad before the cast.

Which conv feeds which batch norm is found by a dry run (the norm's input is the very tensor the conv returned,
each runs once), and the twin is kept only if, in fp32 on a seeded random input, every layer the two share
agrees within a relative 1e-4; otherwise there is no twin and the original runs (``FusedTwin.note`` says why).
"""

from __future__ import annotations

import copy
import itertools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..capture import ForwardHook, scoped_forward_hooks

MAX_TWIN_BYTES = 1 << 30  # a twin doubles the weights in memory: a larger network runs as loaded
VERIFY_RTOL = 1e-4  # the largest |twin − original| / (max |original| + 1e-6) allowed at any shared layer
DYNAMIC_SAME_PADDING = ("Conv2dDynamicSamePadding",)  # classes that pad TF-"same" from each input's size


@dataclass
class FusedTwin:
    module: nn.Module
    changed: frozenset[str]  # layer names whose output differs from the original's (the folded convs)
    folded: int  # conv + batch-norm pairs folded into one conv
    depthwise_fp32: int  # strided depthwise convs kept in fp32 under CPU autocast
    static_padding: int  # dynamic "same" paddings made static
    worst_relative_error: float  # at the shared layers, in the check


def same_padding(x: torch.Tensor, conv: nn.Conv2d) -> list[int]:
    """TensorFlow's "same" padding of ``conv`` for ``x``'s size as F.pad's [left, right, top, bottom]: the output
    is ⌈size / stride⌉, and an odd total puts the extra row/column after."""
    pads = []
    for size, k, s, d in zip(x.shape[-2:], conv.kernel_size, conv.stride, conv.dilation):
        total = max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0)
        pads.append((total // 2, total - total // 2))
    (top, bottom), (left, right) = pads
    return [left, right, top, bottom]


class Fp32Conv(nn.Module):
    """Runs the wrapped conv in fp32 even inside autocast (the CPU's bf16 depthwise kernels are the slow ones).
    A TF-"same" conv that still pads per call (stride 2) is padded *before* the cast: zeros commute with it, and
    the pad then moves half the bytes (the largest tensor of EfficientNet-Lite0's step is such a conv's input)."""

    def __init__(self, conv: nn.Module):
        super().__init__()
        self.conv = conv
        self.pads_before_cast = type(conv).__name__ in DYNAMIC_SAME_PADDING

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):
            if not self.pads_before_cast:
                return self.conv(x.float())
            c = self.conv
            x = F.pad(x, same_padding(x, c))
            return F.conv2d(x.float(), c.weight, c.bias, c.stride, c.padding, c.dilation, c.groups)


def conv_norm_pairs(module: nn.Module, example: torch.Tensor) -> list[tuple[str, str]]:
    """(conv, batch norm) names where the norm's input is the tensor the conv returned, each called once."""
    returned: dict[int, str] = {}
    alive: list[torch.Tensor] = []  # every conv output stays referenced, so no id is reused within the run
    pairs: list[tuple[str, str]] = []
    calls: dict[str, int] = {}

    def conv_hook(name: str) -> ForwardHook:
        def hook(_m, _inputs, output):
            calls[name] = calls.get(name, 0) + 1
            returned[id(output)] = name
            alive.append(output)
        return hook

    def norm_hook(name: str) -> ForwardHook:
        def hook(_m, inputs, _output):
            calls[name] = calls.get(name, 0) + 1
            if inputs and id(inputs[0]) in returned:
                pairs.append((returned[id(inputs[0])], name))
        return hook

    watched = []
    for name, m in module.named_modules():
        if isinstance(m, nn.Conv2d):
            watched.append((m, conv_hook(name)))
        elif _foldable_norm(m):
            watched.append((m, norm_hook(name)))
    with scoped_forward_hooks(watched), torch.no_grad():
        module(example)
    return [(c, n) for c, n in pairs if calls.get(c) == 1 and calls.get(n) == 1]


class AfterFold(nn.Module):
    """What is left of timm's ``BatchNormAct2d`` once its norm is folded into the conv: its dropout and activation,
    under the same names (so a layer such as ``bn1.act`` still exists in the twin)."""

    def __init__(self, norm: nn.Module):
        super().__init__()
        self.drop, self.act = norm.drop, norm.act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.drop(x))


def _foldable_norm(m: nn.Module) -> bool:
    """An eval batch norm with running statistics: ``nn.BatchNorm2d`` itself, or timm's ``BatchNormAct2d`` (norm,
    then its ``drop`` and ``act``). Other subclasses may do more than normalise and are left alone."""
    if not isinstance(m, nn.BatchNorm2d) or not m.track_running_stats or m.running_mean is None:
        return False
    return type(m) is nn.BatchNorm2d or (type(m).__name__ == "BatchNormAct2d" and hasattr(m, "drop") and
                                         hasattr(m, "act"))


def _after_fold(norm: nn.Module) -> nn.Module:
    return nn.Identity() if type(norm) is nn.BatchNorm2d else AfterFold(norm)


def _fold(conv: nn.Conv2d, norm: nn.BatchNorm2d) -> None:
    scale = norm.weight.detach() / torch.sqrt(norm.running_var + norm.eps) if norm.affine else \
        1 / torch.sqrt(norm.running_var + norm.eps)
    shift = norm.bias.detach() if norm.affine else torch.zeros_like(norm.running_mean)
    bias = conv.bias.detach() if conv.bias is not None else torch.zeros_like(norm.running_mean)
    conv.weight = nn.Parameter(conv.weight.detach() * scale.reshape(-1, 1, 1, 1), requires_grad=False)
    conv.bias = nn.Parameter((bias - norm.running_mean) * scale + shift, requires_grad=False)


def _replace(root: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(root.get_submodule(parent_name) if parent_name else root, child, new)


def _pads_symmetrically(conv: nn.Module) -> bool:
    """A stride-1, odd-kernel, undilated TF-"same" conv pads symmetrically: the conv's own padding can do it."""
    if not isinstance(conv, nn.Conv2d) or type(conv).__name__ not in DYNAMIC_SAME_PADDING:
        return False
    k, s, d = tuple(conv.kernel_size), tuple(conv.stride), tuple(conv.dilation)
    return s == (1, 1) and d == (1, 1) and k[0] % 2 == 1 and k[1] % 2 == 1


def _make_padding_static(conv: nn.Conv2d) -> None:
    conv.padding = ((conv.kernel_size[0] - 1) // 2, (conv.kernel_size[1] - 1) // 2)
    conv.__class__ = nn.Conv2d


def _is_depthwise(module: nn.Module) -> bool:
    return isinstance(module, nn.Conv2d) and module.groups > 1 and module.groups == module.in_channels


def _fp32_on_cpu(module: nn.Module) -> bool:
    """A depthwise conv whose bf16 kernels are the slow ones on the CPU: the strided ones (see the module doc)."""
    return _is_depthwise(module) and any(s > 1 for s in module.stride)


def _all_outputs(module: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every named module's tensor output and the module's own (key ""), in fp32 without autocast."""
    out: dict[str, torch.Tensor] = {}

    def record(name: str) -> ForwardHook:
        def hook(_m, _i, output):
            if isinstance(output, torch.Tensor):
                out[name] = output.detach().float()
        return hook

    watched = [(m, record(name)) for name, m in module.named_modules() if name]
    with scoped_forward_hooks(watched), torch.no_grad(), torch.autocast(x.device.type, enabled=False):
        out[""] = module(x).detach().float()
    return out


def fused_twin(module: nn.Module, example: torch.Tensor) -> tuple[FusedTwin | None, str]:
    """The twin of an eval-mode ``module`` checked on ``example`` (a seeded random batch of its input), or
    ``(None, why not)``. Nothing is copied unless something would change, and never more than MAX_TWIN_BYTES."""
    if isinstance(module, torch.jit.ScriptModule):
        return None, "TorchScript: its layers cannot be rebuilt"
    weight_bytes = sum(t.numel() * t.element_size() for t in itertools.chain(module.parameters(), module.buffers()))
    if weight_bytes > MAX_TWIN_BYTES:
        return None, f"{weight_bytes / 2**20:.0f} MiB of weights: a twin would double them (the network runs as loaded)"
    pairs = conv_norm_pairs(module, example)
    static = [n for n, m in module.named_modules() if _pads_symmetrically(m)]
    depthwise = [n for n, m in module.named_modules() if _fp32_on_cpu(m)] if example.device.type == "cpu" else []
    if not pairs and not static and not depthwise:
        return None, "nothing to fuse"
    twin = copy.deepcopy(module)
    for conv_name, norm_name in pairs:
        norm = twin.get_submodule(norm_name)
        _fold(twin.get_submodule(conv_name), norm)
        _replace(twin, norm_name, _after_fold(norm))
    for name in static:
        _make_padding_static(twin.get_submodule(name))
    for name in depthwise:
        _replace(twin, name, Fp32Conv(twin.get_submodule(name)))
    changed = frozenset(c for c, _ in pairs)
    first, second = _all_outputs(module, example), _all_outputs(twin, example)
    worst = 0.0
    for name, ref in first.items():
        if name in changed or name not in second or second[name].shape != ref.shape:
            continue
        worst = max(worst, float((second[name] - ref).abs().max() / (ref.abs().max() + 1e-6)))
    if worst > VERIFY_RTOL or "" not in second:
        return None, f"the fused twin disagreed with the original (relative error {worst:.1e})"
    return FusedTwin(twin, changed, len(pairs), len(depthwise), len(static), worst), "fused"

"""Objectives on transformer token tensors (B×N×C), and the one chooser pages, the CLI and the gallery use.

Why: a ViT block's output is N tokens × C channels, not C×H×W; :func:`objectives.channel` would pick a
*token* there. The objectives below read the channel axis last, and skip the tokens that are not image
patches (``prefix_tokens``: CLS, distillation, register tokens). They are ordinary :class:`Objective`\\ s
(compose with ``+ - *``, one unit per image of a batch), so the Fourier param, the transforms and the loop
are unchanged.

* :func:`token_channel` — a channel of a layer's output averaged over the patch tokens (the ViT analogue of
  a CNN channel: a block's output, or an MLP hidden layer ``blocks.N.mlp.act`` for its neurons at all tokens);
* :func:`token_neuron`  — a channel at one token (an MLP hidden neuron at one patch; the centre by default);
* :func:`cls_channel`   — a channel of the CLS token (what the classifier head reads);
* :func:`attention_head` — the energy (mean square over its channels and the patch tokens) of one attention
  head's output, read where timm concatenates the heads before the output projection (``attn.norm``).

:func:`unit_objective` picks the right one for a model's layer (CNN layers keep ``channel``/``neuron``).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..errors import UserInputError
from ..models.base import LoadedModel
from .objectives import Context, Objective, UnitCheck, Units, _fmt, _per_image, _units
from . import objectives

UNIT_KINDS = {
    "channel": "channel (mean over patch tokens / positions)",
    "neuron": "neuron (one token / the centre position)",
    "cls": "CLS token's channel",
    "head": "attention head (output energy)",
}


def _token_channel_values(act: torch.Tensor, units: tuple[int, ...]) -> torch.Tensor:
    """act B×N×C -> B×N: image b's own channel at every token."""
    if act.ndim != 3:
        raise UserInputError(f"Expected a B×N×C token tensor, got shape {tuple(act.shape)}.")
    index = _per_image(units, act.shape[0], act.device)
    return act.gather(2, index.view(-1, 1, 1).expand(-1, act.shape[1], 1)).squeeze(2)


def _patches(values: torch.Tensor, prefix_tokens: int) -> torch.Tensor:
    """The patch tokens of B×N(×…) values (all of them when the layer has no prefix tokens to skip)."""
    return values[:, prefix_tokens:] if values.shape[1] > prefix_tokens else values


def centre_token(n_tokens: int, prefix_tokens: int) -> int:
    """Index of the centre patch of a square patch grid (the middle patch token otherwise)."""
    patches = max(n_tokens - prefix_tokens, 1)
    side = math.isqrt(patches)
    middle = (side // 2) * side + side // 2 if side * side == patches else patches // 2
    return min(prefix_tokens + middle, n_tokens - 1)


def token_channel(layer: str, units: Units, prefix_tokens: int = 1) -> Objective:
    """Mean of a channel over the patch tokens (one unit, or one per image)."""
    values, batch = _units(units)

    def fn(ctx: Context) -> torch.Tensor:
        return _patches(_token_channel_values(ctx.acts[layer], values), prefix_tokens).mean(1)

    return Objective(fn, layers=[layer], name=f"token channel {layer}:{_fmt(values)}",
                     checks=[UnitCheck(layer, values, axis=1)], batch=batch)


def token_neuron(layer: str, units: Units, token: int | None = None, prefix_tokens: int = 1) -> Objective:
    """A channel at one token: ``token`` indexes all tokens (0 = CLS in a ViT); None = the centre patch."""
    values, batch = _units(units)

    def fn(ctx: Context) -> torch.Tensor:
        picked = _token_channel_values(ctx.acts[layer], values)
        n = picked.shape[1]
        if token is not None and not 0 <= int(token) < n:  # refused, not clamped: the name would lie
            raise UserInputError(f"Token {int(token)} is out of range for {layer}: it has tokens 0–{n - 1}.")
        index = centre_token(n, prefix_tokens) if token is None else int(token)
        return picked[:, index]

    where = "centre" if token is None else f"token {token}"
    return Objective(fn, layers=[layer], name=f"token neuron {layer}:{_fmt(values)} @{where}",
                     checks=[UnitCheck(layer, values, axis=1, what="neuron channel")], batch=batch)


def cls_channel(layer: str, units: Units) -> Objective:
    """A channel of the CLS token (token 0), the summary the classifier head reads."""
    values, batch = _units(units)

    def fn(ctx: Context) -> torch.Tensor:
        return _token_channel_values(ctx.acts[layer], values)[:, 0]

    return Objective(fn, layers=[layer], name=f"cls {layer}:{_fmt(values)}",
                     checks=[UnitCheck(layer, values, axis=1, what="CLS channel")], batch=batch)


def attention_head(layer: str, heads: Units, num_heads: int, prefix_tokens: int = 1) -> Objective:
    """Energy of one attention head's output: mean square over its channels and the patch tokens.

    ``layer`` holds the heads' outputs concatenated, B×N×(num_heads·head_dim) (timm: ``blocks.N.attn.norm``,
    the input of the output projection)."""
    values, batch = _units(heads)

    def fn(ctx: Context) -> torch.Tensor:
        act = ctx.acts[layer]
        b, n, d = act.shape
        per_head = act.view(b, n, num_heads, d // num_heads)
        index = _per_image(values, b, act.device)
        picked = per_head[torch.arange(b, device=act.device), :, index]  # B×N×head_dim
        return _patches(picked, prefix_tokens).pow(2).flatten(1).mean(1)

    return Objective(fn, layers=[layer], name=f"head {layer}:{_fmt(values)}",
                     checks=[UnitCheck(layer, values, what="attention head", size=num_heads)], batch=batch)


# ---- choosing the objective for a model's layer -------------------------------------------------
def attention_layer(model: LoadedModel, layer: str) -> tuple[str, int]:
    """(the layer holding the heads' concatenated outputs, number of heads) for an attention module or a
    block that has one (``blocks.3`` or ``blocks.3.attn``)."""
    modules = dict(model.module.named_modules())
    module = modules.get(layer)
    name = layer
    if module is not None and not hasattr(module, "num_heads") and isinstance(getattr(module, "attn", None), nn.Module):
        name, module = f"{layer}.attn", module.attn
    heads = getattr(module, "num_heads", None)
    inner = f"{name}.norm"
    if module is None or not heads or inner not in model.layer_shapes:
        raise UserInputError(f"{layer!r} is not an attention layer with readable heads: pick a transformer block "
                             "(e.g. blocks.3) or its attention (blocks.3.attn).")
    if model.layer_shapes[inner][-1] % int(heads):
        raise UserInputError(f"{layer!r}: {model.layer_shapes[inner][-1]} channels do not split into {heads} heads.")
    return inner, int(heads)


def unit_count(model: LoadedModel, layer: str, kind: str = "channel") -> int:
    """How many units ``kind`` offers on ``layer`` (channels, or heads)."""
    if kind == "head":
        return attention_layer(model, layer)[1]
    return model.check_layer(layer).channels


def unit_objective(model: LoadedModel, layer: str, units: Units, kind: str = "channel",
                   token: int | None = None) -> Objective:
    """The objective for ``units`` of ``layer``: token objectives on a transformer's B×N×C layers,
    :func:`objectives.channel`/:func:`objectives.neuron` elsewhere. ``kind`` is a key of :data:`UNIT_KINDS`."""
    if kind not in UNIT_KINDS:
        raise UserInputError(f"Unknown unit kind {kind!r}: choose from {', '.join(UNIT_KINDS)}.")
    if kind == "head":
        inner, heads = attention_layer(model, layer)
        return attention_head(inner, units, heads, model.token_prefix or 0)
    info = model.check_layer(layer)
    if not info.tokens:
        if kind == "cls":
            raise UserInputError(f"{layer!r} is not a transformer token layer: the {UNIT_KINDS[kind]} objective "
                                 "needs one (e.g. a ViT's blocks.3).")
        return objectives.channel(layer, units) if kind == "channel" else objectives.neuron(layer, units)
    prefix = model.token_prefix or 0
    if kind == "cls":
        if prefix < 1:
            raise UserInputError(f"{model.name} has no CLS token: use the channel or neuron objective.")
        return cls_channel(layer, units)
    if kind == "neuron":
        return token_neuron(layer, units, token, prefix)
    return token_channel(layer, units, prefix)

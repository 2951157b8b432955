"""Render a layer's units into the gallery store: batched, resumable, safe to run twice at once.

Each batch of units is claimed in the store, rendered with the engine's batched
:func:`~explorer.optvis.render` (one forward/backward per step for the whole batch), written
as PNGs and only then marked done. Variants of a unit:

* ``max``      — the image that maximises the channel's mean activation;
* ``neg``      — the image that minimises it (the objective times −1);
* ``facetsN``  — N images of the same unit pushed apart by the diversity term (Olah et al. 2017).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Iterable, Sequence

from torch import nn

from ..errors import UserInputError
from ..images import png_bytes
from ..models.base import LoadedModel
from ..optvis import Objective, RenderSettings, render
from ..optvis.transformer import unit_objective
from ..progress import CANCELLED, ProgressCallback, ShouldStop, is_cancelled, stop_requested
from .store import Entry, GalleryStore, UnitKey, new_worker_id

if TYPE_CHECKING:  # pragma: no cover
    from .atlas import Atlas

MAX, NEG = "max", "neg"
# The gallery's thumbnails (and the shipped atlas's): 96 px, 128 steps. Chosen by looking at 8 units of
# blocks.3, blocks.10 and head at four settings (docs/gallery.md): 96 steps looks washed out, 192 steps
# or 128 px cost 2-2.4x for a small gain.
# Pinned to the old-behaviour values of fields added later (input_size, autocast, lr_schedule, coarse), so the stores' and the
# atlas's cache keys stay put when RenderSettings' defaults change.
THUMBNAILS = RenderSettings(size=96, steps=128, lr=0.05, autocast=True, input_size="param", lr_schedule="constant",
                            coarse=0.0)
FACET_DIVERSITY = 10.0  # diversity weight for facets when the settings carry none (activations are ~1–20)



def facets_variant(count: int) -> str:
    return f"facets{int(count)}"


def variants_for(facets: int = 0, negative: bool = False) -> list[str]:
    """The variants a build renders, cheapest-to-browse first: the grid needs only ``max``."""
    out = [MAX]
    if negative:
        out.append(NEG)
    if facets and facets > 1:
        out.append(facets_variant(facets))
    return out


def facet_count(variant: str) -> int:
    return int(variant[len("facets"):]) if variant.startswith("facets") else 1


def variant_settings(settings: RenderSettings, variant: str) -> RenderSettings:
    """The settings a variant is really rendered with (facets add a diversity weight)."""
    if variant.startswith("facets") and not settings.diversity:
        return settings.with_(diversity=FACET_DIVERSITY)
    return settings


def unit_key(model: LoadedModel, layer: str, settings: RenderSettings, variant: str, unit: int) -> UnitKey:
    """The store key: its digest is that of the settings that actually produce the image."""
    return UnitKey(model.name, model.fingerprint, layer, variant_settings(settings, variant).digest(), variant, int(unit))


def layer_units(model: LoadedModel, layer: str) -> int:
    """How many channels a layer has (the gallery shows one tile per channel)."""
    info = model.check_layer(layer)
    if len(info.shape) not in (1, 3) and not info.tokens:
        raise UserInputError(f"Layer {layer!r} has output shape {info.shape}; the gallery needs C, C×H×W or "
                             "transformer token (N×C) outputs.")
    return info.channels


def all_layers(model: LoadedModel) -> list[str]:
    """The layers of a whole-model atlas: the main layers with C×H×W (or a transformer's N×C token) outputs,
    without the parts of another one (EfficientNet-Lite0: ``stem``, ``blocks.0``…``blocks.15``, ``head``; not
    ``stem.0``; ViT-Tiny: ``patch_embed``, ``blocks.0``…``blocks.11``)."""
    spatial = [info.name for info in model.main_layers() if len(info.shape) == 3 or info.tokens]
    return [name for name in spatial if not any(name.startswith(f"{other}.") for other in spatial if other != name)]


def lookup(store: GalleryStore, model: LoadedModel, layer: str, settings: RenderSettings, variant: str = MAX,
           units: Iterable[int] | None = None, atlas: "Atlas | None" = None) -> dict[int, Entry]:
    """Stored entries of a layer for these settings (a settings change gives an empty answer, never stale images).

    With ``atlas`` (the shipped, read-only one), units the store lacks come from it when it holds
    these weights and settings: the user's own renders take precedence."""
    digest = variant_settings(settings, variant).digest()
    found = store.entries(model.name, model.fingerprint, layer, digest, variant, units)
    if atlas is not None and atlas.serves(model, settings, variant):
        found = dict(sorted({**atlas.entries(layer, units), **found}.items()))
    return found


@dataclass
class BuildReport:
    rendered: dict[str, list[int]] = field(default_factory=dict)  # variant -> units this builder rendered
    already_done: int = 0
    seconds: float = 0.0
    render_seconds: float = 0.0
    stopped: str | None = None

    @property
    def units_rendered(self) -> int:
        return sum(len(v) for v in self.rendered.values())

    def units_per_minute(self, variant: str = MAX) -> float:
        n = len(self.rendered.get(variant, []))
        return 60.0 * n / self.render_seconds if self.render_seconds else 0.0


# Activations whose gradient is zero below 0: a unit that is negative everywhere on the grey start
# image gets no gradient through them and renders as flat grey (EfficientNet-Lite0's stem and head).
_ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.Hardtanh, nn.Threshold)


def objective_layer(model: LoadedModel, layer: str) -> str:
    """The layer a unit is optimised (and its activation reported) on: ``layer`` itself, or, when
    ``layer`` is a Sequential ending in a ReLU-like activation, the module just before it — the
    same unit before its clipping, which has a gradient from the first step."""
    module = dict(model.module.named_modules()).get(layer)
    if isinstance(module, nn.Sequential) and len(module) > 1 and isinstance(module[-1], _ACTIVATIONS):
        name = f"{layer}.{list(module._modules)[-2]}"
        if name in model.layer_shapes and model.layer_shapes[name] == model.layer_shapes.get(layer):
            return name
    return layer


def _objective(model: LoadedModel, layer: str, variant: str, units: Sequence[int]) -> Objective:
    layer = objective_layer(model, layer)
    # unit_objective: objectives.channel on C×H×W layers, the patch-token mean on a ViT's N×C layers
    if variant == MAX:
        return unit_objective(model, layer, list(units))
    if variant == NEG:
        return -1 * unit_objective(model, layer, list(units))
    return unit_objective(model, layer, [units[0]] * facet_count(variant))


def build(
    model: LoadedModel,
    layer: str,
    units: Iterable[int] | None = None,
    settings: RenderSettings = THUMBNAILS,
    *,
    store: GalleryStore,
    variants: Sequence[str] = (MAX,),
    batch: int = 16,
    worker: str | None = None,
    lease: float = 120.0,
    wait_for_others: bool = True,
    poll: float = 1.0,
    callback: ProgressCallback | None = None,
    should_stop: ShouldStop | None = None,
    on_done: Callable[[Entry], None] | None = None,
) -> BuildReport:
    """Render every missing (unit, variant) of ``layer`` into ``store``; returns what this call did.

    ``callback(units_done, units_total, preview, values)`` reports progress in units (fractional
    while a batch is running). Units done or claimed by another live builder are skipped; with
    ``wait_for_others`` the call returns only when they are finished (or taken over when their
    builder died). Cancelling (``should_stop``) gives the current batch's claims back.
    """
    started = time.perf_counter()
    n_channels = layer_units(model, layer)
    unit_list = sorted(set(int(u) for u in (range(n_channels) if units is None else units)))
    bad = [u for u in unit_list if not 0 <= u < n_channels]
    if bad:
        raise UserInputError(f"Unit {bad[0]} is out of range for layer {layer!r}: valid units are 0–{n_channels - 1}.")
    for variant in variants:
        if variant not in (MAX, NEG) and not (variant.startswith("facets") and facet_count(variant) > 1):
            raise UserInputError(f"Unknown gallery variant {variant!r}: use max, neg or facetsN (N ≥ 2).")
    worker = worker or new_worker_id()
    report = BuildReport(rendered={v: [] for v in variants})
    total = len(unit_list) * len(variants)
    done_count = 0.0

    for variant in variants:
        vsettings = variant_settings(settings, variant)
        store.remember_settings(vsettings.digest(), vsettings.to_dict())
        per_batch = 1 if variant.startswith("facets") else max(1, int(batch))
        keys = {u: unit_key(model, layer, settings, variant, u) for u in unit_list}
        finished = set(lookup(store, model, layer, settings, variant, unit_list))
        report.already_done += len(finished)
        done_count += len(finished)
        pending = [keys[u] for u in unit_list if u not in finished]
        while pending:
            claimed = store.claim(pending, worker, lease=lease, limit=per_batch)
            if not claimed:
                finished = set(lookup(store, model, layer, settings, variant, unit_list))
                still = [k for k in pending if k.unit not in finished]
                done_count += len(pending) - len(still)
                pending = still
                if not pending or not wait_for_others:
                    break
                if stop_requested(should_stop):
                    report.stopped = CANCELLED
                    break
                time.sleep(poll)  # another live builder holds them: wait for it (or for its lease to run out)
                continue
            claimed_set = set(claimed)
            pending = [k for k in pending if k not in claimed_set]
            stopped = _render_batch(model, layer, variant, vsettings, claimed, store, worker, lease, report,
                                    base_done=done_count, total=total, callback=callback, should_stop=should_stop,
                                    on_done=on_done)
            if is_cancelled(stopped):
                report.stopped = CANCELLED
                break
            done_count += len(claimed)
        if report.stopped:
            break
    report.seconds = time.perf_counter() - started
    return report


@dataclass
class RenderedUnit:
    """What a render of one (unit, variant) produced, as bytes: the same whether it ran in this
    process or in a Ray worker (which returns these and never touches the store)."""

    unit: int
    images: list[bytes]  # PNG bytes: one image, or one per facet
    activations: list[float]
    seconds: float
    steps_done: int


def render_units(model: LoadedModel, layer: str, variant: str, settings: RenderSettings, units: Sequence[int], *,
                 callback: ProgressCallback | None = None, should_stop: ShouldStop | None = None) -> list[RenderedUnit] | None:
    """Render ``units`` of ``layer`` in one batch (facets: one unit, N images); None when cancelled.

    ``settings`` are the variant's own (:func:`variant_settings`)."""
    units = [int(u) for u in units]
    result = render(model, _objective(model, layer, variant, units), settings, callback=callback, should_stop=should_stop)
    if is_cancelled(result.stopped):
        return None
    sign = -1.0 if variant == NEG else 1.0
    activations = [float(a) for a in (sign * result.final_activation).tolist()]
    per_unit = result.seconds / len(units)
    if variant.startswith("facets"):
        return [RenderedUnit(units[0], [png_bytes(img) for img in result.images], activations, result.seconds, result.steps_done)]
    return [RenderedUnit(u, [png_bytes(result.images[i])], [activations[i]], per_unit, result.steps_done)
            for i, u in enumerate(units)]


def store_units(store: GalleryStore, keys: Sequence[UnitKey], worker: str, rendered: Sequence[RenderedUnit]) -> list[Entry]:
    """Write each rendered unit's files, then mark its claimed row done (file first, index second).

    Returns the entries this worker completed (a claim lost to another builder is skipped)."""
    by_unit = {r.unit: r for r in rendered}
    done = []
    for key in keys:
        unit = by_unit.get(key.unit)
        if unit is None:
            continue
        stem = key.file_stem()
        files = ([f"{stem}-{j}.png" for j in range(len(unit.images))] if key.variant.startswith("facets")
                 else [f"{stem}.png"])
        for rel, data in zip(files, unit.images):
            store.put_file(rel, data)
        if store.complete(key, worker, files, unit.activations, unit.seconds, unit.steps_done):
            entry = store.entry(key)
            if entry is not None:
                done.append(entry)
    return done


def _render_batch(model: LoadedModel, layer: str, variant: str, settings: RenderSettings, claimed: list[UnitKey],
                  store: GalleryStore, worker: str, lease: float, report: BuildReport, *, base_done: float, total: int,
                  callback: ProgressCallback | None, should_stop: ShouldStop | None,
                  on_done: Callable[[Entry], None] | None) -> str | None:
    """Render one claimed batch into the store; returns the render's ``stopped`` (claims given back on a cancel)."""
    units = [k.unit for k in claimed]
    last_renew = [time.monotonic()]

    def step_callback(step: int, steps: int, preview=None, values=None) -> None:
        if time.monotonic() - last_renew[0] > lease / 4:
            store.renew(claimed, worker, lease)  # keep the claims while a long batch runs
            last_renew[0] = time.monotonic()
        if callback is not None:
            callback(round(base_done + len(claimed) * step / max(steps, 1), 2), total, preview, values)

    try:
        rendered = render_units(model, layer, variant, settings, units, callback=step_callback, should_stop=should_stop)
        if rendered is None:
            store.release(claimed, worker)
            return CANCELLED
        for entry in store_units(store, claimed, worker, rendered):
            report.rendered[variant].append(entry.unit)
            if on_done is not None:
                on_done(entry)
        report.render_seconds += sum(r.seconds for r in rendered)
        return None
    except BaseException:
        store.release(claimed, worker)
        raise

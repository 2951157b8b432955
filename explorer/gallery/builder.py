"""Render a layer's units into the gallery store: batched, resumable, safe to run twice at once.

Each batch of units is claimed in the store, rendered with the engine's batched
:func:`~explorer.optvis.render` (one forward/backward per step for the whole batch), written
as PNGs and only then marked done. The variants (``max``, ``neg``, ``facetsN``), the store keys and
the check of a request are the catalogue's (:mod:`~explorer.gallery.catalogue`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

from torch import nn

from ..images import png_bytes
from ..models.base import LoadedModel
from ..optvis import Objective, RenderSettings, render
from ..optvis.transformer import unit_objective
from ..progress import CANCELLED, ProgressCallback, ShouldStop, is_cancelled, stop_requested
from .catalogue import MAX, NEG, checked_request, facet_count, lookup, unit_key, variant_settings
from .store import Entry, GalleryStore, UnitKey, new_worker_id

# The gallery's thumbnails (and the shipped atlas's): 96 px, 128 steps. Chosen by looking at 8 units of
# blocks.3, blocks.10 and head at four settings (docs/gallery.md): 96 steps looks washed out, 192 steps
# or 128 px cost 2-2.4x for a small gain.
# Pinned to the old-behaviour values of fields added later (input_size, autocast, lr_schedule, coarse), so the
# stores' and the atlas's cache keys stay put when RenderSettings' defaults change.
THUMBNAILS = RenderSettings(size=96, steps=128, lr=0.05, autocast=True, input_size="param", lr_schedule="constant",
                            coarse=0.0, warm=0.0, adam_beta1=0.9)


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
    unit_list = checked_request(model, {layer: units}, variants)[layer]
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
                 callback: ProgressCallback | None = None,
                 should_stop: ShouldStop | None = None) -> list[RenderedUnit] | None:
    """Render ``units`` of ``layer`` in one batch (facets: one unit, N images); None when cancelled.

    ``settings`` are the variant's own (:func:`~explorer.gallery.catalogue.variant_settings`)."""
    units = [int(u) for u in units]
    result = render(model, _objective(model, layer, variant, units), settings, callback=callback,
                    should_stop=should_stop)
    if is_cancelled(result.stopped):
        return None
    sign = -1.0 if variant == NEG else 1.0
    activations = [float(a) for a in (sign * result.final_activation).tolist()]
    per_unit = result.seconds / len(units)
    if variant.startswith("facets"):
        facets = [png_bytes(img) for img in result.images]
        return [RenderedUnit(units[0], facets, activations, result.seconds, result.steps_done)]
    return [RenderedUnit(u, [png_bytes(result.images[i])], [activations[i]], per_unit, result.steps_done)
            for i, u in enumerate(units)]


def store_units(store: GalleryStore, keys: Sequence[UnitKey], worker: str,
                rendered: Sequence[RenderedUnit]) -> list[Entry]:
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

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
from typing import Callable, Iterable, Sequence


from ..errors import UserInputError
from ..images import save_png
from ..models.base import LoadedModel
from ..optvis import FAST, RenderSettings, objectives, render
from ..progress import CANCELLED, ProgressCallback, ShouldStop, is_cancelled, stop_requested
from .store import Entry, GalleryStore, UnitKey, new_worker_id

MAX, NEG = "max", "neg"
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
    if len(info.shape) not in (1, 3):
        raise UserInputError(f"Layer {layer!r} has output shape {info.shape}; the gallery needs C or C×H×W outputs.")
    return info.channels


def lookup(store: GalleryStore, model: LoadedModel, layer: str, settings: RenderSettings, variant: str = MAX,
           units: Iterable[int] | None = None) -> dict[int, Entry]:
    """Stored entries of a layer for these settings (a settings change gives an empty answer, never stale images)."""
    digest = variant_settings(settings, variant).digest()
    return store.entries(model.name, model.fingerprint, layer, digest, variant, units)


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


def _objective(layer: str, variant: str, units: Sequence[int]) -> objectives.Objective:
    if variant == MAX:
        return objectives.channel(layer, list(units))
    if variant == NEG:
        return -1 * objectives.channel(layer, list(units))
    return objectives.channel(layer, [units[0]] * facet_count(variant))


def build(
    model: LoadedModel,
    layer: str,
    units: Iterable[int] | None = None,
    settings: RenderSettings = FAST,
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
        result = render(model, _objective(layer, variant, units), settings, callback=step_callback, should_stop=should_stop)
        if is_cancelled(result.stopped):
            store.release(claimed, worker)
            return result.stopped
        sign = -1.0 if variant == NEG else 1.0
        activations = (sign * result.final_activation).tolist()
        per_unit = result.seconds / len(claimed)
        for i, key in enumerate(claimed):
            stem = key.file_stem()
            if variant.startswith("facets"):
                files = [f"{stem}-{j}.png" for j in range(len(result.images))]
                for j, rel in enumerate(files):
                    save_png(result.images[j], store.root / rel)
                acts = activations
            else:
                files = [f"{stem}.png"]
                save_png(result.images[i], store.root / files[0])
                acts = [activations[i]]
            if store.complete(key, worker, files, acts, per_unit, result.steps_done):
                report.rendered[variant].append(key.unit)
                if on_done is not None:
                    entry = store.entry(key)
                    if entry is not None:
                        on_done(entry)
        report.render_seconds += result.seconds
        return result.stopped
    except BaseException:
        store.release(claimed, worker)
        raise

"""What the gallery holds and how it is named: variants, store keys, unit ranges, and the lookup.

Why a module of its own: the builder (which renders), the atlas (the shipped read-only copy), the
atlas export and the Ray build (``explorer.scale``) all name units the same way and check a request
the same way. They import these names from here; inside the gallery this module imports only the store,
so no import runs back up. Variants of a unit:

* ``max``      — the image that maximises the channel's mean activation;
* ``neg``      — the image that minimises it (the objective times −1);
* ``facetsN``  — N images of the same unit pushed apart by the diversity term (Olah et al. 2017).
"""

from __future__ import annotations

from typing import Iterable, Mapping, Protocol, Sequence

from ..errors import UserInputError
from ..models.base import LoadedModel
from ..optvis import RenderSettings
from .store import Entry, GalleryStore, UnitKey

MAX, NEG = "max", "neg"
FACET_DIVERSITY = 10.0  # diversity weight for facets when the settings carry none (activations are ~1–20)


class ShippedUnits(Protocol):
    """What :func:`lookup` asks of a shipped atlas (:class:`~explorer.gallery.atlas.Atlas`), named here so
    that the catalogue needs nothing from the module above it."""

    def serves(self, model: LoadedModel, settings: RenderSettings, variant: str = MAX) -> bool: ...

    def entries(self, layer: str, units: Iterable[int] | None = None) -> dict[int, Entry]: ...


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
    digest = variant_settings(settings, variant).digest()
    return UnitKey(model.name, model.fingerprint, layer, digest, variant, int(unit))


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


def checked_request(model: LoadedModel, layers: Mapping[str, Iterable[int] | None],
                    variants: Sequence[str]) -> dict[str, list[int]]:
    """The units a build asks for, per layer (None: every unit), sorted, after checking the variants and
    each unit against its layer: the one check the in-process build and the Ray build share."""
    for variant in variants:
        if variant not in (MAX, NEG) and not (variant.startswith("facets") and facet_count(variant) > 1):
            raise UserInputError(f"Unknown gallery variant {variant!r}: use max, neg or facetsN (N ≥ 2).")
    request = {}
    for layer, units in layers.items():
        n_channels = layer_units(model, layer)
        unit_list = sorted(set(int(u) for u in (range(n_channels) if units is None else units)))
        bad = [u for u in unit_list if not 0 <= u < n_channels]
        if bad:
            raise UserInputError(f"Unit {bad[0]} is out of range for layer {layer!r}: "
                                 f"valid units are 0–{n_channels - 1}.")
        request[layer] = unit_list
    return request


def lookup(store: GalleryStore, model: LoadedModel, layer: str, settings: RenderSettings, variant: str = MAX,
           units: Iterable[int] | None = None, atlas: ShippedUnits | None = None) -> dict[int, Entry]:
    """Stored entries of a layer for these settings (a settings change gives an empty answer, never stale images).

    With ``atlas`` (the shipped, read-only one), units the store lacks come from it when it holds
    these weights and settings: the user's own renders take precedence."""
    digest = variant_settings(settings, variant).digest()
    found = store.entries(model.name, model.fingerprint, layer, digest, variant, units)
    if atlas is not None and atlas.serves(model, settings, variant):
        found = dict(sorted({**atlas.entries(layer, units), **found}.items()))
    return found

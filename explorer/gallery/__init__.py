"""Layer gallery: every unit of a layer rendered once and kept on disk, with dataset examples.

``catalogue`` what a unit is called (variants, store keys), the units a layer has, the lookup;
``store``     files + SQLite index, claims/leases so builders can crash or run side by side;
``builder``   batched rendering of missing units into the store;
``examples``  top-k real-photo patches per unit from activations computed once per image set;
``atlas``     the shipped read-only atlas (reader); ``export`` writes one from a store.
"""

from .builder import THUMBNAILS, BuildReport, RenderedUnit, build, objective_layer, render_units, store_units
from .catalogue import (FACET_DIVERSITY, MAX, NEG, all_layers, facet_count, facets_variant, layer_units, lookup,
                        unit_key, variant_settings, variants_for)
from .examples import (Example, ImageSet, builtin_image_set, ensure_examples, example_patch, folder_image_set,
                       image_set_from_spec, load_examples, receptive_field, top_examples)
from .store import (ENV_VAR, Entry, GalleryStore, RepairReport, StoreDamaged, StoreUnwritable, UnitKey, default_root,
                    new_worker_id)

__all__ = [
    "BuildReport", "ENV_VAR", "RenderedUnit", "THUMBNAILS", "all_layers", "objective_layer", "render_units",
    "store_units", "Entry", "Example", "FACET_DIVERSITY", "GalleryStore", "ImageSet", "MAX", "NEG", "UnitKey",
    "build", "builtin_image_set", "default_root", "ensure_examples", "example_patch", "facet_count", "facets_variant",
    "folder_image_set", "image_set_from_spec", "layer_units", "load_examples", "lookup", "new_worker_id",
    "receptive_field", "RepairReport", "StoreDamaged", "StoreUnwritable", "top_examples", "unit_key",
    "variant_settings", "variants_for",
]

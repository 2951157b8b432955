"""Fooling-noise lab: how often does random static fool a classifier, and how fast does noise
grow into a ≥ 99.6 % fooling image (Nguyen, Yosinski & Clune 2015)?

Three parts, one module each:

* :mod:`.noise` — **noise families**: seeded generators of images in [0, 1] at a model's input size;
  sample ``i`` depends only on ``(seed, family, i)``, so any sample can be regenerated from its index.
* :mod:`.sweeps` — **sweeps**: stream N samples per family through one or more models in batches
  (constant memory) and count the max-softmax histogram, fooling rates at several thresholds with exact
  Clopper–Pearson intervals (:mod:`explorer.stats`), predicted-class counts, mean entropy, the most
  confident samples; accumulators of sample ranges merge (how :mod:`explorer.scale` runs it on Ray).
* :mod:`.growth` — **growing**: gradient ascent from a noise sample on one class until the class
  probability reaches 0.996, optionally inside an L∞ or L2 ball around the start; then a transfer table
  on the other registry models that load offline (the judges live in :mod:`explorer.models.judges`).

Everything is re-exported here: ``from explorer import fooling; fooling.sweep(...)``.
"""

from ..models.judges import transfer_models, transfer_table
from ..optvis.param import radial_frequency
from ..stats import clopper_pearson
from .growth import (
    DEFAULT_BUDGET,
    GROW_LR,
    GROW_STEPS,
    TARGET_CONFIDENCE,
    Budget,
    GrowResult,
    difference_image,
    distances,
    grow,
    parse_budget,
    quantize_8bit,
    with_transfer,
)
from .noise import (
    CHUNK,
    FAMILIES,
    PHOTO_BASE,
    NoiseFamily,
    NoiseOptions,
    check_families,
    chunk_seed,
    generate_chunk,
    noise_batches,
    photo_names,
    samples_at,
)
from .sweeps import (
    HISTOGRAM_BINS,
    SWEEP_BATCH,
    SWEEP_FAMILIES,
    SWEEP_N,
    THRESHOLDS,
    Accumulator,
    FamilyResult,
    Sweep,
    SweepResult,
    accumulate,
    gallery_images,
    merge_in_order,
    sweep,
)

__all__ = [
    "CHUNK", "DEFAULT_BUDGET", "FAMILIES", "GROW_LR", "GROW_STEPS", "HISTOGRAM_BINS", "PHOTO_BASE", "SWEEP_BATCH",
    "SWEEP_FAMILIES", "SWEEP_N", "TARGET_CONFIDENCE", "THRESHOLDS", "Accumulator", "Budget", "FamilyResult",
    "GrowResult", "NoiseFamily", "NoiseOptions", "Sweep", "SweepResult", "accumulate", "check_families",
    "chunk_seed", "clopper_pearson", "difference_image", "distances", "gallery_images", "generate_chunk", "grow",
    "merge_in_order", "noise_batches", "parse_budget", "photo_names", "quantize_8bit", "radial_frequency",
    "samples_at", "sweep", "transfer_models", "transfer_table", "with_transfer",
]

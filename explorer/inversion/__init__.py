"""What a layer still knows about a photo, and what it sees in it.

* :func:`invert` (:mod:`.feature_inversion`) — Mahendran & Vedaldi (2015): find an image x whose activations
  match the photo's, minimising ‖Φ(x) − Φ0‖² / ‖Φ0‖² + λ_α·‖x‖_α^α + λ_TV·TV^β. Several layers run as one
  batch: image b reconstructs the photo from layer b, all from one forward pass per step.
* :func:`deep_dream` (:mod:`.deepdream`) — DeepDream on a photo: gradient ascent on a layer's (or a
  channel's) energy, octave by octave, carrying the added detail up to each finer scale.
* :func:`caricature` (:mod:`.caricatures`) — Lucid-style: from noise, maximise the dot product between the
  image's and the photo's activations, weighted by their cosine similarity (floored), which exaggerates
  what the layer picks out of the photo.

All three run on the one loop (:func:`explorer.optvis.optimise.optimise`) with the one capture mechanism
(``LoadedModel.activations``); they differ only in the score function. Inputs and the shared engine live in
:mod:`.matching`. Everything public is re-exported here: ``from explorer import inversion``.
"""

from .caricatures import CaricatureResult, CaricatureSettings, caricature, caricature_score
from .deepdream import DeepDreamResult, DeepDreamSettings, deep_dream, dream_objective
from .feature_inversion import (
    ALPHA_DEEP,
    ALPHA_SHALLOW,
    INIT_MODES,
    TV_DEEP,
    TV_SHALLOW,
    InversionResult,
    InversionSettings,
    default_prior_weights,
    invert,
    normalised_error,
    psnr,
    relative_depth,
    ssim,
)
from .matching import FIT_MODES, check_layers, default_layers, load_photo, match_photo, model_photo

__all__ = [
    "ALPHA_DEEP", "ALPHA_SHALLOW", "FIT_MODES", "INIT_MODES", "TV_DEEP", "TV_SHALLOW", "CaricatureResult",
    "CaricatureSettings", "DeepDreamResult", "DeepDreamSettings", "InversionResult", "InversionSettings",
    "caricature", "caricature_score", "check_layers", "deep_dream", "default_layers", "default_prior_weights",
    "dream_objective", "invert", "load_photo", "match_photo", "model_photo", "normalised_error", "psnr",
    "relative_depth", "ssim",
]

"""Landing page: what the explorer does and where to start."""

from __future__ import annotations

import streamlit as st

from explorer.models import DEFAULT_MODEL, available_models

st.title("Machine Imagination Explorer")
st.markdown(
    "See what neural networks *imagine*: images optimised so a unit, a layer or a class fires; what a layer "
    "still knows about a photo; how often pure static fools a classifier; how a diffusion model condenses "
    "an image out of noise; and what a speech or music network hears in sound it dreamed itself. "
    "Everything runs offline, on CPU or CUDA."
)

PAGES = [
    ("explorer/ui/pages/feature_vis.py", "Feature visualisation",
     "one unit, many units, a class or a whole layer (DeepDream)"),
    ("explorer/ui/pages/gallery.py", "Layer gallery", "every unit of a layer, with the real photos that excite it"),
    ("explorer/ui/pages/inversion.py", "Inversion & DeepDream",
     "what a layer remembers of a photo; dreams and caricatures"),
    ("explorer/ui/pages/fooling.py", "Fooling noise", "how often static fools a classifier, and fooling images"),
    ("explorer/ui/pages/diffusion.py", "Diffusion inspector", "x_t, x̂0 and ε step by step beside a classifier"),
    ("explorer/ui/pages/audio.py", "Audio hallucinations", "dream sound through speech and music networks"),
]
from pathlib import Path  # noqa: E402

root = Path(__file__).resolve().parents[3]
for path, title, blurb in PAGES:
    st.page_link(str(root / path), label=f"**{title}** — {blurb}")  # a missing page raises: no silent gap

st.subheader("Models")
rows = [{"name": s.name, "model": s.title, "offline weights": "yes" if s.offline else "if cached",
         "default": "✓" if s.name == DEFAULT_MODEL else ""} for s in available_models()]
st.table(rows)

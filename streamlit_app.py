"""Machine Imagination Explorer — navigation only: each page lives in explorer/ui/pages/."""

from pathlib import Path

import streamlit as st

PAGES = Path(__file__).parent / "explorer" / "ui" / "pages"

# (file, title, icon, url path); the first is the default page
PAGE_TABLE = [
    ("home.py", "Home", "🧠", "home"),
    ("feature_vis.py", "Feature visualisation", "🔭", "feature_vis"),
    ("gallery.py", "Layer gallery", "🖼️", "gallery"),
    ("inversion.py", "Inversion & DeepDream", "🪞", "inversion"),
    ("fooling.py", "Fooling noise", "📺", "fooling"),
    ("diffusion.py", "Diffusion inspector", "🌫️", "diffusion"),
    ("audio.py", "Audio hallucinations", "🔊", "audio"),
]

st.set_page_config(page_title="Machine Imagination Explorer", page_icon="🧠", layout="wide")
pages = [
    st.Page(PAGES / file, title=title, icon=icon, url_path=url, default=(i == 0))
    for i, (file, title, icon, url) in enumerate(PAGE_TABLE)
    if (PAGES / file).exists()
]
st.navigation(pages).run()

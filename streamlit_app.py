"""Machine Imagination Explorer — navigation only: each page lives in explorer/ui/pages/."""

from pathlib import Path

import streamlit as st

PAGES = Path(__file__).parent / "explorer" / "ui" / "pages"

# (file, title, icon, url path); the first is the default page
PAGE_TABLE = [
    ("home.py", "Home", ":material/home:", "home"),
    ("feature_vis.py", "Feature visualisation", ":material/visibility:", "feature_vis"),
    ("gallery.py", "Layer gallery", ":material/grid_view:", "gallery"),
    ("inversion.py", "Inversion & DeepDream", ":material/flip:", "inversion"),
    ("fooling.py", "Fooling noise", ":material/tv:", "fooling"),
    ("diffusion.py", "Diffusion inspector", ":material/blur_on:", "diffusion"),
    ("audio.py", "Audio hallucinations", ":material/graphic_eq:", "audio"),
]

missing = [file for file, *_ in PAGE_TABLE if not (PAGES / file).is_file()]
if missing:  # a listed page that is not there is a broken install: say so, never hide the page
    raise FileNotFoundError(f"Pages listed in streamlit_app.py are missing from {PAGES}: {', '.join(missing)}")

st.set_page_config(page_title="Machine Imagination Explorer", page_icon="🧠", layout="wide")
pages = [
    st.Page(PAGES / file, title=title, icon=icon, url_path=url, default=(i == 0))
    for i, (file, title, icon, url) in enumerate(PAGE_TABLE)
]
st.navigation(pages).run()

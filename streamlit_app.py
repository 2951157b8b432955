"""Machine Imagination Explorer — navigation only: each page lives in explorer/ui/pages/."""

from pathlib import Path

import streamlit as st

PAGES = Path(__file__).parent / "explorer" / "ui" / "pages"

st.set_page_config(page_title="Machine Imagination Explorer", page_icon="🧠", layout="wide")
pages = [
    st.Page(PAGES / "feature_vis.py", title="Feature visualisation", icon="🔭", url_path="feature_vis", default=True),
]
st.navigation(pages).run()

"""Streamlit pages and shared widgets. Only this package imports Streamlit; it holds no maths."""

"""The diffusion page's "Model quality" tab: the likelihood bound and distribution measures of diffusion models.

Shows the figures measured for the shipped models (``assets/fashion_iddpm/quality.json``, written by
``benchmarks/diffusion_quality.py``) and evaluates any shipped model or diffusers folder on demand with small,
cancellable defaults. The maths is in ``explorer.diffusion.evaluation``; this module only lays it out.
"""

from __future__ import annotations

import json
import math
from typing import Callable

import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots

from explorer.diffusion.evaluation import quality_sweep
from explorer.diffusion.models import ASSETS, available_diffusion_models
from explorer.errors import UserInputError
from explorer.ui import display, widgets

KEY = "diffq"
MEASURED = ASSETS / "fashion_iddpm" / "quality.json"
STEP_CHOICES = [10, 25, 50, 100, 1000]
METRICS = [("fd", "FD_cnn (lower is better)"), ("precision", "precision"), ("recall", "recall"),
           ("confidence", "probe confidence")]


def _row_metric(row: dict, name: str) -> float | None:
    if name == "confidence":
        return row["quality"]["mean_max_probability"]
    return row.get(name)


def _series(rows: list[dict]) -> dict[str, list[dict]]:
    """Rows grouped by model, sampler and engine, each group sorted by K."""
    groups: dict[str, list[dict]] = {}
    for row in rows:
        if row.get("bound_only"):  # a run made for its likelihood bound only (a handful of samples)
            continue
        groups.setdefault(f"{row['model']} · {row['sampler']} ({row.get('engine', '')})", []).append(row)
    return {k: sorted(v, key=lambda r: r["steps"]) for k, v in groups.items()}


def steps_figure(rows: list[dict]) -> go.Figure:
    """FD_cnn, precision, recall and confidence against K, one line per model; FD's floor dotted."""
    fig = make_subplots(rows=1, cols=4, subplot_titles=[title for _, title in METRICS])
    palette = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]
    for n, (name, group) in enumerate(_series(rows).items()):
        colour = palette[n % len(palette)]
        for col, (metric, _) in enumerate(METRICS, start=1):
            points = [(r["steps"], _row_metric(r, metric)) for r in group if _row_metric(r, metric) is not None]
            if points:
                fig.add_trace(go.Scatter(x=[p[0] for p in points], y=[p[1] for p in points], name=name,
                                         legendgroup=name, showlegend=col == 1, mode="lines+markers",
                                         line=dict(color=colour)), row=1, col=col)
    floors = [r["fd_floor"] for r in rows if r.get("fd_floor") is not None]
    if floors:
        fig.add_hline(y=min(floors), line=dict(color="grey", dash="dot"), row=1, col=1,
                      annotation_text="floor (train vs test)")
    fig.update_xaxes(title="steps K")
    display.log_axis(fig, [x for trace in fig.data for x in trace.x], axis="x")  # decades labelled, no minor digits
    fig.update_layout(height=330, margin=dict(l=10, r=10, t=40, b=10), legend=dict(orientation="h", y=-0.25))
    return fig


def terms_figure(rows: list[dict]) -> go.Figure:
    """L_t (bits/dim) against t for every model with a bound: where the bits go (Improved DDPM Fig. 2)."""
    fig = go.Figure()
    for row in rows:
        nll = row.get("nll") or {}
        if nll.get("terms_bits_per_dim"):
            fig.add_trace(go.Scatter(x=nll["term_timesteps"], y=nll["terms_bits_per_dim"], mode="lines",
                                     name=f"{row['model']} ({nll['variance_type']})"))
    fig.update_layout(height=320, margin=dict(l=10, r=10, t=30, b=10), title="per-step terms L_t of the bound",
                      xaxis=dict(title="timestep t"), yaxis=dict(title="bits/dim"))
    display.log_axis(fig, [x for trace in fig.data for x in trace.x], axis="x")
    display.log_axis(fig, [y for trace in fig.data for y in trace.y], axis="y")
    return fig


def nll_table(rows: list[dict]) -> list[dict]:
    table = []
    for row in rows:
        nll = row.get("nll")
        if not nll:
            continue
        lo, hi = nll["ci95"]
        table.append({"model": row["model"], "Σ": nll["variance_type"], "bits/dim": nll["bits_per_dim"],
                      "95 % interval": f"{lo:.3f} – {hi:.3f}" if not math.isnan(lo) else "—",
                      "test images": nll["n_images"], "UNet calls / image": nll.get("unet_calls_per_image"),
                      "decoder L_0": nll.get("decoder_bits_per_dim"), "seconds": nll.get("seconds")})
    return table


def figures_table(rows: list[dict]) -> list[dict]:
    return [{"model": r["model"], "sampler": f"{r['sampler']} ({r.get('engine', '')})", "K": r["steps"],
             "samples": r["n"],
             "FD_cnn": r.get("fd"), "FD floor": r.get("fd_floor"), "precision": r.get("precision"),
             "recall": r.get("recall"), "confidence": r["quality"]["mean_max_probability"],
             "classes": r["classes"]["covered"], "largest class": r["classes"]["largest_fraction"]}
            for r in rows if not r.get("bound_only")]


def show(rows: list[dict], key: str) -> None:
    if any(r.get("nll") for r in rows):
        st.markdown("**Likelihood bound** (bits/dim on Fashion-MNIST test images, lower is better)")
        st.dataframe(nll_table(rows), hide_index=True, width="stretch")
        st.plotly_chart(terms_figure(rows), width="stretch", key=f"{key}_terms")
    st.markdown("**Samples against the test set** (probe's penultimate features)")
    st.plotly_chart(steps_figure(rows), width="stretch", key=f"{key}_steps")
    st.dataframe(figures_table(rows), hide_index=True, width="stretch")


def model_quality_tab(probe_model, load: Callable[[str], object]) -> None:
    """The tab: shipped measurements, then an on-demand evaluation (progress + Cancel + JSON download)."""
    st.caption("Improved-DDPM style judgement: the variational bound in bits/dim (with the discretised decoder), "
               "and Fréchet distance / precision / recall in the probe's penultimate features beside the FD floor "
               "(training vs test images). Mean confidence alone cannot tell a varied model from a collapsed one.")
    if MEASURED.is_file():
        measured = json.loads(MEASURED.read_text())
        with st.expander(f"Measured for the shipped models ({measured.get('note', '')})", expanded=True):
            show(measured["results"], f"{KEY}_shipped")
            widgets.download_json(measured, "diffusion_quality.json", "Measured figures JSON",
                                  key=f"{KEY}_shipped_json")

    st.markdown("**Evaluate now** (small defaults: a few seconds per model and K on a CPU)")
    c1, c2 = st.columns([2, 1])
    shipped = available_diffusion_models()
    chosen = c1.multiselect("Models", shipped, default=shipped[:2], key=f"{KEY}_models")
    folder = c2.text_input("…and a diffusers folder", "", key=f"{KEY}_folder")
    c1, c2, c3, c4, c5 = st.columns(5)
    ks = c1.multiselect("Steps K", STEP_CHOICES, default=[10, 25], key=f"{KEY}_ks")
    sampler = c2.selectbox("Sampler", ["ddim", "ancestral"], key=f"{KEY}_sampler",
                           help="ancestral uses the learned Σ where the model has one (respaced steps)")
    n = c3.number_input("Samples per K", 4, 2000, 32, key=f"{KEY}_n", help="FD needs hundreds for a stable value")
    nll_images = c4.number_input("Bound: test images", 0, 1000, 4, key=f"{KEY}_nll_n")
    nll_steps = c5.number_input("Bound: UNet calls / image", 21, 4000, 50, key=f"{KEY}_nll_steps",
                                help="≥ the model's T: exact; fewer: stratified, unbiased estimate")
    if probe_model is None:
        st.info("Pick a probe classifier in the sidebar: FD, precision and recall are measured in its features.")
        return
    if widgets.run_controls(KEY, "Evaluate"):
        try:
            names = list(chosen) + ([folder] if folder else [])
            if not names or not ks:
                raise UserInputError("Pick at least one model and one K.")
            models = [load(name) for name in names]
            progress = widgets.LiveProgress(KEY, "Evaluating", unit="UNet call")
            results = quality_sweep(models, probe_model, sorted(int(k) for k in ks), n=int(n), sampler=sampler,
                                    nll_images=int(nll_images), nll_steps=int(nll_steps), callback=progress)
            progress.done()
            st.session_state[f"{KEY}_rows"] = [r.to_dict(include_terms=True) for r in results]
        except UserInputError as exc:
            st.error(widgets.error_text(exc))
    rows = st.session_state.get(f"{KEY}_rows")
    if rows:
        show(rows, f"{KEY}_run")
        widgets.download_json({"results": rows}, "diffusion_quality_run.json", "Results JSON", key=f"{KEY}_run_json")


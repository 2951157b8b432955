"""Page: Fooling noise — how often does random static fool the classifier, and grow noise into a
≥ 99.6 % fooling image. All maths lives in explorer.fooling."""

from __future__ import annotations

import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots

from explorer import fooling
from explorer.errors import UserInputError
from explorer.images import grid, png_bytes
from explorer.models import available_models
from explorer.progress import CANCELLED
from explorer.ui import display, settings_widgets, widgets

KEY = "fool"
SWEEP, GROW = f"{KEY}_sweep", f"{KEY}_grow"

model = widgets.page_header(
    "Fooling noise",
    "Nguyen, Yosinski & Clune (2015) found static that a network labels with ≥ 99.6 % confidence. "
    "How often does *random* static do it? Sweep noise families for the base rate (exact 95 % "
    "Clopper–Pearson intervals), then grow one sample into a fooling image by gradient ascent.",
    KEY)


def noise_options(key: str) -> fooling.NoiseOptions:
    d = fooling.NoiseOptions()
    with st.expander("Noise family options"):
        c1, c2 = st.columns(2)
        sigma = c1.number_input("Gaussian σ", 0.01, 10.0, d.sigma, step=0.05, key=f"{key}_sigma")
        exponent = c2.number_input("Pink exponent a (amplitude 1/f^a)", 0.0, 4.0, d.pink_exponent,
                                   step=0.25, key=f"{key}_pink_a")
        density = c1.number_input("Salt & pepper density", 0.0, 1.0, d.density, step=0.05, key=f"{key}_density")
        grey = c2.checkbox("Grey pink noise", False, key=f"{key}_pink_grey")
    return fooling.NoiseOptions(sigma=float(sigma), pink_exponent=float(exponent),
                                pink_colour=not grey, density=float(density))


def family_label(name: str) -> str:
    return fooling.FAMILIES[name].title


# ---- sweep ---------------------------------------------------------------------------------------
def sweep_charts(result: fooling.SweepResult) -> None:
    models = list(dict.fromkeys(r.model for r in result.rows))
    thresholds = result.settings["thresholds"]
    fig = go.Figure()
    for row in result.rows:
        lows = [rate - lo for rate, (lo, _) in zip(row.rates, row.intervals)]
        highs = [hi - rate for rate, (_, hi) in zip(row.rates, row.intervals)]
        name = family_label(row.family) + (f" · {row.model}" if len(models) > 1 else "")
        fig.add_trace(go.Bar(x=[f"≥ {t:g}" for t in thresholds], y=row.rates, name=name,
                             error_y=dict(type="data", symmetric=False, array=highs, arrayminus=lows)))
    fig.update_layout(title="Fooling rate (max softmax ≥ threshold) with exact 95 % intervals", barmode="group",
                      yaxis_title="share of samples", height=360, margin=dict(l=10, r=10, t=40, b=10))
    st.plotly_chart(fig, width="stretch", key=f"{SWEEP}_rates")

    log_y = st.checkbox("Log scale", True, key=f"{SWEEP}_log")
    hist = make_subplots(rows=len(models), cols=1, shared_xaxes=True, subplot_titles=models, vertical_spacing=0.08)
    bins = len(result.rows[0].histogram) if result.rows else fooling.HISTOGRAM_BINS
    centres = [(i + 0.5) / bins for i in range(bins)]
    for row in result.rows:
        share = [c / row.n for c in row.histogram]
        hist.add_trace(go.Bar(x=centres, y=share, name=f"{family_label(row.family)} · {row.model}", opacity=0.6,
                              width=1 / bins), row=models.index(row.model) + 1, col=1)
    for i, name in enumerate(models):
        hist.update_yaxes(title_text="share", row=i + 1, col=1)
        if log_y:  # decades labelled, minor ticks unlabelled
            display.log_axis(hist, [c / row.n for row in result.rows if row.model == name for c in row.histogram],
                             row=i + 1, col=1)
    hist.update_xaxes(title_text="max softmax probability", range=[0, 1], row=len(models), col=1)
    hist.update_layout(barmode="overlay", title="Distribution of the top-class probability",
                       height=300 * len(models) + 60, margin=dict(l=10, r=10, t=60, b=10))
    st.plotly_chart(hist, width="stretch", key=f"{SWEEP}_hist")


def sweep_table(result: fooling.SweepResult) -> list[dict]:
    rows = []
    for row in result.rows:
        cells = {"model": row.model, "family": family_label(row.family), "n": row.n}
        for t, rate, (lo, hi) in zip(row.thresholds, row.rates, row.intervals):
            cells[f"≥ {t:g}"] = f"{rate:.4f} [{lo:.4f}, {hi:.4f}]"
        cells["mean max p"] = round(row.mean_confidence, 4)
        cells["entropy (nats)"] = f"{row.mean_entropy:.2f} / {row.max_entropy:.2f}"
        cells["top classes"] = ", ".join(f"{c['label']} {c['share']:.0%}" for c in row.top_classes[:3])
        rows.append(cells)
    return rows


def show_sweep(result: fooling.SweepResult, options: fooling.NoiseOptions) -> None:
    if result.stopped:
        st.warning(f"Sweep {result.stopped}: the numbers below cover the {result.images:,} samples done.")
    st.subheader(f"{result.images:,} samples in {result.seconds:.1f} s ({result.images_per_second:.1f} images/s)")
    st.dataframe(sweep_table(result), hide_index=True, width="stretch")
    c1, c2 = st.columns(2)
    c1.download_button("Download CSV", widgets.csv_bytes(result.table()), "fooling_sweep.csv",
                       "text/csv", key=f"{SWEEP}_csv")
    with c2:
        widgets.download_json(result.to_dict(), "fooling_sweep.json", "Download JSON (histograms, classes, intervals)",
                              key=f"{SWEEP}_json")
    sweep_charts(result)
    st.markdown("#### Which classes noise looks like")
    cols = st.columns(min(4, max(1, len(result.rows))))
    for i, row in enumerate(result.rows):
        with cols[i % len(cols)]:
            st.caption(f"{family_label(row.family)} · {row.model}")
            st.dataframe([{"class": c["class"], "label": c["label"], "count": c["count"], "share": round(c["share"], 4)}
                          for c in row.top_classes[:5]], hide_index=True, width="stretch")
    st.markdown("#### Most confidently misclassified samples")
    st.caption("Noise has no true class, so every confident answer on it is a misclassification; the photo "
               "control's gallery shows its most confident crops instead. Samples are regenerated from their index.")
    for i, row in enumerate(result.rows):
        if not row.gallery:
            continue
        images = fooling.gallery_images(row, options, device=model.device)
        st.markdown(f"**{family_label(row.family)} · {row.model}**" + (" (control)" if row.control else ""))
        cols = st.columns(len(images))
        for col, image, info in zip(cols, images, row.gallery):
            display.show_image(image,
                               caption=f"sample {info['index']}: {info['label']} {info['confidence']:.3f}",
                               container=col)
        widgets.download_png(grid(images, columns=len(images)), f"fooling_{row.model}_{row.family}_gallery.png",
                             "Gallery PNG", key=f"{SWEEP}_gallery_{i}")


def sweep_tab() -> None:
    left, right = st.columns([1, 1])
    with left:
        families = st.multiselect("Noise families", list(fooling.FAMILIES), default=list(fooling.SWEEP_FAMILIES),
                                  format_func=family_label, key=f"{SWEEP}_families",
                                  help="; ".join(f"{f.title}: {f.description}" for f in fooling.FAMILIES.values()))
        others = [s.name for s in available_models() if s.family == "imagenet" and s.name != model.name]
        extra = st.multiselect("Compare with models (pretrained weights, when they load offline)",
                               others, key=f"{SWEEP}_extra")
    with right:
        c1, c2, c3 = st.columns(3)
        n = settings_widgets.number(c1, "fool sweep", "n", step=100)  # label, default, range: explorer/vocabulary.py
        seed = settings_widgets.number(c2, "fool sweep", "seed")
        batch = settings_widgets.number(c3, "fool sweep", "batch", help="results do not depend on it")
        options = noise_options(SWEEP)
    go_col, cancel_col = st.columns([1, 6])
    start = go_col.button("Sweep", type="primary", key=f"{SWEEP}_go")
    with cancel_col:
        widgets.cancel_button(SWEEP)

    if widgets.cancelled(SWEEP):
        partial = st.session_state.get(f"{SWEEP}_running")
        if partial is not None:
            partial.stopped = CANCELLED
            st.session_state[f"{SWEEP}_result"] = (partial.result(), partial.options)
    elif start:
        try:
            models = [model]
            for name in extra:
                try:
                    other = widgets.cached_model(name, "pretrained")
                    if other.weights != "pretrained":  # a timm model without cached weights: random, no comparison
                        st.warning(f"{name} left out: {widgets.safe_text(other.description, 800)}")
                        continue
                    models.append(other)
                except UserInputError as exc:
                    st.warning(f"{name} left out: {widgets.error_text(exc)}")
            sweeper = fooling.Sweep(models, families, int(n), seed=int(seed), batch_size=int(batch), options=options)
            st.session_state[f"{SWEEP}_running"] = sweeper  # a cancel can still show what it had counted
            progress = widgets.LiveProgress(SWEEP, "Sweeping", preview_every=max(int(batch), int(batch) * 4))
            result = sweeper.run(callback=progress)
            progress.done()
            st.session_state[f"{SWEEP}_result"] = (result, options)
            st.session_state.pop(f"{SWEEP}_running", None)
        except UserInputError as exc:
            st.error(widgets.error_text(exc))
    stored = st.session_state.get(f"{SWEEP}_result")
    if stored is not None:
        show_sweep(*stored)


# ---- grow ----------------------------------------------------------------------------------------
def show_grow(result: fooling.GrowResult) -> None:
    if result.stopped and not result.stopped.startswith("target"):
        (st.error if result.stopped.startswith("diverged") else st.info)(f"Stopped: {result.stopped}")
    verdict = "reached" if result.reached else "not reached"
    st.subheader(f"{result.label} (class {result.target}): p = {result.confidence:.4f}, {verdict} {result.goal:g} "
                 f"after {result.steps} steps ({result.seconds:.1f} s)")
    c1, c2, c3, c4 = st.columns(4)
    c1.metric("Confidence", f"{result.confidence:.4f}",
              f"{result.confidence - result.start_confidence:+.4f} from start",
              help=f"as saved in the 8-bit PNG: {result.confidence_8bit:.4f}")
    c2.metric("L∞ from start", f"{result.distance['linf']:.4f}")
    c3.metric("L2 from start", f"{result.distance['l2']:.3f}")
    c4.metric("RMS change", f"{result.distance['rms']:.4f}")
    cols = st.columns(3)
    difference = fooling.difference_image(result.image, result.start)
    for col, image, caption, name in zip(
        cols, [result.start, result.image, difference],
        [f"start: p = {result.start_confidence:.4f}",
         f"fooling image: p = {result.confidence:.4f} (budget {result.budget})",
         "change, stretched (grey = none)"], ["start", "fooling", "difference"],
    ):
        display.show_image(image, caption=caption, container=col)
        col.download_button(f"{name}.png", png_bytes(image), f"fooling_{result.model}_{result.target}_{name}.png",
                            "image/png", key=f"{GROW}_dl_{name}")
    widgets.download_json(result.summary(), f"fooling_{result.model}_{result.target}.json", "Download result JSON",
                          key=f"{GROW}_dl_json")
    fig = go.Figure(go.Scatter(y=result.history, mode="lines", name="p(target)"))
    fig.add_hline(y=result.goal, line_dash="dot", annotation_text=f"{result.goal:g}")
    fig.update_layout(title="Target probability per step", xaxis_title="step", yaxis_title="p(target)", height=300,
                      margin=dict(l=10, r=10, t=40, b=10))
    st.plotly_chart(fig, width="stretch", key=f"{GROW}_history")
    if result.transfer:
        st.markdown("#### Does it fool other models? (registry models whose pretrained weights load offline)")
        st.dataframe([{"model": r["model"], "status": r["status"],
                       "p(target)": round(r["p_target"], 4) if "p_target" in r else None,
                       "top class": f"{r['top_class']} {r['top_label']}" if "top_class" in r else "",
                       "top p": round(r["top_p"], 4) if "top_p" in r else None, "fooled": r.get("fooled")}
                      for r in result.transfer], hide_index=True, width="stretch")


def grow_tab() -> None:
    left, right = st.columns([1, 1])
    with left:
        param = st.radio("Parameterisation", ["pixel", "cppn"], horizontal=True, key=f"{GROW}_param",
                         help="pixel: start from a noise sample, optionally inside a budget; cppn: Nguyen et al.'s "
                              "indirect encoding, from its own random init")
        c1, c2, c3 = st.columns(3)
        family = c1.selectbox("Start from", list(fooling.FAMILIES), format_func=family_label, key=f"{GROW}_family",
                              disabled=param == "cppn")
        index = settings_widgets.number(c2, "fool grow", "index",
                                        help="the same sample index as in a sweep with this seed")
        seed = settings_widgets.number(c3, "fool grow", "seed")
        use_top = st.checkbox("Target the start's current top class", True, key=f"{GROW}_use_top",
                              help="the default, as on the command line (fool grow without --class)")
        target = st.number_input("Target class", 0, model.num_classes - 1, min(309, model.num_classes - 1),
                                 key=f"{GROW}_target", disabled=use_top)
        if not use_top:
            st.caption(f"{int(target)}: {model.label(int(target))}")
    with right:
        c1, c2 = st.columns(2)
        default_budget = fooling.parse_budget(fooling.DEFAULT_BUDGET)  # the one default: page, CLI, docs
        kinds = ["linf", "l2", "none"]
        kind = c1.selectbox("Budget around the start", kinds,
                            index=kinds.index(default_budget.kind), key=f"{GROW}_budget",
                            disabled=param == "cppn",
                            help="L∞: largest change of any pixel; L2: norm of the whole change")
        eps = c2.number_input("Budget size", 0.001, 1000.0,
                              default_budget.eps if kind == default_budget.kind else 10.0, format="%.3f",
                              key=f"{GROW}_eps_{kind}", disabled=kind == "none" or param == "cppn")
        c1, c2, c3 = st.columns(3)
        steps = settings_widgets.number(c1, "fool grow", "steps", step=50)
        lr = settings_widgets.number(c2, "fool grow", "lr", format="%.3f")
        goal = settings_widgets.number(c3, "fool grow", "goal", format="%.4f")
        transfer = st.checkbox("Transfer table on other models", True, key=f"{GROW}_transfer")
        options = noise_options(GROW)
    if widgets.run_controls(GROW, "Grow"):
        try:
            budget = "none" if param == "cppn" or kind == "none" else f"{kind}:{eps}"
            progress = widgets.LiveProgress(GROW, "Growing", preview_every=max(1, int(steps) // 30), preview_columns=1)
            result = fooling.grow(model, None if use_top else int(target), family=family, seed=int(seed),
                                  index=int(index), options=options, budget=budget, param=param, steps=int(steps),
                                  lr=float(lr), goal=float(goal), callback=progress)
            progress.done()
            if transfer:
                with st.spinner("Transfer table…"):
                    result = fooling.with_transfer(result, model)
            st.session_state[f"{GROW}_result"] = result
        except UserInputError as exc:
            st.error(widgets.error_text(exc))
    result = st.session_state.get(f"{GROW}_result")
    if result is not None:
        show_grow(result)


sweep_part, grow_part = st.tabs(["How often does noise fool it?", "Grow a fooling image"])
with sweep_part:
    sweep_tab()
with grow_part:
    grow_tab()

"""Page: Layer gallery — every unit of a layer at a glance, Microscope-style, with permalinks.

The URL carries the view (``?model=…&layer=…&unit=…``, plus ``size``/``steps`` when they differ
from the thumbnail defaults), so copying it reopens the same unit anywhere.
"""

from __future__ import annotations

import json
import math
from urllib.parse import urlencode

import plotly.graph_objects as go
import streamlit as st
import torch

from explorer.errors import UserInputError
from explorer.gallery import (MAX, NEG, GalleryStore, build, builtin_image_set, ensure_examples, example_patch,
                              facets_variant, folder_image_set, layer_units, load_examples, lookup, top_examples)
from explorer.images import grid, load_image, png_bytes, to_uint8
from explorer.optvis import FAST
from explorer.ui import widgets

KEY = "gal"
PAGE_SIZE = 64
COLUMNS = 8
BETTER = FAST.with_(size=128, steps=256)

st.title("Layer gallery")
st.caption("What every channel of a layer wants to see: one feature visualisation per unit, rendered once and kept "
           "on disk, with the real photo patches that excite it most. The address bar is a permalink.")

with st.sidebar:
    model = widgets.model_picker(KEY)
if model is None:
    st.stop()

params = st.query_params
try:
    store = GalleryStore()
except UserInputError as exc:
    st.error(str(exc))
    st.stop()

layer = widgets.layer_picker(model, KEY)
try:
    n_units = layer_units(model, layer)
except UserInputError as exc:
    st.error(str(exc))
    st.stop()


def _int_param(name: str) -> int | None:
    value = params.get(name)
    try:
        return int(value) if value not in (None, "") else None
    except ValueError:
        return None


def _default_size_steps() -> tuple[int, int]:
    """URL first; else the thumbnail settings this layer was already rendered with (most units); else FAST."""
    size, steps = _int_param("size"), _int_param("steps")
    if size and steps:
        return size, steps
    for _, stored, _ in store.layer_digests(model.name, model.fingerprint, layer):
        if stored and FAST.with_(size=stored["size"], steps=stored["steps"]).to_dict() == stored:
            return size or stored["size"], steps or stored["steps"]
    return size or FAST.size, steps or FAST.steps


with st.sidebar:
    st.subheader("Render settings")
    default_size, default_steps = _default_size_steps()
    c1, c2 = st.columns(2)
    size = c1.number_input("Size (px)", 32, 512, default_size, step=16, key=f"{KEY}_size")
    steps = c2.number_input("Steps", 1, 4096, default_steps, step=32, key=f"{KEY}_steps",
                            help=f"Thumbnails: {FAST.steps} steps at {FAST.size} px (a layer in minutes on a CPU); "
                                 f"better: {BETTER.steps} steps at {BETTER.size} px.")
    c1, c2 = st.columns(2)
    facets = c1.number_input("Facets", 2, 8, 4, key=f"{KEY}_facets", help="diversity images per unit in the unit view")
    batch = c2.number_input("Batch", 1, 64, 16, key=f"{KEY}_batch", help="units optimised together (one pass per step)")
    st.subheader("Dataset examples")
    folder = st.text_input("Image folder (empty: built-in photos)", params.get("images", ""), key=f"{KEY}_folder")
    st.caption(f"Store: `{store.root}`")

settings = FAST.with_(size=int(size), steps=int(steps))


def chosen_image_set():
    """The photos for dataset examples (only the unit view needs them: the grid stays fast)."""
    try:
        return folder_image_set(folder) if folder.strip() else builtin_image_set()
    except UserInputError as exc:
        st.error(f"{exc} Using the built-in photos instead.")
        return builtin_image_set()


# ---- the URL mirrors the view --------------------------------------------------------------
params["model"] = model.name
params["layer"] = layer
weights_param = widgets.non_default_weights(model)  # None for the entry's default weights: links stay short
if weights_param:
    params["weights"] = weights_param
elif "weights" in params:
    del params["weights"]
for name, value, default in (("size", int(size), FAST.size), ("steps", int(steps), FAST.steps)):
    if value != default:
        params[name] = str(value)
    elif name in params:
        del params[name]
if folder.strip():
    params["images"] = folder.strip()
elif "images" in params:
    del params["images"]

unit = _int_param("unit")
if unit is not None and not 0 <= unit < n_units:
    st.error(f"Unit {unit} is out of range for {layer}: valid units are 0–{n_units - 1}.")
    unit = None


def open_unit(u: int | None) -> None:
    if u is None:
        st.query_params.pop("unit", None)
    else:
        st.query_params["unit"] = str(u)


def permalink(u: int) -> str:
    query = {"model": model.name, "layer": layer, "unit": str(u)}
    if weights_param:
        query["weights"] = weights_param
    if int(size) != FAST.size:
        query["size"] = str(int(size))
    if int(steps) != FAST.steps:
        query["steps"] = str(int(steps))
    if folder.strip():
        query["images"] = folder.strip()
    text = urlencode(query, safe="/:")
    base = ""
    try:
        base = (st.context.url or "").split("?")[0]
    except Exception:  # older Streamlit or AppTest: the query string alone still works
        base = ""
    return f"{base}?{text}"


def run_build(units: list[int], variants: list[str], label: str, cells: dict | None = None) -> None:
    """Render with live progress; finished units appear in their grid cells as they land."""
    def show(entry) -> None:
        if cells is not None and entry.unit in cells:
            cells[entry.unit].image(str(entry.file), caption=f"#{entry.unit} · {entry.activation:.2f}", width="stretch")

    progress = widgets.LiveProgress(KEY, label, preview_every=1, preview_columns=COLUMNS, unit="units")
    try:
        report = build(model, layer, units, settings, store=store, variants=variants, batch=int(batch),
                       wait_for_others=False, callback=progress, on_done=show)
    except UserInputError as exc:
        progress.done()
        st.error(str(exc))
        return
    progress.done()
    st.session_state[f"{KEY}_report"] = (f"Rendered {report.units_rendered} in {report.seconds:.1f} s"
                                         + (f" ({report.units_per_minute():.1f} units/minute)" if report.units_per_minute() else "")
                                         + (f"; {report.already_done} were already stored" if report.already_done else ""))
    st.rerun()


def show_report() -> None:
    message = st.session_state.pop(f"{KEY}_report", None)
    if message:
        st.success(message)
    if widgets.cancelled(KEY):
        st.warning("Cancelled: the units finished so far are stored; the rest can be rendered later.")


# ---- grid view -----------------------------------------------------------------------------
def grid_view() -> None:
    pages = max(1, math.ceil(n_units / PAGE_SIZE))
    labels = [f"units {p * PAGE_SIZE}–{min(n_units, (p + 1) * PAGE_SIZE) - 1}" for p in range(pages)]
    wanted = min(max(_int_param("page") or 0, 0), pages - 1)
    page = st.selectbox("Page", range(pages), index=wanted, format_func=lambda p: labels[p], key=f"{KEY}_page_{layer}") if pages > 1 else 0
    if page:
        params["page"] = str(page)
    elif "page" in params:
        del params["page"]
    units = list(range(page * PAGE_SIZE, min(n_units, (page + 1) * PAGE_SIZE)))
    entries = lookup(store, model, layer, settings, MAX, units)
    missing = [u for u in units if u not in entries]
    st.markdown(f"**{model.name} · {layer}** — {n_units} units · {len(entries)}/{len(units)} on this page rendered "
                f"at {int(size)} px, {int(steps)} steps")
    show_report()
    start = False
    if missing:
        c1, c2 = st.columns([2, 5])
        start = c1.button(f"Render {len(missing)} missing units", type="primary", key=f"{KEY}_render_page")
        with c2:
            widgets.cancel_button(KEY)
    cells: dict[int, object] = {}
    for row_start in range(0, len(units), COLUMNS):
        cols = st.columns(COLUMNS)
        for col, u in zip(cols, units[row_start : row_start + COLUMNS]):
            with col:
                cells[u] = st.empty()
                entry = entries.get(u)
                if entry is not None:
                    cells[u].image(str(entry.file), caption=f"#{u} · {entry.activation:.2f}", width="stretch")
                else:
                    cells[u].markdown(f"`#{u}` not rendered")
                st.button(f"Open #{u}", key=f"{KEY}_open_{u}", on_click=open_unit, args=(u,), width="stretch")
    if entries:
        rows = [{"unit": u, "activation": e.activation, "seconds": round(e.seconds, 3)} for u, e in entries.items()]
        c1, c2 = st.columns(2)
        c1.download_button("Download this page as a PNG sheet",
                           lambda: png_bytes(grid(torch.stack([load_image(str(e.file)) for e in entries.values()]), columns=COLUMNS)),
                           f"{model.name}_{layer}_p{page}.png", "image/png", key=f"{KEY}_dl_sheet")
        c2.download_button("Download activations CSV", widgets.csv_bytes(rows), f"{model.name}_{layer}_p{page}.csv", "text/csv",
                           key=f"{KEY}_dl_csv")
    if start:
        run_build(missing, [MAX], f"Rendering {len(missing)} units of {layer}", cells)


# ---- unit view -----------------------------------------------------------------------------
def activation_histogram(table: dict, u: int, own: float | None) -> go.Figure:
    fig = go.Figure()
    fig.add_trace(go.Histogram(x=table["max"][:, u].tolist(), name="max over positions", opacity=0.7, nbinsx=40))
    fig.add_trace(go.Histogram(x=table["mean"][:, u].tolist(), name="mean over positions", opacity=0.6, nbinsx=40))
    if own is not None:
        fig.add_vline(x=own, line_dash="dash", annotation_text="visualisation (mean)", annotation_position="top")
    fig.update_layout(barmode="overlay", height=300, margin=dict(l=10, r=10, t=30, b=10), xaxis_title="activation",
                      yaxis_title="views", title=f"Unit {u} over {table['max'].shape[0]} views of the photo set")
    return fig


def unit_view(u: int) -> None:
    nav = st.columns([1, 1, 1, 4])
    nav[0].button("← Grid", key=f"{KEY}_back", on_click=open_unit, args=(None,))
    nav[1].button("◀ Previous", key=f"{KEY}_prev", on_click=open_unit, args=(max(0, u - 1),), disabled=u == 0)
    nav[2].button("Next ▶", key=f"{KEY}_next", on_click=open_unit, args=(min(n_units - 1, u + 1),), disabled=u >= n_units - 1)
    st.header(f"Unit {u} · {layer} · {model.name}")
    st.markdown("Permalink (or copy the address bar):")
    st.code(permalink(u), language=None)
    show_report()
    fv_query = {"model": model.name, "layer": layer, "unit": str(u), "objective": "channel",
                "size": str(int(size)), "steps": str(int(steps))}
    if weights_param:
        fv_query["weights"] = weights_param
    try:
        st.page_link("explorer/ui/pages/feature_vis.py", label="Open in Feature visualisation", icon="🔭", query_params=fv_query)
    except Exception:  # the page is not registered (page run on its own): a plain link does the same
        st.markdown(f"[Open in Feature visualisation](feature_vis?{'&'.join(f'{k}={v}' for k, v in fv_query.items())})")

    main = lookup(store, model, layer, settings, MAX, [u]).get(u)
    negative = lookup(store, model, layer, settings, NEG, [u]).get(u)
    facet_variant = facets_variant(int(facets))
    facet_entry = lookup(store, model, layer, settings, facet_variant, [u]).get(u)
    left, right = st.columns([2, 3])
    with left:
        st.subheader("Visualisation")
        if main is not None:
            st.image(str(main.file), caption=f"mean activation {main.activation:.3f} · {main.seconds:.1f} s", width=384)
            st.download_button("PNG", main.file.read_bytes(), f"{model.name}_{layer}_{u}.png", "image/png", key=f"{KEY}_dl_main")
        else:
            st.info("Not rendered yet with these settings.")
    with right:
        st.subheader(f"Facets ({int(facets)}) and negative")
        if facet_entry is not None:
            cols = st.columns(len(facet_entry.files))
            for col, path, act in zip(cols, facet_entry.files, facet_entry.activations):
                col.image(str(path), caption=f"{act:.2f}", width="stretch")
        if negative is not None:
            st.image(str(negative.file), caption=f"negative (minimised) · activation {negative.activation:.3f}", width=160)
        if facet_entry is None or negative is None:
            st.caption("Facets: the same unit rendered several times with a diversity term; negative: the image it likes least.")
    todo = [v for v, e in ((MAX, main), (NEG, negative), (facet_variant, facet_entry)) if e is None]
    if todo:
        c1, c2 = st.columns([2, 5])
        names = {MAX: "visualisation", NEG: "negative", facet_variant: f"{int(facets)} facets"}
        if c1.button(f"Render {' + '.join(names[v] for v in todo)}", type="primary", key=f"{KEY}_render_unit"):
            with c2:
                widgets.cancel_button(KEY)
            run_build([u], todo, f"Rendering unit {u} ({', '.join(todo)})")

    st.subheader("Dataset examples")
    image_set = chosen_image_set()
    table = load_examples(model, layer, image_set, store)
    if table is None:
        st.caption(f"The patches of {image_set.name} ({len(image_set)} views with crops and flips) that excite this unit most. "
                   "Activations are computed once per model, layer and image set (one pass for all units).")
        if st.button(f"Find dataset examples ({len(image_set)} views)", key=f"{KEY}_examples"):
            progress = widgets.LiveProgress(KEY, f"Activations of {layer} on {image_set.name}", unit="views")
            try:
                ensure_examples(model, [layer], image_set, store, callback=progress)
            except UserInputError as exc:
                st.error(str(exc))
            progress.done()
            st.rerun()
        return
    examples = top_examples(table, u, k=8)
    patches = [example_patch(e, model.input_size) for e in examples]
    cols = st.columns(len(examples) or 1)
    for col, example, patch in zip(cols, examples, patches):
        col.image(to_uint8(patch),
                  caption=f"{example.view.label} · {example.activation:.2f}", width="stretch")
    st.caption(f"Crops of the effective receptive field ({int(table['rf'])} px of the {model.input_size[0]} px input) "
               "around each view's strongest position; at most two views per photo.")
    st.plotly_chart(activation_histogram(table, u, main.activation if main else None), width="stretch", key=f"{KEY}_hist")
    summary = {"model": model.name, "fingerprint": model.fingerprint, "layer": layer, "unit": u, "settings": settings.to_dict(),
               "activation": main.activation if main else None, "negative_activation": negative.activation if negative else None,
               "facet_activations": list(facet_entry.activations) if facet_entry else None, "image_set": image_set.name,
               "examples": [{"view": e.view.label, "activation": e.activation, "position": e.position, "box": e.box} for e in examples]}
    c1, c2 = st.columns(2)
    if patches:
        c1.download_button("Download example patches PNG", png_bytes(grid(torch.stack(patches), columns=len(patches))),
                           f"{model.name}_{layer}_{u}_examples.png", "image/png", key=f"{KEY}_dl_examples")
    c2.download_button("Download unit JSON", json.dumps(summary, indent=2), f"{model.name}_{layer}_{u}.json", "application/json",
                       key=f"{KEY}_dl_json")


if unit is None:
    grid_view()
else:
    unit_view(unit)

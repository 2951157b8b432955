"""Page: Layer gallery — every unit of every layer, Microscope-style: a model overview, layer grids whose
images are the links, a unit view, permalinks.

Opens on the shipped atlas (``assets/atlas``, EfficientNet-Lite0) when the model and settings match it;
the user's own store takes precedence unit by unit. The URL carries the view (``?model=…&layer=…&unit=…``,
plus ``size``/``steps`` when they differ from the thumbnail defaults): no ``layer`` is the overview.
"""

from __future__ import annotations

import base64
import html
import json
import math
import mimetypes
from functools import lru_cache
from pathlib import Path
from urllib.parse import urlencode

import plotly.graph_objects as go
import streamlit as st
import torch

from explorer.errors import UserInputError
from explorer.gallery import (MAX, NEG, THUMBNAILS, GalleryStore, all_layers, build, builtin_image_set, ensure_examples,
                              example_patch, facet_count, facets_variant, folder_image_set, layer_units, load_examples,
                              lookup, top_examples)
from explorer.gallery.atlas import find_atlas
from explorer.gallery.examples import allowed_image_folder, image_root
from explorer.gallery.jobs import current_job, start_build
from explorer.images import grid, load_image, png_bytes
from explorer.optvis import RenderSettings
from explorer.ui import display, settings_widgets, widgets

KEY = "gal"
PAGE_SIZE = 128  # tiles per grid page: every block of EfficientNet-Lite0 up to 112 units fits one page
SAMPLES = 8  # units per layer row in the overview
OVERVIEW = "(overview: every layer)"
REFRESH_SECONDS = 1.0  # how often a grid with a background build in progress refreshes

model = widgets.page_header(
    "Layer gallery",
    "What every channel of every layer wants to see: one feature visualisation per unit, rendered once and "
    "kept on disk, with the real photo patches that excite it most. Click an image to open it; the address bar "
    "is a permalink.",
    KEY)

params = st.query_params
try:
    store = GalleryStore()
except UserInputError as exc:
    st.error(widgets.error_text(exc))
    st.stop()
atlas = find_atlas(model)
base = atlas.settings if atlas is not None else THUMBNAILS  # the thumbnail settings of this model's gallery
gallery_layers = all_layers(model)
other_layers = [i.name for i in model.main_layers() if i.name not in gallery_layers and i.name != "output"]


def _int_param(name: str) -> int | None:
    value = params.get(name)
    try:
        return int(value) if value not in (None, "") else None
    except ValueError:
        return None


# ---- layer: none (the overview), a gallery layer, or any layer with C or C×H×W outputs -------------
wanted_layer = params.get("layer") or None
options = [OVERVIEW] + gallery_layers + other_layers
if wanted_layer and wanted_layer not in options:
    if wanted_layer in model.layer_shapes:
        options.append(wanted_layer)
    else:
        st.warning(
            f"{model.name} has no layer {widgets.quoted_text(wanted_layer)}: showing the overview of its layers.")
        wanted_layer = None
with st.sidebar:
    chosen = st.selectbox("Layer", options, index=options.index(wanted_layer) if wanted_layer in options else 0,
                          format_func=lambda n: n if n == OVERVIEW
                          else f"{n}  ({'×'.join(map(str, model.layer_shapes[n]))})",
                          key=f"{KEY}_layer")
layer = None if chosen == OVERVIEW else chosen
n_units = 0
if layer is not None:
    try:
        n_units = layer_units(model, layer)
    except UserInputError as exc:
        st.error(widgets.error_text(exc))
        st.stop()


def _default_size_steps() -> tuple[int, int]:
    """URL first; else the thumbnail settings this layer was already rendered with (most units); else the atlas's."""
    size, steps = _int_param("size"), _int_param("steps")
    if size and steps:
        return size, steps
    if layer is not None:
        for _, stored, _ in store.layer_digests(model.name, model.fingerprint, layer):
            if stored and base.with_(size=stored["size"], steps=stored["steps"]).to_dict() == stored:
                return size or stored["size"], steps or stored["steps"]
    return size or base.size, steps or base.steps


with st.sidebar:
    st.subheader("Render settings")
    default_size, default_steps = _default_size_steps()
    c1, c2 = st.columns(2)
    size = settings_widgets.number(c1, "gallery build", "size", default_size, step=16)  # explorer/vocabulary.py
    steps = settings_widgets.number(c2, "gallery build", "steps", default_steps, step=32,
                            help=f"Thumbnails: {base.steps} steps at {base.size} px"
                                 + (" (the shipped atlas's settings)." if atlas is not None else "."))
    c1, c2 = st.columns(2)
    facets = c1.number_input("Facets", 2, 8, 4, key=f"{KEY}_facets", help="diversity images per unit in the unit view")
    batch = settings_widgets.number(c2, "gallery build", "batch", help="units optimised together (one pass per step)")
    st.subheader("Dataset examples")
    folder = st.text_input("Image folder (empty: built-in photos)", params.get("images", ""), key=f"{KEY}_folder")
    st.caption(f"Store: `{store.root}`" + (f"  \nAtlas: `{atlas.root}` (read-only; your renders take precedence)"
                                            if atlas is not None else ""))

settings = base.with_(size=int(size), steps=int(steps))


def chosen_image_set():
    """The photos for dataset examples (only the unit view needs them: the grid stays fast). A folder
    (typed or from the link's ?images=) is read only inside $EXPLORER_IMAGE_ROOT, never elsewhere on the server."""
    if not folder.strip():
        return builtin_image_set()
    try:
        image_set = folder_image_set(allowed_image_folder(folder), root=image_root())
    except UserInputError as exc:
        st.error(f"{widgets.error_text(exc)} Using the built-in photos instead.")
        return builtin_image_set()
    if image_set.skipped:
        st.warning(f"Left out {len(image_set.skipped)} unreadable file(s): "
                   + "; ".join(widgets.safe_text(s) for s in image_set.skipped[:3])
                   + (" …" if len(image_set.skipped) > 3 else ""))
    return image_set


# ---- the URL mirrors the view --------------------------------------------------------------
weights_param = widgets.non_default_weights(model)  # None for the entry's default weights: links stay short


def view_query(**view) -> dict:
    """The query of a view (model, layer, unit, page) with this session's weights/settings/folder."""
    query = {"model": model.name}
    query.update({k: str(v) for k, v in view.items() if v is not None})
    if weights_param:
        query["weights"] = weights_param
    if int(size) != base.size:
        query["size"] = str(int(size))
    if int(steps) != base.steps:
        query["steps"] = str(int(steps))
    if folder.strip():
        query["images"] = folder.strip()
    return query


def href(**view) -> str:
    return "?" + urlencode(view_query(**view), safe="/:")


same_layer = layer is not None and layer == (params.get("layer") or None)  # else the sidebar switched layers
wanted_query = view_query(layer=layer, unit=params.get("unit") if same_layer else None,
                          page=params.get("page") if same_layer else None)
for name in list(params.keys()):
    if name not in wanted_query:
        del params[name]
for name, value in wanted_query.items():
    if params.get(name) != value:
        params[name] = value

unit = _int_param("unit") if layer is not None else None
if unit is not None and not 0 <= unit < n_units:
    st.error(f"Unit {unit} is out of range for {layer}: valid units are 0–{n_units - 1}.")
    unit = None


def open_unit(u: int | None) -> None:
    if u is None:
        st.query_params.pop("unit", None)
    else:
        st.query_params["unit"] = str(u)


def permalink(u: int) -> str:
    base_url = ""
    try:
        base_url = (st.context.url or "").split("?")[0]
    except Exception:  # older Streamlit or AppTest: the query string alone still works
        base_url = ""
    return f"{base_url}{href(layer=layer, unit=u)}"


# ---- tiles: the image is the link ---------------------------------------------------------------
@lru_cache(maxsize=8192)
def _data_uri(path: str, mtime_ns: int, size_bytes: int) -> str:
    mime = mimetypes.guess_type(path)[0] or "image/png"
    return f"data:{mime};base64,{base64.b64encode(Path(path).read_bytes()).decode()}"


def data_uri(path: Path) -> str:
    stat = path.stat()
    return _data_uri(str(path), stat.st_mtime_ns, stat.st_size)


TILE_CSS = """<style>
.gal-grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(92px,1fr));gap:6px;margin:4px 0 12px 0}
.gal-row{display:grid;grid-template-columns:repeat(8,minmax(0,1fr));gap:6px;margin:2px 0 14px 0}
.gal-tile{display:block;text-decoration:none;color:inherit;font-size:0.72rem;text-align:center}
.gal-tile img{width:100%;aspect-ratio:1/1;object-fit:cover;border-radius:4px;display:block}
.gal-tile:hover img{outline:2px solid #ff4b4b}
.gal-missing{width:100%;aspect-ratio:1/1;border-radius:4px;
  background:repeating-linear-gradient(45deg,#eee,#eee 6px,#e4e4e4 6px,#e4e4e4 12px);
  display:flex;align-items:center;justify-content:center;color:#888}
.gal-layer{font-weight:600;text-decoration:none}
</style>"""


def tile(u: int, entry, link: str) -> str:
    caption = f"#{u} · {entry.activation:.2f}" if entry is not None else f"#{u}"
    picture = (f'<img src="{data_uri(entry.file)}" alt="unit {u}" loading="lazy">' if entry is not None
               else '<div class="gal-missing">not rendered</div>')
    return f'<a class="gal-tile" href="{html.escape(link)}" target="_self" title="unit {u}">{picture}{caption}</a>'


# ---- overview: every layer as a row of sample units ---------------------------------------------
def overview() -> None:
    total_units = sum(layer_units(model, name) for name in gallery_layers)
    st.markdown(f"**{model.name}** — {len(gallery_layers)} layers, {total_units} units. Each row shows {SAMPLES} units "
                "spread over the layer; click a row to open its layer" + (", rendered ahead of time (shipped atlas)."
                                                                          if atlas is not None else "."))
    parts = [TILE_CSS]
    missing_layers = 0
    for name in gallery_layers:
        n = layer_units(model, name)
        entries = lookup(store, model, name, settings, MAX, atlas=atlas)
        samples = sorted({int(i * n / SAMPLES) for i in range(min(SAMPLES, n))})
        link = href(layer=name)
        missing_layers += len(entries) < n
        parts.append(f'<div><a class="gal-layer" href="{html.escape(link)}" target="_self">{html.escape(name)}</a>'
                     f' · {n} units · {len(entries)}/{n} rendered</div><div class="gal-row">'
                     + "".join(tile(u, entries.get(u), link) for u in samples) + "</div>")
    st.html("".join(parts))
    if missing_layers:
        st.caption(f"{missing_layers} layer(s) are not fully rendered with these settings: "
                   "open one to build its missing units.")


# ---- layer grid ----------------------------------------------------------------------------------
def layer_grid() -> None:
    pages = max(1, math.ceil(n_units / PAGE_SIZE))
    labels = [f"units {p * PAGE_SIZE}–{min(n_units, (p + 1) * PAGE_SIZE) - 1}" for p in range(pages)]
    top = st.columns([2, 2, 3])
    top[0].markdown(f'<a href="{html.escape(href())}" target="_self">← Overview of all layers</a>',
                    unsafe_allow_html=True)
    wanted_page = min(max(_int_param("page") or 0, 0), pages - 1)
    page = top[1].selectbox("Page", range(pages), index=wanted_page, format_func=lambda p: labels[p],
                            key=f"{KEY}_page_{layer}", label_visibility="collapsed") if pages > 1 else 0
    if page:
        params["page"] = str(page)
    elif "page" in params:
        del params["page"]
    search_key = f"{KEY}_search_{layer}"

    def search() -> None:
        wanted = st.session_state.get(search_key)
        if wanted is not None:
            open_unit(int(wanted))
            st.session_state[search_key] = None

    top[2].number_input("Open unit", 0, n_units - 1, value=None, step=1, key=search_key, on_change=search,
                        placeholder=f"search: unit number 0–{n_units - 1}, then Enter", label_visibility="collapsed")
    show_report()
    units = list(range(page * PAGE_SIZE, min(n_units, (page + 1) * PAGE_SIZE)))
    job = current_job(model, layer, settings)
    was_running = job is not None and job.running

    @st.fragment(run_every=REFRESH_SECONDS if was_running else None)
    def live_grid() -> None:
        running = current_job(model, layer, settings)
        entries_all = lookup(store, model, layer, settings, MAX, atlas=atlas)
        entries = {u: entries_all[u] for u in units if u in entries_all}
        missing = [u for u in range(n_units) if u not in entries_all]
        source = ""
        if atlas is not None and atlas.units(layer) and atlas.serves(model, settings):
            own = len(store.entries(model.name, model.fingerprint, layer, settings.digest(), MAX))
            source = " · shipped atlas" + (f" + {own} of your own renders" if own else "")
        st.markdown(f"**{model.name} · {layer}** — {n_units} units · {len(entries_all)}/{n_units} rendered at "
                    f"{int(size)} px, {int(steps)} steps{source}")
        if running is not None and running.running:
            c1, c2 = st.columns([5, 1])
            c1.progress(running.fraction, text=f"Building {running.total} units in the background: "
                                               f"{running.done:.0f}/{running.total} · the grid fills in as they finish")
            c2.button("Cancel build", key=f"{KEY}_cancel_build", on_click=running.cancel)
        elif missing:
            label = f"Build the {len(missing)} missing units of {layer}"
            if st.button(label, type="primary", key=f"{KEY}_build_missing",
                         help="Renders in the background (batches of the sidebar's size); browse on meanwhile."):
                start_build(model, layer, missing, settings, store, batch=int(batch))
                st.rerun()
        if running is not None and not running.running and running.error:
            st.error(f"The background build stopped: {widgets.safe_text(running.error, 800)}")
        tiles = "".join(tile(u, entries.get(u), href(layer=layer, unit=u)) for u in units)
        st.html(TILE_CSS + '<div class="gal-grid">' + tiles + "</div>")
        if entries:
            rows = [{"unit": u, "activation": e.activation, "seconds": round(e.seconds, 3)} for u, e in entries.items()]
            c1, c2 = st.columns(2)
            c1.download_button("Download this page as a PNG sheet",
                               lambda: png_bytes(grid(torch.stack([load_image(str(e.file)) for e in entries.values()]),
                                                      columns=8)),
                               f"{model.name}_{layer}_p{page}.png", "image/png", key=f"{KEY}_dl_sheet")
            c2.download_button("Download activations CSV", widgets.csv_bytes(rows), f"{model.name}_{layer}_p{page}.csv",
                               "text/csv", key=f"{KEY}_dl_csv")
        if was_running and not running.running:
            st.rerun()  # the build finished: one full rerun stops the refreshing and updates the counts

    live_grid()


VARIANT_WORDS = {MAX: "visualisation", NEG: "negative"}


def variant_words(variant: str) -> str:
    return VARIANT_WORDS.get(variant) or f"{facet_count(variant)} facets"


def report_message(report, what: str = "") -> str:
    """What a build rendered, in words and images: "Rendered unit 4: negative and 4 facets (5 images) in 15.0 s"."""
    done = [(v, u) for v, u in report.rendered.items() if u]
    images = sum(len(u) * (facet_count(v) if v.startswith("facets") else 1) for v, u in done)
    units = sorted({x for _, u in done for x in u})
    if not done:
        text = "Rendered nothing new"
    else:
        who = f"unit {units[0]}" if len(units) == 1 else f"{len(units)} units"
        words = [variant_words(v) for v, _ in done]
        listed = " and ".join(words) if len(words) < 3 else ", ".join(words[:-1]) + " and " + words[-1]
        text = f"Rendered {who}{what}: {listed} ({images} image{'s' if images != 1 else ''}) in {report.seconds:.1f} s"
    return text + (f"; {report.already_done} were already stored" if report.already_done else "")


def full_size_settings(thumbnails: RenderSettings) -> RenderSettings:
    """The unit view's large image: the library's render settings at the network's own input size (the
    thumbnails are small renders; enlarging one would only blow up its pixels)."""
    return RenderSettings(size=int(model.input_size[0]), seed=thumbnails.seed)


def run_build(units: list[int], variants: list[str], label: str, with_settings: RenderSettings | None = None,
              what: str = "") -> None:
    """Render with live progress (the unit view's missing variants: seconds, not minutes)."""
    progress = widgets.LiveProgress(KEY, label, preview_every=1, preview_columns=8, unit="units")
    try:
        report = build(model, layer, units, with_settings or settings, store=store, variants=variants, batch=int(batch),
                       wait_for_others=False, callback=progress)
    except UserInputError as exc:
        progress.done()
        st.error(widgets.error_text(exc))
        return
    progress.done()
    st.session_state[f"{KEY}_report"] = report_message(report, what)
    st.rerun()


def show_report() -> None:
    message = st.session_state.pop(f"{KEY}_report", None)
    if message:
        st.success(message)
    if widgets.cancelled(KEY):
        st.warning("Cancelled: the units finished so far are stored; the rest can be rendered later.")


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
    nav[2].button("Next ▶", key=f"{KEY}_next", on_click=open_unit, args=(min(n_units - 1, u + 1),),
                  disabled=u >= n_units - 1)
    st.header(f"Unit {u} · {layer} · {model.name}")
    st.markdown("Permalink (or copy the address bar):")
    st.code(permalink(u), language=None)
    show_report()
    fv_query = {"model": model.name, "layer": layer, "unit": str(u), "objective": "channel",
                "size": str(int(size)), "steps": str(int(steps))}
    if weights_param:
        fv_query["weights"] = weights_param
    try:
        st.page_link("explorer/ui/pages/feature_vis.py", label="Open in Feature visualisation",
                     icon="🔭", query_params=fv_query)
    except Exception:  # the page is not registered (page run on its own): a plain link does the same
        st.markdown(f"[Open in Feature visualisation](feature_vis?{'&'.join(f'{k}={v}' for k, v in fv_query.items())})")

    main = lookup(store, model, layer, settings, MAX, [u], atlas=atlas).get(u)
    full_settings = full_size_settings(settings)
    full = lookup(store, model, layer, full_settings, MAX, [u]).get(u)
    negative = lookup(store, model, layer, settings, NEG, [u]).get(u)
    facet_variant = facets_variant(int(facets))
    facet_entry = lookup(store, model, layer, settings, facet_variant, [u]).get(u)
    left, right = st.columns([2, 3])
    with left:
        st.subheader("Visualisation")
        shown = full or main  # the full-size render once there is one; never the thumbnail blown up
        if shown is not None:
            image = load_image(str(shown.file))
            scale = display.integer_scale(image.shape[-1], 384)
            what = (f"full size, {full_settings.size} px, {full_settings.steps} steps" if shown is full else
                    f"thumbnail, {image.shape[-1]} px" + (f" shown ×{scale}" if scale > 1 else ""))
            display.show_image(image, caption=f"{what} · mean activation {shown.activation:.3f}"
                               + (f" · {shown.seconds:.1f} s" if shown.seconds else ""), target=384)
            suffix = shown.file.suffix
            st.download_button(suffix[1:].upper(), shown.file.read_bytes(),
                               f"{model.name}_{layer}_unit-{u:04d}{suffix}",
                               mimetypes.guess_type(shown.file.name)[0] or "image/png", key=f"{KEY}_dl_main")
        else:
            st.info("Not rendered yet with these settings.")
        if full is None and st.button(f"Render at full size ({full_settings.size} px, {full_settings.steps} steps)",
                                      key=f"{KEY}_render_full",
                                      help="The grid keeps the small thumbnail; this renders the unit once more at the "
                                           "network's input size and keeps it in your store."):
            run_build([u], [MAX], f"Rendering unit {u} at {full_settings.size} px", full_settings, " at full size")
    with right:
        st.subheader(f"Facets ({int(facets)}) and negative")
        if facet_entry is not None:
            cols = st.columns(len(facet_entry.files))
            for col, path, act in zip(cols, facet_entry.files, facet_entry.activations):
                display.show_image(load_image(str(path)), caption=f"{act:.2f}", target=192, container=col)
        if negative is not None:
            display.show_image(load_image(str(negative.file)),
                               caption=f"negative (minimised) · activation {negative.activation:.3f}",
                               target=192)
        if facet_entry is None or negative is None:
            st.caption("Facets: the same unit rendered several times with a diversity term; "
                       "negative: the image it likes least.")
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
    if table is None and atlas is not None:
        table = atlas.examples(layer, image_set.digest)
    if table is None:
        st.caption(f"The patches of {widgets.safe_text(image_set.name)} ({len(image_set)} views with crops and flips) "
                   "that excite this unit most. "
                   "Activations are computed once per model, layer and image set (one pass for all units).")
        if st.button(f"Find dataset examples ({len(image_set)} views)", key=f"{KEY}_examples"):
            progress = widgets.LiveProgress(KEY, f"Activations of {layer} on {widgets.safe_text(image_set.name)}",
                                            unit="views")
            try:
                ensure_examples(model, [layer], image_set, store, callback=progress)
            except UserInputError as exc:
                st.error(widgets.error_text(exc))
            progress.done()
            st.rerun()
        return
    examples = top_examples(table, u, k=8)
    patches = [example_patch(e, model.input_size) for e in examples]
    cols = st.columns(len(examples) or 1)
    for col, example, patch in zip(cols, examples, patches):
        display.show_image(patch, caption=f"{widgets.safe_text(example.view.label, 120)} · {example.activation:.2f}",
                           target=128, container=col)
    st.caption(f"Crops of the effective receptive field ({int(table['rf'])} px of the {model.input_size[0]} px input) "
               "around each view's strongest position; at most two views per photo.")
    st.plotly_chart(activation_histogram(table, u, main.activation if main else None), width="stretch",
                    key=f"{KEY}_hist")
    summary = {"model": model.name, "fingerprint": model.fingerprint, "layer": layer, "unit": u,
               "settings": settings.to_dict(), "activation": main.activation if main else None,
               "negative_activation": negative.activation if negative else None,
               "facet_activations": list(facet_entry.activations) if facet_entry else None, "image_set": image_set.name,
               "examples": [{"view": e.view.label, "activation": e.activation, "position": e.position, "box": e.box}
                            for e in examples]}
    c1, c2 = st.columns(2)
    if patches:
        c1.download_button("Download example patches PNG", png_bytes(grid(torch.stack(patches), columns=len(patches))),
                           f"{model.name}_{layer}_{u}_examples.png", "image/png", key=f"{KEY}_dl_examples")
    c2.download_button("Download unit JSON", json.dumps(summary, indent=2), f"{model.name}_{layer}_{u}.json",
                       "application/json", key=f"{KEY}_dl_json")


if layer is None:
    overview()
elif unit is None:
    layer_grid()
else:
    unit_view(unit)

"""Widgets shared by every page: model/layer pickers, progress with preview and cancel, downloads."""

from __future__ import annotations

import json
import re
from typing import Callable

import streamlit as st
import torch

from ..errors import UserInputError, quoted, shorten
from ..files import csv_bytes  # noqa: F401  (pages build CSV downloads with it)
from ..images import grid, png_bytes, to_uint8
from ..models import DEFAULT_MODEL, LoadedModel, WeightsUnavailable, available_models, get_spec, load_model


# What Streamlit's Markdown (st.error/warning/info/caption/markdown) would turn into links, images, HTML, code,
# maths, headings or coloured text: backslash-escaped (CommonMark shows an escaped character as itself).
_MARKDOWN_ACTIVE = re.compile(r"([\\`\[\]<>$#*~|])")
_AUTOLINK = re.compile(r"(?i)(://|www\.)")


def safe_text(value: object, limit: int = 200) -> str:
    """THE way a page shows a user-supplied string (a URL parameter, a file or layer name, an upload's name, an
    error message that quotes one) inside Markdown: on one line, at most ``limit`` characters (an ellipsis marks
    the cut), with every character that Markdown or HTML would act on escaped, and bare URLs broken, so a link
    can show text but never inject a link, an image or markup into the page."""
    text = _MARKDOWN_ACTIVE.sub(r"\\\1", shorten(value, limit))
    return _AUTOLINK.sub(lambda m: ":\\/\\/" if m.group(1) == "://" else m.group(1)[:3] + "\\.", text)


def quoted_text(value: object, limit: int = 80) -> str:
    """A user's value in quotes (shortened inside them), escaped by :func:`safe_text`."""
    return safe_text(quoted(value, limit), limit + 10)


def error_text(exc: BaseException) -> str:
    """A user error's message for st.error: library messages already shorten the values they quote."""
    return safe_text(str(exc), limit=800)


@st.cache_resource(show_spinner="Loading model…")
def cached_model(name: str, weights: str) -> LoadedModel:
    """One model object per process, shared read-only by every session (the registry also caches)."""
    model = load_model(name, weights)
    _ = model.layers  # dry run once, here, not in every session
    return model


def model_picker(key: str, default: str | None = None, family: str | None = "imagenet") -> LoadedModel | None:
    """Model and weights selectors; shows a clear message (not a traceback) when weights are missing."""
    for linked in (st.query_params.get("model"), default):  # timm:NAME (a prefixed name) joins the list on first use
        if linked and ":" in linked and not linked.startswith("checkpoint:"):
            try:
                get_spec(linked)
            except UserInputError as exc:  # a typo (text box or link) says so; the list's model is shown instead
                st.warning(error_text(exc))
    specs = [s for s in available_models() if family is None or s.family == family or s.name == default]
    names = [s.name for s in specs]
    wanted = st.query_params.get("model") or default or DEFAULT_MODEL
    index = names.index(wanted) if wanted in names else (names.index(DEFAULT_MODEL) if DEFAULT_MODEL in names else 0)
    titles = {s.name: s.title for s in specs}
    name = st.selectbox("Model", names, index=index, format_func=lambda n: titles.get(n, n), key=f"{key}_model")
    spec = next(s for s in specs if s.name == name)
    weight_options = ["pretrained", "random"]
    wanted_weights = st.query_params.get("weights") or spec.default_weights
    weights = st.selectbox(
        "Weights", weight_options,
        index=weight_options.index(wanted_weights) if wanted_weights in weight_options else 0,
        key=f"{key}_weights", help="'random' gives the bare architecture (untrained).",
    )
    try:
        model = cached_model(name, weights)
        if weights == "pretrained" and model.weights == "random":
            # e.g. a timm model whose weights are not in the local cache
            st.warning(safe_text(model.description, limit=400))
        return model
    except WeightsUnavailable as exc:
        st.error(error_text(exc))
    except UserInputError as exc:
        st.error(error_text(exc))
    return None


def page_header(title: str, caption: str, model_key: str | None = None,
                default: str | Callable[[], str | None] | None = None) -> LoadedModel | None:
    """Every page opens the same way: its title and a caption that says what it does, then (given ``model_key``)
    the sidebar's model picker. A page needs its model, so when none loads (the picker has said why) the page stops
    here. ``default`` may be a function that draws its own sidebar widgets above the picker and returns the
    default model's name."""
    st.title(title)
    st.caption(caption)
    if model_key is None:
        return None
    with st.sidebar:
        model = model_picker(model_key, default=default() if callable(default) else default)
    if model is None:
        st.stop()
    return model


def non_default_weights(model: LoadedModel) -> str | None:
    """The model's weights choice when a link must carry it (not the entry's default), else None."""
    try:
        default = get_spec(model.name).default_weights
    except UserInputError:  # not a registry entry (a user checkpoint): its weights are its file
        return None
    return model.weights if model.weights != default else None


def layer_picker(model: LoadedModel, key: str, include_output: bool = False, default: str | None = None) -> str:
    """Layer selector showing output shapes; the main layers first, every submodule on request."""
    show_all = st.checkbox("All submodules", value=False, key=f"{key}_all_layers")
    infos = model.layers if show_all else model.main_layers()
    infos = [i for i in infos if include_output or i.name != "output"]
    names = [i.name for i in infos]
    shapes = {i.name: "×".join(map(str, i.shape)) for i in infos}
    fallback = default or model.default_layer
    wanted = st.query_params.get("layer") or fallback
    for name in (wanted, fallback):  # a deeper submodule named in a link joins the list
        if name and name not in names and name in model.layer_shapes and (include_output or name != "output"):
            names.append(name)
            shapes[name] = "×".join(map(str, model.layer_shapes[name]))
    if wanted and wanted not in names:
        shown = fallback if fallback in names else names[0]
        st.warning(f"{safe_text(model.name)} has no layer {quoted_text(wanted)} (from the link): showing "
                   f"{safe_text(shown)} instead.")
        wanted = shown
    index = names.index(wanted) if wanted in names else 0
    return st.selectbox("Layer", names, index=index,
                        format_func=lambda n: f"{n}  ({shapes.get(n, '?')})", key=f"{key}_layer")


def int_param(name: str, default: int, lo: int, hi: int) -> int:
    """A whole number from the URL (links carry size, steps, units …), clamped to the widget's range;
    the default when absent or unreadable. Never raises: a link cannot break a page."""
    value = st.query_params.get(name)
    try:
        number = int(float(value)) if value not in (None, "") else int(default)
    except (TypeError, ValueError, OverflowError):
        number = int(default)
    return min(hi, max(lo, number))


def remembered_upload(label: str, types: list[str], key: str) -> tuple[str, bytes] | None:
    """A file uploader whose file survives reruns (and switching the page's source back and forth) until
    the user removes it with its ✕: then it is forgotten at once. Returns (file name, bytes) or None."""
    state = f"{key}_kept"

    def changed() -> None:  # runs on upload and on ✕, never when the widget is merely re-created
        uploaded = st.session_state.get(key)
        if uploaded is None:
            st.session_state.pop(state, None)
        else:
            st.session_state[state] = (uploaded.name, uploaded.getvalue())

    uploaded = st.file_uploader(label, type=types, key=key, on_change=changed)
    if uploaded is not None:
        st.session_state[state] = (uploaded.name, uploaded.getvalue())
    elif state in st.session_state:  # kept from before the uploader was last shown: say so, offer to drop it
        c1, c2 = st.columns([3, 1])
        c1.caption(f"Using {safe_text(st.session_state[state][0], 120)}, uploaded earlier.")
        if c2.button("Remove", key=f"{key}_forget"):
            st.session_state.pop(state, None)
    return st.session_state.get(state)


class LiveProgress:
    """The pages' :data:`~explorer.progress.ProgressCallback` for library jobs: a progress bar, a status
    line and a preview image every ``preview_every`` steps. The latest preview is kept in session state
    so a cancelled run can still show (and offer) what it had reached: Cancel reruns the page, which
    makes Streamlit abandon the running job at its next progress update."""

    def __init__(self, key: str, label: str, preview_every: int = 8, preview_columns: int = 8, unit: str = "step"):
        self.key, self.label, self.preview_every, self.unit = key, label, max(1, preview_every), unit
        self.bar = st.progress(0.0, text=label)
        self.preview = st.empty()
        self.columns = preview_columns
        st.session_state.pop(f"{key}_partial", None)

    def __call__(self, step: float, total: int, preview: torch.Tensor | None = None,
                 values: torch.Tensor | None = None) -> None:
        text = f"{self.label}: {self.unit} {step:g}/{total}"  # fractional counts (e.g. units of a batch) allowed
        if values is not None and values.numel():
            text += f" · objective {float(values.float().mean()):.3f}"
        self.bar.progress(min(1.0, step / max(total, 1)), text=text)
        if preview is not None and (step % self.preview_every == 0 or step == total):
            images = preview.detach().float().cpu()
            st.session_state[f"{self.key}_partial"] = {"step": step, "images": images}
            if images.ndim == 4:
                preview_grid = grid(images[: self.columns * 2], columns=self.columns)
                self.preview.image(to_uint8(preview_grid), caption=f"step {step}")

    def done(self) -> None:
        self.bar.empty()
        self.preview.empty()


def cancel_button(key: str) -> None:
    """A Cancel button. Clicking it reruns the page, which stops the running job at its next
    progress update; the page then finds ``cancelled(key)`` true and shows the partial result."""
    if st.button("Cancel", key=f"{key}_cancel"):
        st.session_state[f"{key}_cancelled"] = True


def cancelled(key: str) -> bool:
    return bool(st.session_state.pop(f"{key}_cancelled", False))


def run_controls(key: str, label: str) -> bool:
    """The primary button and Cancel, side by side. True when a job should start now; after a cancel
    it shows the partial result (``show_partial``) and returns False."""
    go_col, cancel_col = st.columns([1, 6])
    start = go_col.button(label, type="primary", key=f"{key}_go")
    with cancel_col:
        cancel_button(key)
    if cancelled(key):
        show_partial(key)
        return False
    return start


def show_partial(key: str) -> None:
    partial = st.session_state.get(f"{key}_partial")
    if partial:
        st.warning(f"Cancelled at step {partial['step']}; this is the last preview.")
        st.image(to_uint8(grid(partial["images"])), caption=f"step {partial['step']}")
        st.download_button("Download partial PNG", png_bytes(grid(partial["images"])), f"{key}_partial.png",
                           "image/png", key=f"{key}_partial_dl")


def download_png(image: torch.Tensor, filename: str, label: str = "PNG", key: str | None = None) -> None:
    st.download_button(label, png_bytes(image), filename, "image/png", key=key or f"dl_{filename}")


def download_json(data: dict, filename: str, label: str = "JSON", key: str | None = None) -> None:
    st.download_button(label, json.dumps(data, indent=2, default=str), filename, "application/json",
                       key=key or f"dl_{filename}")


"""Page: Feature visualisation — what does a unit, a layer or a class want to see?"""

from __future__ import annotations

import plotly.graph_objects as go
import streamlit as st

from explorer.errors import UserInputError
from explorer.images import grid
from explorer.models.judges import judge_class_images, transfer_models
from explorer.naming import image_names, image_units, unit_kind
from explorer.optvis import RenderSettings, objectives, render
from explorer.optvis.transformer import unit_count, unit_objective
from explorer.parsing import parse_units
from explorer.ui import display, settings_widgets, widgets
from explorer.vocabulary import term

KEY = "fv"
DEFAULTS = RenderSettings()


def any_timm_model() -> str | None:
    """The sidebar's optional timm box, above the model picker: the picker's default when filled in."""
    any_timm = st.text_input("Any timm model (optional)", "", placeholder="e.g. vit_small_patch16_224",
                             key=f"{KEY}_timm",
                             help="Any name timm.list_models() knows; pretrained weights only from the local cache "
                                  "(EXPLORER_ALLOW_DOWNLOAD=1 lets it download), random otherwise.").strip()
    return f"timm:{any_timm.removeprefix('timm:')}" if any_timm else None


model = widgets.page_header(
    "Feature visualisation",
    "Gradient ascent from noise, in a decorrelated Fourier space, under transformation robustness: "
    "the image each unit would most like to see.",
    KEY, default=any_timm_model)

params = st.query_params
token = None  # a token index (neuron objective on a transformer layer)

left, right = st.columns([1, 1])
with left:
    transformer = model.token_prefix is not None  # a ViT: its blocks output N tokens × C channels
    kinds = ["channel", "neuron", "class", "deepdream"] + (["cls", "head"] if transformer else [])
    wanted_kind = params.get("objective", "channel")
    kind_labels = {"cls": "CLS token", "head": "attention head"}
    kind = st.radio("Objective", kinds, index=kinds.index(wanted_kind) if wanted_kind in kinds else 0,
                    horizontal=True, key=f"{KEY}_kind", format_func=lambda k: kind_labels.get(k, k),
                    help="On a transformer layer: channel = mean over the patch tokens, neuron = one token, "
                         "CLS token = the CLS token's channel, attention head = energy of one head's output "
                         "(units are heads).")
    layer = "output" if kind == "class" else widgets.layer_picker(model, KEY)
    if kind == "class":
        units_text = st.text_input("Classes (e.g. 309 or 1,281)", params.get("unit", "309"), key=f"{KEY}_classes")
        try:
            classes_shown = parse_units(units_text, limit=model.num_classes)[:8]
            st.caption(" · ".join(f"{u}: {model.label(u)}" for u in classes_shown))
        except UserInputError as exc:
            st.caption(f"⚠ {widgets.error_text(exc)}")
    elif kind == "deepdream":
        units_text = ""
    else:
        try:
            size_hint = unit_count(model, layer, kind)  # channels (the last axis of a token layer), or heads
        except UserInputError as exc:
            size_hint = 0
            st.caption(f"⚠ {widgets.error_text(exc)}")
        what = "Heads" if kind == "head" else "Units"
        units_text = st.text_input(f"{what} (0–{size_hint - 1}; one image each, e.g. 0-3,7)",
                                   params.get("unit", term("visualize", "units").default), key=f"{KEY}_units")
        token = None
        if kind == "neuron" and model.check_layer(layer).tokens:
            picked = st.number_input("Token (−1: the centre patch; 0: CLS)", -1, 4096, -1, key=f"{KEY}_token")
            token = None if picked < 0 else int(picked)
with right:
    c1, c2, c3 = st.columns(3)
    # labels, defaults and ranges: explorer/vocabulary.py (the CLI's and the docs' too); a link may carry steps/size
    steps_default = widgets.int_param("steps", DEFAULTS.steps, *term("visualize", "steps").widget_range())
    steps = settings_widgets.number(c1, "visualize", "steps", steps_default, step=32)
    size_default = widgets.int_param("size", DEFAULTS.size, *term("visualize", "size").widget_range())
    size = settings_widgets.number(c2, "visualize", "size", size_default, step=16)
    seed = settings_widgets.number(c3, "visualize", "seed")
    c1, c2, c3 = st.columns(3)
    param = settings_widgets.choice(c1, "visualize", "param",
                         help="fft: decorrelated Fourier; pixel; maco: only the phase moves, under the mean spectrum "
                              "of photos (Fel et al. 2023); cppn: a small network per image")
    transforms = settings_widgets.choice(c2, "visualize", "transforms",
                              help="standard: pad, jitter, scale 0.95–1.05, rotate ±5°, jitter (Olah et al. 2017)")
    decorrelate = c3.checkbox("Decorrelate colour", True, key=f"{KEY}_decorrelate")
    with st.expander("Priors and more"):
        c1, c2 = st.columns(2)
        lr = settings_widgets.number(c1, "visualize", "lr", format="%.3f")
        decay = settings_widgets.number(c2, "visualize", "decay")
        tv = settings_widgets.number(c1, "visualize", "tv")
        alpha = settings_widgets.number(c2, "visualize", "alpha")
        l2 = settings_widgets.number(c1, "visualize", "l2")
        blur_every = settings_widgets.number(c2, "visualize", "blur_every")
        blur_sigma = settings_widgets.number(c1, "visualize", "blur_sigma")
        diversity = settings_widgets.number(c2, "visualize", "diversity")
        batch = c1.number_input("Images (deepdream / diversity)", 1, 64, 1, key=f"{KEY}_batch")

settings = RenderSettings(size=int(size), steps=int(steps), lr=float(lr), param=param, decorrelate=decorrelate,
                          decay=float(decay), transforms=transforms, tv=float(tv), alpha=float(alpha), l2=float(l2),
                          blur_every=int(blur_every), blur_sigma=float(blur_sigma), diversity=float(diversity),
                          seed=int(seed))


def build_objective() -> objectives.Objective:
    if kind == "deepdream":
        return objectives.deepdream(layer)
    units = parse_units(units_text)
    if kind == "class":
        return objectives.class_logit(units)
    return unit_objective(model, layer, units, kind, token)  # token objectives on a ViT's N×C layers


if widgets.run_controls(KEY, "Render"):
    try:
        objective = build_objective()
        objective.validate(model.layer_shapes)
        progress = widgets.LiveProgress(KEY, f"Rendering {objective.name}", preview_every=max(1, int(steps) // 16))
        result = render(model, objective, settings, batch=None if objective.batch else int(batch), callback=progress)
        progress.done()
        st.session_state[f"{KEY}_result"] = result
        st.session_state[f"{KEY}_names"] = image_names(objective, len(result.images))
        st.session_state[f"{KEY}_unit_list"] = {"unit_kind": unit_kind(objective),
                                                "units": image_units(objective, len(result.images))}
        st.session_state[f"{KEY}_judges"] = None
        if kind == "class" and not result.stopped:  # the optimised network cannot fail its own test: ask others
            with st.spinner("Asking independent judges (other ImageNet models)…"):
                others, _ = transfer_models(model)
                classes = parse_units(units_text)
                class_verdicts = judge_class_images(result.images, classes, [model, *others])
                st.session_state[f"{KEY}_judges"] = (classes, class_verdicts)
    except UserInputError as exc:
        st.error(widgets.error_text(exc))

result = st.session_state.get(f"{KEY}_result")
if result is not None:
    if result.stopped:
        (st.error if result.diverged else st.info)(f"Stopped: {result.stopped}")
    st.subheader(f"{result.model} · {result.objective} · {result.steps_done} steps in {result.seconds:.1f} s")
    names = st.session_state.get(f"{KEY}_names") or image_names(None, len(result.images))
    per_row = min(4, len(result.images))
    cols = st.columns(per_row)
    for i, (image, name) in enumerate(zip(result.images, names)):
        with cols[i % per_row]:  # each image by its own unit number, at its native size or a whole multiple
            display.show_image(image, caption=f"{name.label} · activation {float(result.final_activation[i]):.3f}")
            widgets.download_png(image, name.filename(prefix=f"{result.model}_"), key=f"{KEY}_dl_{i}")
    judged = st.session_state.get(f"{KEY}_judges")
    if judged is not None:
        classes, verdicts = judged
        st.markdown(f"**Who names the class?** {verdicts[0].model} is the network that was optimised (its own "
                    "verdict cannot fail); the others are independent judges, each shown the image at its own input "
                    "size and preprocessing. Rank 1 = its first choice.")
        if len(verdicts) == 1:
            st.caption("No other model of this family loads offline here: no independent judge.")
        st.dataframe([{"image": names[i].label, "class": f"{c} {model.label(c)}",
                       **{f"{v.model}{' (optimised)' if k == 0 else ''}": f"rank {v.ranks[i] + 1}, p {v.p_class[i]:.3f}"
                          for k, v in enumerate(verdicts)}} for i, c in enumerate(classes)], hide_index=True)
    c1, c2 = st.columns(2)
    with c1:
        widgets.download_png(grid(result.images), f"{result.model}_grid.png", "Download grid PNG", key=f"{KEY}_dl_grid")
    with c2:
        summary = {**result.summary(), **st.session_state.get(f"{KEY}_unit_list", {})}
        widgets.download_json(summary, f"{result.model}_render.json", "Download settings + activations JSON",
                              key=f"{KEY}_dl_json")
    if len(result.history):
        fig = go.Figure()
        for i in range(result.history.shape[1]):
            fig.add_trace(go.Scatter(y=result.history[:, i].tolist(), mode="lines", name=names[i].label))
        fig.update_layout(title="Objective per step (priors included, transformed image)", xaxis_title="step",
                          yaxis_title="objective", height=320, margin=dict(l=10, r=10, t=40, b=10))
        st.plotly_chart(fig, width="stretch")

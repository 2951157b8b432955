"""Page: Inversion & DeepDream — what does layer N still know about a photo, and what does it see in it?"""

from __future__ import annotations

import plotly.graph_objects as go
import streamlit as st

from explorer import inversion
from explorer.errors import UserInputError
from explorer.images import BUILTIN_PHOTOS
from explorer.ui import display, settings_widgets, widgets
from explorer.vocabulary import term

KEY = "inv"
UPLOAD_TYPES = ["png", "jpg", "jpeg", "webp", "bmp", "tif", "tiff", "gif"]

model = widgets.page_header(
    "Inversion & DeepDream",
    "Reconstruct a photo from one layer's activations (Mahendran & Vedaldi 2015), amplify what a layer "
    "sees in it (DeepDream), or exaggerate it from noise (caricature).",
    KEY)


# ---- the photo -------------------------------------------------------------------------------------
left, right = st.columns([1, 2])
with left:
    source = st.radio("Photo", ["Built-in", "Upload"], horizontal=True, key=f"{KEY}_source")
    if source == "Built-in":
        name = st.selectbox("Built-in photo", BUILTIN_PHOTOS,
                            index=BUILTIN_PHOTOS.index("astronaut"), key=f"{KEY}_builtin")
        photo_source, photo_name = f"builtin:{name}", name
    else:
        upload = widgets.remembered_upload("Upload a photo (PNG, JPEG, WebP, BMP, TIFF)", UPLOAD_TYPES, f"{KEY}_file")
        if upload is None:
            st.info("Upload a photo to start.")
            st.stop()
        photo_name, photo_source = upload
    c1, c2 = st.columns(2)
    # labels, defaults, ranges: explorer/vocabulary.py
    size = int(settings_widgets.number(c1, "invert", "size", step=16))
    fit_mode = c2.radio("Aspect", inversion.FIT_MODES, horizontal=True, key=f"{KEY}_fit",
                        help="Non-square photos: centre-crop, or pad with grey.")
    try:
        photo = inversion.load_photo(photo_source, size, fit_mode, name=photo_name)
    except UserInputError as exc:
        st.error(widgets.error_text(exc))
        st.stop()
    display.show_image(photo, caption=f"{widgets.safe_text(photo_name, 120)} · {size}×{size}")

with right:
    mode = st.radio("Mode", ["Invert layers", "DeepDream", "Caricature"], horizontal=True, key=f"{KEY}_mode")
    main_spatial = [i.name for i in model.main_layers() if len(i.shape) == 3 or i.tokens]  # C×H×W, or a ViT's N×C
    c1, c2, c3 = st.columns(3)
    seed = int(settings_widgets.number(c3, "invert", "seed"))
    if mode == "Invert layers":
        layers = st.multiselect("Layers (one reconstruction each, one batched run)", main_spatial,
                                default=[l for l in inversion.default_layers(model) if l in main_spatial],
                                key=f"{KEY}_layers")
        steps = int(settings_widgets.number(c1, "invert", "steps", step=50))
        param = settings_widgets.choice(c2, "invert", "param")
        c1, c2, c3 = st.columns(3)
        init = settings_widgets.choice(c1, "invert", "init",
                            help="blur: the photo blurred (σ = 8 px), a head start; image: another built-in photo")
        init_image = None
        if init == "image":
            other = st.selectbox("Starting photo", BUILTIN_PHOTOS,
                                 index=BUILTIN_PHOTOS.index("chelsea"), key=f"{KEY}_init_photo")
            init_image = inversion.load_photo(f"builtin:{other}", size, fit_mode)
        transforms = settings_widgets.choice(c2, "invert", "transforms",
                                  help="random jitter/scale/rotation applied to the image and the photo alike")
        lr = settings_widgets.number(c3, "invert", "lr", format="%.3f")
        with st.expander("Priors"):
            auto = st.checkbox("Prior weights by depth (Mahendran & Vedaldi)", True, key=f"{KEY}_auto_priors")
            if auto:
                st.caption(" · ".join(f"{l}: λ_TV {w[0]:.2f}, λ_α {w[1]:.3f}"
                                      for l, w in ((l, inversion.default_prior_weights(model, l)) for l in layers)))
                tv = alpha = None
            else:
                c1, c2 = st.columns(2)
                tv = float(c1.number_input("λ_TV (β = 2), every layer", 0.0, 1000.0, 1.0, key=f"{KEY}_tv"))
                alpha = float(c2.number_input("λ_α (α = 6), every layer", 0.0, 10.0, 0.01,
                                              format="%.4f", key=f"{KEY}_alpha"))
        settings = inversion.InversionSettings(size=size, steps=steps, lr=float(lr), param=param, tv=tv, alpha=alpha,
                                               transforms=transforms, init=init, seed=seed, fit=fit_mode)
        label = "Invert"
    elif mode == "DeepDream":
        layer = widgets.layer_picker(model, KEY)
        whole = c1.checkbox("Whole layer", True, key=f"{KEY}_whole")
        channel = None if whole else int(c2.number_input(
            f"Channel (0–{model.layer_shapes.get(layer, (1,))[0] - 1})", 0, 4095, 0, key=f"{KEY}_channel"))
        c1, c2, c3, c4 = st.columns(4)
        octaves = int(settings_widgets.number(c1, "dream", "octaves"))
        octave_scale = float(settings_widgets.number(c2, "dream", "octave_scale"))
        steps = int(settings_widgets.number(c3, "dream", "steps"))
        lr = float(settings_widgets.number(c4, "dream", "lr", format="%.3f"))
        jitter_term = term("dream", "jitter")
        jitter = int(st.slider(jitter_term.label, *jitter_term.widget_range(), jitter_term.default, key=jitter_term.key,
                               help="at most half the image size"))
        settings = inversion.DeepDreamSettings(size=size, octaves=octaves, octave_scale=octave_scale, steps=steps,
                                               lr=lr, jitter=jitter, seed=seed, fit=fit_mode)
        label = "Dream"
    else:
        default = [model.default_layer] if model.default_layer in main_spatial else main_spatial[-1:]
        layers = st.multiselect("Layers (one caricature each)", main_spatial, default=default, key=f"{KEY}_car_layers")
        steps = int(settings_widgets.number(c1, "caricature", "steps", step=32))
        param = settings_widgets.choice(c2, "caricature", "param")
        c1, c2, c3 = st.columns(3)
        cos_floor = float(settings_widgets.number(c1, "caricature", "cos_floor"))
        cos_power = float(settings_widgets.number(c2, "caricature", "cos_power"))
        transforms = settings_widgets.choice(c3, "caricature", "transforms")
        settings = inversion.CaricatureSettings(size=size, steps=steps, param=param,
                                                cos_floor=cos_floor, cos_power=cos_power,
                                                transforms=transforms, seed=seed, fit=fit_mode)
        label = "Caricature"


# ---- run -------------------------------------------------------------------------------------------
if widgets.run_controls(KEY, label):
    try:
        if mode == "Invert layers":
            progress = widgets.LiveProgress(KEY, "Inverting (value: mean normalised feature error)",
                                            preview_every=max(1, steps // 16))
            result = inversion.invert(model, photo, layers, settings, init_image=init_image, callback=progress)
        elif mode == "DeepDream":
            total = settings.steps * settings.octaves
            progress = widgets.LiveProgress(KEY, "Dreaming", preview_every=max(1, total // 16))
            result = inversion.deep_dream(model, photo, layer, channel, settings, callback=progress)
        else:
            progress = widgets.LiveProgress(KEY, "Caricaturing (value: mean cosine with the photo)",
                                            preview_every=max(1, steps // 16))
            result = inversion.caricature(model, photo, layers, settings, callback=progress)
        progress.done()
        st.session_state[f"{KEY}_result"] = {"mode": mode, "result": result, "photo_name": photo_name}
    except UserInputError as exc:
        st.error(widgets.error_text(exc))


# ---- results ---------------------------------------------------------------------------------------
def show_strip(photo, images, captions, stem: str) -> None:
    cols = st.columns(len(images) + 1)
    with cols[0]:
        display.show_image(photo, caption="photo")
    for col, image, caption, i in zip(cols[1:], images, captions, range(len(images))):
        with col:
            display.show_image(image, caption=caption)
            widgets.download_png(image, f"{stem}_{i}.png", "PNG", key=f"{KEY}_dl_{stem}_{i}")


def line_chart(history, names, title: str, y_title: str, log: bool = False) -> go.Figure:
    fig = go.Figure()
    for b, name in enumerate(names):
        fig.add_trace(go.Scatter(x=list(range(1, history.shape[0] + 1)), y=history[:, b].tolist(),
                                 mode="lines", name=name))
    fig.update_layout(title=title, xaxis_title="step", yaxis_title=y_title, height=340,
                      margin=dict(l=10, r=10, t=40, b=10))
    if log:  # decades labelled (0.01, 0.1, 1), minor ticks unlabelled: 0.2 and 2 never look alike
        display.log_axis(fig, history.flatten().tolist())
    return fig


saved = st.session_state.get(f"{KEY}_result")
if saved is not None and saved["mode"] == mode:
    result = saved["result"]
    stem = f"{result.model}_{saved['photo_name']}".replace(".", "_")
    if result.stopped:
        st.info(f"Stopped: {result.stopped}")
    if mode == "Invert layers":
        st.subheader(f"What each layer remembers · {result.steps_done} steps in {result.seconds:.1f} s")
        show_strip(result.photo, result.images,
                   [f"{r['layer']} · error {r['normalised_error']:.3f} · SSIM {r['ssim']:.2f} · "
                    f"PSNR {r['psnr_db']:.1f} dB" for r in result.rows()], f"{stem}_invert")
        c1, c2 = st.columns(2)
        with c1:
            st.plotly_chart(line_chart(result.error_history, result.layers, "Normalised feature error ‖Φ(x)−Φ0‖²/‖Φ0‖²",
                                       "error", log=True), width="stretch")
        with c2:
            fig = go.Figure([go.Bar(x=result.layers, y=result.final_error, name="feature error"),
                             go.Scatter(x=result.layers, y=result.ssim, name="SSIM", mode="lines+markers", yaxis="y2")])
            fig.update_layout(title="Final error and SSIM per layer", height=340, margin=dict(l=10, r=10, t=40, b=10),
                              yaxis=dict(title="normalised error"),
                              yaxis2=dict(title="SSIM", overlaying="y", side="right", range=[0, 1]))
            st.plotly_chart(fig, width="stretch")
        st.dataframe(result.rows(), hide_index=True)
        c1, c2 = st.columns(2)
        with c1:
            widgets.download_png(result.strip(), f"{stem}_strip.png", "Download strip PNG", key=f"{KEY}_dl_strip")
        with c2:
            widgets.download_json(result.summary(), f"{stem}_inversion.json",
                                  "Download errors + settings JSON", key=f"{KEY}_dl_json")
    elif mode == "DeepDream":
        st.subheader(f"{result.target} · ×{result.gain:.2f} layer objective · octaves {result.octave_sizes} px · "
                     f"{result.seconds:.1f} s")
        show_strip(result.photo, result.image[None],
                   [f"dream · objective {result.objective_before:.3f} → {result.objective_after:.3f}"],
                   f"{stem}_dream")
        st.plotly_chart(line_chart(result.history[:, None], [result.target],
                                   "Objective per step (all octaves, jittered image)", "objective"), width="stretch")
        c1, c2 = st.columns(2)
        with c1:
            widgets.download_png(result.pair(), f"{stem}_dream_pair.png",
                                 "Download photo + dream PNG", key=f"{KEY}_dl_pair")
        with c2:
            widgets.download_json(result.summary(), f"{stem}_dream.json", "Download settings JSON",
                                  key=f"{KEY}_dl_dream_json")
    else:
        st.subheader(f"Caricature · {result.steps_done} steps in {result.seconds:.1f} s")
        finals = zip(result.layers, result.final_cosine, result.final_dot)
        show_strip(result.photo, result.images, [f"{l} · cos {c:.2f} · dot/‖Φ0‖² {d:.2f}" for l, c, d in finals],
                   f"{stem}_caricature")
        st.plotly_chart(line_chart(result.cosine_history, result.layers,
                                   "Cosine similarity with the photo's activations", "cosine"), width="stretch")
        c1, c2 = st.columns(2)
        with c1:
            widgets.download_png(result.strip(), f"{stem}_caricature_strip.png", "Download strip PNG",
                                 key=f"{KEY}_dl_car_strip")
        with c2:
            widgets.download_json(result.summary(), f"{stem}_caricature.json", "Download settings JSON",
                                  key=f"{KEY}_dl_car_json")

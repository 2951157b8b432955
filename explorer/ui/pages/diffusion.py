"""Page: Diffusion inspector — scrub a DDPM/DDIM chain (x_t | x̂0 | ε) beside a classifier's beliefs."""

from __future__ import annotations

import plotly.graph_objects as go
import streamlit as st
import torch

from explorer.diffusion.analysis import (
    STATE_NAMES, chain_gif, probability_rows, summarise, summary_json, top_classes,
)
from explorer.diffusion.data import fashion_available, load_digits, load_fashion_mnist
from explorer.diffusion.models import available_diffusion_models, load_diffusion_model
from explorer.diffusion.recorder import ChainRecord, Probe, forward_process, sample_chain
from explorer import limits
from explorer.errors import UserInputError
from explorer.images import grid, load_image
from explorer.ui import display, widgets
from explorer.vocabulary import term

KEY = "diff"
SCHEDULE_TITLES = {"": "model's own", "linear": "linear", "squaredcos_cap_v2": "cosine (squaredcos_cap_v2)"}

widgets.page_header(
    "Diffusion inspector",
    "Watch an image condense out of noise: the state x_t, the model's guess of the clean image x̂0 and "
    "its predicted noise ε at every step, beside a classifier's probabilities on x_t and on x̂0.")


@st.cache_resource(show_spinner="Loading diffusion model…")
def cached_diffusion(name: str):
    return load_diffusion_model(name)


@st.cache_data(show_spinner=False)
def test_images(source: str) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    data = load_fashion_mnist("test") if source == "fashion" else load_digits("test")
    return data.images[:1000], data.labels[:1000], data.class_names


with st.sidebar:
    builtin = available_diffusion_models()
    choice = st.selectbox("Diffusion model", builtin + ["folder…"], key=f"{KEY}_model",
                          help="The project's Fashion-MNIST DDPM, or any diffusers-format UNet2DModel folder.")
    name = st.text_input("UNet folder", "", key=f"{KEY}_folder") if choice == "folder…" else choice
    st.caption("Probe classifier")
    probe_model = widgets.model_picker(f"{KEY}_probe", default="fashion_cnn", family=None)

if not name:
    st.info("Enter a folder in diffusers format (config.json + diffusion_pytorch_model.safetensors).")
    st.stop()
try:
    diffusion = cached_diffusion(name)
except UserInputError as exc:
    st.error(widgets.error_text(exc))
    st.stop()
st.caption(widgets.safe_text(diffusion.describe(), limit=300))  # a folder's name is user text
probe = Probe(probe_model) if probe_model is not None else None


# ---- shared viewers ------------------------------------------------------------------------------------
def probability_figure(record: ChainRecord, sample: int, step: int, k: int) -> go.Figure:
    """Top-k class probabilities vs t for x_t (solid) and x̂0 (dashed); the slider's step marked."""
    fig = go.Figure()
    ts = record.timesteps
    palette = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"]
    for n, cls in enumerate(top_classes(record, sample, k)):
        colour = palette[n % len(palette)]
        label = record.labels[cls] if cls < len(record.labels) else str(cls)
        fig.add_trace(go.Scatter(x=ts, y=record.probs_xt[:, sample, cls].tolist(), name=f"{label} · x_t",
                                 line=dict(color=colour), mode="lines"))
        fig.add_trace(go.Scatter(x=ts, y=record.probs_x0[:, sample, cls].tolist(), name=f"{label} · x̂0",
                                 line=dict(color=colour, dash="dash"), mode="lines"))
    fig.add_vline(x=ts[step], line=dict(color="grey", dash="dot"))
    reverse = record.kind == "reverse"
    fig.update_layout(height=340, margin=dict(l=10, r=10, t=30, b=10), yaxis=dict(range=[0, 1], title="probability"),
                      xaxis=dict(title="timestep t", autorange="reversed" if reverse else True),
                      title=f"sample #{sample}: top-{k} classes", legend=dict(font=dict(size=10)))
    return fig


def scrubber(record: ChainRecord, key: str, columns: int) -> tuple[int, int]:
    """Timestep slider + one sample's x_t | x̂0 | ε large (a whole multiple of their size), then every sample's
    at that step; returns (step, sample)."""
    options = record.stored_steps
    c1, c2 = st.columns([5, 1])
    step = c1.select_slider("Step (timestep t)", options=options, value=options[0],
                            format_func=lambda s: f"{s} (t={record.timesteps[s]})", key=f"{key}_step")
    sample = int(c2.number_input("Sample", 0, record.batch - 1, 0, key=f"{key}_sample",
                                 help="the sample shown large here and in the probability curves"))
    t = record.timesteps[step]
    for col, state in zip(st.columns(3), ("x_t", "x0", "eps")):
        display.show_image(record.state(step, state)[sample], caption=f"{STATE_NAMES[state]} at t={t}", target=288,
                           container=col)
    for col, state in zip(st.columns(3), ("x_t", "x0", "eps")):
        display.show_image(grid(record.state(step, state), columns=columns), target=288, container=col,
                           caption=f"{STATE_NAMES[state]} of every sample at t={t}")
    return step, sample


def curves(record: ChainRecord, step: int, sample: int, key: str) -> None:
    if not record.has_probes:
        st.info("Pick a probe classifier in the sidebar to see its probabilities along the chain.")
        return
    c1, c2 = st.columns([3, 1])
    k = c2.slider("Top-k classes", 1, min(8, record.probs_xt.shape[-1]), 3, key=f"{key}_k")
    c1.plotly_chart(probability_figure(record, int(sample), step, int(k)), width="stretch", key=f"{key}_fig")


def exports(record: ChainRecord, key: str, stem: str) -> None:
    c1, c2, c3, c4 = st.columns(4)
    c1.download_button("Chain GIF", chain_gif(record), f"{stem}_chain.gif", "image/gif", key=f"{key}_gif")
    if record.has_probes:
        c2.download_button("Probabilities CSV", widgets.csv_bytes(probability_rows(record)),
                           f"{stem}_probabilities.csv", "text/csv", key=f"{key}_csv")
    with c3:
        widgets.download_json(summary_json(record), f"{stem}_chain.json", "Summary JSON", key=f"{key}_json")
    with c4:
        widgets.download_png(grid(record.final), f"{stem}_final.png", "Final PNG", key=f"{key}_png")


sample_tab, forward_tab, quality_tab = st.tabs(["Sampling chain (reverse process)",
                                                "Forward process (noising a real image)",
                                                "Model quality"])

# ---- reverse process ------------------------------------------------------------------------------------
with sample_tab:
    c1, c2, c3, c4, c5, c6 = st.columns(6)
    sampler = c1.selectbox("Sampler", ["ddim", "ddpm", "ancestral"], key=f"{KEY}_sampler",
                           help="DDIM with η = 0 is deterministic given the seed; DDPM adds fresh noise every step; "
                                "ancestral is DDPM on evenly respaced steps with the model's Σ (Improved DDPM).")
    steps = c2.number_input("Steps", 1, diffusion.num_train_timesteps, 50, key=f"{KEY}_steps",
                            help="DDPM was trained with 1000; DDIM gives good samples in 50.")
    eta = c3.number_input("η (DDIM)", 0.0, 1.0, 0.0, step=0.1, key=f"{KEY}_eta", disabled=sampler != "ddim")
    schedule = c4.selectbox("Schedule", list(SCHEDULE_TITLES), format_func=SCHEDULE_TITLES.get, key=f"{KEY}_schedule",
                            help="Another schedule than the model's feeds the UNet "
                                 "the training timestep with the same noise level.")
    seed = c5.number_input("Seed", 0, 2**31 - 1, 0, key=f"{KEY}_seed")
    batch = c6.number_input("Samples", 1, limits.MAX_BATCH, term("diffusion sample", "n").default, key=f"{KEY}_batch",
                            help="how many chains are sampled together (`diffusion sample --n` on the command line)")
    if diffusion.learned_variance:
        st.caption("This model learned its variances (Improved DDPM): DDPM/ancestral sampling steps with the learned Σ "
                   "on the chosen number of evenly respaced steps; DDIM uses only its ε.")
    if widgets.run_controls(KEY, "Sample"):
        try:
            progress = widgets.LiveProgress(KEY, f"{sampler.upper()} sampling", preview_every=max(1, int(steps) // 10))
            record = sample_chain(diffusion, sampler=sampler, steps=int(steps), batch=int(batch), seed=int(seed),
                                  eta=float(eta), schedule=schedule or None, probe=probe, callback=progress,
                                  preview_every=max(1, int(steps) // 10))
            progress.done()
            st.session_state[f"{KEY}_record"] = record
        except UserInputError as exc:
            st.error(widgets.error_text(exc))

    record: ChainRecord | None = st.session_state.get(f"{KEY}_record")
    if record is not None:
        s = record.settings
        st.subheader(f"{s['sampler'].upper()} · {record.steps} steps · {record.batch} samples · seed {s['seed']} · "
                     f"{SCHEDULE_TITLES.get(s['schedule'], s['schedule'])} · {record.seconds:.1f} s")
        columns = min(8, record.batch)
        step, sample = scrubber(record, KEY, min(4, record.batch))
        curves(record, step, sample, KEY)
        rows = summarise(record)
        if rows:
            noise_p = sum(r.noise_probability for r in rows) / len(rows)
            settled = [r.settle_t_xt for r in rows if r.settle_t_xt is not None]
            m1, m2, m3 = st.columns(3)
            m1.metric("Probe's confidence on the starting noise", f"{noise_p:.2f}",
                      help="Every chain starts from pure noise x_T: the probe classifier's mean top-class "
                           "probability on it. High means the probe is sure about static (it is fooled), "
                           "before any denoising.")
            m2.metric("Class settles at timestep (median)", f"{sorted(settled)[len(settled) // 2]}" if settled else "—",
                      help="Per sample, the timestep t from which the probe's top class on x_t stays the final "
                           "sample's class all the way to t = 0; the median over samples. "
                           "Sampling runs from t = T down to 0, so a larger t means the class was decided earlier.")
            m3.metric("Probe's confidence on the final samples",
                      f"{sum(r.final_probability for r in rows) / len(rows):.2f}",
                      help="The probe's mean top-class probability on the finished images.")
            st.dataframe([{
                "sample": r.index, "final class": r.final_label, "p(final)": round(r.final_probability, 3),
                "verdict on x_T": r.noise_label, "p on x_T": round(r.noise_probability, 3),
                "argmax for good from t (x_t)": r.settle_t_xt, "… on x̂0": r.settle_t_x0,
            } for r in rows], hide_index=True, width="stretch")
        st.markdown("**Final samples**")
        cols = st.columns(columns)
        for i in range(record.batch):
            caption = f"sample {i}"
            if rows:
                caption += f" · {rows[i].final_label} ({rows[i].final_probability:.2f})"
            display.show_image(record.final[i], caption=caption, target=128, container=cols[i % columns])
        exports(record, KEY, f"{s['model']}_{s['sampler']}_{record.steps}")

# ---- forward process ------------------------------------------------------------------------------------
with forward_tab:
    sources = (["Fashion-MNIST test image"] if fashion_available() else []) + ["sklearn digit", "upload"]
    c1, c2, c3, c4 = st.columns(4)
    source = c1.selectbox("Image", sources, key=f"{KEY}_fw_source")
    image = None
    if source == "upload":
        upload = st.file_uploader("Image file", type=["png", "jpg", "jpeg", "webp", "bmp"], key=f"{KEY}_fw_upload")
        if upload is not None:
            try:
                image = load_image(upload.getvalue())[None]
            except UserInputError as exc:
                st.error(widgets.error_text(exc))
    else:
        images, labels, names = test_images("fashion" if source.startswith("Fashion") else "digits")
        index = c2.number_input("Test index", 0, len(images) - 1, 0, key=f"{KEY}_fw_index")
        image = images[int(index)][None]
        c2.caption(f"true class: {names[int(labels[int(index)])]}")
    fw_steps = c3.number_input("Timesteps shown", 2, diffusion.num_train_timesteps, 50, key=f"{KEY}_fw_steps")
    fw_seed = c4.number_input("Noise seed", 0, 2**31 - 1, 0, key=f"{KEY}_fw_seed")
    if st.button("Noise it", key=f"{KEY}_fw_go", disabled=image is None):
        try:
            fw_progress = widgets.LiveProgress(f"{KEY}_fw", "Forward process")
            st.session_state[f"{KEY}_fw_record"] = forward_process(
                image, diffusion, steps=int(fw_steps), seed=int(fw_seed), probe=probe, callback=fw_progress)
            fw_progress.done()
        except UserInputError as exc:
            st.error(widgets.error_text(exc))
    fw: ChainRecord | None = st.session_state.get(f"{KEY}_fw_record")
    if fw is not None:
        st.caption("x_t = √ᾱ_t·x0 + √(1−ᾱ_t)·ε with one ε for every t; x̂0 and ε are the UNet's estimates from x_t.")
        fw_step, fw_sample = scrubber(fw, f"{KEY}_fw", 1)
        curves(fw, fw_step, fw_sample, f"{KEY}_fw")
        exports(fw, f"{KEY}_fw", f"{fw.settings['model']}_forward")

# ---- model quality: likelihood bound, FD_cnn / precision / recall against K (explorer/ui/diffusion_quality.py) --
with quality_tab:
    from explorer.ui.diffusion_quality import model_quality_tab  # noqa: E402

    model_quality_tab(probe_model, cached_diffusion)

# ---- imagination experiments: guidance, two imaginations, inpainting, branching (explorer/ui/imagination.py) --
from explorer.ui.imagination import imagination_sections  # noqa: E402

imagination_sections(diffusion)

"""Diffusion page sections for the imagination experiments: classifier guidance (and its scale sweep), two
imaginations side by side, inpainting, and what each step decides (branching). Rendered by the Diffusion
inspector page with one call, :func:`imagination_sections`; every computation is a library call."""

from __future__ import annotations

import plotly.graph_objects as go
import streamlit as st
import torch

from explorer.diffusion.analysis import upscale
from explorer.diffusion.branching import branch_experiment
from explorer.diffusion.data import fashion_available, load_fashion_mnist
from explorer.diffusion.guidance import DEFAULT_SCALES, Denoiser, guidance_sweep, guided_samples
from explorer.diffusion.imaginations import FASHION_RENDER, two_imaginations
from explorer.diffusion.inpaint import MASKS, hidden_mask, inpaint, mask_from_image, match_rates
from explorer.diffusion.judge import Judge
from explorer.diffusion.noisy_classifier import load_noisy_classifier
from explorer.errors import UserInputError
from explorer.files import csv_bytes
from explorer.images import grid, load_image, to_uint8
from explorer.models.weights import WeightsUnavailable
from explorer.ui import widgets


@st.cache_resource(show_spinner="Loading the noise-aware classifier…")
def _noisy():
    return load_noisy_classifier("fashion_noisy_cnn", device="auto")


@st.cache_resource(show_spinner=False)
def _judge() -> Judge:
    model = widgets.cached_model("fashion_cnn", "pretrained")
    if not fashion_available():
        return Judge(model)
    return Judge(model, reference=load_fashion_mnist("test"))  # the floor (real training images) is the CLI sweep's


def _show_images(images: torch.Tensor, captions: list[str], columns: int = 8) -> None:
    cols = st.columns(columns)
    for i, image in enumerate(images):
        cols[i % columns].image(to_uint8(upscale(image[None], 84)[0]),
                                caption=captions[i] if i < len(captions) else None, width="stretch")


def _verdict_captions(judge: Judge, images: torch.Tensor, target: int | None = None) -> list[str]:
    probs = judge.verdicts(images).probabilities
    out = []
    for p in probs:
        text = f"{judge.labels[int(p.argmax())]} {float(p.max()):.2f}"
        if target is not None:
            text += f" · p({judge.labels[target]}) {float(p[target]):.2f}"
        out.append(text)
    return out


def _sampler_controls(key: str, default_steps: int = 50, sampler: str = "ddim") -> tuple[str, int, int]:
    c1, c2, c3 = st.columns(3)
    samplers = ["ddim", "ancestral"]
    chosen = c1.selectbox("Sampler", samplers, index=samplers.index(sampler), key=f"{key}_sampler",
                          help="DDIM (Alg. 2: ε shifted) or ancestral (Alg. 1: mean shifted by s·Σ·∇log p).")
    steps = c2.number_input("Steps (respaced)", 1, 1000, default_steps, key=f"{key}_steps")
    seed = c3.number_input("Seed", 0, 2**31 - 1, 0, key=f"{key}_seed")
    return chosen, int(steps), int(seed)


def sweep_figure(summary: list[dict], guidance: str = "classifier") -> go.Figure:
    """Rate of the target class (with its interval) and FD_cnn / diversity against the scale (or the weight w)."""
    s = [r["scale"] for r in summary]
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=s, y=[r["rate"] for r in summary], name="judge names the target", mode="lines+markers",
                             error_y=dict(type="data", symmetric=False,
                                          array=[r["ci95"][1] - r["rate"] for r in summary],
                                          arrayminus=[r["rate"] - r["ci95"][0] for r in summary])))
    if all("mean_fd" in r for r in summary):
        fig.add_trace(go.Scatter(x=s, y=[r["mean_fd"] for r in summary], name="mean FD_cnn",
                                 yaxis="y2", mode="lines+markers"))
    fig.add_trace(go.Scatter(x=s, y=[r["mean_diversity"] for r in summary], name="diversity", yaxis="y2",
                             mode="lines+markers", line=dict(dash="dash")))
    x_title = "classifier-free weight w" if guidance == "free" else "guidance scale s"
    fig.update_layout(height=360, margin=dict(l=10, r=10, t=30, b=10), xaxis=dict(title=x_title),
                      yaxis=dict(title="top-1 rate of the target", range=[0, 1.05]),
                      yaxis2=dict(title="distance in judge features", overlaying="y", side="right"),
                      title="Fidelity vs diversity (judge: fashion_cnn, never guides)")
    return fig


def branch_figure(data: dict) -> go.Figure:
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=data["t"], y=data["agreement"],
                             name="agreement with the original's class", mode="lines+markers"))
    fig.add_trace(go.Scatter(x=data["t"], y=[data["chance_agreement"]] * len(data["t"]), name="chance agreement Σp²",
                             mode="lines", line=dict(dash="dot")))
    fig.add_trace(go.Scatter(x=data["t"], y=data["spread"], name="spread (judge features)", yaxis="y2",
                             mode="lines+markers", line=dict(dash="dash")))
    for key, colour in (("settle_x_t", "grey"), ("settle_x0", "green")):
        fig.add_vline(x=data[key]["median_t"], line=dict(color=colour, dash="dot"),
                      annotation_text=f"settles on {data[key]['state']}")
    fig.update_layout(height=360, margin=dict(l=10, r=10, t=30, b=10),
                      xaxis=dict(title="timestep t", autorange="reversed"),
                      yaxis=dict(title="agreement", range=[0, 1.05]),
                      yaxis2=dict(title="mean pairwise distance", overlaying="y", side="right"),
                      title="What each step decides")
    return fig


STOP_AT_HELP = ("Confidence gate: a sample gets no classifier gradient at a step where the guide already gives its "
                "class at least this probability (and gets it again if it falls back), so samples already on "
                "course keep their own variety.")


FREE_HELP = ("Classifier-free guidance (Ho & Salimans 2022): ε̃ = (1 + w)·ε(x_t, class) − w·ε(x_t, no class), from the "
             "class-conditional model alone; 0 is the conditional model told the class, with no guidance.")


def _guidance_tab(denoiser_for, noisy, judge: Judge, key: str, conditional: bool = False) -> None:
    st.caption("A noise-aware classifier p(y | x_t, t) steers the denoising toward a class (Dhariwal & Nichol 2021). "
               "The clean `fashion_cnn`, which never guides, judges the samples."
               + (" This model is class-conditional: it is told the class at every step, the classifier's gradient "
                  "(scale s) adds to that, and the weight w mixes in its classifier-free guidance." if conditional
                  else ""))
    c1, c2, c3 = st.columns(3)
    cls = c1.selectbox("Class", range(len(judge.labels)), format_func=lambda i: judge.labels[i], key=f"{key}_class")
    scale = c2.number_input("Scale s", 0.0, 100.0, 0.0 if conditional else 4.0, step=0.5,  # own key: own default
                            key=f"{key}_scale_told" if conditional else f"{key}_scale")
    n = c3.number_input("Samples", 1, 64, 8, key=f"{key}_n")
    free_weight = 0.0
    if conditional:
        free_weight = c1.number_input("Classifier-free weight w", 0.0, 100.0, 1.0, step=0.5, key=f"{key}_free",
                                      help=FREE_HELP)
    sampler, steps, seed = _sampler_controls(key, 50)
    c1, c2, c3 = st.columns(3)
    until = c1.number_input("Guide until t (0: every step)", 0, 1000, 0, step=50, key=f"{key}_until",
                            help="Truncated guidance: no classifier gradient at training timesteps t below this.")
    start = c2.number_input("Guide from t (1000: every step)", 0, 1000, 1000, step=50, key=f"{key}_from",
                            help="Guidance interval: no classifier gradient at training timesteps t above this. "
                                 "A timestep of the model's own schedule: the same t is far less noisy under a "
                                 "cosine schedule than under a linear one.")
    stop_at = c3.number_input("Stop guiding a sample at p ≥ (1: never)", 0.5, 1.0, 1.0, step=0.01,
                              key=f"{key}_stop_at", help=STOP_AT_HELP)
    if widgets.run_controls(key, "Guide"):
        try:
            progress = widgets.LiveProgress(key, f"guided {sampler}", preview_every=max(1, steps // 5))
            result = guided_samples(denoiser_for(steps), noisy, [int(cls)] * int(n), scale=float(scale),
                                    sampler=sampler, seed=seed, guide_until=int(until), guide_from=int(start),
                                    stop_at=float(stop_at), free_weight=float(free_weight), callback=progress,
                                    preview_every=max(1, steps // 5))
            progress.done()
            st.session_state[f"{key}_result"] = result
        except UserInputError as exc:
            st.error(widgets.error_text(exc))
    result = st.session_state.get(f"{key}_result")
    if result is not None:
        target = result.classes[0]
        summary = judge.judge_class(result.images, target) if len(result.classes) >= 2 else None
        if summary:
            m1, m2, m3 = st.columns(3)
            m1.metric(f"Judge names {judge.labels[target]}", f"{summary['hits']}/{summary['n']}",
                      help=f"95 % Clopper–Pearson interval {summary['ci95'][0]:.2f}–{summary['ci95'][1]:.2f}")
            m2.metric("FD_cnn to the class's test images", f"{summary['fd']:.1f}" if "fd" in summary else "—")
            m3.metric("Diversity (judge features)", f"{summary['diversity']:.2f}")
        _show_images(result.images, _verdict_captions(judge, result.images, target))
        c1, c2 = st.columns(2)
        with c1:
            weight = f"_w{result.settings['free_weight']:g}" if result.settings.get("free_weight") else ""
            widgets.download_png(grid(result.images), f"guided_{judge.labels[target]}_s{result.scale:g}{weight}.png",
                                 "Samples PNG", key=f"{key}_png")
        with c2:
            widgets.download_json({"settings": result.settings, "classes": result.classes, "summary": summary},
                                  "guide.json", "Verdicts JSON", key=f"{key}_json")

    st.markdown("**Scale sweep** — every scale × class, the judge's rate with its interval, FD_cnn and diversity")
    guidance = "classifier"
    if conditional:
        guidance = st.radio("Sweep over", ["classifier", "free"], horizontal=True, key=f"{key}_sw_kind",
                            format_func={"classifier": "classifier scale s (told the class)",
                                         "free": "classifier-free weight w (no classifier)"}.get, help=FREE_HELP)
    c1, c2, c3 = st.columns(3)
    scales = c1.multiselect("Scales", list(DEFAULT_SCALES), list(DEFAULT_SCALES), key=f"{key}_sw_scales")
    classes = c2.multiselect("Classes", list(range(len(judge.labels))), list(range(len(judge.labels))),
                             format_func=lambda i: judge.labels[i], key=f"{key}_sw_classes")
    per_class = c3.number_input("Samples per class", 2, 64, 8, key=f"{key}_sw_n")
    c1, c2, c3 = st.columns(3)
    sw_steps = c1.number_input("Sweep steps (DDIM)", 1, 1000, 25, key=f"{key}_sw_steps")
    sw_until = c2.number_input("Guide until t (0: every step)", 0, 1000, 0, step=50, key=f"{key}_sw_until",
                               help="Truncated guidance for every scale: no classifier gradient at t below this.")
    sw_from = c3.number_input("Guide from t (1000: every step)", 0, 1000, 1000, step=50, key=f"{key}_sw_from",
                              help="Guidance interval for every scale: no classifier gradient at t above this "
                                   "(a timestep of the model's own schedule).")
    sw_stop_at = c1.number_input("Stop guiding a sample at p ≥ (1: never)", 0.5, 1.0, 1.0, step=0.01,
                                 key=f"{key}_sw_stop_at", help=STOP_AT_HELP)
    if widgets.run_controls(f"{key}_sw", "Run sweep"):
        try:
            progress = widgets.LiveProgress(f"{key}_sw", "guidance sweep")
            free = guidance == "free"
            sweep = guidance_sweep(denoiser_for(int(sw_steps)), None if free else noisy, judge,
                                   classes=list(classes), scales=sorted(scales), n_per_class=int(per_class), seed=0,
                                   guide_until=0 if free else int(sw_until), guide_from=None if free else int(sw_from),
                                   stop_at=None if free else float(sw_stop_at), guidance=guidance,
                                   callback=progress)
            progress.done()
            st.session_state[f"{key}_sweep"] = sweep
        except UserInputError as exc:
            st.error(widgets.error_text(exc))
    sweep = st.session_state.get(f"{key}_sweep")
    if sweep is not None and sweep.summary:
        st.plotly_chart(sweep_figure(sweep.summary, sweep.settings.get("guidance", "classifier")), width="stretch",
                        key=f"{key}_sw_fig")
        st.dataframe(sweep.summary, hide_index=True, width="stretch")
        for s, images in sweep.samples.items():
            letter = "w" if sweep.settings.get("guidance") == "free" else "s"
            st.image(to_uint8(grid(upscale(images, 56), columns=min(16, images.shape[0]))), caption=f"{letter} = {s:g}")
        c1, c2 = st.columns(2)
        with c1:
            widgets.download_json(sweep.to_dict(), "sweep.json", "Sweep JSON", key=f"{key}_sw_json")
        c2.download_button("Sweep CSV", csv_bytes(sweep.rows), "sweep.csv", "text/csv", key=f"{key}_sw_csv")


def _imaginations_tab(denoiser_for, noisy, judge: Judge, key: str) -> None:
    st.caption("The classifier's imagination (feature visualisation of fashion_cnn's class logit, 28 px grey, the "
               "project's render engine) beside the generative model's (guided diffusion samples). Each is judged "
               "by the network that did not make it.")
    c1, c2, c3, c4 = st.columns(4)
    cls = c1.selectbox("Class", range(len(judge.labels)), format_func=lambda i: judge.labels[i], key=f"{key}_class")
    n = c2.number_input("Images each", 1, 16, 4, key=f"{key}_n")
    render_steps = c3.number_input("Render steps", 1, 2048, FASHION_RENDER.steps, key=f"{key}_rsteps")
    scale = c4.number_input("Guidance scale", 0.0, 100.0, 4.0, step=0.5, key=f"{key}_scale")
    sampler, steps, seed = _sampler_controls(key, 50)
    if widgets.run_controls(key, "Imagine"):
        try:
            progress = widgets.LiveProgress(key, "feature vis, then guided diffusion")
            result = two_imaginations(judge.model, noisy, denoiser_for(steps), int(cls), n=int(n), scale=float(scale),
                                      sampler=sampler, seed=seed,
                                      render_settings=FASHION_RENDER.with_(steps=int(render_steps)), callback=progress)
            progress.done()
            st.session_state[f"{key}_result"] = result
        except UserInputError as exc:
            st.error(widgets.error_text(exc))
    result = st.session_state.get(f"{key}_result")
    if result is not None:
        summary = result.summary()
        left, right = st.columns(2)
        for col, which, images, title in ((left, "vis", result.vis_images, "Feature visualisation (fashion_cnn)"),
                                          (right, "diffusion", result.diffusion_images, "Guided diffusion")):
            with col:
                st.markdown(f"**{title}**")
                if images.numel():
                    verdicts = result.verdicts(which)
                    judge_name = "noise-aware clf at t=0" if which == "vis" else "fashion_cnn"
                    captions = [f"{judge_name}: {v['judged']} {v['p_judged']:.2f}" for v in verdicts]
                    _show_images(images, captions, columns=min(4, images.shape[0]))
                    widgets.download_png(grid(images), f"{which}_{result.label}.png", "PNG", key=f"{key}_{which}_png")
        widgets.download_json(summary, "imagine.json", "Verdicts JSON", key=f"{key}_json")


def _inpaint_tab(denoiser_for, judge: Judge, key: str) -> None:
    st.caption("The model imagines the hidden part: at every step the known pixels are replaced by their forward-"
               "noised values (Sohl-Dickstein et al. §3.5); RePaint's resampling optionally re-noises and repeats.")
    size = (28, 28)
    c1, c2, c3 = st.columns(3)
    sources = (["Fashion-MNIST test image"] if fashion_available() else []) + ["upload"]
    source = c1.selectbox("Image", sources, key=f"{key}_src")
    image, label = None, None
    if source == "upload":
        up = st.file_uploader("Image file", type=["png", "jpg", "jpeg", "webp", "bmp"], key=f"{key}_upload")
        if up is not None:
            try:
                image = load_image(up.getvalue())
            except UserInputError as exc:
                st.error(widgets.error_text(exc))
    else:
        test = judge.reference
        index = c2.number_input("Test index", 0, len(test) - 1, 0, key=f"{key}_index")
        image, label = test.images[int(index)], int(test.labels[int(index)])
        c2.caption(f"true class: {judge.labels[label]}")
    mask_name = c3.selectbox("Hidden part", list(MASKS) + ["upload"], key=f"{key}_mask")
    hidden = None
    if mask_name == "upload":
        mup = st.file_uploader("Mask (white = hidden)", type=["png", "jpg", "jpeg", "bmp"], key=f"{key}_mask_upload")
        if mup is not None:
            try:
                hidden = mask_from_image(load_image(mup.getvalue()), size)
            except UserInputError as exc:
                st.error(widgets.error_text(exc))
    else:
        hidden = hidden_mask(mask_name, size)
    c1, c2, c3, c4 = st.columns(4)
    k = c1.number_input("Completions", 1, 32, 6, key=f"{key}_k")
    steps = c2.number_input("Steps (respaced)", 1, 1000, 50, key=f"{key}_steps")
    resample = c3.number_input("RePaint resample (1: off)", 1, 10, 1, key=f"{key}_resample")
    jump = c4.number_input("RePaint jump", 1, 50, 5, key=f"{key}_jump")
    if widgets.run_controls(key, "Complete", ) and image is not None and hidden is not None:
        try:
            denoiser = denoiser_for(int(steps))
            progress = widgets.LiveProgress(key, "inpainting", preview_every=5)
            result = inpaint(denoiser, denoiser.model.adapt_images(image), hidden, k=int(k), seed=0, jump=int(jump),
                             resample=int(resample), callback=progress, preview_every=5)
            progress.done()
            st.session_state[f"{key}_result"] = (result, label)
        except UserInputError as exc:
            st.error(widgets.error_text(exc))
    stored = st.session_state.get(f"{key}_result")
    if stored is not None:
        result, label = stored
        completions = result.completions[0]
        captions = ["original" + (f" ({judge.labels[label]})" if label is not None else ""),
                    "masked: " + _verdict_captions(judge, result.masked)[0]] + _verdict_captions(judge, completions)
        _show_images(torch.cat([result.originals, result.masked, completions]), captions)
        if label is not None:
            matches = int((judge.verdicts(completions).classes == label).sum())
            st.metric("Completions the judge names as the true class", f"{matches}/{completions.shape[0]}")
        c1, c2 = st.columns(2)
        with c1:
            widgets.download_png(grid(torch.cat([result.originals, result.masked, completions])), "inpaint.png", "PNG",
                                 key=f"{key}_png")
        with c2:
            widgets.download_json({"settings": result.settings, "verdicts": captions}, "inpaint.json",
                                  "JSON", key=f"{key}_json")

    if judge.reference is not None:
        st.markdown(
            "**Match rates** — over the first N test images, per mask, beside the judge on the masked image and chance")
        c1, c2 = st.columns(2)
        n = c1.number_input("Test images", 1, 10_000, 20, key=f"{key}_mr_n")
        masks = c2.multiselect("Masks", list(MASKS), list(MASKS), key=f"{key}_mr_masks")
        if widgets.run_controls(f"{key}_mr", "Measure"):
            try:
                progress = widgets.LiveProgress(f"{key}_mr", "inpainting test images")
                report = match_rates(denoiser_for(int(steps)), judge.model, judge.reference.images[: int(n)],
                                     judge.reference.labels[: int(n)], masks=list(masks), jump=int(jump),
                                     resample=int(resample), callback=progress)
                progress.done()
                st.session_state[f"{key}_mr_report"] = report
            except UserInputError as exc:
                st.error(widgets.error_text(exc))
        report = st.session_state.get(f"{key}_mr_report")
        if report is not None and report.rows:
            st.dataframe([{"mask": r["mask"], "completions match": r["completions"]["rate"],
                           "95 % interval": f"{r['completions']['ci95'][0]:.2f}–{r['completions']['ci95'][1]:.2f}",
                           "judge on masked image": r["masked_image"]["rate"],
                           "masked 95 %": f"{r['masked_image']['ci95'][0]:.2f}–{r['masked_image']['ci95'][1]:.2f}",
                           "whole image": r["original_image"]["rate"], "chance": r["chance"]} for r in report.rows],
                         hide_index=True, width="stretch")
            widgets.download_json(report.to_dict(), "inpaint_rates.json", "Rates JSON", key=f"{key}_mr_json")


def _branch_tab(denoiser_for, judge: Judge, key: str) -> None:
    st.caption("DDPM's shared-latent experiment: from one chain's x_t at t = T, 0.9T, …, 0, finish K fresh branches. "
               "When the branches keep the original's class, the class was decided by then.")
    c1, c2, c3, c4 = st.columns(4)
    chains = c1.number_input("Chains", 1, 1000, 4, key=f"{key}_chains")
    k = c2.number_input("Branches per point", 2, 32, 4, key=f"{key}_k")
    steps = c3.number_input("Steps (respaced, ancestral)", 2, 1000, 50, key=f"{key}_steps")
    seed = c4.number_input("Seed", 0, 2**31 - 1, 0, key=f"{key}_seed")
    if widgets.run_controls(key, "Branch"):
        try:
            progress = widgets.LiveProgress(key, "chains and their branches")
            report = branch_experiment(denoiser_for(int(steps)), judge.model, chains=int(chains), k=int(k),
                                       seed=int(seed), callback=progress)
            progress.done()
            st.session_state[f"{key}_report"] = report
        except UserInputError as exc:
            st.error(widgets.error_text(exc))
    report = st.session_state.get(f"{key}_report")
    if report is not None and report.agreement.shape[0]:
        data = report.to_dict()
        m1, m2, m3 = st.columns(3)
        for col, name in ((m1, "agreement_50"), (m2, "agreement_90")):
            c = data[name]
            col.metric(f"Agreement first ≥ {c['level']:.0%} at t", "never" if c["t"] is None else f"{c['t']:.0f}",
                       help=f"bootstrap 95 % interval {c['ci95']} over {c['chains']} chains")
        m3.metric("Settles for good on x_t (median t)", f"{data['settle_x_t']['median_t']:.0f}",
                  help="The recorder's measure: when the judge can already read the final class from x_t.")
        st.plotly_chart(branch_figure(data), width="stretch", key=f"{key}_fig")
        picture = grid(upscale(report.grid_images.flatten(0, 1), 56), columns=report.grid_images.shape[1])
        st.image(to_uint8(picture),
                 caption="rows: t = " + ", ".join(str(t) for t in report.ts) + " · columns: branches of chain 0")
        c1, c2 = st.columns(2)
        with c1:
            widgets.download_json(data, "branch.json", "Branch JSON", key=f"{key}_json")
        with c2:
            branch_grid = grid(report.grid_images.flatten(0, 1), columns=report.grid_images.shape[1])
            widgets.download_png(branch_grid, "branch_grid.png", "Grid PNG", key=f"{key}_png")


def imagination_sections(diffusion, key: str = "imag") -> None:
    """The four experiments on the page's diffusion model (a 1×28×28 model, as the classifiers are)."""
    st.header("Imagination experiments")
    if diffusion.channels != 1 or diffusion.sample_size != (28, 28):
        st.info("Guidance, inpainting and branching use the Fashion-MNIST classifiers: pick a 1×28×28 model "
                "(fashion_ddpm).")
        return
    judge = _judge()

    def denoiser_for(steps: int) -> Denoiser:
        return Denoiser(diffusion, steps)

    tabs = st.tabs(["Classifier guidance", "Two imaginations", "Inpainting", "What each step decides"])
    try:
        noisy = _noisy()
    except (WeightsUnavailable, UserInputError) as exc:
        noisy = None
        for tab in tabs[:2]:
            tab.error(widgets.error_text(exc))
    if noisy is not None:
        with tabs[0]:
            _guidance_tab(denoiser_for, noisy, judge, f"{key}_guide", conditional=diffusion.num_classes > 0)
        with tabs[1]:
            _imaginations_tab(denoiser_for, noisy, judge, f"{key}_two")
    with tabs[2]:
        _inpaint_tab(denoiser_for, judge, f"{key}_inpaint")
    with tabs[3]:
        _branch_tab(denoiser_for, judge, f"{key}_branch")

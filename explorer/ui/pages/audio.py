"""Page: Audio hallucinations — dream a sound through a speech, music or image network, listen,
check that the sound (not just what the optimiser saw) still moves the network, and show what
independent judges the dream never saw say about it."""

from __future__ import annotations

import plotly.graph_objects as go
import streamlit as st

from explorer.audio import io as audio_io
from explorer.audio.clips import BUILTIN_CLIPS
from explorer.audio.dream import PARAMS, DreamSettings, dream, spectrogram_picture, spectrogram_preview
from explorer.audio.judges import SPEECH_REFERENCE
from explorer.audio.musicnn import mtt_labels
from explorer.audio.parameterisations import added_noise_for, control_ms_for, control_tv_for
from explorer.audio.targets import WORD_OBJECTIVE_LABELS, WORD_OBJECTIVES
from explorer.audio.words import ENSEMBLE, LOG_MEL, WORD_NET_LABELS, word_net_available
from explorer.audio.wordsdata import KEYWORDS
from explorer.errors import UserInputError
from explorer.images import png_bytes
from explorer.ui import settings_widgets, widgets


SYNTH_RANDOM_STARTS = ("noise", "silence")  # a synthesiser cannot make these: it starts from random settings instead


def start_words(start: str, synth: bool) -> str:
    """What a start really is: with the synthesiser, "noise" and "silence" mean random synthesiser settings."""
    return f"{start} → random synthesiser settings" if synth and start in SYNTH_RANDOM_STARTS else start

KEY = "audio"
widgets.page_header(
    "Audio hallucinations",
    "Gradient ascent through the same loop as the image pages — on the knobs of a synthesiser that can only make "
    "plausible sound (default), or on a free spectrogram (adversarial / unconstrained) — then the honest tests: the "
    "WAV is read back and the network listens again, and independent judges (Praat, the spectrum, the other music "
    "tagger) listen too, and judges trained on human speech and ears (pocketsphinx, DNSMOS, CREPE) — beside the same "
    "judges on random starts that were never optimised.")

NETS = {"speech": "Speech (Silero VAD)", "words": "Spoken word (our keyword net)", "music": "Music tag (musicnn)",
        "image": "Image classifier on the spectrogram"}
left, right = st.columns([1, 1])
with left:
    net_kind = st.radio("Network", list(NETS), format_func=NETS.get, horizontal=True, key=f"{KEY}_net")
    net, music_model, word, word_net = "speech", "MTT_vgg", "yes", ""
    word_objective = DreamSettings.word_objective
    if net_kind == "words":
        missing = word_net_available()
        if missing:
            st.error(f"The word network cannot load: {missing}.")
            st.stop()
        word = st.selectbox("Word to dream", list(KEYWORDS), key=f"{KEY}_word",
                            help="the keyword network was trained here on espeak-ng and flite speech (docs/audio.md)")
        word_net = st.selectbox("Word network", ["", LOG_MEL, ENSEMBLE], key=f"{KEY}_word_net",
                                format_func=WORD_NET_LABELS.get,
                                help="the word net is a log-mel CNN and two heads over Google's speech embedding "
                                     "(trained on real speech), averaged: it names the held-out voices' words "
                                     "98 % of the time, the log-mel CNN alone 76 %, its ensemble of three 80 % "
                                     "(docs/audio.md)")
        word_objective = st.selectbox("Ask the network for", list(WORD_OBJECTIVES), key=f"{KEY}_word_objective",
                                      format_func=WORD_OBJECTIVE_LABELS.get,
                                      help=" · ".join(f"{k}: {v}" for k, v in WORD_OBJECTIVES.items())
                                      + " — pocketsphinx heard the default's dreams as their word most often "
                                        "(22 of 120, against 9 typical and 8 log-odds, through the log-mel net: "
                                        "docs/audio.md)")
        net = "words"
    elif net_kind == "music":
        labels = mtt_labels()
        c1, c2 = st.columns(2)
        tag = c1.selectbox("Tag to dream", labels, index=labels.index("piano"), key=f"{KEY}_tag")
        music_model = c2.selectbox("Tagger", ["MTT_vgg", "MTT_musicnn"], key=f"{KEY}_music_model",
                                   help="musicnn's MagnaTagATune models: a VGG, or the musically motivated musicnn")
        net = f"music:{tag}"
    elif net_kind == "image":
        model = widgets.model_picker(KEY)
        if model is None:
            st.stop()
        what = st.radio("Objective", ["deepdream", "channel", "class"], horizontal=True, key=f"{KEY}_what")
        if what == "class":
            unit = st.number_input("Class index", 0, model.num_classes - 1, 0, key=f"{KEY}_class")
            st.caption(f"{int(unit)}: {model.label(int(unit))}")
            net = f"image:{model.name}:class:{int(unit)}"
        else:
            layer = widgets.layer_picker(model, KEY)
            net = f"image:{model.name}:{layer}"
            if what == "channel":
                size = model.layer_shapes.get(layer, (1,))[0]
                net += f":{int(st.number_input(f'Channel (0–{size - 1})', 0, max(size - 1, 0), 0, key=f'{KEY}_unit'))}"
    starts = list(BUILTIN_CLIPS) + ["upload"]
    synth_param = st.session_state.get(f"{KEY}_param", DreamSettings.param) == "synth"  # the widget below, as last set
    start = st.selectbox("Start from", starts, index=starts.index("noise"), key=f"{KEY}_start",
                         format_func=lambda s: start_words(s, synth_param),
                         help="A built-in synthetic sound, or your own WAV/FLAC/OGG "
                              "(≤ 30 s, mixed to mono, resampled).")
    upload = (st.file_uploader("Sound file", type=["wav", "flac", "ogg"], key=f"{KEY}_upload")
              if start == "upload" else None)
with right:
    c1, c2, c3 = st.columns(3)
    # words have their own length widget (default 1 s: a spoken word), the other networks 4 s
    seconds = c1.number_input("Seconds", 0.5, 30.0, 1.0 if net_kind == "words" else 4.0, step=0.5,
                              key=f"{KEY}_seconds_words" if net_kind == "words" else f"{KEY}_seconds")
    # label, default, range: explorer/vocabulary.py
    steps = settings_widgets.number(c2, "audio dream", "steps", step=16)
    seed = settings_widgets.number(c3, "audio dream", "seed")
    c1, c2 = st.columns(2)
    param = c1.selectbox("Parameterisation", list(PARAMS), format_func=PARAMS.get, key=f"{KEY}_param",
                         help="synth: pitch contour, formants or harmonic timbre, filtered noise, loudness — "
                              "every setting is a plausible sound. spectrogram: any magnitudes at all, which finds "
                              "what the network responds to, usually an adversarial noise rather than speech or music.")
    c3, c4 = st.columns(2)
    control_starts = c3.number_input("Random starts (control)", 0, 64, 8, key=f"{KEY}_control",
                                     help="the judges also hear this many random starts of the same parameterisation, "
                                          "never optimised: a claim that the dream is more speech-like needs the "
                                          "difference's interval to exclude 0")
    hearing = c4.checkbox("Judges trained on human hearing", True, key=f"{KEY}_hearing",
                          help="pocketsphinx (transcript, closed-set word), DNSMOS (SIG/BAK/OVRL), CREPE periodicity: "
                               "a few seconds per sound")
    synth_choice, phase = "auto", "griffin-lim"
    if param == "synth":
        synth_choice = c2.selectbox("Synthesiser", ["auto", "voice", "instrument"], key=f"{KEY}_synth",
                                    help="voice: glottal source through four formants; instrument: three voices of "
                                         "struck notes. auto: voice for speech, instrument otherwise")
        st.caption("The synthesiser starts from random knobs when the start is noise or silence (it cannot make white "
                    "noise: that is the point); a clip or upload is imitated first.")
    else:
        phase = c2.selectbox("Phase", ["griffin-lim", "original"], key=f"{KEY}_phase",
                             help="original: keep the start clip's phase (clips and uploads only)")
    tv_time = tv_freq = blur_every = consistency = 0
    blur_sigma, gl_iters, momentum, time_shift, added_noise = 0.5, 64, 0.99, 8.0, None
    speed_jitter = DreamSettings.speed_jitter_pct
    control_ms = control_tv = None
    with st.expander("Robustness and learning rate" if param == "synth"
                     else "Priors and resynthesis (free spectrogram)"):
        c1, c2 = st.columns(2)
        gain_jitter = c1.number_input("Gain jitter (± dB)", 0.0, 24.0, 6.0, key=f"{KEY}_jitter",
                                      help="random loudness per step, so the dream survives peak normalisation")
        lr = settings_widgets.number(c2, "audio dream", "lr", format="%.3f")
        if param == "synth":
            time_shift = c1.number_input("Random delay per step (ms)", 0.0, 100.0, 8.0, key=f"{KEY}_shift",
                                         help="so the dream does not rely on where the network's frames fall")
            default_noise = added_noise_for(DreamSettings(net=net_kind))  # the library's per-net default
            added_noise = c2.number_input("Added noise per step (dB below peak)", -120.0, -10.0, default_noise,
                                          key=f"{KEY}_noise_{default_noise:g}",
                                          help="white noise added at every step: a dream must survive it (word "
                                               "dreams default to 30 dB below the peak; on fresh seeds "
                                               "pocketsphinx heard them as their word no more often than at 50 "
                                               "dB: docs/audio.md)")
            speed_jitter = c1.number_input("Random tape speed per step (± %)", 0.0, 50.0,
                                           float(DreamSettings.speed_jitter_pct), key=f"{KEY}_speed",
                                           help="pitch, formants and rate move together, as between speakers: "
                                                "so the dream does not rely on one voice")
            default_ms = control_ms_for(DreamSettings(net=net_kind))  # the library's per-net defaults
            control_ms = c2.number_input("Loudness/voicing frame (ms)", 2.0, 50.0, default_ms,
                                         key=f"{KEY}_control_ms_{default_ms:g}",
                                         help="how often the synthesiser's loudness and voicing may change: 5 ms lets "
                                              "onsets and closures be sharper (its imitations of recorded words are "
                                              "heard as the word far more often: docs/audio.md)")
            default_tv = control_tv_for(DreamSettings(net=net_kind))
            control_tv = c1.number_input("Smoothness of loudness/voicing (TV weight)", 0.0, 100.0, default_tv,
                                         format="%.3f", key=f"{KEY}_control_tv_{default_tv:g}",
                                         help="a penalty on the loudness and voicing knobs' total variation: a step "
                                              "costs its height once, flutter costs at every frame — sharp edges "
                                              "without roughness (0: off)")
        else:
            tv_time = c1.number_input("TV weight along time", 0.0, 100.0, 0.0, key=f"{KEY}_tv_time")
            tv_freq = c2.number_input("TV weight along frequency", 0.0, 100.0, 0.0, key=f"{KEY}_tv_freq")
            blur_every = c1.number_input("Blur every N steps (0: off)", 0, 1000, 0, key=f"{KEY}_blur_every")
            blur_sigma = c2.number_input("Blur σ (bins/frames)", 0.1, 5.0, 0.5, key=f"{KEY}_blur_sigma")
            consistency = c1.number_input("Consistency projection every N steps (0: off)", 0, 1000,
                                          4 if net_kind == "image" else 0, key=f"{KEY}_consistency_{net_kind}",
                                          help="replace the spectrogram by that of its own resynthesis: the optimiser "
                                               "then only sees what a waveform can do, so the round trip loses less")
            gl_iters = c2.number_input("Griffin-Lim iterations", 0, 1000, 64, key=f"{KEY}_gl")
            momentum = c1.number_input("Griffin-Lim momentum", 0.0, 1.5, 0.99, key=f"{KEY}_momentum")

settings = DreamSettings(net=net, word=word, word_net=word_net, word_objective=word_objective,
                         control_starts=int(control_starts),
                         hearing=bool(hearing),
                         music_model=music_model, start=f"upload:{upload.name}" if upload is not None else start,
                         seconds=float(seconds), steps=int(steps), lr=float(lr), param=param,
                         synth=None if synth_choice == "auto" else synth_choice, time_shift_ms=float(time_shift),
                         speed_jitter_pct=float(speed_jitter),
                         added_noise_db=None if added_noise is None else float(added_noise),
                         control_ms=None if control_ms is None else float(control_ms),
                         control_tv=None if control_tv is None else float(control_tv),
                         tv_time=float(tv_time), tv_freq=float(tv_freq),
                         blur_every=int(blur_every), blur_sigma=float(blur_sigma), gain_jitter_db=float(gain_jitter),
                         consistency_every=int(consistency),
                         phase=phase, griffin_lim_iters=int(gl_iters), momentum=float(momentum), seed=int(seed))

if widgets.run_controls(KEY, "Dream"):
    try:
        start_audio = None
        if start == "upload":
            if upload is None:
                raise UserInputError("Choose a sound file to upload first.")
            start_audio = audio_io.load_audio(upload.getvalue(), 16000, name=upload.name)
        progress = widgets.LiveProgress(KEY, f"Dreaming {net}",
                                        preview_every=max(1, int(steps) // 16), preview_columns=1)
        control = (widgets.LiveProgress(KEY, "Random starts for the control", unit="start")
                   if settings.control_starts else None)
        result = dream(settings, start_audio=start_audio, callback=spectrogram_preview(progress),
                       control_callback=control)
        progress.done()
        if control is not None:
            control.done()
        st.session_state[f"{KEY}_result"] = result
    except UserInputError as exc:
        st.error(widgets.error_text(exc))


def heatmap(db, title: str, result, floor_db: float, top_db: float) -> go.Figure:
    frames, bins = db.shape[1], db.shape[0]
    fig = go.Figure(go.Heatmap(
        z=db, x=[i * result.hop / result.sample_rate for i in range(frames)],
        y=[k * result.sample_rate / result.n_fft for k in range(bins)],
        colorscale="Magma", zmin=floor_db, zmax=top_db, colorbar=dict(title="dB"),
    ))
    fig.update_layout(title=title, xaxis_title="time (s)", yaxis_title="frequency (Hz)", height=300,
                      margin=dict(l=10, r=10, t=40, b=10))
    return fig


result = st.session_state.get(f"{KEY}_result")
if result is not None:
    if result.stopped:
        (st.error if result.stopped.startswith("diverged") else st.info)(f"Stopped: {result.stopped}")
    for note in result.notes:
        st.warning(note)
    st.subheader(f"{result.target} · {result.steps_done} steps in {result.seconds:.1f} s")
    st.caption(f"Parameterisation: {result.param_label}.")
    st.markdown(f"**The optimised network's own score** ({result.target}: it cannot fail, it is what was maximised)")
    m1, m2, m3 = st.columns(3)
    m1.metric(f"Start: {result.value_label}", f"{result.before['value']:.3f}")
    m2.metric("Optimised sound" if result.param == "synth" else "Optimised spectrogram",
              f"{result.optimised['value']:.3f}",
              delta=f"{result.optimised['value'] - result.before['value']:+.3f}")
    m3.metric("Round trip (WAV read back)", f"{result.roundtrip['value']:.3f}",
              delta=f"{result.roundtrip['value'] - result.before['value']:+.3f}",
              help="the written 16-bit WAV, loaded again and re-analysed from the waveform")
    if result.judges:
        comparison = (result.random_starts or {}).get("comparison", {})
        n_starts = (result.random_starts or {}).get("n", 0)
        random_starts_note = (f"; beside them the same judges on {n_starts} random starts of this parameterisation, "
                              "never optimised, and the dream minus their mean with a 95 % bootstrap interval"
                              if comparison else "")
        st.markdown("**Independent judges** (never seen by the dream; on the start sound, the dream and the WAV "
                    f"read back{random_starts_note})")
        rows = []
        for key, after in result.judges["roundtrip"].items():
            before = result.judges["before"][key]
            reference = SPEECH_REFERENCE.get(key)
            optimised = result.judges.get("optimised", {}).get(key)
            row = {"judge": after.label, "start": before.text(),
                   "dream (before the WAV)": "" if optimised is None else optimised.text(), "dream (WAV)": after.text()}
            if comparison:
                c = comparison.get(key) or {}
                ok = c.get("difference") is not None
                row["random starts (mean)"] = f"{c['start_mean']:.3f}" if ok else ""
                row["dream − starts [95 %]"] = (f"{c['difference']:+.3f} [{c['low']:+.3f}, {c['high']:+.3f}]"
                                                if ok else "")
                row["claim"] = c.get("claim", "")
            row["espeak-ng speech"] = "" if reference is None else reference
            row["calibration"] = after.note or ""
            row["by"] = after.judge + (f" — {after.reason}" if after.reason else "")
            rows.append(row)
        st.dataframe(rows, hide_index=True, width="stretch", key=f"{KEY}_judges")
        if comparison:
            higher = [c["label"] for c in comparison.values() if c.get("claim") == "higher"]
            lower = [c["label"] for c in comparison.values() if c.get("claim") == "lower"]
            unjudged = any(c.get("claim") == "not judged" for c in comparison.values())
            st.markdown("**What the optimisation changed, by the judges** (only where the interval excludes 0): "
                        + (f"higher than random starts: {', '.join(higher)}. " if higher else "")
                        + (f"lower than random starts: {', '.join(lower)}. " if lower else "")
                        + ("" if higher or lower else "no judge tells the dream from random starts. ")
                        + "Every other judge: no difference shown"
                        + (" (or not judged)." if unjudged else "."))
    if result.griffin_lim_convergence is not None:
        st.caption(f"Griffin-Lim spectral convergence {result.griffin_lim_convergence:.3f} "
                   "(0 = the sound has exactly the dreamed magnitudes)")
    a1, a2 = st.columns(2)
    before_wav = audio_io.wav_bytes(result.before_audio, result.sample_rate)
    after_wav = audio_io.wav_bytes(result.after_audio, result.sample_rate)
    with a1:
        st.markdown(f"**Before** ({start_words(result.settings.start, result.param == 'synth')})"
                    if result.settings.start in SYNTH_RANDOM_STARTS else "**Before**")
        st.audio(before_wav, format="audio/wav")
        st.download_button("Download before.wav", before_wav, "before.wav", "audio/wav", key=f"{KEY}_dl_before")
    with a2:
        st.markdown("**After (peak −1 dBFS, faded)**")
        st.audio(after_wav, format="audio/wav")
        st.download_button("Download after.wav", after_wav, "after.wav", "audio/wav", key=f"{KEY}_dl_after")

    rows = result.comparison()
    bars = go.Figure()
    for name, colour in (("before", "#888"), ("optimised", "#7aa6d6"), ("roundtrip", "#d62728")):
        bars.add_trace(go.Bar(x=[r["label"] for r in rows], y=[r[name] for r in rows], name=name, marker_color=colour))
    bars.update_layout(barmode="group", title="Network output: start vs optimised vs round trip",
                       yaxis_title="probability", height=340, margin=dict(l=10, r=10, t=40, b=10))
    st.plotly_chart(bars, width="stretch")
    if "per_chunk" in result.roundtrip:
        curve = go.Figure()
        for name, report in (("before", result.before), ("round trip", result.roundtrip)):
            chunk_times = [i * 0.032 for i in range(len(report["per_chunk"]))]
            curve.add_trace(go.Scatter(y=report["per_chunk"], x=chunk_times, name=name))
        curve.update_layout(title="Speech probability per 32 ms chunk", xaxis_title="time (s)", yaxis_range=[0, 1],
                            height=280, margin=dict(l=10, r=10, t=40, b=10))
        st.plotly_chart(curve, width="stretch")

    if result.controls is not None:
        controls = result.controls
        times = [i * controls["frame_seconds"] for i in range(len(controls["voicing"]))]
        contour = go.Figure()
        f0 = controls["f0_hz"]
        for i, voice in enumerate(f0 if f0 and isinstance(f0[0], list) else [f0]):
            contour.add_trace(go.Scatter(x=times, y=voice,
                                         name=f"f0 voice {i + 1}" if isinstance(f0[0], list) else "f0"))
        contour.add_trace(go.Scatter(x=times, y=controls["loudness_db"], name="loudness (dB)", yaxis="y2"))
        contour.update_layout(title="Synthesiser: pitch contour and loudness", xaxis_title="time (s)", yaxis_title="Hz",
                              yaxis2=dict(title="dB", overlaying="y", side="right"), height=280,
                              margin=dict(l=10, r=10, t=40, b=10))
        st.plotly_chart(contour, width="stretch", key=f"{KEY}_fig_contour")

    floor_db, top_db = result.settings.floor_db, result.settings.top_db
    after_title = "Optimised sound" if result.param == "synth" else "Optimised spectrogram"
    for db, title, key in ((result.before_db, "Start", "before"), (result.after_db, after_title, "after"),
                           (result.roundtrip_db, "Round trip: spectrogram of the written sound", "roundtrip")):
        st.plotly_chart(heatmap(db, title, result, floor_db, top_db), width="stretch", key=f"{KEY}_fig_{key}")
        st.download_button(f"Download {key} spectrogram PNG", png_bytes(spectrogram_picture(db, floor_db, top_db)),
                           f"{key}_spectrogram.png", "image/png", key=f"{KEY}_dl_png_{key}")
    if result.history:
        fig = go.Figure(go.Scatter(y=result.history, mode="lines"))
        fig.update_layout(title="Objective per step (log-probability or activation; priors and gain jitter included)",
                          xaxis_title="step", height=280, margin=dict(l=10, r=10, t=40, b=10))
        st.plotly_chart(fig, width="stretch")
    widgets.download_json(result.summary(), "dream.json", "Download round-trip figures JSON", key=f"{KEY}_dl_json")

"""``audio dream`` (synthesiser or free-spectrogram dreams, a round-trip check and independent
judges) and ``audio tags`` (what the speech and music networks hear in a file)."""

from __future__ import annotations

import argparse

from ..audio.clips import BUILTIN_CLIPS
from ..audio.dream import PARAMS, DreamSettings, dream, listen, save_dream
from ..audio.synth import SYNTH_KINDS
from .common import check_options, output_dir, output_file, progress, write_json

D = DreamSettings()


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("audio", help="audio hallucinations: dream sound through speech, music or image networks")
    sub = p.add_subparsers(dest="audio_command", required=True)

    d = sub.add_parser("dream", help="dream a sound for a network (a synthesiser by default), verify the round trip, "
                                     "let independent judges listen")
    d.add_argument("--net", default=D.net,
                   help="speech | music:TAG (e.g. music:piano) | image:MODEL:LAYER[:UNIT] | image:MODEL:class:N")
    d.add_argument("--music-model", choices=["MTT_vgg", "MTT_musicnn"], default=D.music_model,
                   help="which musicnn tagger music:TAG dreams through")
    d.add_argument("--start", default=D.start, help=f"a WAV/FLAC/OGG path or one of: {', '.join(BUILTIN_CLIPS)}")
    d.add_argument("--seconds", type=float, default=D.seconds)
    d.add_argument("--steps", type=int, default=D.steps)
    d.add_argument("--lr", type=float, default=D.lr)
    d.add_argument("--param", choices=list(PARAMS), default=D.param,
                   help="synth: a harmonic-plus-noise synthesiser that can only make plausible sound (default); "
                        "spectrogram / spectrogram-fft: a free spectrogram, adversarial / unconstrained")
    d.add_argument("--synth", choices=list(SYNTH_KINDS), default=D.synth,
                   help="synthesiser kind (default: voice for speech, instrument otherwise)")
    d.add_argument("--fit-steps", type=int, default=D.fit_steps, help="synth from a clip: steps spent imitating it first")
    d.add_argument("--time-shift-ms", type=float, default=D.time_shift_ms, help="synth: random delay per step")
    d.add_argument("--added-noise-db", type=float, default=D.added_noise_db, help="synth: noise level per step, dB below the peak")
    d.add_argument("--floor-db", type=float, default=D.floor_db, help="dB of the quietest value (re full-scale sine)")
    d.add_argument("--top-db", type=float, default=D.top_db, help="dB of the loudest value")
    d.add_argument("--tv-time", type=float, default=D.tv_time, help="spectrogram only: total-variation weight along time")
    d.add_argument("--tv-freq", type=float, default=D.tv_freq, help="spectrogram only: total-variation weight along frequency")
    d.add_argument("--blur-every", type=int, default=D.blur_every, help="spectrogram only")
    d.add_argument("--blur-sigma", type=float, default=D.blur_sigma)
    d.add_argument("--gain-jitter-db", type=float, default=D.gain_jitter_db)
    d.add_argument("--consistency-every", type=int, default=None,
                   help="spectrogram only: every N steps project the spectrogram onto one a waveform can have "
                        "(0: off; default 4 for image targets, off for speech and music)")
    d.add_argument("--phase", choices=["griffin-lim", "original"], default=D.phase, help="spectrogram only")
    d.add_argument("--griffin-lim-iters", type=int, default=D.griffin_lim_iters)
    d.add_argument("--momentum", type=float, default=D.momentum)
    d.add_argument("--seed", type=int, default=D.seed)
    d.add_argument("--out", default="out/audio")
    d.set_defaults(func=run_dream)

    t = sub.add_parser("tags", help="speech probability and top music tags of a sound")
    t.add_argument("source", help=f"a WAV/FLAC/OGG path or one of: {', '.join(BUILTIN_CLIPS)}")
    t.add_argument("--seconds", type=float, default=4.0, help="length of built-in clips")
    t.add_argument("--top", type=int, default=10)
    t.add_argument("--music-model", choices=["MTT_vgg", "MTT_musicnn"], default="MTT_vgg")
    t.add_argument("--json", default=None, help="also write the figures to this JSON file")
    t.set_defaults(func=run_tags)


def run_dream(args: argparse.Namespace) -> int:
    check_options(args, "seconds", "steps", "lr", "seed", "floor_db", "top_db", "tv_time", "tv_freq", "blur_every",
                  "blur_sigma", "gain_jitter_db", "consistency_every", "griffin_lim_iters", "momentum")
    settings = DreamSettings(
        net=args.net, music_model=args.music_model, start=args.start, seconds=args.seconds, steps=args.steps, lr=args.lr, param=args.param,
        synth=args.synth, fit_steps=args.fit_steps, time_shift_ms=args.time_shift_ms, added_noise_db=args.added_noise_db,
        floor_db=args.floor_db, top_db=args.top_db, tv_time=args.tv_time, tv_freq=args.tv_freq,
        blur_every=args.blur_every, blur_sigma=args.blur_sigma, gain_jitter_db=args.gain_jitter_db,
        consistency_every=args.consistency_every,
        phase=args.phase, griffin_lim_iters=args.griffin_lim_iters, momentum=args.momentum, seed=args.seed,
    )
    out = output_dir(args.out)
    with progress(settings.steps, f"dream {settings.net}") as callback:
        result = dream(settings, device=args.device, callback=callback, should_stop=callback.should_stop)
    save_dream(result, out)
    if result.stopped:
        print(f"stopped: {result.stopped}")
    for note in result.notes:
        print(f"note: {note}")
    print(f"{result.param_label}")
    print(f"{result.target} (scored by the optimised network): {result.value_label} before {result.before['value']:.3f} → "
          f"optimised {result.optimised['value']:.3f} → round trip (WAV read back) {result.roundtrip['value']:.3f}")
    print("independent judges (start → WAV read back):")
    for key, after in result.judges.get("roundtrip", {}).items():
        before = result.judges["before"][key]
        why = f"  ({after.reason})" if after.reason else ""
        print(f"  {after.label:<24} {before.text():>10} → {after.text():<10} {after.judge}{why}")
    if result.griffin_lim_convergence is not None:
        print(f"Griffin-Lim spectral convergence {result.griffin_lim_convergence:.3f}")
    print(f"files in {out}: {', '.join(result.files.values())} ({result.seconds:.1f} s optimising)")
    return 1 if result.stopped and result.stopped.startswith("diverged") else 0


def run_tags(args: argparse.Namespace) -> int:
    check_options(args, "seconds", "top")
    output_file(args.json, "--json")
    report = listen(args.source, seconds=args.seconds, device=args.device, music_model=args.music_model)
    print(f"speech probability (Silero VAD, mean over 32 ms chunks): {report['speech_probability']:.3f}")
    print(f"music tags (musicnn {args.music_model}):")
    for tag, p in list(report["music_tags"].items())[: args.top]:
        print(f"  {tag:<14} {p:.3f}")
    if args.json:
        write_json(args.json, report)
    return 0

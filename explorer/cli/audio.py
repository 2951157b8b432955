"""``audio dream`` (spectrogram dreams with a round-trip check) and ``audio tags`` (what the
speech and music networks hear in a file)."""

from __future__ import annotations

import argparse

from ..audio.clips import BUILTIN_CLIPS
from ..audio.dream import DreamSettings, dream, listen, save_dream
from .common import check_options, output_dir, output_file, progress, write_json

D = DreamSettings()


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("audio", help="audio hallucinations: dream sound through speech, music or image networks")
    sub = p.add_subparsers(dest="audio_command", required=True)

    d = sub.add_parser("dream", help="optimise a spectrogram for a network, resynthesise it, verify the round trip")
    d.add_argument("--net", default=D.net,
                   help="speech | music:TAG (e.g. music:piano) | image:MODEL:LAYER[:UNIT] | image:MODEL:class:N")
    d.add_argument("--music-model", choices=["MTT_vgg", "MTT_musicnn"], default=D.music_model,
                   help="which musicnn tagger music:TAG dreams through")
    d.add_argument("--start", default=D.start, help=f"a WAV/FLAC/OGG path or one of: {', '.join(BUILTIN_CLIPS)}")
    d.add_argument("--seconds", type=float, default=D.seconds)
    d.add_argument("--steps", type=int, default=D.steps)
    d.add_argument("--lr", type=float, default=D.lr)
    d.add_argument("--param", choices=["pixel", "fft"], default=D.param)
    d.add_argument("--floor-db", type=float, default=D.floor_db, help="dB of the quietest value (re full-scale sine)")
    d.add_argument("--top-db", type=float, default=D.top_db, help="dB of the loudest value")
    d.add_argument("--tv-time", type=float, default=D.tv_time, help="total-variation weight along time")
    d.add_argument("--tv-freq", type=float, default=D.tv_freq, help="total-variation weight along frequency")
    d.add_argument("--blur-every", type=int, default=D.blur_every)
    d.add_argument("--blur-sigma", type=float, default=D.blur_sigma)
    d.add_argument("--gain-jitter-db", type=float, default=D.gain_jitter_db)
    d.add_argument("--consistency-every", type=int, default=None,
                   help="every N steps project the spectrogram onto one a waveform can have "
                        "(0: off; default 4 for image targets, off for speech and music)")
    d.add_argument("--phase", choices=["griffin-lim", "original"], default=D.phase)
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
    print(f"{result.target}: {result.value_label} before {result.before['value']:.3f} → optimised "
          f"{result.optimised['value']:.3f} → round trip (WAV read back) {result.roundtrip['value']:.3f}")
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

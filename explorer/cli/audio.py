"""``audio dream`` (synthesiser or free-spectrogram dreams, a round-trip check and independent
judges) and ``audio tags`` (what the speech and music networks hear in a file)."""

from __future__ import annotations

import argparse
import json

from ..audio.clips import BUILTIN_CLIPS
from ..audio.dream import PARAMS, DreamSettings, dream, listen, save_dream
from ..audio.synth import SYNTH_KINDS
from ..audio.targets import WORD_OBJECTIVES
from ..errors import UserInputError
from .common import check_options, output_dir, output_file, progress, write_json

D = DreamSettings()


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("audio", help="audio hallucinations: dream sound through speech, music or image networks")
    sub = p.add_subparsers(dest="audio_command", required=True)

    d = sub.add_parser("dream", help="dream a sound for a network (a synthesiser by default), verify the round trip, "
                                     "let independent judges listen")
    d.add_argument("--net", default=D.net,
                   help="speech | words (the project's keyword net; pick the word with --target) "
                        "| music:TAG (e.g. music:piano) | image:MODEL:LAYER[:UNIT] | image:MODEL:class:N")
    d.add_argument("--target", default=D.word,
                   help="words: the keyword to dream (yes, no, up, down, left, right, on, off, "
                                                    "stop, go, zero … nine)")
    d.add_argument("--word-net", default=D.word_net, metavar="FOLDER[,FOLDER…]",
                   help="words: by default the word net (a log-mel CNN and two heads over Google's speech "
                        "embedding, averaged); 'log-mel' (the CNN alone), 'ensemble' (it and two trained alike) or a "
                        "trained word net's folder; several folders separated by commas make an ensemble (the dream "
                        "must please every member)")
    d.add_argument("--word-objective", choices=list(WORD_OBJECTIVES), default=D.word_objective,
                   help="words: 'probability' ascends log p(word) (as much of the word as the net can hear); "
                        "'typical' brings the net's pooled features near the word's mean over its training clips; "
                        "'log-odds' keeps asking for more of the word once p(word) is near 1")
    d.add_argument("--noise-budget", type=float, default=D.noise_budget,
                   help="synthesiser: the noise branch (breath, frication) may carry at most this share of the "
                        "harmonic branch's energy")
    d.add_argument("--edge-silence-ms", type=float, default=D.edge_silence_ms,
                   help="synthesiser: the first and last ms are silent, so a word has silence around it (0: off)")
    d.add_argument("--control-ms", type=float, default=D.control_ms,
                   help="synthesiser: loudness and voicing frames every this many ms (default: 5 for speech and "
                        "word dreams, 10 otherwise; shorter makes onsets, bursts and closures sharper)")
    d.add_argument("--control-tv", type=float, default=D.control_tv,
                   help="synthesiser: weight of a penalty on the loudness and voicing knobs' total variation per "
                        "second (default: 0.03 for speech and word dreams, 0 = off otherwise): sharp edges, no flutter")
    d.add_argument("--mask-ms", type=float, default=D.mask_ms,
                   help="synthesiser: two randomly silenced spans of up to this many ms at every step (0: off)")
    d.add_argument("--music-model", choices=["MTT_vgg", "MTT_musicnn"], default=D.music_model,
                   help="which musicnn tagger music:TAG dreams through")
    d.add_argument("--start", default=D.start, help=f"a WAV/FLAC/OGG path or one of: {', '.join(BUILTIN_CLIPS)}")
    d.add_argument("--seconds", type=float, default=None, help="dream length (default 1 s for words, 4 s otherwise)")
    d.add_argument("--steps", type=int, default=D.steps)
    d.add_argument("--lr", type=float, default=D.lr)
    d.add_argument("--param", choices=list(PARAMS), default=D.param,
                   help="synth: a harmonic-plus-noise synthesiser that can only make plausible sound (default); "
                        "spectrogram / spectrogram-fft: a free spectrogram, adversarial / unconstrained")
    d.add_argument("--synth", choices=list(SYNTH_KINDS), default=D.synth,
                   help="synthesiser kind (default: voice for speech, instrument otherwise)")
    d.add_argument("--fit-steps", type=int, default=D.fit_steps,
                   help="synth from a clip: steps spent imitating it first")
    d.add_argument("--time-shift-ms", type=float, default=D.time_shift_ms, help="synth: random delay per step")
    d.add_argument("--speed-jitter-pct", type=float, default=D.speed_jitter_pct,
                   help="synth: random tape speed per step, ± percent (pitch, formants and rate together, "
                        "as between speakers)")
    d.add_argument("--added-noise-db", type=float, default=D.added_noise_db,
                   help="synth: noise level per step, dB below the peak (default: -30 for word dreams, "
                        "-50 otherwise)")
    d.add_argument("--floor-db", type=float, default=D.floor_db, help="dB of the quietest value (re full-scale sine)")
    d.add_argument("--top-db", type=float, default=D.top_db, help="dB of the loudest value")
    d.add_argument("--tv-time", type=float, default=D.tv_time,
                   help="spectrogram only: total-variation weight along time")
    d.add_argument("--tv-freq", type=float, default=D.tv_freq,
                   help="spectrogram only: total-variation weight along frequency")
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
    d.add_argument("--control", type=int, default=8,
                   help="the judges also hear this many random starts of the same parameterisation (0: no control)")
    d.add_argument("--hearing", action=argparse.BooleanOptionalAction, default=True,
                   help="the judges trained on human speech and ears too: "
                        "pocketsphinx, DNSMOS, CREPE (a few s per sound)")
    d.add_argument("--out", default="out/audio")
    d.set_defaults(func=run_dream)

    t = sub.add_parser("tags", help="speech probability and top music tags of a sound")
    t.add_argument("source", help=f"a WAV/FLAC/OGG path or one of: {', '.join(BUILTIN_CLIPS)}")
    t.add_argument("--seconds", type=float, default=4.0, help="length of built-in clips")
    t.add_argument("--top", type=int, default=10)
    t.add_argument("--music-model", choices=["MTT_vgg", "MTT_musicnn"], default="MTT_vgg")
    t.add_argument("--json", default=None, help="also write the figures to this JSON file")
    t.set_defaults(func=run_tags)

    wd = sub.add_parser("words-data",
                        help="synthesise the keyword clips (espeak-ng, flite, festival) into a cache folder")
    wd.add_argument("--out", default="runs/words/data", help="cache folder (one .npz per synthesiser)")
    wd.add_argument("--seed", type=int, default=0)
    wd.add_argument("--pseudo-speakers", action="store_true",
                    help="also make flite-pseudo.npz: flite's clips through Praat's Change gender (opt-in engine)")
    wd.add_argument("--kokoro", action="store_true",
                    help="also make kokoro.npz: Kokoro-82M's neural voices and their blends (opt-in engine)")
    wd.set_defaults(func=run_words_data)

    wt = sub.add_parser("words-train", help="train the keyword network on the synthesised clips (festival held out)")
    wt.add_argument("--data", default="runs/words/data", help="the folder `audio words-data` filled")
    wt.add_argument("--out", default="runs/words/net",
                    help="where model.safetensors + config.json go (shipped: assets/words)")
    wt.add_argument("--checkpoint", default="runs/words/checkpoint.pt", help="resumable training state")
    wt.add_argument("--steps", type=int, default=2000, help="length of the learning-rate schedule")
    wt.add_argument("--stop-after", type=int, default=None, help="stop at this step of the schedule and write the net")
    wt.add_argument("--batch-size", type=int, default=64)
    wt.add_argument("--widths", default=None, metavar="W1,W2,…",
                    help="channels of the conv blocks (default 16,32,48,64: the shipped net's)")
    wt.add_argument("--front", choices=("log-mel", "speech-embedding"), default="log-mel",
                    help="log-mel: the small CNN on our log-mel (shipped); speech-embedding: a head over Google's "
                         "speech embedding, trained on real speech and kept frozen (needs the openwakeword wheel)")
    wt.add_argument("--head-width", type=int, default=128, help="channels of the head over the speech embedding")
    wt.add_argument("--lr", type=float, default=3e-3)
    wt.add_argument("--seed", type=int, default=0)
    wt.add_argument("--spec-mask", action="store_true", help="SpecAugment-style masks on the log-mel while training")
    wt.add_argument("--flite-weight", type=float, default=1.0,
                    help="draw flite clips (recorded human voices) this much more often")
    wt.add_argument("--pseudo-weight", type=float, default=0.0,
                    help="train on the flite-pseudo clips too (words-data --pseudo-speakers), each drawn this much "
                         "as often as an espeak-ng clip (0: not used)")
    wt.add_argument("--kokoro-weight", type=float, default=0.0,
                    help="train on the kokoro clips too (words-data --kokoro), each drawn this much as often as an "
                         "espeak-ng clip (0: not used)")
    wt.add_argument("--vtlp", type=float, default=0.0,
                    help="vocal-tract-length perturbation: warp each example's frequency axis by a random "
                         "factor in [1 - VTLP, 1 + VTLP] (e.g. 0.15; 0: off)")
    wt.add_argument("--random-eq", type=float, default=0.0, metavar="DB",
                    help="channel colour: multiply each example's spectrum by a smooth random gain curve of up to "
                         "± DB dB (e.g. 6; 0: off)")
    wt.add_argument("--adv-eps", type=float, default=0.0, metavar="R",
                    help="adversarial training: each example's log-mel moved to the worst point within an L2 "
                         "radius R before the step (a clip's log-mel norm is about 60; e.g. 3; 0: off)")
    wt.add_argument("--adv-steps", type=int, default=3, help="PGD steps of that attack (each costs a pass)")
    wt.add_argument("--threads", type=int, default=None, help="torch CPU threads (1 is fastest on a busy machine)")
    wt.set_defaults(func=run_words_train)

    wc = sub.add_parser("words-calibrate",
                        help="calibrate pocketsphinx's closed-set verdict on the synthesisers' recordings "
                             "and on random starts (ships as assets/words/sphinx_calibration.json)")
    wc.add_argument("--data", default="runs/words/data")
    wc.add_argument("--out", default="runs/words/net", help="folder for sphinx_calibration.json")
    wc.add_argument("--espeak-per-word", type=int, default=12)
    wc.add_argument("--flite-per-word", type=int, default=6)
    wc.add_argument("--festival-per-word", type=int, default=6)
    wc.add_argument("--synth-starts", type=int, default=60)
    wc.add_argument("--spectrogram-starts", type=int, default=20)
    wc.add_argument("--keep-recordings", default=None, metavar="JSON",
                    help="decode only the random starts again and keep this calibration's recordings rows "
                         "(pocketsphinx adapts across utterances: decoding them again can move them by a clip)")
    wc.set_defaults(func=run_words_calibrate)

    wm = sub.add_parser("words-centroids",
                        help="a word net's class centroids (mean pooled features of each class's training clips), "
                             "which --word-objective typical dreams towards (written by words-train too)")
    wm.add_argument("--net", default="assets/words", help="the word net's folder (centroids.safetensors goes there)")
    wm.add_argument("--data", default="runs/words/data", help="the clips it was trained on (words-data)")
    wm.set_defaults(func=run_words_centroids)


def run_dream(args: argparse.Namespace) -> int:
    check_options(args, "seconds", "steps", "lr", "seed", "floor_db", "top_db", "tv_time", "tv_freq", "blur_every",
                  "blur_sigma", "gain_jitter_db", "consistency_every", "griffin_lim_iters", "momentum")
    if args.seconds is None:
        args.seconds = 1.0 if args.net.split(":")[0] == "words" else D.seconds
    if not 0 <= args.control <= 256:
        raise UserInputError(f"--control {args.control}: between 0 and 256 random starts.")
    settings = DreamSettings(
        net=args.net, word=args.target, word_net=args.word_net, word_objective=args.word_objective,
        control_starts=args.control, hearing=args.hearing,
        music_model=args.music_model,
        start=args.start, seconds=args.seconds, steps=args.steps, lr=args.lr, param=args.param,
        synth=args.synth, fit_steps=args.fit_steps, time_shift_ms=args.time_shift_ms,
        speed_jitter_pct=args.speed_jitter_pct, noise_budget=args.noise_budget, edge_silence_ms=args.edge_silence_ms,
        control_ms=args.control_ms, control_tv=args.control_tv, mask_ms=args.mask_ms,
        added_noise_db=args.added_noise_db,
        floor_db=args.floor_db, top_db=args.top_db,
        tv_time=args.tv_time, tv_freq=args.tv_freq,
        blur_every=args.blur_every, blur_sigma=args.blur_sigma, gain_jitter_db=args.gain_jitter_db,
        consistency_every=args.consistency_every,
        phase=args.phase, griffin_lim_iters=args.griffin_lim_iters, momentum=args.momentum, seed=args.seed,
    )
    out = output_dir(args.out)
    with progress(settings.steps + settings.control_starts, f"dream {settings.net}") as callback:
        def control_progress(done, total, preview, values):  # the random starts follow the dream's steps on one bar
            callback(settings.steps + done, settings.steps + total, preview, values)

        result = dream(settings, device=args.device, callback=callback, should_stop=callback.should_stop,
                       control_callback=control_progress)
    save_dream(result, out)
    if result.stopped:
        print(f"stopped: {result.stopped}")
    for note in result.notes:
        print(f"note: {note}")
    print(f"{result.param_label}")
    print(f"{result.target} (scored by the optimised network): "
          f"{result.value_label} before {result.before['value']:.3f} "
          f"→ optimised {result.optimised['value']:.3f} "
          f"→ round trip (WAV read back) {result.roundtrip['value']:.3f}")
    comparison = (result.random_starts or {}).get("comparison", {})
    starts_note = (f"; random starts: mean of {result.random_starts['n']}, dream − starts [95 % interval]"
                   if comparison else "")
    print("independent judges (start → WAV read back" + starts_note + "):")
    for key, after in result.judges.get("roundtrip", {}).items():
        before = result.judges["before"][key]
        why = f"  ({after.reason})" if after.reason else ""
        row = comparison.get(key)
        control = ""
        if row and row.get("difference") is not None:
            control = (f"  starts {row['start_mean']:.3f}, {row['difference']:+.3f} "
                       f"[{row['low']:+.3f}, {row['high']:+.3f}] {row['claim']}")
        note = f"  ({after.note})" if after.note else ""
        print(f"  {after.label:<24} {before.text():>10} → {after.text():<10}{control}  {after.judge}{why}{note}")
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


def run_words_data(args: argparse.Namespace) -> int:
    import time

    from ..audio.wordsdata import ENGINES, KOKORO, PSEUDO, cache_path, make_engine_data, recipe
    from ..progress import CANCELLED

    check_options(args, "seed")
    out = output_dir(args.out)
    for engine in ENGINES + ((PSEUDO,) if args.pseudo_speakers else ()) + ((KOKORO,) if args.kokoro else ()):
        clips = len(recipe(engine, args.seed))
        there = cache_path(out, engine).exists()
        started = time.perf_counter()
        with progress(clips, f"{engine} clips", unit="clip") as bar:
            path = make_engine_data(engine, out, args.seed, callback=bar, should_stop=bar.should_stop)
        if path == CANCELLED:
            print("stopped: cancelled (nothing written for this synthesiser)")
            return 1
        made = "kept: it was there" if there else f"made in {time.perf_counter() - started:.1f} s"
        print(f"{engine}: {path} ({clips} clips, {made})")
    return 0


def run_words_train(args: argparse.Namespace) -> int:
    import shlex
    import sys

    import torch

    from ..audio.wordstrain import TrainSettings, train_word_net

    check_options(args, "steps", "lr", "seed", "batch_size", "threads")
    if args.threads is not None:
        torch.set_num_threads(int(args.threads))
    widths = TrainSettings.widths
    if args.widths:
        try:
            widths = tuple(int(w) for w in args.widths.split(","))
        except ValueError:
            raise UserInputError(f"--widths {args.widths}: whole numbers separated by commas (16,32,48,64).") from None
    settings = TrainSettings(widths=widths, steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                             stop_after=args.stop_after, spec_mask=args.spec_mask, flite_weight=args.flite_weight,
                             vtlp=args.vtlp, pseudo_weight=args.pseudo_weight, kokoro_weight=args.kokoro_weight,
                             random_eq=args.random_eq, adv_eps=args.adv_eps, adv_steps=args.adv_steps,
                             front=args.front, head_width=args.head_width)  # TrainSettings bounds every knob
    out = output_dir(args.out)  # after every option is checked
    command = "python -m explorer " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    with progress(settings.stop_after or settings.steps, "train word net") as bar:
        config = train_word_net(args.data, out, settings, checkpoint=args.checkpoint, callback=bar,
                                should_stop=bar.should_stop, command=command)
    if config.get("stopped"):
        print(f"stopped at step {config['step']}: resume with the same command")
        return 1
    test, val = config["training"]["test_held_out"], config["training"]["validation"]
    print(f"validation ({config['training']['data']['validation']}): "
          f"{val['keywords']['accuracy']:.3f} top-1 on keywords")
    print(f"held-out synthesiser ({config['training']['data']['test']}): "
          f"{test['keywords']['correct']}/{test['keywords']['n']} = {test['keywords']['accuracy']:.3f} "
          f"top-1 on keywords; unknown words {test['unknown_words']['accuracy']:.3f}")
    for voice, row in test["per_voice"].items():
        print(f"  {voice:<24} {row['correct']}/{row['n']} = {row['accuracy']:.3f}")
    print(f"files in {out}: model.safetensors, config.json ({config['training']['seconds']:.0f} s training)")
    return 0


def run_words_centroids(args: argparse.Namespace) -> int:
    from ..audio.wordstrain import write_centroids

    path = write_centroids(args.net, args.data)
    print(f"wrote {path}")
    return 0


RECORDING_ROW_KEYS = ("correct", "n", "rate", "low", "high", "nothing")  # what a kept recordings row must hold


def run_words_calibrate(args: argparse.Namespace) -> int:
    from ..audio.hearing import calibrate_sphinx

    out = output_dir(args.out)
    per_word = {"espeak-ng": args.espeak_per_word, "flite": args.flite_per_word, "festival": args.festival_per_word}
    starts = {"synth": args.synth_starts, "spectrogram": args.spectrogram_starts}
    for name, value in {**per_word, **starts}.items():
        if not 1 <= value <= 10_000:  # 0 would leave a rate of 0/0
            raise UserInputError(f"{name}: between 1 and 10000 clips, got {value}.")
    kept = None
    if args.keep_recordings:
        from ..files import read_user_file

        raw = read_user_file(args.keep_recordings, "Sphinx calibration", max_bytes=1 << 20)  # says what it refuses
        try:
            kept = json.loads(raw)
            rows = kept.get("recordings")
            if not isinstance(rows, dict) or not rows or not all(
                    isinstance(row, dict) and all(isinstance(row.get(k), (int, float)) for k in RECORDING_ROW_KEYS)
                    for row in rows.values()):
                raise ValueError
        except (ValueError, AttributeError):
            raise UserInputError(f"{args.keep_recordings} is not a Sphinx calibration with recordings rows.") from None
        per_word = {}
    total = sum(per_word.values()) * 20 + sum(starts.values())
    with progress(total, "calibrate Sphinx", unit="clip") as bar:
        table = calibrate_sphinx(args.data, per_word=per_word, starts=starts, callback=bar, should_stop=bar.should_stop)
    if kept is not None and not table.get("stopped"):
        table["recordings"] = kept["recordings"]
    if table.get("stopped"):
        print("stopped: cancelled (nothing written)")
        return 1
    write_json(out / "sphinx_calibration.json", table)
    for engine, row in table["recordings"].items():
        print(f"{engine}: names the word right {row['correct']}/{row['n']} = {row['rate']:.3f} "
              f"[{row['low']:.3f}, {row['high']:.3f}], answers nothing on {row['nothing']}")
    for param, row in table["random_starts"].items():
        print(f"random starts ({param}, {row['seconds']:g} s): names some word in "
              f"{row['n'] - row['nothing']}/{row['n']} {row['named']}")
    print(f"wrote {out / 'sphinx_calibration.json'}")
    return 0

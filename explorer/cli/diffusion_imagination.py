"""``diffusion train-noisy-classifier | guide | inpaint | branch``: the imagination experiments' CLI twin.

Registered into the ``diffusion`` command by :func:`register_subcommands` (one call in ``cli/diffusion.py``).
"""

from __future__ import annotations

import argparse
import math

import torch

from .. import limits
from ..errors import UserInputError
from ..files import atomic_write, write_csv
from .common import check_options, output_dir, progress, write_json


def _threads(args: argparse.Namespace) -> None:
    from .diffusion import _threads as set_threads

    set_threads(args)


def _train_noisy(args: argparse.Namespace) -> int:
    from ..diffusion.data import load_dataset
    from ..diffusion.noisy_classifier import NoisyClassifierConfig, train_noisy_classifier

    _threads(args)
    check_options(args, "max_minutes")
    if args.eval_images is not None:
        limits.check("n", args.eval_images, what="--eval-images")
    config = NoisyClassifierConfig(
        steps=args.steps, batch_size=args.batch_size, lr=args.lr, warmup=args.warmup, ema_decay=args.ema,
        seed=args.seed, width=args.width, schedule=args.schedule, num_train_timesteps=args.timesteps,
        checkpoint_every=args.checkpoint_every, t_max=args.t_max, init_from=args.init_from or "",
        adv_eps=args.adv_eps, adv_steps=args.adv_steps,
    )
    out = output_dir(args.out)
    train, test = load_dataset(args.data, "train"), load_dataset(args.data, "test")
    print(f"training a noise-aware classifier on {train.source} noised along the {config.schedule} schedule "
          f"(T={config.num_train_timesteps}) → {out}")
    with progress(config.steps, "noisy classifier train") as callback:
        report = train_noisy_classifier(
            train, test, out, config, resume=not args.no_resume, device=args.device, callback=callback,
            should_stop=callback.should_stop, time_limit_s=args.max_minutes * 60 if args.max_minutes else None,
            eval_images=args.eval_images,
        )
    print(f"{report.steps_done}/{config.steps} steps in {report.total_seconds / 60:.1f} min on {report.hardware}"
          + (f" (stopped: {report.stopped})" if report.stopped else ""))
    for row in report.accuracy_by_t:
        print(f"  t {row['t_from']:>4}–{row['t_to']:<4} accuracy {row['accuracy']:.4f} ({row['n']} test images)")
    return 0


def parse_class(value: str, labels: list[str]) -> int:
    """A class by index ("3") or name ("Dress", case-insensitive)."""
    text = str(value).strip()
    if text.isdigit() and int(text) < len(labels):
        return int(text)
    for i, name in enumerate(labels):
        if name.lower() == text.lower():
            return i
    raise UserInputError(f"Unknown class {value!r}: use 0–{len(labels) - 1} or one of {', '.join(labels)}.")


def parse_scales(text: str) -> list[float]:
    try:
        scales = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UserInputError(f"--scales {text!r}: write numbers like 0,0.5,1,2,4,8.") from None
    if not scales:
        raise UserInputError("--scales is empty: write numbers like 0,0.5,1,2,4,8.")
    return scales


def _setup(args: argparse.Namespace):
    """Threads, the diffusion model as a Denoiser, the clean judge (never guides)."""
    from ..diffusion.guidance import Denoiser
    from ..diffusion.models import load_diffusion_model
    from .common import load_cli_models

    _threads(args)
    check_options(args, "steps", "eta", "seed")
    if args.eta is not None and not 0 <= args.eta <= 1:
        raise UserInputError("--eta must lie in [0, 1].")
    model = load_diffusion_model(args.model, device=args.device)
    denoiser = Denoiser(model, args.steps)
    judge = load_cli_models([args.judge], None, args.device, None)[0]
    return denoiser, judge


MAX_SWEEP_JSON_BYTES = 16 << 20  # a sweep.json of 10 classes × 16 scales is ~50 kB


def _stored_reference(args: argparse.Namespace, denoiser, judge_model) -> dict | None:
    """``--reference-json``: an earlier sweep's per-class unguided reference, if made with the same settings."""
    import json

    from ..diffusion.guidance import stored_reference
    from ..files import read_user_file

    if not args.reference_json:
        return None
    path = args.reference_json
    raw = read_user_file(path, "Sweep JSON", max_bytes=MAX_SWEEP_JSON_BYTES)
    try:
        stored = json.loads(raw)
    except ValueError as exc:
        raise UserInputError(f"--reference-json {path}: not a readable sweep.json ({type(exc).__name__}).") from None
    settings = {"model": denoiser.model.name, "judge": judge_model.name, "sampler": args.sampler,
                "steps": denoiser.num_steps, "eta": args.eta, "seed": args.seed, "n_per_class": args.n}
    return stored_reference(stored, settings)


def _noisy(args: argparse.Namespace):
    from ..diffusion.noisy_classifier import load_noisy_classifier

    return load_noisy_classifier(args.classifier, device=args.device)


def _save_samples(images: torch.Tensor, folder, stem: str = "sample") -> list[str]:
    from ..images import save_png

    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for i, image in enumerate(images):
        names.append(f"{stem}-{i:03d}.png")
        save_png(image, folder / names[-1])
    return names


def _guide(args: argparse.Namespace) -> int:
    from ..diffusion.charts import sweep_chart
    from ..diffusion.data import load_dataset
    from ..diffusion.guidance import guidance_sweep, guided_samples
    from ..diffusion.judge import Judge
    from ..images import grid, save_png

    from ..diffusion.guidance import check_guidance, check_guide_from, check_guide_until, check_scale, check_stop_at

    limits.check("batch", args.n, what="--n")
    free = check_guidance(args.guidance) == "free"
    if free and not args.sweep:
        raise UserInputError("--guidance free chooses what --sweep's --scales mean; for one set of samples give "
                             "--free-weight W (and --scale 0 for no classifier).")
    what = "classifier-free guidance weight" if free else "guidance scale"
    scales = [check_scale(v, what) for v in parse_scales(args.scales)] if args.sweep else [check_scale(args.scale)]
    stop_at = check_stop_at(args.stop_at_confidence)
    free_weight = check_scale(args.free_weight, "classifier-free guidance weight")
    if args.sweep and free_weight:
        raise UserInputError("--free-weight is for one set of samples; a sweep over weights is --sweep --guidance "
                             "free --scales W1,W2,….")
    out = output_dir(args.out)  # after every option is checked
    denoiser, judge_model = _setup(args)
    until = check_guide_until(args.guide_until, denoiser.train_steps)
    start = check_guide_from(args.guide_from, denoiser.train_steps, until)
    noisy = None if free else _noisy(args)
    test = load_dataset(args.data, "test")
    judge = Judge(judge_model, reference=test, floor=load_dataset(args.data, "train") if args.sweep else None)
    if args.sweep:
        classes = list(range(len(judge.labels))) if args.classes == "all" else \
            [parse_class(c, judge.labels) for c in args.classes.split(",")]
        reference = _stored_reference(args, denoiser, judge_model)
        total = len(scales) * len(classes) * denoiser.num_steps
        with progress(total, f"guidance sweep ({len(scales)} scales × {len(classes)} classes × {args.n})") as bar:
            result = guidance_sweep(denoiser, noisy, judge, classes=classes, scales=scales, n_per_class=args.n,
                                    sampler=args.sampler, eta=args.eta, seed=args.seed,
                                    reference_pool=0 if reference else args.reference_pool, guide_until=until,
                                    guide_from=start, stop_at=stop_at, guidance=args.guidance,
                                    reference=reference, callback=bar, should_stop=bar.should_stop)
        data = result.to_dict()
        if not free:
            data["settings"]["classifier_from"] = str(args.classifier)  # which folder, when a trained one guided
        if reference:
            data["reference_from"] = str(args.reference_json)
        write_json(out / "sweep.json", data)
        write_csv(out / "sweep.csv", result.rows)
        if result.summary:
            atomic_write(out / "sweep.svg", sweep_chart(result.summary, args.guidance).encode())
        for s, images in result.samples.items():
            save_png(grid(images, columns=min(8, args.n)), out / f"samples-s{s:g}.png")
        for row in result.summary:
            fd = f" · FD/FD(unguided, named) mean {row['fd_ratio_to_unguided_named_mean']:.2f}, max " \
                f"{row['fd_ratio_to_unguided_named_max']:.2f}" if "fd_ratio_to_unguided_named_mean" in row else ""
            if "fd_above_floor_ratio" in row:
                fd += f" · above the real-image floor {row['fd_above_floor_ratio']:.2f}×"
            print(f"{'w' if free else 's'}={row['scale']:<4g} judge names the target {row['rate']:.3f} "
                  f"[{row['ci95'][0]:.3f}, {row['ci95'][1]:.3f}] of {row['n']} "
                  f"· mean FD {row.get('mean_fd', float('nan')):.2f} · diversity {row['mean_diversity']:.3f}{fd}")
        print(f"{result.seconds / 60:.1f} min{' (stopped: ' + result.stopped + ')' if result.stopped else ''} → {out}: "
              "sweep.json, sweep.csv, sweep.svg, samples-s*.png")
        return 0
    cls = parse_class(args.cls, judge.labels)
    scale = float(args.scale)
    label = f"s={scale:g}" + (f" w={free_weight:g}" if free_weight else "")
    with progress(denoiser.num_steps, f"guided {args.sampler} {label}") as bar:
        batch = guided_samples(denoiser, noisy, [cls] * args.n, scale=scale, sampler=args.sampler, eta=args.eta,
                               seed=args.seed, guide_until=until, guide_from=start, stop_at=stop_at,
                               free_weight=free_weight, callback=bar, should_stop=bar.should_stop)
    names = _save_samples(batch.images, out / "samples")
    save_png(grid(batch.images, columns=min(8, args.n)), out / "samples.png")
    verdicts = judge.verdicts(batch.images)
    summary = judge.judge_class(batch.images, cls) if args.n >= 2 else {}
    per_sample = [{"file": f"samples/{name}", "judged": judge.labels[int(p.argmax())],
                   "p_judged": round(float(p.max()), 4), "p_target": round(float(p[cls]), 4)}
                  for name, p in zip(names, verdicts.probabilities)]
    write_json(out / "guide.json", {"settings": batch.settings | {"class": cls, "label": judge.labels[cls],
                                                               "classifier": noisy.name,
                                                               "classifier_from": str(args.classifier),
                                                               "judge": judge_model.name},
                                    "summary": summary, "samples": per_sample, "seconds": round(batch.seconds, 2),
                                    "stopped": batch.stopped})
    if summary:
        print(f"{judge_model.name} names {judge.labels[cls]} in {summary['hits']}/{summary['n']} samples "
              f"[{summary['ci95'][0]:.3f}, {summary['ci95'][1]:.3f}] · FD_cnn {summary.get('fd', float('nan')):.2f} · "
              f"diversity {summary['diversity']:.3f}")
    print(f"{args.n} samples in {batch.seconds:.1f} s → {out}: samples/, samples.png, guide.json")
    return 0


def _inpaint(args: argparse.Namespace) -> int:
    from ..diffusion.data import load_dataset
    from ..diffusion.inpaint import MASKS, hidden_mask, inpaint, mask_from_image, match_rates
    from ..images import grid, load_image, save_png

    limits.check("batch", args.k, what="--k")
    limits.check("n", args.n, what="--n")
    if args.resample < 1 or args.jump < 1 or args.chunk < 1:
        raise UserInputError("--resample, --jump and --chunk must be at least 1.")
    masks = list(MASKS) if args.mask == "all" else [m.strip() for m in args.mask.split(",") if m.strip()]
    if not args.mask_file:
        for name in masks or [""]:
            hidden_mask(name, (2, 2))  # an unknown name fails before any work
    out = output_dir(args.out)
    denoiser, judge_model = _setup(args)
    size = denoiser.shape[-2:]
    if args.image_file:  # one uploaded image, K completions
        image = denoiser.model.adapt_images(load_image(args.image_file))
        hidden = mask_from_image(load_image(args.mask_file), size) if args.mask_file else hidden_mask(masks[0], size)
        with progress(denoiser.num_steps, "inpainting") as bar:
            result = inpaint(denoiser, image, hidden, k=args.k, sampler=args.sampler, eta=args.eta, seed=args.seed,
                             jump=args.jump, resample=args.resample, callback=bar, should_stop=bar.should_stop)
        names = _save_samples(result.completions[0], out / "completions", "completion")
        save_png(grid(torch.cat([result.originals, result.masked, result.completions[0]])), out / "inpaint.png")
        probs = judge_model.probabilities(result.completions[0])
        completions = [{"file": f"completions/{n}", "judged": judge_model.labels[int(p.argmax())],
                        "p": round(float(p.max()), 4)} for n, p in zip(names, probs)]
        write_json(out / "inpaint.json", {"settings": result.settings, "stopped": result.stopped,
                                          "completions": completions})
        print(f"{args.k} completions in {result.seconds:.1f} s → {out}: completions/, inpaint.png, inpaint.json")
        return 0
    test = load_dataset(args.data, "test")
    images, labels = test.images[: args.n], test.labels[: args.n]
    from ..diffusion.inpaint import repaint_levels

    levels = repaint_levels(denoiser.num_steps, args.jump, args.resample)
    per_chunk = sum(1 for a, c in zip(levels, levels[1:]) if c < a)
    total = len(masks) * math.ceil(len(images) / args.chunk) * per_chunk
    with progress(total, f"inpainting {len(images)} test images × {len(masks)} masks × {args.k}") as bar:
        report = match_rates(denoiser, judge_model, images, labels, masks=masks, k=args.k, sampler=args.sampler,
                             eta=args.eta, seed=args.seed, jump=args.jump, resample=args.resample, chunk=args.chunk,
                             callback=bar, should_stop=bar.should_stop)
    write_json(out / "inpaint.json", report.to_dict())
    for name, example in report.examples.items():
        shown = min(8, example.originals.shape[0])
        completion_rows = [example.completions[:shown, j] for j in range(example.completions.shape[1])]
        rows = [example.originals[:shown], example.masked[:shown]] + completion_rows
        save_png(grid(torch.cat(rows), columns=shown), out / f"inpaint-{name}.png")
    for row in report.rows:
        c, m = row["completions"], row["masked_image"]
        print(f"{row['mask']:<7} completions match the true label "
              f"{c['rate']:.3f} [{c['ci95'][0]:.3f}, {c['ci95'][1]:.3f}]"
              f" · masked image {m['rate']:.3f} [{m['ci95'][0]:.3f}, {m['ci95'][1]:.3f}]"
              f" · whole image {row['original_image']['rate']:.3f} · chance {row['chance']:.2f}")
    print(f"{report.seconds / 60:.1f} min{' (stopped: ' + report.stopped + ')' if report.stopped else ''} → {out}: "
          "inpaint.json, inpaint-<mask>.png (rows: original, masked, completions)")
    return 0


def _branch(args: argparse.Namespace) -> int:
    from ..diffusion.branching import branch_experiment, branch_steps
    from ..diffusion.charts import branch_chart
    from ..images import grid, save_png

    limits.check("n", args.chains, what="--chains")
    limits.check("batch", args.k, what="--k")
    out = output_dir(args.out)
    denoiser, judge_model = _setup(args)
    eta = 1.0 if args.eta is None else args.eta
    chunk = max(1, min(args.chains, limits.MAX_BATCH // args.k))
    work = math.ceil(args.chains / chunk) * (denoiser.num_steps + sum(i + 1 for i in branch_steps(denoiser.num_steps)))
    with progress(work, f"branching {args.chains} chains × {args.k}") as bar:
        report = branch_experiment(denoiser, judge_model, chains=args.chains, k=args.k, sampler=args.sampler, eta=eta,
                                   seed=args.seed, callback=bar, should_stop=bar.should_stop)
    data = report.to_dict()
    write_json(out / "branch.json", data)
    if report.agreement.shape[0]:
        atomic_write(out / "branch.svg", branch_chart(data).encode())
        save_png(grid(report.grid_images.flatten(0, 1), columns=args.k), out / "grid.png")
    for t, a, s in zip(data["t"], data["agreement"], data["spread"]):
        print(f"t={t:>4}  agreement {a:.3f}  spread {s:.3f}")
    for key in ("agreement_50", "agreement_90"):
        c = data[key]
        print(f"agreement first ≥ {c['level']:.0%} at t = {c['t']} (95 % interval {c['ci95']}, {c['chains']} chains)")
    for key in ("settle_x_t", "settle_x0"):
        c = data[key]
        print(f"settles for good on {c['state']}: median t = {c['median_t']} "
              f"(95 % interval {c['ci95']}, never: {c['never']})")
    print(f"chance agreement {data['chance_agreement']:.3f} · {report.seconds / 60:.1f} min → {out}: branch.json, "
          "branch.svg, grid.png (rows: t = T … 0, columns: branches of chain 0)")
    return 0


def _imagine(args: argparse.Namespace) -> int:
    from ..diffusion.imaginations import FASHION_RENDER, two_imaginations
    from ..images import grid, save_png

    limits.check("batch", args.n, what="--n")
    limits.check("steps", args.render_steps, what="--render-steps", lo=1)
    out = output_dir(args.out)
    denoiser, judge_model = _setup(args)
    noisy = _noisy(args)
    cls = parse_class(args.cls, judge_model.labels)
    settings = FASHION_RENDER.with_(steps=args.render_steps)
    with progress(settings.steps + denoiser.num_steps, "feature vis + guided diffusion") as bar:
        result = two_imaginations(judge_model, noisy, denoiser, cls, n=args.n, scale=args.scale, sampler=args.sampler,
                                  seed=args.seed, render_settings=settings, callback=bar, should_stop=bar.should_stop)
    save_png(grid(result.vis_images, columns=min(8, args.n)), out / "feature_vis.png")
    if result.diffusion_images.numel():
        save_png(grid(result.diffusion_images, columns=min(8, args.n)), out / "diffusion.png")
    summary = result.summary()
    write_json(out / "imagine.json", summary)
    for key in ("feature_visualisation", "guided_diffusion"):
        if key in summary:
            r = summary[key]
            print(f"{key.replace('_', ' ')} (made by {r['made_by']}): {r['judge']} names {result.label} in "
                  f"{r['judge_names_target']['hits']}/{r['judge_names_target']['n']} "
                  f"(mean p {r['judge_mean_p_target']:.3f})")
    print(f"→ {out}: feature_vis.png, diffusion.png, imagine.json")
    return 0


def _common(p: argparse.ArgumentParser, *, steps: int, sampler: str, eta: float | None) -> None:
    p.add_argument("--model", default="fashion_ddpm",
                   help="fashion_ddpm, fashion_iddpm, fashion_cddpm (class-conditional: told the class) or a "
                        "diffusers-format UNet folder")
    p.add_argument("--judge", default="fashion_cnn", help="the clean classifier that judges (never guides)")
    p.add_argument("--data", default="fashion", help="test images: fashion (Debian IDX files) or a folder of IDX files")
    p.add_argument("--steps", type=int, default=steps, help="kept (respaced) steps of the model's schedule")
    p.add_argument("--sampler", choices=["ddim", "ancestral"], default=sampler)
    p.add_argument("--eta", type=float, default=eta, help="DDIM noise (0: deterministic)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)


def register_subcommands(sub: argparse._SubParsersAction) -> None:
    """Add the imagination subcommands to ``diffusion``."""
    n = sub.add_parser("train-noisy-classifier",
                       help="train the noise-aware classifier p(y | x_t, t) for guidance (safetensors + config.json)")
    n.add_argument("--data", default="fashion", help="fashion (Debian IDX files), digits or a folder of IDX files")
    n.add_argument("--out", default="runs/fashion_noisy_cnn")
    n.add_argument("--steps", type=int, default=4000)
    n.add_argument("--batch-size", type=int, default=128)
    n.add_argument("--lr", type=float, default=2e-3)
    n.add_argument("--warmup", type=int, default=100)
    n.add_argument("--ema", type=float, default=0.999)
    n.add_argument("--width", type=int, default=32, help="channels of the first conv stage")
    n.add_argument("--seed", type=int, default=0)
    n.add_argument("--schedule", choices=["linear", "squaredcos_cap_v2"], default="linear",
                   help="noise schedule of the DDPM it will guide (fashion_ddpm: linear)")
    n.add_argument("--timesteps", type=int, default=1000)
    n.add_argument("--checkpoint-every", type=int, default=250)
    n.add_argument("--t-max", type=int, default=None, metavar="T",
                   help="train only at timesteps t ≤ T (where a guidance interval --guide-from T uses the guide)")
    n.add_argument("--init-from", default=None,
                   help="start from this noise-aware classifier's weights (fashion_noisy_cnn or a folder)")
    n.add_argument("--adv-eps", type=float, default=0.0, metavar="EPS",
                   help="adversarial training: train on x_t attacked inside an L2 ball of this radius (model space; "
                        "a robust guide, Kawar et al. 2022); 0 = plain training")
    n.add_argument("--adv-steps", type=int, default=3, help="PGD steps of that attack (each costs a pass)")
    n.add_argument("--no-resume", action="store_true")
    n.add_argument("--max-minutes", type=float, default=None, help="stop cleanly (checkpoint + export) after this long")
    n.add_argument("--eval-images", type=int, default=None,
                   help="test images for the accuracy per t range (default all)")
    n.add_argument("--threads", type=int, default=None)
    n.set_defaults(func=_train_noisy)

    g = sub.add_parser("guide",
                       help="classifier-guided samples of a class (samples/, guide.json), or --sweep over scales")
    _common(g, steps=50, sampler="ddim", eta=0.0)
    g.add_argument("--classifier", default="fashion_noisy_cnn",
                   help="noise-aware classifier that guides: fashion_noisy_cnn or a folder written by "
                        "train-noisy-classifier")
    g.add_argument("--class", dest="cls", default="0", help="target class: index or name")
    g.add_argument("--scale", type=float, default=4.0, help="guidance scale s (0: unguided)")
    g.add_argument("--n", type=int, default=16, help="samples (per class with --sweep)")
    g.add_argument("--sweep", action="store_true", help="every scale in --scales × every class in --classes")
    g.add_argument("--scales", default="0,0.5,1,2,4,8")
    g.add_argument("--classes", default="all", help="with --sweep: all, or indices/names separated by commas")
    g.add_argument("--reference-pool", type=int, default=400,
                   help="with --sweep: unguided samples whose judge-named members give each class's unguided FD "
                        "(0: off)")
    g.add_argument("--reference-json", default=None, metavar="SWEEP_JSON",
                   help="with --sweep: reuse this earlier sweep.json's per-class unguided reference (same model, "
                        "judge, sampler, steps, eta, seed and --n) instead of sampling --reference-pool again")
    g.add_argument("--guide-until", type=int, default=0, metavar="T",
                   help="truncated guidance: no classifier gradient at training timesteps t < T (0: every step)")
    g.add_argument("--guide-from", type=int, default=None, metavar="T",
                   help="guidance interval: no classifier gradient at training timesteps t > T (default: from the "
                        "first step); with --guide-until the guided steps are until ≤ t ≤ from. Both are the model's "
                        "own timesteps: t = 850 is log-SNR -7.3 under a linear schedule, -2.9 under a cosine one")
    g.add_argument("--stop-at-confidence", type=float, default=None, metavar="P",
                   help="no gradient for a sample while the guide already gives its class p(y | x_t) >= P "
                        "(e.g. 0.9; default: always guide)")
    g.add_argument("--guidance", choices=["classifier", "free"], default="classifier",
                   help="with --sweep: what --scales are — classifier scales s, or classifier-free weights w of a "
                        "class-conditional model (no classifier is called)")
    g.add_argument("--free-weight", type=float, default=0.0, metavar="W",
                   help="classifier-free guidance weight of a class-conditional model: (1 + w)·ε(x, y) − w·ε(x, ∅) "
                        "(0: the conditional model alone); adds to --scale's classifier guidance")
    g.add_argument("--out", default="out/guide")
    g.set_defaults(func=_guide)

    i = sub.add_parser("inpaint", help="complete hidden parts of test images; match rates per mask with intervals")
    _common(i, steps=50, sampler="ancestral", eta=0.0)
    i.add_argument("--mask", default="all",
                   help="left, right, top, bottom, centre (the hidden part), several separated by commas, or all")
    i.add_argument("--mask-file", default=None, help="with --image-file: a mask image, white = hidden")
    i.add_argument("--image-file", default=None, help="complete this image instead of measuring on test images")
    i.add_argument("--n", type=int, default=200, help="test images")
    i.add_argument("--k", type=int, default=1, help="completions per image")
    i.add_argument("--resample", type=int, default=1, help="RePaint: passes over each jump (1: plain replacement)")
    i.add_argument("--jump", type=int, default=5, help="RePaint jump length in kept steps")
    i.add_argument("--chunk", type=int, default=100, help="test images per batch")
    i.add_argument("--out", default="out/inpaint")
    i.set_defaults(func=_inpaint)

    b = sub.add_parser("branch", help="what each step decides: K branches from x_t at t = T … 0 (branch.json)")
    _common(b, steps=50, sampler="ancestral", eta=None)
    b.add_argument("--chains", type=int, default=100)
    b.add_argument("--k", type=int, default=8, help="branches per branch point")
    b.add_argument("--out", default="out/branch")
    b.set_defaults(func=_branch)

    m = sub.add_parser("imagine", help="two imaginations of a class: feature vis of fashion_cnn vs guided diffusion")
    _common(m, steps=50, sampler="ddim", eta=0.0)
    m.add_argument("--classifier", default="fashion_noisy_cnn")
    m.add_argument("--class", dest="cls", default="0")
    m.add_argument("--scale", type=float, default=4.0)
    m.add_argument("--n", type=int, default=8)
    m.add_argument("--render-steps", type=int, default=256)
    m.add_argument("--out", default="out/imagine")
    m.set_defaults(func=_imagine)

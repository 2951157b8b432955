"""Classifier guidance through the denoiser's x̂0 (issue 18, a pilot; not a library feature).

Instead of the noise-aware guide reading x_t (Dhariwal & Nichol), the guide at its cleanest noise level reads the
denoiser's x̂0(x_t), and the gradient of log p(y | x̂0) reaches x_t through the UNet (the idea behind Chung et al.'s
DPS and Bansal et al.'s forward universal guidance); the step formulas (Alg. 1 / 2) are unchanged. The sweep is
``guidance.guidance_sweep`` with this wrapper as the classifier (one extra UNet forward and backward per guided
step). Per-class rows, FDs and diversity go to ``--out``; the judge is the clean ``fashion_cnn`` as everywhere.

    .venv/bin/python benchmarks/x0_guidance_pilot.py --scales 8,16,32 --n 16 --classes 6,1,2,4 \\
        --out out/x0_pilot.json [--guide-from 850] [--no-clamp]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import _common  # noqa: F401  (puts the repository on sys.path)
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from explorer.cli.common import load_cli_models  # noqa: E402
from explorer.diffusion.data import load_dataset  # noqa: E402
from explorer.diffusion.guidance import Denoiser, guidance_sweep, stored_reference  # noqa: E402
from explorer.diffusion.judge import Judge  # noqa: E402
from explorer.diffusion.models import load_diffusion_model  # noqa: E402
from explorer.diffusion.noisy_classifier import load_noisy_classifier  # noqa: E402


class GuideOnDenoisedEstimate:
    """``log_prob_grad`` of the guide read on x̂0(x_t), differentiated through the UNet."""

    def __init__(self, denoiser: Denoiser, guide, clamp: bool = True):
        self.denoiser, self.guide, self.clamp = denoiser, guide, clamp
        self.labels, self.name = guide.labels, f"{guide.name} on x0"
        self.clean_level = float(guide.config.get("alpha_bar_0", 1 - 1e-4))

    def log_prob_grad(self, x_t: torch.Tensor, alpha_bar: float, classes: torch.Tensor) -> torch.Tensor:
        process = self.denoiser.process
        i = int(torch.argmin((process.alphas_cumprod - float(alpha_bar)).abs()))  # the kept step of this ᾱ
        with torch.enable_grad():
            x = x_t.detach().float().requires_grad_(True)
            t = process.model_timestep(i, x.device).expand(x.shape[0])
            eps, _ = process.split_output(self.denoiser.model.unet(x, t).sample.float())
            x0 = process.x0_from_eps(x, i, eps)
            if self.clamp:
                x0 = x0.clamp(-1, 1)
            log_p = F.log_softmax(self.guide.logits(x0, self.clean_level), dim=-1)
            (grad,) = torch.autograd.grad(log_p.gather(1, classes.to(x.device).view(-1, 1)).sum(), x)
        return grad


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="fashion_ddpm")
    parser.add_argument("--sampler", default="ddim")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scales", default="8,16,32")
    parser.add_argument("--n", type=int, default=16, help="samples per class")
    parser.add_argument("--classes", default="all")
    parser.add_argument("--guide-from", type=int, default=None)
    parser.add_argument("--no-clamp", action="store_true", help="the guide reads x̂0 unclipped")
    parser.add_argument("--reference-json", default=None, help="a stored sweep's per-class unguided FDs (n = 64)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = load_diffusion_model(args.model, device="cpu")
    denoiser = Denoiser(model, args.steps)
    judge_model = load_cli_models(["fashion_cnn"], None, "cpu", None)[0]
    judge = Judge(judge_model, reference=load_dataset("fashion", "test"), floor=load_dataset("fashion", "train"))
    reference = None
    if args.reference_json:
        reference = stored_reference(json.loads(Path(args.reference_json).read_text()),
                                     {"model": model.name, "judge": judge_model.name, "sampler": args.sampler,
                                      "steps": denoiser.num_steps, "eta": 0.0, "seed": args.seed,
                                      "n_per_class": args.n})
    classes = list(range(10)) if args.classes == "all" else [int(c) for c in args.classes.split(",")]
    guide = GuideOnDenoisedEstimate(denoiser, load_noisy_classifier("fashion_noisy_cnn", device="cpu"),
                                    clamp=not args.no_clamp)
    began = time.perf_counter()
    result = guidance_sweep(denoiser, guide, judge, classes=classes, scales=[float(s) for s in args.scales.split(",")],
                            n_per_class=args.n, sampler=args.sampler, seed=args.seed, guide_from=args.guide_from,
                            reference=reference)
    data = result.to_dict()
    data["settings"]["guidance"] = "x0" if not args.no_clamp else "x0 unclipped"
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(data, indent=1))
    for row in result.rows:
        print(f"s={row['scale']:g} class {row['class']}: rate {row['rate']:.3f} FD {row['fd']:.1f} "
              f"diversity {row['diversity']:.2f}")
    for row in result.summary:
        print(f"s={row['scale']:g}: rate {row['rate']:.3f} [{row['ci95'][0]:.3f}, {row['ci95'][1]:.3f}] "
              f"mean FD {row.get('mean_fd')} diversity {row['mean_diversity']}")
    print(f"{(time.perf_counter() - began) / 60:.1f} min")


if __name__ == "__main__":
    main()

"""The speech embedding's torch port against the graphs it was read from, at equal work (issue 19).

Every side turns the same clips (1.2 s at 16 kHz, what the word net's heads read for a one-second window) into every
76-frame window's 96-number embedding (hop 8 frames: 6 per clip), and the outputs are compared in the same run:

- onnxruntime: the wheel's log-mel graph per clip, then the embedding graph on all windows at once (its own way);
- ours, window by window: the torch port fed the same windows, cut out as the graph expects them;
- ours, whole clip: the port run over each clip at once (unpadded time convolutions: the windows fall out exactly);
- ours, whole clip with the gradient: forward and backward to the waveform (what a dream step pays).

    python benchmarks/speech_embedding_speed.py --clips 64 --threads 1 --json out/speech_embedding_speed.json
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import _common  # noqa: F401 - puts the repository on sys.path
import numpy as np  # noqa: E402
import torch  # noqa: E402

from explorer.audio import speech_embedding as se  # noqa: E402
from explorer.files import write_json  # noqa: E402


def timed(fn, repeats: int) -> tuple[float, object]:
    """Median seconds of ``repeats`` calls after one warm-up, and the last result."""
    out = fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", default="out/speech_embedding_speed.json")
    args = parser.parse_args(argv)
    if not 1 <= args.clips <= 4096 or not 1 <= args.threads <= 64 or not 1 <= args.repeats <= 100:
        parser.error("--clips 1–4096, --threads 1–64, --repeats 1–100")
    import onnxruntime as ort

    torch.set_num_threads(args.threads)
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = args.threads, 1
    folder = se.model_dir()
    mel_graph = ort.InferenceSession(str(folder / se.MEL_FILE), options, providers=["CPUExecutionProvider"])
    emb_graph = ort.InferenceSession(str(folder / se.EMBEDDING_FILE), options, providers=["CPUExecutionProvider"])
    front, embedding = se.read_front_end()

    rng = np.random.default_rng(0)
    t = np.arange(19200) / 16000
    clips = np.stack([0.3 * np.sin(2 * np.pi * rng.uniform(100, 400) * t * (1 + t)) + 0.05 * rng.standard_normal(19200)
                      for _ in range(args.clips)]).astype(np.float32)
    wav = torch.from_numpy(clips)

    def onnx_side() -> np.ndarray:
        windows = []
        for clip in clips:
            log_mel = mel_graph.run(None, {"input": clip[None] * se.INT16_SCALE})[0][:, 0][0] / 10 + 2
            windows += [log_mel[s:s + se.WINDOW_FRAMES]
                        for s in range(0, len(log_mel) - se.WINDOW_FRAMES + 1, se.EMBEDDING_HOP)]
        out = emb_graph.run(None, {"input_1": np.stack(windows)[..., None].astype(np.float32)})[0]
        return out.reshape(len(clips), -1, se.EMBEDDING_DIM)

    @torch.no_grad()
    def ours_windows() -> np.ndarray:
        windows = se.windows_of(front(wav)).transpose(2, 3)  # (B·W)×1×32×76, the port's layout
        return embedding(windows).reshape(len(clips), -1, se.EMBEDDING_DIM).numpy()

    @torch.no_grad()
    def ours_whole() -> np.ndarray:
        return embedding(front(wav)).numpy()

    def ours_gradient() -> float:
        x = wav.clone().requires_grad_(True)
        embedding(front(x)).pow(2).mean().backward()
        return float(x.grad.abs().sum())

    s_onnx, ref = timed(onnx_side, args.repeats)
    s_windows, by_window = timed(ours_windows, args.repeats)
    s_whole, whole = timed(ours_whole, args.repeats)
    s_grad, _ = timed(ours_gradient, args.repeats)
    scale = float(np.abs(ref).max())
    report = {
        "clips": args.clips, "seconds_per_clip": 1.2, "embeddings_per_clip": int(ref.shape[1]), "threads": args.threads,
        "seconds": {"onnxruntime": round(s_onnx, 4), "ours_window_by_window": round(s_windows, 4),
                    "ours_whole_clip": round(s_whole, 4), "ours_whole_clip_forward_backward": round(s_grad, 4)},
        "max_abs_difference_relative": {"window_by_window": float(np.abs(by_window - ref).max()) / scale,
                                        "whole_clip": float(np.abs(whole - ref).max()) / scale},
        "speedup_whole_clip_vs_onnxruntime": round(s_onnx / s_whole, 2),
        "speedup_whole_clip_vs_window_by_window": round(s_windows / s_whole, 2),
        "backward_cost_vs_forward": round(s_grad / s_whole, 2),
        "machine": (f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
                    f"onnxruntime {ort.__version__}"),
    }
    for name, seconds in report["seconds"].items():
        print(f"{name:34s} {seconds * 1000 / args.clips:8.2f} ms a clip")
    print(f"whole clip vs onnxruntime ×{report['speedup_whole_clip_vs_onnxruntime']}, vs window by window "
          f"×{report['speedup_whole_clip_vs_window_by_window']}; forward+backward costs "
          f"{report['backward_cost_vs_forward']}× the forward; outputs within "
          f"{max(report['max_abs_difference_relative'].values()):.1e} of onnxruntime's (relative to the largest)")
    write_json(args.json, report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

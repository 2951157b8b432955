"""The one loop keeps its own books: metrics history, the best accepted image, the final score; one way
to stop; no library function reseeds torch's global RNG."""

import os
import signal

import pytest
import torch

from explorer.optvis import Execution, Progress, Schedule, Selection, make_param, objectives, optimise, render
from explorer.progress import CANCELLED, TARGET_REACHED


def _mean_score(image, transformed):
    values = image.mean(dim=(1, 2, 3))
    return values, {"twice": 2 * values.detach(), "max": image.detach().amax(dim=(1, 2, 3))}


def test_metrics_history_and_final_score_are_kept():
    param = make_param("pixel", 3, 8, generator=torch.Generator().manual_seed(0))
    result = optimise(param, _mean_score, Schedule(steps=10, lr=0.1))
    assert set(result.metrics) == {"twice", "max"}
    assert result.metrics["twice"].shape == (10, 3)
    assert torch.allclose(result.metrics["twice"], 2 * result.history)
    # the loop scored the final image itself, the same way an independent caller would
    assert torch.allclose(result.final_values, result.images.mean(dim=(1, 2, 3)), atol=1e-6)
    assert torch.allclose(result.final_metrics["max"], result.images.amax(dim=(1, 2, 3)), atol=1e-6)
    assert bool((result.final_values > result.history[0]).all())  # and it rose


def test_progress_values_names_the_metric_callbacks_see():
    seen = []
    param = make_param("pixel", 2, 8)
    optimise(param, _mean_score, Schedule(steps=3),
             progress=Progress(callback=lambda s, t, p, v: seen.append(v.clone()), progress_values="twice"))
    result_values = [v for v in seen]
    assert len(result_values) == 3 and all(v.shape == (2,) for v in result_values)
    assert torch.allclose(result_values[0], 2 * torch.full((2,), 0.5), atol=0.05)


def test_best_accepted_image_wins_over_a_higher_unaccepted_one():
    """Item 0 is accepted only while its mean is below 0.6: the best image is the highest *accepted* one,
    not the final (higher, unaccepted) image; item 1 is always accepted, so its best is the final image."""
    param = make_param("pixel", 2, 8, generator=torch.Generator().manual_seed(1))

    def accept(image, values):
        return torch.tensor([bool(values[0] < 0.6), True])

    result = optimise(param, lambda img, t: img.mean(dim=(1, 2, 3)), Schedule(steps=40, lr=0.2),
                      selection=Selection(accept=accept))
    assert bool(result.best_accepted.all())
    best0 = float(result.best_images[0].mean())
    assert best0 < 0.6 and float(result.images[0].mean()) > 0.6
    step0 = int(result.best_steps[0])
    assert 0 < step0 < 40 and float(result.history[step0, 0]) == pytest.approx(best0, abs=1e-6)
    assert int(result.best_steps[1]) == result.steps_done  # the final image, scored by the loop
    assert torch.allclose(result.best_images[1], result.images[1])


def test_stop_on_accept_stops_and_keeps_the_accepted_image():
    param = make_param("pixel", 1, 8)
    result = optimise(param, lambda img, t: img.mean(dim=(1, 2, 3)), Schedule(steps=500, lr=0.2),
                      selection=Selection(accept=lambda img, v: v > 0.8, stop_on_accept=True))
    assert result.stopped == TARGET_REACHED and result.steps_done < 500
    assert bool(result.best_accepted[0]) and float(result.best_images.mean()) > 0.8


def test_device_side_checks_every_n_steps_still_find_the_first_nan():
    """With the host reading the books only every 4 steps, a NaN at step 6 is still reported at step 6
    and the image kept is that of step 5, exactly as with a check every step."""
    for every in (1, 4):
        param = make_param("pixel", 2, 8, generator=torch.Generator().manual_seed(0))
        step = {"n": 0}
        snapshots = []

        def score(image, transformed):  # called only by this iteration's optimise (B023 does not apply)
            step["n"] += 1  # noqa: B023
            snapshots.append(image.detach().clone())  # noqa: B023
            value = image.mean(dim=(1, 2, 3))
            return value * float("nan") if step["n"] == 6 else value  # noqa: B023

        result = optimise(param, score, Schedule(steps=20, lr=0.1), execution=Execution(check_every=every))
        assert result.diverged and "nan at step 6" in result.stopped, every
        assert result.steps_done == 5 and result.history.shape == (5, 2)
        assert torch.equal(result.images, snapshots[4])


def test_grow_returns_an_image_that_fools_as_saved():
    from explorer import fooling
    from explorer.images import png_bytes, load_image
    from tests.test_fooling import linear_model

    model = linear_model()
    result = fooling.grow(model, 3, family="uniform", seed=0, index=1, budget="none", steps=300, lr=0.1)
    assert result.reached and result.stopped == TARGET_REACHED
    saved = load_image(png_bytes(result.image))  # the PNG a user downloads, read back
    assert float(model.probabilities(saved[None])[0, 3]) >= 0.996
    assert 0 < result.best_step <= result.steps
    assert result.best_step == result.steps or result.history[result.best_step] >= 0.996


def test_ctrl_c_in_the_cli_stops_the_job_at_the_next_step(tiny):
    from explorer.cli.common import progress

    calls = []
    before = signal.getsignal(signal.SIGINT)  # SIG_IGN under nohup/background shells, default otherwise
    with progress(50, "test") as bar:
        def callback(step, total, preview, values):
            bar(step, total, preview, values)
            calls.append(step)
            if step == 3:
                os.kill(os.getpid(), signal.SIGINT)  # the user presses Ctrl-C once

        result = render(tiny, objectives.channel("conv2", 0), size=32, steps=50, callback=callback,
                        should_stop=bar.should_stop)
    assert result.stopped == CANCELLED and result.steps_done == 3 and calls[-1] == 3
    assert signal.getsignal(signal.SIGINT) is before  # the previous handler given back


def _rng_untouched(fn):
    torch.manual_seed(1234)
    expected = torch.rand(4)
    torch.manual_seed(1234)
    fn()
    assert torch.equal(torch.rand(4), expected), "the call reseeded or drew from torch's global RNG"


def test_library_functions_leave_the_global_rng_alone(tiny):
    from explorer import inversion
    from explorer.audio.dream import DreamSettings, dream
    from explorer.audio.targets import ImageTarget
    from explorer.models.fashion import _load_fashion_cnn

    photo = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(0))
    _rng_untouched(lambda: inversion.invert(tiny, photo, ["conv2"], inversion.InversionSettings(size=32, steps=2)))
    _rng_untouched(lambda: inversion.deep_dream(
        tiny, photo, "conv2", settings=inversion.DeepDreamSettings(size=32, steps=2, octaves=1)))
    _rng_untouched(lambda: inversion.caricature(tiny, photo, ["conv2"], inversion.CaricatureSettings(size=32, steps=2)))
    _rng_untouched(lambda: render(tiny, objectives.channel("conv2", 0), size=32, steps=2))
    _rng_untouched(lambda: _load_fashion_cnn("random", torch.device("cpu")))
    _rng_untouched(lambda: dream(
        DreamSettings(net="tiny", seconds=0.5, steps=2, griffin_lim_iters=2, hearing=False), device="cpu",
        target=ImageTarget(tiny, objectives.channel("conv2", 3))))


# ---- the CUDA-graph path, on CPU ----------------------------------------------------------------------
S_GRAPH = dict(size=32, steps=10, seed=3)


def test_graph_request_falls_back_to_eager_with_the_same_images(tiny):
    """No CUDA here: asking for the graphed step must give exactly the eager images for a seed."""
    a = render(tiny, objectives.channel("conv2", [0, 1, 2]), graph=True, **S_GRAPH)
    b = render(tiny, objectives.channel("conv2", [0, 1, 2]), graph=False, **S_GRAPH)
    assert torch.equal(a.images, b.images) and torch.equal(a.history, b.history)


def test_graph_control_flow_matches_eager(tiny, monkeypatch):
    """The CUDA path's control flow (eager warm-up steps, one capture, replays that read the step counter,
    the learning rate and the transforms' random numbers from device tensors, callbacks every N steps)
    emulated on CPU: a replay runs the captured step again. Same images as the eager loop."""
    import importlib

    loop = importlib.import_module("explorer.optvis.optimise")  # the module (the package exports the function)

    replays = []

    class EmulatedGraph(loop._CudaGraph):
        def warm_up(self):
            self.step.zero_grad()
            self.step.run()

        def capture(self):
            self.graph = "captured"
            return True

        def replay(self):  # a replay overwrites the gradients (capture allocated them), it never accumulates
            replays.append(int(self.step.counter))
            self.step.zero_grad()
            self.step.run()

    monkeypatch.setattr(loop, "_CudaGraph", EmulatedGraph)
    monkeypatch.setattr(loop, "_wants_graph", lambda graph, device, transforms: bool(graph))
    monkeypatch.setattr(loop, "_graph_optimizer", lambda params, lr, wd, betas: torch.optim.Adam(
        params, lr=lr, betas=betas, foreach=False))
    calls = []
    settings = dict(size=32, steps=12, seed=5, lr_schedule="cosine")
    graphed = render(tiny, objectives.channel("conv2", [0, 1]), graph=True,
                     callback=lambda s, t, p, v: calls.append(s), **settings)
    eager = render(tiny, objectives.channel("conv2", [0, 1]), graph=False, **settings)
    assert replays == list(range(EmulatedGraph.WARMUP, 12))  # steps 4…12 replayed, step counter on the device
    assert calls == list(range(1, 13))  # check_every defaults to 1 on CPU
    assert torch.allclose(graphed.images, eager.images, atol=1e-5)
    assert torch.allclose(graphed.history, eager.history, atol=1e-4)
    assert not torch.equal(graphed.images, render(tiny, objectives.channel("conv2", [0, 1]), graph=False,
                                                  **{**settings, "seed": 6}).images)


def test_transforms_draw_nothing_on_the_host():
    """The render transforms take their random numbers as a tensor: a whole run's draws can be made up
    front on the device, and the same numbers give the same images."""
    from explorer.optvis import transforms as T

    t = T.standard_transforms(64, output_size=80)
    x = torch.rand(2, 3, 64, 64)
    u = torch.rand(2, t.draws, generator=torch.Generator().manual_seed(0))
    assert t.apply(x, u).shape == (2, 3, 80, 80)
    assert torch.equal(t.apply(x, u), t.apply(x, u))
    assert not torch.equal(t.apply(x, u), t.apply(x, torch.rand(2, t.draws)))

import torch

from explorer.optvis import ImageHandling, Progress, RenderSettings, Schedule, make_param, objectives, optimise, render

S = RenderSettings(size=32, steps=12, seed=7)


def test_seeded_render_is_reproducible(tiny):
    a = render(tiny, objectives.channel("conv2", [0, 1]), S)
    b = render(tiny, objectives.channel("conv2", [0, 1]), S)
    c = render(tiny, objectives.channel("conv2", [0, 1]), S.with_(seed=8))
    assert torch.equal(a.images, b.images)
    assert not torch.equal(a.images, c.images)


def test_batch_renders_one_image_per_unit_with_history(tiny):
    result = render(tiny, objectives.channel("conv2", list(range(5))), S, thresholds=(4, 12))
    assert result.images.shape == (5, 3, 32, 32)
    assert result.history.shape == (12, 5)
    assert set(result.snapshots) == {4, 12}
    assert torch.allclose(result.snapshots[12], result.images)
    assert result.final_activation.shape == (5,)
    assert 0 <= float(result.images.min()) and float(result.images.max()) <= 1


def test_cancel_keeps_progress(tiny):
    calls = []
    result = render(tiny, objectives.channel("conv2", 0), S, callback=lambda s, t, p, v: calls.append(s),
                    should_stop=lambda: len(calls) >= 5)
    assert result.stopped == "cancelled" and result.steps_done == 5


def test_nan_stops_and_keeps_last_finite_image():
    param = make_param("pixel", 2, 8, generator=torch.Generator().manual_seed(0))
    step = {"n": 0}
    snapshots = []

    def score(image, transformed):
        step["n"] += 1
        snapshots.append(image.detach().clone())
        value = image.mean(dim=(1, 2, 3))
        return value * float("nan") if step["n"] == 6 else value

    result = optimise(param, score, Schedule(steps=20, lr=0.1))
    assert result.diverged and "step 6" in result.stopped
    assert result.steps_done == 5
    assert torch.isfinite(result.images).all()
    assert torch.equal(result.images, snapshots[4])  # the image of the last finite step


def test_nan_parameters_fall_back_to_last_finite_image():
    param = make_param("pixel", 1, 8)

    def poison(p):
        with torch.no_grad():
            p.pixels.fill_(float("nan"))

    result = optimise(param, lambda img, t: img.mean(dim=(1, 2, 3)), Schedule(steps=3),
                      handling=ImageHandling(project=poison))
    assert result.diverged and torch.isfinite(result.images).all()


def test_stop_when_target_reached(tiny):
    param = make_param("pixel", 1, 16)
    result = optimise(param, lambda img, t: img.mean(dim=(1, 2, 3)), Schedule(steps=500, lr=0.2),
                      progress=Progress(stop_when=lambda v: bool((v > 0.9).all())))
    assert result.stopped == "target reached" and result.steps_done < 500
    assert float(result.images.mean()) > 0.9


def test_init_image_starts_from_photo(tiny):
    photo = torch.rand(3, 32, 32) * 0.8 + 0.1
    result = render(tiny, objectives.channel("conv2", 0), S.with_(steps=0, param="pixel"), init=photo)
    assert torch.allclose(result.images[0], photo, atol=1e-3)


def test_blur_every_smooths(tiny):
    sharp = render(tiny, objectives.deepdream("conv1"), S.with_(steps=20, param="pixel", transforms="none"))
    blurred = render(tiny, objectives.deepdream("conv1"),
                     S.with_(steps=20, param="pixel", transforms="none", blur_every=2, blur_sigma=1.0))
    from explorer.optvis.priors import tv_value

    assert float(tv_value(blurred.images).mean()) < float(tv_value(sharp.images).mean())


def test_two_threads_rendering_on_one_model_match_sequential(tiny):
    import threading

    jobs = [(objectives.channel("conv2", [0, 1]), S.with_(seed=1)), (objectives.deepdream("conv3"), S.with_(seed=2))]
    expected = [render(tiny, o, s).images for o, s in jobs]
    got = [None, None]
    barrier = threading.Barrier(2)

    def work(i):
        barrier.wait()
        got[i] = render(tiny, *jobs[i]).images

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    for e, g in zip(expected, got):
        assert torch.allclose(e, g, atol=1e-6)


def test_network_input_size_is_what_the_final_activation_measures(tiny):
    """A 32-px param seen by the network at 48 px: the reported activation is the objective on the
    final image resized to 48 px (checked independently with evaluate)."""
    import torch.nn.functional as F

    from explorer.optvis import evaluate

    objective = objectives.channel("conv2", [0, 1])
    _ = tiny.layer_shapes, tiny.fused  # the dry runs (at the model's nominal 32 px) happen before we watch
    sizes = set()
    hook = tiny.module.register_forward_pre_hook(lambda module, inputs: sizes.add(tuple(inputs[0].shape[-2:])))
    try:
        result = render(tiny, objective, S.with_(input_size=48))
    finally:
        hook.remove()
    assert sizes == {(48, 48)} and result.images.shape[-2:] == (32, 32)  # every step and the final measure
    seen = F.interpolate(result.images, size=(48, 48), mode="bilinear", align_corners=False)
    assert torch.allclose(result.final_activation, evaluate(tiny, objective, seen), atol=1e-5)


def test_thumbnail_settings_keep_their_cache_key():
    """Fields added later are left out of to_dict()/digest at their old-behaviour value: a gallery store
    built with the thumbnail settings before they existed still finds its images."""
    import hashlib
    import json

    from explorer.optvis import FAST

    data = FAST.to_dict()
    assert "input_size" not in data and "lr_schedule" not in data and data["autocast"] is True
    assert FAST.digest() == hashlib.sha1(json.dumps(data, sort_keys=True).encode()).hexdigest()[:12]
    assert RenderSettings().digest() != FAST.with_(size=224, steps=128, autocast="auto").digest()  # "model" input


def test_a_warm_start_shows_the_network_the_bare_param_first_then_the_transforms(tiny):
    """warm = 0.25 of 8 steps: steps 1–2 see the param only resampled to the network's side (no jitter), steps 3–8
    the robustness transforms; warm = 0 is the plain transform set (no stages), and its cache key is the old one."""
    from explorer.optvis.render import render_transforms
    from explorer.optvis.transforms import RandomAffine, Staged

    settings = RenderSettings(size=32, steps=8, seed=0, input_size=48, warm=0.25)
    staged = render_transforms(tiny, settings)
    assert isinstance(staged, Staged) and [first for first, _ in staged.stages] == [1, 3]
    image = torch.rand(2, 3, 32, 32)
    u = torch.rand(2, staged.draws)
    staged.set_step(2)
    early = staged.apply(image, u)
    bare = torch.nn.functional.interpolate(image, size=(48, 48), mode="bilinear", align_corners=False)
    assert early.shape[-1] == 48 and torch.allclose(early, bare, atol=1e-5)
    staged.set_step(3)
    assert staged.apply(image, u).shape[-1] == 48 and not torch.allclose(staged.apply(image, u), bare, atol=1e-2)
    plain = render_transforms(tiny, settings.with_(warm=0.0))
    assert isinstance(plain, RandomAffine)
    assert settings.with_(warm=0.0).digest() == RenderSettings(size=32, steps=8, seed=0, input_size=48).digest()
    assert settings.digest() != settings.with_(warm=0.0).digest()
    sizes = []
    _ = tiny.layer_shapes, tiny.fused  # the dry runs (at the nominal 32 px) happen before we watch
    hook = tiny.module.register_forward_pre_hook(lambda module, inputs: sizes.append(tuple(inputs[0].shape[-2:])))
    try:
        result = render(tiny, objectives.channel("conv2", [0, 1]), settings)
    finally:
        hook.remove()
    assert result.steps_done == 8 and set(sizes) == {(48, 48)}


def test_adam_momentum_is_a_setting_that_reaches_the_optimiser_and_keeps_old_cache_keys(tiny, monkeypatch):
    settings = RenderSettings(size=32, steps=6, seed=0)
    assert "adam_beta1" not in settings.with_(adam_beta1=0.9).to_dict()  # the old value: keys made before it hold
    assert settings.with_(adam_beta1=0.0).digest() != settings.with_(adam_beta1=0.9).digest()
    seen = []
    original = torch.optim.Adam

    class Spy(original):
        def __init__(self, params, **kwargs):
            seen.append(kwargs.get("betas"))
            super().__init__(params, **kwargs)

    monkeypatch.setattr(torch.optim, "Adam", Spy)
    objective = objectives.channel("conv2", [0, 1])
    without = render(tiny, objective, settings.with_(adam_beta1=0.0, autocast=False))
    with_momentum = render(tiny, objective, settings.with_(adam_beta1=0.9, autocast=False))
    assert seen == [(0.0, 0.999), (0.9, 0.999)]
    assert not torch.allclose(without.images, with_momentum.images)

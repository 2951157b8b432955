"""Render defaults and coarse-to-fine rendering: the shipped atlas keeps its key, the stages grow to the
network's side, a crop stage keeps the full stage's scale."""

import torch

from explorer.optvis import RenderSettings, render
from explorer.optvis.transformer import unit_objective


def test_render_defaults_keep_the_shipped_atlas_key_and_coarse_to_fine_grows_to_the_full_input(tiny):
    """The gallery thumbnails are the shipped atlas's settings: same dict, same digest (cache key), whatever
    the render defaults become; coarse-to-fine stages grow to the network's side and end there."""
    import json

    from explorer.gallery import THUMBNAILS
    from explorer.optvis.render import render_transforms
    from explorer.optvis.transforms import Staged, coarse_to_fine_sizes
    from tests.conftest import ROOT

    manifest = json.loads((ROOT / "assets/atlas/efficientnet_lite0/manifest.json").read_text())
    assert THUMBNAILS.to_dict() == manifest["settings"] and THUMBNAILS.digest() == manifest["digest"]
    assert coarse_to_fine_sizes(224, 128, 0.5, 0.5) == [(1, 112), (33, 160), (65, 224)]
    assert coarse_to_fine_sizes(224, 128, 0.0, 0.5) == [(1, 224)]
    staged = render_transforms(tiny, RenderSettings(size=32, steps=20, coarse=0.5, coarse_start=0.5, input_size=64))
    assert isinstance(staged, Staged) and staged.stages[-1][0] == 11
    seen = []
    for step in (1, 10, 11, 20):
        staged.set_step(step)
        seen.append(staged.apply(torch.rand(2, 3, 32, 32), torch.rand(2, staged.draws)).shape[-1])
    assert seen == [32, 48, 64, 64]
    sizes = set()
    hook = tiny.module.register_forward_pre_hook(lambda module, inputs: sizes.add(tuple(inputs[0].shape[-2:])))
    try:
        result = render(tiny, unit_objective(tiny, "conv2", [0, 1]),
                        RenderSettings(size=32, steps=6, coarse=0.5, input_size=64))
    finally:
        hook.remove()
    assert sizes == {(32, 32), (48, 48), (64, 64)} and result.steps_done == 6  # the final measure is at 64 px


def test_a_crop_stage_shows_a_window_at_the_full_stage_scale():
    """coarse_view="crop": half the side, same pixels per pixel (a ramp's slope is unchanged), and over many
    draws the window visits the whole image (both ends of the ramp)."""
    from explorer.optvis.transforms import RandomAffine, native_scale_crop

    ramp = torch.linspace(0, 1, 224).view(1, 1, 1, 224).expand(64, 3, 224, 224).contiguous()
    window = native_scale_crop(RandomAffine(), 224, 112, 224).apply(
        ramp, torch.rand(64, 6, generator=torch.Generator().manual_seed(0)))
    slope = (window[:, 0, 56, 1:] - window[:, 0, 56, :-1]).mean() * 223
    assert window.shape[-1] == 112 and abs(float(slope) - 1.0) < 1e-3
    assert float(window[:, 0, 56, 0].min()) < 0.05 and float(window[:, 0, 56, -1].max()) > 0.95
    resized = RandomAffine(output_size=112).apply(ramp, torch.rand(64, 6))  # coarse_view="resize": half the scale
    assert abs(float((resized[:, 0, 56, 1:] - resized[:, 0, 56, :-1]).mean() * 223) - 2.0) < 1e-3

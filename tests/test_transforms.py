import torch

from explorer.optvis import transforms as T


def test_pad_and_jitter_sizes():
    x = torch.rand(2, 3, 20, 24)
    assert T.pad(4)(x).shape == (2, 3, 28, 32)
    assert T.jitter(5)(x, torch.Generator().manual_seed(0)).shape == (2, 3, 16, 20)
    padded = T.pad(3, value=0.5)(x)
    assert torch.all(padded[..., :3, :] == 0.5)


def test_jitter_shifts_content():
    x = torch.arange(100.0).view(1, 1, 10, 10)
    seen = {float(T.jitter(4)(x, torch.Generator().manual_seed(s))[0, 0, 0, 0]) for s in range(20)}
    assert len(seen) > 3  # different crops for different seeds


def test_identity_scale_and_rotation_keep_image():
    x = torch.rand(2, 3, 16, 16)
    assert torch.allclose(T.random_scale([1.0])(x), x, atol=1e-5)
    assert torch.allclose(T.random_rotate([0.0])(x), x, atol=1e-5)


def test_rotation_by_90_degrees_matches_rot90():
    x = torch.rand(1, 1, 9, 9)
    rotated = T.random_rotate([90.0])(x)
    assert torch.allclose(rotated, torch.rot90(x, 1, dims=(-2, -1)), atol=1e-4) or torch.allclose(
        rotated, torch.rot90(x, -1, dims=(-2, -1)), atol=1e-4
    )


def test_zoom_magnifies_centre():
    x = torch.zeros(1, 1, 21, 21)
    x[..., 10, 10] = 1.0
    zoomed = T.random_scale([2.0])(x)
    assert float((zoomed > 0.1).sum()) > 1  # the dot spreads over more pixels


def test_standard_set_is_reproducible_and_differentiable():
    x = torch.rand(3, 3, 64, 64, requires_grad=True)
    t = T.standard_transforms(64)
    a = t(x, torch.Generator().manual_seed(3))
    b = t(x, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    a.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_fused_affine_equals_pad_and_two_jitters():
    """RandomAffine with no zoom/rotation is exactly pad (grey) + crop + crop, in one resample."""
    import torch.nn.functional as F

    x = torch.rand(2, 3, 20, 24)
    t = T.RandomAffine(pad=3, jitter=4, jitter2=2)
    u = torch.tensor([[0.3, 0.8, 0.5, 0.5, 0.9, 0.1], [0.0, 0.99, 0.2, 0.7, 0.0, 0.6]])
    out = t.apply(x, u)
    assert out.shape == (2, 3, 22, 26)
    for b in range(2):
        y1, x1 = (u[b, :2] * 4).long().tolist()
        y2, x2 = (u[b, 4:] * 2).long().tolist()
        padded = F.pad(x[b : b + 1], (3,) * 4, value=0.5)
        first = padded[..., y1 : y1 + 23, x1 : x1 + 27]
        assert torch.allclose(out[b], first[0, :, y2 : y2 + 22, x2 : x2 + 26], atol=1e-5)


def test_fused_affine_resizes_like_bilinear_interpolation():
    import torch.nn.functional as F

    x = torch.rand(2, 3, 20, 24)
    out = T.resize_to(40).apply(x, torch.zeros(2, T.RandomAffine.draws))
    assert torch.allclose(out, F.interpolate(x, size=(40, 40), mode="bilinear", align_corners=False), atol=1e-5)

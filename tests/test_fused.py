"""The fused twin (explorer/models/fused.py): same layers, same gradients, refused where it would differ."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from explorer.models import LoadedModel
from explorer.models.fused import conv_norm_pairs, fused_twin


def _randomise_norms(module: nn.Module, seed: int = 0) -> nn.Module:
    """Batch norms with non-trivial statistics, so a wrong fold cannot hide behind μ = 0, σ = 1."""
    gen = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=gen))
            m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.weight.data.copy_(torch.randn(m.num_features, generator=gen))
            m.bias.data.copy_(torch.randn(m.num_features, generator=gen))
    return module.eval()


class ConvNormNet(nn.Module):
    """conv → bn → relu, a stride-2 depthwise conv → bn, a stride-1 depthwise conv, a 1×1 conv → bn;
    ``raw_reuse`` also adds conv3's raw output, which makes folding conv3 wrong."""

    def __init__(self, raw_reuse: bool = False):
        super().__init__()
        self.raw_reuse = raw_reuse
        self.conv1, self.bn1 = nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)
        self.dw, self.bn2 = nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=8), nn.BatchNorm2d(8)
        self.dw1 = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.conv3, self.bn3 = nn.Conv2d(8, 8, 1), nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.dw(x)))
        raw = self.conv3(self.dw1(x))
        x = self.bn3(raw) + (raw if self.raw_reuse else 0)
        return self.fc(x.mean((2, 3)))


class NormAct(nn.BatchNorm2d):
    """Like timm's BatchNormAct2d: a batch norm that also applies its activation, which no fold may drop."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(super().forward(x))


def loaded(module: nn.Module) -> LoadedModel:
    return LoadedModel(name="t", module=module, preprocess=nn.Identity(), labels=[str(i) for i in range(5)],
                       input_size=(16, 16), device=torch.device("cpu"), weights="random")


def test_the_twin_computes_every_shared_layer_and_the_gradient_as_the_original():
    torch.manual_seed(0)
    model = loaded(_randomise_norms(ConvNormNet()))
    twin = model.fused
    assert twin is not None and model.fuse_note == "fused"
    assert twin.folded == 3 and twin.changed == {"conv1", "dw", "conv3"} and twin.depthwise_fp32 == 1
    x = torch.rand(3, 3, 16, 16)
    for layers in (["bn1"], ["bn2", "output"], ["bn3"]):
        assert model.module_for(layers) is twin.module
        fast = model.activations(x, layers, use_autocast=False)
        plain = loaded_plain(model).activations(x, layers, use_autocast=False)
        for name in layers:
            assert torch.allclose(fast[name], plain[name], rtol=1e-5, atol=1e-5), name
    # a folded conv's own output means something else in the twin: asking for it runs the original
    assert model.module_for(["conv1"]) is model.module and model.module_for(["bn1", "dw"]) is model.module
    raw = model.activations(x, ["conv1"], use_autocast=False)["conv1"]
    assert torch.allclose(raw, model.module.conv1(x), atol=1e-6)
    # the gradient that drives every optimisation is the same
    grads = []
    for m in (model, loaded_plain(model)):
        image = x.clone().requires_grad_(True)
        m.activations(image, ["bn3"], use_autocast=False)["bn3"][:, 2].mean().backward()
        grads.append(image.grad)
    assert torch.allclose(grads[0], grads[1], rtol=1e-4, atol=1e-7)
    # inside bf16 autocast the strided depthwise conv runs in fp32 (the CPU's bf16 kernels are the slow ones
    # there), the stride-1 one and the others in bf16, and the result stays close to the original's
    dtypes = {}
    hooks = [getattr(twin.module, n).register_forward_hook(lambda m, i, o, n=n: dtypes.__setitem__(n, o.dtype))
             for n in ("conv1", "dw", "dw1")]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = twin.module(x)
    for h in hooks:
        h.remove()
    assert dtypes == {"conv1": torch.bfloat16, "dw": torch.float32, "dw1": torch.bfloat16}
    assert torch.allclose(out.float(), model.module(x), rtol=0.05, atol=0.05)


def loaded_plain(model: LoadedModel) -> LoadedModel:
    return LoadedModel(name="t", module=model.module, preprocess=nn.Identity(), labels=model.labels,
                       input_size=model.input_size, device=model.device, weights="random", fuse=False)


def test_a_conv_whose_raw_output_is_used_elsewhere_makes_the_twin_refused():
    torch.manual_seed(0)
    model = loaded(_randomise_norms(ConvNormNet(raw_reuse=True)))
    assert model.fused is None and "disagreed" in model.fuse_note
    assert model.module_for(["bn3"]) is model.module
    x = torch.rand(2, 3, 16, 16)
    assert torch.allclose(model.activations(x, ["output"], use_autocast=False)["output"], model.module(x))


def test_a_batch_norm_that_also_acts_is_never_folded_and_fuse_false_means_no_twin():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), NormAct(4), nn.Conv2d(4, 4, 3), nn.BatchNorm2d(4))
    _randomise_norms(net)
    assert conv_norm_pairs(net, torch.rand(1, 3, 16, 16)) == [("2", "3")]
    twin, note = fused_twin(net, torch.rand(1, 3, 16, 16))
    assert twin is not None and twin.folded == 1 and isinstance(twin.module[1], NormAct), note
    assert loaded_plain(loaded(ConvNormNet())).fused is None


def test_efficientnet_lite0_twin_folds_every_norm_and_keeps_the_render_gradient(lite0):
    twin = lite0.fused
    assert twin is not None and twin.folded == 49 and twin.depthwise_fp32 == 4
    assert twin.worst_relative_error < 1e-4
    plain = LoadedModel(name=lite0.name, module=lite0.module, preprocess=lite0.preprocess, labels=lite0.labels,
                        input_size=lite0.input_size, device=lite0.device, fuse=False)
    grads = []
    for m in (lite0, plain):
        image = torch.rand(2, 3, 224, 224, generator=torch.Generator().manual_seed(1)).requires_grad_(True)
        m.activations(image, ["blocks.10"], use_autocast=False)["blocks.10"][:, :4].mean().backward()
        grads.append(image.grad)
    scale = grads[1].abs().max()
    assert float((grads[0] - grads[1]).abs().max() / scale) < 1e-3


def test_a_network_too_large_for_a_second_copy_or_with_nothing_to_fuse_gets_no_twin(monkeypatch):
    import explorer.models.fused as fused

    torch.manual_seed(0)
    net = _randomise_norms(ConvNormNet())
    monkeypatch.setattr(fused, "MAX_TWIN_BYTES", 1000)
    twin, note = fused_twin(net, torch.rand(1, 3, 16, 16))
    assert twin is None and "MiB of weights" in note
    monkeypatch.undo()
    twin, note = fused_twin(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()), torch.rand(1, 3, 16, 16))
    assert twin is None and note == "nothing to fuse"


def test_a_stride_two_same_padding_depthwise_pads_before_its_cast_and_computes_the_same(lite0):
    """The stride-2 TF-"same" depthwise convs (odd padding: the extra row and column after) are padded in the
    input's own dtype, then cast: the same output and input gradient as the original conv, in fp32 exactly and
    under bf16 autocast as the original on the bf16-rounded input; odd and even sizes alike."""
    from explorer.models.fused import Fp32Conv, same_padding

    conv = next(m for m in lite0.module.modules()
                if type(m).__name__ == "Conv2dDynamicSamePadding" and tuple(m.stride) == (2, 2) and m.groups > 1)
    wrapped = Fp32Conv(conv)
    assert wrapped.pads_before_cast
    for size in (112, 57):
        assert same_padding(torch.zeros(1, 1, size, size), conv) == ([0, 1, 0, 1] if size % 2 == 0 else [1, 1, 1, 1])
        x = torch.randn(2, conv.in_channels, size, size, generator=torch.Generator().manual_seed(size))
        outs, grads = [], []
        for f in (conv, wrapped):
            xi = x.clone().requires_grad_(True)
            y = f(xi)
            (y * torch.linspace(-1, 1, y.numel()).reshape(y.shape)).sum().backward()
            outs.append(y.detach())
            grads.append(xi.grad)
        assert torch.equal(outs[0], outs[1]) and torch.equal(grads[0], grads[1])
        with torch.autocast("cpu", dtype=torch.bfloat16):
            half = wrapped(x.bfloat16())
        assert half.dtype == torch.float32 and torch.allclose(half, conv(x.bfloat16().float()), atol=1e-5)

import threading

import pytest
import torch
from torch import nn

from explorer.capture import OUTPUT, capture, hook_count, layer_shapes
from explorer.errors import UnknownLayerError


class Counter(nn.Module):
    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return x


def net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 5, 3), Counter(), nn.Conv2d(5, 6, 3)).eval()


def test_returns_activations_and_leaves_no_hooks():
    model = net()
    x = torch.rand(2, 3, 16, 16)
    acts = capture(model, x, ["0", "2"])
    assert acts["0"].shape == (2, 4, 14, 14) and acts["2"].shape == (2, 5, 12, 12)
    assert torch.allclose(acts["0"], model[0](x))
    assert hook_count(model) == 0


def test_hooks_removed_after_exception():
    model = net()
    with pytest.raises(RuntimeError):
        capture(model, torch.rand(1, 7, 16, 16), ["2"])  # wrong channel count fails inside forward
    assert hook_count(model) == 0


def test_stops_after_deepest_layer():
    model = net()
    capture(model, torch.rand(1, 3, 16, 16), ["0", "2"])
    assert model[3].calls == 0  # the module after the deepest target never ran
    capture(model, torch.rand(1, 3, 16, 16), ["2"], stop_early=False)
    assert model[3].calls == 1
    out = capture(model, torch.rand(1, 3, 16, 16), [OUTPUT])
    assert out[OUTPUT].shape == (1, 6, 10, 10) and model[3].calls == 2


def test_unknown_layer_suggests_close_names():
    with pytest.raises(UnknownLayerError) as info:
        capture(net(), torch.rand(1, 3, 16, 16), ["22"])
    assert "2" in info.value.suggestions


def test_reused_module_keeps_last_call():
    class Shared(nn.Module):
        def __init__(self):
            super().__init__()
            self.act = nn.Tanh()
            self.lin = nn.Linear(4, 4)

        def forward(self, x):
            return self.act(self.lin(self.act(x)))

    model = Shared().eval()
    x = torch.randn(2, 4)
    _, calls = layer_shapes(model, x)
    assert calls["act"] == 2
    acts = capture(model, x, ["act"], reused=["act"])
    assert torch.allclose(acts["act"], model(x))


def test_two_threads_get_the_same_results_as_sequential():
    model = net()
    inputs = [torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(i)) for i in range(2)]
    layers = [["0"], ["2", "4"]]
    expected = [capture(model, x, l) for x, l in zip(inputs, layers)]
    results: list = [None, None]
    barrier = threading.Barrier(2)

    def work(i):
        barrier.wait()
        out = []
        for _ in range(30):
            out.append(capture(model, inputs[i], layers[i]))
        results[i] = out

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(2):
        for acts in results[i]:
            assert set(acts) == set(layers[i])
            for name in layers[i]:
                assert torch.equal(acts[name], expected[i][name])
    assert hook_count(model) == 0

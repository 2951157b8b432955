import pickle

import pytest
import torch

from explorer.capture import hook_count
from explorer.errors import UserInputError
from explorer.images import fit, load_image
from explorer.models import WeightsUnavailable, available_models, load_model
from explorer.models.checkpoint import load_checkpoint


@pytest.mark.parametrize("photo, accepted", [("chelsea", {"tabby", "tiger cat", "Egyptian cat"}), ("coffee", {"espresso", "cup"})])
def test_efficientnet_lite0_recognises_bundled_photos(lite0, photo, accepted):
    probs = lite0.probabilities(fit(load_image(f"builtin:{photo}"), 224)[None])[0]
    assert lite0.labels[int(probs.argmax())] in accepted
    assert sum(float(probs[lite0.labels.index(c)]) for c in accepted) > 0.5


def test_efficientnet_layers_and_sharing(lite0):
    assert lite0.layer_shapes["blocks.10"] == (112, 14, 14)
    assert lite0.layer_shapes["output"] == (1000,)
    assert "blocks.10" in [i.name for i in lite0.main_layers()]
    assert load_model("efficientnet_lite0", device="cpu") is lite0  # cached once per process
    assert not any(p.requires_grad for p in lite0.module.parameters())
    assert hook_count(lite0.module) == 0


def test_activations_gradients_reach_the_image(lite0):
    x = torch.rand(1, 3, 64, 64, requires_grad=True)
    acts = lite0.activations(x, ["blocks.3"])
    acts["blocks.3"][:, 0].mean().backward()
    assert x.grad.abs().sum() > 0


@pytest.mark.parametrize("arch, layer", [("googlenet", "inception4c"), ("resnet50", "layer3"), ("alexnet", "features.8"),
                                         ("mobilenet_v3_large", "features.10"), ("vgg16", "features.22")])
def test_torchvision_architectures_with_random_weights(arch, layer):
    model = load_model(arch, weights="random", device="cpu")
    assert layer in model.layer_shapes and model.num_classes == 1000
    acts = model.activations(torch.rand(1, 3, 64, 64), [layer])
    assert acts[layer].ndim == 4


def test_missing_torchvision_weights_name_the_file(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.delenv("EXPLORER_ALLOW_DOWNLOAD", raising=False)
    from explorer.models.imagenet import _torchvision_weights_state

    with pytest.raises(WeightsUnavailable, match=r"resnet50.*\.pth.*EXPLORER_ALLOW_DOWNLOAD"):
        _torchvision_weights_state("resnet50")


def test_inception_v1_architecture_loads_without_weights(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(WeightsUnavailable, match="inception5h"):
        load_model("inception_v1", device="cpu")
    model = load_model("inception_v1", weights="random", device="cpu")
    assert model.layer_shapes["mixed4a"][0] == 508


def test_registry_lists_models_and_rejects_unknown():
    names = {s.name for s in available_models()}
    assert {"efficientnet_lite0", "googlenet", "resnet50", "vgg16", "alexnet", "mobilenet_v3_large", "inception_v1"} <= names
    with pytest.raises(UserInputError, match="efficientnet_lite0"):
        load_model("efficientnet_lite", device="cpu")


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_user_checkpoints_state_dict_safetensors_torchscript(tmp_path):
    from safetensors.torch import save_file

    from explorer.compat import import_torchvision

    tv = import_torchvision()
    torch.manual_seed(0)
    net = tv.models.resnet18(weights=None).eval()
    x = torch.rand(1, 3, 64, 64)
    expected = net(x)
    torch.save(net.state_dict(), tmp_path / "r18.pt")
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(tmp_path / "r18.safetensors"))
    torch.jit.save(torch.jit.trace(net, x), str(tmp_path / "r18_script.pt"))
    norm = lambda m: m.preprocess  # noqa: E731
    for path, arch in [("r18.pt", "resnet18"), ("r18.safetensors", "resnet18"), ("r18_script.pt", None)]:
        model = load_checkpoint(str(tmp_path / path), arch=arch, device="cpu")
        # our model normalises internally: feed the same normalised tensor through the raw module
        got = model.module(norm(model)(x))
        assert torch.allclose(got, net(norm(model)(x)), atol=1e-4), path
    assert expected.shape == (1, 1000)
    with pytest.raises(UserInputError, match="architecture"):
        load_checkpoint(str(tmp_path / "r18.pt"), device="cpu")


def test_unsafe_pickle_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        pickle.dump({"weight": _Evil()}, f)
    with pytest.raises(UserInputError, match="weights_only"):
        load_checkpoint(str(path), arch="resnet18", device="cpu")

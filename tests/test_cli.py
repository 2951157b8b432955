import json
import subprocess
import sys


def run(root, *args):
    return subprocess.run([sys.executable, "-m", "explorer", *args], cwd=root, capture_output=True, text=True, timeout=300)


def test_visualize_writes_pngs_and_json(root, tmp_path):
    out = tmp_path / "vis"
    result = run(root, "--device", "cpu", "visualize", "--layer", "blocks.2", "--channels", "0-2", "--steps", "4", "--size", "48",
                 "--out", str(out))
    assert result.returncode == 0, result.stderr
    data = json.loads((out / "result.json").read_text())
    assert data["files"] == ["000.png", "001.png", "002.png"]
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

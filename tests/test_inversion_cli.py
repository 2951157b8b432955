"""`python -m explorer invert|dream|caricature`: outputs on disk, JSON contents, clear errors."""

from __future__ import annotations

import json

from PIL import Image

from explorer.cli import main


def test_invert_writes_pngs_and_json(tmp_path, capsys):
    out = tmp_path / "inv"
    code = main(["--device", "cpu", "invert", "--image", "builtin:chelsea", "--size", "48",
                 "--layers", "blocks.0,blocks.4", "--steps", "3", "--out", str(out)])
    assert code == 0
    data = json.loads((out / "inversion.json").read_text())
    assert [row["layer"] for row in data["layers"]] == ["blocks.0", "blocks.4"]
    assert data["steps_done"] == 3 and len(data["error_history"]["blocks.4"]) == 3
    assert all(0 <= row["ssim"] <= 1 and row["normalised_error"] > 0 for row in data["layers"])
    for name in ["photo.png", "strip.png", *data["files"].values()]:
        assert Image.open(out / name).size[0] >= 48
    assert "blocks.4" in capsys.readouterr().out


def test_dream_and_caricature_write_outputs(tmp_path):
    out = tmp_path / "dream"
    assert main(["--device", "cpu", "dream", "--size", "48", "--layer", "blocks.4", "--octaves", "2", "--steps", "2",
                 "--out", str(out)]) == 0
    data = json.loads((out / "dream.json").read_text())
    assert data["octave_sizes"] == [34, 48] and data["steps_done"] == 4
    assert Image.open(out / "dream.png").size == (48, 48)

    out = tmp_path / "car"
    assert main(["--device", "cpu", "caricature", "--size", "48", "--layers", "blocks.4",
                 "--steps", "2", "--out", str(out)]) == 0
    data = json.loads((out / "caricature.json").read_text())
    assert data["layers"][0]["layer"] == "blocks.4"
    assert (out / "caricature_blocks.4.png").is_file()


def test_bad_input_is_a_clear_cli_error(tmp_path, capsys):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    assert main(["invert", "--image", str(broken), "--size", "48", "--steps", "1", "--out", str(tmp_path / "o")]) == 2
    assert "broken.png" in capsys.readouterr().err
    assert main(["invert", "--layers", "blocks.99", "--size", "48", "--steps", "1", "--out", str(tmp_path / "o")]) == 2
    assert "Unknown layer" in capsys.readouterr().err
    assert main(["dream", "--layer", "blocks.4", "--channel", "999", "--size", "48", "--out", str(tmp_path / "o")]) == 2

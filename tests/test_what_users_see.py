"""Issue 23, what a user sees: units named by their own numbers, readable log axes, images at whole
multiples of their size, `--out` guarded, one vocabulary, messages that say what happened."""

from __future__ import annotations

import plotly.graph_objects as go
import pytest
import torch

from explorer.naming import image_names, image_units, unit_kind
from explorer.optvis import objectives


# ---- units by their own numbers ------------------------------------------------------------------
def test_images_are_named_by_their_units_not_their_batch_places():
    names = image_names(objectives.channel("blocks.10", [7, 42]), 2)
    assert [n.label for n in names] == ["unit 7", "unit 42"]
    assert [n.filename() for n in names] == ["unit-0007.png", "unit-0042.png"]
    assert image_units(objectives.channel("blocks.10", [7, 42]), 2) == [7, 42]
    # priors composed in do not hide the units
    assert image_units(objectives.channel("blocks.10", [7, 42]) - 0.5 * objectives.deepdream("blocks.2"), 2) == [7, 42]


def test_classes_copies_and_dreams_have_names_too():
    cls = image_names(objectives.class_logit([309, 1]), 2)
    assert ([n.filename() for n in cls] == ["class-0309.png", "class-0001.png"]
            and unit_kind(objectives.class_logit(309)) == "class")
    copies = image_names(objectives.channel("blocks.10", 7), 3)  # one unit, a diversity batch of 3
    assert [n.label for n in copies] == ["unit 7 (1 of 3)", "unit 7 (2 of 3)", "unit 7 (3 of 3)"]
    assert len({n.filename() for n in copies}) == 3
    dream = image_names(objectives.deepdream("blocks.6"), 2)
    assert ([n.filename() for n in dream] == ["image-000.png", "image-001.png"]
            and image_units(objectives.deepdream("blocks.6"), 2) is None)


# ---- images at their native size or a whole multiple ---------------------------------------------
def test_images_are_enlarged_by_whole_factors_only():
    from explorer.ui.display import enlarged, integer_scale

    assert integer_scale(224) == 1 and integer_scale(128) == 2 and integer_scale(96) == 2 and integer_scale(48) == 5
    assert integer_scale(1024) == 1  # never shrunk below native by us, never enlarged past a whole factor
    image = torch.rand(3, 5, 7)
    big = enlarged(image, 3)
    assert big.shape == (15, 21, 3)
    assert (big[::3, ::3] == enlarged(image, 1)).all() and (big[2::3, 2::3] == enlarged(image, 1)).all()  # exact pixels


# ---- log axes --------------------------------------------------------------------------------------
def assert_decade_axis(axis, lo: float, hi: float) -> None:
    """Labelled ticks only at powers of ten, spanning [lo, hi]; labels are the plain numbers."""
    assert axis.type == "log" and axis.tickmode == "array"
    values = list(axis.tickvals)
    assert all(abs(torch.tensor(v).log10().item() - round(torch.tensor(v).log10().item())) < 1e-9
               for v in values), values
    assert min(values) <= lo and max(values) >= hi
    assert list(axis.ticktext) == [f"{v:g}" for v in values]
    assert axis.minor.tickvals and not set(axis.minor.tickvals) & set(values)  # minor ticks carry no label


def test_log_axis_labels_decades_only():
    from explorer.ui.display import decade_label, log_axis

    fig = go.Figure(go.Scatter(y=[0.03, 0.5, 2.0]))
    log_axis(fig, [0.03, 0.5, 2.0, 0.0, float("nan")])
    assert_decade_axis(fig.layout.yaxis, 0.03, 2.0)
    assert list(fig.layout.yaxis.ticktext) == ["0.01", "0.1", "1", "10"]
    assert decade_label(-6) == "1e-06" and decade_label(0) == "1"


# ---- gallery export reads what the page shows ----------------------------------------------------
def test_gallery_export_takes_the_store_first_then_the_atlas_with_every_variant(tmp_path, monkeypatch, capsys):
    import json

    from explorer.cli import main
    from explorer.gallery import GalleryStore, build, facets_variant
    from explorer.gallery.atlas import ATLAS_VAR
    from explorer.gallery.export import export_atlas
    from explorer.models import ModelSpec, register
    from tests.gallery_helpers import TINY_SETTINGS
    from tests.tiny import tiny_model

    model = tiny_model()
    register(ModelSpec("tiny", "Tiny test net",
                       lambda weights, device: model, default_layer="conv2", family="imagenet"))
    shipped = GalleryStore(tmp_path / "shipped")
    build(model, "conv2", None, TINY_SETTINGS, store=shipped, batch=16)
    export_atlas(shipped, model, ["conv2"], TINY_SETTINGS, tmp_path / "atlas")
    monkeypatch.setenv(ATLAS_VAR, str(tmp_path / "atlas"))
    mine = GalleryStore(tmp_path / "mine")
    # one unit's extras
    build(model, "conv2", [3], TINY_SETTINGS, store=mine, variants=[facets_variant(2), "neg"], batch=2)

    common = ["--model", "tiny", "--steps", str(TINY_SETTINGS.steps), "--size", str(TINY_SETTINGS.size),
              "--store", str(mine.root)]
    out = tmp_path / "export"
    assert main(["gallery", "export", "--layer", "conv2", "--units", "0-3", "--out", str(out), *common]) == 0
    printed = capsys.readouterr().out
    index = json.loads((out / "index.json").read_text())
    by = {(r["unit"], r["variant"], r["index"]): r for r in index["images"]}
    assert {u for (u, v, _) in by if v == "max"} == {0, 1, 2, 3}, "the main images come from the atlas"
    assert all(by[(u, "max", 0)]["source"] == "atlas" and by[(u, "max", 0)]["file"].endswith(".webp") for u in range(4))
    assert by[(3, "neg", 0)]["source"] == "store" and by[(3, "facets2", 1)]["source"] == "store"
    assert by[(3, "max", 0)]["file"] == "conv2_unit-0003_max.webp"
    assert (index["missing"] == {"neg": [0, 1, 2], "facets2": [0, 1, 2]}
            and index["counts"]["max"] == {"store": 0, "atlas": 4})
    assert all((out / r["file"]).is_file() for r in index["images"])
    assert "4 from the shipped atlas" in printed and "neg: 1 from your store" in printed and "3 not rendered" in printed

    # the user's own render of a unit wins over the atlas; --no-atlas leaves the atlas out
    build(model, "conv2", [1], TINY_SETTINGS, store=mine, batch=1)
    out2 = tmp_path / "export2"
    assert main(["gallery", "export", "--layer", "conv2", "--units", "0-3", "--variants", "max",
                 "--out", str(out2), *common]) == 0
    rows = {r["unit"]: r["source"] for r in json.loads((out2 / "index.json").read_text())["images"]}
    assert rows == {0: "atlas", 1: "store", 2: "atlas", 3: "atlas"}
    out3 = tmp_path / "export3"
    assert main(["gallery", "export", "--layer", "conv2", "--variants", "max", "--no-atlas",
                 "--out", str(out3), *common]) == 0
    assert [r["unit"] for r in json.loads((out3 / "index.json").read_text())["images"]] == [1]


# ---- --out never means "wherever I happen to be" ----------------------------------------------------
def test_out_must_be_new_empty_or_our_own(tmp_path, monkeypatch, capsys):
    from explorer.cli import main
    from explorer.cli.common import OUTPUT_MARKER, output_dir
    from explorer.errors import UserInputError

    here = tmp_path / "repo"
    here.mkdir()
    (here / "README.md").write_text("precious")
    monkeypatch.chdir(here)
    for out in ("", "  "):  # an empty --out used to be the current folder (Path("") == Path("."))
        assert main(["visualize", "--out", out, "--steps", "1"]) == 2
        assert "--out is empty" in capsys.readouterr().err
    assert main(["invert", "--out", ".", "--steps", "1"]) == 2
    err = capsys.readouterr().err
    assert "already holds files that no explorer command wrote" in err and "current folder" in err
    assert sorted(p.name for p in here.iterdir()) == ["README.md"], "nothing written, nothing overwritten"

    new = output_dir(tmp_path / "new")  # new: created, marked
    assert (new / OUTPUT_MARKER).is_file()
    (new / "unit-0007.png").write_bytes(b"x")
    assert output_dir(new) == new, "a folder a command wrote before may be written again"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert output_dir(empty) == empty
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "notes.txt").write_text("mine")
    with pytest.raises(UserInputError, match="no explorer command wrote"):
        output_dir(theirs)
    with pytest.raises(UserInputError, match="--gallery-dir"):
        output_dir(theirs, "--gallery-dir")


# ---- messages that say what happened ----------------------------------------------------------------
def test_messages_do_not_contradict_or_mislead(tmp_path, capsys):
    from explorer.cli import main

    assert main(["visualize", "--steps", "0", "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: --steps 0 is out of range: use 1–10,000.", err  # no "(0 scores the start only)"
    url = "https://upload.wikimedia.org/wikipedia/commons/cat.jpg"
    assert main(["invert", "--image", url, "--steps", "1", "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert url in err and "web address" in err and "downloaded" in err and "not found" not in err
    assert main(["visualize", "--model", "checkpoint:http://example.org/m.pt", "--steps", "1",
                 "--out", str(tmp_path / "c")]) == 2
    assert "http://example.org/m.pt is a web address" in capsys.readouterr().err
    assert main(["invert", "--image", str(tmp_path), "--steps", "1", "--out", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err
    assert "is a folder" in err and "name a file" in err and "not found" not in err


def test_an_unknown_option_is_answered_by_its_subcommand(capsys):
    from explorer.cli import main

    with pytest.raises(SystemExit) as stop:
        main(["diffusion", "sample", "--batch", "4"])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "--batch: did you mean --n?" in err and "`python -m explorer diffusion sample --help`" in err, err
    with pytest.raises(SystemExit):
        main(["fool", "grow", "--budjet", "linf:0.1"])
    assert "did you mean --budget?" in capsys.readouterr().err


def test_readme_quick_start_is_small_valid_and_timed():
    """The '30 seconds' commands parse as written, say how they were timed, and the first is a small job
    (it was 16 units × 256 steps: 3 min 14 s on 2 cores)."""
    import re
    import shlex
    from pathlib import Path

    from explorer.cli import build_parser
    from explorer.parsing import parse_units

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = text.split("### Feature visualisation in 30 seconds", 1)[1].split("Library use:", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    commands = [shlex.split(line.split("#")[0])[3:] for line in block.splitlines()
                if line.startswith(".venv/bin/python -m explorer")]
    assert len(commands) == 3
    parsed = [build_parser().parse_args(c) for c in commands]
    first = parsed[0]
    assert len(parse_units(first.channels)) * first.steps <= 4 * 64, "the first example stays a ~20-CPU-second job"
    assert "Timed on" in section and "CPU time" in section and "shared" in section


def test_no_page_makes_a_log_axis_of_its_own():
    """Every log axis goes through ui.display.log_axis (decades labelled, no minor-tick digits)."""
    import re
    from pathlib import Path

    ui = Path(__file__).resolve().parents[1] / "explorer" / "ui"
    offenders = [f"{p.relative_to(ui)}:{n}" for p in ui.rglob("*.py") if p.name != "display.py"
                 for n, line in enumerate(p.read_text().splitlines(), 1)
                 if re.search(r"type\s*=\s*['\"]log['\"]", line)]
    assert not offenders, offenders


def test_diffusion_quality_terms_chart_labels_decades():
    from explorer.ui.diffusion_quality import terms_figure

    fig = terms_figure([{"model": "m", "nll": {"terms_bits_per_dim": [3.0, 0.4, 0.02], "term_timesteps": [0, 10, 999],
                                                "variance_type": "fixed_small"}}])
    assert_decade_axis(fig.layout.xaxis, 10, 999)
    assert_decade_axis(fig.layout.yaxis, 0.02, 3.0)

"""`python -m explorer gallery build | ls | export | verify` on the tiny net."""

from __future__ import annotations

import csv
import json

from explorer.cli import main
from explorer.gallery import GalleryStore, lookup
from explorer.models import ModelSpec, register
from tests.gallery_helpers import TINY_SETTINGS
from tests.tiny import tiny_model


def test_build_ls_export_verify(tmp_path, capsys):
    model = tiny_model()
    register(ModelSpec("tiny", "Tiny test net",
                       lambda weights, device: model, default_layer="conv2", family="imagenet"))
    store_dir, out = tmp_path / "store", tmp_path / "export"
    common = ["--model", "tiny", "--steps", str(TINY_SETTINGS.steps), "--size", str(TINY_SETTINGS.size),
              "--store", str(store_dir)]
    assert main(["gallery", "build", "--layers", "conv2", "--units", "0-2", "--negative",
                 "--examples", "none", *common]) == 0
    assert "rendered 6 (max 3, neg 3)" in capsys.readouterr().out
    assert main(["gallery", "build", "--layers", "conv2", "--units", "0-2", "--examples", "none", *common]) == 0
    second = capsys.readouterr().out
    assert "rendered 0" in second and "3 already stored" in second, "a second build skips stored units"

    assert main(["gallery", "ls", "--store", str(store_dir), "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    assert ({(r["layer"], r["variant"], r["done"]) for r in listing["renders"]}
            == {("conv2", "max", 3), ("conv2", "neg", 3)})

    assert main(["gallery", "export", "--layer", "conv2", "--out", str(out), *common]) == 0
    index = json.loads((out / "index.json").read_text())
    rows = list(csv.DictReader(open(out / "index.csv")))
    assert len(index["images"]) == len(rows) == 6 and all((out / r["file"]).is_file() for r in rows)
    stored = lookup(GalleryStore(store_dir), model, "conv2", TINY_SETTINGS)
    assert ({int(r["unit"]): float(r["activation"]) for r in rows if r["variant"] == "max"}
            == {u: e.activation for u, e in stored.items()})

    assert main(["gallery", "verify", "--store", str(store_dir)]) == 0
    assert main(["gallery", "export", "--layer", "conv2", "--out", str(out), *common[:-2],
                 "--store", str(tmp_path / "empty")]) == 2
    assert "Nothing in the store" in capsys.readouterr().err

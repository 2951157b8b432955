"""Ray stays out of the process unless asked: the library, the CLI parser and the gallery page never import it."""

from __future__ import annotations

import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import sys
    sys.path.insert(0, {root!r})
    import explorer, explorer.gallery, explorer.fooling, explorer.scale
    from explorer.cli import build_parser
    build_parser()
    from streamlit.testing.v1 import AppTest
    from explorer.models import ModelSpec, register
    from tests.tiny import tiny_model
    model = tiny_model()
    register(ModelSpec("tiny", "Tiny", lambda weights, device: model, default_layer="conv2",
                       default_weights=model.weights))
    at = AppTest.from_file({page!r}, default_timeout=60)
    at.query_params["model"] = "tiny"
    at.run()
    assert not at.exception, at.exception
    print("ray imported:", "ray" in sys.modules)
""")


def test_importing_explorer_and_opening_the_gallery_page_does_not_import_ray(root, tmp_path):
    code = SCRIPT.format(root=str(root), page=str(root / "explorer/ui/pages/gallery.py"))
    env = {"EXPLORER_CACHE_DIR": str(tmp_path), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "ray imported: False" in out.stdout

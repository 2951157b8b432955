"""The README's library snippet runs as written (issue 13 defect 12: it called an undefined print_progress)."""

import re


def test_readme_library_snippet_runs(root, lite0, capsys):
    text = (root / "README.md").read_text()
    code = re.search(r"Library use:\n```python\n(.*?)```", text, re.S).group(1)
    assert "RenderSettings(steps=256, size=128)" in code
    namespace: dict = {}
    exec(compile(code.replace("RenderSettings(steps=256, size=128)", "RenderSettings(steps=3, size=32)"),
                 "README.md", "exec"), namespace)
    assert namespace["result"].images.shape == (16, 3, 32, 32)
    assert "step 3/3: mean objective" in capsys.readouterr().out

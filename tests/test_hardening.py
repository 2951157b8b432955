"""Issue 20's helpers, directly: the one escape helper for user text on pages, batch advice that fits, the
full weights fingerprint. (The hostile inputs themselves are in the bad-input corpus, tests/bad_inputs.py.)"""

from __future__ import annotations

import re

import pytest
import torch

from explorer import limits
from explorer.errors import UserInputError
from explorer.models.base import fingerprint_module, is_legacy_fingerprint, legacy_fingerprint_module
from explorer.ui.widgets import safe_text


def test_safe_text_leaves_no_markdown_active_and_shortens():
    hostile = "[click](https://evil.example) ![img](http://evil.example/x.png) <b>x</b> `code` $x$ # www.evil.example"
    shown = safe_text(hostile)
    assert not re.search(r"(?<!\\)[\[\]<>`$#]", shown), shown  # every such character is backslash-escaped
    assert "://" not in shown and "www." not in shown  # no bare URL for the autolinker
    assert safe_text("plain_name-1.png (ok)") == "plain_name-1.png (ok)"  # ordinary text is untouched
    long = safe_text("A" * 100_000 + "\n# heading")
    assert len(long) == 200 and long.endswith("…") and "\n" not in long


def test_batch_advice_suggests_only_what_fits():
    with pytest.raises(UserInputError) as caught:  # the network resizes to 224 px: a smaller size costs the same
        limits.check_batch_pixels(64, 224, min_side=224)
    assert "px for 64" not in str(caught.value) and "the network sees 224 px" in str(caught.value)
    with pytest.raises(UserInputError) as caught:
        limits.check_batch_pixels(16, 1024)
    side = int(re.search(r"at most (\d+) px for 16", str(caught.value))[1])
    assert 16 * side * side <= limits.MAX_BATCH_PIXELS


def test_the_fingerprint_sees_every_byte_the_legacy_one_did_not():
    torch.manual_seed(0)
    net = torch.nn.Linear(200, 100)  # 20,000 floats: 80 KB, past the legacy hash's 64 KB
    before, legacy = fingerprint_module(net), legacy_fingerprint_module(net)
    original = float(net.weight.view(-1)[-1])
    with torch.no_grad():
        net.weight.view(-1)[-1] += 1.0
    assert fingerprint_module(net) != before
    assert legacy_fingerprint_module(net) == legacy, "the old hash missed it: why it was replaced"
    assert len(before) == 32 and not is_legacy_fingerprint(before) and is_legacy_fingerprint(legacy)
    with torch.no_grad():
        net.weight.view(-1)[-1] = original
    assert fingerprint_module(net) == before  # the same weights, the same key

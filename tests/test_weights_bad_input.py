"""Weights files that are empty, truncated, lying about their size, unsafe or wrong (issue 13 defects 9, 10):
one clear UserInputError each, naming the file and the first bad tensor, before anything large is read."""

from __future__ import annotations

import io
import struct
import zipfile

import pytest
import torch
from safetensors.torch import save as safetensors_bytes

from explorer.errors import UserInputError
from explorer.models.checkpoint import load_checkpoint
from explorer.models.weights import load_weights, read_state_dict
from tests.tiny import TinyNet


def _state(classes: int = 10) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return {k: v.contiguous() for k, v in TinyNet(classes).state_dict().items()}


def _write(tmp_path, name: str, data: bytes):
    path = tmp_path / name
    path.write_bytes(data)
    return path


def _torch_bytes(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def _cases(tmp_path) -> dict[str, tuple]:
    good = safetensors_bytes(_state())
    nan_state = _state()
    first = next(iter(nan_state))
    nan_state[first] = nan_state[first].clone().fill_(float("nan"))
    int_state = _state()
    int_state[first] = int_state[first].to(torch.int64)
    return {
        "empty safetensors": (_write(tmp_path, "empty.safetensors", b""), "empty.safetensors is empty"),
        "empty pt": (_write(tmp_path, "empty.pt", b""), "empty.pt is empty"),
        "truncated safetensors": (_write(tmp_path, "cut.safetensors", good[: len(good) // 2]),
                                  "cut.safetensors is truncated"),
        "huge header": (_write(tmp_path, "huge.safetensors", struct.pack("<Q", 1 << 60) + b"{}"),
                        "header claims 1,152,921,504,606,846,976 bytes"),
        "header not json": (_write(tmp_path, "junk.safetensors", struct.pack("<Q", 8) + b"notjson!" + bytes(16)),
                            "header is not JSON"),
        "text as pt": (_write(tmp_path, "notes.pt", b"these are not weights\n" * 10), "Could not load notes.pt safely"),
        "shape mismatch": (_write(tmp_path, "other.safetensors", safetensors_bytes(_state(classes=7))), "has shape 7×"),
        "nan weights": (_write(tmp_path, "nan.safetensors", safetensors_bytes(nan_state)), "NaN or infinite"),
        "int64 weights": (_write(tmp_path, "int.pt", _torch_bytes(int_state)), "holds int64 values"),
        "missing tensors": (_write(tmp_path, "part.pt", _torch_bytes(dict(list(_state().items())[:2]))), "missing"),
        "not a table": (_write(tmp_path, "list.pt", _torch_bytes([torch.zeros(3)])), "does not hold a state dict"),
    }


@pytest.mark.parametrize("case", ["empty safetensors", "empty pt", "truncated safetensors", "huge header",
                                  "header not json", "text as pt", "shape mismatch", "nan weights", "int64 weights",
                                  "missing tensors", "not a table"])
def test_bad_weights_files_are_one_line_errors(tmp_path, case):
    path, message = _cases(tmp_path)[case]
    with pytest.raises(UserInputError) as caught:
        load_weights(TinyNet(10), path, "tiny")
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_good_weights_still_load(tmp_path):
    path = _write(tmp_path, "good.safetensors", safetensors_bytes(_state()))
    net = load_weights(TinyNet(10), path, "tiny")
    assert all(torch.equal(v, _state()[k]) for k, v in net.state_dict().items())
    assert set(read_state_dict(_write(tmp_path, "good.pt", _torch_bytes({"state_dict": _state()})))) == set(_state())


def test_registry_weights_are_checked_against_the_network(tmp_path):
    from explorer.models import load_model

    path = _write(tmp_path, "tiny_for_lite0.safetensors", safetensors_bytes(_state()))
    with pytest.raises(UserInputError, match="does not fit efficientnet_lite0: .* missing"):
        load_model("efficientnet_lite0", weights=str(path), device="cpu")


def test_checkpoints_truncated_fake_or_empty_are_not_called_state_dicts(tmp_path):
    net = TinyNet(10).eval()
    script = io.BytesIO()
    torch.jit.save(torch.jit.trace(net, torch.rand(1, 3, 32, 32)), script)
    data = script.getvalue()
    fake = io.BytesIO()
    with zipfile.ZipFile(fake, "w") as archive:
        archive.writestr("model/code/__torch__.py", "this is not TorchScript")
        archive.writestr("model/data.pkl", b"\x80\x04junk")
    cases = {
        _write(tmp_path, "cut_script.pt", data[: len(data) // 2]): "truncated or corrupt archive",
        _write(tmp_path, "fake_script.pt", fake.getvalue()): "cannot be loaded as one",
        _write(tmp_path, "zero.pt", b""): "zero.pt is empty",
    }
    for path, message in cases.items():
        with pytest.raises(UserInputError) as caught:
            load_checkpoint(str(path), device="cpu")
        assert message in str(caught.value) and "state dict" not in str(caught.value), str(caught.value)
    good = _write(tmp_path, "script.pt", data)
    assert load_checkpoint(str(good), device="cpu").module(torch.rand(1, 3, 32, 32)).shape == (1, 10)

import os
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("PYTHONPATH", str(ROOT))  # AppTest scripts and subprocesses import `explorer`
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


@pytest.fixture
def tiny():
    from tests.tiny import tiny_model

    return tiny_model()


@pytest.fixture(scope="session")
def lite0():
    from explorer.models import load_model

    return load_model("efficientnet_lite0", device="cpu")


@pytest.fixture(scope="session")
def lite_family(lite0):
    """EfficientNet-Lite0, Lite1 and Lite2 with their ImageNet weights, loaded once per test session."""
    from explorer.models import load_model

    return {"efficientnet_lite0": lite0, "efficientnet_lite1": load_model("efficientnet_lite1", device="cpu"),
            "efficientnet_lite2": load_model("efficientnet_lite2", device="cpu")}


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models gain nothing from a second thread, and on a shared busy CPU two threads spin-wait."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)

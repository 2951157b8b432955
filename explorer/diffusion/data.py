"""Training data for the project's own models: Fashion-MNIST IDX files (read with numpy) or sklearn's 8×8 digits.

Everything is returned as float32 tensors in [0, 1] (N×1×H×W) with int64 labels, so the trainers never
care where the pixels came from. Tests use the digits (shipped inside scikit-learn, no data package needed).
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import UserInputError
from ..models.labels import FASHION_LABELS

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
DIGIT_LABELS = [str(i) for i in range(10)]
_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


@dataclass
class ImageDataset:
    """Grey images in [0, 1] (N×1×H×W float32), labels (N int64) and class names."""

    images: torch.Tensor
    labels: torch.Tensor
    class_names: list[str]
    source: str

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def size(self) -> tuple[int, int]:
        return tuple(self.images.shape[-2:])  # type: ignore[return-value]

    def subset(self, index: slice | torch.Tensor) -> "ImageDataset":
        return ImageDataset(self.images[index], self.labels[index], self.class_names, self.source)


def _open(path: Path):
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def read_idx(path: str | Path) -> np.ndarray:
    """Parse an IDX file (optionally gzipped): magic 0x0000 | dtype 0x08 (uint8) | ndim, big-endian sizes."""
    path = Path(path)
    with _open(path) as handle:
        data = handle.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise UserInputError(f"{path} is not an IDX file (bad magic number).")
    if data[2] != 0x08:
        raise UserInputError(f"{path}: only unsigned-byte IDX files are supported (type code {data[2]:#x}).")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    offset = 4 + 4 * ndim
    expected = int(np.prod(shape))
    if len(data) - offset != expected:
        raise UserInputError(f"{path}: header promises {expected} bytes of data, file holds {len(data) - offset}.")
    return np.frombuffer(data, dtype=np.uint8, offset=offset).reshape(shape)


def _find(folder: Path, stem: str) -> Path:
    for candidate in (folder / f"{stem}.gz", folder / stem):
        if candidate.is_file():
            return candidate
    raise UserInputError(
        f"Fashion-MNIST file {stem}(.gz) not found in {folder}. Install Debian's `dataset-fashion-mnist` "
        "package or pass --data pointing to a folder with the IDX files (or --data digits for sklearn's digits)."
    )


def fashion_available(folder: str | Path = FASHION_DIR) -> bool:
    folder = Path(folder)
    return all(any((folder / f"{s}{ext}").is_file() for ext in (".gz", "")) for pair in _FILES.values() for s in pair)


def load_fashion_mnist(split: str = "train", folder: str | Path = FASHION_DIR) -> ImageDataset:
    """Fashion-MNIST from IDX files: 60 000 train / 10 000 test grey 28×28 images."""
    if split not in _FILES:
        raise UserInputError(f"Unknown split {split!r}: use 'train' or 'test'.")
    folder = Path(folder).expanduser()
    image_file, label_file = (_find(folder, stem) for stem in _FILES[split])
    images = read_idx(image_file)
    labels = read_idx(label_file)
    if images.ndim != 3 or labels.shape[0] != images.shape[0]:
        raise UserInputError(
            f"{image_file.name} and {label_file.name} do not match ({images.shape} vs {labels.shape}).")
    x = torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1)
    y = torch.from_numpy(labels.astype(np.int64))
    return ImageDataset(x, y, list(FASHION_LABELS), f"fashion-mnist:{split}")


def load_digits(split: str = "train", test_fraction: float = 0.2, seed: int = 0) -> ImageDataset:
    """sklearn's 8×8 digits (1797 images, pixel values 0–16), split reproducibly into train/test."""
    from sklearn.datasets import load_digits as sk_digits

    bunch = sk_digits()
    x = torch.from_numpy(bunch.images.astype(np.float32) / 16.0).unsqueeze(1)
    y = torch.from_numpy(bunch.target.astype(np.int64))
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    cut = int(round(len(y) * (1 - test_fraction)))
    index = order[:cut] if split == "train" else order[cut:]
    return ImageDataset(x[index], y[index], list(DIGIT_LABELS), f"digits:{split}")


def load_dataset(data: str | Path, split: str = "train") -> ImageDataset:
    """``data`` is "digits", "fashion" (the Debian folder) or a folder holding Fashion-MNIST-style IDX files."""
    name = str(data)
    if name == "digits":
        return load_digits(split)
    if name in ("fashion", "fashion-mnist", ""):
        return load_fashion_mnist(split)
    folder = Path(name).expanduser()
    if not folder.is_dir():
        raise UserInputError(f"--data {name!r}: expected 'digits', 'fashion' or a folder of IDX files.")
    return load_fashion_mnist(split, folder)

"""Class names of the label families the registry knows (a leaf module: imports nothing of the project's
but the torchvision guard)."""

from __future__ import annotations

from functools import lru_cache

FASHION_LABELS = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)


@lru_cache(maxsize=1)
def imagenet_labels() -> list[str]:
    """Human-readable ImageNet-1k class names (shipped inside torchvision: no download)."""
    from ..compat import import_torchvision

    import_torchvision()
    from torchvision.models._meta import _IMAGENET_CATEGORIES

    return list(_IMAGENET_CATEGORIES)

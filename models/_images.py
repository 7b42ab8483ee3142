"""What the zoo's image models share: the image plate, the image size and the default data.

Their networks come from :func:`bayesgen.models._networks.network`, one per configuration.
"""

from __future__ import annotations

from typing import Any

import pyro
import torch

from bayesgen._counts import check_count
from bayesgen.datasets import binary_digits
from bayesgen.models._networks import device_of, network

__all__ = ["device_of", "image_plate", "image_size", "load_digits", "network"]


def image_size(images: torch.Tensor | None, num_images: int, height: int, width: int) -> tuple[int, int, int]:
    """``(N, H, W)`` from the images, or from the size arguments when simulating (images None)."""
    if images is None:
        return num_images, height, width
    if images.dim() != 3:
        raise ValueError(f"images must have shape (N, H, W) (binary images), got {tuple(images.shape)}")
    return tuple(images.shape)  # type: ignore[return-value]


def image_plate(num_images: int, batch_size: int | None) -> pyro.plate:
    """The plate over images, one likelihood term each; ``batch_size`` draws a minibatch per run
    (the terms scaled by ``num_images / batch_size``, so a step's loss estimates the full one)."""
    batch_size = check_count("batch_size", batch_size, none_means="every image in each run")
    size = None if batch_size is None or batch_size >= num_images else batch_size
    return pyro.plate("image", num_images, subsample_size=size, dim=-1)


def load_digits() -> dict[str, Any]:
    """The image models' default data: the training split of the binarised 8x8 digits
    (:func:`bayesgen.datasets.binary_digits`, 1,347 images), as ``{"images": array (N, 8, 8)}``."""
    train, _ = binary_digits()
    return {"images": train}

"""What the zoo's image models share: their networks, kept per configuration, and the image plate.

A network lives as long as the process, one per configuration (its role, sizes, device and
dtype), so that every run of a program (each SVI step, each generated batch) uses the same
weights. It is built from a fixed seed: its initial weights do not depend on what ran before,
and ``bg.fit`` puts back the weights a fit found when it started, so one seed gives one fit.
Programs register it with ``pyro.module`` under its role's name.
"""

from __future__ import annotations

from typing import Any, Callable

import pyro
import torch
from torch import nn

from bayesgen.datasets import binary_digits

__all__ = ["device_of", "image_plate", "image_size", "load_digits", "network"]

_NETWORKS: dict[tuple[object, ...], nn.Module] = {}


def network(key: tuple[object, ...], build: Callable[[], nn.Module], device: torch.device) -> nn.Module:
    """The network built by ``build()`` for configuration ``key``, on ``device`` in the default dtype.

    The first request builds it with torch's generator seeded at 0 (the global generator's
    state is left as it was); later requests return the same module.
    """
    full_key = (*key, str(device), torch.get_default_dtype())
    if full_key not in _NETWORKS:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            module = build()
        _NETWORKS[full_key] = module.to(device=device, dtype=torch.get_default_dtype())
    return _NETWORKS[full_key]


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
    if batch_size is not None and not 1 <= batch_size:
        raise ValueError(f"batch_size must be a positive integer or None, got {batch_size!r}")
    size = None if batch_size is None or batch_size >= num_images else batch_size
    return pyro.plate("image", num_images, subsample_size=size, dim=-1)


def device_of(images: torch.Tensor | None) -> torch.device:
    """Where the networks run: with the images, else torch's default device."""
    return images.device if images is not None else torch.empty(0).device


def load_digits() -> dict[str, Any]:
    """The image models' default data: the training split of the binarised 8x8 digits
    (:func:`bayesgen.datasets.binary_digits`, 1,347 images), as ``{"images": array (N, 8, 8)}``."""
    train, _ = binary_digits()
    return {"images": train}

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
    """``(N, H, W)`` from the images, or from the size arguments when simulating (images None).

    Parameters
    ----------
    images : Tensor ``(N, H, W)``, optional
        The observed images; None takes the size from the other arguments.
    num_images, height, width : int
        The size of a simulated set (ignored when ``images`` is given).

    Returns
    -------
    tuple of int
        ``(N, H, W)``.

    Raises
    ------
    ValueError
        If ``images`` is not three-dimensional.
    """
    if images is None:
        return num_images, height, width
    if images.dim() != 3:
        raise ValueError(f"images must have shape (N, H, W) (binary images), got {tuple(images.shape)}")
    return tuple(images.shape)  # type: ignore[return-value]


def image_plate(num_images: int, batch_size: int | None) -> pyro.plate:
    """The plate over images, one likelihood term each, at dim -1.

    ``batch_size`` draws a minibatch per run (the terms scaled by ``num_images / batch_size``, so a step's
    loss estimates the full one).

    Parameters
    ----------
    num_images : int
        N, the size of the plate.
    batch_size : int, optional
        Images per run; None, or a value of at least N, takes every image in each run.

    Returns
    -------
    pyro.plate
        The plate named ``"image"``; entered, it yields the indices ``(batch,)`` of this run's images.
    """
    batch_size = check_count("batch_size", batch_size, none_means="every image in each run")
    size = None if batch_size is None or batch_size >= num_images else batch_size
    return pyro.plate("image", num_images, subsample_size=size, dim=-1)


def load_digits() -> dict[str, Any]:
    """The image models' default data: the training split of the binarised 8x8 digits.

    From :func:`bayesgen.datasets.binary_digits`, 1,347 images.

    Returns
    -------
    dict
        The program's arguments: ``{"images": ndarray (1347, 8, 8)}``, float64 of zeros and ones.
    """
    train, _ = binary_digits()
    return {"images": train}

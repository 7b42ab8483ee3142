"""The networks of the zoo's deep models, kept per configuration.

A network lives as long as the process, one per configuration (its role, sizes, device and
dtype), so that every run of a program (each SVI step, each generated batch) uses the same
weights. It is built from a fixed seed: its initial weights do not depend on what ran before,
and ``bg.fit`` puts back the weights a fit found when it started, so one seed gives one fit.
Programs register it with ``pyro.module`` under its role's name.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

__all__ = ["device_of", "network"]

_NETWORKS: dict[tuple[object, ...], nn.Module] = {}


def network(key: tuple[object, ...], build: Callable[[], nn.Module], device: torch.device) -> nn.Module:
    """The network built by ``build()`` for configuration ``key``, on ``device`` in the default dtype.

    The first request builds it with torch's generator seeded at 0 (the global generator's
    state is left as it was); later requests return the same module.

    Parameters
    ----------
    key : tuple
        The configuration: the network's role and sizes (the device and default dtype are added to it).
    build : callable
        ``build()`` returns a new, untrained module; called only on the first request.
    device : torch.device
        Where the network lives.

    Returns
    -------
    nn.Module
        The network for this configuration, the same object at every request.
    """
    full_key = (*key, str(device), torch.get_default_dtype())
    if full_key not in _NETWORKS:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            module = build()
        _NETWORKS[full_key] = module.to(device=device, dtype=torch.get_default_dtype())
    return _NETWORKS[full_key]


def device_of(data: torch.Tensor | None) -> torch.device:
    """Where the networks run: with the data, else torch's default device.

    Parameters
    ----------
    data : Tensor, optional
        The observed data; None (simulating) takes torch's default device.

    Returns
    -------
    torch.device
    """
    return data.device if data is not None else torch.empty(0).device

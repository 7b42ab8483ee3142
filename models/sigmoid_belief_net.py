"""Sigmoid belief network: layers of binary hidden units above binary images, with an amortised guide."""

from __future__ import annotations

from typing import Any, Sequence

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from bayesgen._counts import check_count
from bayesgen.models._images import load_digits as load_data
from bayesgen.models._images import device_of, image_plate, image_size, network
from bayesgen.spec import ModelSpec

__all__ = ["SPEC", "guide", "load_data", "model"]


class Generative(nn.Module):
    """The top layer's prior logits and one linear map per layer down to the pixels' logits.

    ``hidden`` lists the layers' sizes from the one next to the image up to the top.
    """

    def __init__(self, hidden: Sequence[int], height: int, width: int) -> None:
        super().__init__()
        self.shape = (height, width)
        self.top = nn.Parameter(torch.zeros(hidden[-1]))
        sizes = [height * width, *hidden]
        # down[l] maps layer l + 1 to the logits of layer l (layer 0 being the pixels)
        self.down = nn.ModuleList(nn.Linear(sizes[i + 1], sizes[i]) for i in range(len(hidden)))


class Recognition(nn.Module):
    """``q(h_1 | x)``, ``q(h_{l+1} | h_l)``: one linear map per layer going up, and per layer a
    small network giving a baseline per image for the score-function gradient (a learnt
    estimate of the rest of the ELBO, subtracted to cut its variance; Mnih and Gregor 2014)."""

    def __init__(self, hidden: Sequence[int], height: int, width: int) -> None:
        super().__init__()
        sizes = [height * width, *hidden]
        self.up = nn.ModuleList(nn.Linear(sizes[i], sizes[i + 1]) for i in range(len(hidden)))
        self.baselines = nn.ModuleList(
            nn.Sequential(nn.Linear(height * width, 100), nn.Tanh(), nn.Linear(100, 1), nn.Flatten(-2))
            for _ in hidden)


def _networks(kind: str, hidden: Sequence[int], height: int, width: int, device: torch.device) -> Any:
    build = Generative if kind == "generative" else Recognition
    hidden = tuple(check_count("each layer's size in hidden", size) for size in hidden)
    return network((f"sigmoid_belief_net.{kind}", tuple(hidden), height, width),
                   lambda: build(hidden, height, width), device)


def model(images: torch.Tensor | None = None, *, num_images: int = 64, height: int = 8, width: int = 8,
          batch_size: int | None = None, hidden: Sequence[int] = (64, 32)) -> None:
    """Top-down: ``h_L ~ Bernoulli(sigmoid(b))``, ``h_l ~ Bernoulli(sigmoid(W_l h_{l+1} + c_l))``,
    ``images_n ~ Bernoulli(sigmoid(W_0 h_1 + c_0))``, one likelihood term per image.

    Parameters
    ----------
    images : Tensor ``(N, H, W)`` of zeros and ones, optional
        The observed images; None simulates ``num_images`` of size ``height x width``.
    num_images, height, width : int
        Size of a simulated set (ignored when ``images`` is given).
    batch_size : int, optional
        Images per run (a minibatch per SVI step, the likelihood scaled up to all of them).
    hidden : sequence of int
        Sizes of the hidden layers, from the one next to the image up to the top; the sites
        are ``h1`` (next to the image) to ``hL``.
    """
    n, h, w = image_size(images, num_images, height, width)
    hidden = tuple(int(k) for k in hidden)
    net = pyro.module("generative", _networks("generative", hidden, h, w, device_of(images)))
    with image_plate(n, batch_size) as index:
        logits = net.top.expand(len(index), hidden[-1])
        for layer in range(len(hidden), 0, -1):
            units = pyro.sample(f"h{layer}", dist.Bernoulli(logits=logits).to_event(1))
            logits = net.down[layer - 1](units)
        batch = images[index] if images is not None else None
        pyro.sample("images", dist.Bernoulli(logits=logits.reshape(logits.shape[:-1] + (h, w))).to_event(2),
                    obs=batch)


def guide(images: torch.Tensor | None = None, *, num_images: int = 64, height: int = 8, width: int = 8,
          batch_size: int | None = None, hidden: Sequence[int] = (64, 32)) -> None:
    """Bottom-up ``q(h_1 | images_n) q(h_2 | h_1) ...``, each a layer of independent Bernoullis.

    Takes the model's arguments; every site carries its neural baseline for ``TraceGraph_ELBO``.
    Samples the sites ``h1`` ... ``hL``, ``(batch, hidden[l - 1])`` each; returns nothing.

    Parameters
    ----------
    images : Tensor ``(N, H, W)`` of zeros and ones
        The observed images (required: the guide encodes them).
    num_images, height, width : int
        Unused when ``images`` is given (the size comes from them); accepted so that model and guide take the
        same arguments.
    batch_size : int, optional
        Images per run, the same minibatch as the model's (one plate); None encodes every image.
    hidden : sequence of int
        Sizes of the hidden layers, from the one next to the image up to the top (the model's value).

    Raises
    ------
    ValueError
        If ``images`` is None.
    """
    if images is None:
        raise ValueError("the belief network's guide reads images: pass them under 'images'")
    n, h, w = image_size(images, num_images, height, width)
    hidden = tuple(int(k) for k in hidden)
    net = pyro.module("recognition", _networks("recognition", hidden, h, w, device_of(images)))
    with image_plate(n, batch_size) as index:
        pixels = images[index].reshape(len(index), h * w)
        units = pixels
        for layer in range(1, len(hidden) + 1):
            baseline = {"nn_baseline": net.baselines[layer - 1], "nn_baseline_input": pixels}
            units = pyro.sample(f"h{layer}", dist.Bernoulli(logits=net.up[layer - 1](units)).to_event(1),
                                infer={"baseline": baseline})


SPEC = ModelSpec(
    name="sigmoid_belief_net",
    model=model,
    observed={"images": "images"},
    dims={"images": ("image", "row", "col")},
    description="Sigmoid belief network: layers of binary hidden units over binary images",
    card=(
        "A sigmoid belief network (Neal 1992, 'Connectionist learning of belief networks'): layers of binary "
        "units, each unit a logistic regression on the layer above, the image at the bottom. It is the directed "
        "counterpart of the deep belief network (Hinton, Osindero and Teh 2006), whose top two layers are an "
        "undirected RBM; here every layer is directed, so ancestral sampling is exact and fit.generate is cheap. "
        "The hidden units are discrete and cannot be summed out, so the module ships an amortised guide of "
        "bottom-up Bernoulli layers, trained by bg.fit('sigmoid_belief_net', data, engine='svi') with the "
        "score-function ELBO of Pyro's TraceGraph_ELBO and per-layer neural baselines (Mnih and Gregor 2014, "
        "'Neural variational inference and learning in belief networks'); examples/deep_images.py uses "
        "num_particles=1, lr=1e-2 and thousands of num_steps. Held-out bg.evaluate reports the "
        "importance-weighted bound with that guide as proposal, in nats per image."
    ),
    load_data=load_data,
    engines=("svi",),
    guide=guide,
    fixed_arguments=("hidden",),
)

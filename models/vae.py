"""Variational autoencoder of binary images: Gaussian codes, a Bernoulli decoder, an amortised encoder."""

from __future__ import annotations


import pyro
import pyro.distributions as dist
import torch
from torch import nn

from bayesgen._counts import check_count
from bayesgen.models._images import load_digits as load_data
from bayesgen.models._images import device_of, image_plate, image_size, network
from bayesgen.spec import ModelSpec

__all__ = ["SPEC", "decoder", "encoder", "guide", "load_data", "model"]


class Decoder(nn.Module):
    """Code ``(*, latent_dim)`` -> Bernoulli logits of every pixel ``(*, H, W)``: a two-layer MLP."""

    def __init__(self, latent_dim: int, hidden: int, height: int, width: int) -> None:
        super().__init__()
        self.shape = (height, width)
        self.net = nn.Sequential(nn.Linear(latent_dim, hidden), nn.Softplus(), nn.Linear(hidden, hidden),
                                 nn.Softplus(), nn.Linear(hidden, height * width))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z).reshape(z.shape[:-1] + self.shape)


class Encoder(nn.Module):
    """Images ``(*, H, W)`` -> the mean and standard deviation of each image's code ``(*, latent_dim)``."""

    def __init__(self, latent_dim: int, hidden: int, height: int, width: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(height * width, hidden), nn.Softplus(), nn.Linear(hidden, hidden),
                                  nn.Softplus())
        self.loc = nn.Linear(hidden, latent_dim)
        self.scale = nn.Linear(hidden, latent_dim)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.body(images.reshape(images.shape[:-2] + (-1,)))
        return self.loc(h), nn.functional.softplus(self.scale(h)) + 1e-4


def decoder(latent_dim: int, hidden: int, height: int, width: int, device: torch.device) -> Decoder:
    """The process's decoder for this configuration (see ``bayesgen.models._images.network``).

    The first call for a configuration builds it (weights seeded at 0); later calls return the same module.

    Parameters
    ----------
    latent_dim : int
        Size of the code ``z``.
    hidden : int
        Units in each of the two hidden (softplus) layers.
    height, width : int
        Image size in pixels.
    device : torch.device
        Where the network lives (see ``device_of``).

    Returns
    -------
    Decoder
        A module mapping codes ``(*, latent_dim)`` to Bernoulli logits ``(*, height, width)``.
    """
    latent_dim, hidden = check_count("latent_dim", latent_dim), check_count("hidden", hidden)
    return network(("vae.decoder", latent_dim, hidden, height, width),
                   lambda: Decoder(latent_dim, hidden, height, width), device)  # type: ignore[return-value]


def encoder(latent_dim: int, hidden: int, height: int, width: int, device: torch.device) -> Encoder:
    """The process's encoder for this configuration (see ``bayesgen.models._images.network``).

    The first call for a configuration builds it (weights seeded at 0); later calls return the same module.

    Parameters
    ----------
    latent_dim : int
        Size of the code ``z``.
    hidden : int
        Units in each of the two hidden (softplus) layers.
    height, width : int
        Image size in pixels.
    device : torch.device
        Where the network lives (see ``device_of``).

    Returns
    -------
    Encoder
        A module mapping images ``(*, height, width)`` to the mean and sd of each image's code, a pair of
        ``(*, latent_dim)`` tensors (the sd softplus-positive, at least 1e-4).
    """
    latent_dim, hidden = check_count("latent_dim", latent_dim), check_count("hidden", hidden)
    return network(("vae.encoder", latent_dim, hidden, height, width),
                   lambda: Encoder(latent_dim, hidden, height, width), device)  # type: ignore[return-value]


def model(images: torch.Tensor | None = None, *, num_images: int = 64, height: int = 8, width: int = 8,
          batch_size: int | None = None, latent_dim: int = 8, hidden: int = 200) -> None:
    """``z_n ~ Normal(0, I)``, ``images_n ~ Bernoulli(sigmoid(decoder(z_n)))``, one term per image.

    Also the generator of the ``gan`` model: the same program fitted adversarially.

    Parameters
    ----------
    images : Tensor ``(N, H, W)`` of zeros and ones, optional
        The observed images; None simulates ``num_images`` of size ``height x width``.
    num_images, height, width : int
        Size of a simulated set (ignored when ``images`` is given).
    batch_size : int, optional
        Images per run (a minibatch per SVI step, the likelihood scaled up to all of them).
    latent_dim, hidden : int
        Size of the code and of the decoder's two hidden layers.
    """
    n, h, w = image_size(images, num_images, height, width)
    net = pyro.module("decoder", decoder(latent_dim, hidden, h, w, device_of(images)))
    with image_plate(n, batch_size) as index:
        z = pyro.sample("z", dist.Normal(0.0, 1.0).expand([len(index), latent_dim]).to_event(1))
        batch = images[index] if images is not None else None
        pyro.sample("images", dist.Bernoulli(logits=net(z)).to_event(2), obs=batch)


def guide(images: torch.Tensor | None = None, *, num_images: int = 64, height: int = 8, width: int = 8,
          batch_size: int | None = None, latent_dim: int = 8, hidden: int = 200) -> None:
    """The amortised encoder ``q(z_n | images_n) = Normal(mu(images_n), sigma(images_n))`` (same arguments).

    Samples the site ``z`` ``(batch, latent_dim)`` for the images of this run; returns nothing.

    Parameters
    ----------
    images : Tensor ``(N, H, W)`` of zeros and ones
        The observed images (required: the guide encodes them).
    num_images, height, width : int
        Unused when ``images`` is given (the size comes from them); accepted so that model and guide take the
        same arguments.
    batch_size : int, optional
        Images per run, the same minibatch as the model's (one plate); None encodes every image.
    latent_dim, hidden : int
        Size of the code and of the encoder's two hidden layers (the model's values).

    Raises
    ------
    ValueError
        If ``images`` is None.
    """
    if images is None:
        raise ValueError("the VAE's guide encodes images: pass them under 'images'")
    n, h, w = image_size(images, num_images, height, width)
    net = pyro.module("encoder", encoder(latent_dim, hidden, h, w, device_of(images)))
    with image_plate(n, batch_size) as index:
        loc, scale = net(images[index])
        pyro.sample("z", dist.Normal(loc, scale).to_event(1))


SPEC = ModelSpec(
    name="vae",
    model=model,
    observed={"images": "images"},
    dims={"images": ("image", "row", "col")},
    description="Variational autoencoder of binary images (Gaussian codes, MLP decoder, amortised encoder)",
    card=(
        "A variational autoencoder (Kingma and Welling 2014, 'Auto-Encoding Variational Bayes'; Rezende, "
        "Mohamed and Wierstra 2014): each binary image has a Gaussian code z ~ Normal(0, I), and a two-layer "
        "network decodes it to one Bernoulli probability per pixel. The module ships the amortised guide, an "
        "encoder network giving each image's Gaussian q(z | image), so bg.fit('vae', data, engine='svi') "
        "trains both by the reparameterised ELBO: pass num_particles=1, lr=3e-3 and a few thousand num_steps "
        "(svi's default lr of 0.02, set for small parameter vectors, leaves the networks near the independent-"
        "pixel fit), and batch_size in the data for large sets, as examples/deep_images.py does. Held-out "
        "bg.evaluate reports the importance-weighted bound of Burda, Grosse and Salakhutdinov (2016) with the "
        "fitted encoder as proposal, in nats per image. Codes are local latents: they are not in the "
        "posterior; fit.generate draws them from the prior and decodes them."
    ),
    load_data=load_data,
    engines=("svi",),
    guide=guide,
    fixed_arguments=("latent_dim", "hidden"),
)

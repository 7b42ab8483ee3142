"""Generative adversarial network of binary images: the VAE's generator program, trained against a discriminator."""

from __future__ import annotations

from bayesgen.models import vae
from bayesgen.spec import ModelSpec

__all__ = ["SPEC"]

SPEC = ModelSpec(
    name="gan",
    model=vae.model,
    observed={"images": "images"},
    dims={"images": ("image", "row", "col")},
    description="Generative adversarial network of binary images (the VAE's generator, trained adversarially)",
    card=(
        "A generative adversarial network (Goodfellow et al. 2014, 'Generative Adversarial Nets'): each binary "
        "image is generated from Gaussian noise z ~ Normal(0, I) by a two-layer network giving one Bernoulli "
        "probability per pixel. The program is the VAE's (bayesgen.models.vae.model), so one generator can be "
        "trained both ways and compared: bg.fit('gan', data, engine='gan') trains it against a discriminator "
        "network (non-saturating loss, or loss='wasserstein' for WGAN-GP, Gulrajani et al. 2017, 'Improved "
        "Training of Wasserstein GANs'), back-propagating through its binary samples with a straight-through "
        "relaxed Bernoulli; bg.fit('gan', data, engine='svi') trains it variationally with the VAE's encoder "
        "(use num_particles=1). Pyro has no adversarial training of its own (its feature request 'GAN "
        "Inference', pyro-ppl/pyro#1164, has been open since 2018); the engine is bayesgen's. Adversarial "
        "training never evaluates the likelihood, and the noise is not integrated out, so the held-out "
        "likelihood of an adversarial fit is not defined (NaN in bg.evaluate): judge it, and compare it with the "
        "variational fit, by two-sample tests of generated against held-out images (bg.evaluate's c2st and mmd "
        "columns)."
    ),
    load_data=vae.load_data,
    engines=("gan", "svi"),
    fixed_arguments=("latent_dim", "hidden"),
    guide=vae.guide,
)

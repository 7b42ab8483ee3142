"""The inference engines, one per module; each class's ``name`` is its module's name."""

from bayesgen.inference.gan import GAN
from bayesgen.inference.hmc import HMC
from bayesgen.inference.laplace import Laplace
from bayesgen.inference.map import MAP
from bayesgen.inference.mle import MLE
from bayesgen.inference.nuts import NUTS
from bayesgen.inference.svi import SVI

__all__ = ["GAN", "HMC", "MAP", "MLE", "NUTS", "SVI", "Laplace"]

"""PixelCNN: an autoregressive model of binary images built from masked convolutions, exact likelihood.

An image's pixels are taken in raster order (row by row, left to right) and each is a Bernoulli
variable whose logit a convolutional network computes from the pixels before it:
``p(x) = prod_i Bernoulli(x_i | sigmoid(f_i(x_<i)))``. The network sees the whole image at once;
masks on its kernels cut every path from a pixel to the logits of itself and the pixels before it,
so one pass scores all pixels of an image (training and evaluation cost one pass), while drawing
an image takes one pass per pixel (ancestral sampling), each over only the window of pixels that
can reach that pixel's logit.
"""

from __future__ import annotations

import math
from typing import Any

import pyro
import torch
import torch.nn.functional as F
from pyro.distributions import TorchDistribution
from torch import nn
from torch.distributions import constraints

from bayesgen.models._images import load_digits as load_data
from bayesgen.models._images import device_of, image_plate, image_size, network
from bayesgen.spec import ModelSpec

#: Whether a feature map's top, left and right edges are the image's (see ``MaskedConv2d.forward``).
Borders = tuple[bool, bool, bool]

__all__ = ["MaskedConv2d", "PixelCNN", "PixelCNNBernoulli", "SPEC", "load_data", "model"]


def _taps(kernel_size: int, mask_type: str) -> list[tuple[int, int]]:
    """The offsets ``(row, col)`` a masked ``kernel_size`` x ``kernel_size`` kernel keeps, in raster order:
    the rows above the centre, the pixels left of it, and the centre itself for type ``"B"``."""
    half = kernel_size // 2
    return [(row, col) for row in range(-half, 1) for col in range(-half, half + 1)
            if row < 0 or col < 0 or (col == 0 and mask_type == "B")]


class MaskedConv2d(nn.Module):
    """A same-size convolution whose kernel sees only pixels before the centre in raster order.

    Mask type ``"A"`` (the first layer, on the image) also hides the centre pixel, so the output at a
    pixel depends only on strictly earlier pixels; type ``"B"`` (the layers after it, on features
    that already depend only on earlier pixels) keeps the centre. With one colour channel there is
    no ordering among channels to mask.

    Only the taps the mask keeps have weights (a type-B 3x3 kernel keeps 5 of 9), stored as one
    linear map of the kept taps' channels, and they start as ``nn.Linear``'s, scaled by the kept
    fan-in. Each pass places them in a kernel of the rows above and the centre row only (the rows
    below would be all zeros) and runs one ``conv2d`` on the maps padded above and at both sides: half
    the arithmetic of a square masked kernel, and no copy of shifted maps per tap (gathering them
    for one matrix product, as an earlier version did, trained 28x28 images up to 4x slower).

    Parameters
    ----------
    in_channels, out_channels : int
    kernel_size : int
        Odd side length of the kernel; zero padding keeps the image size.
    mask_type : {"A", "B"}
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, mask_type: str) -> None:
        if mask_type not in ("A", "B"):
            raise ValueError(f"mask_type must be 'A' or 'B', got {mask_type!r}")
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd integer, got {kernel_size!r}")
        super().__init__()
        self.taps = _taps(kernel_size, mask_type)
        if not self.taps:
            raise ValueError("a 1x1 kernel of mask type A sees no pixel")
        self.half = kernel_size // 2
        self.linear = nn.Linear(len(self.taps) * in_channels, out_channels)
        # where each kept tap's weights go in a kernel of the rows above and the centre row
        self.register_buffer("kernel_rows", torch.tensor([self.half + row for row, _ in self.taps]), persistent=False)
        self.register_buffer("kernel_cols", torch.tensor([self.half + col for _, col in self.taps]), persistent=False)

    def forward(self, x: torch.Tensor, borders: Borders = (True, True, True)) -> torch.Tensor:
        """Convolve feature maps ``(batch, H, W, in_channels)`` (channels last) to ``(batch, H', W', out_channels)``.

        ``borders`` says which of the maps' top, left and right edges are the image's: those are
        zero-padded, as the network is everywhere on a whole image, and keep the size there; an edge
        cut from inside an image is not, and the output loses the ``half`` rows or columns there
        that padding would spoil.
        """
        if self.taps == [(0, 0)]:  # 1x1 type B: a per-pixel linear map
            return self.linear(x)
        half, (out_channels, fan_in) = self.half, self.linear.weight.shape
        kernel = x.new_zeros((out_channels, fan_in // len(self.taps), half + 1, 2 * half + 1))
        kernel[:, :, self.kernel_rows, self.kernel_cols] = self.linear.weight.reshape(
            out_channels, len(self.taps), -1).transpose(1, 2)
        top, left, right = (half if border else 0 for border in borders)  # none below: no tap looks down
        padded = F.pad(x.permute(0, 3, 1, 2), (left, right, top, 0))
        return F.conv2d(padded, kernel, self.linear.bias).permute(0, 2, 3, 1)


def _cut(h: torch.Tensor, half: int, borders: Borders) -> torch.Tensor:
    """Maps ``(batch, H, W, C)`` without the ``half`` rows or columns that a layer loses at edges
    that are not the image's (see :meth:`MaskedConv2d.forward`)."""
    top, left, right = (0 if border else half for border in borders)
    return h[:, top:, left:h.shape[2] - right]


class PixelCNN(nn.Module):
    """The logit network: a type-A masked convolution, optional residual type-B blocks, a per-pixel head.

    The input is the image with a second channel of ones, so that the network can tell the zero
    padding beyond the border from background pixels (which are zeros too) and hence where a pixel
    lies; a learned bias per pixel adds what position alone says. A first kernel of side
    ``2 * max(H, W) - 1`` (the default) reaches every earlier pixel of the image, so the network has
    no "blind spot" (the earlier pixels that stacked 3x3 masked kernels never reach, van den Oord
    et al. 2016b); on 8x8 images that costs less than a stack deep enough to see as far.

    Parameters
    ----------
    height, width : int
        Image size (the per-pixel bias has this shape).
    channels : int
        Feature maps in every hidden layer.
    num_layers : int
        Residual blocks after the first layer, each ``h + conv3x3_B(relu(h))``.
    kernel_size : int, optional
        Side of the first (type A) kernel; None reaches the whole image.
    """

    def __init__(self, height: int, width: int, channels: int, num_layers: int,
                 kernel_size: int | None = None) -> None:
        super().__init__()
        reach = 2 * max(height, width) - 1 if kernel_size is None else kernel_size
        self.first = MaskedConv2d(2, channels, reach, "A")
        self.blocks = nn.ModuleList(MaskedConv2d(channels, channels, 3, "B") for _ in range(num_layers))
        self.head = MaskedConv2d(channels, channels, 1, "B")
        self.out = MaskedConv2d(channels, 1, 1, "B")
        self.position = nn.Parameter(torch.zeros(height, width))

    @property
    def reach(self) -> int:
        """How far a pixel's logit sees: the rows above it and the columns either side of it that
        can reach it (the half-sides of the kernels, added up: one per 3x3 block)."""
        return self.first.half + sum(block.half for block in self.blocks)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits ``(batch, H, W)`` of images ``(batch, H, W)``: pixel i's from the pixels before i."""
        return self._logits_without_position(images) + self.position

    def logit_at(self, images: torch.Tensor, row: int, col: int) -> torch.Tensor:
        """The logit ``(batch,)`` of pixel ``(row, col)``: ``forward(images)[:, row, col]``, computed
        from the pixels that can reach it (:attr:`reach`), not the whole image.

        Exact, not an approximation: the window is that pixel's receptive field cut to the image,
        and each layer computes only the features that still lead to the pixel (a shrinking cone:
        no padding at edges cut from inside the image). Ancestral sampling needs one logit per
        pass; on a 28x28 image the first layer then works on a few dozen pixels, not 784.
        """
        reach, width = self.reach, self.position.shape[1]
        top, left = max(0, row - reach), max(0, col - reach)
        borders = (top == 0, left == 0, col + reach >= width - 1)
        logits = self._logits_without_position(images[:, top:row + 1, left:col + reach + 1], borders)
        # at an edge cut from inside, the cone has shrunk to the pixel's own row or column
        return logits[:, row if top == 0 else 0, col if left == 0 else 0] + self.position[row, col]

    def _logits_without_position(self, images: torch.Tensor, borders: Borders = (True, True, True)) -> torch.Tensor:
        h = self.first(torch.stack([images, torch.ones_like(images)], dim=-1), borders)
        for block in self.blocks:
            h = _cut(h, block.half, borders) + block(torch.relu(h), borders)
        return self.out(torch.relu(self.head(torch.relu(h)))).squeeze(-1)

    def weights(self) -> list[torch.Tensor]:
        """The weight matrices (not the biases nor the per-pixel bias): what the prior shrinks."""
        return [module.linear.weight for module in self.modules() if isinstance(module, MaskedConv2d)]


class PixelCNNBernoulli(TorchDistribution):
    """Binary images ``(H, W)`` whose pixels are Bernoulli given the pixels before them (raster order).

    ``log p(x) = sum_i log Bernoulli(x_i | sigmoid(network(x)_i))``, exact and normalised because
    ``network``'s logit at pixel ``i`` depends only on pixels before ``i``. All batch elements share
    the one network (the batch shape only says how many independent images there are), so the
    distribution has no tensor parameters and ``expand`` is free.

    Parameters
    ----------
    network : PixelCNN
        Maps images ``(n, H, W)`` to logits ``(n, H, W)``, autoregressive in raster order; its
        ``logit_at`` gives one pixel's logit, for sampling.
    height, width : int
        The event shape.
    batch_shape : sequence of int
        Independent images.
    validate_args : bool, optional
    """

    arg_constraints: dict[str, constraints.Constraint] = {}
    support = constraints.independent(constraints.boolean, 2)
    has_rsample = False

    def __init__(self, network: PixelCNN, height: int, width: int, batch_shape: tuple[int, ...] | torch.Size = (),
                 validate_args: bool | None = None) -> None:
        self.network = network
        self.height, self.width = int(height), int(width)
        super().__init__(torch.Size(batch_shape), torch.Size((self.height, self.width)), validate_args=validate_args)

    def expand(self, batch_shape: tuple[int, ...] | torch.Size, _instance: Any = None) -> "PixelCNNBernoulli":
        """The same distribution with batch shape ``batch_shape`` (the shared network is not copied)."""
        new = self._get_checked_instance(PixelCNNBernoulli, _instance)
        new.network, new.height, new.width = self.network, self.height, self.width
        super(PixelCNNBernoulli, new).__init__(torch.Size(batch_shape), self.event_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    def logits(self, value: torch.Tensor) -> torch.Tensor:
        """The logit of every pixel given the pixels before it, for images ``(*batch, H, W)``."""
        flat = value.reshape((-1, self.height, self.width))
        return self.network(flat).reshape(value.shape)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """Exact log-probability of binary images ``(*batch, H, W)``, summed over pixels: ``(*batch)``
        broadcast against the batch shape."""
        if self._validate_args:
            self._validate_sample(value)
        terms = -F.binary_cross_entropy_with_logits(self.logits(value), value, reduction="none")
        total = terms.sum((-2, -1))
        return total.expand(torch.broadcast_shapes(total.shape, self.batch_shape))

    def sample(self, sample_shape: torch.Size | tuple[int, ...] = torch.Size()) -> torch.Tensor:
        """Images ``(*sample_shape, *batch_shape, H, W)`` by ancestral sampling in raster order.

        One network pass per pixel, over the window that reaches it (:meth:`PixelCNN.logit_at`):
        pixel ``i`` is drawn with ``torch.bernoulli`` (torch's global generator, which
        ``pyro.set_rng_seed`` seeds) from its logit given the pixels drawn before it.
        """
        shape = self._extended_shape(torch.Size(sample_shape))
        reference = next(self.network.parameters())
        count = math.prod(shape[:-2])
        with torch.no_grad():
            x = torch.zeros((count, self.height, self.width), dtype=reference.dtype, device=reference.device)
            for row in range(self.height):
                for col in range(self.width):
                    logits = self.network.logit_at(x, row, col)
                    x[:, row, col] = torch.bernoulli(torch.sigmoid(logits))
        return x.reshape(shape)


def model(images: torch.Tensor | None = None, *, num_images: int = 64, height: int = 8, width: int = 8,
          batch_size: int | None = None, channels: int = 64, num_layers: int = 0, kernel_size: int | None = None,
          weight_scale: float | None = 0.15) -> None:
    """``images[n] ~ PixelCNNBernoulli(network)``, one likelihood term per image.

    The network's weights are parameters (``pyro.module("pixelcnn", ...)``), fitted by the ``mle``
    (or ``map``) engine; there are no latent sites, so held-out ``lpd_per_obs`` is the exact
    log-likelihood per image in nats. Its weight matrices carry a ``Normal(0, weight_scale)``
    prior, written as the factor site ``weight_prior`` (weight decay): a factor is no latent site,
    so ``mle`` and ``map`` both maximise likelihood times prior. On 1,347 8x8 digits the network
    without it overfits (held-out likelihood about 0.5 nats per image worse); ``weight_scale=None``
    leaves it out, for plain maximum likelihood.

    Parameters
    ----------
    images : Tensor, shape ``(N, H, W)``, optional
        Binary images (zeros and ones); None simulates ``num_images`` of them.
    num_images, height, width : int
        The size of the images to simulate when ``images`` is None.
    batch_size : int, optional
        Images per run of the program (a random minibatch, its terms scaled by
        ``N / batch_size``); None uses them all.
    channels : int
        Feature maps per hidden layer of the network.
    num_layers : int
        Residual 3x3 masked-convolution blocks after the first layer.
    kernel_size : int, optional
        Side of the first layer's masked kernel (odd); None reaches every earlier pixel.
    weight_scale : float, optional
        Prior standard deviation of each weight; None for no prior.
    """
    num, height, width = image_size(images, num_images, height, width)
    if channels < 1 or num_layers < 0:
        raise ValueError(f"channels must be positive and num_layers non-negative, got channels={channels}, "
                         f"num_layers={num_layers}")
    if weight_scale is not None and not weight_scale > 0:
        raise ValueError(f"weight_scale must be positive or None, got {weight_scale!r}")
    net = network(("pixelcnn", height, width, channels, num_layers, kernel_size),
                  lambda: PixelCNN(height, width, channels, num_layers, kernel_size), device_of(images))
    pyro.module("pixelcnn", net)
    if weight_scale is not None:
        pyro.factor("weight_prior", -sum(w.pow(2).sum() for w in net.weights()) / (2 * weight_scale**2))
    with image_plate(num, batch_size) as index:
        batch = images[index] if images is not None else None
        pyro.sample("images", PixelCNNBernoulli(net, height, width).expand([len(index)]), obs=batch)


SPEC = ModelSpec(
    name="pixelcnn",
    model=model,
    observed={"images": "images"},
    dims={"images": ("image", "row", "col")},
    description="PixelCNN: masked-convolution autoregressive model of binary images, exact likelihood (8x8 digits)",
    card=(
        "PixelCNN (van den Oord, Kalchbrenner & Kavukcuoglu 2016, 'Pixel recurrent neural networks', "
        "ICML; van den Oord et al. 2016, 'Conditional image generation with PixelCNN decoders', NeurIPS) "
        "for binary images: pixels in raster order, each Bernoulli with a logit that a convolutional "
        "network computes from the pixels before it, the causal order enforced by masking the kernels "
        "(the first layer's mask, type A, hides the centre pixel; later layers', type B, keep it). It "
        "is the deep successor of the fully visible sigmoid belief network (Frey 1998; Neal 1992; "
        "bayesgen.baselines.FullyVisibleSBN), which predicts each pixel by one logistic regression on "
        "the pixels before it. The likelihood is exact and normalised, computed for all pixels in one "
        "pass, so the network's weights are fitted as point estimates (engine 'map' or 'mle', Adam "
        "through Pyro's SVI, optionally on minibatches with batch_size) and held-out lpd_per_obs from "
        "bg.evaluate is the exact log-likelihood per image in nats, no bound. generate draws images "
        "by ancestral sampling, one network pass per pixel over only the features that reach it. By "
        "default its first masked kernel reaches every earlier pixel (no blind spot, which suits small "
        "images), followed by optional residual 3x3 type-B blocks and a per-pixel head; on 28x28 MNIST "
        "a 15x15 first kernel with num_layers=4 and channels=32 costs a quarter of the default per step "
        "and reached 68.6 nats per image held out, against 83.7 for the fully visible SBN "
        "(examples/deep_images.py); an input channel of ones and a per-pixel bias tell it "
        "where a pixel lies, and a Normal(0, 0.15) prior on the weights (a factor site, weight "
        "decay, so mle and map both fit the penalised likelihood; weight_scale=None drops it) keeps "
        "it from overfitting 1,347 images. The weights are point estimates without uncertainty. "
        "Fit it on minibatches (batch_size=128, lr=0.01, 1,000 steps). "
        "Default data: scikit-learn's 8x8 handwritten digits (Alpaydin & Kaynak 1998, UCI), binarised "
        "at half intensity, training split (1,347 images); on the 450 test images the fully visible "
        "SBN scores 17.9 nats per image and this model, so fitted, 17.1."
    ),
    load_data=load_data,
    engines=("mle", "map"),
    fixed_arguments=("channels", "num_layers", "kernel_size", "weight_scale"),
)

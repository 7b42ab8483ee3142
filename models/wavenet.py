"""WaveNet: an autoregressive model of a signal's samples, quantised to mu-law codes, exact likelihood.

``p(x) = prod_t p(x_t | x_<t)``, each factor a distribution over ``num_codes`` mu-law codes (8 bits
by default: a discretised mixture of logistics, or a softmax) computed by a stack of dilated causal
convolutions with gated activations and residual and skip connections (van den Oord et al. 2016,
:class:`bayesgen.models._sequences.CausalConvNet`).
A signal in [-1, 1] becomes the program's arguments with :func:`encode` and comes back with
:func:`decode`; ``fit.generate(n)`` draws a new signal of ``n`` samples, one at a time, with the
convolutions' past inputs kept in queues so that drawing is linear in the length.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import pyro
import torch

from bayesgen.models._networks import device_of, network
from bayesgen.models._sequences import AutoregressiveCategorical, CausalConvNet
from bayesgen.signals import mu_law_decode, mu_law_encode
from bayesgen.spec import ModelSpec

__all__ = ["SPEC", "decode", "encode", "load_data", "model", "simulate"]


def encode(signal: Any, num_codes: int = 256) -> dict[str, Any]:
    """A signal in [-1, 1] as the program's arguments, its samples mu-law companded and quantised.

    Parameters
    ----------
    signal : array_like, shape ``(T,)``
        The samples, finite and in [-1, 1] (scale a signal first, e.g. with
        :func:`bayesgen.datasets.scale_to_unit`).
    num_codes : int
        Quantisation levels (256: 8-bit mu-law, ``mu = num_codes - 1``).

    Returns
    -------
    dict
        ``"codes"``: int64 ndarray ``(T,)`` in ``0 .. num_codes-1`` (:func:`bayesgen.signals.mu_law_encode`);
        ``"num_codes"``; and ``"length"``: T, the length of a simulated signal like it (``bg.evaluate``'s
        simulation).

    Raises
    ------
    ValueError
        If ``signal`` is not one-dimensional, or has values outside [-1, 1].
    """
    values = np.asarray(signal, dtype=np.float64)
    if values.ndim != 1:
        raise ValueError(f"signal must be one-dimensional (T,), got shape {values.shape}")
    return {"codes": mu_law_encode(values, mu=num_codes - 1), "num_codes": num_codes, "length": len(values)}


def decode(arguments: Mapping[str, Any]) -> np.ndarray:
    """The signal in [-1, 1] that program arguments hold (each code's level; the inverse of :func:`encode`).

    Parameters
    ----------
    arguments : mapping
        ``"codes"``: int array or tensor in ``0 .. num_codes-1``, any shape; ``"num_codes"``: optional, 256 when
        absent.

    Returns
    -------
    ndarray of float64
        The centre of each code's level (:func:`bayesgen.signals.mu_law_decode`), the shape of ``codes``.
    """
    return mu_law_decode(np.asarray(arguments["codes"]), mu=int(arguments.get("num_codes", 256)) - 1)


def _dilations(num_layers: int) -> tuple[int, ...]:
    """WaveNet's cycles 1, 2, 4, ..., 512, 1, 2, ...: each cycle of ten doubles the receptive field ten times."""
    return tuple(2 ** (layer % 10) for layer in range(num_layers))


def _window_features(net: CausalConvNet, codes: torch.Tensor, starts: torch.Tensor, window: int) -> torch.Tensor:
    """Skip features ``(len(starts) * window, C)`` of the positions ``start .. start + window - 1`` of each
    window, each computed from a segment that holds the window's whole receptive field before it
    (or begins where the signal does), so that they equal those of one pass over the signal."""
    reach = net.receptive_field
    begins = torch.clamp(starts - reach, min=0)
    offsets = torch.arange(reach + window, device=codes.device)
    features = net.features(codes[begins[:, None] + offsets])
    rows = torch.arange(len(starts), device=codes.device)[:, None]
    kept = (starts - begins)[:, None] + torch.arange(window, device=codes.device)
    return features[rows, kept].reshape((-1, features.shape[-1]))


def model(codes: torch.Tensor | None = None, *, length: int = 16000, num_codes: int = 256,
          batch_size: int | None = None, window: int = 1024, channels: int = 32, num_layers: int = 10,
          mixture: int | None = 10) -> None:
    """``codes[t] ~ Categorical(softmax(f(codes[:t])))``, one likelihood term per signal sample.

    Parameters
    ----------
    codes : Tensor ``(T,)`` of int, optional
        The signal's mu-law codes (:func:`encode`); None simulates ``length`` of them.
    length : int
        Samples to simulate when ``codes`` is None (``fit.generate`` sets it).
    num_codes : int
        Quantisation levels (256: 8-bit mu-law).
    batch_size : int, optional
        Windows per run of the program: ``batch_size`` windows of ``window`` samples at random
        places, their terms scaled by ``T / (batch_size * window)`` so that a step's loss estimates
        the whole signal's; each window's logits see its full receptive field before it, so the
        terms are exact. Positions near the ends fall in fewer windows. None scores the whole
        signal in one pass.
    window : int
        Samples per window.
    channels : int
        Width of the residual stream, the gated units and the skip outputs.
    num_layers : int
        Dilated convolution layers, dilations cycling 1, 2, 4, ..., 512; the receptive field is
        ``1 + sum(dilations)`` samples (1,024 for the default ten layers).
    mixture : int, optional
        Each code's probability is the mass over its bin of a mixture of this many logistic
        distributions on the companded level (PixelCNN++'s discretised logistic mixture), so that
        neighbouring codes get similar probabilities; None gives every code its own logit
        (WaveNet's softmax), which must learn that from data.
    """
    if num_codes < 2:
        raise ValueError(f"num_codes must be at least 2, got {num_codes!r}")
    device = device_of(codes)
    net = pyro.module("wavenet", network(("wavenet", num_codes, channels, num_layers, mixture),
                                         lambda: CausalConvNet(num_codes, channels, channels, _dilations(num_layers),
                                                               ordinal=True, mixture=mixture),
                                         device))
    if codes is None:
        with pyro.plate("time", length, dim=-1):
            pyro.sample("codes", AutoregressiveCategorical(net, (length,)))
        return
    if codes.dim() != 1 or codes.is_floating_point():
        raise ValueError(f"codes must be integer codes of shape (T,) (see wavenet.encode), got {codes.dtype} "
                         f"of shape {tuple(codes.shape)}")
    if codes.numel() and not 0 <= int(codes.min()) <= int(codes.max()) < num_codes:
        raise ValueError(f"codes must lie in 0..{num_codes - 1}, got {int(codes.min())}..{int(codes.max())}")
    total = len(codes)
    if batch_size is None:
        with pyro.plate("time", total, dim=-1):
            pyro.sample("codes", net.likelihood(net.features(codes)), obs=codes)
        return
    if batch_size < 1 or window < 1 or total < net.receptive_field + window:
        raise ValueError(f"windows need batch_size >= 1, window >= 1 and a signal of at least the receptive field "
                         f"plus a window ({net.receptive_field} + {window} samples), got batch_size={batch_size}, "
                         f"window={window}, {total} samples")
    starts = torch.randint(0, total - window + 1, (batch_size,), device=device)
    positions = (starts[:, None] + torch.arange(window, device=device)).reshape(-1)
    with pyro.plate("time", total, subsample=positions, dim=-1):
        pyro.sample("codes", net.likelihood(_window_features(net, codes, starts, window)), obs=codes[positions])


def load_data() -> dict[str, Any]:
    """The first 70% of the 16 kHz speech clip (:func:`bayesgen.datasets.speech_clip`), encoded.

    Returns
    -------
    dict
        :func:`encode` of those samples with 256 codes: ``"codes"`` int64 ``(T,)``, ``"num_codes"``, ``"length"``.
    """
    from bayesgen.datasets import speech_clip, split_by_time

    signal, _ = speech_clip()
    train, _, _ = split_by_time(signal)
    return encode(train)


def simulate(seed: int = 0, *, length: int = 4000, num_codes: int = 16,
             steps: tuple[float, ...] = (0.1, 0.2, 0.4, 0.2, 0.1)) -> tuple[dict[str, Any], dict[str, Any]]:
    """Codes that walk at random, reflected at ``0`` and ``num_codes - 1``.

    ``x_t = x_{t-1} + s_t`` with ``s_t`` in ``-2 .. 2`` (``steps``' probabilities), starting next to
    ``num_codes // 2``. Away from the edges the next code's entropy is the steps' entropy, which a fitted
    model's held-out log-likelihood per sample should approach.

    Parameters
    ----------
    seed : int
        Seed of numpy's generator; the same seed gives the same codes.
    length : int
        T, the number of samples.
    num_codes : int
        Quantisation levels.
    steps : tuple of float
        Probabilities of the steps ``-h .. h``, ``h = len(steps) // 2`` (odd length, summing to 1); the
        default's steps are ``-2 .. 2``.

    Returns
    -------
    data : dict
        ``{"codes": (length,), "num_codes": num_codes, "length": length}``.
    truth : dict
        ``"steps"``: the step probabilities; ``"entropy"``: their entropy in nats.
    """
    rng = np.random.default_rng(seed)
    probabilities = np.asarray(steps, dtype=float)
    half = len(probabilities) // 2
    moves = rng.choice(np.arange(-half, half + 1), size=length, p=probabilities)
    codes = np.empty(length, dtype=np.int64)
    position = num_codes // 2
    for t, move in enumerate(moves):
        position += move
        if position < 0 or position >= num_codes:
            position -= 2 * move  # reflect
        codes[t] = position
    entropy = float(-(probabilities * np.log(probabilities)).sum())
    return {"codes": codes, "num_codes": num_codes, "length": length}, {"steps": probabilities, "entropy": entropy}


SPEC = ModelSpec(
    name="wavenet",
    model=model,
    observed={"codes": "codes"},
    dims={"codes": ("time",)},
    description="WaveNet: dilated causal convolutions over a signal's mu-law codes, exact likelihood",
    card=(
        "WaveNet (van den Oord et al. 2016, 'WaveNet: a generative model for raw audio') models a signal one "
        "sample at a time: the sample's 8-bit mu-law code (ITU-T G.711 companding, which spends the levels "
        "where speech spends its time, near zero) is a categorical variable whose probabilities a stack of "
        "dilated causal convolutions computes from the samples before it. Kernels of width 2 with dilations "
        "1, 2, 4, ..., 512 give a receptive field of 1,024 samples from ten layers; each layer's gated unit "
        "tanh(filter) * sigmoid(gate) feeds a residual connection and a skip connection, and the sum of the "
        "skips goes through two 1x1 convolutions to the code's distribution: by default the mass over each "
        "code's bin of a mixture of 10 logistics on the companded level (Salimans et al. 2017, PixelCNN++), "
        "so that neighbouring codes are alike from the start (mixture=None: WaveNet's softmax over the 256 "
        "codes, which must learn that from data); the input codes enter ordered, an embedding plus their "
        "level. The likelihood is exact; the weights "
        "are point estimates (engine 'mle' or 'map', Adam through Pyro's SVI) trained on random windows "
        "(batch_size windows of window samples per step, each with its receptive field as context), and "
        "held-out lpd_per_obs from bg.evaluate is nats per sample. fit.generate(n) draws n new samples one "
        "at a time, keeping each layer's past inputs in a queue (Paine et al. 2016, 'Fast WaveNet "
        "generation'), so a second of 16 kHz audio takes seconds on a CPU, and returns them decoded to "
        "[-1, 1]. Default data: the first 70% of a 30-second 16 kHz speech clip (pyannote.audio's sample). "
        "Baselines: the entropy of the codes' histogram and a linear autoregression of order 16 quantised "
        "the same way (bayesgen.baselines)."
    ),
    load_data=load_data,
    simulate=simulate,
    engines=("mle", "map"),
    size_argument="length",
    fixed_arguments=("num_codes", "channels", "num_layers", "mixture"),
    decode=decode,
)

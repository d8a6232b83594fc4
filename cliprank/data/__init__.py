"""Datasets for zero-shot evaluation: names to (image, label, index) items, class names, templates.

ds = load_dataset("pets", root=Path("~/data"), transform=preprocess, limit=1000)
for images, labels, indices in make_loader(ds, batch_size=64, workers=2): ...
ds.prompts()  # [[template.format(c=name) for template in ds.templates] for name in ds.classnames]

The names below are loaded on first use: batching imports torch, and the command line checks dataset
names (`registry`) and lists them without waiting for it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cliprank.data.items import ZeroShotDataset
    from cliprank.data.loader import Batch, make_loader, preload
    from cliprank.data.registry import catalog, check_dataset_name, default_root, list_datasets, load_dataset

_EXPORTS = {
    "Batch": "cliprank.data.loader",
    "make_loader": "cliprank.data.loader",
    "preload": "cliprank.data.loader",
    "ZeroShotDataset": "cliprank.data.items",
    "catalog": "cliprank.data.registry",
    "check_dataset_name": "cliprank.data.registry",
    "default_root": "cliprank.data.registry",
    "list_datasets": "cliprank.data.registry",
    "load_dataset": "cliprank.data.registry",
}

__all__ = [
    "Batch",
    "ZeroShotDataset",
    "catalog",
    "check_dataset_name",
    "default_root",
    "list_datasets",
    "load_dataset",
    "make_loader",
    "preload",
]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'cliprank.data' has no attribute '{name}'")
    return getattr(importlib.import_module(_EXPORTS[name]), name)

"""Datasets for zero-shot evaluation: names to (image, label, index) items, class names, templates.

ds = load_dataset("pets", root=Path("~/data"), transform=preprocess, limit=1000)
for images, labels, indices in make_loader(ds, batch_size=64, workers=2): ...
ds.prompts()  # [[template.format(c=name) for template in ds.templates] for name in ds.classnames]
"""

from cliprank.data.items import ZeroShotDataset
from cliprank.data.loader import Batch, make_loader, preload
from cliprank.data.registry import catalog, default_root, list_datasets, load_dataset

__all__ = [
    "Batch",
    "ZeroShotDataset",
    "catalog",
    "default_root",
    "list_datasets",
    "load_dataset",
    "make_loader",
    "preload",
]

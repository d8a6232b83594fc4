"""What methods may read about a batch besides its pixels: dataset, split, indices, content hashes.

Per-image methods need it — golden looks each image's searched ranking up by dataset, split and
index, and checks the pixels by their hash; random seeds each image by its index — so every forward
carries it (`TokenState.meta`). Per-image values are tensors with one row per image; the rest hold
for the whole batch.
"""

from __future__ import annotations

import hashlib
from typing import Any

import torch


def image_hashes(images: torch.Tensor) -> torch.Tensor:
    """A 63-bit content hash per preprocessed image (B,), stable across machines for equal pixels."""
    values = []
    for image in images.detach().to("cpu", torch.float32).contiguous():
        digest = hashlib.sha1(image.numpy().tobytes()).digest()
        values.append(int.from_bytes(digest[:8], "little") & 0x7FFFFFFFFFFFFFFF)
    return torch.tensor(values, dtype=torch.int64)


def batch_meta(dataset: str, split: str, images: torch.Tensor, indices: Any, hashes: bool) -> dict[str, Any]:
    """A batch's meta: dataset, split, dataset indices and, when asked (rankings check them), content hashes."""
    meta: dict[str, Any] = {"dataset": dataset, "split": split, "index": torch.as_tensor(indices)}
    if hashes:
        meta["image_hash"] = image_hashes(images)
    return meta


def slice_meta(meta: dict[str, Any] | None, rows: slice) -> dict[str, Any] | None:
    """The meta of some of a batch's images: per-image tensors sliced, batch-wide values kept."""
    if meta is None:
        return None
    return {key: value[rows] if isinstance(value, torch.Tensor) else value for key, value in meta.items()}

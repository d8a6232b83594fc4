"""Tokens entering the pruning block, computed once per (model, dataset, block) and cached on disk.

Training a predictor for 50 epochs must not run the encoder 50 times: the tokens it reads depend
only on the frozen model, its precision and the images. They are stored in fp16 with each image's
dataset index and content hash, so they can be matched to rankings and checked against them.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from cliprank.data import make_loader
from cliprank.data.items import ZeroShotDataset
from cliprank.data.meta import image_hashes
from cliprank.engine.forward import embed, run_blocks
from cliprank.engine.plan import Plan
from cliprank.io import atomic_path
from cliprank.models.loading import LoadedModel
from cliprank.zeroshot import cache_dir


@dataclass
class Features:
    tokens: torch.Tensor  # (N, T, C) fp16
    index: torch.Tensor  # (N,) dataset index
    image_hash: torch.Tensor  # (N,)
    labels: torch.Tensor  # (N,)


def features_path(model: LoadedModel, dataset: ZeroShotDataset, block: int) -> Path:
    identity = f"{model.fingerprint}|{model.precision.name}|{dataset.fingerprint}|{block}"
    key = hashlib.sha256(identity.encode()).hexdigest()[:20]
    return cache_dir() / "features" / f"{dataset.name}-{dataset.split}-b{block}-{key}.safetensors"


@torch.no_grad()
def block_features(
    model: LoadedModel, dataset: ZeroShotDataset, block: int, batch_size: int = 128, progress=None
) -> Features:
    """Tokens entering `block` for every image of `dataset`, from the cache when present."""
    path = features_path(model, dataset, block)
    if path.is_file():
        try:
            return Features(**load_file(str(path)))
        except Exception:  # a damaged cache entry is recomputed
            path.unlink(missing_ok=True)
    identity = Plan.identity(model.arch.depth)
    parts: dict[str, list[torch.Tensor]] = {"tokens": [], "index": [], "image_hash": [], "labels": []}
    task = progress.add_task(f"features · {dataset.name}/{dataset.split}", total=len(dataset)) if progress else None
    for images, labels, indices in make_loader(dataset, batch_size=batch_size):
        images = images.to(model.device)
        with model.autocast():
            state = run_blocks(model.visual, embed(model.visual, images), identity, stop=block)
        parts["tokens"].append(state.x.to(torch.float16).cpu())
        parts["index"].append(indices.long())
        parts["image_hash"].append(image_hashes(images))
        parts["labels"].append(labels.long())
        if progress is not None:
            progress.advance(task, len(labels))
    tensors = {name: torch.cat(values) for name, values in parts.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp))
    return Features(**tensors)

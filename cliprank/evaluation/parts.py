"""Part files of a sharded pass: each batch's results, written atomically by the rank that encoded it.

Batch b of a dataset holds positions b·B … (b+1)·B − 1 (B = --batch-size): exactly the batches one
process forms, so every image is encoded in the same company and merged logits equal a single
process's. One file per batch:

    <out>/.parts/<model>-<dataset>-<split>-<key>/batch-000003.pt

holding the batch's labels and, per row, its results (`kernel.encode_batch`). A killed run leaves
the finished batch files behind, and the rerun — with any number of processes — computes only the
(batch, row) pairs no file holds yet. A damaged file is computed again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import shutil
from pathlib import Path
from typing import Any

import torch

from cliprank.data.items import ZeroShotDataset
from cliprank.io import atomic_save_torch
from cliprank.methods.budget import Row
from cliprank.models.loading import LoadedModel

log = logging.getLogger(__name__)

PARTS = ".parts"


def _digest(payload: Any) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def row_id(row: Row) -> str:
    """What a part's results depend on beyond the batch: the row's spec, budget and solved values."""
    return _digest({"spec": row.spec, "budget": row.budget, "values": row.method.describe()})


class BatchParts:
    """The part files of one (model, dataset, split, batch size) inside an evaluate output folder."""

    def __init__(self, out_dir: Path, model: LoadedModel, dataset: ZeroShotDataset, split: str, batch_size: int):
        self.batch_size = batch_size
        self.size = len(dataset)
        self.batches = math.ceil(self.size / batch_size)
        self.identity = _digest([model.fingerprint, dataset.fingerprint, split, batch_size, self.size])
        self.folder = Path(out_dir) / PARTS / f"{model.name}-{dataset.name}-{split}-{self.identity}"

    def exists(self) -> bool:
        return self.folder.is_dir()

    def path(self, batch: int) -> Path:
        return self.folder / f"batch-{batch:06d}.pt"

    def positions(self, batch: int) -> list[int]:
        return list(range(batch * self.batch_size, min((batch + 1) * self.batch_size, self.size)))

    def read(self, batch: int) -> dict[str, Any] | None:
        """The batch's saved results, or None when absent or unreadable (a damaged part is recomputed)."""
        path = self.path(batch)
        if not path.is_file():
            return None
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 — any damage means: compute this batch again
            log.warning("part %s is unreadable (%s); recomputing it", path, err)
            return None
        return payload if payload.get("identity") == self.identity else None

    def write(self, batch: int, payload: dict[str, Any]) -> None:
        atomic_save_torch({**payload, "identity": self.identity}, self.path(batch))

    def missing(self, batch: int, ids: list[str]) -> list[str]:
        payload = self.read(batch)
        have = set(payload["rows"]) if payload else set()
        return [i for i in ids if i not in have]

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
        with_parts = self.folder.parent
        if with_parts.is_dir() and not any(with_parts.iterdir()):
            with_parts.rmdir()

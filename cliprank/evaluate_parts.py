"""`evaluate` across processes: each rank encodes its batches into part files; rank 0 merges them.

Batch b of a dataset holds positions b·B … (b+1)·B − 1 (B = --batch-size): exactly the batches one
process forms, so every image is encoded in the same company and the merged logits equal a single
process's. Batch b belongs to rank b mod world size. A rank writes one file per batch, atomically:

    <out>/.parts/<model>-<dataset>-<split>-<key>/batch-000003.pt

holding the batch's labels and, per pending setting, its logits, per-image MACs, executed schedule
and patch scores (for ranking agreement). After a barrier rank 0 reads the batches in order, builds
the records, measures speed on its own, writes the report and deletes the folder. A killed run leaves
the finished batch files behind; the rerun — with any number of processes — computes only the
(batch, setting) pairs no file holds yet.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from cliprank.data.meta import batch_meta
from cliprank.distributed import Distributed
from cliprank.errors import CliprankError
from cliprank.evaluate import (
    Accumulator,
    Setting,
    encode_batch,
    needs_image_hashes,
    row_classifier,
)
from cliprank.io import atomic_save_torch
from cliprank.models.loading import LoadedModel
from cliprank.search.store import RankingLookup

log = logging.getLogger(__name__)

PARTS = ".parts"


def _digest(payload: Any) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def setting_id(setting: Setting) -> str:
    """What a part's results depend on beyond the batch: the row's spec, budget and solved values."""
    return _digest({"spec": setting.spec, "budget": setting.solved.budget, "values": setting.method.describe()})


class BatchParts:
    """The part files of one (model, dataset, split, batch size) inside an evaluate output folder."""

    def __init__(self, out_dir: Path, model: LoadedModel, dataset: Any, split: str, batch_size: int):
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


def shard_loader(dataset: Any, batches: list[list[int]], workers: int) -> torch.utils.data.DataLoader:
    """A loader over the given batches of positions, in that order (what make_loader forms, a subset)."""
    from cliprank.data.loader import collate

    return torch.utils.data.DataLoader(dataset.dataset, batch_sampler=batches, num_workers=workers, collate_fn=collate)


def encode_shard(
    model: LoadedModel,
    dataset: Any,
    split: str,
    settings: list[Setting],
    classifier: torch.Tensor,
    parts: BatchParts,
    dist: Distributed,
    workers: int,
    golden: RankingLookup | None,
    progress: Any = None,
) -> None:
    """Encode this rank's batches under every setting a part does not hold yet, and write the parts."""
    ids = {s.key: setting_id(s) for s in settings}
    todo: dict[int, list[Setting]] = {}
    for batch in dist.shard(range(parts.batches)):
        missing = set(parts.missing(batch, list(ids.values())))
        if missing:
            todo[batch] = [s for s in settings if ids[s.key] in missing]
    log.info(
        "%s: %d batches of %d, %d this rank's, %d of them to compute",
        dataset.name,
        parts.batches,
        parts.batch_size,
        len(dist.shard(range(parts.batches))),
        len(todo),
    )
    if not todo:
        return
    advance: Callable[[int], None] | None = None
    if progress is not None:
        total = sum(len(parts.positions(b)) for b in todo)
        task = progress.add_task(f"{model.name} · {dataset.name} · {len(settings)} settings · rank 0", total=total)
        advance = lambda n: progress.advance(task, n)  # noqa: E731
    needs_hashes = needs_image_hashes(settings, golden)
    classifiers = {s.key: row_classifier(model, dataset, s, classifier) for s in settings}
    plans = {s.key: s.method.plan() for s in settings}
    loader = shard_loader(dataset, [parts.positions(b) for b in todo], workers)
    with torch.inference_mode():
        for (batch, rows), (images, labels, indices) in zip(todo.items(), loader, strict=True):
            images = images.to(model.device)
            meta = batch_meta(dataset.name, split, images, indices, needs_hashes)
            payload = parts.read(batch) or {"labels": labels, "indices": indices, "rows": {}}
            for setting in rows:
                payload["rows"][ids[setting.key]] = encode_batch(
                    model, images, meta, setting, plans[setting.key], classifiers[setting.key], indices
                )
            parts.write(batch, payload)
            log.info("%s batch %d written (%d images, %d settings)", dataset.name, batch, len(labels), len(rows))
            if advance:
                advance(len(labels))


def merge_parts(parts: BatchParts, settings: list[Setting]) -> tuple[dict[str, Accumulator], torch.Tensor]:
    """Every batch's results in dataset order, as `evaluate_dataset` returns them for one process."""
    results = {s.key: Accumulator() for s in settings}
    labels = []
    for batch in range(parts.batches):
        payload = parts.read(batch)
        absent = [s.key for s in settings if payload is None or setting_id(s) not in payload["rows"]]
        if absent:
            raise CliprankError(
                f"evaluate: batch {batch} of {parts.folder} lacks {absent[:3]}; rerun the command to finish it"
            )
        labels.append(payload["labels"])
        for setting in settings:
            results[setting.key].add(payload["rows"][setting_id(setting)])
    log.info("merged %d batches from %s", parts.batches, parts.folder)
    return results, torch.cat(labels)


def evaluate_dataset_sharded(
    model: LoadedModel,
    dataset: Any,
    split: str,
    settings: list[Setting],
    classifier: torch.Tensor,
    parts: BatchParts,
    dist: Distributed,
    workers: int = 0,
    golden: RankingLookup | None = None,
    progress: Any = None,
) -> tuple[dict[str, Accumulator], torch.Tensor] | None:
    """Every rank encodes its shard; after the barrier rank 0 gets the merged results, the others None."""
    encode_shard(model, dataset, split, settings, classifier, parts, dist, workers, golden, progress)
    dist.barrier()
    if not dist.is_main:
        return None
    return merge_parts(parts, settings)

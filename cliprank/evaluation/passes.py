"""One pass over a dataset: every batch under every pending row, accumulated per row.

Two strategies run the same pass — the same batches, in the same company, through the same kernel
(`kernel.encode_batch`) — and give the same results:

- `InMemory`: one process encodes every batch and keeps the results in memory.
- `Sharded`: each rank of a torchrun group encodes its batches (batch b is rank b mod world size) into
  part files (`parts`), skipping what a file already holds; after a barrier rank 0 reads them back in
  dataset order. Used whenever the run is distributed, or a killed run left parts behind.

Only rank 0 gets a result. Every rank calls `finish` once rank 0 has used it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from cliprank.data.items import ZeroShotDataset
from cliprank.data.loader import make_loader
from cliprank.data.meta import batch_meta
from cliprank.distributed import Distributed
from cliprank.engine.plan import Plan
from cliprank.errors import CliprankError
from cliprank.evaluation.kernel import Accumulator, encode_batch
from cliprank.evaluation.parts import BatchParts, row_id
from cliprank.methods.budget import Row
from cliprank.models.loading import LoadedModel

log = logging.getLogger(__name__)


@dataclass
class DatasetPass:
    """What a pass encodes: one dataset split under `rows`, scored with the shared zero-shot classifier."""

    model: LoadedModel
    dataset: ZeroShotDataset
    split: str
    rows: list[Row]
    classifier: torch.Tensor
    batch_size: int = 64
    workers: int = 0
    hashes: bool = False  # put the images' content hashes in the meta (rankings check them)
    plans: dict[str, Plan] = field(init=False)
    classifiers: dict[str, torch.Tensor] = field(init=False)

    def __post_init__(self) -> None:
        self.plans = {row.key: row.method.plan() for row in self.rows}
        names = self.dataset.classnames
        self.classifiers = {
            row.key: row.method.text_classifier(self.model, names, self.classifier) for row in self.rows
        }

    def encode(self, images: torch.Tensor, indices: Any, rows: list[Row]) -> dict[str, dict[str, Any]]:
        """One batch under each of `rows`, by row key."""
        images = images.to(self.model.device)
        meta = batch_meta(self.dataset.name, self.split, images, indices, self.hashes)
        return {
            row.key: encode_batch(
                self.model, images, meta, row.method, self.plans[row.key], self.classifiers[row.key], indices
            )
            for row in rows
        }

    def track(self, progress: Any, images: int, who: str = "") -> Callable[[int], None] | None:
        if progress is None:
            return None
        title = f"{self.model.name} · {self.dataset.name} · {len(self.rows)} settings{who}"
        task = progress.add_task(title, total=images)
        return lambda count: progress.advance(task, count)


@dataclass
class PassResult:
    """Every row's results in dataset order, and the labels of the images."""

    rows: dict[str, Accumulator]
    labels: torch.Tensor


class Strategy(Protocol):
    def run(self, work: DatasetPass, progress: Any = None) -> PassResult | None: ...

    def finish(self) -> None: ...


class InMemory:
    """One process: every batch of the dataset under every row, held in memory."""

    def run(self, work: DatasetPass, progress: Any = None) -> PassResult:
        advance = work.track(progress, len(work.dataset))
        results = {row.key: Accumulator() for row in work.rows}
        labels: list[torch.Tensor] = []
        with torch.inference_mode():
            for images, batch_labels, indices in make_loader(work.dataset, work.batch_size, work.workers):
                labels.append(batch_labels)
                for key, batch in work.encode(images, indices, work.rows).items():
                    results[key].add(batch)
                if advance:
                    advance(len(batch_labels))
        return PassResult(results, torch.cat(labels))

    def finish(self) -> None:
        """Nothing to clean up."""


class Sharded:
    """Every rank encodes its batches into part files; after a barrier rank 0 merges them."""

    def __init__(self, parts: BatchParts, dist: Distributed):
        self.parts, self.dist = parts, dist

    def run(self, work: DatasetPass, progress: Any = None) -> PassResult | None:
        ids = {row.key: row_id(row) for row in work.rows}
        self._encode_shard(work, ids, progress)
        self.dist.barrier()
        return self._merge(work, ids) if self.dist.is_main else None

    def finish(self) -> None:
        """Rank 0 deletes the parts it merged; the others wait for it."""
        if self.dist.is_main:
            self.parts.remove()
        self.dist.barrier()

    def _encode_shard(self, work: DatasetPass, ids: dict[str, str], progress: Any) -> None:
        """Encode this rank's batches under every row a part does not hold yet, and write the parts."""
        parts, mine = self.parts, self.dist.shard(range(self.parts.batches))
        todo: dict[int, list[Row]] = {}
        for batch in mine:
            missing = set(parts.missing(batch, list(ids.values())))
            if missing:
                todo[batch] = [row for row in work.rows if ids[row.key] in missing]
        log.info(
            "%s: %d batches of %d, %d this rank's, %d of them to compute",
            work.dataset.name,
            parts.batches,
            parts.batch_size,
            len(mine),
            len(todo),
        )
        if not todo:
            return
        advance = work.track(progress, sum(len(parts.positions(b)) for b in todo), " · rank 0")
        loader = make_loader(work.dataset, 1, work.workers, batches=[parts.positions(b) for b in todo])
        with torch.inference_mode():
            for (batch, rows), (images, labels, indices) in zip(todo.items(), loader, strict=True):
                payload = parts.read(batch) or {"labels": labels, "indices": indices, "rows": {}}
                for key, result in work.encode(images, indices, rows).items():
                    payload["rows"][ids[key]] = result
                parts.write(batch, payload)
                log.info(
                    "%s batch %d written (%d images, %d settings)", work.dataset.name, batch, len(labels), len(rows)
                )
                if advance:
                    advance(len(labels))

    def _merge(self, work: DatasetPass, ids: dict[str, str]) -> PassResult:
        """Every batch's results in dataset order, as `InMemory` returns them."""
        results = {row.key: Accumulator() for row in work.rows}
        labels = []
        for batch in range(self.parts.batches):
            payload = self.parts.read(batch)
            absent = [row.key for row in work.rows if payload is None or ids[row.key] not in payload["rows"]]
            if absent:
                raise CliprankError(
                    f"evaluate: batch {batch} of {self.parts.folder} lacks {absent[:3]}; rerun the command to finish it"
                )
            labels.append(payload["labels"])
            for row in work.rows:
                results[row.key].add(payload["rows"][ids[row.key]])
        log.info("merged %d batches from %s", self.parts.batches, self.parts.folder)
        return PassResult(results, torch.cat(labels))

"""The `search` pipeline: golden rankings for a dataset split, chunked, resumable, shardable.

Images are processed in chunks of `chunk_size` consecutive items. Chunk k always holds the same
images whatever the number of processes, so a rerun — or a run with another world size — recomputes
nothing already written and produces identical rankings. Each process takes chunks k ≡ rank (mod
world size) and writes them atomically; the process of rank 0 merges them into the rankings file.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from cliprank.data import load_dataset
from cliprank.data.items import ZeroShotDataset
from cliprank.data.meta import image_hashes
from cliprank.distributed import Distributed
from cliprank.io import check_output_dir, check_output_file
from cliprank.models.loading import LoadedModel
from cliprank.search.greedy import SCORE_DTYPE, SearchSettings, search_batch
from cliprank.search.store import RankingsMeta, RankingStore
from cliprank.zeroshot import zero_shot_classifier

log = logging.getLogger(__name__)


@dataclass
class SearchStats:
    images: int = 0
    seconds: float = 0.0
    candidate_tokens: int = 0  # tokens run through the blocks after the pruning layer

    @property
    def images_per_hour(self) -> float:
        return 3600 * self.images / self.seconds if self.seconds else float("nan")


def default_output(model: LoadedModel, dataset: ZeroShotDataset, settings: SearchSettings) -> Path:
    return Path("runs") / "rankings" / f"{model.name}-{dataset.slug}-{dataset.split}-{settings.key()}.rankings"


def rankings_meta(
    model: LoadedModel, dataset: ZeroShotDataset, settings: SearchSettings, chunk_size: int
) -> RankingsMeta:
    return RankingsMeta(
        model=model.name,
        pretrained=model.pretrained,
        model_fingerprint=model.fingerprint,
        dataset=dataset.name,
        split=dataset.split,
        dataset_fingerprint=dataset.fingerprint,
        images=len(dataset),
        patches=model.arch.patches,
        grid=tuple(model.arch.grid),
        settings=asdict(settings),
        chunk_size=chunk_size,
        score_dtype=SCORE_DTYPE,
        precision=model.precision.name,
    )


def chunk_items(
    dataset: ZeroShotDataset, chunk: int, chunk_size: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Images, labels and dataset indices of chunk `chunk` (positions chunk·size ... in item order)."""
    start = chunk * chunk_size
    items = [dataset.dataset[p] for p in range(start, min(start + chunk_size, len(dataset)))]
    images = torch.stack([image for image, _, _ in items])
    labels = torch.tensor([label for _, label, _ in items])
    indices = torch.tensor([index for _, _, index in items])
    return images, labels, indices


@dataclass
class SearchJob:
    dataset: str
    settings: SearchSettings
    split: str = "train"
    limit: int | None = None
    dataset_root: Path | None = None
    download: bool = False
    out: Path | None = None  # default: runs/rankings/<model>-<dataset>-<split>-<settings>.rankings
    chunk_size: int = 64
    max_batch_tokens: int = 32768
    skip_unreadable: bool = False  # leave out image files that cannot be decoded


@dataclass
class SearchOutcome:
    path: Path | None  # the merged rankings file (rank 0; None on the other ranks)
    images: int  # in the dataset split
    searched: int  # searched now, by every process together
    stats: SearchStats  # this process's share


def run_search(
    model: LoadedModel, job: SearchJob, progress: Any = None, dist: Distributed | None = None
) -> SearchOutcome:
    """Search every image of the job's split not searched yet; rank 0 merges every process's chunks."""
    dist = dist or Distributed()
    job.settings.validate(model.arch)
    with dist.main_first():  # one rank builds or downloads the data, the others read it
        dataset = load_dataset(
            job.dataset,
            split=job.split,
            root=job.dataset_root,
            transform=model.preprocess,
            limit=job.limit,
            download=job.download,
            skip_unreadable=job.skip_unreadable,
        )
    out = job.out or default_output(model, dataset, job.settings)
    check_output_file(out)
    check_output_dir(out.with_name(out.name + ".parts"), "the search's parts folder")
    dist.log_to(out.with_name(out.name + ".logs"))
    store = RankingStore(out, rankings_meta(model, dataset, job.settings, job.chunk_size))
    stats = search_chunks(model, dataset, job, store, dist, progress)
    searched = dist.total(stats.images)  # also the barrier: every rank has written its chunks
    path = None
    if dist.is_main:
        if store.is_complete():  # merged by a concurrent search: what it left behind goes
            path = store.path
            store.discard_parts()
        else:
            path = store.merge(math.ceil(len(dataset) / job.chunk_size))
        log.info("rankings complete: %s", path)
    return SearchOutcome(path, len(dataset), searched, stats)


def search_chunks(
    model: LoadedModel,
    dataset: ZeroShotDataset,
    job: SearchJob,
    store: RankingStore,
    dist: Distributed,
    progress: Any = None,
) -> SearchStats:
    """Search this process's chunks that no file holds yet, writing each atomically."""
    stats = SearchStats()
    if store.is_complete():
        log.info("%s is complete; nothing to search", store.path)
        return stats
    chunk_size, settings = job.chunk_size, job.settings
    chunks = math.ceil(len(dataset) / chunk_size)
    done = store.done_chunks()
    mine = [c for c in dist.shard(range(chunks)) if c not in done]
    log.info(
        "%d chunks of %d images, %d already written; this rank searches %d: %s%s",
        chunks,
        chunk_size,
        len(done),
        len(mine),
        mine[:10],
        " …" if len(mine) > 10 else "",
    )
    classifier = None
    if settings.score in ("label", "max"):
        classifier = zero_shot_classifier(model, dataset.classnames, dataset.templates)
    task = None
    if progress is not None:
        remaining = sum(min(chunk_size, len(dataset) - c * chunk_size) for c in mine)
        task = progress.add_task(f"search · {dataset.name}/{dataset.split}", total=remaining)
    for chunk in mine:
        images, labels, indices = chunk_items(dataset, chunk, chunk_size)
        images = images.to(model.device)
        began = time.perf_counter()
        with model.autocast():
            result, evaluator = search_batch(
                model.visual, model.arch, images, settings, classifier, labels.to(model.device), job.max_batch_tokens
            )
        stats.seconds += time.perf_counter() - began
        stats.images += len(indices)
        stats.candidate_tokens += evaluator.token_count
        store.write_chunk(chunk, indices, image_hashes(images), result)
        log.info("chunk %d written: %d images in %.3f s", chunk, len(indices), time.perf_counter() - began)
        if progress is not None:
            progress.advance(task, len(indices))
    return stats

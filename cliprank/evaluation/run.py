"""The `evaluate` pipeline: for one model, every method × budget on every dataset, at matched cost.

Every (method, budget) is solved to a concrete row once (`solve_rows`), so its schedule, knob and
GMACs are the same on every dataset. For each dataset, images are loaded once and every pending row
encodes each batch (`passes`): data loading is paid once, however many methods run. The unpruned
model is always a row. A record is written only when complete, and a rerun into the same output
directory skips complete records, so a killed run loses at most the dataset in progress.

Under torchrun (`dist` enabled) every rank encodes its share of each dataset's batches into part
files, and rank 0 alone merges them, measures speed and writes the report; the writer the other
ranks return is not updated. Part files left by a killed run are reused by the rerun, whatever its
number of processes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from cliprank.cost.counting import count_macs, mean_counted_macs
from cliprank.data import load_dataset, make_loader
from cliprank.data.items import ZeroShotDataset
from cliprank.data.meta import batch_meta, slice_meta
from cliprank.distributed import Distributed
from cliprank.evaluation.parts import BatchParts
from cliprank.evaluation.passes import DatasetPass, InMemory, PassResult, Sharded, Strategy
from cliprank.evaluation.records import build_record, dataset_extra, row_extra
from cliprank.methods.base import Resources
from cliprank.methods.budget import Row, solve_rows
from cliprank.methods.registry import expand_all
from cliprank.methods.spec import MethodSpec
from cliprank.models.loading import LoadedModel
from cliprank.report.schema import Environment, record_key
from cliprank.report.store import ReportWriter
from cliprank.resources import ResourceFiles, load_resources
from cliprank.search.store import RankingLookup
from cliprank.speed import Speed, device_facts, measure_speeds
from cliprank.visualize.capture import Row as Drawn
from cliprank.visualize.report import report_patch_maps
from cliprank.zeroshot import zero_shot_classifier

log = logging.getLogger(__name__)


@dataclass
class EvaluateJob:
    datasets: list[str]
    methods: list[MethodSpec]  # or [("all", {})]
    budgets: list[float | None]
    out: Path
    split: str = "test"
    limit: int | None = None
    dataset_root: Path | None = None
    download: bool = False
    batch_size: int = 64
    workers: int = 0
    seed: int = 0
    files: ResourceFiles = field(default_factory=ResourceFiles)
    measure_speed: bool = True
    count_flops: bool = True
    timing_repeats: int = 3
    patch_maps: int = 2  # images per dataset in the report's patch maps; 0: none
    skip_unreadable: bool = False  # leave out image files that cannot be decoded (named in the records)


@dataclass
class Measured:
    """What does not depend on the dataset, measured once per row of a model."""

    speeds: dict[str, Speed] = field(default_factory=dict)
    counted: dict[str, float] = field(default_factory=dict)  # GMACs of fixed-schedule rows


def run_evaluate(
    model: LoadedModel, job: EvaluateJob, progress: Any = None, dist: Distributed | None = None
) -> ReportWriter:
    """Evaluate `model` as `job` asks, into `job.out` (records of other models there are kept)."""
    dist = dist or Distributed()
    dist.log_to(job.out / "logs")
    writer = ReportWriter(job.out, environment(model, job))
    resources = load_resources(model, job.methods, job.files)
    skipped: list[str] = []
    rows = solve_rows(model.arch, expand_all(job.methods, resources), job.budgets, resources, skipped)
    for line in skipped:
        log.info("skipped: %s", line)
        if progress is not None:
            progress.console.print(f"[yellow]skipped: {line}[/]")
    measured = Measured()
    for name in job.datasets:
        with dist.main_first():  # one rank builds or downloads the data, the others read it
            dataset = load_dataset(
                name,
                split=job.split,
                root=job.dataset_root,
                transform=model.preprocess,
                limit=job.limit,
                download=job.download,
                skip_unreadable=job.skip_unreadable,
            )
        if dist.is_main:
            writer.refresh()  # records a concurrent run into this folder finished meanwhile are not redone
        pending = [
            row for row in rows if not writer.has(_key(model, dataset, row), model.fingerprint, dataset.fingerprint)
        ]
        pending_keys = dist.broadcast_object([row.key for row in pending])  # rank 0's report decides
        pending = [row for row in rows if row.key in pending_keys]
        if not pending:
            continue
        golden = resources.rankings.get(dataset.name, job.split) if resources.rankings else None
        if any("rankings" in row.method.requires for row in pending):
            golden = resources.rankings.require(dataset.name, job.split)
        with dist.main_first():  # the classifier cache is filled once
            classifier = zero_shot_classifier(model, dataset.classnames, dataset.templates)
        work = DatasetPass(
            model, dataset, job.split, pending, classifier, job.batch_size, job.workers, hashes=golden is not None
        )
        parts = BatchParts(job.out, model, dataset, job.split, job.batch_size)
        strategy: Strategy = Sharded(parts, dist) if dist.enabled or parts.exists() else InMemory()
        result = strategy.run(work, progress)
        if result is not None:  # rank 0; under torchrun the others wait in `finish` while it writes
            write_records(job, writer, work, result, golden, resources, measured)
            save_patch_maps(job, model, dataset, rows, classifier, golden, resources)
        strategy.finish()
    if dist.is_main:
        writer.finalize()
    return writer


def environment(model: LoadedModel, job: EvaluateJob) -> Environment:
    return Environment.collect(
        device=model.device.type,
        precision=model.precision.name,
        threads=torch.get_num_threads(),
        seed=job.seed,
        hardware=device_facts(model.device),
    )


def write_records(
    job: EvaluateJob,
    writer: ReportWriter,
    work: DatasetPass,
    result: PassResult,
    golden: RankingLookup | None,
    resources: Resources,
    measured: Measured,
) -> None:
    """Measure what does not depend on the data (speed, counted GMACs) and write each complete record."""
    model, dataset = work.model, work.dataset
    images, meta = probe_batch(model, dataset, job.split, job.batch_size, hashes=golden is not None)
    unmeasured = [row for row in work.rows if row.key not in measured.speeds]
    if job.measure_speed and unmeasured:
        plans = [row.method.plan() for row in unmeasured]
        speeds = measure_speeds(
            model.visual,
            plans,
            images,
            meta,
            job.timing_repeats,
            warmup=1,
            latency_repeats=max(3, job.timing_repeats),
            precision=model.precision,
        )
        measured.speeds.update({row.key: speed for row, speed in zip(unmeasured, speeds, strict=True)})
    for row in work.rows:
        counted = measured.counted.get(row.key)
        if job.count_flops and counted is None:
            counted = count_row(model, row, images, meta) / 1e9
            if not row.method.adaptive:  # an adaptive row's count depends on the images: counted per dataset
                measured.counted[row.key] = counted
        record = build_record(
            model,
            dataset,
            row,
            result.rows[row.key],
            result.labels,
            golden,
            measured.speeds.get(row.key),
            counted,
            {**row_extra(row, resources), **dataset_extra(dataset)},
        )
        writer.add(record)


def save_patch_maps(
    job: EvaluateJob,
    model: LoadedModel,
    dataset: ZeroShotDataset,
    rows: list[Row],
    classifier: torch.Tensor,
    golden: RankingLookup | None,
    resources: Resources,
) -> None:
    """The report's figure of what each method keeps on a few of the dataset's images (`cliprank.visualize`)."""
    if job.patch_maps <= 0:
        return
    drawn = [
        (Drawn.of(row.spec, row.method, row.method.text_classifier(model, dataset.classnames, classifier)), row.budget)
        for row in rows
    ]
    report_patch_maps(
        job.out, model, dataset, job.split, drawn, classifier, golden, resources.predictor, job.patch_maps
    )


def probe_batch(
    model: LoadedModel, dataset: ZeroShotDataset, split: str, size: int, hashes: bool
) -> tuple[torch.Tensor, dict[str, Any]]:
    """The first `size` images of the dataset, with their meta: what timing and FLOP counting run on."""
    images, _, indices = next(iter(make_loader(dataset, batch_size=size, workers=0)))
    images = images.to(model.device)
    return images, batch_meta(dataset.name, split, images, indices, hashes)


def count_row(model: LoadedModel, row: Row, images: torch.Tensor, meta: dict[str, Any]) -> float:
    """fvcore MACs per image: one traced image for fixed schedules, the mean over a few if adaptive."""
    plan = row.method.plan()
    if row.method.adaptive:
        few = min(8, images.shape[0])
        return mean_counted_macs(model.visual, plan, images[:few], slice_meta(meta, slice(0, few)))
    return count_macs(model.visual, plan, model.arch.image_size, slice_meta(meta, slice(0, 1)))


def _key(model: LoadedModel, dataset: ZeroShotDataset, row: Row) -> str:
    return record_key(model.name, model.pretrained, dataset.name, row.spec, row.budget)

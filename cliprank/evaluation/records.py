"""A report record from a finished pass: metrics, cost, executed schedule, speed and ranking agreement.

Cost columns: `gmacs` is the analytic MACs of the executed schedule (for input-adaptive methods the
mean over the evaluated images), `gmacs_counted` fvcore's count of the same forward. Speed does not
depend on the dataset: it is measured once per row and model and repeated in each dataset's record.
"""

from __future__ import annotations

from typing import Any

import torch

from cliprank.cost.analytic import schedule_macs, unpruned_macs
from cliprank.data.items import ZeroShotDataset
from cliprank.evaluation.kernel import Accumulator
from cliprank.methods.base import Resources
from cliprank.methods.budget import Row
from cliprank.models.loading import LoadedModel
from cliprank.ranking_agreement import agreement
from cliprank.report.bits import pack_bits
from cliprank.report.schema import RankingAgreement, Record, Throughput
from cliprank.report.significance import wilson_interval
from cliprank.search.store import RankingLookup
from cliprank.speed import Speed
from cliprank.zeroshot import metrics, top1_correct

TASK = "zeroshot_classification"


def build_record(
    model: LoadedModel,
    dataset: ZeroShotDataset,
    row: Row,
    results: Accumulator,
    labels: torch.Tensor,
    golden: RankingLookup | None,
    speed: Speed | None,
    gmacs_counted: float | None,
    extra: dict[str, Any],
) -> Record:
    method = row.method
    scores = torch.cat(results.logits)
    macs = float(torch.cat(results.macs).mean())
    correct = top1_correct(scores, labels)
    return Record(
        dataset=dataset.name,
        model=model.name,
        pretrained=model.pretrained,
        method=method.name,
        method_spec=row.spec,
        budget=row.budget,
        metrics=metrics(scores, labels),
        params=method.describe(),
        schedule=results.schedule(),
        gmacs=macs / 1e9,
        gmacs_analytic=schedule_macs(model.arch, method.schedule()) / 1e9,
        gmacs_fraction=macs / unpruned_macs(model.arch),
        gmacs_counted=gmacs_counted,
        image_tower_params=sum(p.numel() for p in model.visual.parameters()),
        images=len(scores),
        dataset_fingerprint=dataset.fingerprint,
        model_fingerprint=model.fingerprint,
        task=TASK,
        method_label=method.label,
        throughput=None if speed is None else _throughput(speed),
        latency_ms=None if speed is None else speed.latency_ms,
        peak_memory_mb=None if speed is None or speed.memory.peak_bytes is None else speed.memory.peak_bytes / 2**20,
        ranking_agreement=ranking_agreement(row, results, golden),
        acc1_per_image=pack_bits(correct),
        acc1_ci95=list(wilson_interval(sum(correct), len(correct))),
        precision=model.precision.name,
        extra=extra,
    )


def ranking_agreement(row: Row, results: Accumulator, golden: RankingLookup | None) -> RankingAgreement | None:
    """How the row's patch scores agree with the golden ranking (an oracle is not judged by its own search)."""
    if golden is None or not results.patch_scores or row.method.oracle:
        return None
    golden_scores = golden.patch_scores(torch.cat(results.indices), None)
    kept = golden.rankings.kept
    tau, overlap = agreement(torch.cat(results.patch_scores), golden_scores, kept)
    return RankingAgreement(kendall_tau=tau, top_k_overlap=overlap, k=kept)


def row_extra(row: Row, resources: Resources) -> dict[str, Any]:
    """Provenance a reader needs beside the numbers (what a predictor or tokens were trained on)."""
    extra: dict[str, Any] = {"declared_gmacs": row.solved.macs / 1e9}
    if "predictor" in row.method.requires and resources.predictor is not None:
        extra["predictor_trained_on"] = resources.predictor.trained_on
    if row.method.adaptive:
        extra["note"] = "input-adaptive: gmacs and schedule are means over the evaluated images"
    return extra


def dataset_extra(dataset: ZeroShotDataset) -> dict[str, Any]:
    """What a reader needs to know about the images beside their fingerprint: the files left out as unreadable."""
    return {"skipped_images": list(dataset.skipped)} if dataset.skipped else {}


def _throughput(speed: Speed) -> Throughput:
    timing = speed.throughput
    return Throughput(
        images_per_second=timing.images_per_second,
        batch_size=timing.batch_size,
        warmup=timing.warmup,
        repeats=timing.repeats,
        threads=timing.threads,
    )

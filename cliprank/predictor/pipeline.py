"""The `train-predictor` pipeline: golden rankings + cached features → a saved, validated predictor.

Training data are the golden rankings of each dataset's train split; validation uses a held-out
split (the embedded datasets' `val`, composed from train sources, never test). After training, the
best epoch is also judged where it matters: zero-shot accuracy on the held-out split when pruning
with it, beside the unpruned model and the golden ranking at the same keep count.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from cliprank.data import load_dataset
from cliprank.distributed import Distributed
from cliprank.errors import CliprankError
from cliprank.evaluation.passes import DatasetPass, InMemory
from cliprank.io import checkpoint_path
from cliprank.methods.base import Resources
from cliprank.methods.budget import solve_rows
from cliprank.methods.golden import Golden
from cliprank.methods.predictor import Predictor
from cliprank.models.loading import LoadedModel
from cliprank.predictor.features import block_features
from cliprank.predictor.io import LoadedPredictor, save_predictor
from cliprank.predictor.settings import TrainSettings
from cliprank.predictor.train import TrainingData, align, concatenate, train
from cliprank.search.store import RankingIndex
from cliprank.zeroshot import metrics, zero_shot_classifier


@dataclass
class PredictorJob:
    datasets: list[str]
    rankings: list[Path]
    out: Path
    train_split: str = "train"
    val_split: str = "val"
    limit: int | None = None
    dataset_root: Path | None = None
    settings: TrainSettings = field(default_factory=TrainSettings)
    skip_unreadable: bool = False  # leave out image files that cannot be decoded


def split_data(
    model: LoadedModel,
    job: PredictorJob,
    index: RankingIndex,
    split: str,
    progress: Any,
    dist: Distributed | None = None,
) -> tuple[TrainingData, int]:
    dist = dist or Distributed()
    parts, blocks = [], set()
    for name in job.datasets:
        with dist.main_first():  # rank 0 fills the dataset and feature caches, the other ranks read them
            dataset = load_dataset(
                name,
                split=split,
                root=job.dataset_root,
                transform=model.preprocess,
                limit=job.limit,
                skip_unreadable=job.skip_unreadable,
            )
            lookup = index.require(dataset.name, split)
            block = lookup.rankings.meta.settings["block"]
            features = block_features(model, dataset, block, progress=progress)
        blocks.add(block)
        parts.append(align(features, lookup.rankings, f"{dataset.name}/{split}"))
    if len(blocks) != 1:
        raise CliprankError(
            f"rankings were searched at different blocks {sorted(blocks)}; train one predictor per block"
        )
    return concatenate(parts), blocks.pop()


def heldout_accuracy(
    model: LoadedModel, job: PredictorJob, predictor: LoadedPredictor, index: RankingIndex, keep: float
) -> dict[str, dict[str, float]]:
    """Top-1 on the held-out split: unpruned, predictor and golden at the search's keep fraction."""
    resources = Resources(rankings=index, predictor=predictor)
    pruned = {"keep": keep, "block": predictor.block}
    rows = solve_rows(model.arch, [(Predictor.name, pruned), (Golden.name, pruned)], [None], resources)
    table: dict[str, dict[str, float]] = {}
    for name in job.datasets:
        dataset = load_dataset(
            name,
            split=job.val_split,
            root=job.dataset_root,
            transform=model.preprocess,
            limit=job.limit,
            skip_unreadable=job.skip_unreadable,
        )
        classifier = zero_shot_classifier(model, dataset.classnames, dataset.templates)
        work = DatasetPass(model, dataset, job.val_split, rows, classifier, batch_size=128)
        result = InMemory().run(work)
        table[dataset.name] = {
            row.method.name: metrics(torch.cat(result.rows[row.key].logits), result.labels)["acc1"] for row in rows
        }
    return table


def run_train_predictor(
    model: LoadedModel, job: PredictorJob, progress: Any = None, dist: Distributed | None = None
) -> tuple[Path, dict[str, Any]]:
    """Train, judge and save a predictor. Under torchrun all ranks train; rank 0 alone judges and saves."""
    dist = dist or Distributed()
    dist.log_to(job.out.with_name(job.out.name + ".logs"))
    index = RankingIndex(job.rankings, model.fingerprint)
    if not index:
        raise CliprankError("no rankings of this model were found in --rankings; run `cliprank search` for it first")
    train_data, block = split_data(model, job, index, job.train_split, progress, dist)
    val_data, val_block = split_data(model, job, index, job.val_split, progress, dist)
    if val_block != block:
        raise CliprankError(f"train rankings are for block {block} but validation rankings for block {val_block}")
    checkpoint = checkpoint_path(job.out)
    module, history = train(model, train_data, val_data, job.settings, checkpoint, progress, dist)
    keep = train_data.kept / model.arch.patches
    accuracy = None
    if dist.is_main:
        predictor = LoadedPredictor(module, block, model.fingerprint, list(job.datasets), {})
        accuracy = heldout_accuracy(model, job, predictor, index, keep)
    info = {**history, "keep": keep, "heldout_split": job.val_split, "heldout_top1": accuracy, "macs": module.macs()}
    if dist.is_main:
        save_predictor(job.out, module, model, block, list(job.datasets), info)
        checkpoint.unlink(missing_ok=True)
    dist.barrier()  # the other ranks finish only once the predictor is saved
    return job.out, info
